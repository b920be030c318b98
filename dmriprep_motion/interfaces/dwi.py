"""Interfaces that validate, split, average and resample DWI series."""

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

from dmriprep_motion.gradients import load_gradient_table, rotate_bvecs, write_bvecs, write_fsl
from dmriprep_motion.interfaces.transforms import AUTO_MAX_BVAL, anchor_targets
from dmriprep_motion.motion import (
    resample_series,
    resample_volume,
    resample_volumes,
    similarity,
)
from dmriprep_motion.nifti import save_gzip

LOGGER = logging.getLogger("nipype.interface")


class DWIInputError(ValueError):
    """The DWI image cannot be processed (user error)."""


def load_dwi(path: str | Path) -> nb.Nifti1Image:
    """Load a 4D DWI series and check that it can be read in full."""
    try:
        img = nb.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # noqa: BLE001 - nibabel raises many types on bad files
        raise DWIInputError(f"cannot read {Path(path).name}: {err}") from None
    if data.ndim != 4 or data.shape[3] < 2:
        raise DWIInputError(f"{Path(path).name} is not a 4D series (shape {data.shape})")
    return img


def consistent_header(img: nb.Nifti1Image) -> nb.Nifti1Header:
    """Copy of the header whose sform and qform both hold ``img.affine`` (codes kept).

    NiBabel's ``affine`` is the sform when ``sform_code > 0`` (else the qform),
    whereas ITK (hence ANTs) may read the qform instead when both are set and
    differ: every image handed to ANTs, and every output, must therefore carry
    one geometry.  The input's ``sform_code`` and ``qform_code`` are kept; a
    code of 0 stays 0.
    """
    hdr = img.header.copy()
    sform_code, qform_code = int(hdr["sform_code"]), int(hdr["qform_code"])
    if sform_code == 0 and qform_code == 0:
        return hdr
    hdr.set_sform(img.affine, code=sform_code)
    hdr.set_qform(img.affine, code=qform_code)
    return hdr


def save_like(
    data: np.ndarray, like: nb.spatialimages.SpatialImage, path: Path, dtype=np.float32, n_threads: int = 1
) -> str:
    """Save ``data`` with the header and affine of ``like`` (``dtype``, no scaling); return the path.

    A ``.nii.gz`` is compressed with ``n_threads`` threads (:func:`dmriprep_motion.nifti.save_gzip`).
    """
    hdr = like.header.copy()
    hdr.set_data_dtype(dtype)
    out = nb.Nifti1Image(np.asarray(data, dtype=dtype), like.affine, hdr)
    out.header.set_slope_inter(1.0, 0.0)
    if n_threads > 1 and str(path).endswith(".nii.gz"):
        save_gzip(out, path, n_threads=n_threads)
    else:
        out.to_filename(path)
    return str(path)


def prediction_similarity(
    img: nb.spatialimages.SpatialImage,
    indices: list[int],
    predictions: list[str],
    mask: np.ndarray,
) -> dict[int, float]:
    """Correlation, inside ``mask``, of volumes ``indices`` of ``img`` with their predicted volumes."""
    return {
        idx: similarity(
            np.asanyarray(img.dataobj[..., idx]), np.asanyarray(nb.load(pred).dataobj, dtype=np.float32), mask
        )
        for idx, pred in zip(indices, predictions, strict=True)
    }


class _ValidateDWIInputSpec(BaseInterfaceInputSpec):
    dwi_file = File(exists=True, mandatory=True, desc="4D DWI series (NIfTI)")
    in_bval = File(exists=True, mandatory=True, desc="FSL b-values")
    in_bvec = File(exists=True, mandatory=True, desc="FSL b-vectors")
    b0_threshold = traits.Float(50.0, usedefault=True, desc="b-values at or below are b0")


class _ValidateDWIOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="float32 copy of the series (uncompressed, finite)")
    out_bval = File(exists=True, desc="validated b-values")
    out_bvec = File(exists=True, desc="validated, unit-norm b-vectors (3 rows)")
    b0_indices = traits.List(traits.Int, desc="indices of b0 volumes")
    dwi_indices = traits.List(traits.Int, desc="indices of diffusion-weighted volumes")
    n_volumes = traits.Int(desc="number of volumes")


class ValidateDWI(SimpleInterface):
    """Check a DWI series and its gradients; write a clean float32 working copy.

    Non-finite voxels are set to zero (and counted in the log); b-vectors are
    normalised; integer or scaled data become float32; the qform is set to the
    sform (see :func:`consistent_header`).  The input is never modified.
    """

    input_spec = _ValidateDWIInputSpec
    output_spec = _ValidateDWIOutputSpec

    def _run_interface(self, runtime):
        img = load_dwi(self.inputs.dwi_file)
        data = np.asarray(img.get_fdata(dtype=np.float32))
        gtab = load_gradient_table(
            self.inputs.in_bval,
            self.inputs.in_bvec,
            data.shape[3],
            b0_threshold=self.inputs.b0_threshold,
        )
        bad = ~np.isfinite(data)
        if bad.any():
            LOGGER.warning("%d non-finite voxel values set to 0", int(bad.sum()))
            data[bad] = 0.0
        hdr = consistent_header(img)
        hdr.set_data_dtype(np.float32)
        out = nb.Nifti1Image(data, img.affine, hdr)
        out.header.set_slope_inter(1.0, 0.0)
        out_file = Path(runtime.cwd) / "dwi_float.nii"
        out.to_filename(out_file)
        bval, bvec = Path(runtime.cwd) / "dwi.bval", Path(runtime.cwd) / "dwi.bvec"
        write_fsl(gtab.bvals, gtab.bvecs, bval, bvec)
        self._results.update(
            out_file=str(out_file),
            out_bval=str(bval),
            out_bvec=str(bvec),
            b0_indices=gtab.b0_indices,
            dwi_indices=gtab.dwi_indices,
            n_volumes=int(data.shape[3]),
        )
        return runtime


class _SplitInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="4D series")


class _SplitOutputSpec(TraitedSpec):
    out_files = traits.List(File(exists=True), desc="one 3D file per volume, in order")


class SplitVolumes(SimpleInterface):
    """Split a 4D series into 3D volumes (uncompressed, float32)."""

    input_spec = _SplitInputSpec
    output_spec = _SplitOutputSpec

    def _run_interface(self, runtime):
        img = nb.load(self.inputs.in_file)
        out = []
        for i in range(img.shape[3]):
            fname = Path(runtime.cwd) / f"vol{i:04d}.nii"
            vol = np.asanyarray(img.dataobj[..., i], dtype=np.float32)
            nb.Nifti1Image(vol, img.affine, img.header).to_filename(fname)
            out.append(str(fname))
        self._results["out_files"] = out
        return runtime


class _ResampleInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="original 4D series")
    in_xforms = File(exists=True, mandatory=True, desc="(N, 4, 4) RAS+ transforms (.npy)")
    in_bvec = File(exists=True, mandatory=True, desc="original FSL b-vectors")
    order = traits.Int(3, usedefault=True, desc="spline order")
    compress = traits.Bool(False, usedefault=True, desc="write .nii.gz")
    num_threads = traits.Int(1, usedefault=True, desc="volumes resampled at once")
    in_mask = File(exists=True, desc="resample only these voxels (0 elsewhere)")


class _ResampleOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="series resampled onto the reference grid")
    out_bvec = File(exists=True, desc="b-vectors rotated into the reference frame")


class ResampleSeries(SimpleInterface):
    """Resample each original volume once, with its own transform, and rotate its b-vector."""

    input_spec = _ResampleInputSpec
    output_spec = _ResampleOutputSpec

    def _run_interface(self, runtime):
        img = nb.load(self.inputs.in_file)
        xforms = np.load(self.inputs.in_xforms)
        mask = None
        if isdefined(self.inputs.in_mask):
            mask = np.asanyarray(nb.load(self.inputs.in_mask).dataobj) > 0
        data = resample_series(
            img, xforms, order=self.inputs.order, n_threads=self.inputs.num_threads, mask=mask
        )
        ext = ".nii.gz" if self.inputs.compress else ".nii"
        out_file = save_like(
            data, img, Path(runtime.cwd) / f"resampled{ext}", n_threads=self.inputs.num_threads
        )
        bvecs = np.loadtxt(self.inputs.in_bvec, ndmin=2).T
        out_bvec = write_bvecs(rotate_bvecs(bvecs, img.affine, xforms), Path(runtime.cwd) / "rotated.bvec")
        self._results.update(out_file=str(out_file), out_bvec=str(out_bvec))
        return runtime


class _ShellMeansInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="original 4D series")
    in_xforms = File(exists=True, mandatory=True, desc="(N, 4, 4) RAS+ transforms (.npy)")
    in_bval = File(exists=True, mandatory=True, desc="b-values")
    in_reference = File(
        exists=True, mandatory=True, desc="b0 reference (fixed image of the shells tied to it)"
    )
    b0_threshold = traits.Float(50.0, usedefault=True, desc="b-values at or below are b0")
    method = traits.Enum("auto", "registration", usedefault=True, desc="shell anchor (see anchor_targets)")
    auto_max_bval = traits.Float(
        AUTO_MAX_BVAL, usedefault=True, desc="method auto: shells up to this b-value are registered to the b0"
    )
    num_threads = traits.Int(1, usedefault=True, desc="volumes resampled at once")


class _ShellMeansOutputSpec(TraitedSpec):
    out_files = traits.List(File(exists=True), desc="mean corrected volume of each shell")
    shells = traits.List(traits.Int, desc="shell label of each mean (1, 2, ...)")
    fixed_files = traits.List(
        File(exists=True), desc="per shell, the image its mean is registered to (b0 reference or lower shell)"
    )
    skip = traits.List(traits.Bool, desc="per shell, whether its registration is skipped (median anchor)")
    out_series = File(exists=True, desc="every volume resampled with its transform (not anchored)")


class ShellMeans(SimpleInterface):
    """Average the corrected diffusion-weighted volumes of each shell (to anchor the shells).

    Each mean is paired with its registration target (:func:`~dmriprep_motion.interfaces.
    transforms.anchor_targets`): the b0 reference, or the mean of a lower shell.  The whole
    series resampled with the transforms is written too (uncompressed): the similarity of
    each volume to its prediction is scored on it while the shells are registered.
    """

    input_spec = _ShellMeansInputSpec
    output_spec = _ShellMeansOutputSpec

    def _run_interface(self, runtime):
        from dmriprep_motion.gradients import shell_bvalues, shell_labels

        img = nb.load(self.inputs.in_file)
        data = np.asanyarray(img.dataobj, dtype=np.float32)  # read once for every shell
        xforms = np.load(self.inputs.in_xforms)
        bvals = np.loadtxt(self.inputs.in_bval, ndmin=1)
        labels = shell_labels(bvals, self.inputs.b0_threshold)
        moved = resample_volumes(data, img.affine, xforms, n_threads=self.inputs.num_threads)
        del data
        out_series = save_like(moved, img, Path(runtime.cwd) / "series.nii")
        out_files, shells = [], []
        for label in range(1, labels.max() + 1):
            mean = moved[..., labels == label].mean(axis=-1, dtype=np.float64)
            out_files.append(save_like(mean, img, Path(runtime.cwd) / f"shell{label:02d}_mean.nii"))
            shells.append(int(label))
        shell_bvals = shell_bvalues(bvals, self.inputs.b0_threshold)
        targets = anchor_targets(shell_bvals, self.inputs.method, self.inputs.auto_max_bval)
        # a skipped registration still needs an existing fixed image: the reference
        images = [self.inputs.in_reference, *out_files]
        self._results.update(
            out_files=out_files,
            shells=shells,
            fixed_files=[images[target or 0] for target in targets],
            skip=[target is None for target in targets],
            out_series=out_series,
        )
        return runtime


class _B0RefInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="4D series")
    b0_indices = traits.List(traits.Int, mandatory=True, desc="b0 volumes")
    in_xforms = InputMultiObject(
        traits.Either(File(exists=True), None), desc="b0-to-reference ITK transforms (None = identity)"
    )


class _B0RefOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="b0 reference (average of aligned b0s)")


class B0Reference(SimpleInterface):
    """Average the b0 volumes after aligning them (one interpolation each).

    Each voxel is the average over the b0s that cover it: a b0 acquired with the head moved
    along the slab has no data beyond the field of view once aligned, and a plain average would
    dim the reference there by the share of such b0s.  That dimmed edge biased the shell anchor
    (registering the shell mean to this reference) on 3-b0 series.  The reference b0 itself
    (no transform) covers every voxel, so no voxel is left without data.
    """

    input_spec = _B0RefInputSpec
    output_spec = _B0RefOutputSpec

    def _run_interface(self, runtime):
        from dmriprep_motion.motion import load_itk

        img = nb.load(self.inputs.in_file)
        shape = img.shape[:3]
        xforms = list(self.inputs.in_xforms) if isdefined(self.inputs.in_xforms) else []
        total = np.zeros(shape, dtype=np.float64)
        coverage = np.zeros(shape, dtype=np.float64)
        for k, idx in enumerate(self.inputs.b0_indices):
            vol = np.asanyarray(img.dataobj[..., idx], dtype=np.float32)
            xfm = xforms[k] if k < len(xforms) and xforms[k] else None
            if xfm is None:
                total += vol
                coverage += 1.0
                continue
            matrix = load_itk(xfm)
            total += resample_volume(vol, img.affine, matrix, img.affine, shape)
            # the share of each voxel that this b0's field of view covers once aligned
            coverage += resample_volume(
                np.ones(shape, np.float32), img.affine, matrix, img.affine, shape, order=1
            )
        ref = np.where(coverage > 1e-3, total / np.maximum(coverage, 1e-3), 0.0)
        self._results["out_file"] = save_like(ref, img, Path(runtime.cwd) / "dwiref.nii.gz")
        return runtime


class _MaskInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="b0 reference")
    in_mask = File(desc="user-supplied brain mask (optional)")
    dilation = traits.Int(2, usedefault=True, desc="voxels of dilation for the fitting/registration mask")


class _MaskOutputSpec(TraitedSpec):
    out_mask = File(exists=True, desc="brain mask")
    out_reg_mask = File(exists=True, desc="dilated mask used to fit models and register")


class BrainMask(SimpleInterface):
    """Template-free brain mask of the b0 reference (DIPY ``median_otsu``)."""

    input_spec = _MaskInputSpec
    output_spec = _MaskOutputSpec

    def _run_interface(self, runtime):
        from scipy import ndimage as ndi

        ref = nb.load(self.inputs.in_file)
        if isdefined(self.inputs.in_mask) and self.inputs.in_mask:
            user = nb.load(self.inputs.in_mask)
            if user.shape[:3] != ref.shape[:3] or not np.allclose(user.affine, ref.affine, atol=1e-3):
                raise DWIInputError("the brain mask is not on the grid of the DWI series")
            mask = np.asanyarray(user.dataobj).reshape(ref.shape[:3]) > 0
        else:
            mask = compute_brain_mask(np.asanyarray(ref.dataobj, dtype=np.float32))
        if not mask.any():
            raise DWIInputError("the brain mask is empty")
        reg = ndi.binary_dilation(mask, iterations=self.inputs.dilation) if self.inputs.dilation else mask
        self._results.update(
            out_mask=save_like(mask, ref, Path(runtime.cwd) / "brain_mask.nii.gz", np.uint8),
            out_reg_mask=save_like(reg, ref, Path(runtime.cwd) / "reg_mask.nii.gz", np.uint8),
        )
        return runtime


def compute_brain_mask(b0: np.ndarray) -> np.ndarray:
    """Brain mask of a b0 image: median Otsu, largest component, holes filled."""
    from dipy.segment.mask import median_otsu
    from scipy import ndimage as ndi

    _, mask = median_otsu(b0, median_radius=2, numpass=1)
    labels, n_labels = ndi.label(mask)
    if n_labels > 1:
        sizes = ndi.sum(mask, labels, range(1, n_labels + 1))
        mask = labels == (int(np.argmax(sizes)) + 1)
    return ndi.binary_fill_holes(mask)


class _SimilarityInputSpec(BaseInterfaceInputSpec):
    in_file = File(
        exists=True, mandatory=True, desc="original 4D series, or already resampled (without in_xforms)"
    )
    in_xforms = File(exists=True, desc="(N, 4, 4) RAS+ transforms of the last pass (not anchored)")
    predictions = InputMultiObject(File(exists=True), mandatory=True, desc="last-pass predictions")
    dwi_indices = traits.List(traits.Int, mandatory=True, desc="volumes the predictions belong to")
    reference = File(exists=True, mandatory=True, desc="b0 reference (compared with b0 volumes)")
    in_mask = File(exists=True, mandatory=True, desc="brain mask")
    num_threads = traits.Int(1, usedefault=True, desc="volumes resampled at once (threads)")


class _SimilarityOutputSpec(TraitedSpec):
    similarity = traits.List(traits.Float, desc="per-volume correlation with its target")


class VolumeSimilarity(SimpleInterface):
    """Correlation, inside the brain, of each corrected volume with what it was registered to.

    Each volume is compared, in the frame of its last-pass transform (the frame its
    prediction was made in), with that prediction (b0 volumes with the b0 reference).  The
    shell anchor, applied after the last pass, moves a volume and its prediction alike, so the
    score does not wait for it.  With ``in_xforms``, the original series is resampled here;
    without, ``in_file`` is that series already resampled (by the anchor's shell means, while
    the anchor registers).
    """

    input_spec = _SimilarityInputSpec
    output_spec = _SimilarityOutputSpec

    def _run_interface(self, runtime):
        src = nb.load(self.inputs.in_file)
        if isdefined(self.inputs.in_xforms):
            xforms = np.load(self.inputs.in_xforms)
            data = resample_series(src, xforms, order=3, n_threads=self.inputs.num_threads)
        else:  # read once (slicing a .nii.gz volume by volume re-inflates it each time)
            data = np.asanyarray(src.dataobj, dtype=np.float32)
        img = nb.Nifti1Image(data, src.affine, src.header)
        mask = np.asanyarray(nb.load(self.inputs.in_mask).dataobj) > 0
        ref = np.asanyarray(nb.load(self.inputs.reference).dataobj, dtype=np.float32)
        indices, predictions = list(self.inputs.dwi_indices), list(self.inputs.predictions)
        scores = prediction_similarity(img, indices, predictions, mask)
        self._results["similarity"] = [
            scores[i] if i in scores else similarity(data[..., i], ref, mask) for i in range(data.shape[3])
        ]
        return runtime


class _FlagInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="series moved by the previous pass's transforms")
    predictions = InputMultiObject(File(exists=True), desc="the previous pass's predictions")
    dwi_indices = traits.List(traits.Int, mandatory=True, desc="volumes the predictions belong to")
    in_bval = File(exists=True, mandatory=True, desc="b-values")
    in_mask = File(exists=True, mandatory=True, desc="brain mask")
    threshold = traits.Float(4.0, usedefault=True, desc="robust z-score below which a volume is an outlier")
    b0_threshold = traits.Float(50.0, usedefault=True, desc="b-values at or below are b0")


class _FlagOutputSpec(TraitedSpec):
    exclude = traits.List(traits.Int, desc="outlier volumes (empty before any prediction exists)")
    scores = traits.List(traits.Float, desc="robust z-score of each diffusion-weighted volume")


class FlagOutliers(SimpleInterface):
    """Flag volumes that match their (registered) prediction abnormally badly, per shell."""

    input_spec = _FlagInputSpec
    output_spec = _FlagOutputSpec

    def _run_interface(self, runtime):
        from dmriprep_motion.gradients import shell_labels
        from dmriprep_motion.outliers import flag_outliers, robust_z

        if not isdefined(self.inputs.predictions) or not self.inputs.predictions:
            self._results.update(exclude=[], scores=[])
            return runtime
        img = nb.load(self.inputs.in_file)
        mask = np.asanyarray(nb.load(self.inputs.in_mask).dataobj) > 0
        indices = list(self.inputs.dwi_indices)
        scores = prediction_similarity(img, indices, list(self.inputs.predictions), mask)
        sim = np.array([scores[idx] for idx in indices])
        shells = shell_labels(np.loadtxt(self.inputs.in_bval, ndmin=1), self.inputs.b0_threshold)[indices]
        flags = flag_outliers(sim, shells, self.inputs.threshold)
        self._results.update(
            exclude=[idx for idx, flag in zip(indices, flags, strict=True) if flag],
            scores=robust_z(sim, shells).tolist(),
        )
        return runtime
