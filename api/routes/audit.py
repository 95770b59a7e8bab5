"""The audit trail: a municipality's admins read and export their own trail, never edit it."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from api.audit import audited
from api.deps import Conn
from api.queries import audit
from api.security import Admin
from api.timeparams import require_aware
from models.schemas import ErrorOut

router = APIRouter(
    prefix="/api/v1/staff/audit",
    tags=["staff"],
    responses={code: {"model": ErrorOut} for code in (400, 401, 403, 422, 429, 503)},
)

EXPORT_PAGE_ROWS = 5000
Since = Annotated[datetime | None, Query(description="inclusive, ISO 8601 with timezone")]
Until = Annotated[datetime | None, Query(description="exclusive, ISO 8601 with timezone")]
Action = Annotated[str | None, Query(pattern=r"^[a-z_]{1,40}\.[a-z_]{1,40}$")]
ActorId = Annotated[str | None, Query(max_length=300)]


@router.get("", summary="The municipality's audit trail, oldest first, paged by id")
async def list_audit_events(
    principal: Admin,
    conn: Conn,
    since: Since = None,
    until: Until = None,
    action: Action = None,
    actor_id: ActorId = None,
    after_id: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    rows = await audit.list_events(
        conn,
        principal.municipality_id,
        after_id,
        limit,
        require_aware("since", since),
        require_aware("until", until),
        action,
        actor_id,
    )
    return {"items": rows, "next_after_id": rows[-1]["id"] if len(rows) == limit else None}


@router.get(
    "/export",
    summary="The whole trail (or a time range) as JSON Lines or CSV, for the DPO",
    response_class=StreamingResponse,
    dependencies=[audited("audit.export", record_read=True)],
)
async def export_audit_events(
    principal: Admin,
    request: Request,
    since: Since = None,
    until: Until = None,
    fmt: Annotated[Literal["jsonl", "csv"], Query(alias="format")] = "jsonl",
) -> StreamingResponse:
    since, until = require_aware("since", since), require_aware("until", until)
    pool = request.app.state.staff_pool

    async def pages() -> AsyncIterator[list[dict[str, Any]]]:
        after_id = 0
        while True:
            # A connection per page: a slow reader holds none between pages.
            async with pool.connection() as conn:
                rows = await audit.list_events(
                    conn, principal.municipality_id, after_id, EXPORT_PAGE_ROWS, since, until
                )
            if not rows:
                return
            yield rows
            if len(rows) < EXPORT_PAGE_ROWS:
                return
            after_id = rows[-1]["id"]

    async def jsonl() -> AsyncIterator[bytes]:
        async for rows in pages():
            yield b"".join(orjson.dumps(row) + b"\n" for row in rows)

    async def csv_text() -> AsyncIterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(audit.COLUMNS)
        async for rows in pages():
            for row in rows:
                writer.writerow(
                    [
                        orjson.dumps(row[c]).decode() if c in ("before", "after") else row[c]
                        for c in audit.COLUMNS
                    ]
                )
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
        if buffer.getvalue():
            yield buffer.getvalue().encode()

    name = f"audit-{principal.municipality_slug}.{fmt}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if fmt == "csv":
        return StreamingResponse(csv_text(), media_type="text/csv", headers=headers)
    return StreamingResponse(jsonl(), media_type="application/x-ndjson", headers=headers)
