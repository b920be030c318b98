"""Writing BIDS derivatives of one DWI run, atomically."""

from __future__ import annotations

import json
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from dmriprep_motion.bids import DERIVATIVE_SUFFIXES, atomic_copy, atomic_write_text
from dmriprep_motion.qc import qc_sidecar, qc_tsv

#: Written first; the preprocessed series and its sidecar come last, so their
#: presence means the run's derivatives are complete.
_ORDER = ["bval", "bvec", "dwiref", "mask", "confounds", "confounds_json", "xforms", "dwi"]


class _ExportInputSpec(BaseInterfaceInputSpec):
    output_dir = Directory(mandatory=True, desc="derivatives root")
    reldir = traits.Str(mandatory=True, desc="folder below the root (sub-X[/ses-Y]/dwi)")
    stem = traits.Str(mandatory=True, desc="file-name stem (e.g. sub-01_dir-AP)")
    dwi = File(exists=True, mandatory=True, desc="corrected series")
    bval = File(exists=True, mandatory=True, desc="b-values")
    bvec = File(exists=True, mandatory=True, desc="rotated b-vectors")
    dwiref = File(exists=True, mandatory=True, desc="b0 reference")
    mask = File(exists=True, mandatory=True, desc="brain mask")
    confounds = File(exists=True, mandatory=True, desc="confounds TSV")
    confounds_json = File(exists=True, mandatory=True, desc="confounds JSON")
    xforms = File(exists=True, mandatory=True, desc="ITK transforms, one per volume")
    metadata = traits.Dict(desc="sidecar of the preprocessed series")
    qc = traits.Dict(desc="QC metrics: written as <stem>_desc-qc_dwi.tsv (+ .json) and added to the sidecar")


class _ExportOutputSpec(TraitedSpec):
    out_files = traits.List(File(exists=True), desc="written derivatives")


class ExportDerivatives(SimpleInterface):
    """Copy a run's outputs to their BIDS-derivatives names (each through an atomic rename)."""

    input_spec = _ExportInputSpec
    output_spec = _ExportOutputSpec

    def _run_interface(self, runtime):
        folder = Path(self.inputs.output_dir) / self.inputs.reldir
        written = []
        for key in _ORDER:
            dst = folder / f"{self.inputs.stem}_{DERIVATIVE_SUFFIXES[key]}"
            atomic_copy(Path(getattr(self.inputs, key)), dst)
            written.append(str(dst))
        meta = dict(self.inputs.metadata) if isdefined(self.inputs.metadata) else {}
        if isdefined(self.inputs.qc) and self.inputs.qc:
            meta["QC"] = dict(self.inputs.qc)
            qc_file = folder / f"{self.inputs.stem}_{DERIVATIVE_SUFFIXES['qc']}"
            atomic_write_text(qc_file, qc_tsv(meta["QC"]))
            qc_json = folder / f"{self.inputs.stem}_{DERIVATIVE_SUFFIXES['qc_json']}"
            atomic_write_text(qc_json, json.dumps(qc_sidecar(), indent=2) + "\n")
            written[:0] = [str(qc_file), str(qc_json)]
        sidecar = folder / f"{self.inputs.stem}_{DERIVATIVE_SUFFIXES['sidecar']}"
        atomic_write_text(sidecar, json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        written.append(str(sidecar))
        self._results["out_files"] = written
        return runtime
