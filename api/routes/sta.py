"""OGC SensorThings API v1.1 (read) under ``/sta/v1.1``: the public, active sensors only,
through the same database role and pool as /api/v1. Errors answer in the shape FROST and
its clients expect: ``{"code": 400, "type": "error", "message": "..."}``.

Not in /api/v1/openapi.json: the service root (``GET /sta/v1.1``) describes the service
the way SensorThings clients read it.
"""

from __future__ import annotations

import orjson
import psycopg
from fastapi import APIRouter, Request, Response

from api import http_cache
from api.deps import AppSettings, Conn
from api.sta.entities import ENTITIES
from api.sta.odata import ODataError
from api.sta.service import Service, StaError, value_text

STA_PREFIX = "/sta/v1.1"
router = APIRouter(prefix=STA_PREFIX, include_in_schema=False)

MAX_AGE_STA_S = 30

CONFORMANCE = [
    "http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/resource-path/resource-path-to-entities",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/data-array/data-array",
]


def base_url(settings: AppSettings) -> str:
    return settings.public_base_url.rstrip("/") + STA_PREFIX


@router.get("")
async def service_root(request: Request, settings: AppSettings) -> Response:
    """The entity sets and the conformance classes served."""
    base = base_url(settings)
    body = {
        "value": [{"name": name, "url": f"{base}/{name}"} for name in ENTITIES],
        "serverSettings": {"conformance": CONFORMANCE},
    }
    return http_cache.cached_json(request, body, http_cache.MAX_AGE_LISTS_S)


@router.get("/{path:path}")
async def resource(path: str, request: Request, conn: Conn, settings: AppSettings) -> Response:
    """Any SensorThings resource path: collections, entities, navigation, properties."""
    service = Service(conn, base_url(settings))
    raw = dict(request.query_params)
    try:
        target = await service.resolve(path)
        body = await service.answer(target, raw)
    except StaError as exc:
        return _error(exc.code, exc.message)
    except ODataError as exc:
        return _error(400, str(exc))
    except psycopg.DataError as exc:
        # e.g. a number out of range in arithmetic: the query's fault, not the server's.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return _error(400, f"$filter cannot be evaluated: {reason}")
    text = value_text(body)
    if text is not None:
        return Response(text, media_type="text/plain; charset=utf-8")
    return http_cache.cached_response(request, http_cache.json_body(body), MAX_AGE_STA_S)


def _error(code: int, message: str) -> Response:
    return Response(
        orjson.dumps({"code": code, "type": "error", "message": message}),
        status_code=code,
        media_type="application/json",
    )
