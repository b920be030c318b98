"""dmriprep_motion: leave-one-volume-out head-motion correction for diffusion MRI."""

from dmriprep_motion.__about__ import __version__

__all__ = ["__version__"]
