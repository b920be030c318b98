"""One pass of leave-one-volume-out estimation."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from dmriprep_motion.interfaces.dwi import FlagOutliers, ResampleSeries
from dmriprep_motion.interfaces.models import PredictVolume
from dmriprep_motion.interfaces.transforms import (
    AnchorShells,
    CheckConvergence,
    ITKToRAS,
    MergeTransforms,
    SelectItems,
)
from dmriprep_motion.workflows.registration import init_registration_node, sampling_connections

PASS_INPUTS = [
    "dwi_file", "volumes", "in_bval", "in_bvec", "n_volumes", "b0_indices", "dwi_indices",
    "b0_xforms", "init_xforms", "init_ras", "reg_mask", "brain_mask",
    "prev_change", "prev_predictions",
]  # fmt: skip


def init_hmc_pass_wf(
    *,
    pass_index: int,
    model: str,
    settings: str | Path,
    transform: str = "Rigid",
    relaxation: float = 1.0,
    b0_threshold: float = 50.0,
    tolerance: float = 0.0,
    outlier_threshold: float = 4.0,
    exclude_outliers: bool = False,
    max_samples: int = 0,
    seed: int | None = None,
    omp_nthreads: int = 1,
    series_nthreads: int = 1,
    mem_gb: float = 1.0,
    name: str | None = None,
) -> Workflow:
    """Estimate every diffusion-weighted volume's transform once.

    The original series is first resampled with the previous pass's transforms
    (its b-vectors rotated accordingly); the model is fit on all other volumes
    of that moved series and predicts the left-out one; each original volume is
    registered to its prediction, starting from its previous transform.

    Parameters
    ----------
    pass_index : int
        1-based pass number (names the workflow).
    model : str
        Signal model (see :mod:`dmriprep_motion.models`).
    settings : path
        ANTs JSON settings for the volume-to-prediction registrations.
    relaxation : float
        Multiple of the step from the previous transforms to the new estimates
        (1 takes the new estimates; less damps oscillations between passes; more, up
        to 2, extrapolates the step to speed up slow convergence).
    tolerance : float
        When the previous pass changed no transform by more than this (mm, mean
        over the brain), the registrations of this pass are skipped.
    outlier_threshold : float
        Robust z-score of the similarity to the previous prediction below which
        a volume is an outlier (``0`` disables flagging).
    exclude_outliers : bool
        Leave the previous pass's outliers out of every model fit.
    max_samples : int
        Most voxels of the registration mask each registration samples: on larger masks
        the settings' sampling percentage is lowered
        (:func:`~dmriprep_motion.workflows.registration.sampling_connections`); ``0`` keeps it.
    omp_nthreads : int
        ITK threads of each registration.
    series_nthreads : int
        Threads of the node resampling the whole series (volumes at once).
    mem_gb : float
        Memory of one in-memory copy of the series (GB), for resource hints.

    Inputs
    ------
    dwi_file, volumes, in_bval, in_bvec, n_volumes, b0_indices, dwi_indices,
    b0_xforms, init_xforms, init_ras, reg_mask, brain_mask

    Outputs
    -------
    out_xforms : list of ITK files (one per volume)
    out_ras : .npy (N, 4, 4) RAS+ transforms
    predictions : list of predicted volumes (one per diffusion-weighted volume)
    change, changes : change from the previous pass (mm)
    """
    workflow = Workflow(name=name or f"hmc_pass{pass_index:02d}_wf")
    inputnode = pe.Node(niu.IdentityInterface(fields=PASS_INPUTS), name="inputnode")
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=["out_xforms", "out_ras", "out_itk", "predictions", "change", "changes"]
        ),
        name="outputnode",
    )
    moved = pe.Node(
        ResampleSeries(order=3, num_threads=series_nthreads),
        name="moved",
        mem_gb=2 * mem_gb,
        n_procs=series_nthreads,
    )
    predict = pe.MapNode(
        PredictVolume(model=model, b0_threshold=b0_threshold, seed=seed or 0),
        iterfield=["target"],
        name="predict",
        mem_gb=2 * mem_gb,
    )
    select_moving = pe.Node(SelectItems(), name="select_moving", run_without_submitting=True)
    select_init = pe.Node(SelectItems(), name="select_init", run_without_submitting=True)
    converged = pe.Node(CheckConvergence(tolerance=tolerance), name="converged", run_without_submitting=True)
    # Reads the moved series volume by volume, with the previous predictions (as ``similarity``).
    outliers = pe.Node(
        FlagOutliers(threshold=outlier_threshold, b0_threshold=b0_threshold), name="outliers", mem_gb=mem_gb
    )
    register = init_registration_node(
        name="register",
        settings=settings,
        iterfield=["fixed_image", "moving_image", "initial_moving_transform"],
        seed=seed,
        omp_nthreads=omp_nthreads,
    )
    to_ras = pe.MapNode(ITKToRAS(), iterfield=["in_file"], name="to_ras", run_without_submitting=True)
    merge = pe.Node(MergeTransforms(), name="merge")
    # Relaxes and writes the transforms; the shells are anchored once, after the last pass
    # (workflows/anchor.py).
    relax = pe.Node(
        AnchorShells(b0_threshold=b0_threshold, method="none", transform=transform, relaxation=relaxation),
        name="relax",
    )

    # fmt: off
    workflow.connect([
        # the models read the fitting mask's voxels only (so do the outliers, in the brain mask)
        (inputnode, moved, [("dwi_file", "in_file"), ("init_ras", "in_xforms"), ("in_bvec", "in_bvec"),
                            ("reg_mask", "in_mask")]),
        (inputnode, predict, [("in_bval", "in_bval"), ("reg_mask", "in_mask"), ("dwi_indices", "target")]),
        (moved, predict, [("out_file", "in_file"), ("out_bvec", "in_bvec")]),
        (inputnode, select_moving, [("volumes", "inlist"), ("dwi_indices", "indices")]),
        (inputnode, select_init, [("init_xforms", "inlist"), ("dwi_indices", "indices")]),
        (inputnode, converged, [("prev_change", "prev_change")]),
        (converged, register, [("skip", "skip")]),
        (moved, outliers, [("out_file", "in_file")]),
        (inputnode, outliers, [("prev_predictions", "predictions"), ("dwi_indices", "dwi_indices"),
                               ("in_bval", "in_bval"), ("brain_mask", "in_mask")]),
        (predict, register, [("out_file", "fixed_image")]),
        (inputnode, register, [("reg_mask", "fixed_image_masks")]),
        (select_moving, register, [("out", "moving_image")]),
        (select_init, register, [("out", "initial_moving_transform")]),
        (register, to_ras, [("forward_transforms", "in_file")]),
        (inputnode, merge, [("n_volumes", "n_volumes"), ("b0_indices", "b0_indices"),
                            ("b0_xforms", "b0_xforms"), ("dwi_indices", "dwi_indices")]),
        (to_ras, merge, [("out_file", "dwi_xforms"), ("matrix", "dwi_matrices")]),
        (merge, relax, [("out_ras", "in_ras")]),
        (inputnode, relax, [("in_bval", "in_bval"), ("in_bvec", "in_bvec"), ("init_ras", "previous"),
                            ("brain_mask", "in_mask")]),
        (relax, outputnode, [("out_xforms", "out_xforms"), ("out_ras", "out_ras"),
                             ("out_itk", "out_itk"), ("change", "change"), ("changes", "changes")]),
        (predict, outputnode, [("out_file", "predictions")]),
        (outliers, outputnode, [("exclude", "outliers")]),
    ] + sampling_connections(max_samples, (inputnode, "reg_mask"), register, report=pass_index == 1))
    # fmt: on
    if exclude_outliers:
        workflow.connect([(outliers, predict, [("exclude", "exclude")])])
    return workflow
