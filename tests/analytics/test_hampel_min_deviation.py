"""Hampel spikes with a minimum deviation: the counting shortcut equals the plain rule."""

from __future__ import annotations

import math
import statistics

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.health import hampel_spikes
from tests.analytics import reference


def _reference(values: list[float], half_window: int, sigmas: float, min_dev: float):
    spikes = reference.hampel(values, half_window, sigmas)
    for i, spike in enumerate(spikes):
        if spike:
            window = values[i - half_window : i + half_window + 1]
            spikes[i] = abs(values[i] - statistics.median(window)) >= min_dev
    return spikes


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(
            st.one_of(st.integers(0, 40).map(float), st.just(math.nan)), min_size=0, max_size=25
        ),
        min_size=1,
        max_size=4,
    ),
    st.integers(1, 3),
    st.sampled_from([1.0, 5.0, 10.0, 20.0]),
)
def test_hampel_with_min_deviation_matches_the_reference(rows, half_window, min_dev):
    width = max(len(r) for r in rows)
    values = np.full((len(rows), width), np.nan)
    for r, row in enumerate(rows):
        values[r, : len(row)] = row
    spikes = hampel_spikes(values, half_window, 3.0, min_dev, chunk_cells=50)
    for r in range(len(rows)):
        expected = _reference(list(values[r]), half_window, 3.0, min_dev)
        assert spikes[r].tolist() == expected


def test_a_400_ppm_spike_on_a_plateau_is_found_and_a_steep_morning_ramp_is_not():
    ramp = np.concatenate([np.full(20, 420.0), 420.0 + 30.0 * np.arange(40), np.full(30, 1600.0)])
    co2 = np.vstack([ramp, ramp]) + np.random.default_rng(3).normal(0, 5, (2, ramp.size))
    co2[1, 75] += 400.0
    spikes = hampel_spikes(co2, min_deviation=100.0)
    assert np.argwhere(spikes).tolist() == [[1, 75]]
