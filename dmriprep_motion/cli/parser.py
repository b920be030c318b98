"""Command-line parser of ``dmriprep-motion`` (BIDS-Apps conventions)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dmriprep_motion import __version__

#: BIDS-Apps exit codes.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_VALIDATION = 16
EXIT_USAGE = 64
EXIT_NO_INPUT = 66
#: Stopped by a signal (shell convention 128 + signal number); the work directory resumes.
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C)
EXIT_TERMINATED = 143  # SIGTERM (batch scheduler, timeout, kill)

DESCRIPTION = f"""\
dmriprep-motion {__version__}: leave-one-volume-out head-motion correction for diffusion MRI.

For every diffusion-weighted volume, a signal model is fit to all the OTHER volumes and
predicts it; the real volume is registered to that prediction with ANTs (Rigid, or Affine
to absorb eddy-current distortions); this is repeated for --passes passes, each starting
from the previous estimates. b0 volumes are aligned to the first b0. b-vectors are
rotated, and every volume is resampled ONCE onto its native grid. The output has the
same volumes, in the same order, as the input.
"""

EPILOG = """\
outputs (per DWI run, in OUTPUT_DIR/sub-<label>/[ses-<label>/]dwi/):
  *_desc-preproc_dwi.nii.gz/.bval/.bvec/.json    corrected series, rotated b-vectors
  *_dwiref.nii.gz, *_desc-brain_mask.nii.gz        b0 reference and brain mask
  *_desc-confounds_timeseries.tsv/.json           motion parameters, FD, similarity
  *_from-orig_to-dwiref_mode-image_desc-hmc_xfm.txt  one ITK transform per volume
and OUTPUT_DIR/sub-<label>.html with figures, plus dataset_description.json.

ANTs: the `antsRegistration` installed with this package runs antspyx's compiled ANTs,
unless a real ANTs is found on PATH (set DMRIPREP_MOTION_ANTS=antspyx|system to force).

exit codes: 0 success, 1 processing error, 16 invalid input data,
            64 usage error, 66 no input found.

example:
  dmriprep-motion /data/bids /data/derivatives/dmriprep-motion participant \\
      --participant-label 01 -w /scratch/work --nprocs 4
"""


class UsageError(Exception):
    """A command-line usage error (exit code 64)."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser that exits with the BIDS-Apps usage code and a one-line error."""

    def error(self, message: str):  # noqa: D102
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(EXIT_USAGE)


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be at least 1")
    return number


def _relaxation(value: str) -> float:
    from dmriprep_motion.interfaces.transforms import MAX_RELAXATION  # the run imports it anyway

    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0 < number <= MAX_RELAXATION:
        raise argparse.ArgumentTypeError(f"{value!r} must be above 0 and at most {MAX_RELAXATION:g}")
    return number


def _label(value: str) -> str:
    for prefix in ("sub-", "ses-"):
        if value.startswith(prefix):
            value = value[len(prefix) :]
    if not value or not value.isalnum():
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid BIDS label (letters and digits)")
    return value


def _existing_file(value: str) -> Path:
    path = Path(value).expanduser().absolute()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"file not found: {value}")
    return path


def build_parser() -> argparse.ArgumentParser:
    """Build the ``dmriprep-motion`` argument parser."""
    parser = _Parser(
        prog="dmriprep-motion",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bids_dir", type=Path, help="root of the input BIDS dataset")
    parser.add_argument("output_dir", type=Path, help="where derivatives are written")
    parser.add_argument(
        "analysis_level", choices=["participant"], help="processing level (only 'participant')"
    )
    parser.add_argument("--version", action="version", version=f"dmriprep-motion {__version__}")

    sel = parser.add_argument_group("selecting data")
    sel.add_argument(
        "--participant-label",
        "--participant_label",
        nargs="+",
        type=_label,
        metavar="LABEL",
        help="participants to process, with or without 'sub-' (default: all)",
    )
    sel.add_argument(
        "--session-label", nargs="+", type=_label, metavar="LABEL", help="sessions to process (default: all)"
    )
    sel.add_argument(
        "--bids-filter-file",
        type=_existing_file,
        metavar="FILE",
        help='JSON of PyBIDS filters for the DWI query, e.g. {"dwi": {"direction": "AP"}}',
    )
    sel.add_argument(
        "--skip-bids-validation",
        action="store_true",
        help="do not run bids-validator-deno on the input even when it is installed",
    )

    method = parser.add_argument_group("method")
    method.add_argument(
        "--model",
        choices=["auto", "b0", "avgdwi", "dti", "dki", "gp"],
        default="auto",
        help="signal model predicting each volume from the others: auto (default) picks by "
        "scheme and logs why; gp = Gaussian process over directions and b-values (no directional "
        "signal in free-water voxels); dti/dki = "
        "DIPY tensor/kurtosis (dki needs 2+ shells; both are blind to motion errors that vary with "
        "the gradient direction as a tensor does, see benchmarks/README.md); avgdwi = mean of the "
        "shell; b0 = b0 reference",
    )
    method.add_argument(
        "--transform",
        choices=["Rigid", "Affine"],
        default="Rigid",
        help="transform of diffusion-weighted volumes (default Rigid; Affine absorbs eddy currents)",
    )
    method.add_argument("--passes", type=_positive_int, default=3, help="estimation passes (default 3)")
    method.add_argument(
        "--tolerance",
        type=float,
        default=0.05,
        metavar="MM",
        help="stop early once a pass changes no transform by more than MM (mean over the brain; "
        "default 0.05; 0 always runs every pass)",
    )
    method.add_argument(
        "--relaxation",
        type=_relaxation,
        default=2.0,
        metavar="F",
        help="in the passes between the first and the last, move each transform F times its step "
        "from the previous estimate to the new one before the next pass starts from it (0 < F <= 2; "
        "default 2: over-relaxation of the part of the step a volume shares with its 4 nearest "
        "gradient directions, which the passes correct slowest; 1 takes the new estimates; below 1 "
        "damps the whole step against oscillations, but slows convergence; the last pass keeps its "
        "estimates)",
    )
    method.add_argument(
        "--anchor",
        choices=["auto", "registration", "median", "none"],
        default="auto",
        help="how each shell's common position is tied to the b0 reference, once, after the last "
        "pass (the passes align the volumes of a shell to one another, not to the b0): "
        "registration of the shell's corrected mean to the b0 reference (mutual information, like "
        "eddy's post-alignment of shells), median motion = 0 (assumes most volumes did not move "
        "relative to the b0), auto (default: shells up to b=1500 are registered to the b0 "
        "reference; each higher shell's mean to the next lower shell's, since the b0 and a high-b "
        "shell share too little contrast to register reliably; a lowest shell above b=1500, as in "
        "single-shell high-b data, takes the median), or none (each shell stays where the passes "
        "left it; always so with --model b0, whose passes register to the b0 reference)",
    )
    method.add_argument(
        "--outlier-threshold",
        type=float,
        default=4.0,
        metavar="Z",
        help="flag volumes whose similarity to their prediction has a robust z-score (per shell) "
        "below -Z (default 4; 0 disables)",
    )
    method.add_argument(
        "--exclude-outliers",
        action="store_true",
        help="leave flagged volumes out of the model fits of the following pass",
    )
    method.add_argument(
        "--b0-threshold",
        type=float,
        default=50.0,
        metavar="B",
        help="volumes with b <= B s/mm^2 are b0s (default 50)",
    )
    method.add_argument(
        "--registration-config",
        type=_existing_file,
        metavar="FILE",
        help="JSON of Nipype ants.Registration inputs replacing the packaged volume-to-prediction "
        "presets of every pass (by default the first pass registers coarse to fine, later passes "
        "at full resolution only)",
    )
    method.add_argument(
        "--seed", type=int, default=20161107, help="random seed of ANTs and sampling (default 20161107)"
    )
    method.add_argument(
        "--sloppy", action="store_true", help="fast, less accurate registration settings (testing only)"
    )

    perf = parser.add_argument_group("performance")
    perf.add_argument(
        "--nprocs",
        "--nthreads",
        "--n-cpus",
        type=_positive_int,
        default=os.cpu_count() or 1,
        help="processes run in parallel (default: all CPUs)",
    )
    perf.add_argument(
        "--omp-nthreads",
        type=_positive_int,
        default=1,
        help="threads per process: each registration, and BLAS/OpenMP in every worker (default 1)",
    )
    perf.add_argument("--mem-mb", type=_positive_int, help="memory available to the scheduler (MB)")
    perf.add_argument(
        "--use-plugin",
        type=_existing_file,
        metavar="FILE",
        help="Nipype plugin YAML (e.g. plugin: SLURM with plugin_args), replacing MultiProc",
    )

    other = parser.add_argument_group("other")
    other.add_argument(
        "-w",
        "--work-dir",
        type=Path,
        default=Path("work"),
        help="working directory; re-running with the same one resumes and skips finished "
        "steps (default: ./work)",
    )
    other.add_argument(
        "--write-graph",
        action="store_true",
        help="write the workflow graph (.dot, and .svg/.png if possible)",
    )
    other.add_argument(
        "--boilerplate-only", action="store_true", help="write the methods text (logs/CITATION.md) and exit"
    )
    other.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv for Nipype's node messages)"
    )
    return parser
