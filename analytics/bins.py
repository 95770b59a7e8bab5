"""Waste-bin indicators from ultrasonic distance readings."""

from __future__ import annotations

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
