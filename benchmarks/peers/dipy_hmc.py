"""Run DIPY's ``motion_correction`` (dipy.align) on one series; runs inside the DIPY peer venv.

Usage: python dipy_hmc.py <dwi.nii.gz> <bval> <bvec> <out_prefix>

Writes ``<out_prefix>_xfm.npy``: (N, 4, 4) RAS+ transforms reference (volume 0) -> volume, as
DIPY's AffineMap convention (static world -> moving world); DIPY does not rotate b-vectors, so
``<out_prefix>.bvec`` is the input table unchanged.
"""

import shutil
import sys

import nibabel as nb
import numpy as np
from dipy.align import motion_correction
from dipy.core.gradients import gradient_table
from dipy.io.gradients import read_bvals_bvecs


def main(dwi, bval, bvec, prefix):
    img = nb.load(dwi)
    bvals, bvecs = read_bvals_bvecs(bval, bvec)
    gtab = gradient_table(bvals, bvecs=bvecs, b0_threshold=50)
    _, affines = motion_correction(img, gtab, b0_ref=0)
    np.save(f"{prefix}_xfm.npy", np.moveaxis(np.asarray(affines), -1, 0))
    shutil.copy(bvec, f"{prefix}.bvec")


if __name__ == "__main__":
    main(*sys.argv[1:5])
