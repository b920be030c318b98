"""Embedding dmriprep_motion's head-motion correction in another Nipype pipeline.

``init_dwi_motion_wf`` is an ordinary Nipype workflow: feed its ``inputnode`` a DWI
series and its FSL gradient files, and connect whatever you need from its
``outputnode`` (corrected series, rotated b-vectors, b0 reference, brain mask,
transforms, confounds...). Here a parent pipeline summarizes the estimated motion
and saves the corrected series with a ``DataSink``.

Run it as a script::

    python embed_motion_wf.py sub-01_dwi.nii.gz sub-01_dwi.bval sub-01_dwi.bvec /tmp/embed
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from nipype.interfaces import io as nio
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from dmriprep_motion.engine import WakefulMultiProcPlugin, worker_threads
from dmriprep_motion.models import choose_model
from dmriprep_motion.workflows.hmc import init_dwi_motion_wf


def summarize_motion(confounds: str) -> dict:
    """Mean and maximum framewise displacement (mm) of a confounds TSV."""
    import numpy as np

    from dmriprep_motion.reports.assemble import read_confounds

    fd = read_confounds(confounds)["framewise_displacement"]
    return {"mean_fd": float(np.nanmean(fd)), "max_fd": float(np.nanmax(fd)), "n_volumes": int(fd.size)}


def init_parent_wf(
    *, bvals: np.ndarray, base_dir: str | Path, sloppy: bool = False, passes: int = 2, nprocs: int = 1
) -> pe.Workflow:
    """A parent pipeline running dmriprep_motion on one DWI series.

    Parameters
    ----------
    bvals : array
        b-values of the series (to choose the signal model, as ``--model auto`` does).
    base_dir : path
        Working directory; the ``DataSink`` writes to ``<base_dir>/results``.
    sloppy, passes, nprocs
        Passed to :func:`~dmriprep_motion.workflows.hmc.init_dwi_motion_wf`.
    """
    workflow = pe.Workflow(name="parent_wf", base_dir=str(base_dir))
    inputnode = pe.Node(niu.IdentityInterface(fields=["dwi", "bval", "bvec"]), name="inputnode")

    model, _why = choose_model(bvals, 50.0)
    motion_wf = init_dwi_motion_wf(model=model, passes=passes, sloppy=sloppy, seed=42, omp_nthreads=nprocs)

    summary = pe.Node(
        niu.Function(function=summarize_motion, input_names=["confounds"], output_names=["summary"]),
        name="summary",
    )
    sink = pe.Node(nio.DataSink(base_directory=str(Path(base_dir) / "results")), name="sink")

    # fmt: off
    workflow.connect([
        (inputnode, motion_wf, [("dwi", "inputnode.dwi_file"), ("bval", "inputnode.in_bval"),
                                ("bvec", "inputnode.in_bvec")]),
        (motion_wf, summary, [("outputnode.confounds", "confounds")]),
        (motion_wf, sink, [("outputnode.dwi_file", "dwi.@corrected"),
                           ("outputnode.out_bvec", "dwi.@bvec"),
                           ("outputnode.dwiref", "dwi.@dwiref"),
                           ("outputnode.confounds", "motion.@confounds")]),
    ])
    # fmt: on
    return workflow


def main(argv: list[str] | None = None) -> None:
    """Correct one series: ``embed_motion_wf.py DWI BVAL BVEC WORKDIR``."""
    dwi, bval, bvec, base_dir = (sys.argv[1:] if argv is None else argv)[:4]
    workflow = init_parent_wf(bvals=np.loadtxt(bval), base_dir=base_dir, sloppy=True, passes=1)
    workflow.inputs.inputnode.dwi = str(Path(dwi).absolute())
    workflow.inputs.inputnode.bval = str(Path(bval).absolute())
    workflow.inputs.inputnode.bvec = str(Path(bvec).absolute())
    # Nipype's MultiProc, woken up by finished nodes instead of sleeping between polls; one
    # BLAS thread per worker (not one per CPU in each of them)
    with worker_threads(1):
        result = workflow.run(plugin=WakefulMultiProcPlugin(plugin_args={"n_procs": 2}))
    summary = next(node for node in result.nodes() if node.name == "summary")
    print(summary.result.outputs.summary)


if __name__ == "__main__":
    main()
