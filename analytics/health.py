"""Sensor health: stale sensors, low battery, stuck values and spikes.

Works on the padded (sensors, samples) layout of analytics/timeseries.py; NaN = missing.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from analytics.timeseries import last_valid_index, trailing_run_length

MAD_TO_SIGMA = 1.4826  # scales the median absolute deviation to σ for normal noise


def median_interval_s(time_s: np.ndarray) -> np.ndarray:
    """Median time between consecutive readings per sensor (seconds); NaN with < 2 readings."""
    time_s = np.atleast_2d(np.asarray(time_s, dtype=float))
    if time_s.shape[1] < 2:
        return np.full(time_s.shape[0], np.nan)
    dt = np.diff(time_s, axis=1)
    dt = np.where(dt > 0, dt, np.nan)
    # nanmedian via sort: NaN sort last, pick the middle of the finite ones.
    dt.sort(axis=1)
    m = np.sum(~np.isnan(dt), axis=1)
    rr = np.arange(dt.shape[0])
    lo = np.clip((m - 1) // 2, 0, None)
    hi = np.clip(m // 2, 0, None)
    return np.where(m > 0, 0.5 * (dt[rr, lo] + dt[rr, hi]), np.nan)


def stale(
    last_seen_s: np.ndarray,
    now_s: float,
    interval_s: np.ndarray,
    factor: float = 3.0,
    default_interval_s: float = 3600.0,
) -> np.ndarray:
    """True where nothing arrived for more than `factor` × the sensor's usual interval.

    `interval_s` is the expected (or median observed) interval per sensor; NaN falls back
    to `default_interval_s`. Sensors never seen (NaN last_seen) are stale.
    """
    interval = np.where(np.isnan(interval_s), default_interval_s, interval_s)
    last = np.asarray(last_seen_s, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.isnan(last) | ((now_s - last) > factor * interval)


def low_battery(
    battery_v: np.ndarray | None = None,
    min_v: np.ndarray | float = 3.3,
    battery_pct: np.ndarray | None = None,
    min_pct: float = 15.0,
) -> np.ndarray:
    """True where the latest battery voltage is below `min_v` (per sensor model or one
    default) or the latest remaining capacity is below `min_pct` percent."""
    result = None
    if battery_v is not None:
        with np.errstate(invalid="ignore"):
            result = np.asarray(battery_v, dtype=float) < min_v
    if battery_pct is not None:
        with np.errstate(invalid="ignore"):
            low_pct = np.asarray(battery_pct, dtype=float) < min_pct
        result = low_pct if result is None else result | low_pct
    if result is None:
        raise ValueError("low_battery needs battery_v or battery_pct")
    return result


def latest(time_s: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(time, value) of each row's latest valid sample; NaN for empty rows."""
    time_s = np.atleast_2d(np.asarray(time_s, dtype=float))
    value = np.atleast_2d(np.asarray(value, dtype=float))
    last = last_valid_index(~np.isnan(value) & ~np.isnan(time_s))
    rr = np.arange(value.shape[0])
    safe = np.clip(last, 0, None)
    has = last >= 0
    if value.shape[1] == 0:
        return np.full(value.shape[0], np.nan), np.full(value.shape[0], np.nan)
    return np.where(has, time_s[rr, safe], np.nan), np.where(has, value[rr, safe], np.nan)


def stuck_samples(value: np.ndarray) -> np.ndarray:
    """Number of identical consecutive readings ending at each row's latest reading.

    Rows are left-aligned with NaN padding at the end (analytics/timeseries.to_padded);
    NaN cells in between break a run. A metric that normally varies (CO2, temperature)
    repeating the same value many times means a frozen sensor.
    """
    value = np.atleast_2d(np.asarray(value, dtype=float))
    rows, n = value.shape
    if n == 0:
        return np.zeros(rows, dtype=np.int64)
    valid = ~np.isnan(value)
    last = last_valid_index(valid)
    same = np.zeros_like(valid)
    same[:, 1:] = value[:, 1:] == value[:, :-1]
    # Count back from each row's last valid sample: shift rows so that sample is last.
    cols = np.arange(n)[None, :] - (n - 1 - last)[:, None]
    inside = cols >= 0
    shifted = np.where(inside, np.take_along_axis(same, np.clip(cols, 0, None), axis=1), False)
    lengths = trailing_run_length(shifted)
    return np.where(last >= 0, lengths, 0)


def hampel_spikes(
    value: np.ndarray,
    half_window: int = 6,
    n_sigmas: float = 5.0,
    min_deviation: float = 0.0,
    chunk_cells: int = 4_000_000,
) -> np.ndarray:
    """Hampel filter: True where |x − rolling median| > n_sigmas · 1.4826 · rolling MAD.

    The window is centred and `2·half_window + 1` samples wide; samples without a full
    window (row ends) and NaN are never spikes. A MAD of zero (flat signal) flags any
    deviation from the median. The defaults (13-sample window, 5 σ) are stricter than the
    textbook 7 / 3 σ, which flags several samples a day of plain sensor noise on a smooth
    CO2 curve. `min_deviation` (in the value's unit, e.g. 100 ppm) also ignores tiny
    deviations that only look large against a quiet window. Rows are processed in chunks
    of about `chunk_cells` window cells to bound memory.
    """
    value = np.atleast_2d(np.asarray(value, dtype=float))
    rows, n = value.shape
    w = 2 * half_window + 1
    spikes = np.zeros((rows, n), dtype=bool)
    if n < w:
        return spikes
    step = max(1, chunk_cells // (n * w))
    for begin in range(0, rows, step):  # chunks of rows, not one sensor at a time
        block = value[begin : begin + step]
        windows = sliding_window_view(block, w, axis=1)
        # A window holding NaN has no defined median, found by a rolling count of NaN.
        nan_count = np.cumsum(np.isnan(block), axis=1)
        nan_count = np.concatenate([np.zeros((block.shape[0], 1)), nan_count], axis=1)
        complete = (nan_count[:, w:] - nan_count[:, :-w]) == 0
        centre = block[:, half_window : n - half_window]
        if min_deviation > 0:
            # |x − median| ≥ d exactly when more than half the window lies ≤ x − d (or
            # ≥ x + d): counting that takes w cheap comparisons per sample, far cheaper than
            # a median, and leaves the few samples that need one.
            r, c = np.nonzero(complete & _far_from_median(block, centre, w, min_deviation))
            med = np.partition(windows[r, c], half_window, axis=1)[:, half_window]
            deviation = np.abs(centre[r, c] - med)
        else:
            # np.partition is ~8x faster than np.median on strided windows.
            med = np.partition(windows, half_window, axis=2)[:, :, half_window]
            with np.errstate(invalid="ignore"):
                all_deviation = np.abs(centre - med)
                # MAD only where the deviation could be a spike at all.
                r, c = np.nonzero(complete & (all_deviation > 0))
            med, deviation = med[r, c], all_deviation[r, c]
        keep = deviation > 0
        r, c, med, deviation = r[keep], c[keep], med[keep], deviation[keep]
        if r.size:
            around = windows[r, c]
            mad = np.partition(np.abs(around - med[:, None]), half_window, axis=1)
            mad = mad[:, half_window]
            hit = deviation > n_sigmas * MAD_TO_SIGMA * mad
            spikes[begin + r[hit], half_window + c[hit]] = True
    return spikes


def _far_from_median(
    block: np.ndarray, centre: np.ndarray, width: int, deviation: float
) -> np.ndarray:
    """True where the centred window's median lies at least `deviation` from the centre."""
    m = centre.shape[1]
    below = np.zeros(centre.shape, dtype=np.int8)
    above = np.zeros(centre.shape, dtype=np.int8)
    with np.errstate(invalid="ignore"):
        low_limit = centre - deviation
        high_limit = centre + deviation
        for offset in range(width):  # over window positions, not samples or sensors
            neighbour = block[:, offset : offset + m]
            below += neighbour <= low_limit
            above += neighbour >= high_limit
    half = width // 2
    return (below > half) | (above > half)
