"""Bad input: one clear line, the BIDS-Apps exit code, no traceback, nothing written, input untouched."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from tests.conftest import ROOT, tree_digest

N_VOLS = 8
BVALS = [0, 1000, 1000, 1000, 1000, 1000, 1000, 1000]
BVECS = np.array(
    [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.7071, 0.7071, 0], [0.7071, 0, 0.7071],
     [0, 0.7071, 0.7071], [0.5774, 0.5774, 0.5774]]
)  # fmt: skip
STEM = "sub-01/dwi/sub-01_dwi"


def _write_bvec(path: Path, vecs: np.ndarray, fmt: str = "g") -> None:
    """Write (N, 3) gradient directions as a 3-row FSL ``.bvec`` file."""
    path.write_text("\n".join(" ".join(f"{v:{fmt}}" for v in row) for row in np.asarray(vecs).T) + "\n")


def _dataset(root: Path, data: np.ndarray | None = None, bvals=BVALS, bvecs=BVECS) -> Path:
    """A tiny, valid single-subject dataset (8×8×5 voxels, ``N_VOLS`` volumes)."""
    rng = np.random.default_rng(0)
    if data is None:
        data = (rng.random((8, 8, 5, len(bvals))) * 1000).astype(np.int16)
    (root / "sub-01" / "dwi").mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.9.0"}))
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    nb.Nifti1Image(data, affine).to_filename(root / f"{STEM}.nii.gz")
    (root / f"{STEM}.bval").write_text(" ".join(str(b) for b in bvals) + "\n")
    _write_bvec(root / f"{STEM}.bvec", bvecs)
    (root / f"{STEM}.json").write_text(json.dumps({"PhaseEncodingDirection": "j-", "TotalReadoutTime": 0.05}))
    return root


def _break(bids: Path, case: str) -> tuple[list[str], int, str]:
    """Break ``bids`` as ``case`` says; return extra CLI args, expected code and error line."""
    dwi, bval, bvec = (bids / f"{STEM}{ext}" for ext in (".nii.gz", ".bval", ".bvec"))
    args: list[str] = []
    if case == "missing_dir":
        import shutil

        shutil.rmtree(bids)
        return args, 66, f"BIDS directory not found: {bids}"
    if case == "no_description":
        (bids / "dataset_description.json").unlink()
        return args, 16, f"not a BIDS dataset (no dataset_description.json): {bids}"
    if case == "bad_description":
        (bids / "dataset_description.json").write_text("{not json")
        return (
            args,
            16,
            (
                "invalid dataset_description.json (Expecting property name enclosed in double quotes: "
                f"line 1 column 2 (char 1)): {bids}"
            ),
        )
    if case == "no_participants":
        import shutil

        shutil.rmtree(bids / "sub-01")
        return args, 66, f"no participants (sub-*) found in {bids}"
    if case == "no_dwi":
        (bids / "sub-02" / "anat").mkdir(parents=True)
        nb.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)).to_filename(
            bids / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
        )
        return ["--participant-label", "02"], 66, "no DWI series in the dataset for sub-02"
    if case == "unknown_participant":
        return ["--participant-label", "sub-99"], 66, "participant(s) not found: sub-99 (available: sub-01)"
    if case == "filter_selects_nothing":
        filt = bids.parent / "filter.json"
        filt.write_text(json.dumps({"dwi": {"direction": "LR"}}))
        return ["--bids-filter-file", str(filt)], 66, "no DWI series matching the filters for sub-01"
    if case == "filter_bad_value":  # pybids' database cannot compare with an object
        filt = bids.parent / "filter.json"
        filt.write_text(json.dumps({"dwi": {"run": {"a": 1}}}))
        return (
            ["--bids-filter-file", str(filt)],
            64,
            "invalid BIDS filter: the value of 'run' must be a string, number, boolean, null or a list "
            'of them (got {"a": 1})',
        )
    if case == "description_not_object":
        (bids / "dataset_description.json").write_text("[]")
        return args, 16, f"invalid dataset_description.json (not a JSON object): {bids}"
    if case == "malformed_sidecar":  # pybids raises OSError while indexing
        (bids / f"{STEM}.json").write_text("{bad json")
        return (
            args,
            16,
            "invalid JSON sidecar sub-01/dwi/sub-01_dwi.json (Expecting property name enclosed in double "
            "quotes: line 1 column 2 (char 1))",
        )
    if case == "sidecar_not_object":  # pybids raises TypeError while indexing
        (bids / f"{STEM}.json").write_text("[1, 2]")
        return args, 16, "invalid JSON sidecar sub-01/dwi/sub-01_dwi.json (not a JSON object)"
    if case == "malformed_inherited_sidecar":  # a top-level sidecar that applies to every DWI
        (bids / "dwi.json").write_text('{"TotalReadoutTime": 0.05,}')
        return (
            args,
            16,
            "invalid JSON sidecar dwi.json (Expecting property name enclosed in double quotes: "
            "line 1 column 27 (char 26))",
        )
    if case == "filter_not_json":
        filt = bids.parent / "filter.json"
        filt.write_text("dwi: {direction: AP}")
        return (
            ["--bids-filter-file", str(filt)],
            64,
            (f"cannot read the BIDS filter file {filt}: Expecting value: line 1 column 1 (char 0)"),
        )
    if case == "missing_bval":
        bval.unlink()
        return args, 16, "no .bval file for sub-01_dwi.nii.gz"
    if case == "missing_bvec":
        bvec.unlink()
        return args, 16, "no .bvec file for sub-01_dwi.nii.gz"
    if case == "empty_bval":
        bval.write_text("\n")
        return args, 16, f"bval file is empty: {bval}"
    if case == "empty_bvec":
        bvec.write_text("")
        return args, 16, f"bvec file is empty: {bvec}"
    if case == "malformed_bval":
        bval.write_text("0 1000 abc 1000 1000 1000 1000 1000\n")
        return args, 16, f"bval file is malformed (could not convert string to float: 'abc'): {bval}"
    if case == "malformed_bvec":
        bvec.write_text(bvec.read_text().replace("0.7071", "0,70.71x", 1))
        return args, 16, f"bvec file is malformed (could not convert string to float: '70.71x'): {bvec}"
    if case == "ragged_bvec":
        bvec.write_text(bvec.read_text().rsplit(" ", 1)[0] + "\n")
        return args, 16, f"bvec file has rows of different lengths: {bvec}"
    if case == "bval_count":
        bval.write_text(" ".join(str(b) for b in BVALS[:-1]) + "\n")
        return args, 16, "sub-01_dwi.bval lists 7 b-values but the DWI has 8 volumes"
    if case == "bvec_count":
        _write_bvec(bvec, BVECS[:-1])
        return args, 16, f"bvec file has shape 3×7, expected 3×8: {bvec}"
    if case == "bvec_not_unit":
        _write_bvec(bvec, BVECS * 1.5)
        return args, 16, "sub-01_dwi.bvec: b-vector 1 has norm 1.500 (more than 0.1 away from 1)"
    if case == "bvec_nan":
        vecs = BVECS.copy()
        vecs[4] = np.nan
        _write_bvec(bvec, vecs)
        return args, 16, "sub-01_dwi.bvec: b-vector 4 is not finite (NaN/Inf)"
    if case == "negative_bval":
        bval.write_text("0 1000 -1000 1000 1000 1000 1000 1000\n")
        return args, 16, f"bval file contains negative b-values: {bval}"
    if case == "no_b0":
        bval.write_text(" ".join(["1000"] * N_VOLS) + "\n")
        return (
            args,
            16,
            ("no b0 volume (b <= 50) in sub-01_dwi.bval; a b0 reference is required (see --b0-threshold)"),
        )
    if case == "all_b0":
        bval.write_text(" ".join(["0"] * N_VOLS) + "\n")
        return args, 16, "all volumes are b0 in sub-01_dwi.bval: nothing to correct"
    if case == "too_few_directions":
        return (
            ["--model", "dki"],
            64,
            "model 'dki' needs at least 16 distinct gradient directions, or 15 each acquired twice "
            "(found 7 distinct directions in 7 diffusion-weighted volumes); try --model avgdwi or b0",
        )
    if case == "too_few_distinct_directions_dti":  # 7 volumes, but x, y, z repeated
        vecs = np.array([[0, 0, 0]] + [[1, 0, 0], [0, 1, 0], [0, 0, 1]] * 2 + [[-1, 0, 0]], float)
        _write_bvec(bvec, vecs)
        return (
            ["--model", "dti"],
            64,
            "model 'dti' needs at least 7 distinct gradient directions, or 6 each acquired twice "
            "(found 3 distinct directions in 7 diffusion-weighted volumes); try --model avgdwi or b0",
        )
    if case == "too_few_distinct_directions_gp":  # 7 volumes in 2 directions (one nearly repeated)
        vecs = np.array([[0, 0, 0]] + [[1, 0, 0], [0, 1, 0]] * 3 + [[0.9999, 0.0141, 0]], float)
        _write_bvec(bvec, vecs)
        return (
            ["--model", "gp"],
            64,
            "model 'gp' needs at least 4 distinct gradient directions, or 3 each acquired twice "
            "(found 2 distinct directions in 7 diffusion-weighted volumes); try --model avgdwi or b0",
        )
    if case == "coplanar_directions_dti":  # 7 distinct directions, all in the x-y plane
        angles = np.arange(7) * np.pi / 7
        vecs = np.vstack([[0, 0, 0], np.column_stack([np.cos(angles), np.sin(angles), np.zeros(7)])])
        _write_bvec(bvec, vecs, ".6f")
        return (
            ["--model", "dti"],
            64,
            "model 'dti' cannot be fit leaving one volume out: its 7 distinct gradient directions and "
            "1 shell(s) do not determine it (e.g. directions in one plane, or no b0); "
            "try --model gp, avgdwi or b0",
        )
    if case == "two_volumes":
        nb.Nifti1Image(np.ones((8, 8, 5, 2), np.int16), np.eye(4)).to_filename(dwi)
        return args, 16, "sub-01_dwi.nii.gz has only 2 volumes (at least 3 are required)"
    if case == "three_d":
        nb.Nifti1Image(np.zeros((8, 8, 5), np.int16), np.eye(4)).to_filename(dwi)
        return args, 16, "sub-01_dwi.nii.gz is 3D (shape 8x8x5), a 4D series is required"
    if case == "complex":
        nb.Nifti1Image(np.zeros((8, 8, 5, N_VOLS), np.complex64), np.eye(4)).to_filename(dwi)
        return args, 16, "sub-01_dwi.nii.gz has data type complex64; a real-valued image is required"
    if case == "truncated":
        raw = dwi.read_bytes()
        dwi.write_bytes(raw[: len(raw) // 2])
        return (
            args,
            16,
            (
                "cannot read sub-01_dwi.nii.gz (corrupted or truncated?): "
                "Compressed file ended before the end-of-stream marker was reached"
            ),
        )
    if case == "truncated_uncompressed":
        nii = bids / f"{STEM}.nii"
        nb.load(dwi).to_filename(nii)
        dwi.unlink()
        nii.write_bytes(nii.read_bytes()[:-100])
        return args, 16, "cannot read sub-01_dwi.nii (truncated: 5372 of 5472 bytes of image data)"
    if case == "corrupted":
        raw = bytearray(gzip.compress(gzip.decompress(dwi.read_bytes()), mtime=0))
        raw[-8] ^= 0xFF  # wrong CRC: NiBabel alone would read the data without noticing
        dwi.write_bytes(bytes(raw))
        return args, 16, "cannot read sub-01_dwi.nii.gz (corrupted or truncated?): CRC check failed"
    if case == "not_nifti":
        dwi.write_bytes(gzip.compress(b"this is not an image"))
        return args, 16, "cannot read sub-01_dwi.nii.gz (corrupted or truncated?)"
    if case == "output_inside_input":
        return args, 64, "the output directory must be outside the BIDS dataset (or below its derivatives/)"
    if case == "output_hidden_by_symlink":  # out -> <bids>/sub-01
        return args, 64, "the output directory must be outside the BIDS dataset (or below its derivatives/)"
    if case == "output_is_a_file":
        return args, 64, f"the output directory is not a directory: {bids.parent / 'out'}"
    if case == "work_is_a_file":
        return args, 64, f"the work directory is not a directory: {bids.parent / 'work'}"
    raise ValueError(case)


CASES = [
    "missing_dir", "no_description", "bad_description", "description_not_object", "no_participants",
    "no_dwi", "unknown_participant", "filter_selects_nothing", "filter_not_json", "filter_bad_value",
    "malformed_sidecar", "sidecar_not_object", "malformed_inherited_sidecar", "missing_bval",
    "missing_bvec", "empty_bval", "empty_bvec", "malformed_bval", "malformed_bvec", "ragged_bvec",
    "bval_count", "bvec_count", "bvec_not_unit", "bvec_nan", "negative_bval", "no_b0", "all_b0",
    "too_few_directions", "too_few_distinct_directions_dti", "too_few_distinct_directions_gp",
    "coplanar_directions_dti", "two_volumes", "three_d", "complex", "truncated",
    "truncated_uncompressed", "corrupted", "not_nifti", "output_inside_input",
    "output_hidden_by_symlink", "output_is_a_file", "work_is_a_file",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exit_code_and_message(tmp_path, capsys, case):
    from dmriprep_motion.cli.run import run

    bids = _dataset(tmp_path / "bids")
    args, code, message = _break(bids, case)
    before = tree_digest(bids) if bids.exists() else {}
    out = tmp_path / "out"
    if case == "output_inside_input":  # ".." must not hide it
        out = bids / "derivatives" / "x" / ".." / ".." / "out"
    if case == "output_hidden_by_symlink":
        out.symlink_to(bids / "sub-01", target_is_directory=True)
    work = tmp_path / "work"
    if case == "output_is_a_file":
        out.write_text("a file\n")
    if case == "work_is_a_file":
        work.write_text("a file\n")
    assert run([str(bids), str(out), "participant", "-w", str(work), "--skip-bids-validation", *args]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line.split("] ", 1)[1] for line in err.splitlines() if "[dmriprep-motion]" in line]
    assert errors, err
    if case in ("corrupted", "not_nifti"):
        assert errors[-1].startswith(message), errors
    else:
        assert errors[-1] == message, errors
    if case == "output_is_a_file":
        assert out.read_text() == "a file\n"
    elif case == "output_hidden_by_symlink":
        assert out.is_symlink()  # and the dataset it points into is untouched (below)
    else:
        assert not Path(out).exists()  # nothing written: no derivatives that could look complete
    if case == "work_is_a_file":
        assert work.read_text() == "a file\n"
    assert not work.exists() or not any(work.rglob("result_*.pklz"))
    assert (tree_digest(bids) if bids.exists() else {}) == before


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.parametrize(
    ("args", "code", "last"),
    [
        (["--participant-label", "!!"], 64, "dmriprep-motion: error: argument "
         "--participant-label/--participant_label: '!!' is not a valid BIDS label (letters and digits)"),
        (["--bids-filter-file", "/nonexistent.json"], 64,
         "dmriprep-motion: error: argument --bids-filter-file: file not found: /nonexistent.json"),
        (["--passes", "0"], 64, "dmriprep-motion: error: argument --passes: '0' must be at least 1"),
        (["--relaxation", "2.5"], 64,
         "dmriprep-motion: error: argument --relaxation: '2.5' must be above 0 and at most 2"),
        ([], 16, "all volumes are b0 in sub-01_dwi.bval: nothing to correct"),
    ],
)  # fmt: skip
def test_cli_subprocess_no_traceback(tmp_path, args, code, last):
    """The console entry point: exit code and a last stderr line without traceback."""
    bids = _dataset(tmp_path / "bids")
    (bids / f"{STEM}.bval").write_text(" ".join(["0"] * N_VOLS) + "\n")
    cmd = [sys.executable, "-m", "dmriprep_motion", str(bids), str(tmp_path / "out"), "participant"]
    proc = subprocess.run(
        [*cmd, "-w", str(tmp_path / "w"), "--skip-bids-validation", *args],
        capture_output=True, text=True, env=_env(), timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].split("] ", 1)[-1] == last


# ------------------------------------------------------------------ accepted, repaired inputs
@pytest.mark.parametrize(
    "case", ["transposed", "near_unit", "nan_b0_bvec", "nan_inf", "uint16", "int16_scaled", "int8"]
)
def test_repairable_input_is_accepted(tmp_path, caplog, monkeypatch, case):
    """Fixable oddities pass validation and give a clean float32 working copy."""
    from dmriprep_motion.bids import collect_runs
    from dmriprep_motion.interfaces.dwi import ValidateDWI

    rng = np.random.default_rng(1)
    bvecs = BVECS.copy()
    data = None
    if case == "near_unit":
        bvecs = BVECS * 1.05  # within NORM_TOLERANCE: normalised
    if case == "nan_b0_bvec":  # some converters write NaN for the b0 rows: written as zeros
        bvecs = BVECS.copy()
        bvecs[0] = np.nan
    if case == "nan_inf":
        data = (rng.random((8, 8, 5, N_VOLS)) * 1000).astype(np.float32)
        data[1, 2, 3, 4], data[0, 0, 0, 0], data[5, 5, 2, 7] = np.nan, np.inf, -np.inf
    if case == "uint16":
        data = rng.integers(30_000, 65_535, (8, 8, 5, N_VOLS)).astype(np.uint16)
    if case == "int8":
        data = rng.integers(-128, 127, (8, 8, 5, N_VOLS)).astype(np.int8)
    bids = _dataset(tmp_path / "bids", data=data, bvecs=bvecs)
    nii, bvec_file = bids / f"{STEM}.nii.gz", bids / f"{STEM}.bvec"
    if case == "transposed":  # N×3 on disk
        bvec_file.write_text("\n".join(" ".join(f"{v:g}" for v in row) for row in BVECS) + "\n")
    if case == "int16_scaled":  # stored int16 near its limit, scaled up: values beyond int16
        img = nb.Nifti1Image(rng.integers(32_000, 32_767, (8, 8, 5, N_VOLS)).astype(np.int16), np.eye(4))
        img.header.set_slope_inter(4.0, 10.0)
        img.to_filename(nii)
    expected = nb.load(nii).get_fdata(dtype=np.float64)
    with caplog.at_level("WARNING", logger="dmriprep_motion"):
        runs = collect_runs(bids)
    assert runs["01"][0].shape == (8, 8, 5, N_VOLS)
    if case == "nan_inf":
        assert "sub-01_dwi.nii.gz: 3 non-finite voxel values will be set to 0" in caplog.text
    result = ValidateDWI(dwi_file=str(nii), in_bval=str(bids / f"{STEM}.bval"), in_bvec=str(bvec_file))
    monkeypatch.chdir(tmp_path)
    outputs = result.run(cwd=str(tmp_path)).outputs
    work = nb.load(outputs.out_file)
    assert work.get_data_dtype() == np.float32
    got = np.asanyarray(work.dataobj)
    assert np.isfinite(got).all()
    finite = np.isfinite(expected)
    assert np.array_equal(got[finite], expected[finite].astype(np.float32))
    assert np.all(got[~finite] == 0)
    vecs = np.loadtxt(outputs.out_bvec).T
    assert np.array_equal(vecs[0], np.zeros(3))
    assert np.allclose(vecs[1:], BVECS[1:] / np.linalg.norm(BVECS[1:], axis=1)[:, None], atol=1e-5)
    assert np.allclose(np.linalg.norm(vecs[1:], axis=1), 1.0, atol=1e-6)


# ------------------------------------------------------------------ failures after the input checks
@pytest.fixture
def unwritable(tmp_path):
    """An existing output folder nothing can be written into (``chattr +i`` when running as root)."""
    import shutil

    folder = tmp_path / "out"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder, "[Errno 13] Permission denied"
        folder.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("running as root, and chattr +i (immutable folder) is not available here")
    try:
        yield folder, "[Errno 1] Operation not permitted"
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)


def test_output_not_writable(tmp_path, capsys, unwritable):
    """Exit 1 and one line naming the folder that cannot be created; nothing written."""
    from dmriprep_motion.cli.run import run

    out, reason = unwritable
    bids = _dataset(tmp_path / "bids")
    before = tree_digest(bids)
    code = run([str(bids), str(out), "participant", "-w", str(tmp_path / "work"), "--skip-bids-validation"])
    assert code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1].split("] ", 1)[1]
    assert last == f"cannot write the outputs: {reason}: '{out / 'logs'}'"
    assert not any(out.iterdir())
    assert tree_digest(bids) == before


def test_unexpected_error_is_one_line_with_a_traceback_file(tmp_path, capsys, monkeypatch):
    """A bug (any exception not foreseen) exits 1 with one line; the traceback goes to a file."""
    import dmriprep_motion.bids
    from dmriprep_motion.cli.run import run

    def broken(*args, **kwargs):
        raise RuntimeError("no such thing\nsecond line")

    monkeypatch.setattr(dmriprep_motion.bids, "collect_runs", broken)
    bids, work = _dataset(tmp_path / "bids"), tmp_path / "work"
    assert run([str(bids), str(tmp_path / "out"), "participant", "-w", str(work)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    logs = list(work.glob("dmriprep-motion-error-*.txt"))
    assert len(logs) == 1
    assert err.strip().splitlines()[-1].split("] ", 1)[1] == (
        f"unexpected error (RuntimeError: no such thing); traceback in {logs[0]}; please report it"
    )
    text = logs[0].read_text()
    assert text.startswith("Traceback") and "in broken" in text and "second line" in text
    assert not (tmp_path / "out").exists()


def test_unexpected_error_when_the_work_dir_cannot_hold_the_log(tmp_path, capsys, monkeypatch):
    """The traceback then goes to the system's temporary folder (and with -v, to the log)."""
    import tempfile

    import dmriprep_motion.bids
    from dmriprep_motion.cli.run import run

    monkeypatch.setattr(dmriprep_motion.bids, "collect_runs", lambda *a, **k: 1 / 0)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    (tmp_path / "file").write_text("")
    work = tmp_path / "file" / "work"  # below a file: cannot be created
    bids = _dataset(tmp_path / "bids")
    assert run([str(bids), str(tmp_path / "out"), "participant", "-w", str(work), "-v"]) == 1
    err = capsys.readouterr().err
    logs = list((tmp_path / "tmp").glob("dmriprep-motion-error-*.txt"))
    assert len(logs) == 1 and "ZeroDivisionError" in logs[0].read_text()
    assert err.strip().splitlines()[-1].split("] ", 1)[1] == (
        f"unexpected error (ZeroDivisionError: division by zero); traceback in {logs[0]}; please report it"
    )
    assert "Traceback (most recent call last)" in err  # -v: at debug level too


def test_processing_failure_exits_1_with_crash_file(tmp_path, capsys, monkeypatch):
    """A step failing inside the workflow: exit 1, one line, a crash file, no preprocessed series."""
    from dmriprep_motion.cli.run import run
    from dmriprep_motion.interfaces.dwi import ValidateDWI

    def fail(self, runtime):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(ValidateDWI, "_run_interface", fail)  # the first step; Linear runs in-process
    bids, out, work = _dataset(tmp_path / "bids"), tmp_path / "out", tmp_path / "work"
    before = tree_digest(bids)
    args = [str(bids), str(out), "participant", "-w", str(work), "--skip-bids-validation", "--nprocs", "1"]
    code = run(args)
    assert code == 1
    err = capsys.readouterr().err
    ours = [line.split("] ", 1)[1] for line in err.splitlines() if "[dmriprep-motion]" in line]
    log = out / "sub-01" / "log"
    assert (
        f"processing failed (Exception raised while executing Node validate.); crash reports in {log}"
    ) in ours
    assert ours[-1] == f"report: {out / 'sub-01.html'}"  # written after the failure, listing the crash
    assert "failed: dmriprep_motion_0_1_0_wf.sub_01_wf.dwi_motion_wf.dwi_reference_wf.validate" in ours
    crashes = list(log.glob("crash-*.txt"))
    assert len(crashes) == 1 and "injected failure" in crashes[0].read_text()
    assert not list(out.rglob("*desc-preproc*"))
    assert not list(out.rglob("*.tmp"))
    assert crashes[0].name in (out / "sub-01.html").read_text()
    assert tree_digest(bids) == before


def test_ctrl_c_exits_130(monkeypatch, capsys):
    """KeyboardInterrupt (SIGINT) anywhere in a run: exit 130 and one line on how to resume."""
    import dmriprep_motion.cli.run as cli

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run", interrupted)
    monkeypatch.setattr(cli.signal, "signal", lambda *args: None)  # keep pytest's own SIGTERM handling
    cli._setup_logging(0)  # as run() does before anything can be interrupted
    with pytest.raises(SystemExit) as exc:
        cli.main(["bids", "out", "participant"])
    assert exc.value.code == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].split("] ", 1)[1] == (
        "interrupted; re-run with the same --work-dir to resume"
    )


@pytest.mark.parametrize("case", CASES)
def test_troubleshooting_table_shows_the_message(tmp_path, case):
    """docs/troubleshooting.rst shows every tested message as printed (paths as placeholders)."""
    bids = _dataset(tmp_path / "bids")
    _, _, message = _break(bids, case)
    for path, name in ((bids.parent / "out", "<out>"), (bids.parent / "work", "<work>"),
                       (bids / f"{STEM}.bval", "<file>"), (bids / f"{STEM}.bvec", "<file>"),
                       (bids.parent / "filter.json", "<file>"), (bids, "<bids>")):  # fmt: skip
        message = message.replace(str(path), name)
    if case in ("corrupted", "not_nifti"):  # the rest of the line is the library's wording
        message = message.split("): ")[0]
    assert message in (ROOT / "docs" / "troubleshooting.rst").read_text()
