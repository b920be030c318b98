"""Transforms: ITK I/O and RAS conversion, parameters, FD, errors and resampling."""

import nibabel as nb
import numpy as np
import pytest
from nitransforms.io.itk import ITKLinearTransform

from dmriprep_motion.motion import (
    euler_from_matrix,
    framewise_displacement,
    load_itk,
    load_itk_series,
    matrix_from_params,
    motion_parameters,
    polar_decomposition,
    resample_series,
    resample_volume,
    resample_volumes,
    transform_errors,
    write_itk,
)


def test_euler_round_trip():
    params = np.array([1.5, -2.0, 0.25, 0.03, -0.05, 0.08])
    mat = matrix_from_params(params)
    assert np.allclose(euler_from_matrix(mat[:3, :3]), params[3:])
    assert np.allclose(motion_parameters(mat[None])[0], params)


def test_itk_round_trip_matches_nitransforms(tmp_path):
    mat = matrix_from_params([3.0, -1.0, 2.0, 0.1, 0.02, -0.07])
    write_itk(tmp_path / "one.txt", mat)
    assert np.allclose(load_itk(tmp_path / "one.txt"), mat, atol=1e-10)
    # NiTransforms' own writer (6 significant digits) reads back to the same matrix.
    ITKLinearTransform.from_ras(mat).to_filename(str(tmp_path / "nt.mat"))
    assert np.allclose(load_itk(tmp_path / "nt.mat"), mat, atol=1e-5)
    series = np.stack([np.eye(4), mat, np.linalg.inv(mat)])
    write_itk(tmp_path / "series.txt", series)
    assert np.allclose(load_itk_series(tmp_path / "series.txt"), series, atol=1e-10)


def test_itk_file_is_lps():
    """A +x (right) RAS translation is written as -x in ITK's LPS parameters."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = write_itk(Path(tmp) / "t.txt", matrix_from_params([2.0, 0, 0, 0, 0, 0]))
        params = [float(v) for v in path.read_text().split("Parameters:")[1].split("\n")[0].split()]
    assert params[9] == pytest.approx(-2.0)


def test_framewise_displacement():
    params = np.zeros((3, 6))
    params[1, 0] = 1.0  # 1 mm
    params[2, 3] = 0.01  # 0.01 rad -> 0.5 mm at 50 mm
    fd = framewise_displacement(params)
    assert np.isnan(fd[0])
    assert fd[1] == pytest.approx(1.0)
    assert fd[2] == pytest.approx(1.0 + 0.5)


def test_polar_decomposition_separates_rotation():
    rot = matrix_from_params([0, 0, 0, 0.1, -0.2, 0.05])
    stretch = np.eye(4)
    stretch[:3, :3] = [[1.05, 0.02, 0], [0.02, 0.97, 0.01], [0, 0.01, 1.0]]
    r, s = polar_decomposition(rot @ stretch)
    assert np.allclose(r, rot[:3, :3])
    assert np.allclose(s, stretch[:3, :3])


def test_transform_errors():
    points = np.random.default_rng(0).uniform(-60, 60, size=(500, 3))
    truth = matrix_from_params([1, 2, 3, 0.02, 0.01, -0.03])
    est = truth.copy()
    est[:3, 3] += [0.3, 0, 0]
    err = transform_errors(est[None], truth[None], points)
    assert err["mean_disp"][0] == pytest.approx(0.3)
    assert err["rot_err"][0] == pytest.approx(0.0, abs=1e-6)


def test_resample_recovers_shift():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    grid = np.mgrid[0:20, 0:20, 0:20].astype(float)
    vol = np.exp(-((grid - 10.0) ** 2).sum(0) / 20.0)
    shift = np.eye(4)
    shift[0, 3] = 4.0  # reference point x maps to x + 4 mm = 2 voxels
    out = resample_volume(vol, affine, shift, affine, vol.shape)
    centre = np.unravel_index(np.argmax(out), out.shape)
    assert centre == (8, 10, 10)
    nb.Nifti1Image(out, affine)  # valid image


def test_resample_series_threads_and_identity():
    rng = np.random.default_rng(3)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    data = rng.uniform(-0.1, 1.0, size=(12, 11, 10, 5)).astype(np.float32)
    img = nb.Nifti1Image(data, affine)
    xforms = np.stack([np.eye(4)] + [matrix_from_params([0.5 * k, -0.3, 0.2, 0.01 * k, 0, 0.02])
                                     for k in range(1, 5)])  # fmt: skip
    serial = resample_series(img, xforms)
    # the identity volume is copied (negatives clipped), not interpolated
    assert np.array_equal(serial[..., 0], np.clip(data[..., 0], 0.0, None))
    for k in range(1, 5):
        expected = resample_volume(data[..., k], affine, xforms[k], affine, data.shape[:3])
        assert np.array_equal(serial[..., k], expected)
    # resampling several volumes at once gives the same bytes, in the same order
    assert np.array_equal(resample_series(img, xforms, n_threads=3), serial)
    assert np.array_equal(resample_volumes(data, affine, xforms, n_threads=2), serial)
    # each volume is one contiguous block (NIfTI's order: written without a transposed copy)
    assert serial.flags.f_contiguous


def test_resample_series_in_a_mask_gives_the_same_voxels():
    """Its voxels keep their values (bytes, not approximately); the rest is 0."""

    rng = np.random.default_rng(8)
    affine = np.array([[2.0, 0.1, 0, -10], [0, 2.0, 0, -9], [0, 0, 2.5, -8], [0, 0, 0, 1]])
    data = rng.uniform(-0.1, 1.0, size=(14, 12, 10, 4)).astype(np.float32)
    img = nb.Nifti1Image(data, affine)
    xforms = np.stack([np.eye(4)] + [matrix_from_params([0.7 * k, -0.4, 0.3, 0.02 * k, 0.01, -0.03])
                                     for k in range(1, 4)])  # fmt: skip
    mask = np.zeros(data.shape[:3], bool)
    mask[2:11, 3:10, 1:9] = rng.random((9, 7, 8)) > 0.3
    full = resample_series(img, xforms)
    masked = resample_series(img, xforms, mask=mask, n_threads=2)
    assert np.array_equal(masked[mask], full[mask]) and not masked[~mask].any()
    assert masked[mask].any()


def test_resample_node_with_a_mask(tmp_path):
    """Between the passes only the fitting mask is resampled (the models read nothing else):
    the same voxels there, 0 elsewhere, the same rotated b-vectors."""
    from dmriprep_motion.data import registration_preset
    from dmriprep_motion.interfaces.dwi import ResampleSeries
    from dmriprep_motion.workflows.passes import init_hmc_pass_wf

    rng = np.random.default_rng(9)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    nb.Nifti1Image(rng.random((10, 10, 8, 3)).astype(np.float32), affine).to_filename(tmp_path / "dwi.nii")
    mask = np.zeros((10, 10, 8), np.uint8)
    mask[2:8, 2:8, 2:6] = 1
    nb.Nifti1Image(mask, affine).to_filename(tmp_path / "mask.nii")
    xforms = np.stack([np.eye(4), matrix_from_params([1.0, 0, 0, 0, 0, 0.1]), np.eye(4)])
    np.save(tmp_path / "x.npy", xforms)
    np.savetxt(tmp_path / "b.bvec", np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]], float))
    inputs = {"in_file": str(tmp_path / "dwi.nii"), "in_xforms": str(tmp_path / "x.npy"),
              "in_bvec": str(tmp_path / "b.bvec")}  # fmt: skip
    (tmp_path / "full").mkdir()
    (tmp_path / "masked").mkdir()
    full = ResampleSeries(**inputs).run(cwd=str(tmp_path / "full")).outputs
    node = ResampleSeries(**inputs, in_mask=str(tmp_path / "mask.nii"))
    masked = node.run(cwd=str(tmp_path / "masked")).outputs
    a, b = nb.load(full.out_file).get_fdata(), nb.load(masked.out_file).get_fdata()
    inside = mask.astype(bool)
    assert np.array_equal(a[inside], b[inside]) and not b[~inside].any()
    assert np.array_equal(np.loadtxt(full.out_bvec), np.loadtxt(masked.out_bvec))
    wf = init_hmc_pass_wf(pass_index=2, model="dti", settings=registration_preset("dwi", "Rigid", False))
    links = wf._graph.get_edge_data(wf.get_node("inputnode"), wf.get_node("moved"))["connect"]
    assert ("reg_mask", "in_mask") in links


def test_interpolate_transforms_is_geodesic():
    from dmriprep_motion.motion import interpolate_transforms

    start = matrix_from_params([1.0, 0.0, 0.0, 0.0, 0.0, 0.1])
    end = matrix_from_params([3.0, -2.0, 1.0, 0.0, 0.0, 0.3])
    assert np.allclose(interpolate_transforms(start[None], end[None], 0.0)[0], start)
    assert np.allclose(interpolate_transforms(start[None], end[None], 1.0)[0], end)
    half = interpolate_transforms(start[None], end[None], 0.5)[0]
    assert np.allclose(euler_from_matrix(half[:3, :3]), [0, 0, 0.2])  # half the rotation
    again = interpolate_transforms(half[None], end[None], 1.0)[0]
    assert np.allclose(again, end)


def _directions(n: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed).normal(size=(n, 3))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def test_sphere_neighbours_are_the_nearest_directions_of_the_shell():
    from dmriprep_motion.motion import sphere_neighbours

    g = _directions(12, 0)
    g[5] = -g[2] * 0.999 + 0.01  # nearly antipodal to volume 2: the same direction for diffusion
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    labels = np.array([0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 1, 1])
    out = sphere_neighbours(g, labels, k=4)
    assert out[0].tolist() == [0]  # a b0: itself only
    assert out[2][0] == 2 and out[2][1] == 5
    for i in np.flatnonzero(labels == 1):
        members = np.flatnonzero(labels == 1)
        assert out[i][0] == i and len(out[i]) == 5 and set(out[i]) <= set(members)
        others = np.setdiff1d(members, out[i])
        closeness = np.abs(g @ g[i])
        assert closeness[out[i][1:]].min() >= closeness[others].max()  # the 4 nearest
    assert all(len(out[i]) == 3 and set(out[i]) == {7, 8, 9} for i in (7, 8, 9))  # a shell of 3


def test_relax_transforms_extrapolates_the_step_shared_with_neighbours():
    """Above 1, only the mean step of a volume and its neighbours is extrapolated."""
    from dmriprep_motion.motion import interpolate_transforms, relax_transforms, sphere_neighbours

    n = 8
    labels = np.array([0] + [1] * (n - 1))
    neighbours = sphere_neighbours(_directions(n, 1), labels, k=4)
    start = np.stack([matrix_from_params([0.5 * i, 0, 0, 0, 0.01 * i, 0]) for i in range(n)])
    # A step every volume shares (what the passes correct slowly) is extrapolated whole...
    shared = np.stack([m @ matrix_from_params([0.2, -0.1, 0.3, 0.01, 0, 0.02]) for m in start])
    shared[0] = start[0]
    assert np.allclose(
        relax_transforms(start, shared, 2.0, neighbours), interpolate_transforms(start, shared, 2.0)
    )
    # ...a step of one volume alone gets a fifth of the extra: its own part is taken as it is.
    alone = start.copy()
    alone[3] = start[3] @ matrix_from_params([0.5, 0, 0, 0, 0, 0])
    out = relax_transforms(start, alone, 2.0, neighbours)
    assert np.allclose(np.linalg.solve(start[3], out[3])[:3, 3], [0.5 * 1.2, 0, 0])
    moved = [i for i in range(n) if 3 in neighbours[i][1:]]
    for i in range(n):
        expected = [0.5 / 5, 0, 0] if i in moved else [0, 0, 0]
        if i != 3:
            assert np.allclose(np.linalg.solve(start[i], out[i])[:3, 3], expected)
    # Below 1, or without neighbours, the whole step is scaled.
    for relaxation, nbrs in ((0.5, neighbours), (2.0, None)):
        assert np.allclose(
            relax_transforms(start, alone, relaxation, nbrs), interpolate_transforms(start, alone, relaxation)
        )
