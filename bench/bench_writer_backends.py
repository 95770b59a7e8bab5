"""The ingest writer alone on both storage backends, batch by batch, interleaved.

bench_ingest.py measures the whole pipeline (broker, MQTT thread, decoding, writer) on one
backend at a time, so on a shared machine two invocations meet different loads. This
script takes bench_ingest's ChirpStack workload (the rows ingest's own pipeline makes of
it), cuts it into batches of about --batch-rows on message boundaries, and writes each
batch with ``BatchWriter`` (latest values flushed every 5 s, as ingest does) into a fresh
plain-PostgreSQL database and a fresh TimescaleDB database in turn, the order alternating.
Per backend: the writer's Python CPU, the wall time and the CPU of the database backend
serving the writer (from /proc, so run it on the database's machine).

    .venv/bin/python bench/bench_writer_backends.py --messages 30000

``--key-cost`` writes into four databases instead: each backend with the primary key of
readings before migration 0023 (revision 0021, no ``value`` in it) and at head (``INCLUDE
(value)``), to measure what the covering key costs ingest.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_ingest import build_workload, seed_latest  # noqa: E402
from ingest.writer import BatchEncoder, BatchWriter  # noqa: E402
from models.db import create_database, drop_database, migrate  # noqa: E402

ADMIN_URLS = {
    "postgres": os.environ.get(
        "IOT_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    ),
    "timescaledb": os.environ.get(
        "IOT_TEST_TIMESCALE_ADMIN_URL", "postgresql://postgres@127.0.0.1:5433/postgres"
    ),
}
LATEST_FLUSH_INTERVAL_S = 5.0
# --key-cost: the key of readings before and after migration 0023.
KEY_REVISIONS = (("key without value (0021)", "0021"), ("key with value", "head"))


def backend_cpu_s(conn: psycopg.Connection) -> float:
    """CPU seconds (user + system) the server process of `conn` has used so far."""
    fields = Path(f"/proc/{conn.info.backend_pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_bounds(rows_per_message: list[int], batch_rows: int) -> list[tuple[int, int]]:
    """[start, end) row offsets of batches of at least `batch_rows` rows (the last may be
    smaller), never splitting a message."""
    bounds, start, end = [], 0, 0
    for count in rows_per_message:
        end += count
        if end - start >= batch_rows:
            bounds.append((start, end))
            start = end
    if end > start:
        bounds.append((start, end))
    return bounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--batch-rows", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--key-cost",
        action="store_true",
        help="compare the key of readings before (0021) and after (head) migration 0023",
    )
    args = parser.parse_args()
    # label -> (backend, alembic revision)
    targets = {backend: (backend, "head") for backend in ADMIN_URLS}
    if args.key_cost:
        targets = {
            f"{backend} {label}": (backend, revision)
            for backend in ADMIN_URLS
            for label, revision in (
                ("key without value (0021)", "0021"),
                ("key with value", "head"),
            )
        }
    workdir = Path("/tmp") / f"bench_writer_{uuid.uuid4().hex[:8]}"
    workdir.mkdir()
    urls: dict[str, str] = {}
    conns: dict[str, psycopg.Connection] = {}
    try:
        workloads = {}
        for target, (backend, revision) in targets.items():
            admin = ADMIN_URLS[backend]
            url = admin.rsplit("/", 1)[0] + f"/iot_bench_writer_{uuid.uuid4().hex[:8]}"
            create_database(url)
            urls[target] = url
            migrate(url, revision, timescaledb="on" if backend == "timescaledb" else "off")
            conns[target] = psycopg.connect(url, autocommit=True)
            workloads[target] = build_workload(
                conns[target], url, args.messages, workdir, args.seed
            )
        # Each database got the same fleet (same ids); both write the first workload's rows
        # (each build starts from its own "now", so their messages differ a little).
        first = next(iter(workloads.values()))
        registry = (
            "SELECT (SELECT array_agg(name ORDER BY id) FROM metrics)::text, max(id) FROM sensors"
        )
        assert len({tuple(conn.execute(registry).fetchone()) for conn in conns.values()}) == 1
        for conn in conns.values():
            seed_latest(conn, first)
        writers = {t: BatchWriter(LATEST_FLUSH_INTERVAL_S) for t in targets}
        measured: dict[str, dict[str, list[float]]] = {
            t: {"python": [], "wall": [], "server": []} for t in targets
        }
        order = list(targets)
        for i, (start, end) in enumerate(batch_bounds(first.rows_per_message, args.batch_rows)):
            for backend in order if i % 2 else order[::-1]:
                conn, writer = conns[backend], writers[backend]
                encoder = BatchEncoder()
                encoder.add(first.rows[start:end])
                server0 = backend_cpu_s(conn)
                cpu0, wall0 = time.process_time(), time.perf_counter()
                writer.write_encoded(conn, encoder, [])
                if writer.latest.due():
                    writer.flush_latest(conn)
                measured[backend]["python"].append(time.process_time() - cpu0)
                measured[backend]["wall"].append(time.perf_counter() - wall0)
                measured[backend]["server"].append(backend_cpu_s(conn) - server0)
        for backend, writer in writers.items():
            writer.flush_latest(conns[backend])
        rows = len(first.rows)
        print(
            f"{args.messages:,} messages, {rows:,} rows, "
            f"{len(measured[order[0]]['wall'])} batches per database, load average "
            f"{os.getloadavg()[0]:.1f}"
        )
        print("| backend | Python CPU µs/row | database CPU µs/row | wall µs/row | batches |")
        print("|---|---:|---:|---:|---|")
        for backend, m in measured.items():
            w = writers[backend]
            print(
                f"| {backend} | {sum(m['python']) / rows * 1e6:.2f} | "
                f"{sum(m['server']) / rows * 1e6:.2f} | {sum(m['wall']) / rows * 1e6:.2f} | "
                f"{w.direct_writes} direct, {w.staging_writes} staging; median wall "
                f"{statistics.median(m['wall']) * 1000:.1f} ms |"
            )
    finally:
        for conn in conns.values():
            conn.close()
        for url in urls.values():
            drop_database(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
