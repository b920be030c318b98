"""Per-subject HTML report, built from the derivatives once a participant is done."""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

import numpy as np

from dmriprep_motion import __version__
from dmriprep_motion.bids import DWIRun, atomic_write_text

LOGGER = logging.getLogger("dmriprep_motion")


def read_confounds(path: Path) -> dict[str, np.ndarray]:
    """Read a confounds TSV into columns (``n/a`` as NaN)."""
    lines = Path(path).read_text().splitlines()
    header = lines[0].split("\t")
    rows = [[np.nan if v == "n/a" else float(v) for v in line.split("\t")] for line in lines[1:]]
    values = np.array(rows, dtype=float).reshape(len(rows), len(header))
    return {name: values[:, i] for i, name in enumerate(header)}


def _motion_svg(conf: dict[str, np.ndarray], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 6), sharex=True)
    vols = np.arange(conf["trans_x"].size)
    for axis in "xyz":
        axes[0].plot(vols, conf[f"trans_{axis}"], label=axis)
        axes[1].plot(vols, np.degrees(conf[f"rot_{axis}"]), label=axis)
    axes[2].plot(vols, conf["framewise_displacement"], color="k")
    axes[0].set_ylabel("translation (mm)")
    axes[1].set_ylabel("rotation (deg)")
    axes[2].set_ylabel("FD (mm)")
    axes[2].set_xlabel("volume")
    axes[0].legend(ncol=3, fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="svg")
    plt.close(fig)
    return out


def write_subject_reports(runs: dict[str, list[DWIRun]], output_dir: Path, work_dir: Path) -> list[Path]:
    """Write ``sub-<label>.html`` for every processed participant."""
    written = []
    for subject, subject_runs in runs.items():
        sections = []
        for run in subject_runs:
            conf = read_confounds(run.derivative(output_dir, "confounds"))
            meta = json.loads(run.derivative(output_dir, "sidecar").read_text())
            figure = Path(output_dir) / f"sub-{subject}" / "figures" / f"{run.stem}_desc-motion_dwi.svg"
            _motion_svg(conf, figure)
            fd = conf["framewise_displacement"]
            settings = meta.get("MotionCorrection", {})
            rows = {
                "Volumes": conf["trans_x"].size,
                "Model": settings.get("Model"),
                "Transform": settings.get("Transform"),
                "Passes": settings.get("Passes"),
                "Mean FD (mm)": f"{np.nanmean(fd):.3f}",
                "Max FD (mm)": f"{np.nanmax(fd):.3f}",
            }
            table = "".join(
                f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows.items()
            )
            rel = figure.relative_to(output_dir).as_posix()
            sections.append(
                f"<section><h2>{html.escape(run.stem)}</h2><table>{table}</table>"
                f'<img src="{rel}" alt="motion traces of {html.escape(run.stem)}"></section>'
            )
        page = (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>sub-{subject}</title></head>"
            f"<body><h1>dmriprep-motion {__version__}: sub-{html.escape(subject)}</h1>{''.join(sections)}"
            "</body></html>\n"
        )
        path = Path(output_dir) / f"sub-{subject}.html"
        atomic_write_text(path, page)
        written.append(path)
        LOGGER.info("report: %s", path)
    return written
