"""How many voxels a registration samples (pure Python, no Nipype).

The packaged ANTs presets sample a fixed share of the voxels (``Regular`` sampling; the
volume-to-prediction ones 40%, 25% with ``--sloppy``).  ANTs' regular sampler keeps one voxel
in every ``ceil(1 / p)`` of the registration's grid (each nudged at random within its voxel)
and drops those outside the fixed mask, so the metric's cost grows with the number of voxels
in the brain: a 2 mm series has about 3.4 times the brain voxels of a 3 mm one, a 1.25 mm
series about 14 times.  The precision of a mutual-information estimate depends on the number
of samples, not on the size of the grid.  :func:`capped_percentage` keeps the preset's share
on small grids and caps the samples on large ones (``benchmarks/README.md``, "Samples per
registration on fine grids").
"""

from __future__ import annotations

import math

#: Most brain-mask voxels a volume-to-prediction registration samples with the packaged
#: precise presets (a 3 mm series samples fewer: its preset's share is below this).
MAX_SAMPLES = 60_000
#: The same cap with ``--sloppy``.
MAX_SAMPLES_SLOPPY = 30_000
#: The b0-to-b0 registrations run before the brain mask exists (it is computed on their
#: average), so they sample the whole grid: at most this many points, about as many in the head
#: as the cap above (41% of the cropped 2 mm MNI grid is in the dilated brain mask).
B0_MAX_SAMPLES = 120_000
#: The same cap with ``--sloppy``.
B0_MAX_SAMPLES_SLOPPY = 60_000


def packaged_max_samples(*, sloppy: bool, custom_settings: bool = False, b0: bool = False) -> int:
    """The cap of the packaged presets (``--sloppy``'s with ``sloppy``; the b0-to-b0 ones' with
    ``b0``); ``0`` (no cap) for a user's own ANTs settings (``--registration-config``), which are
    run as given."""
    if custom_settings:
        return 0
    if b0:
        return B0_MAX_SAMPLES_SLOPPY if sloppy else B0_MAX_SAMPLES
    return MAX_SAMPLES_SLOPPY if sloppy else MAX_SAMPLES


def regular_step(percentage: float) -> int:
    """One voxel in how many ANTs' ``Regular`` sampling keeps for ``percentage`` (0–1]."""
    if not 0 < percentage <= 1:
        raise ValueError(f"sampling percentage must be in (0, 1] (got {percentage})")
    return math.ceil(1.0 / percentage)


def capped_percentage(percentage: float, n_voxels: int, max_samples: int) -> float:
    """The sampling percentage that keeps at most about ``max_samples`` of ``n_voxels``.

    Parameters
    ----------
    percentage : float
        The preset's sampling percentage (0–1].
    n_voxels : int
        Voxels in the registration mask (on the full-resolution grid), or in the whole grid
        for a registration without a mask.
    max_samples : int
        Most samples wanted; ``0`` keeps ``percentage``.

    Returns
    -------
    float
        ``percentage`` itself when it samples at most ``max_samples`` voxels (so the ANTs
        command is unchanged); otherwise ``1 / (k - 0.5)`` for the smallest step ``k``
        keeping at most ``max_samples``, which ANTs reads as one voxel in ``k`` (a plain
        ``1 / k`` may be read back as ``k + 1`` through rounding).
    """
    step = regular_step(percentage)
    if max_samples <= 0 or n_voxels <= max_samples * step:
        return percentage
    capped = math.ceil(n_voxels / max_samples)
    return 1.0 / (capped - 0.5)
