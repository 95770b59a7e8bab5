"""End-to-end ingest throughput against the naive baseline and the machine's limits.

One invocation measures, on the same machine and data:

* **ingest**: K ``python -m cli ingest`` processes on a shared subscription (K = 1, 2, 4),
  fed pre-generated ChirpStack v4 uplinks from the simulator with QoS 1 by the same C
  publishers as the broker limit (bench/mqtt_flood.c); time from the first publish until
  the last reading is committed (see ``_wait_for_rows``), messages/s and readings/s, median
  of ``--runs``; peak RSS of the ingest processes (VmHWM);
* **naive**: bench/naive_ingest.py (one INSERT + commit per message), same data, shorter;
* **broker limit**: the same payloads through Mosquitto with C clients only
  (bench/mqtt_flood.c publishing, ``mosquitto_sub -C N -q 1`` receiving), messages/s;
* **COPY limit**: the same readings rows by psycopg binary COPY into ``readings``
  (same table, same primary key), readings/s.

Everything runs against a private Mosquitto (bench/mosquitto-bench.conf written to a temp
dir; its queue limits are raised so a flood is queued, not dropped) and a fresh database
on the local PostgreSQL (``--backend postgres``, native partitions) or on the TimescaleDB
server of ../shared/timescaledb/setup.sh (``--backend timescaledb``, the hypertable;
IOT_BENCH_TIMESCALE_URL). Every path runs in every run, and the ratios are taken within
each run (then the median over runs): the speed of a shared machine drifts within
minutes. The limits are measured before the first ingest path and after each one, and an
ingest path is held against the mean of the lower limit just before and just after it.
See BENCHMARKS.md for results and the exact command.

    .venv/bin/python bench/bench_ingest.py --messages 200000 --runs 3
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from itertools import islice
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.report import cpu_model  # noqa: E402
from domain.metrics import sync_metrics  # noqa: E402
from ingest.pipeline import Pipeline  # noqa: E402
from models.db import create_database, drop_database, migrate  # noqa: E402
from models.settings import Settings  # noqa: E402
from simulator.fleet import build_fleet  # noqa: E402
from simulator.seed import seed_fleet  # noqa: E402
from simulator.stream import FleetStream  # noqa: E402

PYTHON = sys.executable
BROKER_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
# A flood must be queued for a busy subscriber, not dropped (the default is 1000).
max_queued_messages 0
max_inflight_messages 1000
"""
TOPIC_PREFIX = "bench/"
# Where each backend's fresh database is created (--backend).
BACKEND_SERVERS = {
    "postgres": os.environ.get("IOT_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432"),
    "timescaledb": os.environ.get(
        "IOT_BENCH_TIMESCALE_URL", "postgresql://postgres@127.0.0.1:5433"
    ),
}


# --- environment ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine() -> dict:
    """Model name, cores, RAM and versions of everything measured."""
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    pg = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", "SHOW server_version"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "postgresql": pg,
        "mosquitto": mosq.splitlines()[0] if mosq else "?",
        "paho_mqtt": _version("paho-mqtt"),
        "psycopg": _version("psycopg"),
    }


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


class Broker:
    """A private Mosquitto for the benchmark, stopped on exit."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        conf = workdir / "mosquitto-bench.conf"
        conf.write_text(BROKER_CONF.format(port=self.port))
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("private mosquitto did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


# --- data -------------------------------------------------------------------------------


@dataclass
class Workload:
    messages: list[tuple[str, bytes]]
    rows: list[tuple[datetime, int, int, float]]  # the readings the messages hold
    rows_per_message: list[int]
    tsv_path: Path

    @property
    def readings_per_message(self) -> float:
        return len(self.rows) / len(self.messages)

    @cached_property
    def latest_keys(self) -> tuple[list[int], list[int]]:
        """(sensor ids, metric ids) of every (sensor, metric) the rows hold, in key order."""
        keys = sorted({(sensor, metric) for _, sensor, metric, _ in self.rows})
        return [k[0] for k in keys], [k[1] for k in keys]

    @cached_property
    def first_time(self) -> datetime:
        """The oldest reading's time."""
        return min(time_ for time_, _, _, _ in self.rows)


def use_js_codec_for_elsys(conn: psycopg.Connection) -> int:
    """Give every municipality its own "Elsys ERS CO2 (JS codec)" model, with the test
    codec of tests/codecs/js, and move its Elsys ERS CO2 sensors to it: their uplinks are
    then decoded in the QuickJS sandbox. Returns how many sensors moved."""
    from ingest.codecs.store import CodecUpload, add_codec_version
    from tests.codecs.test_differential import JS, PAIRS

    elsys = conn.execute(
        "SELECT id FROM device_models WHERE vendor = 'Elsys' AND model = 'ERS CO2' "
        "AND municipality_id IS NULL"
    ).fetchone()[0]
    upload = CodecUpload(
        "Elsys",
        "ERS CO2 (JS codec)",
        "climate",
        PAIRS["Elsys"][2],
        (JS / "elsys_ers.yaml").read_text(),
        (JS / "elsys_ers.js").read_text(),
    )
    moved = 0
    owners = conn.execute(
        "SELECT DISTINCT municipality_id FROM sensors WHERE device_model_id = %s", (elsys,)
    ).fetchall()
    for (municipality_id,) in owners:
        stored = add_codec_version(conn, municipality_id, upload)
        moved += conn.execute(
            "UPDATE sensors SET device_model_id = %s WHERE municipality_id = %s "
            "AND device_model_id = %s",
            (stored.device_model_id, municipality_id, elsys),
        ).rowcount
    return moved


def build_workload(
    conn: psycopg.Connection,
    database_url: str,
    n: int,
    workdir: Path,
    seed: int,
    js_codecs: bool = False,
) -> Workload:
    """Seed a fleet, generate `n` ChirpStack uplinks and the readings rows they hold.
    With `js_codecs`, the Elsys sensors are decoded by a JavaScript codec."""
    fleet = build_fleet(
        classrooms=3000, bins=1500, parking_bays=1500, seed=seed, network="chirpstack"
    )
    seed_fleet(conn, fleet)
    if js_codecs:
        print(f"JS codec: {use_js_codec_for_elsys(conn)} Elsys sensors moved to it", flush=True)
    # The rows are what the ingest's own pipeline makes of each message (decoded values,
    # derived fill level, radio quality), so the COPY limit writes exactly the same rows.
    pipeline = Pipeline(Settings(database_url=database_url), sync_metrics(conn))
    # Start far enough back that n messages end before now (about 7.5 uplinks/s).
    start = datetime.now(UTC) - timedelta(seconds=n / 7.0 + 3600)
    stream = FleetStream(
        fleet, start, seed=seed, duplicate_share=0.0, malformed_share=0.0, topic_prefix=TOPIC_PREFIX
    )
    messages, rows, counts = [], [], []
    arrival = datetime.now(UTC)
    for uplink in islice(stream.uplinks(), n):
        messages.append((uplink.topic, uplink.payload))
        outcome = pipeline.handle(lambda op: op(conn), uplink.topic, uplink.payload, arrival)
        if outcome.rejection is not None:
            raise RuntimeError(f"the workload has a message ingest refuses: {outcome.rejection}")
        rows.extend(outcome.rows)
        counts.append(len(outcome.rows))
    tsv = workdir / "uplinks.tsv"
    with tsv.open("wb") as fh:
        for topic, payload in messages:
            fh.write(topic.encode() + b"\t" + payload + b"\n")
    return Workload(messages, rows, counts, tsv)


def reset(conn: psycopg.Connection) -> None:
    conn.execute(
        "TRUNCATE readings, latest_readings, latest_pending, dead_letters, rollup_dirty_hours"
    )


def seed_latest(conn: psycopg.Connection, work: Workload) -> None:
    """Give every (sensor, metric) of the workload a latest value from the day before it,
    as a fleet that reported before the outage has: the drain then replaces values, as it
    would. (Into an empty table every key's first insert also pays two foreign-key
    checks, 2/3 of a flush of 40,000 new keys here: a fleet reporting for the first
    time, all at once.)"""
    sensors, metrics = work.latest_keys
    before = work.first_time - timedelta(days=1)
    conn.execute("TRUNCATE latest_readings")
    conn.execute(
        "INSERT INTO latest_readings (sensor_id, metric_id, time, value) "
        "SELECT sensor_id, metric_id, %s, 0 FROM unnest(%s::bigint[], %s::smallint[]) "
        "AS k(sensor_id, metric_id)",
        (before, sensors, metrics),
    )


def readings_count(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM readings").fetchone()[0]


# --- publishing -------------------------------------------------------------------------


def split_for_publishers(
    work: Workload, parts: int, workdir: Path, n: int | None = None
) -> list[Path]:
    """The first `n` messages' TSV lines dealt round-robin into `parts` files."""
    lines = [line for line in work.tsv_path.read_bytes().split(b"\n") if line][:n]
    files = []
    for i in range(parts):
        part = workdir / f"publish-{n}-{parts}-{i}.tsv"
        part.write_bytes(b"\n".join(lines[i::parts]) + b"\n")
        files.append(part)
    return files


def publish(
    port: int, files: list[Path], flood_bin: Path, on_start: Callable[[], None] | None = None
) -> tuple[float, float, int]:
    """Publish each file with its own C publisher (bench/mqtt_flood.c, QoS 1, 1,000 in
    flight), the same publishers as the broker limit, so every path is fed alike and the
    publishers take little of the machine (about 3 µs of CPU per message).

    The publishers start together once each has read its file and connected, so that their
    start-up is not timed; `on_start` is called just before. Returns (time of the start,
    time of the last PUBACK, messages)."""
    pubs = [
        subprocess.Popen(
            [
                str(flood_bin),
                "127.0.0.1",
                str(port),
                f"bench-pub-{uuid.uuid4().hex[:6]}-{i}",
                str(f),
                "1000",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for i, f in enumerate(files)
    ]
    for p in pubs:
        if p.stdout.readline() != b"ready\n":
            raise RuntimeError(f"publisher exited with {p.wait()} before it was ready")
    if on_start is not None:
        on_start()
    t0 = time.time()
    for p in pubs:
        p.stdin.write(b"go\n")
        p.stdin.close()
    sent = 0
    for p in pubs:
        out = p.stdout.read()
        if p.wait(timeout=1800) != 0:
            raise RuntimeError(f"publisher exited with {p.returncode}")
        sent += int(out.split()[0])
    return t0, time.time(), sent


# --- measurements -----------------------------------------------------------------------


@dataclass
class IngestRun:
    processes: int
    seconds: float
    messages_per_s: float
    readings_per_s: float
    publish_seconds: float
    peak_rss_mib: list[float] = field(default_factory=list)
    # CPU time per message from the first publish to the last row, by program (µs), and
    # the share of both cores left idle meanwhile.
    cpu_us_per_message: dict[str, float] = field(default_factory=dict)
    idle_share: float = 0.0


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid`, all its threads (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _postgres_pids() -> list[int]:
    """The local PostgreSQL's processes (server, backends, background workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"postgres"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _cpu_totals() -> tuple[int, int]:
    """(idle, all) clock ticks of the whole machine so far, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return ticks[3] + ticks[4], sum(ticks)


class CpuMeter:
    """CPU seconds of the ingest processes, PostgreSQL, Mosquitto and the C publishers
    between `start` and `stop`, and the machine's idle share."""

    def __init__(self, ingest_pids: list[int], broker_pid: int) -> None:
        self._groups = {
            "ingest": ingest_pids,
            "postgresql": _postgres_pids(),
            "mosquitto": [broker_pid],
        }

    def _read(self) -> dict[str, float]:
        seconds = {g: sum(_cpu_seconds(p) for p in pids) for g, pids in self._groups.items()}
        # The publishers have exited by the end: counted as waited-for children.
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        seconds["publishers"] = children.ru_utime + children.ru_stime
        return seconds

    def start(self) -> None:
        self._before, self._ticks_before = self._read(), _cpu_totals()

    def stop(self, messages: int) -> tuple[dict[str, float], float]:
        after, (idle, total) = self._read(), _cpu_totals()
        per_message = {g: round((after[g] - self._before[g]) / messages * 1e6, 1) for g in after}
        idle_share = (idle - self._ticks_before[0]) / max(1, total - self._ticks_before[1])
        return per_message, round(idle_share, 3)


def _peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024


# How many of the last messages' rows the completion poll looks up.
TAIL_MESSAGES = 50

_TAIL_STORED = """
SELECT count(*) FROM unnest(%s::int8[], %s::int2[], %s::timestamptz[]) AS k(s, m, t)
JOIN readings r ON r.sensor_id = k.s AND r.metric_id = k.m AND r.time = k.t
"""


def _tail_keys(work: Workload, messages: int) -> tuple[list, list, list]:
    """Keys of the rows of the last TAIL_MESSAGES of the first `messages` messages."""
    end = sum(work.rows_per_message[:messages])
    start = sum(work.rows_per_message[: max(0, messages - TAIL_MESSAGES)])
    tail = work.rows[start:end]
    return [r[1] for r in tail], [r[2] for r in tail], [r[0] for r in tail]


def _wait_for_rows(
    conn: psycopg.Connection, expected: int, tail: tuple[list, list, list], timeout_s: float
) -> float:
    """Time at which all `expected` rows are stored.

    Polling ``count(*)`` of a table growing to millions of rows costs the machine being
    measured a good part of a core (it showed as the third-largest activity in
    pg_stat_activity samples). Instead the poll looks up the rows of the last
    TAIL_MESSAGES messages by key, a few hundred index probes: each ingest process
    commits in the order it received, and a share group deals the last 50 messages to
    every process, so once they are stored everything before them is. One exact
    ``count(*)`` then confirms it (keep polling if not)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if conn.execute(_TAIL_STORED, tail).fetchone()[0] >= len(tail[0]):
            done = time.time()
            if readings_count(conn) >= expected:
                return done
            break
        time.sleep(0.05)
    while time.time() < deadline:
        if readings_count(conn) >= expected:
            return time.time()
        time.sleep(0.25)
    raise TimeoutError(f"only {readings_count(conn)} of {expected} readings after {timeout_s} s")


def _ingest_env(
    database_url: str, port: int, k: int, run_id: str, receive_maximum: int
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        IOT_DATABASE_URL=database_url,
        IOT_MQTT_PORT=str(port),
        IOT_MQTT_CLIENT_ID=f"bench-ingest-{run_id}-{k}",
        IOT_MQTT_SHARE_GROUP=f"bench{run_id}",
        IOT_MQTT_TOPICS=json.dumps([f"{TOPIC_PREFIX}application/+/device/+/event/up"]),
        IOT_INGEST_METRICS_PORT="0",
        IOT_MQTT_RECEIVE_MAXIMUM=str(receive_maximum),
        IOT_LOG_LEVEL="INFO",
    )
    return env


def _start_ingest(
    env: dict[str, str], log_path: Path, wrapper: Sequence[str] = ()
) -> subprocess.Popen:
    return subprocess.Popen(
        [*wrapper, PYTHON, "-m", "cli", "ingest"],
        cwd=REPO,
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _wait_subscribed(port: int, database_url: str, conn: psycopg.Connection, procs: list) -> None:
    """Wait until every ingest process takes messages: probe with an uplink of an unmapped
    application until each has dead-lettered one (shared subscriptions deal round-robin)."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-probe-{uuid.uuid4().hex[:6]}"
    )
    client.connect("127.0.0.1", port)
    client.loop_start()
    deadline = time.time() + 60
    probe = {
        "deduplicationId": str(uuid.uuid4()),
        "time": datetime.now(UTC).isoformat(),
        "deviceInfo": {"devEui": "ffffffffffffff00", "tenantId": "probe", "applicationId": "probe"},
        "fCnt": 1,
        "fPort": 1,
        "data": base64.b64encode(b"\x01").decode(),
    }
    try:
        while time.time() < deadline:
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"ingest process exited with {p.returncode}")
            # A new message each time: the same bytes again would be one dead letter.
            probe["fCnt"] += 1
            client.publish(
                f"{TOPIC_PREFIX}application/probe/device/ffffffffffffff00/event/up",
                orjson.dumps(probe),
                qos=1,
            ).wait_for_publish(5)
            time.sleep(0.3)
            seen = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
            if seen >= 3 * len(procs):
                time.sleep(1.0)  # let the last subscriber settle
                return
        raise TimeoutError("ingest did not start taking messages within 60 s")
    finally:
        client.disconnect()
        client.loop_stop()


def run_ingest(
    database_url: str,
    broker: Broker,
    work: Workload,
    k: int,
    files: list[Path],
    flood_bin: Path,
    workdir: Path,
    receive_maximum: int,
    wrapper: Sequence[str] = (),
) -> IngestRun:
    """K ingest processes (each run under `wrapper`, e.g. valgrind, when given) drain
    `work` as the publishers send it; timed from the first publish to the last row."""
    run_id = uuid.uuid4().hex[:6]
    with psycopg.connect(database_url, autocommit=True) as conn:
        reset(conn)
        procs = [
            _start_ingest(
                _ingest_env(database_url, broker.port, i, run_id, receive_maximum),
                workdir / f"ingest-{run_id}-{i}.log",
                wrapper,
            )
            for i in range(k)
        ]
        try:
            _wait_subscribed(broker.port, database_url, conn, procs)
            conn.execute("TRUNCATE readings, latest_pending, dead_letters")
            seed_latest(conn, work)
            meter = CpuMeter([p.pid for p in procs], broker.proc.pid)
            t0, t_published, sent = publish(broker.port, files, flood_bin, meter.start)
            tail = _tail_keys(work, len(work.messages))
            t_end = _wait_for_rows(conn, len(work.rows), tail, timeout_s=900)
            cpu, idle = meter.stop(sent)
            rss = [_peak_rss_mib(p.pid) for p in procs]
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
    seconds = t_end - t0
    return IngestRun(
        processes=k,
        seconds=round(seconds, 2),
        messages_per_s=round(sent / seconds),
        readings_per_s=round(len(work.rows) / seconds),
        publish_seconds=round(t_published - t0, 2),
        peak_rss_mib=[round(r, 1) for r in rss],
        cpu_us_per_message=cpu,
        idle_share=idle,
    )


def run_naive(
    database_url: str,
    broker: Broker,
    work: Workload,
    n: int,
    files: list[Path],
    flood_bin: Path,
    workdir: Path,
) -> dict:
    expected = sum(work.rows_per_message[:n])
    with psycopg.connect(database_url, autocommit=True) as conn:
        reset(conn)
        proc = subprocess.Popen(
            [
                PYTHON,
                str(REPO / "bench" / "naive_ingest.py"),
                database_url,
                "127.0.0.1",
                str(broker.port),
                f"{TOPIC_PREFIX}application/+/device/+/event/up",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=(workdir / "naive.log").open("wb"),
        )
        try:
            assert proc.stdout.readline().strip() == b"ready"
            t0, _, sent = publish(broker.port, files, flood_bin)
            t_end = _wait_for_rows(conn, expected, _tail_keys(work, n), timeout_s=1800)
            rss = _peak_rss_mib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    seconds = t_end - t0
    return {
        "messages": sent,
        "seconds": round(seconds, 2),
        "messages_per_s": round(sent / seconds),
        "readings_per_s": round(expected / seconds),
        "peak_rss_mib": round(rss, 1),
    }


def broker_limit(broker: Broker, work: Workload, files: list[Path], flood_bin: Path) -> dict:
    """Messages/s through the broker with C clients only: the ingest's publishers, one
    C subscriber."""
    n = len(work.messages)
    sub = subprocess.Popen(
        [
            "mosquitto_sub",
            "-p",
            str(broker.port),
            "-q",
            "1",
            "-C",
            str(n),
            "-i",
            "limit-sub",
            "-t",
            f"{TOPIC_PREFIX}#",
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    t0, _, _ = publish(broker.port, files, flood_bin)
    sub.wait(timeout=600)
    seconds = time.time() - t0
    return {"messages": n, "seconds": round(seconds, 2), "messages_per_s": round(n / seconds)}


def _binary_copy_data(rows: list[tuple[datetime, int, int, float]]) -> bytes:
    """The rows in PostgreSQL's binary COPY format (timestamptz, int8, int2, float8)."""
    epoch_2000 = datetime(2000, 1, 1, tzinfo=UTC)
    row = struct.Struct(">hiqiqihid")
    out = bytearray(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
    for time_, sensor_id, metric_id, value in rows:
        micros = (time_ - epoch_2000) // timedelta(microseconds=1)
        out += row.pack(4, 8, micros, 8, sensor_id, 2, metric_id, 8, value)
    out += struct.pack(">h", -1)
    return bytes(out)


def copy_limit(database_url: str, work: Workload) -> dict:
    """Readings/s PostgreSQL takes by binary COPY of the same rows into readings (same
    partitions, same primary key), committed. The data is encoded beforehand so only the
    server's work and the transfer are timed."""
    data = _binary_copy_data(work.rows)
    with psycopg.connect(database_url) as conn:
        conn.execute("TRUNCATE readings")
        conn.commit()
        t0 = time.time()
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY readings (time, sensor_id, metric_id, value) FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            for i in range(0, len(data), 1 << 20):
                copy.write(data[i : i + (1 << 20)])
        conn.commit()
        seconds = time.time() - t0
        stored = readings_count(conn)
        conn.execute("TRUNCATE readings")
        conn.commit()
    if stored != len(work.rows):
        raise RuntimeError(f"COPY stored {stored} of {len(work.rows)} rows")
    return {
        "rows": len(work.rows),
        "seconds": round(seconds, 2),
        "readings_per_s": round(len(work.rows) / seconds),
    }


# --- main -------------------------------------------------------------------------------


def compile_flood(workdir: Path) -> Path:
    """Build the C publisher (bench/mqtt_flood.c) into `workdir`."""
    flood_bin = workdir / "mqtt_flood"
    subprocess.run(
        [
            "cc",
            "-O2",
            "-o",
            str(flood_bin),
            str(REPO / "bench" / "mqtt_flood.c"),
        ],
        check=True,
    )
    return flood_bin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--processes", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument(
        "--receive-maximum",
        type=int,
        default=Settings.model_fields["mqtt_receive_maximum"].default,
        help="IOT_MQTT_RECEIVE_MAXIMUM of the ingest processes (default: the setting's)",
    )
    parser.add_argument("--naive-messages", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench-ingest-results.json"))
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument(
        "--js-codecs",
        action="store_true",
        help="decode the fleet's Elsys sensors (a third of the classrooms) with a JavaScript "
        "codec in the QuickJS sandbox instead of the Python decoder",
    )
    parser.add_argument(
        "--backend",
        choices=BACKEND_SERVERS,
        default="postgres",
        help="plain PostgreSQL (native partitions) or TimescaleDB (hypertable); the COPY "
        "limit goes into the same table",
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    flood_bin = compile_flood(workdir)
    server = BACKEND_SERVERS[args.backend]
    database_url = f"{server}/bench_ingest_{uuid.uuid4().hex[:8]}"
    create_database(database_url)
    broker = Broker(workdir)
    results: dict = {
        "machine": machine(),
        "command": " ".join(sys.argv),
        "backend": args.backend,
        "js_codecs": args.js_codecs,
        "broker_conf": BROKER_CONF,
    }
    try:
        migrate(database_url, timescaledb="on" if args.backend == "timescaledb" else "off")
        with psycopg.connect(database_url, autocommit=True) as conn:
            sync_metrics(conn)
            results["machine"]["storage"] = conn.execute(
                "SELECT coalesce((SELECT 'TimescaleDB ' || extversion FROM pg_extension "
                "WHERE extname = 'timescaledb'), 'plain PostgreSQL') || ', PostgreSQL ' "
                "|| current_setting('server_version')"
            ).fetchone()[0]
            t = time.time()
            work = build_workload(
                conn, database_url, args.messages, workdir, args.seed, args.js_codecs
            )
            print(
                f"workload: {len(work.messages)} messages, {len(work.rows)} readings "
                f"({work.readings_per_message:.2f}/message), {time.time() - t:.0f} s",
                flush=True,
            )
        results["workload"] = {
            "messages": len(work.messages),
            "readings": len(work.rows),
            "readings_per_message": round(work.readings_per_message, 3),
            "mean_message_bytes": round(statistics.mean(len(p) for _, p in work.messages)),
        }
        files = split_for_publishers(work, args.publishers, workdir)
        naive_files = split_for_publishers(work, args.publishers, workdir, args.naive_messages)
        runs: dict[str, list] = {"broker": [], "copy": [], "naive": []}
        for k in args.processes:
            runs[f"ingest_{k}"] = []

        def lower_limit() -> float:
            """Measure both limits now; the lower, in messages/s."""
            runs["broker"].append(broker_limit(broker, work, files, flood_bin))
            runs["copy"].append(copy_limit(database_url, work))
            copy_msgs = runs["copy"][-1]["readings_per_s"] / work.readings_per_message
            return min(runs["broker"][-1]["messages_per_s"], copy_msgs)

        for _ in range(args.runs):
            # The machine's speed drifts within minutes, so the limits are measured right
            # before and right after each ingest path, and that path is held against the
            # mean of the two.
            before = lower_limit()
            for k in args.processes:
                run = asdict(
                    run_ingest(
                        database_url,
                        broker,
                        work,
                        k,
                        files,
                        flood_bin,
                        workdir,
                        args.receive_maximum,
                    )
                )
                after = lower_limit()
                run["lower_limit_around"] = [round(before), round(after)]
                runs[f"ingest_{k}"].append(run)
                before = after
            # Every run: each run's ingest is compared with the naive baseline of the same
            # run.
            runs["naive"].append(
                run_naive(
                    database_url,
                    broker,
                    work,
                    args.naive_messages,
                    naive_files,
                    flood_bin,
                    workdir,
                )
            )
            print(json.dumps({k: v[-1] for k, v in runs.items() if v}), flush=True)
        results["runs"] = runs
        results["summary"] = summarise(runs, work.readings_per_message)
        args.out.write_text(json.dumps(results, indent=2, default=str))
        print(json.dumps(results["summary"], indent=2))
        print(render_markdown(results))
    finally:
        broker.stop()
        if not args.keep_db:
            drop_database(database_url)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def summarise(runs: dict, readings_per_message: float) -> dict:
    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    broker_msgs = med(runs["broker"], "messages_per_s")
    copy_readings = med(runs["copy"], "readings_per_s")
    copy_msgs = copy_readings / readings_per_message
    limit_msgs = min(broker_msgs, copy_msgs)
    naive_msgs = med(runs["naive"], "messages_per_s")
    summary = {
        "broker_limit_messages_per_s": round(broker_msgs),
        "copy_limit_readings_per_s": round(copy_readings),
        "copy_limit_as_messages_per_s": round(copy_msgs),
        "lower_limit_messages_per_s": round(limit_msgs),
        "naive_messages_per_s": round(naive_msgs),
        "ingest": {},
    }
    # Per run: each ingest path against the lower limit measured just before and just
    # after it, and against the same run's naive baseline.
    run_naive = [n["messages_per_s"] for n in runs["naive"]]
    for key, rows in runs.items():
        if key.startswith("ingest_"):
            msgs = med(rows, "messages_per_s")
            to_limit = [
                r["messages_per_s"] / statistics.mean(r["lower_limit_around"]) for r in rows
            ]
            to_naive = [r["messages_per_s"] / n for r, n in zip(rows, run_naive, strict=True)]
            summary["ingest"][key] = {
                "messages_per_s": round(msgs),
                "readings_per_s": round(med(rows, "readings_per_s")),
                "ratio_to_lower_limit": round(statistics.median(to_limit), 2),
                "ratio_to_lower_limit_range": [round(min(to_limit), 2), round(max(to_limit), 2)],
                "ratio_to_naive": round(statistics.median(to_naive), 1),
                "ratio_to_naive_range": [round(min(to_naive), 1), round(max(to_naive), 1)],
                "publish_seconds_median": med(rows, "publish_seconds"),
                "seconds_median": med(rows, "seconds"),
                "peak_rss_mib_max": max(max(r["peak_rss_mib"]) for r in rows),
                "cpu_us_per_message_median": {
                    group: statistics.median(r["cpu_us_per_message"][group] for r in rows)
                    for group in rows[0]["cpu_us_per_message"]
                },
                "idle_share_median": statistics.median(r["idle_share"] for r in rows),
            }
    return summary


def _span(bounds: list[float]) -> str:
    return f"{bounds[0]}–{bounds[1]}"


def render_markdown(results: dict) -> str:
    """The results table for BENCHMARKS.md."""
    s, w = results["summary"], results["workload"]
    lines = [
        "| path | messages/s | readings/s | × lower limit (runs) | × naive (runs) "
        "| peak RSS per process |",
        "|---|---:|---:|---:|---:|---:|",
        f"| broker limit (C clients) | {s['broker_limit_messages_per_s']:,} | – | – | – | – |",
        f"| COPY limit (binary COPY) | {s['copy_limit_as_messages_per_s']:,} | "
        f"{s['copy_limit_readings_per_s']:,} | – | – | – |",
        f"| naive (INSERT + commit per message) | {s['naive_messages_per_s']:,} | "
        f"{round(s['naive_messages_per_s'] * w['readings_per_message']):,} | – | 1 | "
        f"{results['runs']['naive'][0]['peak_rss_mib']} MiB |",
    ]
    for key, row in s["ingest"].items():
        k = key.split("_")[1]
        lines.append(
            f"| ingest, {k} process{'es' if k != '1' else ''} | {row['messages_per_s']:,} | "
            f"{row['readings_per_s']:,} | {row['ratio_to_lower_limit']} "
            f"({_span(row['ratio_to_lower_limit_range'])}) | {row['ratio_to_naive']} "
            f"({_span(row['ratio_to_naive_range'])}) | {row['peak_rss_mib_max']} MiB |"
        )
    lines += [
        "",
        "CPU per message while ingest drains the flood (µs, median over the runs; idle: "
        "the share of both cores unused):",
        "",
        "| path | ingest | PostgreSQL | Mosquitto | C publishers | idle |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, row in s["ingest"].items():
        cpu = row["cpu_us_per_message_median"]
        lines.append(
            f"| ingest, {key.split('_')[1]} | {cpu['ingest']} | {cpu['postgresql']} | "
            f"{cpu['mosquitto']} | {cpu['publishers']} | {row['idle_share_median']:.0%} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
