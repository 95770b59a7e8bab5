"""Waste-bin indicators from ultrasonic distance readings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def fill_level_pct(
    distance_mm: np.ndarray | float,
    bin_depth_mm: np.ndarray | float,
    mount_offset_mm: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Fill level in percent (0 empty, 100 full) from the sensor's distance reading.

    The sensor hangs `mount_offset_mm` above the full line and looks down into a bin whose
    usable depth (full line to bottom) is `bin_depth_mm`. Readings beyond the bottom count
    as empty and readings above the full line as full, so the result is clipped to 0..100.
    NaN distances or non-positive depths give NaN.
    """
    distance = np.asarray(distance_mm, dtype=float)
    depth = np.asarray(bin_depth_mm, dtype=float)
    offset = np.asarray(mount_offset_mm, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = 100.0 * (1.0 - (distance - offset) / depth)
    pct = np.where(depth > 0, np.clip(pct, 0.0, 100.0), np.nan)
    return pct


def raw_fill_pct(
    distance_mm: np.ndarray | float,
    bin_depth_mm: np.ndarray | float,
    mount_offset_mm: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Fill level in percent *before* clipping; values far outside 0..100 reveal a fault."""
    distance = np.asarray(distance_mm, dtype=float)
    depth = np.asarray(bin_depth_mm, dtype=float)
    offset = np.asarray(mount_offset_mm, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = 100.0 * (1.0 - (distance - offset) / depth)
    return np.where(depth > 0, pct, np.nan)


def _median3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    # Exact (no rounding, unlike a + b + c − max − min) and four passes instead of eight.
    return np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))


def emptying_mask(fill_pct: np.ndarray, drop_pct: float = 30.0) -> np.ndarray:
    """True at the first sample after each emptying of a (bins, samples) fill array.

    An emptying is a drop of at least `drop_pct` percentage points between the median of
    the three samples before and the median of the sample and the two after it, so one
    noisy reading neither fakes nor hides an emptying. Near the row's ends (or NaN cells)
    the missing neighbours are replaced by the nearest sample. The flagged sample itself
    must also lie `drop_pct` below the median before it.
    """
    f = np.atleast_2d(np.asarray(fill_pct, dtype=float))
    n = f.shape[1]
    if n < 2:
        return np.zeros_like(f, dtype=bool)
    missing = np.isnan(f)
    # Forward-fill NaN (padding after a row's last sample) so row ends see their last
    # reading, then edge-pad by repeating the first/last column so medians exist there.
    if missing.any():
        # One accumulate over the flattened array (far faster than along axis 1): a missing
        # cell points at its row's start, so the fill never crosses into the previous row.
        flat = np.arange(f.size).reshape(f.shape)
        row_start = flat[:, :1]
        idx = np.maximum.accumulate(np.where(missing, row_start, flat).ravel())
        f = f.ravel()[idx].reshape(f.shape)
    padded = np.concatenate([f[:, :1], f[:, :1], f[:, :1], f, f[:, -1:], f[:, -1:]], axis=1)
    # Medians of every three consecutive padded samples, once: "after" at i is "before" at
    # i + 3.
    m = padded.shape[1] - 2
    medians = _median3(padded[:, 0:m], padded[:, 1 : m + 1], padded[:, 2 : m + 2])
    before = medians[:, 0:n]
    after = medians[:, 3 : n + 3]
    with np.errstate(invalid="ignore"):
        # The sample itself must be low too, so the emptying lands on the first low sample.
        drop = ((before - after) >= drop_pct) & ((before - f) >= drop_pct)
    drop[:, 0] = False
    drop &= ~missing
    # Keep the first sample of each block of consecutive detections.
    first = drop.copy()
    first[:, 1:] &= ~drop[:, :-1]
    return first


def since_last_emptying(fill_pct: np.ndarray, emptied: np.ndarray) -> np.ndarray:
    """Mask of samples at or after each row's last emptying (all valid samples if none)."""
    f = np.atleast_2d(np.asarray(fill_pct, dtype=float))
    n = f.shape[1]
    last = np.where(emptied, np.arange(n), 0).max(axis=1, initial=0)
    return (np.arange(n)[None, :] >= last[:, None]) & ~np.isnan(f)


def theil_sen_rate_pct_per_h(
    time_s: np.ndarray, fill_pct: np.ndarray, use: np.ndarray, max_points: int = 24
) -> np.ndarray:
    """Robust fill rate (percentage points per hour) per row: the Theil–Sen slope.

    Uses the latest `max_points` samples of each row where `use` is True (e.g. since the
    last emptying). The median of pairwise slopes shrugs off up to ~29 % outliers. NaN
    when a row has fewer than two usable samples at distinct times.
    """
    time_s = np.atleast_2d(np.asarray(time_s, dtype=float))
    fill = np.atleast_2d(np.asarray(fill_pct, dtype=float))
    rows, n = fill.shape
    k = min(max_points, n)
    if k < 2:
        return np.full(rows, np.nan)
    # Gather each row's latest k usable samples, right-aligned (stable sort keeps order).
    order = np.argsort(~use, axis=1, kind="stable")  # usable first, in time order
    n_use = use.sum(axis=1)
    cols = n_use[:, None] - k + np.arange(k)[None, :]
    valid = cols >= 0
    cols = np.clip(cols, 0, n - 1)
    idx = np.take_along_axis(order, cols, axis=1)
    t = np.where(valid, np.take_along_axis(time_s, idx, axis=1), np.nan)
    v = np.where(valid, np.take_along_axis(fill, idx, axis=1), np.nan)
    i, j = np.triu_indices(k, 1)
    dt = t[:, j] - t[:, i]
    with np.errstate(invalid="ignore", divide="ignore"):
        slopes = np.where(dt > 0, (v[:, j] - v[:, i]) / dt, np.nan)
    # Median of the finite slopes per row: sort (NaN last), pick the middle by count.
    slopes.sort(axis=1)
    m = np.sum(~np.isnan(slopes), axis=1)
    lo = np.clip((m - 1) // 2, 0, None)
    hi = np.clip(m // 2, 0, None)
    rr = np.arange(rows)
    median = 0.5 * (slopes[rr, lo] + slopes[rr, hi])
    return np.where(m > 0, median * 3600.0, np.nan)


def time_to_full_h(
    current_pct: np.ndarray, rate_pct_per_h: np.ndarray, full_pct: float = 90.0
) -> np.ndarray:
    """Hours until `full_pct` at the current rate: 0 if already there, inf if not filling."""
    current = np.asarray(current_pct, dtype=float)
    rate = np.asarray(rate_pct_per_h, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        hours = np.where(rate > 0, (full_pct - current) / rate, np.inf)
    hours = np.where(current >= full_pct, 0.0, hours)
    return np.where(np.isnan(current), np.nan, hours)


def predicted_fill_pct(
    current_pct: np.ndarray, rate_pct_per_h: np.ndarray, hours_ahead: np.ndarray | float
) -> np.ndarray:
    """Fill level expected `hours_ahead` from now at the current rate, clipped to 0..100."""
    rate = np.nan_to_num(np.asarray(rate_pct_per_h, dtype=float), nan=0.0)
    ahead = np.asarray(current_pct, dtype=float) + np.maximum(rate, 0.0) * hours_ahead
    return np.clip(ahead, 0.0, 100.0)


@dataclass(frozen=True)
class BinStatus:
    """Per-bin state and alert flags from `evaluate_bins`; all arrays have one entry per bin."""

    current_pct: np.ndarray
    rate_pct_per_h: np.ndarray
    time_to_full_h: np.ndarray
    emptyings: np.ndarray  # count of emptyings in the window
    full: np.ndarray
    soon_full: np.ndarray
    sudden_rise: np.ndarray
    sudden_rise_pct: np.ndarray  # size of the largest recent rise, percentage points
    fault: np.ndarray


def evaluate_bins(
    time_s: np.ndarray,
    raw_pct: np.ndarray,
    now_s: float,
    full_pct: float = 90.0,
    soon_full_h: float = 24.0,
    emptying_drop_pct: float = 30.0,
    sudden_rise_pct: float = 25.0,
    recent_s: float = 6 * 3600.0,
    fault_margin_pct: float = 10.0,
    max_points: int = 24,
) -> BinStatus:
    """All bin rules over (bins, samples) arrays of unclipped fill (see `raw_fill_pct`).

    - full: latest fill ≥ `full_pct`; soon-full: not full and time to full < `soon_full_h`.
    - sudden rise: within `recent_s` before `now_s`, one step rose ≥ `sudden_rise_pct`
      points (e.g. a bag dumped in; not an error, but it breaks the forecast).
    - fault: the latest reading lies outside 0..100 by more than `fault_margin_pct`, or the
      bin has no reading at all.
    """
    time_s = np.atleast_2d(np.asarray(time_s, dtype=float))
    raw = np.atleast_2d(np.asarray(raw_pct, dtype=float))
    rows, n = raw.shape
    fill = np.clip(raw, 0.0, 100.0)
    valid = ~np.isnan(fill) & ~np.isnan(time_s)
    last = valid.shape[1] - 1 - np.argmax(valid[:, ::-1], axis=1) if n else np.zeros(rows, int)
    has_any = valid.any(axis=1) if n else np.zeros(rows, bool)
    rr = np.arange(rows)
    current = np.where(has_any, fill[rr, last], np.nan) if n else np.full(rows, np.nan)
    current_raw = np.where(has_any, raw[rr, last], np.nan) if n else np.full(rows, np.nan)
    emptied = emptying_mask(fill, emptying_drop_pct) if n else np.zeros((rows, 0), bool)
    use = since_last_emptying(fill, emptied) if n else np.zeros((rows, 0), bool)
    rate = theil_sen_rate_pct_per_h(time_s, fill, use, max_points)
    ttf = time_to_full_h(current, rate, full_pct)
    full = current >= full_pct
    soon = ~full & (ttf < soon_full_h)
    if n > 1:
        # Rows are in time order, so only columns from the earliest recent sample of any row
        # on can hold a recent step (a few columns of a 30-day window).
        with np.errstate(invalid="ignore"):
            older = (time_s < now_s - recent_s).sum(axis=1)
        first = max(int(older.min()) - 1, 0)
        step = np.diff(fill[:, first:], axis=1)
        recent = time_s[:, first + 1 :] >= now_s - recent_s
        rise = np.where(recent & ~np.isnan(step), step, -np.inf).max(axis=1, initial=-np.inf)
    else:
        rise = np.full(rows, -np.inf)
    sudden = rise >= sudden_rise_pct
    with np.errstate(invalid="ignore"):
        fault = (
            ~has_any | (current_raw < -fault_margin_pct) | (current_raw > 100.0 + fault_margin_pct)
        )
    return BinStatus(
        current, rate, ttf, emptied.sum(axis=1), full, soon, sudden, np.maximum(rise, 0.0), fault
    )
