"""Local time with daylight saving: per-sample offsets against zoneinfo, 23- and 25-hour
days, school hours in summer, category days and parking profiles across a clock change."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics import localtime
from analytics.climate import category_shares_per_day, school_hours_mask
from analytics.parking import peak_hour, weekday_hour_profile

CPH = ZoneInfo("Europe/Copenhagen")


def _utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-1e9, 4e9, allow_nan=False), min_size=1, max_size=50),
    st.sampled_from(["Europe/Copenhagen", "America/New_York", "Australia/Lord_Howe", "UTC"]),
)
def test_offsets_equal_zoneinfo_at_every_instant(times: list[float], zone: str) -> None:
    found = localtime.utc_offsets_s(np.array(times), zone)
    expected = [
        datetime.fromtimestamp(t, UTC).astimezone(ZoneInfo(zone)).utcoffset().total_seconds()
        for t in times
    ]
    assert found.tolist() == expected


def test_offset_switches_at_the_second_clocks_change() -> None:
    # 2026-03-29 01:00 UTC: 02:00 CET becomes 03:00 CEST; 2026-10-25 01:00 UTC back.
    spring, autumn = _utc(2026, 3, 29, 1), _utc(2026, 10, 25, 1)
    times = np.array([spring - 1, spring, autumn - 1, autumn, np.nan])
    found = localtime.utc_offsets_s(times)
    assert found[:4].tolist() == [3600.0, 7200.0, 7200.0, 3600.0]
    assert np.isnan(found[4])


def test_days_when_clocks_change_have_23_and_25_hours() -> None:
    days = np.array(
        [localtime.day_of(d) for d in (date(2026, 3, 28), date(2026, 3, 29), date(2026, 10, 25))]
    )
    assert localtime.hours_of_local_day(days).tolist() == [24.0, 23.0, 25.0]
    starts = localtime.local_day_start_s(days)
    assert [datetime.fromtimestamp(s, CPH).isoformat() for s in starts] == [
        "2026-03-28T00:00:00+01:00",
        "2026-03-29T00:00:00+01:00",
        "2026-10-25T00:00:00+02:00",
    ]


def test_unknown_zone_is_refused_with_its_name() -> None:
    for zone in ("Europe/Kobenhavn", "Europe", "", "../UTC"):
        with pytest.raises(localtime.UnknownTimezoneError):
            localtime.utc_offsets_s(np.array([0.0]), zone)


def test_school_hours_start_at_0800_local_in_summer_and_in_winter() -> None:
    # Monday 2026-06-15 and Monday 2026-01-12: 08:00 local is 06:00 / 07:00 UTC.
    summer = [_utc(2026, 6, 15, 5, 59), _utc(2026, 6, 15, 6, 0), _utc(2026, 6, 15, 13, 59)]
    winter = [_utc(2026, 1, 12, 6, 59), _utc(2026, 1, 12, 7, 0), _utc(2026, 1, 12, 14, 59)]
    assert school_hours_mask(np.array(summer)).tolist() == [False, True, True]
    assert school_hours_mask(np.array(winter)).tolist() == [False, True, True]
    # 16:00 local in summer is 14:00 UTC: closed.
    assert not school_hours_mask(np.array([_utc(2026, 6, 15, 14, 0)]))[0]


def test_category_days_on_the_25_hour_day_hold_25_hours_of_samples() -> None:
    start = datetime(2026, 10, 24, 0, tzinfo=CPH).timestamp()  # local midnight
    times = start + 600.0 * np.arange(6 * (24 + 25 + 24))
    category = np.zeros((1, times.size), dtype=np.int64)
    occupied = np.ones((1, times.size), dtype=bool)
    shares = category_shares_per_day(times[None, :], category, occupied)
    assert shares.samples.tolist() == [[144, 150, 144]]
    assert [datetime.fromtimestamp(s, CPH).hour for s in shares.day_start_s] == [0, 0, 0]


def test_parking_hours_are_local_with_each_buckets_own_offset() -> None:
    # Full at 08:00 local every day, empty otherwise, one bucket per hour over a week
    # that crosses 2026-10-25: the peak stays at 08 and the profile's 08 column is full.
    start = _utc(2026, 10, 20, 0)
    buckets = start + 3600.0 * np.arange(24 * 8)
    local_hour = [datetime.fromtimestamp(b, CPH).hour for b in buckets]
    rate = np.array([[1.0 if h == 8 else 0.0 for h in local_hour]])
    hour, mean = peak_hour(buckets, rate)
    assert (hour.tolist(), mean.tolist()) == ([8], [1.0])
    profile, counts = weekday_hour_profile(buckets, rate)
    assert np.nanmin(profile[0, :, 8]) == 1.0
    assert np.nanmax(np.delete(profile[0], 8, axis=1)) == 0.0
    assert counts.sum() == buckets.size


def test_month_of_local_days() -> None:
    days = np.array([localtime.day_of(date(2026, m, 1)) for m in range(1, 13)])
    assert localtime.local_month(days).tolist() == list(range(1, 13))
