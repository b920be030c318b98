"""Quality-control metrics of one corrected DWI run (pure NumPy; no Nipype).

A volume is flagged as an *outlier* when the confounds table has an ``outlier``
column set to 1 (the pipeline's own criterion), or, without that column, by the
same criterion (:mod:`dmriprep_motion.outliers`): its similarity to its
registration target (the model prediction; the b0 reference for b0 volumes) has
a robust z-score below ``-threshold`` within its shell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dmriprep_motion.gradients import shell_labels
from dmriprep_motion.outliers import flag_outliers as _flag_similarity
from dmriprep_motion.outliers import robust_location

#: Default robust z-score below which a volume's similarity flags it as an outlier
#: (the pipeline's ``--outlier-threshold`` default).
OUTLIER_Z = 4.0

#: QC metrics, in the column order of ``..._desc-qc_dwi.tsv``: the one table from which
#: the TSV header, its JSON sidecar (:func:`qc_sidecar`), the documentation and the methods
#: text are generated. ``LongName``, ``Description`` and ``Units`` are BIDS column keys.
QC_COLUMNS: dict[str, dict[str, str]] = {
    "volumes": {
        "LongName": "number of volumes",
        "Description": "Number of volumes in the series.",
        "Units": "unitless",
    },
    "fd_mean_mm": {
        "LongName": "mean framewise displacement",
        "Description": "Mean framewise displacement (FD) over the volumes that have a predecessor "
        "(FD column of the confounds table).",
        "Units": "mm",
    },
    "fd_max_mm": {
        "LongName": "maximum framewise displacement",
        "Description": "Maximum framewise displacement.",
        "Units": "mm",
    },
    "translation_max_mm": {
        "LongName": "largest translation",
        "Description": "Largest absolute translation along any axis (trans_x, trans_y, trans_z).",
        "Units": "mm",
    },
    "rotation_max_deg": {
        "LongName": "largest rotation",
        "Description": "Largest absolute rotation about any axis (rot_x, rot_y, rot_z, in degrees).",
        "Units": "deg",
    },
    "outliers": {
        "LongName": "number of outlier volumes",
        "Description": "Number of volumes flagged as outliers (outlier column of the confounds table).",
        "Units": "unitless",
    },
    "outliers_percent": {
        "LongName": "percentage of outlier volumes",
        "Description": "Percentage of the volumes flagged as outliers.",
        "Units": "%",
    },
    "similarity_mean": {
        "LongName": "mean similarity to the registration targets",
        "Description": "Mean Pearson correlation, inside the brain mask, between the corrected volumes "
        "and their registration targets (similarity column of the confounds table).",
        "Units": "arbitrary",
    },
    "passes_run": {
        "LongName": "number of estimation passes run",
        "Description": "Number of estimation passes whose registrations ran (later passes are "
        "skipped once a pass moves no transform by more than the tolerance).",
        "Units": "unitless",
    },
    "last_pass_change_mm": {
        "LongName": "largest change of a transform in the last pass",
        "Description": "Largest change, over the volumes, of a transform in the last pass that ran "
        "(mean displacement over the brain mask between its estimates before and after that pass).",
        "Units": "mm",
    },
    "converged": {
        "LongName": "convergence of the estimation",
        "Description": "true when the last pass that ran moved no transform by more than the "
        "tolerance; false when the passes ran out first (the estimates were still moving), or when "
        "no tolerance was set.",
        "Units": "unitless",
    },
}

#: QC metrics, in the column order of ``..._desc-qc_dwi.tsv``, with their descriptions.
QC_FIELDS = {name: meta["Description"] for name, meta in QC_COLUMNS.items()}


def qc_sidecar() -> dict[str, dict[str, str]]:
    """BIDS JSON sidecar of ``..._desc-qc_dwi.tsv``: ``LongName``, ``Description``, ``Units`` per column.

    Returns
    -------
    dict
        A copy of :data:`QC_COLUMNS` (safe to modify).
    """
    return {name: dict(meta) for name, meta in QC_COLUMNS.items()}


def read_confounds(path: str | Path) -> dict[str, np.ndarray]:
    """Read a confounds TSV into columns (``n/a`` as NaN)."""
    lines = Path(path).read_text().splitlines()
    header = lines[0].split("\t")
    rows = [[np.nan if v == "n/a" else float(v) for v in line.split("\t")] for line in lines[1:]]
    values = np.array(rows, dtype=float).reshape(len(rows), len(header))
    return {name: values[:, i] for i, name in enumerate(header)}


def similarity_thresholds(
    similarity: np.ndarray, bvals: np.ndarray, b0_threshold: float = 50.0, z: float = OUTLIER_Z
) -> np.ndarray:
    """Per-volume outlier threshold of the similarity, computed within each shell.

    Returns
    -------
    (N,) array
        ``median - z * max(1.4826 * MAD, MIN_SCALE)`` of the volume's shell (NaN
        similarities ignored); NaN for shells too small to judge or when ``z <= 0``.
    """
    similarity = np.asarray(similarity, dtype=float)
    if z <= 0:
        return np.full(similarity.shape, np.nan)
    centre, scale = robust_location(similarity, shell_labels(bvals, b0_threshold))
    return centre - z * scale


def flag_outliers(
    conf: dict[str, np.ndarray], b0_threshold: float = 50.0, z: float = OUTLIER_Z
) -> tuple[np.ndarray, str]:
    """Boolean outlier flags of every volume, and a sentence (HTML) describing the criterion."""
    if z <= 0 and "outlier" not in conf:
        return np.zeros(conf["similarity"].size, dtype=bool), "outlier flagging disabled"
    rule = (
        f"similarity to the target with a robust z-score (median, 1.4826&times;MAD) "
        f"&lt; &minus;{z:g} within its shell"
    )
    if "outlier" in conf:
        flags = np.nan_to_num(conf["outlier"], nan=0.0) > 0.5
        return flags, f"{rule} (<code>outlier</code> column of the confounds)"
    return _flag_similarity(conf["similarity"], shell_labels(conf["bval"], b0_threshold), z), rule


def qc_metrics(
    conf: dict[str, np.ndarray],
    b0_threshold: float = 50.0,
    z: float = OUTLIER_Z,
    pass_changes: list[list[float]] | None = None,
    tolerance: float = 0.0,
) -> dict[str, float | int | bool]:
    """The QC metrics of :data:`QC_FIELDS`.

    Parameters
    ----------
    conf : dict
        Confounds table (see :func:`read_confounds`).
    b0_threshold, z : float
        b0 threshold and outlier z-score (when the table has no ``outlier`` column).
    pass_changes, tolerance
        Per-pass, per-volume changes of the transforms and the convergence tolerance
        (see :func:`convergence_metrics`); without them nothing is known of convergence.
    """
    n = int(conf["trans_x"].size)
    fd = conf["framewise_displacement"]
    trans = np.stack([conf[f"trans_{a}"] for a in "xyz"], axis=1)
    rots = np.degrees(np.stack([conf[f"rot_{a}"] for a in "xyz"], axis=1))
    flags, _ = flag_outliers(conf, b0_threshold, z)
    finite_fd = fd[np.isfinite(fd)]
    sim = conf["similarity"]
    finite_sim = sim[np.isfinite(sim)]
    metrics = {
        "volumes": n,
        "fd_mean_mm": float(finite_fd.mean()) if finite_fd.size else 0.0,
        "fd_max_mm": float(finite_fd.max()) if finite_fd.size else 0.0,
        "translation_max_mm": float(np.nanmax(np.abs(trans))),
        "rotation_max_deg": float(np.nanmax(np.abs(rots))),
        "outliers": int(flags.sum()),
        "outliers_percent": float(100.0 * flags.sum() / n),
        "similarity_mean": float(finite_sim.mean()) if finite_sim.size else float("nan"),
        **convergence_metrics(pass_changes or [], tolerance),
    }
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()}


def convergence_metrics(
    pass_changes: list[list[float]], tolerance: float
) -> dict[str, float | int | bool | None]:
    """How far the estimation passes converged.

    Parameters
    ----------
    pass_changes : list of list of float
        Per pass, the per-volume change of the transforms (mm, mean displacement over the
        brain mask between the estimates before and after the pass).
    tolerance : float
        A pass that changes no transform by more than this (mm) ends the estimation (the
        registrations of later passes are skipped); 0 runs every pass.

    Returns
    -------
    dict
        ``passes_run``, ``last_pass_change_mm`` and ``converged`` (see :data:`QC_COLUMNS`).
    """
    maxima = [max(changes, default=0.0) for changes in pass_changes]
    if not maxima:
        return {"passes_run": 0, "last_pass_change_mm": None, "converged": False}  # null / n/a
    run = next((k + 1 for k, m in enumerate(maxima) if tolerance > 0 and m < tolerance), len(maxima))
    last = float(maxima[run - 1])
    converged = bool(tolerance > 0 and last < tolerance)
    return {"passes_run": run, "last_pass_change_mm": round(last, 6), "converged": converged}


def qc_tsv(metrics: dict[str, float | int]) -> str:
    """One-row BIDS TSV (header + values) of QC metrics, in :data:`QC_FIELDS` order."""
    keys = [k for k in QC_FIELDS if k in metrics] + [k for k in metrics if k not in QC_FIELDS]

    def _fmt(value) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, float):
            return "n/a" if not np.isfinite(value) else f"{value:.6g}"
        return str(value)

    return "\t".join(keys) + "\n" + "\t".join(_fmt(metrics[k]) for k in keys) + "\n"
