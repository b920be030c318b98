"""Outlier volumes from their similarity to the prediction (pure NumPy)."""

from __future__ import annotations

import numpy as np

#: Smallest robust scale of similarities (correlations), so that nearly identical
#: values do not turn tiny differences into large z-scores.
MIN_SCALE = 0.005


def robust_z(values: np.ndarray, groups: np.ndarray, min_group: int = 4) -> np.ndarray:
    """Robust z-score of each value within its group (median and 1.4826·MAD).

    Groups with fewer than ``min_group`` members get 0 (too few to judge).
    """
    values = np.asarray(values, dtype=float)
    groups = np.asarray(groups)
    out = np.zeros_like(values)
    for group in np.unique(groups):
        sel = (groups == group) & np.isfinite(values)
        if sel.sum() < min_group:
            continue
        centre = np.median(values[sel])
        scale = max(1.4826 * np.median(np.abs(values[sel] - centre)), MIN_SCALE)
        out[sel] = (values[sel] - centre) / scale
    return out


def flag_outliers(similarity: np.ndarray, shells: np.ndarray, threshold: float) -> np.ndarray:
    """Volumes whose similarity is abnormally low for their shell (``z < -threshold``)."""
    if threshold <= 0:
        return np.zeros(len(similarity), dtype=bool)
    return robust_z(similarity, shells) < -threshold
