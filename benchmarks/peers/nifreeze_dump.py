"""Dump NiFreeze's estimated motion from its HDF5 output; runs inside the NiFreeze peer venv.

Usage: python nifreeze_dump.py <result.h5> <bval> <out_prefix>

NiFreeze removes the b0 volumes from the series and estimates one affine per diffusion-weighted
volume (``motion_affines``, RAS+ reference -> volume, the convention of NiTransforms'
``LinearTransformsMapping`` used by its own resampling).  b0 volumes get the identity (they are
not realigned).  NiFreeze does not write rotated b-vectors, so none are dumped.
"""

import sys

import numpy as np
from nifreeze.data import load


def main(h5, bval, prefix):
    data = load(h5)
    bvals = np.loadtxt(bval).ravel()
    dw = bvals > 50
    out = np.tile(np.eye(4), (bvals.size, 1, 1))
    if data.motion_affines is not None:
        out[dw] = np.asarray(data.motion_affines)
    np.save(f"{prefix}_xfm.npy", out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
