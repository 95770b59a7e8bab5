"""``evaluate``: run the analytics rules over recent readings and persist alerts.

Run once from cron (``*/5 * * * * python -m cli evaluate``) or keep it running with
``--every 300``. Each municipality is evaluated in its own unit of work; one
municipality's bad settings are logged and do not stop the others.

With ``--every``, cycles after the first are incremental: only sensors whose latest
reading is newer than the previous cycle's start (less ``LATENESS``, for uplinks that
arrive late) are judged again; every ``--full-every`` cycles judges all of them, which
also picks up readings that arrived later than that.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

import psycopg

from analytics.evaluation import evaluate_municipality
from analytics.thresholds import ThresholdsError
from models.logging import configure_logging, log
from models.settings import get_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="evaluate alert rules over recent readings (cron or --every)"
    )
    p.add_argument("--every", type=float, default=0, help="repeat every N seconds")
    p.add_argument("--municipality", metavar="SLUG", help="only this municipality")
    p.add_argument(
        "--full-every",
        type=int,
        default=12,
        metavar="N",
        help="with --every: judge every sensor each N-th cycle, the others only sensors "
        "with new data (default 12: hourly at --every 300; 1: always all)",
    )
    p.set_defaults(handler=run_evaluate)


LATENESS = timedelta(minutes=10)


def evaluate_all(
    conn: psycopg.Connection,
    slug: str | None = None,
    zone: str = "Europe/Copenhagen",
    changed_since: datetime | None = None,
    now: datetime | None = None,
) -> int:
    """Evaluate each (or one) municipality; returns how many failed (0 = all fine).
    `changed_since`: only sensors with newer data (see evaluate_municipality)."""
    query = "SELECT id, slug FROM municipalities"
    params: tuple = ()
    if slug:
        query += " WHERE slug = %s"
        params = (slug,)
    municipalities = conn.execute(query + " ORDER BY id", params).fetchall()
    if slug and not municipalities:
        log.error("evaluate.unknown_municipality", slug=slug)
        return 1
    failed = 0
    for municipality_id, municipality_slug in municipalities:
        started = time.perf_counter()
        try:
            result = evaluate_municipality(
                conn, municipality_id, now=now, zone=zone, changed_since=changed_since
            )
        except ThresholdsError as exc:
            failed += 1
            log.error("evaluate.bad_thresholds", municipality=municipality_slug, error=str(exc))
            continue
        log.info(
            "evaluate.done",
            municipality=municipality_slug,
            active=result.active,
            resolved=result.resolved,
            duration_ms=round(1000 * (time.perf_counter() - started), 1),
        )
    return failed


def run_evaluate(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure_logging(settings)
    cycle = 0
    previous_start: datetime | None = None
    while True:
        started = datetime.now(UTC)
        full = previous_start is None or args.full_every <= 1 or cycle % args.full_every == 0
        changed_since = None if full else previous_start - LATENESS
        try:
            with psycopg.connect(settings.psycopg_url, autocommit=True) as conn:
                failed = evaluate_all(
                    conn, args.municipality, settings.local_timezone, changed_since
                )
            previous_start = started
            cycle += 1
        except psycopg.OperationalError as exc:
            # A database outage must not end the --every scheduler: log it and try again at
            # the next tick (the next cycle is a full one). A single run exits 1.
            failed = 1
            previous_start, cycle = None, 0
            log.error("evaluate.database_unavailable", error=str(exc).splitlines()[0])
        if not args.every:
            return 1 if failed else 0
        time.sleep(args.every)
