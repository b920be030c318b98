"""Nipype interfaces producing the reportlets and QC metrics of one DWI run.

Thin wrappers over :mod:`dmriprep_motion.reports.plotting` and :mod:`dmriprep_motion.qc`.
"""

from __future__ import annotations

import html
import logging
import platform
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

from dmriprep_motion.bids import atomic_copy
from dmriprep_motion.gradients import fsl_to_ras, read_bvecs, shell_bvalues, shell_labels
from dmriprep_motion.interfaces.dwi import save_like
from dmriprep_motion.qc import (
    OUTLIER_Z,
    flag_outliers,
    qc_metrics,
    read_confounds,
    similarity_thresholds,
)
from dmriprep_motion.reports import plotting

LOGGER = logging.getLogger("dmriprep_motion")

#: Python packages whose versions are listed in the report.
SOFTWARE = ["dmriprep-motion", "nipype", "niworkflows", "nireports", "dipy", "antspyx", "nitransforms",
            "nibabel", "numpy", "scipy", "matplotlib"]  # fmt: skip


class _ConfoundsInputSpec(BaseInterfaceInputSpec):
    in_confounds = File(exists=True, mandatory=True, desc="confounds TSV")
    b0_threshold = traits.Float(50.0, usedefault=True, desc="b-values at or below are b0")
    outlier_threshold = traits.Float(OUTLIER_Z, usedefault=True, desc="robust z-score flagging outliers")


class _FigureOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="reportlet")


class _QCOutputSpec(TraitedSpec):
    qc = traits.Dict(desc="QC metrics")


class _QCInputSpec(_ConfoundsInputSpec):
    pass_changes = traits.List(traits.List(traits.Float), desc="per pass, per-volume change (mm)")
    tolerance = traits.Float(0.0, usedefault=True, desc="convergence tolerance of the passes (mm)")
    label = traits.Str("series", usedefault=True, desc="name of the series in log messages")


class QCMetrics(SimpleInterface):
    """Summary QC metrics of a run (FD, largest motion, outliers, similarity, convergence).

    Logs a warning when the passes ran out before the transforms stopped moving.
    """

    input_spec = _QCInputSpec
    output_spec = _QCOutputSpec

    def _run_interface(self, runtime):
        conf = read_confounds(self.inputs.in_confounds)
        changes = self.inputs.pass_changes if isdefined(self.inputs.pass_changes) else None
        qc = qc_metrics(
            conf, self.inputs.b0_threshold, self.inputs.outlier_threshold, changes, self.inputs.tolerance
        )
        if changes is not None and self.inputs.tolerance > 0 and not qc["converged"]:
            LOGGER.warning(
                "%s: the last of %d passes still moved a transform by %.2f mm (tolerance %g mm): "
                "the motion estimates have not converged; more passes would move them further",
                self.inputs.label, qc["passes_run"],
                qc["last_pass_change_mm"], self.inputs.tolerance,
            )  # fmt: skip
        self._results["qc"] = qc
        return runtime


class MotionPlot(SimpleInterface):
    """Motion traces (translations, rotations, FD) shaded by shell, outliers marked."""

    input_spec = _ConfoundsInputSpec
    output_spec = _FigureOutputSpec

    def _run_interface(self, runtime):
        conf = read_confounds(self.inputs.in_confounds)
        labels = shell_labels(conf["bval"], self.inputs.b0_threshold)
        flags, _ = flag_outliers(conf, self.inputs.b0_threshold, self.inputs.outlier_threshold)
        out = plotting.plot_motion(conf, labels, flags, Path(runtime.cwd) / "motion.svg")
        self._results["out_file"] = str(out)
        return runtime


class SimilarityPlot(SimpleInterface):
    """Per-volume similarity to the registration target, with per-shell outlier thresholds."""

    input_spec = _ConfoundsInputSpec
    output_spec = _FigureOutputSpec

    def _run_interface(self, runtime):
        conf = read_confounds(self.inputs.in_confounds)
        bvals = conf["bval"]
        labels = shell_labels(bvals, self.inputs.b0_threshold)
        flags, _ = flag_outliers(conf, self.inputs.b0_threshold, self.inputs.outlier_threshold)
        thresholds = similarity_thresholds(
            conf["similarity"], bvals, self.inputs.b0_threshold, self.inputs.outlier_threshold
        )
        out = plotting.plot_similarity(
            conf["similarity"], thresholds, labels, bvals, flags, Path(runtime.cwd) / "similarity.svg"
        )
        self._results["out_file"] = str(out)
        return runtime


class _GradientsInputSpec(BaseInterfaceInputSpec):
    in_bval = File(exists=True, mandatory=True, desc="b-values")
    in_bvec = File(exists=True, mandatory=True, desc="original FSL b-vectors")
    out_bvec = File(exists=True, mandatory=True, desc="rotated FSL b-vectors")
    reference = File(exists=True, mandatory=True, desc="image on the grid of the series (for its affine)")
    b0_threshold = traits.Float(50.0, usedefault=True, desc="b-values at or below are b0")


class GradientsPlot(SimpleInterface):
    """Gradient directions (RAS+) on the sphere by shell, before and after rotation."""

    input_spec = _GradientsInputSpec
    output_spec = _FigureOutputSpec

    def _run_interface(self, runtime):
        bvals = np.loadtxt(self.inputs.in_bval, ndmin=1)
        affine = nb.load(self.inputs.reference).affine
        before = fsl_to_ras(read_bvecs(self.inputs.in_bvec, bvals.size), affine)
        after = fsl_to_ras(read_bvecs(self.inputs.out_bvec, bvals.size), affine)
        labels = shell_labels(bvals, self.inputs.b0_threshold)
        out = plotting.plot_gradients(bvals, before, after, labels, Path(runtime.cwd) / "gradients.svg")
        self._results["out_file"] = str(out)
        return runtime


class _ConvergenceInputSpec(BaseInterfaceInputSpec):
    changes = traits.List(traits.List(traits.Float), mandatory=True, desc="per pass, per-volume change (mm)")


class ConvergencePlot(SimpleInterface):
    """Change of the transforms between passes."""

    input_spec = _ConvergenceInputSpec
    output_spec = _FigureOutputSpec

    def _run_interface(self, runtime):
        out = plotting.plot_convergence(self.inputs.changes, Path(runtime.cwd) / "convergence.svg")
        self._results["out_file"] = str(out)
        return runtime


class _AnimationInputSpec(BaseInterfaceInputSpec):
    dwi_orig = File(exists=True, mandatory=True, desc="original series (float copy)")
    dwi_file = File(exists=True, mandatory=True, desc="corrected series")
    predictions = InputMultiObject(File(exists=True), mandatory=True, desc="last-pass predictions")
    dwi_indices = traits.List(traits.Int, mandatory=True, desc="volumes the predictions belong to")
    reference = File(exists=True, mandatory=True, desc="b0 reference (target of b0 volumes)")
    in_mask = File(exists=True, mandatory=True, desc="brain mask")
    in_confounds = File(exists=True, mandatory=True, desc="confounds TSV (b-values, outliers)")
    b0_threshold = traits.Float(50.0, usedefault=True, desc="b-values at or below are b0")
    outlier_threshold = traits.Float(OUTLIER_Z, usedefault=True, desc="robust z-score flagging outliers")


class VolumesAnimation(SimpleInterface):
    """GIF over volumes of original / registration target / corrected slices."""

    input_spec = _AnimationInputSpec
    output_spec = _FigureOutputSpec

    def _run_interface(self, runtime):
        def canonical(path):
            return nb.as_closest_canonical(nb.load(path))

        orig = canonical(self.inputs.dwi_orig)
        corrected = np.asanyarray(canonical(self.inputs.dwi_file).dataobj, dtype=np.float32)
        mask = np.asanyarray(canonical(self.inputs.in_mask).dataobj) > 0
        conf = read_confounds(self.inputs.in_confounds)
        flags, _ = flag_outliers(conf, self.inputs.b0_threshold, self.inputs.outlier_threshold)
        bvals = conf["bval"]
        targets = dict(zip(self.inputs.dwi_indices, self.inputs.predictions, strict=True))
        ref = np.asanyarray(canonical(self.inputs.reference).dataobj, dtype=np.float32)
        predictions = {
            i: (np.asanyarray(canonical(targets[i]).dataobj, dtype=np.float32) if i in targets else ref)
            for i in range(orig.shape[3])
        }
        out = plotting.volumes_gif(
            np.asanyarray(orig.dataobj, dtype=np.float32),
            predictions,
            corrected,
            mask,
            bvals,
            flags,
            Path(runtime.cwd) / "volumes.gif",
            zooms=tuple(float(z) for z in orig.header.get_zooms()[:3]),
        )
        self._results["out_file"] = str(out)
        return runtime


class _FlickerInputSpec(BaseInterfaceInputSpec):
    before = File(exists=True, mandatory=True, desc="image before")
    after = File(exists=True, mandatory=True, desc="image after (same grid)")
    in_mask = File(exists=True, mandatory=True, desc="brain mask (contour)")
    before_label = traits.Str("before", usedefault=True, desc="name of the image before")
    after_label = traits.Str("after", usedefault=True, desc="name of the image after")


class FlickerPlot(SimpleInterface):
    """Before/after mosaics with the brain-mask contour, flickering on hover (SVG)."""

    input_spec = _FlickerInputSpec
    output_spec = _FigureOutputSpec

    def _run_interface(self, runtime):
        imgs = [nb.as_closest_canonical(nb.load(f)) for f in (self.inputs.before, self.inputs.after)]
        mask = np.asanyarray(nb.as_closest_canonical(nb.load(self.inputs.in_mask)).dataobj) > 0
        before, after = (np.asanyarray(img.dataobj, dtype=np.float32) for img in imgs)
        out = plotting.plot_flicker(
            before,
            after,
            mask,
            Path(runtime.cwd) / "flicker.svg",
            labels=(self.inputs.before_label, self.inputs.after_label),
            zooms=tuple(float(z) for z in imgs[0].header.get_zooms()[:3]),
        )
        self._results["out_file"] = str(out)
        return runtime


class _AveragesInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="4D series (original or corrected)")
    in_bval = File(exists=True, mandatory=True, desc="b-values")
    b0_threshold = traits.Float(50.0, usedefault=True, desc="b-values at or below are b0")
    b0_mean = traits.Bool(True, usedefault=True, desc="also average the b0 volumes")


class _AveragesOutputSpec(TraitedSpec):
    dwi_mean = File(exists=True, desc="average diffusion-weighted volume")
    b0_mean = File(exists=True, desc="average b0 volume (the volumes as they are, not aligned)")


class AverageImages(SimpleInterface):
    """Averages of one series's diffusion-weighted and b0 volumes, for the flicker reportlets.

    One node per series: the original series's averages (and the b0 flicker that needs no
    other) are ready long before the corrected series is.
    """

    input_spec = _AveragesInputSpec
    output_spec = _AveragesOutputSpec

    def _run_interface(self, runtime):
        bvals = np.loadtxt(self.inputs.in_bval, ndmin=1)
        img = nb.load(self.inputs.in_file)
        data = np.asanyarray(img.dataobj, dtype=np.float32)
        selections = {"dwi_mean": np.flatnonzero(bvals > self.inputs.b0_threshold)}
        if self.inputs.b0_mean:
            selections["b0_mean"] = np.flatnonzero(bvals <= self.inputs.b0_threshold)
        for key, index in selections.items():
            mean = data[..., index].mean(axis=-1)
            self._results[key] = save_like(mean, img, Path(runtime.cwd) / f"{key}.nii.gz")
        return runtime


class _SummaryInputSpec(BaseInterfaceInputSpec):
    in_confounds = File(exists=True, mandatory=True, desc="confounds TSV")
    qc = traits.Dict(mandatory=True, desc="QC metrics")
    settings = traits.Dict(mandatory=True, desc="method settings (Model, Transform, Passes, B0Threshold)")
    b0_threshold = traits.Float(50.0, usedefault=True, desc="b-values at or below are b0")
    outlier_threshold = traits.Float(OUTLIER_Z, usedefault=True, desc="robust z-score flagging outliers")


class RunSummary(SimpleInterface):
    """HTML table summarising one run: data, method, motion, outliers and software."""

    input_spec = _SummaryInputSpec
    output_spec = _FigureOutputSpec

    def _run_interface(self, runtime):
        conf = read_confounds(self.inputs.in_confounds)
        bvals = conf["bval"]
        qc, settings = self.inputs.qc, self.inputs.settings
        _, rule = flag_outliers(conf, self.inputs.b0_threshold, self.inputs.outlier_threshold)
        n_b0 = int(np.sum(bvals <= self.inputs.b0_threshold))
        shells = shell_bvalues(bvals, self.inputs.b0_threshold)
        labels = shell_labels(bvals, self.inputs.b0_threshold)
        per_shell = ", ".join(
            f"b={b:g} ({int(np.sum(labels == i + 1))} volumes)" for i, b in enumerate(shells)
        )
        versions = software_versions()
        rows = {
            "Volumes": f"{qc['volumes']} ({n_b0} b0, {qc['volumes'] - n_b0} diffusion-weighted)",
            "Shells": html.escape(per_shell or "none"),
            "b-values (s/mm²)": html.escape(", ".join(f"{b:g}" for b in np.unique(bvals))),
            "Model": f"<code>{html.escape(str(settings.get('Model')))}</code>",
            "Transform": html.escape(str(settings.get("Transform"))),
            "Passes": _passes_row(settings, qc),
            "Framewise displacement": f"mean {qc['fd_mean_mm']:.3f} mm, max {qc['fd_max_mm']:.3f} mm",
            "Largest motion": f"{qc['translation_max_mm']:.2f} mm, {qc['rotation_max_deg']:.2f}°",
            "Flagged volumes": f"{qc['outliers']} ({qc['outliers_percent']:.1f}%); criterion: {rule}",
            "Mean similarity": f"{qc['similarity_mean']:.4f}",
            "ANTs": html.escape(versions["ANTs"]),
            "Software": html.escape(", ".join(f"{k} {v}" for k, v in versions.items() if k != "ANTs")),
        }
        warnings = []
        if qc["outliers"]:
            warnings.append(f"{qc['outliers']} volume(s) flagged as outliers: inspect them below.")
        if qc.get("passes_run") and settings.get("Tolerance") and not qc.get("converged"):
            warnings.append(
                f"The motion estimates had not converged: the last pass still moved a transform by "
                f"{qc['last_pass_change_mm']:.2f} mm (see the convergence plot)."
            )
        out = Path(runtime.cwd) / "summary.html"
        out.write_text(plotting.summary_html(rows, warnings))
        self._results["out_file"] = str(out)
        return runtime


def _passes_row(settings: dict, qc: dict) -> str:
    """Summary row of the passes: requested, run, the last change and convergence."""
    text = f"{settings.get('Passes')} requested"
    if qc.get("passes_run"):
        state = "converged" if qc.get("converged") else "not converged"
        text += (
            f", {qc['passes_run']} run; largest change in the last pass "
            f"{qc['last_pass_change_mm']:.3f} mm ({state}, tolerance {settings.get('Tolerance')} mm)"
        )
    return html.escape(text)


def software_versions() -> dict[str, str]:
    """Versions of Python, of the main Python packages and of the ANTs in use."""
    from importlib.metadata import PackageNotFoundError, version

    from dmriprep_motion.ants import describe_ants

    out = {"Python": platform.python_version()}
    for name in SOFTWARE:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    info = describe_ants()
    out["ANTs"] = f"{info['version']} ({info['backend']} backend: {info['runs']})"
    return out


class _ExportInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="reportlet")
    # A plain string whose *file* is never hashed: re-running with the same work
    # directory must not re-execute the copy because the destination now exists.
    out_file = traits.Str(mandatory=True, hash_files=False, desc="absolute destination path")


class _ExportOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="written reportlet")


class ExportReportlet(SimpleInterface):
    """Copy a reportlet to ``<output_dir>/sub-X/figures/`` through an atomic rename."""

    input_spec = _ExportInputSpec
    output_spec = _ExportOutputSpec

    def _run_interface(self, runtime):
        dst = Path(self.inputs.out_file)
        atomic_copy(Path(self.inputs.in_file), dst)
        self._results["out_file"] = str(dst)
        return runtime
