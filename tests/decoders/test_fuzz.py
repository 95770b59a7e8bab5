"""Random input never escapes a decoder as anything but measurements or DecodeError."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.decoders import DecodeError, decoders, elsys, milesight
from domain.decoders.generic import normalise_object
from domain.metrics import METRICS

BOOLEAN_METRICS = {"occupied", "occupancy"}
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_canonical(result: Any) -> None:
    assert isinstance(result, dict)
    for name, value in result.items():
        assert name in METRICS, f"{name!r} is not a canonical metric"
        if name in BOOLEAN_METRICS:
            assert isinstance(value, bool), f"{name} must be a bool, got {value!r}"
        else:
            assert isinstance(value, float) and not isinstance(value, bool), (name, value)
            assert math.isfinite(value), (name, value)


@pytest.mark.parametrize("key", sorted(decoders()))
def test_random_bytes_decode_or_raise_decode_error(key: str) -> None:
    decode = decoders()[key]

    @FUZZ
    @given(payload=st.binary(max_size=80), fport=st.integers(min_value=0, max_value=255))
    def run(payload: bytes, fport: int) -> None:
        try:
            result = decode(payload, fport)
        except DecodeError as error:
            assert str(error), "a DecodeError must say what was wrong"
            return
        assert_canonical(result)

    run()


def _records(table: dict[Any, Any], with_channel: bool) -> st.SearchStrategy[bytes]:
    """Payloads made of known record headers followed by random value bytes."""
    headers = sorted(table)
    header = st.sampled_from(headers).map(lambda h: bytes(h) if with_channel else bytes([h]))
    record = st.tuples(header, st.binary(min_size=0, max_size=9)).map(lambda t: t[0] + t[1])
    return st.lists(record, min_size=1, max_size=8).map(b"".join)


@FUZZ
@given(payload=_records(elsys._READERS | elsys._SKIPPED_LENGTHS, with_channel=False))
def test_elsys_near_valid_frames_decode_or_raise_decode_error(payload: bytes) -> None:
    with contextlib.suppress(DecodeError):
        assert_canonical(elsys.decode(payload, 5))


@FUZZ
@given(payload=_records(milesight.AM300, with_channel=True))
def test_milesight_near_valid_frames_decode_or_raise_decode_error(payload: bytes) -> None:
    with contextlib.suppress(DecodeError):
        assert_canonical(milesight.decode_am300(payload, 85))


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
field_names = st.sampled_from(
    [
        "temperature",
        "humidity",
        "co2",
        "battery",
        "distance",
        "occupied",
        "pressure",
        "unit",
        "value",
        "fill_pct",
        "distance_cm",
        "battery_mv",
        "x",
    ]
) | st.text(max_size=12)


unit_wrappers = st.fixed_dictionaries(
    {"value": json_scalars},
    optional={"unit": st.sampled_from(["°C", "%", "ppm", "hPa", "cm", "mV", "dB", "µg/m³", "?"])},
)


@FUZZ
@given(obj=st.dictionaries(field_names, json_values | unit_wrappers, max_size=6))
def test_random_decoded_objects_normalise_or_raise_decode_error(obj: dict[str, Any]) -> None:
    try:
        result = normalise_object(obj)
    except DecodeError:
        return
    assert result, "an empty result must be a DecodeError instead"
    assert_canonical(result)
