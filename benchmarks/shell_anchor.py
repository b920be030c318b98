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

With ``--lowest``, the variants are instead ways of registering the lowest shell to the b0
reference (on the grid; higher shells keep the last pass's transforms), each against the
packaged one (benchmarks/README.md, "Two anchors that average registrations"):

``bagged, octants``
    the shell mean registered eight times, each time within the brain mask less one of its
    octants (split at the mask's centroid); the rigid mean and the median of the eight.
``bagged, blocks``
    the same within eight random halves of the mask, drawn in blocks of 4 voxels a side.
``per volume``
    every volume of the shell, as the last pass resampled it, registered to the b0 reference;
    the rigid mean and the median of the corrections.

    PYTHONPATH=. python benchmarks/shell_anchor.py /tmp/bench/real-multishell /tmp/bench/mni-multishell
    PYTHONPATH=. python benchmarks/shell_anchor.py --lowest /tmp/bench/real-moderate
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
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


def _anchor_inputs(run: Path) -> tuple:
    """What the shell anchor of the run in folder ``run`` started from: the folder of its shell
    means, the b0 reference, the brain mask and its affine, the b-values, their shell labels
    and the last pass's transforms."""
    from nipype.utils.filemanip import loadpkl

    from dmriprep_motion.gradients import shell_labels

    wf = _workflow_dir(run)
    means_dir = wf / "shell_anchor_wf" / "shell_means"
    reference = _load(loadpkl(means_dir / "_inputs.pklz")["in_reference"])
    mask_img = nb.load(wf / "dwi_reference_wf" / "mask" / "brain_mask.nii.gz")
    bvals = np.loadtxt(run / "bids" / "sub-01" / "dwi" / "sub-01_dwi.bval")
    last = np.load(pass_transform(wf, _last_pass(wf)))
    mask = np.asanyarray(mask_img.dataobj) > 0
    return means_dir, reference, mask, mask_img.affine, bvals, shell_labels(bvals), last


def octant_masks(mask: np.ndarray) -> Iterator[np.ndarray]:
    """``mask`` less each of its eight octants in turn (split at the centroid of its voxels)."""
    ijk = np.argwhere(mask)
    upper = ijk >= ijk.mean(axis=0)
    for octant in range(8):
        bits = np.array([(octant >> axis) & 1 for axis in range(3)], dtype=bool)
        inside = (upper == bits).all(axis=1)
        subset = mask.copy()
        subset[tuple(ijk[inside].T)] = False
        yield subset


def block_masks(mask: np.ndarray, *, draws: int = 8, block: int = 4, seed: int = 0) -> Iterator[np.ndarray]:
    """``draws`` random halves of ``mask``, each keeping blocks of ``block`` voxels a side."""
    rng = np.random.default_rng(seed)
    blocks = tuple(-(-n // block) for n in mask.shape)
    for _ in range(draws):
        keep = np.kron(rng.random(blocks) < 0.5, np.ones((block,) * 3, dtype=bool))
        yield mask & keep[tuple(slice(n) for n in mask.shape)]


def rigid_summaries(matrices: np.ndarray) -> dict[str, np.ndarray]:
    """The rigid mean and median (of the six parameters) of several corrections."""
    from dmriprep_motion.motion import matrix_from_params, motion_parameters

    params = motion_parameters(np.asarray(matrices))
    return {
        "mean": matrix_from_params(params.mean(axis=0)),
        "median": matrix_from_params(np.median(params, axis=0)),
    }


def lowest_shell_variants(run: Path) -> dict:
    """The last pass's transforms, shell labels and the corrections of the lowest shell (label 1)
    by the packaged registration and the ``--lowest`` variants of the run in folder ``run``."""
    means_dir, reference, mask, affine, _, labels, last = _anchor_inputs(run)
    mean = _load(means_dir / "shell01_mean.nii")
    variants = {"packaged (grid)": {1: ants_rigid(reference, mean, mask, affine, seeds=())}}
    for tag, subsets in (("octants", octant_masks(mask)), ("blocks", block_masks(mask))):
        found = np.stack([ants_rigid(reference, mean, subset, affine, seeds=()) for subset in subsets])
        for how, correction in rigid_summaries(found).items():
            variants[f"bagged, {tag}, {how}"] = {1: correction}
    series = _load(means_dir / "series.nii")
    found = np.stack(
        [ants_rigid(reference, series[..., i], mask, affine, seeds=()) for i in np.flatnonzero(labels == 1)]
    )
    for how, correction in rigid_summaries(found).items():
        variants[f"per volume, {how}"] = {1: correction}
    return {"last": last, "labels": labels, "variants": variants}


def anchor_variants(run: Path) -> dict:
    """The last pass's transforms (``last``), shell labels (``labels``) and, per variant, the
    correction of each shell (``variants``: name -> {label: 4x4}) of the run in folder ``run``."""
    from dmriprep_motion.gradients import shell_bvalues
    from dmriprep_motion.interfaces.transforms import _median_correction, anchor_targets

    means_dir, reference, mask, affine, bvals, labels, last = _anchor_inputs(run)
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
    parser.add_argument(
        "--lowest", action="store_true", help="variants of the lowest shell's registration to the b0"
    )
    opts = parser.parse_args(argv)
    print("| scenario | anchor | median (mm) | common offset of each shell (mm) |")
    print("|---|---|---|---|")
    for run in opts.runs:
        found = lowest_shell_variants(run) if opts.lowest else anchor_variants(run)
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
