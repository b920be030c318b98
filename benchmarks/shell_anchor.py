#!/usr/bin/env python
"""How the shells of a finished run are tied to the b0: the anchor's variants, offline.

The shell anchor is the last estimation step (after the last pass), so a finished ``dmriprep``
run of ``run_benchmark.py`` can be re-anchored exactly: this script reads the last pass's
transforms, the shell means and the b0 reference from the run's work directory, registers them
again with the anchor's preset (``run_benchmark.ants_rigid``: on the grid as packaged, or
jittered, median of five seeds) and scores each variant against the truth:

``median above b=1500``
    ``--anchor auto`` before 2026-12-04: shells above b=1500 set their median motion to zero.
``chain``
    ``--anchor auto`` since: each shell above b=1500 registered to the next lower shell's mean,
    its correction composed with that shell's (what the run itself did, on the grid).
``to the lowest shell``
    each shell above b=1500 registered to the lowest shell's mean instead.

The lowest shell is registered to the b0 reference in every variant (on the grid, or jittered
with the jittered variants).  Prints the median mean-displacement error and each shell's common
offset (mm).

    PYTHONPATH=. python benchmarks/shell_anchor.py /tmp/bench/real-multishell /tmp/bench/mni-multishell
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models_and_passes import pass_transform  # noqa: E402
from presets import _workflow_dir  # noqa: E402
from run_benchmark import ALIGN_SEEDS, ants_rigid, outputs, score  # noqa: E402


def _load(path: Path) -> np.ndarray:
    return np.asanyarray(nb.load(path).dataobj, dtype=np.float32)


def _last_pass(wf: Path) -> int:
    return max(int(p.name[8:10]) for p in wf.glob("hmc_pass*_wf"))


def anchor_variants(run: Path) -> dict:
    """The last pass's transforms (``last``), shell labels (``labels``) and, per variant, the
    correction of each shell (``variants``: name -> {label: 4x4}) of the run in folder ``run``."""
    from nipype.utils.filemanip import loadpkl

    from dmriprep_motion.gradients import shell_bvalues, shell_labels
    from dmriprep_motion.interfaces.transforms import _median_correction, anchor_targets

    wf = _workflow_dir(run)
    means_dir = wf / "shell_anchor_wf" / "shell_means"
    reference = _load(loadpkl(means_dir / "_inputs.pklz")["in_reference"])
    mask_img = nb.load(wf / "dwi_reference_wf" / "mask" / "brain_mask.nii.gz")
    mask, affine = np.asanyarray(mask_img.dataobj) > 0, mask_img.affine
    bvals = np.loadtxt(run / "bids" / "sub-01" / "dwi" / "sub-01_dwi.bval")
    labels = shell_labels(bvals)
    last = np.load(pass_transform(wf, _last_pass(wf)))
    shells = range(1, labels.max() + 1)
    means = {label: _load(means_dir / f"shell{label:02d}_mean.nii") for label in shells}
    targets = anchor_targets(shell_bvalues(bvals), "auto")
    high = [label for label, target in zip(shells, targets, strict=True) if target]  # chained ones
    median = {label: _median_correction(last[labels == label], "Rigid") for label in high}
    variants = {}
    for tag, seeds in (("grid", ()), ("jittered", ALIGN_SEEDS)):
        lowest = ants_rigid(reference, means[1], mask, affine, seeds=seeds)
        variants[f"median above b=1500 ({tag})"] = {1: lowest, **median}
        chain, direct = {1: lowest}, {1: lowest}
        for label in high:
            chain[label] = (
                ants_rigid(means[label - 1], means[label], mask, affine, seeds=seeds) @ chain[label - 1]
            )
            direct[label] = ants_rigid(means[1], means[label], mask, affine, seeds=seeds) @ lowest
        variants[f"chain ({tag})"] = chain
        variants[f"to the lowest shell ({tag})"] = direct
    return {"last": last, "labels": labels, "variants": variants}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "runs", nargs="+", type=Path, help="scenario folders of run_benchmark.py (--work/<scenario>)"
    )
    opts = parser.parse_args(argv)
    print("| scenario | anchor | median (mm) | common offset of each shell (mm) |")
    print("|---|---|---|---|")
    for run in opts.runs:
        found = anchor_variants(run)
        last, labels = found["last"], found["labels"]
        result = outputs("dmriprep", run)
        for name, corrections in found["variants"].items():
            est = last.copy()
            for label, correction in corrections.items():
                est[labels == label] = last[labels == label] @ correction
            acc = score(run / "bids", {**result, "xfm": est})
            offsets = " / ".join(
                f"{v:.3f}" for k, v in sorted(acc["group_offsets_disp"].items()) if str(k) != "0"
            )
            print(f"| {run.name} | {name} | {acc['median_mean_disp']:.3f} | {offsets} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
