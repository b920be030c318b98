"""Inject known rigid motion into a DWI series (for tests and benchmarks).

Pure NumPy/NiBabel.  A motion is given as the 4×4 RAS+ matrix ``M`` that moves
the head: tissue at point ``p`` of the original volume appears at ``M p`` in the
moved volume.  The moved volume is therefore ``moved(y) = orig(M⁻¹ y)``, and the
transform a correct method recovers (reference → moved volume) is ``M @ T0``,
where ``T0`` is the volume's own transform before injection (identity for
motion-free data).

Because a real scanner applies its gradients in the scanner frame, a head
rotated by ``R`` experiences the gradient ``Rᵀ g``.  To keep the diffusion
contrast of an injected volume consistent with its file, its b-vector is
rotated forward: ``g_file = R g_head``.
"""

from __future__ import annotations

import numpy as np

from dmriprep_motion.gradients import fsl_to_ras, ras_to_fsl
from dmriprep_motion.motion import matrix_from_params, resample_volume


def inject_motion(
    data: np.ndarray,
    affine: np.ndarray,
    bvecs: np.ndarray,
    motions: dict[int, np.ndarray],
    *,
    order: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Move selected volumes of a 4D series.

    Parameters
    ----------
    data : 4D array
    affine : (4, 4) voxel-to-RAS affine
    bvecs : (N, 3) FSL b-vectors
    motions : dict
        Volume index → 4×4 RAS+ head motion ``M``, or six parameters
        ``(tx, ty, tz, rx, ry, rz)`` in mm and radians.

    Returns
    -------
    moved data (float32) and moved FSL b-vectors.
    """
    out = np.array(data, dtype=np.float32, copy=True)
    new_bvecs = np.array(bvecs, dtype=float, copy=True)
    for idx, motion in motions.items():
        mat = np.asarray(motion, dtype=float)
        if mat.shape != (4, 4):
            mat = matrix_from_params(mat)
        # moved(y) = orig(M^-1 y): resample with the reference->source transform M^-1.
        out[..., idx] = resample_volume(
            data[..., idx], affine, np.linalg.inv(mat), affine, data.shape[:3], order=order
        )
        if np.linalg.norm(new_bvecs[idx]) > 0:
            ras = fsl_to_ras(new_bvecs[idx][None], affine)[0]
            new_bvecs[idx] = ras_to_fsl((mat[:3, :3] @ ras)[None], affine)[0]
    return out, new_bvecs
