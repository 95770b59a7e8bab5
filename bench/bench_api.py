"""Open-data API latency and export throughput with 50 million readings, over real HTTP.

Loads a throwaway database (10,000 public sensors x 5,000 readings over one year, binary
COPY generated with NumPy, plus private sensors that must stay invisible), refreshes the
rollups, starts ``python -m cli api`` (uvicorn) in a subprocess and measures with httpx:

1. latest values of 10,000 sensors, one request (p50/p95 over --repeat requests);
2. hourly averages of one sensor over a year (p50/p95, a different sensor each time);
3. a month's export of one municipality (rows per second, CSV, JSON Lines, GeoJSON).

Targets (issue 8): p95 < 50 ms for 1 and 2; export > 200,000 rows/s. Results go into
BENCHMARKS.md (this script's section only) with the machine and the exact command.

    .venv/bin/python bench/bench_api.py            # load, measure, drop the database
    .venv/bin/python bench/bench_api.py --keep     # keep it; reuse with --database-url
    .venv/bin/python bench/bench_api.py --backend timescaledb --late-batch

``--backend timescaledb`` loads into the TimescaleDB server of ../shared/timescaledb/setup.sh
(IOT_TEST_TIMESCALE_ADMIN_URL), materialises the continuous aggregates, compresses the
chunks older than 7 days (bytes per reading before and after) and writes its own section;
``--late-batch`` also times a batch of month-old readings (half repeats) through the ingest
writer and the maintenance pass that brings them into the rollups.

``--api-role iot_api`` runs the API as the public API's role, as production does (row-level
security on sensors and latest values, readings through the functions of migration 0019).

``--database-url`` reuses a database kept by ``--keep`` (migrated to this checkout's schema
first; no reload, no rollup refresh). ``--variant label=checkout[@role]`` (repeatable) runs
one API per variant against it instead, requests interleaved round by round, and prints
each variant's figures with its paired ratio to the first, for same-run A/B comparisons:

    .venv/bin/python bench/bench_api.py --database-url postgresql://postgres@127.0.0.1:5432/<kept> \
        --variant new=. --variant base=../perf-base --variant new-as-api=.@iot_api
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.report import cpu_model  # noqa: E402
from domain.metrics import sync_metrics  # noqa: E402
from models.db import create_database, drop_database, migrate  # noqa: E402

ADMIN_URLS = {
    "postgres": os.environ.get(
        "IOT_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    ),
    "timescaledb": os.environ.get(
        "IOT_TEST_TIMESCALE_ADMIN_URL", "postgresql://postgres@127.0.0.1:5433/postgres"
    ),
}
ADMIN_URL = ADMIN_URLS["postgres"]  # --backend changes it
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
KIND_METRIC = {"climate": "co2_ppm", "bin": "fill_pct", "parking": "occupied"}
# Hourly rollup rows of one sensor are spread over the table (written hour by hour for
# all sensors); with avg/min/max/count in the index a year of one sensor is an
# index-only scan of ~40 pages instead of ~5,000 heap pages.
SECTION_START = "<!-- bench_api:start -->"
SECTION_END = "<!-- bench_api:end -->"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _database_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def _timescaledb(conn: psycopg.Connection) -> bool:
    backend = conn.execute("SELECT value FROM system_info WHERE key = 'backend'").fetchone()
    return backend == ("timescaledb",)


def _copy_header() -> bytes:
    return b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")


ROW_DTYPE = np.dtype(
    [
        ("fields", ">i2"),
        ("time_len", ">i4"), ("time_us", ">i8"),
        ("sensor_len", ">i4"), ("sensor_id", ">i8"),
        ("metric_len", ">i4"), ("metric_id", ">i2"),
        ("value_len", ">i4"), ("value", ">f8"),
    ]
)  # fmt: skip


def binary_rows(time_us: np.ndarray, sensor_id: np.ndarray, metric_id: np.ndarray,
                value: np.ndarray) -> bytes:  # fmt: skip
    """Rows in PostgreSQL's binary COPY layout (no header/trailer), built without loops."""
    rows = np.empty(len(time_us), dtype=ROW_DTYPE)
    rows["fields"] = 4
    rows["time_len"], rows["time_us"] = 8, time_us
    rows["sensor_len"], rows["sensor_id"] = 8, sensor_id
    rows["metric_len"], rows["metric_id"] = 2, metric_id
    rows["value_len"], rows["value"] = 8, value
    return rows.tobytes()


def load(url: str, sensors: int, per_sensor: int, municipalities: int, end: datetime) -> dict:
    """Create the fleet and its readings; returns what the measurements need."""
    rng = np.random.default_rng(8)
    start = end - timedelta(days=365)
    step_us = int(365 * 86400 * 1e6 // per_sensor)
    timings: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        metric_id = sync_metrics(conn)
        conn.execute(
            "INSERT INTO municipalities (slug, name) SELECT 'kommune-' || i, 'Kommune ' || i "
            "FROM generate_series(1, %s) i",
            (municipalities,),
        )
        kinds = np.array(["climate", "bin", "parking"])[np.arange(sensors) % 3]
        lat = rng.uniform(54.8, 57.6, sensors)
        lon = rng.uniform(8.2, 12.6, sensors)
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY sensors (municipality_id, external_id, kind, lat, lon, is_public, status, "
                "bin_depth_mm) FROM STDIN"
            ) as copy,
        ):
            for i in range(sensors):
                kind = str(kinds[i])
                copy.write_row((i % municipalities + 1, f"s{i}", kind, float(lat[i]),
                                float(lon[i]), True, "active",
                                1200.0 if kind == "bin" else None))  # fmt: skip
            # Private sensors with latest values: they must never show up in the answers.
            for i in range(100):
                copy.write_row((1, f"private{i}", "climate", 56.0, 10.0, False, "active", None))
        sensor_ids = np.arange(1, sensors + 1, dtype=np.int64)
        metric_ids = np.array([metric_id[KIND_METRIC[str(k)]] for k in kinds], dtype=np.int16)
        conn.execute("SELECT iot_ensure_partitions(%s, %s)", (start.date(), end.date()))

        t0 = time.perf_counter()
        offsets_us = np.arange(per_sensor, dtype=np.int64) * step_us
        start_us = int((start - PG_EPOCH).total_seconds() * 1e6)
        steps = max(1, 2_000_000 // sensors)  # time steps per COPY statement (~2M rows)
        for first in range(0, per_sensor, steps):
            step_times = start_us + offsets_us[first : first + steps]
            n = len(step_times)
            # time-major order, like live ingest: every sensor's reading at t, then t + step
            times = np.repeat(step_times, sensors)
            values = rng.normal(700, 150, n * sensors).clip(0, 5000)
            data = binary_rows(times, np.tile(sensor_ids, n), np.tile(metric_ids, n), values)
            with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY readings (time, sensor_id, metric_id, value) FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.write(_copy_header())
                copy.write(data)
                copy.write((-1).to_bytes(2, "big", signed=True))
            done = (first + n) * sensors
            if (first // steps) % 5 == 4 or first + n >= per_sensor:
                rate = done / (time.perf_counter() - t0)
                print(f"  loaded {done:,} readings ({rate:,.0f}/s)", flush=True)
        timings["load_s"] = time.perf_counter() - t0

        conn.execute(
            "INSERT INTO latest_readings (sensor_id, metric_id, time, value) "
            "SELECT DISTINCT ON (sensor_id, metric_id) sensor_id, metric_id, time, value "
            "FROM readings WHERE time >= %s ORDER BY sensor_id, metric_id, time DESC",
            # every sensor's newest reading, also with few readings per sensor (long steps)
            (end - max(timedelta(days=2), timedelta(microseconds=2 * step_us)),),
        )
        conn.execute(
            "INSERT INTO latest_readings (sensor_id, metric_id, time, value) "
            "SELECT id, %s, %s, 500 FROM sensors WHERE NOT is_public",
            (metric_id["co2_ppm"], end),
        )
        t0 = time.perf_counter()
        if _timescaledb(conn):
            refresh_aggregates(conn, start, end)
        else:
            fill_rollups(conn, start, end)
        timings["rollups_s"] = time.perf_counter() - t0
        if _timescaledb(conn):
            timings.update(compress(conn, facts_rows=sensors * per_sensor))
        conn.execute("VACUUM ANALYZE")
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        timings["db_size"] = size.fetchone()[0]
    return timings


def fill_rollups(conn: psycopg.Connection, start: datetime, end: datetime) -> None:
    """Fill the rollups set-based, one day at a time, as one backfill.

    iot_refresh_rollups() (the maintenance job) recomputes hour by hour, scanning each
    hour's day partition: right for a trickle of new hours, far too slow for a year of
    dirty hours at once. The rows it would write are the same as these. The primary keys
    are dropped during the backfill and rebuilt once (random inserts into a 50M-entry
    btree larger than shared_buffers would take most of an hour).
    """
    conn.execute("TRUNCATE rollup_dirty_hours")
    conn.execute("SET maintenance_work_mem = '512MB'")
    for table in ("readings_hourly", "readings_daily"):
        conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS pk_{table}")
    day = datetime(start.year, start.month, start.day, tzinfo=UTC)
    while day < end:
        conn.execute(
            "INSERT INTO readings_hourly (bucket, sensor_id, metric_id, count, sum, avg, min, max) "
            "SELECT date_trunc('hour', time, 'UTC'), sensor_id, metric_id, count(*), sum(value), "
            "avg(value), min(value), max(value) FROM readings "
            "WHERE time >= %(day)s AND time < %(day)s + interval '1 day' GROUP BY 1, 2, 3",
            {"day": day},
        )
        conn.execute(
            "INSERT INTO readings_daily (bucket, sensor_id, metric_id, count, sum, avg, min, max) "
            "SELECT %(day)s, sensor_id, metric_id, count(*), sum(value), avg(value), "
            "min(value), max(value) FROM readings "
            "WHERE time >= %(day)s AND time < %(day)s + interval '1 day' GROUP BY 2, 3",
            {"day": day},
        )
        day += timedelta(days=1)
    for table in ("readings_hourly", "readings_daily"):
        conn.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} "
            "PRIMARY KEY (sensor_id, metric_id, bucket)"
        )
    conn.execute("RESET maintenance_work_mem")


def refresh_aggregates(conn: psycopg.Connection, start: datetime, end: datetime) -> None:
    """Materialise the continuous aggregates over the loaded year, 30 days per call (what
    the refresh policies and the maintenance job do for new data, as one backfill)."""
    for view, stop in (("readings_hourly", end), ("readings_daily", end - timedelta(days=1))):
        window = datetime(start.year, start.month, start.day, tzinfo=UTC)
        while window < stop:
            upper = min(window + timedelta(days=30), stop)
            conn.execute("CALL refresh_continuous_aggregate(%s, %s, %s)", (view, window, upper))
            window = upper
        print(f"  refreshed {view}", flush=True)


def compress(conn: psycopg.Connection, facts_rows: int) -> dict:
    """Compress the chunks the compression policy would (older than 7 days): bytes per
    reading of the hypertable before and after, and the time it took."""
    before = conn.execute("SELECT hypertable_size('readings')").fetchone()[0]
    t0 = time.perf_counter()
    chunks = conn.execute(
        "SELECT count(compress_chunk(c, if_not_compressed => true)) "
        "FROM show_chunks('readings', older_than => interval '7 days') c"
    ).fetchone()[0]
    seconds = time.perf_counter() - t0
    after = conn.execute("SELECT hypertable_size('readings')").fetchone()[0]
    uncompressed_rows = conn.execute(
        "SELECT count(*) FROM readings WHERE time >= now() - interval '8 days'"
    ).fetchone()[0]
    print(f"  compressed {chunks} chunks in {seconds:.0f} s", flush=True)
    return {
        "bytes_per_reading_uncompressed": before / facts_rows,
        "bytes_per_reading_after": after / facts_rows,
        "compress_s": seconds,
        "chunks_compressed": chunks,
        "rows_left_uncompressed": uncompressed_rows,
    }


def late_batch_cost(url: str, facts: dict, rows: int = 10_000) -> dict:
    """Cost of one ingest batch of late readings (a month old; on TimescaleDB inside
    compressed chunks), half of them repeats of stored readings, through the ingest writer,
    and of the maintenance pass that brings them into the rollups."""
    from cli.db import maintain_once
    from ingest.writer import BatchWriter

    with psycopg.connect(url, autocommit=True) as conn:
        metric = conn.execute("SELECT id FROM metrics WHERE name = 'co2_ppm'").fetchone()[0]
        since = facts["end"] - timedelta(days=32)
        stored = conn.execute(
            "SELECT time, sensor_id, metric_id, value FROM readings "
            "WHERE sensor_id = ANY(%s) AND metric_id = %s AND time >= %s "
            "AND time < %s + interval '2 days' ORDER BY time LIMIT %s",
            (facts["climate_ids"], metric, since, since, rows // 2),
        ).fetchall()
        fresh = [(t + timedelta(minutes=1), s, m, v + 1) for t, s, m, v in stored]
        batch = [row for pair in zip(stored, fresh, strict=True) for row in pair]
        writer = BatchWriter()
        t0 = time.perf_counter()
        result = writer.write(conn, batch, [])
        write_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        done = maintain_once(conn, days_ahead=7, retention_days=0)
        maintain_s = time.perf_counter() - t0
    assert (result.inserted, result.duplicates) == (len(fresh), len(stored)), result
    return {
        "rows": len(batch),
        "write_s": write_s,
        "us_per_row": write_s / len(batch) * 1e6,
        "maintenance_s": maintain_s,
        "hours_refreshed": done["hours_refreshed"],
    }


def fleet_facts(url: str) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        readings = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        end = conn.execute("SELECT max(time) FROM latest_readings").fetchone()[0]
        climate = [r[0] for r in conn.execute(
            "SELECT id FROM sensors WHERE kind = 'climate' AND is_public ORDER BY id"
        ).fetchall()]  # fmt: skip
        public = conn.execute(
            "SELECT count(*) FROM sensors WHERE is_public AND status = 'active'"
        ).fetchone()[0]
    return {"readings": readings, "end": end, "climate_ids": climate, "public": public}


def start_api(url: str, port: int, log_path: Path, repo: Path = REPO) -> subprocess.Popen:
    """``python -m cli api`` of the checkout `repo` (its own code: ``-m`` puts the working
    directory first on sys.path) against `url`, once /health answers."""
    env = {**os.environ, "IOT_DATABASE_URL": url, "IOT_LOG_LEVEL": "WARNING",
           "IOT_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}  # fmt: skip
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "api", "--port", str(port)],
        cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 120  # start-up takes tens of seconds on a loaded machine
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"API did not become healthy; see {log_path}")


def percentiles(samples_s: list[float]) -> dict:
    ms = np.array(samples_s) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "max_ms": round(float(ms.max()), 1),
        "n": len(ms),
    }


def measure(base: str, facts: dict, repeat: int, export_repeat: int) -> dict:
    results: dict = {}
    end: datetime = facts["end"]
    # Identity encoding: measure the API, not the compressor (gzip is measured separately).
    identity = {"Accept-Encoding": "identity"}
    with httpx.Client(base_url=base, timeout=120, headers=identity) as client:
        # 1. latest values of 10,000 sensors in one request
        samples = []
        for i in range(repeat + 3):
            t0 = time.perf_counter()
            response = client.get("/api/v1/latest", params={"limit": 10000})
            elapsed = time.perf_counter() - t0
            response.raise_for_status()
            if i >= 3:
                samples.append(elapsed)
        items = response.json()["items"]
        assert len(items) == min(10000, facts["public"]), len(items)
        assert all(item["values"] for item in items)
        results["latest_10k"] = {**percentiles(samples), "bytes": len(response.content)}

        # 2. hourly averages of one sensor over a year (a different sensor each request)
        samples = []
        climate = facts["climate_ids"]
        year = {"from": (end - timedelta(days=365)).isoformat(), "to": end.isoformat()}
        for i in range(repeat + 3):
            sensor_id = climate[(i * 7919) % len(climate)]
            t0 = time.perf_counter()
            response = client.get("/api/v1/readings", params={
                "sensor_id": sensor_id, "metric": "co2_ppm", "bucket": "hour", "agg": "avg",
                "limit": 10000, **year})  # fmt: skip
            elapsed = time.perf_counter() - t0
            response.raise_for_status()
            if i >= 3:
                samples.append(elapsed)
        rows = len(response.json()["items"])
        results["hourly_year_one_sensor"] = {**percentiles(samples), "rows": rows}

        # 3. a month's export of one municipality
        month = {"from": (end - timedelta(days=30)).isoformat(), "to": end.isoformat()}
        for fmt in ("csv", "jsonl", "geojson"):
            runs = []
            for _ in range(export_repeat if fmt == "csv" else 1):
                runs.append(_export(client, fmt, month))
            best = max(runs, key=lambda r: r["rows_per_s"])
            results[f"export_month_{fmt}"] = {
                **best, "median_rows_per_s": int(np.median([r["rows_per_s"] for r in runs])),
                "runs": len(runs)}  # fmt: skip
    with httpx.Client(base_url=base, timeout=120, headers={"Accept-Encoding": "gzip"}) as client:
        results["export_month_csv_gzip"] = _export(client, "csv", month, decode=False)
    return results


def _export(client: httpx.Client, fmt: str, month: dict, decode: bool = True) -> dict:
    lines = 0
    size = 0
    t0 = time.perf_counter()
    with client.stream("GET", f"/api/v1/export/kommune-1/readings.{fmt}", params=month) as r:
        r.raise_for_status()
        chunks = r.iter_bytes() if decode else r.iter_raw()
        for chunk in chunks:
            size += len(chunk)
            lines += chunk.count(b"\n")
        if not decode:
            lines = -1
    elapsed = time.perf_counter() - t0
    if not decode:  # compressed: count rows from an uncompressed run of the same size
        plain = client.get(f"/api/v1/export/kommune-1/readings.{fmt}", params=month,
                           headers={"Accept-Encoding": "identity"})  # fmt: skip
        lines = plain.content.count(b"\n")
    rows = lines - 1 if fmt == "csv" else lines
    return {"rows": rows, "seconds": round(elapsed, 2), "rows_per_s": int(rows / elapsed),
            "mib": round(size / 2**20, 1)}  # fmt: skip


def parse_variant(text: str) -> tuple[str, Path, str]:
    """``label=checkout[@role]`` (role: a database role, default the URL's own user)."""
    label, _, rest = text.partition("=")
    checkout, _, role = rest.partition("@")
    if not label or not checkout:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: expected label=checkout[@role]")
    return label, Path(checkout).resolve(), role


def compare(
    url: str,
    facts: dict,
    variants: list[tuple[str, Path, str]],
    repeat: int,
    export_repeat: int,
    cpu: bool = False,
) -> dict:
    """The same requests to one API per variant, interleaved request by request (the order
    rotating) against the same database, so that every variant meets the same load."""
    from models.db_roles import enable_logins, role_url

    if any(role for _, _, role in variants):
        with psycopg.connect(url, autocommit=True) as conn:
            enable_logins(conn, {})
    procs: list[subprocess.Popen] = []
    clients: dict[str, httpx.Client] = {}
    try:
        for label, checkout, role in variants:
            port = _free_port()
            api_url = role_url(url, role) if role else url
            procs.append(start_api(api_url, port, Path("/tmp") / f"bench_api_{port}.log", checkout))
            clients[label] = httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                timeout=120,
                headers={"Accept-Encoding": "identity"},
            )
        if cpu:
            pids = {label: proc.pid for label, proc in zip(clients, procs, strict=True)}
            return _compare_cpu(url, clients, pids, facts, repeat)
        return _compare_requests(clients, facts, repeat, export_repeat)
    finally:
        for client in clients.values():
            client.close()
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def _compare_requests(
    clients: dict[str, httpx.Client], facts: dict, repeat: int, export_repeat: int
) -> dict:
    labels = list(clients)
    end: datetime = facts["end"]
    climate = facts["climate_ids"]
    year = {"from": (end - timedelta(days=365)).isoformat(), "to": end.isoformat()}
    month = {"from": (end - timedelta(days=30)).isoformat(), "to": end.isoformat()}
    samples: dict[str, dict[str, list[float]]] = {
        test: {label: [] for label in labels} for test in ("latest", "hourly", "csv", "jsonl")
    }

    def timed(label: str, path: str, params: dict) -> float:
        t0 = time.perf_counter()
        response = clients[label].get(path, params=params)
        elapsed = time.perf_counter() - t0
        response.raise_for_status()
        return elapsed

    for i in range(repeat + 3):
        order = labels[i % len(labels) :] + labels[: i % len(labels)]
        sensor_id = climate[(i * 7919) % len(climate)]
        hourly = {"sensor_id": sensor_id, "metric": "co2_ppm", "bucket": "hour", "agg": "avg",
                  "limit": 10000, **year}  # fmt: skip
        for label in order:
            latest_s = timed(label, "/api/v1/latest", {"limit": 10000})
            hourly_s = timed(label, "/api/v1/readings", hourly)
            if i >= 3:
                samples["latest"][label].append(latest_s)
                samples["hourly"][label].append(hourly_s)
    for i in range(export_repeat):
        order = labels[i % len(labels) :] + labels[: i % len(labels)]
        for label in order:
            for fmt in ("csv", "jsonl"):
                result = _export(clients[label], fmt, month)
                samples[fmt][label].append(result["rows"] / result["rows_per_s"])
    rows = {fmt: _export(clients[labels[0]], fmt, month)["rows"] for fmt in ("csv", "jsonl")}
    return {"samples": samples, "export_rows": rows}


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process `pid` has used, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _compare_cpu(
    url: str, clients: dict[str, httpx.Client], pids: dict[str, int], facts: dict, repeat: int
) -> dict:
    """CPU per request instead of latency: the API process's, its database backends' and
    this client's, which load on a shared machine stretches far less than wall time.

    Backends are the database's connections of every API (application_name); those of the
    variants not asked at the moment are idle. /proc counts in clock ticks (10 ms), so
    figures are sums over `repeat` requests divided by their number."""
    end: datetime = facts["end"]
    climate = facts["climate_ids"]
    year = {"from": (end - timedelta(days=365)).isoformat(), "to": end.isoformat()}
    tests = ("latest", "hourly")
    totals = {t: {label: [0.0, 0.0, 0.0, 0.0] for label in clients} for t in tests}
    with psycopg.connect(url, autocommit=True) as conn:

        def backend_cpu_s() -> float:
            pids = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'kommune-iot-api'"
            ).fetchall()
            total = 0.0
            for (pid,) in pids:
                with contextlib.suppress(FileNotFoundError):  # closed meanwhile
                    total += _cpu_s(pid)
            return total

        for i in range(repeat + 3):
            labels = list(clients)
            order = labels[i % len(labels) :] + labels[: i % len(labels)]
            sensor_id = climate[(i * 7919) % len(climate)]
            requests = {
                "latest": ("/api/v1/latest", {"limit": 10000}),
                "hourly": ("/api/v1/readings", {"sensor_id": sensor_id, "metric": "co2_ppm",
                           "bucket": "hour", "agg": "avg", "limit": 10000, **year}),
            }  # fmt: skip
            for label in order:
                for test, (path, params) in requests.items():
                    api0, db0, client0 = _cpu_s(pids[label]), backend_cpu_s(), time.process_time()
                    t0 = time.perf_counter()
                    clients[label].get(path, params=params).raise_for_status()
                    wall = time.perf_counter() - t0
                    client = time.process_time() - client0
                    api1, db1 = _cpu_s(pids[label]), backend_cpu_s()
                    if i >= 3:
                        for k, v in enumerate((api1 - api0, db1 - db0, client, wall)):
                            totals[test][label][k] += v
    return {"cpu": totals, "n": repeat}


def cpu_table(result: dict) -> str:
    """Markdown: mean CPU ms per request by process, and the total against the first."""
    totals, n = result["cpu"], result["n"]
    labels = list(totals["latest"])
    lines = [
        "| variant | latest: API / database / client CPU ms | total | × | "
        "hourly: API / database / client CPU ms | total | × |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label in labels:
        cells = [label]
        for test in ("latest", "hourly"):
            api, db, client, _ = (v / n * 1000 for v in totals[test][label])
            first = sum(totals[test][labels[0]][:3])
            cells += [f"{api:.1f} / {db:.1f} / {client:.1f}", f"{api + db + client:.1f}",
                      f"{sum(totals[test][label][:3]) / first:.2f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"n = {n} requests per variant and test, interleaved; × = total over the first's.")
    return "\n".join(lines)


def comparison_table(result: dict) -> str:
    """Markdown: each variant's figures, and the median over rounds of its ratio to the
    first variant in the same round (paired, so that load drifting between rounds cancels:
    above 1 is slower for latencies and faster for export rates)."""
    samples, rows = result["samples"], result["export_rows"]
    labels = list(samples["latest"])
    first = labels[0]
    lines = [
        "| variant | latest p50 / p95 ms | × | hourly p50 / p95 ms | × | CSV export rows/s "
        "(median) | × | JSONL rows/s (median) | × |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label in labels:
        cells = [label]
        for test in ("latest", "hourly"):
            ms = np.array(samples[test][label]) * 1000
            paired = np.array(samples[test][label]) / np.array(samples[test][first])
            p50, p95 = np.percentile(ms, 50), np.percentile(ms, 95)
            cells += [f"{p50:.1f} / {p95:.1f}", f"{np.median(paired):.2f}"]
        for fmt in ("csv", "jsonl"):
            rate = rows[fmt] / float(np.median(samples[fmt][label]))
            paired = np.array(samples[fmt][first]) / np.array(samples[fmt][label])
            cells += [f"{rate:,.0f}", f"{np.median(paired):.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    n = len(samples["latest"][first])
    lines.append("")
    lines.append(
        f"n = {n} requests per variant for latest and hourly, {len(samples['csv'][first])} "
        f"exports of {rows['csv']:,} rows per variant and format; × = median over rounds of "
        f"the variant's time (latencies) or rate (exports) over {first}'s in the same round."
    )
    return "\n".join(lines)


def machine() -> dict:
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    with psycopg.connect(ADMIN_URL) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]
        shared = conn.execute("SHOW shared_buffers").fetchone()[0]
        tsdb = conn.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb' "
            "AND current_setting('shared_preload_libraries') LIKE '%timescaledb%'"
        ).fetchone()
    storage = (
        f"TimescaleDB {tsdb[0]}, hypertable with 1-day chunks"
        if tsdb
        else "plain PostgreSQL, daily partitions"
    )
    from importlib.metadata import version

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "postgresql": f"{pg} (shared_buffers {shared}, {storage})",
        "versions": ", ".join(
            f"{d} {version(d)}" for d in ("fastapi", "uvicorn", "psycopg", "orjson", "httpx")
        ),
    }


def write_section(
    results: dict,
    timings: dict,
    facts: dict,
    command: str,
    backend: str = "postgres",
    api_role: str | None = None,
) -> str:
    m = machine()
    latest, hourly = results["latest_10k"], results["hourly_year_one_sensor"]
    ok = lambda good: "met" if good else "**missed**"  # noqa: E731
    start_marker, end_marker = SECTION_START, SECTION_END
    title = "## Open data API (bench/bench_api.py)"
    if backend == "timescaledb":
        # Not "bench_api_timescaledb": that section is the hand-written side-by-side table.
        start_marker = SECTION_START.replace("bench_api", "bench_api_timescaledb_run")
        end_marker = SECTION_END.replace("bench_api", "bench_api_timescaledb_run")
        title = "## Open data API on TimescaleDB (bench/bench_api.py --backend timescaledb)"
    lines = [
        start_marker,
        title,
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {m['cpu']}, {m['cores']} cores, "
        f"{m['ram_gib']} GiB RAM, shared with other work (load average "
        f"{os.getloadavg()[0]:.1f} at the end of the run); PostgreSQL {m['postgresql']}; "
        f"Python {m['python']}; {m['versions']}.",
        "",
        f"Data: {facts['readings']:,} readings of {facts['public']:,} public sensors "
        "(one metric each, a year at 105-minute steps, loaded time-major like live ingest) "
        "plus 100 private sensors; "
        f"database {timings.get('db_size', '?')}. "
        + (
            f"Load {timings['load_s']:.0f} s, rollup refresh {timings['rollups_s']:.0f} s. "
            if "load_s" in timings
            else ""
        )
        + (
            "Indexes as the migrations create them (0003: covering rollup indexes). "
            if backend == "postgres"
            else "Rollups from the continuous aggregates (materialised, real-time part "
            "after the watermark), chunks older than 7 days compressed. "
        )
        + "Requests over HTTP to uvicorn (one worker) with httpx, keep-alive, "
        "`Accept-Encoding: identity` unless noted; the API connects as "
        + (f"`{api_role}` (as in production)." if api_role else "the superuser."),
        "",
        "| Measurement | Result | Target |",
        "|---|---|---|",
        f"| Latest values of 10,000 sensors (`/api/v1/latest?limit=10000`, "
        f"{latest['bytes'] / 2**20:.1f} MiB) | p50 {latest['p50_ms']} ms, "
        f"p95 {latest['p95_ms']} ms (n={latest['n']}) | p95 < 50 ms: {ok(latest['p95_ms'] < 50)} |",
        f"| Hourly averages, one sensor, one year ({hourly['rows']} buckets from "
        f"`readings_hourly`) | p50 {hourly['p50_ms']} ms, p95 {hourly['p95_ms']} ms "
        f"(n={hourly['n']}) | p95 < 50 ms: {ok(hourly['p95_ms'] < 50)} |",
    ]
    for fmt in ("csv", "jsonl", "geojson"):
        e = results[f"export_month_{fmt}"]
        target = f"> 200,000 rows/s: {ok(e['rows_per_s'] > 200_000)}" if fmt == "csv" else ""
        lines.append(
            f"| Month export, one municipality, {fmt.upper()} ({e['rows']:,} rows, "
            f"{e['mib']} MiB) | {e['rows_per_s']:,} rows/s (best of {e['runs']}; median "
            f"{e['median_rows_per_s']:,}) | {target} |"
        )
    gz = results["export_month_csv_gzip"]
    lines += [
        f"| Same CSV export with `Accept-Encoding: gzip` ({gz['mib']} MiB on the wire) | "
        f"{gz['rows_per_s']:,} rows/s | |",
    ]
    if "bytes_per_reading_uncompressed" in timings:
        lines.append(
            f"| Bytes per stored reading (`hypertable_size` / readings) | "
            f"{timings['bytes_per_reading_uncompressed']:.1f} uncompressed, "
            f"{timings['bytes_per_reading_after']:.1f} with {timings['chunks_compressed']} "
            f"of the chunks compressed ({timings['compress_s']:.0f} s; "
            f"{timings['rows_left_uncompressed']:,} readings of the newest 8 days left "
            "uncompressed) | |"
        )
    if "late_batch" in results:
        late = results["late_batch"]
        where = "compressed chunks" if backend == "timescaledb" else "month-old partitions"
        lines.append(
            f"| A late batch into {where} ({late['rows']:,} readings a month old, half "
            f"repeats), through the ingest writer | {late['write_s'] * 1000:.0f} ms "
            f"({late['us_per_row']:.1f} µs per reading); the maintenance pass that brings "
            f"them into the rollups {late['maintenance_s']:.1f} s "
            f"({late['hours_refreshed']} hours) | |"
        )
    lines += [
        "",
        "Command:",
        "",
        "```",
        command,
        "```",
        end_marker,
    ]
    section = "\n".join(lines)
    path = REPO / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start_marker in text:
        before, rest = text.split(start_marker, 1)
        after = rest.split(end_marker, 1)[1] if end_marker in rest else ""
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
    return section


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sensors", type=int, default=10_000)
    parser.add_argument("--readings-per-sensor", type=int, default=5_000)
    parser.add_argument("--municipalities", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=100, help="requests per latency test")
    parser.add_argument("--export-repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--database-url", help="reuse a database loaded by an earlier --keep")
    parser.add_argument("--no-write", action="store_true", help="don't touch BENCHMARKS.md")
    parser.add_argument("--backend", choices=ADMIN_URLS, default="postgres")
    parser.add_argument(
        "--late-batch", action="store_true", help="also measure a batch of late readings"
    )
    parser.add_argument(
        "--api-role",
        metavar="ROLE",
        help="the API connects as this database role (iot_api in production: row-level "
        "security and the published-readings functions apply) instead of the URL's user",
    )
    parser.add_argument(
        "--variant",
        action="append",
        type=parse_variant,
        default=[],
        metavar="LABEL=CHECKOUT[@ROLE]",
        help="compare APIs instead: one per variant (a checkout of this repository, "
        "connecting as ROLE, e.g. iot_api), requests interleaved; prints a table, "
        "writes nothing",
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="with --variant: CPU per request (API process, database backends, client) "
        "instead of latency, for comparisons on a loaded machine (Linux /proc)",
    )
    args = parser.parse_args()
    global ADMIN_URL
    ADMIN_URL = ADMIN_URLS[args.backend]
    command = "cd /work/main && .venv/bin/python " + shlex.join(
        ["bench/bench_api.py", *sys.argv[1:]]
    )

    url = args.database_url
    timings: dict = {}
    created = url is None
    if created:
        url = _database_url(f"iot_bench_api_{uuid.uuid4().hex[:8]}")
        print(f"database {url}", flush=True)
        create_database(url)
    proc = None
    try:
        if not created:
            # A database kept by an earlier --keep: bring its schema to this checkout's
            # (the data stays; no reload, no rollup refresh).
            migrate(url)
        if created:
            migrate(url, timescaledb="on" if args.backend == "timescaledb" else "off")
            end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            timings = load(url, args.sensors, args.readings_per_sensor, args.municipalities, end)
            print(f"loaded: {timings}", flush=True)
        facts = fleet_facts(url)
        if args.variant:
            result = compare(
                url, facts, args.variant, args.repeat, args.export_repeat, cpu=args.cpu
            )
            print(cpu_table(result) if args.cpu else comparison_table(result), flush=True)
            return 0
        port = _free_port()
        api_url = url
        if args.api_role:
            from models.db_roles import enable_logins, role_url

            with psycopg.connect(url, autocommit=True) as conn:
                enable_logins(conn, {})
            api_url = role_url(url, args.api_role)
        proc = start_api(api_url, port, Path("/tmp") / f"bench_api_{port}.log")
        results = measure(f"http://127.0.0.1:{port}", facts, args.repeat, args.export_repeat)
        if args.late_batch:
            results["late_batch"] = late_batch_cost(url, facts)
        for name, value in results.items():
            print(f"{name}: {value}", flush=True)
        if not args.no_write:
            print(write_section(results, timings, facts, command, args.backend, args.api_role))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        if created and not args.keep:
            drop_database(url)
        elif created:
            print(f"kept {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
