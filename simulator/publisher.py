"""Publish the simulated fleet's uplinks to the MQTT broker with QoS 1 (or 0), paced.

QoS 0 is what ChirpStack's MQTT integration uses unless configured otherwise: publishing
at QoS 0 exercises the path where ingest counts and warns about such deliveries.

Pacing: simulated time runs `speed` times faster than the wall clock but never ahead of
it, so a run that starts in the past catches up quickly and then continues in real time
(network servers never send uplinks from the future). ``speed=0`` means as fast as the
broker takes them, still never ahead of now. ``rate`` caps messages per second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from models.logging import log
from models.settings import Settings
from simulator.stream import FleetStream, Uplink


class MqttPublisher:
    """A paho-mqtt 2.x publisher that knows how many messages the broker has acked (at
    QoS 0: how many paho has written to the socket).

    At most `max_outstanding` messages are handed to paho without a PUBACK, so a fast
    producer cannot queue unbounded memory inside the client.
    """

    def __init__(
        self,
        settings: Settings,
        client_id: str,
        max_inflight: int = 1000,
        max_outstanding: int = 10000,
        qos: int = 1,
    ) -> None:
        if qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, not {qos}")
        self.qos = qos
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
        )
        if settings.mqtt_username:
            self._client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
        if settings.mqtt_tls:
            self._client.tls_set()
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(0)
        self._client.on_publish = self._on_publish
        self._settings = settings
        self._max_outstanding = max_outstanding
        self._lock = threading.Condition()
        self.sent = 0
        self.acked = 0

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            self.acked += 1
            self._lock.notify_all()

    def connect(self, timeout_s: float = 10.0) -> None:
        """Connect and start the network thread; raises ConnectionError on failure."""
        connected = threading.Event()
        self._client.on_connect = lambda *args: connected.set()
        self._client.connect(self._settings.mqtt_host, self._settings.mqtt_port, keepalive=30)
        self._client.loop_start()
        if not connected.wait(timeout_s):
            self.close()
            raise ConnectionError(
                f"MQTT broker at {self._settings.mqtt_host}:{self._settings.mqtt_port} "
                f"did not accept the connection within {timeout_s} s"
            )

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at the publisher's QoS; blocks while too many messages await their
        PUBACK."""
        with self._lock:
            while self.sent - self.acked >= self._max_outstanding:
                self._lock.wait(1.0)
        info = self._client.publish(topic, payload, qos=self.qos)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        with self._lock:
            self.sent += 1

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Wait until the broker has acknowledged every message; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self.acked < self.sent:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
        return True

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@dataclass
class RunResult:
    published: int
    simulated_until_s: float
    wall_s: float


def publish_all(publisher: MqttPublisher, uplinks: Iterable[Uplink]) -> int:
    """Publish pre-generated uplinks as fast as the broker takes them; returns the count."""
    count = 0
    for uplink in uplinks:
        publisher.publish(uplink.topic, uplink.payload)
        count += 1
    return count


def run_paced(
    stream: FleetStream,
    publisher: MqttPublisher,
    speed: float,
    rate_per_s: float = 0.0,
    duration_s: float = 0.0,
    max_messages: int = 0,
    should_stop: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> RunResult:
    """Publish the stream step by step until stopped, `duration_s` wall seconds pass or
    `max_messages` are sent (0 = no limit).

    Each step is published when the wall clock reaches its place on the accelerated
    timeline, and never before its simulated end time has really passed.
    """
    wall0, sim0 = clock(), stream.now_s
    published = 0
    next_allowed = wall0  # token bucket of one: the earliest wall time of the next publish
    next_report = wall0 + 10.0
    while not should_stop():
        step_end_s = stream.now_s + stream.step_s
        due_wall = (
            step_end_s if speed <= 0 else max(wall0 + (step_end_s - sim0) / speed, step_end_s)
        )
        if duration_s and due_wall - wall0 > duration_s:
            break
        while (wait := due_wall - clock()) > 0 and not should_stop():
            sleep(min(wait, 0.5))
        if should_stop():
            break
        for uplink in stream.step():
            if rate_per_s > 0:
                now = clock()
                if next_allowed > now:
                    sleep(next_allowed - now)
                next_allowed = max(next_allowed, now) + 1.0 / rate_per_s
            publisher.publish(uplink.topic, uplink.payload)
            published += 1
            if max_messages and published >= max_messages:
                return RunResult(published, stream.now_s, clock() - wall0)
        if clock() >= next_report:
            next_report += 10.0
            log.info(
                "simulator_progress",
                published=published,
                simulated_time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stream.now_s)),
                **{f"count_{k}": v for k, v in stream.counts.by_kind.items()},
            )
    return RunResult(published, stream.now_s, clock() - wall0)
