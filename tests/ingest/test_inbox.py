"""The hand-over from paho's thread to the worker: bounded, in order, and a full inbox
holds paho's thread until the worker has taken it down to half."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from ingest.subscriber import Inbound, _Inbox


def messages(first: int, n: int) -> list[Inbound]:
    now = datetime.now(UTC)
    return [Inbound("t", b"", mid, 1, False, 0, now, 0.0) for mid in range(first, first + n)]


def test_lists_come_out_in_order_and_are_split_at_the_bound() -> None:
    inbox = _Inbox(10)
    assert inbox.put(messages(0, 4), lambda: True) == 4
    assert inbox.put(messages(4, 6), lambda: True) == 6
    assert len(inbox) == 10
    assert [m.mid for m in inbox.get(0.1)] == [0, 1, 2, 3]
    assert [m.mid for m in inbox.get(0.1)] == [4, 5, 6, 7, 8, 9]
    assert inbox.get(0.05) is None


def test_a_full_inbox_holds_the_putter_until_half_is_taken() -> None:
    inbox = _Inbox(8, recheck_s=60.0)  # only a wake-up lets the putter go on
    for first in range(0, 8, 2):
        inbox.put(messages(first, 2), lambda: True)
    queued: list[int] = []
    putter = threading.Thread(
        daemon=True, target=lambda: queued.append(inbox.put(messages(8, 3), lambda: True))
    )
    putter.start()
    inbox.get(1.0)  # 6 left: above half, the putter goes on waiting
    time.sleep(0.2)
    assert not queued and len(inbox) == 6
    inbox.get(1.0)  # 4 left: half, it is woken and queues its 3 messages
    putter.join(2.0)
    assert queued == [3] and len(inbox) == 7
    taken = [m.mid for _ in range(3) for m in inbox.get(1.0)]
    assert taken == [4, 5, 6, 7, 8, 9, 10]


def test_a_waiting_putter_gives_up_when_no_longer_accepting() -> None:
    inbox = _Inbox(2, recheck_s=0.01)
    inbox.put(messages(0, 2), lambda: True)
    accepting = threading.Event()
    accepting.set()
    result: list[int] = []
    putter = threading.Thread(
        target=lambda: result.append(inbox.put(messages(2, 2), accepting.is_set))
    )
    putter.start()
    time.sleep(0.05)
    accepting.clear()
    putter.join(2.0)
    assert result == [0] and len(inbox) == 2


def test_the_worker_is_woken_by_a_put() -> None:
    inbox = _Inbox(10)
    got: list[list[Inbound] | None] = []
    worker = threading.Thread(daemon=True, target=lambda: got.append(inbox.get(5.0)))
    worker.start()
    time.sleep(0.05)
    started = time.monotonic()
    inbox.put(messages(0, 1), lambda: True)
    worker.join(5.0)
    assert got and got[0] is not None and got[0][0].mid == 0
    assert time.monotonic() - started < 1.0
