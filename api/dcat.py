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
from rdflib.namespace import DCAT, DCTERMS, FOAF, RDF, SKOS, XSD

from api.dcat_services import add_data_services
from api.open_files import OpenFile

VCARD = Namespace("http://www.w3.org/2006/vcard/ns#")
GSP = Namespace("http://www.opengis.net/ont/geosparql#")
ADMS = Namespace("http://www.w3.org/ns/adms#")
DCATAP = Namespace("http://data.europa.eu/r5r/")
EU_THEME = "http://publications.europa.eu/resource/authority/data-theme/"
EU_FILE_TYPE = "http://publications.europa.eu/resource/authority/file-type/"
EU_FREQUENCY = "http://publications.europa.eu/resource/authority/frequency/"
EU_ACCESS = "http://publications.europa.eu/resource/authority/access-right/"
EU_LANGUAGE = "http://publications.europa.eu/resource/authority/language/"
IANA_MEDIA = "https://www.iana.org/assignments/media-types/"
EU_COUNTRY = "http://publications.europa.eu/resource/authority/country/"
EU_AVAILABILITY = "http://publications.europa.eu/resource/authority/planned-availability/"
PUBLISHER_TYPE_LOCAL = URIRef("http://purl.org/adms/publishertype/LocalAuthority")
PUBLISHER_TYPES = URIRef("http://purl.org/adms/publishertype/1.0")
LICENCE_TYPES = URIRef("http://purl.org/adms/licencetype/1.0")
# A Danish municipality's authority IRI: its DAGI record (Danmarks Administrative
# Geografiske Inddeling) at Dataforsyningen, by the four-digit kommune code.
DAGI_MUNICIPALITY = "https://api.dataforsyningen.dk/kommuner/"
# English labels of the authority-table entries and tables the catalogue uses (DCAT-AP
# requires a skos:prefLabel on every skos:Concept and a dct:title on every scheme).
CONCEPT_LABELS: dict[str, str] = {
    "access-right/PUBLIC": "public",
    "country/DNK": "Denmark",
    "data-theme/ENVI": "Environment",
    "data-theme/HEAL": "Health",
    "data-theme/REGI": "Regions and cities",
    "data-theme/TRAN": "Transport",
    "file-type/CSV": "CSV",
    "file-type/JSON": "JSON",
    "file-type/JSON_LD": "JSON-LD",
    "file-type/GEOJSON": "GeoJSON",
    "file-type/PARQUET": "Parquet",
    "frequency/CONT": "continuous",
    "frequency/DAILY": "daily",
    "language/DAN": "Danish",
    "language/ENG": "English",
    "planned-availability/STABLE": "stable",
    "licencetype/Attribution": "Attribution",
    "licencetype/PublicDomain": "Public domain",
    "publishertype/LocalAuthority": "Local Authority",
}
SCHEME_TITLES: dict[str, str] = {
    EU_ACCESS: "Access right",
    EU_COUNTRY: "Country",
    EU_THEME: "Data theme",
    EU_FILE_TYPE: "File type",
    EU_FREQUENCY: "Frequency",
    EU_LANGUAGE: "Language",
    EU_AVAILABILITY: "Planned availability",
    "http://purl.org/adms/licencetype/1.0": "Licence type",
    "http://purl.org/adms/publishertype/1.0": "Publisher type",
}
# Licence type (ADMS licence type vocabulary) of the licences municipalities use.
LICENCE_KINDS: dict[str, str] = {
    "https://creativecommons.org/licenses/by/4.0/": "Attribution",
    "https://creativecommons.org/licenses/by-sa/4.0/": "Attribution",
    "https://creativecommons.org/publicdomain/zero/1.0/": "PublicDomain",
    "http://data.europa.eu/eli/dec_impl/2011/833/oj": "Attribution",
}

# JSON-LD context: prefixes only, so every term stays a full, harvestable IRI.
JSONLD_CONTEXT: dict[str, str] = {
    "dcat": str(DCAT),
    "dct": str(DCTERMS),
    "foaf": str(FOAF),
    "vcard": str(VCARD),
    "gsp": str(GSP),
    "adms": str(ADMS),
    "dcatap": str(DCATAP),
    "skos": str(SKOS),
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


def build_catalog(
    datasets: Sequence[dict[str, Any]],
    base_url: str,
    default_license: str,
    files: Sequence[OpenFile] = (),
) -> Graph:
    """The catalogue graph for `datasets` (rows of api.queries.catalog.catalog_datasets),
    with the pre-generated `files` (api/open_files.py) as further distributions."""
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
    graph.add((catalog, FOAF.homepage, _document(graph, f"{base}/docs")))
    graph.add((catalog, DCTERMS.license, _licence(graph, default_license)))
    for language in ("DAN", "ENG"):
        graph.add((catalog, DCTERMS.language, _language(graph, language)))
    graph.add((catalog, DCAT.themeTaxonomy, _scheme(graph, EU_THEME)))
    graph.add((catalog, DCTERMS.modified, Literal(_now(), datatype=XSD.dateTime)))
    operator = URIRef(f"{base}/catalog#publisher")
    graph.add((catalog, DCTERMS.publisher, operator))
    graph.add((operator, RDF.type, FOAF.Agent))
    graph.add((operator, FOAF.name, Literal("kommune-iot open data")))

    by_dataset: dict[tuple[str, str], list[OpenFile]] = {}
    for f in files:
        by_dataset.setdefault((f.slug, f.kind), []).append(f)
    added = []
    for row in datasets:
        dataset = _add_dataset(graph, row, base, default_license)
        graph.add((catalog, DCAT.dataset, dataset))
        licence = _licence(
            graph, (row.get("settings") or {}).get("open_data_license") or default_license
        )
        files_of_dataset = by_dataset.get((row["slug"], row["kind"]), [])
        _add_file_distributions(graph, dataset, row, base, licence, files_of_dataset)
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
    license_url = _licence(
        graph, (row.get("settings") or {}).get("open_data_license") or default_license
    )

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
        graph.add((dataset, DCAT.theme, _concept(graph, EU_THEME, theme)))
    graph.add((dataset, DCAT.keyword, Literal(kind, lang="en")))
    for metric in sorted(row.get("metrics") or []):
        graph.add((dataset, DCAT.keyword, Literal(metric)))
    frequency = _concept(graph, EU_FREQUENCY, "CONT", DCTERMS.Frequency)
    graph.add((dataset, DCTERMS.accrualPeriodicity, frequency))
    access = _concept(graph, EU_ACCESS, "PUBLIC", DCTERMS.RightsStatement)
    graph.add((dataset, DCTERMS.accessRights, access))
    landing = f"{base}/sensors?municipality={quote(slug)}&kind={quote(kind)}"
    graph.add((dataset, DCAT.landingPage, _document(graph, landing)))
    for language in ("DAN", "ENG"):
        graph.add((dataset, DCTERMS.language, _language(graph, language)))

    publisher = URIRef(f"{base}/municipalities/{slug}")
    graph.add((dataset, DCTERMS.publisher, publisher))
    graph.add((publisher, RDF.type, FOAF.Agent))
    graph.add((publisher, FOAF.name, Literal(name, lang="da")))
    graph.add((publisher, DCTERMS.type, PUBLISHER_TYPE_LOCAL))
    _in_scheme(graph, PUBLISHER_TYPE_LOCAL, PUBLISHER_TYPES)
    if row.get("kommune_code"):
        graph.add((publisher, DCTERMS.identifier, Literal(row["kommune_code"])))

    contact = BNode()
    graph.add((dataset, DCAT.contactPoint, contact))
    graph.add((contact, RDF.type, VCARD.Organization))
    graph.add((contact, RDF.type, VCARD.Kind))
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

    if row.get("kommune_code"):
        place = URIRef(DAGI_MUNICIPALITY + quote(row["kommune_code"]))
        graph.add((dataset, DCTERMS.spatial, place))
        graph.add((place, RDF.type, DCTERMS.Location))
        graph.add((place, SKOS.prefLabel, Literal(name, lang="da")))
    graph.add((dataset, DCTERMS.spatial, _concept(graph, EU_COUNTRY, "DNK", DCTERMS.Location)))
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
        _texts(
            graph,
            distribution,
            DCTERMS.description,
            f"Målinger fra {name} som {format_title}, streamet fra API'et; vælg periode "
            "(højst 366 dage) med from og to.",
            f"Readings from {name} as {format_title}, streamed by the API; choose the "
            "period (at most 366 days) with from and to.",
        )
        graph.add((distribution, DCAT.accessURL, url))
        graph.add((distribution, DCAT.downloadURL, url))
        graph.add((distribution, DCAT.mediaType, _media_type(graph, media_type)))
        graph.add(
            (
                distribution,
                DCTERMS.format,
                _concept(graph, EU_FILE_TYPE, file_type, DCTERMS.MediaTypeOrExtent),
            )
        )
        graph.add((distribution, DCTERMS.license, license_url))
        graph.add((distribution, DCATAP.availability, _concept(graph, EU_AVAILABILITY, "STABLE")))
    return dataset


def _label_key(iri: URIRef) -> str:
    """``.../authority/file-type/CSV`` → ``file-type/CSV``; ``.../adms/licencetype/1.0``
    → ``licencetype/1.0``."""
    parts = str(iri).rstrip("/").split("/")
    return "/".join(parts[-2:])


# Pre-generated files listed per dataset: every month's, and the newest days'.
FILE_DAYS_LISTED = 7
FILE_FORMATS: dict[str, tuple[str, str, str | None]] = {
    # format → (title, IANA media type of the content, compression media type)
    "csv.gz": ("CSV (gzip)", "text/csv", "application/gzip"),
    "parquet": ("Parquet", "application/vnd.apache.parquet", None),
}
FILE_TYPES = {"csv.gz": "CSV", "parquet": "PARQUET"}


def _add_file_distributions(
    graph: Graph,
    dataset: URIRef,
    row: dict[str, Any],
    base: str,
    license_url: URIRef,
    files: list[OpenFile],
) -> None:
    """One distribution per pre-generated file: all monthly files, the newest daily."""
    daily = sorted({f.period for f in files if not f.monthly}, reverse=True)[:FILE_DAYS_LISTED]
    for f in files:
        if not f.monthly and f.period not in daily:
            continue
        title, media_type, compression = FILE_FORMATS[f.format]
        url = URIRef(f"{base}/files/{f.slug}/{f.kind}/{f.name}")
        distribution = URIRef(f"{dataset}#file-{f.period}-{f.format}")
        span_da = "måned" if f.monthly else "dag"
        span_en = "month" if f.monthly else "day"
        graph.add((dataset, DCAT.distribution, distribution))
        graph.add((distribution, RDF.type, DCAT.Distribution))
        _texts(graph, distribution, DCTERMS.title, f"{row['name']} {f.period} ({title})",
               f"{row['name']} {f.period} ({title})")  # fmt: skip
        _texts(
            graph,
            distribution,
            DCTERMS.description,
            f"Alle målinger fra {row['name']}s offentlige sensorer for én {span_da} "
            f"({f.period}, UTC), som {title}.",
            f"Every reading of {row['name']}'s public sensors for one {span_en} "
            f"({f.period}, UTC), as {title}.",
        )
        graph.add((distribution, DCAT.accessURL, url))
        graph.add((distribution, DCAT.downloadURL, url))
        graph.add((distribution, DCAT.mediaType, _media_type(graph, media_type)))
        if compression:
            graph.add((distribution, DCAT.compressFormat, _media_type(graph, compression)))
        file_type = _concept(graph, EU_FILE_TYPE, FILE_TYPES[f.format], DCTERMS.MediaTypeOrExtent)
        graph.add((distribution, DCTERMS.format, file_type))
        graph.add((distribution, DCAT.byteSize, Literal(f.bytes, datatype=XSD.nonNegativeInteger)))
        graph.add((distribution, DCTERMS.license, license_url))
        graph.add((distribution, DCATAP.availability, _concept(graph, EU_AVAILABILITY, "STABLE")))


def _scheme(graph: Graph, namespace: str) -> URIRef:
    """An EU authority table (``.../authority/file-type/``) as a skos:ConceptScheme."""
    scheme = URIRef(namespace.rstrip("/"))
    graph.add((scheme, RDF.type, SKOS.ConceptScheme))
    title = SCHEME_TITLES.get(namespace) or SCHEME_TITLES.get(namespace.rstrip("/") + "/")
    if title:
        graph.add((scheme, DCTERMS.title, Literal(title, lang="en")))
    return scheme


def _in_scheme(graph: Graph, concept: URIRef, scheme: URIRef) -> None:
    graph.add((concept, RDF.type, SKOS.Concept))
    graph.add((concept, SKOS.inScheme, scheme))
    label = CONCEPT_LABELS.get(_label_key(concept))
    if label:
        graph.add((concept, SKOS.prefLabel, Literal(label, lang="en")))
    _scheme(graph, str(scheme))


def _concept(graph: Graph, namespace: str, code: str, kind: URIRef | None = None) -> URIRef:
    """An entry of an EU authority table, typed, labelled and placed in its scheme, so
    that the catalogue states what DCAT-AP's range and vocabulary rules check."""
    concept = URIRef(namespace + code)
    _in_scheme(graph, concept, URIRef(namespace.rstrip("/")))
    if kind is not None:
        graph.add((concept, RDF.type, kind))
    return concept


def _language(graph: Graph, code: str) -> URIRef:
    return _concept(graph, EU_LANGUAGE, code, DCTERMS.LinguisticSystem)


def _document(graph: Graph, url: str) -> URIRef:
    page = URIRef(url)
    graph.add((page, RDF.type, FOAF.Document))
    return page


def _media_type(graph: Graph, media_type: str) -> URIRef:
    iri = URIRef(IANA_MEDIA + media_type)
    graph.add((iri, RDF.type, DCTERMS.MediaType))
    return iri


def _licence(graph: Graph, url: str) -> URIRef:
    """The licence as a dct:LicenseDocument, with its ADMS licence type when known."""
    licence = URIRef(url)
    graph.add((licence, RDF.type, DCTERMS.LicenseDocument))
    kind = LICENCE_KINDS.get(url) or LICENCE_KINDS.get(url.rstrip("/") + "/")
    if kind:
        licence_type = URIRef(f"http://purl.org/adms/licencetype/{kind}")
        graph.add((licence, DCTERMS.type, licence_type))
        _in_scheme(graph, licence_type, LICENCE_TYPES)
    return licence


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
