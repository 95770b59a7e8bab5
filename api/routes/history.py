"""Staff: bring a municipality's historic readings in from a CSV/XLSX export.

The file and its column mapping (ingest/historic.py, `HistoricMapping`) come as a
multipart form. Without ``dry_run=false`` nothing is written: the answer reports what
would be stored, what is stored already and what would be refused. Readings go only to
the caller's municipality's sensors; another municipality's sensor ids are "not
registered in the municipality", as if they did not exist. A stored import is one
audit event (action ``readings.import``, with the report), besides the sensors it creates.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from api.audit import audited
from api.deps import staff_write_connection
from api.queries.audit import record_bulk_write
from api.security import WriteSensors
from ingest.historic import HistoricMapping, HistoricReport, MappingError, import_history
from models.schemas import ErrorOut

router = APIRouter(
    prefix="/api/v1/staff",
    tags=["staff"],
    responses={code: {"model": ErrorOut} for code in (400, 401, 403, 413, 422, 429, 503)},
)

MAX_FILE_BYTES = 50_000_000


@router.post(
    "/historic-imports",
    summary="Import historic readings from CSV/XLSX (dry run unless dry_run=false)",
    dependencies=[audited("readings.import")],
)
async def historic_import(
    principal: WriteSensors,
    request: Request,
    file: Annotated[UploadFile, File(description="CSV (UTF-8, , ; or tab) or XLSX")],
    mapping: Annotated[str, Form(description="HistoricMapping as JSON")],
    dry_run: Annotated[bool, Query(description="report only, store nothing")] = True,
) -> JSONResponse:
    data = await file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise HTTPException(413, "the file is larger than 50 MB; split it")
    try:
        parsed = HistoricMapping.model_validate(orjson.loads(mapping))
    except orjson.JSONDecodeError as exc:
        raise HTTPException(422, f"form field 'mapping': not JSON ({exc})") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'mapping'}: {e['msg']}" for e in exc.errors()
        )
        raise HTTPException(422, f"form field 'mapping': {problems}") from None

    def record(conn: Any, report: HistoricReport) -> None:
        # Sensors it creates are recorded row by row (audited table); the readings as one
        # event with what was stored, in the import's transaction.
        summary = {"file": file.filename, **report.as_dict()}
        record_bulk_write(conn, "readings", orjson.loads(orjson.dumps(summary)))

    def run() -> Any:
        with staff_write_connection(request) as conn:
            return import_history(
                conn,
                principal.municipality_id,
                data,
                file.filename or "",
                parsed,
                dry_run,
                on_stored=record,
            )

    try:
        report = await asyncio.to_thread(run)
    except MappingError as exc:
        raise HTTPException(422, f"form field '{exc.part}': {exc}") from None
    return JSONResponse(orjson.loads(orjson.dumps(report.as_dict())))
