import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.bins import (
    emptying_mask,
    evaluate_bins,
    fill_level_pct,
    predicted_fill_pct,
    raw_fill_pct,
    theil_sen_rate_pct_per_h,
    time_to_full_h,
)
from tests.analytics import reference
from tests.analytics.strategies import padded, series

PARAMS = {
    "full_pct": 90.0,
    "soon_full_h": 24.0,
    "emptying_drop_pct": 30.0,
    "sudden_rise_pct": 25.0,
    "recent_s": 6 * 3600.0,
    "fault_margin_pct": 10.0,
    "max_points": 12,
}


def test_fill_level_keeps_its_clipped_contract_and_raw_shows_faults():
    assert fill_level_pct(np.array([100.0, 1100.0, 1500.0]), 1000.0, 100.0).tolist() == [
        100.0,
        0.0,
        0.0,
    ]
    assert raw_fill_pct(1500.0, 1000.0, 100.0) == pytest.approx(-40.0)


def test_emptying_found_at_the_first_low_sample_and_not_fooled_by_one_noisy_reading():
    fill = np.array([10, 15, 20, 25, 30, 95, 35, 40, 45, 50, 5, 6, 7, 8, 9.0])
    assert np.flatnonzero(emptying_mask(fill[None, :])).tolist() == [10]
    noisy = np.array([40, 42, 44, 3, 46, 48, 50, 52.0])
    assert not emptying_mask(noisy[None, :]).any()


def test_fill_rate_ignores_an_outlier_and_restarts_after_emptying():
    hours = np.arange(12.0)
    fill = 2.0 * hours + 10.0
    fill[5] = 95.0  # one wild echo
    time_s = hours * 3600.0
    rate = theil_sen_rate_pct_per_h(time_s[None, :], fill[None, :], np.ones((1, 12), bool))
    assert rate[0] == pytest.approx(2.0)


def test_time_to_full_and_prediction():
    ttf = time_to_full_h(np.array([50.0, 95.0, 50.0, np.nan]), np.array([10.0, 1.0, 0.0, 1.0]))
    assert ttf[:3].tolist() == [4.0, 0.0, math.inf] and math.isnan(ttf[3])
    assert predicted_fill_pct(np.array([50.0, 99.0]), np.array([10.0, 10.0]), 2.0).tolist() == [
        70.0,
        100.0,
    ]


def test_bin_rules_flag_full_soon_full_sudden_rise_and_fault():
    hours = np.arange(10.0)
    time_s = np.tile(hours * 3600.0, (5, 1))
    fill = np.vstack(
        [
            50.0 + 5.0 * hours,  # reaches 95 %: full
            40.0 + 4.0 * hours,  # 76 % rising 4 %/h: full in 3.5 h
            10.0 + 0.1 * hours,  # slow: neither
            np.r_[10.0, 11, 12, 13, 14, 15, 16, 60, 61, 62],  # a bag dumped in
            np.r_[10.0, 11, 12, 13, 14, 15, 16, 17, 18, 140],  # echo off the lid: fault
        ]
    )
    status = evaluate_bins(time_s, fill, now_s=9 * 3600.0)
    assert status.full.tolist() == [True, False, False, False, True]
    assert status.soon_full.tolist() == [False, True, False, False, False]
    assert status.sudden_rise.tolist() == [False, False, False, True, True]
    assert status.fault.tolist() == [False, False, False, False, True]
    assert status.time_to_full_h[1] == pytest.approx(3.5)


def test_bin_without_readings_is_a_fault():
    status = evaluate_bins(np.full((1, 3), np.nan), np.full((1, 3), np.nan), now_s=0.0)
    assert status.fault.tolist() == [True]
    assert not status.full[0]


FILL = st.floats(-20, 130, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(st.lists(series(FILL, step_s=3600.0), min_size=1, max_size=5))
def test_bin_rules_match_the_reference(rows):
    data = padded(rows)
    now_s = 60 * 3600.0
    status = evaluate_bins(
        data.time_s,
        data.value,
        now_s,
        full_pct=PARAMS["full_pct"],
        soon_full_h=PARAMS["soon_full_h"],
        emptying_drop_pct=PARAMS["emptying_drop_pct"],
        sudden_rise_pct=PARAMS["sudden_rise_pct"],
        recent_s=PARAMS["recent_s"],
        fault_margin_pct=PARAMS["fault_margin_pct"],
        max_points=PARAMS["max_points"],
    )
    for r, samples in enumerate(rows):
        expected = reference.bin_status(reference.clean(samples), now_s, PARAMS)
        for flag in ("full", "soon_full", "sudden_rise", "fault"):
            assert bool(getattr(status, flag)[r]) == expected[flag], flag
        if "rate" in expected:
            assert int(status.emptyings[r]) == expected["emptyings"]
            np.testing.assert_allclose(status.rate_pct_per_h[r], expected["rate"], atol=1e-9)
            np.testing.assert_allclose(status.time_to_full_h[r], expected["ttf"], atol=1e-9)
