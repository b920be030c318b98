"""One pass of leave-one-volume-out estimation."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from dmriprep_motion.interfaces.dwi import FlagOutliers, ResampleSeries, ShellMeans
from dmriprep_motion.interfaces.models import PredictVolume
from dmriprep_motion.interfaces.transforms import (
    AUTO_MAX_BVAL,
    AnchorShells,
    CheckConvergence,
    ITKToRAS,
    MergeTransforms,
    SelectItems,
)
from dmriprep_motion.workflows.registration import init_registration_node

PASS_INPUTS = [
    "dwi_file", "volumes", "in_bval", "in_bvec", "n_volumes", "b0_indices", "dwi_indices",
    "b0_xforms", "init_xforms", "init_ras", "reg_mask", "brain_mask", "dwiref",
    "prev_change", "prev_predictions",
]  # fmt: skip


def init_hmc_pass_wf(
    *,
    pass_index: int,
    model: str,
    settings: str | Path,
    anchor: str = "auto",
    transform: str = "Rigid",
    relaxation: float = 1.0,
    anchor_settings: str | Path | None = None,
    b0_threshold: float = 50.0,
    tolerance: float = 0.0,
    outlier_threshold: float = 4.0,
    exclude_outliers: bool = False,
    seed: int | None = None,
    omp_nthreads: int = 1,
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
    anchor : {"auto", "registration", "median", "none"}
        How each shell's common position is tied to the b0 reference (see
        :class:`~dmriprep_motion.interfaces.transforms.AnchorShells`).
    relaxation : float
        Fraction of the step from the previous transforms to the new estimates
        (1 takes the new estimates; less damps oscillations between passes).
    anchor_settings : path or None
        ANTs JSON settings registering the b0 reference to each shell's
        corrected mean (``anchor="registration"`` or ``"auto"`` only).
    tolerance : float
        When the previous pass changed no transform by more than this (mm, mean
        over the brain), the registrations of this pass are skipped.
    outlier_threshold : float
        Robust z-score of the similarity to the previous prediction below which
        a volume is an outlier (``0`` disables flagging).
    exclude_outliers : bool
        Leave the previous pass's outliers out of every model fit.
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
    moved = pe.Node(ResampleSeries(order=3), name="moved", mem_gb=2 * mem_gb)
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
        mem_gb=0.5,
    )
    to_ras = pe.MapNode(ITKToRAS(), iterfield=["in_file"], name="to_ras", run_without_submitting=True)
    merge = pe.Node(MergeTransforms(), name="merge")
    anchor_node = pe.Node(
        AnchorShells(b0_threshold=b0_threshold, method=anchor, transform=transform, relaxation=relaxation),
        name="anchor",
    )

    # fmt: off
    workflow.connect([
        (inputnode, moved, [("dwi_file", "in_file"), ("init_ras", "in_xforms"), ("in_bvec", "in_bvec")]),
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
        (merge, anchor_node, [("out_ras", "in_ras")]),
        (inputnode, anchor_node, [("in_bval", "in_bval"), ("init_ras", "previous"),
                                  ("brain_mask", "in_mask")]),
        (anchor_node, outputnode, [("out_xforms", "out_xforms"), ("out_ras", "out_ras"),
                              ("out_itk", "out_itk"), ("change", "change"), ("changes", "changes")]),
        (predict, outputnode, [("out_file", "predictions")]),
        (outliers, outputnode, [("exclude", "outliers")]),
    ])
    # fmt: on
    if exclude_outliers:
        workflow.connect([(outliers, predict, [("exclude", "exclude")])])
    if anchor in ("registration", "auto"):
        if anchor_settings is None:
            raise ValueError(f"anchor={anchor!r} needs anchor_settings")
        # --anchor auto: the shells above AUTO_MAX_BVAL take the median anchor; not registered
        register_max = AUTO_MAX_BVAL if anchor == "auto" else float("inf")
        shell_means = pe.Node(
            ShellMeans(b0_threshold=b0_threshold, register_max_bval=register_max),
            name="shell_means",
            mem_gb=mem_gb,
        )
        align_shells = init_registration_node(
            name="align_shells",
            settings=anchor_settings,
            iterfield=["moving_image", "skip"],
            seed=seed,
            omp_nthreads=omp_nthreads,
            mem_gb=0.5,
        )
        # fmt: off
        workflow.connect([
            (inputnode, shell_means, [("dwi_file", "in_file"), ("in_bval", "in_bval")]),
            (merge, shell_means, [("out_ras", "in_xforms")]),
            # the brain only: the dilated margin of reg_mask holds scalp and CSF signal that the
            # b0 shows and diffusion weighting suppresses, which biases the cross-contrast metric
            (inputnode, align_shells, [("brain_mask", "fixed_image_masks"), ("dwiref", "fixed_image")]),
            (shell_means, align_shells, [("out_files", "moving_image"), ("skip", "skip")]),
            (shell_means, anchor_node, [("shells", "shells")]),
            (align_shells, anchor_node, [("forward_transforms", "shell_xforms")]),
        ])
        # fmt: on
    return workflow
