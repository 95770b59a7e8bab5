"""Every wire format end to end through the real Mosquitto into the real PostgreSQL."""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import orjson
from prometheus_client import REGISTRY

from ingest import telemetry
from ingest.subscriber import IngestService
from models.settings import Settings
from tests.ingest.conftest import BIN_EUI, ELSYS_ERS_CO2_HEX, ELSYS_EUI, count, wait_for
from tests.processes import free_port


def chirpstack_up(
    dev_eui: str,
    payload_hex: str | None = None,
    obj=None,
    time=None,
    fcnt=1,
    gateways=(("gw-a", -97, 7.5),),
) -> bytes:
    event = {
        "deduplicationId": "6a2b9f0e-5d0c-4f6c-9d5f-0b8f6f0f2a11",
        "time": (time or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
        "deviceInfo": {
            "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
            "applicationId": "app-1",
            "applicationName": "school-climate",
            "deviceProfileName": "Elsys ERS CO2",
            "deviceName": "room-101",
            "devEui": dev_eui,
        },
        "devAddr": "01fb3a21",
        "fCnt": fcnt,
        "fPort": 5,
        "rxInfo": [
            {"gatewayId": gw, "uplinkId": 1, "rssi": rssi, "snr": snr} for gw, rssi, snr in gateways
        ],
    }
    if payload_hex is not None:
        event["data"] = base64.b64encode(bytes.fromhex(payload_hex)).decode()
    if obj is not None:
        event["object"] = obj
    return orjson.dumps(event)


def tts_up(dev_eui: str, payload_hex: str, received_at: datetime) -> bytes:
    return orjson.dumps(
        {
            "end_device_ids": {
                "device_id": "room-101",
                "application_ids": {"application_id": "school-climate"},
                "dev_eui": dev_eui.upper(),
                "dev_addr": "260B1234",
            },
            "received_at": received_at.isoformat(),
            "uplink_message": {
                "f_port": 5,
                "f_cnt": 42,
                "frm_payload": base64.b64encode(bytes.fromhex(payload_hex)).decode(),
                "rx_metadata": [
                    {
                        "gateway_ids": {"gateway_id": "gw-1"},
                        "rssi": -110,
                        "channel_rssi": -110,
                        "snr": -3.25,
                    },
                    {"gateway_ids": {"gateway_id": "gw-2"}, "rssi": -88, "snr": 9.0},
                ],
                "settings": {
                    "data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 7}},
                    "frequency": "868100000",
                },
                "received_at": received_at.isoformat(),
            },
        }
    )


def readings_of(db, sensor_id: int) -> dict[str, float]:
    rows = db.execute(
        "SELECT m.name, r.value FROM readings r JOIN metrics m ON m.id = r.metric_id "
        "WHERE r.sensor_id = %s",
        (sensor_id,),
    ).fetchall()
    return dict(rows)


def test_chirpstack_uplink_is_decoded_with_the_device_models_decoder(
    db, fleet, ingest, publisher
) -> None:
    sent_at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    publisher.publish(
        fleet.chirpstack_topic(ELSYS_EUI), chirpstack_up(ELSYS_EUI, ELSYS_ERS_CO2_HEX, time=sent_at)
    )
    wait_for(lambda: count(db, "SELECT count(*) FROM readings") >= 7, what="7 readings")
    assert readings_of(db, fleet.climate_sensor) == {
        "temperature_c": 22.6,
        "humidity_pct": 41.0,
        "light_lux": 39.0,
        "motion_count": 6.0,
        "co2_ppm": 776.0,
        "rssi_dbm": -97.0,
        "snr_db": 7.5,
    }
    times = {r[0] for r in db.execute("SELECT DISTINCT time FROM readings")}
    assert times == {sent_at}
    # Latest values follow within IOT_LATEST_FLUSH_INTERVAL_S (5 s by default).
    wait_for(
        lambda: (
            count(
                db,
                "SELECT count(*) FROM latest_readings WHERE sensor_id = %s",
                (fleet.climate_sensor,),
            )
            == 7
        ),
        timeout=Settings.model_fields["latest_flush_interval_s"].default + 5,
        what="the latest values",
    )


def test_network_server_decoded_object_is_used_and_bin_fill_is_derived(
    db, fleet, ingest, publisher
) -> None:
    publisher.publish(
        fleet.chirpstack_topic(BIN_EUI),
        chirpstack_up(BIN_EUI, obj={"distance": 550, "battery": 3.6}),
    )
    wait_for(
        lambda: (
            count(db, "SELECT count(*) FROM readings WHERE sensor_id = %s", (fleet.bin_sensor,))
            >= 3
        ),
        what="bin readings",
    )
    values = readings_of(db, fleet.bin_sensor)
    assert values["distance_mm"] == 550.0
    assert values["battery_v"] == 3.6
    # depth 1000 mm below a sensor mounted 100 mm above the full line: 450 mm of 1000 empty
    assert abs(values["fill_pct"] - 55.0) < 1e-9


def test_things_stack_uplink_takes_network_receive_time_and_best_gateway(
    db, fleet, ingest, publisher
) -> None:
    # An hour ago, whatever the time of day (later today would be refused as future).
    received = datetime.now(UTC).replace(microsecond=123456) - timedelta(hours=1)
    publisher.publish(fleet.tts_topic("room-101"), tts_up(ELSYS_EUI, ELSYS_ERS_CO2_HEX, received))
    wait_for(lambda: count(db, "SELECT count(*) FROM readings") >= 7, what="TTS readings")
    values = readings_of(db, fleet.climate_sensor)
    assert values["co2_ppm"] == 776.0 and values["rssi_dbm"] == -88.0 and values["snr_db"] == 9.0
    assert {r[0] for r in db.execute("SELECT DISTINCT time FROM readings")} == {received}


def test_native_single_and_batched_samples(db, fleet, ingest, publisher) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    topic = fleet.native_topic("aarhus", "gw-co2-1")
    publisher.publish(topic, orjson.dumps({"time": t0.isoformat(), "readings": {"co2_ppm": 612}}))
    publisher.publish(
        topic,
        orjson.dumps(
            {
                "samples": [
                    {
                        "time": (t0 + timedelta(minutes=m)).isoformat(),
                        "readings": {"co2_ppm": 600 + m, "temperature_c": 21.0, "occupancy": True},
                    }
                    for m in (5, 10)
                ]
            }
        ),
    )
    wait_for(
        lambda: (
            count(db, "SELECT count(*) FROM readings WHERE sensor_id = %s", (fleet.native_sensor,))
            >= 7
        ),
        what="native readings",
    )
    co2 = db.execute(
        "SELECT r.time, r.value FROM readings r JOIN metrics m ON m.id = r.metric_id "
        "WHERE m.name = 'co2_ppm' ORDER BY r.time"
    ).fetchall()
    assert co2 == [
        (t0, 612.0),
        (t0 + timedelta(minutes=5), 605.0),
        (t0 + timedelta(minutes=10), 610.0),
    ]
    occupancy = readings_of(db, fleet.native_sensor)["occupancy"]
    assert occupancy == 1.0
    assert count(db, "SELECT count(*) FROM dead_letters") == 0


def test_the_same_uplink_via_two_gateways_is_stored_once_and_counted(
    db, fleet, ingest, publisher
) -> None:
    at = datetime.now(UTC).replace(microsecond=0)
    message = chirpstack_up(ELSYS_EUI, ELSYS_ERS_CO2_HEX, time=at)
    for _ in range(3):
        publisher.publish(fleet.chirpstack_topic(ELSYS_EUI), message)
    wait_for(lambda: ingest.totals.committed_messages >= 3, what="3 committed messages")
    assert count(db, "SELECT count(*) FROM readings") == 7
    assert ingest.totals.readings == 7
    assert ingest.totals.duplicates == 14
    assert count(db, "SELECT count(*) FROM dead_letters") == 0


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _chirpstack_messages_counted() -> float:
    value = REGISTRY.get_sample_value("iot_ingest_messages_total", {"format": "chirpstack"})
    return value or 0.0


def test_health_is_ok_only_with_broker_and_database_and_metrics_count_messages(
    db, fleet, settings, publisher
) -> None:
    port = free_port()
    server = telemetry.serve(port, host="127.0.0.1")
    unreachable = settings.model_copy(
        update={"database_url": f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"}
    )
    service = IngestService(unreachable)
    service.start()
    try:
        wait_for(lambda: _get(port, "/health")[0] == 503, what="503 without a database")
        status, body = _get(port, "/health")
        assert orjson.loads(body)["database_available"] is False
        service.stop(timeout=10)
        assert not service._thread.is_alive(), "a service that never started must stop at once"

        service = IngestService(settings)
        service.start()
        assert service.wait_connected(10)
        time.sleep(0.3)
        received_before = _chirpstack_messages_counted()
        publisher.publish(
            fleet.chirpstack_topic(ELSYS_EUI), chirpstack_up(ELSYS_EUI, ELSYS_ERS_CO2_HEX)
        )
        wait_for(lambda: service.totals.committed_messages == 1, what="a committed message")
        assert _chirpstack_messages_counted() == received_before + 1
        status, body = _get(port, "/health")
        assert status == 200
        assert orjson.loads(body) == {
            "status": "ok",
            "mqtt_connected": True,
            "database_available": True,
        }
        status, metrics = _get(port, "/metrics")
        assert status == 200
        assert b'iot_ingest_messages_total{format="chirpstack"}' in metrics
        assert b"iot_ingest_batch_commit_seconds_count" in metrics
        assert _get(port, "/nothing")[0] == 404
    finally:
        service.stop()
        server.shutdown()
