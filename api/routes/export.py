"""Bulk exports of a municipality's public readings: CSV, JSON Lines, GeoJSON, streamed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import StreamingResponse

from api.deps import AppSettings, Conn
from api.export import (
    MEDIA_TYPES,
    ExportResponse,
    export_release,
    open_export,
    stream_export,
)
from api.queries.export import ExportFormat, copy_params, metric_vocabulary
from api.queries.municipalities import find_municipality
from api.queries.public import find_metric
from api.timeparams import time_range
from models.schemas import ErrorOut
from models.settings import Settings

router = APIRouter(prefix="/api/v1/export", tags=["exports"])

MAX_EXPORT_RANGE = timedelta(days=366)

Slug = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="e.g. aarhus")]
Kind = Annotated[
    Literal["climate", "bin", "parking", "other"] | None, Query(description="sensor kind")
]
Metric = Annotated[
    str | None, Query(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="only this metric")
]
From = Annotated[
    datetime | None,
    Query(alias="from", description="inclusive, ISO 8601 with timezone; default to − 1 day"),
]
To = Annotated[datetime | None, Query(description="exclusive, ISO 8601 with timezone; default now")]


def _responses(media_type: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"content": {media_type: {}}, "description": "The export, streamed"},
        400: {"model": ErrorOut, "description": "Range too long, naive time, or unknown metric"},
        404: {"model": ErrorOut, "description": "No such municipality"},
        429: {
            "model": ErrorOut,
            "description": "Every export slot of the server is in use; retry after Retry-After",
        },
    }


@router.get(
    "/{municipality}/readings.csv",
    response_class=StreamingResponse,
    responses=_responses("text/csv"),
)
async def export_csv(
    request: Request,
    conn: Conn,
    settings: AppSettings,
    municipality: Slug,
    kind: Kind = None,
    metric: Metric = None,
    from_: From = None,
    to: To = None,
) -> StreamingResponse:
    """Readings of the municipality's public sensors as CSV (header row; times UTC).

    Columns: time, sensor_id, sensor_name, kind, metric, unit, value, lat, lon. Rows
    come day by day, not sorted within a day. At most 366 days per request.
    """
    return await _export(request, conn, settings, "csv", municipality, kind, metric, from_, to)


@router.get(
    "/{municipality}/readings.jsonl",
    response_class=StreamingResponse,
    responses=_responses("application/x-ndjson"),
)
async def export_jsonl(
    request: Request,
    conn: Conn,
    settings: AppSettings,
    municipality: Slug,
    kind: Kind = None,
    metric: Metric = None,
    from_: From = None,
    to: To = None,
) -> StreamingResponse:
    """Readings as JSON Lines: one object per line (time, sensor_id, kind, metric, unit,
    value). At most 366 days per request."""
    return await _export(request, conn, settings, "jsonl", municipality, kind, metric, from_, to)


@router.get(
    "/{municipality}/readings.geojson",
    response_class=StreamingResponse,
    responses=_responses("application/geo+json"),
)
async def export_geojson(
    request: Request,
    conn: Conn,
    settings: AppSettings,
    municipality: Slug,
    kind: Kind = None,
    metric: Metric = None,
    from_: From = None,
    to: To = None,
) -> StreamingResponse:
    """Readings as a GeoJSON FeatureCollection: one Point feature per reading (geometry
    null for sensors without a location). At most 366 days per request."""
    return await _export(request, conn, settings, "geojson", municipality, kind, metric, from_, to)


async def _export(
    request: Request,
    conn: Conn,
    settings: Settings,
    fmt: ExportFormat,
    slug: str,
    kind: str | None,
    metric: str | None,
    start: datetime | None,
    end: datetime | None,
) -> StreamingResponse:
    start, end = time_range(
        start, end, max_span=MAX_EXPORT_RANGE, default_span=timedelta(days=1), what="exports"
    )
    found = await find_municipality(conn, slug)
    if found is None:
        raise HTTPException(404, f"no municipality with slug '{slug}'; see /api/v1/municipalities")
    metric_id = None
    if metric is not None:
        metric_row = await find_metric(conn, metric)
        if metric_row is None:
            raise HTTPException(
                400, f"query parameter 'metric': unknown metric '{metric}'; see /api/v1/metrics"
            )
        metric_id = metric_row["id"]
    names, units = await metric_vocabulary(conn)
    params = copy_params(
        municipality_id=found["id"],
        kind=kind,
        metric_id=metric_id,
        start=start,
        end=end,
        metric_names=names,
        metric_units=units,
    )
    filename = "-".join(
        part
        for part in (slug, kind, metric, "readings", f"{start:%Y%m%dT%H%MZ}", f"{end:%Y%m%dT%H%MZ}")
        if part
    )
    closed = end < datetime.now(UTC) - timedelta(days=1)
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}.{fmt}"',
        "Cache-Control": f"public, max-age={86400 if closed else 60}",
    }
    # Last, after every check: from here the slot and connection belong to the response.
    slots, pool = request.app.state.export_slots, request.app.state.export_pool
    export_conn = await open_export(slots, pool)
    return ExportResponse(
        stream_export(export_conn, fmt, params),
        release=export_release(slots, pool, export_conn),
        send_timeout_s=settings.export_send_timeout_s,
        max_duration_s=settings.export_max_duration_s,
        media_type=MEDIA_TYPES[fmt],
        headers=headers,
    )
