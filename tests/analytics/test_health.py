import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.health import (
    hampel_spikes,
    latest,
    low_battery,
    median_interval_s,
    stale,
    stuck_samples,
)
from tests.analytics import reference
from tests.analytics.strategies import padded, series

SMALL = st.integers(0, 4).map(float)


@settings(deadline=None)
@given(st.lists(series(SMALL), min_size=1, max_size=6))
def test_stuck_count_and_median_interval_match_the_reference(rows):
    data = padded(rows)
    counts = stuck_samples(data.value)
    intervals = median_interval_s(data.time_s)
    for r, samples in enumerate(rows):
        clean = reference.clean(samples)
        assert counts[r] == reference.stuck_count([v for _, v in clean])
        np.testing.assert_equal(intervals[r], reference.median_interval([t for t, _ in clean]))


@settings(deadline=None)
@given(
    st.lists(
        st.lists(st.floats(-100, 100, allow_nan=False, width=16), min_size=0, max_size=25),
        min_size=1,
        max_size=4,
    ),
    st.integers(1, 3),
)
def test_hampel_matches_the_reference(rows, half_window):
    width = max(len(r) for r in rows)
    values = np.full((len(rows), width), np.nan)
    for r, row in enumerate(rows):
        values[r, : len(row)] = row
    spikes = hampel_spikes(values, half_window, 3.0, chunk_cells=50)  # several chunks
    for r in range(len(rows)):
        assert spikes[r].tolist() == reference.hampel(list(values[r]), half_window, 3.0)


def test_hampel_finds_a_co2_spike_in_a_noisy_week_and_nothing_else():
    week = np.arange(2016)
    rng = np.random.default_rng(1)
    co2 = 600 + 300 * np.sin(week / 288 * 2 * np.pi) + rng.normal(0, 5, (3, 2016))
    co2[1, 100] += 400
    assert np.argwhere(hampel_spikes(co2, min_deviation=100.0)).tolist() == [[1, 100]]


def test_stale_uses_a_multiple_of_the_usual_interval():
    last_seen = np.array([1000.0, 1000.0, np.nan, 1000.0])
    interval = np.array([300.0, 3600.0, 300.0, np.nan])
    now = 1000.0 + 1000.0
    assert stale(last_seen, now, interval, factor=3.0, default_interval_s=300.0).tolist() == [
        True,
        False,
        True,
        True,
    ]


def test_low_battery_by_voltage_or_percent():
    result = low_battery(
        np.array([3.0, 3.6, np.nan]), np.array([3.3, 3.3, 3.3]), np.array([50.0, 10.0, np.nan])
    )
    assert result.tolist() == [True, True, False]


def test_latest_skips_padding_and_handles_empty_rows():
    t, v = latest(
        np.array([[1.0, 2.0, np.nan], [np.nan] * 3]), np.array([[5.0, 6.0, np.nan], [np.nan] * 3])
    )
    assert t[0] == 2.0 and v[0] == 6.0 and math.isnan(t[1])
