"""Odd geometry: storage order, oblique and anisotropic grids, sform/qform disagreement.

Every variant is built from the same ds-xa30 volumes (stored LAS) by changing the
voxel-to-world mapping consistently, and is run twice in ONE CLI call: as is
(``run-1``, the baseline) and with known motion injected (``run-2``).  As in
``test_recovery.py``, the transform recovered for an injected volume must be
``M @ T0`` (``T0``: the baseline estimate), and the rotated b-vectors of both runs
must agree in world space.
"""

from __future__ import annotations

import nibabel as nb
import numpy as np
import pytest

from dmriprep_motion.gradients import fsl_to_ras, ras_to_fsl
from dmriprep_motion.motion import load_itk_series, mask_coordinates, matrix_from_params, transform_errors
from tests._datasets import source_run, with_motion, write_run

DEG = np.pi / 180
MOTIONS = {
    3: (1.5, -1.0, 0.8, 2 * DEG, -1 * DEG, 1.5 * DEG),
    7: (-1.0, 0.5, 1.2, -1.5 * DEG, 1.5 * DEG, 0.0),
}
#: Each variant combines two oddities, to halve the cost (LAS storage, ds-xa30's own, is
#: covered by test_recovery.py).
VARIANTS = ("rasAniso", "obliqueQform")
# Baseline and injected runs are compared, so the shells are anchored deterministically (median):
# on ds-xa30's b=2500 data the cross-contrast registration anchor varies by 0.5-1 mm between runs
# (see tests/conftest.py::E2E_ARGS); geometry errors, if any, would be several mm.
ARGS = ["--sloppy", "--passes", "2", "--anchor", "median", "--nprocs", "2", "--seed", "11",
        "--skip-bids-validation"]  # fmt: skip


def _rotation_about(center: np.ndarray, angles_deg: tuple[float, float, float]) -> np.ndarray:
    rot = matrix_from_params(np.array([0, 0, 0, *np.radians(angles_deg)]))
    shift = np.eye(4)
    shift[:3, 3] = center
    return shift @ rot @ np.linalg.inv(shift)


def make_variant(img: nb.Nifti1Image, bvecs: np.ndarray, kind: str) -> tuple[nb.Nifti1Image, np.ndarray]:
    """The same acquisition stored/described differently; returns the image and its FSL b-vectors."""
    data = np.asanyarray(img.dataobj)
    affine = img.affine.copy()
    hdr = img.header.copy()
    world = fsl_to_ras(bvecs, affine)  # gradient directions in RAS+ (head frame)
    center = affine @ np.r_[(np.array(data.shape[:3]) - 1) / 2, 1]
    if kind == "rasAniso":
        # Flip the first voxel axis of data AND affine (same world, RAS storage), and
        # make the slices thicker: 3 x 3 x 4.5 mm.
        flip = np.eye(4)
        flip[0, 0], flip[0, 3] = -1, data.shape[0] - 1
        data, affine = data[::-1].copy(), affine @ flip @ np.diag([1.0, 1.0, 1.5, 1.0])
    elif kind == "obliqueQform":
        # The head (and its gradients) rotated in world space: an oblique sform.
        rot = _rotation_about(center[:3], (12.0, -8.0, 15.0))
        affine = rot @ affine
        world = world @ rot[:3, :3].T
    else:
        raise ValueError(kind)
    out = nb.Nifti1Image(data, affine, hdr)
    if kind == "obliqueQform":
        # The sform (code 2, "aligned") is the truth; a qform (code 1) 10 degrees and 8 mm off,
        # which ITK, hence ANTs, would read instead.
        wrong = _rotation_about(center[:3], (0.0, 0.0, 10.0)) @ affine
        wrong[:3, 3] += 8.0
        out.header.set_qform(wrong, code=1)
        out.header.set_sform(affine, code=2)
    else:
        out.header.set_qform(affine, code=1)
        out.header.set_sform(affine, code=1)
    return out, ras_to_fsl(world, affine)


def test_fsl_bvecs_of_variants_follow_the_conventions(ds_xa30):
    """FSL b-vectors live in the voxel frame: unchanged by LR storage flips, obliquity and voxel size."""
    img, _, bvecs, _ = source_run(ds_xa30, 11)
    for kind in VARIANTS:
        _, new = make_variant(img, bvecs, kind)
        assert np.allclose(new, bvecs, atol=1e-6), kind


@pytest.fixture(scope="module")
def geometry_runs(ds_xa30, tmp_path_factory):
    from dmriprep_motion.cli.run import run

    base = tmp_path_factory.mktemp("geometry")
    bids = base / "bids"
    img, bvals, bvecs, sidecar = source_run(ds_xa30, 11)
    motions = {i: matrix_from_params(p) for i, p in MOTIONS.items()}
    for kind in VARIANTS:
        var, var_bvecs = make_variant(img, bvecs, kind)
        plain, _ = with_motion(var, var_bvecs, {})
        moved, moved_bvecs = with_motion(var, var_bvecs, motions)
        write_run(bids, "01", plain, bvals, var_bvecs, sidecar, entities=f"acq-{kind}_run-1")
        write_run(bids, "01", moved, bvals, moved_bvecs, sidecar, entities=f"acq-{kind}_run-2")
    out = base / "out"
    code = run([str(bids), str(out), "participant", "-w", str(base / "work"), *ARGS])
    assert code == 0
    return bids, out, motions


def _outputs(out, stem):
    folder = out / "sub-01" / "dwi"
    xforms = load_itk_series(folder / f"{stem}_from-orig_to-dwiref_mode-image_desc-hmc_xfm.txt")
    bvecs = np.loadtxt(folder / f"{stem}_desc-preproc_dwi.bvec").T
    mask = nb.load(folder / f"{stem}_desc-brain_mask.nii.gz")
    dwi = nb.load(folder / f"{stem}_desc-preproc_dwi.nii.gz")
    return xforms, bvecs, mask, dwi


@pytest.mark.slow
@pytest.mark.parametrize("kind", VARIANTS)
def test_motion_and_bvecs_recovered(geometry_runs, kind):
    bids, out, motions = geometry_runs
    base_x, base_b, mask, base_dwi = _outputs(out, f"sub-01_acq-{kind}_run-1")
    moved_x, moved_b, _, moved_dwi = _outputs(out, f"sub-01_acq-{kind}_run-2")
    src = nb.load(bids / "sub-01" / "dwi" / f"sub-01_acq-{kind}_run-2_dwi.nii.gz")
    # Same grid, same storage order, same header codes as the input; qform == sform.
    for img in (base_dwi, moved_dwi):
        assert img.shape == src.shape
        assert np.allclose(img.affine, src.affine, atol=1e-4)
        assert int(img.header["sform_code"]) == int(src.header["sform_code"])
        assert int(img.header["qform_code"]) == int(src.header["qform_code"])
        assert np.allclose(img.header.get_qform(), img.header.get_sform(), atol=1e-4)
    expected = np.stack([motions[i] @ t0 if i in motions else t0 for i, t0 in enumerate(base_x)])
    points = mask_coordinates(mask)
    errors = transform_errors(moved_x, expected, points)["mean_disp"]
    report = {i: round(float(e), 3) for i, e in enumerate(errors)}
    # Wrong geometry handling gives errors of several mm (sign flips, a 10-degree qform);
    # with 10 directions, the 2 moved volumes also shift the others' estimates slightly.
    assert np.all(errors[list(motions)] < 0.5), report
    assert np.all(errors < 0.75), report
    for i in motions:  # the injected motion is large compared with the tolerance
        assert transform_errors(moved_x[[i]], base_x[[i]], points)["mean_disp"][0] > 1.0
    a = fsl_to_ras(base_b[1:], mask.affine)
    b = fsl_to_ras(moved_b[1:], mask.affine)
    angles = np.degrees(np.arccos(np.clip(np.abs((a * b).sum(axis=1)), 0, 1)))
    assert np.all(angles < 1.0), angles.round(2)


def _ants_affine(path) -> np.ndarray:
    """Voxel-to-RAS+ affine of an image as ITK/ANTs reads it (LPS origin and direction)."""
    import ants

    img = ants.image_read(str(path))
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(img.direction)[:3, :3] * np.asarray(img.spacing)[:3]
    lps[:3, 3] = np.asarray(img.origin)[:3]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def test_working_copy_has_one_geometry(ds_xa30, tmp_path):
    """sform wins; the working copy handed to ANTs carries it in both sform and qform."""
    from dmriprep_motion.interfaces.dwi import ValidateDWI

    img, bvals, bvecs, sidecar = source_run(ds_xa30, 4)
    var, var_bvecs = make_variant(img, bvecs, "obliqueQform")
    src = write_run(tmp_path / "bids", "01", var, bvals, var_bvecs, sidecar)
    assert not np.allclose(_ants_affine(src), var.affine, atol=1e-3)  # ANTs reads the qform here
    result = ValidateDWI(dwi_file=str(src), in_bval=str(src).replace(".nii.gz", ".bval"),
                         in_bvec=str(src).replace(".nii.gz", ".bvec")).run(cwd=str(tmp_path))  # fmt: skip
    work = nb.load(result.outputs.out_file)
    assert np.allclose(work.affine, var.affine, atol=1e-4)
    assert np.allclose(_ants_affine(result.outputs.out_file), var.affine, atol=1e-3)
    assert (int(work.header["sform_code"]), int(work.header["qform_code"])) == (2, 1)
