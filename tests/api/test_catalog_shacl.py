"""The DCAT catalogue passes the official SHACL shapes: DCAT-AP 3.0.1 (base, ranges, EU
controlled vocabularies) and the Danish profile DCAT-AP-DK 2.0.2, which Open Data DK
harvests against (shapes and their licence in tests/schemas/dcat-ap/).

The catalogue is served as deployed: by the public API's role (iot_api), with the
standards' DataServices (SensorThings, NGSI-LD) and the pre-generated open-data files as
distributions, so every part of it is validated together."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from pyshacl import validate
from rdflib import Graph, Namespace, URIRef
from rdflib.namespace import DCAT, DCTERMS, RDF

from api.app import create_app
from api.open_files import generate
from models.db_roles import API, enable_logins, role_url
from models.settings import Settings
from tests.api.conftest import Fleet

pytestmark = pytest.mark.storage

SHAPES = Path(__file__).resolve().parent.parent / "schemas" / "dcat-ap"
SH = Namespace("http://www.w3.org/ns/shacl#")
BASE = "http://127.0.0.1:8000/api/v1"


def _shapes(*names: str) -> Graph:
    graph = Graph()
    for name in names:
        graph.parse(SHAPES / name, format="turtle")
    return graph


# Where DCAT-AP-DK 2.0.2 (built on DCAT-AP 2.0.1) and DCAT-AP 3.0.1 ask for different
# IRIs, the catalogue follows DCAT-AP 3 and these DK rules fail, on exactly these values:
# * dct:language: the DK shape's pattern wants ``.../resource/dataset/language/`` while
#   its own text (and DCAT-AP 3's vocabulary rule) names the EU authority list
#   ``.../resource/authority/language/``;
# * dcatap:availability: DK wants DCAT-AP 2's ``http://data.europa.eu/r5r/availability/``
#   list, DCAT-AP 3 the EU authority table ``.../authority/planned-availability/``.
DCATAP = Namespace("http://data.europa.eu/r5r/")
# * dcat:byteSize: DK wants xsd:decimal, DCAT-AP 3 (and DCAT 3) xsd:nonNegativeInteger.
DATATYPE_CONFLICTS = {str(DCAT.byteSize): "xsd:decimal"}
PROFILE_CONFLICTS = {
    DCTERMS.language: "http://publications.europa.eu/resource/authority/language/",
    DCATAP.availability: "http://publications.europa.eu/resource/authority/planned-availability/",
}


def _results(data: Graph, shapes: Graph) -> list[tuple[str, str, str, str]]:
    """(focus node, path, value, message) of every violation (warnings pass)."""
    conforms, report, _text = validate(
        data, shacl_graph=shapes, inference="none", allow_warnings=True, advanced=True
    )
    if conforms:
        return []
    problems = []
    for result in report.subjects(RDF.type, SH.ValidationResult):
        if report.value(result, SH.resultSeverity) != SH.Violation:
            continue
        problems.append(
            (
                str(report.value(result, SH.focusNode)),
                str(report.value(result, SH.resultPath)),
                str(report.value(result, SH.value)),
                str(report.value(result, SH.resultMessage)),
            )
        )
    return sorted(problems)


def _violations(data: Graph, shapes: Graph) -> list[str]:
    return [f"{focus} {path} {value}: {message}" for focus, path, value, message in
            _results(data, shapes)]  # fmt: skip


@pytest.fixture
def catalogue(settings: Settings, db: psycopg.Connection, fleet: Fleet, tmp_path: Path) -> Graph:
    generate(db, tmp_path, [date(2026, 3, 1)], [(2026, 3)])
    enable_logins(db, {})
    public = settings.model_copy(
        update={
            "database_url": role_url(settings.database_url, API),
            "open_data_files_dir": str(tmp_path),
        }
    )
    with TestClient(create_app(public)) as client:
        response = client.get("/api/v1/catalog.ttl")
    assert response.status_code == 200, response.text
    return Graph().parse(data=response.text, format="turtle")


def test_the_catalogue_has_data_services_and_file_distributions(catalogue: Graph) -> None:
    """What the shapes below validate includes every kind of node the catalogue makes."""
    services = set(catalogue.subjects(RDF.type, DCAT.DataService))
    assert len(services) == 2
    dataset = URIRef(f"{BASE}/catalog/datasets/aarhus-climate")
    downloads = {
        str(catalogue.value(d, DCAT.downloadURL))
        for d in catalogue.objects(dataset, DCAT.distribution)
    }
    assert f"{BASE}/files/aarhus/climate/aarhus-climate-2026-03.parquet" in downloads
    assert f"{BASE}/files/aarhus/climate/aarhus-climate-2026-03-01.csv.gz" in downloads
    served_by = {s for d in catalogue.objects(dataset, DCAT.distribution)
                 for s in catalogue.objects(d, DCAT.accessService)}  # fmt: skip
    assert served_by == services


def test_passes_the_dcat_ap_base_shapes(catalogue: Graph) -> None:
    assert _violations(catalogue, _shapes("dcat-ap-3.0.1-shapes.ttl")) == []


def test_passes_the_dcat_ap_range_shapes(catalogue: Graph) -> None:
    assert _violations(catalogue, _shapes("dcat-ap-3.0.1-range.ttl")) == []


def test_passes_the_dcat_ap_vocabulary_shapes(catalogue: Graph) -> None:
    assert _violations(catalogue, _shapes("dcat-ap-3.0.1-mdr-vocabularies.shape.ttl")) == []


def test_passes_the_danish_profile(catalogue: Graph) -> None:
    results = _results(catalogue, _shapes("dcat-ap-dk-2.0.2-shapes.ttl"))
    conflicts = [
        r
        for r in results
        if URIRef(r[1]) in PROFILE_CONFLICTS
        and r[2].startswith(PROFILE_CONFLICTS[URIRef(r[1])])
        and "does not match pattern" in r[3]
    ] + [r for r in results if r[1] in DATATYPE_CONFLICTS and DATATYPE_CONFLICTS[r[1]] in r[3]]
    assert [r for r in results if r not in conflicts] == []


def test_spatial_coverage_is_the_municipality(catalogue: Graph) -> None:
    dataset = URIRef(f"{BASE}/catalog/datasets/aarhus-climate")
    places = set(catalogue.objects(dataset, DCTERMS.spatial))
    # Aarhus (kommune code 0751) in DAGI, the Danish authority on administrative areas
    assert URIRef("https://api.dataforsyningen.dk/kommuner/0751") in places


def test_the_shapes_catch_an_untyped_licence(catalogue: Graph) -> None:
    """The validation is not vacuous: remove what a shape requires and it fails."""
    for licence in set(catalogue.subjects(RDF.type, DCTERMS.LicenseDocument)):
        catalogue.remove((licence, RDF.type, DCTERMS.LicenseDocument))
    assert any(
        "license" in v.lower() for v in _violations(catalogue, _shapes("dcat-ap-3.0.1-range.ttl"))
    )
