#!/usr/bin/env python
"""How well do a phantom's b0 and diffusion-weighted images agree on where the head is?

Motion correction estimates every diffusion-weighted volume's position *relative to the b0
reference*, and the only link between the two contrasts is an image registration (or an
assumption about the motion).  A phantom whose b0 and diffusion-weighted maps are not in the same
geometry puts a common offset into every method's errors that no volume-to-volume accuracy can
remove.  This script measures it without motion and without noise: for each phantom it
synthesizes the b0 and the mean of the diffusion-weighted volumes of one shell (everything on
the same grid, ground truth = identity), registers the b0 to that mean with the aligner that
builds the real-data phantom (``run_benchmark.ants_rigid``: rigid, Mattes mutual information,
jittered sampling, median of five seeds, through the ``antsRegistration`` on PATH), and prints
the mean / max displacement over the brain mask and the translation.

``--known-shifts`` checks the instrument itself: on a phantom whose b0 and diffusion-weighted
maps agree by construction (MNI), the diffusion-weighted mean is moved by known sub-voxel
transforms, and the aligner, on the grid and jittered, must find them.

    PYTHONPATH=. python benchmarks/phantom_frame.py
    PYTHONPATH=. python benchmarks/phantom_frame.py --known-shifts --phantoms mni-3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nibabel as nb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_benchmark import ALIGN_SEEDS, DEFAULT_CACHE, ants_rigid, corrected_source, real_phantom  # noqa: E402

#: Known sub-voxel transforms (x, y, z in mm; rotations about x, y, z in degrees, about the brain
#: centroid) for ``--known-shifts``
KNOWN_SHIFTS = (
    (0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    (0.3, 0.0, 0.0, 0.0, 0.0, 0.0),
    (0.0, 0.36, 0.36, 0.0, 0.0, 0.0),
    (0.3, 0.0, 0.0, 0.36, 0.0, 0.0),
    (0.0, 0.0, 0.5, 0.0, 0.3, 0.0),
    (0.15, -0.2, 0.1, 0.2, -0.2, 0.1),
    (-0.4, 0.1, -0.25, 0.0, 0.0, 0.4),
)


def phantoms(names: list[str], cache: Path = DEFAULT_CACHE):
    """Yield ``(name, phantom)`` for the requested phantoms.

    ``real-<runs>[-raw|-corrected]``: ``-raw`` keeps the b0 where it was acquired, ``-corrected``
    fits ds-xa30 as corrected by dmriprep-motion (``run_benchmark.corrected_source``, kept in
    ``cache``); ``mni-<resolution>``.
    """
    from dmriprep_motion.testing import simulate as sim

    runs = {"ap": ("AP",), "joint": ("AP", "PA")}
    for name in names:
        if name.startswith("real-"):
            kind, _, variant = name[5:].partition("-")
            source = corrected_source(cache) if variant == "corrected" else None
            yield name, real_phantom(runs[kind], align_b0=variant != "raw", source=source)
        else:
            yield name, sim.mni_phantom(resolution=float(name.split("-")[1]))


def _noise_free(phantom, bval: float, against: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The noise-free mean of shell ``against`` (0: the b0), mean diffusion-weighted volume of one
    30-direction shell ``bval``, and brain points."""
    from dmriprep_motion.motion import mask_coordinates
    from dmriprep_motion.testing import simulate as sim

    shells = {bval: 30, **({against: 30} if against > 0 else {})}
    bvals, bvecs = sim.make_scheme(n_b0=1, shells=shells, seed=0)
    series = sim.simulate_series(
        phantom, bvals=bvals, bvecs_ras=bvecs, params=np.zeros((len(bvals), 6)), snr=None
    )
    dwi = series.data[..., bvals == bval].mean(axis=-1)
    moving = series.data[..., bvals == against].mean(axis=-1)
    points = mask_coordinates(nb.Nifti1Image(phantom.mask.astype(np.uint8), phantom.affine))
    return moving, dwi, points


def frame_offset(phantom, bval: float, against: float = 0.0) -> dict:
    """Register the noise-free b0 (or mean of shell ``against``) to the noise-free mean DWI of one
    shell; score against identity."""
    from dmriprep_motion.motion import transform_errors

    moving, dwi, points = _noise_free(phantom, bval, against)
    matrix = ants_rigid(dwi, moving, phantom.mask, phantom.affine)
    errors = transform_errors(matrix[None], np.eye(4)[None], points)
    return {
        "mean": float(errors["mean_disp"][0]),
        "max": float(errors["max_disp"][0]),
        "rot": float(errors["rot_err"][0]),
        "translation": matrix[:3, 3],
    }


def known_shift_errors(phantom, bval: float, seeds: tuple[int, ...]) -> list[float]:
    """Mean displacement error (mm) of ``ants_rigid(seeds=seeds)`` for each of ``KNOWN_SHIFTS``."""
    from dmriprep_motion.motion import resample_volume, transform_errors
    from dmriprep_motion.testing import simulate as sim

    b0, dwi, points = _noise_free(phantom, bval)
    params = np.array(KNOWN_SHIFTS, dtype=float)
    params[:, 3:] = np.deg2rad(params[:, 3:])
    errors = []
    for known in sim.motion_about_center(params, points.mean(axis=0)):
        moved = resample_volume(dwi, phantom.affine, known, phantom.affine, phantom.shape)
        found = ants_rigid(moved, b0, phantom.mask, phantom.affine, seeds=seeds)
        residual = np.linalg.inv(known) @ found
        errors.append(float(transform_errors(residual[None], np.eye(4)[None], points)["mean_disp"][0]))
    return errors


def _print_known_shifts(opts) -> None:
    shifts = " / ".join(",".join(f"{v:g}" for v in shift) for shift in KNOWN_SHIFTS)
    print(f"known shifts (x,y,z mm, rx,ry,rz deg): {shifts}")
    print("| phantom | shell | aligner | error for each known shift (mm) | mean | max |")
    print("|---|---|---|---|---|---|")
    aligners = {"on the grid": (), f"jittered, median of {len(ALIGN_SEEDS)} seeds": ALIGN_SEEDS}
    for name, phantom in phantoms(opts.phantoms, opts.cache_dir):
        for bval in opts.bvals:
            for label, seeds in aligners.items():
                errs = known_shift_errors(phantom, bval, seeds)
                cells = " / ".join(f"{e:.3f}" for e in errs)
                summary = f"{np.mean(errs):.3f} | {max(errs):.3f}"
                print(f"| {name} | b={bval:.0f} | {label} | {cells} | {summary} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--phantoms", nargs="+", default=["real-joint-raw", "real-joint", "mni-3", "mni-2"],
        help="real-ap, real-joint (ds-xa30 AP / AP+PA fits; add -raw to leave the b0 unaligned, "
        "-corrected to fit ds-xa30 as corrected by dmriprep-motion) or mni-<resolution in mm>",
    )  # fmt: skip
    parser.add_argument("--bvals", nargs="+", type=float, default=[1000.0, 3000.0])
    parser.add_argument(
        "--known-shifts", action="store_true",
        help="score the aligner (on the grid and jittered) against known sub-voxel shifts instead",
    )  # fmt: skip
    parser.add_argument(
        "--against", type=float, default=0.0,
        help="register the mean of this shell instead of the b0 (0) to each shell of --bvals",
    )  # fmt: skip
    parser.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE,
        help="where the real-*-corrected phantoms keep ds-xa30 as corrected by dmriprep-motion",
    )  # fmt: skip
    opts = parser.parse_args(argv)
    if opts.known_shifts:
        _print_known_shifts(opts)
        return 0
    print(f"# phantom b0↔DWI frame check {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| phantom | shell | mean disp (mm) | max disp (mm) | rotation (deg) | translation x, y, z (mm) |")
    print("|---|---|---|---|---|---|")
    for name, phantom in phantoms(opts.phantoms, opts.cache_dir):
        for bval in opts.bvals:
            res = frame_offset(phantom, bval, opts.against)
            trans = ", ".join(f"{t:+.2f}" for t in res["translation"])
            cells = f"{res['mean']:.3f} | {res['max']:.3f} | {res['rot']:.3f} | {trans}"
            shell = f"b={bval:.0f}" + (f" vs b={opts.against:.0f}" if opts.against else "")
            print(f"| {name} | {shell} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
