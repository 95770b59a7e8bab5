"""The declarative mapping: checked when stored (a wrong metric or unit is refused with
the reason), applied without guessing (unmapped fields are reported, not taken)."""

from __future__ import annotations

import pytest

from domain.decoders.generic import normalise_object
from ingest.codecs.mapping import MappingError, apply_mapping, parse_mapping


def _wrapped(value, unit: str) -> dict:
    return {"displayName": "x", "unit": unit, "value": value}


# An uplink of a Decentlab DL-LP8P as its network server's codec decodes it: the CO2
# chip's own temperature beside the air temperature, the smoothed (lpf) CO2 beside the
# measured one, and values the sensor reports for diagnosis.
DL_LP8P = {
    "battery_voltage": _wrapped(3.02, "V"),
    "air_temperature": _wrapped(21.62, "°C"),
    "air_humidity": _wrapped(38.9, "%"),
    "barometer_temperature": _wrapped(21.9, "°C"),
    "barometric_pressure": _wrapped(99412, "Pa"),
    "co2_concentration": _wrapped(812, "ppm"),
    "co2_concentration_lpf": _wrapped(790, "ppm"),
    "co2_sensor_temperature": _wrapped(24.5, "°C"),
    "capacitor_voltage_1": _wrapped(3.1, "V"),
    "raw_ir_reading": _wrapped(24017, ""),
}
DL_LP8P_MAPPING = {
    "fields": {
        "battery_voltage": {"metric": "battery_v"},
        "air_temperature": {"metric": "temperature_c"},
        "air_humidity": {"metric": "humidity_pct"},
        "barometric_pressure": {"metric": "pressure_pa"},
        "co2_concentration": {"metric": "co2_ppm"},
    },
    "ignore": ["co2_concentration_lpf", "co2_sensor_temperature", "barometer_temperature"],
}


def test_the_guessing_normaliser_takes_the_wrong_temperature_and_co2() -> None:
    # What issue 20 item 7 is about: the last field whose unit looks right wins.
    guessed = normalise_object(DL_LP8P)
    assert guessed["temperature_c"] != 21.62 or guessed["co2_ppm"] != 812


def test_the_mapping_takes_the_fields_it_names_and_reports_the_rest() -> None:
    mapped = apply_mapping(parse_mapping(DL_LP8P_MAPPING), DL_LP8P)
    assert mapped.values == {
        "battery_v": 3.02,
        "temperature_c": 21.62,
        "humidity_pct": 38.9,
        "pressure_pa": 99412.0,
        "co2_ppm": 812.0,
    }
    assert mapped.unmapped == ["capacitor_voltage_1", "raw_ir_reading"]
    assert mapped.problems == []


def test_units_are_converted_including_units_written_into_strings() -> None:
    mapping = parse_mapping(
        {
            "fields": {
                "distance": {"metric": "distance_mm", "unit": "cm"},
                "level": "fill_pct",
                "temp_f": {"metric": "temperature_c", "unit": "°F"},
                "battery.mv": {"metric": "battery_v", "unit": "mV"},
                "pressure": {"metric": "pressure_pa", "unit": "hPa"},
                "tvoc": {"metric": "tvoc_ppb", "unit": "ppm"},
                "parked": {"metric": "occupied"},
            }
        }
    )
    mapped = apply_mapping(
        mapping,
        {
            "distance": "2000 mm",  # the string's own unit wins over the field's
            "level": "35.5",
            "temp_f": 212,
            "battery": {"mv": 3600},
            "pressure": 1013.25,
            "tvoc": 0.25,
            "parked": "occupied",
        },
    )
    assert mapped.problems == []
    assert mapped.values == pytest.approx(
        {
            "distance_mm": 2000.0,
            "fill_pct": 35.5,
            "temperature_c": 100.0,
            "battery_v": 3.6,
            "pressure_pa": 101325.0,
            "tvoc_ppb": 250.0,
            "occupied": True,
        }
    )
    assert apply_mapping(mapping, {"distance": 12.5}).values == {"distance_mm": 125.0}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("twelve", "is not a number"),
        ("12 kg", "unit 'kg'"),
        ("12 °C", "not a unit of distance_mm"),
        (True, "bool is not a number"),
        ({"value": 3, "unit": "V"}, "not a unit of distance_mm"),
        ("1e999", "not a finite number"),
    ],
)
def test_a_value_that_cannot_be_read_is_reported_not_stored(value, problem) -> None:
    mapping = parse_mapping({"fields": {"distance": {"metric": "distance_mm", "unit": "cm"}}})
    mapped = apply_mapping(mapping, {"distance": value})
    assert mapped.values == {}
    assert len(mapped.problems) == 1 and problem in mapped.problems[0]


@pytest.mark.parametrize(
    ("mapping", "problem"),
    [
        ({"fields": {"t": {"metric": "temperature"}}}, "'temperature' is not a metric"),
        ({"fields": {"t": {"metric": "temperature_c", "unit": "kelvins"}}}, "not a known unit"),
        ({"fields": {"t": {"metric": "temperature_c", "unit": "ppm"}}}, "not a unit of"),
        ({"fields": {"p": {"metric": "occupied", "unit": "%"}}}, "takes no unit"),
        ({"fields": {"a": "co2_ppm", "b": "co2_ppm"}}, "one field per metric"),
        ({"fields": {"a": "co2_ppm"}, "ignore": ["a"]}, "both mapped and ignored"),
        ({"fields": {"a..b": "co2_ppm"}}, "single dots"),
        ({"fields": {"a": {"metric": "co2_ppm", "scale": 2}}}, "unknown keys"),
        ({"fields": []}, "fields must be an object"),
        ({"fields": {}}, "maps no field"),
        ({"feilds": {"a": "co2_ppm"}}, "unknown keys in the mapping"),
        ([], "must be a JSON object"),
    ],
)
def test_a_wrong_mapping_is_refused_with_the_reason(mapping, problem) -> None:
    with pytest.raises(MappingError) as refused:
        parse_mapping(mapping)
    assert any(problem in p for p in refused.value.problems), refused.value.problems


def test_every_problem_of_a_mapping_is_listed_at_once() -> None:
    with pytest.raises(MappingError) as refused:
        parse_mapping({"fields": {"a": "nope", "b": {"metric": "co2_ppm", "unit": "°C"}}})
    assert len(refused.value.problems) == 2


def test_a_stored_mapping_reads_back_the_same() -> None:
    mapping = parse_mapping(DL_LP8P_MAPPING)
    assert parse_mapping(mapping.as_json()) == mapping
