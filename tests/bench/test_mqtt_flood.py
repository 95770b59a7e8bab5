"""The benchmark's C publisher (bench/mqtt_flood.c) against the real Mosquitto: every
message arrives once, whole and in order, at QoS 1, and it starts only when told."""

from __future__ import annotations

import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from bench.bench_ingest import compile_flood

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc)")

# Around the boundaries of MQTT's remaining length (1, 2 and 3 bytes) and empty.
PAYLOAD_SIZES = [0, 1, 100, 123, 124, 127, 128, 1400, 16_370, 16_384, 70_000]


def _subscribe(topic_filter: str, expected: int) -> tuple[mqtt.Client, list, threading.Event]:
    received: list[tuple[str, bytes, int]] = []
    done = threading.Event()
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-flood-sub-{uuid.uuid4().hex[:6]}"
    )

    def on_message(client, userdata, message) -> None:
        received.append((message.topic, message.payload, message.qos))
        if len(received) >= expected:
            done.set()

    subscribed = threading.Event()
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    client.subscribe(topic_filter, qos=1)
    assert subscribed.wait(10), "no SUBACK from Mosquitto"
    return client, received, done


def test_every_message_arrives_whole_once_and_in_order(tmp_path: Path) -> None:
    flood = compile_flood(tmp_path)
    run = uuid.uuid4().hex[:8]
    messages = [
        (f"test/{run}/flood/{i % 7}", bytes([65 + i % 26]) * size + str(i).encode())
        for i, size in enumerate(PAYLOAD_SIZES * 40)
    ]
    tsv = tmp_path / "messages.tsv"
    tsv.write_bytes(b"".join(t.encode() + b"\t" + p + b"\n" for t, p in messages))
    client, received, done = _subscribe(f"test/{run}/flood/#", len(messages))
    try:
        publisher = subprocess.Popen(
            [str(flood), "127.0.0.1", "1883", f"test-flood-{run}", str(tsv), "16"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert publisher.stdout.readline() == b"ready\n"
        # Connected and ready, but nothing is sent before the go.
        assert not done.wait(0.3) and received == []
        out, _ = publisher.communicate(b"go\n", timeout=60)
        assert publisher.returncode == 0
        count, seconds = out.split()
        assert int(count) == len(messages) and float(seconds) >= 0
        assert done.wait(30), f"{len(received)} of {len(messages)} messages arrived"
    finally:
        client.loop_stop()
        client.disconnect()
    assert [(t, p) for t, p, _ in received] == messages
    assert {qos for _, _, qos in received} == {1}


def test_a_broker_that_is_not_there_is_an_error(tmp_path: Path) -> None:
    flood = compile_flood(tmp_path)
    tsv = tmp_path / "one.tsv"
    tsv.write_bytes(b"test/x\t{}\n")
    # Port 9 (discard) has no listener here: the connection is refused.
    result = subprocess.run(
        [str(flood), "127.0.0.1", "9", "test-flood-refused", str(tsv)],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1 and b"connect" in result.stderr
