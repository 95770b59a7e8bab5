"""The paho-mqtt that ingest/mqtt_client.py was written against.

`BufferedClient` overrides and calls private parts of paho's `Client` (socket reads, the
incoming-packet state, the outgoing queue, the message hand-over, the keep-alive clock)
and parses PUBLISH packets itself. Another paho may rename or change any of them without
notice, and the fast path would then misbehave quietly (bytes read past paho, messages
handed over twice or never, PUBACKs lost). These tests pin the version and check each
private name and behaviour the client relies on, so an upgrade fails here first; the
round trips through the broker are in test_mqtt_client.py.
"""

from __future__ import annotations

import inspect
import re
import socket
import struct
import threading
import tomllib
from pathlib import Path

import paho.mqtt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from ingest.mqtt_client import BufferedClient, ReceivedMessage

# The version BufferedClient was written and checked against. Changing it means reading
# paho's client.py diff against every private name below and running test_mqtt_client.py.
WRITTEN_AGAINST = "2.2.0"

# Private methods BufferedClient overrides or calls: name → parameter names.
PRIVATE_METHODS = {
    "_sock_recv": ["self", "bufsize"],
    "_sock_close": ["self"],
    "_packet_read": ["self"],
    "_packet_queue": ["self", "command", "packet", "mid", "qos", "info"],
    "_send_puback": ["self", "mid"],
    "_handle_on_message": ["self", "message"],
}
# Public methods it overrides, with the parameters its overrides pass on.
OVERRIDDEN_METHODS = {
    "loop_read": ["self", "max_packets"],
    "reconnect": ["self"],
    "disconnect": ["self", "reasoncode", "properties"],
    "message_callback_add": ["self", "sub", "callback"],
}


def test_the_installed_paho_is_the_pinned_one() -> None:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["dependencies"] if d.startswith("paho-mqtt")]
    assert pins == [f"paho-mqtt=={WRITTEN_AGAINST}"], "pin paho exactly (mqtt_client.py)"
    assert paho.mqtt.__version__ == WRITTEN_AGAINST


@pytest.mark.parametrize("name", sorted(PRIVATE_METHODS | OVERRIDDEN_METHODS))
def test_the_methods_the_client_relies_on_keep_their_signature(name: str) -> None:
    expected = (PRIVATE_METHODS | OVERRIDDEN_METHODS)[name]
    method = getattr(mqtt.Client, name, None)
    assert method is not None, f"paho's Client has no {name} any more"
    assert list(inspect.signature(method).parameters) == expected


def test_the_private_state_the_client_reads_exists() -> None:
    client = BufferedClient(
        CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5, manual_ack=True
    )
    assert client._manual_ack is True
    assert client._protocol == mqtt.MQTTv5
    assert client._sock is None
    assert client._userdata is None
    # "between packets" is command 0: the fast path runs only then.
    assert client._in_packet["command"] == 0
    assert isinstance(client._in_callback_mutex, type(threading.Lock()))
    assert isinstance(client._msgtime_mutex, type(threading.Lock()))
    assert isinstance(client._last_bytes_received, float)
    assert mqtt.time_func() >= client._last_bytes_received
    assert mqtt.MQTT_ERR_SUCCESS == 0


def test_paho_reads_the_socket_only_through_sock_recv() -> None:
    """The buffer serves paho's reads only if every read goes through `_sock_recv`."""
    packet_read = inspect.getsource(mqtt.Client._packet_read)
    assert "self._sock_recv(" in packet_read
    assert not re.search(r"\._sock\.recv|\.recv_into\(", packet_read)
    assert "self._sock.recv(" in inspect.getsource(mqtt.Client._sock_recv)


def _publish(topic: bytes, payload: bytes, mid: int, properties: bytes = b"\x00") -> bytes:
    """A QoS 1 MQTT v5 PUBLISH packet."""
    body = struct.pack(">H", len(topic)) + topic + struct.pack(">H", mid) + properties + payload
    assert len(body) < 128
    return bytes([0x32, len(body)]) + body


def test_paho_and_the_fast_path_share_the_buffer_in_order() -> None:
    """Over a real socket: paho parses the first packet and the one with properties, the
    fast path the others, every message once and in order; `ack_current` writes the
    PUBACKs through paho's output queue as one packet."""
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    client = BufferedClient(
        CallbackAPIVersion.VERSION2,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=True,
        fast_publish=True,
    )
    received: list[tuple[str, bytes, int, bool]] = []
    client.on_message = lambda _c, _u, m: received.append(
        (m.topic, m.payload, m.mid, isinstance(m, ReceivedMessage))
    )
    client._sock = ours
    try:
        user_property = b"\x26\x00\x01k\x00\x01v"  # property 0x26 (user property) k=v
        broker.sendall(
            _publish(b"t/1", b"one", 1)
            + _publish(b"t/2", b"two", 2)
            + _publish(b"t/3", b"three", 3, bytes([len(user_property)]) + user_property)
            + _publish(b"t/4", b"four", 4)
        )
        before = client._last_bytes_received
        assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
        assert received == [
            ("t/1", b"one", 1, False),  # paho: the read that filled the buffer
            ("t/2", b"two", 2, True),
            ("t/3", b"three", 3, False),  # properties: paho's
            ("t/4", b"four", 4, True),
        ]
        assert not client._read_buffer
        assert client._in_packet["command"] == 0
        assert client._last_bytes_received >= before

        assert client.ack_current([(mid, 1, client.connection) for mid in (1, 2, 3, 4)]) == 4
        assert broker.recv(64) == b"".join(struct.pack(">BBH", 0x40, 2, m) for m in (1, 2, 3, 4))
    finally:
        client._sock = None
        ours.close()
        broker.close()
