import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.parking import long_stays, peak_hour, zone_occupancy
from tests.analytics import reference
from tests.analytics.strategies import padded, series

STATE = st.sampled_from([0.0, 1.0])


@settings(deadline=None)
@given(st.lists(series(STATE, step_s=600.0), min_size=1, max_size=6), st.integers(1, 3))
def test_zone_occupancy_matches_forward_filled_reference(rows, n_zones):
    data = padded(rows)
    zone = np.arange(len(rows)) % n_zones
    result = zone_occupancy(data.time_s, data.value, zone, n_zones, 1800.0, 36000.0, 900.0)
    for z in range(n_zones):
        for b, t in enumerate(result.bucket_start_s):
            states = [
                reference.occupancy_at(reference.clean(rows[r]), t)
                for r in range(len(rows))
                if zone[r] == z
            ]
            known = [s for s in states if not math.isnan(s)]
            assert result.reporting_bays[z, b] == len(known)
            assert result.occupied_bays[z, b] == sum(1 for s in known if s > 0.5)


def test_occupancy_rate_and_peak_hour_per_zone():
    # Zone 0: two bays, both occupied only 10:00–11:00 UTC; zone 1 has no bays.
    time_s = np.array([[0.0, 36000.0, 39600.0], [0.0, 36000.0, 39600.0]])
    occupied = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    occupancy = zone_occupancy(time_s, occupied, np.array([0, 0]), 2, 0.0, 86400.0, 1800.0)
    assert occupancy.rate[0, 20] == 1.0 and occupancy.rate[0, 22] == 0.0
    assert np.isnan(occupancy.rate[1]).all()
    hour, mean = peak_hour(occupancy.bucket_start_s, occupancy.rate, utc_offset_s=3600.0)
    assert hour.tolist() == [11, -1]
    assert mean[0] == 1.0 and math.isnan(mean[1])


@settings(deadline=None)
@given(st.lists(series(STATE, step_s=1800.0), min_size=1, max_size=5))
def test_long_stays_match_the_reference(rows):
    data = padded(rows)
    runs = long_stays(data.time_s, data.value, max_stay_s=4 * 3600.0, max_gap_s=3 * 3600.0)
    for r, samples in enumerate(rows):
        expected = reference.hysteresis_runs(
            reference.clean(samples), 0.5, 0.5, 4 * 3600.0, 3 * 3600.0
        )
        keep = runs.row == r
        assert list(zip(runs.start_s[keep], runs.end_s[keep], strict=True)) == [
            (s, e) for s, e, _, _ in expected
        ]


def test_car_parked_all_day_is_a_long_stay_and_still_ongoing():
    time_s = np.arange(0, 10 * 3600.0 + 1, 1800.0)
    occupied = np.ones_like(time_s)
    runs = long_stays(time_s, occupied, max_stay_s=4 * 3600.0)
    assert runs.duration_s.tolist() == [36000.0] and runs.ongoing.tolist() == [True]
