"""Cost of a first and a late page of /api/v1/readings when paging over many sensors.

Loads a throwaway database (public sensors with raw CO2 readings over four weeks), pages
through all sensors' readings with the route (in-process app, real PostgreSQL) and
reports the first and late pages' times, and EXPLAIN (ANALYZE, BUFFERS) of the query the
route runs at the first and a late position next to the single row-comparison keyset
query it replaced (kept below as ``ROW_COMPARISON_RAW`` for this comparison only).

    .venv/bin/python bench/bench_paging.py            # load, measure, write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from api.queries.readings import readings_query  # noqa: E402
from bench.report import cpu_model, write_section  # noqa: E402
from domain.metrics import sync_metrics  # noqa: E402
from models.db import create_database, drop_database, migrate  # noqa: E402

ADMIN_URL = os.environ.get("IOT_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
HEADING = "## Readings paging (bench/bench_paging.py)"

# The query before issue 18: one row comparison as the keyset. On the primary key
# (sensor_id, metric_id, time) it is a filter, not an index bound.
ROW_COMPARISON_RAW = """
SELECT r.sensor_id, r.time, r.value
FROM readings r
WHERE r.sensor_id = ANY(%(sensor_ids)s) AND r.metric_id = %(metric_id)s
  AND r.time >= %(start)s AND r.time < %(end)s
  AND (r.sensor_id, r.time) > (%(after_sensor)s, %(after_time)s)
ORDER BY r.sensor_id, r.time
LIMIT %(limit)s
"""


def load(url: str, sensors: int, days: int, step_s: int, end: datetime) -> dict[str, Any]:
    start = end - timedelta(days=days)
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        sync_metrics(conn)
        conn.execute("INSERT INTO municipalities (slug, name) VALUES ('bench', 'Bench Kommune')")
        conn.execute(
            "INSERT INTO sensors (municipality_id, external_id, kind, is_public, status) "
            "SELECT 1, 's' || g, 'climate', true, 'active' FROM generate_series(1, %s) g",
            (sensors,),
        )
        conn.execute("SELECT iot_ensure_partitions(%s, %s)", (start.date(), end.date()))
        # Time-major, like live ingest: a sensor's rows are spread over its day partitions.
        conn.execute(
            "INSERT INTO readings (time, sensor_id, metric_id, value) "
            "SELECT t, s, m.id, 400 + s FROM generate_series(%s::timestamptz, "
            "%s::timestamptz - make_interval(secs => %s), make_interval(secs => %s)) t, "
            "generate_series(1, %s) s, metrics m WHERE m.name = 'co2_ppm'",
            (start, end, step_s, step_s, sensors),
        )
        conn.execute("VACUUM ANALYZE readings")
        rows = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    return {"start": start, "end": end, "rows": rows, "load_s": time.perf_counter() - t0}


def page_times(
    url: str, facts: dict[str, Any], ids: list[int], limit: int, repeat: int
) -> dict[str, Any]:
    """Walks every page of the full range over all sensors through the route (timing each),
    then times the first page and one at 90 % of the way `repeat` times each."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from models.settings import Settings

    params: dict[str, Any] = {
        "sensor_id": ids,
        "metric": "co2_ppm",
        "limit": limit,
        "from": facts["start"].isoformat(),
        "to": facts["end"].isoformat(),
    }
    walk: list[float] = []
    cursors: list[str | None] = [None]

    def get(cursor: str | None) -> tuple[float, dict]:
        t0 = time.perf_counter()
        response = client.get("/api/v1/readings", params={**params, "cursor": cursor or ""})
        elapsed = (time.perf_counter() - t0) * 1000
        response.raise_for_status()
        return elapsed, response.json()

    with TestClient(create_app(Settings(database_url=url))) as client:
        for _ in range(3):  # warm-up: pool, caches
            get(None)
        while True:
            elapsed, body = get(cursors[-1])
            if not body["items"]:  # the page after a full last page
                break
            walk.append(elapsed)
            if body["next_cursor"] is None:
                break
            cursors.append(body["next_cursor"])
        late_index = int(len(walk) * 0.9)
        late_cursor = cursors[late_index]
        first = [get(None)[0] for _ in range(repeat)]
        late = [get(late_cursor)[0] for _ in range(repeat)]
        late_sensor = get(late_cursor)[1]["items"][0]["sensor_id"]
    return {
        "walk": walk,
        "first": first,
        "late": late,
        "late_page": late_index + 1,
        "late_sensor": late_sensor,
    }


def explain(conn: psycopg.Connection, query: sql.Composable, params: dict) -> dict:
    """Execution time and shared buffers of `query`, best of 5 runs (cache warm)."""
    runs = []
    for _ in range(5):
        plan = conn.execute(
            sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + query, params
        ).fetchone()[0][0]
        top = plan["Plan"]
        runs.append(
            {
                "ms": plan["Execution Time"],
                "buffers": top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0),
            }
        )
    return min(runs, key=lambda r: r["ms"])


def query_costs(url: str, facts: dict, ids: list[int], limit: int) -> dict[str, dict]:
    late_sensor = ids[int(len(ids) * 0.9)]
    positions = {"first": None, "late": (late_sensor, facts["start"] + timedelta(days=1))}
    out: dict[str, dict] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        metric_id = conn.execute("SELECT id FROM metrics WHERE name = 'co2_ppm'").fetchone()[0]
        for name, after in positions.items():
            query, params = readings_query(
                sensor_ids=ids,
                metric_id=metric_id,
                start=facts["start"],
                end=facts["end"],
                bucket="raw",
                limit=limit,
                after=after,
            )
            out[f"now_{name}"] = explain(conn, query, params)
            old_params = {
                "sensor_ids": ids,
                "metric_id": metric_id,
                "start": facts["start"],
                "end": facts["end"],
                "after_sensor": after[0] if after else 0,
                "after_time": after[1] if after else datetime(1, 1, 1, tzinfo=UTC),
                "limit": limit,
            }
            out[f"before_{name}"] = explain(conn, sql.SQL(ROW_COMPARISON_RAW), old_params)
    out["late_position"] = {"sensor": late_sensor, "of": len(ids)}
    return out


def report(facts: dict, pages: dict, costs: dict, args: argparse.Namespace) -> str:
    with psycopg.connect(ADMIN_URL) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]
    walk = pages["walk"]
    first_ms, late_ms = statistics.median(pages["first"]), statistics.median(pages["late"])
    command = "cd /work/main && .venv/bin/python " + shlex.join(
        ["bench/bench_paging.py", *sys.argv[1:]]
    )
    c = costs
    lines = [
        HEADING,
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {cpu_model()}, {os.cpu_count()} cores, "
        f"shared with other work (load average {os.getloadavg()[0]:.1f}); PostgreSQL {pg}, "
        f"plain PostgreSQL with daily partitions; Python {platform.python_version()}.",
        "",
        f"Data: {facts['rows']:,} readings of {args.sensors} public sensors, one every "
        f"{args.step_s} s over {args.days} days, loaded time-major (load "
        f"{facts['load_s']:.0f} s). Paged: `/api/v1/readings` with all {args.sensors} "
        f"`sensor_id`s, the whole range, `limit={args.limit}`, through the route in-process "
        "(FastAPI TestClient, real PostgreSQL).",
        "",
        "| | first page | late page | late / first |",
        "|---|---:|---:|---:|",
        f"| route (median of {len(pages['first'])}; late = page {pages['late_page']} of "
        f"{len(walk)}, sensor {pages['late_sensor']}) | {first_ms:.1f} ms | {late_ms:.1f} ms | "
        f"{late_ms / first_ms:.2f} |",
        f"| query now, EXPLAIN ANALYZE (best of 5) | {c['now_first']['ms']:.1f} ms, "
        f"{c['now_first']['buffers']:,} buffers | {c['now_late']['ms']:.1f} ms, "
        f"{c['now_late']['buffers']:,} buffers | "
        f"{c['now_late']['buffers'] / c['now_first']['buffers']:.2f} (buffers) |",
        f"| query before (one row comparison as keyset) | {c['before_first']['ms']:.1f} ms, "
        f"{c['before_first']['buffers']:,} buffers | {c['before_late']['ms']:.1f} ms, "
        f"{c['before_late']['buffers']:,} buffers | "
        f"{c['before_late']['buffers'] / c['before_first']['buffers']:.0f} (buffers) |",
        "",
        f"Query rows: the late position is sensor {c['late_position']['sensor']} of "
        f"{c['late_position']['of']}, one day into the range. Walking all {len(walk)} pages "
        f"through the route: median {statistics.median(walk):.1f} ms, slowest "
        f"{max(walk):.1f} ms. Before, a page's cost grew with its position: "
        "every page re-read the rows of all sensors before the cursor's.",
        "",
        "Command:",
        "",
        "```",
        command,
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sensors", type=int, default=100)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--step-s", type=int, default=120)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=20, help="timed first and late pages")
    parser.add_argument("--no-write", action="store_true", help="don't touch BENCHMARKS.md")
    args = parser.parse_args()
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/iot_bench_paging_{uuid.uuid4().hex[:8]}"
    create_database(url)
    try:
        migrate(url, timescaledb="off")
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        facts = load(url, args.sensors, args.days, args.step_s, end)
        print(f"loaded {facts['rows']:,} readings in {facts['load_s']:.0f} s", flush=True)
        ids = list(range(1, args.sensors + 1))
        pages = page_times(url, facts, ids, args.limit, args.repeat)
        costs = query_costs(url, facts, ids, args.limit)
        text = report(facts, pages, costs, args)
        print(text)
        if not args.no_write:
            write_section(HEADING, text)
    finally:
        drop_database(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
