"""A DCAT-AP 3 catalogue (with DCAT-AP-DK's Danish titles) of each municipality's data.

One ``dcat:Dataset`` per municipality and sensor kind that has public sensors, with
publisher, licence, temporal and spatial coverage, themes, contact point and one
distribution per export format. Built as an RDF graph (rdflib) so that JSON-LD and Turtle
say exactly the same thing; Open Data DK's CKAN (ckanext-dcat) harvests either.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from rdflib import BNode, Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCAT, DCTERMS, FOAF, RDF, XSD

from api.dcat_services import add_data_services

VCARD = Namespace("http://www.w3.org/2006/vcard/ns#")
GSP = Namespace("http://www.opengis.net/ont/geosparql#")
ADMS = Namespace("http://www.w3.org/ns/adms#")
EU_THEME = "http://publications.europa.eu/resource/authority/data-theme/"
EU_FILE_TYPE = "http://publications.europa.eu/resource/authority/file-type/"
EU_FREQUENCY = "http://publications.europa.eu/resource/authority/frequency/"
EU_ACCESS = "http://publications.europa.eu/resource/authority/access-right/"
EU_LANGUAGE = "http://publications.europa.eu/resource/authority/language/"
IANA_MEDIA = "https://www.iana.org/assignments/media-types/"
PUBLISHER_TYPE_LOCAL = URIRef("http://purl.org/adms/publishertype/LocalAuthority")

# JSON-LD context: prefixes only, so every term stays a full, harvestable IRI.
JSONLD_CONTEXT: dict[str, str] = {
    "dcat": str(DCAT),
    "dct": str(DCTERMS),
    "foaf": str(FOAF),
    "vcard": str(VCARD),
    "gsp": str(GSP),
    "adms": str(ADMS),
    "xsd": str(XSD),
}

# (Danish, English) titles and EU data themes per sensor kind.
KIND_TITLES: dict[str, tuple[str, str]] = {
    "climate": ("Indeklima (CO2, temperatur, fugt)", "Indoor climate (CO2, temperature, humidity)"),
    "bin": ("Fyldningsgrad af affaldsbeholdere", "Waste bin fill levels"),
    "parking": ("Belægning af parkeringspladser", "Parking space occupancy"),
    "other": ("Øvrige sensormålinger", "Other sensor readings"),
}
KIND_THEMES: dict[str, tuple[str, ...]] = {
    "climate": ("ENVI", "HEAL"),
    "bin": ("ENVI", "REGI"),
    "parking": ("TRAN", "REGI"),
    "other": ("REGI",),
}
# format key → (title, IANA media type, EU file type)
DISTRIBUTIONS: dict[str, tuple[str, str, str]] = {
    "csv": ("CSV", "text/csv", "CSV"),
    "jsonl": ("JSON Lines", "application/x-ndjson", "JSON"),
    "geojson": ("GeoJSON", "application/geo+json", "GEOJSON"),
}


def build_catalog(datasets: Sequence[dict[str, Any]], base_url: str, default_license: str) -> Graph:
    """The catalogue graph for `datasets` (rows of api.queries.catalog.catalog_datasets)."""
    base = base_url.rstrip("/") + "/api/v1"
    graph = Graph()
    for prefix, iri in JSONLD_CONTEXT.items():
        graph.bind(prefix, Namespace(iri))

    catalog = URIRef(f"{base}/catalog")
    graph.add((catalog, RDF.type, DCAT.Catalog))
    _texts(
        graph, catalog, DCTERMS.title, "Åbne sensordata fra kommuner", "Open municipal sensor data"
    )
    _texts(
        graph,
        catalog,
        DCTERMS.description,
        "Målinger fra kommunernes offentlige IoT-sensorer: indeklima, affald og parkering.",
        "Readings from municipalities' public IoT sensors: indoor climate, waste and parking.",
    )
    graph.add((catalog, FOAF.homepage, URIRef(f"{base}/docs")))
    graph.add((catalog, DCTERMS.license, URIRef(default_license)))
    graph.add((catalog, DCTERMS.language, URIRef(EU_LANGUAGE + "DAN")))
    graph.add((catalog, DCTERMS.language, URIRef(EU_LANGUAGE + "ENG")))
    graph.add((catalog, DCTERMS.modified, Literal(_now(), datatype=XSD.dateTime)))
    operator = URIRef(f"{base}/catalog#publisher")
    graph.add((catalog, DCTERMS.publisher, operator))
    graph.add((operator, RDF.type, FOAF.Agent))
    graph.add((operator, FOAF.name, Literal("kommune-iot open data")))

    added = []
    for row in datasets:
        dataset = _add_dataset(graph, row, base, default_license)
        graph.add((catalog, DCAT.dataset, dataset))
        added.append((dataset, row))
    # The SensorThings and NGSI-LD endpoints as data services (api/dcat_services.py).
    add_data_services(graph, catalog, added, base_url, default_license)
    return graph


def to_jsonld(graph: Graph) -> bytes:
    """The graph as compact JSON-LD with the prefixes of JSONLD_CONTEXT."""
    return graph.serialize(format="json-ld", context=JSONLD_CONTEXT, auto_compact=True).encode()


def to_turtle(graph: Graph) -> bytes:
    """The graph as RDF 1.1 Turtle."""
    return graph.serialize(format="turtle").encode()


def _add_dataset(graph: Graph, row: dict[str, Any], base: str, default_license: str) -> URIRef:
    slug, kind, name = row["slug"], row["kind"], row["name"]
    identifier = f"{slug}-{kind}"
    dataset = URIRef(f"{base}/catalog/datasets/{identifier}")
    title_da, title_en = KIND_TITLES.get(kind, KIND_TITLES["other"])
    license_url = URIRef((row.get("settings") or {}).get("open_data_license") or default_license)

    graph.add((dataset, RDF.type, DCAT.Dataset))
    graph.add((dataset, DCTERMS.identifier, Literal(identifier)))
    _texts(graph, dataset, DCTERMS.title, f"{title_da} – {name}", f"{title_en} – {name}")
    _texts(
        graph,
        dataset,
        DCTERMS.description,
        f"Målinger fra {row['sensors']} offentlige sensorer i {name}, opdateret løbende. "
        "Vælg periode (højst 366 dage) med from og to i download-URL'en.",
        f"Readings from {row['sensors']} public sensors in {name}, updated continuously. "
        "Choose the period (at most 366 days) with from and to in the download URL.",
    )
    for theme in KIND_THEMES.get(kind, ("REGI",)):
        graph.add((dataset, DCAT.theme, URIRef(EU_THEME + theme)))
    graph.add((dataset, DCAT.keyword, Literal(kind, lang="en")))
    for metric in sorted(row.get("metrics") or []):
        graph.add((dataset, DCAT.keyword, Literal(metric)))
    graph.add((dataset, DCTERMS.accrualPeriodicity, URIRef(EU_FREQUENCY + "CONT")))
    graph.add((dataset, DCTERMS.accessRights, URIRef(EU_ACCESS + "PUBLIC")))
    graph.add(
        (
            dataset,
            DCAT.landingPage,
            URIRef(f"{base}/sensors?municipality={quote(slug)}&kind={quote(kind)}"),
        )
    )

    publisher = URIRef(f"{base}/municipalities/{slug}")
    graph.add((dataset, DCTERMS.publisher, publisher))
    graph.add((publisher, RDF.type, FOAF.Agent))
    graph.add((publisher, FOAF.name, Literal(name, lang="da")))
    graph.add((publisher, DCTERMS.type, PUBLISHER_TYPE_LOCAL))
    if row.get("kommune_code"):
        graph.add((publisher, DCTERMS.identifier, Literal(row["kommune_code"])))

    contact = BNode()
    graph.add((dataset, DCAT.contactPoint, contact))
    graph.add((contact, RDF.type, VCARD.Organization))
    graph.add((contact, VCARD.fn, Literal(name)))
    email = (row.get("settings") or {}).get("contact_email")
    if email:
        graph.add((contact, VCARD.hasEmail, URIRef(f"mailto:{email}")))
    else:
        graph.add((contact, VCARD.hasURL, URIRef(f"{base}/municipalities/{slug}")))

    if row.get("start") and row.get("end"):
        period = BNode()
        graph.add((dataset, DCTERMS.temporal, period))
        graph.add((period, RDF.type, DCTERMS.PeriodOfTime))
        graph.add((period, DCAT.startDate, Literal(_iso(row["start"]), datatype=XSD.dateTime)))
        graph.add((period, DCAT.endDate, Literal(_iso(row["end"]), datatype=XSD.dateTime)))

    if row.get("min_lat") is not None and row.get("min_lon") is not None:
        location = BNode()
        graph.add((dataset, DCTERMS.spatial, location))
        graph.add((location, RDF.type, DCTERMS.Location))
        graph.add((location, DCAT.bbox, Literal(_bbox_wkt(row), datatype=GSP.wktLiteral)))

    for fmt, (format_title, media_type, file_type) in DISTRIBUTIONS.items():
        distribution = URIRef(f"{dataset}#{fmt}")
        url = URIRef(f"{base}/export/{slug}/readings.{fmt}?kind={quote(kind)}")
        graph.add((dataset, DCAT.distribution, distribution))
        graph.add((distribution, RDF.type, DCAT.Distribution))
        _texts(
            graph,
            distribution,
            DCTERMS.title,
            f"{title_da} ({format_title})",
            f"{title_en} ({format_title})",
        )
        graph.add((distribution, DCAT.accessURL, url))
        graph.add((distribution, DCAT.downloadURL, url))
        graph.add((distribution, DCAT.mediaType, URIRef(IANA_MEDIA + media_type)))
        graph.add((distribution, DCTERMS.format, URIRef(EU_FILE_TYPE + file_type)))
        graph.add((distribution, DCTERMS.license, license_url))
    return dataset


def _texts(graph: Graph, subject: URIRef, predicate: URIRef, danish: str, english: str) -> None:
    graph.add((subject, predicate, Literal(danish, lang="da")))
    graph.add((subject, predicate, Literal(english, lang="en")))


def _bbox_wkt(row: dict[str, Any]) -> str:
    """The sensors' bounding box as a WKT polygon (longitude first, WGS84 / CRS84)."""
    w, e, s, n = row["min_lon"], row["max_lon"], row["min_lat"], row["max_lat"]
    return f"POLYGON(({w} {s}, {e} {s}, {e} {n}, {w} {n}, {w} {s}))"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _now() -> str:
    return _iso(datetime.now(UTC).replace(microsecond=0))
