"""``evaluate``: run the analytics rules over recent readings and persist alerts.

Run once from cron (``*/5 * * * * python -m cli evaluate``) or keep it running with
``--every 300``. Each municipality is evaluated in its own unit of work; one
municipality's bad settings are logged and do not stop the others.
"""

from __future__ import annotations

import argparse
import time

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
    p.set_defaults(handler=run_evaluate)


def evaluate_all(
    conn: psycopg.Connection, slug: str | None = None, zone: str = "Europe/Copenhagen"
) -> int:
    """Evaluate each (or one) municipality; returns how many failed (0 = all fine)."""
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
            result = evaluate_municipality(conn, municipality_id, zone=zone)
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
    while True:
        try:
            with psycopg.connect(settings.psycopg_url, autocommit=True) as conn:
                failed = evaluate_all(conn, args.municipality, settings.local_timezone)
        except psycopg.OperationalError as exc:
            # A database outage must not end the --every scheduler: log it and try again at
            # the next tick (the window reloads what was missed). A single run exits 1.
            failed = 1
            log.error("evaluate.database_unavailable", error=str(exc).splitlines()[0])
        if not args.every:
            return 1 if failed else 0
        time.sleep(args.every)
