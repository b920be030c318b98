"""ANTs registration that can be skipped once the estimation has converged, and its sampling."""

from __future__ import annotations

import logging

import nibabel as nb
import numpy as np
from nipype.interfaces.ants.registration import Registration, RegistrationInputSpec
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from dmriprep_motion.sampling import capped_percentage, regular_step

#: the run's log (the cap acts on the run's data: worth a line there)
LOGGER = logging.getLogger("dmriprep_motion")


class _SkippableInputSpec(RegistrationInputSpec):
    skip = traits.Bool(False, usedefault=True, desc="return the initial transform without running ANTs")


class SkippableRegistration(Registration):
    """Nipype's :class:`~nipype.interfaces.ants.Registration` with a ``skip`` switch.

    Passes are unrolled in a static graph; when the previous pass changed the
    transforms by less than the tolerance, the later passes set ``skip`` and
    hand the initial (converged) transform through at no cost.  ``skip`` has no
    command-line argument, so the generated ``antsRegistration`` command is the
    same as the parent interface's.  Without an initial transform a skipped
    registration returns no transform (e.g. the reference b0, not registered to
    itself).
    """

    input_spec = _SkippableInputSpec

    def _run_interface(self, runtime, correct_return_codes=(0,)):
        if self.inputs.skip:
            runtime.returncode = 0
            return runtime
        return super()._run_interface(runtime, correct_return_codes)

    def _list_outputs(self):
        if self.inputs.skip:
            outputs = self._outputs().get()
            initial = self.inputs.initial_moving_transform
            outputs["forward_transforms"] = [initial[0]] if isdefined(initial) else []
            return outputs
        return super()._list_outputs()


class _SamplingInputSpec(BaseInterfaceInputSpec):
    in_mask = File(exists=True, mandatory=True, desc="the registrations' fixed mask (or image: whole_grid)")
    whole_grid = traits.Bool(False, usedefault=True, desc="count every voxel of in_mask's grid (no mask)")
    percentages = traits.List(traits.Float, mandatory=True, desc="the preset's sampling percentage per stage")
    max_samples = traits.Int(0, usedefault=True, desc="most mask voxels sampled (0: the preset's share)")
    report = traits.Bool(True, usedefault=True, desc="log a capped sampling (once per run, not per pass)")


class _SamplingOutputSpec(TraitedSpec):
    sampling_percentage = traits.List(traits.Float, desc="per stage, the percentage to sample")
    n_samples = traits.Int(desc="about how many mask voxels the first stage samples at full resolution")


class CapSampling(SimpleInterface):
    """Cap the voxels a registration samples on large grids (:mod:`dmriprep_motion.sampling`)."""

    input_spec = _SamplingInputSpec
    output_spec = _SamplingOutputSpec

    def _run_interface(self, runtime):
        img = nb.load(self.inputs.in_mask)
        if self.inputs.whole_grid:
            n_voxels = int(np.prod(img.shape[:3]))
        else:
            n_voxels = int(np.count_nonzero(np.asanyarray(img.dataobj)))
        out = [capped_percentage(p, n_voxels, self.inputs.max_samples) for p in self.inputs.percentages]
        if self.inputs.report and out != list(self.inputs.percentages):
            LOGGER.info(
                "%s of %d voxels: each registration samples 1 voxel in %d instead of 1 in %d "
                "(at most %d samples)",
                "b0 grid" if self.inputs.whole_grid else "registration mask", n_voxels,
                regular_step(out[0]), regular_step(self.inputs.percentages[0]), self.inputs.max_samples,
            )  # fmt: skip
        self._results["sampling_percentage"] = out
        self._results["n_samples"] = n_voxels // regular_step(out[0])
        return runtime
