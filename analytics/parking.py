"""Parking: zone occupancy over time, occupancy rate, peak hours and long stays.

Input is per-bay occupied (1) / free (0) readings in the padded (bays, samples) layout of
analytics/timeseries.py; a bay's state holds until its next reading.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analytics.localtime import DEFAULT_TIMEZONE, local_parts, utc_offsets_s
from analytics.timeseries import Runs, threshold_runs


@dataclass(frozen=True)
class ZoneOccupancy:
    """Occupied bays per zone and time bucket."""

    bucket_start_s: np.ndarray  # (buckets,)
    occupied_bays: np.ndarray  # (zones, buckets) bays occupied at each bucket's start
    reporting_bays: np.ndarray  # (zones, buckets) bays with a known state then
    rate: np.ndarray  # occupied / reporting, NaN where no bay reports


def zone_occupancy(
    time_s: np.ndarray,
    occupied: np.ndarray,
    zone: np.ndarray,
    n_zones: int,
    start_s: float,
    end_s: float,
    bucket_s: float = 900.0,
) -> ZoneOccupancy:
    """Occupied bays per zone at the start of each `bucket_s` bucket in [start_s, end_s).

    Each bay's state at a bucket start is its latest reading at or before it (forward
    fill); before a bay's first reading its state is unknown, and so is a reading whose
    value is NaN. Input is the padded layout: each row sorted by time, NaN time only as
    trailing padding. Readings before `start_s` give the state at the first bucket.

    On the regular bucket grid no search is needed: a reading's first bucket starting at
    or after it is ceil((t − start) / bucket_s); the last reading of each (bay, bucket) is
    placed there and forward-filled along time (`_latest_reading`). Blocks of
    `_ROWS_PER_BLOCK` bays keep the temporaries in cache.
    """
    time_s = np.atleast_2d(np.asarray(time_s, dtype=float))
    occupied = np.atleast_2d(np.asarray(occupied, dtype=float))
    bays, n = time_s.shape
    buckets = np.arange(start_s, end_s, bucket_s)
    nb = buckets.size
    zone = np.asarray(zone, dtype=np.int64)
    occ = np.zeros((n_zones, nb))
    rep = np.zeros((n_zones, nb))
    if n and nb:
        grid = _BucketGrid(buckets, start_s, bucket_s, min(bays, _ROWS_PER_BLOCK))
        for begin in range(0, bays, _ROWS_PER_BLOCK):
            rows = slice(begin, min(begin + _ROWS_PER_BLOCK, bays))
            latest, known = _latest_reading(np.ascontiguousarray(time_s[rows]), grid)
            state = np.take(np.ascontiguousarray(occupied[rows]).reshape(-1), latest)
            known &= ~np.isnan(state)
            with np.errstate(invalid="ignore"):
                busy = known & (state > 0.5)
            # Sum the block's bays per zone: rows ordered by zone, one reduceat.
            block_zone = zone[rows]
            counts = np.stack((known, busy), axis=1)
            if (block_zone[1:] < block_zone[:-1]).any():
                order = np.argsort(block_zone, kind="stable")
                block_zone, counts = block_zone[order], counts[order]
            first = np.flatnonzero(np.concatenate(([True], block_zone[1:] != block_zone[:-1])))
            sums = np.add.reduceat(counts, first, axis=0, dtype=np.int64)
            rep[block_zone[first]] += sums[:, 0]
            occ[block_zone[first]] += sums[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(rep > 0, occ / rep, np.nan)
    return ZoneOccupancy(buckets, occ, rep, rate)


_ROWS_PER_BLOCK = 64


class _BucketGrid:
    """Bucket starts, and per-row tables for blocks of up to `rows` rows, where each row
    has nb + 1 slots: the nb buckets and one for readings after the last bucket start
    (and NaN times), which are never anyone's latest reading."""

    def __init__(self, buckets: np.ndarray, start_s: float, bucket_s: float, rows: int):
        nb = buckets.size
        self.buckets, self.nb = buckets, nb
        self.scale, self.shift = 1.0 / bucket_s, start_s / bucket_s
        # int32 slots halve the memory traffic whenever they fit.
        self.slot_type = np.int32 if rows * (nb + 1) < np.iinfo(np.int32).max else np.int64
        self.slot_offset = (np.arange(rows, dtype=self.slot_type) * (nb + 1))[:, None]
        # Slot k of a row holds readings in (bucket[k − 1], bucket[k]].
        self.upper = np.tile(np.append(buckets, np.inf), rows)
        self.lower = np.tile(np.append(-np.inf, buckets), rows)


def _latest_reading(time_s: np.ndarray, grid: _BucketGrid) -> tuple[np.ndarray, np.ndarray]:
    """For a C-ordered block `time_s` (rows, n): the flat index into the block of each
    row's latest reading at or before each bucket start (rows, nb), and whether there is
    one.

    Each reading's slot is guessed with float arithmetic, then checked exactly against
    the bucket starts at every slot boundary: the first and last reading of each occupied
    slot (the guess grows with time and rows are sorted, so that covers every reading).
    Rounding can put a reading within a rounding error of a bucket start in the wrong
    slot; if the check finds one, the block's slots come from a searchsorted instead.
    """
    rows, n = time_s.shape
    nb = grid.nb
    slot = _guess_slot(time_s, grid)
    slot += grid.slot_offset[:rows]
    flat_slot = slot.reshape(-1)
    last, target = _slot_ends(flat_slot, n)
    flat_time = time_s.reshape(-1)
    first = np.concatenate(([0], last[:-1] + 1))
    # NaN times compare False: they sit in slot nb, where nothing is checked.
    with np.errstate(invalid="ignore"):
        wrong = (np.take(flat_time, last) > np.take(grid.upper, target)).any() or (
            np.take(flat_time, first) <= np.take(grid.lower, target)
        ).any()
    if wrong:
        slot = np.searchsorted(grid.buckets, time_s, side="left").astype(grid.slot_type)
        slot += grid.slot_offset[:rows]
        last, target = _slot_ends(slot.reshape(-1), n)
    # Forward fill: every slot from a slot end up to the next slot end holds that end.
    repeats = np.diff(target, append=rows * (nb + 1))
    if (repeats < 0).any():
        raise ValueError("zone_occupancy needs each row sorted by time (the padded layout)")
    filled = np.concatenate((np.full(target[0], -1), np.repeat(last, repeats)))
    filled = filled.reshape(rows, nb + 1)[:, :nb]
    # Slots before a row's first reading hold the previous row's last reading (or −1).
    known = filled >= (np.arange(rows) * n)[:, None]
    return filled, known


def _guess_slot(time_s: np.ndarray, grid: _BucketGrid) -> np.ndarray:
    """ceil((t − start) / bucket_s) clipped to [0, nb] (NaN time → nb), as integers."""
    guess = np.multiply(time_s, grid.scale)
    guess -= grid.shift
    np.ceil(guess, out=guess)
    np.clip(guess, 0, grid.nb, out=guess)
    nan = np.isnan(guess)
    if nan.any():
        guess[nan] = grid.nb
    return guess.astype(grid.slot_type)


def _slot_ends(flat_slot: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the last reading of each occupied slot (a reading whose successor
    in the row is in another slot, or the row's last cell) and that slot. Slots carry the
    row offset, so neighbouring rows never share one."""
    last = np.empty(flat_slot.size, dtype=bool)
    np.not_equal(flat_slot[:-1], flat_slot[1:], out=last[:-1])
    last[-1] = True
    ends = np.flatnonzero(last)
    return ends, np.take(flat_slot, ends)


def peak_hour(
    bucket_start_s: np.ndarray,
    rate: np.ndarray,
    utc_offset_s: float | None = None,
    *,
    zone: str = DEFAULT_TIMEZONE,
) -> tuple[np.ndarray, np.ndarray]:
    """Local hour of day (0–23) with the highest mean occupancy rate per zone, and that mean.

    Local hours are `zone`'s with each bucket's own offset (daylight saving), unless a fixed
    `utc_offset_s` is given. Zones without data get hour −1 and NaN.
    """
    start = np.asarray(bucket_start_s, dtype=float)
    offset = utc_offsets_s(start, zone) if utc_offset_s is None else utc_offset_s
    hour = (np.mod(start + offset, 86400.0) // 3600).astype(int)
    rate = np.atleast_2d(rate)
    known = ~np.isnan(rate)
    zones = rate.shape[0]
    # One bincount per zone row would loop; one bincount over zone * 24 + hour keys of the
    # known cells does all at once (np.add.at is several times slower).
    keys = (np.arange(zones)[:, None] * 24 + hour[None, :])[known]
    sums = np.bincount(keys, weights=rate[known], minlength=zones * 24).reshape(zones, 24)
    counts = np.bincount(keys, minlength=zones * 24).reshape(zones, 24).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
    has = counts.sum(axis=1) > 0
    best = np.argmax(np.where(np.isnan(mean), -np.inf, mean), axis=1)
    return np.where(has, best, -1), np.where(has, mean[np.arange(rate.shape[0]), best], np.nan)


def weekday_hour_profile(
    bucket_start_s: np.ndarray, rate: np.ndarray, zone: str = DEFAULT_TIMEZONE
) -> tuple[np.ndarray, np.ndarray]:
    """Mean occupancy rate per zone, local weekday (0 = Monday) and local hour: (zones, 7, 24)
    means (NaN where no bucket fell) and the bucket counts behind them.

    Each bucket is placed by its start in `zone`'s local time with its own offset, so the
    08:00 column holds 07:00 UTC buckets in winter and 06:00 UTC buckets in summer.
    """
    _day, seconds, weekday = local_parts(np.asarray(bucket_start_s, dtype=float), zone)
    slot = weekday * 24 + (seconds // 3600).astype(np.int64)
    rate = np.atleast_2d(rate)
    known = ~np.isnan(rate)
    zones = rate.shape[0]
    keys = (np.arange(zones)[:, None] * 168 + slot[None, :])[known]
    sums = np.bincount(keys, weights=rate[known], minlength=zones * 168).reshape(zones, 7, 24)
    counts = np.bincount(keys, minlength=zones * 168).reshape(zones, 7, 24)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
    return mean, counts


def long_stays(
    time_s: np.ndarray,
    occupied: np.ndarray,
    max_stay_s: float = 4 * 3600.0,
    max_gap_s: float = 3 * 3600.0,
) -> Runs:
    """Stays (bay continuously occupied) longer than `max_stay_s`, from first to last
    occupied reading. A gap over `max_gap_s` without readings ends a stay, since the bay's
    state is then unknown."""
    return threshold_runs(time_s, occupied, 0.5, 0.5, max_stay_s, max_gap_s)
