"""Pre-generated open-data files (api/open_files.py): listed per municipality and served
with a strong ETag (the file's SHA-256), If-None-Match and byte ranges, so harvesters and
interrupted downloads fetch only what they lack."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Request, Response
from fastapi.responses import FileResponse

from api.deps import AppSettings
from api.open_files import find_file, list_files
from models.schemas import ErrorOut

_ERROR = {"model": ErrorOut}
router = APIRouter(
    prefix="/api/v1",
    tags=["open data files"],
    responses={code: _ERROR for code in (400, 404, 422, 503)},
)

MEDIA_TYPES = {"csv.gz": "application/gzip", "parquet": "application/vnd.apache.parquet"}
# A closed day or month changes only when late readings arrive for it.
MAX_AGE_S = 3600
Slug = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]


def file_url(base: str, slug: str, kind: str, name: str) -> str:
    return f"{base.rstrip('/')}/api/v1/files/{slug}/{kind}/{name}"


@router.get("/files/{municipality}", summary="A municipality's daily and monthly data files")
async def files_of(municipality: Slug, settings: AppSettings) -> list[dict[str, Any]]:
    return [
        {
            "url": file_url(settings.public_base_url, f.slug, f.kind, f.name),
            "kind": f.kind,
            "period": f.period,
            "format": f.format,
            "bytes": f.bytes,
            "sha256": f.sha256,
        }
        for f in list_files(FilePath(settings.open_data_files_dir), municipality)
    ]


@router.get(
    "/files/{municipality}/{kind}/{name}",
    summary="One data file (Range and If-None-Match supported)",
    responses={
        200: {"content": {t: {} for t in MEDIA_TYPES.values()}, "description": "The file"},
        206: {"description": "The requested byte range(s)"},
        304: {"description": "Not modified (If-None-Match named the current ETag)"},
        416: {"description": "Range not satisfiable"},
    },
)
async def data_file(
    request: Request,
    municipality: Slug,
    kind: Annotated[str, Path(pattern=r"^(climate|bin|parking|other)$")],
    name: Annotated[str, Path(max_length=120)],
    settings: AppSettings,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    found = find_file(FilePath(settings.open_data_files_dir), municipality, kind, name)
    if found is None:
        raise HTTPException(404, "no such file; see /api/v1/files/{municipality}")
    etag = f'"{found.sha256}"'
    headers = {"ETag": etag, "Cache-Control": f"public, max-age={MAX_AGE_S}"}
    if if_none_match and etag in {t.strip().removeprefix("W/") for t in if_none_match.split(",")}:
        return Response(status_code=304, headers=headers)
    return FileResponse(
        found.path,
        media_type=MEDIA_TYPES[found.format],
        filename=found.name,
        headers=headers,
    )
