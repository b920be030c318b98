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
import tempfile
import time
from pathlib import Path

import nibabel as nb
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DS_XA30 = (ROOT / ".." / "shared" / "data" / "ds-xa30").resolve()
PRESET = ROOT / "dmriprep_motion" / "data" / "antsreg" / "shell_rigid_precise.json"


def phantoms(names: list[str]):
    """Yield ``(name, phantom)`` for the requested phantoms."""
    from dmriprep_motion.testing import simulate as sim

    runs = {"ap": ("AP",), "joint": ("AP", "PA")}
    for name in names:
        if name.startswith("real-"):
            src = [DS_XA30 / "sub-01" / "dwi" / f"sub-01_dir-{pe}_dwi" for pe in runs[name[5:]]]
            files = ([f"{s}.{ext}" for s in src] for ext in ("nii.gz", "bval", "bvec"))
            yield name, sim.real_data_phantom(*files)
        else:  # mni-<resolution>
            yield name, sim.mni_phantom(resolution=float(name.split("-")[1]))


def frame_offset(phantom, bval: float, folder: Path) -> dict:
    """Register the noise-free b0 to the noise-free mean DWI of one shell; score against identity."""
    from nipype.interfaces.ants import Registration

    from dmriprep_motion.motion import load_itk, mask_coordinates, transform_errors
    from dmriprep_motion.testing import simulate as sim

    bvals, bvecs = sim.make_scheme(n_b0=1, shells={bval: 30}, seed=0)
    series = sim.simulate_series(
        phantom, bvals=bvals, bvecs_ras=bvecs, params=np.zeros((len(bvals), 6)), snr=None
    )
    images = {
        "b0": series.data[..., 0],
        "dwi": series.data[..., bvals > 0].mean(axis=-1),
        "mask": phantom.mask.astype(np.uint8),
    }
    for key, data in images.items():
        nb.save(nb.Nifti1Image(data, phantom.affine), folder / f"{key}.nii.gz")
    reg = Registration(from_file=str(PRESET))
    reg.inputs.fixed_image = str(folder / "b0.nii.gz")
    reg.inputs.moving_image = str(folder / "dwi.nii.gz")
    reg.inputs.fixed_image_masks = [str(folder / "mask.nii.gz")]
    reg.inputs.output_transform_prefix = str(folder / "anchor_")
    result = reg.run(cwd=str(folder))
    matrix = load_itk(result.outputs.forward_transforms[-1])
    points = mask_coordinates(nb.load(folder / "mask.nii.gz"))
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
        "--phantoms", nargs="+", default=["real-ap", "real-joint", "mni-3", "mni-2"],
        help="real-ap, real-joint (ds-xa30 AP / AP+PA fits) or mni-<resolution in mm>",
    )  # fmt: skip
    parser.add_argument("--bvals", nargs="+", type=float, default=[1000.0, 3000.0])
    opts = parser.parse_args(argv)
    print(f"# phantom b0↔DWI frame check {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| phantom | shell | mean disp (mm) | max disp (mm) | rotation (deg) | translation x, y, z (mm) |")
    print("|---|---|---|---|---|---|")
    for name, phantom in phantoms(opts.phantoms):
        for bval in opts.bvals:
            with tempfile.TemporaryDirectory() as tmp:
                res = frame_offset(phantom, bval, Path(tmp))
            trans = ", ".join(f"{t:+.2f}" for t in res["translation"])
            cells = f"{res['mean']:.3f} | {res['max']:.3f} | {res['rot']:.3f} | {trans}"
            print(f"| {name} | b={bval:.0f} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
