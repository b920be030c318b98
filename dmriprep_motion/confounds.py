"""Motion confounds table (pure NumPy; no Nipype)."""

from __future__ import annotations

import numpy as np

from dmriprep_motion.gradients import shell_labels
from dmriprep_motion.motion import FD_RADIUS, affine_parameters, framewise_displacement, motion_parameters
from dmriprep_motion.outliers import flag_outliers

RIGID_COLUMNS = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
AFFINE_COLUMNS = ["scale_x", "scale_y", "scale_z", "shear_xy", "shear_xz", "shear_yz"]

_AXES = {"x": "left-right (R+)", "y": "posterior-anterior (A+)", "z": "inferior-superior (S+)"}


def column_metadata(transform: str = "Rigid", outlier_threshold: float = 4.0) -> dict[str, dict[str, str]]:
    """BIDS-style descriptions of every confounds column."""
    meta: dict[str, dict[str, str]] = {}
    for axis, name in _AXES.items():
        meta[f"trans_{axis}"] = {
            "Description": f"Translation along the {name} axis of the rigid part of the transform "
            "mapping the reference (dwiref) onto the volume, RAS+ scanner coordinates.",
            "Units": "mm",
        }
        meta[f"rot_{axis}"] = {
            "Description": f"Rotation about the {name} axis (Euler angles, R = Rz·Ry·Rx, right-hand "
            "rule), of the rigid part of the reference-to-volume transform.",
            "Units": "rad",
        }
    meta["framewise_displacement"] = {
        "Description": f"Framewise displacement (Power et al., 2012): sum of absolute changes of the "
        f"six rigid parameters from the previous volume, rotations turned into arc length on a "
        f"{FD_RADIUS:g} mm sphere. n/a for the first volume.",
        "Units": "mm",
    }
    meta["similarity"] = {
        "Description": "Pearson correlation, inside the brain mask, between the corrected volume and "
        "its registration target (the model prediction; the b0 reference for b0 volumes).",
        "Units": "arbitrary",
    }
    meta["outlier"] = {
        "Description": "1 if the volume's similarity is abnormally low for its shell: robust z-score "
        f"(median, 1.4826 x MAD) below -{outlier_threshold:g}; 0 otherwise (flagging disabled if 0).",
        "Units": "unitless",
        "Levels": {"0": "not an outlier", "1": "outlier"},
        "Threshold": outlier_threshold,
    }
    meta["bval"] = {"Description": "b-value of the volume.", "Units": "s/mm^2"}
    if transform == "Affine":
        for col in AFFINE_COLUMNS:
            meta[col] = {
                "Description": f"{col.split('_')[0].capitalize()} ({col.split('_')[1]}) of the symmetric "
                "stretch S in the polar decomposition A = R·S of the affine (eddy-current-like "
                "distortion); 1 (scales) or 0 (shears) for no distortion.",
                "Units": "unitless",
            }
    return meta


def confounds_table(
    xforms_ras: np.ndarray,
    bvals: np.ndarray,
    similarity: np.ndarray | None = None,
    transform: str = "Rigid",
    outlier_threshold: float = 4.0,
    b0_threshold: float = 50.0,
) -> tuple[list[str], np.ndarray]:
    """Build the confounds columns and values (N rows) from per-volume transforms."""
    params = motion_parameters(xforms_ras)
    columns = RIGID_COLUMNS + ["framewise_displacement", "similarity", "outlier", "bval"]
    sim = np.full(params.shape[0], np.nan) if similarity is None else np.asarray(similarity, dtype=float)
    flags = flag_outliers(sim, shell_labels(np.asarray(bvals), b0_threshold), outlier_threshold)
    values = [
        params,
        framewise_displacement(params)[:, None],
        sim[:, None],
        flags.astype(float)[:, None],
        np.asarray(bvals)[:, None],
    ]
    if transform == "Affine":
        columns += AFFINE_COLUMNS
        values.append(affine_parameters(xforms_ras))
    return columns, np.hstack(values)


def write_tsv(path, columns: list[str], values: np.ndarray) -> None:
    """Write a BIDS TSV (``n/a`` for missing values)."""
    lines = ["\t".join(columns)]
    for row in values:
        lines.append("\t".join("n/a" if not np.isfinite(v) else f"{v:.8g}" for v in row))
    with open(path, "w") as fobj:
        fobj.write("\n".join(lines) + "\n")
