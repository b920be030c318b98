"""Shared fixtures: the real ds-xa30 dataset and one end-to-end run reused by many tests."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DS_XA30 = (ROOT / ".." / "shared" / "data" / "ds-xa30").resolve()

#: Settings of the shared end-to-end run (fast, still real: three passes of ANTs). The anchor is
#: pinned to the deterministic median, which the default (auto) also picks for ds-xa30's b=2500
#: shell: there the cross-contrast (b0 vs DWI) registration is ill-determined (±0.5-1 mm pass to
#: pass, measured). The registration anchor (auto's choice at
#: b=1000) is tested against ground truth on the phantom (test_simulate.py, demo).
E2E_ARGS = ["--sloppy", "--nprocs", "2", "--passes", "3", "--anchor", "median", "--seed", "42"]


def tree_digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file below ``folder`` (and its mode), keyed by relative path."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[path.relative_to(folder).as_posix()] = f"{digest}:{oct(path.stat().st_mode)}"
    return out


@pytest.fixture(autouse=True)
def _working_directory_is_restored():
    """Fail a test that leaves the process in another working directory (later tests would run
    there, or nowhere once pytest removes that test's temporary folder)."""
    before = os.getcwd()
    yield
    try:
        after = os.getcwd()
    except FileNotFoundError:
        after = None
    os.chdir(before)
    assert after == before, f"the test left the working directory at {after}; use monkeypatch.chdir"


@pytest.fixture(scope="session")
def ds_xa30() -> Path:
    """The shared real dataset (required: the suite fails, not skips, without it)."""
    if not (DS_XA30 / "dataset_description.json").is_file():
        pytest.fail(f"ds-xa30 not found at {DS_XA30} (expected ../shared/data/ds-xa30)")
    return DS_XA30


@pytest.fixture(scope="session", autouse=True)
def _ants_on_path():
    """Make sure the antsRegistration console script of this environment is found first."""
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    assert shutil.which("antsRegistration"), "antsRegistration console script is not installed"


@pytest.fixture(scope="session")
def xa30_run(ds_xa30, tmp_path_factory):
    """Run the CLI once on ds-xa30 sub-01 (both runs); return (output_dir, work_dir, digest_before)."""
    from dmriprep_motion.cli.run import run

    base = tmp_path_factory.mktemp("xa30_e2e")
    before = tree_digest(ds_xa30)
    out, work = base / "out", base / "work"
    code = run(
        [str(ds_xa30), str(out), "participant", "--participant-label", "01", "-w", str(work), *E2E_ARGS]
    )
    assert code == 0, "end-to-end run on ds-xa30 failed"
    return out, work, before
