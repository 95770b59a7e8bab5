"""Network-server decoded objects map onto canonical metrics."""

from __future__ import annotations

import pytest

from domain.decoders import DecodeError
from domain.decoders.generic import normalise_object


def test_common_field_names_map_to_canonical_metrics() -> None:
    obj = {"temperature": 21.5, "humidity": 40, "co2": 812, "battery": 3.6, "occupied": True}
    assert normalise_object(obj) == {
        "temperature_c": 21.5,
        "humidity_pct": 40.0,
        "co2_ppm": 812.0,
        "battery_v": 3.6,
        "occupied": True,
    }


def test_canonical_names_pass_through_unchanged() -> None:
    assert normalise_object({"distance_mm": 1234, "fill_pct": 55.5, "occupancy": 0}) == {
        "distance_mm": 1234.0,
        "fill_pct": 55.5,
        "occupancy": False,
    }


def test_unit_suffixed_names_are_converted() -> None:
    obj = {"distance_cm": 42, "pressure_hpa": 1013.25, "battery_mv": 3012, "temperature_f": 212}
    assert normalise_object(obj) == pytest.approx(
        {"distance_mm": 420.0, "pressure_pa": 101325.0, "battery_v": 3.012, "temperature_c": 100.0}
    )


def test_value_unit_wrappers_use_the_unit() -> None:
    obj = {
        "air_temperature": {"displayName": "Air temperature", "unit": "°C", "value": 27.5},
        "barometric_pressure": {"unit": "Pa", "value": 96412},
        "distance": {"unit": "cm", "value": 120},
        "air_humidity": {"unit": "%", "value": 36.4},
        "device_id": 3005,
    }
    assert normalise_object(obj) == {
        "temperature_c": 27.5,
        "pressure_pa": 96412.0,
        "distance_mm": 1200.0,
        "humidity_pct": 36.4,
    }


def test_a_unit_that_contradicts_the_field_name_is_ignored() -> None:
    with pytest.raises(DecodeError):
        normalise_object({"co2": {"unit": "ppb", "value": 400}})


def test_ambiguous_bare_names_follow_the_documented_rules() -> None:
    assert normalise_object({"pressure": 1004.7, "battery": 92}) == pytest.approx(
        {"pressure_pa": 100470.0, "battery_pct": 92.0}
    )
    assert normalise_object({"pressure": 100470, "battery": 3.1}) == {
        "pressure_pa": 100470.0,
        "battery_v": 3.1,
    }


def test_parking_words_and_numbers_become_booleans() -> None:
    assert normalise_object({"parking_status": "occupied"}) == {"occupied": True}
    assert normalise_object({"occupied": 0}) == {"occupied": False}
    assert normalise_object({"Occupied": "free"}) == {"occupied": False}


def test_non_finite_and_non_numeric_values_are_skipped() -> None:
    assert normalise_object({"temperature": float("nan"), "humidity": "41.5", "co2": "n/a"}) == {
        "humidity_pct": 41.5
    }


@pytest.mark.parametrize(
    "obj", [{}, {"type": "heartbeat", "firmware": "1.2.3"}, {"occupied": "maybe"}]
)
def test_object_without_usable_fields_raises_decode_error(obj: dict[str, object]) -> None:
    with pytest.raises(DecodeError, match="no field we can map"):
        normalise_object(obj)


def test_non_mapping_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="must be a JSON object"):
        normalise_object([1, 2, 3])  # type: ignore[arg-type]
