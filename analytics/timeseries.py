"""Shared array helpers: per-row sorting and dedup, segmented ↔ padded conversion, runs.

Readings arrive as *segmented* arrays (one flat array per column, rows told apart by a
row index such as a sensor's position). Kernels work on *padded* 2-D arrays of shape
(rows, samples) where missing cells are NaN, so one NumPy call covers every sensor.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Padded:
    """Rows of unequal length as (rows, width) arrays; unused cells have NaN value and time."""

    time_s: np.ndarray
    value: np.ndarray
    count: np.ndarray  # valid samples per row; they sit left-aligned in each row


def sort_dedup(
    row: np.ndarray, time_s: np.ndarray, value: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort samples by (row, time) and keep the last given value of duplicate (row, time).

    NaN values and NaN times are dropped (NaN means missing). Returns (row, time_s, value).
    """
    row = np.asarray(row, dtype=np.int64)
    time_s = np.asarray(time_s, dtype=float)
    value = np.asarray(value, dtype=float)
    keep = ~(np.isnan(time_s) | np.isnan(value))
    row, time_s, value = row[keep], time_s[keep], value[keep]
    # lexsort is stable, so among equal keys the later input stays later: keep the last.
    order = np.lexsort((time_s, row))
    row, time_s, value = row[order], time_s[order], value[order]
    if row.size:
        last = np.ones(row.size, dtype=bool)
        last[:-1] = (row[1:] != row[:-1]) | (time_s[1:] != time_s[:-1])
        row, time_s, value = row[last], time_s[last], value[last]
    return row, time_s, value


def to_padded(
    row: np.ndarray, time_s: np.ndarray, value: np.ndarray, n_rows: int, width: int | None = None
) -> Padded:
    """Turn segmented samples into a padded (n_rows, width) layout after `sort_dedup`.

    `width` defaults to the longest row; longer rows keep their *latest* `width` samples.
    """
    row, time_s, value = sort_dedup(row, time_s, value)
    count = np.bincount(row, minlength=n_rows)[:n_rows].astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(count)[:-1]))
    pos = np.arange(row.size) - starts[row]
    width = int(count.max(initial=0)) if width is None else int(width)
    # Rows longer than width drop their oldest samples.
    shift = np.maximum(count - width, 0)
    pos = pos - shift[row]
    keep = pos >= 0
    times = np.full((n_rows, max(width, 1)), np.nan)
    values = np.full((n_rows, max(width, 1)), np.nan)
    times[row[keep], pos[keep]] = time_s[keep]
    values[row[keep], pos[keep]] = value[keep]
    return Padded(times[:, :width], values[:, :width], np.minimum(count, width))


def to_segmented(padded: Padded) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inverse of `to_padded`: (row, time_s, value) of the valid cells, row-major."""
    valid = ~np.isnan(padded.time_s)
    rows, _ = np.nonzero(valid)
    return rows, padded.time_s[valid], padded.value[valid]


def last_valid_index(valid: np.ndarray) -> np.ndarray:
    """Column of the last True per row of a (rows, samples) mask; -1 when a row has none."""
    n = valid.shape[1]
    idx = np.where(valid, np.arange(n), -1)
    return idx.max(axis=1, initial=-1)


@dataclass(frozen=True)
class Runs:
    """Runs (episodes) found per row; all arrays have one entry per run, ordered by row."""

    row: np.ndarray
    start_col: np.ndarray
    end_col: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    peak: np.ndarray
    ongoing: np.ndarray  # the run includes the row's last valid sample

    @property
    def duration_s(self) -> np.ndarray:
        return self.end_s - self.start_s


def gap_breaks(time_s: np.ndarray, max_gap_s: float) -> np.ndarray:
    """True at samples that follow the previous one by more than `max_gap_s` (or NaN time)."""
    time_s = np.atleast_2d(np.asarray(time_s, dtype=float))
    gap = np.zeros(time_s.shape, dtype=bool)
    step = np.subtract(time_s[:, 1:], time_s[:, :-1])
    with np.errstate(invalid="ignore"):
        np.less_equal(step, max_gap_s, out=gap[:, 1:])
    np.logical_not(gap[:, 1:], out=gap[:, 1:])
    return gap


def hysteresis_state(
    time_s: np.ndarray,
    value: np.ndarray,
    on_threshold: float,
    off_threshold: float,
    max_gap_s: float = np.inf,
) -> np.ndarray:
    """Per-sample "in a run" state of (rows, samples) arrays with hysteresis.

    A run starts at a sample with value ≥ `on_threshold` and lasts until a sample falls
    below `off_threshold` (≤ `on_threshold`); values in between keep the state. NaN (missing)
    samples end a run, and so does a gap of more than `max_gap_s` between valid samples
    (the sample after the gap starts afresh; `runs_from_state` splits runs there).
    """
    if off_threshold > on_threshold:
        raise ValueError(f"off_threshold {off_threshold} must not exceed on {on_threshold}")
    time_s = np.atleast_2d(np.asarray(time_s, dtype=float))
    value = np.atleast_2d(np.asarray(value, dtype=float))
    with np.errstate(invalid="ignore"):
        on = value >= on_threshold
        off = (value < off_threshold) | np.isnan(value)
    gap = gap_breaks(time_s, max_gap_s)
    # Every row starts afresh: a reset before its first sample keeps rows apart, so one
    # accumulate over the flattened array (much faster than along axis 1) serves all rows.
    gap[:, :1] = True
    # Event positions on a doubled axis: a gap resets *before* its sample (2i), the
    # sample's own on/off event happens at 2i+1; the latest event wins.
    # int32 positions halve the memory traffic whenever they fit.
    index_type = np.int32 if 2 * value.size + 1 < np.iinfo(np.int32).max else np.int64
    flat = 2 * np.arange(value.size, dtype=index_type).reshape(value.shape)
    last_on = np.maximum.accumulate(np.where(on, flat + 1, -1).ravel())
    off_events = np.maximum(np.where(off, flat + 1, -1), np.where(gap, flat, -1))
    last_off = np.maximum.accumulate(off_events.ravel())
    return (last_on > last_off).reshape(value.shape)


def runs_from_state(
    time_s: np.ndarray,
    value: np.ndarray,
    state: np.ndarray,
    min_duration_s: float = 0.0,
    max_gap_s: float = np.inf,
) -> Runs:
    """Runs of consecutive True `state` per row, kept if end − start ≥ `min_duration_s`.

    A gap over `max_gap_s` between samples splits a run. A run lasts from its first sample
    until the next sample that ends it (below the threshold, or a sample whose value is
    masked out, e.g. outside occupied hours); a run cut by a gap or by the end of the data
    ends at its last sample. So at 10-minute sampling two samples above 1000 ppm followed
    by one below make a 20-minute exceedance, not a 10-minute one. `end_col` is the run's
    last sample (for `ongoing`); `end_s` the time it ended.
    """
    time_s = np.atleast_2d(np.asarray(time_s, dtype=float))
    value = np.atleast_2d(np.asarray(value, dtype=float))
    state = np.atleast_2d(state)
    n = state.shape[1]
    gap = gap_breaks(time_s, max_gap_s)
    previous = np.zeros_like(state)
    previous[:, 1:] = state[:, :-1]
    starts = state & (~previous | gap)
    following = np.zeros_like(state)
    following[:, :-1] = state[:, 1:] & ~gap[:, 1:]
    ends = state & ~following
    start_r, start_c = np.nonzero(starts)
    end_r, end_c = np.nonzero(ends)
    start_s = time_s[start_r, start_c]
    row_first = gap.copy()
    row_first[:, :1] = True
    end_s = _ended_by_next_sample(time_s.ravel(), row_first.ravel(), end_r * n + end_c)
    # Peak per run: the maximum over [start, end] via reduceat on the flat array, with
    # cells outside runs at -inf (reduceat spans up to the next start).
    flat = np.where(state, value, -np.inf).ravel()
    peak = np.maximum.reduceat(flat, start_r * n + start_c) if start_r.size else np.empty(0)
    last = last_valid_index(~np.isnan(value) & ~np.isnan(time_s))
    ongoing = end_c == last[start_r]
    keep = (end_s - start_s) >= min_duration_s
    return Runs(
        start_r[keep],
        start_c[keep],
        end_c[keep],
        start_s[keep],
        end_s[keep],
        peak[keep],
        ongoing[keep],
    )


def threshold_runs(
    time_s: np.ndarray,
    value: np.ndarray,
    on_threshold: float,
    off_threshold: float,
    min_duration_s: float = 0.0,
    max_gap_s: float = np.inf,
) -> Runs:
    """Hysteresis runs (`hysteresis_state` + `runs_from_state`) of (rows, samples) arrays.

    Only rows with a cell at or above `on_threshold` can hold a run, and in a typical
    window most sensors never reach an alert threshold: when fewer than half the rows of a
    block do, only those rows get the full run detection, so the cost follows the rows
    that matter. Rows are independent, so they are taken in blocks of about
    `_CELLS_PER_BLOCK` cells whose temporaries stay in cache; the runs are the same as
    from one pass over all rows.
    """
    if off_threshold > on_threshold:
        raise ValueError(f"off_threshold {off_threshold} must not exceed on {on_threshold}")
    time_s = np.atleast_2d(np.asarray(time_s, dtype=float))
    value = np.atleast_2d(np.asarray(value, dtype=float))
    parts = []
    for rows in row_blocks(value.shape):
        runs = _threshold_runs_block(
            time_s[rows], value[rows], on_threshold, off_threshold, min_duration_s, max_gap_s
        )
        parts.append(replace(runs, row=runs.row + rows.start) if rows.start else runs)
    return concat_runs(parts)


_CELLS_PER_BLOCK = 1 << 18
_RUN_FIELDS = ("row", "start_col", "end_col", "start_s", "end_s", "peak", "ongoing")


def row_blocks(shape: tuple[int, int], cells: int | None = None) -> list[slice]:
    """Slices of rows of a (rows, samples) array, about `cells` (default
    `_CELLS_PER_BLOCK`) cells each: at least one row, one empty block if there are none."""
    n_rows, n = shape
    cells = _CELLS_PER_BLOCK if cells is None else cells
    block = max(1, cells // max(n, 1))
    return [slice(begin, begin + block) for begin in range(0, max(n_rows, 1), block)]


def concat_runs(parts: list[Runs]) -> Runs:
    """Runs of consecutive row blocks (rows already offset) as one `Runs`."""
    if len(parts) == 1:
        return parts[0]
    return Runs(*(np.concatenate([getattr(r, f) for r in parts]) for f in _RUN_FIELDS))


def _threshold_runs_block(
    time_s: np.ndarray,
    value: np.ndarray,
    on_threshold: float,
    off_threshold: float,
    min_duration_s: float,
    max_gap_s: float,
) -> Runs:
    with np.errstate(invalid="ignore"):
        on = value >= on_threshold  # NaN: False
    rows = np.flatnonzero(on.any(axis=1)) if value.shape[1] else np.arange(value.shape[0])
    # A row that never reaches the threshold holds no run, so when most rows do, running
    # on all of them finds the same runs and saves copying the rest.
    if rows.size < value.shape[0] // 2:
        time_s, value, on = time_s[rows], value[rows], on[rows]
        runs = _event_runs(time_s, value, on, off_threshold, min_duration_s, max_gap_s)
        return replace(runs, row=rows[runs.row])
    return _event_runs(time_s, value, on, off_threshold, min_duration_s, max_gap_s)


def _event_runs(
    time_s: np.ndarray,
    value: np.ndarray,
    on: np.ndarray,
    off_threshold: float,
    min_duration_s: float,
    max_gap_s: float,
) -> Runs:
    """`runs_from_state(hysteresis_state(...))` from the event cells alone.

    Only cells that switch the state matter: "on" cells and "break" cells (below the off
    threshold, missing, or after a gap; every row's first cell counts as a gap so rows stay
    apart on the flattened axis). The state after any event is simply whether that cell is
    on, so a run starts at an on event that follows an off state or a break, and ends just
    before the next break. A few cheap full-array masks, the rest on the events. `on` is
    value ≥ the on threshold (which is ≥ `off_threshold`), computed by the caller.
    """
    n = value.shape[1]
    if value.size == 0:
        empty = np.empty(0)
        none = np.empty(0, dtype=np.int64)
        return Runs(none, none, none, empty, empty, empty, np.empty(0, dtype=bool))
    # Break: below off or NaN (= not ≥ off), or after a gap.
    with np.errstate(invalid="ignore"):
        brk = np.greater_equal(value, off_threshold)
    np.logical_not(brk, out=brk)
    gap = gap_breaks(time_s, max_gap_s)
    gap[:, 0] = True
    brk |= gap
    on, brk, gap = on.ravel(), brk.ravel(), gap.ravel()
    # Repeats change nothing: an on cell right after an on cell (no gap between) or a plain
    # break right after a plain break (an on cell after a gap is both: a break that starts
    # a run).
    # Dropping them keeps the event list short even for band rules, where nearly every
    # cell is either on or a break. (On booleans, a > b is a and not b.)
    plain = brk > on
    event = on | brk
    repeat = np.greater(on[:-1], gap[1:])
    repeat &= on[1:]
    repeat |= plain[1:] & plain[:-1]
    event[1:] &= ~repeat
    events = np.flatnonzero(event)
    event_on = on[events]
    event_brk = brk[events]
    previous_on = np.concatenate(([False], event_on[:-1]))
    starts = events[event_on & (~previous_on | event_brk)]
    breaks = events[event_brk]
    following = np.searchsorted(breaks, starts, side="right")
    ends = np.where(
        following < breaks.size, breaks[np.minimum(following, breaks.size - 1)] - 1, value.size - 1
    )
    flat_time = time_s.ravel()
    start_s = flat_time[starts]
    end_s = _ended_by_next_sample(flat_time, gap, ends)
    keep = (end_s - start_s) >= min_duration_s
    starts, ends, start_s, end_s = starts[keep], ends[keep], start_s[keep], end_s[keep]
    # Peak per run: reduceat over [start, end + 1) pairs, every other segment kept.
    if starts.size:
        bounds = np.stack([starts, ends + 1], axis=1).ravel()
        flat_value = value.ravel()
        peak = np.maximum.reduceat(flat_value, np.minimum(bounds, value.size - 1))[::2]
        # A run ending at the very last cell: the clipped bound made its segment one cell
        # short of nothing; reduceat of [start, size) is the tail, which is what we want.
        if ends[-1] == value.size - 1:
            peak[-1] = flat_value[starts[-1] :].max()
    else:
        peak = np.empty(0)
    run_row, start_c = np.divmod(starts, n)
    end_c = ends - run_row * n
    # Ongoing: no valid sample after the run's end in its row (only rows with runs).
    with_runs, inverse = np.unique(run_row, return_inverse=True)
    ongoing = end_c == _last_valid_columns(time_s, value, with_runs)[inverse]
    return Runs(run_row, start_c, end_c, start_s, end_s, peak, ongoing)


def _ended_by_next_sample(
    flat_time: np.ndarray, flat_gap: np.ndarray, ends: np.ndarray
) -> np.ndarray:
    """End time of runs whose last cells (flat indices) are `ends`: the time of the cell
    after, when it is in the same row, not after a gap and has a time (the sample that
    ended the run); otherwise the last cell's own time. `flat_gap` is True at every row's
    first cell, so a run never borrows the next row's first sample."""
    end_s = flat_time[ends]
    following = ends + 1
    inside = following < flat_time.size
    candidate = following[inside]
    takes = ~flat_gap[candidate] & ~np.isnan(flat_time[candidate])
    chosen = np.flatnonzero(inside)[takes]
    end_s[chosen] = flat_time[candidate[takes]]
    return end_s


def _last_valid_columns(time_s: np.ndarray, value: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`last_valid_index` of (value and time not NaN) for the given rows, looking at the
    rows' last columns first (a window growing fourfold), so rows that end in a valid
    sample or a little NaN padding cost a few columns, not a copy of the whole row."""
    n = value.shape[1]
    last = np.full(rows.size, -1, dtype=np.int64)
    pending = np.arange(rows.size)
    high, width = n, 16
    while pending.size and high > 0:
        low = max(high - width, 0)
        sub = rows[pending]
        valid = ~np.isnan(value[sub, low:high]) & ~np.isnan(time_s[sub, low:high])
        found = last_valid_index(valid)
        hit = found >= 0
        last[pending[hit]] = low + found[hit]
        pending = pending[~hit]
        high, width = low, width * 4
    return last


def trailing_run_length(same_as_previous: np.ndarray) -> np.ndarray:
    """Length of the run ending at the last column, per row, of a (rows, samples) mask.

    `same_as_previous[:, i]` says sample i continues the run of sample i−1 (column 0 is
    ignored); the result counts samples, so a row with no continuation gives 1.
    """
    rows, n = same_as_previous.shape
    if n == 0:
        return np.zeros(rows, dtype=np.int64)
    breaks = ~same_as_previous.copy()
    breaks[:, 0] = True
    last_break = last_valid_index(breaks)
    return n - last_break
