"""The ingest service: MQTT in, committed rows out, acknowledgement only after commit.

Threads: paho's network thread receives messages and puts the messages of each socket
read, as one list, on a bounded inbox; a worker thread parses, decodes, validates and
encodes them into a batch and hands each full batch to a commit thread, which commits it
(readings and dead letters in one transaction, on its own connection) and only then
acknowledges the batch's messages to the broker (paho's manual ack, all PUBACKs of a
batch in one write). The worker builds the next batch while the previous one commits; at
most one batch waits for the commit thread, so three batches are held at most. Batches
commit and are acknowledged in the order they were received. If the database is
unreachable the commit thread retries with backoff and acknowledges nothing meanwhile;
the worker stops when the waiting slot is full, the broker stops sending once
IOT_MQTT_RECEIVE_MAXIMUM messages are unacknowledged, so memory stays bounded, and
everything unacknowledged is redelivered after a crash (persistent session, QoS 1).

That last promise needs the sender to publish at QoS 1: the broker delivers at the lower
QoS, so messages delivered at QoS 0 are counted and warned about (docs/operations.md).
Retained messages are never sent on subscribing, and one delivered anyway is a dead
letter, not readings.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import Counter

from domain.metrics import sync_metrics
from ingest import telemetry
from ingest.dead_letters import DeadLetterPolicy, DeadLetterRow
from ingest.latest import LatestValues
from ingest.mqtt_client import BufferedClient
from ingest.normalise import Row
from ingest.pipeline import Outcome, Pipeline
from ingest.uplink import Rejected
from ingest.writer import BatchEncoder, BatchWriter, WriteResult
from models.logging import log
from models.settings import Settings

# After this long without a new message, a partial batch is committed: under load batches
# grow to IOT_BATCH_MAX_ROWS, when the stream pauses rows don't wait for the timer.
T = TypeVar("T")

IDLE_FLUSH_S = 0.02
MAX_BACKOFF_S = 30.0
# On stop, how long to keep retrying an unreachable database before leaving the rest
# unacknowledged (the broker redelivers it to the next ingest process).
SHUTDOWN_GRACE_S = 10.0
# At most one warning about QoS 0 deliveries per this many seconds.
QOS0_WARNING_INTERVAL_S = 60.0
# Offsets of the arrival times of the messages of one socket read (see _on_messages);
# made once for the first 4,096 of a read.
_MICROSECONDS = tuple(timedelta(microseconds=i) for i in range(4096))


def _apart(arrival: datetime, index: int) -> datetime:
    """The arrival of the index-th message of one socket read (see _on_messages)."""
    return arrival + (_MICROSECONDS[index] if index < 4096 else timedelta(microseconds=index))


class _GivingUp(BaseException):
    """Stopping while the database is unreachable.

    A BaseException so that the per-message "a bug must not stop ingest" handler in the
    pipeline never swallows it."""


@dataclass(slots=True)
class _Session:
    """One thread's database connection and the writer whose temporary tables live in it
    (the worker only looks devices up; the commit thread writes)."""

    conn: psycopg.Connection | None = None
    writer: BatchWriter = field(default_factory=BatchWriter)


@dataclass(slots=True)
class Inbound:
    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool  # sent from the broker's retained store, not as a new publication
    connection: int  # BufferedClient.connection it arrived on
    arrival: datetime
    arrival_monotonic: float


class _Inbox:
    """Received messages on their way from paho's thread to the worker, at most
    `max_messages` at a time. Messages come and go in lists (one socket read's worth), so
    the two threads meet once per read, not once per message.

    When the inbox is full, paho's thread waits until the worker has taken it down to
    half, not for every list taken: waking a thread (on a virtual machine, one on another
    CPU means an exit to the hypervisor) cost more than handing over the few messages one
    list holds, and while it waits TCP pushes back on the broker anyway."""

    def __init__(self, max_messages: int, recheck_s: float = 0.2) -> None:
        self._max = max_messages
        self._recheck_s = recheck_s  # how often a waiting putter looks at accepting()
        self._low_water = max_messages // 2
        self._lists: deque[list[Inbound]] = deque()
        self._count = 0
        lock = threading.Lock()
        self._not_empty = threading.Condition(lock)
        self._room = threading.Condition(lock)
        self._room_wanted = False

    def __len__(self) -> int:
        return self._count

    def put(self, messages: list[Inbound], accepting: Callable[[], bool]) -> int:
        """Queue `messages`, waiting for room as needed; returns how many were queued
        (fewer when `accepting()` turned false while waiting)."""
        queued = 0
        with self._room:
            while queued < len(messages):
                room = self._max - self._count
                if room <= 0:
                    if not accepting():
                        break
                    self._room_wanted = True
                    self._room.wait(self._recheck_s)
                    continue
                part = messages[queued : queued + room]
                self._lists.append(part)
                self._count += len(part)
                queued += len(part)
                self._not_empty.notify()
        return queued

    def get(self, timeout: float) -> list[Inbound] | None:
        """The oldest list of messages, or None after `timeout` seconds without one."""
        with self._not_empty:
            if not self._lists and not self._not_empty.wait_for(lambda: self._lists, timeout):
                return None
            messages = self._lists.popleft()
            self._count -= len(messages)
            if self._room_wanted and self._count <= self._low_water:
                self._room_wanted = False
                self._room.notify()
            return messages


@dataclass(slots=True)
class Batch:
    messages: list[Inbound] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    # The rows in COPY format, encoded by the worker as they come.
    encoded: BatchEncoder = field(default_factory=BatchEncoder)
    dead_letters: list[DeadLetterRow] = field(default_factory=list)
    # Per message: its rows are rows[first:end]; its dead letter is dead_letters[letter]
    # (-1: none). Used to write message by message when the database refuses the batch.
    spans: list[tuple[int, int, int]] = field(default_factory=list)
    formats: dict[str, int] = field(default_factory=dict)  # messages received per format
    qos0: list[str] = field(default_factory=list)  # topics of messages delivered at QoS 0
    started: float = 0.0


@dataclass(slots=True)
class _FlushProgress:
    """How far a flush got, kept across retries so nothing is written twice."""

    refused: bool = False  # the whole batch was refused: writing it in parts
    # Ranges of messages [start, end) still to write, the next one last.
    pending: list[tuple[int, int]] = field(default_factory=list)
    transactions: int = 0  # transactions spent on the parts
    inserted: int = 0
    duplicates: int = 0
    letters: list[DeadLetterRow] = field(default_factory=list)


@dataclass(slots=True)
class Totals:
    """Running totals, for logs and tests."""

    messages: int = 0
    committed_messages: int = 0
    readings: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    batches: int = 0
    refused_batches: int = 0  # batches the database refused whole, then written in parts
    part_transactions: int = 0  # transactions those parts took
    qos0_messages: int = 0


class IngestService:
    """Subscribes, batches, commits, acknowledges. `run()` blocks until `stop()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.totals = Totals()
        # The broker should never send more than IOT_MQTT_RECEIVE_MAXIMUM unacknowledged
        # messages, but Mosquitto before 2.0.13 overshoots its inflight quota once acks
        # flow (tens of thousands under a flood, eclipse/mosquitto#2306). The bound keeps
        # memory flat there too: when full, paho's thread waits and TCP pushes back.
        self._inbox = _Inbox(settings.mqtt_receive_maximum)
        self._stop = threading.Event()
        self._accepting = True
        self._connected = threading.Event()
        self._lookup_db = _Session()
        self._commit_db = _Session(
            writer=BatchWriter(
                settings.latest_flush_interval_s,
                DeadLetterPolicy(
                    settings.dead_letter_samples_per_hour, settings.dead_letter_max_payload_bytes
                ),
                partition_lock_timeout_ms=settings.partition_lock_timeout_ms,
            )
        )
        self._qos0_warned_at = float("-inf")
        # Batches from the worker to the commit thread; None ends the commit thread.
        self._to_commit: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
        self._commit_failed = threading.Event()
        self._commit_error: Exception | None = None
        self._pipeline: Pipeline  # created in run(), once the metric ids are known
        self._message_counters: dict[str, Counter] = {}
        self._client: BufferedClient = self._make_client()
        self._thread: threading.Thread | None = None
        self._give_up_at: float | None = None

    # --- MQTT side (paho's network thread) -----------------------------------------------

    def _make_client(self) -> BufferedClient:
        s = self.settings
        client = BufferedClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=s.mqtt_client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
            fast_publish=True,
        )
        if s.mqtt_username:
            client.username_pw_set(s.mqtt_username, s.mqtt_password)
        if s.mqtt_tls:
            client.tls_set()
        client.reconnect_delay_set(min_delay=1, max_delay=int(MAX_BACKOFF_S))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_messages = self._on_messages
        return client

    def _subscriptions(self) -> list[tuple[str, SubscribeOptions]]:
        group = self.settings.mqtt_share_group
        # A retained message is the last value the broker kept, not a new uplink: never
        # sent on subscribing (and one that comes anyway is a dead letter, see _process).
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
        return [
            (f"$share/{group}/{topic}" if group else topic, options)
            for topic in self.settings.mqtt_topics
        ]

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("mqtt_connect_refused", reason=str(reason_code))
            return
        client.subscribe(self._subscriptions())
        telemetry.set_mqtt_connected(True)
        self._connected.set()
        log.info(
            "mqtt_connected",
            host=self.settings.mqtt_host,
            port=self.settings.mqtt_port,
            session_present=flags.session_present,
            topics=len(self.settings.mqtt_topics),
        )

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        telemetry.set_mqtt_connected(False)
        log.warning("mqtt_disconnected", reason=str(reason_code))

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        """A message paho parsed itself (QoS 2, MQTT v5 properties)."""
        self._on_messages(client, [message])

    def _on_messages(self, client: BufferedClient, messages: Sequence[mqtt.MQTTMessage]) -> None:
        if not self._accepting:
            return  # shutting down: not acknowledged, so the broker delivers it again
        arrival = datetime.now(UTC)
        arrival_monotonic = time.monotonic()
        connection = client.connection
        inbound = []
        for index, message in enumerate(messages):
            try:
                topic = message.topic
            except UnicodeDecodeError:
                topic = message._topic.decode("utf-8", "replace")
            inbound.append(
                Inbound(
                    topic,
                    message.payload,
                    message.mid,
                    message.qos,
                    message.retain,
                    connection,
                    # One microsecond apart: an uplink without a time of its own is keyed
                    # on its arrival, and two of one device in one read (a backlog after
                    # an outage) must not become one reading.
                    _apart(arrival, index),
                    arrival_monotonic,
                )
            )
        # Those not queued (stopping while the inbox was full) are not acknowledged: the
        # broker delivers them again.
        telemetry.UNACKED.inc(self._inbox.put(inbound, lambda: self._accepting))

    # --- database access with retry -------------------------------------------------------

    def _with_db(
        self, operation: Callable[[psycopg.Connection], T], what: str, session: _Session
    ) -> T:
        """Run `operation(conn)` on `session`'s connection, reconnecting and retrying with
        backoff while the database is unreachable. Raises _GivingUp when stopping and the
        grace period has passed."""
        delay = 0.5
        while True:
            try:
                if session.conn is None or session.conn.closed:
                    session.conn = psycopg.connect(
                        self.settings.psycopg_url, autocommit=True, connect_timeout=5
                    )
                    session.writer.forget_connection()
                    telemetry.set_database_available(True)
                return operation(session.conn)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
                # The server rolled the transaction back whole; the connection is fine and
                # running it again is safe.
                telemetry.DB_RETRIES.inc()
                log.warning("transaction_retried", during=what, error=str(exc).strip()[:200])
                continue
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if session.conn is not None:
                    session.conn.close()
                session.conn = None
                telemetry.set_database_available(False)
                telemetry.DB_RETRIES.inc()
                log.warning(
                    "db_unavailable", during=what, retry_in_s=delay, error=str(exc).strip()[:200]
                )
                if self._give_up_at is not None:
                    # At start-up nothing was taken yet, so there is nothing to save.
                    if what == "start_up" or time.monotonic() > self._give_up_at:
                        raise _GivingUp from exc
                    time.sleep(min(delay, 1.0))
                else:
                    self._stop.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)

    # --- processing (worker thread) -------------------------------------------------------

    def _judge(self, messages: list[Inbound]) -> list[Outcome | None]:
        """The pipeline's outcome of each message of one read, judged together so that the
        uplinks JavaScript codecs decode cross into the sandbox together (ingest/codecs);
        None for a retained message, which `_process` dead-letters without judging."""
        judged = [m for m in messages if not m.retain]
        outcomes = iter(
            self._pipeline.handle_many(
                lambda operation: self._with_db(operation, "device_lookup", self._lookup_db),
                [(m.topic, m.payload, m.arrival) for m in judged],
            )
            if judged
            else ()
        )
        return [None if m.retain else next(outcomes) for m in messages]

    def _process(self, message: Inbound, outcome: Outcome | None, batch: Batch) -> None:
        batch.messages.append(message)
        self.totals.messages += 1
        if (message.qos == 0 or message.retain) and self._unusual_delivery(message, batch):
            return
        assert outcome is not None
        batch.formats[outcome.format] = batch.formats.get(outcome.format, 0) + 1
        first = len(batch.rows)
        batch.rows.extend(outcome.rows)
        batch.encoded.add(outcome.rows)
        letter = -1
        if outcome.rejection is not None:
            letter = len(batch.dead_letters)
            self._attribute(message, outcome.rejection)
            self._dead_letter(batch, message, outcome.rejection)
        batch.spans.append((first, len(batch.rows), letter))

    def _unusual_delivery(self, message: Inbound, batch: Batch) -> bool:
        """Note a QoS 0 delivery; dead-letter a retained one (True: nothing more to do)."""
        if message.qos == 0:
            batch.qos0.append(message.topic)
        if not message.retain:
            return False
        batch.formats["retained"] = batch.formats.get("retained", 0) + 1
        letter = len(batch.dead_letters)
        rejection = Rejected(
            "retained",
            "the broker sent its retained copy of an earlier message, not a new uplink; "
            "publish uplinks without the retain flag",
        )
        self._attribute(message, rejection)
        self._dead_letter(batch, message, rejection)
        batch.spans.append((len(batch.rows), len(batch.rows), letter))
        return True

    def _attribute(self, message: Inbound, rejection: Rejected) -> None:
        # When stopping without a database, the letter goes unattributed rather than the
        # message being dropped from a batch that may hold its rows already.
        with contextlib.suppress(_GivingUp):
            self._pipeline.attribute(
                lambda operation: self._with_db(operation, "attribution", self._lookup_db),
                message.topic,
                rejection,
            )

    def _dead_letter(self, batch: Batch, message: Inbound, rejected: Rejected) -> None:
        batch.dead_letters.append(
            DeadLetterRow(
                topic=message.topic,
                payload=message.payload,
                reason=rejected.reason,
                detail=rejected.detail,
                municipality_id=rejected.municipality_id,
                device_id=rejected.device_id,
                received_at=message.arrival,
            )
        )

    def _flush(self, batch: Batch) -> None:
        """Commit the batch, then acknowledge its messages (commit thread)."""
        started = time.perf_counter()

        progress = _FlushProgress()
        writer = self._commit_db.writer

        def write(conn: psycopg.Connection) -> WriteResult:
            if not progress.refused:
                try:
                    result = writer.write_encoded(conn, batch.encoded, batch.dead_letters)
                    progress.letters = batch.dead_letters
                    return result
                except (psycopg.OperationalError, psycopg.InterfaceError):
                    raise
                except psycopg.Error as exc:
                    # Not the connection: something in the rows, e.g. a sensor deleted
                    # since the device cache was loaded. Find the messages it is about
                    # instead of retrying a batch that can never commit.
                    log.error("batch_refused", messages=len(batch.messages), error=str(exc)[:300])
                    writer.forget_connection()
                    self._pipeline.directory.invalidate()
                    progress.refused = True
                    progress.pending = [(0, len(batch.messages))]
                    self.totals.refused_batches += 1
            return self._write_bisecting(conn, batch, progress)

        result = self._with_db(write, "batch_commit", self._commit_db)
        elapsed = time.perf_counter() - started
        self._acknowledge(batch.messages)
        if writer.latest.due():
            self._flush_latest()
        now = time.monotonic()
        for message in batch.messages:
            telemetry.LAG_SECONDS.observe(now - message.arrival_monotonic)
        telemetry.BATCH_SECONDS.observe(elapsed)
        telemetry.BATCH_ROWS.observe(len(batch.rows))
        telemetry.READINGS_WRITTEN.inc(result.inserted)
        telemetry.READINGS_DUPLICATE.inc(result.duplicates)
        for letter in progress.letters:
            telemetry.DEAD_LETTERS.labels(letter.reason).inc()
        t = self.totals
        t.committed_messages += len(batch.messages)
        t.readings += result.inserted
        t.duplicates += result.duplicates
        t.dead_letters += result.dead_letters
        t.batches += 1
        log.debug(
            "batch_committed",
            messages=len(batch.messages),
            inserted=result.inserted,
            duplicates=result.duplicates,
            dead_letters=result.dead_letters,
            duration_ms=round(elapsed * 1000, 2),
        )

    def _write_bisecting(
        self, conn: psycopg.Connection, batch: Batch, progress: _FlushProgress
    ) -> WriteResult:
        """Write a refused batch in halves, each in its own transaction, halving again
        whatever the database refuses: k bad messages among n cost about 2k·log2(n)
        transactions instead of n, and a message refused on its own becomes a
        `write_error` dead letter. Resumes where a lost connection interrupted it."""
        writer = self._commit_db.writer
        while progress.pending:
            start, end = progress.pending[-1]
            rows = batch.rows[batch.spans[start][0] : batch.spans[end - 1][1]]
            letters = [batch.dead_letters[i] for _, _, i in batch.spans[start:end] if i >= 0]
            progress.transactions += 1
            self.totals.part_transactions += 1
            try:
                result = writer.write(conn, rows, letters)
            except (psycopg.OperationalError, psycopg.InterfaceError):
                raise
            except psycopg.Error as exc:
                if end - start > 1:
                    middle = (start + end) // 2
                    progress.pending[-1] = (middle, end)
                    progress.pending.append((start, middle))
                    continue
                message = batch.messages[start]
                letters = [
                    DeadLetterRow(
                        topic=message.topic,
                        payload=message.payload,
                        reason="write_error",
                        detail=f"the database refused this message's rows: {exc}",
                        municipality_id=letters[0].municipality_id if letters else None,
                        device_id=letters[0].device_id if letters else None,
                        received_at=message.arrival,
                    )
                ]
                result = writer.write(conn, [], letters)
            progress.pending.pop()
            progress.inserted += result.inserted
            progress.duplicates += result.duplicates
            progress.letters.extend(letters)
        return WriteResult(progress.inserted, progress.duplicates, len(progress.letters))

    def _acknowledge(self, messages: list[Inbound]) -> None:
        # Messages of an earlier connection are not acknowledged: the broker redelivers
        # them and their rows are absorbed as duplicates (BufferedClient.ack_current).
        self._client.ack_current((m.mid, m.qos, m.connection) for m in messages)
        telemetry.UNACKED.dec(len(messages))

    def _commit_loop(self) -> None:
        """The commit thread: commit and acknowledge handed-over batches in order, and
        upsert deferred latest values when they are due and no batch comes. After a
        failure it keeps taking batches without committing them, so the worker never
        waits for it; their messages stay unacknowledged and the broker delivers them
        again."""
        latest = self._commit_db.writer.latest
        while True:
            try:
                wait = None if self._commit_failed.is_set() else self._latest_wait(latest)
                batch = self._to_commit.get(timeout=wait)
            except queue.Empty:
                batch = None  # no batch came in time: only the latest values are due
            else:
                if batch is None:
                    break
            if self._commit_failed.is_set():
                continue
            try:
                if batch is None:
                    self._flush_latest()
                else:
                    self._flush(batch)
            except _GivingUp:
                self._commit_failed.set()
            except Exception as exc:  # a bug: stop the service rather than hang it
                log.error(
                    "commit_failed", exc_info=True, messages=len(batch.messages) if batch else 0
                )
                self._commit_error = exc
                self._commit_failed.set()
        if not self._commit_failed.is_set():
            self._flush_latest()

    @staticmethod
    def _latest_wait(latest: LatestValues) -> float | None:
        """How long to wait for a batch before upserting held latest values ourselves."""
        if not len(latest):
            return None
        return max(0.0, latest.seconds_until_due())

    def _flush_latest(self) -> None:
        writer = self._commit_db.writer
        try:
            keys = self._with_db(writer.flush_latest, "latest_flush", self._commit_db)
            telemetry.LATEST_FLUSHED.inc(keys)
        except _GivingUp:
            # Their markers stay in latest_pending; the maintenance job repairs them.
            log.error("latest_values_not_flushed", keys=len(writer.latest))

    def _hand_over(self, batch: Batch) -> None:
        """Queue `batch` for the commit thread; waits while one batch is already waiting."""
        # Counted per batch: the counter's lock and label lookup per message cost about 3 %
        # of the worker's time.
        for fmt, received in batch.formats.items():
            counter = self._message_counters.get(fmt)
            if counter is None:
                counter = self._message_counters[fmt] = telemetry.MESSAGES.labels(fmt)
            counter.inc(received)
        if batch.qos0:
            self._note_qos0(batch.qos0)
        self._to_commit.put(batch)
        if self._commit_error is not None:
            raise RuntimeError("the commit thread failed") from self._commit_error
        if self._commit_failed.is_set():
            raise _GivingUp

    def _note_qos0(self, topics: list[str]) -> None:
        """Count messages delivered at QoS 0 and warn at most once a minute: the broker
        delivers at the lower of the publisher's and the subscriber's QoS, so such a
        message was published at QoS 0 and is lost, not redelivered, if ingest or the
        broker stops before it is stored (docs/operations.md says how to fix the sender)."""
        telemetry.QOS0_MESSAGES.inc(len(topics))
        self.totals.qos0_messages += len(topics)
        now = time.monotonic()
        if now - self._qos0_warned_at >= QOS0_WARNING_INTERVAL_S:
            self._qos0_warned_at = now
            log.warning(
                "qos0_messages",
                messages=len(topics),
                topic=topics[0],
                hint="the sender publishes at QoS 0: these are lost if ingest or the broker "
                "stops before they are stored; set QoS 1 in the network server's integration",
            )

    def _work(self) -> None:
        committer = threading.Thread(target=self._commit_loop, name="ingest-commit", daemon=True)
        committer.start()
        try:
            self._consume()
        except _GivingUp:
            log.error("shutdown_without_database", unacknowledged=len(self._inbox))
        finally:
            self._to_commit.put(None)
            committer.join()

    def _consume(self) -> None:
        s = self.settings
        batch = Batch()
        while True:
            if batch.messages:
                remaining = s.batch_max_delay_s - (time.monotonic() - batch.started)
                timeout = max(0.0, min(IDLE_FLUSH_S, remaining))
            else:
                timeout = 0.2
            messages = self._inbox.get(timeout)
            # Not acknowledged if stopping without a database (_GivingUp) while judging:
            # the broker delivers them again.
            outcomes = self._judge(messages) if messages else []
            for message, outcome in zip(messages or (), outcomes, strict=True):
                if not batch.messages:
                    batch.started = time.monotonic()
                self._process(message, outcome, batch)
                if (
                    len(batch.rows) >= s.batch_max_rows
                    or time.monotonic() - batch.started >= s.batch_max_delay_s
                ):
                    self._hand_over(batch)
                    batch = Batch()
            if batch.messages and (
                messages is None or time.monotonic() - batch.started >= s.batch_max_delay_s
            ):
                self._hand_over(batch)
                batch = Batch()
            if self._stop.is_set() and not batch.messages and not len(self._inbox):
                return

    # --- lifecycle ------------------------------------------------------------------------

    def run(self) -> None:
        """Connect, consume until stop() (or SIGTERM in the CLI), then shut down cleanly."""
        s = self.settings
        try:
            metric_ids = self._with_db(sync_metrics, "start_up", self._lookup_db)
        except _GivingUp:
            return
        self._pipeline = Pipeline(s, metric_ids)
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = s.mqtt_session_expiry_s
        properties.ReceiveMaximum = s.mqtt_receive_maximum
        self._client.connect_async(
            s.mqtt_host, s.mqtt_port, keepalive=30, clean_start=False, properties=properties
        )
        self._client.loop_start()
        log.info("ingest_started", client_id=s.mqtt_client_id, group=s.mqtt_share_group)
        try:
            self._work()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        for session in (self._lookup_db, self._commit_db):
            if session.conn is not None:
                session.conn.close()
        t = self.totals
        log.info(
            "ingest_stopped",
            messages=t.messages,
            committed=t.committed_messages,
            readings=t.readings,
            duplicates=t.duplicates,
            dead_letters=t.dead_letters,
        )

    def start(self) -> None:
        """Run in a background thread (tests, embedding)."""
        self._thread = threading.Thread(target=self.run, name="ingest", daemon=True)
        self._thread.start()

    @property
    def backlog(self) -> int:
        """Messages received and not yet taken by the worker."""
        return len(self._inbox)

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self._connected.wait(timeout)

    def request_stop(self) -> None:
        """Stop taking messages; run() then commits and acknowledges what it took."""
        self._accepting = False
        self._give_up_at = time.monotonic() + SHUTDOWN_GRACE_S
        self._stop.set()

    def stop(self, timeout: float = 30.0) -> None:
        """request_stop() and wait for the service thread to finish."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
