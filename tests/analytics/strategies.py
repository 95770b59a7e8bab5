"""Hypothesis strategies shared by the analytics kernel tests: messy segmented series."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from analytics.timeseries import Padded, to_padded


def series(
    values: st.SearchStrategy[float], max_size: int = 30, step_s: float = 300.0
) -> st.SearchStrategy[list[tuple[float, float]]]:
    """Unsorted (time_s, value) samples on a coarse grid, so duplicates happen, with NaN."""
    sample = st.tuples(
        st.integers(0, 60).map(lambda k: k * step_s),
        st.one_of(values, st.just(math.nan)),
    )
    return st.lists(sample, min_size=0, max_size=max_size)


def segmented(rows: list[list[tuple[float, float]]]) -> tuple[np.ndarray, ...]:
    """Flatten per-sensor sample lists into (row, time_s, value) arrays, order kept."""
    row = np.array([r for r, samples in enumerate(rows) for _ in samples], dtype=np.int64)
    time_s = np.array([t for samples in rows for t, _ in samples], dtype=float)
    value = np.array([v for samples in rows for _, v in samples], dtype=float)
    return row, time_s, value


def padded(rows: list[list[tuple[float, float]]]) -> Padded:
    """The padded layout of messy per-sensor samples, as the kernels receive it."""
    row, time_s, value = segmented(rows)
    return to_padded(row, time_s, value, len(rows))
