"""Selecting the bins to empty from current fill and fill rate."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.collection import (
    PRIORITY_FULL_BEFORE_NEXT,
    PRIORITY_FULL_NOW,
    PRIORITY_NOT_NEEDED,
    PRIORITY_THRESHOLD_BEFORE_NEXT,
    collection_order,
    pickup_volume_l,
    select_bins_to_collect,
)


def test_each_bin_gets_the_priority_and_reason_of_its_predicted_fill():
    # Round in 2 h, next opportunity in 26 h, threshold 90 %.
    fill = np.array([99.0, 50.0, 60.0, 20.0, np.nan, 100.0])
    rate = np.array([1.0, 2.0, 1.2, 0.5, 1.0, 0.0])
    d = select_bins_to_collect(fill, rate, 2.0, 26.0, threshold_pct=90.0)
    # 99+2=101 now; 50+52=102 next; 60+31.2=91.2 threshold; 20+13=33 not; NaN; already full.
    assert d.priority.tolist() == [
        PRIORITY_FULL_NOW,
        PRIORITY_FULL_BEFORE_NEXT,
        PRIORITY_THRESHOLD_BEFORE_NEXT,
        PRIORITY_NOT_NEEDED,
        PRIORITY_NOT_NEEDED,
        PRIORITY_FULL_NOW,
    ]
    assert d.reason.tolist() == [
        "full_now",
        "full_before_next_opportunity",
        "above_threshold_before_next_opportunity",
        "not_needed",
        "no_data",
        "full_now",
    ]
    assert d.collect.tolist() == [True, True, True, False, False, True]
    assert d.predicted_fill_pct[:4] == pytest.approx([100.0, 54.0, 62.4, 21.0])
    assert d.fill_at_next_opportunity_pct[1] == pytest.approx(102.0)
    assert d.hours_to_full_h[[0, 1, 5]] == pytest.approx([1.0, 25.0, 0.0])


def test_threshold_is_configurable():
    fill, rate = np.array([60.0]), np.array([1.0])
    assert select_bins_to_collect(fill, rate, 0.0, 24.0, threshold_pct=80).collect[0]
    assert not select_bins_to_collect(fill, rate, 0.0, 24.0, threshold_pct=90).collect[0]


def test_negative_or_missing_rates_count_as_not_filling():
    d = select_bins_to_collect(np.array([80.0, 80.0]), np.array([-3.0, np.nan]), 0.0, 24.0)
    assert d.fill_at_next_opportunity_pct.tolist() == [80.0, 80.0]
    assert np.isinf(d.hours_to_full_h).all()
    assert not d.collect.any()


def test_bad_inputs_are_refused_with_a_message():
    with pytest.raises(ValueError, match="same shape"):
        select_bins_to_collect(np.zeros(2), np.zeros(3), 0, 24)
    with pytest.raises(ValueError, match="threshold_pct"):
        select_bins_to_collect(np.zeros(2), np.zeros(2), 0, 24, threshold_pct=0)
    with pytest.raises(ValueError, match="hours_until_round_h"):
        select_bins_to_collect(np.zeros(2), np.zeros(2), 30, 24)


def test_order_puts_the_most_urgent_first():
    fill = np.array([50.0, 99.0, 95.0, 10.0, 70.0, 100.0])
    rate = np.array([2.0, 0.1, 1.0, 0.1, 2.0, 0.0])
    d = select_bins_to_collect(fill, rate, 1.0, 25.0)
    # All four fill up before the next opportunity; soonest full first: 5, 10, 15, 25 h.
    # The already-full bin (priority 1) comes before all of them.
    assert collection_order(d).tolist() == [5, 2, 1, 4, 0]


def test_pickup_volume_scales_bin_volume_by_fill():
    vol = pickup_volume_l(np.array([50.0, 100.0, np.nan]), np.array([660.0, 240.0, 240.0]))
    assert vol.tolist() == [330.0, 240.0, 0.0]
