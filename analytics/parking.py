"""Parking: zone occupancy over time, occupancy rate, peak hours and long stays.

Input is per-bay occupied (1) / free (0) readings in the padded (bays, samples) layout of
analytics/timeseries.py; a bay's state holds until its next reading.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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

    Each bay's state is its latest reading at or before the bucket start (forward fill),
    found for all bays at once by a searchsorted over row-offset keys.
    """
    time_s = np.atleast_2d(np.asarray(time_s, dtype=float))
    occupied = np.atleast_2d(np.asarray(occupied, dtype=float))
    bays, n = time_s.shape
    buckets = np.arange(start_s, end_s, bucket_s)
    nb = buckets.size
    # Keys sorted across the flattened array: row * span + (time − start), with readings
    # before `start_s` clipped to it (they still give the state at the first bucket) and
    # NaN padding just below the next row's range.
    latest_s = float(np.nanmax(time_s, initial=start_s)) if time_s.size else start_s
    span = max(end_s, latest_s) - start_s + 2.0
    rel = np.where(np.isnan(time_s), span - 0.5, np.clip(time_s - start_s, 0.0, span - 1.0))
    keys = (np.arange(bays)[:, None] * span + rel).ravel()
    queries = (np.arange(bays)[:, None] * span + (buckets - start_s)[None, :]).ravel()
    pos = np.searchsorted(keys, queries, side="right") - 1
    row_of_query = np.repeat(np.arange(bays), nb)
    known = (pos >= 0) & (pos // max(n, 1) == row_of_query)
    pos = np.clip(pos, 0, None)
    state = np.where(known, occupied.ravel()[pos] if n else np.nan, np.nan).reshape(bays, nb)
    known = ~np.isnan(state)
    zone = np.asarray(zone, dtype=np.int64)
    flat_zone = np.repeat(zone, nb) * nb + np.tile(np.arange(nb), bays)
    occ = np.bincount(flat_zone, weights=(state > 0.5).ravel(), minlength=n_zones * nb)
    rep = np.bincount(flat_zone, weights=known.ravel(), minlength=n_zones * nb)
    occ = occ.reshape(n_zones, nb)
    rep = rep.reshape(n_zones, nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(rep > 0, occ / rep, np.nan)
    return ZoneOccupancy(buckets, occ, rep, rate)


def peak_hour(
    bucket_start_s: np.ndarray, rate: np.ndarray, utc_offset_s: float = 3600.0
) -> tuple[np.ndarray, np.ndarray]:
    """Local hour of day (0–23) with the highest mean occupancy rate per zone, and that mean.

    Zones without data get hour −1 and NaN.
    """
    hour = (np.mod(np.asarray(bucket_start_s) + utc_offset_s, 86400.0) // 3600).astype(int)
    rate = np.atleast_2d(rate)
    known = ~np.isnan(rate)
    sums = np.zeros((rate.shape[0], 24))
    counts = np.zeros((rate.shape[0], 24))
    # One bincount per zone row would loop; add.at over (zone, hour) keys does all at once.
    zone_idx = np.broadcast_to(np.arange(rate.shape[0])[:, None], rate.shape)
    hours = np.broadcast_to(hour[None, :], rate.shape)
    np.add.at(sums, (zone_idx[known], hours[known]), rate[known])
    np.add.at(counts, (zone_idx[known], hours[known]), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
    has = counts.sum(axis=1) > 0
    best = np.argmax(np.where(np.isnan(mean), -np.inf, mean), axis=1)
    return np.where(has, best, -1), np.where(has, mean[np.arange(rate.shape[0]), best], np.nan)


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
