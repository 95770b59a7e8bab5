"""/api/v1/latest's statement is planned for each call, never from a kept generic plan.

The API's pooled connections run it many times. A prepared statement (psycopg prepares
after five executions) or a PL/pgSQL function's static statement switches to a generic
plan once that seems no costlier, and a generic plan cannot drop the "parameter IS NULL
OR ..." filters: it probes latest_readings once per sensor (47-96 ms instead of 30 ms over
10,000 sensors; BENCHMARKS.md "Open data API"). ``iot_published_latest`` (migration 0026)
runs its statement through EXECUTE, planned with the arguments as constants; this looks
at the plan PostgreSQL actually runs inside the function after many calls (auto_explain,
nested statements, sent to the client as log messages).
"""

from __future__ import annotations

import asyncio
import json

import psycopg

from api.pools import connection_kwargs
from api.queries.public import latest_values
from tests.api.conftest import PUBLIC_IDS, Fleet


def test_the_latest_query_is_planned_with_the_call_s_filters(
    database_url: str, fleet: Fleet
) -> None:
    async def run() -> tuple[list[list[int]], list[str]]:
        async with await psycopg.AsyncConnection.connect(
            database_url, **connection_kwargs()
        ) as conn:
            pages = []
            for _ in range(12):
                items = await latest_values(conn, limit=1000)
                pages.append([item["sensor_id"] for item in items])
            messages: list[str] = []
            conn.add_notice_handler(lambda diag: messages.append(diag.message_primary or ""))
            for setting in (
                "LOAD 'auto_explain'",
                "SET auto_explain.log_min_duration = 0",
                "SET auto_explain.log_nested_statements = on",
                "SET auto_explain.log_format = json",
                "SET client_min_messages = log",
            ):
                await conn.execute(setting)
            items = await latest_values(conn, limit=1000)
            pages.append([item["sensor_id"] for item in items])
            return pages, messages

    pages, messages = asyncio.run(run())
    assert all(page == list(PUBLIC_IDS) for page in pages)
    plans = [json.loads(m[m.index("{") :]) for m in messages if "plan:" in m]
    inner = [p["Plan"] for p in plans if "latest_readings" in p["Query Text"]]
    assert inner, messages  # the plan of the function's statement was seen
    for plan in inner:
        # A generic plan keeps the filters as "($1 IS NULL) OR ..." on parameters.
        text = json.dumps(plan)
        assert "IS NULL" not in text and "$1" not in text, text
