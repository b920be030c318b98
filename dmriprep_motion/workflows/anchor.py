"""Tie each shell's common position to the b0 reference, once, after the last pass."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from dmriprep_motion.interfaces.dwi import ShellMeans
from dmriprep_motion.interfaces.transforms import AnchorShells
from dmriprep_motion.workflows.registration import init_registration_node

ANCHOR_INPUTS = ["dwi_file", "in_bval", "in_ras", "dwiref", "brain_mask"]
ANCHOR_OUTPUTS = ["out_xforms", "out_ras", "out_itk", "shell_corrections"]
#: Anchors that register the shells' means (``shell_means`` and ``align_shells`` exist).
REGISTERED_ANCHORS = ("registration", "auto")
#: With a registered anchor: the series resampled with the last pass's transforms (by ``shell_means``).
SERIES_OUTPUT = "pass_series"


def init_shell_anchor_wf(
    *,
    anchor: str,
    anchor_settings: str | Path | None = None,
    transform: str = "Rigid",
    b0_threshold: float = 50.0,
    seed: int | None = None,
    omp_nthreads: int = 1,
    series_nthreads: int = 1,
    mem_gb: float = 1.0,
    name: str = "shell_anchor_wf",
) -> Workflow:
    """Move each shell as a whole so that its common position is the b0 reference's.

    The passes fix the diffusion-weighted volumes relative to each other (each is
    registered to a prediction from the others), not their common position: any
    transform applied to a whole shell is equally consistent.  This workflow fixes
    it once, from the last pass's (relaxed) transforms (see
    :class:`~dmriprep_motion.interfaces.transforms.AnchorShells`).  During the passes a
    shell's common position only floats with its volumes' average motion; anchoring after
    every pass instead cost one ANTs run per shell and pass on the critical path and left
    the within-shell accuracy unchanged on the benchmark's phantoms
    (``benchmarks/README.md``).  Anchoring after the relaxation also applies the whole
    correction, not the relaxed fraction of it.

    Parameters
    ----------
    anchor : {"auto", "registration", "median"}
        ``registration`` registers the b0 reference to each shell's corrected mean
        (rigid, mutual information within the brain mask); ``median`` sets each
        shell's median motion to zero; ``auto`` registers shells up to b=1500 to the b0
        reference and each higher shell's mean to the next lower shell's, composing the
        corrections (a lowest shell above b=1500 takes the median and is not registered).
    anchor_settings : path or None
        ANTs JSON settings of the shell registrations (``registration``, ``auto``).
    transform : {"Rigid", "Affine"}
        Transform of the volume registrations (how a median of transforms is taken).
    omp_nthreads : int
        ITK threads of each shell registration.
    series_nthreads : int
        Threads of the node resampling the shells (volumes at once).
    mem_gb : float
        Memory of one in-memory copy of the series (GB), for resource hints.

    Inputs
    ------
    dwi_file : original 4D series
    in_bval : b-values
    in_ras : (N, 4, 4) RAS+ transforms of the last pass (.npy)
    dwiref, brain_mask : b0 reference and its brain mask

    Outputs
    -------
    out_xforms : list of ITK files (one per volume)
    out_ras : .npy (N, 4, 4) RAS+ transforms
    out_itk : all transforms in one ITK text file
    shell_corrections : per shell, the mean displacement of its correction (mm)
    pass_series : with ``registration`` or ``auto``, the series resampled with ``in_ras``
    """
    if anchor not in ("auto", "registration", "median"):
        raise ValueError(f"anchor must be auto, registration or median (got {anchor!r})")
    workflow = Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=ANCHOR_INPUTS), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=[*ANCHOR_OUTPUTS, SERIES_OUTPUT]), name="outputnode")
    anchor_node = pe.Node(
        AnchorShells(b0_threshold=b0_threshold, method=anchor, transform=transform), name="anchor"
    )
    connections = [
        (inputnode, anchor_node, [("in_ras", "in_ras"), ("in_bval", "in_bval"), ("brain_mask", "in_mask")]),
        (anchor_node, outputnode, [(f, f) for f in ANCHOR_OUTPUTS]),
    ]
    if anchor in REGISTERED_ANCHORS:
        if anchor_settings is None:
            raise ValueError(f"anchor={anchor!r} needs anchor_settings")
        # each shell's mean with its registration target (the b0 reference or, with --anchor
        # auto above b=1500, the next lower shell's mean), or skipped (the median anchor)
        shell_means = pe.Node(
            ShellMeans(b0_threshold=b0_threshold, method=anchor, num_threads=series_nthreads),
            name="shell_means",
            mem_gb=2 * mem_gb,  # the series read once, and one shell's resampled volumes
            n_procs=series_nthreads,
        )
        align_shells = init_registration_node(
            name="align_shells",
            settings=anchor_settings,
            iterfield=["fixed_image", "moving_image", "skip"],
            seed=seed,
            omp_nthreads=omp_nthreads,
        )
        connections += [
            (inputnode, shell_means, [("dwi_file", "in_file"), ("in_bval", "in_bval"),
                                      ("in_ras", "in_xforms"), ("dwiref", "in_reference")]),
            # the brain only: the dilated margin of the fitting mask holds scalp and CSF signal
            # that the b0 shows and diffusion weighting suppresses, which biases the metric
            (inputnode, align_shells, [("brain_mask", "fixed_image_masks")]),
            (shell_means, align_shells, [("fixed_files", "fixed_image"), ("out_files", "moving_image"),
                                         ("skip", "skip")]),
            (shell_means, anchor_node, [("shells", "shells")]),
            (shell_means, outputnode, [("out_series", SERIES_OUTPUT)]),
            (align_shells, anchor_node, [("forward_transforms", "shell_xforms")]),
        ]  # fmt: skip
    workflow.connect(connections)
    return workflow
