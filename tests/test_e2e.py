"""End-to-end CLI run on the real ds-xa30 dataset (sub-01, both runs)."""

import gc
import json

import nibabel as nb
import numpy as np
import pytest

from dmriprep_motion.data import registration_preset
from dmriprep_motion.motion import load_itk_series
from dmriprep_motion.sampling import MAX_SAMPLES_SLOPPY
from tests.conftest import tree_digest

RUNS = ("sub-01_dir-AP", "sub-01_dir-PA")
COLUMNS = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "framewise_displacement",
           "similarity", "outlier", "bval"]  # fmt: skip


@pytest.mark.parametrize("stem", RUNS)
def test_derivatives_exist_with_right_shapes(xa30_run, ds_xa30, stem):
    out, _, _ = xa30_run
    folder = out / "sub-01" / "dwi"
    src = nb.load(ds_xa30 / "sub-01" / "dwi" / f"{stem}_dwi.nii.gz")
    dwi = nb.load(folder / f"{stem}_desc-preproc_dwi.nii.gz")
    assert dwi.shape == src.shape == (72, 72, 39, 21)
    assert np.allclose(dwi.affine, src.affine, atol=1e-4)
    bvals = np.loadtxt(folder / f"{stem}_desc-preproc_dwi.bval")
    assert np.array_equal(bvals, np.loadtxt(ds_xa30 / "sub-01" / "dwi" / f"{stem}_dwi.bval"))
    bvecs = np.loadtxt(folder / f"{stem}_desc-preproc_dwi.bvec")
    assert bvecs.shape == (3, 21)
    assert np.allclose(np.linalg.norm(bvecs[:, 1:], axis=0), 1.0, atol=1e-5)
    assert np.allclose(bvecs[:, 0], 0.0)
    for name in (f"{stem}_dwiref.nii.gz", f"{stem}_desc-brain_mask.nii.gz"):
        img = nb.load(folder / name)
        assert img.shape == src.shape[:3]
    mask = np.asanyarray(nb.load(folder / f"{stem}_desc-brain_mask.nii.gz").dataobj)
    assert set(np.unique(mask)) == {0, 1} and 20_000 < mask.sum() < 120_000
    lines = (folder / f"{stem}_desc-confounds_timeseries.tsv").read_text().splitlines()
    assert lines[0].split("\t") == COLUMNS
    assert len(lines) == 22  # header + 21 volumes
    meta = json.loads((folder / f"{stem}_desc-confounds_timeseries.json").read_text())
    assert set(COLUMNS) <= set(meta) and meta["trans_x"]["Units"] == "mm"
    xforms = load_itk_series(folder / f"{stem}_from-orig_to-dwiref_mode-image_desc-hmc_xfm.txt")
    assert xforms.shape == (21, 4, 4)
    assert np.allclose(xforms[0], np.eye(4))  # the single b0 is the reference
    sidecar = json.loads((folder / f"{stem}_desc-preproc_dwi.json").read_text())
    assert sidecar["SkullStripped"] is False
    assert sidecar["Sources"] == [f"bids:raw:sub-01/dwi/{stem}_dwi.nii.gz"]
    assert sidecar["MotionCorrection"]["Transform"] == "Rigid"
    assert sidecar["MotionCorrection"]["RegistrationMaxSamples"] == MAX_SAMPLES_SLOPPY  # --sloppy
    assert sidecar["PhaseEncodingDirection"]  # source metadata kept


def test_a_3mm_series_keeps_the_presets_sampling(xa30_run):
    """ds-xa30's brain (3 mm) is below the cap: every registration samples the preset's share,
    with the very command line the preset gives (the cap only acts on finer grids)."""
    _, work, _ = xa30_run
    commands = [p.read_text() for p in work.rglob("hmc_pass*_wf/register/mapflow/_register*/command.txt")]
    assert len(commands) >= 20
    share = json.loads(registration_preset("dwi", "Rigid", True).read_text())["sampling_percentage"][0]
    assert all(f"Regular, {share:g} ]" in cmd for cmd in commands)


def test_confounds_match_transforms(xa30_run):
    out, _, _ = xa30_run
    folder = out / "sub-01" / "dwi"
    from dmriprep_motion.motion import motion_parameters
    from dmriprep_motion.reports.assemble import read_confounds

    conf = read_confounds(folder / "sub-01_dir-AP_desc-confounds_timeseries.tsv")
    xforms = load_itk_series(folder / "sub-01_dir-AP_from-orig_to-dwiref_mode-image_desc-hmc_xfm.txt")
    params = motion_parameters(xforms)
    assert np.allclose(conf["trans_y"], params[:, 1], atol=1e-5)
    assert np.allclose(conf["rot_z"], params[:, 5], atol=1e-6)
    assert np.isnan(conf["framewise_displacement"][0])
    # Real data: small but non-zero motion, and volumes that match their predictions.
    assert 0 < np.nanmax(conf["framewise_displacement"]) < 10
    assert np.all(conf["similarity"] > 0.8)


def test_dataset_level_files(xa30_run):
    out, _, _ = xa30_run
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "dmriprep_motion"
    assert desc["GeneratedBy"][0]["Version"]
    assert "*.html" in (out / ".bidsignore").read_text()
    assert (out / "sub-01.html").is_file()
    citation = (out / "logs" / "CITATION.md").read_text()
    assert "Head motion was estimated" in citation
    # Outlier flagging (default --outlier-threshold 4, volumes kept) and FD / QC metrics are described.
    assert "robust z-score below −4 within its shell" in citation
    assert "kept in the model fits" in citation
    assert "Framewise displacement (FD)" in citation and "[@power2012]" in citation
    assert "sphere of 50 mm radius" in citation and "percentage of outlier volumes" in citation


def test_input_tree_is_untouched(xa30_run, ds_xa30):
    _, _, before = xa30_run
    assert tree_digest(ds_xa30) == before


def test_progress_callback_freezes_the_graph_once():
    """The first status callback moves the objects alive then out of the scheduler's collections."""
    from types import SimpleNamespace

    from dmriprep_motion.cli.run import _Progress

    node = SimpleNamespace(name="predict", fullname="wf.sub_01_wf.hmc_pass01_wf.predict")
    progress = _Progress()
    try:
        assert gc.get_freeze_count() == 0
        progress(node, "start")
        frozen = gc.get_freeze_count()
        assert frozen > 1000  # the interpreter's and this test session's objects
        progress(node, "end")
        assert gc.get_freeze_count() == frozen  # frozen once, not at every callback
        assert progress.done == 1
    finally:
        gc.unfreeze()


def test_rerun_with_same_work_dir_is_cached(xa30_run, ds_xa30):
    """Resumable work directory: a second run recomputes nothing and gives the same outputs."""
    from dmriprep_motion.cli.run import run
    from tests.conftest import E2E_ARGS

    out, work, _ = xa30_run
    before = {p.name: p.stat().st_mtime_ns for p in work.rglob("result_*.pklz")}
    tsv = out / "sub-01" / "dwi" / "sub-01_dir-AP_desc-confounds_timeseries.tsv"
    first = tsv.read_text()
    code = run([str(ds_xa30), str(out), "participant", "--participant-label", "sub-01", "-w", str(work),
                *E2E_ARGS])  # fmt: skip
    assert code == 0
    assert gc.get_freeze_count() == 0  # the scheduler's gc.freeze is undone when run() returns
    after = {p.name: p.stat().st_mtime_ns for p in work.rglob("result_*.pklz")}
    rerun = [name for name, mtime in after.items() if before.get(name) != mtime]
    # Only the export nodes (run_without_submitting, cheap) may be re-executed.
    assert len(rerun) <= 4, rerun
    assert tsv.read_text() == first
