"""``ingest``: run the MQTT ingest service until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from ingest import telemetry
from ingest.garbage import collect_periodically
from ingest.subscriber import IngestService
from models.logging import configure_logging, log
from models.settings import get_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("ingest", help="subscribe to MQTT and store readings")
    p.set_defaults(handler=run_ingest)


# The commit thread waits for PostgreSQL about ten times per batch and after each reply
# must take the GIL back from the worker, which by default keeps it for up to 5 ms: one
# process then did 10,500 messages/s where it does 12,000 at 1 ms (BENCHMARKS.md).
GIL_SWITCH_INTERVAL_S = 0.001


def run_ingest(args: argparse.Namespace) -> int:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    settings = get_settings()
    configure_logging(settings)
    if os.environ.get("IOT_APPLICATION_MUNICIPALITIES"):
        # Ignored like any unknown variable, so say it: the mapping is in the database now.
        log.warning(
            "setting_not_read",
            setting="IOT_APPLICATION_MUNICIPALITIES",
            instead="python -m cli admin map-application",
        )
    telemetry.serve(settings.ingest_metrics_port, settings.ingest_metrics_host)
    service = IngestService(settings)

    def _stop(signum: int, frame: object) -> None:
        # Only flags the stop; run() then commits, acknowledges and disconnects.
        service.request_stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stop_collecting = threading.Event()
    collect_periodically(settings.ingest_gc_interval_s, stop_collecting)
    try:
        service.run()
    finally:
        stop_collecting.set()
    return 0
