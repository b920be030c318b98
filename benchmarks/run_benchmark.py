#!/usr/bin/env python
"""Ground-truth accuracy and speed benchmark of dmriprep_motion and the tools users would pick instead.

For every scenario a dataset with known motion is simulated (``dmriprep_motion.testing.simulate``),
then every method is run on it as a subprocess (wall time and the peak RSS of its whole process
tree are measured), and its transforms / b-vectors are scored against the truth
(``dmriprep_motion.testing.metrics``).  One table is printed (and written as Markdown + JSON).

Peers are installed in their own virtual environments under ``--cache-dir`` (created on first
use with ``python -m venv`` + ``pip install``), so the project's environment stays clean:

* ``dipy``: DIPY ``dipy.align.motion_correction`` (affine registration to the b0 reference);
* ``nifreeze-dti`` / ``nifreeze-b0``: NiFreeze's CLI with models ``dti`` and ``trivial`` (b0),
  using the same ``antsRegistration`` console script (this environment's ``bin`` first on PATH);
* ``nifreeze-dti-patched`` / ``nifreeze-b0-patched``: what-ifs, the same CLI with two defects of
  NiFreeze 0.1.0 patched (``peers/nifreeze_patched.py``); ``nifreeze-dti-b0fit-patched``, a third
  too (its tensor fitted with the b0).

The real-data phantom is fitted to ds-xa30 as acquired (``--real-phantom raw``, the default) or
after dmriprep-motion's own affine correction (``--real-phantom corrected``, kept under
``--cache-dir``).  A work folder records the seed and phantom of its simulations and refuses others.

Example (the command of benchmarks/README.md)::

    PYTHONPATH=. python benchmarks/run_benchmark.py --scenarios real-moderate real-spikes real-large \\
        --methods dmriprep dmriprep-sloppy dipy nifreeze-dti nifreeze-b0
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DS_XA30 = (ROOT / ".." / "shared" / "data" / "ds-xa30").resolve()
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dmriprep_motion_bench"

#: name -> (phantom, shells, n_b0, pattern, snr); snr None: no noise
SCENARIOS = {
    "real-moderate": ("real", {1000: 30}, 1, "moderate", 20.0),
    "real-spikes": ("real", {1000: 30}, 1, "spikes", 20.0),
    "real-large": ("real", {1000: 30}, 1, "large", 20.0),
    "real-drift": ("real", {1000: 30}, 1, "drift", 20.0),
    "real-multishell": ("real", {1000: 20, 2000: 20, 3000: 20}, 3, "moderate", 20.0),
    "real-moderate-60": ("real", {1000: 59}, 1, "moderate", 20.0),
    "real-moderate-120": ("real", {1000: 117}, 3, "moderate", 20.0),
    "mni-moderate": ("mni", {1000: 30}, 1, "moderate", 20.0),
    # b0 and diffusion-weighted maps agree by construction, and the shell's mean position is not
    # the b0's: where the shell anchor has to move the shell by a known sub-voxel amount
    "mni-drift": ("mni", {1000: 30}, 1, "drift", 20.0),
    # the multi-shell scheme on the phantom whose contrasts agree (since 2026-12-04): how the
    # shells above b=1500 are tied to the b0, without the real-data phantom's b0<->DWI ambiguity
    "mni-multishell": ("mni", {1000: 20, 2000: 20, 3000: 20}, 3, "moderate", 20.0),
    # (since 2026-12-05 13:00 UTC) the MNI head acquired in a slab that its brain fills at both
    # ends, as ds-xa30's does (SLAB_CUT): a clean truth with the real data's slab, where motion
    # moves tissue into and out of the field of view
    "mni-slab-moderate": ("mni-slab", {1000: 30}, 1, "moderate", 20.0),
    # (since 2026-12-05 14:40 UTC) mni-moderate on a 1.5 mm grid (the 2 mm templates resampled,
    # MNI_FINE_MM): 2.4 times the brain voxels, as in a finer acquisition, where the cap on each
    # registration's samples (dmriprep_motion/sampling.py) keeps the fewest of them
    "mni-fine-moderate": ("mni-fine", {1000: 30}, 1, "moderate", 20.0),
    # controls (since 2026-12-04 23:40 UTC), not targets: no motion and no noise, so every error
    # a method reports is the phantom's own floor (how far its b0 and diffusion-weighted contrasts
    # disagree as the method sees them; an identity transform scores 0)
    "real-static": ("real", {1000: 30}, 1, "none", None),
    "mni-static": ("mni", {1000: 30}, 1, "none", None),
    # (since 2026-12-05) the same for real-multishell's scheme: each shell's own floor
    "real-multishell-static": ("real", {1000: 20, 2000: 20, 3000: 20}, 3, "none", None),
}

#: Slices of brain that ``mni-slab-*`` scenarios leave out below (cerebellum) and above (vertex).
SLAB_CUT = (12, 8)
#: Voxel size (mm) of the ``mni-fine-*`` scenarios' phantom (the others': 2 mm).
MNI_FINE_MM = 1.5

METHODS = {
    "identity": None,  # no correction: the size of the injected motion, as a reference row
    "dmriprep": [],
    "dmriprep-sloppy": ["--sloppy"],
    # every pass coarse to fine (100x50x20 iterations at shrink 2x1x1: the first pass's preset
    # until 2026-11-26 19:20 UTC, and every pass's until 2026-11-26), to measure what the
    # full-resolution-only later passes save
    "dmriprep-c2f": [
        "--registration-config",
        str(HERE / "data" / "dwi_rigid_c2f.json"),
    ],
    "dmriprep-b0": ["--model", "b0"],
    "dmriprep-avgdwi": ["--model", "avgdwi"],
    "dmriprep-dti": ["--model", "dti"],
    "dmriprep-dki": ["--model", "dki"],
    "dmriprep-gp": ["--model", "gp"],
    "dipy": None,
    "nifreeze-dti": ["dti"],
    "nifreeze-b0": ["trivial"],
    # what-ifs, not the tool as users run it: NiFreeze 0.1.0 with two defects patched
    # (benchmarks/peers/nifreeze_patched.py); the second item names the ANTs preset
    "nifreeze-b0-patched": ["trivial", "dwi-to-b0_level0"],
    "nifreeze-dti-patched": ["dti", "default"],
    # and a third (since 2026-12-05): the tensor fitted with the b0 (--fit-with-b0)
    "nifreeze-dti-b0fit-patched": ["dti", "default", "--fit-with-b0"],
}

PEER_PACKAGES = {"dipy": ["dipy", "nibabel"], "nifreeze": ["nifreeze"]}


# --------------------------------------------------------------------------------- scenarios
#: Random seeds of the jittered registrations whose median aligns the phantom's b0 (see ants_rigid)
ALIGN_SEEDS = (1, 2, 3, 4, 5)


def ants_rigid(
    fixed: np.ndarray,
    moving: np.ndarray,
    mask: np.ndarray,
    affine: np.ndarray,
    *,
    seeds: tuple[int, ...] = ALIGN_SEEDS,
) -> np.ndarray:
    """RAS+ reference-to-moving transform registering ``moving`` to ``fixed`` (same grid).

    The pipeline's shell-anchor preset (rigid, Mattes mutual information, run by the
    ``antsRegistration`` on PATH) with *jittered* regular sampling of every mask voxel instead of
    its on-grid sampling, run once per seed in ``seeds``; the result is the median of the six
    rigid parameters.  With ``seeds=()`` the preset runs once as packaged (``sampling_strategy``
    None: every voxel, on the grid).  Between two noise-free images on one grid, on-grid mutual
    information is pulled towards whole-voxel alignment and leaves most of a sub-voxel shift in
    place; jittered samples follow it (``phantom_frame.py --known-shifts``).
    """
    import tempfile

    import nibabel as nb
    from nipype.interfaces.ants import Registration

    from dmriprep_motion.data import registration_preset
    from dmriprep_motion.motion import load_itk, matrix_from_params, motion_parameters

    # ANTs reports the unused moving mask ("file NULL does not exist") on stderr, which Nipype
    # logs at INFO level into the benchmark's table: keep its warnings only, as the CLI does.
    logging.getLogger("nipype.interface").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        images = {
            "fixed": np.asarray(fixed, dtype=np.float32),
            "moving": np.asarray(moving, dtype=np.float32),
            "mask": np.asarray(mask, dtype=np.uint8),
        }
        for key, data in images.items():
            nb.save(nb.Nifti1Image(data, affine), folder / f"{key}.nii.gz")
        matrices = []
        for seed in seeds or (None,):
            reg = Registration(from_file=str(registration_preset("shell", "Rigid", False)))
            reg.inputs.fixed_image = str(folder / "fixed.nii.gz")
            reg.inputs.moving_image = str(folder / "moving.nii.gz")
            reg.inputs.fixed_image_masks = [str(folder / "mask.nii.gz")]
            reg.inputs.output_transform_prefix = str(folder / f"rigid{seed}_")
            if seed is None:
                reg.inputs.sampling_strategy = ["None"]
            else:
                reg.inputs.sampling_strategy = ["Regular"]
                reg.inputs.sampling_percentage = [1.0]
                reg.inputs.random_seed = seed
            result = reg.run(cwd=str(folder))
            matrices.append(load_itk(result.outputs.forward_transforms[-1]))
    if len(matrices) == 1:
        return matrices[0]
    return matrix_from_params(np.median(motion_parameters(np.stack(matrices)), axis=0))


#: ``--real-phantom``: what the real-data phantom is fitted to.  ``raw``: ds-xa30 as acquired
#: (every table of benchmarks/README.md before 2026-12-05 09:00 UTC, and the default).
#: ``corrected`` (since 2026-12-05): ds-xa30 corrected by dmriprep-motion itself with
#: ``SOURCE_OPTIONS`` (:func:`corrected_source`), so that the phantom's maps do not carry the
#: source's own motion and eddy-current shifts; built with the tool under test, it is reported
#: next to ``raw``, not instead of it (benchmarks/README.md, "The real-data phantom's source").
REAL_PHANTOMS = ("raw", "corrected")
#: dmriprep-motion options of the ``corrected`` source: affine, to take out the eddy-current
#: shears and scalings of the b=2500 volumes, and 5 passes (ds-xa30 converges slowly); the
#: default seed
SOURCE_OPTIONS = ("--transform", "Affine", "--passes", "5")
#: what :func:`simulate` records next to a simulation, to refuse reusing it for another one
SIMULATION_RECORD = "simulation.json"


def dmriprep_command(bids: Path, folder: Path, *options: str, nprocs: int) -> list[str]:
    """dmriprep-motion's command line on ``bids`` (this environment's Python), outputs in
    ``folder/out`` and work directory in ``folder/work``, without BIDS validation."""
    return [
        sys.executable, "-m", "dmriprep_motion", str(bids), str(folder / "out"), "participant",
        "-w", str(folder / "work"), "--nprocs", str(nprocs), "--skip-bids-validation", *options,
    ]  # fmt: skip


def corrected_source(cache: Path, *, nprocs: int = 2) -> Path:
    """Folder of ds-xa30's runs corrected by dmriprep-motion (``SOURCE_OPTIONS``), made once.

    The run is kept under ``cache / "ds-xa30-corrected"`` and reused by later calls, whatever
    version of dmriprep-motion they run (delete the folder to rebuild it with another); its log is
    ``log.txt`` there.  Returns the folder of the ``sub-01_dir-{AP,PA}_desc-preproc_dwi`` files.
    """
    folder = cache / "ds-xa30-corrected"
    dwi = folder / "out" / "sub-01" / "dwi"
    if all((dwi / f"sub-01_dir-{pe}_desc-preproc_dwi.nii.gz").exists() for pe in ("AP", "PA")):
        return dwi
    folder.mkdir(parents=True, exist_ok=True)
    cmd = dmriprep_command(DS_XA30, folder, *SOURCE_OPTIONS, nprocs=nprocs)
    with open(folder / "log.txt", "w") as log:
        done = subprocess.run(cmd, env=_env(one_thread=False), stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"correcting ds-xa30 for the phantom failed; see {folder / 'log.txt'}")
    return dwi


def real_phantom(runs: tuple[str, ...] = ("AP", "PA"), *, align_b0: bool = True, source: Path | None = None):
    """The ds-xa30 phantom of the ``real-*`` scenarios (sub-01, the given phase-encoding runs).

    Both phase-encoding directions by default: their eddy-current shifts cancel in the joint fit.
    ``align_b0`` registers each run's b0 to its mean diffusion-weighted volume first (see
    :func:`dmriprep_motion.testing.simulate.real_data_phantom`), on the grid (``ants_rigid``
    with ``seeds=()``): the phantom of every published table (``runs_v3``) was built that way.
    Its jittered median (``ALIGN_SEEDS``) does not bring this phantom's b0 and diffusion-weighted
    maps closer together (``phantom_frame.py``; see benchmarks/README.md).  ``source``: a folder of
    corrected runs (:func:`corrected_source`) to fit instead of ds-xa30 as acquired.
    """
    from functools import partial

    from dmriprep_motion.testing import simulate as sim

    if source is None:
        src = [DS_XA30 / "sub-01" / "dwi" / f"sub-01_dir-{pe}_dwi" for pe in runs]
    else:
        src = [Path(source) / f"sub-01_dir-{pe}_desc-preproc_dwi" for pe in runs]
    files = ([f"{s}.{ext}" for s in src] for ext in ("nii.gz", "bval", "bvec"))
    return sim.real_data_phantom(*files, align_b0=partial(ants_rigid, seeds=()) if align_b0 else None)


def simulate(
    name: str, folder: Path, seed: int, *, phantom: str = "raw", cache: Path = DEFAULT_CACHE, nprocs: int = 2
) -> Path:
    """Simulate scenario ``name`` into ``folder/bids`` (reused when present).

    ``phantom`` (``REAL_PHANTOMS``) picks the real-data phantom's source (``cache`` and ``nprocs``:
    where and how :func:`corrected_source` runs).  What was simulated is recorded in
    ``folder/simulation.json``; a folder simulated with another seed or phantom is refused, not
    reused (a folder without the record predates it: its seed is unknown, its phantom ``raw``).
    """
    from dmriprep_motion.testing import simulate as sim

    if phantom not in REAL_PHANTOMS:
        raise ValueError(f"phantom must be one of {REAL_PHANTOMS} (got {phantom!r})")
    kind, shells, n_b0, pattern, snr = SCENARIOS[name]
    wanted = {"scenario": name, "seed": seed, "phantom": phantom if kind == "real" else kind}
    bids = folder / "bids"
    if (bids / "derivatives" / "truth").exists():
        record_file = folder / SIMULATION_RECORD
        legacy = {**wanted, "seed": None, "phantom": "raw" if kind == "real" else kind}
        made = json.loads(record_file.read_text()) if record_file.exists() else legacy
        if made["phantom"] != wanted["phantom"] or made["seed"] not in (None, seed):
            made_seed = "an unrecorded seed" if made["seed"] is None else f"seed {made['seed']}"
            raise SystemExit(
                f"{folder} holds {name} simulated with {made_seed} and the "
                f"{made['phantom']} phantom, not seed {seed} and the {wanted['phantom']} one: "
                "pass another --work"
            )
        return bids
    if kind == "real":
        source = corrected_source(cache, nprocs=nprocs) if phantom == "corrected" else None
        model = real_phantom(source=source)
    else:
        model = sim.mni_phantom(resolution=MNI_FINE_MM if kind == "mni-fine" else 2.0)
    bvals, bvecs = sim.make_scheme(n_b0=n_b0, shells=shells, seed=seed)
    params = sim.motion_pattern(pattern, len(bvals), seed=seed)
    series = sim.simulate_series(model, bvals=bvals, bvecs_ras=bvecs, params=params, snr=snr, seed=seed)
    if kind == "mni-slab":
        series = sim.acquire_slab(series, below=SLAB_CUT[0], above=SLAB_CUT[1])
    sim.write_bids(series, bids, name=f"benchmark {name}")
    (folder / SIMULATION_RECORD).write_text(json.dumps(wanted) + "\n")
    return bids


# ------------------------------------------------------------------------------------ peers
def peer_python(kind: str, cache: Path) -> Path:
    """Python of the peer's own venv (created and populated on first use)."""
    venv = cache / kind
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    check = subprocess.run([str(python), "-c", f"import {kind}"], capture_output=True)
    if check.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES[kind]], check=True)
    return python


def _env(*, one_thread: bool = True) -> dict:
    """Environment of a method's process.

    ``one_thread`` caps OpenMP/BLAS and ITK at one thread per process (the peers, run with 2
    processes). dmriprep-motion runs without it, as a user would: its command line caps its
    workers itself (``--omp-nthreads``; ``dmriprep_motion.engine.worker_threads``).
    """
    env = dict(os.environ)
    # antsRegistration (this project's console script) and Python of this environment first
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("NIPYPE_NO_ET", "1")
    for name in ("OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        if one_thread:
            env[name] = "1"
        else:
            env.pop(name, None)
    return env


def outputs(method: str, folder: Path) -> dict:
    """Paths of the transforms and b-vectors a method writes under ``folder / method``."""
    out = folder / method
    if method.startswith("dmriprep"):
        d = out / "out" / "sub-01" / "dwi"
        return {
            "xfm": d / "sub-01_from-orig_to-dwiref_mode-image_desc-hmc_xfm.txt",
            "bvec": d / "sub-01_desc-preproc_dwi.bvec",
            "rotates_bvecs": True,
        }
    if method == "dipy":
        return {"xfm": out / "dipy_xfm.npy", "bvec": out / "dipy.bvec", "rotates_bvecs": False}
    if method == "identity":
        return {"xfm": out / "identity_xfm.npy", "bvec": None, "rotates_bvecs": False}
    return {"xfm": out / "nifreeze_xfm.npy", "bvec": None, "rotates_bvecs": False}


def run_method(
    method: str, bids: Path, folder: Path, *, nprocs: int, cache: Path, seed: int, extra: tuple = ()
) -> dict:
    """Run one method on one dataset; return its measurements and output paths.

    ``extra`` arguments are appended to dmriprep-motion's command line (ignored for peers).
    """
    from dmriprep_motion.testing.metrics import Measured, run_measured

    truth_stem = "sub-01"
    dwi = bids / "sub-01" / "dwi" / f"{truth_stem}_dwi"
    out = folder / method
    if out.exists():  # never reuse a previous run's outputs or Nipype cache (it would fake the time)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    env = _env(one_thread=not method.startswith("dmriprep"))
    if method.startswith("dmriprep"):
        cmd = dmriprep_command(bids, out, "--seed", str(seed), *METHODS[method], *extra, nprocs=nprocs)
        res = run_measured(cmd, env=env, log=log)
        return {"measured": res, **outputs(method, folder)}
    if method == "identity":
        n_vol = len(np.loadtxt(f"{dwi}.bval"))
        np.save(out / "identity_xfm.npy", np.tile(np.eye(4), (n_vol, 1, 1)))
        res = Measured(0, 0.0, 0, "")
        return {
            "measured": res,
            "xfm": out / "identity_xfm.npy",
            "bvec": f"{dwi}.bvec",
            "rotates_bvecs": False,
        }
    if method == "dipy":
        python = peer_python("dipy", cache)
        cmd = [
            str(python),
            str(HERE / "peers" / "dipy_hmc.py"),
            f"{dwi}.nii.gz",
            f"{dwi}.bval",
            f"{dwi}.bvec",
            str(out / "dipy"),
        ]
        env["OMP_NUM_THREADS"] = str(nprocs)
        res = run_measured(cmd, env=env, log=log)
        return {
            "measured": res,
            "xfm": out / "dipy_xfm.npy",
            "bvec": out / "dipy.bvec",
            "rotates_bvecs": False,
        }
    if method.startswith("nifreeze"):
        python = peer_python("nifreeze", cache)
        import nibabel as nb

        from dmriprep_motion.gradients import fsl_to_ras, read_bvals, read_bvecs

        img = nb.load(f"{dwi}.nii.gz")
        bvals = read_bvals(f"{dwi}.bval")
        ras = fsl_to_ras(read_bvecs(f"{dwi}.bvec"), img.affine)
        grad = out / "gradients_rasb.txt"  # NiFreeze's convention: RAS+ b-vectors and b-values
        np.savetxt(grad, np.column_stack([ras, bvals]), fmt="%.8f")
        mask = bids / "derivatives" / "truth" / "sub-01" / "dwi" / f"{truth_stem}_desc-brain_mask.nii.gz"
        model, *patched = METHODS[method]
        if patched:  # the what-ifs: NiFreeze's CLI entry point behind its patches
            cli = [str(python), str(HERE / "peers" / "nifreeze_patched.py"), *patched]
        else:
            cli = [str(Path(python).parent / "nifreeze")]
        cmd = [
            *cli,
            f"{dwi}.nii.gz",
            "--gradient-file",
            str(grad),
            "--brainmask",
            str(mask),
            "--models",
            model,
            "-J",
            str(nprocs),
            "--nthreads",
            "1",
            "--seed",
            str(seed),
            "--output-dir",
            str(out),
            "--write-hdf5",
        ]
        res = run_measured(cmd, env=env, log=log)
        h5 = out / f"{truth_stem}_dwi.nii.h5"
        if res.returncode == 0:
            h5s = sorted(out.glob("*.h5"))
            h5 = h5s[0] if h5s else h5
            subprocess.run(
                [
                    str(python),
                    str(HERE / "peers" / "nifreeze_dump.py"),
                    str(h5),
                    f"{dwi}.bval",
                    str(out / "nifreeze"),
                ],
                check=True,
                env=env,
            )
        return {"measured": res, "xfm": out / "nifreeze_xfm.npy", "bvec": None, "rotates_bvecs": False}
    raise ValueError(f"unknown method {method}")


# ---------------------------------------------------------------------------------- scoring
def score(bids: Path, result: dict) -> dict:
    """Accuracy of one method's outputs against the truth (``xfm``: ITK file, ``.npy`` file or array)."""
    from dmriprep_motion.gradients import read_bvecs, shell_labels
    from dmriprep_motion.motion import load_itk_series, mask_coordinates
    from dmriprep_motion.testing.metrics import accuracy
    from dmriprep_motion.testing.simulate import load_truth

    truth = load_truth(bids)
    xfm = result["xfm"]
    if isinstance(xfm, np.ndarray):
        est = xfm
    else:
        est = load_itk_series(xfm) if str(xfm).endswith(".txt") else np.load(xfm)
    bvec_file = result["bvec"]
    if bvec_file is None:  # tool writes no b-vectors: score the input table (what users would keep)
        bvec_file = bids / "sub-01" / "dwi" / "sub-01_dwi.bvec"
    return accuracy(
        est,
        truth["xfm"],
        mask_coordinates(truth["mask"]),
        groups=shell_labels(truth["bvals"]),
        est_bvecs=read_bvecs(bvec_file),
        true_bvecs=truth["head_bvecs"],
        affine=truth["mask"].affine,
    )


def failure(measured) -> str:
    """One-line reason (for a table cell) why a run failed: its exit code and last stderr line."""
    tail = measured.stderr_tail.strip().splitlines()
    return (f"exit {measured.returncode}: " + (tail[-1] if tail else "")).replace("|", "/")[:200]


def record(scenario: str, n_vol: int, result: dict) -> dict:
    """The fields every raw JSON record of a run has."""
    meas = result["measured"]
    return {
        "scenario": scenario,
        "n_volumes": n_vol,
        "wall_time_s": meas.wall_time,
        "cpu_time_s": meas.cpu_time,
        "mean_load": meas.load,
        "peak_rss_bytes": meas.peak_rss,
        "error": result.get("error"),
    }


def measured_from_record(rec: dict):
    """The :class:`Measured` of a JSON record of :func:`record` (older records: no CPU time or load)."""
    from dmriprep_motion.testing.metrics import Measured

    return Measured(
        1 if rec.get("error") else 0,
        rec["wall_time_s"],
        int(rec["peak_rss_bytes"]),
        "",
        cpu_time=rec.get("cpu_time_s", 0.0),
        load=rec.get("mean_load", 0.0),
    )


HEADER = (
    "| scenario | method | vols | median mean-disp err (mm) | max mean-disp err (mm) | RMSE (mm) "
    "| median err, common offset removed (mm) | shells' offsets from the b0 (mm) "
    "| median rot err (deg) | median trans err (mm) "
    "| median b-vec err (deg) | wall (s) | s/vol | CPU (s) | load | peak RSS (GB) | note |"
)


def row(scenario: str, method: str, n_vol: int, res: dict) -> str:
    """One Markdown table row (``res``: ``measured``, and ``acc`` or ``error``)."""
    m = res.get("acc")
    meas = res["measured"]
    base = f"| {scenario} | {method} | {n_vol} |"
    tail = (
        f" {meas.wall_time:.0f} | {meas.wall_time / n_vol:.2f} | {meas.cpu_time:.0f} | {meas.load:.1f} |"
        f" {meas.peak_rss / 1e9:.2f} |"
    )
    if method == "identity":
        tail = " – | – | – | – | – |"
    if m is None:
        return base + " – |" * 8 + tail + f" FAILED: {res['error']} |"
    note = "" if res["rotates_bvecs"] else "b-vectors not rotated by the tool"
    if method == "identity":
        note = "no correction: size of the injected motion"
    return (
        base + f" {m['median_mean_disp']:.3f} | {m['max_mean_disp']:.3f} | {m['rmse_mean_disp']:.3f} |"
        f" {m['median_mean_disp_offset_removed']:.3f} | {shell_offsets(m)} |"
        f" {m['median_rot_err']:.3f} | {m['median_trans_err']:.3f} | {m['median_bvec_err']:.2f} |"
        + tail
        + f" {note} |"
    )


def shell_offsets(acc: dict) -> str:
    """Each diffusion-weighted shell's common offset from the truth (mm), lowest b first.

    The mean displacement of the shell's average residual transform (``group_offsets_disp`` of
    :func:`~dmriprep_motion.testing.metrics.accuracy`; group 0, the b0s, left out); "–" for
    records scored before it existed.
    """
    groups = acc.get("group_offsets_disp") or {}
    cells = [
        f"{value:.3f}" for key, value in sorted(groups.items(), key=lambda kv: int(kv[0])) if int(key) > 0
    ]
    return " / ".join(cells) or "–"


def separator(header: str) -> str:
    """The Markdown line under ``header`` (one ``---`` cell per column)."""
    return "|" + "---|" * (header.count("|") - 1)


SPEED_HEADER = (
    "| scenario | method | runs | wall (s) per run, in order | median wall (s) | median CPU (s) "
    "| median of per-round wall ratios to {ref} |"
)


def round_order(methods: list[str], round_index: int) -> list[str]:
    """The methods' order in a round: as given in even rounds, reversed in odd ones.

    Alternating the order spreads a drift of the machine's speed over the methods.
    """
    return list(methods) if round_index % 2 == 0 else list(reversed(methods))


def speed_summary(records: list[dict], methods: list[str]) -> list[str]:
    """Markdown table of the repeated runs' times, one row per scenario and method.

    ``records`` are the raw JSON records (``scenario``, ``method``, ``round``,
    ``wall_time_s``, ``cpu_time_s``, ``error``); failed runs are left out. The last column
    compares each method with the first one in ``methods`` within each round (runs made one
    after the other), then takes the median over the rounds.
    """
    ref = methods[0]
    lines = [SPEED_HEADER.format(ref=ref), separator(SPEED_HEADER)]
    ok = [r for r in records if not r.get("error")]
    for scenario in dict.fromkeys(r["scenario"] for r in ok):
        walls = {(r["method"], r["round"]): r["wall_time_s"] for r in ok if r["scenario"] == scenario}
        for method in methods:
            runs = [r for r in ok if r["scenario"] == scenario and r["method"] == method]
            if not runs:
                continue
            ratios = [
                walls[(method, k)] / walls[(ref, k)]
                for k in sorted({r["round"] for r in runs})
                if (ref, k) in walls and walls[(ref, k)] > 0
            ]
            ratio = f"{float(np.median(ratios)):.2f}" if ratios else "–"
            lines.append(
                f"| {scenario} | {method} | {len(runs)} | "
                + " / ".join(f"{r['wall_time_s']:.0f}" for r in runs)
                + f" | {float(np.median([r['wall_time_s'] for r in runs])):.1f}"
                + f" | {float(np.median([r['cpu_time_s'] for r in runs])):.0f} | {ratio} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=["real-moderate"], choices=sorted(SCENARIOS))
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["dmriprep", "dmriprep-sloppy", "dipy", "nifreeze-dti"],
        choices=sorted(METHODS),
    )
    parser.add_argument(
        "--work", type=Path, default=DEFAULT_CACHE / "runs_v3", help="simulations and outputs"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help="peer virtual environments, and ds-xa30 corrected for --real-phantom corrected",
    )
    parser.add_argument(
        "--real-phantom",
        choices=REAL_PHANTOMS,
        default="raw",
        help="fit the real-data phantom to ds-xa30 as acquired (raw, every table before 2026-12-05) "
        "or after dmriprep-motion's own affine correction (corrected: its maps do not carry the "
        "source's motion; built with the tool under test, so reported next to raw)",
    )
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--output", type=Path, default=None, help="write the table (.md) and raw JSON here")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every method this many times per scenario, in alternating order (given, then "
        "reversed), and print a table of their times (median wall and CPU time, and the median "
        "ratio to the first method within each round)",
    )
    opts = parser.parse_args(argv)
    if opts.repeat < 1:
        parser.error("--repeat must be at least 1")
    rows, raw = [], []
    print(
        f"# benchmark {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs", flush=True
    )
    print(HEADER)
    print(separator(HEADER), flush=True)
    for scenario in opts.scenarios:
        folder = opts.work / scenario
        bids = simulate(
            scenario, folder, opts.seed, phantom=opts.real_phantom, cache=opts.cache_dir, nprocs=opts.nprocs
        )
        n_vol = len(np.loadtxt(bids / "sub-01" / "dwi" / "sub-01_dwi.bval"))
        for round_index, method in ((k, m) for k in range(opts.repeat) for m in round_order(opts.methods, k)):
            try:
                res = run_method(
                    method, bids, folder, nprocs=opts.nprocs, cache=opts.cache_dir, seed=opts.seed
                )
            except Exception as err:  # noqa: BLE001 - the table says why a peer cannot run
                from dmriprep_motion.testing.metrics import Measured

                res = {"measured": Measured(1, 0.0, 0, str(err)), "rotates_bvecs": False}
            if res["measured"].returncode == 0:
                try:
                    res["acc"] = score(bids, res)
                except Exception as err:  # noqa: BLE001
                    res["error"] = f"cannot read outputs ({type(err).__name__}: {err})".replace("|", "/")
            else:
                res["error"] = failure(res["measured"])
            line = row(scenario, method, n_vol, res)
            rows.append(line)
            print(line, flush=True)
            acc = res.get("acc") or {}
            raw.append(
                {
                    **record(scenario, n_vol, res),
                    "method": method,
                    "round": round_index,
                    **{k: v for k, v in acc.items() if k not in ("per_volume", "n_volumes")},
                    "n_scored_volumes": acc.get("n_volumes"),
                    "per_volume_mean_disp": [
                        float(v) for v in acc.get("per_volume", {}).get("mean_disp", [])
                    ],
                }
            )
            if opts.output:  # written after every row, so a stopped benchmark keeps its results
                opts.output.parent.mkdir(parents=True, exist_ok=True)
                opts.output.with_suffix(".json").write_text(json.dumps(raw, indent=2) + "\n")
    speed = speed_summary(raw, opts.methods) if opts.repeat > 1 else []
    if speed:
        print("\n" + "\n".join(speed), flush=True)
    if opts.output:
        opts.output.parent.mkdir(parents=True, exist_ok=True)
        table = [HEADER, separator(HEADER), *rows]
        opts.output.with_suffix(".md").write_text("\n".join(table + ([""] + speed if speed else [])) + "\n")
        opts.output.with_suffix(".json").write_text(json.dumps(raw, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
