"""A bug in the commit thread stops ingest with the error logged, instead of killing the
thread while it reports the error and leaving the service waiting on it forever."""

from __future__ import annotations

import logging
import threading

import pytest

from ingest.subscriber import Batch, IngestService
from models.settings import Settings


class CommitBugError(Exception):
    """Stands for a programming error in the commit path (not a database failure)."""


def test_a_commit_thread_bug_is_logged_and_stops_the_worker(caplog) -> None:
    service = IngestService(Settings())

    def broken_flush(batch: Batch) -> None:
        raise CommitBugError("an index out of range, say")

    service._flush = broken_flush  # type: ignore[method-assign]
    committer = threading.Thread(target=service._commit_loop, daemon=True)
    with caplog.at_level(logging.ERROR, logger="kommune_iot"):
        committer.start()
        service._to_commit.put(Batch())
        service._to_commit.put(None)
        committer.join(timeout=10)
    assert not committer.is_alive(), "the commit thread did not end"
    (record,) = [r for r in caplog.records if r.getMessage() == "commit_failed"]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert isinstance(record.exc_info[1], CommitBugError)
    assert record.fields == {"messages": 0}
    # The worker's next hand-over stops the service with the cause attached.
    with pytest.raises(RuntimeError, match="the commit thread failed") as stopped:
        service._hand_over(Batch())
    assert isinstance(stopped.value.__cause__, CommitBugError)
