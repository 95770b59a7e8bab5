"""``deliver``: send the outbox's due deliveries (alert notices, data-target batches).

Keep it running (``make up`` starts it); ``--until-idle`` delivers what is due and exits
(tests, cron). Any number of workers may run at once: each claims rows with SKIP LOCKED.
"""

from __future__ import annotations

import argparse
import signal

from models.logging import configure_logging, log
from models.settings import get_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "deliver", help="deliver alert notices and data-target batches from the outbox"
    )
    p.add_argument(
        "--until-idle", action="store_true", help="exit once nothing is due instead of waiting"
    )
    p.set_defaults(handler=run_deliver)


def run_deliver(args: argparse.Namespace) -> int:
    # Imported here: every other command's start-up would pay for the HTTP and SMTP clients.
    from outbound.worker import DeliveryWorker

    settings = get_settings()
    configure_logging(settings)
    worker = DeliveryWorker(settings)

    def _stop(signum: int, frame: object) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("deliver.started", threads=settings.deliver_concurrency)
    try:
        totals = worker.run(until_idle=args.until_idle)
    except RuntimeError:
        return 1  # logged by the thread that failed
    log.info(
        "deliver.stopped",
        delivered=totals.delivered,
        failed=totals.failed,
        dead=totals.dead,
        unconfirmed=totals.unconfirmed,
        digested=totals.digests,
        escalations=totals.escalations,
    )
    return 0
