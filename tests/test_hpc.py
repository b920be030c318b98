"""HPC execution: SLURM job-array scripts, Nipype plugin files, node resource hints."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dmriprep_motion.cli import hpc
from dmriprep_motion.cli.parser import build_parser
from dmriprep_motion.cli.run import _plugin
from dmriprep_motion.data import load
from dmriprep_motion.workflows.hmc import init_dwi_motion_wf

FAKE_APP = """#!/bin/bash
# Records how it was called, like the real dmriprep-motion would receive it.
printf '%s\\n' "$@" > "$RECORD"
env | grep -E '^(OMP|MKL|OPENBLAS)_NUM_THREADS=' | sort >> "$RECORD.env"
"""


def _fake_bin(tmp_path: Path, name: str, text: str) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    exe = bindir / name
    exe.write_text(text)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return bindir


def _run_task(
    script: Path, bindir: Path, record: Path, task: int, cpus: int = 4
) -> subprocess.CompletedProcess:
    env = {
        "PATH": f"{bindir}{os.pathsep}/usr/bin:/bin",
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_CPUS_PER_TASK": str(cpus),
        "RECORD": str(record),
        "HOME": str(record.parent),
    }
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)


def test_find_participants_sources(tmp_path, ds_xa30):
    # ds-xa30 has no participants.tsv: the sub-* folders are used.
    assert hpc.find_participants(ds_xa30) == ["01"]
    bids = tmp_path / "bids"
    for sub in ("sub-03", "sub-01", "sub-02"):
        (bids / sub).mkdir(parents=True)
    assert hpc.find_participants(bids) == ["01", "02", "03"]
    # participants.tsv wins over folders; labels keep or drop "sub-".
    (bids / "participants.tsv").write_text("participant_id\tage\nsub-02\t30\nsub-01\t40\n")
    assert hpc.find_participants(bids) == ["01", "02"]
    listing = tmp_path / "list.txt"
    listing.write_text("# to rerun\nsub-03\n01\n\n")
    assert hpc.find_participants(bids, listing) == ["01", "03"]


def test_dry_run_writes_array_script_and_runs_one_participant_per_task(tmp_path):
    bids = tmp_path / "my bids"  # a space: paths must be quoted in the script
    for sub in ("sub-01", "sub-02", "sub-10"):
        (bids / sub).mkdir(parents=True)
    script = tmp_path / "job.sbatch"
    code = hpc.main([
        str(bids), str(tmp_path / "out"), "-w", str(tmp_path / "work"), "--script", str(script),
        "--cpus", "6", "--mem-gb", "12", "--time", "02:00:00", "--partition", "normal",
        "--max-parallel", "2", "--dry-run", "--", "--passes", "3", "--model", "dti",
    ])  # fmt: skip
    assert code == 0
    assert (tmp_path / "work" / "slurm-logs").is_dir()  # SLURM needs it before the task starts
    text = script.read_text()
    assert text.startswith("#!/bin/bash\n")
    directives = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH --array=0-2%2" in directives  # three participants, two at a time
    assert "#SBATCH --cpus-per-task=6" in directives
    assert "#SBATCH --mem=12288M" in directives
    assert "#SBATCH --time=02:00:00" in directives
    assert "#SBATCH --partition=normal" in directives
    assert not any("--account" in d for d in directives)
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0  # valid bash

    # Run task 2 as SLURM would, with a stand-in for dmriprep-motion on PATH.
    bindir = _fake_bin(tmp_path, "dmriprep-motion", FAKE_APP)
    record = tmp_path / "called.txt"
    proc = _run_task(script, bindir, record, task=2, cpus=6)
    assert proc.returncode == 0, proc.stderr
    args = record.read_text().splitlines()
    assert args[:3] == [str(bids), str(tmp_path / "out"), "participant"]
    assert args[args.index("--participant-label") + 1] == "10"
    assert args[args.index("-w") + 1] == str(tmp_path / "work" / "sub-10")  # one work dir per participant
    assert args[args.index("--nprocs") + 1] == "6"  # MultiProc on the task's CPUs
    assert args[args.index("--omp-nthreads") + 1] == "1"
    assert args[args.index("--mem-mb") + 1] == str(int(12288 * hpc.MEMORY_FRACTION))
    assert args[-4:] == ["--passes", "3", "--model", "dti"]  # options after -- are passed through
    assert "OMP_NUM_THREADS=1" in (tmp_path / "called.txt.env").read_text()
    assert (tmp_path / "work" / "sub-10").is_dir() and (tmp_path / "work" / "slurm-logs").is_dir()

    # Outside an array task the script refuses to guess a participant.
    env_missing = subprocess.run(
        ["bash", str(script)], env={"PATH": f"{bindir}:/usr/bin:/bin"}, capture_output=True, text=True
    )
    assert env_missing.returncode != 0 and "SLURM array task" in env_missing.stderr


def test_container_script_binds_data_and_calls_the_image(tmp_path):
    text = hpc.slurm_array_script(
        bids_dir=tmp_path / "bids", output_dir=tmp_path / "out", work_dir=tmp_path / "work",
        participants=["01", "02"], container=tmp_path / "dmriprep-motion.sif",
        container_runtime="apptainer", account="lab",
    )  # fmt: skip
    assert "#SBATCH --account=lab" in text and "#SBATCH --array=0-1\n" in text
    bindir = _fake_bin(tmp_path, "apptainer", FAKE_APP)
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    record = tmp_path / "called.txt"
    assert _run_task(script, bindir, record, task=0).returncode == 0
    args = record.read_text().splitlines()
    assert args[:2] == ["run", "--cleanenv"]
    assert f"{tmp_path / 'bids'}:{tmp_path / 'bids'}:ro" in args  # input read-only, same path inside
    image = args.index(str(tmp_path / "dmriprep-motion.sif"))
    assert args[image + 1 : image + 4] == [str(tmp_path / "bids"), str(tmp_path / "out"), "participant"]
    assert args[args.index("--participant-label") + 1] == "01"


def test_submission_calls_sbatch(tmp_path):
    (tmp_path / "bids" / "sub-01").mkdir(parents=True)
    bindir = _fake_bin(
        tmp_path, "sbatch", '#!/bin/bash\necho "$@" > "$RECORD"\necho "Submitted batch job 7"\n'
    )
    record = tmp_path / "sbatch.txt"
    script = tmp_path / "array.sbatch"
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "RECORD": str(record)}
    proc = subprocess.run(
        [sys.executable, "-m", "dmriprep_motion.cli.hpc", str(tmp_path / "bids"), str(tmp_path / "out"),
         "-w", str(tmp_path / "work"), "--script", str(script)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert record.read_text().strip() == str(script)
    assert "Submitted batch job 7" in proc.stdout


def test_no_participants_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    assert (
        hpc.main([str(tmp_path / "empty"), str(tmp_path / "o"), "-w", str(tmp_path / "w"), "--dry-run"]) == 66
    )
    assert not (Path.cwd() / "dmriprep_motion_array.sbatch").exists()


@pytest.mark.parametrize(
    ("name", "plugin", "key"),
    [
        ("slurm.yml", "SLURM", "sbatch_args"),
        ("sge.yml", "SGE", "qsub_args"),
        ("multiproc.yml", "MultiProc", "n_procs"),
    ],
)
def test_shipped_plugin_files_parse_and_reach_nipype(tmp_path, name, plugin, key):
    path = load(f"plugins/{name}")
    spec = yaml.safe_load(path.read_text())
    assert set(spec) == {"plugin", "plugin_args"}
    opts = build_parser().parse_args(
        [str(tmp_path), str(tmp_path / "out"), "participant", "--use-plugin", str(path)]
    )
    got_plugin, args = _plugin(opts)
    assert got_plugin == plugin
    assert args == spec["plugin_args"] and key in args
    # Nipype knows the plugin and accepts the arguments.
    from nipype.pipeline import plugins

    cls = getattr(plugins, f"{plugin}Plugin")
    if plugin == "SLURM":
        instance = cls(plugin_args=args)
        assert instance._sbatch_args == args["sbatch_args"] and instance.max_jobs == args["max_jobs"]
    elif plugin == "MultiProc":
        instance = cls(plugin_args=args)
        assert instance.processors == args["n_procs"] and instance.memory_gb == args["memory_gb"]
        instance.pool.shutdown()


def test_invalid_plugin_file_is_a_usage_error(tmp_path):
    from dmriprep_motion.bids import InputError

    bad = tmp_path / "bad.yml"
    bad.write_text("plugin_args: {n_procs: 2}\n")  # no "plugin:"
    opts = build_parser().parse_args(
        [str(tmp_path), str(tmp_path / "out"), "participant", "--use-plugin", str(bad)]
    )
    with pytest.raises(InputError) as err:
        _plugin(opts)
    assert err.value.code == 64


#: Nodes that load the whole series or run ANTs, and how much memory they need, in
#: units of one in-memory copy of the series (None: a fixed amount, per volume).
HEAVY = {
    "validate": 2, "split": 1, "b0ref": 1, "align_b0": None, "moved": 2, "predict": 2,
    "register": None, "final": 2, "similarity": 1,
}  # fmt: skip


@pytest.mark.parametrize("passes", [1, 2])
def test_heavy_nodes_carry_resource_hints(passes):
    wf = init_dwi_motion_wf(model="dti", passes=passes, omp_nthreads=3, mem_gb=1.5)
    nodes = list(wf._get_all_nodes())
    by_name: dict[str, list] = {}
    for node in nodes:
        by_name.setdefault(node.name, []).append(node)
    assert set(HEAVY) <= set(by_name)
    assert len(by_name["register"]) == len(by_name["predict"]) == len(by_name["moved"]) == passes
    for name, factor in HEAVY.items():
        for node in by_name[name]:
            # Explicit hints, not Nipype's defaults (0.2 GB, 1 process).
            assert node.mem_gb != pytest.approx(0.2), node.fullname
            if factor is not None:
                assert node.mem_gb == pytest.approx(factor * 1.5), node.fullname
    for node in by_name["register"] + by_name["align_b0"]:
        assert node.n_procs == 3  # ANTs threads = omp_nthreads: MultiProc reserves them
        assert node.inputs.num_threads == 3
    # Hints scale with the series: a bigger series asks for more memory.
    big = {n.name: n.mem_gb for n in init_dwi_motion_wf(model="dti", passes=1, mem_gb=6.0)._get_all_nodes()}
    assert big["final"] == pytest.approx(12.0) and big["validate"] == pytest.approx(12.0)
