"""Fixtures for ingest tests: a registered fleet, a running service, a real publisher."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from domain.registry import sync_device_models
from ingest.subscriber import IngestService
from models.settings import Settings

ELSYS_ERS_CO2_HEX = "0100e202290400270506060308"  # 22.6 °C, 41 %, 39 lx, motion 6, 776 ppm
ELSYS_EUI = "a81758fffe030001"
RETIRED_EUI = "a81758fffe030002"
PENDING_EUI = "a81758fffe030003"
BIN_EUI = "24e124713c100001"
ODENSE_EUI = "a81758fffe0300aa"  # a sensor of another municipality


@dataclass
class Fleet:
    municipality_id: int
    climate_sensor: int
    bin_sensor: int
    native_sensor: int
    prefix: str  # topic prefix of this test's settings

    def chirpstack_topic(self, dev_eui: str) -> str:
        return f"{self.prefix}/application/app-1/device/{dev_eui}/event/up"

    def tts_topic(self, device_id: str) -> str:
        return f"{self.prefix}/v3/school-climate@aarhus/devices/{device_id}/up"

    def native_topic(self, slug: str, external_id: str) -> str:
        return f"{self.prefix}/municipality/{slug}/sensors/{external_id}/readings"


def register_fleet(db: psycopg.Connection, prefix: str) -> Fleet:
    models = sync_device_models(db)
    elsys = models[("Elsys", "ERS CO2")]
    m = db.execute(
        "INSERT INTO municipalities (slug, name) VALUES ('aarhus', 'Aarhus') RETURNING id"
    ).fetchone()[0]

    def sensor(eui: str | None, external: str, kind: str, model: int | None, **extra) -> int:
        columns = ["municipality_id", "dev_eui", "external_id", "kind", "device_model_id"]
        values = [m, eui, external, kind, model]
        for k, v in extra.items():
            columns.append(k)
            values.append(v)
        return db.execute(
            f"INSERT INTO sensors ({', '.join(columns)}) VALUES "
            f"({', '.join(['%s'] * len(values))}) RETURNING id",
            values,
        ).fetchone()[0]

    climate = sensor(ELSYS_EUI, "room-101", "climate", elsys)
    sensor(RETIRED_EUI, "room-old", "climate", elsys, status="retired")
    sensor(PENDING_EUI, "room-new", "climate", None, status="pending")
    generic = next(v for (vendor, _), v in models.items() if vendor.lower() == "generic")
    bin_sensor = sensor(
        BIN_EUI, "bin-7", "bin", generic, bin_depth_mm=1000.0, mount_offset_mm=100.0
    )
    native = sensor(None, "gw-co2-1", "climate", None)
    # A neighbour's sensor: Aarhus topics and applications must not reach it.
    odense = db.execute(
        "INSERT INTO municipalities (slug, name) VALUES ('odense', 'Odense') RETURNING id"
    ).fetchone()[0]
    db.execute(
        "INSERT INTO sensors (municipality_id, dev_eui, external_id, kind, device_model_id) "
        "VALUES (%s, %s, 'gw-odense-1', 'climate', %s)",
        (odense, ODENSE_EUI, elsys),
    )
    # Each municipality's network-server applications (ingest binds uplinks by them).
    db.execute(
        "INSERT INTO network_applications (network, application_id, municipality_id) VALUES "
        "('chirpstack', 'app-1', %s), ('thethings', 'school-climate@aarhus', %s), "
        "('chirpstack', 'app-odense', %s)",
        (m, m, odense),
    )
    return Fleet(m, climate, bin_sensor, native, prefix)


@pytest.fixture
def prefix(settings: Settings) -> str:
    return settings.mqtt_topics[0].split("/application/")[0]


@pytest.fixture
def fleet(db: psycopg.Connection, prefix: str) -> Fleet:
    return register_fleet(db, prefix)


class Publisher:
    """A real MQTT v5 client publishing with QoS 1 and waiting for each PUBACK."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-pub-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.connect(host, port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(timeout=10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher() -> Iterator[Publisher]:
    pub = Publisher()
    yield pub
    pub.close()


@pytest.fixture
def ingest(settings: Settings) -> Iterator[IngestService]:
    service = IngestService(settings)
    service.start()
    assert service.wait_connected(10), "ingest did not connect to the broker"
    time.sleep(0.3)  # subscriptions granted
    yield service
    service.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or condition}")


def count(conn: psycopg.Connection, sql: str, params: tuple = ()) -> int:
    return conn.execute(sql, params).fetchone()[0]


__all__ = ["Fleet", "Publisher", "count", "register_fleet", "threading", "wait_for"]
