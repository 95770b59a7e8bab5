import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.timeseries import to_padded, to_segmented, trailing_run_length
from tests.analytics import reference
from tests.analytics.strategies import padded, series

VALUES = st.floats(0, 100, allow_nan=False)


@settings(deadline=None)
@given(st.lists(series(VALUES), min_size=1, max_size=6))
def test_padding_sorts_drops_nan_and_keeps_the_last_duplicate(rows):
    result = padded(rows)
    for r, samples in enumerate(rows):
        expected = reference.clean(samples)
        n = int(result.count[r])
        assert n == len(expected)
        assert list(zip(result.time_s[r, :n], result.value[r, :n], strict=True)) == expected
        assert np.isnan(result.value[r, n:]).all()


@settings(deadline=None)
@given(st.lists(series(VALUES), min_size=1, max_size=6))
def test_segmented_round_trip_returns_the_clean_samples(rows):
    result = padded(rows)
    again = to_padded(*to_segmented(result), len(rows))
    np.testing.assert_array_equal(again.value, result.value)
    np.testing.assert_array_equal(again.count, result.count)


def test_width_keeps_the_latest_samples_of_long_rows():
    result = to_padded(
        np.array([0, 0, 0, 1]), np.array([3.0, 1, 2, 5]), np.array([30.0, 10, 20, 50]), 3, width=2
    )
    np.testing.assert_array_equal(result.value[0], [20, 30])
    assert result.value[1, 0] == 50 and math.isnan(result.value[1, 1])
    assert np.isnan(result.value[2]).all()
    np.testing.assert_array_equal(result.count, [2, 1, 0])


def test_trailing_run_length_counts_samples_after_the_last_break():
    same = np.array([[False, True, True], [False, True, False], [False, False, False]])
    np.testing.assert_array_equal(trailing_run_length(same), [3, 1, 1])
