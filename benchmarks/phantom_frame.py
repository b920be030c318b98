#!/usr/bin/env python
"""How well do a phantom's b0 and diffusion-weighted images agree on where the head is?

Motion correction estimates every diffusion-weighted volume's position *relative to the b0
reference*, and the only link between the two contrasts is an image registration (or an
assumption about the motion).  A phantom whose b0 and diffusion-weighted maps are not in the same
geometry puts a common offset into every method's errors that no volume-to-volume accuracy can
remove.  This script measures it without motion and without noise: for each phantom it
synthesizes the b0 and the mean of the diffusion-weighted volumes of one shell (everything on
the same grid, ground truth = identity), registers the b0 to that mean with the pipeline's own
shell-anchor preset (rigid, Mattes mutual information, through the ``antsRegistration`` on
PATH), and prints the mean / max displacement over the brain mask and the translation.

    PYTHONPATH=. python benchmarks/phantom_frame.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nibabel as nb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_benchmark import ants_rigid, real_phantom  # noqa: E402


def phantoms(names: list[str]):
    """Yield ``(name, phantom)`` for the requested phantoms."""
    from dmriprep_motion.testing import simulate as sim

    runs = {"ap": ("AP",), "joint": ("AP", "PA")}
    for name in names:
        if name.startswith("real-"):  # real-<runs>[-raw]: -raw keeps the b0 where it was acquired
            kind, _, raw = name[5:].partition("-")
            yield name, real_phantom(runs[kind], align_b0=raw != "raw")
        else:  # mni-<resolution>
            yield name, sim.mni_phantom(resolution=float(name.split("-")[1]))


def frame_offset(phantom, bval: float) -> dict:
    """Register the noise-free b0 to the noise-free mean DWI of one shell; score against identity."""
    from dmriprep_motion.motion import mask_coordinates, transform_errors
    from dmriprep_motion.testing import simulate as sim

    bvals, bvecs = sim.make_scheme(n_b0=1, shells={bval: 30}, seed=0)
    series = sim.simulate_series(
        phantom, bvals=bvals, bvecs_ras=bvecs, params=np.zeros((len(bvals), 6)), snr=None
    )
    dwi = series.data[..., bvals > 0].mean(axis=-1)
    matrix = ants_rigid(series.data[..., 0], dwi, phantom.mask, phantom.affine)
    points = mask_coordinates(nb.Nifti1Image(phantom.mask.astype(np.uint8), phantom.affine))
    errors = transform_errors(matrix[None], np.eye(4)[None], points)
    return {
        "mean": float(errors["mean_disp"][0]),
        "max": float(errors["max_disp"][0]),
        "rot": float(errors["rot_err"][0]),
        "translation": matrix[:3, 3],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--phantoms", nargs="+", default=["real-joint-raw", "real-joint", "mni-3", "mni-2"],
        help="real-ap, real-joint (ds-xa30 AP / AP+PA fits; add -raw to leave the b0 unaligned) "
        "or mni-<resolution in mm>",
    )  # fmt: skip
    parser.add_argument("--bvals", nargs="+", type=float, default=[1000.0, 3000.0])
    opts = parser.parse_args(argv)
    print(f"# phantom b0↔DWI frame check {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| phantom | shell | mean disp (mm) | max disp (mm) | rotation (deg) | translation x, y, z (mm) |")
    print("|---|---|---|---|---|---|")
    for name, phantom in phantoms(opts.phantoms):
        for bval in opts.bvals:
            res = frame_offset(phantom, bval)
            trans = ", ".join(f"{t:+.2f}" for t in res["translation"])
            cells = f"{res['mean']:.3f} | {res['max']:.3f} | {res['rot']:.3f} | {trans}"
            print(f"| {name} | b={bval:.0f} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
