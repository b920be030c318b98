"""NiFreeze's CLI with defects of NiFreeze 0.1.0 patched (two, or three); runs inside the NiFreeze peer venv.

Usage: python nifreeze_patched.py <ANTs preset name or "default"> [--fit-with-b0] <nifreeze CLI arguments...>

A what-if for the benchmark's ``nifreeze-*-patched`` rows, not the tool as users run it
(``nifreeze-b0`` / ``nifreeze-dti`` are that). The two patches:

1. NiFreeze writes each volume and its prediction to NIfTI for ANTs through
   ``advanced_clip(..., inplace=True)`` on views of its own dataset, so every volume it has
   registered (and the b0 reference) is left rescaled to 0-255 in the dataset that later fits
   read. Here the registration gets copies.
2. The CLI registers every volume with its ``b0-to-b0_level0`` preset, whose metric is global
   correlation. With the ``trivial`` model the target is the b0 reference; where b0 and
   diffusion-weighted contrasts are anti-correlated in the brain (much CSF), that metric pulls
   away from alignment. The first argument names another preset that NiFreeze ships (here
   ``dwi-to-b0_level0``, Mattes mutual information), or ``default`` to keep the CLI's. (Its CLI
   has ``--align-config``, a YAML file whose ``ants_config`` would pick a preset, but in 0.1.0 the
   file reaches the registration as one unknown keyword, ``align_kwargs``, and is ignored.)

With ``--fit-with-b0`` (a third patch, since 2026-12-05): the ``dti`` model's tensor is fitted
with the b0 reference as one more volume (b = 0). NiFreeze keeps the b0 apart from its
diffusion-weighted dataset and fits the tensor to the diffusion-weighted volumes alone; with one
shell the signal's scale and the mean diffusivity cannot be told apart, and its predictions
(made with the b0 as ``S0``) do not resemble the volumes (``benchmarks/README.md``, "Why
NiFreeze-dti fails on single-shell data").
"""

import sys

import nifreeze.estimator as estimator
import nifreeze.model.dmri as dmri
import nifreeze.registration.ants as ants
import numpy as np
from nifreeze.cli.run import main

_prepare = estimator._prepare_registration_data
_settings = ants._get_ants_settings
_fit = dmri.BaseDWIModel._fit


def _prepare_copies(sample, predicted, *args, **kwargs):
    return _prepare(sample.copy(), predicted.copy(), *args, **kwargs)


def _fit_with_b0(self, index=None, n_jobs=None, **kwargs):
    """NiFreeze's fit, while the dataset's boolean selections also return its b0 (b = 0)."""
    dataset = self._dataset
    if dataset.bzero is None:
        return _fit(self, index, n_jobs=n_jobs, **kwargs)
    cls = type(dataset)
    getitem = cls.__getitem__

    def with_b0(obj, idx):
        data, motion, gradients = getitem(obj, idx)
        if obj is not dataset or not (isinstance(idx, np.ndarray) and idx.dtype == bool):
            return data, motion, gradients
        data = np.concatenate([data, dataset.bzero[..., np.newaxis]], axis=-1)
        return data, motion, np.vstack([gradients, np.zeros((1, gradients.shape[1]))])

    cls.__getitem__ = with_b0  # only while this fit reads its volumes
    try:
        return _fit(self, index, n_jobs=n_jobs, **kwargs)
    finally:
        cls.__getitem__ = getitem


if __name__ == "__main__":
    preset, argv = sys.argv[1], sys.argv[2:]
    estimator._prepare_registration_data = _prepare_copies
    if argv[:1] == ["--fit-with-b0"]:
        argv = argv[1:]
        dmri.BaseDWIModel._fit = _fit_with_b0
    if preset != "default":
        ants._get_ants_settings = lambda _requested=None: _settings(preset)  # whatever the CLI asks for
    sys.exit(main(argv))
