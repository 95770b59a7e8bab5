import math
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics import parking
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


# --- zone_occupancy on arbitrary times and bucket grids ------------------------------
#
# The kernel guesses each reading's bucket with float arithmetic and checks the guess
# exactly; these cover readings exactly at, just before and just after bucket starts on
# grids whose starts are not exact in binary, before `start_s`, after `end_s`, NaN values,
# duplicates and unsorted input (through `padded`), and single readings.

GRIDS = st.sampled_from(
    [
        (1800.0, 36000.0, 900.0),
        (0.1, 30.0, 0.3),  # bucket starts 0.1, 0.4, 0.7000000000000001, ...
        (1_704_672_000.1, 1_704_672_090.0, 0.7),
        (-1234.5, 20000.0, 1234.5),
        (5.0, 5.0, 1.0),  # no buckets
    ]
)


@st.composite
def grid_and_rows(draw):
    start_s, end_s, bucket_s = draw(GRIDS)
    starts = np.arange(start_s, end_s, bucket_s)
    edges = [float(b) for b in starts[:: max(1, starts.size // 6)]] or [start_s]
    # Times at, just before and just after bucket starts, plus anywhere in and around the
    # window (also before start_s and after end_s).
    near_edge = st.sampled_from(edges).flatmap(
        lambda b: st.sampled_from([b, np.nextafter(b, -np.inf), np.nextafter(b, np.inf)])
    )
    span = end_s - start_s + 2 * bucket_s
    anywhere = st.floats(start_s - bucket_s, start_s - bucket_s + span, allow_nan=False)
    sample = st.tuples(st.one_of(near_edge, anywhere), st.sampled_from([0.0, 1.0, math.nan]))
    rows = draw(st.lists(st.lists(sample, max_size=12), min_size=1, max_size=7))
    return (start_s, end_s, bucket_s), rows


def _expected_counts(rows, zone, n_zones, bucket_start_s):
    occupied = np.zeros((n_zones, bucket_start_s.size))
    reporting = np.zeros((n_zones, bucket_start_s.size))
    for r, samples in enumerate(rows):
        clean = reference.clean(samples)
        for b, t in enumerate(bucket_start_s.tolist()):
            state = reference.occupancy_at(clean, t)
            if not math.isnan(state):
                reporting[zone[r], b] += 1
                occupied[zone[r], b] += state > 0.5
    return occupied, reporting


@settings(max_examples=300, deadline=None)
@given(grid_and_rows(), st.integers(1, 3))
def test_zone_occupancy_at_bucket_edges_matches_the_reference(grid, n_zones):
    (start_s, end_s, bucket_s), rows = grid
    data = padded(rows)
    zone = (np.arange(len(rows)) * 7) % n_zones  # zones not in row order
    result = zone_occupancy(data.time_s, data.value, zone, n_zones, start_s, end_s, bucket_s)
    assert np.array_equal(result.bucket_start_s, np.arange(start_s, end_s, bucket_s))
    occupied, reporting = _expected_counts(rows, zone, n_zones, result.bucket_start_s)
    assert result.occupied_bays.tolist() == occupied.tolist()
    assert result.reporting_bays.tolist() == reporting.tolist()
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(reporting > 0, occupied / reporting, np.nan)
    assert np.array_equal(result.rate, rate, equal_nan=True)


@settings(max_examples=100, deadline=None)
@given(grid_and_rows())
def test_zone_occupancy_is_right_when_the_float_guess_is_a_bucket_off(grid):
    # Force every guess one bucket late: the exact check must catch it and the searchsorted
    # fallback must give the reference's answer.
    (start_s, end_s, bucket_s), rows = grid
    data = padded(rows)
    zone = np.zeros(len(rows), dtype=np.int64)
    guess = parking._guess_slot

    def late(time_s, grid):
        return np.minimum(guess(time_s, grid) + 1, grid.nb).astype(grid.slot_type)

    with mock.patch.object(parking, "_guess_slot", late):
        result = zone_occupancy(data.time_s, data.value, zone, 1, start_s, end_s, bucket_s)
    occupied, reporting = _expected_counts(rows, zone, 1, result.bucket_start_s)
    assert result.occupied_bays.tolist() == occupied.tolist()
    assert result.reporting_bays.tolist() == reporting.tolist()


def test_rounding_at_a_bucket_start_takes_the_exact_fallback():
    # 0.1 + k * 0.3 is not exact in binary: the float guess of a reading taken exactly at
    # a bucket start lands a bucket late for some k, the check sees it, and the reading
    # still counts at its own bucket start.
    starts = np.arange(0.1, 30.0, 0.3)
    time_s = starts[None, :].copy()
    occupied = np.ones_like(time_s)
    calls = []
    ends = parking._slot_ends
    with mock.patch.object(parking, "_slot_ends", lambda *a: calls.append(1) or ends(*a)):
        result = zone_occupancy(time_s, occupied, np.array([0]), 1, 0.1, 30.0, 0.3)
    assert len(calls) == 2  # guessed, then redone exactly
    assert result.occupied_bays.tolist() == [[1.0] * starts.size]


def test_zone_occupancy_blocks_of_bays_add_up_per_zone():
    # More bays than one block, zones interleaved across blocks, a bay with no readings,
    # a bay whose only reading is before start_s and one whose only reading is after end_s.
    rng = np.random.default_rng(3)
    bays = parking._ROWS_PER_BLOCK * 2 + 5
    time_s = np.sort(rng.uniform(-600.0, 4000.0, (bays, 9)), axis=1)
    time_s[0] = np.nan
    time_s[1, 1:], time_s[1, 0] = np.nan, -50.0
    time_s[2, 1:], time_s[2, 0] = np.nan, 5000.0
    occupied = rng.integers(0, 2, (bays, 9)).astype(float)
    zone = rng.integers(0, 4, bays)
    result = zone_occupancy(time_s, occupied, zone, 4, 0.0, 3600.0, 300.0)
    rows = [
        list(zip(t.tolist(), v.tolist(), strict=True))
        for t, v in zip(time_s, occupied, strict=True)
    ]
    occ, rep = _expected_counts(rows, zone, 4, result.bucket_start_s)
    assert result.occupied_bays.tolist() == occ.tolist()
    assert result.reporting_bays.tolist() == rep.tolist()
    assert rep.sum() > 0 and occ.sum() > 0


def test_a_nan_reading_makes_the_state_unknown_until_the_next_reading():
    time_s = np.array([[0.0, 900.0, 1800.0]])
    occupied = np.array([[1.0, np.nan, 0.0]])
    result = zone_occupancy(time_s, occupied, np.array([0]), 1, 0.0, 2700.0, 900.0)
    assert result.reporting_bays.tolist() == [[1.0, 0.0, 1.0]]
    assert result.occupied_bays.tolist() == [[1.0, 0.0, 0.0]]


def test_zone_occupancy_of_empty_input():
    empty = np.empty((2, 0))
    result = zone_occupancy(empty, empty, np.array([0, 1]), 2, 0.0, 1800.0, 900.0)
    assert result.reporting_bays.tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert np.isnan(result.rate).all()


@settings(deadline=None)
@given(
    st.lists(
        st.lists(st.one_of(st.floats(0, 1), st.just(math.nan)), min_size=48, max_size=48),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from([0.0, 3600.0, 7200.0, 1800.0]),
)
def test_peak_hour_matches_a_plain_loop(rates, utc_offset_s):
    bucket_start_s = 1_704_672_000.0 + np.arange(48) * 1800.0
    hour, mean = peak_hour(bucket_start_s, np.array(rates), utc_offset_s)
    for z, row in enumerate(rates):
        sums, counts = [0.0] * 24, [0] * 24
        for t, rate in zip(bucket_start_s.tolist(), row, strict=True):
            if not math.isnan(rate):
                h = int(((t + utc_offset_s) % 86400) // 3600)
                sums[h] += rate
                counts[h] += 1
        means = [s / c if c else -math.inf for s, c in zip(sums, counts, strict=True)]
        if not any(counts):
            assert hour[z] == -1 and math.isnan(mean[z])
        else:
            best = max(range(24), key=lambda h: (means[h], -h))
            assert (hour[z], mean[z]) == (best, means[best])


def test_zone_occupancy_refuses_rows_out_of_time_order():
    time_s = np.array([[1800.0, 0.0]])
    with pytest.raises(ValueError, match="sorted"):
        zone_occupancy(time_s, np.ones_like(time_s), np.array([0]), 1, 0.0, 3600.0, 900.0)
