"""The DCAT catalogue passes the official SHACL shapes: DCAT-AP 3.0.1 (base, ranges, EU
controlled vocabularies) and the Danish profile DCAT-AP-DK 2.0.2, which Open Data DK
harvests against (shapes and their licence in tests/schemas/dcat-ap/)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pyshacl import validate
from rdflib import Graph, Namespace, URIRef
from rdflib.namespace import DCTERMS, RDF

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
def catalogue(client: TestClient, fleet: Fleet) -> Graph:
    return Graph().parse(data=client.get("/api/v1/catalog.ttl").text, format="turtle")


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
    ]
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
