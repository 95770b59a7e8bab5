"""The DCAT-AP catalogue: parseable Turtle and JSON-LD saying the same, public data only."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from rdflib import Graph, Literal, Namespace, URIRef
from rdflib.compare import isomorphic
from rdflib.namespace import DCAT, DCTERMS, FOAF, RDF

from tests.api.conftest import STEP, Fleet

# Runs on plain PostgreSQL and on TimescaleDB (tests/conftest.py).
pytestmark = pytest.mark.storage

BASE = "http://127.0.0.1:8000/api/v1"
GSP = Namespace("http://www.opengis.net/ont/geosparql#")
CC_BY = URIRef("https://creativecommons.org/licenses/by/4.0/")
CC0 = URIRef("https://creativecommons.org/publicdomain/zero/1.0/")


def _graphs(client: TestClient) -> tuple[Graph, Graph]:
    turtle = client.get("/api/v1/catalog.ttl")
    assert turtle.status_code == 200
    assert turtle.headers["content-type"].startswith("text/turtle")
    jsonld = client.get("/api/v1/catalog.jsonld")
    assert jsonld.headers["content-type"].startswith("application/ld+json")
    return (
        Graph().parse(data=turtle.text, format="turtle"),
        Graph().parse(data=jsonld.text, format="json-ld"),
    )


def _dataset(identifier: str) -> URIRef:
    return URIRef(f"{BASE}/catalog/datasets/{identifier}")


def test_turtle_and_jsonld_parse_to_the_same_graph(client: TestClient, fleet: Fleet) -> None:
    from_turtle, from_jsonld = _graphs(client)
    # dct:modified is "now" in each answer; compare the rest.
    for graph in (from_turtle, from_jsonld):
        graph.remove((None, DCTERMS.modified, None))
    assert isomorphic(from_turtle, from_jsonld)


def test_one_dataset_per_municipality_and_kind_with_public_sensors(
    client: TestClient, fleet: Fleet
) -> None:
    graph, _ = _graphs(client)
    catalog = URIRef(f"{BASE}/catalog")
    assert (catalog, RDF.type, DCAT.Catalog) in graph
    datasets = set(graph.objects(catalog, DCAT.dataset))
    # odense parking has only a retired sensor; aarhus's private climate sensor adds nothing
    assert datasets == {
        _dataset("aarhus-climate"),
        _dataset("aarhus-bin"),
        _dataset("odense-climate"),
    }


def test_dataset_has_publisher_licence_coverage_themes_and_distributions(
    client: TestClient, fleet: Fleet
) -> None:
    graph, _ = _graphs(client)
    dataset = _dataset("aarhus-climate")
    titles = {t.language: str(t) for t in graph.objects(dataset, DCTERMS.title)}
    assert titles == {
        "da": "Indeklima (CO2, temperatur, fugt) – Aarhus Kommune",
        "en": "Indoor climate (CO2, temperature, humidity) – Aarhus Kommune",
    }
    publisher = graph.value(dataset, DCTERMS.publisher)
    assert graph.value(publisher, FOAF.name) == Literal("Aarhus Kommune", lang="da")
    period = graph.value(dataset, DCTERMS.temporal)
    assert graph.value(period, DCAT.startDate).toPython() == fleet.start
    assert graph.value(period, DCAT.endDate).toPython() == fleet.end - STEP
    boxes = [graph.value(p, DCAT.bbox) for p in graph.objects(dataset, DCTERMS.spatial)]
    (bbox,) = [b for b in boxes if b is not None]
    assert bbox.datatype == GSP.wktLiteral
    # only sensor 1 is public in aarhus-climate: its point, not the private sensor's
    assert str(bbox) == (
        "POLYGON((10.2107 56.1572, 10.2107 56.1572, 10.2107 56.1572, 10.2107 56.1572, "
        "10.2107 56.1572))"
    )
    themes = set(graph.objects(dataset, DCAT.theme))
    assert URIRef("http://publications.europa.eu/resource/authority/data-theme/ENVI") in themes
    distributions = [  # the files; the API distributions: tests/api/test_catalog_services.py
        d
        for d in graph.objects(dataset, DCAT.distribution)
        if graph.value(d, DCAT.accessService) is None
    ]
    downloads = {str(graph.value(d, DCAT.downloadURL)) for d in distributions}
    assert downloads == {
        f"{BASE}/export/aarhus/readings.{f}?kind=climate" for f in ("csv", "jsonl", "geojson")
    }
    media = {str(graph.value(d, DCAT.mediaType)) for d in distributions}
    assert "https://www.iana.org/assignments/media-types/text/csv" in media
    assert {graph.value(d, DCTERMS.license) for d in distributions} == {CC_BY}
    assert graph.value(dataset, DCAT.contactPoint) is not None


def test_municipality_licence_setting_overrides_the_default(
    client: TestClient, fleet: Fleet
) -> None:
    graph, _ = _graphs(client)
    distributions = graph.objects(_dataset("odense-climate"), DCAT.distribution)
    assert {graph.value(d, DCTERMS.license) for d in distributions} == {CC0}


def test_catalog_never_mentions_hidden_sensors(client: TestClient, fleet: Fleet) -> None:
    text = client.get("/api/v1/catalog.ttl").text
    for hidden in ("10.2", "56.15 ", "10.4024", "parking"):
        assert hidden + " " not in text and hidden + ")" not in text


def test_catalog_negotiates_turtle_or_jsonld(client: TestClient, fleet: Fleet) -> None:
    turtle = client.get("/api/v1/catalog", headers={"Accept": "text/turtle"})
    assert turtle.headers["content-type"].startswith("text/turtle")
    jsonld = client.get(
        "/api/v1/catalog", headers={"Accept": "text/turtle;q=0.5, application/ld+json"}
    )
    assert jsonld.headers["content-type"].startswith("application/ld+json")
    assert client.get("/api/v1/catalog").headers["content-type"].startswith("application/ld+json")
