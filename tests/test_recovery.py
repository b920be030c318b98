"""Known rigid motion injected into real ds-xa30 volumes is recovered."""

import json
import shutil

import nibabel as nb
import numpy as np
import pytest

from dmriprep_motion.gradients import fsl_to_ras
from dmriprep_motion.motion import (
    load_itk_series,
    mask_coordinates,
    matrix_from_params,
    motion_parameters,
    transform_errors,
)
from dmriprep_motion.testing.inject import inject_motion
from tests.conftest import E2E_ARGS

DEG = np.pi / 180
#: Volume -> (tx, ty, tz [mm], rx, ry, rz [rad]); up to 2 mm / 2 degrees.
MOTIONS = {
    3: (1.5, -1.0, 0.8, 2 * DEG, -1 * DEG, 1.5 * DEG),
    8: (-2.0, 0.5, 1.0, -1.5 * DEG, 2 * DEG, 0.0),
    13: (0.5, 1.8, -1.2, 1 * DEG, 1 * DEG, -2 * DEG),
    17: (0.0, 0.0, 2.0, 0.0, -2 * DEG, 1 * DEG),
}


@pytest.fixture(scope="module")
def injected_run(ds_xa30, tmp_path_factory):
    from dmriprep_motion.cli.run import run

    base = tmp_path_factory.mktemp("recovery")
    bids = base / "bids"
    src = ds_xa30 / "sub-01" / "dwi" / "sub-01_dir-AP_dwi"
    dst = bids / "sub-01" / "dwi"
    dst.mkdir(parents=True)
    shutil.copy(ds_xa30 / "dataset_description.json", bids)
    shutil.copy(f"{src}.json", dst / "sub-01_dir-AP_dwi.json")
    shutil.copy(f"{src}.bval", dst / "sub-01_dir-AP_dwi.bval")
    img = nb.load(f"{src}.nii.gz")
    bvecs = np.loadtxt(f"{src}.bvec").T
    motions = {i: matrix_from_params(p) for i, p in MOTIONS.items()}
    data, moved_bvecs = inject_motion(img.get_fdata(dtype=np.float32), img.affine, bvecs, motions)
    nb.Nifti1Image(data, img.affine, img.header).to_filename(dst / "sub-01_dir-AP_dwi.nii.gz")
    np.savetxt(dst / "sub-01_dir-AP_dwi.bvec", moved_bvecs.T, fmt="%.8f")
    out = base / "out"
    assert run([str(bids), str(out), "participant", "-w", str(base / "work"), *E2E_ARGS]) == 0
    return out, motions


def _outputs(out):
    folder = out / "sub-01" / "dwi"
    xforms = load_itk_series(folder / "sub-01_dir-AP_from-orig_to-dwiref_mode-image_desc-hmc_xfm.txt")
    bvecs = np.loadtxt(folder / "sub-01_dir-AP_desc-preproc_dwi.bvec").T
    mask = nb.load(folder / "sub-01_dir-AP_desc-brain_mask.nii.gz")
    return xforms, bvecs, mask


def _residuals(xa30_run, injected_run):
    """Residual (estimated vs injected ∘ baseline) parameters (mm, deg) and mean displacements."""
    baseline_x, _, mask = _outputs(xa30_run[0])
    moved_x, _, _ = _outputs(injected_run[0])
    motions = injected_run[1]
    # The real data has its own (eddy-current and head) motion: the baseline run's
    # estimates. Tissue at reference x sits at T0 x in the original volume, and at
    # M T0 x once the known motion M is injected.
    expected = np.stack([motions[i] @ t0 if i in motions else t0 for i, t0 in enumerate(baseline_x)])
    residual = motion_parameters(
        np.stack([np.linalg.inv(e) @ m for e, m in zip(expected, moved_x, strict=True)])
    )
    residual[:, 3:] = np.degrees(residual[:, 3:])
    errors = transform_errors(moved_x, expected, mask_coordinates(mask))
    return residual, errors, baseline_x, moved_x, mask


def test_injected_motion_is_recovered(xa30_run, injected_run):
    """Injected motion (up to 2 mm / 2°) is recovered on real data.

    Along the phase-encoding axis (y, dir-AP) these b=2500 volumes carry eddy-current
    distortions of several mm that a rigid transform cannot represent; there the
    leave-one-out estimate is only determined to ~0.3 mm RMS (measured), so that axis is
    checked separately. The exact 0.3 mm criterion on whole transforms is tested on an
    eddy-free phantom re-synthesized from this dataset (tests/test_simulate.py).
    """
    residual, errors, baseline_x, moved_x, mask = _residuals(xa30_run, injected_run)
    report = np.round(residual, 2).tolist()
    assert np.all(np.abs(residual[:, [0, 2]]) < 0.3), report  # x and z translations (mm)
    assert np.all(np.abs(residual[:, 3:]) < 0.5), report  # rotations (deg)
    assert np.sqrt(np.mean(residual[:, 1] ** 2)) < 0.5, report  # phase-encoding axis, RMS
    assert np.median(errors["mean_disp"]) < 0.4 and errors["mean_disp"].max() < 1.0, errors["mean_disp"]
    for i in injected_run[1]:  # the injected motion is large compared with the error
        moved = transform_errors(moved_x[[i]], baseline_x[[i]], mask_coordinates(mask))["mean_disp"][0]
        assert moved > 1.0


def test_bvecs_rotated_back_to_head_frame(xa30_run, injected_run):
    _, baseline_b, mask = _outputs(xa30_run[0])
    _, moved_b, _ = _outputs(injected_run[0])
    affine = mask.affine
    a = fsl_to_ras(baseline_b[1:], affine)
    b = fsl_to_ras(moved_b[1:], affine)
    angles = np.degrees(np.arccos(np.clip(np.abs((a * b).sum(axis=1)), 0, 1)))
    assert np.all(angles < 1.0), angles.round(2)
    # Without rotation the injected volumes would be off by up to ~3 degrees.
    assert (
        json.loads((injected_run[0] / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    )
