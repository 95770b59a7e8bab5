"""Which bins to empty on a collection day: predicted fill at the next opportunity.

Pure array functions. Inputs are per bin: the current fill (percent), the fill rate (percent
per hour, from analytics/bins.py or any other estimator), and the hours until the collection
round and until the opportunity after it. A bin is collected today when, if left, it would
reach `threshold_pct` before the next opportunity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Priority 1 is the most urgent.
PRIORITY_FULL_NOW = 1  # at or above 100 % already (or will be before today's round)
PRIORITY_FULL_BEFORE_NEXT = 2  # reaches 100 % before the next opportunity
PRIORITY_THRESHOLD_BEFORE_NEXT = 3  # reaches the threshold, not 100 %, before the next
PRIORITY_NOT_NEEDED = 0

REASON_FULL_NOW = "full_now"
REASON_FULL_BEFORE_NEXT = "full_before_next_opportunity"
REASON_THRESHOLD_BEFORE_NEXT = "above_threshold_before_next_opportunity"
REASON_NOT_NEEDED = "not_needed"
REASON_NO_DATA = "no_data"


@dataclass(frozen=True)
class CollectionDecision:
    """Per-bin arrays, all of the input's length.

    predicted_fill_pct: fill expected at today's round (clipped to 100).
    fill_at_next_opportunity_pct: fill expected at the next opportunity if not emptied today
        (unclipped, so 130 means it overflowed).
    hours_to_full_h: hours from now until 100 % (0 if full, inf if not filling).
    priority: PRIORITY_* codes; collect: the bins to empty today; reason: REASON_* strings.
    """

    predicted_fill_pct: np.ndarray
    fill_at_next_opportunity_pct: np.ndarray
    hours_to_full_h: np.ndarray
    priority: np.ndarray
    collect: np.ndarray
    reason: np.ndarray


def select_bins_to_collect(
    fill_pct: np.ndarray,
    fill_rate_pct_per_h: np.ndarray,
    hours_until_round_h: float,
    hours_until_next_opportunity_h: float,
    threshold_pct: float = 90.0,
) -> CollectionDecision:
    """Decide per bin whether today's round must empty it, with priority and reason.

    `hours_until_round_h` is from the fill reading time to today's round;
    `hours_until_next_opportunity_h` to the round after it (both in hours, the second larger).
    Negative fill rates (compaction, evaporation, noise) count as zero. Bins with NaN fill
    are not collected and get reason "no_data", so a silent sensor is visible in the list.
    """
    fill = np.asarray(fill_pct, dtype=float)
    rate = np.clip(np.nan_to_num(np.asarray(fill_rate_pct_per_h, dtype=float)), 0.0, None)
    if fill.shape != rate.shape:
        raise ValueError("fill_pct and fill_rate_pct_per_h must have the same shape")
    if not 0 < threshold_pct <= 100:
        raise ValueError("threshold_pct must be in (0, 100]")
    if hours_until_next_opportunity_h <= hours_until_round_h or hours_until_round_h < 0:
        raise ValueError("need 0 <= hours_until_round_h < hours_until_next_opportunity_h")

    at_round = fill + rate * hours_until_round_h
    at_next = fill + rate * hours_until_next_opportunity_h
    with np.errstate(divide="ignore", invalid="ignore"):
        hours_to_full = np.where(
            fill >= 100.0, 0.0, np.where(rate > 0, (100.0 - fill) / rate, np.inf)
        )
    has_data = ~np.isnan(fill)

    full_now = has_data & (at_round >= 100.0)
    full_next = has_data & ~full_now & (at_next >= 100.0)
    threshold_next = has_data & ~full_now & ~full_next & (at_next >= threshold_pct)

    priority = np.select(
        [full_now, full_next, threshold_next],
        [PRIORITY_FULL_NOW, PRIORITY_FULL_BEFORE_NEXT, PRIORITY_THRESHOLD_BEFORE_NEXT],
        PRIORITY_NOT_NEEDED,
    ).astype(np.int8)
    reason = np.select(
        [~has_data, full_now, full_next, threshold_next],
        [REASON_NO_DATA, REASON_FULL_NOW, REASON_FULL_BEFORE_NEXT, REASON_THRESHOLD_BEFORE_NEXT],
        REASON_NOT_NEEDED,
    )
    return CollectionDecision(
        predicted_fill_pct=np.clip(at_round, 0.0, 100.0),
        fill_at_next_opportunity_pct=at_next,
        hours_to_full_h=hours_to_full,
        priority=priority,
        collect=priority > PRIORITY_NOT_NEEDED,
        reason=reason,
    )


def pickup_volume_l(predicted_fill_pct: np.ndarray, bin_volume_l: np.ndarray) -> np.ndarray:
    """Litres of loose waste picked up from each bin at its predicted fill (NaN counts as 0)."""
    fill = np.nan_to_num(np.asarray(predicted_fill_pct, dtype=float))
    return np.clip(fill, 0.0, 100.0) / 100.0 * np.asarray(bin_volume_l, dtype=float)


def collection_order(decision: CollectionDecision) -> np.ndarray:
    """Indices of the bins to collect, most urgent first (priority, then hours to full)."""
    idx = np.flatnonzero(decision.collect)
    keys = (decision.hours_to_full_h[idx], decision.priority[idx])
    return idx[np.lexsort(keys)]
