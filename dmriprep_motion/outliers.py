"""Outlier volumes from their similarity to the prediction (pure NumPy)."""

from __future__ import annotations

import numpy as np

#: Smallest robust scale of similarities (correlations), so that nearly identical
#: values do not turn tiny differences into large z-scores.
MIN_SCALE = 0.005
#: Groups (shells) with fewer volumes are too small to judge.
MIN_GROUP = 4


def robust_location(
    values: np.ndarray, groups: np.ndarray, min_group: int = MIN_GROUP
) -> tuple[np.ndarray, np.ndarray]:
    """Per-value median and robust scale (1.4826·MAD, at least :data:`MIN_SCALE`) of its group.

    Non-finite values are ignored; groups with fewer than ``min_group`` finite
    members get NaN (too few to judge).
    """
    values = np.asarray(values, dtype=float)
    groups = np.asarray(groups)
    centre = np.full(values.shape, np.nan)
    scale = np.full(values.shape, np.nan)
    for group in np.unique(groups):
        members = groups == group
        finite = values[members & np.isfinite(values)]
        if finite.size < min_group:
            continue
        centre[members] = np.median(finite)
        scale[members] = max(1.4826 * np.median(np.abs(finite - centre[members][0])), MIN_SCALE)
    return centre, scale


def robust_z(values: np.ndarray, groups: np.ndarray, min_group: int = MIN_GROUP) -> np.ndarray:
    """Robust z-score of each value within its group (see :func:`robust_location`).

    Values in groups too small to judge, and non-finite values, get 0.
    """
    values = np.asarray(values, dtype=float)
    centre, scale = robust_location(values, groups, min_group)
    z = (values - centre) / scale
    return np.where(np.isfinite(z), z, 0.0)


def flag_outliers(similarity: np.ndarray, shells: np.ndarray, threshold: float) -> np.ndarray:
    """Volumes whose similarity is abnormally low for their shell (``z < -threshold``)."""
    if threshold <= 0:
        return np.zeros(len(similarity), dtype=bool)
    return robust_z(similarity, shells) < -threshold
