#!/usr/bin/env python
"""Re-run one pass's registrations of a finished benchmark run with other ANTs settings.

Registration dominates dmriprep-motion's time, and the presets decide how much of it there is.
This script isolates them from the rest of the pipeline: it takes a finished ``dmriprep`` run of
``run_benchmark.py`` (its Nipype work directory keeps every prediction, volume and transform),
registers each diffusion-weighted volume of pass ``P`` to that pass's prediction again, from the
same starting transform, with the packaged preset of that pass changed as asked, and scores the
transforms against the truth of the simulation.  The score is the median error once the shell's
common offset is removed (the volume-to-volume accuracy; the offset is the shell anchor's, which
these registrations do not set), next to the wall time of the 2-at-a-time registrations.

    PYTHONPATH=. python benchmarks/presets.py ~/.cache/dmriprep_motion_bench/runs_v3/real-moderate \\
        --pass 3 --variant sampling_percentage=0.8 --variant sampling_percentage=0.4

Each ``--variant`` is a comma-separated list of ``key=value`` overrides of the preset's
single-stage entries (``sampling_percentage``, ``sampling_strategy``, ``convergence_threshold``,
``convergence_window_size``;
``number_of_iterations``, ``shrink_factors`` and ``smoothing_sigmas`` take ``x``-separated levels).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models_and_passes import WITHIN, pass_transform  # noqa: E402
from run_benchmark import score  # noqa: E402

LEVELS = ("number_of_iterations", "shrink_factors", "smoothing_sigmas")


def parse_variant(text: str) -> dict:
    """``"a=1,b=2x1"`` → overrides of the preset (one stage)."""
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key in LEVELS:
            cast = int if key != "smoothing_sigmas" else float
            out[key] = [[cast(v) for v in value.split("x")]]
        elif key == "sampling_strategy":
            out[key] = [value]
        elif key == "convergence_window_size":
            out[key] = [int(value)]
        else:
            out[key] = [float(value)]
    return out


def _workflow_dir(run: Path) -> Path:
    hits = sorted((run / "dmriprep" / "work").glob("*/sub_01_wf/dwi_motion_wf"))
    if not hits:
        raise SystemExit(f"no dmriprep work directory under {run}")
    return hits[0]


def pass_preset(pass_index: int) -> dict:
    """The packaged ANTs settings of pass ``pass_index`` (coarse to fine for pass 1, refine after)."""
    from dmriprep_motion.data import registration_preset

    return json.loads(registration_preset("dwi", "Rigid", False, refine=pass_index > 1).read_text())


def pass_inputs(run: Path, pass_index: int) -> tuple[list[tuple[int, Path, Path, Path]], np.ndarray, Path]:
    """Per diffusion-weighted volume: (index, prediction, volume, initial transform); start; mask."""
    from dmriprep_motion.gradients import shell_labels

    wf = _workflow_dir(run)
    bvals = np.loadtxt(run / "bids" / "sub-01" / "dwi" / "sub-01_dwi.bval")
    dwi = np.flatnonzero(shell_labels(bvals) > 0).tolist()  # the pipeline's b0 threshold
    if pass_index == 1:
        start = np.tile(np.eye(4), (len(bvals), 1, 1))
        inits = [wf / "dwi_reference_wf" / "init" / f"identity_{i:04d}.txt" for i in dwi]
    else:
        found = pass_transform(wf, pass_index - 1)
        if found is None:
            raise SystemExit(f"pass {pass_index - 1} did not run in {wf}")
        previous = found.parent
        start = np.load(found)
        inits = [previous / f"xform_{i:04d}.txt" for i in dwi]
    predict = wf / f"hmc_pass{pass_index:02d}_wf" / "predict" / "mapflow"
    split = wf / "dwi_reference_wf" / "split"
    items = [
        (i, predict / f"_predict{k}" / f"prediction_{i:04d}.nii", split / f"vol{i:04d}.nii", init)
        for k, (i, init) in enumerate(zip(dwi, inits, strict=True))
    ]
    return items, start, wf / "dwi_reference_wf" / "mask" / "reg_mask.nii.gz"


def register_all(items, settings: dict, mask: Path, nprocs: int) -> tuple[dict[int, np.ndarray], float]:
    """Register every (prediction, volume) pair with ``settings``; return RAS+ transforms and wall time."""
    from nipype.interfaces.ants import Registration

    from dmriprep_motion.motion import load_itk
    from dmriprep_motion.workflows.registration import configure_registration

    with tempfile.TemporaryDirectory() as tmp:
        preset = Path(tmp) / "preset.json"
        preset.write_text(json.dumps(settings))

        def one(item):
            index, fixed, moving, init = item
            reg = configure_registration(Registration(from_file=str(preset)), seed=1234, omp_nthreads=1)
            reg.inputs.fixed_image = str(fixed)
            reg.inputs.moving_image = str(moving)
            reg.inputs.fixed_image_masks = [str(mask)]
            reg.inputs.initial_moving_transform = [str(init)]
            reg.inputs.output_transform_prefix = "hmc_"
            cwd = Path(tmp) / f"{index:04d}"
            cwd.mkdir()
            # the command line Nipype builds, run here (Nipype's run() changes directory: not thread-safe)
            env = {**os.environ, **reg.inputs.environ}
            subprocess.run(reg.cmdline, shell=True, cwd=cwd, env=env, check=True, capture_output=True)
            return index, load_itk(cwd / "hmc_0GenericAffine.mat")

        start = time.perf_counter()
        with ThreadPoolExecutor(nprocs) as pool:
            found = dict(pool.map(one, items))
        return found, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a scenario folder of run_benchmark.py (bids/, dmriprep/)")
    parser.add_argument("--pass", dest="pass_index", type=int, default=2, help="1-based pass (default 2)")
    parser.add_argument("--variant", action="append", default=[], help="preset overrides (repeatable)")
    parser.add_argument("--nprocs", type=int, default=2)
    opts = parser.parse_args(argv)
    base = pass_preset(opts.pass_index)
    items, start, mask = pass_inputs(opts.run, opts.pass_index)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"# {opts.run.name}, pass {opts.pass_index}, {len(items)} registrations, {when}")
    print("| variant | wall (s) | median err, shell offset removed (mm) |")
    print("|---|---|---|")
    for text in opts.variant or [""]:
        found, wall = register_all(items, {**base, **parse_variant(text)}, mask, opts.nprocs)
        mats = start.copy()
        for index, matrix in found.items():
            mats[index] = matrix
        acc = score(opts.run / "bids", {"xfm": mats, "bvec": None})
        print(f"| {text or 'packaged preset'} | {wall:.1f} | {acc[WITHIN]:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
