"""Reportlets and QC metrics of one corrected DWI run."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from dmriprep_motion.interfaces.reports import (
    AverageImages,
    ConvergencePlot,
    ExportReportlet,
    FlickerPlot,
    GradientsPlot,
    MotionPlot,
    QCMetrics,
    RunSummary,
    SimilarityPlot,
    VolumesAnimation,
)
from dmriprep_motion.motion import FD_RADIUS
from dmriprep_motion.qc import QC_COLUMNS

REPORT_INPUTS = [
    "dwi_orig", "dwi_file", "in_bval", "bvec_orig", "out_bvec", "dwiref", "brain_mask", "confounds",
    "predictions", "dwi_indices", "pass_volume_changes",
]  # fmt: skip

#: ``desc`` entity and extension of every reportlet (``<stem>_desc-<desc>_dwi.<ext>``).
REPORTLETS = {
    "summary": "html",
    "gradients": "svg",
    "motion": "svg",
    "avgdwi": "svg",
    "b0ref": "svg",
    "volumes": "gif",
    "convergence": "svg",
    "similarity": "svg",
}


def reportlet_path(output_dir: str | Path, subject: str, stem: str, desc: str) -> Path:
    """Where reportlet ``desc`` of run ``stem`` is written."""
    return Path(output_dir) / f"sub-{subject}" / "figures" / f"{stem}_desc-{desc}_dwi.{REPORTLETS[desc]}"


def qc_desc(radius: float = FD_RADIUS) -> str:
    """Methods paragraph (Markdown) on framewise displacement and the QC metrics.

    The metrics are named from :data:`dmriprep_motion.qc.QC_COLUMNS` (``LongName``), so the
    text follows the columns of ``<stem>_desc-qc_dwi.tsv``.

    Parameters
    ----------
    radius : float
        Radius (mm) of the sphere on which rotations are turned into displacements.

    Returns
    -------
    str
        A paragraph starting with a blank line, for a workflow's ``__desc__``.
    """
    names = [meta["LongName"] for meta in QC_COLUMNS.values()]
    metrics = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
    return (
        "\n\nFramewise displacement (FD) was computed from the estimated motion parameters of "
        "consecutive volumes as in [@power2012], rotations being turned into displacements on a "
        f"sphere of {radius:g} mm radius. For every series, quality-control metrics were computed "
        f"({metrics}), and a visual report was generated with NiReports."
    )


def init_dwi_reports_wf(
    *,
    output_dir: str | Path,
    subject: str,
    stem: str,
    settings: dict,
    b0_threshold: float = 50.0,
    outlier_threshold: float = 4.0,
    tolerance: float = 0.0,
    mem_gb: float = 1.0,
    name: str = "dwi_reports_wf",
) -> Workflow:
    """Compute QC metrics and write the reportlets of one run into ``sub-<subject>/figures/``.

    Parameters
    ----------
    output_dir : path
        Derivatives root.
    subject, stem : str
        Participant label (without ``sub-``) and file-name stem of the run.
    settings : dict
        Method settings shown in the summary (``Model``, ``Transform``, ``Passes``...).
    b0_threshold : float
        Volumes with ``bval <= b0_threshold`` are b0s.
    outlier_threshold : float
        Robust z-score of the similarity below which a volume is an outlier (used when the
        confounds have no ``outlier`` column, and to draw the thresholds).
    tolerance : float
        Convergence tolerance of the estimation passes (mm; 0: none): the QC metrics say
        whether the last pass stayed below it, and a warning is logged when it did not.
    mem_gb : float
        Size of one in-memory copy of the series (GB).

    Inputs
    ------
    dwi_orig, dwi_file : original (float copy) and corrected series
    in_bval, bvec_orig, out_bvec : b-values, original and rotated b-vectors
    dwiref, brain_mask, confounds : b0 reference, brain mask, confounds TSV
    predictions, dwi_indices : last-pass predictions and the volumes they belong to
    pass_volume_changes : per pass, the per-volume change of the transforms (mm)

    Outputs
    -------
    qc : dict of QC metrics (see :data:`dmriprep_motion.qc.QC_FIELDS`)

    The reportlets are written by ``export_<desc>`` nodes (see :func:`reportlet_path`).
    """
    workflow = Workflow(name=name)
    workflow.__desc__ = qc_desc()  # a paragraph of its own in the boilerplate
    inputnode = pe.Node(niu.IdentityInterface(fields=REPORT_INPUTS), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["qc"]), name="outputnode")

    thresholds = {"b0_threshold": b0_threshold, "outlier_threshold": outlier_threshold}
    qc = pe.Node(QCMetrics(tolerance=tolerance, label=Path(stem).name, **thresholds), name="qc",
                 run_without_submitting=True)  # fmt: skip
    summary = pe.Node(RunSummary(settings=settings, **thresholds), name="summary")
    gradients = pe.Node(GradientsPlot(b0_threshold=b0_threshold), name="gradients")
    motion = pe.Node(MotionPlot(**thresholds), name="motion")
    convergence = pe.Node(ConvergencePlot(), name="convergence")
    similarity = pe.Node(SimilarityPlot(**thresholds), name="similarity")
    # the original series's averages (and the b0 flicker) need not wait for the correction
    averages_orig = pe.Node(AverageImages(b0_threshold=b0_threshold), name="averages_orig", mem_gb=mem_gb)
    averages_corrected = pe.Node(AverageImages(b0_threshold=b0_threshold, b0_mean=False),
                                 name="averages_corrected", mem_gb=mem_gb)  # fmt: skip
    avgdwi = pe.Node(FlickerPlot(before_label="original", after_label="corrected"), name="avgdwi")
    b0ref = pe.Node(FlickerPlot(before_label="b0 average (not aligned)", after_label="b0 reference"),
                    name="b0ref")  # fmt: skip
    volumes = pe.Node(VolumesAnimation(**thresholds), name="volumes", mem_gb=3 * mem_gb)
    producers = {
        "summary": (summary, "out_file"),
        "gradients": (gradients, "out_file"),
        "motion": (motion, "out_file"),
        "avgdwi": (avgdwi, "out_file"),
        "b0ref": (b0ref, "out_file"),
        "volumes": (volumes, "out_file"),
        "convergence": (convergence, "out_file"),
        "similarity": (similarity, "out_file"),
    }
    exports = []
    for desc, (node, field) in producers.items():
        export = pe.Node(
            ExportReportlet(out_file=str(reportlet_path(Path(output_dir).absolute(), subject, stem, desc))),
            name=f"export_{desc}",
            run_without_submitting=True,
        )
        exports.append((node, export, [(field, "in_file")]))

    # fmt: off
    workflow.connect(exports + [
        (inputnode, qc, [("confounds", "in_confounds"), ("pass_volume_changes", "pass_changes")]),
        (inputnode, summary, [("confounds", "in_confounds")]),
        (qc, summary, [("qc", "qc")]),
        (inputnode, gradients, [("in_bval", "in_bval"), ("bvec_orig", "in_bvec"), ("out_bvec", "out_bvec"),
                                ("dwiref", "reference")]),
        (inputnode, motion, [("confounds", "in_confounds")]),
        (inputnode, convergence, [("pass_volume_changes", "changes")]),
        (inputnode, similarity, [("confounds", "in_confounds")]),
        (inputnode, averages_orig, [("dwi_orig", "in_file"), ("in_bval", "in_bval")]),
        (inputnode, averages_corrected, [("dwi_file", "in_file"), ("in_bval", "in_bval")]),
        (averages_orig, avgdwi, [("dwi_mean", "before")]),
        (averages_corrected, avgdwi, [("dwi_mean", "after")]),
        (inputnode, avgdwi, [("brain_mask", "in_mask")]),
        (averages_orig, b0ref, [("b0_mean", "before")]),
        (inputnode, b0ref, [("dwiref", "after"), ("brain_mask", "in_mask")]),
        (inputnode, volumes, [("dwi_orig", "dwi_orig"), ("dwi_file", "dwi_file"),
                              ("predictions", "predictions"), ("dwi_indices", "dwi_indices"),
                              ("dwiref", "reference"), ("brain_mask", "in_mask"),
                              ("confounds", "in_confounds")]),
        (qc, outputnode, [("qc", "qc")]),
    ])
    # fmt: on
    return workflow
