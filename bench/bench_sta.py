"""One page of 1,000 Observations of a year-long Datastream through the SensorThings API.

Loads a throwaway database: one public climate sensor with CO2 every `--step-s` seconds for
a year (the Datastream paged), plus `--sensors` other public sensors with a year of CO2 at
`--other-step-s`, so the readings table is large. Serves the API with uvicorn (one worker,
as the public API role) and times, interleaved in one run, over HTTP with keep-alive:

- STA first page: ``Datastreams(<id>)/Observations?$top=1000``;
- STA late page: the same through a ``$skiptoken`` ~90 % into the year (from a walk);
- STA newest first: ``$orderby=phenomenonTime desc&$top=1000``;
- STA with a filter: ``$filter=result gt 800 and hour(phenomenonTime) ge 8``;
- /api/v1/readings raw page of 1,000 of the same sensor (the project's own API, baseline).

With ``--database-url`` the Datastream is added to an existing, migrated plain PostgreSQL
database instead (its own municipality and sensor; triggers off, so no other sensor's
rollups are recomputed; the function of migration 0025 created if missing), and removed
again afterwards: the large database is loaded once, by bench_api.py. With
``--compare-checkout DIR`` the API of another checkout (e.g. the main branch) is served
beside this one and its STA pages are timed in the same interleaved rounds.

    .venv/bin/python bench/bench_sta.py [--backend postgres|timescaledb] [--repeat 200]
        [--database-url URL] [--compare-checkout /work/main]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from api.sta.entities import datastream_id  # noqa: E402
from bench.report import cpu_model, write_section  # noqa: E402
from domain.metrics import sync_metrics  # noqa: E402
from models.db import create_database, drop_database, migrate  # noqa: E402
from models.db_roles import API, enable_logins, role_url  # noqa: E402
from tests.processes import free_port, wait_for_port  # noqa: E402

ADMIN_URLS = {
    "postgres": os.environ.get(
        "IOT_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    ),
    "timescaledb": os.environ.get(
        "IOT_TEST_TIMESCALE_ADMIN_URL", "postgresql://postgres@127.0.0.1:5433/postgres"
    ),
}
HEADING = "## Standards APIs: SensorThings Observations page (bench/bench_sta.py)"


def load(url: str, sensors: int, step_s: int, other_step_s: int, end: datetime) -> dict[str, Any]:
    start = end - timedelta(days=365)
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        sync_metrics(conn)
        conn.execute("INSERT INTO municipalities (slug, name) VALUES ('bench', 'Bench Kommune')")
        conn.execute(
            "INSERT INTO sensors (municipality_id, external_id, kind, is_public, status, lat, lon)"
            " SELECT 1, 's' || g, 'climate', true, 'active', 56.15, 10.2"
            " FROM generate_series(1, %s) g",
            (sensors + 1,),
        )
        conn.execute("SELECT iot_ensure_partitions(%s, %s)", (start.date(), end.date()))
        metric = conn.execute("SELECT id FROM metrics WHERE name = 'co2_ppm'").fetchone()[0]
        for first, last, step in ((1, 1, step_s), (2, sensors + 1, other_step_s)):
            conn.execute(
                "INSERT INTO readings (time, sensor_id, metric_id, value) "
                "SELECT t, s, %s, 400 + (extract(epoch FROM t)::bigint %% 1000) "
                "FROM generate_series(%s::timestamptz, %s::timestamptz - make_interval(secs => %s),"
                " make_interval(secs => %s)) t, generate_series(%s::bigint, %s::bigint) s",
                (metric, start, end, step, step, first, last),
            )
        conn.execute(
            "INSERT INTO latest_readings (sensor_id, metric_id, time, value) "
            "SELECT s.id, %s, %s, 500 FROM sensors s",
            (metric, end - timedelta(seconds=step_s)),
        )
        conn.execute("VACUUM ANALYZE readings")
        if conn.execute("SELECT to_regproc('iot_refresh_rollups') IS NOT NULL").fetchone()[0]:
            conn.execute("SELECT iot_refresh_rollups()")  # plain PostgreSQL
        else:
            for view in ("readings_hourly", "readings_daily"):
                conn.execute("CALL refresh_continuous_aggregate(%s, NULL, NULL)", (view,))
        rows = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        stream_rows = conn.execute("SELECT count(*) FROM readings WHERE sensor_id = 1").fetchone()[
            0
        ]
    return {
        "start": start,
        "end": end,
        "rows": rows,
        "stream_rows": stream_rows,
        "metric": metric,
        "load_s": time.perf_counter() - t0,
    }


def _migration_0025() -> Any:
    import importlib.util

    path = REPO / "migrations" / "versions" / "0025_published_observations.py"
    spec = importlib.util.spec_from_file_location("migration_0025", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def add_stream(url: str, step_s: int) -> dict[str, Any]:
    """One public sensor's CO2 every `step_s` s for the year before the database's newest
    reading, in a municipality of its own, with its hourly and daily rollups, in an
    existing database. Triggers are off for the session (superuser), so no dirty hours are
    marked and no other sensor's rollups are touched."""
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        newest = conn.execute("SELECT max(time) FROM latest_readings").fetchone()[0]
        end = newest.replace(hour=0, minute=0, second=0, microsecond=0)
        start = end - timedelta(days=365)
        slug = f"bench-sta-{os.getpid()}"
        municipality = conn.execute(
            "INSERT INTO municipalities (slug, name) VALUES (%s, 'Bench STA') RETURNING id",
            (slug,),
        ).fetchone()[0]
        sensor = conn.execute(
            "INSERT INTO sensors (municipality_id, external_id, kind, is_public, status, lat, lon)"
            " VALUES (%s, %s, 'climate', true, 'active', 56.15, 10.2) RETURNING id",
            (municipality, slug),
        ).fetchone()[0]
        metric = conn.execute("SELECT id FROM metrics WHERE name = 'co2_ppm'").fetchone()[0]
        conn.execute("SELECT iot_ensure_partitions(%s, %s)", (start.date(), end.date()))
        conn.execute(
            "INSERT INTO readings (time, sensor_id, metric_id, value) "
            "SELECT t, %s, %s, 400 + (extract(epoch FROM t)::bigint %% 1000) "
            "FROM generate_series(%s::timestamptz, %s::timestamptz - make_interval(secs => %s),"
            " make_interval(secs => %s)) t",
            (sensor, metric, start, end, step_s, step_s),
        )
        for table, width in (("readings_hourly", "hour"), ("readings_daily", "day")):
            conn.execute(
                f"INSERT INTO {table} (bucket, sensor_id, metric_id, count, sum, avg, min, max) "
                f"SELECT date_trunc('{width}', time, 'UTC'), sensor_id, metric_id, count(*), "
                "sum(value), avg(value), min(value), max(value) FROM readings "
                "WHERE sensor_id = %s AND metric_id = %s GROUP BY 1, 2, 3",
                (sensor, metric),
            )
        conn.execute(
            "INSERT INTO latest_readings (sensor_id, metric_id, time, value) "
            "VALUES (%s, %s, %s, 500)",
            (sensor, metric, end - timedelta(seconds=step_s)),
        )
        created = conn.execute(
            "SELECT to_regprocedure('iot_published_observations(bigint, smallint, smallint, "
            "timestamptz, timestamptz, boolean, integer)') IS NULL"
        ).fetchone()[0]
        if created:
            conn.execute("SET ROLE iot_owner")
            conn.execute(_migration_0025().UPGRADE)
            conn.execute("RESET ROLE")
            conn.execute(
                "REVOKE ALL ON FUNCTION iot_published_observations(bigint, smallint, smallint, "
                "timestamptz, timestamptz, boolean, integer) FROM PUBLIC"
            )
            conn.execute(
                "GRANT EXECUTE ON FUNCTION iot_published_observations(bigint, smallint, "
                "smallint, timestamptz, timestamptz, boolean, integer) TO iot_api"
            )
        conn.execute("ANALYZE readings_hourly")
        conn.execute("ANALYZE readings_daily")
        rows = conn.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = 'readings'::regclass"
        ).fetchone()[0]
        if rows <= 0:  # a partitioned table's estimate: the sum of its partitions'
            rows = conn.execute(
                "SELECT sum(c.reltuples)::bigint FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'readings'::regclass"
            ).fetchone()[0]
        stream_rows = conn.execute(
            "SELECT count(*) FROM readings WHERE sensor_id = %s", (sensor,)
        ).fetchone()[0]
    return {
        "start": start,
        "end": end,
        "rows": rows,
        "stream_rows": stream_rows,
        "metric": metric,
        "sensor": sensor,
        "municipality": municipality,
        "created_function": created,
        "load_s": time.perf_counter() - t0,
    }


def remove_stream(url: str, facts: dict[str, Any]) -> None:
    """Undo `add_stream`: its rows, sensor, municipality and, if it made it, the function."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        key = (facts["sensor"],)
        for table in ("readings", "readings_hourly", "readings_daily", "latest_readings"):
            conn.execute(f"DELETE FROM {table} WHERE sensor_id = %s", key)
        conn.execute("DELETE FROM sensors WHERE id = %s", key)
        conn.execute("DELETE FROM municipalities WHERE id = %s", (facts["municipality"],))
        if facts["created_function"]:
            conn.execute(_migration_0025().DOWNGRADE)


def serve(url: str, port: int, log: Path, checkout: Path = REPO) -> subprocess.Popen:
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "IOT_DATABASE_URL": role_url(url, API),
        "IOT_PUBLIC_BASE_URL": base,
        "IOT_LOG_LEVEL": "WARNING",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [_python(checkout), "-m", "cli", "api", "--host", "127.0.0.1", "--port", str(port)],
            cwd=checkout,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_for_port(port, timeout=60)
    deadline = time.monotonic() + 60
    while httpx.get(base + "/health").status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("the API never became healthy")
        time.sleep(0.2)
    return process


def _python(checkout: Path) -> str:
    venv = checkout / ".venv" / "bin" / "python"
    return sys.executable if checkout == REPO or not venv.exists() else str(venv)


def late_token(client: httpx.Client, path: str, fraction: float, total: int) -> str:
    """A $skiptoken about `fraction` into the Datastream, by walking its pages."""
    pages = int(total * fraction) // 1000
    url = path + "?%24top=1000"
    for _ in range(pages):
        body = client.get(url).json()
        url = body["@iot.nextLink"]
    return url


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("postgres", "timescaledb"), default="postgres")
    parser.add_argument("--sensors", type=int, default=500)
    parser.add_argument("--step-s", type=int, default=300)
    parser.add_argument("--other-step-s", type=int, default=6300)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument(
        "--database-url",
        help="add the Datastream to this existing plain PostgreSQL database (and remove it "
        "afterwards) instead of loading a throwaway one",
    )
    parser.add_argument(
        "--compare-checkout",
        type=Path,
        help="also serve this checkout's API (its .venv) and time its STA pages alike",
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    existing = args.database_url is not None
    if existing and args.backend != "postgres":
        parser.error("--database-url: plain PostgreSQL only")
    admin = ADMIN_URLS[args.backend]
    url = args.database_url or admin.rsplit("/", 1)[0] + f"/iot_bench_sta_{os.getpid()}"
    processes: list[subprocess.Popen] = []
    facts: dict[str, Any] | None = None
    if not existing:
        create_database(url)
    try:
        if existing:
            facts = add_stream(url, args.step_s)
        else:
            migrate(url, timescaledb="on" if args.backend == "timescaledb" else "off")
            with psycopg.connect(url, autocommit=True) as conn:
                enable_logins(conn, {})
            end = datetime(2026, 12, 1, tzinfo=UTC)
            facts = load(url, args.sensors, args.step_s, args.other_step_s, end)
            facts["sensor"] = 1
            if args.backend == "timescaledb":
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("SELECT compress_chunk(c, true) FROM show_chunks('readings') c")
                    conn.execute("VACUUM ANALYZE readings")
        servers = {"": REPO}
        if args.compare_checkout is not None:
            servers["before: "] = args.compare_checkout.resolve()
        bases = {}
        for label, checkout in servers.items():
            port = free_port()
            processes.append(serve(url, port, Path(f"/tmp/bench_sta_{port}.log"), checkout))
            bases[label] = f"http://127.0.0.1:{port}"
        base = bases[""]
        stream = datastream_id(facts["sensor"], facts["metric"], 0)
        client = httpx.Client(headers={"Accept-Encoding": "identity"}, timeout=60)
        month = facts["start"] + timedelta(days=300)
        readings = (
            f"{base}/api/v1/readings?sensor_id={facts['sensor']}&metric=co2_ppm&limit=1000"
            f"&from={month.isoformat().replace('+00:00', 'Z')}"
            f"&to={(month + timedelta(days=31)).isoformat().replace('+00:00', 'Z')}"
        )
        cases: dict[str, str] = {}
        for label, server in bases.items():
            path = f"{server}/sta/v1.1/Datastreams({stream})/Observations"
            late = late_token(client, path, 0.9, facts["stream_rows"])
            cases |= {
                f"{label}STA first page (`$top=1000`)": path + "?%24top=1000",
                f"{label}STA late page (`$skiptoken` 90 % into the year)": late,
                f"{label}STA newest first (`$orderby=phenomenonTime desc`)": path
                + "?%24top=1000&%24orderby=phenomenonTime%20desc",
                f"{label}STA filtered (`result gt 800 and hour(phenomenonTime) ge 8`)": path
                + "?%24top=1000&%24filter=result%20gt%20800%20and%20hour(phenomenonTime)%20ge%208",
            }
        cases["baseline: /api/v1/readings raw, 1,000 rows"] = readings
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for name, case_url in cases.items():  # warm up, and check every case answers fully
            response = client.get(case_url)
            response.raise_for_status()
            body = response.json()
            count = len(body.get("value", body.get("items", [])))
            if count != 1000:
                raise RuntimeError(f"{name}: {count} rows, not 1000")
        for _ in range(args.repeat):  # interleaved: every case meets the same load
            for name, case_url in cases.items():
                t0 = time.perf_counter()
                client.get(case_url).raise_for_status()
                samples[name].append((time.perf_counter() - t0) * 1000)
        with psycopg.connect(url) as conn:
            server_version = conn.execute("SHOW server_version").fetchone()[0]
        load_avg = os.getloadavg()
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
        if existing:
            if facts is not None:
                remove_stream(url, facts)
        else:
            drop_database(url)

    baseline = statistics.median(samples["baseline: /api/v1/readings raw, 1,000 rows"])
    if existing:
        scale = (
            f"Data: an existing database of about {facts['rows']:,} readings (10,000 sensors "
            f"at {args.other_step_s} s for a year, loaded by bench_api.py), with the "
            f"Datastream paged added for the run and removed after it: one sensor's CO2 "
            f"every {args.step_s} s for 365 days ({facts['stream_rows']:,} Observations), "
            f"in a municipality of its own (added in {facts['load_s']:.0f} s)."
        )
    else:
        scale = (
            f"Data: {facts['rows']:,} readings; the Datastream paged is one sensor's CO2 "
            f"every {args.step_s} s for 365 days ({facts['stream_rows']:,} Observations), "
            f"beside {args.sensors} other sensors every {args.other_step_s} s (load "
            f"{facts['load_s']:.0f} s)."
        )
    compared = (
        f' Rows marked "before:" are the API of {args.compare_checkout} (the code before '
        "this change) served beside it against the same database."
        if args.compare_checkout
        else ""
    )
    lines = [
        HEADING,
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {cpu_model()}, {os.cpu_count()} cores, "
        f"**shared with other engineers' tests and benchmarks** (load average "
        f"{load_avg[0]:.1f} / {load_avg[1]:.1f} at the end); PostgreSQL {server_version}, "
        f"backend {args.backend}; Python {platform.python_version()}.",
        "",
        scale + " uvicorn, one worker per API, connected as iot_api; httpx over keep-alive; "
        f"the {len(cases)} requests interleaved, n={args.repeat} each." + compared,
        "",
        "| request (1,000 Observations) | p50 | p95 | p50 / baseline p50 | target |",
        "|---|---:|---:|---:|---|",
    ]
    for name, values in samples.items():
        p50, p95 = statistics.median(values), percentile(values, 0.95)
        target = ""
        if name.startswith("STA first") or name.startswith("STA late"):
            target = "p95 < 50 ms: " + ("met" if p95 < 50 else "**missed**")
        lines.append(f"| {name} | {p50:.1f} ms | {p95:.1f} ms | {p50 / baseline:.2f} | {target} |")
    command = shlex.join(["python", "bench/bench_sta.py", *sys.argv[1:]])
    lines += ["", "Command:", "", "```", f"cd /work/main && .venv/bin/{command}", "```", ""]
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        write_section(HEADING, report)


if __name__ == "__main__":
    main()
