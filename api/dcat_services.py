"""The standards' endpoints in the DCAT-AP catalogue: one ``dcat:DataService`` each for the
SensorThings API (/sta/v1.1) and the NGSI-LD API (/ngsi-ld/v1), serving every dataset,
and per dataset a ``dcat:Distribution`` with ``dcat:accessService`` whose access URL is
that dataset's slice of the service (its municipality and sensor kind).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

from rdflib import Graph, Literal, URIRef
from rdflib.namespace import DCAT, DCTERMS, RDF

from models.ngsi_ld import TYPE_BY_KIND

EU_FILE_TYPE = "http://publications.europa.eu/resource/authority/file-type/"
IANA_MEDIA = "https://www.iana.org/assignments/media-types/"
STA_STANDARD = "http://www.opengis.net/doc/is/sensorthings/1.1"
NGSI_LD_STANDARD = (
    "https://www.etsi.org/deliver/etsi_gs/CIM/001_099/009/01.08.01_60/gs_CIM009v010801p.pdf"
)


def add_data_services(
    graph: Graph,
    catalog: URIRef,
    datasets: Sequence[tuple[URIRef, dict[str, Any]]],
    base_url: str,
    default_license: str,
) -> None:
    """Add both data services to `catalog` and a distribution per dataset and service."""
    # Imported here: api.dcat imports this module. Its helpers type the licence, media type,
    # file type and standard nodes as DCAT-AP's range and vocabulary shapes require.
    from api.dcat import _concept, _licence, _media_type

    root = base_url.rstrip("/")
    services = {
        "sta": (
            f"{root}/sta/v1.1",
            STA_STANDARD,
            "OGC SensorThings API v1.1",
            "Læseadgang via OGC SensorThings API v1.1 (FROST-klienter, QGIS)",
            "Read access through the OGC SensorThings API v1.1 (FROST clients, QGIS)",
            "application/json",
            "JSON",
        ),
        "ngsi-ld": (
            f"{root}/ngsi-ld/v1",
            NGSI_LD_STANDARD,
            "ETSI NGSI-LD (Smart Data Models)",
            "Læseadgang via ETSI NGSI-LD med Smart Data Models (FIWARE)",
            "Read access through ETSI NGSI-LD with Smart Data Models (FIWARE)",
            "application/ld+json",
            "JSON_LD",
        ),
    }
    for key, (endpoint, standard, title, text_da, text_en, media, file_type) in services.items():
        service = URIRef(f"{endpoint}#service")
        graph.add((catalog, DCAT.service, service))
        graph.add((service, RDF.type, DCAT.DataService))
        graph.add((service, DCTERMS.title, Literal(title, lang="en")))
        graph.add((service, DCTERMS.description, Literal(text_da, lang="da")))
        graph.add((service, DCTERMS.description, Literal(text_en, lang="en")))
        graph.add((service, DCAT.endpointURL, URIRef(endpoint)))
        graph.add((service, DCAT.endpointDescription, URIRef(f"{root}/api/v1/docs")))
        graph.add((URIRef(standard), RDF.type, DCTERMS.Standard))
        graph.add((service, DCTERMS.conformsTo, URIRef(standard)))
        graph.add((service, DCTERMS.license, _licence(graph, default_license)))
        for dataset, row in datasets:
            url = _slice_url(key, endpoint, row)
            if url is None:
                continue
            graph.add((service, DCAT.servesDataset, dataset))
            distribution = URIRef(f"{dataset}#{key}")
            licence = (row.get("settings") or {}).get("open_data_license") or default_license
            graph.add((dataset, DCAT.distribution, distribution))
            graph.add((distribution, RDF.type, DCAT.Distribution))
            graph.add((distribution, DCTERMS.title, Literal(f"{title}: {row['name']}", lang="en")))
            graph.add((distribution, DCAT.accessURL, URIRef(url)))
            graph.add((distribution, DCAT.accessService, service))
            graph.add((distribution, DCAT.mediaType, _media_type(graph, media)))
            graph.add(
                (
                    distribution,
                    DCTERMS.format,
                    _concept(graph, EU_FILE_TYPE, file_type, DCTERMS.MediaTypeOrExtent),
                )
            )
            graph.add((distribution, DCTERMS.conformsTo, URIRef(standard)))
            graph.add((distribution, DCTERMS.license, _licence(graph, licence)))


def _slice_url(key: str, endpoint: str, row: dict[str, Any]) -> str | None:
    """The service's URL for one municipality's sensors of one kind."""
    slug, kind = row["slug"], row["kind"]
    if key == "sta":
        flt = f"properties/municipality eq '{slug}' and properties/kind eq '{kind}'"
        return f"{endpoint}/Things?{urlencode({'$filter': flt}, quote_via=quote)}"
    type_name = TYPE_BY_KIND.get(kind)
    if type_name is None:
        return None
    query = {"type": type_name, "q": f'dataProvider=="{row["name"]}"'}
    return f"{endpoint}/entities?{urlencode(query, quote_via=quote)}"
