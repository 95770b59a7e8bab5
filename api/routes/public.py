"""Public open-data endpoints: municipalities, metrics, sensors, latest values, readings.

Only public, active sensors appear; a private sensor's id answers 404 like a missing one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response

from analytics.localtime import UnknownTimezoneError, zone_info
from api import http_cache
from api.deps import AppSettings, Conn
from api.pagination import bad_cursor, decode_cursor, encode_cursor, filter_fingerprint
from api.queries import public as queries
from api.queries.readings import BUCKET_WIDTH, fetch_readings
from api.timeparams import (
    ceil_to,
    ceil_to_local_day,
    floor_to,
    floor_to_local_day,
    time_range,
    whole_hour_offsets,
)
from models.schemas import (
    Bucket,
    ErrorOut,
    LatestPage,
    MetricOut,
    MunicipalityOut,
    ReadingPage,
    SensorOut,
    SensorPage,
)

router = APIRouter(prefix="/api/v1", tags=["open data"])

# Limits, stated in the error messages and docs/api.md.
MAX_PAGE_SIZE = 10_000
MAX_SENSORS_PER_REQUEST = 100
MAX_RANGE: dict[str, timedelta] = {
    "raw": timedelta(days=31),
    "5min": timedelta(days=92),
    "hour": timedelta(days=732),
    "day": timedelta(days=7320),
}
AGGREGATES = ("avg", "min", "max", "count")

Kind = Literal["climate", "bin", "parking", "other"]
Slug = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="e.g. aarhus")]
MunicipalityFilter = Annotated[
    str | None,
    Query(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="municipality slug, e.g. aarhus"),
]
METRIC_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
MetricFilter = Annotated[
    str | None, Query(pattern=METRIC_PATTERN, description="e.g. co2_ppm; see /api/v1/metrics")
]
KindFilter = Annotated[Kind | None, Query(description="sensor kind")]
Cursor = Annotated[
    str | None, Query(max_length=512, description="next_cursor of the previous page")
]
GEOJSON = "application/geo+json"
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorOut,
        "description": "A parameter is out of range or the cursor is invalid.",
    },
    404: {"model": ErrorOut, "description": "Not found (or not public)."},
}


@router.get("/municipalities", response_model=list[MunicipalityOut])
async def municipalities(request: Request, conn: Conn) -> Response:
    """All municipalities, with counts of their public sensors by kind."""
    rows = await queries.list_municipalities(conn)
    return http_cache.cached_json(request, rows, http_cache.MAX_AGE_LISTS_S)


@router.get("/municipalities/{slug}", response_model=MunicipalityOut, responses=ERRORS)
async def municipality(request: Request, conn: Conn, slug: Slug) -> Response:
    """One municipality by slug."""
    rows = await queries.list_municipalities(conn, slug=slug)
    if not rows:
        raise HTTPException(404, f"no municipality with slug '{slug}'; see /api/v1/municipalities")
    return http_cache.cached_json(request, rows[0], http_cache.MAX_AGE_LISTS_S)


@router.get("/metrics", response_model=list[MetricOut])
async def metrics(request: Request, conn: Conn) -> Response:
    """The metric vocabulary: names used in readings, with units and plausible ranges."""
    rows = await queries.list_metrics(conn)
    return http_cache.cached_json(request, rows, http_cache.MAX_AGE_LISTS_S)


@router.get("/sensors", response_model=SensorPage, responses=ERRORS)
async def sensors(
    request: Request,
    conn: Conn,
    municipality: MunicipalityFilter = None,
    kind: KindFilter = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 1000,
    cursor: Cursor = None,
) -> Response:
    """Public sensors by id, with location (WGS84), kind, model, last seen and metrics."""
    items, next_cursor = await _sensor_page(conn, municipality, kind, limit, cursor)
    body = {"items": items, "next_cursor": next_cursor}
    return http_cache.cached_json(request, body, http_cache.MAX_AGE_LATEST_S)


@router.get(
    "/sensors.geojson",
    responses={
        200: {"content": {GEOJSON: {}}, "description": "A GeoJSON FeatureCollection"},
        **ERRORS,
    },
)
async def sensors_geojson(
    request: Request,
    conn: Conn,
    municipality: MunicipalityFilter = None,
    kind: KindFilter = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = MAX_PAGE_SIZE,
    cursor: Cursor = None,
) -> Response:
    """Public sensors as a GeoJSON FeatureCollection (Point geometry; null when unplaced).

    `next_cursor` (a foreign member) pages through more than `limit` sensors.
    """
    items, next_cursor = await _sensor_page(conn, municipality, kind, limit, cursor)
    body = {
        "type": "FeatureCollection",
        "features": [_sensor_feature(item) for item in items],
        "next_cursor": next_cursor,
    }
    return http_cache.cached_response(
        request, http_cache.json_body(body), http_cache.MAX_AGE_LATEST_S, media_type=GEOJSON
    )


@router.get("/sensors/{sensor_id}", response_model=SensorOut, responses=ERRORS)
async def sensor(
    request: Request, conn: Conn, sensor_id: Annotated[int, Path(ge=1, le=2**63 - 1)]
) -> Response:
    """One public sensor by id."""
    rows = await queries.list_sensors(conn, sensor_id=sensor_id, limit=1)
    if not rows:
        raise HTTPException(404, f"no public sensor with id {sensor_id}; see /api/v1/sensors")
    return http_cache.cached_json(request, rows[0], http_cache.MAX_AGE_LATEST_S)


@router.get("/latest", response_model=LatestPage, responses=ERRORS)
async def latest(
    request: Request,
    conn: Conn,
    municipality: MunicipalityFilter = None,
    kind: KindFilter = None,
    metric: MetricFilter = None,
    sensor_id: Annotated[list[int] | None, Query(description="repeat for several sensors")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="sensors per page")] = 1000,
    cursor: Cursor = None,
) -> Response:
    """The newest value of each metric of public sensors, one item per sensor, by id."""
    if sensor_id is not None and len(sensor_id) > MAX_PAGE_SIZE:
        raise HTTPException(400, f"at most {MAX_PAGE_SIZE} sensor_id parameters per request")
    if sensor_id is not None and any(not 1 <= s < 2**63 for s in sensor_id):
        raise HTTPException(400, "query parameter 'sensor_id' must be a positive integer")
    fingerprint = filter_fingerprint(
        route="latest",
        municipality=municipality,
        kind=kind,
        metric=metric,
        sensor_id=sorted(set(sensor_id)) if sensor_id else None,
    )
    after_id = decode_cursor(cursor, fingerprint, (int,))[0] if cursor else 0
    items = await queries.latest_values(
        conn,
        municipality=municipality,
        kind=kind,
        metric=metric,
        sensor_ids=sensor_id,
        after_id=after_id,
        limit=limit,
    )
    next_cursor = (
        encode_cursor([items[-1]["sensor_id"]], fingerprint) if len(items) == limit else None
    )
    body = http_cache.json_body({"items": items, "next_cursor": next_cursor})
    return http_cache.cached_response(request, body, http_cache.MAX_AGE_LATEST_S)


@router.get("/readings", response_model=ReadingPage, responses=ERRORS)
async def readings(
    request: Request,
    conn: Conn,
    settings: AppSettings,
    sensor_id: Annotated[
        list[int],
        Query(min_length=1, description=f"repeat for up to {MAX_SENSORS_PER_REQUEST} sensors"),
    ],
    metric: Annotated[
        str, Query(pattern=METRIC_PATTERN, description="e.g. co2_ppm; see /api/v1/metrics")
    ],
    from_: Annotated[
        datetime | None,
        Query(alias="from", description="inclusive, ISO 8601 with timezone; default to − 1 day"),
    ] = None,
    to: Annotated[
        datetime | None, Query(description="exclusive, ISO 8601 with timezone; default now")
    ] = None,
    bucket: Annotated[Bucket, Query(description="raw samples or aggregation bucket")] = "raw",
    agg: Annotated[
        str | None,
        Query(
            max_length=40,
            description="comma-separated subset of avg,min,max,count (bucketed only; default all)",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="rows per page")] = 1000,
    cursor: Cursor = None,
    tz: Annotated[
        str | None,
        Query(
            max_length=64,
            description="IANA time zone of day buckets, e.g. Europe/Copenhagen (the default, "
            "IOT_LOCAL_TIMEZONE) or UTC; days follow daylight saving (23 and 25 hours)",
        ),
    ] = None,
) -> Response:
    """Readings of one metric for one or more public sensors over [from, to).

    Bucketed ranges are widened to whole buckets: 5min and hour in UTC, day to local
    midnights of `tz`. Each item's `time` is the bucket's start in UTC (a Copenhagen day
    in winter starts at 23:00Z the day before). Hour and day buckets come from the rollups,
    which the maintenance job refreshes (the newest hour may lag a little).
    Range limits: raw 31 days, 5min 92 days, hour 732 days, day 7320 days.
    """
    zone = _zone_parameter(tz, settings.local_timezone)
    sensor_ids = sorted(set(sensor_id))
    if len(sensor_ids) > MAX_SENSORS_PER_REQUEST:
        raise HTTPException(
            400,
            f"query parameter 'sensor_id' is repeated {len(sensor_ids)} times; at most "
            f"{MAX_SENSORS_PER_REQUEST} sensors per request, split the request",
        )
    if any(not 1 <= s < 2**63 for s in sensor_ids):
        raise HTTPException(400, "query parameter 'sensor_id' must be a positive integer")
    aggregates = _parse_agg(agg, bucket)
    # The fingerprint covers the parameters as given: a default range ends at "now", which
    # moves between pages, so the first page's resolved range travels in the cursor.
    fingerprint = filter_fingerprint(
        route="readings",
        sensor_id=sensor_ids,
        metric=metric,
        start=from_,
        end=to,
        bucket=bucket,
        tz=zone if bucket == "day" else None,
    )
    after = None
    if cursor:
        after_sensor, after_time, cursor_start, cursor_end = decode_cursor(
            cursor, fingerprint, (int, datetime, datetime, datetime)
        )
        # Parameters given again must resolve to the range the cursor kept; re-resolving
        # also re-applies the limits, so an edited cursor cannot widen the range.
        start, end = _reading_range(from_ or cursor_start, to or cursor_end, bucket, zone)
        if (start, end) != (cursor_start, cursor_end):
            raise bad_cursor("it has been altered")
        after = (after_sensor, after_time)
    else:
        start, end = _reading_range(from_, to, bucket, zone)
    metric_row = await queries.find_metric(conn, metric)
    if metric_row is None:
        raise HTTPException(
            400, f"query parameter 'metric': unknown metric '{metric}'; see /api/v1/metrics"
        )
    public_ids = await queries.public_sensor_ids(conn, sensor_ids)
    missing = [s for s in sensor_ids if s not in public_ids]
    if missing:
        raise HTTPException(404, f"no public sensor with id {missing[0]}; see /api/v1/sensors")

    rows = await fetch_readings(
        conn,
        sensor_ids=sensor_ids,
        metric_id=metric_row["id"],
        start=start,
        end=end,
        bucket=bucket,
        limit=limit,
        after=after,
        tz=zone,
        whole_hour_offsets=whole_hour_offsets(start, end, zone),
        aggregates=aggregates,
    )
    next_cursor = None
    if len(rows) == limit:
        next_cursor = encode_cursor(
            [rows[-1]["sensor_id"], rows[-1]["time"], start, end], fingerprint
        )
    body = {
        "metric": metric_row["name"],
        "unit": metric_row["unit"],
        "bucket": bucket,
        "tz": zone if bucket == "day" else "UTC",
        "items": rows,
        "next_cursor": next_cursor,
    }
    closed = end < datetime.now(UTC) - timedelta(days=1)
    max_age = http_cache.MAX_AGE_CLOSED_RANGE_S if closed else http_cache.MAX_AGE_OPEN_RANGE_S
    return http_cache.cached_json(request, body, max_age)


def _zone_parameter(tz: str | None, default: str) -> str:
    """The `tz` query parameter, checked (400 naming it), or the configured default."""
    if tz is None:
        return default
    try:
        zone_info(tz)
    except UnknownTimezoneError as exc:
        raise HTTPException(400, f"query parameter 'tz': {exc}") from None
    return tz


def _reading_range(
    start: datetime | None, end: datetime | None, bucket: Bucket, zone: str = "UTC"
) -> tuple[datetime, datetime]:
    """[from, to) of /readings: defaults, limits, and widening to whole buckets (day
    buckets to local midnights of `zone`)."""
    start, end = time_range(
        start,
        end,
        max_span=MAX_RANGE[bucket],
        default_span=timedelta(days=1),
        what=f"bucket={bucket}",
    )
    if bucket == "day" and zone != "UTC":
        start, end = floor_to_local_day(start, zone), ceil_to_local_day(end, zone)
    elif bucket != "raw":
        start, end = floor_to(start, BUCKET_WIDTH[bucket]), ceil_to(end, BUCKET_WIDTH[bucket])
    return start, end


async def _sensor_page(
    conn: Conn, municipality: str | None, kind: str | None, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    fingerprint = filter_fingerprint(route="sensors", municipality=municipality, kind=kind)
    after_id = decode_cursor(cursor, fingerprint, (int,))[0] if cursor else 0
    items = await queries.list_sensors(
        conn, municipality=municipality, kind=kind, after_id=after_id, limit=limit
    )
    next_cursor = encode_cursor([items[-1]["id"]], fingerprint) if len(items) == limit else None
    return items, next_cursor


def _sensor_feature(item: dict[str, Any]) -> dict[str, Any]:
    geometry = None
    if item["lat"] is not None and item["lon"] is not None:
        # GeoJSON (RFC 7946) orders positions longitude first.
        geometry = {"type": "Point", "coordinates": [item["lon"], item["lat"]]}
    properties = {k: v for k, v in item.items() if k not in ("lat", "lon")}
    return {"type": "Feature", "id": item["id"], "geometry": geometry, "properties": properties}


def _parse_agg(agg: str | None, bucket: str) -> set[str]:
    if agg is None:
        return set(AGGREGATES)
    if bucket == "raw":
        raise HTTPException(
            400,
            "query parameter 'agg' applies to bucketed readings; leave it out for "
            "bucket=raw or choose bucket=5min, hour or day",
        )
    wanted = {part.strip() for part in agg.split(",") if part.strip()}
    unknown = sorted(wanted - set(AGGREGATES))
    if unknown or not wanted:
        raise HTTPException(
            400,
            f"query parameter 'agg' must be a comma-separated subset of "
            f"{','.join(AGGREGATES)}; got {agg!r}",
        )
    return wanted
