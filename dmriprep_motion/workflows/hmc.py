"""The head-motion correction workflow of one DWI series."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from dmriprep_motion.data import registration_preset
from dmriprep_motion.interfaces.confounds import MotionConfounds
from dmriprep_motion.interfaces.dwi import ResampleSeries, VolumeSimilarity
from dmriprep_motion.interfaces.transforms import AUTO_MAX_BVAL
from dmriprep_motion.models import MODEL_NAMES, GPModel
from dmriprep_motion.outliers import MIN_GROUP
from dmriprep_motion.sampling import packaged_max_samples
from dmriprep_motion.workflows.anchor import REGISTERED_ANCHORS, SERIES_OUTPUT, init_shell_anchor_wf
from dmriprep_motion.workflows.passes import PASS_INPUTS, init_hmc_pass_wf
from dmriprep_motion.workflows.reference import init_dwi_reference_wf

OUTPUTS = [
    "dwi_file", "out_bval", "out_bvec", "dwiref", "brain_mask", "xforms", "xforms_ras",
    "confounds", "confounds_metadata", "similarity", "pass_changes", "predictions",
]  # fmt: skip

#: Extra outputs for the visual report (original series and b-vectors, volume indices,
#: per-pass per-volume changes of the transforms).
REPORT_OUTPUTS = ["dwi_orig", "bvec_orig", "dwi_indices", "pass_volume_changes"]

_MODEL_DESC = {
    "b0": "the b0 reference",
    "avgdwi": "the average of the other volumes of the same shell",
    "dti": "a diffusion tensor model (log-linear least squares, DIPY's design matrix)",
    "dki": "a diffusion kurtosis model (log-linear least squares, DIPY's design matrix)",
    "gp": (
        "a Gaussian process over gradient directions and b-values (spherical covariance, "
        "hyper-parameters chosen by closed-form leave-one-out error, in the spirit of FSL eddy; "
        "its directional part tapered off in voxels of free-water-like apparent diffusivity, "
        "{:g}-{:g} µm²/ms)".format(*(1e3 * adc for adc in GPModel.free_water_adc))
    ),
}
_REFINE_DESC = " (after the first pass, at full resolution only, since they start close to the answer)"


def _relaxation_desc(relaxation: float, passes: int) -> str:
    """Methods sentence on the relaxation between passes (none when it does not apply)."""
    if passes < 3 or relaxation == 1:
        return ""
    if relaxation > 1:
        what = (
            "the part of each transform's update that it shared with the 4 nearest gradient "
            f"directions of its shell (their mean update) was applied {relaxation:g} times "
            "(over-relaxation)"
        )
    else:
        what = f"each transform was moved {relaxation:g} of the way to its new estimate (damping)"
    return (
        f"Between the passes, {what} before the next pass started from it; the last pass's "
        "estimates were kept as they were. "
    )


_ANCHOR_DESC = {
    "registration": "After the last pass, the corrected mean of each shell was registered to the b0 "
    "reference (rigid, mutual information within the brain mask) to tie the shell's common "
    "position to it. ",
    "median": "After the last pass, the common position of each shell was tied to the b0 reference "
    "by setting the shell's median motion to zero. ",
    "auto": "After the last pass, the common position of each shell was tied to the b0 reference: "
    "by registering the shell's corrected mean to it (rigid, mutual information within the brain "
    "mask) for shells up "
    f"to b={AUTO_MAX_BVAL:.0f} s/mm², and, for each higher shell, by registering its corrected "
    "mean to that of the next lower shell and composing the two alignments (a single shell "
    "above that b-value had its median motion set to zero instead). ",
    "none": "",
}


def _estimation_desc(
    *,
    model: str,
    transform: str,
    passes: int,
    refined: bool,
    relaxation: float,
    shell_anchor: str,
    max_samples: int = 0,
) -> str:
    """Methods paragraph (Markdown) on the estimation, worded from the actual settings.

    Parameters
    ----------
    model, transform, passes, relaxation :
        As in :func:`init_dwi_motion_wf`.
    refined : bool
        Whether the passes after the first register with the lighter refinement preset.
    shell_anchor : {"auto", "registration", "median", "none"}
        The anchor actually used (``none`` with the b0 model).
    max_samples : int
        The cap on the voxels each registration samples (0: none).

    Returns
    -------
    str
        A paragraph starting with a blank line, for a workflow's ``__desc__``.
    """
    sampling = (
        f"Each registration's metric was evaluated on at most {max_samples:,} voxels (a regular "
        "sample of the dilated brain mask). "
        if max_samples
        else ""
    )
    return (
        f"\n\nHead motion was estimated with *dmriprep_motion*, leaving one volume out: each "
        f"diffusion-weighted volume was predicted from all the others by {_MODEL_DESC[model]}, "
        f"and registered to its prediction with a {transform.lower()} transform "
        f"(`antsRegistration`, ANTs [@ants]). Estimation was repeated for {passes} pass(es), "
        "each pass fitting the model to the series moved by the previous pass's estimates and "
        "starting the registrations from them"
        f"{_REFINE_DESC if refined else ''}. "
        f"{sampling}"
        f"{_relaxation_desc(relaxation, passes)}"
        f"{_ANCHOR_DESC[shell_anchor]}"
        "b-vectors were rotated by the estimated "
        "rotations, and each volume was resampled once onto the native grid of the b0 "
        "reference (cubic B-spline), keeping all volumes in their acquired order."
    )


def _chain_passes(reference_wf: Workflow, pass_wfs: list[Workflow], changes: pe.Node) -> list[tuple]:
    """Connections feeding every pass from the reference and each pass from the previous one.

    Parameters
    ----------
    reference_wf : Workflow
        The b0-reference workflow (its outputs are shared by every pass; its initial
        transforms start the first).
    pass_wfs : list of Workflow
        The passes, in order (:func:`~dmriprep_motion.workflows.passes.init_hmc_pass_wf`).
    changes : Node
        A ``Merge`` collecting each pass's change (input ``in<k>`` for pass ``k``).

    Returns
    -------
    list
        ``Workflow.connect`` tuples.
    """
    chained = ("init_xforms", "init_ras", "prev_change", "prev_predictions")
    shared = [f for f in PASS_INPUTS if f not in chained]
    previous = (reference_wf, "outputnode.init_xforms", "outputnode.init_ras")
    connections = []
    for index, pass_wf in enumerate(pass_wfs, start=1):
        connections += [
            # a new list each time: Workflow.connect rewrites the lists it is given
            (reference_wf, pass_wf, [(f"outputnode.{f}", f"inputnode.{f}") for f in shared]),
            (previous[0], pass_wf, [(previous[1], "inputnode.init_xforms"),
                                    (previous[2], "inputnode.init_ras")]),
            (pass_wf, changes, [("outputnode.change", f"in{index}")]),
        ]  # fmt: skip
        if index > 1:
            chain = [("outputnode.change", "inputnode.prev_change"),
                     ("outputnode.predictions", "inputnode.prev_predictions")]  # fmt: skip
            connections.append((previous[0], pass_wf, chain))
        previous = (pass_wf, "outputnode.out_xforms", "outputnode.out_ras")
    return connections


def outliers_desc(outlier_threshold: float, exclude_outliers: bool, passes: int) -> str:
    """Methods paragraph (Markdown) on outlier flagging, worded from the actual settings.

    Parameters
    ----------
    outlier_threshold : float
        Robust z-score below which a volume is flagged (``<= 0`` disables flagging).
    exclude_outliers : bool
        Whether flagged volumes are left out of the model fits of the following pass.
    passes : int
        Number of estimation passes (exclusion needs a following pass).

    Returns
    -------
    str
        A paragraph starting with a blank line, for a workflow's ``__desc__``/``__postdesc__``.
    """
    if outlier_threshold <= 0:
        return "\n\nOutlier volumes were not flagged (outlier detection disabled)."
    text = (
        "\n\nOutlier volumes were flagged from the similarity between each corrected volume and its "
        "registration target (Pearson correlation inside the brain mask with the model prediction, "
        "or with the b0 reference for b0 volumes): a volume was flagged when this similarity had a "
        f"robust z-score below −{outlier_threshold:g} within its shell (z-scores from the shell's "
        f"median and 1.4826 × median absolute deviation; shells of fewer than {MIN_GROUP} volumes "
        "were not assessed). "
    )
    if exclude_outliers and passes > 1:
        return text + (
            "From the second pass on, the volumes flagged after the previous pass were left out of "
            "the model fits; all volumes were kept in the corrected series."
        )
    return text + "Flagged volumes were reported, and kept in the model fits and in the corrected series."


def _scoring_nodes(
    *,
    transform: str,
    outlier_threshold: float,
    b0_threshold: float,
    series_nthreads: int,
    registered_anchor: bool,
    mem_gb: float,
) -> tuple[pe.Node, pe.Node, pe.Node]:
    """The nodes after the estimation: final resampling, similarity to the predictions, confounds.

    The similarity scores each volume in the last pass's frame.  A registered shell anchor
    resamples the series in that frame for its shell means: the similarity reads it and runs
    (on one thread) while the anchor registers, instead of after ``final``.
    """
    final = pe.Node(
        ResampleSeries(order=3, compress=True, num_threads=series_nthreads),
        name="final",
        mem_gb=2 * mem_gb,
        n_procs=series_nthreads,
    )
    sim_threads = 1 if registered_anchor else series_nthreads
    similarity = pe.Node(
        VolumeSimilarity(num_threads=sim_threads),
        name="similarity",
        mem_gb=2 * mem_gb,  # the series read once, and resampled
        n_procs=sim_threads,
    )
    confounds = pe.Node(
        MotionConfounds(transform=transform, outlier_threshold=outlier_threshold, b0_threshold=b0_threshold),
        name="confounds",
    )
    return final, similarity, confounds


def _similarity_inputs(
    reference_wf: Workflow, last: Workflow, written: Workflow, similarity: pe.Node, registered_anchor: bool
) -> list[tuple]:
    """Where the similarity reads the series it scores: the registered anchor's (``written``),
    which it resamples in the last pass's frame anyway, or the original with the last pass's
    transforms."""
    if registered_anchor:
        return [(written, similarity, [(f"outputnode.{SERIES_OUTPUT}", "in_file")])]
    return [
        (reference_wf, similarity, [("outputnode.dwi_file", "in_file")]),
        (last, similarity, [("outputnode.out_ras", "in_xforms")]),
    ]


def init_dwi_motion_wf(
    *,
    model: str = "gp",
    transform: str = "Rigid",
    passes: int = 3,
    anchor: str = "auto",
    tolerance: float = 0.05,
    relaxation: float = 2.0,
    outlier_threshold: float = 4.0,
    exclude_outliers: bool = False,
    b0_threshold: float = 50.0,
    sloppy: bool = False,
    seed: int | None = None,
    registration_config: str | Path | None = None,
    max_samples: int | None = None,
    omp_nthreads: int = 1,
    series_nthreads: int = 1,
    mem_gb: float = 1.0,
    name: str = "dwi_motion_wf",
) -> Workflow:
    """Leave-one-volume-out head-motion correction of one DWI series.

    Can be used on its own or as a sub-workflow of another pipeline.

    Parameters
    ----------
    model : {"b0", "avgdwi", "dti", "dki", "gp"}
        Signal model predicting each diffusion-weighted volume from the others.
    transform : {"Rigid", "Affine"}
        Transform estimated for diffusion-weighted volumes (b0s are always rigid).
    passes : int
        Unrolled estimation passes; each starts from the previous one's transforms.
    anchor : {"auto", "registration", "median", "none"}
        How the common position of each shell is tied to the b0 reference after
        the last pass: registration of the shell mean to the b0 reference (mutual
        information), its median motion is zero (robust, deterministic), ``auto``
        (default: registration to the b0 reference for shells up to b=1500, to the next lower
        shell above; the median for a lowest shell above b=1500), or not at all.
    tolerance : float
        Stop early (skip the registrations of later passes) once a pass changes
        no transform by more than this many mm (mean over the brain); 0 never.
    relaxation : float
        In the passes between the first and the last, each transform moves this
        many times the step from the previous pass's estimate to the new one (see
        :class:`~dmriprep_motion.interfaces.transforms.AnchorShells`), which is where
        the next pass starts from; at most 2.  The default, 2, over-relaxes the part of
        each step shared with the 4 nearest gradient directions: errors shared by
        neighbouring directions shrink only by a factor of about 0.6-0.7 per pass
        (``benchmarks/README.md``).  1 takes the new estimates; below 1 damps the whole
        step.  The last pass always keeps its new estimates.
    outlier_threshold : float
        Robust z-score (per shell) of the similarity between a corrected volume
        and its prediction below which the volume is flagged (0 disables).
    exclude_outliers : bool
        Leave flagged volumes out of the model fits of the following pass.
    b0_threshold : float
        Volumes with ``bval <= b0_threshold`` are b0s.
    sloppy : bool
        Fast, less accurate ANTs settings (for tests).
    seed : int or None
        Random seed of ANTs and of voxel subsampling.
    registration_config : path or None
        JSON file of ANTs settings replacing the packaged volume-to-prediction
        presets (of every pass).  Without it, the first pass registers from coarse
        to fine and later passes, which start from the previous estimates, at
        full resolution only (``data/antsreg/dwi_*_refine.json``).
    max_samples : int or None
        Most voxels of the registration mask a volume-to-prediction registration samples
        (:mod:`dmriprep_motion.sampling`): the presets' share of the voxels is lowered on
        masks where it would sample more.  ``None`` (default) takes the packaged cap
        (``MAX_SAMPLES``, or ``MAX_SAMPLES_SLOPPY`` with ``sloppy``) with the packaged
        presets and no cap with ``registration_config``; ``0`` never caps.  The b0-to-b0
        registrations (packaged presets, no mask) are capped on the whole grid
        (``B0_MAX_SAMPLES``) unless this is ``0``.
    omp_nthreads : int
        Threads of each registration.
    series_nthreads : int
        Threads of the nodes that resample the whole series (one volume per thread);
        they run between the passes, when the registrations do not.
    mem_gb : float
        Size of one in-memory copy of the series (GB), for node resource hints.

    Inputs
    ------
    dwi_file : 4D NIfTI series
    in_bval, in_bvec : FSL gradient files
    in_mask : optional brain mask on the grid of the series

    Outputs
    -------
    dwi_file : corrected series (same volumes, same order, native grid)
    out_bval, out_bvec : b-values and rotated b-vectors (FSL convention)
    dwiref : b0 reference; brain_mask : brain mask
    xforms : ITK file with one transform per volume (reference to original)
    xforms_ras : (N, 4, 4) RAS+ transforms (.npy)
    confounds, confounds_metadata : motion parameters (TSV) and their description (JSON)
    similarity : per-volume correlation with the prediction it was registered to
    pass_changes : per pass, the largest change of a transform (mm)
    predictions : last pass's predicted volumes
    """
    if model not in MODEL_NAMES:
        raise ValueError(f"model must be one of {MODEL_NAMES}")
    if transform not in ("Rigid", "Affine"):
        raise ValueError("transform must be Rigid or Affine")
    if passes < 1:
        raise ValueError("passes must be >= 1")
    settings = registration_config or registration_preset("dwi", transform, sloppy)
    refine = registration_config or registration_preset("dwi", transform, sloppy, refine=True)
    # the b0-to-b0 registrations always use packaged presets: capped unless max_samples is 0
    b0_max_samples = 0 if max_samples == 0 else packaged_max_samples(sloppy=sloppy, b0=True)
    if max_samples is None:
        max_samples = packaged_max_samples(sloppy=sloppy, custom_settings=registration_config is not None)
    # Registering to the b0 reference already places the volumes in its frame.
    shell_anchor = "none" if model == "b0" else anchor

    workflow = Workflow(name=name)
    # a paragraph of its own in the boilerplate
    workflow.__desc__ = _estimation_desc(
        model=model,
        transform=transform,
        passes=passes,
        refined=passes > 1 and refine != settings,
        relaxation=relaxation,
        shell_anchor=shell_anchor,
        max_samples=max_samples,
    )
    # After the b0-reference paragraph of the nested reference workflow.
    workflow.__postdesc__ = outliers_desc(outlier_threshold, exclude_outliers, passes)
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["dwi_file", "in_bval", "in_bvec", "in_mask"]), name="inputnode"
    )
    outputnode = pe.Node(niu.IdentityInterface(fields=OUTPUTS + REPORT_OUTPUTS), name="outputnode")
    # What every sub-workflow shares: the b0 threshold, ANTs seed and threads, series size.
    common = {"b0_threshold": b0_threshold, "seed": seed, "omp_nthreads": omp_nthreads, "mem_gb": mem_gb}
    reference_wf = init_dwi_reference_wf(
        b0_settings=registration_preset("b0", "Rigid", sloppy),
        max_samples=b0_max_samples,
        **common,
    )
    changes = pe.Node(niu.Merge(passes), name="changes", run_without_submitting=True)
    volume_changes = pe.Node(  # for the visual report (issue #4)
        niu.Merge(passes, no_flatten=True), name="volume_changes", run_without_submitting=True
    )
    registered_anchor = shell_anchor in REGISTERED_ANCHORS
    final, similarity, confounds = _scoring_nodes(
        transform=transform,
        outlier_threshold=outlier_threshold,
        b0_threshold=b0_threshold,
        series_nthreads=series_nthreads,
        registered_anchor=registered_anchor,
        mem_gb=mem_gb,
    )
    pass_wfs = [
        init_hmc_pass_wf(
            pass_index=index,
            model=model,
            settings=settings if index == 1 else refine,
            transform=transform,
            # relaxation steers the next pass; the last pass's registrations are the estimate
            relaxation=relaxation if 1 < index < passes else 1.0,
            tolerance=tolerance,
            outlier_threshold=outlier_threshold,
            exclude_outliers=exclude_outliers,
            max_samples=max_samples,
            series_nthreads=series_nthreads,
            **common,
        )
        for index in range(1, passes + 1)
    ]
    last = pass_wfs[-1]
    # The transforms written: the last pass's, each shell then moved onto the b0 reference.
    written, anchor_inputs = last, []
    if shell_anchor != "none":
        written = init_shell_anchor_wf(
            anchor=shell_anchor,
            anchor_settings=registration_preset("shell", "Rigid", sloppy),
            transform=transform,
            series_nthreads=series_nthreads,
            **common,
        )
        anchor_inputs = [
            (reference_wf, written, [("outputnode.dwi_file", "inputnode.dwi_file"),
                                     ("outputnode.in_bval", "inputnode.in_bval"),
                                     ("outputnode.dwiref", "inputnode.dwiref"),
                                     ("outputnode.brain_mask", "inputnode.brain_mask")]),
            (last, written, [("outputnode.out_ras", "inputnode.in_ras")]),
        ]  # fmt: skip

    # fmt: off
    workflow.connect(
        _chain_passes(reference_wf, pass_wfs, changes)
        + anchor_inputs
        + _similarity_inputs(reference_wf, last, written, similarity, registered_anchor)
        + [(pass_wf, volume_changes, [("outputnode.changes", f"in{index}")])
           for index, pass_wf in enumerate(pass_wfs, start=1)]
        + [
            (inputnode, reference_wf, [("dwi_file", "inputnode.dwi_file"), ("in_bval", "inputnode.in_bval"),
                                       ("in_bvec", "inputnode.in_bvec"), ("in_mask", "inputnode.in_mask")]),
            (reference_wf, final, [("outputnode.dwi_file", "in_file"), ("outputnode.in_bvec", "in_bvec")]),
            (written, final, [("outputnode.out_ras", "in_xforms")]),
            (last, similarity, [("outputnode.predictions", "predictions")]),
            (reference_wf, similarity, [("outputnode.dwi_indices", "dwi_indices"),
                                        ("outputnode.dwiref", "reference"),
                                        ("outputnode.brain_mask", "in_mask")]),
            (written, confounds, [("outputnode.out_ras", "in_xforms")]),
            (reference_wf, confounds, [("outputnode.in_bval", "in_bval")]),
            (similarity, confounds, [("similarity", "similarity")]),
            (final, outputnode, [("out_file", "dwi_file"), ("out_bvec", "out_bvec")]),
            (reference_wf, outputnode, [("outputnode.in_bval", "out_bval"), ("outputnode.dwiref", "dwiref"),
                                        ("outputnode.brain_mask", "brain_mask"),
                                        ("outputnode.dwi_file", "dwi_orig"),
                                        ("outputnode.in_bvec", "bvec_orig"),
                                        ("outputnode.dwi_indices", "dwi_indices")]),
            (written, outputnode, [("outputnode.out_itk", "xforms"), ("outputnode.out_ras", "xforms_ras")]),
            (last, outputnode, [("outputnode.predictions", "predictions")]),
            (confounds, outputnode, [("out_file", "confounds"), ("out_metadata", "confounds_metadata")]),
            (similarity, outputnode, [("similarity", "similarity")]),
            (changes, outputnode, [("out", "pass_changes")]),
            (volume_changes, outputnode, [("out", "pass_volume_changes")]),
        ]
    )
    # fmt: on
    return workflow
