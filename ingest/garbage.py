"""Cyclic garbage collection for the ingest process: on a timer instead of by allocations.

CPython's collector runs whenever allocations outnumber deallocations by 700, and every
message leaves rows, a batch entry and the like alive until its batch commits: the
collector then walked those young objects about once per 40 messages and the whole heap
every few seconds, and about 8 % of the ingest process's CPU was spent inside it
(BENCHMARKS.md). Ingest makes no reference cycles per message (40,000 messages with the
collector off left none to collect), so `collect_periodically` freezes what start-up
allocated, turns the automatic collector off and runs a full collection every interval
instead, for the cycles that rare paths (errors, reconnects) may leave.
"""

from __future__ import annotations

import gc
import threading
import time

from models.logging import log


def collect_periodically(interval_s: float, stop: threading.Event) -> threading.Thread | None:
    """Collect every `interval_s` seconds in a daemon thread until `stop` is set; with
    `interval_s` 0, leave Python's automatic collection as it is and return None."""
    if interval_s <= 0:
        return None
    gc.freeze()  # start-up's objects live as long as the process: never walk them again
    gc.disable()

    def run() -> None:
        while not stop.wait(interval_s):
            started = time.perf_counter()
            found = gc.collect()
            log.debug(
                "garbage_collected",
                unreachable=found,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )

    thread = threading.Thread(target=run, name="ingest-gc", daemon=True)
    thread.start()
    return thread
