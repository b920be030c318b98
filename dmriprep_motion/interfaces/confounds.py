"""Motion confounds as a Nipype interface."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from dmriprep_motion.confounds import column_metadata, confounds_table, write_tsv


class _ConfoundsInputSpec(BaseInterfaceInputSpec):
    in_xforms = File(exists=True, mandatory=True, desc="(N, 4, 4) RAS+ transforms (.npy)")
    in_bval = File(exists=True, mandatory=True, desc="b-values")
    similarity = traits.List(traits.Float, desc="per-volume similarity")
    transform = traits.Enum("Rigid", "Affine", usedefault=True, desc="estimated transform")
    outlier_threshold = traits.Float(4.0, usedefault=True, desc="robust z-score flagging outliers")
    b0_threshold = traits.Float(50.0, usedefault=True, desc="b-values at or below are b0")


class _ConfoundsOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="confounds TSV")
    out_metadata = File(exists=True, desc="confounds JSON sidecar")


class MotionConfounds(SimpleInterface):
    """Write the motion parameters, FD, similarity and b-value of every volume."""

    input_spec = _ConfoundsInputSpec
    output_spec = _ConfoundsOutputSpec

    def _run_interface(self, runtime):
        xforms = np.load(self.inputs.in_xforms)
        bvals = np.loadtxt(self.inputs.in_bval, ndmin=1)
        sim = np.asarray(self.inputs.similarity) if self.inputs.similarity else None
        columns, values = confounds_table(
            xforms, bvals, sim, self.inputs.transform, self.inputs.outlier_threshold, self.inputs.b0_threshold
        )
        out_file = Path(runtime.cwd) / "confounds.tsv"
        write_tsv(out_file, columns, values)
        out_meta = Path(runtime.cwd) / "confounds.json"
        out_meta.write_text(
            json.dumps(column_metadata(self.inputs.transform, self.inputs.outlier_threshold), indent=2)
        )
        self._results.update(out_file=str(out_file), out_metadata=str(out_meta))
        return runtime
