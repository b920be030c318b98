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
