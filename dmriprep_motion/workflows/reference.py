"""Validation, b0 reference and brain mask."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from dmriprep_motion.interfaces.dwi import B0Reference, BrainMask, SplitVolumes, ValidateDWI
from dmriprep_motion.interfaces.transforms import MergeTransforms, SelectItems
from dmriprep_motion.workflows.registration import init_registration_node, sampling_connections

REFERENCE_OUTPUTS = [
    "dwi_file", "in_bval", "in_bvec", "volumes", "n_volumes", "b0_indices", "dwi_indices",
    "b0_xforms", "init_xforms", "init_ras", "dwiref", "brain_mask", "reg_mask",
]  # fmt: skip


def init_dwi_reference_wf(
    *,
    b0_settings: str | Path,
    b0_threshold: float = 50.0,
    max_samples: int = 0,
    seed: int | None = None,
    omp_nthreads: int = 1,
    mem_gb: float = 1.0,
    name: str = "dwi_reference_wf",
) -> Workflow:
    """Validate the series, align its b0s, build the b0 reference and a brain mask.

    ``max_samples`` caps the points each b0-to-b0 registration samples on the whole grid (it
    runs before the mask exists; :mod:`dmriprep_motion.sampling`); ``0`` keeps the settings'.

    Inputs
    ------
    dwi_file, in_bval, in_bvec
        The series and its FSL gradient table.
    in_mask
        Optional brain mask on the grid of the series.

    Outputs
    -------
    dwi_file : float32 working copy; volumes : its 3D volumes; in_bval, in_bvec :
    validated gradients; b0_indices, dwi_indices, n_volumes; b0_xforms : b0 to
    reference transforms; init_xforms, init_ras : per-volume starting
    transforms; dwiref : b0 reference; brain_mask; reg_mask : dilated mask for
    fitting and registration.
    """
    workflow = Workflow(name=name)
    workflow.__desc__ = (  # a paragraph of its own in the boilerplate
        "\n\nThe b0 volumes were rigidly aligned to the first b0 with `antsRegistration` "
        f"(ANTs{f', at most {max_samples:,} sampled points' if max_samples else ''}) and averaged "
        "into a b0 reference (*dwiref*); a brain mask was computed on it with DIPY's "
        "`median_otsu` [@dipy]."
    )
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["dwi_file", "in_bval", "in_bvec", "in_mask"]), name="inputnode"
    )
    outputnode = pe.Node(niu.IdentityInterface(fields=REFERENCE_OUTPUTS), name="outputnode")
    validate = pe.Node(ValidateDWI(b0_threshold=b0_threshold), name="validate", mem_gb=2 * mem_gb)
    split = pe.Node(SplitVolumes(), name="split", mem_gb=mem_gb)
    select_b0 = pe.Node(SelectItems(), name="select_b0", run_without_submitting=True)
    first_b0 = pe.Node(niu.Select(index=0), name="first_b0", run_without_submitting=True)
    align_b0 = init_registration_node(
        name="align_b0",
        settings=b0_settings,
        iterfield=["moving_image", "skip"],
        seed=seed,
        omp_nthreads=omp_nthreads,
    )
    skip_first = pe.Node(
        niu.Function(function=_skip_first, output_names=["skip"]),
        name="skip_first",
        run_without_submitting=True,
    )
    b0_files = pe.Node(niu.Function(function=_first_items, output_names=["out"]), name="b0_files")
    b0ref = pe.Node(B0Reference(), name="b0ref", mem_gb=mem_gb)
    mask = pe.Node(BrainMask(), name="mask")
    init = pe.Node(MergeTransforms(), name="init")

    # fmt: off
    workflow.connect([
        (inputnode, validate, [("dwi_file", "dwi_file"), ("in_bval", "in_bval"), ("in_bvec", "in_bvec")]),
        (inputnode, mask, [("in_mask", "in_mask")]),
        (validate, split, [("out_file", "in_file")]),
        (split, select_b0, [("out_files", "inlist")]),
        (validate, select_b0, [("b0_indices", "indices")]),
        (select_b0, first_b0, [("out", "inlist")]),
        (first_b0, align_b0, [("out", "fixed_image")]),
        (select_b0, align_b0, [("out", "moving_image")]),
        (select_b0, skip_first, [("out", "inlist")]),
        (skip_first, align_b0, [("skip", "skip")]),
        (align_b0, b0_files, [("forward_transforms", "inlist")]),
        (validate, b0ref, [("out_file", "in_file"), ("b0_indices", "b0_indices")]),
        (b0_files, b0ref, [("out", "in_xforms")]),
        (b0ref, mask, [("out_file", "in_file")]),
        (validate, init, [("n_volumes", "n_volumes"), ("b0_indices", "b0_indices"),
                          ("dwi_indices", "dwi_indices")]),
        (b0_files, init, [("out", "b0_xforms")]),
        (validate, outputnode, [("out_file", "dwi_file"), ("out_bval", "in_bval"),
                                ("out_bvec", "in_bvec"), ("n_volumes", "n_volumes"),
                                ("b0_indices", "b0_indices"), ("dwi_indices", "dwi_indices")]),
        (split, outputnode, [("out_files", "volumes")]),
        (b0_files, outputnode, [("out", "b0_xforms")]),
        (init, outputnode, [("out_xforms", "init_xforms"), ("out_ras", "init_ras")]),
        (b0ref, outputnode, [("out_file", "dwiref")]),
        (mask, outputnode, [("out_mask", "brain_mask"), ("out_reg_mask", "reg_mask")]),
    ] + sampling_connections(  # not logged: with one b0 nothing is registered
        max_samples, (first_b0, "out"), align_b0, report=False, whole_grid=True
    ))
    # fmt: on
    return workflow


def _skip_first(inlist):
    """Skip the registration of the first b0 (the reference) to itself."""
    return [index == 0 for index in range(len(inlist))]


def _first_items(inlist):
    """Transforms of the b0 alignment; the reference b0 (first) is the identity."""
    return [None] + [item[-1] if isinstance(item, list) else item for item in inlist[1:]]
