"""Classroom climate: CO2 limit episodes, comfort bands and EN 16798-1 category shares.

Rules and sources:
- BR18 (Bygningsreglementet 2018) §447: CO2 in teaching rooms should not exceed 1000 ppm.
- EN 16798-1:2019 Annex B: indoor-environment categories I–IV. CO2 above outdoor air
  550 / 800 / 1350 ppm (I / II / III; above III is IV), operative temperature bands for the
  heating and cooling seasons, relative humidity bands.

All functions take (rooms, samples) arrays (see analytics/timeseries.py for the padded
layout); NaN means missing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from analytics.localtime import DEFAULT_TIMEZONE, local_day_start_s, utc_offsets_s
from analytics.timeseries import Runs, concat_runs, row_blocks, threshold_runs

BR18_CO2_LIMIT_PPM = 1000.0
EN16798_CO2_ABOVE_OUTDOOR_PPM = (550.0, 800.0, 1350.0)  # upper bounds of categories I, II, III
OUTDOOR_CO2_PPM = 400.0
# (low, high) per category I, II, III; outside III is category IV.
EN16798_TEMPERATURE_HEATING_C = ((21.0, 23.0), (20.0, 24.0), (19.0, 25.0))
EN16798_TEMPERATURE_COOLING_C = ((23.5, 25.5), (23.0, 26.0), (22.0, 27.0))
EN16798_HUMIDITY_PCT = ((25.0, 60.0), (20.0, 70.0), (15.0, 75.0))
CATEGORIES = ("I", "II", "III", "IV")


def co2_episodes(
    time_s: np.ndarray,
    co2_ppm: np.ndarray,
    threshold_ppm: float = BR18_CO2_LIMIT_PPM,
    hysteresis_ppm: float = 50.0,
    min_duration_s: float = 900.0,
    max_gap_s: float = 1800.0,
) -> Runs:
    """Episodes with CO2 at or above `threshold_ppm` lasting at least `min_duration_s`.

    An episode starts at ≥ `threshold_ppm` and ends only when CO2 falls below
    `threshold_ppm − hysteresis_ppm`, so a room hovering at the limit yields one episode
    instead of a flicker. Missing samples or gaps over `max_gap_s` end an episode.
    Default threshold: BR18 §447 (1000 ppm in teaching rooms).
    """
    return threshold_runs(
        time_s, co2_ppm, threshold_ppm, threshold_ppm - hysteresis_ppm, min_duration_s, max_gap_s
    )


def outside_band_episodes(
    time_s: np.ndarray,
    value: np.ndarray,
    low: float | np.ndarray,
    high: float | np.ndarray,
    hysteresis: float = 0.5,
    min_duration_s: float = 1800.0,
    max_gap_s: float = 1800.0,
) -> Runs:
    """Episodes with `value` outside the comfort band [low, high] for ≥ `min_duration_s`.

    Works for temperature_c (°C) or humidity_pct (%); `hysteresis` is in the value's unit.
    The band of EN 16798-1 category II is a sensible default (20–24 °C heating season,
    20–70 % humidity). Returns too-high and too-low episodes together, peak = largest
    distance outside the band. `low` and `high` may be per-sample arrays of `value`'s
    shape (a heating-season band in winter, a cooling-season band in summer).
    """
    time_s = np.atleast_2d(np.asarray(time_s, dtype=float))
    value = np.atleast_2d(np.asarray(value, dtype=float))
    low = np.broadcast_to(np.asarray(low, dtype=float), value.shape) if np.ndim(low) else low
    high = np.broadcast_to(np.asarray(high, dtype=float), value.shape) if np.ndim(high) else high
    parts = []
    # Row blocks (rows are independent) keep the distance array small enough for cache.
    for rows in row_blocks(value.shape):
        # Distance outside the band: > 0 outside, ≤ 0 inside; NaN stays NaN.
        block_low = low[rows] if np.ndim(low) else low
        block_high = high[rows] if np.ndim(high) else high
        outside = np.subtract(value[rows], block_high)
        np.maximum(outside, np.subtract(block_low, value[rows]), out=outside)
        runs = threshold_runs(
            time_s[rows], outside, 0.0 + 1e-12, -hysteresis, min_duration_s, max_gap_s
        )
        parts.append(replace(runs, row=runs.row + rows.start) if rows.start else runs)
    return concat_runs(parts)


def en16798_category(
    co2_ppm: np.ndarray,
    temperature_c: np.ndarray | None = None,
    humidity_pct: np.ndarray | None = None,
    outdoor_co2_ppm: float = OUTDOOR_CO2_PPM,
    heating_season: bool = True,
) -> np.ndarray:
    """EN 16798-1 category per sample (0 = I … 3 = IV), the worst of the given quantities.

    CO2 is judged by its excess over `outdoor_co2_ppm`; temperature by the heating- or
    cooling-season bands; humidity by the humidity bands. -1 where nothing is known.
    """
    co2 = np.asarray(co2_ppm, dtype=float)
    bounds = np.asarray(EN16798_CO2_ABOVE_OUTDOOR_PPM) + outdoor_co2_ppm
    # Count of bounds below the value (= searchsorted left), as three cheap comparisons,
    # summed in int8 in place; -1 where CO2 is missing.
    with np.errstate(invalid="ignore"):
        worst = (co2 > bounds[0]).astype(np.int8)
        worst += co2 > bounds[1]
        worst += co2 > bounds[2]
    np.copyto(worst, -1, where=np.isnan(co2))
    bands = EN16798_TEMPERATURE_HEATING_C if heating_season else EN16798_TEMPERATURE_COOLING_C
    for quantity, quantity_bands in ((temperature_c, bands), (humidity_pct, EN16798_HUMIDITY_PCT)):
        if quantity is None:
            continue
        q = np.asarray(quantity, dtype=float)
        cat = np.full(q.shape, 3, dtype=np.int8)
        # Narrowest band first from the inside: assign the best category whose band holds q.
        for index in range(len(quantity_bands) - 1, -1, -1):
            low, high = quantity_bands[index]
            np.copyto(cat, index, where=(q >= low) & (q <= high))
        np.copyto(cat, -1, where=np.isnan(q))
        np.maximum(worst, cat, out=worst)
    return worst.astype(np.int64)


@dataclass(frozen=True)
class CategoryShares:
    """Share of occupied samples per room, day and EN 16798-1 category."""

    day_start_s: np.ndarray  # (days,) UTC seconds of each local day's midnight
    share: np.ndarray  # (rooms, days, 4) fractions summing to 1 where samples exist, else NaN
    samples: np.ndarray  # (rooms, days) occupied samples with a known category


def category_shares_per_day(
    time_s: np.ndarray,
    category: np.ndarray,
    occupied: np.ndarray,
    utc_offset_s: float | None = None,
    *,
    zone: str = DEFAULT_TIMEZONE,
) -> CategoryShares:
    """Per room and local day, the share of occupied samples in each category I–IV.

    Assumes regular sampling, so sample shares equal time shares. `occupied` is a boolean
    (rooms, samples) mask, e.g. from `school_hours_mask`, a school calendar
    (analytics/occupancy.py) or an occupancy sensor. Days are local days of `zone`, with
    each sample's own UTC offset (daylight saving), unless a fixed `utc_offset_s` is given.
    """
    time_s = np.atleast_2d(np.asarray(time_s, dtype=float))
    category = np.atleast_2d(category)
    rooms, n = time_s.shape
    use = category >= 0
    use &= occupied
    use &= ~np.isnan(time_s)
    # Only the used samples (school hours: a fraction of the week) get a day and a key.
    cells = np.flatnonzero(use)
    if not cells.size:
        return CategoryShares(np.empty(0), np.full((rooms, 0, 4), np.nan), np.zeros((rooms, 0)))
    used_time = np.take(time_s.reshape(-1), cells)
    offset = utc_offsets_s(used_time, zone) if utc_offset_s is None else utc_offset_s
    local_day = np.floor((used_time + offset) / 86400.0)
    first_day = int(local_day.min())
    n_days = int(local_day.max()) - first_day + 1
    row = cells // max(n, 1)
    day = local_day.astype(np.int64) - first_day
    key = (row * n_days + day) * 4 + np.take(category.reshape(-1), cells).astype(np.int64)
    counts = np.bincount(key, minlength=rooms * n_days * 4).reshape(rooms, n_days, 4)
    samples = counts.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = counts / samples[:, :, None]
    days = first_day + np.arange(n_days)
    if utc_offset_s is None:
        day_start = local_day_start_s(days, zone)
    else:
        day_start = days * 86400.0 - utc_offset_s
    return CategoryShares(day_start, share, samples)


def school_hours_mask(
    time_s: np.ndarray,
    utc_offset_s: float | None = None,
    start_hour: float = 8.0,
    end_hour: float = 16.0,
    *,
    zone: str = DEFAULT_TIMEZONE,
) -> np.ndarray:
    """True for samples on Monday–Friday between `start_hour` and `end_hour` local time.

    Local time is `zone`'s, with each sample's own offset (08:00 is 07:00 UTC in winter and
    06:00 UTC in summer in Copenhagen); a fixed `utc_offset_s` overrides the zone.
    A school calendar with holidays is analytics/occupancy.py.
    """
    time_s = np.asarray(time_s, dtype=float)
    offset = utc_offsets_s(time_s, zone) if utc_offset_s is None else utc_offset_s
    local = np.add(time_s, offset, dtype=float)
    # floor and multiply instead of np.mod, which is several times slower on large arrays;
    # in place on three temporaries.
    day = np.divide(local, 86400.0)
    np.floor(day, out=day)
    scratch = np.multiply(day, 86400.0)
    hour = np.subtract(local, scratch, out=local)
    hour /= 3600.0
    # 1970-01-01 was a Thursday: weekday 0 = Monday.
    day += 3.0
    np.divide(day, 7.0, out=scratch)
    np.floor(scratch, out=scratch)
    scratch *= 7.0
    weekday = np.subtract(day, scratch, out=day)
    mask = weekday < 5
    mask &= hour >= start_hour
    mask &= hour < end_hour
    return mask
