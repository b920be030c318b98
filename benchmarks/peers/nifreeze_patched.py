"""NiFreeze's CLI with two defects of NiFreeze 0.1.0 patched; runs inside the NiFreeze peer venv.

Usage: python nifreeze_patched.py <ANTs preset name or "default"> <nifreeze CLI arguments...>

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
"""

import sys

import nifreeze.estimator as estimator
import nifreeze.registration.ants as ants
from nifreeze.cli.run import main

_prepare = estimator._prepare_registration_data
_settings = ants._get_ants_settings


def _prepare_copies(sample, predicted, *args, **kwargs):
    return _prepare(sample.copy(), predicted.copy(), *args, **kwargs)


if __name__ == "__main__":
    preset, argv = sys.argv[1], sys.argv[2:]
    estimator._prepare_registration_data = _prepare_copies
    if preset != "default":
        ants._get_ants_settings = lambda _requested=None: _settings(preset)  # whatever the CLI asks for
    sys.exit(main(argv))
