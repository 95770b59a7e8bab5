"""Speed of `tenant export` (readings per second) against the database's own raw read.

Loads a throwaway plain-PostgreSQL database (one municipality, sensors with CO2 and
temperature every 5 minutes), then alternates, `--rounds` times: the tenant export of the
municipality to a temporary archive, and a baseline that only reads the same readings
with binary COPY (one sensor at a time, as the export does) and discards them. The
ratio export/baseline says what the archive (parsing, Parquet, ZIP, hashing) costs on
top of reading; the rate is the issue's target (≥ 500,000 readings/s).

    .venv/bin/python bench/bench_tenant_export.py --sensors 200 --days 30   # ~3.5M readings
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.report import cpu_model, write_section  # noqa: E402
from domain.metrics import sync_metrics  # noqa: E402
from models.db import create_database, drop_database, migrate  # noqa: E402
from models.partitions import create_partitions  # noqa: E402
from tenancy.export import export_municipality  # noqa: E402

ADMIN_URL = os.environ.get("IOT_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
HEADING = "## Tenant export (bench/bench_tenant_export.py)"


def load(url: str, sensors: int, days: int) -> int:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        metrics = sync_metrics(conn)
        conn.execute("INSERT INTO municipalities (slug, name) VALUES ('bench', 'Bench Kommune')")
        conn.execute(
            "INSERT INTO sensors (municipality_id, external_id, kind) "
            "SELECT 1, 's' || g, 'climate' FROM generate_series(1, %s) g",
            (sensors,),
        )
        create_partitions(conn, [date(2026, 1, 1) + timedelta(days=d) for d in range(days)])
        for metric in ("co2_ppm", "temperature_c"):
            conn.execute(
                "INSERT INTO readings (time, sensor_id, metric_id, value) "
                "SELECT t, s, %s, 400 + random() * 800 FROM generate_series(1, %s) s, "
                "generate_series(%s::timestamptz, %s::timestamptz - interval '1 s', "
                "interval '5 minutes') t",
                (metrics[metric], sensors, start, start + timedelta(days=days)),
            )
        conn.execute("VACUUM ANALYZE readings")
        return conn.execute("SELECT count(*) FROM readings").fetchone()[0]


def raw_read(url: str, sensors: int) -> None:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        for sensor in range(1, sensors + 1):
            with cur.copy(
                "COPY (SELECT time, sensor_id, metric_id, value FROM readings "
                "WHERE sensor_id = %s ORDER BY metric_id, time) TO STDOUT (FORMAT BINARY)",
                (sensor,),
            ) as copy:
                for _ in copy:
                    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sensors", type=int, default=200)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print, do not edit BENCHMARKS.md")
    args = parser.parse_args()
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/iot_bench_tenant_{os.getpid()}"
    create_database(url)
    try:
        migrate(url, timescaledb="off")
        readings = load(url, args.sensors, args.days)
        exports, raws, size = [], [], 0
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        with tempfile.TemporaryDirectory() as scratch:
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                with psycopg.connect(url, autocommit=True) as conn:
                    result = export_municipality(conn, "bench", Path(scratch) / "bench.zip")
                exports.append(time.perf_counter() - t0)
                size = result.path.stat().st_size
                t0 = time.perf_counter()
                raw_read(url, args.sensors)
                raws.append(time.perf_counter() - t0)
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        drop_database(url)
    export_s, raw_s = statistics.median(exports), statistics.median(raws)
    export_rate, raw_rate = readings / export_s, readings / raw_s
    load_avg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    command = "python bench/bench_tenant_export.py " + shlex.join(sys.argv[1:])
    report = f"""{HEADING}

Machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, plain
PostgreSQL; **shared with six other engineers' jobs** (load average {load_avg} at the end),
so the absolute rates are low bounds; the ratio was measured interleaved in one run.
Command: `{command}` on {datetime.now(UTC):%Y-%m-%d}.

| what | figure |
|---|---|
| readings exported | {readings:,} ({args.sensors} sensors × 2 metrics × {args.days} days, 5 min) |
| archive size | {size / 1e6:.1f} MB ({size / readings:.2f} bytes per reading) |
| tenant export, median of {args.rounds} | {export_s:.2f} s = **{export_rate:,.0f} readings/s** \
(target ≥ 500,000) |
| raw binary COPY read of the same rows, median | {raw_s:.2f} s = {raw_rate:,.0f} readings/s |
| export / raw read (time) | {export_s / raw_s:.2f} |
| peak RSS of the process before / after the exports | {rss_before:.0f} / {rss_after:.0f} MB |
"""
    print(report)
    if not args.no_write:
        write_section(HEADING, report)


if __name__ == "__main__":
    main()
