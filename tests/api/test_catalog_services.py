"""The DCAT-AP catalogue announces the SensorThings and NGSI-LD endpoints as data services,
with a distribution per dataset whose access URL answers with that dataset's sensors."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from rdflib import Graph, URIRef
from rdflib.namespace import DCAT, DCTERMS, RDF

from tests.api.conftest import Fleet

pytestmark = pytest.mark.storage


def catalog_graph(client: TestClient) -> Graph:
    response = client.get("/api/v1/catalog.ttl")
    assert response.status_code == 200
    return Graph().parse(data=response.text, format="turtle")


def test_both_endpoints_are_data_services_serving_every_dataset(
    client: TestClient, fleet: Fleet
) -> None:
    graph = catalog_graph(client)
    catalog = next(graph.subjects(RDF.type, DCAT.Catalog))
    services = set(graph.objects(catalog, DCAT.service))
    endpoints = {str(graph.value(s, DCAT.endpointURL)).rsplit("/", 2)[-2:][0] for s in services}
    assert endpoints == {"sta", "ngsi-ld"}
    datasets = set(graph.objects(catalog, DCAT.dataset))
    for service in services:
        assert (service, RDF.type, DCAT.DataService) in graph
        assert graph.value(service, DCTERMS.conformsTo) is not None
        assert graph.value(service, DCTERMS.license) is not None
        served = set(graph.objects(service, DCAT.servesDataset))
        assert served == datasets  # every kind here has a Smart Data Model
    # JSON-LD says the same.
    jsonld = Graph().parse(data=client.get("/api/v1/catalog.jsonld").text, format="json-ld")
    assert len(set(jsonld.subjects(RDF.type, DCAT.DataService))) == 2


def test_each_dataset_has_a_distribution_per_service_that_answers_with_its_sensors(
    client: TestClient, fleet: Fleet
) -> None:
    graph = catalog_graph(client)
    checked = 0
    for distribution in graph.subjects(DCAT.accessService, None):
        url = str(graph.value(distribution, DCAT.accessURL))
        dataset = next(graph.subjects(DCAT.distribution, distribution))
        identifier = str(graph.value(dataset, DCTERMS.identifier))  # e.g. aarhus-climate
        parts = urlsplit(url)
        response = client.get(f"{parts.path}?{parts.query}")
        assert response.status_code == 200, (url, response.text)
        body = response.json()
        items = body["value"] if isinstance(body, dict) else body
        municipality = identifier.split("-")[0]
        if "/sta/" in url:
            assert items and all(t["properties"]["municipality"] == municipality for t in items)
        checked += 1
        assert graph.value(distribution, DCAT.mediaType) is not None
        assert isinstance(graph.value(distribution, DCAT.accessService), URIRef)
    assert checked == 2 * 3  # three datasets (aarhus climate and bin, odense climate)
