"""Top-level workflows: one per participant, one sub-workflow per DWI run."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from dmriprep_motion import __version__
from dmriprep_motion.bids import DWIRun
from dmriprep_motion.models import choose_model, get_model
from dmriprep_motion.sampling import packaged_max_samples
from dmriprep_motion.workflows.hmc import init_dwi_motion_wf
from dmriprep_motion.workflows.outputs import DERIVATIVE_INPUTS, init_dwi_derivatives_wf
from dmriprep_motion.workflows.reports import REPORT_INPUTS, init_dwi_reports_wf

LOGGER = logging.getLogger("dmriprep_motion")


@dataclass(frozen=True)
class Settings:
    """Method and resource settings shared by every run (explicit, no global config)."""

    model: str = "auto"
    transform: str = "Rigid"
    passes: int = 3
    tolerance: float = 0.05
    relaxation: float = 2.0
    anchor: str = "auto"
    outlier_threshold: float = 4.0
    exclude_outliers: bool = False
    b0_threshold: float = 50.0
    sloppy: bool = False
    seed: int | None = 20161107
    registration_config: str | None = None
    omp_nthreads: int = 1
    series_nthreads: int = 1

    def as_metadata(self, model: str) -> dict:
        """Settings as recorded in the sidecar of the preprocessed series."""
        return {
            "Model": model,
            "Transform": self.transform,
            "Passes": self.passes,
            "Tolerance": self.tolerance,
            "Relaxation": self.relaxation,
            "Anchor": self.anchor,
            "OutlierThreshold": self.outlier_threshold,
            "ExcludeOutliers": self.exclude_outliers,
            "B0Threshold": self.b0_threshold,
            "Sloppy": self.sloppy,
            "Seed": self.seed,
            "RegistrationConfig": self.registration_config or "packaged preset",
            # init_dwi_motion_wf's default cap (none with a user's config)
            "RegistrationMaxSamples": packaged_max_samples(
                sloppy=self.sloppy, custom_settings=bool(self.registration_config)
            )
            or None,
        }


def resolve_model(run: DWIRun, settings: Settings) -> str:
    """The model used for ``run`` (``auto`` resolved and logged); checks it fits the data.

    Raises
    ------
    dmriprep_motion.models.ModelError
        When the data cannot support the requested model.
    """
    bvecs = run.bvecs
    if bvecs is None:  # a run not made by collect_runs: read its gradients
        from dmriprep_motion.gradients import load_gradient_table

        gtab = load_gradient_table(run.bval, run.bvec, run.bvals.size, b0_threshold=settings.b0_threshold)
        bvecs = gtab.bvecs
    if settings.model == "auto":
        model, why = choose_model(run.bvals, settings.b0_threshold, bvecs=bvecs)
        LOGGER.info("%s: model 'auto' -> '%s' (%s)", run.dwi.name, model, why)
        return model
    get_model(settings.model, b0_threshold=settings.b0_threshold).check(run.bvals, bvecs)
    return settings.model


def run_metadata(run: DWIRun, model: str, settings: Settings, bids_dir: Path) -> dict:
    """JSON sidecar of a preprocessed series."""
    meta = {k: v for k, v in run.metadata.items() if not isinstance(v, (bytes, bytearray))}
    rel = Path(run.dwi).absolute().relative_to(Path(bids_dir).absolute())
    meta.update(
        {
            "SkullStripped": False,
            "Sources": [f"bids:raw:{rel.as_posix()}"],
            "MotionCorrection": {
                "Software": f"dmriprep_motion {__version__}",
                **settings.as_metadata(model),
            },
        }
    )
    return meta


def init_single_subject_wf(
    *,
    subject: str,
    runs: list[DWIRun],
    output_dir: Path,
    bids_dir: Path,
    settings: Settings,
    name: str | None = None,
) -> Workflow:
    """Correct every DWI run of one participant and write its derivatives."""
    workflow = Workflow(name=name or f"sub_{subject}_wf")
    workflow.__desc__ = (
        f"Diffusion MRI data were preprocessed with *dmriprep_motion* {__version__}, "
        "which is based on Nipype [@nipype1] and NiWorkflows."
    )
    for run in runs:
        model = resolve_model(run, settings)
        motion_wf = init_dwi_motion_wf(
            model=model,
            transform=settings.transform,
            passes=settings.passes,
            tolerance=settings.tolerance,
            relaxation=settings.relaxation,
            anchor=settings.anchor,
            outlier_threshold=settings.outlier_threshold,
            exclude_outliers=settings.exclude_outliers,
            b0_threshold=settings.b0_threshold,
            sloppy=settings.sloppy,
            seed=settings.seed,
            registration_config=settings.registration_config,
            omp_nthreads=settings.omp_nthreads,
            series_nthreads=settings.series_nthreads,
            mem_gb=run.mem_gb,
            name=f"{run.name}_motion_wf",
        )
        motion_wf.inputs.inputnode.dwi_file = str(run.dwi)
        motion_wf.inputs.inputnode.in_bval = str(run.bval)
        motion_wf.inputs.inputnode.in_bvec = str(run.bvec)
        outputs_wf = init_dwi_derivatives_wf(
            output_dir=output_dir,
            reldir=run.reldir,
            stem=run.stem,
            metadata=run_metadata(run, model, settings, bids_dir),
            name=f"{run.name}_derivatives_wf",
        )
        fields = [f for f in DERIVATIVE_INPUTS if f != "qc"]
        workflow.connect([(motion_wf, outputs_wf, [(f"outputnode.{f}", f"inputnode.{f}") for f in fields])])

        # Visual report and QC metrics (the metrics also go into the derivatives).
        reports_wf = init_dwi_reports_wf(
            output_dir=output_dir,
            subject=run.subject,
            stem=run.stem,
            settings=settings.as_metadata(model),
            b0_threshold=settings.b0_threshold,
            outlier_threshold=settings.outlier_threshold,
            tolerance=settings.tolerance,
            mem_gb=run.mem_gb,
            name=f"{run.name}_reports_wf",
        )
        sources = {"dwi_file": "dwi_file", "in_bval": "out_bval", "out_bvec": "out_bvec"}
        workflow.connect([
            (motion_wf, reports_wf, [(f"outputnode.{sources.get(f, f)}", f"inputnode.{f}")
                                     for f in REPORT_INPUTS]),
            (reports_wf, outputs_wf, [("outputnode.qc", "inputnode.qc")]),
        ])  # fmt: skip
    return workflow


def init_dmriprep_motion_wf(
    *,
    runs: dict[str, list[DWIRun]],
    output_dir: Path,
    bids_dir: Path,
    settings: Settings,
    work_dir: Path,
) -> Workflow:
    """The whole job: one sub-workflow per participant."""
    # The version is part of the name (as in fMRIPrep): a work directory reused after an
    # upgrade starts afresh instead of mixing cached results of two versions.
    workflow = Workflow(name=f"dmriprep_motion_{__version__.replace('.', '_')}_wf")
    workflow.base_dir = str(work_dir)
    for subject, subject_runs in runs.items():
        single = init_single_subject_wf(
            subject=subject,
            runs=subject_runs,
            output_dir=output_dir,
            bids_dir=bids_dir,
            settings=settings,
        )
        crashdump_dir = str(Path(output_dir).absolute() / f"sub-{subject}" / "log")
        single.config["execution"] = {"crashdump_dir": crashdump_dir}
        # Nipype only merges the *top-level* workflow's config into its nodes: set the
        # crash folder on every node so crash files land in sub-X/log/ (listed by the report).
        for node in all_nodes(single):
            node.config = {"execution": {"crashdump_dir": crashdump_dir}}
        workflow.add_nodes([single])
    return workflow


def all_nodes(workflow: pe.Workflow) -> list[pe.Node]:
    """Every node of a workflow, recursively."""
    return list(workflow._get_all_nodes())
