#!/usr/bin/env python
"""How much of a finished run's residual motion a tensor could represent.

A leave-one-out tensor fit (``--model dti``/``dki``) predicts each volume from the others with a
quadratic form of the gradient direction.  A displacement error that varies with the direction as
such a form does is then part of every prediction, and the registrations cannot see it.  For each
run this prints the residual displacement at the brain centroid (estimate against truth, the
mean over the diffusion-weighted volumes removed; RMS over them) and the fraction of its variance
that lies in the span of ``1, gx², gy², gx·gy, gx·gz, gy·gz`` of the head-frame directions
(a least-squares projection; ``gz² = 1 − gx² − gy²``).  By chance a pattern puts about
5 / (N − 1) of its variance there.

    PYTHONPATH=. python benchmarks/tensor_span.py /tmp/bench/runs/real-moderate \\
        --methods dmriprep dmriprep-dti dmriprep-avgdwi
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixed_point import residual_translations  # noqa: E402
from run_benchmark import outputs, separator  # noqa: E402


def tensor_basis(bvecs: np.ndarray) -> np.ndarray:
    """Columns spanning the even functions of degree ≤ 2 on the sphere, at ``bvecs`` (N, 3)."""
    g = np.asarray(bvecs, dtype=float)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    x, y, z = g.T
    return np.column_stack([np.ones(len(g)), x * x, y * y, x * y, x * z, y * z])


def span_fraction(residuals: np.ndarray, bvecs: np.ndarray) -> float:
    """Fraction of the (mean-removed) residuals' variance in the span of :func:`tensor_basis`."""
    centred = residuals - residuals.mean(axis=0)
    basis = tensor_basis(bvecs)
    fitted = basis @ np.linalg.lstsq(basis, centred, rcond=None)[0]
    return float(np.sum(fitted**2) / np.sum(centred**2))


def main(argv: list[str] | None = None) -> None:
    from dmriprep_motion.gradients import shell_labels
    from dmriprep_motion.motion import load_itk_series, mask_coordinates
    from dmriprep_motion.testing.simulate import load_truth

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="scenario folders of run_benchmark.py")
    parser.add_argument("--methods", nargs="+", default=["dmriprep", "dmriprep-dti", "dmriprep-avgdwi"])
    opts = parser.parse_args(argv)
    header = (
        "| scenario | method | residual at the centroid, RMS (mm) | fraction in the tensor span | by chance |"
    )
    print(header, separator(header), sep="\n")
    for run in opts.runs:
        truth = load_truth(run / "bids")
        dwi = np.flatnonzero(shell_labels(truth["bvals"]) > 0)
        centroid = mask_coordinates(truth["mask"]).mean(axis=0)
        bvecs = truth["head_bvecs"][dwi]
        chance = (tensor_basis(bvecs).shape[1] - 1) / (len(dwi) - 1)
        for method in opts.methods:
            xfm = outputs(method, run)["xfm"]
            if not xfm.exists():
                continue
            est = load_itk_series(xfm) if xfm.suffix == ".txt" else np.load(xfm)
            res = residual_translations(est[dwi], truth["xfm"][dwi], centroid)
            rms = np.sqrt(np.mean(np.sum((res - res.mean(axis=0)) ** 2, axis=1)))
            print(f"| {run.name} | {method} | {rms:.3f} | {span_fraction(res, bvecs):.2f} | {chance:.2f} |")


if __name__ == "__main__":
    main()
