"""Accuracy and resource metrics of a motion-correction run against a known ground truth.

Pure NumPy/NiBabel and the standard library (``/proc`` for memory); no Nipype.
"""

from __future__ import annotations

import os
import resource
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dmriprep_motion.gradients import fsl_to_ras
from dmriprep_motion.motion import polar_decomposition, transform_errors


def bvec_angular_error(estimated: np.ndarray, truth: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Angle (deg) between estimated and true FSL b-vectors (sign-invariant; NaN for b0 rows)."""
    est = fsl_to_ras(np.asarray(estimated, dtype=float), affine)
    tru = fsl_to_ras(np.asarray(truth, dtype=float), affine)
    ne, nt = np.linalg.norm(est, axis=1), np.linalg.norm(tru, axis=1)
    valid = (ne > 1e-8) & (nt > 1e-8)
    out = np.full(len(est), np.nan)
    cos = np.abs((est[valid] * tru[valid]).sum(axis=1)) / (ne[valid] * nt[valid])
    out[valid] = np.degrees(np.arccos(np.clip(cos, 0.0, 1.0)))
    return out


def accuracy(
    estimated: np.ndarray,
    truth: np.ndarray,
    points: np.ndarray,
    *,
    volumes: np.ndarray | None = None,
    est_bvecs: np.ndarray | None = None,
    true_bvecs: np.ndarray | None = None,
    affine: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> dict:
    """Per-volume and per-run errors of estimated (N, 4, 4) transforms against the truth.

    Parameters
    ----------
    estimated, truth : (N, 4, 4) arrays
        RAS+ reference → volume transforms.
    points : (M, 3) array
        RAS+ coordinates of the brain voxels (reference frame).
    volumes : array of int, optional
        Volumes to score (default all but the reference, volume 0).
    est_bvecs, true_bvecs, affine : optional
        Output and head-frame FSL b-vectors, and the image affine, for the angular error.
    groups : (N,) array of int, optional
        A label per volume (e.g. its shell, :func:`dmriprep_motion.gradients.shell_labels`):
        the common offset is then also removed per group (see below).

    Returns
    -------
    dict
        ``per_volume``: arrays ``mean_disp``, ``max_disp`` (mm), ``rot_err`` (deg),
        ``trans_err`` (mm) and ``bvec_err`` (deg) over ``volumes``; and summary numbers
        ``median_mean_disp``, ``max_mean_disp``, ``rmse_mean_disp``, ``max_max_disp``,
        ``median_rot_err``, ``rmse_rot_err``, ``median_trans_err``, ``rmse_trans_err``,
        ``median_bvec_err``, ``max_bvec_err``, ``n_volumes``; ``common_offset_disp`` (mm, mean
        displacement of the average residual transform: a frame bias shared by all volumes) and
        ``median_mean_disp_offset_removed`` (the median error once that offset is removed);
        with ``groups``, ``median_mean_disp_group_offsets_removed`` (each group's own common
        offset removed: what is left is volume-to-volume error within a shell, free of how the
        shells were tied to the b0) and ``group_offsets_disp`` (label → mm).
    """
    est = np.asarray(estimated, dtype=float).reshape(-1, 4, 4)
    tru = np.asarray(truth, dtype=float).reshape(-1, 4, 4)
    if volumes is None:
        volumes = np.arange(1, len(tru))
    volumes = np.asarray(volumes, dtype=int)
    per = transform_errors(est[volumes], tru[volumes], points)
    if est_bvecs is not None and true_bvecs is not None and affine is not None:
        per["bvec_err"] = bvec_angular_error(
            np.asarray(est_bvecs)[volumes], np.asarray(true_bvecs)[volumes], affine
        )
    else:
        per["bvec_err"] = np.full(len(volumes), np.nan)

    def rmse(x: np.ndarray) -> float:
        return float(np.sqrt(np.mean(np.square(x)))) if x.size else float("nan")

    # Common offset: the average residual ``truth⁻¹ @ estimate`` (a rigid frame difference
    # between the method's reference and the first b0, shared by all volumes).  Errors after
    # removing it separate a frame bias from volume-to-volume inaccuracy.
    offset = _common_offset(est[volumes], tru[volumes])
    relative = transform_errors(est[volumes] @ np.linalg.inv(offset), tru[volumes], points)
    bvec = per["bvec_err"][np.isfinite(per["bvec_err"])]
    extra = {}
    if groups is not None:
        labels = np.asarray(groups)[volumes]
        removed, offsets = np.empty(volumes.size), {}
        for label in np.unique(labels):
            sel = labels == label
            group_offset = _common_offset(est[volumes[sel]], tru[volumes[sel]])
            offsets[int(label)] = float(transform_errors(group_offset, np.eye(4), points)["mean_disp"][0])
            removed[sel] = transform_errors(
                est[volumes[sel]] @ np.linalg.inv(group_offset), tru[volumes[sel]], points
            )["mean_disp"]
        extra = {
            "median_mean_disp_group_offsets_removed": float(np.median(removed)),
            "group_offsets_disp": offsets,
        }
    return {
        **extra,
        "per_volume": per,
        "n_volumes": int(volumes.size),
        "median_mean_disp": float(np.median(per["mean_disp"])),
        "median_mean_disp_offset_removed": float(np.median(relative["mean_disp"])),
        "common_offset_disp": float(transform_errors(offset, np.eye(4), points)["mean_disp"][0]),
        "max_mean_disp": float(per["mean_disp"].max()),
        "rmse_mean_disp": rmse(per["mean_disp"]),
        "max_max_disp": float(per["max_disp"].max()),
        "median_rot_err": float(np.median(per["rot_err"])),
        "rmse_rot_err": rmse(per["rot_err"]),
        "median_trans_err": float(np.median(per["trans_err"])),
        "rmse_trans_err": rmse(per["trans_err"]),
        "median_bvec_err": float(np.median(bvec)) if bvec.size else float("nan"),
        "max_bvec_err": float(bvec.max()) if bvec.size else float("nan"),
    }


def _common_offset(estimated: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Rigid average of the residuals ``truth⁻¹ @ estimate`` (a frame bias shared by all of them)."""
    residuals = np.linalg.inv(truth) @ estimated
    offset = np.eye(4)
    offset[:3, :3] = polar_decomposition(residuals.mean(axis=0))[0]
    offset[:3, 3] = residuals[:, :3, 3].mean(axis=0)
    return offset


# ------------------------------------------------------------------------------- resources
def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def tree_rss(pid: int) -> int:
    """Resident memory (bytes) of process ``pid`` and all its descendants (Linux ``/proc``)."""
    children = _children_map()
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


class PeakMemory:
    """Sample the RSS of a process tree in a thread; ``peak`` is the maximum seen (bytes).

    It also samples the machine's 1-minute load average: ``load`` is its mean over the samples
    (the measured processes count too, so a quiet 2-core run shows about 2).
    """

    def __init__(self, pid: int | None = None, interval: float = 0.25) -> None:
        self.pid = os.getpid() if pid is None else pid
        self.interval = interval
        self.peak = 0
        self._loads: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._loads.append(os.getloadavg()[0])
            self._stop.wait(self.interval)

    @property
    def load(self) -> float:
        """Mean 1-minute load average while sampling (0 before the first sample)."""
        return float(np.mean(self._loads)) if self._loads else 0.0

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Measured:
    """Result of :func:`run_measured`."""

    returncode: int
    wall_time: float  #: seconds
    peak_rss: int  #: bytes, whole process tree
    stderr_tail: str
    cpu_time: float = 0.0  #: user + system seconds of the process and every descendant it waited for
    load: float = 0.0  #: mean 1-minute load average of the machine during the run


def run_measured(
    cmd: list[str],
    *,
    env: dict | None = None,
    cwd: str | Path | None = None,
    log: str | Path | None = None,
    timeout: float | None = None,
) -> Measured:
    """Run ``cmd`` as a subprocess; measure its wall time and the peak RSS of its process tree."""
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT if log else None)
    monitor = PeakMemory(proc.pid)
    with monitor:
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
            code = -9 if code == 0 else code
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if log:
        out.close()
        tail = "\n".join(Path(log).read_text(errors="replace").splitlines()[-5:])
    else:
        tail = ""
    return Measured(code, wall, monitor.peak, tail, cpu_time=cpu, load=monitor.load)
