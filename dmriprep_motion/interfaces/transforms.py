"""Interfaces handling per-volume transforms."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nb
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from dmriprep_motion.gradients import shell_bvalues
from dmriprep_motion.motion import (
    load_itk,
    mask_coordinates,
    matrix_from_params,
    motion_parameters,
    relax_transforms,
    sphere_neighbours,
    transform_change,
    write_itk,
)

LOGGER = logging.getLogger("nipype.interface")
#: ``--anchor auto`` registers shells up to this b-value (s/mm²) to the b0; each higher shell is
#: registered to the next lower shell (see :func:`anchor_targets` and :class:`AnchorShells`).
AUTO_MAX_BVAL = 1500.0
#: Largest ``relaxation`` of the passes: beyond it, over-relaxation amplifies the errors that a
#: single pass removes (see :class:`AnchorShells`).
MAX_RELAXATION = 2.0


def anchor_targets(
    shell_bvals: list[float], method: str, max_bval: float = AUTO_MAX_BVAL
) -> list[int | None]:
    """What each shell's corrected mean is registered to, to anchor the shell.

    The one rule shared by :class:`~dmriprep_motion.interfaces.dwi.ShellMeans` (which picks
    each registration's fixed image and skips the others) and :class:`AnchorShells` (which
    composes the registrations into each shell's correction).

    Parameters
    ----------
    shell_bvals : list of float
        Median b-value of shells 1, 2, ... (increasing, as :func:`~dmriprep_motion.gradients.shell_labels`).
    method : {"registration", "auto", "median", "none"}
        ``registration``: every shell to the b0 reference.  ``auto``: shells up to ``max_bval``
        to the b0 reference, each higher shell to the next lower shell (the b0 and a high-b
        shell share little contrast; neighbouring shells share most of it), and the lowest
        shell, when it is above ``max_bval``, to nothing (median anchor).
    max_bval : float

    Returns
    -------
    list
        Per shell: 0 for the b0 reference, the label of a lower shell, or None (not registered).
    """
    if method == "registration":
        return [0] * len(shell_bvals)
    if method != "auto":
        return [None] * len(shell_bvals)
    lower = [None, *range(1, len(shell_bvals))]  # the next lower shell's label (none for shell 1)
    return [0 if bval <= max_bval else below for bval, below in zip(shell_bvals, lower, strict=True)]


class _ToRASInputSpec(BaseInterfaceInputSpec):
    in_file = InputMultiObject(File(exists=True), mandatory=True, desc="ANTs output transform")


class _ToRASOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the same transform (the file ANTs can read back)")
    matrix = traits.List(traits.List(traits.Float), desc="4x4 RAS+ reference-to-moving matrix")


class ITKToRAS(SimpleInterface):
    """Convert an ITK/ANTs linear transform to a RAS+ matrix with NiTransforms."""

    input_spec = _ToRASInputSpec
    output_spec = _ToRASOutputSpec

    def _run_interface(self, runtime):
        in_file = self.inputs.in_file[-1]
        self._results["out_file"] = in_file
        self._results["matrix"] = load_itk(in_file).tolist()
        return runtime


class _MergeInputSpec(BaseInterfaceInputSpec):
    n_volumes = traits.Int(mandatory=True, desc="volumes in the series")
    b0_indices = traits.List(traits.Int, mandatory=True, desc="b0 volumes")
    b0_xforms = InputMultiObject(
        traits.Either(File(exists=True), None),
        desc="ITK transforms of b0_indices (the first, the reference, is ignored)",
    )
    dwi_indices = traits.List(traits.Int, mandatory=True, desc="diffusion-weighted volumes")
    dwi_xforms = InputMultiObject(File(exists=True), desc="ITK transforms of dwi_indices")
    dwi_matrices = traits.List(
        traits.List(traits.List(traits.Float)), desc="RAS+ matrices of dwi_xforms (else read from them)"
    )


class _MergeOutputSpec(TraitedSpec):
    out_xforms = traits.List(File(exists=True), desc="one ITK transform file per volume")
    out_ras = File(exists=True, desc="(N, 4, 4) RAS+ transforms (.npy)")


class MergeTransforms(SimpleInterface):
    """Assemble per-volume transforms in acquisition order.

    The first b0 is the reference (identity); other b0s keep their
    b0-to-reference transforms; diffusion-weighted volumes take theirs from the
    registrations (identity when none is given, e.g. before the first pass).
    """

    input_spec = _MergeInputSpec
    output_spec = _MergeOutputSpec

    def _run_interface(self, runtime):
        cwd = Path(runtime.cwd)
        n = self.inputs.n_volumes
        mats = np.tile(np.eye(4), (n, 1, 1))
        files: list[str | None] = [None] * n
        b0_xforms = list(self.inputs.b0_xforms) if isdefined(self.inputs.b0_xforms) else []
        dwi_xforms = list(self.inputs.dwi_xforms) if isdefined(self.inputs.dwi_xforms) else []
        dwi_mats = list(self.inputs.dwi_matrices) if isdefined(self.inputs.dwi_matrices) else []
        # The first b0 is the reference: its own transform is the identity by definition.
        _assign(mats, files, self.inputs.b0_indices[1:], b0_xforms[1:], [])
        _assign(mats, files, self.inputs.dwi_indices, dwi_xforms, dwi_mats)
        for idx in range(n):
            if files[idx] is None:
                files[idx] = str(write_itk(cwd / f"identity_{idx:04d}.txt", np.eye(4)))
        np.save(cwd / "xforms.npy", mats)
        self._results.update(out_xforms=files, out_ras=str(cwd / "xforms.npy"))
        return runtime


def _assign(mats, files, indices, xforms, matrices):
    """Place per-volume transforms (files, and matrices if given) at their indices."""
    if not xforms:
        return
    if len(xforms) != len(indices) or (matrices and len(matrices) != len(indices)):
        raise ValueError(f"{len(xforms)} transforms for {len(indices)} volumes")
    for k, (idx, fname) in enumerate(zip(indices, xforms, strict=True)):
        mats[idx] = np.asarray(matrices[k], dtype=float) if matrices else load_itk(fname)
        files[idx] = fname


class _AnchorInputSpec(BaseInterfaceInputSpec):
    in_ras = File(exists=True, mandatory=True, desc="(N, 4, 4) RAS+ transforms (.npy)")
    method = traits.Enum(
        "median", "registration", "auto", "none", usedefault=True, desc="how shells are anchored"
    )
    auto_max_bval = traits.Float(
        AUTO_MAX_BVAL,
        usedefault=True,
        desc="method auto: registration to the b0 up to this b-value, to the next lower shell above",
    )
    transform = traits.Enum("Rigid", "Affine", usedefault=True, desc="transform of the registrations")
    relaxation = traits.Range(
        low=0.0,
        high=MAX_RELAXATION,
        value=1.0,
        usedefault=True,
        desc="multiple of the step from previous to new (below 1: damping; above 1: over-relaxation)",
    )
    in_bval = File(exists=True, mandatory=True, desc="b-values")
    b0_threshold = traits.Float(50.0, usedefault=True, desc="b-values at or below are b0")
    shells = traits.List(traits.Int, desc="shell labels of shell_xforms")
    shell_xforms = InputMultiObject(
        traits.Either(File(exists=True), traits.List(File(exists=True))),
        desc="per shell, the ANTs transform aligning its registration target (see anchor_targets) "
        "to the shell mean (empty: skipped)",
    )
    previous = File(exists=True, desc="(N, 4, 4) transforms of the previous pass (.npy)")
    in_bvec = File(
        exists=True,
        desc="b-vectors (FSL): relaxation above 1 extrapolates only the step shared with the "
        "neighbouring directions (without them, the whole step)",
    )
    in_mask = File(exists=True, desc="brain mask to measure the change between passes")


class _AnchorOutputSpec(TraitedSpec):
    out_xforms = traits.List(File(exists=True), desc="one ITK transform file per volume")
    out_ras = File(exists=True, desc="(N, 4, 4) RAS+ transforms (.npy)")
    out_itk = File(exists=True, desc="all transforms in one ITK text file")
    shell_corrections = traits.List(traits.Float, desc="per shell, mean displacement of the correction (mm)")
    change = traits.Float(desc="max over volumes of the mean displacement from the previous pass (mm)")
    changes = traits.List(traits.Float, desc="per-volume change from the previous pass (mm)")


class AnchorShells(SimpleInterface):
    """Anchor each shell to the b0 reference and write the pass's transforms.

    Registering each diffusion-weighted volume to a prediction made from the
    other diffusion-weighted volumes fixes their positions relative to each
    other, but not their common position relative to the b0 reference: any
    transform ``G`` applied to all of them (``T_i @ G``) is equally consistent.
    ``method`` fixes ``G`` per shell:

    ``median``
        The median motion parameters of the shell are the b0 reference's
        position (most volumes did not move with respect to it), i.e.
        ``G = C⁻¹`` with ``C`` built from the median parameters.  Robust to
        spikes, deterministic, no cross-contrast registration.
    ``registration``
        ``G`` is the registration of the b0 reference to the shell's corrected
        mean (mutual information, as FSL eddy's post-alignment of shells).
    ``auto``
        ``registration`` for shells up to ``auto_max_bval`` (1500 s/mm²).  Each higher
        shell's mean is registered to the next lower shell's (:func:`anchor_targets`), and
        its correction is that registration composed with the lower shell's correction; the
        lowest shell, when it is above ``auto_max_bval``, takes the median.  The b0 and a
        high-b shell mean share little contrast: on real data (ds-xa30, b=2500) the
        registration moved by 0.5-1 mm from pass to pass, and on the phantom re-synthesized
        from it, without motion or noise, it was off by 0.22 mm at b=1000 and 1.3 mm at
        b=3000 (``benchmarks/phantom_frame.py``); between neighbouring shells of that phantom
        it was off by 0.15 mm (b=2000 to b=1000) and 0.05 mm (b=3000 to b=2000,
        ``phantom_frame.py --against``).  Before
        2026-12-04 shells above ``auto_max_bval`` took the median, which left them 0.66-1.12 mm
        off on the benchmark's 3-shell MNI phantom with random motion (the chain: 0.07-0.30 mm;
        ``benchmarks/README.md``).
    ``none``
        Transforms pass through (right when the target is the b0 itself).

    The registrations (made by :func:`~dmriprep_motion.workflows.anchor.init_shell_anchor_wf`,
    once, after the last pass) use the brain mask, not the dilated mask of the model fits:
    its margin holds scalp and CSF signal that the b0 shows and diffusion weighting
    suppresses.  The passes use this interface with ``method="none"``: it only relaxes and
    writes their transforms.

    With ``relaxation`` ω other than 1, every transform moves ω times the step from the
    previous pass's estimate to the new one (geodesically).  Passes are a fixed-point
    iteration: an error ``e`` of the start of a pass leaves ``λ e`` in its estimates, for
    each mode of the iteration's operator (how an error of one volume moves the
    predictions of the others).  Relaxation turns that into ``(1 - ω + ω λ) e``, and
    leaves the fixed point unchanged.

    * ω < 1 damps modes with λ < 0 (oscillation; the model interpolating with signed
      weights can make λ < -1).
    * ω > 1 speeds up the slow modes, 0 < λ < 1: errors that vary smoothly with the
      gradient direction, which a volume's leave-one-out prediction shares with its
      neighbours on the sphere (λ ≈ 0.6-0.7 on the benchmark's MNI phantom).  The best ω
      for one mode is ``1 / (1 - λ)``; above 2, errors a pass removes at once (λ ≈ 0)
      would grow (``|1 - ω| > 1``), hence the bound ``MAX_RELAXATION``.  With ``in_bvec``
      only the part of each step shared with the 4 nearest directions of the shell (their
      mean step) is extrapolated (:func:`~dmriprep_motion.motion.relax_transforms`): a
      volume's own step, which is mostly what the pass corrects at once, is taken as it is.
      Extrapolating whole steps made the last pass start further from the answer on
      random motion: less accurate on 5 of 7 benchmark scenarios.
    """

    input_spec = _AnchorInputSpec
    output_spec = _AnchorOutputSpec

    def _corrections(self, mats, labels, bvals):
        method = self.inputs.method
        if method == "none":
            return {}
        registered = {}
        if isdefined(self.inputs.shell_xforms):
            registered = {
                label: load_itk(xfm[-1] if isinstance(xfm, list) else xfm)
                for label, xfm in zip(self.inputs.shells, self.inputs.shell_xforms, strict=True)
                if xfm  # a skipped registration (a shell not registered) returns none
            }
        shell_bvals = shell_bvalues(bvals, self.inputs.b0_threshold)
        targets = anchor_targets(shell_bvals, method, self.inputs.auto_max_bval)
        corrections = {}
        for label, (bval, target) in enumerate(zip(shell_bvals, targets, strict=True), start=1):
            if target is None or label not in registered:
                corrections[label] = _median_correction(mats[labels == label], self.inputs.transform)
                how = "median motion"
            elif target == 0:
                corrections[label] = registered[label]
                how = "registration"
            else:
                # registered to shell `target`'s mean as the last pass left it (mean_label(R y) ≈
                # mean_target(y)), which its own correction G ties to the b0 (mean_target(G x) ≈
                # b0(x)): so mean_label(R G x) ≈ b0(x)
                corrections[label] = registered[label] @ corrections[target]
                how = f"registration to shell b={shell_bvals[target - 1]:.0f}"
            if method == "auto":
                LOGGER.info("shell b=%.0f: anchored to the b0 reference by %s (--anchor auto)", bval, how)
        return corrections

    def _run_interface(self, runtime):
        from dmriprep_motion.gradients import read_bvecs, shell_labels

        cwd = Path(runtime.cwd)
        mats = np.load(self.inputs.in_ras)
        bvals = np.loadtxt(self.inputs.in_bval, ndmin=1)
        labels = shell_labels(bvals, self.inputs.b0_threshold)
        points = mask_coordinates(nb.load(self.inputs.in_mask)) if isdefined(self.inputs.in_mask) else None
        corrections = []
        for label, correction in sorted(self._corrections(mats, labels, bvals).items()):
            mats[labels == label] = mats[labels == label] @ correction
            if points is not None:
                corrections.append(float(transform_change(np.eye(4)[None], correction[None], points)[0]))
        # Relax the whole update (the pipeline's passes relax and never anchor; the final anchor
        # workflow anchors with relaxation 1).
        if self.inputs.relaxation != 1.0 and isdefined(self.inputs.previous):
            neighbours = None
            if self.inputs.relaxation > 1.0 and isdefined(self.inputs.in_bvec):
                neighbours = sphere_neighbours(read_bvecs(self.inputs.in_bvec, len(labels)), labels)
            mats = relax_transforms(np.load(self.inputs.previous), mats, self.inputs.relaxation, neighbours)
        files = [str(write_itk(cwd / f"xform_{i:04d}.txt", mat)) for i, mat in enumerate(mats)]
        np.save(cwd / "xforms.npy", mats)
        write_itk(cwd / "xforms.txt", mats)
        changes = np.zeros(len(mats))
        if isdefined(self.inputs.previous) and points is not None:
            changes = transform_change(np.load(self.inputs.previous), mats, points)
        self._results.update(
            out_xforms=files,
            out_ras=str(cwd / "xforms.npy"),
            out_itk=str(cwd / "xforms.txt"),
            shell_corrections=corrections,
            change=float(changes.max()),
            changes=[float(c) for c in changes],
        )
        return runtime


def _median_transform(mats: np.ndarray, transform: str) -> np.ndarray:
    """Robust centre of a set of transforms: median rigid parameters, or median affine entries."""
    if transform == "Affine":
        centre = np.median(mats, axis=0)
        centre[3] = (0, 0, 0, 1)
        return centre
    return matrix_from_params(np.median(motion_parameters(mats), axis=0))


def _median_correction(mats: np.ndarray, transform: str, iterations: int = 20) -> np.ndarray:
    """``G`` such that the robust centre of ``mats @ G`` is the identity (fixed-point iteration)."""
    correction = np.eye(4)
    for _ in range(iterations):
        step = np.linalg.inv(_median_transform(mats @ correction, transform))
        correction = correction @ step
        if np.abs(step - np.eye(4)).max() < 1e-9:
            break
    return correction


class _SelectInputSpec(BaseInterfaceInputSpec):
    inlist = traits.List(traits.Any, mandatory=True, desc="per-volume items")
    indices = traits.List(traits.Int, mandatory=True, desc="items to keep, in this order")


class _SelectOutputSpec(TraitedSpec):
    out = traits.List(traits.Any, desc="selected items")


class SelectItems(SimpleInterface):
    """Select items of a per-volume list (a picklable ``nipype.utility.Select``)."""

    input_spec = _SelectInputSpec
    output_spec = _SelectOutputSpec

    def _run_interface(self, runtime):
        self._results["out"] = [self.inputs.inlist[i] for i in self.inputs.indices]
        return runtime


class _ConvergedInputSpec(BaseInterfaceInputSpec):
    prev_change = traits.Float(desc="largest change of a transform in the previous pass (mm)")
    tolerance = traits.Float(0.0, usedefault=True, desc="converged below this change (mm); 0 never")


class _ConvergedOutputSpec(TraitedSpec):
    skip = traits.Bool(desc="the previous pass converged: skip this pass's registrations")


class CheckConvergence(SimpleInterface):
    """Decide whether a pass can be skipped (the previous one changed less than the tolerance)."""

    input_spec = _ConvergedInputSpec
    output_spec = _ConvergedOutputSpec

    def _run_interface(self, runtime):
        change = self.inputs.prev_change
        self._results["skip"] = bool(isdefined(change) and change < self.inputs.tolerance)
        return runtime
