"""Streamed exports (CSV, JSON Lines, GeoJSON) in constant memory, whatever the size.

Rows come from ``COPY ... TO STDOUT`` (see api/queries/export.py) one at a time and are
gathered into chunks of about `chunk_bytes` before they go to the client, so memory holds
one chunk whatever the export's size, and the client sees bytes from the first chunk on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from psycopg_pool import AsyncConnectionPool

from api.queries.export import CSV_HEADER, ExportFormat, copy_statement
from models.logging import log

CHUNK_BYTES = 64 * 1024

MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "geojson": "application/geo+json",
}


async def stream_export(
    pool: AsyncConnectionPool,
    fmt: ExportFormat,
    params: dict[str, object],
    chunk_bytes: int = CHUNK_BYTES,
) -> AsyncIterator[bytes]:
    """The export's bytes in chunks of about `chunk_bytes` (one row more at most).

    Takes its own pooled connection for as long as the client reads: the request's
    connection is returned before the response body starts.
    """
    rows = 0
    buffer = bytearray(_prologue(fmt))
    async with (
        pool.connection() as conn,
        conn.cursor() as cur,
        cur.copy(copy_statement(fmt), params) as copy,
    ):
        async for row in copy:
            buffer += row
            rows += 1
            if len(buffer) >= chunk_bytes:
                yield _chunk(fmt, buffer)
    yield _chunk(fmt, buffer) + _epilogue(fmt, rows)
    log.info("export_streamed", format=fmt, rows=rows)


def _prologue(fmt: str) -> bytes:
    if fmt == "csv":
        return (",".join(CSV_HEADER) + "\n").encode()
    if fmt == "geojson":
        return b'{"type":"FeatureCollection","features":['
    return b""


def _chunk(fmt: str, buffer: bytearray) -> bytes:
    """Take the buffer's contents; for GeoJSON, join features with commas.

    Every COPY row ends in a newline and JSON text holds none, so newline → ",\\n" puts a
    comma after every feature; the last two bytes stay behind to be dropped (or kept, as
    the separator, once more features follow).
    """
    if fmt != "geojson":
        out = bytes(buffer)
        buffer.clear()
        return out
    joined = bytes(buffer).replace(b"\n", b",\n")
    buffer.clear()
    if joined.endswith(b",\n"):
        buffer += b"\n"
        return joined[:-2]
    return joined


def _epilogue(fmt: str, rows: int) -> bytes:
    if fmt == "geojson":
        return b"]}\n"
    return b""
