"""``replay-dataset``: a real public dataset through ingest and the analytics.

    python -m cli replay-dataset windesheim --municipality datasets
    python -m cli replay-dataset birmingham --municipality datasets --limit 2000

Registers the dataset's sensors under the municipality (created if missing), sends the
dataset's rows as native messages through ingest's pipeline and writer
(simulator/dataset_replay.py), then prints what the analytics find, as JSON. Data from
``--root`` (default ../shared/datasets beside the repository).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson
import psycopg

from models.logging import configure_logging
from models.settings import get_settings
from simulator import dataset_replay
from simulator.datasets import DATASETS, NAMES, READERS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "replay-dataset", help="replay a real public dataset through ingest and the analytics"
    )
    p.add_argument("dataset", choices=NAMES)
    p.add_argument("--municipality", default="datasets", metavar="SLUG")
    p.add_argument("--root", type=Path, default=DATASETS, help="the datasets folder")
    p.add_argument("--limit", type=int, default=None, help="only the first N rows")
    p.add_argument("--findings-only", action="store_true", help="skip the replay")
    p.set_defaults(handler=run)


def replay_dataset(
    conn: psycopg.Connection, dataset: str, slug: str, root: Path, limit: int | None
) -> dict:
    municipality_id = conn.execute(
        "INSERT INTO municipalities (slug, name) VALUES (%s, %s) "
        "ON CONFLICT (slug) DO UPDATE SET slug = EXCLUDED.slug RETURNING id",
        (slug, slug),
    ).fetchone()[0]
    sensors, messages = READERS[dataset](root=root, limit=limit)
    dataset_replay.register(conn, municipality_id, sensors)
    started = time.perf_counter()
    result = dataset_replay.replay(conn, slug, messages)
    return {
        "dataset": dataset,
        "municipality_id": municipality_id,
        "sensors": len(sensors),
        **result.as_dict(),
        "seconds": round(time.perf_counter() - started, 1),
    }


def findings(conn: psycopg.Connection, dataset: str, municipality_id: int) -> dict:
    if dataset in ("windesheim", "uci"):
        return {"rooms": dataset_replay.room_findings(conn, municipality_id)}
    if dataset == "birmingham":
        zones = dataset_replay.parking_findings(conn, municipality_id)
        return {
            "car_parks": [
                {k: v for k, v in z.items() if k != "weekday_hour_buckets"} for z in zones
            ]
        }
    return {"forecast": dataset_replay.bin_forecast_findings(conn, municipality_id)}


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure_logging(settings)
    with psycopg.connect(settings.psycopg_url, autocommit=True) as conn:
        if args.findings_only:
            row = conn.execute(
                "SELECT id FROM municipalities WHERE slug = %s", (args.municipality,)
            ).fetchone()
            if row is None:
                print(f"no municipality {args.municipality!r}", file=sys.stderr)
                return 1
            report = {"municipality_id": row[0]}
        else:
            report = replay_dataset(conn, args.dataset, args.municipality, args.root, args.limit)
        report["findings"] = findings(conn, args.dataset, report["municipality_id"])
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0
