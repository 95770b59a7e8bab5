"""Ingest's /metrics and /health listen on the loopback address unless configured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.processes import child_env, free_port, wait_for_port


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on `port` (Linux /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_ingest_metrics_bind_to_loopback_by_default(settings) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "ingest"],
        env=child_env(
            IOT_DATABASE_URL=settings.database_url,
            IOT_MQTT_CLIENT_ID=settings.mqtt_client_id,
            IOT_MQTT_SHARE_GROUP=settings.mqtt_share_group,
            IOT_MQTT_TOPICS=json.dumps(settings.mqtt_topics),
            IOT_INGEST_METRICS_PORT=str(port),
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 30)
        assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing else
    finally:
        process.terminate()
        process.wait(30)
