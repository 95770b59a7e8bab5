"""The DCAT-AP catalogue of the open data, as JSON-LD or Turtle (content negotiation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from api import http_cache
from api.dcat import build_catalog, to_jsonld, to_turtle
from api.deps import AppSettings, Conn
from api.open_files import list_files
from api.queries.catalog import catalog_datasets

router = APIRouter(prefix="/api/v1", tags=["catalogue"])

JSONLD = "application/ld+json"
TURTLE = "text/turtle"
MAX_AGE_CATALOG_S = 3600


@router.get(
    "/catalog.jsonld",
    responses={200: {"content": {JSONLD: {}}, "description": "DCAT-AP catalogue, JSON-LD"}},
)
async def catalog_jsonld(request: Request, conn: Conn, settings: AppSettings) -> Response:
    """The catalogue (DCAT-AP 3, DCAT-AP-DK titles) as JSON-LD."""
    return await _catalog(request, conn, settings, JSONLD)


@router.get(
    "/catalog.ttl",
    responses={200: {"content": {TURTLE: {}}, "description": "DCAT-AP catalogue, Turtle"}},
)
async def catalog_turtle(request: Request, conn: Conn, settings: AppSettings) -> Response:
    """The catalogue (DCAT-AP 3, DCAT-AP-DK titles) as RDF/Turtle."""
    return await _catalog(request, conn, settings, TURTLE)


@router.get(
    "/catalog",
    responses={
        200: {
            "content": {JSONLD: {}, TURTLE: {}},
            "description": "Turtle when Accept prefers text/turtle, else JSON-LD",
        }
    },
)
async def catalog(
    request: Request,
    conn: Conn,
    settings: AppSettings,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """The catalogue by content negotiation: ``Accept: text/turtle`` or JSON-LD."""
    return await _catalog(request, conn, settings, _negotiate(accept))


async def _catalog(
    request: Request, conn: Conn, settings: AppSettings, media_type: str
) -> Response:
    rows = await catalog_datasets(conn)
    files = list_files(Path(settings.open_data_files_dir))
    graph = build_catalog(rows, settings.public_base_url, settings.open_data_license, files)
    body = to_turtle(graph) if media_type == TURTLE else to_jsonld(graph)
    return http_cache.cached_response(
        request, body, MAX_AGE_CATALOG_S, media_type=f"{media_type}; charset=utf-8"
    )


def _negotiate(accept: str | None) -> str:
    """TURTLE when the Accept header ranks text/turtle above JSON-LD, else JSONLD."""
    best, best_q = JSONLD, -1.0
    for part in (accept or "").split(","):
        media, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.strip().lower()
        if media in (TURTLE, "application/x-turtle") and q > best_q:
            best, best_q = TURTLE, q
        elif media in (JSONLD, "application/json", "*/*") and q > best_q:
            best, best_q = JSONLD, q
    return best
