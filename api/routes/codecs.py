"""Staff endpoints for the municipality's own device models: JavaScript codecs (or, for
models the network server decodes, just a field mapping), checked against their examples
before they are stored, every version kept (ingest/codecs, docs/decoders.md).

Models and codecs are per municipality: another municipality's model answers 404. The
one write is `add_codec_version` (ingest/codecs/store.py), recorded in the audit trail
as ``codec.add`` (models/audit.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.audit import audited
from api.deps import AppSettings, SyncConn
from api.security import ReadPrivate, WriteSensors
from ingest.codecs.check import ExamplesError, check_codec, parse_examples
from ingest.codecs.mapping import MappingError, parse_mapping
from ingest.codecs.sandbox import Limits
from ingest.codecs.store import (
    CodecCheckError,
    CodecUpload,
    CodecUploadError,
    add_codec_version,
    list_models,
    list_versions,
)
from models.schemas import ErrorOut
from models.settings import Settings

router = APIRouter(
    prefix="/api/v1/staff/device-models",
    tags=["staff"],
    responses={code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 422, 429, 503)},
)

Id = Annotated[int, Path(ge=1, le=2**31 - 1)]
MAX_SCRIPT = 256 * 1024


class CodecIn(BaseModel):
    """A device model's codec as staff upload it."""

    vendor: str = Field(min_length=1, max_length=100)
    model: str = Field(min_length=1, max_length=100)
    kind: Literal["climate", "bin", "parking", "other"]
    script: str | None = Field(
        None,
        max_length=MAX_SCRIPT,
        description="JavaScript with decodeUplink(input), Decode(fPort, bytes) or "
        "Decoder(bytes, port); leave out for a model the network server decodes.",
    )
    examples: str | list[Any] | dict[str, Any] = Field(
        description="The codec's examples: its YAML/JSON codec definition "
        "(uplinkDecoder.examples) or a list of {description, input {fPort, bytes}, "
        "output {data | errors}}."
    )
    mapping: dict[str, Any] = Field(
        description='{"fields": {path: {"metric", "unit"}}, "ignore": [path, ...]}'
    )


def _limits(settings: Settings) -> Limits:
    return Limits(
        time_limit_s=settings.codec_time_limit_ms / 1000.0,
        memory_limit_bytes=settings.codec_memory_limit_mb * 1024 * 1024,
    )


def _upload(body: CodecIn) -> CodecUpload:
    return CodecUpload(
        vendor=body.vendor,
        model=body.model,
        kind=body.kind,
        mapping=body.mapping,
        examples=body.examples,
        script=body.script,
    )


def _refused(problems: list[str]) -> JSONResponse:
    return JSONResponse(
        {"detail": "; ".join(problems)[:2000], "problems": problems}, status_code=422
    )


@router.get("", summary="Device models: the built-in ones and the municipality's own")
def get_device_models(principal: ReadPrivate, conn: SyncConn) -> list[dict[str, Any]]:
    return list_models(conn, principal.municipality_id)


@router.post(
    "/codecs/check",
    summary="Check a codec against its examples and mapping without storing it",
    responses={200: {"description": "the report, passed or not"}},
    # Stores nothing, so nothing is recorded; audited like every staff POST so that a write
    # added to it later is recorded too.
    dependencies=[audited("codec.check")],
)
def check_codec_upload(
    principal: WriteSensors, settings: AppSettings, body: CodecIn
) -> JSONResponse:
    problems = []
    mapping = examples = None
    try:
        mapping = parse_mapping(body.mapping)
    except MappingError as exc:
        problems.extend(f"mapping: {p}" for p in exc.problems)
    try:
        examples = parse_examples(body.examples)
    except ExamplesError as exc:
        problems.append(f"examples: {exc}")
    if mapping is None or examples is None:
        return _refused(problems)
    report = check_codec(body.script, examples, mapping, _limits(settings))
    return JSONResponse({"passed": report.passed, "report": report.as_json()})


@router.post(
    "/codecs",
    status_code=201,
    summary="Add a device model's codec, or a new version of it, once it passes its examples",
    responses={422: {"description": "refused, with the problems or the per-example report"}},
    dependencies=[audited("codec.add")],
)
def post_codec(
    principal: WriteSensors, conn: SyncConn, settings: AppSettings, body: CodecIn
) -> JSONResponse:
    try:
        stored = add_codec_version(
            conn, principal.municipality_id, _upload(body), _limits(settings)
        )
    except CodecUploadError as exc:
        return _refused(exc.problems)
    except CodecCheckError as exc:
        failed = [e for e in exc.report.examples if not e.passed]
        detail = "the codec failed its examples: " + "; ".join(
            f"example {e.index}: {', '.join(e.problems)[:300]}" for e in failed
        )
        if exc.report.problems:
            detail = "; ".join(exc.report.problems)
        return JSONResponse(
            {"detail": detail[:2000], "report": exc.report.as_json()}, status_code=422
        )
    return JSONResponse(
        {
            "device_model_id": stored.device_model_id,
            "version": stored.version,
            "created_model": stored.created_model,
            "report": stored.report.as_json(),
        },
        status_code=201,
    )


@router.get("/{model_id}/codecs", summary="Every version of one of your models' codec")
def get_codec_versions(principal: ReadPrivate, conn: SyncConn, model_id: Id) -> list[dict]:
    versions = list_versions(conn, principal.municipality_id, model_id)
    if versions is None:
        raise HTTPException(404, "no device model with that id in your municipality")
    return versions
