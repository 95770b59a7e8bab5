"""Encoders reproduce the vendors' published frames and round-trip through our decoders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domain.decoders import DecodeError, device_models, get_decoder
from simulator.encoders import (
    ENCODERS,
    encode_bosch_tps110,
    encode_elsys_ers,
    encode_milesight_am107,
    encode_nwave_nps,
    truncate_frame,
)
from simulator.stream import REPORTED_METRICS

VECTORS = json.loads(
    (Path(__file__).resolve().parents[3] / "shared" / "vectors" / "lorawan-dev.json").read_text()
)

# Values a classroom, a bin and a parking bay really report, in canonical units.
TYPICAL = {
    "temperature_c": 21.7,
    "humidity_pct": 38.5,
    "light_lux": 412.0,
    "motion_count": 17.0,
    "co2_ppm": 1184.0,
    "battery_v": 3.581,
    "battery_pct": 93.0,
    "tvoc_ppb": 214.0,
    "pressure_pa": 101240.0,
    "distance_mm": 655.0,
    "occupied": 1.0,
}
# How close a decoded value must come back: the wire format's resolution.
TOLERANCE = {
    "temperature_c": 0.051,
    "humidity_pct": 0.51,
    "light_lux": 3.0,
    "pressure_pa": 10.0,
    "battery_v": 0.0011,
}
# Coarser formats: the Bosch heartbeat carries whole degrees.
MODEL_TOLERANCE = {("Bosch", "temperature_c"): 0.5}


def _vector(vendor: str, model: str, payload_hex: str) -> dict:
    return next(
        v
        for v in VECTORS
        if v["vendor"] == vendor and v["model"] == model and v["payload_hex"] == payload_hex
    )


def _decoder_for(vendor: str, model: str):
    spec = next((m for m in device_models() if (m.vendor, m.model) == (vendor, model)), None)
    assert spec is not None, f"no decoder registers the device model {vendor} {model}"
    return get_decoder(spec.decoder)


def test_elsys_encoder_reproduces_the_vendor_example_frame():
    vector = _vector("Elsys", "ERS CO2", "0100e202290400270506060308")
    expected = vector["expected"]
    frame = encode_elsys_ers(
        {
            "temperature_c": expected["temperature"],
            "humidity_pct": expected["humidity"],
            "light_lux": expected["light"],
            "motion_count": expected["motion"],
            "co2_ppm": expected["co2"],
        }
    )
    assert frame.fport == vector["fPort"]
    assert frame.payload.hex() == vector["payload_hex"]


@pytest.mark.parametrize(
    ("payload_hex", "values"),
    [
        (
            "01755c03673401046865056a4900",
            {"battery_pct": 92, "temperature_c": 30.8, "humidity_pct": 50.5, "motion_count": 73},
        ),
        ("077de704087d070009733f27", {"co2_ppm": 1255, "tvoc_ppb": 7, "pressure_pa": 100470}),
    ],
)
def test_milesight_encoder_reproduces_the_vendor_example_frames(payload_hex, values):
    vector = _vector("Milesight", "AM107", payload_hex)
    frame = encode_milesight_am107(values)
    assert frame.fport == vector["fPort"] == 85
    assert frame.payload.hex() == payload_hex


def test_parking_encoders_reproduce_the_vendor_example_frames():
    assert encode_bosch_tps110({"occupied": 1}).payload.hex() == "01"
    heartbeat = encode_bosch_tps110({"occupied": 1, "temperature_c": -1}, heartbeat=True)
    assert (heartbeat.fport, heartbeat.payload.hex()) == (2, "01ff")
    assert encode_nwave_nps({"occupied": 1}) == (1, bytes.fromhex("01"))
    assert encode_nwave_nps({"occupied": 0}, heartbeat=True) == (2, bytes.fromhex("00"))


@pytest.mark.parametrize(("vendor", "model"), sorted(REPORTED_METRICS))
def test_encoded_report_decodes_back_to_the_same_measurements(vendor, model):
    metrics = REPORTED_METRICS[(vendor, model)]
    values = {m: TYPICAL[m] for m in metrics}
    heartbeat = vendor == "Bosch"  # its heartbeat frame is the one carrying temperature
    frame = ENCODERS[(vendor, model)](values, heartbeat, 4242)

    decoded = _decoder_for(vendor, model)(frame.payload, frame.fport)

    for metric in metrics:
        assert metric in decoded, f"{vendor} {model}: {metric} lost in the round trip"
        tolerance = MODEL_TOLERANCE.get((vendor, metric), TOLERANCE.get(metric, 0.5))
        assert float(decoded[metric]) == pytest.approx(values[metric], abs=tolerance), metric


@pytest.mark.parametrize(
    ("vendor", "model"), [k for k in sorted(REPORTED_METRICS) if "occupied" in REPORTED_METRICS[k]]
)
def test_parking_status_frame_decodes_to_occupied(vendor, model):
    for occupied in (0.0, 1.0):
        frame = ENCODERS[(vendor, model)]({"occupied": occupied}, False, 1)
        decoded = _decoder_for(vendor, model)(frame.payload, frame.fport)
        assert float(decoded["occupied"]) == occupied


@pytest.mark.parametrize(("vendor", "model"), sorted(REPORTED_METRICS))
@pytest.mark.parametrize("heartbeat", [False, True])
def test_a_frame_cut_short_is_refused_by_the_decoder_or_not_cut(vendor, model, heartbeat):
    values = {m: TYPICAL[m] for m in REPORTED_METRICS[(vendor, model)]}
    frame = ENCODERS[(vendor, model)](values, heartbeat, 7)
    cut = truncate_frame(frame, vendor, model)
    if cut is None:
        # Not cut because the shorter frame would pass as a valid one (or nothing is left).
        assert len(frame.payload) == 1 or _decoder_for(vendor, model)(
            frame.payload[:-1], frame.fport
        )
        return
    assert cut == (frame.fport, frame.payload[:-1])
    with pytest.raises(DecodeError):
        _decoder_for(vendor, model)(cut.payload, cut.fport)


def test_multi_value_frames_are_cut_and_the_bosch_heartbeat_is_not():
    elsys = encode_elsys_ers({"temperature_c": 21.0, "co2_ppm": 600.0})
    assert truncate_frame(elsys, "Elsys", "ERS CO2") is not None
    heartbeat = ENCODERS[("Bosch", "TPS110")]({"occupied": 1.0, "temperature_c": 8.0}, True, 1)
    assert len(heartbeat.payload) == 2
    assert truncate_frame(heartbeat, "Bosch", "TPS110") is None


def test_values_outside_the_wire_range_are_clipped_not_wrapped():
    frame = encode_elsys_ers({"co2_ppm": 70000.0, "humidity_pct": -5.0})
    assert frame.payload == bytes.fromhex("0200") + bytes.fromhex("062710")
