"""Device information frames decode to nothing to store, as the vendors' decoders treat
them, and status frames keep what they do carry (issue: the battery of a Teneo status)."""

from __future__ import annotations

import pytest

from domain.decoders import DecodeError, get_decoder


@pytest.mark.parametrize(
    ("payload_hex", "fport"),
    [
        ("3e0a0102030405", 6),  # start-up sensor settings on FPort 5 + 1
        ("3e00", 6),
        ("fe0102", 5),  # settings dump
    ],
)
def test_elsys_settings_frames_are_nothing_to_store(payload_hex, fport) -> None:
    assert get_decoder("elsys")(bytes.fromhex(payload_hex), fport) == {}


def test_elsys_measurements_before_a_settings_record_are_kept() -> None:
    assert get_decoder("elsys")(bytes.fromhex("0100e23e0a01"), 5) == {"temperature_c": 22.6}


def test_teneo_status_frame_on_fport_2_keeps_the_battery_reading() -> None:
    # The vendor's own fPort 2 status frame: battery 3.3 V, no valid distance.
    assert get_decoder("teneo_filling_degree")(bytes.fromhex("0d00"), 2) == {"battery_v": 3.3}


@pytest.mark.parametrize("payload_hex", ["0d", "0d0000", "0d00780000000000"])
def test_teneo_status_frame_of_another_length_is_refused(payload_hex) -> None:
    with pytest.raises(DecodeError, match="status frame"):
        get_decoder("teneo_filling_degree")(bytes.fromhex(payload_hex), 2)


def test_teneo_measurement_frames_on_fport_1_are_read_as_before() -> None:
    decode = get_decoder("teneo_filling_degree")
    assert decode(bytes.fromhex("0b001e"), 1) == {"battery_v": 3.1, "distance_mm": 300.0}
    with pytest.raises(DecodeError):
        decode(bytes.fromhex("0d00"), 1)
