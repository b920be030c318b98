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


def registration_preset(target: str, transform: str, sloppy: bool) -> Path:
    """ANTs settings for ``target`` (``dwi`` or ``b0``), ``Rigid``/``Affine``, precise or sloppy."""
    quality = "sloppy" if sloppy else "precise"
    return load(f"antsreg/{target}_{transform.lower()}_{quality}.json")
