"""``dmriprep-motion demo <out_dir>``: simulate a dataset with known motion, correct it, score it.

The default dataset is a whole-brain phantom built from the MNI152 maps bundled with nilearn
(no download), with 1 b0 + 30 directions at b=1000, moderate random motion (≤ 2 mm / 2°) and
Rician noise at SNR 30.  See :mod:`dmriprep_motion.testing.simulate`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

LOGGER = logging.getLogger("dmriprep_motion")


def build_parser() -> argparse.ArgumentParser:
    """Command-line parser of the demo."""
    from dmriprep_motion.testing.simulate import PATTERNS

    parser = argparse.ArgumentParser(
        prog="dmriprep-motion demo",
        description="Simulate a DWI dataset with known head motion (MNI152 phantom from nilearn), "
        "correct it with dmriprep-motion and report the accuracy against the ground truth.",
    )
    parser.add_argument("out_dir", type=Path, help="output folder (bids/, out/, work/, accuracy.json)")
    parser.add_argument("--n-volumes", type=int, default=31, help="volumes, b0s included (default 31)")
    parser.add_argument("--n-b0", type=int, default=1, help="b0 volumes (default 1)")
    parser.add_argument("--bval", type=float, default=1000.0, help="b-value of the shell (default 1000)")
    parser.add_argument("--snr", type=float, default=30.0, help="b0 SNR in the brain (default 30)")
    parser.add_argument("--pattern", choices=PATTERNS, default="moderate", help="motion (default moderate)")
    parser.add_argument("--resolution", type=float, default=3.0, help="phantom voxel size, mm (default 3)")
    parser.add_argument("--model", default="auto", help="signal model passed to dmriprep-motion")
    parser.add_argument("--passes", type=int, default=None, help="estimation passes (default: the app's)")
    parser.add_argument(
        "--anchor", default=None, help="how shells are tied to the b0 reference (default: the app's)"
    )
    parser.add_argument("--nprocs", type=int, default=2, help="parallel processes (default 2)")
    parser.add_argument("--sloppy", action="store_true", help="fast, less accurate registration")
    parser.add_argument("--seed", type=int, default=42, help="seed of the simulation and of ANTs")
    return parser


def simulate_demo(opts: argparse.Namespace) -> Path:
    """Simulate the demo dataset into ``<out_dir>/bids``; return the BIDS folder."""
    from dmriprep_motion.testing.simulate import (
        make_scheme,
        mni_phantom,
        motion_pattern,
        simulate_series,
        write_bids,
    )

    n_dirs = opts.n_volumes - opts.n_b0
    if opts.n_b0 < 1 or n_dirs < 6:
        raise ValueError("the demo needs at least 1 b0 and 6 diffusion-weighted volumes")
    phantom = mni_phantom(resolution=opts.resolution)
    bvals, bvecs = make_scheme(n_b0=opts.n_b0, shells={opts.bval: n_dirs}, seed=opts.seed)
    params = motion_pattern(opts.pattern, len(bvals), seed=opts.seed)
    series = simulate_series(
        phantom, bvals=bvals, bvecs_ras=bvecs, params=params, snr=opts.snr, seed=opts.seed
    )
    bids = opts.out_dir / "bids"
    write_bids(series, bids, name="dmriprep-motion demo")
    LOGGER.info(
        "simulated %s: %d volumes, grid %s, pattern %s (max %.2f mm / %.2f deg), SNR %g",
        phantom.description,
        len(bvals),
        "x".join(map(str, phantom.shape)),
        opts.pattern,
        np.abs(params[:, :3]).max(),
        np.degrees(np.abs(params[:, 3:]).max()),
        opts.snr,
    )
    return bids


def score(bids: Path, out: Path, subject: str = "01") -> dict:
    """Accuracy of the derivatives in ``out`` against the truth stored in ``bids``."""

    from dmriprep_motion.gradients import read_bvecs
    from dmriprep_motion.motion import load_itk_series, mask_coordinates
    from dmriprep_motion.testing.metrics import accuracy
    from dmriprep_motion.testing.simulate import load_truth

    truth = load_truth(bids, subject=subject)
    folder = out / f"sub-{subject}" / "dwi"
    stem = truth["stem"]
    est = load_itk_series(folder / f"{stem}_from-orig_to-dwiref_mode-image_desc-hmc_xfm.txt")
    est_bvecs = read_bvecs(folder / f"{stem}_desc-preproc_dwi.bvec")
    mask = truth["mask"]
    return accuracy(
        est,
        truth["xfm"],
        mask_coordinates(mask),
        est_bvecs=est_bvecs,
        true_bvecs=truth["head_bvecs"],
        affine=mask.affine,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return an exit code (0 on success)."""
    opts = build_parser().parse_args(argv)
    if not LOGGER.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s [dmriprep-motion demo] %(message)s", "%H:%M:%S"))
        LOGGER.addHandler(handler)
        LOGGER.setLevel(logging.INFO)
    opts.out_dir = opts.out_dir.expanduser().absolute()
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        bids = simulate_demo(opts)
    except ValueError as err:
        LOGGER.error("%s", err)
        return 64
    from dmriprep_motion.cli.run import run

    args = [str(bids), str(opts.out_dir / "out"), "participant", "-w", str(opts.out_dir / "work")]
    args += ["--nprocs", str(opts.nprocs), "--seed", str(opts.seed), "--model", opts.model]
    args += ["--skip-bids-validation"] + (["--sloppy"] if opts.sloppy else [])
    args += ["--passes", str(opts.passes)] if opts.passes else []
    args += ["--anchor", opts.anchor] if opts.anchor else []
    t_run = time.monotonic()
    code = run(args)
    wall = time.monotonic() - t_run
    if code != 0:
        LOGGER.error("dmriprep-motion failed (exit code %d)", code)
        return code
    result = score(bids, opts.out_dir / "out")
    summary = {k: v for k, v in result.items() if k != "per_volume"}
    summary["per_volume_mean_disp"] = [round(float(v), 4) for v in result["per_volume"]["mean_disp"]]
    summary.update(wall_time_s=round(wall, 1), total_time_s=round(time.monotonic() - start, 1))
    (opts.out_dir / "accuracy.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "dmriprep-motion demo: accuracy against the injected ground truth "
        f"({result['n_volumes']} moved volumes)",
        f"  mean displacement error (brain): median {result['median_mean_disp']:.3f} mm, "
        f"max {result['max_mean_disp']:.3f} mm, RMSE {result['rmse_mean_disp']:.3f} mm",
        f"  max displacement error (brain):  max {result['max_max_disp']:.3f} mm",
        f"  rotation error:                  median {result['median_rot_err']:.3f} deg, "
        f"RMSE {result['rmse_rot_err']:.3f} deg",
        f"  translation error (centroid):    median {result['median_trans_err']:.3f} mm",
        f"  b-vector angular error:          median {result['median_bvec_err']:.3f} deg, "
        f"max {result['max_bvec_err']:.3f} deg",
        f"  wall time of the correction:     {wall:.1f} s; details in {opts.out_dir / 'accuracy.json'}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
