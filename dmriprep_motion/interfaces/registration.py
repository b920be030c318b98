"""ANTs registration that can be skipped once the estimation has converged."""

from __future__ import annotations

from nipype.interfaces.ants.registration import Registration, RegistrationInputSpec
from nipype.interfaces.base import isdefined, traits


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
