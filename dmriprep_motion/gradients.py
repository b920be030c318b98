"""Diffusion gradient tables: reading, validation, conventions and rotation.

Pure NumPy; no Nipype.  b-vectors are handled in the FSL/BIDS convention on
disk (unit vectors in the voxel frame of the image, with the first axis flipped
when the voxel-to-world affine has a positive determinant) and converted to
RAS+ world coordinates whenever they must be rotated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: b-vectors whose norm deviates from 1 by less than this are normalised silently.
NORM_TOLERANCE = 0.1


class GradientError(ValueError):
    """The gradient table cannot be used (a user error, reported in one line)."""


@dataclass(frozen=True)
class GradientTable:
    """A validated gradient table.

    Attributes
    ----------
    bvals : (N,) ndarray
        b-values in s/mm².
    bvecs : (N, 3) ndarray
        Unit b-vectors in the FSL voxel convention (zeros for b0 volumes).
    b0_threshold : float
        Volumes with ``bval <= b0_threshold`` are b0s.
    """

    bvals: np.ndarray
    bvecs: np.ndarray
    b0_threshold: float = 50.0

    @property
    def b0_mask(self) -> np.ndarray:
        """Boolean mask of the b0 volumes."""
        return self.bvals <= self.b0_threshold

    @property
    def b0_indices(self) -> list[int]:
        """Indices of the b0 volumes, in acquisition order."""
        return np.flatnonzero(self.b0_mask).tolist()

    @property
    def dwi_indices(self) -> list[int]:
        """Indices of the diffusion-weighted volumes, in acquisition order."""
        return np.flatnonzero(~self.b0_mask).tolist()

    @property
    def shells(self) -> np.ndarray:
        """Shell label of every volume (0 for b0s), see :func:`shell_labels`."""
        return shell_labels(self.bvals, self.b0_threshold)


def _read_numbers(path: Path, kind: str, allow_nan: bool = False) -> np.ndarray:
    if not path.exists():
        raise GradientError(f"{kind} file not found: {path}")
    text = path.read_text(errors="replace").strip()
    if not text:
        raise GradientError(f"{kind} file is empty: {path}")
    try:
        rows = [[float(v) for v in line.replace(",", " ").split()] for line in text.splitlines()]
    except ValueError as err:
        raise GradientError(f"{kind} file is malformed ({err}): {path}") from None
    rows = [row for row in rows if row]
    if len({len(row) for row in rows}) != 1:
        raise GradientError(f"{kind} file has rows of different lengths: {path}")
    values = np.array(rows, dtype=float)
    if not allow_nan and not np.all(np.isfinite(values)):
        raise GradientError(f"{kind} file contains NaN or infinite values: {path}")
    return values


def read_bvals(path: str | Path) -> np.ndarray:
    """Read an FSL ``.bval`` file (one row, or one column) as a 1D array."""
    values = _read_numbers(Path(path), "bval")
    if min(values.shape) != 1:
        raise GradientError(f"bval file must hold a single row of numbers: {path}")
    values = values.ravel()
    if np.any(values < 0):
        raise GradientError(f"bval file contains negative b-values: {path}")
    return values


def read_bvecs(path: str | Path, n_volumes: int | None = None) -> np.ndarray:
    """Read an FSL ``.bvec`` file (3×N, or N×3 which is transposed) as an (N, 3) array."""
    values = _read_numbers(Path(path), "bvec", allow_nan=True)  # b0 rows are checked later
    if values.shape[0] == 3 and (n_volumes is None or values.shape[1] == n_volumes):
        return values.T.copy()
    if values.shape[1] == 3 and (n_volumes is None or values.shape[0] == n_volumes):
        return values.copy()
    expected = f"3×{n_volumes}" if n_volumes is not None else "3×N"
    raise GradientError(
        f"bvec file has shape {values.shape[0]}×{values.shape[1]}, expected {expected}: {path}"
    )


def shell_labels(bvals: np.ndarray, b0_threshold: float = 50.0, tolerance: float = 100.0) -> np.ndarray:
    """Group b-values into shells.

    Parameters
    ----------
    bvals : (N,) array
        b-values.
    b0_threshold : float
        b-values at or below this are b0 (label 0).
    tolerance : float
        b-values closer than this (s/mm²) belong to the same shell.

    Returns
    -------
    (N,) int array
        0 for b0s, then 1, 2, … by increasing shell b-value.
    """
    bvals = np.asarray(bvals, dtype=float)
    labels = np.zeros(bvals.shape, dtype=int)
    weighted = np.flatnonzero(bvals > b0_threshold)
    if weighted.size == 0:
        return labels
    order = weighted[np.argsort(bvals[weighted], kind="stable")]
    label, previous = 1, bvals[order[0]]
    for idx in order:
        if bvals[idx] - previous > tolerance:
            label += 1
        labels[idx] = label
        previous = bvals[idx]
    return labels


def shell_bvalues(bvals: np.ndarray, b0_threshold: float = 50.0) -> list[float]:
    """Return the (rounded) nominal b-value of each non-zero shell."""
    labels = shell_labels(bvals, b0_threshold)
    return [float(np.round(np.median(bvals[labels == lab]), -1)) for lab in range(1, labels.max() + 1)]


def load_gradient_table(
    bval_file: str | Path,
    bvec_file: str | Path,
    n_volumes: int,
    *,
    b0_threshold: float = 50.0,
    norm_tolerance: float = NORM_TOLERANCE,
) -> GradientTable:
    """Read and validate an FSL gradient table for a series of ``n_volumes`` volumes.

    Raises
    ------
    GradientError
        With a one-line, user-facing explanation of what is wrong.
    """
    bvals = read_bvals(bval_file)
    if bvals.size != n_volumes:
        raise GradientError(
            f"{Path(bval_file).name} lists {bvals.size} b-values but the DWI has {n_volumes} volumes"
        )
    bvecs = read_bvecs(bvec_file, n_volumes)
    if bvecs.shape[0] != n_volumes:
        raise GradientError(
            f"{Path(bvec_file).name} lists {bvecs.shape[0]} b-vectors but the DWI has {n_volumes} volumes"
        )
    b0 = bvals <= b0_threshold
    nonfinite = ~np.isfinite(bvecs).all(axis=1)
    if (nonfinite & ~b0).any():
        first = int(np.flatnonzero(nonfinite & ~b0)[0])
        raise GradientError(f"{Path(bvec_file).name}: b-vector {first} is not finite (NaN/Inf)")
    if not b0.any():
        raise GradientError(
            f"no b0 volume (b <= {b0_threshold:g}) in {Path(bval_file).name}; "
            "a b0 reference is required (see --b0-threshold)"
        )
    if b0.all():
        raise GradientError(f"all volumes are b0 in {Path(bval_file).name}: nothing to correct")
    bvecs = np.where(nonfinite[:, None], 0.0, bvecs)
    norms = np.linalg.norm(bvecs, axis=1)
    bad = ~b0 & (np.abs(norms - 1.0) > norm_tolerance)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise GradientError(
            f"{Path(bvec_file).name}: b-vector {first} has norm {norms[first]:.3f} "
            f"(more than {norm_tolerance:g} away from 1)"
        )
    bvecs = bvecs.copy()
    bvecs[~b0] /= norms[~b0, None]
    bvecs[b0] = 0.0
    return GradientTable(bvals=bvals, bvecs=bvecs, b0_threshold=b0_threshold)


def write_bvals(bvals: np.ndarray, path: str | Path) -> Path:
    """Write (N,) b-values as an FSL text file (one row)."""
    Path(path).write_text(" ".join(f"{b:g}" for b in np.asarray(bvals)) + "\n")
    return Path(path)


def write_bvecs(bvecs: np.ndarray, path: str | Path) -> Path:
    """Write (N, 3) b-vectors as an FSL text file (three rows)."""
    rows = [" ".join(f"{v:.6f}" for v in row) for row in np.asarray(bvecs, dtype=float).T]
    Path(path).write_text("\n".join(rows) + "\n")
    return Path(path)


def write_fsl(bvals: np.ndarray, bvecs: np.ndarray, bval_file: str | Path, bvec_file: str | Path) -> None:
    """Write ``bvals`` (N,) and ``bvecs`` (N, 3) as FSL text files."""
    write_bvals(bvals, bval_file)
    write_bvecs(bvecs, bvec_file)


def _fsl_to_ras_matrix(affine: np.ndarray) -> np.ndarray:
    """3×3 matrix taking FSL voxel-convention vectors to RAS+ world directions."""
    linear = np.asarray(affine, dtype=float)[:3, :3]
    # Orthonormal part of the voxel axes (handles anisotropic voxels and shears).
    u, _, vt = np.linalg.svd(linear)
    rotation = u @ vt
    flip = np.diag([-1.0, 1.0, 1.0]) if np.linalg.det(linear) > 0 else np.eye(3)
    return rotation @ flip


def fsl_to_ras(bvecs: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Convert (N, 3) FSL b-vectors of an image with ``affine`` to RAS+ world vectors."""
    return np.asarray(bvecs, dtype=float) @ _fsl_to_ras_matrix(affine).T


def ras_to_fsl(bvecs: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Convert (N, 3) RAS+ world b-vectors to the FSL convention of an image with ``affine``."""
    return np.asarray(bvecs, dtype=float) @ _fsl_to_ras_matrix(affine)


def rotation_part(matrix: np.ndarray) -> np.ndarray:
    """Closest rotation to the linear part of a 4×4 (or 3×3) affine (polar decomposition)."""
    linear = np.asarray(matrix, dtype=float)[:3, :3]
    u, _, vt = np.linalg.svd(linear)
    rot = u @ vt
    if np.linalg.det(rot) < 0:  # reflections are not head motion
        u[:, -1] *= -1
        rot = u @ vt
    return rot


def rotate_bvecs(bvecs: np.ndarray, affine: np.ndarray, xforms_ras: np.ndarray) -> np.ndarray:
    """Express every b-vector in the head frame of the reference.

    Parameters
    ----------
    bvecs : (N, 3) array
        FSL-convention b-vectors of the original series (scanner frame).
    affine : (4, 4) array
        Voxel-to-RAS affine of the image the b-vectors belong to (the reference
        grid is the native grid, so input and output share it).
    xforms_ras : (N, 4, 4) array
        Per-volume transforms mapping reference RAS+ points onto the moved
        volume's RAS+ points (the ITK/ANTs "fixed to moving" convention).

    Returns
    -------
    (N, 3) array
        Rotated FSL-convention b-vectors; b0 rows (zero vectors) stay zero.
    """
    ras = fsl_to_ras(bvecs, affine)
    rotated = np.empty_like(ras)
    for i, (vec, xfm) in enumerate(zip(ras, np.asarray(xforms_ras), strict=True)):
        # The head rotated by R (reference -> moved), so the gradient applied in the
        # scanner frame is R^-1 g in the head (reference) frame; R^-1 = R^T.
        rotated[i] = rotation_part(xfm).T @ vec
    out = ras_to_fsl(rotated, affine)
    norms = np.linalg.norm(out, axis=1)
    nonzero = norms > 1e-8
    out[nonzero] /= norms[nonzero, None]
    out[~nonzero] = 0.0
    return out
