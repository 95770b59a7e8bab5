"""Speed of `tenant export` (readings per second) against the database's own raw read.

Loads a throwaway plain-PostgreSQL database (one municipality, sensors with CO2 and
temperature every 5 minutes, stored time-major as ingest stores them: each 5 minutes'
readings of every sensor together), then alternates, `--rounds` times: the tenant export
of the municipality to a temporary archive; with `--against REV`, the export with
tenancy/parquet_tables.py as it was at git revision REV (same run, same data); and a
baseline in which the server reads the same rows, time slice by time slice as the export
does, and writes them to /dev/null (no client at all). Export / raw read says what
everything beyond the server's sequential read costs; the rate is the issue's target
(≥ 500,000 readings/s). CPU seconds are the export process's and its server backend's
(from /proc; the server must be on this machine), which load from other jobs inflates
less than wall time.

    .venv/bin/python bench/bench_tenant_export.py --sensors 200 --days 30 --against 492fc04
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import ModuleType

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.report import cpu_model, write_section  # noqa: E402
from domain.metrics import sync_metrics  # noqa: E402
from models.db import create_database, drop_database, migrate  # noqa: E402
from models.partitions import create_partitions  # noqa: E402
from tenancy import export as tenancy_export  # noqa: E402
from tenancy.reading_spill import time_slices  # noqa: E402

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
        for day in range(days):  # a day at a time: the sort stays in memory
            conn.execute(
                "INSERT INTO readings (time, sensor_id, metric_id, value) "
                "SELECT t, s, m, 400 + random() * 800 FROM generate_series(1, %s) s, "
                "unnest(%s::smallint[]) m, generate_series(%s::timestamptz, "
                "%s::timestamptz - interval '1 s', interval '5 minutes') t ORDER BY t, s, m",
                (
                    sensors,
                    [metrics["co2_ppm"], metrics["temperature_c"]],
                    start + timedelta(days=day),
                    start + timedelta(days=day + 1),
                ),
            )
        conn.execute("VACUUM ANALYZE readings")
        return conn.execute("SELECT count(*) FROM readings").fetchone()[0]


def raw_read(url: str) -> None:
    """The server reads the municipality's rows slice by slice and discards them."""
    # COPY takes no server-side parameters: a client-side cursor binds them.
    with psycopg.connect(url, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        sensors = [r[0] for r in conn.execute("SELECT id FROM sensors ORDER BY id")]
        for low, high in time_slices(conn):
            conn.execute(
                "COPY (SELECT time, sensor_id, metric_id, value FROM readings "
                "WHERE time >= %s AND time < %s AND sensor_id = ANY(%s::bigint[])) "
                "TO '/dev/null' (FORMAT BINARY)",
                (low, high, sensors),
            )


def module_at(revision: str) -> ModuleType:
    """tenancy/parquet_tables.py as it was at git `revision`, loaded on its own."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{revision}:tenancy/parquet_tables.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "parquet_tables_then.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("parquet_tables_then", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` so far (None if not on this machine)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_export(url: str, out: Path, readings: Callable) -> tuple[float, float | None, int]:
    """(wall seconds, client + server CPU seconds, archive bytes) of one export with
    `readings` as the readings writer."""
    tenancy_export.export_readings = readings
    with psycopg.connect(url, autocommit=True) as conn:
        backend = conn.info.backend_pid
        server_before, client_before = cpu_seconds(backend), time.process_time()
        t0 = time.perf_counter()
        result = tenancy_export.export_municipality(conn, "bench", out)
        wall = time.perf_counter() - t0
        server_after = cpu_seconds(backend)
    client = time.process_time() - client_before
    cpu = None
    if server_before is not None and server_after is not None:
        cpu = client + server_after - server_before
    return wall, cpu, result.path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sensors", type=int, default=200)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", metavar="REV", help="also time the export as of git REV")
    parser.add_argument("--no-write", action="store_true", help="print, do not edit BENCHMARKS.md")
    args = parser.parse_args()
    writers: dict[str, Callable] = {"export": tenancy_export.export_readings}
    if args.against:
        then = module_at(args.against)
        writers[args.against] = lambda conn, sink, sensors, names, *_: then.export_readings(
            conn, sink, sensors, names
        )
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/iot_bench_tenant_{os.getpid()}"
    create_database(url)
    walls: dict[str, list[float]] = {name: [] for name in [*writers, "raw"]}
    cpus: dict[str, list[float]] = {name: [] for name in writers}
    try:
        migrate(url, timescaledb="off")
        readings = load(url, args.sensors, args.days)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        with tempfile.TemporaryDirectory() as scratch:
            for round_ in range(args.rounds):
                names = list(writers)
                for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                    writer = writers[name]
                    wall, cpu, size = timed_export(url, Path(scratch) / f"{name}.zip", writer)
                    walls[name].append(wall)
                    if cpu is not None:
                        cpus[name].append(cpu)
                t0 = time.perf_counter()
                raw_read(url)
                walls["raw"].append(time.perf_counter() - t0)
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        drop_database(url)
    export_s, raw_s = statistics.median(walls["export"]), statistics.median(walls["raw"])
    load_avg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    command = "python bench/bench_tenant_export.py " + shlex.join(sys.argv[1:])
    rows = [
        (
            "readings exported",
            f"{readings:,} ({args.sensors} sensors × 2 metrics × "
            f"{args.days} days, 5 min, stored time-major)",
            "",
        ),
        ("archive size", f"{size / 1e6:.1f} MB ({size / readings:.2f} bytes per reading)", ""),
        (
            f"tenant export, median of {args.rounds}",
            f"{export_s:.2f} s = **{readings / export_s:,.0f} readings/s**",
            "≥ 500,000 readings/s",
        ),
    ]
    if cpus["export"]:
        cpu = statistics.median(cpus["export"])
        rows.append(
            (
                "export CPU, client + server backend, median",
                f"{cpu:.2f} s = {readings / cpu:,.0f} readings per CPU-second",
                "",
            )
        )
    if args.against:
        then_s = statistics.median(walls[args.against])
        ratios = [w / e for w, e in zip(walls[args.against], walls["export"], strict=True)]
        rows.append(
            (
                f"export as of {args.against}, median",
                f"{then_s:.2f} s = {readings / then_s:,.0f} readings/s",
                "",
            )
        )
        rows.append(
            (
                f"{args.against} / export (time), median of per-round ratios",
                f"{statistics.median(ratios):.2f}",
                "",
            )
        )
        if cpus[args.against]:
            rows.append(
                (
                    f"{args.against} CPU, client + server backend, median",
                    f"{statistics.median(cpus[args.against]):.2f} s",
                    "",
                )
            )
    rows += [
        (
            "raw read: the server reads the same rows slice by slice to /dev/null, median",
            f"{raw_s:.2f} s = {readings / raw_s:,.0f} readings/s",
            "",
        ),
        ("export / raw read (time)", f"{export_s / raw_s:.2f}", ""),
        (
            "peak RSS of the process before / after the exports",
            f"{rss_before:.0f} / {rss_after:.0f} MB",
            "flat as data grows",
        ),
    ]
    table = "\n".join(f"| {what} | {figure} | {target} |" for what, figure, target in rows)
    report = f"""{HEADING}

Machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, plain
PostgreSQL on the same machine; load average {load_avg} at the end (the machine is shared
with other engineers' jobs: wall times are inflated, ratios were measured interleaved in
one run, the variants' order rotating). Command: `{command}` on {datetime.now(UTC):%Y-%m-%d}.

| what | figure | target |
|---|---|---|
{table}
"""
    print(report)
    if not args.no_write:
        write_section(HEADING, report)


if __name__ == "__main__":
    main()
