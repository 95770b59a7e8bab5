"""Plain-Python reference implementations of the analytics kernels, one sensor at a time.

Written for obviousness, not speed: property tests check the NumPy kernels against these,
and bench/bench_analytics.py times them as the baseline.
"""

from __future__ import annotations

import itertools
import math
import statistics

Series = list[tuple[float, float]]  # (time_s, value)


def clean(samples: Series) -> Series:
    """Drop NaN, sort by time, keep the last given value of a duplicated time."""
    by_time: dict[float, float] = {}
    for t, v in samples:
        if math.isnan(t) or math.isnan(v):
            continue
        by_time[t] = v
    return sorted(by_time.items())


def hysteresis_runs(
    samples: Series, on: float, off: float, min_duration_s: float, max_gap_s: float
) -> list[tuple[float, float, float, bool]]:
    """(start_s, end_s, peak, ongoing) of runs on a cleaned series. A run lasts until the
    sample below `off` that ends it; a gap or the end of the data ends it at its last
    sample. Ongoing: its last sample is the series' last."""
    runs = []
    active = False
    start = last = peak = 0.0
    previous_t = None
    for t, v in samples:
        if active and previous_t is not None and not (t - previous_t <= max_gap_s):
            runs.append((start, last, last, peak))
            active = False
        if active:
            if v < off:
                runs.append((start, t, last, peak))
                active = False
            else:
                last, peak = t, max(peak, v)
        elif v >= on:
            active, start, last, peak = True, t, t, v
        previous_t = t
    if active:
        runs.append((start, last, last, peak))
    last_t = samples[-1][0] if samples else None
    return [(s, e, p, lt == last_t) for s, e, lt, p in runs if e - s >= min_duration_s]


def co2_category(co2: float, outdoor: float = 400.0) -> int:
    excess = co2 - outdoor
    if excess <= 550:
        return 0
    if excess <= 800:
        return 1
    if excess <= 1350:
        return 2
    return 3


def category_shares(
    samples: Series, occupied: list[bool], utc_offset_s: float
) -> dict[int, list[float]]:
    """Local day number → shares of categories I..IV among occupied samples."""
    counts: dict[int, list[int]] = {}
    for (t, v), occ in zip(samples, occupied, strict=True):
        if not occ:
            continue
        day = math.floor((t + utc_offset_s) / 86400.0)
        counts.setdefault(day, [0, 0, 0, 0])[co2_category(v)] += 1
    return {day: [c / sum(cs) for c in cs] for day, cs in counts.items()}


def emptying_indices(fill: list[float], drop_pct: float) -> list[int]:
    """Indices of the first low sample after each emptying (see bins.emptying_mask)."""
    n = len(fill)
    padded = [fill[0]] * 3 + list(fill) + [fill[-1]] * 2
    found = []
    previous = False
    for i in range(n):
        before = statistics.median(padded[i : i + 3])
        after = statistics.median(padded[i + 3 : i + 6])
        hit = i > 0 and before - after >= drop_pct and before - fill[i] >= drop_pct
        if hit and not previous:
            found.append(i)
        previous = hit
    return found


def theil_sen_per_h(samples: Series, max_points: int) -> float:
    points = samples[-max_points:]
    slopes = [
        (v2 - v1) / (t2 - t1)
        for a, (t1, v1) in enumerate(points)
        for (t2, v2) in points[a + 1 :]
        if t2 > t1
    ]
    return statistics.median(slopes) * 3600.0 if slopes else math.nan


def bin_status(samples: Series, now_s: float, params: dict) -> dict:
    """All bin rules for one bin's cleaned (time, raw fill %) series."""
    if not samples:
        return {"fault": True, "full": False, "soon_full": False, "sudden_rise": False}
    raw = [v for _, v in samples]
    fill = [min(max(v, 0.0), 100.0) for v in raw]
    emptyings = emptying_indices(fill, params["emptying_drop_pct"]) if len(fill) > 1 else []
    since = emptyings[-1] if emptyings else 0
    tail = [(t, f) for (t, _), f in zip(samples[since:], fill[since:], strict=True)]
    rate = theil_sen_per_h(tail, params["max_points"])
    current = fill[-1]
    full = current >= params["full_pct"]
    if full:
        ttf = 0.0
    elif not math.isnan(rate) and rate > 0:
        ttf = (params["full_pct"] - current) / rate
    else:
        ttf = math.inf
    rise = max(
        (
            fill[i] - fill[i - 1]
            for i in range(1, len(fill))
            if samples[i][0] >= now_s - params["recent_s"]
        ),
        default=-math.inf,
    )
    margin = params["fault_margin_pct"]
    return {
        "current": current,
        "rate": rate,
        "ttf": ttf,
        "emptyings": len(emptyings),
        "full": full,
        "soon_full": (not full) and ttf < params["soon_full_h"],
        "sudden_rise": rise >= params["sudden_rise_pct"],
        "fault": raw[-1] < -margin or raw[-1] > 100 + margin,
    }


def occupancy_at(samples: Series, t: float) -> float:
    """The bay's state at time t: its latest reading at or before t (NaN if none)."""
    state = math.nan
    for ts, v in samples:
        if ts <= t:
            state = v
        else:
            break
    return state


def stuck_count(values: list[float]) -> int:
    if not values:
        return 0
    count = 1
    for i in range(len(values) - 1, 0, -1):
        if values[i] == values[i - 1]:
            count += 1
        else:
            break
    return count


def hampel(values: list[float], half_window: int, n_sigmas: float) -> list[bool]:
    n = len(values)
    out = [False] * n
    for i in range(half_window, n - half_window):
        window = values[i - half_window : i + half_window + 1]
        if any(math.isnan(x) for x in window):
            continue
        med = statistics.median(window)
        mad = statistics.median(abs(x - med) for x in window)
        out[i] = abs(values[i] - med) > n_sigmas * 1.4826 * mad
    return out


def median_interval(times: list[float]) -> float:
    diffs = [b - a for a, b in itertools.pairwise(times) if b > a]
    return statistics.median(diffs) if diffs else math.nan
