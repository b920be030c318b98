"""Measure the peak memory of a dmriprep-motion run on a large (2 mm, 100+ volume) series.

The series is made from ds-xa30 without the simulator: the 3 mm dir-AP run is
upsampled to 2 mm (cubic spline) and its 21 volumes are tiled to ``--volumes``
volumes, every copy's b-vectors rotated by a different random rotation (the
content does not need to be realistic for a memory measurement).

The run's process tree (CLI, MultiProc workers, antsRegistration) is sampled
every 0.2 s from ``/proc``; the peak of the summed resident set size (RSS) and
the peak of the largest single process are reported, in MB.  The settings are
logged before the run; the exit code is non-zero when the run fails or when the
peak total RSS exceeds the run's ``--mem-mb`` (said in one line on stderr).

Usage::

    python tools/measure_memory.py /work/shared/data/ds-xa30 /tmp/mem --mem-mb 3000 -- --sloppy --passes 1
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nb
import numpy as np

LOGGER = logging.getLogger("measure_memory")


def make_large_dataset(ds_xa30: Path, bids: Path, n_volumes: int = 111, voxel_mm: float = 2.0) -> Path:
    """Write a single-run BIDS dataset of ``n_volumes`` volumes at ``voxel_mm`` isotropic."""
    from scipy import ndimage as ndi
    from scipy.spatial.transform import Rotation

    src = ds_xa30 / "sub-01" / "dwi" / "sub-01_dir-AP_dwi"
    img = nb.load(f"{src}.nii.gz")
    bvals = np.loadtxt(f"{src}.bval")
    bvecs = np.loadtxt(f"{src}.bvec").T
    zoom = np.array(img.header.get_zooms()[:3]) / voxel_mm
    shape = tuple(int(round(s * z)) for s, z in zip(img.shape[:3], zoom, strict=True))
    data = np.empty((*shape, n_volumes), dtype=np.int16)
    rng = np.random.default_rng(0)
    out_bvals, out_bvecs = [], []
    cache: dict[int, np.ndarray] = {}
    for i in range(n_volumes):
        j, copy = i % img.shape[3], i // img.shape[3]
        if j not in cache:
            vol = np.asanyarray(img.dataobj[..., j], dtype=np.float32)
            cache[j] = np.clip(ndi.zoom(vol, zoom, order=3)[tuple(slice(0, s) for s in shape)], 0, 32767)
        data[..., i] = cache[j].astype(np.int16)
        rot = Rotation.random(random_state=int(rng.integers(1 << 31))).as_matrix() if copy else np.eye(3)
        out_bvals.append(bvals[j])
        out_bvecs.append(rot @ bvecs[j])
    affine = img.affine.copy()
    affine[:3, :3] = affine[:3, :3] / zoom
    hdr = img.header.copy()
    out = nb.Nifti1Image(data, affine, hdr)
    out.header.set_zooms((voxel_mm,) * 3 + (img.header.get_zooms()[3],))
    folder = bids / "sub-01" / "dwi"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ds_xa30 / "dataset_description.json", bids / "dataset_description.json")
    stem = folder / "sub-01_dir-AP_dwi"
    out.to_filename(f"{stem}.nii.gz")
    Path(f"{stem}.bval").write_text(" ".join(f"{b:g}" for b in out_bvals) + "\n")
    np.savetxt(f"{stem}.bvec", np.array(out_bvecs).T, fmt="%.8f")
    shutil.copy(f"{src}.json", f"{stem}.json")
    return bids


def _tree_rss(root: int) -> tuple[int, int, int]:
    """(sum of RSS, largest RSS, number of processes) of ``root`` and its descendants, in bytes."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        pid = int(status.parent.name)
        children.setdefault(int(fields["PPid"]), []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    values = [rss.get(pid, 0) for pid in tree]
    return sum(values), max(values), len(tree)


def measure(cmd: list[str], interval: float = 0.2) -> dict:
    """Run ``cmd``; return its exit code, wall time and peak memory (MB)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd)
    peak_sum = peak_one = peak_n = 0
    while proc.poll() is None:
        total, largest, n = _tree_rss(proc.pid)
        peak_sum, peak_one, peak_n = max(peak_sum, total), max(peak_one, largest), max(peak_n, n)
        time.sleep(interval)
    return {
        "exit_code": proc.returncode,
        "wall_s": round(time.monotonic() - start, 1),
        "peak_total_rss_mb": round(peak_sum / 2**20),
        "peak_single_process_rss_mb": round(peak_one / 2**20),
        "max_processes": peak_n,
    }


def over_limit(result: dict, mem_mb: int) -> str | None:
    """Compare a measurement with the memory limit given to the run.

    Parameters
    ----------
    result : dict
        Output of :func:`measure` (``peak_total_rss_mb`` is used).
    mem_mb : int
        The ``--mem-mb`` the run was given.

    Returns
    -------
    str or None
        A one-line explanation when the peak total RSS of the process tree exceeds
        ``mem_mb``; ``None`` when it stays within it.
    """
    peak = int(result["peak_total_rss_mb"])
    if peak <= mem_mb:
        return None
    return f"peak total RSS {peak} MB exceeds --mem-mb {mem_mb} (by {peak - mem_mb} MB)"


def main(argv: list[str] | None = None) -> int:
    """Build the dataset (unless present), run the CLI under the sampler, print JSON.

    Arguments after ``--`` are passed to ``dmriprep-motion``.  Returns 0 when the run
    succeeds within ``--mem-mb``; 1 when it fails or its peak exceeds ``--mem-mb``.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("ds_xa30", type=Path)
    parser.add_argument("base", type=Path, help="folder for the dataset, outputs and work directory")
    parser.add_argument("--volumes", type=int, default=111)
    parser.add_argument("--mem-mb", type=int, default=3000)
    parser.add_argument("--nprocs", type=int, default=2)
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    opts = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    opts.extra = extra
    if any(arg.split("=", 1)[0] in ("--mem-mb", "--mem_mb", "--nprocs", "--n-cpus") for arg in extra):
        parser.error("give --mem-mb and --nprocs before '--' (they are compared with the measurement)")
    bids = opts.base / "bids"
    if not (bids / "dataset_description.json").exists():
        make_large_dataset(opts.ds_xa30, bids, opts.volumes)
    img = nb.load(bids / "sub-01" / "dwi" / "sub-01_dir-AP_dwi.nii.gz")
    cmd = [sys.executable, "-m", "dmriprep_motion", str(bids), str(opts.base / "out"), "participant",
           "-w", str(opts.base / "work"), "--nprocs", str(opts.nprocs), "--mem-mb", str(opts.mem_mb),
           "--skip-bids-validation", *opts.extra]  # fmt: skip
    LOGGER.info(
        "settings: %d volumes of %s mm (%s), --nprocs %d --mem-mb %d, extra arguments: %s",
        img.shape[3],
        "x".join(f"{z:g}" for z in img.header.get_zooms()[:3]),
        "x".join(map(str, img.shape[:3])),
        opts.nprocs,
        opts.mem_mb,
        " ".join(opts.extra) or "(none)",
    )
    LOGGER.info("command: %s", " ".join(cmd))
    result = measure(cmd)
    result.update(
        shape=list(img.shape),
        zooms=[round(float(z), 2) for z in img.header.get_zooms()],
        float32_copy_mb=round(float(np.prod(img.shape)) * 4 / 2**20),
        mem_mb=opts.mem_mb,
        nprocs=opts.nprocs,
        extra=opts.extra,
    )
    exceeded = over_limit(result, opts.mem_mb)
    result["within_mem_mb"] = exceeded is None
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    if result["exit_code"] != 0:
        LOGGER.error("the run failed with exit code %d", result["exit_code"])
        return 1
    if exceeded:
        LOGGER.error("%s", exceeded)
        return 1
    LOGGER.info("peak total RSS %d MB is within --mem-mb %d", result["peak_total_rss_mb"], opts.mem_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
