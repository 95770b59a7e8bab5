"""Instructions per message of a whole ingest process, all its threads, end to end.

    .venv/bin/python bench/bench_ingest_instructions.py [--messages 1000 6000]

bench/bench_pipeline.py counts the pipeline alone; this counts what `python -m cli ingest`
executes for a message from the socket to the commit and the acknowledgement: paho's
network thread, the worker and the commit thread. One ingest process runs under
valgrind's cachegrind and drains bench/bench_ingest.py's workload (the same fleet, the
same C publishers, a private Mosquitto, a fresh database), once per message count; the
difference of the totals over the difference of the counts leaves out start-up and
shutdown. Instructions do not move with the machine's speed as time does; they still
move a little from run to run (about ±3 % here), because how many messages one socket
read or one batch holds depends on timing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_ingest import (  # noqa: E402
    Broker,
    Workload,
    build_workload,
    compile_flood,
    run_ingest,
    split_for_publishers,
)
from domain.metrics import sync_metrics  # noqa: E402
from models.db import create_database, drop_database, migrate  # noqa: E402
from models.settings import Settings  # noqa: E402


def _instructions(cachegrind_out: Path) -> int:
    for line in cachegrind_out.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary line in {cachegrind_out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, nargs=2, default=[1000, 6000])
    args = parser.parse_args()
    small, large = sorted(args.messages)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt install valgrind)")
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-instructions-"))
    flood_bin = compile_flood(workdir)
    url = f"postgresql://postgres@127.0.0.1:5432/bench_instr_{uuid.uuid4().hex[:8]}"
    create_database(url)
    broker = Broker(workdir)
    try:
        migrate(url, timescaledb="off")
        with psycopg.connect(url, autocommit=True) as conn:
            sync_metrics(conn)
            work = build_workload(conn, url, large, workdir, seed=1)
        totals = {}
        for n in (small, large):
            part = Workload(
                work.messages[:n],
                work.rows[: sum(work.rows_per_message[:n])],
                work.rows_per_message[:n],
                work.tsv_path,
            )
            out = workdir / f"cachegrind-{n}.out"
            wrapper = ["valgrind", "--tool=cachegrind", "--cache-sim=no"]
            wrapper.append(f"--cachegrind-out-file={out}")
            run_ingest(
                url,
                broker,
                part,
                1,
                split_for_publishers(work, 2, workdir, n),
                flood_bin,
                workdir,
                Settings.model_fields["mqtt_receive_maximum"].default,
                wrapper,
            )
            totals[n] = _instructions(out)
            print(f"{n} messages: {totals[n]:,} instructions in all", flush=True)
        per_message = (totals[large] - totals[small]) // (large - small)
        print(f"instructions: {per_message:,} per message (whole ingest process)")
    finally:
        broker.stop()
        drop_database(url)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
