"""Where a model has both a native Python decoder and a JavaScript codec (written for
these tests in tests/codecs/js), both read the vendors' published dev vectors
(../shared/vectors/lorawan-dev.json) to the same canonical values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from domain.decoders import get_decoder
from ingest.codecs.mapping import apply_mapping, parse_mapping
from ingest.codecs.sandbox import CompiledCodec
from tests.decoders.test_vectors import VECTORS_FILE

JS = Path(__file__).parent / "js"

PAIRS = {
    # vendor: (Python decoder key, codec file, mapping)
    "Elsys": (
        "elsys",
        "elsys_ers.js",
        {
            "fields": {
                "temperature": "temperature_c",
                "humidity": "humidity_pct",
                "light": "light_lux",
                "motion": "motion_count",
                "co2": "co2_ppm",
                "vdd": {"metric": "battery_v", "unit": "mV"},
            }
        },
    ),
    "Teneo IoT": (
        "teneo_filling_degree",
        "teneo_filling.js",
        {
            "fields": {
                "battery": "battery_v",
                "distance": {"metric": "distance_mm", "unit": "cm"},
                "temperature": "temperature_c",
                "relativeHumidity": "humidity_pct",
            }
        },
    ),
}


def _vectors() -> list[dict]:
    vectors = json.loads(VECTORS_FILE.read_text())
    return [v for v in vectors if v["vendor"] in PAIRS]


@pytest.mark.parametrize(
    "vector", _vectors(), ids=lambda v: f"{v['vendor']}-{v['model']}-{v['payload_hex']}"
)
def test_codec_and_python_decoder_agree_on_the_dev_vectors(vector) -> None:
    key, codec_file, mapping = PAIRS[vector["vendor"]]
    payload, fport = bytes.fromhex(vector["payload_hex"]), vector["fPort"]
    native = get_decoder(key)(payload, fport)
    decoded = CompiledCodec((JS / codec_file).read_text()).decode(payload, fport)
    mapped = apply_mapping(parse_mapping(mapping), decoded.data)
    assert mapped.unmapped == [] and mapped.problems == []
    assert mapped.values.keys() == native.keys()
    for metric, value in native.items():
        assert math.isclose(mapped.values[metric], value, rel_tol=1e-9), metric


def test_both_vendors_have_vectors() -> None:
    assert {v["vendor"] for v in _vectors()} == set(PAIRS)
    assert len(_vectors()) == 6


def test_a_batch_call_gives_each_uplink_what_a_call_of_its_own_gives() -> None:
    """decode_many on the dev vectors of a vendor, in several orders and repeated: the
    results come back in order, each the one `decode` gives that uplink alone."""
    for vendor, (_, codec_file, _) in PAIRS.items():
        codec = CompiledCodec((JS / codec_file).read_text())
        vectors = [v for v in _vectors() if v["vendor"] == vendor]
        uplinks = [
            (bytes.fromhex(v["payload_hex"]), v["fPort"], f"2026-12-03T10:0{i}:00+00:00", None)
            for i, v in enumerate(vectors)
        ]
        for batch in (uplinks, uplinks[::-1], uplinks * 5):
            alone = [codec.decode(*uplink) for uplink in batch]
            together = codec.decode_many(batch)
            assert together == alone, vendor
