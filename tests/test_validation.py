"""BIDS validation with bids-validator-deno (a ``test`` extra): input, and the derivatives we write."""

from __future__ import annotations

import pytest

from dmriprep_motion.validation import validation_errors, validator_executable
from tests._datasets import small_dataset
from tests.conftest import tree_digest


@pytest.fixture(scope="module")
def validator():
    if validator_executable() is None:
        pytest.fail("bids-validator-deno is not installed: pip install '.[test]'")


def test_xa30_is_valid(validator, ds_xa30):
    assert validation_errors(ds_xa30) == []


@pytest.mark.parametrize("skip", [False, True])
def test_invalid_input_is_refused_unless_skipped(validator, ds_xa30, tmp_path, capsys, skip):
    from dmriprep_motion.cli.run import run

    bids = small_dataset(ds_xa30, tmp_path / "bids", n_volumes=4)
    assert validation_errors(bids) == []
    (bids / "sub-01" / "dwi" / "sub-01_dir-AP_bogus.txt").write_text("not BIDS\n")
    before = tree_digest(bids)
    args = [str(bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work")]
    args.append("--boilerplate-only")
    code = run(args + (["--skip-bids-validation"] if skip else []))
    err = capsys.readouterr().err
    if skip:
        assert code == 0
    else:
        assert code == 16
        assert err.strip().splitlines()[-1].split("] ", 1)[1] == (
            "the input is not valid BIDS (1 error(s); first: NOT_INCLUDED "
            "/sub-01/dwi/sub-01_dir-AP_bogus.txt); fix it or use --skip-bids-validation"
        )
        assert not (tmp_path / "out").exists()
    assert tree_digest(bids) == before


def _slow_validator(tmp_path, monkeypatch, seconds: int = 30):
    """A stand-in validator that takes ``seconds`` and then reports one error."""
    import stat

    from dmriprep_motion import validation

    report = '{"issues": {"issues": [{"severity": "error", "code": "SLOW", "location": "/x"}]}}'
    exe = tmp_path / "bids-validator-deno"
    exe.write_text(f"#!/bin/sh\nsleep {seconds}\necho '{report}'\nexit 1\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(validation, "validator_executable", lambda: str(exe))


def test_validation_runs_in_the_background_and_is_stopped(tmp_path, monkeypatch):
    """Started, the validator runs while the caller works; stopped, it does not outlive the caller."""
    import time

    from dmriprep_motion.bids import InputError
    from dmriprep_motion.validation import InputValidation

    _slow_validator(tmp_path, monkeypatch, seconds=1)
    start = time.monotonic()
    pending = InputValidation(tmp_path)
    assert time.monotonic() - start < 0.5  # started, not awaited
    time.sleep(1.2)  # the caller's own work
    with pytest.raises(InputError) as err:
        pending.check()
    assert err.value.code == 16 and "first: SLOW /x" in str(err.value)
    assert time.monotonic() - start < 2.5  # the validator's second overlapped the caller's

    _slow_validator(tmp_path, monkeypatch, seconds=30)
    pending = InputValidation(tmp_path)
    process = pending._validator._proc
    pending.stop()
    assert process.wait(timeout=5) != 0  # killed, not left running for 30 s
    pending.check()  # nothing left to wait for


def test_no_input_does_not_wait_for_the_validator(tmp_path, monkeypatch):
    """A dataset without DWI exits with 66 at once, the validator still running is killed."""
    import time

    from dmriprep_motion.cli.run import run

    _slow_validator(tmp_path, monkeypatch, seconds=30)
    bids = tmp_path / "bids"
    (bids / "sub-01" / "anat").mkdir(parents=True)
    (bids / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    start = time.monotonic()
    assert run([str(bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work")]) == 66
    assert time.monotonic() - start < 10
