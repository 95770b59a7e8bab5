"""A paho-mqtt client that reads the socket in large chunks.

paho 2.x reads every packet with separate ``recv`` calls: one for the command byte, one
per remaining-length byte, then the body; and ``loop_read`` handles one packet per
``select`` round when nothing is in flight outwards. Under a stream of QoS 1 PUBLISHes
that is several system calls and a ``select`` per message, and it was the largest cost in
the ingest profile (bench/bench_ingest.py, BENCHMARKS.md). This subclass serves those
reads from a buffer filled 64 KiB at a time and drains the buffer before going back to
``select``. Protocol handling is paho's own.

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
import threading
import time
from collections.abc import Iterable

import paho.mqtt.client as mqtt

_CHUNK_BYTES = 65536
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


class BufferedClient(mqtt.Client):
    """``paho.mqtt.client.Client`` with buffered socket reads, a graceful close and acks
    bound to the connection their message came on; otherwise the same API."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._read_buffer = bytearray()
        self._closing_gracefully = False
        self._connection_lock = threading.Lock()
        self._connection = 0

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
        sent = 0
        with self._connection_lock:
            for mid, qos, connection in acks:
                if connection == self._connection and qos > 0:
                    self.ack(mid, qos)
                    sent += 1
        return sent

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
            rc = super().loop_read(max_packets)
        return rc

    def _sock_close(self) -> None:
        # Bytes of a closed connection must never be parsed as the next one's.
        self._read_buffer.clear()
        if self._closing_gracefully and self._sock is not None:
            _close_gracefully(self._sock)
        super()._sock_close()
