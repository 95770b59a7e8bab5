"""At least once, exactly once stored: broker restarts, database outages, SIGTERM and
kill -9 in the middle of a stream, each followed by an exact count."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from ingest.subscriber import IngestService
from tests.ingest.conftest import count, wait_for
from tests.processes import PrivateBroker, TcpProxy, child_env

START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def sample(i: int) -> bytes:
    """Message i: one CO2 reading at a time unique to i, so rows map back to messages."""
    return orjson.dumps(
        {"time": (START + timedelta(seconds=i)).isoformat(), "readings": {"co2_ppm": 400 + i % 900}}
    )


class StreamPublisher:
    """Publishes QoS 1 through broker restarts (persistent session, automatic reconnect)."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-stream-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.reconnect_delay_set(0.2, 1)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port, clean_start=False)
        self.client.loop_start()
        self.infos: list[mqtt.MQTTMessageInfo] = []

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish once connected; a message refused for want of a connection is sent
        again (a possible duplicate, as a real gateway would produce)."""
        while True:
            wait_for(self.client.is_connected, 30, "publisher connection")
            info = self.client.publish(topic, payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_NO_CONN:
                self.infos.append(info)
                return

    def wait_all_acknowledged(self, timeout: float = 60) -> None:
        wait_for(lambda: all(i.is_published() for i in self.infos), timeout, "broker PUBACKs")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def stored_samples(db, sensor_id: int) -> tuple[int, int]:
    """(rows, distinct times) of the native sensor's CO2 readings."""
    return db.execute(
        "SELECT count(*), count(DISTINCT time) FROM readings r JOIN metrics m "
        "ON m.id = r.metric_id WHERE m.name = 'co2_ppm' AND r.sensor_id = %s",
        (sensor_id,),
    ).fetchone()


@pytest.mark.parametrize("shared", [False, True], ids=["plain-subscription", "shared"])
def test_broker_restart_mid_stream_loses_and_doubles_nothing(
    db, fleet, settings, tmp_path: Path, shared: bool
) -> None:
    """Publishing goes on while the broker restarts. Mosquitto 2.0 keeps a persistent
    session's plain subscription over a restart but not a shared one ($share/...): until
    ingest has re-subscribed, the broker discards what it is sent (docs/ingest.md). So in
    the shared case the publisher has no message in flight at the restart and waits for
    ingest to be back before publishing again."""
    broker = PrivateBroker(tmp_path)
    broker.start()
    settings.mqtt_port = broker.port
    if not shared:
        settings.mqtt_share_group = ""
    service = IngestService(settings)
    service.start()
    publisher = None
    try:
        assert service.wait_connected(10)
        time.sleep(0.3)
        publisher = StreamPublisher(broker.port)
        topic = fleet.native_topic("aarhus", "gw-co2-1")
        total = 600
        for i in range(total):
            publisher.publish(topic, sample(i))
            if i == 250:
                if shared:
                    # Otherwise the publisher resends its unacknowledged messages as soon
                    # as the broker is back, possibly before ingest has re-subscribed.
                    publisher.wait_all_acknowledged()
                broker.restart(down_for_s=1.5)
                if shared:
                    wait_for(service.wait_connected, 30, "ingest back on the broker")
                    time.sleep(0.3)
            time.sleep(0.002)
        publisher.wait_all_acknowledged()
        wait_for(lambda: stored_samples(db, fleet.native_sensor)[0] >= total, 60, "all samples")
        time.sleep(0.5)  # anything extra would show up now
        assert stored_samples(db, fleet.native_sensor) == (total, total)
        assert count(db, "SELECT count(*) FROM dead_letters") == 0
    finally:
        if publisher:
            publisher.close()
        service.stop()
        broker.stop()


def test_database_outage_mid_stream_loses_and_doubles_nothing(
    db, fleet, settings, database_url
) -> None:
    parts = urlsplit(database_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    proxy.start()
    settings.database_url = urlunsplit(parts._replace(netloc=f"postgres@127.0.0.1:{proxy.port}"))
    service = IngestService(settings)
    service.start()
    publisher = StreamPublisher(1883)
    try:
        assert service.wait_connected(10)
        time.sleep(0.3)
        topic = fleet.native_topic("aarhus", "gw-co2-1")
        total = 400
        for i in range(total):
            publisher.publish(topic, sample(i))
            if i == 150:
                proxy.cut()
            if i == 300:
                time.sleep(2.0)  # still down: ingest must be retrying, not acknowledging
                assert stored_samples(db, fleet.native_sensor)[0] < total
                proxy.restore()
            time.sleep(0.002)
        publisher.wait_all_acknowledged()
        wait_for(lambda: stored_samples(db, fleet.native_sensor)[0] >= total, 90, "all samples")
        time.sleep(0.5)
        assert stored_samples(db, fleet.native_sensor) == (total, total)
        assert count(db, "SELECT count(*) FROM dead_letters") == 0
    finally:
        publisher.close()
        service.stop()
        proxy.stop()


def _ingest_process(settings, client_id: str, share_group: str | None = None) -> subprocess.Popen:
    env = child_env(
        IOT_DATABASE_URL=settings.database_url,
        IOT_MQTT_PORT=str(settings.mqtt_port),
        IOT_MQTT_CLIENT_ID=client_id,
        IOT_MQTT_SHARE_GROUP=settings.mqtt_share_group if share_group is None else share_group,
        IOT_MQTT_TOPICS=orjson.dumps(settings.mqtt_topics).decode(),
        IOT_INGEST_METRICS_PORT="0",
        IOT_BATCH_MAX_ROWS="50",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "ingest"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_logged(process: subprocess.Popen, event: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if event in line:
            return
        if process.poll() is not None:
            raise AssertionError(f"ingest exited early with {process.returncode}")
    raise AssertionError(f"ingest never logged {event}")


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_stopping_ingest_mid_stream_then_restarting_stores_everything_once(
    db, fleet, settings, how
) -> None:
    client_id = f"test-proc-{uuid.uuid4().hex[:8]}"
    first = _ingest_process(settings, client_id)
    publisher = StreamPublisher(1883)
    try:
        _wait_logged(first, "mqtt_connected")
        time.sleep(0.3)
        topic = fleet.native_topic("aarhus", "gw-co2-1")
        # Below the shared broker's default max_queued_messages (1000): beyond it Mosquitto
        # itself discards what a busy or absent subscriber has not taken (docs/ingest.md).
        total = 800
        for i in range(total):
            publisher.publish(topic, sample(i))
        wait_for(lambda: stored_samples(db, fleet.native_sensor)[0] > 50, 20, "some samples")
        first.send_signal(how)
        assert first.wait(30) in (0, -signal.SIGKILL)
        stored_by_first = stored_samples(db, fleet.native_sensor)[0]
        publisher.wait_all_acknowledged()

        second = _ingest_process(settings, client_id)  # same persistent session
        try:
            # The first may have committed everything already; the second must still be
            # up (its SIGTERM handler installed) before it is stopped.
            _wait_logged(second, "mqtt_connected")
            wait_for(lambda: stored_samples(db, fleet.native_sensor)[0] >= total, 60, "all")
            time.sleep(0.5)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0
        assert stored_samples(db, fleet.native_sensor) == (total, total)
        assert count(db, "SELECT count(*) FROM dead_letters") == 0
        assert 0 < stored_by_first <= total
    finally:
        publisher.close()
        if first.poll() is None:
            first.kill()


def _take_session(client_id: str, quiet_s: float = 1.5) -> list[int]:
    """Connect with `client_id`'s persistent session and collect what the broker still
    holds for it (unacknowledged or never delivered), as sample indexes."""
    received: list[int] = []
    present: list[bool] = []
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.on_connect = lambda c, u, flags, rc, p: present.append(flags.session_present)
    last = [time.monotonic()]

    def on_message(c, u, message) -> None:
        at = datetime.fromisoformat(orjson.loads(message.payload)["time"])
        received.append(int((at - START).total_seconds()))
        last[0] = time.monotonic()

    client.on_message = on_message
    client.connect("127.0.0.1", 1883, clean_start=False)
    client.loop_start()
    try:
        wait_for(lambda: bool(present), 10, "session connect")
        assert present == [True], "the ingest's persistent session is gone"
        while time.monotonic() - last[0] < quiet_s:
            time.sleep(0.1)
    finally:
        client.disconnect()
        client.loop_stop()
    return received


def test_sigterm_acknowledges_everything_committed_and_nothing_else(db, fleet, settings) -> None:
    """After SIGTERM the broker holds exactly the messages whose rows were not committed:
    what the session gives back and what is stored are disjoint and together complete."""
    client_id = f"test-term-{uuid.uuid4().hex[:8]}"
    ingest = _ingest_process(settings, client_id, share_group="")
    publisher = StreamPublisher(1883)
    total = 800  # below the shared broker's default max_queued_messages
    try:
        _wait_logged(ingest, "mqtt_connected")
        time.sleep(0.3)
        topic = fleet.native_topic("aarhus", "gw-co2-1")

        def stream() -> None:  # ~2 s of messages, so SIGTERM lands in the middle
            for i in range(total):
                publisher.publish(topic, sample(i))
                time.sleep(0.0025)

        streaming = threading.Thread(target=stream)
        streaming.start()
        wait_for(lambda: stored_samples(db, fleet.native_sensor)[0] > 50, 20, "some samples")
        ingest.send_signal(signal.SIGTERM)
        assert ingest.wait(30) == 0
        streaming.join(30)
        publisher.wait_all_acknowledged()
    finally:
        publisher.close()
        if ingest.poll() is None:
            ingest.kill()
    stored = [
        int((t - START).total_seconds())
        for (t,) in db.execute(
            "SELECT r.time FROM readings r JOIN metrics m ON m.id = r.metric_id "
            "WHERE m.name = 'co2_ppm' AND r.sensor_id = %s",
            (fleet.native_sensor,),
        )
    ]
    returned = _take_session(client_id)
    assert len(stored) == len(set(stored)) and len(returned) == len(set(returned))
    overlap = set(stored) & set(returned)
    assert not overlap, "committed messages were left unacknowledged"
    assert set(stored) | set(returned) == set(range(total))
    assert stored and returned, "SIGTERM should have landed mid-stream"


def test_while_a_batch_commits_the_next_one_waits_ready_and_then_the_worker_waits(
    db, fleet, settings
) -> None:
    """Double buffering, bounded: with the commit stuck behind a lock, the worker prepares
    exactly one batch beyond the one waiting to commit (one row per batch here), takes no
    further message, acknowledges nothing; once the lock goes all are stored once."""
    settings = settings.model_copy(update={"batch_max_rows": 1})
    service = IngestService(settings)
    service.start()
    locker = psycopg.connect(settings.psycopg_url)
    publisher = StreamPublisher(1883)
    try:
        assert service.wait_connected(10)
        time.sleep(0.3)
        locker.execute("LOCK TABLE readings IN SHARE MODE")  # blocks every write to it
        total = 40
        topic = fleet.native_topic("aarhus", "gw-co2-1")
        for i in range(total):
            publisher.publish(topic, sample(i))
        publisher.wait_all_acknowledged()
        wait_for(lambda: service.totals.messages == 3, 10, "three batches taken")
        time.sleep(1.0)  # and no more: committing, waiting, being handed over
        assert (service.totals.messages, service.totals.committed_messages) == (3, 0)
        locker.rollback()
        wait_for(lambda: service.totals.committed_messages == total, 20, "all committed")
        assert stored_samples(db, fleet.native_sensor) == (total, total)
        assert service.totals.batches == total
    finally:
        locker.close()
        publisher.close()
        service.stop()


def test_received_but_untaken_messages_stay_within_the_receive_maximum(
    db, fleet, settings, tmp_path: Path
) -> None:
    """Mosquitto before 2.0.13 sends far more than the client's Receive Maximum once
    acknowledgements flow; the ingest's own bound keeps its backlog (memory) within it
    anyway, and nothing is lost."""
    broker = PrivateBroker(tmp_path)
    broker.start()
    receive_maximum = 30
    settings = settings.model_copy(
        update={
            "mqtt_port": broker.port,
            "mqtt_receive_maximum": receive_maximum,
            "batch_max_rows": 50,
        }
    )
    service = IngestService(settings)
    service.start()
    publisher = None
    peak = [0]
    sampling = threading.Event()

    def sample_backlog() -> None:
        while not sampling.is_set():
            peak[0] = max(peak[0], service.backlog)
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample_backlog, daemon=True)
    try:
        assert service.wait_connected(10)
        time.sleep(0.3)
        publisher = StreamPublisher(broker.port)
        sampler.start()
        total = 3000
        topic = fleet.native_topic("aarhus", "gw-co2-1")
        for i in range(total):
            publisher.publish(topic, sample(i))
        publisher.wait_all_acknowledged()
        wait_for(lambda: service.totals.committed_messages >= total, 60, "all committed")
        sampling.set()
        assert stored_samples(db, fleet.native_sensor) == (total, total)
        assert 0 < peak[0] <= receive_maximum
    finally:
        sampling.set()
        if publisher is not None:
            publisher.close()
        service.stop()
        broker.stop()


@pytest.mark.parametrize("sqlstate", ["40P01", "40001"], ids=["deadlock", "serialization"])
def test_a_transaction_the_server_rolled_back_is_run_again_on_the_same_connection(
    settings, sqlstate: str
) -> None:
    """Deadlocks and serialization failures abort only the transaction: the operation is
    retried at once, not treated as the database being away (no reconnect, no backoff)."""
    service = IngestService(settings)
    pids: list[int] = []

    def operation(conn: psycopg.Connection) -> int:
        pids.append(conn.info.backend_pid)
        if len(pids) == 1:
            conn.execute(
                f"DO $$ BEGIN RAISE EXCEPTION 'rolled back' USING ERRCODE = '{sqlstate}'; END $$"
            )
        return conn.info.backend_pid

    session = service._commit_db
    started = time.monotonic()
    assert service._with_db(operation, "test", session) == pids[0]
    assert len(pids) == 2 and pids[0] == pids[1]
    assert time.monotonic() - started < 0.4  # no backoff (it starts at 0.5 s)
    session.conn.close()
