"""The ingest pipeline alone: instructions and time per message, without MQTT or commits.

    .venv/bin/python bench/bench_pipeline.py [--messages 3000] [--no-valgrind]

Builds bench/bench_ingest.py's ChirpStack workload (simulator fleet of 3,000 classrooms,
1,500 bins and 1,500 parking bays, seed 1, `build_workload`) in a fresh database, then measures
`Pipeline.handle` and `BatchEncoder` over it, in batches of 600 messages (about one
5,000-row batch):

* **instructions per message**, counted by valgrind's cachegrind: the same script is run
  twice under it, on 0 and on `--messages` messages after the same warm-up (every
  device's topic and sensor seen once), and the difference is divided by the messages.
  Unlike time, this does not move with the machine's speed, so small changes show;
* **µs per message**, best of 7 passes, for scale.

The device cache is loaded from the database once (in both counted runs alike); the
measured passes find every sensor in it.
"""

from __future__ import annotations

import argparse
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ingest.devices import DeviceDirectory  # noqa: E402
from ingest.pipeline import Pipeline  # noqa: E402
from ingest.writer import BatchEncoder  # noqa: E402
from models.settings import Settings  # noqa: E402

BATCH_MESSAGES = 600
WARM_MESSAGES = 6000  # enough that nearly every device has been seen once


def build(url: str, path: Path, messages: int) -> None:
    """Seed bench_ingest's fleet into the database at `url`; write its uplinks and the
    metric ids to `path`."""
    from bench.bench_ingest import build_workload
    from domain.metrics import sync_metrics
    from models.db import migrate

    migrate(url, timescaledb="off")
    with psycopg.connect(url, autocommit=True) as conn:
        metric_ids = sync_metrics(conn)
        work = build_workload(conn, url, WARM_MESSAGES + messages, path.parent, seed=1)
    path.write_bytes(pickle.dumps((url, work.messages, metric_ids)))


def load(path: Path) -> tuple[Pipeline, list[tuple[str, bytes]], psycopg.Connection]:
    """The pipeline with its device cache loaded, the uplinks and the open connection."""
    url, uplinks, metric_ids = pickle.loads(path.read_bytes())
    pipeline = Pipeline(Settings(database_url=url), metric_ids, DeviceDirectory(3600.0))
    conn = psycopg.connect(url, autocommit=True)
    pipeline.directory.reload_if_due(conn)
    return pipeline, uplinks, conn


def run(pipeline: Pipeline, uplinks: list[tuple[str, bytes]], conn: psycopg.Connection) -> None:
    """Handle and encode `uplinks` in batches, as the ingest worker does."""
    arrival = datetime.now(UTC)
    for first in range(0, len(uplinks), BATCH_MESSAGES):
        encoder = BatchEncoder()
        for topic, payload in uplinks[first : first + BATCH_MESSAGES]:
            outcome = pipeline.handle(lambda operation: operation(conn), topic, payload, arrival)
            assert outcome.rejection is None, outcome.rejection
            encoder.add(outcome.rows)
        encoder.finish()


def measured_pass(path: Path, messages: int) -> None:
    """What runs under cachegrind: warm up, then `messages` messages."""
    pipeline, uplinks, conn = load(path)
    with conn:
        run(pipeline, uplinks[:WARM_MESSAGES], conn)
        run(pipeline, uplinks[WARM_MESSAGES : WARM_MESSAGES + messages], conn)


def instructions(path: Path, messages: int) -> int:
    def count(n: int) -> int:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=cachegrind",
                "--cache-sim=no",
                "--cachegrind-out-file=/dev/null",
                sys.executable,
                __file__,
                "--measured-pass",
                str(path),
                str(n),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        return int(re.search(r"I\s+refs:\s+([\d,]+)", out).group(1).replace(",", ""))

    return (count(messages) - count(0)) // messages


def microseconds(path: Path, messages: int) -> float:
    pipeline, uplinks, conn = load(path)
    with conn:
        run(pipeline, uplinks[:WARM_MESSAGES], conn)
        timed = uplinks[WARM_MESSAGES : WARM_MESSAGES + messages]
        best = float("inf")
        for _ in range(7):
            started = time.perf_counter()
            run(pipeline, timed, conn)
            best = min(best, time.perf_counter() - started)
    return best / len(timed) * 1e6


def main() -> int:
    if sys.argv[1:2] == ["--measured-pass"]:
        measured_pass(Path(sys.argv[2]), int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--no-valgrind", action="store_true", help="time only")
    args = parser.parse_args()
    from models.db import create_database, drop_database

    workdir = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    url = f"postgresql://postgres@127.0.0.1:5432/bench_pipeline_{uuid.uuid4().hex[:8]}"
    create_database(url)
    try:
        path = workdir / "workload.pickle"
        build(url, path, args.messages)
        print(f"time: {microseconds(path, args.messages):.1f} µs per message (best of 7)")
        if not args.no_valgrind:
            if shutil.which("valgrind") is None:
                print("instructions: valgrind is not installed (apt install valgrind)")
                return 1
            print(f"instructions: {instructions(path, args.messages):,} per message")
    finally:
        drop_database(url)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
