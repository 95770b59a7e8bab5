"""A paho-mqtt client that reads the socket in large chunks.

paho 2.x reads every packet with separate ``recv`` calls: one for the command byte, one
per remaining-length byte, then the body; and ``loop_read`` handles one packet per
``select`` round when nothing is in flight outwards. Under a stream of QoS 1 PUBLISHes
that is several system calls and a ``select`` per message, and it was the largest cost in
the ingest profile (bench/bench_ingest.py, BENCHMARKS.md). This subclass serves those
reads from a buffer filled 64 KiB at a time and drains the buffer before going back to
``select``. Protocol handling is paho's own.
"""

from __future__ import annotations

import paho.mqtt.client as mqtt

_CHUNK_BYTES = 65536


class BufferedClient(mqtt.Client):
    """``paho.mqtt.client.Client`` with buffered socket reads; same API."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._read_buffer = bytearray()

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
        super()._sock_close()
