"""`threshold_runs` (row pre-filter + event cells) equals the full-array hysteresis path."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics import timeseries
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


@settings(max_examples=200, deadline=None)
@given(
    st.lists(series(LEVELS), min_size=1, max_size=9),
    st.sampled_from([(3.0, 3.0), (3.0, 2.0), (4.0, 1.0)]),
    st.sampled_from([1, 40, 10_000]),
)
def test_threshold_runs_in_row_blocks_equal_one_pass(rows, thresholds, cells_per_block):
    # Blocks of one row, a few rows or all rows, and the row filter both ways (a block
    # where fewer than half the rows reach the threshold is copied down to those rows).
    on, off = thresholds
    data = padded(rows)
    state = hysteresis_state(data.time_s, data.value, on, off, 900.0)
    expected = runs_from_state(data.time_s, data.value, state, 600.0, 900.0)
    with mock.patch.object(timeseries, "_CELLS_PER_BLOCK", cells_per_block):
        found = threshold_runs(data.time_s, data.value, on, off, 600.0, 900.0)
    assert _as_lists(found) == _as_lists(expected)


def test_ongoing_with_long_nan_padding_and_holes():
    # The last valid sample is looked for in growing windows from the row's end: rows
    # ending in a valid sample, in 20 and 300 NaN cells, and a NaN time with a value.
    n = 400
    time_s = np.tile(np.arange(n) * 300.0, (4, 1))
    value = np.full((4, n), 5.0)
    value[1, n - 20 :] = np.nan
    value[2, n - 300 :] = np.nan
    value[2, 10] = np.nan  # a hole inside the run
    time_s[3, n - 1] = np.nan
    state = hysteresis_state(time_s, value, 4.0, 2.0)
    expected = runs_from_state(time_s, value, state)
    found = threshold_runs(time_s, value, 4.0, 2.0)
    assert _as_lists(found) == _as_lists(expected)
    assert found.ongoing.tolist() == [True, True, False, True, True]


def test_threshold_runs_without_rows_or_samples():
    for shape in ((0, 5), (3, 0), (0, 0)):
        runs = threshold_runs(np.empty(shape), np.empty(shape), 1.0, 0.0)
        assert runs.row.size == 0 and runs.row.dtype == np.int64
    with pytest.raises(ValueError):
        threshold_runs(np.zeros((2, 2)), np.zeros((2, 2)), 1.0, 2.0)
