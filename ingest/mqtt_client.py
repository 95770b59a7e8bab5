"""A paho-mqtt client that reads the socket in large chunks.

paho 2.x reads every packet with separate ``recv`` calls: one for the command byte, one
per remaining-length byte, then the body; and ``loop_read`` handles one packet per
``select`` round when nothing is in flight outwards. Under a stream of QoS 1 PUBLISHes
that is several system calls and a ``select`` per message, and it was the largest cost in
the ingest profile (bench/bench_ingest.py, BENCHMARKS.md). This subclass serves those
reads from a buffer filled 64 KiB at a time and drains the buffer before going back to
``select``. Protocol handling is paho's own.

Each incoming message also went through paho's topic matcher for per-topic callbacks,
which the ingest does not use; without any, messages go straight to ``on_message``.

With ``fast_publish=True`` the QoS 0 and 1 PUBLISH packets without MQTT v5 properties
(what gateways and network servers send) that lie complete in the buffer are parsed here
in one pass, without paho's per-packet state machine, its
``Properties`` objects and ``MQTTMessage`` (whose ``MQTTMessageInfo`` builds a
``threading.Condition`` per message): together more than half of the network thread's
time in the ingest profile. ``on_message`` then gets a ``ReceivedMessage``, which has the
receiving side of ``MQTTMessage`` (topic, payload, qos, mid, retain, dup). Everything
else (QoS 2, packets with properties, so topic aliases and user properties too, other
packet types, packets split across reads, a malformed packet) goes through paho as
before, from the same buffer. A receiver that sets ``on_messages`` gets the fast path's
messages of one read as one list instead (one hand-over to another thread per read, not
per message); paho's own path still calls ``on_message``.

``ack_current`` writes the PUBACKs of a whole batch as one outgoing packet: paho queues
each ``ack()`` separately, wakes its network thread once per ack and sends each 4-byte
PUBACK with its own ``send``.

It also closes the connection gracefully after its own DISCONNECT. paho closes the socket
right after writing DISCONNECT; if the broker is still streaming messages, unread bytes
are in the receive buffer and the kernel answers the close with a TCP reset, which can
make the broker discard the last PUBACKs we sent (tests/ingest/test_resilience.py
caught committed messages coming back after SIGTERM). So we half-close and read until
the broker closes its side, which it does once it has processed everything we sent.
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterable

import paho.mqtt.client as mqtt

_CHUNK_BYTES = 65536
_PUBLISH = 0x30
_PUBACK = 0x40
_PUBACK_PACKET = struct.Struct(">BBH")  # command, remaining length 2, packet id
# How long to wait for the broker to close its side after our DISCONNECT.
_CLOSE_DRAIN_S = 3.0


def _close_gracefully(sock: socket.socket) -> None:
    """Half-close `sock` and discard what arrives until the peer closes (or a timeout)."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return
    deadline = time.monotonic() + _CLOSE_DRAIN_S
    while (left := deadline - time.monotonic()) > 0:
        try:
            readable, _, _ = select.select([sock], [], [], left)
            if not readable or not sock.recv(_CHUNK_BYTES):
                return
        except (BlockingIOError, ssl.SSLWantReadError):
            continue
        except (OSError, ValueError):
            return


class ReceivedMessage:
    """A message parsed on the fast path: the fields of ``MQTTMessage`` a receiver uses."""

    __slots__ = ("_topic", "dup", "mid", "payload", "properties", "qos", "retain", "timestamp")

    def __init__(self, topic: bytes, payload: bytes, mid: int, qos: int, flags: int) -> None:
        self._topic = topic
        self.payload = payload
        self.mid = mid
        self.qos = qos
        self.retain = bool(flags & 0x01)
        self.dup = bool(flags & 0x08)
        self.timestamp = 0.0
        self.properties = None

    @property
    def topic(self) -> str:
        """The topic as text; raises UnicodeDecodeError as paho's does."""
        return self._topic.decode("utf-8")


def _varint(buf: bytearray, i: int, end: int) -> tuple[int, int]:
    """MQTT variable byte integer at `i`: (value, index after it); (-1, i) if it does not
    end before `end` or is longer than four bytes."""
    value = 0
    shift = 0
    while i < end and shift <= 21:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
    return -1, i


class BufferedClient(mqtt.Client):
    """``paho.mqtt.client.Client`` with buffered socket reads, a graceful close and acks
    bound to the connection their message came on; otherwise the same API."""

    def __init__(self, *args, fast_publish: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._fast_publish = fast_publish
        self._read_buffer = bytearray()
        self._closing_gracefully = False
        self._connection_lock = threading.Lock()
        self._connection = 0
        self._topic_callbacks = False
        # Called with the list of messages the fast path parsed from one read.
        self.on_messages: Callable[[BufferedClient, list[ReceivedMessage]], None] | None = None

    @property
    def connection(self) -> int:
        """Number of the current connection; read it in on_message to tag a message."""
        return self._connection

    def ack_current(self, acks: Iterable[tuple[int, int, int]]) -> int:
        """Acknowledge (mid, qos, connection) triples of the current connection, from any
        thread; returns how many were sent.

        Packet ids of an earlier connection must not be acknowledged on this one: they may
        name another message. Those messages come again (persistent session). reconnect()
        numbers the new connection under the same lock, and paho drops any acknowledgement
        queued before that when it resets its output queue, so none can slip through.
        """
        pubacks: list[bytes] = []
        sent = 0
        with self._connection_lock:
            for mid, qos, connection in acks:
                if connection != self._connection or qos == 0:
                    continue
                if qos == 1 and self._manual_ack:
                    pubacks.append(_PUBACK_PACKET.pack(_PUBACK, 2, mid))
                else:
                    self.ack(mid, qos)
                sent += 1
            if pubacks:
                # One queued packet holding every PUBACK: paho writes it with as few sends
                # as the socket allows and treats it like any other non-PUBLISH packet.
                self._packet_queue(_PUBACK, b"".join(pubacks), 0, 1)
        return sent

    def message_callback_add(self, sub: str, callback) -> None:
        self._topic_callbacks = True
        super().message_callback_add(sub, callback)

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        if self._topic_callbacks:
            super()._handle_on_message(message)
            return
        on_message = self.on_message
        if on_message is not None:
            with self._in_callback_mutex:
                on_message(self, self._userdata, message)

    def disconnect(self, *args, **kwargs) -> mqtt.MQTTErrorCode:
        self._closing_gracefully = True
        return super().disconnect(*args, **kwargs)

    def reconnect(self) -> mqtt.MQTTErrorCode:
        with self._connection_lock:
            self._connection += 1
        self._closing_gracefully = False
        return super().reconnect()

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self._read_buffer:
            data = super()._sock_recv(_CHUNK_BYTES)  # raises BlockingIOError when empty
            if not data:
                return data  # connection closed: paho sees b"" as before
            self._read_buffer += data
        chunk = bytes(self._read_buffer[:bufsize])
        del self._read_buffer[:bufsize]
        return chunk

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        # select() cannot see bytes already in our buffer: handle them all now.
        rc = super().loop_read(max_packets)
        while rc == mqtt.MQTT_ERR_SUCCESS and self._read_buffer and self._sock is not None:
            if self._fast_publish and self._in_packet["command"] == 0:
                self._dispatch_buffered_publishes()
                if not self._read_buffer:
                    break
            rc = super().loop_read(max_packets)
        return rc

    def _dispatch_buffered_publishes(self) -> None:
        """Hand every complete QoS 0/1 PUBLISH at the head of the buffer to on_message
        (or to on_messages, as one list); stop at the first packet paho must handle (or
        that is not complete yet), so messages keep their order."""
        buf = self._read_buffer
        size = len(buf)
        v5 = self._protocol == mqtt.MQTTv5
        auto_ack = not self._manual_ack
        on_messages = self.on_messages
        batch: list[ReceivedMessage] = []
        pos = 0
        try:
            while pos < size:
                flags = buf[pos]
                qos = (flags >> 1) & 0x03
                if flags & 0xF0 != _PUBLISH or qos > 1:
                    break
                length, body = _varint(buf, pos + 1, size)
                end = body + length
                if length < 2 or end > size:
                    break  # incomplete (or malformed: paho reports it)
                topic_end = body + 2 + ((buf[body] << 8) | buf[body + 1])
                i = topic_end
                mid = 0
                if qos:
                    mid = (buf[i] << 8) | buf[i + 1] if i + 2 <= end else 0
                    i += 2
                if v5:
                    properties_length, i = _varint(buf, i, end)
                    if properties_length != 0:
                        break  # properties (or a malformed length): paho's job
                if i > end or (qos and mid == 0):
                    break
                message = ReceivedMessage(
                    bytes(buf[body + 2 : topic_end]), bytes(buf[i:end]), mid, qos, flags
                )
                pos = end  # before the callback: a message is never handed over twice
                if on_messages is not None:
                    batch.append(message)
                    continue
                self._handle_on_message(message)
                if auto_ack and qos == 1:
                    self._send_puback(mid)
        finally:
            if batch:
                with self._in_callback_mutex:
                    on_messages(self, batch)
                if auto_ack:
                    for message in batch:
                        if message.qos == 1:
                            self._send_puback(message.mid)
            if pos:
                del buf[:pos]
                with self._msgtime_mutex:
                    self._last_bytes_received = mqtt.time_func()

    def _sock_close(self) -> None:
        # Bytes of a closed connection must never be parsed as the next one's.
        self._read_buffer.clear()
        if self._closing_gracefully and self._sock is not None:
            _close_gracefully(self._sock)
        super()._sock_close()
