"""Prometheus metrics of the ingest service (served on IOT_INGEST_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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
DB_RETRIES = Counter("iot_ingest_db_retries_total", "Database operations retried after failure")
MQTT_CONNECTED = Gauge("iot_ingest_mqtt_connected", "1 while connected to the MQTT broker")
UNACKED = Gauge(
    "iot_ingest_unacked_messages", "Messages received but not yet committed and acknowledged"
)


def serve(port: int) -> None:
    """Serve /metrics on `port` in a background thread (0 disables it)."""
    if port:
        start_http_server(port, addr="0.0.0.0")  # noqa: S104 (scraped by Prometheus)
