"""NGSI-LD read API (ETSI GS CIM 009) under ``/ngsi-ld/v1``: the public, active, placed
sensors as Smart Data Models entities (models/ngsi_ld.py), through the same database role
and pool as /api/v1.

- ``GET /ngsi-ld/v1/entities?type=...`` (``id``, ``q``, ``georel``/``geometry``/
  ``coordinates``, ``attrs``, ``options=keyValues``, ``limit``, ``count``) and
  ``GET /ngsi-ld/v1/entities/{id}``;
- ``GET /ngsi-ld/v1/temporal/entities?type=...&timerel=between&timeAt=...&endTimeAt=...``
  (``attrs``, ``lastN``, ``options=temporalValues``) and ``.../temporal/entities/{id}``.

Pages go by key: the ``Link: <...>; rel="next"`` header carries a ``cursor`` (the last
sensor id of the page). Errors are ProblemDetails ``{"type", "title", "detail"}``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, HTTPException, Request, Response

from api import http_cache
from api.deps import AppSettings, Conn
from api.ngsi import queries
from api.ngsi.q import QCompiler, QueryError, geo_query, parse_time
from api.pagination import decode_cursor, encode_cursor, filter_fingerprint
from models.ngsi_ld import (
    ATTRIBUTES,
    CONTEXT,
    KIND_BY_TYPE,
    SMART_DATA_MODELS_CONTEXT,
    build_entity,
    entity_id,
    key_values,
    metric_of,
    normalise_type,
    parking_status_attribute,
    parse_entity_id,
    pick_attributes,
    temporal_attribute,
)

NGSI_PREFIX = "/ngsi-ld/v1"
router = APIRouter(prefix=NGSI_PREFIX, include_in_schema=False)

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
MAX_TEMPORAL_ENTITIES = 20  # x 5 attributes x 1,000 instances: at most 100,000 per page
MAX_INSTANCES = 1000  # per attribute and entity in a temporal answer
MAX_TEMPORAL_SPAN = timedelta(days=31)
ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
LD_JSON = "application/ld+json"
LINK_CONTEXT = (
    f'<{SMART_DATA_MODELS_CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"; '
    'type="application/ld+json"'
)


class NgsiError(Exception):
    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail


def _problem(status: int, kind: str, detail: str) -> Response:
    body = {"type": ERRORS + kind, "title": kind, "detail": detail}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _bad(detail: str) -> NgsiError:
    return NgsiError(400, "BadRequestData", detail)


@router.get("/entities")
async def entities(request: Request, conn: Conn, settings: AppSettings) -> Response:
    """Entities by type, id, q and geo-query; keyset pages."""
    try:
        body, headers = await _entities(request, conn, temporal=False)
    except NgsiError as exc:
        return _problem(exc.status, exc.kind, exc.detail)
    return _answer(request, body, headers)


@router.get("/entities/{urn}")
async def entity(urn: str, request: Request, conn: Conn) -> Response:
    """One entity by its URN."""
    try:
        body = await _one(request, conn, urn, temporal=False)
    except NgsiError as exc:
        return _problem(exc.status, exc.kind, exc.detail)
    return _answer(request, body, {})


@router.get("/temporal/entities")
async def temporal_entities(request: Request, conn: Conn) -> Response:
    """Entities with the history of their attributes over a time range."""
    try:
        body, headers = await _entities(request, conn, temporal=True)
    except NgsiError as exc:
        return _problem(exc.status, exc.kind, exc.detail)
    return _answer(request, body, headers)


@router.get("/temporal/entities/{urn}")
async def temporal_entity(urn: str, request: Request, conn: Conn) -> Response:
    """One entity's attribute history."""
    try:
        body = await _one(request, conn, urn, temporal=True)
    except NgsiError as exc:
        return _problem(exc.status, exc.kind, exc.detail)
    return _answer(request, body, {})


def _answer(request: Request, body: Any, headers: dict[str, str]) -> Response:
    """JSON-LD with @context in the body when asked for, else JSON with a Link header."""
    accept = request.headers.get("accept", "")
    if LD_JSON in accept:
        if isinstance(body, list):
            body = [{**item, "@context": CONTEXT} for item in body]
        else:
            body = {**body, "@context": CONTEXT}
        media_type = LD_JSON
    else:
        headers = {**headers, "Link": ", ".join(filter(None, [headers.get("Link"), LINK_CONTEXT]))}
        media_type = "application/json"
    return http_cache.cached_response(
        request, http_cache.json_body(body), 30, media_type=media_type, headers=headers
    )


def _types(raw: str | None) -> list[str]:
    if not raw:
        raise _bad("type: required, e.g. type=WasteContainer (IndoorEnvironmentObserved, "
                   "WasteContainer, ParkingSpot; comma-separated for several)")  # fmt: skip
    names = []
    for part in raw.split(","):
        name = normalise_type(part.strip())
        if name is None:
            raise _bad(
                f"type: {part.strip()!r} is not served; use IndoorEnvironmentObserved, "
                "WasteContainer or ParkingSpot"
            )
        names.append(name)
    return sorted(set(names))


def _ids(raw: str | None, types: list[str]) -> list[int] | None:
    if not raw:
        return None
    out = []
    for urn in raw.split(","):
        parsed = parse_entity_id(urn.strip())
        if parsed is not None and parsed[0] in types:
            out.append(parsed[1])
    return out


def _limit(raw: str | None, maximum: int, default: int) -> int:
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise _bad(f"limit: an integer from 1 to {maximum}, got {raw!r}")
    return int(raw)


def _options(request: Request) -> set[str]:
    raw = request.query_params.get("options") or ""
    options = {o.strip() for o in raw.split(",") if o.strip()}
    if request.query_params.get("format") == "simplified":
        options.add("keyValues")
    known = {"keyValues", "simplified", "temporalValues", "count"}
    unknown = options - known
    if unknown:
        raise _bad(f"options: {sorted(unknown)[0]!r} is not offered; known: {sorted(known)}")
    if "simplified" in options:
        options.add("keyValues")
    return options


def _attrs(request: Request) -> list[str] | None:
    raw = request.query_params.get("attrs")
    return [a.strip() for a in raw.split(",") if a.strip()] if raw else None


async def _entities(
    request: Request, conn: Conn, temporal: bool
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    params = request.query_params
    types = _types(params.get("type"))
    ids = _ids(params.get("id"), types)
    limit = _limit(
        params.get("limit"),
        MAX_TEMPORAL_ENTITIES if temporal else MAX_LIMIT,
        min(DEFAULT_LIMIT, MAX_TEMPORAL_ENTITIES),
    )
    if ids == []:
        return [], {}
    bound: dict[str, Any] = {}
    conditions: list[str] = []
    kinds_by_type: dict[str, str] = {t: KIND_BY_TYPE[t] for t in types}
    try:
        if params.get("q"):
            if len(types) != 1:
                raise _bad("q: give exactly one type; attributes differ between types")
            compiler = QCompiler(types[0])
            conditions.append(compiler.compile(params["q"]))
            bound.update(compiler.params)
        geo = geo_query(params.get("georel"), params.get("geometry"), params.get("coordinates"))
        if geo is not None:
            if params.get("geoproperty", "location") != "location":
                raise _bad("geoproperty: only location is offered")
            conditions.append(geo.sql)
            bound.update(geo.params)
    except QueryError as exc:
        raise _bad(str(exc)) from None
    fingerprint = filter_fingerprint(
        route="ngsi-temporal" if temporal else "ngsi",
        **{k: params.get(k) for k in ("type", "id", "q", "georel", "geometry", "coordinates")},
    )
    after = 0
    if params.get("cursor"):
        try:
            after = decode_cursor(params["cursor"], fingerprint, (int,))[0]
        except HTTPException as exc:
            raise _bad(str(exc.detail)) from None
    where = " AND ".join(conditions) or "true"
    rows = await queries.public_sensors(
        conn,
        kinds=sorted(kinds_by_type.values()),
        ids=ids,
        after=after,
        limit=limit,
        conditions=where,
        params=bound,
    )
    headers: dict[str, str] = {}
    if params.get("count") == "true" or "count" in _options(request):
        total = await queries.count_public_sensors(
            conn, kinds=sorted(kinds_by_type.values()), ids=ids, conditions=where, params=bound
        )
        headers["NGSILD-Results-Count"] = str(total)
    if len(rows) == limit:
        next_params = {k: v for k, v in params.items() if k != "cursor"}
        next_params["cursor"] = encode_cursor([rows[-1]["id"]], fingerprint)
        headers["Link"] = f'<{request.url.path}?{urlencode(next_params)}>; rel="next"'
    facts = await queries.sensor_facts(conn, rows)
    if temporal:
        body = await _temporal(request, conn, facts)
    else:
        body = _render(request, facts)
    return body, headers


def _render(request: Request, facts: list[Any]) -> list[dict[str, Any]]:
    options = _options(request)
    attrs = _attrs(request)
    out = []
    for fact in facts:
        built = build_entity(fact)
        if built is None:
            continue
        built = pick_attributes(built, attrs)
        out.append(key_values(built) if "keyValues" in options else built)
    return out


def _time_range(request: Request) -> tuple[datetime, datetime]:
    params = request.query_params
    timerel = params.get("timerel")
    now = datetime.now(UTC)
    try:
        if timerel is None:
            if params.get("timeAt") or params.get("endTimeAt"):
                raise QueryError("timeAt: give timerel (between, after) with it")
            return now - timedelta(days=1), now
        time_at = parse_time(params.get("timeAt") or "", "timeAt")
        if timerel == "between":
            end = parse_time(params.get("endTimeAt") or "", "endTimeAt")
        elif timerel == "after":
            end = now
        else:
            raise QueryError(
                f"timerel: {timerel!r} is not offered; use between (with endTimeAt) or after"
            )
    except QueryError as exc:
        raise _bad(str(exc)) from None
    if end <= time_at:
        raise _bad("endTimeAt: must be after timeAt")
    if end - time_at > MAX_TEMPORAL_SPAN:
        raise _bad(
            f"timeAt/endTimeAt: at most {MAX_TEMPORAL_SPAN.days} days per request; split the "
            "range (or use /api/v1/readings with bucket=hour or day for longer ranges)"
        )
    return time_at, end


async def _temporal(request: Request, conn: Conn, facts: list[Any]) -> list[dict[str, Any]]:
    start, end = _time_range(request)
    options = _options(request)
    attrs = _attrs(request)
    last_n = request.query_params.get("lastN")
    per_attribute = _limit(last_n, MAX_INSTANCES, MAX_INSTANCES) if last_n else MAX_INSTANCES
    wanted: dict[str, list[tuple[str, str]]] = {}  # type → [(attribute, metric)]
    for fact in facts:
        type_name = build_entity_type(fact)
        if type_name is None or type_name in wanted:
            continue
        names = [*ATTRIBUTES[type_name]] + (["status"] if type_name == "ParkingSpot" else [])
        if attrs is not None:
            names = [n for n in names if n in attrs]
        wanted[type_name] = [(n, metric_of(type_name, n) or "") for n in names]
    metrics = sorted({m for pairs in wanted.values() for _, m in pairs})
    series = await queries.history(
        conn,
        sensor_ids=[f.sensor_id for f in facts],
        metrics=metrics,
        start=start,
        end=end,
        per_attribute=per_attribute,
        newest_first=last_n is not None,
    )
    out = []
    temporal_values = "temporalValues" in options
    for fact in facts:
        type_name = build_entity_type(fact)
        if type_name is None:
            continue
        item: dict[str, Any] = {"id": entity_id(type_name, fact.sensor_id), "type": type_name}
        for attribute, metric in wanted.get(type_name, []):
            instances = series.get((fact.sensor_id, metric), [])
            if not instances:
                continue
            if attribute == "status":
                item[attribute] = parking_status_attribute(instances, temporal_values)
            else:
                spec = ATTRIBUTES[type_name][attribute]
                item[attribute] = temporal_attribute(spec, instances, temporal_values)
        out.append(item)
    return out


def build_entity_type(fact: Any) -> str | None:
    built = build_entity(fact)
    return built["type"] if built is not None else None


async def _one(request: Request, conn: Conn, urn: str, temporal: bool) -> dict[str, Any]:
    parsed = parse_entity_id(urn)
    if parsed is None:
        raise NgsiError(404, "ResourceNotFound", f"no entity {urn!r}")
    type_name, sensor_id = parsed
    rows = await queries.public_sensors(
        conn,
        kinds=[KIND_BY_TYPE[type_name]],
        ids=[sensor_id],
        after=0,
        limit=1,
        conditions="true",
        params={},
    )
    facts = await queries.sensor_facts(conn, rows)
    body = await _temporal(request, conn, facts) if temporal else _render(request, facts)
    if not body:
        raise NgsiError(404, "ResourceNotFound", f"no entity {urn!r}")
    return body[0]
