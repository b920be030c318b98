"""Write (and optionally submit) a SLURM job array: one participant per array task.

Each task runs ``dmriprep-motion ... participant --participant-label <one>``
with Nipype's MultiProc on the CPUs SLURM gave the task, and its own working
directory (``<work-dir>/sub-<label>``), so tasks never share Nipype state and a
failed participant can be re-submitted alone (``sbatch --array=<index>``); a
re-run resumes from its working directory.

Example (write the script only, then inspect and submit it yourself)::

    dmriprep-motion-slurm /data/bids /data/derivatives/dmriprep-motion \\
        --work-dir /scratch/$USER/dmriprep-motion --cpus 8 --mem-gb 16 --time 04:00:00 \\
        --container /images/dmriprep-motion.sif --dry-run -- --passes 2
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from dmriprep_motion import __version__
from dmriprep_motion.cli.parser import EXIT_NO_INPUT, EXIT_OK, EXIT_USAGE, _label

LOGGER = logging.getLogger("dmriprep_motion")

#: Fraction of the job's memory handed to Nipype's scheduler (the rest is headroom
#: for the Python process itself and the file system cache).
MEMORY_FRACTION = 0.9


def find_participants(bids_dir: Path, participants_file: Path | None = None) -> list[str]:
    """Participant labels, without ``sub-``, sorted and unique.

    Read from ``participants_file`` (a BIDS ``participants.tsv`` with a
    ``participant_id`` column, or a text file with one label per line), else from
    ``<bids_dir>/participants.tsv``, else from the ``sub-*`` folders of ``bids_dir``.
    """
    source = participants_file
    if source is None and (bids_dir / "participants.tsv").is_file():
        source = bids_dir / "participants.tsv"
    if source is None:
        labels = [p.name for p in bids_dir.glob("sub-*") if p.is_dir()]
    else:
        text = Path(source).read_text().splitlines()
        if text and "participant_id" in text[0].split("\t"):
            labels = [row["participant_id"] for row in csv.DictReader(text, delimiter="\t")]
        else:
            labels = [line.strip() for line in text if line.strip() and not line.startswith("#")]
    return sorted({_label(label) for label in labels})


def slurm_array_script(
    *,
    bids_dir: Path,
    output_dir: Path,
    work_dir: Path,
    participants: list[str],
    cpus: int = 8,
    mem_gb: float = 16.0,
    time: str = "12:00:00",
    partition: str | None = None,
    account: str | None = None,
    max_parallel: int | None = None,
    log_dir: Path | None = None,
    container: Path | None = None,
    container_runtime: str = "singularity",
    job_name: str = "dmriprep-motion",
    extra_args: list[str] | None = None,
) -> str:
    """Text of an ``sbatch`` script running one participant per array task.

    Parameters
    ----------
    bids_dir, output_dir, work_dir : path
        Input dataset, derivatives and working directories (made absolute).
    participants : list of str
        Labels (without ``sub-``); task ``i`` processes ``participants[i]``.
    cpus, mem_gb, time : resources of each task (``--cpus-per-task``, ``--mem``, ``--time``).
    partition, account : optional SLURM partition and account.
    max_parallel : int or None
        At most this many tasks run at once (``--array=0-N%max``).
    log_dir : path or None
        Where SLURM writes each task's output (default ``<work_dir>/slurm-logs``).
    container : path or None
        Singularity/Apptainer image to run instead of the installed ``dmriprep-motion``.
    container_runtime : str
        ``singularity`` or ``apptainer``.
    extra_args : list of str
        More ``dmriprep-motion`` options, passed unchanged (e.g. ``["--passes", "3"]``).
    """
    if not participants:
        raise ValueError("no participants to process")
    bids_dir, output_dir, work_dir = (Path(p).absolute() for p in (bids_dir, output_dir, work_dir))
    log_dir = Path(log_dir).absolute() if log_dir else work_dir / "slurm-logs"
    mem_mb = int(math.ceil(mem_gb * 1024))
    nipype_mem_mb = max(1, int(mem_mb * MEMORY_FRACTION))
    array = f"0-{len(participants) - 1}" + (f"%{max_parallel}" if max_parallel else "")
    q = shlex.quote
    header = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --array={array}",
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={cpus}",
        f"#SBATCH --mem={mem_mb}M",
        f"#SBATCH --time={time}",
        f"#SBATCH --output={log_dir}/%x_%A_%a.log",
    ]
    if partition:
        header.append(f"#SBATCH --partition={partition}")
    if account:
        header.append(f"#SBATCH --account={account}")
    if container:
        image = Path(container).absolute()
        binds = f"-B {q(f'{bids_dir}:{bids_dir}:ro')} -B {q(str(output_dir))} -B {q(str(work_dir))}"
        runner = f"{container_runtime} run --cleanenv {binds} {q(str(image))}"
    else:
        runner = "dmriprep-motion"
    extra = " ".join(q(a) for a in (extra_args or []))
    body = f"""
# Written by dmriprep-motion-slurm {__version__}: one participant per array task, each
# processed with Nipype MultiProc on the task's CPUs, in its own working directory.
# Re-submit one failed participant with: sbatch --array=<index> <this script>
set -euo pipefail

PARTICIPANTS=({" ".join(q(p) for p in participants)})
LABEL="${{PARTICIPANTS[${{SLURM_ARRAY_TASK_ID:?not running as a SLURM array task}}]}}"
NPROCS="${{SLURM_CPUS_PER_TASK:-{cpus}}}"

# One thread per process: Nipype runs NPROCS processes side by side.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export SINGULARITYENV_OMP_NUM_THREADS=1 APPTAINERENV_OMP_NUM_THREADS=1

mkdir -p {q(str(log_dir))} {q(str(work_dir))}/"sub-$LABEL" {q(str(output_dir))}
echo "dmriprep-motion: sub-$LABEL (array task $SLURM_ARRAY_TASK_ID) on $(hostname), $NPROCS CPUs"

exec {runner} \\
    {q(str(bids_dir))} {q(str(output_dir))} participant \\
    --participant-label "$LABEL" \\
    -w {q(str(work_dir))}/"sub-$LABEL" \\
    --nprocs "$NPROCS" --omp-nthreads 1 --mem-mb {nipype_mem_mb}{" " + extra if extra else ""}
"""
    return "\n".join(header) + "\n" + body


def build_parser() -> argparse.ArgumentParser:
    """Parser of ``dmriprep-motion-slurm``."""
    parser = argparse.ArgumentParser(
        prog="dmriprep-motion-slurm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bids_dir", type=Path)
    parser.add_argument("output_dir", type=Path)
    sel = parser.add_mutually_exclusive_group()
    sel.add_argument("--participant-label", nargs="+", type=_label, metavar="LABEL")
    sel.add_argument(
        "--participants-file",
        type=Path,
        metavar="FILE",
        help="participants.tsv (participant_id column) or one label per line "
        "(default: BIDS_DIR/participants.tsv, else the sub-* folders)",
    )
    parser.add_argument(
        "-w", "--work-dir", type=Path, required=True, help="parent of per-participant work dirs"
    )
    parser.add_argument("--script", type=Path, default=Path("dmriprep_motion_array.sbatch"))
    res = parser.add_argument_group("resources of each array task")
    res.add_argument("--cpus", type=int, default=8, help="--cpus-per-task, and Nipype's --nprocs")
    res.add_argument("--mem-gb", type=float, default=16.0, help="--mem (90%% is given to Nipype)")
    res.add_argument("--time", default="12:00:00", help="wall time (HH:MM:SS)")
    res.add_argument("--partition")
    res.add_argument("--account")
    res.add_argument("--max-parallel", type=int, help="at most this many tasks at once")
    res.add_argument("--log-dir", type=Path)
    res.add_argument("--job-name", default="dmriprep-motion")
    ctr = parser.add_argument_group("container")
    ctr.add_argument("--container", type=Path, metavar="SIF", help="Singularity/Apptainer image")
    ctr.add_argument("--container-runtime", choices=["singularity", "apptainer"], default="singularity")
    parser.add_argument(
        "--dry-run", action="store_true", help="write the script and print the sbatch command; do not submit"
    )
    parser.add_argument("--version", action="version", version=f"dmriprep-motion {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Write the array script; submit it with ``sbatch`` unless ``--dry-run``.

    Options after ``--`` are passed to every ``dmriprep-motion`` call.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    opts = build_parser().parse_args(argv)
    bids_dir = opts.bids_dir.expanduser().absolute()
    if opts.participant_label:
        participants = sorted(set(opts.participant_label))
    else:
        try:
            participants = find_participants(bids_dir, opts.participants_file)
        except (OSError, argparse.ArgumentTypeError) as err:
            sys.stderr.write(f"dmriprep-motion-slurm: {err}\n")
            return EXIT_USAGE
    if not participants:
        sys.stderr.write(f"dmriprep-motion-slurm: no participants found in {bids_dir}\n")
        return EXIT_NO_INPUT
    work_dir = opts.work_dir.expanduser().absolute()
    # SLURM does not create the folder of --output: a job whose log folder is missing
    # fails before running anything, so it is created now.
    log_dir = (opts.log_dir.expanduser() if opts.log_dir else work_dir / "slurm-logs").absolute()
    log_dir.mkdir(parents=True, exist_ok=True)
    text = slurm_array_script(
        bids_dir=bids_dir,
        output_dir=opts.output_dir.expanduser(),
        work_dir=work_dir,
        participants=participants,
        cpus=opts.cpus,
        mem_gb=opts.mem_gb,
        time=opts.time,
        partition=opts.partition,
        account=opts.account,
        max_parallel=opts.max_parallel,
        log_dir=log_dir,
        container=opts.container,
        container_runtime=opts.container_runtime,
        job_name=opts.job_name,
        extra_args=extra,
    )
    script = opts.script.expanduser().absolute()
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(text)
    script.chmod(0o755)
    command = ["sbatch", str(script)]
    print(f"wrote {script}: {len(participants)} participant(s), one per array task")
    if opts.dry_run:
        print("submit with: " + shlex.join(command))
        return EXIT_OK
    if shutil.which("sbatch") is None:
        sys.stderr.write("dmriprep-motion-slurm: sbatch not found (use --dry-run to only write the script)\n")
        return EXIT_USAGE
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
