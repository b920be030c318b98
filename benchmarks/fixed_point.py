#!/usr/bin/env python
"""Where the within-shell error of the passes comes from: the passes as a fixed-point iteration.

Each pass registers every diffusion-weighted volume to its leave-one-out prediction, which is
built from the *other* volumes as the previous pass placed them.  An error shared by a volume and
its neighbours on the sphere (a displacement that varies smoothly with the gradient direction)
is therefore in the prediction too, and the registration cannot see it.  This script measures
that on a finished ``dmriprep`` run of ``run_benchmark.py``, re-executing the run's own
resampling, prediction and registration steps outside Nipype with one thing changed:

``--oracle``
    Predictions from the series aligned with the **true** motion; each volume is registered from
    the run's own starting transform of its last pass.  The error left is what one registration
    to a prediction costs when the neighbours are where they should be.
``--continue N``
    ``N`` more passes from the run's first pass, with ``--relaxation F`` (each transform moves a
    fraction ``F`` of the way to its new estimate before the next pass); prints the error after
    every pass: a plateau is a fixed point, a steady decline is slow convergence.

It also prints how smooth the run's final residual errors are over the sphere: the correlation of
each volume's residual translation (at the brain centroid, each shell's mean removed) with the
mean of its nearest neighbours on the sphere (antipodal directions are the same direction).

    PYTHONPATH=. python benchmarks/fixed_point.py /tmp/bench/real-moderate --oracle --continue 4
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models_and_passes import WITHIN, pass_transform  # noqa: E402
from presets import _workflow_dir, pass_inputs, pass_preset, register_all  # noqa: E402
from run_benchmark import score  # noqa: E402


def sphere_neighbour_correlation(values: np.ndarray, bvecs: np.ndarray, k: int = 4) -> np.ndarray:
    """Correlation of each column of ``values`` with its mean over the ``k`` nearest directions.

    Parameters
    ----------
    values : (N, C) array
        One row per volume (e.g. residual translations x, y, z).
    bvecs : (N, 3) array
        Unit gradient directions of the volumes; ``g`` and ``-g`` count as the same direction.
    k : int
        Neighbours per volume.

    Returns
    -------
    (C,) array
        Near 1 for a field that varies smoothly over the sphere, near 0 for independent values.
    """
    from dmriprep_motion.motion import sphere_neighbours

    values = np.asarray(values, dtype=float)
    nearest = sphere_neighbours(bvecs, np.ones(len(values), dtype=int), k=k)
    smooth = np.stack([values[row[1:]].mean(axis=0) for row in nearest])
    return np.array([np.corrcoef(values[:, c], smooth[:, c])[0, 1] for c in range(values.shape[1])])


def residual_translations(estimated: np.ndarray, truth: np.ndarray, centroid: np.ndarray) -> np.ndarray:
    """(N, 3) displacement of ``centroid`` by each residual ``truth⁻¹ · estimated`` (mm)."""
    res = np.linalg.solve(truth, estimated)
    return np.einsum("nij,j->ni", res[:, :3, :3], centroid) + res[:, :3, 3] - centroid


def _predict(args: tuple) -> str:
    iface, target, series, bvec, cwd = args
    iface = copy.deepcopy(iface)
    iface.inputs.target = target
    iface.inputs.in_file = series
    iface.inputs.in_bvec = bvec
    Path(cwd).mkdir(parents=True, exist_ok=True)
    return iface.run(cwd=cwd).outputs.out_file


class Run:
    """A finished benchmark run's inputs, and its steps re-executed with other transforms."""

    def __init__(self, run: Path, nprocs: int) -> None:
        from nipype.utils.filemanip import loadpkl

        self.run, self.nprocs = run, nprocs
        self.wf = _workflow_dir(run)
        self.predict_iface = loadpkl(self.wf / "hmc_pass01_wf" / "predict" / "_node.pklz").interface
        self.items, _, self.mask = pass_inputs(run, 1)
        reference = self.wf / "dwi_reference_wf" / "validate"
        self.series, self.bvec = reference / "dwi_float.nii", reference / "dwi.bvec"

    def pass_with(
        self, pass_index: int, start: np.ndarray, predict_from: np.ndarray, folder: Path
    ) -> np.ndarray:
        """Pass ``pass_index`` (its preset): predictions from the series moved by ``predict_from``,
        registrations from ``start``."""
        from dmriprep_motion.interfaces.dwi import ResampleSeries
        from dmriprep_motion.motion import write_itk

        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "moved.npy", predict_from)
        resample = ResampleSeries(in_file=str(self.series), in_bvec=str(self.bvec))
        resample.inputs.in_xforms = str(folder / "moved.npy")
        moved = resample.run(cwd=str(folder)).outputs
        jobs = [
            (self.predict_iface, index, moved.out_file, moved.out_bvec, str(folder / f"predict{index:04d}"))
            for index, *_ in self.items
        ]
        with ProcessPoolExecutor(self.nprocs) as pool:
            predictions = list(pool.map(_predict, jobs))
        items = []
        for (index, _, volume, _), prediction in zip(self.items, predictions, strict=True):
            init = write_itk(folder / f"init_{index:04d}.txt", start[index])
            items.append((index, Path(prediction), volume, init))
        found, _ = register_all(items, pass_preset(pass_index), self.mask, self.nprocs)
        out = start.copy()
        for index, matrix in found.items():
            out[index] = matrix
        return out

    def within_shell(self, xforms: np.ndarray) -> float:
        """Median error of ``xforms`` once each shell's common offset is removed (mm)."""
        return score(self.run / "bids", {"xfm": xforms, "bvec": None})[WITHIN]


def _smoothness(run: Run, final: np.ndarray) -> str:
    from dmriprep_motion.gradients import shell_labels
    from dmriprep_motion.motion import mask_coordinates
    from dmriprep_motion.testing.simulate import load_truth

    truth = load_truth(run.run / "bids")
    centroid = mask_coordinates(truth["mask"]).mean(axis=0)
    labels = shell_labels(truth["bvals"])
    bvecs = np.loadtxt(run.run / "bids" / "sub-01" / "dwi" / "sub-01_dwi.bvec").T
    rows = []
    for shell in np.unique(labels[labels > 0]):
        sel = np.flatnonzero(labels == shell)
        res = residual_translations(final[sel], truth["xfm"][sel], centroid)
        res -= res.mean(axis=0)
        corr = sphere_neighbour_correlation(res, bvecs[sel])
        rows.append(
            f"shell {shell}: residual sd x/y/z {' / '.join(f'{v:.3f}' for v in res.std(axis=0))} mm, "
            f"correlation with 4 sphere neighbours {' / '.join(f'{v:.2f}' for v in corr)}"
        )
    return "; ".join(rows)


def _oracle(run: Run, last: int, folder: Path) -> str:
    from dmriprep_motion.testing.simulate import load_truth

    start = pass_inputs(run.run, last)[1]  # where the run's last pass started its registrations
    found = run.pass_with(last, start, load_truth(run.run / "bids")["xfm"], folder)
    error = run.within_shell(found)
    return f"oracle (truth-aligned predictions, from the run's start of pass {last}): {error:.3f}"


def _continue(run: Run, first: np.ndarray, passes: int, relaxation: float, folder: Path):
    """Yield the within-shell error after each of ``passes`` more passes from ``first``."""
    from dmriprep_motion.motion import interpolate_transforms

    current = first
    for k in range(2, passes + 2):
        new = run.pass_with(k, current, current, folder / f"pass{k}")
        yield k, run.within_shell(new)
        current = new if relaxation == 1 else interpolate_transforms(current, new, relaxation)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a scenario folder of run_benchmark.py (bids/, dmriprep/)")
    parser.add_argument("--oracle", action="store_true", help="register to truth-aligned predictions")
    parser.add_argument("--continue", dest="more", type=int, default=0, metavar="N", help="N more passes")
    parser.add_argument("--relaxation", type=float, default=1.0, help="damping of --continue (default 1)")
    parser.add_argument("--nprocs", type=int, default=2)
    opts = parser.parse_args(argv)

    run = Run(opts.run, opts.nprocs)
    last = 1
    while pass_transform(run.wf, last + 1) is not None:
        last += 1
    merged = [np.load(run.wf / f"hmc_pass{k:02d}_wf" / "merge" / "xforms.npy") for k in range(1, last + 1)]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"# {opts.run.name}, {when}; median error, each shell's offset removed (mm)")
    print(f"run, pass by pass: {' / '.join(f'{run.within_shell(m):.3f}' for m in merged)}")
    print(f"run, smoothness of the last pass's errors over the sphere: {_smoothness(run, merged[-1])}")
    with tempfile.TemporaryDirectory() as tmp:
        if opts.oracle:
            print(_oracle(run, last, Path(tmp) / "oracle"), flush=True)
        for k, error in _continue(run, merged[0], opts.more, opts.relaxation, Path(tmp)):
            print(
                f"continued from pass 1 (relaxation {opts.relaxation:g}), pass {k}: {error:.3f}", flush=True
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
