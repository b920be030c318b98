"""Rigid/affine transforms, motion parameters, metrics and resampling.

Pure NumPy/SciPy/NiBabel/NiTransforms; no Nipype.

Conventions
-----------
A per-volume transform ``T`` is a 4×4 matrix in RAS+ millimetres that maps a
point of the reference (``dwiref``) onto the same tissue point in the original,
moved volume.  This is ITK/ANTs' "fixed to moving" convention, so resampling a
volume onto the reference grid is ``out(x) = vol(T x)``, and the file written to
``..._from-orig_to-dwiref_mode-image_desc-hmc_xfm.txt`` holds exactly these
transforms (converted to ITK's LPS convention).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nb
import numpy as np
from nitransforms.io.itk import ITKLinearTransform, ITKLinearTransformArray
from scipy import ndimage as ndi

#: Radius (mm) of the sphere used to turn rotations into displacements (Power et al., 2012).
FD_RADIUS = 50.0

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


# --------------------------------------------------------------------------- I/O
def load_itk(path: str | Path) -> np.ndarray:
    """Read an ITK/ANTs linear transform (``.mat`` or ``.txt``) as a 4×4 RAS+ matrix."""
    return ITKLinearTransform.from_filename(str(path)).to_ras()


def load_itk_series(path: str | Path) -> np.ndarray:
    """Read an ITK text file with one transform per volume as an (N, 4, 4) RAS+ array."""
    return ITKLinearTransformArray.from_filename(str(path)).to_ras()


def _itk_block(matrix_ras: np.ndarray, index: int) -> str:
    lps = _LPS @ np.asarray(matrix_ras, dtype=float) @ _LPS
    params = list(lps[:3, :3].ravel()) + list(lps[:3, 3])
    return (
        f"#Transform {index}\n"
        "Transform: AffineTransform_double_3_3\n"
        f"Parameters: {' '.join(f'{p:.12g}' for p in params)}\n"
        "FixedParameters: 0 0 0\n"
    )


def write_itk(path: str | Path, matrices_ras: np.ndarray) -> Path:
    """Write one (4×4) or several ((N, 4, 4)) RAS+ transforms to an ITK text file.

    Full double precision is kept (NiTransforms' writer rounds to 6 digits).
    """
    mats = np.asarray(matrices_ras, dtype=float).reshape(-1, 4, 4)
    text = "#Insight Transform File V1.0\n" + "".join(_itk_block(mat, i) for i, mat in enumerate(mats))
    Path(path).write_text(text)
    return Path(path)


# --------------------------------------------------------------------- parameters
def euler_from_matrix(rotation: np.ndarray) -> np.ndarray:
    """Euler angles (rad) ``(rot_x, rot_y, rot_z)`` of ``R = Rz @ Ry @ Rx``."""
    r = np.asarray(rotation, dtype=float)[:3, :3]
    rot_y = np.arcsin(np.clip(-r[2, 0], -1.0, 1.0))
    if abs(np.cos(rot_y)) > 1e-8:
        rot_x = np.arctan2(r[2, 1], r[2, 2])
        rot_z = np.arctan2(r[1, 0], r[0, 0])
    else:  # gimbal lock: put everything in rot_z
        rot_x = 0.0
        rot_z = np.arctan2(-r[0, 1], r[1, 1])
    return np.array([rot_x, rot_y, rot_z])


def matrix_from_params(params: np.ndarray) -> np.ndarray:
    """4×4 rigid matrix from ``(trans_x, trans_y, trans_z, rot_x, rot_y, rot_z)`` (mm, rad)."""
    tx, ty, tz, ax, ay, az = np.asarray(params, dtype=float)
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    out = np.eye(4)
    out[:3, :3] = rz @ ry @ rx
    out[:3, 3] = (tx, ty, tz)
    return out


def polar_decomposition(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split the linear part ``A`` of an affine into ``A = R @ S``.

    ``R`` is a proper rotation and ``S`` a symmetric stretch (scales and shears).
    """
    linear = np.asarray(matrix, dtype=float)[:3, :3]
    u, s, vt = np.linalg.svd(linear)
    if np.linalg.det(u @ vt) < 0:
        u[:, -1] *= -1
        s[-1] *= -1
    rot = u @ vt
    stretch = vt.T @ np.diag(s) @ vt
    return rot, stretch


def motion_parameters(matrices_ras: np.ndarray) -> np.ndarray:
    """Six rigid parameters per volume from (N, 4, 4) transforms.

    For affine transforms the rotation of the polar decomposition is used, so
    the six numbers are always the rigid part of the motion.

    Returns
    -------
    (N, 6) array
        ``trans_x trans_y trans_z`` (mm) and ``rot_x rot_y rot_z`` (rad), RAS+.
    """
    mats = np.asarray(matrices_ras, dtype=float).reshape(-1, 4, 4)
    out = np.zeros((mats.shape[0], 6))
    for i, mat in enumerate(mats):
        rot, _ = polar_decomposition(mat)
        out[i, :3] = mat[:3, 3]
        out[i, 3:] = euler_from_matrix(rot)
    return out


def affine_parameters(matrices_ras: np.ndarray) -> np.ndarray:
    """Scales and shears of the non-rigid part ``S`` of each transform.

    Returns
    -------
    (N, 6) array
        ``scale_x scale_y scale_z shear_xy shear_xz shear_yz`` (unitless; 1 and 0
        for a rigid transform).
    """
    mats = np.asarray(matrices_ras, dtype=float).reshape(-1, 4, 4)
    out = np.zeros((mats.shape[0], 6))
    for i, mat in enumerate(mats):
        _, stretch = polar_decomposition(mat)
        out[i] = [stretch[0, 0], stretch[1, 1], stretch[2, 2], stretch[0, 1], stretch[0, 2], stretch[1, 2]]
    return out


def framewise_displacement(params: np.ndarray, radius: float = FD_RADIUS) -> np.ndarray:
    """Power's framewise displacement (mm) from (N, 6) motion parameters.

    The first volume has no predecessor and gets NaN.
    """
    params = np.asarray(params, dtype=float)
    fd = np.full(params.shape[0], np.nan)
    if params.shape[0] > 1:
        diff = np.abs(np.diff(params, axis=0))
        fd[1:] = diff[:, :3].sum(axis=1) + radius * diff[:, 3:].sum(axis=1)
    return fd


def mask_coordinates(mask_img: nb.spatialimages.SpatialImage) -> np.ndarray:
    """RAS+ coordinates (M, 3) of the voxels inside a mask image."""
    ijk = np.argwhere(np.asanyarray(mask_img.dataobj) > 0)
    return nb.affines.apply_affine(mask_img.affine, ijk)


def displacement(matrix_a: np.ndarray, matrix_b: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance (mm) between where two transforms send each of ``points`` (M, 3)."""
    pa = nb.affines.apply_affine(np.asarray(matrix_a, dtype=float), points)
    pb = nb.affines.apply_affine(np.asarray(matrix_b, dtype=float), points)
    return np.linalg.norm(pa - pb, axis=1)


def transform_errors(estimated: np.ndarray, truth: np.ndarray, points: np.ndarray) -> dict[str, np.ndarray]:
    """Per-volume errors between estimated and true (N, 4, 4) transforms.

    Returns
    -------
    dict
        ``mean_disp`` and ``max_disp`` (mm, over ``points``), ``rot_err`` (deg,
        angle of the residual rotation) and ``trans_err`` (mm, at the centroid
        of ``points``).
    """
    est = np.asarray(estimated, dtype=float).reshape(-1, 4, 4)
    tru = np.asarray(truth, dtype=float).reshape(-1, 4, 4)
    centroid = points.mean(axis=0, keepdims=True)
    out = {k: np.zeros(est.shape[0]) for k in ("mean_disp", "max_disp", "rot_err", "trans_err")}
    for i, (e, t) in enumerate(zip(est, tru, strict=True)):
        disp = displacement(e, t, points)
        out["mean_disp"][i] = disp.mean()
        out["max_disp"][i] = disp.max()
        residual = polar_decomposition(e)[0] @ polar_decomposition(t)[0].T
        cos = np.clip((np.trace(residual) - 1.0) / 2.0, -1.0, 1.0)
        out["rot_err"][i] = np.degrees(np.arccos(cos))
        out["trans_err"][i] = displacement(e, t, centroid)[0]
    return out


def interpolate_transforms(start: np.ndarray, end: np.ndarray, fraction: float) -> np.ndarray:
    """Move each (4, 4) transform of ``start`` a ``fraction`` of the way to ``end`` (geodesically).

    ``start @ expm(fraction * logm(start⁻¹ @ end))``: 0 gives ``start``, 1 gives ``end``.
    """
    return relax_transforms(start, end, fraction)


def sphere_neighbours(bvecs: np.ndarray, labels: np.ndarray, k: int = 4) -> list[np.ndarray]:
    """For each volume, itself and its ``k`` nearest gradient directions in the same shell.

    Parameters
    ----------
    bvecs : (N, 3) array
        Gradient directions (``g`` and ``-g`` are the same direction).
    labels : (N,) int array
        Shell of each volume; 0 (b0) volumes get no neighbours but themselves.
    k : int
        Neighbours per volume (fewer in a shell of at most ``k`` volumes).

    Returns
    -------
    list of N int arrays
        Volume indices, the volume itself first.
    """
    g = np.asarray(bvecs, dtype=float)
    labels = np.asarray(labels)
    out = [np.array([i]) for i in range(len(labels))]
    for shell in np.unique(labels[labels > 0]):
        members = np.flatnonzero(labels == shell)
        closeness = np.abs(g[members] @ g[members].T)
        np.fill_diagonal(closeness, np.inf)  # itself first
        order = np.argsort(-closeness, axis=1, kind="stable")[:, : min(k, len(members) - 1) + 1]
        for row, index in enumerate(members):
            out[index] = members[order[row]]
    return out


def relax_transforms(
    start: np.ndarray, end: np.ndarray, relaxation: float, neighbours: list[np.ndarray] | None = None
) -> np.ndarray:
    """Move each transform ``relaxation`` times its step from ``start`` to ``end``.

    Below 1 the whole step is damped (as :func:`interpolate_transforms`).  Above 1, with
    ``neighbours`` (:func:`sphere_neighbours`), only the part of the step that volumes share
    with their neighbours on the sphere, the mean of their steps (matrix logarithms), is
    extrapolated: ``start @ expm(step + (relaxation - 1) * mean of the neighbours' steps)``.
    That part is what the passes correct slowly (a volume's leave-one-out prediction shares it);
    the rest of the step, which each pass corrects at once, is taken as it is.  Without
    ``neighbours`` the whole step is extrapolated.
    """
    from scipy.linalg import expm, logm

    a = np.asarray(start, dtype=float).reshape(-1, 4, 4)
    b = np.asarray(end, dtype=float).reshape(-1, 4, 4)
    steps = np.stack([np.real(logm(np.linalg.solve(m0, m1))) for m0, m1 in zip(a, b, strict=True)])
    if relaxation <= 1 or neighbours is None:
        moves = relaxation * steps
    else:
        moves = steps + (relaxation - 1) * np.stack([steps[rows].mean(axis=0) for rows in neighbours])
    out = np.empty_like(a)
    for i, (m0, move) in enumerate(zip(a, moves, strict=True)):
        out[i] = m0 @ expm(move)
        out[i, 3] = (0, 0, 0, 1)
    return out


def transform_change(previous: np.ndarray, current: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Mean displacement (mm) over ``points`` between two (N, 4, 4) transform sets."""
    prev = np.asarray(previous, dtype=float).reshape(-1, 4, 4)
    curr = np.asarray(current, dtype=float).reshape(-1, 4, 4)
    return np.array([displacement(p, c, points).mean() for p, c in zip(prev, curr, strict=True)])


# ---------------------------------------------------------------------- resampling
def resample_volume(
    data: np.ndarray,
    affine: np.ndarray,
    xform_ras: np.ndarray,
    ref_affine: np.ndarray,
    ref_shape: tuple[int, int, int],
    *,
    order: int = 3,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Resample a 3D volume onto a reference grid through ``out(x) = vol(T x)``.

    Parameters
    ----------
    data : 3D array
        The moved volume, on the grid of ``affine``.
    xform_ras : (4, 4) array
        Reference-to-moved RAS+ transform.
    order : int
        Spline order (3 for the final, single interpolation).
    mask : boolean 3D array on the reference grid, optional
        Interpolate only these voxels (0 elsewhere): the same values there as without a
        mask, at the cost of the mask's voxels instead of the whole grid's.

    Returns
    -------
    3D float32 array on the reference grid; negative spline overshoot is clipped
    to zero (diffusion signals are magnitudes).
    """
    vox = np.linalg.inv(affine) @ np.asarray(xform_ras, dtype=float) @ ref_affine
    options = {"order": order, "mode": "constant", "cval": 0.0, "prefilter": order > 1}
    data = np.asarray(data, dtype=np.float32)
    shape = tuple(ref_shape)
    if mask is None:
        out = ndi.affine_transform(data, vox[:3, :3], offset=vox[:3, 3], output_shape=shape, **options)
    else:
        out = np.zeros(shape, dtype=np.float32)
        where = np.nonzero(mask)
        coords = vox[:3, :3] @ np.array(where, dtype=float) + vox[:3, 3:]
        out[where] = ndi.map_coordinates(data, coords, **options)
    return np.clip(out, 0.0, None).astype(np.float32)


def is_identity(xform: np.ndarray, atol: float = 1e-9) -> bool:
    """Whether a 4×4 transform is the identity (to ``atol``)."""
    return bool(np.allclose(np.asarray(xform, dtype=float), np.eye(4), rtol=0.0, atol=atol))


def thread_map(func: Callable, *iterables: Iterable, n_threads: int = 1) -> list:
    """``list(map(func, *iterables))``, with ``n_threads`` calls at once when above 1.

    For work that releases the GIL (SciPy's interpolation, zlib); one thread runs in the
    caller, without a pool.
    """
    if n_threads > 1:
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            return list(pool.map(func, *iterables))
    return list(map(func, *iterables))


def resample_volumes(
    data: np.ndarray,
    affine: np.ndarray,
    xforms_ras: np.ndarray,
    *,
    order: int = 3,
    n_threads: int = 1,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Resample the volumes of a 4D array, each with its own transform (same grid out).

    ``xforms_ras`` holds one transform per volume of ``data``.  Volumes whose
    transform is the identity are copied, not interpolated (interpolating them on
    their own grid changes nothing but the time taken).  With ``mask``, only its voxels
    are filled (0 elsewhere; see :func:`resample_volume`).  SciPy's interpolation
    releases the GIL, so ``n_threads`` volumes are resampled at once.

    The output is in Fortran order, each volume one contiguous block: it is filled volume by
    volume, NIfTI stores it in that order (written without a transposed copy), and a mean
    over volumes runs along memory (``real-moderate``: 0.01 s instead of 0.26 s).
    """
    shape = data.shape[:3]
    xforms = np.asarray(xforms_ras, dtype=float).reshape(-1, 4, 4)
    out = np.zeros((*shape, xforms.shape[0]), dtype=np.float32, order="F")

    def one(index: int) -> None:
        if is_identity(xforms[index]):
            copied = np.clip(data[..., index], 0.0, None)
            out[..., index] = copied if mask is None else np.where(mask, copied, 0.0)
        else:
            out[..., index] = resample_volume(
                data[..., index], affine, xforms[index], affine, shape, order=order, mask=mask
            )

    thread_map(one, range(xforms.shape[0]), n_threads=n_threads)
    return out


def resample_series(
    img: nb.spatialimages.SpatialImage,
    xforms_ras: np.ndarray,
    *,
    order: int = 3,
    n_threads: int = 1,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Resample every volume of a 4D image with its own transform (see :func:`resample_volumes`).

    The series is read once (slicing a compressed file volume by volume would
    decompress it from the start each time).
    """
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    return resample_volumes(data, img.affine, xforms_ras, order=order, n_threads=n_threads, mask=mask)


def similarity(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of two volumes inside a boolean mask."""
    va = np.asarray(a, dtype=float)[mask]
    vb = np.asarray(b, dtype=float)[mask]
    va = va - va.mean()
    vb = vb - vb.mean()
    denom = np.sqrt((va**2).sum() * (vb**2).sum())
    return float((va * vb).sum() / denom) if denom > 0 else 0.0
