"""BufferedClient against the real broker: what paho's own client would deliver, with and
without the fast PUBLISH path (QoS 0/1/2, MQTT v5 properties, payloads larger than one
read, retained flags, per-topic callbacks, MQTT 3.1.1, automatic acknowledgement)."""

from __future__ import annotations

import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.mqtt_client import BufferedClient, ReceivedMessage
from tests.ingest.conftest import wait_for

PROTOCOLS = [MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311]


class Receiver:
    def __init__(
        self,
        fast: bool,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
        client_id: str | None = None,
        manual_ack: bool = False,
    ) -> None:
        self.received: list[tuple[str, bytes, int, bool]] = []
        self.fast_parsed = 0
        self.user_properties: dict[bytes, list] = {}
        self.client = BufferedClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-buffered-{uuid.uuid4().hex[:8]}",
            protocol=protocol,
            fast_publish=fast,
            manual_ack=manual_ack,
        )
        self.client.on_message = self._on_message

    def _on_message(self, client, userdata, message) -> None:
        self.received.append((message.topic, message.payload, message.qos, message.retain))
        self.fast_parsed += isinstance(message, ReceivedMessage)
        properties = message.properties
        if properties is not None and hasattr(properties, "UserProperty"):
            self.user_properties[message.payload] = properties.UserProperty

    def start(self, topic: str, clean: bool = True, expiry: int = 0) -> None:
        if self.client._protocol == MQTTProtocolVersion.MQTTv5:
            self.client.connect("127.0.0.1", 1883, clean_start=clean, properties=_expiry(expiry))
        else:
            self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()
        wait_for(self.client.is_connected, 5, "connected")
        self.client.subscribe(topic, qos=2)
        time.sleep(0.2)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _publisher() -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"test-pub-{uuid.uuid4().hex[:8]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    # Mosquitto (2.0.11) drops QoS 1 messages beyond its own receive maximum (20 by
    # default) and acknowledges them anyway, so the publisher stays within it.
    client.max_inflight_messages_set(20)
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    return client


@pytest.fixture
def publisher():
    client = _publisher()
    yield client
    client.disconnect()
    client.loop_stop()


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=["v5", "v311"])
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "paho"])
def test_a_mixed_stream_arrives_whole(publisher, fast, protocol) -> None:
    base = f"test/{uuid.uuid4().hex[:8]}"
    receiver = Receiver(fast, protocol)
    receiver.start(f"{base}/#")
    user = Properties(PacketTypes.PUBLISH)
    user.UserProperty = [("gateway", "gw-1"), ("note", "x" * 300)]
    user.ContentType = "application/json"
    expected = []
    try:
        for i in range(600):
            qos = i % 3
            # Every 50th payload spans several 64 KiB reads; others are small.
            payload = (b"%d:" % i) * (40_000 if i % 50 == 0 else 3)
            topic = f"{base}/sensor/{i % 7}"
            info = publisher.publish(topic, payload, qos=qos, properties=user if i % 2 else None)
            expected.append((topic, payload, qos, False))
        info.wait_for_publish(10)
        wait_for(lambda: len(receiver.received) >= len(expected), 20, "every message")
        time.sleep(0.2)
        # Every message once, intact (paho's publisher reorders what it had to queue).
        assert sorted(receiver.received) == sorted(expected)
        # QoS 2, packets with properties and the first packet of each read go through
        # paho, the rest need not; v5 properties always arrive.
        assert (receiver.fast_parsed > 0) == fast
        v5 = protocol == MQTTProtocolVersion.MQTTv5
        candidates = [i for i, m in enumerate(expected) if m[2] < 2 and not (v5 and i % 2)]
        assert receiver.fast_parsed <= len(candidates)
        if v5:
            with_properties = {payload for i, (_, payload, _, _) in enumerate(expected) if i % 2}
            assert set(receiver.user_properties) == with_properties
            assert all(v == user.UserProperty for v in receiver.user_properties.values())
    finally:
        receiver.stop()


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "paho"])
def test_retained_flag_and_per_topic_callbacks(publisher, fast) -> None:
    base = f"test/{uuid.uuid4().hex[:8]}"
    publisher.publish(f"{base}/kept", b"old", qos=1, retain=True).wait_for_publish(5)
    receiver = Receiver(fast)
    special: list[tuple[str, bytes]] = []
    receiver.client.message_callback_add(
        f"{base}/special/+", lambda c, u, m: special.append((m.topic, m.payload))
    )
    receiver.start(f"{base}/#")
    try:
        wait_for(lambda: len(receiver.received) == 1, 5, "retained message")
        assert receiver.received == [(f"{base}/kept", b"old", 1, True)]
        publisher.publish(f"{base}/special/x", b"2", qos=1).wait_for_publish(5)
        publisher.publish(f"{base}/plain", b"3", qos=1).wait_for_publish(5)
        wait_for(lambda: len(receiver.received) == 2 and len(special) == 1, 5, "routed")
        assert receiver.received[1] == (f"{base}/plain", b"3", 1, False)
        assert special == [(f"{base}/special/x", b"2")]
    finally:
        publisher.publish(f"{base}/kept", b"", qos=1, retain=True).wait_for_publish(5)
        receiver.stop()


@pytest.mark.parametrize("manual_ack", [False, True], ids=["auto-ack", "manual-ack"])
def test_acknowledged_messages_are_not_delivered_again(publisher, manual_ack) -> None:
    """Automatic acks on the fast path reach the broker; unacknowledged messages of a
    persistent session come again after a reconnect."""
    base = f"test/{uuid.uuid4().hex[:8]}"
    client_id = f"test-ack-{uuid.uuid4().hex[:8]}"
    first = Receiver(True, client_id=client_id, manual_ack=manual_ack)
    first.start(f"{base}/#", clean=True, expiry=60)
    for i in range(20):
        publisher.publish(f"{base}/t", b"%d" % i, qos=1).wait_for_publish(5)
    wait_for(lambda: len(first.received) == 20, 10, "first delivery")
    first.stop()
    second = Receiver(True, client_id=client_id)
    second.client.connect("127.0.0.1", 1883, clean_start=False, properties=_expiry(60))
    second.client.loop_start()
    try:
        time.sleep(1.0)
        assert len(second.received) == (20 if manual_ack else 0)
    finally:
        second.stop()


def _expiry(seconds: int) -> Properties:
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = seconds
    return properties


def test_fast_path_hands_over_lists_and_one_write_acknowledges_them_all(publisher) -> None:
    """on_messages gets each read's messages as one list; ack_current's single queued
    packet of PUBACKs settles every one of them. The broker allows 20 unacknowledged
    messages, so the stream only flows if those acks count, and the persistent session
    has nothing to deliver again on the next connection."""
    base = f"test/{uuid.uuid4().hex[:8]}"
    client_id = f"test-lists-{uuid.uuid4().hex[:8]}"
    receiver = Receiver(True, client_id=client_id, manual_ack=True)
    lists: list[list[ReceivedMessage]] = []
    acked: list[int] = []

    def on_messages(client: BufferedClient, messages: list[ReceivedMessage]) -> None:
        lists.append(list(messages))
        acks = [(m.mid, m.qos, client.connection) for m in messages]
        acked.append(client.ack_current(acks))

    receiver.client.on_messages = on_messages
    # The first packet of a read, still partly unread, goes through paho's own path.
    receiver.client.on_message = lambda client, userdata, message: on_messages(client, [message])
    receiver.start(f"{base}/#", clean=False, expiry=60)
    sent = [(f"{base}/s/{i % 5}", b"%d" % i) for i in range(300)]
    try:
        for topic, payload in sent:
            info = publisher.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        wait_for(lambda: sum(map(len, lists)) >= len(sent), 20, "every message")
        messages = [m for chunk in lists for m in chunk]
        assert max(map(len, lists)) > 1
        assert sorted((m.topic, m.payload) for m in messages) == sorted(sent)
        assert sum(acked) == len(sent)
        time.sleep(0.5)
    finally:
        receiver.stop()
    again = Receiver(False, client_id=client_id, manual_ack=True)
    again.start(f"{base}/#", clean=False, expiry=60)
    try:
        time.sleep(1.0)
        assert again.received == []
    finally:
        again.stop()
