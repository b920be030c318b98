"""Package data: ANTs registration presets, Nipype configuration, report specs."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def load(name: str) -> Path:
    """Absolute path of a file shipped in ``dmriprep_motion/data``."""
    path = Path(str(files(__name__).joinpath(name)))
    if not path.exists():
        raise FileNotFoundError(f"package data file not found: {name}")
    return path


def registration_preset(target: str, transform: str, sloppy: bool, *, refine: bool = False) -> Path:
    """ANTs settings for ``target`` (``dwi``, ``b0`` or ``shell``), ``Rigid``/``Affine``.

    ``sloppy`` selects the fast presets.  ``refine`` (``dwi`` only) selects the settings of
    the passes after the first: they start from the previous pass's transform, a fraction of
    a millimetre from the answer, so they skip the coarse, smoothed levels and register at
    full resolution only, with the same metric and sampling.  The sloppy presets have the
    same levels as the precise ones, with fewer samples (25% instead of 40% of the voxels)
    and, in the later passes, fewer iterations.
    """
    quality = ("sloppy_refine" if sloppy else "refine") if refine else ("sloppy" if sloppy else "precise")
    return load(f"antsreg/{target}_{transform.lower()}_{quality}.json")
