"""`threshold_runs` (row pre-filter + event cells) equals the full-array hysteresis path."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.timeseries import hysteresis_state, runs_from_state, threshold_runs
from tests.analytics.strategies import padded, series

LEVELS = st.sampled_from([0.0, 1.0, 2.0, 3.0, 4.0])


def _as_lists(runs):
    return [
        runs.row.tolist(),
        runs.start_col.tolist(),
        runs.end_col.tolist(),
        runs.start_s.tolist(),
        runs.end_s.tolist(),
        runs.peak.tolist(),
        runs.ongoing.tolist(),
    ]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(series(LEVELS), min_size=1, max_size=6),
    st.sampled_from([(3.0, 3.0), (3.0, 2.0), (4.0, 1.0), (9.0, 1.0)]),
    st.sampled_from([0.0, 600.0]),
    st.sampled_from([300.0, 900.0, math.inf]),
)
def test_threshold_runs_equal_state_then_runs(rows, thresholds, min_duration_s, max_gap_s):
    on, off = thresholds
    data = padded(rows)
    state = hysteresis_state(data.time_s, data.value, on, off, max_gap_s)
    expected = runs_from_state(data.time_s, data.value, state, min_duration_s, max_gap_s)
    found = threshold_runs(data.time_s, data.value, on, off, min_duration_s, max_gap_s)
    assert _as_lists(found) == _as_lists(expected)


def test_threshold_runs_with_nan_holes_inside_rows_and_a_run_to_the_last_cell():
    time_s = np.array([[0, 300, 600, 900, 1200], [0, 300, 600, 900, 1200]], dtype=float)
    value = np.array([[5, np.nan, 5, 5, 0], [0, 5, 5, 1, 6]], dtype=float)
    state = hysteresis_state(time_s, value, 4.0, 2.0)
    expected = runs_from_state(time_s, value, state)
    found = threshold_runs(time_s, value, 4.0, 2.0)
    assert _as_lists(found) == _as_lists(expected)
    assert found.row.tolist() == [0, 0, 1, 1]
    assert found.ongoing.tolist() == [False, False, False, True]
