"""Leave-one-volume-out prediction as a Nipype interface."""

from __future__ import annotations

from pathlib import Path

import nibabel as nb
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from dmriprep_motion.interfaces.dwi import save_like
from dmriprep_motion.models import MODEL_NAMES, get_model


class _PredictInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="4D series moved by the previous pass")
    in_bval = File(exists=True, mandatory=True, desc="b-values")
    in_bvec = File(exists=True, mandatory=True, desc="b-vectors in the frame of in_file")
    in_mask = File(exists=True, mandatory=True, desc="voxels to fit and predict")
    target = traits.Int(mandatory=True, desc="index of the volume to predict (left out of the fit)")
    model = traits.Enum(*MODEL_NAMES, mandatory=True, desc="signal model")
    b0_threshold = traits.Float(50.0, usedefault=True, desc="b-values at or below are b0")
    exclude = traits.List(traits.Int, desc="volumes also left out of the fit (outliers)")
    seed = traits.Int(0, usedefault=True, desc="random seed (voxel subsampling)")


class _PredictOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="predicted volume (0 outside the mask)")


class PredictVolume(SimpleInterface):
    """Fit a model on all volumes but ``target`` and predict ``target``."""

    input_spec = _PredictInputSpec
    output_spec = _PredictOutputSpec

    def _run_interface(self, runtime):
        img = nb.load(self.inputs.in_file)
        mask = np.asanyarray(nb.load(self.inputs.in_mask).dataobj) > 0
        data = np.asanyarray(img.dataobj, dtype=np.float32)[mask]
        bvals = np.loadtxt(self.inputs.in_bval, ndmin=1)
        bvecs = np.loadtxt(self.inputs.in_bvec, ndmin=2).T
        train = np.ones(bvals.size, dtype=bool)
        if isdefined(self.inputs.exclude):
            train[[i for i in self.inputs.exclude if i != self.inputs.target]] = False
        kwargs = {"seed": self.inputs.seed} if self.inputs.model == "gp" else {}
        model = get_model(self.inputs.model, b0_threshold=self.inputs.b0_threshold, **kwargs)
        pred = model.predict(data, bvals, bvecs, self.inputs.target, train=train)
        out = np.zeros(img.shape[:3], dtype=np.float32)
        out[mask] = pred
        self._results["out_file"] = save_like(
            out, img, Path(runtime.cwd) / f"prediction_{self.inputs.target:04d}.nii"
        )
        return runtime
