"""Ingest throughput with one poison message every 0.5 s, as a share of clean throughput.

The poison is a native-format message for a registered sensor whose metric name holds a
NUL byte next to a valid reading: before the fix its dead letter's COPY failed, the whole
batch went message by message, and the message's valid reading was lost.

Each run drains the same pre-generated ChirpStack workload twice with one ingest process
(bench/bench_ingest.py's workload, publishers, private Mosquitto and fresh database):
once clean, once while a separate client publishes a poison message every 0.5 s from the
first publish until the last reading is stored. The order of the two alternates between
runs, and the ratio (poison messages/s over clean messages/s) is taken within each run,
so the machine's drift cancels; the median over runs is reported.

    .venv/bin/python bench/bench_poison.py --messages 30000 --runs 3
    # the same against another checkout's ingest (e.g. before the fix):
    .venv/bin/python bench/bench_poison.py --ingest-repo /path/to/checkout
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import bench_ingest as bi  # noqa: E402
from domain.metrics import sync_metrics  # noqa: E402
from models.db import create_database, drop_database, migrate  # noqa: E402

POISON_EVERY_S = 0.5


def _poison_topic(conn: psycopg.Connection) -> str:
    slug, external_id = conn.execute(
        "SELECT m.slug, s.external_id FROM sensors s "
        "JOIN municipalities m ON m.id = s.municipality_id "
        "WHERE s.kind = 'climate' AND s.status = 'active' ORDER BY s.id LIMIT 1"
    ).fetchone()
    return f"{bi.TOPIC_PREFIX}municipality/{slug}/sensors/{external_id}/readings"


class Poisoner:
    """Publishes a poison message every POISON_EVERY_S seconds until stopped."""

    def __init__(self, port: int, topic: str) -> None:
        self.topic = topic
        self.sent = 0
        self._stop = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-poison-{uuid.uuid4().hex[:6]}"
        )
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = {
                "time": datetime.now(UTC).isoformat(),
                "readings": {"co2\u0000ppm": 1, "co2_ppm": 500},
            }
            self._client.publish(self.topic, orjson.dumps(message), qos=1)
            self.sent += 1
            self._stop.wait(POISON_EVERY_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._client.disconnect()
        self._client.loop_stop()


def drain(
    database_url: str,
    broker: bi.Broker,
    work: bi.Workload,
    files: list[Path],
    flood_bin: Path,
    workdir: Path,
    poison_topic: str | None,
) -> dict:
    """One ingest process drains `work`; with `poison_topic`, poisoned meanwhile."""
    run_id = uuid.uuid4().hex[:6]
    env = bi._ingest_env(database_url, broker.port, 0, run_id, 1000)
    env["IOT_MQTT_TOPICS"] = json.dumps(
        [
            f"{bi.TOPIC_PREFIX}application/+/device/+/event/up",
            f"{bi.TOPIC_PREFIX}municipality/+/sensors/+/readings",
        ]
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        bi.reset(conn)
        proc = bi._start_ingest(env, workdir / f"ingest-{run_id}.log")
        poisoner = None
        try:
            bi._wait_subscribed(broker.port, database_url, conn, [proc])
            conn.execute("TRUNCATE readings, latest_pending, dead_letters, dead_letter_repeats")
            bi.seed_latest(conn, work)
            if poison_topic is not None:
                poisoner = Poisoner(broker.port, poison_topic)
            t0, _, sent = bi.publish(
                broker.port, files, flood_bin, poisoner.start if poisoner else None
            )
            tail = bi._tail_keys(work, len(work.messages))
            t_end = bi._wait_for_rows(conn, len(work.rows), tail, timeout_s=900)
        finally:
            if poisoner is not None:
                poisoner.stop()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        letters = dict(
            conn.execute(
                "SELECT reason, count(*) FROM dead_letters WHERE topic = %s GROUP BY reason",
                (poison_topic or "",),
            ).fetchall()
        )
        # Only the poison is refused after the TRUNCATE above.
        repeats = conn.execute(
            "SELECT coalesce(sum(repeats), 0) FROM dead_letter_repeats"
        ).fetchone()[0]
    seconds = t_end - t0
    log = (workdir / f"ingest-{run_id}.log").read_text(errors="replace")
    return {
        "seconds": round(seconds, 2),
        "messages_per_s": round(sent / seconds),
        "poison_sent": poisoner.sent if poisoner else 0,
        "poison_letters": letters,
        "poison_repeats_counted": int(repeats),
        "batches_refused": log.count("batch_refused"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--ingest-repo",
        type=Path,
        default=REPO,
        help="checkout whose `python -m cli ingest` is measured (default: this one)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-poison-results.json"))
    args = parser.parse_args()
    bi.REPO = args.ingest_repo.resolve()  # where the ingest processes run from

    workdir = Path(tempfile.mkdtemp(prefix="bench-poison-"))
    flood_bin = bi.compile_flood(workdir)
    database_url = f"postgresql://postgres@127.0.0.1:5432/bench_poison_{uuid.uuid4().hex[:8]}"
    create_database(database_url)
    broker = bi.Broker(workdir)
    results: dict = {"machine": bi.machine(), "command": " ".join(sys.argv)}
    try:
        migrate(database_url, timescaledb="off")
        with psycopg.connect(database_url, autocommit=True) as conn:
            sync_metrics(conn)
            work = bi.build_workload(conn, database_url, args.messages, workdir, args.seed)
            poison_topic = _poison_topic(conn)
        files = bi.split_for_publishers(work, args.publishers, workdir)
        runs = []
        for i in range(args.runs):
            order = ("clean", "poison") if i % 2 == 0 else ("poison", "clean")
            run = {}
            for mode in order:
                topic = poison_topic if mode == "poison" else None
                run[mode] = drain(database_url, broker, work, files, flood_bin, workdir, topic)
            run["ratio"] = round(
                run["poison"]["messages_per_s"] / run["clean"]["messages_per_s"], 3
            )
            runs.append(run)
            print(json.dumps(run), flush=True)
        ratios = [r["ratio"] for r in runs]
        results.update(
            workload={"messages": len(work.messages), "readings": len(work.rows)},
            runs=runs,
            summary={
                "median_ratio": statistics.median(ratios),
                "ratios": ratios,
                "clean_messages_per_s": statistics.median(
                    r["clean"]["messages_per_s"] for r in runs
                ),
                "poison_messages_per_s": statistics.median(
                    r["poison"]["messages_per_s"] for r in runs
                ),
            },
        )
        args.out.write_text(json.dumps(results, indent=2, default=str))
        print(json.dumps(results["summary"], indent=2))
    finally:
        broker.stop()
        drop_database(database_url)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
