"""Prometheus metrics and health of the ingest service, served over HTTP on
IOT_INGEST_METRICS_PORT: ``/metrics`` (Prometheus text format) and ``/health`` (JSON, 200
while connected to both the broker and the database, else 503)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

MESSAGES = Counter(
    "iot_ingest_messages_total", "MQTT messages received, by wire format", ["format"]
)
READINGS_WRITTEN = Counter("iot_ingest_readings_written_total", "Readings newly stored")
READINGS_DUPLICATE = Counter(
    "iot_ingest_readings_duplicate_total",
    "Readings already stored (duplicate uplinks, QoS 1 redelivery), absorbed",
)
DEAD_LETTERS = Counter(
    "iot_ingest_dead_letters_total", "Messages kept as dead letters, by reason", ["reason"]
)
BATCH_SECONDS = Histogram(
    "iot_ingest_batch_commit_seconds",
    "Time to write and commit one batch",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_ROWS = Histogram(
    "iot_ingest_batch_rows",
    "Readings per committed batch",
    buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 25000),
)
LAG_SECONDS = Histogram(
    "iot_ingest_lag_seconds",
    "From a message's arrival at ingest to the commit of its rows",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
LATEST_FLUSHED = Counter(
    "iot_ingest_latest_values_upserted_total",
    "Keys upserted into latest_readings by deferred flushes (several readings of a key "
    "within a flush interval count once; not counted with IOT_LATEST_FLUSH_INTERVAL_S=0)",
)
QOS0_MESSAGES = Counter(
    "iot_ingest_qos0_messages_total",
    "Messages the broker delivered at QoS 0 (published at QoS 0): lost, not redelivered, "
    "if ingest or the broker stops before they are stored",
)
DB_RETRIES = Counter("iot_ingest_db_retries_total", "Database operations retried after failure")
MQTT_CONNECTED = Gauge("iot_ingest_mqtt_connected", "1 while connected to the MQTT broker")
DB_AVAILABLE = Gauge(
    "iot_ingest_database_available", "1 while the last database operation succeeded"
)
UNACKED = Gauge(
    "iot_ingest_unacked_messages", "Messages received but not yet committed and acknowledged"
)

_health = {"mqtt_connected": False, "database_available": False}


def set_mqtt_connected(connected: bool) -> None:
    _health["mqtt_connected"] = connected
    MQTT_CONNECTED.set(int(connected))


def set_database_available(available: bool) -> None:
    _health["database_available"] = available
    DB_AVAILABLE.set(int(available))


def health() -> tuple[bool, dict[str, object]]:
    """(healthy, body): healthy while connected to both the broker and the database."""
    healthy = all(_health.values())
    return healthy, {"status": "ok" if healthy else "unavailable", **_health}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest())
        elif path == "/health":
            healthy, body = health()
            self._send(200 if healthy else 503, "application/json", orjson.dumps(body))
        else:
            self._send(404, "application/json", b'{"detail": "not found"}')

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # scrapes every few seconds are not worth a log line


def serve(port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer | None:
    """Serve /metrics and /health on `host`:`port` in a daemon thread (port 0 disables it).

    Returns the server (``shutdown()`` stops it), or None when disabled."""
    if not port:
        return None
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="ingest-http", daemon=True).start()
    return server
