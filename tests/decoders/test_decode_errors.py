"""Bad payloads give a DecodeError that says what was wrong and where."""

from __future__ import annotations

import pytest

from domain.decoders import DecodeError, get_decoder


@pytest.mark.parametrize(
    ("key", "payload_hex", "fport", "message"),
    [
        # truncated: the last value is cut short
        ("elsys", "0100e202290603", 5, "truncated in co2 at byte 6"),
        ("decentlab_dl_iam", "020bbd007f0b926a51", 1, "truncated in sensor 1 word 1 at byte 9"),
        ("decentlab_dl_mbx", "02012f000304d2", 1, "truncated in sensor 0 word 1 at byte 7"),
        ("milesight_am100", "01755c036734", 85, "truncated in temperature at byte 5"),
        ("milesight_em310_udl", "0382", 85, "truncated in distance at byte 2"),
        ("pepperl_fuchs_wilsen", "040b0100", 1, "truncated in package at byte 0"),
        ("bosch_tps110", "2403000075", 3, "must be 17 byte(s) long, got 5"),
        ("nwave_parking", "010d", 3, "must be 5 bytes long, got 2"),
        ("nwave_parking", "", 1, "truncated in parking status at byte 0"),
        ("teneo_filling_degree", "0b00", 1, "must be 3, 4 or 8 bytes long, got 2"),
        # unknown channel / type / sensor
        ("elsys", "0100e2ee01", 5, "unknown data type 0xee at byte 3"),
        ("milesight_am100", "01755c0a9900", 85, "unknown channel 0x0a type 0x99 at byte 3"),
        ("milesight_am300", "05 6a 4900".replace(" ", ""), 85, "unknown channel 0x05 type 0x6a"),
        ("decentlab_dl_mbx", "02012f00070bb1", 1, "flags 0x0007 at byte 3"),
        ("decentlab_dl_iam", "030bbd00010b92", 1, "protocol version 3 at byte 0"),
        ("pepperl_fuchs_wilsen", "03777701", 1, "unknown UUID 0x7777 at byte 1"),
        ("pepperl_fuchs_wilsen", "050b010031ff", 1, "has 3 value byte(s), expected 2"),
        ("decentlab_dl_mbx", "02012f00020bb100", 1, "1 unexpected trailing byte(s) at byte 7"),
        # wrong fPort
        ("milesight_am100", "01755c", 1, "fPort 1 carries no measurements (expected 85)"),
        ("decentlab_dl_iam", "020bbd00010b92", 2, "fPort 2 carries no measurements (expected 1)"),
        ("bosch_tps110", "01", 7, "fPort 7 carries no measurements (expected 1, 2, 3, 4, 5, 6)"),
        ("nwave_parking", "01", 9, "fPort 9 carries no measurements"),
        ("elsys", "0100e2", 0, "fPort 0 carries no measurements (expected 1..223)"),
        ("teneo_filling_degree", "0b001e", 224, "fPort 224 carries no measurements"),
        # empty and implausible values
        ("elsys", "", 5, "empty payload"),
        ("elsys", "1103", 5, "occupancy value 3 at byte 1"),
        ("milesight_am300", "050002", 85, "PIR status 2 at byte 2"),
        ("pepperl_fuchs_wilsen", "060201ffc00000", 1, "temperature at byte 3 is not a finite"),
        ("generic", "0102", 1, "decodes in the network server"),
    ],
)
def test_bad_payload_raises_decode_error_naming_the_problem(
    key: str, payload_hex: str, fport: int, message: str
) -> None:
    with pytest.raises(DecodeError) as caught:
        get_decoder(key)(bytes.fromhex(payload_hex), fport)
    assert message in str(caught.value)


def test_unknown_decoder_key_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="no payload decoder is registered as 'acme'"):
        get_decoder("acme")


def test_elsys_reads_sound_pressure_occupancy_and_skips_accelerometer() -> None:
    # temperature -1.5 °C, accelerometer (skipped), pressure 1013.250 hPa, sound 70/55 dB,
    # occupancy 2 (occupied), VDD 3.6 V, external distance 812 mm, TVOC 120 ppb.
    payload = bytes.fromhex("01fff10301020314000f76021546371102070e100e032c1c0078")
    assert get_decoder("elsys")(payload, 5) == {
        "temperature_c": -1.5,
        "pressure_pa": 101325.0,
        "sound_peak_dba": 70.0,
        "sound_avg_dba": 55.0,
        "occupancy": True,
        "battery_v": 3.6,
        "distance_mm": 812.0,
        "tvoc_ppb": 120.0,
    }


def test_elsys_settings_record_ends_the_measurements() -> None:
    assert get_decoder("elsys")(bytes.fromhex("020afe0102030405"), 5) == {"humidity_pct": 10.0}


def test_milesight_am300_reads_pir_and_particulates_and_skips_device_info() -> None:
    payload = bytes.fromhex("ff0bffff01010500010b7d23000c7d41000767f401")
    with pytest.raises(DecodeError):  # 0x07 0x67 is not an AM300 record
        get_decoder("milesight_am300")(payload, 85)
    payload = bytes.fromhex("ff0bffff01010500010b7d23000c7d4100077df401")
    assert get_decoder("milesight_am300")(payload, 85) == {
        "occupancy": True,
        "pm2_5_ug_m3": 35.0,
        "pm10_ug_m3": 65.0,
        "co2_ppm": 500.0,
    }


def test_milesight_em310_udl_reads_distance_and_battery() -> None:
    payload = bytes.fromhex("0175640382e803040000")
    assert get_decoder("milesight_em310_udl")(payload, 85) == {
        "battery_pct": 100.0,
        "distance_mm": 1000.0,
    }


def test_milesight_em500_co2_reads_climate_channels() -> None:
    payload = bytes.fromhex("0175500367e6ff046850057d200306732f27")
    assert get_decoder("milesight_em500")(payload, 85) == {
        "battery_pct": 80.0,
        "temperature_c": -2.6,
        "humidity_pct": 40.0,
        "co2_ppm": 800.0,
        "pressure_pa": 100310.0,
    }


def test_decentlab_mbx_without_valid_samples_reports_no_distance() -> None:
    assert get_decoder("decentlab_dl_mbx")(bytes.fromhex("02012f000304d200000bb1"), 1) == {
        "battery_v": 2.993
    }


def test_teneo_error_status_reports_battery_but_no_distance() -> None:
    assert get_decoder("teneo_filling_degree")(bytes.fromhex("0d007801"), 1) == {"battery_v": 3.3}


def test_bosch_heartbeat_without_temperature_byte_reports_occupancy_only() -> None:
    assert get_decoder("bosch_tps110")(b"\x00", 2) == {"occupied": False}


def test_bosch_maintenance_messages_decode_to_nothing_rather_than_an_error() -> None:
    for fport in (4, 5, 6):
        assert get_decoder("bosch_tps110")(bytes.fromhex("0102030405"), fport) == {}
