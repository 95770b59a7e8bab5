"""The uplink stream: deterministic, realistic envelopes, duplicates and malformed shares."""

from __future__ import annotations

import base64
import itertools
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from domain.decoders import DecodeError, device_models, get_decoder
from simulator.fleet import MUNICIPALITIES, build_fleet
from simulator.publisher import run_paced
from simulator.stream import (
    BAD_JSON,
    DUPLICATE,
    TRUNCATED_PAYLOAD,
    UNKNOWN_DEVICE,
    UPLINK,
    FleetStream,
)

START = datetime(2026, 11, 16, 6, 0, tzinfo=UTC)  # a Monday morning


def _take(stream: FleetStream, n: int):
    return list(itertools.islice(stream.uplinks(), n))


def test_fleet_covers_the_19_municipalities_with_unique_devices():
    fleet = build_fleet(classrooms=40, bins=40, parking_bays=40, seed=2)
    assert {m.kommune_code for m in fleet.municipalities} == {
        m.kommune_code for m in MUNICIPALITIES
    }
    assert len(fleet.municipalities) == 19
    assert len({d.dev_eui for d in fleet.devices}) == 120
    assert len({(z.site, z.name) for z in fleet.zones}) == len(fleet.zones)
    for d in fleet.devices:
        m = next(m for m in fleet.municipalities if m.slug == d.municipality)
        assert abs(d.lat - m.lat) < 0.2 and abs(d.lon - m.lon) < 0.3


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not():
    fleet = build_fleet(seed=7)
    first = [(u.topic, u.payload) for u in _take(FleetStream(fleet, START), 500)]
    again = [(u.topic, u.payload) for u in _take(FleetStream(build_fleet(seed=7), START), 500)]
    other = [(u.topic, u.payload) for u in _take(FleetStream(build_fleet(seed=8), START), 500)]
    assert first == again
    assert first != other


def test_chirpstack_envelope_has_the_fields_of_a_v4_up_event():
    fleet = build_fleet(seed=1)
    uplink = next(
        u for u in FleetStream(fleet, START).uplinks()
        if u.kind == UPLINK and "/event/up" in u.topic
    )  # fmt: skip
    event = orjson.loads(uplink.payload)
    info = event["deviceInfo"]
    assert uplink.topic == f"application/{info['applicationId']}/device/{info['devEui']}/event/up"
    assert info["devEui"] == uplink.dev_eui
    for key in ("tenantId", "tenantName", "applicationName", "deviceProfileId",
                "deviceProfileName", "deviceName"):  # fmt: skip
        assert info[key]
    assert base64.b64decode(event["data"]) == uplink.frame.payload
    assert event["fPort"] == uplink.frame.fport
    assert datetime.fromisoformat(event["time"]) == uplink.time
    assert event["rxInfo"] and all("gatewayId" in r and "rssi" in r for r in event["rxInfo"])
    assert event["txInfo"]["modulation"]["lora"]["spreadingFactor"] in (7, 8, 9, 10)


def test_tts_envelope_has_the_fields_of_a_v3_uplink_message():
    fleet = build_fleet(seed=1)
    uplink = next(
        u
        for u in FleetStream(fleet, START).uplinks()
        if u.kind == UPLINK and u.topic.startswith("v3/")
    )
    message = orjson.loads(uplink.payload)
    ids = message["end_device_ids"]
    app = ids["application_ids"]["application_id"]
    assert uplink.topic.startswith(f"v3/{app}@") and uplink.topic.endswith(
        f"/devices/{ids['device_id']}/up"
    )
    assert ids["dev_eui"] == uplink.dev_eui.upper()
    up = message["uplink_message"]
    assert base64.b64decode(up["frm_payload"]) == uplink.frame.payload
    assert up["f_port"] == uplink.frame.fport and isinstance(up["f_cnt"], int)
    assert up["settings"]["data_rate"]["lora"]["spreading_factor"] in (7, 8, 9, 10)
    assert up["rx_metadata"][0]["gateway_ids"]["gateway_id"]


def test_duplicate_differs_from_its_original_only_in_the_gateway():
    stream = FleetStream(build_fleet(seed=3), START, duplicate_share=0.5, malformed_share=0.0)
    messages = _take(stream, 400)
    pairs = [(a, b) for a, b in itertools.pairwise(messages) if b.kind == DUPLICATE]
    assert len(pairs) > 100
    for original, duplicate in pairs:
        a, b = orjson.loads(original.payload), orjson.loads(duplicate.payload)
        assert original.topic == duplicate.topic
        if "rxInfo" in a:
            assert a.pop("rxInfo") != b.pop("rxInfo")
        else:
            ua, ub = a["uplink_message"], b["uplink_message"]
            assert ua.pop("rx_metadata") != ub.pop("rx_metadata")
        assert a == b


def test_malformed_messages_come_in_three_kinds_at_about_the_requested_share():
    stream = FleetStream(build_fleet(seed=4), START, duplicate_share=0.0, malformed_share=0.05)
    messages = _take(stream, 6000)
    decoder_of = {(m.vendor, m.model): m.decoder for m in device_models()}
    kinds = {
        k: sum(m.kind == k for m in messages) for k in (BAD_JSON, TRUNCATED_PAYLOAD, UNKNOWN_DEVICE)
    }
    assert all(n > 0 for n in kinds.values()), kinds
    assert 0.03 < sum(kinds.values()) / len(messages) < 0.07
    for m in messages:
        if m.kind == BAD_JSON:
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(m.payload)
        if m.kind == UNKNOWN_DEVICE:
            assert m.dev_eui not in stream.fleet.by_eui
        if m.kind == TRUNCATED_PAYLOAD:
            # Counted as malformed, so the decoder of the device's model must refuse it.
            device = stream.fleet.by_eui[m.dev_eui]
            decoder = get_decoder(decoder_of[(device.vendor, device.model)])
            with pytest.raises(DecodeError):
                decoder(m.frame.payload, m.frame.fport)
    truncated = {
        stream.fleet.by_eui[m.dev_eui].kind for m in messages if m.kind == TRUNCATED_PAYLOAD
    }
    assert truncated == {"climate", "bin"}  # parking frames are one byte or end optionally


def test_every_device_reports_on_its_interval_and_times_are_ordered_within_a_step():
    fleet = build_fleet(classrooms=19, bins=19, parking_bays=0, seed=5)
    stream = FleetStream(fleet, START, duplicate_share=0.0, malformed_share=0.0)
    seen: dict[str, list[datetime]] = {}
    for _ in range(60 * 3):  # three hours of one-minute steps
        step = stream.step()
        assert [u.time for u in step] == sorted(u.time for u in step)
        for u in step:
            seen.setdefault(u.dev_eui, []).append(u.time)
    assert set(seen) == set(fleet.by_eui)
    for eui, times in seen.items():
        gaps = {round((b - a).total_seconds()) for a, b in itertools.pairwise(times)}
        assert gaps == {fleet.by_eui[eui].interval_s}


class _FakePublisher:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload))


def test_accelerated_run_catches_up_and_never_publishes_uplinks_from_the_future():
    wall = [datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp()]
    stream = FleetStream(
        build_fleet(seed=6), datetime.fromtimestamp(wall[0], UTC) - timedelta(hours=1)
    )
    publisher = _FakePublisher()
    stamps: list[float] = []

    def sleep(seconds: float) -> None:
        wall[0] += seconds

    original_step = stream.step

    def recording_step():
        uplinks = original_step()
        stamps.extend(u.time.timestamp() - wall[0] for u in uplinks)
        return uplinks

    stream.step = recording_step
    result = run_paced(
        stream, publisher, speed=60, duration_s=300, clock=lambda: wall[0], sleep=sleep
    )
    assert result.published == len(publisher.messages) > 0
    assert max(stamps) <= 0  # no uplink is stamped later than the wall clock when sent
    # One simulated hour at 60x takes a minute; the remaining four minutes run in real time.
    assert stream.now_s == pytest.approx(wall[0], abs=stream.step_s)


@pytest.mark.parametrize(
    ("network", "format_name"), [("chirpstack", "chirpstack"), ("tts", "thethings")]
)
def test_ingest_format_parsers_read_what_the_simulator_publishes(network, format_name):
    from ingest.formats import parse
    from ingest.uplink import Rejected

    fleet = build_fleet(seed=9, network=network)
    stream = FleetStream(fleet, START, duplicate_share=0.1, malformed_share=0.05)
    messages = _take(stream, 1500)
    parsed_pairs = {}
    for u in messages:
        if u.kind == BAD_JSON:
            with pytest.raises(Rejected):
                parse(u.topic, u.payload, START)
            continue
        uplink = parse(u.topic, u.payload, START)
        assert uplink.format == format_name
        assert uplink.dev_eui == u.dev_eui
        assert (uplink.fport, uplink.payload) == (u.frame.fport, u.frame.payload)
        assert uplink.received_at == u.time
        assert uplink.rssi_dbm is not None and uplink.snr_db is not None
        if u.kind == DUPLICATE:
            original = parsed_pairs[u.topic]
            assert (original.received_at, original.payload) == (uplink.received_at, uplink.payload)
        parsed_pairs[u.topic] = uplink
    assert any(u.kind == DUPLICATE for u in messages)
