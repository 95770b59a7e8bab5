"""The typed reading of ChirpStack and The Things Stack uplinks (the fast path) against
the field-by-field reading it falls back to: the same uplink, or the same refusal, for
whatever a message holds; and real messages take the typed path."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.formats import chirpstack, thethings
from ingest.uplink import Rejected, Uplink
from simulator.fleet import build_fleet
from simulator.stream import FleetStream
from tests.ingest.test_formats import ARRIVAL, CHIRPSTACK_UP, TTS_UP

FORMATS = {"chirpstack": (chirpstack, CHIRPSTACK_UP), "thethings": (thethings, TTS_UP)}
# Topics a message may arrive on: its own, and ones naming other applications or devices
# (among them values the examples put into the body), so that both readings are held to
# the same binding of the body to the topic.
TOPICS = {
    "chirpstack": [
        f"application/{application}/device/{device}/event/up"
        for application in ("17c82e96-be03-4f38-aef3-f83d48582d97", "app-1")
        for device in ("a81758fffe030001", "A81758FFFE030002", "a81758fffe0300aa")
    ],
    "thethings": [
        f"v3/{application}/devices/{device}/up"
        for application in ("school-climate@aarhus", "school-climate", "app-1@t")
        for device in ("room-101", "app-1")
    ],
}
# The fields each typed reading looks at, as paths into the message, with the kind of
# value it expects there; a hypothesis example puts other values (or none) at some of
# them: mostly of that kind (so that the typed reading is taken), sometimes anything.
READ_FIELDS: dict[str, dict[tuple, str]] = {
    "chirpstack": {
        ("deviceInfo",): "object",
        ("deviceInfo", "devEui"): "dev_eui",
        ("deviceInfo", "applicationId"): "text",
        ("time",): "time",
        ("fPort",): "integer",
        ("data",): "base64",
        ("object",): "object",
        ("rxInfo",): "gateways",
        ("rxInfo", 0): "object",
        ("rxInfo", 0, "rssi"): "number",
        ("rxInfo", 0, "snr"): "number",
        ("rxInfo", 0, "nsTime"): "time",
        ("rxInfo", 1, "rssi"): "number",
        ("rxInfo", 1, "snr"): "number",
        ("rxInfo", 1, "channel_rssi"): "number",
        ("rxInfo", 1, "loRaSNR"): "number",
        ("rxInfo", 1, "nsTime"): "time",
    },
    "thethings": {
        ("end_device_ids",): "object",
        ("end_device_ids", "dev_eui"): "dev_eui",
        ("end_device_ids", "device_id"): "text",
        ("end_device_ids", "application_ids"): "object",
        ("end_device_ids", "application_ids", "application_id"): "text",
        ("received_at",): "time",
        ("uplink_message",): "object",
        ("uplink_message", "received_at"): "time",
        ("uplink_message", "f_port"): "integer",
        ("uplink_message", "frm_payload"): "base64",
        ("uplink_message", "decoded_payload"): "object",
        ("uplink_message", "rx_metadata"): "gateways",
        ("uplink_message", "rx_metadata", 0): "object",
        ("uplink_message", "rx_metadata", 0, "rssi"): "number",
        ("uplink_message", "rx_metadata", 0, "channel_rssi"): "number",
        ("uplink_message", "rx_metadata", 0, "snr"): "number",
        ("uplink_message", "rx_metadata", 1, "rssi"): "number",
        ("uplink_message", "rx_metadata", 1, "snr"): "number",
        ("uplink_message", "rx_metadata", 1, "loRaSNR"): "number",
    },
}
_DELETE = object()

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
numbers = st.one_of(
    st.integers(-150, 20), st.floats(-150, 20, allow_nan=False), st.sampled_from([-87, -87.0])
)
gateway = st.fixed_dictionaries(
    {},
    optional={
        "rssi": numbers,
        "channel_rssi": numbers,
        "snr": numbers,
        "loRaSNR": numbers,
        "nsTime": st.sampled_from(["", "2026-11-22T08:15:03Z", "late"]),
    },
)
OF_KIND = {
    "object": st.one_of(st.just({}), st.dictionaries(st.sampled_from("ab"), json_scalars)),
    "dev_eui": st.sampled_from(["", "A81758FFFE030002", " a81758fffe030002 ", "a81758fffe03"]),
    "text": st.one_of(st.sampled_from(["", "app-1"]), st.text(max_size=4)),
    "time": st.sampled_from(
        ["", "2026-11-22T08:15:03Z", "2026-11-22T08:15:03.5+01:00", " 2026-11-22T08:15:03z", "x"]
    ),
    "integer": st.integers(-2, 300),
    "base64": st.sampled_from(["", "AQID", "AQ==AA", "not base64!", "AQé="]),
    "number": numbers,
    "gateways": st.lists(gateway, max_size=3),
}


@st.composite
def changes(draw, fmt: str) -> list[tuple[tuple, Any]]:
    fields = READ_FIELDS[fmt]
    paths = draw(st.lists(st.sampled_from(sorted(fields, key=repr)), unique=True, max_size=5))
    chosen = []
    for path in paths:
        value = draw(
            st.one_of(
                OF_KIND[fields[path]],
                OF_KIND[fields[path]],
                OF_KIND[fields[path]],
                st.none(),
                st.just(_DELETE),
                json_values,
            )
        )
        chosen.append((path, value))
    return chosen


def _outcome(parse, topic: str, payload: bytes) -> Uplink | tuple[str, str, str | None]:
    try:
        return parse(topic, payload, ARRIVAL)
    except Rejected as refused:
        return (refused.reason, refused.detail, refused.device_id)


def _put(message: dict, path: tuple, value: Any) -> None:
    """Set (or delete) `path` in `message` where the containers along it exist."""
    *parents, last = path
    if value is not _DELETE:
        value = copy.deepcopy(value)  # never one object in two places (st.just repeats it)
    node: Any = message
    for key in parents:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(node, dict) and isinstance(last, str):
        if value is _DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@settings(max_examples=1000, deadline=None)
@given(data=st.data())
def test_typed_reading_agrees_with_the_field_by_field_reading(fmt: str, data) -> None:
    module, example = FORMATS[fmt]
    message = copy.deepcopy(example)
    for path, value in data.draw(changes(fmt)):
        _put(message, path, value)
    topic = data.draw(st.sampled_from(TOPICS[fmt]))
    payload = orjson.dumps(message)
    assert _outcome(module.parse, topic, payload) == _outcome(module._parse_loosely, topic, payload)


# Cases a random search meets seldom: a field's stand-in when it is absent or empty.
EDGE_CASES = [
    ("chirpstack", [(("rxInfo", 1, "snr"), _DELETE), (("rxInfo", 1, "loRaSNR"), 3)]),
    ("chirpstack", [(("rxInfo", 1, "rssi"), None), (("rxInfo", 1, "channel_rssi"), -80)]),
    ("chirpstack", [(("rxInfo", 0, "rssi"), -87), (("rxInfo", 0, "snr"), 1)]),  # a tie
    ("chirpstack", [(("time",), ""), (("rxInfo", 0, "nsTime"), "")]),
    ("chirpstack", [(("time",), _DELETE), (("rxInfo", 0, "nsTime"), "late")]),
    ("chirpstack", [(("deviceInfo", "applicationId"), "")]),
    ("chirpstack", [(("object",), {})]),
    ("thethings", [(("uplink_message", "received_at"), ""), (("received_at",), "x")]),
    ("thethings", [(("uplink_message", "rx_metadata", 1, "snr"), None)]),
    ("thethings", [(("end_device_ids", "application_ids"), None)]),
    ("thethings", [(("end_device_ids", "dev_eui"), ""), (("end_device_ids", "device_id"), "")]),
    ("chirpstack", [(("deviceInfo", "applicationId"), "app-1")]),
    ("chirpstack", [(("deviceInfo", "devEui"), "a81758fffe0300aa")]),
    ("thethings", [(("end_device_ids", "device_id"), "room-102")]),
    ("thethings", [(("end_device_ids", "application_ids", "application_id"), "app-1")]),
    ("thethings", [(("end_device_ids", "device_id"), None)]),
]


@pytest.mark.parametrize(("fmt", "edits"), EDGE_CASES)
def test_typed_reading_agrees_on_stand_ins(fmt: str, edits: list[tuple[tuple, Any]]) -> None:
    module, example = FORMATS[fmt]
    message = copy.deepcopy(example)
    for path, value in edits:
        _put(message, path, value)
    payload = orjson.dumps(message)
    topic = TOPICS[fmt][0]
    assert _outcome(module.parse, topic, payload) == _outcome(module._parse_loosely, topic, payload)


@pytest.mark.parametrize(("network", "fmt"), [("chirpstack", "chirpstack"), ("tts", "thethings")])
def test_the_simulators_uplinks_take_the_typed_path(network: str, fmt: str) -> None:
    module, _ = FORMATS[fmt]
    decode = chirpstack._decode_event if fmt == "chirpstack" else thethings._decode_message
    fleet = build_fleet(classrooms=20, bins=20, parking_bays=20, seed=3, network=network)
    start = datetime.now(UTC) - timedelta(hours=3)
    stream = FleetStream(fleet, start, seed=3, duplicate_share=0.0, malformed_share=0.0)
    uplinks = list(islice(stream.uplinks(), 300))
    assert uplinks
    for uplink in uplinks:
        decode(uplink.payload)  # raises if the typed reading does not fit
        typed = module.parse(uplink.topic, uplink.payload, ARRIVAL)
        assert typed == module._parse_loosely(uplink.topic, uplink.payload, ARRIVAL)


def test_a_message_off_the_types_is_read_field_by_field() -> None:
    # A gateway entry that is not an object does not fit the typed reading; the message
    # is still taken, the entry skipped, as the field-by-field reading does.
    event = copy.deepcopy(CHIRPSTACK_UP)
    event["rxInfo"].append("not a gateway")
    payload = orjson.dumps(event)
    with pytest.raises(msgspec.ValidationError):
        chirpstack._decode_event(payload)
    uplink = chirpstack.parse(TOPICS["chirpstack"][0], payload, ARRIVAL)
    assert (uplink.rssi_dbm, uplink.snr_db) == (-87.0, 8.25)
    assert uplink.received_at == datetime(2026, 11, 22, 8, 15, 3, 123456, tzinfo=UTC)


def test_gateways_that_are_not_a_list_are_skipped_also_when_looking_for_a_time() -> None:
    # Without "time" the receive time is looked for in rxInfo[].nsTime; a number there
    # once raised TypeError (an internal-error dead letter) instead of being skipped.
    event = copy.deepcopy(CHIRPSTACK_UP)
    event["time"] = ""
    event["rxInfo"] = 1.0
    uplink = chirpstack.parse(TOPICS["chirpstack"][0], orjson.dumps(event), ARRIVAL)
    assert uplink.received_at == ARRIVAL
    assert (uplink.rssi_dbm, uplink.snr_db) == (None, None)
