"""Outbound deliveries: alert notices to a webhook, and a data target keeping up with ingest.

    .venv/bin/python bench/bench_outbound.py [--alerts 10000] [--rate 5000] [--seconds 20]
        [--concurrency 4]

A throwaway database on the local PostgreSQL (migrated to head), and a webhook receiver in
a process of its own (bench/outbound_receiver.py, answering 204) so it does not share
this process's interpreter lock with the worker.

1. **Alert notices**: `--alerts` alerts open in one evaluation (sync_alerts, one
   transaction, which writes their notices to the outbox); then a DeliveryWorker with
   `--concurrency` threads delivers them all to the receiver. Reported: time to write the
   transitions with their notices, delivery throughput, and latency p50/p95 from the
   notice being written (`created_at`) to the worker recording it delivered.
2. **Data target at ingest rate**: ingest's BatchWriter writes `--rate` readings/s in
   batches of `--rate / 2` every 0.5 s (ingest's default batch delay) for `--seconds`,
   with one enabled HTTP target taking every reading; the worker runs at the same time.
   Reported: readings forwarded per second, whether the outbox kept up (backlog at the
   end), and delivery latency p50/p95 from the batch commit to the receiver's acceptance
   being recorded. Also the cost the target adds to each batch commit: batches with the
   target switched on and off are interleaved and their commit times compared (ratio).

Prints a Markdown section; `--write` puts it at the end of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytics.alerts import ActiveCondition, sync_alerts
from bench.report import cpu_model, write_section
from ingest.writer import BatchWriter
from models.settings import Settings
from outbound.worker import DeliveryWorker
from tests.conftest import migrated_database

SECTION = "## Outbound deliveries (bench/bench_outbound.py)"


def start_receiver() -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("outbound_receiver.py"))],
        stdout=subprocess.PIPE,
        text=True,
    )
    port = int(process.stdout.readline().strip())
    return process, f"http://127.0.0.1:{port}/"


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def setup(conn: psycopg.Connection, url: str) -> tuple[int, list[int]]:
    m = conn.execute(
        "INSERT INTO municipalities (slug, name) VALUES ('bench', 'Bench') RETURNING id"
    ).fetchone()[0]
    sensors = [
        conn.execute(
            "INSERT INTO sensors (municipality_id, external_id, kind, lat, lon) "
            "VALUES (%s, %s, 'climate', 56.1, 10.2) RETURNING id",
            (m, f"room-{i}"),
        ).fetchone()[0]
        for i in range(200)
    ]
    channel = conn.execute(
        "INSERT INTO notification_channels (municipality_id, name, kind, url, secret) "
        "VALUES (%s, 'hook', 'webhook', %s, 'bench-secret') RETURNING id",
        (m, url),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO notification_rules (municipality_id, channel_id, min_severity) "
        "VALUES (%s, %s, 'info')",
        (m, channel),
    )
    return m, sensors


def bench_alerts(conn, database_url: str, m: int, sensors: list[int], n: int, threads: int):
    now = datetime.now(UTC)
    conditions = [
        ActiveCondition(
            rule="climate.co2_limit",
            subject=f"bench:{i}",
            sensor_id=sensors[i % len(sensors)],
            started_at=now - timedelta(minutes=30),
            last_value=1200.0,
            message="CO2 at or above 1000 ppm",
        )
        for i in range(n)
    ]
    started = time.perf_counter()
    sync_alerts(conn, m, ["climate.co2_limit"], conditions, now)
    write_s = time.perf_counter() - started
    settings = Settings(database_url=database_url, deliver_concurrency=threads,
                        deliver_poll_interval_s=0.05)  # fmt: skip
    started = time.perf_counter()
    totals = DeliveryWorker(settings).run(until_idle=True)
    deliver_s = time.perf_counter() - started
    latencies = [
        r[0]
        for r in conn.execute(
            "SELECT extract(epoch FROM delivered_at - created_at) FROM deliveries "
            "WHERE channel_id IS NOT NULL AND status = 'delivered'"
        )
    ]
    assert totals.delivered == n == len(latencies), (totals, n, len(latencies))
    return {
        "n": n,
        "write_s": write_s,
        "deliver_s": deliver_s,
        "rate": n / deliver_s,
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
    }


def bench_target(conn, database_url: str, m: int, sensors: list[int], url: str, rate: int,
                 seconds: float, threads: int):  # fmt: skip
    target = conn.execute(
        "INSERT INTO data_targets (municipality_id, name, kind, url, enabled, secret) "
        "VALUES (%s, 'bi', 'http', %s, true, 'k') RETURNING id",
        (m, url),
    ).fetchone()[0]
    metric = conn.execute("SELECT id FROM metrics WHERE name = 'co2_ppm'").fetchone()[0]
    writer = BatchWriter()
    writer.outbox.recheck_s = 0.0  # see each switch at once
    settings = Settings(database_url=database_url, deliver_concurrency=threads,
                        deliver_poll_interval_s=0.02)  # fmt: skip
    worker = DeliveryWorker(settings)
    runner = threading.Thread(target=worker.run)
    runner.start()
    per_batch = rate // 2
    commit_on, commit_off = [], []
    sent = 0
    started = time.monotonic()
    batch_no = 0
    t0 = datetime.now(UTC) - timedelta(hours=1)
    try:
        while time.monotonic() - started < seconds:
            tick = time.monotonic()
            base = t0 + timedelta(seconds=batch_no)
            rows = [
                (
                    base + timedelta(microseconds=i // len(sensors)),
                    sensors[i % len(sensors)],
                    metric,
                    400.0 + i % 900,
                )
                for i in range(per_batch)
            ]
            # Every 4th batch with the target off: the commit's cost without it.
            on = batch_no % 4 != 3
            if not on:
                conn.execute("UPDATE data_targets SET enabled = false WHERE id = %s", (target,))
            began = time.perf_counter()
            writer.write(conn, rows, [])
            (commit_on if on else commit_off).append(time.perf_counter() - began)
            if not on:
                conn.execute("UPDATE data_targets SET enabled = true WHERE id = %s", (target,))
            else:
                sent += per_batch
            batch_no += 1
            time.sleep(max(0.0, 0.5 - (time.monotonic() - tick)))
        elapsed = time.monotonic() - started
        backlog_at_end = conn.execute(
            "SELECT count(*) FROM deliveries WHERE target_id = %s AND status = 'pending'",
            (target,),
        ).fetchone()[0]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            left = conn.execute(
                "SELECT count(*) FROM deliveries WHERE target_id = %s AND status <> 'delivered'",
                (target,),
            ).fetchone()[0]
            if left == 0:
                break
            time.sleep(0.05)
    finally:
        worker.stop()
        runner.join()
    latencies = [
        r[0]
        for r in conn.execute(
            "SELECT extract(epoch FROM delivered_at - created_at) FROM deliveries "
            "WHERE target_id = %s AND status = 'delivered'",
            (target,),
        )
    ]
    forwarded = conn.execute(
        "SELECT coalesce(sum(jsonb_array_length(payload -> 'time')), 0) FROM deliveries "
        "WHERE target_id = %s AND status = 'delivered'",
        (target,),
    ).fetchone()[0]
    assert forwarded == sent, (forwarded, sent)
    return {
        "rate": rate,
        "seconds": elapsed,
        "forwarded": forwarded,
        "forwarded_per_s": forwarded / elapsed,
        "written_per_s": batch_no * per_batch / elapsed,
        "batches": len(latencies),
        "backlog_at_end": backlog_at_end,
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "commit_on_ms": statistics.median(commit_on) * 1000,
        "commit_off_ms": statistics.median(commit_off) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=5_000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    receiver, url = start_receiver()
    try:
        with (
            migrated_database("off", "iot_bench_outbound") as database_url,
            psycopg.connect(database_url, autocommit=True) as conn,
        ):
            m, sensors = setup(conn, url)
            alerts = bench_alerts(conn, database_url, m, sensors, args.alerts, args.concurrency)
            target = bench_target(
                conn, database_url, m, sensors, url, args.rate, args.seconds, args.concurrency
            )
    finally:
        receiver.terminate()
        receiver.wait(10)
    load_after = os.getloadavg()[0]
    command = "bench/bench_outbound.py " + " ".join(sys.argv[1:])
    a, t = alerts, target
    text = f"""{SECTION}

Machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()},
PostgreSQL (plain) on the same machine. **Shared and loaded**: 2 cores used by seven
engineers' tests at the time (1-minute load average {load_before:.1f} at the start,
{load_after:.1f} at the end), so absolute figures are pessimistic and noisy; the ratio in the
last row was measured interleaved in the same run.
Command: `.venv/bin/python {command}`; the webhook receiver is a local process answering
204 (bench/outbound_receiver.py).

| what | figure | target |
|---|---|---|
| {a["n"]:,} alert transitions written with their notices (one evaluation, one transaction) | {a["write_s"]:.2f} s | – |
| {a["n"]:,} notices delivered to the webhook, {args.concurrency} worker threads | {a["deliver_s"]:.1f} s = {a["rate"]:,.0f}/s | – |
| notice latency written → delivered, p50 / p95 (all queued at once) | {a["p50"]:.1f} s / {a["p95"]:.1f} s | – |
| ingest writing {t["written_per_s"]:,.0f} readings/s for {t["seconds"]:.0f} s, target on for 3 batches of 4: forwarded | {t["forwarded_per_s"]:,.0f} readings/s, every one ({t["forwarded"]:,} in {t["batches"]} batches); backlog at the end {t["backlog_at_end"]} | keep up with 5,000/s |
| data target delivery latency batch commit → delivered, p50 / p95 | {t["p50"] * 1000:.0f} ms / {t["p95"] * 1000:.0f} ms | – |
| ingest batch commit ({t["rate"] // 2:,} rows) with the target on / off, median | {t["commit_on_ms"]:.1f} ms / {t["commit_off_ms"]:.1f} ms = {t["commit_on_ms"] / t["commit_off_ms"]:.2f}× | – |

- A notice costs the worker four database round trips, two of them commits (the attempt
  recorded before the send, the outcome after it; docs/notifications.md says why both are
  needed). On a loaded machine a commit takes milliseconds, which bounds each thread's rate;
  more threads (`IOT_DELIVER_CONCURRENCY`) or more workers raise it. All notices were
  queued at once, so the latency percentiles are the time the queue took to drain; an
  evaluation opens a handful of alerts at a time.
- The data target received every reading written while it was on, one delivery per ingest
  batch, with nothing left pending at the end. Its cost lands on ingest's commit thread
  (a second COPY of the batch into a temporary table, a join and an aggregate into the
  outbox row), and only while a target of the municipality is switched on.
"""  # noqa: E501
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
