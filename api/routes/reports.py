"""Staff routes of the analytics: the municipality's school calendar (occupied hours) and
the reports people file (room-month, school, bin, parking zone) as JSON, CSV, XLSX and PDF.

Like every staff route, each takes the caller's Principal and touches only that
municipality's rows; another municipality's ids answer 404.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from analytics import reports
from analytics.calendar_store import calendar_as_json, load_calendar, replace_calendar
from analytics.occupancy import CalendarCsvError, parse_calendar_csv
from api import report_files as files
from api.audit import audited
from api.deps import AppSettings, ReportConn, staff_write_connection
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
def get_school_calendar(principal: ReadPrivate, conn: ReportConn) -> dict[str, Any]:
    """The municipality's school calendar; `default` true when none has been imported
    (Monday–Friday 08:00–16:00, no holidays)."""
    return calendar_as_json(load_calendar(conn, principal.municipality_id))


@router.put(
    "/school-calendar",
    summary="Replace the school calendar from CSV (all rows or none)",
    dependencies=[audited("school_calendar.replace")],
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


# --- reports -------------------------------------------------------------------------------

MonthParam = Annotated[
    str,
    Query(
        pattern=r"^\d{4}-\d{2}$",
        description="local calendar month (IOT_LOCAL_TIMEZONE), e.g. 2026-01",
    ),
]
LangParam = Annotated[
    Literal["da", "en"], Query(description="language of headings (files): da or en")
]
TableFormat = Annotated[Literal["json", "csv"], Query(description="json or csv")]
TABLE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/json": {}, "text/csv": {}},
        "description": "The report: JSON items, or CSV with a header row",
    }
}


def _month(text: str, settings) -> reports.Month:
    try:
        return reports.Month.parse(text, settings.local_timezone)
    except ValueError as exc:
        raise HTTPException(400, f"query parameter 'month': {exc}") from None


def _table_response(
    rows: list[dict[str, Any]],
    columns: dict[str, tuple[str, str]],
    fmt: str,
    lang: files.Lang,
    filename: str,
) -> Response:
    if fmt == "json":
        return JSONResponse({"items": rows})
    header, body = files.table(rows, columns, lang)
    return Response(
        files.to_csv(header, body),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'},
    )


@router.get(
    "/reports/rooms",
    responses=TABLE_RESPONSES,
    summary="Per room and month: EN 16798-1 shares, BR18 hours",
)
def room_report(
    principal: ReadPrivate,
    conn: ReportConn,
    settings: AppSettings,
    month: MonthParam,
    format: TableFormat = "json",
    lang: LangParam = "da",
) -> Response:
    """In occupied time (occupancy sensor, else the school calendar): occupied hours, hours
    with CO2 above 1,000 ppm (BR18 §447) and the shares of occupied time in EN 16798-1
    categories I–IV for CO2 and temperature (heating- or cooling-season bands)."""
    period = _month(month, settings)
    rows = reports.load_room_month(conn, principal.municipality_id, period)
    name = f"{principal.municipality_slug}-rooms-{period}"
    return _table_response(rows, files.ROOM_COLUMNS, format, lang, name)


@router.get(
    "/reports/schools",
    responses=TABLE_RESPONSES,
    summary="Per school and month: a summary for the board",
)
def school_report(
    principal: ReadPrivate,
    conn: ReportConn,
    settings: AppSettings,
    month: MonthParam,
    format: TableFormat = "json",
    lang: LangParam = "da",
) -> Response:
    period = _month(month, settings)
    rows = reports.school_report(reports.load_room_month(conn, principal.municipality_id, period))
    name = f"{principal.municipality_slug}-schools-{period}"
    return _table_response(rows, files.SCHOOL_COLUMNS, format, lang, name)


@router.get(
    "/reports/bins",
    responses=TABLE_RESPONSES,
    summary="Per bin and month: emptyings, fill rate, time to full",
)
def bin_report(
    principal: ReadPrivate,
    conn: ReportConn,
    settings: AppSettings,
    month: MonthParam,
    format: TableFormat = "json",
    lang: LangParam = "da",
) -> Response:
    period = _month(month, settings)
    rows = reports.load_bin_month(conn, principal.municipality_id, period)
    name = f"{principal.municipality_slug}-bins-{period}"
    return _table_response(rows, files.BIN_COLUMNS, format, lang, name)


@router.get(
    "/reports/parking",
    responses=TABLE_RESPONSES,
    summary="Per parking zone and month: weekday × hour profile",
)
def parking_report(
    principal: ReadPrivate,
    conn: ReportConn,
    settings: AppSettings,
    month: MonthParam,
    format: TableFormat = "json",
    lang: LangParam = "da",
) -> Response:
    period = _month(month, settings)
    rows = reports.load_parking_month(conn, principal.municipality_id, period)
    if format == "json":
        return JSONResponse({"items": rows})
    header, body = files.parking_rows(rows, lang)
    return Response(
        files.to_csv(header, body),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": (
                f'attachment; filename="{principal.municipality_slug}-parking-{period}.csv"'
            )
        },
    )


XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@router.get(
    "/reports/month.xlsx",
    summary="The month's reports as one XLSX workbook",
    response_class=Response,
    responses={200: {"content": {XLSX: {}}}},
)
def month_workbook(
    principal: ReadPrivate,
    conn: ReportConn,
    settings: AppSettings,
    month: MonthParam,
    lang: LangParam = "da",
) -> Response:
    """Sheets: rooms, schools, bins, emptyings, parking (weekday × hour)."""
    period = _month(month, settings)
    m = principal.municipality_id
    rooms = reports.load_room_month(conn, m, period)
    bins = reports.load_bin_month(conn, m, period)
    parking = reports.load_parking_month(conn, m, period)

    def sheet(key: str, header_rows: tuple[list[str], list[list]]):
        return (files.SHEETS[key][0 if lang == "da" else 1], *header_rows)

    workbook = files.to_xlsx(
        [
            sheet("rooms", files.table(rooms, files.ROOM_COLUMNS, lang)),
            sheet("schools", files.table(reports.school_report(rooms), files.SCHOOL_COLUMNS, lang)),
            sheet("bins", files.table(bins, files.BIN_COLUMNS, lang)),
            sheet(
                "emptyings",
                files.table(files.emptying_rows(bins), files.EMPTYING_COLUMNS, lang),
            ),
            sheet("parking", files.parking_rows(parking, lang)),
        ]
    )
    return Response(
        workbook,
        media_type=XLSX,
        headers={
            "Content-Disposition": (
                f'attachment; filename="{principal.municipality_slug}-{period}.xlsx"'
            )
        },
    )


@router.get(
    "/reports/schools/{site_id}.pdf",
    summary="A school's month as a PDF for its school board (Danish, with charts)",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
)
def school_pdf(
    principal: ReadPrivate,
    conn: ReportConn,
    settings: AppSettings,
    site_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    month: MonthParam,
) -> Response:
    period = _month(month, settings)
    found = conn.execute(
        "SELECT s.name, m.name FROM sites s JOIN municipalities m ON m.id = s.municipality_id "
        "WHERE s.id = %s AND s.municipality_id = %s",
        (site_id, principal.municipality_id),
    ).fetchone()
    if found is None:
        raise HTTPException(404, "no site with that id in your municipality")
    rooms = reports.load_room_month(conn, principal.municipality_id, period, site_id=site_id)
    if not rooms:
        raise HTTPException(404, "the site has no climate sensors")
    school = reports.school_report(rooms)[0]
    pdf = files.school_board_pdf(school, rooms, (period.year, period.month), found[1])
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="skole-{site_id}-{period}.pdf"'},
    )
