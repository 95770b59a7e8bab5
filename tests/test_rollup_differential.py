"""Late, duplicate and out-of-order readings give the same hourly and daily rollups on plain
PostgreSQL, on TimescaleDB (continuous aggregates, compressed chunks) and from raw SQL.

A stream goes through the ingest writer into both backends in two rounds: the first as it
arrives in normal operation, followed by what the scheduler would do (the maintenance pass:
rollups refreshed, chunks older than a week compressed); the second late (days old, into
materialised buckets and compressed chunks), with repeats of the first round, out of
order. After another maintenance pass every answer must agree.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli.db import maintain_once
from ingest.writer import BatchWriter
from tests.conftest import SessionDatabases, empty_data_tables

pytestmark = pytest.mark.timescaledb

SENSORS = (1, 2)
METRICS = (1, 2)
STEP = timedelta(minutes=10)
SPAN_STEPS = 12 * 24 * 6  # 12 days of 10-minute slots: some are compressed (7 days)

ROLLUP = "SELECT bucket, sensor_id, metric_id, count, sum, avg, min, max FROM {} ORDER BY 1, 2, 3"
RAW = """
SELECT date_trunc(%(unit)s, time, 'UTC') AS bucket, sensor_id, metric_id,
       count(*), sum(value), avg(value), min(value), max(value)
FROM readings GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""

readings = st.lists(
    st.tuples(
        st.integers(1, SPAN_STEPS),  # slots before now
        st.sampled_from(SENSORS),
        st.sampled_from(METRICS),
        st.integers(-200, 200).map(lambda q: q * 0.25),  # exact sums in any order
    ),
    min_size=1,
    max_size=60,
)


@st.composite
def streams(draw: st.DrawFn) -> tuple[list, list]:
    """(on-time batches, late batches): the late round repeats some earlier readings
    (same key, same or another value) and is shuffled."""
    first = draw(readings)
    repeats = draw(st.lists(st.sampled_from(first), max_size=20))
    altered = [(slot, s, m, v + 1.0) for slot, s, m, v in draw(st.lists(st.sampled_from(first)))]
    late = draw(st.permutations([*draw(readings), *repeats, *altered[:5]]))
    return _batches(draw, sorted(first)), _batches(draw, late)


def _batches(draw: st.DrawFn, rows: list) -> list[list]:
    cuts = sorted(draw(st.lists(st.integers(0, len(rows)), max_size=4)))
    bounds = [0, *cuts, len(rows)]
    return [rows[a:b] for a, b in pairwise(bounds) if b > a]


@pytest.fixture(scope="module")
def connections(session_databases: SessionDatabases):
    urls = {b: session_databases.url(b) for b in ("postgres", "timescaledb")}
    with (
        psycopg.connect(urls["postgres"], autocommit=True) as plain,
        psycopg.connect(urls["timescaledb"], autocommit=True) as tsdb,
    ):
        yield plain, tsdb
        for conn in (plain, tsdb):
            empty_data_tables(conn)


def _reset(conn: psycopg.Connection) -> None:
    empty_data_tables(conn)
    municipality = conn.execute(
        "INSERT INTO municipalities (slug, name) VALUES ('diff', 'Diff') RETURNING id"
    ).fetchone()[0]
    for sensor_id in SENSORS:
        conn.execute(
            "INSERT INTO sensors (id, municipality_id, external_id, kind) "
            "VALUES (%s, %s, %s, 'other')",
            (sensor_id, municipality, f"diff-{sensor_id}"),
        )


def _as_the_scheduler_would(conn: psycopg.Connection) -> None:
    """What TimescaleDB's scheduler does between rounds: the refresh policies materialise
    their windows and the compression policy compresses chunks older than a week."""
    jobs = conn.execute(
        "SELECT job_id FROM timescaledb_information.jobs WHERE hypertable_schema = 'public' "
        "ORDER BY proc_name = 'policy_compression', hypertable_name = 'readings_daily'"
    ).fetchall()
    for (job_id,) in jobs:
        conn.execute("CALL run_job(%s)", (job_id,))


def _answers(conn: psycopg.Connection) -> dict[str, list]:
    return {
        "hourly": conn.execute(ROLLUP.format("readings_hourly")).fetchall(),
        "daily": conn.execute(ROLLUP.format("readings_daily")).fetchall(),
        "raw hourly": conn.execute(RAW, {"unit": "hour"}).fetchall(),
        "raw daily": conn.execute(RAW, {"unit": "day"}).fetchall(),
        "readings": conn.execute("SELECT * FROM readings ORDER BY 2, 3, 1").fetchall(),
    }


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=streams())
def test_both_backends_and_raw_sql_agree_on_late_duplicate_out_of_order_streams(
    connections, stream
) -> None:
    plain, tsdb = connections
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    now -= timedelta(minutes=now.minute % 10)
    on_time, late = stream
    for conn in (plain, tsdb):
        _reset(conn)
        writer = BatchWriter()
        for round_ in (on_time, late):
            for batch in round_:
                writer.write(conn, [(now - slot * STEP, s, m, v) for slot, s, m, v in batch], [])
            if conn is tsdb:
                _as_the_scheduler_would(conn)
            maintain_once(conn, days_ahead=1, retention_days=0)

    expected = _answers(plain)
    assert expected["hourly"] == expected["raw hourly"]
    assert expected["daily"] == expected["raw daily"]
    got = _answers(tsdb)
    assert got["readings"] == expected["readings"]
    assert got["raw hourly"] == expected["raw hourly"]
    assert got["hourly"] == expected["hourly"]
    assert got["daily"] == expected["daily"]
