"""Wire-format parsers on the message shapes ChirpStack v4 and The Things Stack v3 publish
(field names and encodings as their integrations send them), and the native format."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest

from ingest.formats import format_of, parse
from ingest.uplink import Rejected

ARRIVAL = datetime(2026, 11, 22, 9, 0, 0, tzinfo=UTC)
ERS_CO2 = bytes.fromhex("0100e202290400270506060308")

# ChirpStack v4 JSON marshaler (protobuf JSON: camelCase, bytes as base64, times with
# nanoseconds, zero values omitted).
CHIRPSTACK_UP = {
    "deduplicationId": "3ac5e1a9-6c1d-4b8d-9c4f-9a5d1b3e8f00",
    "time": "2026-11-22T08:15:03.123456789Z",
    "deviceInfo": {
        "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
        "tenantName": "Aarhus Kommune",
        "applicationId": "17c82e96-be03-4f38-aef3-f83d48582d97",
        "applicationName": "school-climate",
        "deviceProfileId": "14855bf7-d10d-4aee-b618-ebfcb64dc7ad",
        "deviceProfileName": "Elsys ERS CO2",
        "deviceName": "room-101",
        "devEui": "A81758FFFE030001",
        "deviceClassEnabled": "CLASS_A",
        "tags": {},
    },
    "devAddr": "01fb3a21",
    "adr": True,
    "dr": 5,
    "fCnt": 418,
    "fPort": 5,
    "confirmed": False,
    "data": base64.b64encode(ERS_CO2).decode(),
    "rxInfo": [
        {
            "gatewayId": "0016c001f153a14c",
            "uplinkId": 4217,
            "gwTime": "2026-11-22T08:15:03.120Z",
            "nsTime": "2026-11-22T08:15:03.150123Z",
            "rssi": -112,
            "snr": -4.5,
            "context": "AAAAAAAAAAAAAA==",
            "metadata": {"region_config_id": "eu868"},
            "crcStatus": "CRC_OK",
        },
        {"gatewayId": "0016c001f153a14d", "uplinkId": 52, "rssi": -87, "snr": 8.25},
    ],
    "txInfo": {
        "frequency": 868100000,
        "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7, "codeRate": "CR_4_5"}},
    },
}

# The Things Stack v3 MQTT uplink message (JSON, DevEUI upper case, nanosecond times).
TTS_UP = {
    "end_device_ids": {
        "device_id": "room-101",
        "application_ids": {"application_id": "school-climate"},
        "dev_eui": "A81758FFFE030001",
        "join_eui": "0000000000000000",
        "dev_addr": "260B1234",
    },
    "correlation_ids": ["as:up:01HZX0...", "gs:uplink:01HZX0..."],
    "received_at": "2026-11-22T08:15:03.412345678Z",
    "uplink_message": {
        "session_key_id": "AYtJ8y...",
        "f_port": 5,
        "f_cnt": 42,
        "frm_payload": base64.b64encode(ERS_CO2).decode(),
        "decoded_payload": {"co2": 776, "temperature": 22.6},
        "rx_metadata": [
            {
                "gateway_ids": {"gateway_id": "gw-1", "eui": "B827EBFFFE000001"},
                "time": "2026-11-22T08:15:03.100Z",
                "rssi": -110,
                "channel_rssi": -110,
                "snr": -3.25,
                "uplink_token": "CiIKIAoUZ3ctMQ==",
            },
            {"gateway_ids": {"gateway_id": "gw-2"}, "rssi": -88, "channel_rssi": -88, "snr": 9},
        ],
        "settings": {
            "data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 7}},
            "frequency": "868100000",
        },
        "received_at": "2026-11-22T08:15:03.201234567Z",
        "consumed_airtime": "0.061696s",
    },
}


CHIRPSTACK_TOPIC = (
    "application/17c82e96-be03-4f38-aef3-f83d48582d97/device/a81758fffe030001/event/up"
)
TTS_TOPIC = "v3/school-climate@aarhus/devices/room-101/up"


def test_topics_route_to_their_format_under_any_prefix() -> None:
    assert format_of("application/17c8/device/a81758fffe030001/event/up")[0] == "chirpstack"
    assert format_of("test/ab12/application/x/device/y/event/up")[0] == "chirpstack"
    assert format_of("tenant/v3/school-climate@aarhus/devices/room-101/up")[0] == "thethings"
    assert format_of("municipality/aarhus/sensors/gw-1/readings")[0] == "native"
    for topic in (
        "application/x/device/y/event/join",  # a join event, not an uplink
        "v3/app/devices/dev/up/extra",
        "municipality/aarhus/sensors/readings",
        "xapplication/x/device/y/event/up",  # the pattern must start at a topic level
    ):
        with pytest.raises(Rejected) as refused:
            format_of(topic)
        assert refused.value.reason == "unsupported_topic"


def test_chirpstack_uplink_fields() -> None:
    topic = "application/17c82e96-be03-4f38-aef3-f83d48582d97/device/a81758fffe030001/event/up"
    uplink = parse(topic, orjson.dumps(CHIRPSTACK_UP), ARRIVAL)
    assert uplink.format == "chirpstack"
    assert uplink.dev_eui == "a81758fffe030001"
    assert uplink.application_id == "17c82e96-be03-4f38-aef3-f83d48582d97"
    assert uplink.fport == 5 and uplink.payload == ERS_CO2
    assert uplink.decoded is None
    assert uplink.received_at == datetime(2026, 11, 22, 8, 15, 3, 123456, tzinfo=UTC)
    assert (uplink.rssi_dbm, uplink.snr_db) == (-87.0, 8.25)


def test_chirpstack_without_time_takes_the_network_servers_then_ingests_time() -> None:
    topic = CHIRPSTACK_TOPIC
    event = {k: v for k, v in CHIRPSTACK_UP.items() if k != "time"}
    uplink = parse(topic, orjson.dumps(event), ARRIVAL)
    assert uplink.received_at == datetime(2026, 11, 22, 8, 15, 3, 150123, tzinfo=UTC)
    event["rxInfo"] = [{"gatewayId": "g", "rssi": -90, "snr": 1}]
    assert parse(topic, orjson.dumps(event), ARRIVAL).received_at == ARRIVAL


def test_chirpstack_decoded_object_and_empty_frame() -> None:
    topic = CHIRPSTACK_TOPIC
    event = dict(CHIRPSTACK_UP, object={"co2": 776, "temperature": 22.6})
    del event["data"], event["fPort"]  # zero values are omitted by the marshaler
    uplink = parse(topic, orjson.dumps(event), ARRIVAL)
    assert uplink.decoded == {"co2": 776, "temperature": 22.6}
    assert uplink.payload == b"" and uplink.fport is None


def test_things_stack_uplink_fields() -> None:
    topic = "v3/school-climate@aarhus/devices/room-101/up"
    uplink = parse(topic, orjson.dumps(TTS_UP), ARRIVAL)
    assert uplink.format == "thethings"
    assert uplink.dev_eui == "a81758fffe030001"
    assert uplink.application_id == "school-climate@aarhus"  # as the topic names it
    assert uplink.fport == 5 and uplink.payload == ERS_CO2
    assert uplink.decoded == {"co2": 776, "temperature": 22.6}
    # The network server's receive time, not the application server's.
    assert uplink.received_at == datetime(2026, 11, 22, 8, 15, 3, 201234, tzinfo=UTC)
    assert (uplink.rssi_dbm, uplink.snr_db) == (-88.0, 9.0)


def test_things_stack_without_dev_eui_says_how_to_fix_it() -> None:
    message = orjson.loads(orjson.dumps(TTS_UP))
    del message["end_device_ids"]["dev_eui"]
    with pytest.raises(Rejected) as refused:
        parse(TTS_TOPIC, orjson.dumps(message), ARRIVAL)
    assert refused.value.reason == "invalid_message"
    assert "dev_eui" in refused.value.detail and refused.value.device_id == "room-101"


def test_native_single_and_batch() -> None:
    topic = "x/municipality/aarhus/sensors/gw-co2-1/readings"
    single = parse(
        topic, b'{"message_id": "m-1", "readings": {"co2_ppm": 812, "occupancy": true}}', ARRIVAL
    )
    assert (single.municipality_slug, single.external_id) == ("aarhus", "gw-co2-1")
    assert single.device_id == "aarhus/gw-co2-1"
    assert single.identity == "native:m-1@aarhus/gw-co2-1"
    [sample] = single.samples
    assert sample.time is None and sample.values == {"co2_ppm": 812, "occupancy": True}
    batch = parse(
        topic,
        orjson.dumps(
            {
                "samples": [
                    {"time": "2026-11-22T08:15:00+01:00", "readings": {"co2_ppm": 800}},
                    {"time": "2026-11-22T07:20:00", "readings": {"co2_ppm": 845.5}},
                ]
            }
        ),
        ARRIVAL,
    )
    assert [s.time for s in batch.samples] == [
        datetime(2026, 11, 22, 7, 15, tzinfo=UTC),
        datetime(2026, 11, 22, 7, 20, tzinfo=UTC),  # no offset: taken as UTC
    ]


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("application/a/device/a81758fffe030001/event/up", b"\xff\xfe", "malformed_json"),
        ("application/a/device/a81758fffe030001/event/up", b"[1, 2]", "invalid_message"),
        (
            "application/a/device/a81758fffe030001/event/up",
            b'{"deviceInfo": {"devEui": "xyz"}}',
            "invalid_message",
        ),
        (
            "application/a/device/a81758fffe030001/event/up",
            b'{"deviceInfo": {"devEui": "a81758fffe030001"}, "data": "not base64!"}',
            "invalid_message",
        ),
        (  # padding in the middle
            "application/a/device/a81758fffe030001/event/up",
            b'{"deviceInfo": {"devEui": "a81758fffe030001"}, "data": "AQ==AA"}',
            "invalid_message",
        ),
        (  # outside ASCII
            "application/a/device/a81758fffe030001/event/up",
            '{"deviceInfo": {"devEui": "a81758fffe030001"}, "data": "AQé="}'.encode(),
            "invalid_message",
        ),
        (
            "application/a/device/a81758fffe030001/event/up",
            b'{"deviceInfo": {"devEui": 7}}',
            "invalid_message",
        ),
        (
            "application/a/device/a81758fffe030001/event/up",
            b'{"deviceInfo": {"devEui": "a81758fffe030001"}, "fPort": 300}',
            "invalid_message",
        ),
        (
            "application/a/device/a81758fffe030001/event/up",
            b'{"deviceInfo": {"devEui": "a81758fffe030001"}, "time": "yesterday"}',
            "invalid_message",
        ),
        (
            "v3/a/devices/b/up",
            b'{"end_device_ids": {"dev_eui": "A81758FFFE030001"}}',
            "invalid_message",
        ),
        (  # the topic's device level must be a DevEUI
            "application/a/device/room-101/event/up",
            b'{"deviceInfo": {"devEui": "a81758fffe030001"}}',
            "unsupported_topic",
        ),
        ("municipality/a/sensors/b/readings", b'{"readings": {}}', "invalid_message"),
        (
            "municipality/a/sensors/b/readings",
            b'{"readings": {"co2_ppm": "812"}}',
            "invalid_message",
        ),
        ("municipality/a/sensors/b/readings", b'{"samples": []}', "invalid_message"),
        (
            "municipality/a/sensors/b/readings",
            orjson.dumps({"samples": [{"readings": {"co2_ppm": 1}}] * 1001}),
            "invalid_message",
        ),
    ],
)
def test_wrong_shapes_are_refused_with_a_reason(topic: str, payload: bytes, reason: str) -> None:
    with pytest.raises(Rejected) as refused:
        parse(topic, payload, ARRIVAL)
    assert refused.value.reason == reason
    assert refused.value.detail


# --- the topic binds application and device; the body must agree ------------------------


@pytest.mark.parametrize(
    ("topic", "edit", "field"),
    [
        (  # another device than the topic's
            CHIRPSTACK_TOPIC.replace("a81758fffe030001", "a81758fffe0300aa"),
            {},
            "deviceInfo.devEui",
        ),
        (CHIRPSTACK_TOPIC, {"applicationId": "another-application"}, "deviceInfo.applicationId"),
        (CHIRPSTACK_TOPIC, {"applicationId": 17}, "deviceInfo.applicationId"),
    ],
)
def test_chirpstack_body_must_name_the_topics_application_and_device(
    topic: str, edit: dict, field: str
) -> None:
    event = orjson.loads(orjson.dumps(CHIRPSTACK_UP))
    event["deviceInfo"].update(edit)
    with pytest.raises(Rejected) as refused:
        parse(topic, orjson.dumps(event), ARRIVAL)
    assert refused.value.reason == "topic_mismatch" and field in refused.value.detail
    assert refused.value.device_id == topic.split("/")[3]  # the topic's device


def test_chirpstack_topic_device_is_compared_as_a_devEui() -> None:
    # Upper case in the topic and the body, lower case stored: the same device.
    topic = CHIRPSTACK_TOPIC.replace("a81758fffe030001", "A81758FFFE030001")
    event = orjson.loads(orjson.dumps(CHIRPSTACK_UP))
    del event["deviceInfo"]["applicationId"]  # absent: the topic's application is taken
    uplink = parse(topic, orjson.dumps(event), ARRIVAL)
    assert uplink.dev_eui == "a81758fffe030001"
    assert uplink.application_id == "17c82e96-be03-4f38-aef3-f83d48582d97"


@pytest.mark.parametrize(
    ("topic", "edit", "field"),
    [
        (TTS_TOPIC.replace("room-101", "room-102"), {}, "end_device_ids.device_id"),
        (
            TTS_TOPIC,
            {"application_ids": {"application_id": "odense-parking"}},
            "application_ids.application_id",
        ),
        (  # the tenant is not part of the body's application id
            TTS_TOPIC,
            {"application_ids": {"application_id": "school-climate@aarhus"}},
            "application_ids.application_id",
        ),
    ],
)
def test_things_stack_body_must_name_the_topics_application_and_device(
    topic: str, edit: dict, field: str
) -> None:
    message = orjson.loads(orjson.dumps(TTS_UP))
    message["end_device_ids"].update(edit)
    with pytest.raises(Rejected) as refused:
        parse(topic, orjson.dumps(message), ARRIVAL)
    assert refused.value.reason == "topic_mismatch" and field in refused.value.detail


def test_things_stack_without_a_tenant_in_the_topic() -> None:
    uplink = parse("v3/school-climate/devices/room-101/up", orjson.dumps(TTS_UP), ARRIVAL)
    assert uplink.application_id == "school-climate"
