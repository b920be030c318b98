"""Derivatives of one DWI run."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from dmriprep_motion.interfaces.bids import ExportDerivatives

DERIVATIVE_INPUTS = [
    "dwi_file", "out_bval", "out_bvec", "dwiref", "brain_mask", "confounds",
    "confounds_metadata", "xforms", "qc",
]  # fmt: skip


def init_dwi_derivatives_wf(
    *,
    output_dir: str | Path,
    reldir: str | Path,
    stem: str,
    metadata: dict,
    name: str = "dwi_derivatives_wf",
) -> Workflow:
    """Write the BIDS derivatives of one corrected DWI run.

    Parameters
    ----------
    output_dir : path
        Derivatives root.
    reldir, stem : str
        Folder below the root and file-name stem of the run.
    metadata : dict
        JSON sidecar of the preprocessed series (source metadata, ``Sources``,
        ``SkullStripped`` and the settings used).

    Inputs
    ------
    dwi_file, out_bval, out_bvec, dwiref, brain_mask, confounds, confounds_metadata, xforms, qc
    """
    workflow = Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=DERIVATIVE_INPUTS), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_files"]), name="outputnode")
    export = pe.Node(
        ExportDerivatives(
            output_dir=str(Path(output_dir).absolute()), reldir=str(reldir), stem=stem, metadata=metadata
        ),
        name="export",
        run_without_submitting=True,
    )
    # fmt: off
    workflow.connect([
        (inputnode, export, [("dwi_file", "dwi"), ("out_bval", "bval"), ("out_bvec", "bvec"),
                             ("dwiref", "dwiref"), ("brain_mask", "mask"), ("confounds", "confounds"),
                             ("confounds_metadata", "confounds_json"), ("xforms", "xforms"),
                             ("qc", "qc")]),
        (export, outputnode, [("out_files", "out_files")]),
    ])
    # fmt: on
    return workflow
