"""Gradient tables: reading, validation, conventions and rotation."""

import numpy as np
import pytest

from dmriprep_motion.gradients import (
    GradientError,
    fsl_to_ras,
    load_gradient_table,
    ras_to_fsl,
    rotate_bvecs,
    shell_bvalues,
    shell_labels,
)
from dmriprep_motion.motion import matrix_from_params


def _write(tmp_path, bvals, bvecs_rows):
    bval = tmp_path / "x.bval"
    bvec = tmp_path / "x.bvec"
    bval.write_text(" ".join(str(b) for b in bvals))
    bvec.write_text("\n".join(" ".join(str(v) for v in row) for row in bvecs_rows))
    return bval, bvec


def test_load_xa30_gradients(ds_xa30):
    base = ds_xa30 / "sub-01" / "dwi" / "sub-01_dir-AP_dwi"
    gtab = load_gradient_table(f"{base}.bval", f"{base}.bvec", 21)
    assert gtab.b0_indices == [0]
    assert gtab.dwi_indices == list(range(1, 21))
    assert np.allclose(np.linalg.norm(gtab.bvecs[1:], axis=1), 1.0)
    assert shell_bvalues(gtab.bvals) == [2500.0]


def test_transposed_bvecs_are_accepted(tmp_path):
    vecs = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    bval, bvec = _write(tmp_path, [0, 1000, 1000, 1000], vecs.tolist())  # N x 3 on disk
    gtab = load_gradient_table(bval, bvec, 4)
    assert np.allclose(gtab.bvecs, vecs)


@pytest.mark.parametrize(
    ("bvals", "rows", "n", "match"),
    [
        ([0, 1000, 1000], [[0, 1, 0], [0, 0, 1], [0, 0, 0]], 4, "lists 3 b-values"),
        ([0, 1000, 1000, 1000], [[0, 1, 0, 0], [0, 0, 1, 0]], 4, "shape"),
        ([1000, 1000, 1000], [[1, 0, 0], [0, 1, 0], [0, 0, 1]], 3, "no b0"),
        ([0, 0, 0], [[0, 0, 0], [0, 0, 0], [0, 0, 0]], 3, "all volumes are b0"),
        ([0, 1000, 1000], [[0, 2, 0], [0, 0, 1], [0, 0, 0]], 3, "norm 2.000"),
    ],
)
def test_bad_gradients_raise(tmp_path, bvals, rows, n, match):
    bval, bvec = _write(tmp_path, bvals, rows)
    with pytest.raises(GradientError, match=match):
        load_gradient_table(bval, bvec, n)


def test_malformed_and_empty_files(tmp_path):
    bval, bvec = _write(tmp_path, [0, 1000], [[0, 1], [0, 0], [0, 0]])
    bval.write_text("0 abc")
    with pytest.raises(GradientError, match="malformed"):
        load_gradient_table(bval, bvec, 2)
    bval.write_text("")
    with pytest.raises(GradientError, match="empty"):
        load_gradient_table(bval, bvec, 2)


def test_slightly_off_unit_vectors_are_normalised(tmp_path):
    bval, bvec = _write(tmp_path, [0, 1000, 1000], [[0, 1.02, 0], [0, 0, 0.98], [0, 0, 0]])
    gtab = load_gradient_table(bval, bvec, 3)
    assert np.allclose(np.linalg.norm(gtab.bvecs[1:], axis=1), 1.0)


def test_shell_labels_groups_nearby_bvalues():
    labels = shell_labels(np.array([0, 5, 995, 1005, 2000, 2010, 3000]))
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3]


@pytest.mark.parametrize(
    "affine",
    [
        np.diag([2.0, 2.0, 2.0, 1.0]),  # RAS storage (det > 0: FSL flips x)
        np.diag([-2.0, 2.0, 2.0, 1.0]),  # LAS storage (det < 0)
        np.array([[0, -2.5, 0, 10], [2.0, 0, 0, -5], [0, 0, 3.0, 1], [0, 0, 0, 1]]),  # rotated, aniso
    ],
)
def test_fsl_ras_round_trip(affine):
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(10, 3))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    assert np.allclose(ras_to_fsl(fsl_to_ras(vecs, affine), affine), vecs)


def test_fsl_convention_flips_x_for_positive_determinant():
    ras_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    las_affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    vec = np.array([[1.0, 0.0, 0.0]])
    # In LAS storage the voxel x axis points left; FSL keeps it: world = -x.
    assert np.allclose(fsl_to_ras(vec, las_affine), [[-1, 0, 0]])
    # In RAS storage FSL flips x, so the same file vector also means world -x.
    assert np.allclose(fsl_to_ras(vec, ras_affine), [[-1, 0, 0]])


def test_rotate_bvecs_undoes_a_known_head_rotation():
    affine = np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])
    head = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.6, 0.8]])
    motion = matrix_from_params([1.0, -2.0, 0.5, 0.05, -0.08, 0.12])
    # The scanner applied R g_head so that the rotated head saw g_head.
    scanner = ras_to_fsl(fsl_to_ras(head, affine) @ motion[:3, :3].T, affine)
    xforms = np.stack([np.eye(4), motion, motion])
    recovered = rotate_bvecs(scanner, affine, xforms)
    assert np.allclose(recovered, head, atol=1e-10)


def test_nan_bvecs_allowed_only_for_b0(tmp_path):
    bval, bvec = _write(tmp_path, [0, 1000, 1000], [["nan", 1, 0], ["nan", 0, 1], ["nan", 0, 0]])
    gtab = load_gradient_table(bval, bvec, 3)
    assert np.allclose(gtab.bvecs[0], 0.0)
    bval, bvec = _write(tmp_path, [0, 1000, 1000], [[0, "nan", 0], [0, 0, 1], [0, 0, 0]])
    with pytest.raises(GradientError, match="not finite"):
        load_gradient_table(bval, bvec, 3)
