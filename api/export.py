"""Streamed exports (CSV, JSON Lines, GeoJSON) in constant memory, whatever the size.

Rows come from ``COPY ... TO STDOUT`` (see api/queries/export.py) one at a time and are
gathered into chunks of about `chunk_bytes` before they go to the client, so memory holds
one chunk whatever the export's size, and the client sees bytes from the first chunk on.

An export holds a database connection for as long as its client reads, so exports have a
bounded capacity of their own (``ExportSlots`` and the export pool of api/pools.py): when
every slot is taken, the next export is refused at once with 429 and Retry-After, and the
other routes keep their connections. A client that stops reading is cut off after
IOT_EXPORT_SEND_TIMEOUT_S, an export streaming longer than IOT_EXPORT_MAX_DURATION_S is
cut off (by PostgreSQL's statement timeout, or by the API for a slow client: a backend
blocked writing to a full socket acts on the timeout only once it can write again), and
either way the slot and the connection come back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import HTTPException
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from api.queries.export import CSV_HEADER, ExportFormat, copy_statement
from models.logging import log

CHUNK_BYTES = 64 * 1024
# What a refused export is told to wait: exports of a day stream in seconds.
RETRY_AFTER_S = 10

MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "geojson": "application/geo+json",
}


class ExportSlots:
    """How many exports may stream at once in this process; taking a slot never waits.

    A plain counter: the event loop runs one coroutine at a time, and nothing awaits
    between the check and the update.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.in_use = 0

    def try_take(self) -> bool:
        if self.in_use >= self.size:
            return False
        self.in_use += 1
        return True

    def give_back(self) -> None:
        self.in_use -= 1


class ExportAbortedError(Exception):
    """The client accepted no data for the send timeout, or the export ran past its
    longest duration; the response is cut off."""


async def open_export(slots: ExportSlots, pool: AsyncConnectionPool) -> AsyncConnection:
    """A slot and a connection of the export pool, or 429 with Retry-After when every slot
    is taken. The caller gives both back (``ExportResponse`` does)."""
    if not slots.try_take():
        log.warning("export_refused", slots=slots.size)
        raise HTTPException(
            429,
            f"all {slots.size} export slots of this server are in use; retry in "
            f"{RETRY_AFTER_S} seconds, or ask for a shorter range",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    try:
        return await pool.getconn()
    except BaseException:
        slots.give_back()
        raise


class ExportResponse(StreamingResponse):
    """A streamed export that gives its slot and connection back however it ends
    (finished, client gone, client stalled, too long), and cuts the response off when the
    client accepts nothing for `send_timeout_s` or it streams past `max_duration_s`."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        release: Callable[[], Awaitable[None]],
        send_timeout_s: float,
        max_duration_s: float,
        media_type: str,
        headers: dict[str, str],
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self._release = release
        self._send_timeout_s = send_timeout_s
        self._deadline = asyncio.get_running_loop().time() + max_duration_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def send_noting_start(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await super().__call__(scope, receive, send_noting_start)
        except Exception as exc:
            if not started:
                raise
            # The status line is out: the only way to tell the client is to end the
            # response unfinished (the server then closes the connection).
            log.warning("export_aborted", reason=type(exc).__name__, detail=str(exc)[:200])
        finally:
            try:
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
            finally:
                await self._release()

    async def stream_response(self, send: Send) -> None:
        loop = asyncio.get_running_loop()

        async def send_in_time(message: Message) -> None:
            remaining = self._deadline - loop.time()
            if remaining <= 0:
                raise ExportAbortedError("the export ran past IOT_EXPORT_MAX_DURATION_S")
            try:
                async with asyncio.timeout(min(self._send_timeout_s, remaining)):
                    await send(message)
            except TimeoutError:
                raise ExportAbortedError(
                    f"the client accepted no data for {self._send_timeout_s} s, or the "
                    "export ran past IOT_EXPORT_MAX_DURATION_S"
                ) from None

        await super().stream_response(send_in_time)


def export_release(
    slots: ExportSlots, pool: AsyncConnectionPool, conn: AsyncConnection
) -> Callable[[], Awaitable[None]]:
    """Give back the connection (the pool discards it if a COPY was left unfinished) and
    the slot."""

    async def release() -> None:
        try:
            await pool.putconn(conn)
        finally:
            slots.give_back()

    return release


async def stream_export(
    conn: AsyncConnection,
    fmt: ExportFormat,
    params: dict[str, object],
    chunk_bytes: int = CHUNK_BYTES,
) -> AsyncIterator[bytes]:
    """The export's bytes in chunks of about `chunk_bytes` (one row more at most), read
    from `conn` (an export connection: its statement timeout bounds the whole export)."""
    rows = 0
    buffer = bytearray(_prologue(fmt))
    async with conn.cursor() as cur, cur.copy(copy_statement(fmt), params) as copy:
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
