"""Soak: sustained load on one ingest process; do memory and lag stay flat?

Starts a private Mosquitto (queue limits raised) and a fresh database, registers a fleet of
native sensors, runs ``python -m cli ingest`` and publishes QoS 1 messages at a fixed rate
for the given duration. Every ``--every`` seconds it samples the ingest process's resident
memory (VmRSS), messages published, messages stored and the backlog between them, and
prints a table; with ``--write`` it replaces the "Soak" section of BENCHMARKS.md.

    .venv/bin/python bench/soak.py --minutes 5 --rate 1000 --write
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECTION = "## Soak (bench/soak.py)"

from bench.report import cpu_model, write_section  # noqa: E402
from domain.metrics import sync_metrics  # noqa: E402
from models.db import create_database, drop_database, migrate  # noqa: E402
from tests.processes import PrivateBroker, child_env  # noqa: E402

ADMIN = os.environ.get("IOT_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def publish_at_rate(port: int, sensors: int, rate: float, seconds: float, sent: list[int]) -> None:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"soak-pub-{uuid.uuid4().hex[:6]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    start = time.monotonic()
    base = datetime.now(UTC) - timedelta(days=1)
    infos: deque[mqtt.MQTTMessageInfo] = deque()
    i = acked = 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate)
        while i < due:
            sensor = i % sensors
            body = orjson.dumps(
                {
                    "time": (base + timedelta(milliseconds=i)).isoformat(),
                    "readings": {"co2_ppm": 400 + i % 1200, "temperature_c": 21.5},
                }
            )
            infos.append(
                client.publish(f"municipality/soak/sensors/s{sensor}/readings", body, qos=1)
            )
            i += 1
        # Count a message as published once the broker has acknowledged it.
        while infos and infos[0].is_published():
            infos.popleft()
            acked += 1
        sent[0] = acked
        time.sleep(0.005)
    for info in infos:
        info.wait_for_publish(60)
        acked += 1
    sent[0] = acked
    client.disconnect()
    client.loop_stop()


def wait_until_subscribed(port: int, url: str, timeout: float = 60) -> None:
    """Publish a probe (temperature only, so it is not counted) until ingest stores one:
    before ingest's first subscription the broker would discard what the run publishes."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.connect("127.0.0.1", port)
    client.loop_start()
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            body = orjson.dumps({"readings": {"temperature_c": 20.0}})
            client.publish("municipality/soak/sensors/s0/readings", body, qos=1).wait_for_publish(5)
            time.sleep(0.5)
            if conn.execute("SELECT count(*) FROM readings").fetchone()[0]:
                break
        else:
            raise TimeoutError("ingest stored nothing: is it running?")
    client.disconnect()
    client.loop_stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--rate", type=float, default=1000, help="messages per second")
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--every", type=float, default=15, help="sampling interval, seconds")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()

    url = ADMIN.rsplit("/", 1)[0] + f"/iot_soak_{uuid.uuid4().hex[:8]}"
    create_database(url)
    migrate(url, timescaledb="off")
    with psycopg.connect(url, autocommit=True) as conn:
        metric_ids = sync_metrics(conn)
        m = conn.execute(
            "INSERT INTO municipalities (slug, name) VALUES ('soak', 'Soak') RETURNING id"
        ).fetchone()[0]
        with conn.cursor().copy(
            "COPY sensors (municipality_id, external_id, kind) FROM STDIN"
        ) as copy:
            for n in range(args.sensors):
                copy.write_row((m, f"s{n}", "climate"))
    co2 = metric_ids["co2_ppm"]

    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    broker = PrivateBroker(workdir)
    broker.config.write_text(
        broker.config.read_text().replace("100\n", "1000\n")
        + os.environ.get("SOAK_BROKER_EXTRA", "")
    )
    print(f"broker workdir {workdir}", flush=True)
    broker.start()
    ingest = subprocess.Popen(
        [sys.executable, "-m", "cli", "ingest"],
        cwd=ROOT,
        env=child_env(
            IOT_DATABASE_URL=url,
            IOT_MQTT_PORT=str(broker.port),
            IOT_MQTT_CLIENT_ID="soak-ingest",
            IOT_MQTT_SHARE_GROUP=os.environ.get("SOAK_SHARE_GROUP", "ingest"),
            IOT_INGEST_METRICS_PORT="0",
            IOT_LOG_LEVEL=os.environ.get("SOAK_LOG_LEVEL", "WARNING"),
        ),
    )
    wait_until_subscribed(broker.port, url)
    seconds = args.minutes * 60
    sent = [0]
    publisher = threading.Thread(
        target=publish_at_rate, args=(broker.port, args.sensors, args.rate, seconds, sent)
    )
    samples = []
    start = time.monotonic()
    publisher.start()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            while publisher.is_alive() or time.monotonic() - start < seconds:
                time.sleep(args.every)
                stored = conn.execute(
                    "SELECT count(*) FROM readings WHERE metric_id = %s", (co2,)
                ).fetchone()[0]
                t = time.monotonic() - start
                samples.append((t, sent[0], stored, sent[0] - stored, rss_mb(ingest.pid)))
                print(
                    f"t={t:6.0f}s published={sent[0]:9d} stored={stored:9d} "
                    f"backlog={sent[0] - stored:7d} rss={samples[-1][4]:6.1f} MB",
                    flush=True,
                )
            publisher.join()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                stored = conn.execute(
                    "SELECT count(*) FROM readings WHERE metric_id = %s", (co2,)
                ).fetchone()[0]
                if stored >= sent[0]:
                    break
                time.sleep(1)
            print(
                f"final: published={sent[0]} stored={stored} after {time.monotonic() - start:.0f} s"
            )
    finally:
        ingest.terminate()
        ingest.wait(30)
        broker.stop()
        drop_database(url)

    if args.write:
        write_report(args, samples, sent[0], stored)
    return 0 if stored == sent[0] else 1


def write_report(args: argparse.Namespace, samples: list, published: int, stored: int) -> None:
    cpu = cpu_model()
    rows = "\n".join(
        f"| {t:.0f} | {s:,} | {st:,} | {b:,} | {r:.1f} |" for t, s, st, b, r in samples
    )
    section = f"""{SECTION}

Sustained load on one ingest process: {args.rate:.0f} native messages/s (two readings
each) from {args.sensors:,} sensors for {args.minutes:g} minutes, QoS 1, acknowledgement
after commit, private Mosquitto, fresh database on the local PostgreSQL. Machine:
{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}. Measured
{datetime.now(UTC):%Y-%m-%d}.

Command: `.venv/bin/python bench/soak.py --minutes {args.minutes:g} --rate {args.rate:.0f} --write`

| t (s) | published | stored | backlog | ingest RSS (MB) |
|---|---|---|---|---|
{rows}

Final: {published:,} published, {stored:,} stored (CO2 readings, one per message).
"""
    write_section(SECTION, section)


if __name__ == "__main__":
    sys.exit(main())
