"""What the audit trigger (migration 0018, models/audit.py) costs: a staff write that is
recorded, and an ingest write that the trigger lets through without recording.

In a fresh migrated database, each round times the same statements with the trigger on
and off (ALTER TABLE ... DISABLE TRIGGER, as the superuser), interleaved, and reports the
median per-row cost of each and their ratio:

* staff: ``UPDATE sensors SET name = ...`` one row per statement as iot_staff, in one
  transaction, with a request's audit context set (the trigger writes an event per row);
* ingest: ``INSERT INTO dead_letters ... SELECT`` of 10 x rows in one statement as
  iot_ingest, with no context (the trigger returns at once for every row).

    .venv/bin/python bench/bench_audit.py --rows 2000 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.db import create_database, drop_database, migrate
from models.db_roles import INGEST, STAFF, enable_logins, role_url

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _timed(conn: psycopg.Connection, statement: str, params: list[tuple]) -> float:
    """µs per row of `statement` run once per parameter tuple, in one transaction."""
    started = time.perf_counter()
    with conn.transaction():
        for p in params:
            conn.execute(statement, p)
    return (time.perf_counter() - started) / len(params) * 1e6


def _timed_batch(conn: psycopg.Connection, start: int, rows: int) -> float:
    """µs per row of one INSERT ... SELECT of `rows` dead letters (ingest writes batches)."""
    started = time.perf_counter()
    conn.execute(
        "INSERT INTO dead_letters (topic, payload, reason) "
        "SELECT 't/' || g, 'x'::bytea, 'decode_error' FROM generate_series(%s::int, %s::int) g",
        (start, start + rows - 1),
    )
    return (time.perf_counter() - started) / rows * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--admin-url", default=ADMIN_URL)
    args = parser.parse_args()
    url = args.admin_url.rsplit("/", 1)[0] + f"/iot_bench_audit_{uuid.uuid4().hex[:8]}"
    create_database(url)
    try:
        migrate(url, timescaledb="off")
        with psycopg.connect(url, autocommit=True) as admin:
            enable_logins(admin, {})
            m = admin.execute(
                "INSERT INTO municipalities (slug, name) VALUES ('bench', 'Bench') RETURNING id"
            ).fetchone()[0]
            sensor = admin.execute(
                "INSERT INTO sensors (municipality_id, external_id, name, kind) "
                "VALUES (%s, 's1', 'n', 'climate') RETURNING id",
                (m,),
            ).fetchone()[0]
            context = json.dumps({"municipality_id": m, "actor_kind": "key", "actor_id": "1",
                                  "actor_name": "bench", "client": "127.0.0.1",
                                  "method": "PATCH", "path": "/x", "request_id": "r",
                                  "action": "sensor.update"})  # fmt: skip
            with (
                psycopg.connect(role_url(url, STAFF), autocommit=True) as staff,
                psycopg.connect(role_url(url, INGEST), autocommit=True) as ingest,
            ):
                staff.execute("SELECT set_config('iot.audit', %s, false)", (context,))
                results: dict[str, list[float]] = {
                    "staff_on": [], "staff_off": [], "ingest_on": [], "ingest_off": []
                }  # fmt: skip
                n = 0
                for _ in range(args.rounds):
                    for state in ("on", "off"):
                        action = "ENABLE" if state == "on" else "DISABLE"
                        for table in ("sensors", "dead_letters"):
                            admin.execute(f"ALTER TABLE {table} {action} TRIGGER iot_audit")
                        names = [(f"name {n + i}", sensor) for i in range(args.rows)]
                        n += args.rows
                        results[f"staff_{state}"].append(
                            _timed(staff, "UPDATE sensors SET name = %s WHERE id = %s", names)
                        )
                        results[f"ingest_{state}"].append(_timed_batch(ingest, n, args.rows * 10))
                        n += args.rows * 10
                admin.execute("ALTER TABLE sensors ENABLE TRIGGER iot_audit")
                admin.execute("ALTER TABLE dead_letters ENABLE TRIGGER iot_audit")
                events = admin.execute("SELECT count(*) FROM audit_events").fetchone()[0]
    finally:
        drop_database(url)
    medians = {k: statistics.median(v) for k, v in results.items()}
    print(f"rows per measurement {args.rows}, rounds {args.rounds}, audit events {events}")
    for kind in ("staff", "ingest"):
        on, off = medians[f"{kind}_on"], medians[f"{kind}_off"]
        print(f"{kind}: trigger on {on:.1f} us/row, off {off:.1f} us/row, ratio {on / off:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
