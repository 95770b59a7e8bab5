"""Staff routes of the analytics: the municipality's school calendar (occupied hours) and
the reports people file (room-month, school, bin, parking zone) as JSON, CSV, XLSX and PDF.

Like every staff route, each takes the caller's Principal and touches only that
municipality's rows; another municipality's ids answer 404.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from analytics.calendar_store import calendar_as_json, load_calendar, replace_calendar
from analytics.occupancy import CalendarCsvError, parse_calendar_csv
from api.deps import SyncConn, staff_write_connection
from api.security import ReadPrivate, WriteSensors
from models.schemas import ErrorOut

_ERROR = {"model": ErrorOut}
router = APIRouter(
    prefix="/api/v1/staff",
    tags=["staff: analytics"],
    responses={code: _ERROR for code in (400, 401, 403, 404, 413, 422, 429, 503)},
)

MAX_CALENDAR_BYTES = 1_000_000


# --- school calendar -----------------------------------------------------------------------


@router.get("/school-calendar", summary="Opening hours and holidays behind occupied hours")
def get_school_calendar(principal: ReadPrivate, conn: SyncConn) -> dict[str, Any]:
    """The municipality's school calendar; `default` true when none has been imported
    (Monday–Friday 08:00–16:00, no holidays)."""
    return calendar_as_json(load_calendar(conn, principal.municipality_id))


@router.put(
    "/school-calendar",
    summary="Replace the school calendar from CSV (all rows or none)",
    openapi_extra={
        "requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}, "required": True}
    },
)
async def put_school_calendar(principal: WriteSensors, request: Request) -> JSONResponse:
    """CSV header `type,weekday,opens,closes,first_day,last_day,name`; `hours` rows give a
    weekday's opening hours, `holiday` rows a holiday (inclusive dates). 422 lists every
    problem with its line; nothing is stored then."""
    body = await request.body()
    if len(body) > MAX_CALENDAR_BYTES:
        raise HTTPException(413, "the CSV is larger than 1 MB")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HTTPException(400, "the CSV must be UTF-8 encoded") from None
    try:
        calendar = parse_calendar_csv(text)
    except CalendarCsvError as exc:
        return JSONResponse({"detail": str(exc), "errors": exc.problems}, status_code=422)

    def store() -> dict[str, int]:
        with staff_write_connection(request) as conn:
            return replace_calendar(conn, principal.municipality_id, calendar)

    stored = await asyncio.to_thread(store)
    return JSONResponse({"stored": stored, **calendar_as_json(calendar)})
