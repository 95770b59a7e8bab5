"""Ingest's timed garbage collection: cycles are still collected, and 0 keeps Python's."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Iterator

import pytest

from ingest.garbage import collect_periodically


class _Node:
    def __init__(self) -> None:
        self.peer: _Node | None = None


@pytest.fixture
def restore_gc() -> Iterator[None]:
    """The test process shares the collector: put it back as it was."""
    yield
    gc.unfreeze()
    gc.enable()


def _cycle() -> weakref.ref:
    a, b = _Node(), _Node()
    a.peer, b.peer = b, a
    return weakref.ref(a)


def test_cycles_are_collected_on_the_timer_with_automatic_collection_off(restore_gc) -> None:
    stop = threading.Event()
    thread = collect_periodically(0.05, stop)
    assert thread is not None and not gc.isenabled()
    garbage = _cycle()
    deadline = time.monotonic() + 5
    while garbage() is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert garbage() is None, "the timer did not collect an unreachable cycle"
    stop.set()
    thread.join(timeout=2)
    assert not thread.is_alive()


def test_interval_zero_leaves_pythons_collection_alone(restore_gc) -> None:
    assert collect_periodically(0, threading.Event()) is None
    assert gc.isenabled()
    garbage = _cycle()
    gc.collect()
    assert garbage() is None
