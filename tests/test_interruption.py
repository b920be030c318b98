"""Interrupted runs resume without recomputing; participants run at once share an output folder."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dmriprep_motion.bids import DERIVATIVE_SUFFIXES, dataset_description
from tests._datasets import FAST_ARGS, small_dataset
from tests.conftest import ROOT, tree_digest

STEM = "sub-{sub}/dwi/sub-{sub}_dir-AP"
#: Every derivative of a run (one table for the pipeline and this comparison).
SUFFIXES = list(DERIVATIVE_SUFFIXES.values())


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cmd(bids: Path, out: Path, work: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dmriprep_motion", str(bids), str(out), "participant", "-w", str(work),
            *FAST_ARGS, *extra]  # fmt: skip


def _registrations(work: Path) -> dict[str, int]:
    """Finished per-volume registrations in a work directory: result file -> mtime (ns)."""
    found = work.rglob("register/mapflow/_register*/result_*.pklz")
    return {p.relative_to(work).as_posix(): p.stat().st_mtime_ns for p in found}


def _start_and_stop(cmd: list[str], work: Path, n_done: int, how: str) -> int:
    """Start the CLI; once ``n_done`` registrations are finished, stop it ``how``; return its exit code."""
    proc = subprocess.Popen(
        cmd, env=_env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 600
    while len(_registrations(work)) < n_done:
        assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "timed out waiting for registrations"
        time.sleep(0.2)
    if how == "SIGTERM":  # to the main process only, as `kill PID` or a scheduler's first notice
        proc.send_signal(signal.SIGTERM)
    else:  # the whole process group, as the OOM killer or `scancel --signal=KILL` would
        os.killpg(proc.pid, signal.SIGKILL)
    code = proc.wait(timeout=120)
    proc.stderr.close()
    return code


def _digest(path: Path, source_from: str = "", source_to: str = "") -> str:
    """SHA-256 of a derivative: decompressed bytes (NIfTI header and data) for ``.gz`` files.

    The gzip header holds a modification time and the original name, which are not
    the result; everything inside is compared.  ``source_from`` is replaced by
    ``source_to`` (once, and it must occur) to compare the sidecars of two participants
    whose ``Sources`` legitimately name different input files.
    """
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    if source_from:
        assert raw.count(source_from.encode()) == 1, path
        raw = raw.replace(source_from.encode(), source_to.encode())
    return hashlib.sha256(raw).hexdigest()


def _same_outputs(out_a: Path, sub_a: str, out_b: Path, sub_b: str) -> None:
    """Derivatives of two runs are byte-identical (every image, header included, and every text file)."""
    for suffix in SUFFIXES:
        a = out_a / f"{STEM.format(sub=sub_a)}_{suffix}"
        b = out_b / f"{STEM.format(sub=sub_b)}_{suffix}"
        rename = ("", "")
        if suffix == "desc-preproc_dwi.json" and sub_a != sub_b:  # "Sources": the participant's own input
            rename = (
                f'"bids:raw:{STEM.format(sub=sub_b)}_dwi.nii.gz"',
                f'"bids:raw:{STEM.format(sub=sub_a)}_dwi.nii.gz"',
            )
        assert _digest(a) == _digest(b, *rename), suffix
    for out, sub in ((out_a, sub_a), (out_b, sub_b)):  # nothing escapes the comparison
        folder = out / f"sub-{sub}" / "dwi"
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            f"{Path(STEM.format(sub=sub)).name}_{suffix}" for suffix in SUFFIXES
        )


@pytest.fixture(scope="module")
def dataset(ds_xa30, tmp_path_factory):
    bids = small_dataset(ds_xa30, tmp_path_factory.mktemp("interrupt") / "bids", subjects=("01", "02"))
    return bids, tree_digest(bids)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """An uninterrupted run of sub-01 (same seed and settings)."""
    bids, _ = dataset
    base = tmp_path_factory.mktemp("reference")
    start = time.monotonic()
    proc = subprocess.run(
        _cmd(bids, base / "out", base / "work", "--participant-label", "01"),
        env=_env(), capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return base / "out", time.monotonic() - start


@pytest.mark.slow
def test_kill_and_resume(dataset, reference, tmp_path):
    bids, digest = dataset
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = _cmd(bids, out, work, "--participant-label", "01")
    preproc = out / f"{STEM.format(sub='01')}_desc-preproc_dwi.nii.gz"

    # 1. SIGTERM to the main process: exit 143, no orphaned workers, nothing that looks complete.
    code = _start_and_stop(cmd, work, 3, "SIGTERM")
    assert code == 143
    time.sleep(1)
    assert not _processes_of(work), "processes left running after SIGTERM"
    assert not preproc.exists()
    first = _registrations(work)
    assert len(first) >= 3

    # 2. Resume, then SIGKILL the whole process group a few registrations later.
    code = _start_and_stop(cmd, work, len(first) + 3, "SIGKILL")
    assert code == -signal.SIGKILL
    assert not preproc.exists()
    second = _registrations(work)
    assert {k: second[k] for k in first} == first  # finished volumes were not recomputed

    # 3. Resume to the end: same outputs as the uninterrupted run, input untouched.
    start = time.monotonic()
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr
    resumed = time.monotonic() - start
    final = _registrations(work)
    assert {k: final[k] for k in second} == second
    assert len(final) == 10  # one per diffusion-weighted volume
    _same_outputs(reference[0], "01", out, "01")
    for name in ("dataset_description.json", ".bidsignore", "logs/CITATION.md"):
        assert _digest(reference[0] / name) == _digest(out / name), name
    assert not list(out.rglob("*.tmp"))
    assert tree_digest(bids) == digest
    print(f"uninterrupted {reference[1]:.1f} s; last resume {resumed:.1f} s")


@pytest.mark.slow
def test_ctrl_c_stops_every_process_quietly(dataset, tmp_path):
    """Ctrl-C reaches every process of the terminal's group: exit 130, one line, no worker
    tracebacks, nothing left running, no desc-preproc file."""
    bids, _ = dataset
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.Popen(
        _cmd(bids, out, work, "--participant-label", "01"),
        env=_env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while len(_registrations(work)) < 2:
        assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "timed out waiting for registrations"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # as the terminal does
    code = proc.wait(timeout=120)
    err = proc.stderr.read()
    proc.stderr.close()
    assert code == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1].endswith("interrupted; re-run with the same --work-dir to resume")
    time.sleep(1)
    assert not _processes_of(work), "processes left running after Ctrl-C"
    assert not list(out.rglob("*desc-preproc*"))


def _processes_of(work: Path) -> list[int]:
    """Processes whose command line mentions ``work`` (a run that should have ended)."""
    alive = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(work) in text and state != "Z":
            alive.append(int(cmdline.parent.name))
    return alive


@pytest.mark.slow
def test_two_participants_at_once_into_one_output(dataset, reference, tmp_path):
    """Job arrays: one process per participant, same output folder, separate work folders."""
    bids, digest = dataset
    out = tmp_path / "out"
    procs = [
        subprocess.Popen(
            _cmd(bids, out, tmp_path / f"work{sub}", "--participant-label", sub),
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for sub in ("01", "02")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err
    assert json.loads((out / "dataset_description.json").read_text()) == dataset_description(bids.resolve())
    assert "sub-*/log" in (out / ".bidsignore").read_text()
    assert "Head motion was estimated" in (out / "logs" / "CITATION.md").read_text()
    for sub in ("01", "02"):
        assert (out / f"sub-{sub}.html").is_file()
        _same_outputs(reference[0], "01", out, sub)  # same data, same seed: same result
    assert not list(out.rglob("*.tmp"))
    assert tree_digest(bids) == digest


@pytest.mark.slow
def test_outputs_pass_bids_validator(reference):
    """The derivatives (with our .bidsignore) have no validator error (warnings allowed)."""
    from dmriprep_motion.validation import validation_errors, validator_executable

    if validator_executable() is None:
        pytest.fail("bids-validator-deno is not installed: pip install '.[test]'")
    assert validation_errors(reference[0]) == []
