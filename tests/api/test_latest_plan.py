"""/api/v1/latest is planned for each call, never run from a prepared statement.

psycopg prepares a statement after five executions on one connection, and PostgreSQL then
switches to a generic plan once that seems no costlier: for the latest query it cannot
drop the "parameter IS NULL OR ..." filters and probes latest_readings once per sensor,
and with the public role's row-level security once more per row (47-96 ms instead of
30 ms over 10,000 sensors; BENCHMARKS.md "same-run comparisons"). The pooled connections
of the API run it many times, so this checks the connection after many calls.
"""

from __future__ import annotations

import asyncio

import psycopg

from api.pools import connection_kwargs
from api.queries.public import latest_values
from tests.api.conftest import PUBLIC_IDS, Fleet


def test_the_latest_query_is_never_prepared(database_url: str, fleet: Fleet) -> None:
    async def run() -> tuple[list[int], int]:
        async with await psycopg.AsyncConnection.connect(
            database_url, **connection_kwargs()
        ) as conn:
            for _ in range(12):
                items = await latest_values(conn, limit=1000)
            cur = await conn.execute(
                "SELECT count(*) FROM pg_prepared_statements "
                "WHERE statement LIKE '%%latest_readings%%'"
            )
            return [item["sensor_id"] for item in items], (await cur.fetchone())[0]

    sensors, prepared = asyncio.run(run())
    assert sensors == list(PUBLIC_IDS)
    assert prepared == 0
