"""HPC execution: SLURM job-array scripts, Nipype plugin files, node resource hints."""

from __future__ import annotations

import math
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
from dmriprep_motion.workflows import resources
from dmriprep_motion.workflows.hmc import init_dwi_motion_wf
from tests._datasets import FAST_ARGS, small_dataset

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


#: Stand-ins for the scheduler commands Nipype's SLURM and SGE plugins call. Each records
#: its arguments in $RECORD_DIR/<command>.txt and answers as the real one would.
FAKE_SCHEDULER = {
    "sbatch": 'echo "Submitted batch job 4242"',
    "squeue": 'printf "JOBID PARTITION NAME\\n 4242 normal job\\n"',
    "qsub": 'echo "Your job 4242 (\\"job\\") has been submitted"',
    "qstat": "echo \"<?xml version='1.0'?><job_info><queue_info/><job_info/></job_info>\"",
}


def _fake_scheduler(tmp_path: Path, monkeypatch) -> Path:
    """Put fake sbatch, squeue, qsub and qstat first on PATH; return where they record their calls."""
    for name, answer in FAKE_SCHEDULER.items():
        bindir = _fake_bin(tmp_path, name, f'#!/bin/bash\necho "$@" >> "$RECORD_DIR/{name}.txt"\n{answer}\n')
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("RECORD_DIR", str(tmp_path))
    monkeypatch.setenv("LOGNAME", "tester")  # Nipype names the jobs after it
    return tmp_path


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
def test_shipped_plugin_files_parse_and_reach_nipype(tmp_path, monkeypatch, name, plugin, key):
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
    elif plugin == "SGE":
        # SGEPlugin.__init__ runs qstat (jobs already queued): a stand-in answers.
        _fake_scheduler(tmp_path, monkeypatch)
        instance = cls(plugin_args=args)
        assert instance._qsub_args == args["qsub_args"] and instance.max_jobs == args["max_jobs"]
        assert "-xml" in (tmp_path / "qstat.txt").read_text().split()
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


# --- --use-plugin through the command line --------------------------------------------


@pytest.fixture(scope="module")
def tiny_bids(ds_xa30, tmp_path_factory) -> Path:
    """One participant, one 11-volume run (1 b0, 10 at b=2500): enough to build the workflow."""
    return small_dataset(ds_xa30, tmp_path_factory.mktemp("hpc") / "bids")


@pytest.mark.parametrize("name", ["slurm.yml", "sge.yml", "multiproc.yml"])
def test_use_plugin_reaches_workflow_run(tmp_path, monkeypatch, tiny_bids, name):
    """run() hands the plugin file's name and arguments to Workflow.run, and per-node requests."""
    from nipype.pipeline import engine as pe

    from dmriprep_motion.cli.run import run
    from dmriprep_motion.reports import assemble

    calls = []

    def fake_run(self, plugin=None, plugin_args=None, updatehash=False):  # noqa: ARG001
        from dmriprep_motion.engine import WakefulMultiProcPlugin

        if isinstance(plugin, WakefulMultiProcPlugin):  # how run() hands MultiProc over
            plugin.pool.shutdown()
            plugin, plugin_args = "MultiProc", plugin.plugin_args
        nodes = list(self._get_all_nodes())
        calls.append((plugin, dict(plugin_args), {n.fullname: dict(n.plugin_args) for n in nodes}))

    monkeypatch.setattr(pe.Workflow, "run", fake_run)
    monkeypatch.setattr(assemble, "write_subject_reports", lambda *args, **kwargs: None)
    path = load(f"plugins/{name}")
    spec = yaml.safe_load(path.read_text())
    code = run([str(tiny_bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"),
                "--use-plugin", str(path), *FAST_ARGS])  # fmt: skip
    assert code == 0 and len(calls) == 1
    plugin, plugin_args, node_args = calls[0]
    assert plugin == spec["plugin"]
    callback = plugin_args.pop("status_callback")  # progress logging, added by run()
    assert callable(callback) and plugin_args == spec["plugin_args"]
    requested = {fullname: args for fullname, args in node_args.items() if args}
    key = resources.SCHEDULER_ARGS.get(plugin)
    if key is None:  # MultiProc reads the hints itself
        assert not requested
        return
    assert any(f.endswith(".register") for f in requested) and any(f.endswith(".final") for f in requested)
    for fullname, args in requested.items():
        assert set(args) == {key, "overwrite"} and args["overwrite"] is True, fullname
        assert "-l h_rt=00:30:00" in args[key] or "--time=00:30:00" in args[key]  # the file's own options


@pytest.mark.parametrize("threads", [1, 2])
def test_run_caps_the_workers_blas_threads(tmp_path, monkeypatch, tiny_bids, threads):
    """While the workflow runs, BLAS/OpenMP in the workers is capped at --omp-nthreads (one
    thread per CPU in each of --nprocs workers oversubscribed the CPUs); restored after."""
    from nipype.pipeline import engine as pe
    from threadpoolctl import threadpool_info

    from dmriprep_motion.cli.run import run
    from dmriprep_motion.reports import assemble

    seen = {}

    def fake_run(self, plugin=None, plugin_args=None, updatehash=False):  # noqa: ARG001
        plugin.pool.shutdown()
        seen["env"] = os.environ.get("OMP_NUM_THREADS")
        seen["blas"] = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    monkeypatch.setattr(pe.Workflow, "run", fake_run)
    monkeypatch.setattr(assemble, "write_subject_reports", lambda *args, **kwargs: None)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    code = run([str(tiny_bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"),
                *FAST_ARGS, "--omp-nthreads", str(threads)])  # fmt: skip
    assert code == 0 and seen["env"] == str(threads)
    assert seen["blas"] and all(1 <= n <= threads for n in seen["blas"])
    assert "OMP_NUM_THREADS" not in os.environ


def test_bad_scheduler_arguments_are_a_usage_error(tmp_path, tiny_bids):
    from dmriprep_motion.cli.run import run

    bad = tmp_path / "slurm.yml"
    bad.write_text('plugin: SLURM\nplugin_args:\n  sbatch_args: "--comment=\'unbalanced"\n')
    code = run([str(tiny_bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"),
                "--use-plugin", str(bad), *FAST_ARGS])  # fmt: skip
    assert code == 64 and not (tmp_path / "out").exists()


# --- resource hints ---------------------------------------------------------------------

#: Every node that does real work (submitted, not an IdentityInterface) is listed in
#: exactly one of these two tables, matched on "<parent workflow>.<node>".
#:
#: HEAVY: nodes holding the series or running ANTs, with their memory in units of one
#: in-memory copy of the series (None: a fixed per-volume amount; ANTs registrations).
HEAVY = {
    "dwi_reference_wf.validate": 2, "dwi_reference_wf.split": 1, "dwi_reference_wf.b0ref": 1,
    "dwi_reference_wf.align_b0": None,
    "hmc_pass*_wf.moved": 2, "hmc_pass*_wf.predict": 2, "hmc_pass*_wf.outliers": 1,
    "hmc_pass*_wf.register": None,
    "shell_anchor_wf.shell_means": 2, "shell_anchor_wf.align_shells": None,
    "*_motion_wf.final": 2, "*_motion_wf.similarity": 2,
    "*_reports_wf.averages_orig": 1, "*_reports_wf.averages_corrected": 1, "*_reports_wf.volumes": 3,
}  # fmt: skip
#: LIGHT: nodes that only hold transforms, file lists, tables or a few 3D images, whatever
#: the size of the series. They keep Nipype's defaults (0.2 GB, one process), hence the
#: plugin file's options under SLURM/SGE. (The figures measured 35-60 MB above the Python
#: interpreter on ds-xa30.)
LIGHT = {
    "dwi_reference_wf.b0_files",  # file names
    "dwi_reference_wf.init", "hmc_pass*_wf.merge", "hmc_pass*_wf.relax",  # transforms (+ 3D mask)
    "shell_anchor_wf.anchor",
    "dwi_reference_wf.mask",  # median_otsu on the 3D b0 reference
    "*_motion_wf.confounds",  # transforms -> TSV
    "*_reports_wf.summary", "*_reports_wf.gradients", "*_reports_wf.motion",  # tables, b-vectors
    "*_reports_wf.convergence", "*_reports_wf.similarity",
    "*_reports_wf.avgdwi", "*_reports_wf.b0ref",  # 3D averages and the mask
}  # fmt: skip


def _subject_wf(bids: Path, out: Path, **settings):
    """The real per-participant workflow of ``bids`` (one participant) and its series size (GB)."""
    from dmriprep_motion.bids import collect_runs
    from dmriprep_motion.workflows.base import Settings, init_single_subject_wf

    ((subject, runs),) = collect_runs(bids).items()
    wf = init_single_subject_wf(subject=subject, runs=runs, output_dir=out, bids_dir=bids,
                                settings=Settings(**settings))  # fmt: skip
    return wf, runs[0].mem_gb


def _classify(node) -> str | None:
    """``HEAVY``/``LIGHT`` pattern of a node; None for nodes Nipype runs in-process or drops."""
    from fnmatch import fnmatch

    from nipype.interfaces.utility import IdentityInterface

    if node.run_without_submitting or isinstance(node.interface, IdentityInterface):
        return None  # run in the main process / removed from the executed graph by Nipype
    local = ".".join(node.fullname.split(".")[-2:])
    matches = [p for p in (*HEAVY, *LIGHT) if fnmatch(local, p)]
    assert len(matches) == 1, f"{node.fullname}: classify it in HEAVY or LIGHT ({matches})"
    return matches[0]


@pytest.mark.parametrize("passes", [1, 2])
def test_every_node_carries_resource_hints(tmp_path, tiny_bids, passes):
    wf, series_gb = _subject_wf(tiny_bids, tmp_path / "out", passes=passes, omp_nthreads=3, series_nthreads=2)
    seen: dict[str, int] = {}
    for node in wf._get_all_nodes():
        pattern = _classify(node)
        if pattern is None:
            continue
        seen[pattern] = seen.get(pattern, 0) + 1
        ants = type(node.interface).__name__ == "SkippableRegistration"
        if pattern in LIGHT:
            assert not resources.has_hints(node), node.fullname
            continue
        assert resources.has_hints(node) and node.mem_gb != pytest.approx(0.2), node.fullname
        if HEAVY[pattern] is not None:
            assert node.mem_gb == pytest.approx(HEAVY[pattern] * series_gb), node.fullname
        # ANTs threads = omp_nthreads, reserved by MultiProc; whole-series resampling uses
        # series_nthreads, but the similarity one thread next to the (default) registered shell
        # anchor; the other nodes use one thread.
        series = type(node.interface).__name__ in ("ResampleSeries", "ShellMeans")
        assert node.n_procs == (3 if ants else 2 if series else 1), node.fullname
        if ants or series or type(node.interface).__name__ == "VolumeSimilarity":
            assert node.inputs.num_threads == node.n_procs
    assert set(seen) == set(HEAVY) | set(LIGHT)  # every listed node exists (tables not stale)
    for per_pass in ("hmc_pass*_wf.register", "hmc_pass*_wf.predict"):
        assert seen[per_pass] == passes
    assert seen["shell_anchor_wf.align_shells"] == 1  # once, after the last pass
    # Hints scale with the series: a bigger series asks for more memory.
    big = {n.name: n.mem_gb for n in init_dwi_motion_wf(model="dti", passes=1, mem_gb=6.0)._get_all_nodes()}
    assert big["final"] == pytest.approx(12.0) and big["validate"] == pytest.approx(12.0)


def _options(args: str, name: str) -> list[str]:
    """Values of option ``name`` (``--name=value`` or ``-name value``) in a command line."""
    import shlex

    tokens = shlex.split(args)
    if name.startswith("--"):
        return [t.split("=", 1)[1] for t in tokens if t.startswith(f"{name}=")]
    width = 2 if name == "-pe" else 1  # -pe <name> <slots>
    return [" ".join(tokens[i + 1 : i + 1 + width]) for i, t in enumerate(tokens) if t == name]


@pytest.mark.parametrize("plugin", ["SLURM", "SLURMGraph", "SGE", "SGEGraph"])
def test_scheduler_requests_follow_the_hints(tmp_path, tiny_bids, plugin):
    wf, _ = _subject_wf(tiny_bids, tmp_path / "out", passes=1, omp_nthreads=4)
    name = "sge.yml" if plugin.startswith("SGE") else "slurm.yml"
    plugin_args = yaml.safe_load(load(f"plugins/{name}").read_text())["plugin_args"]
    count = resources.apply_scheduler_hints(wf, plugin, plugin_args)
    heavy = 0
    for node in wf._get_all_nodes():
        pattern = _classify(node)
        if pattern not in HEAVY:
            assert node.plugin_args == {}, node.fullname  # the plugin file's options apply
            continue
        heavy += 1
        mem_mb = resources.job_memory_mb(node.mem_gb)
        assert mem_mb == math.ceil((node.mem_gb + 0.5) * 1024)
        assert node.plugin_args["overwrite"] is True
        if plugin.startswith("SLURM"):
            args = node.plugin_args["sbatch_args"]
            assert _options(args, "--mem") == [f"{mem_mb}M"], node.fullname
            assert _options(args, "--cpus-per-task") == [str(node.n_procs)], node.fullname
            assert _options(args, "--time") == ["00:30:00"]  # kept from the plugin file
        else:
            args = node.plugin_args["qsub_args"]
            slots = node.n_procs
            per_slot = math.ceil(mem_mb / slots)
            assert _options(args, "-l") == ["h_rt=00:30:00", f"h_vmem={per_slot}M"], node.fullname
            assert _options(args, "-pe") == [f"smp {slots}"], node.fullname  # PE of the plugin file
            assert args.startswith("-V -cwd ")
    assert count == heavy and heavy >= len(HEAVY)
    assert resources.apply_scheduler_hints(wf, "MultiProc", {"n_procs": 2}) == 0


def test_scheduler_option_rewriting():
    # Every spelling of the replaced options goes; the others stay, in order.
    site = "-p normal --mem 8G -c4 --cpus-per-task=2 --mem-per-cpu=1G --comment='a b'"
    args = resources.slurm_args(site, 100, 3)
    assert args == "-p normal '--comment=a b' --mem=100M --cpus-per-task=3"
    assert resources.slurm_args("", 100, 1) == "--mem=100M --cpus-per-task=1"
    # SGE: only the memory resource leaves a -l list; the PE is named by the caller or the file.
    args = resources.sge_args("-q all.q -l h_rt=1:00:00,h_vmem=4G -pe mpi 1", 1000, 4, pe_name="smp")
    assert args == "-q all.q -l h_rt=1:00:00 -l h_vmem=250M -pe smp 4"
    args = resources.sge_args("-l h_vmem=4G", 1000, 4, mem_resource="mem_free")
    assert args == "-l h_vmem=4G -l mem_free=1000M"  # no PE anywhere: one slot, all the memory


def test_requests_reach_sbatch_and_qsub(tmp_path, monkeypatch):
    """Through Nipype's own SLURM/SGE plugins, a node's requests end up on the command line."""
    from nipype.interfaces import utility as niu
    from nipype.pipeline import engine as pe
    from nipype.pipeline.plugins import SGEPlugin, SLURMPlugin

    record = _fake_scheduler(tmp_path, monkeypatch)
    wf = pe.Workflow(name="wf", base_dir=str(tmp_path / "work"))
    light = pe.Node(niu.Function(function=_identity), name="light")
    heavy = pe.MapNode(niu.Function(function=_identity), iterfield=["x"], name="heavy", mem_gb=1.5, n_procs=3)
    heavy.inputs.x = [1, 2]
    wf.add_nodes([light, heavy])
    script = tmp_path / "batch.sh"
    script.write_text("#!/bin/bash\n")
    for cls, name in ((SLURMPlugin, "slurm.yml"), (SGEPlugin, "sge.yml")):
        args = yaml.safe_load(load(f"plugins/{name}").read_text())["plugin_args"]
        resources.apply_scheduler_hints(wf, cls.__name__.removesuffix("Plugin"), args)
        plugin = cls(plugin_args=args)
        # A MapNode is submitted as one job per iteration: its options are passed on.
        _, iteration = next(heavy._make_nodes(cwd=str(tmp_path / "work" / "wf" / "heavy")))
        for node in (light, iteration):
            node.base_dir = str(tmp_path / "work")
            assert plugin._submit_batchtask(str(script), node) == 4242
    sbatch = (record / "sbatch.txt").read_text().splitlines()
    assert "--mem=4G --cpus-per-task=1" in sbatch[0]  # light node: the file's options
    assert "--mem=2048M --cpus-per-task=3" in sbatch[1] and "--mem=4G" not in sbatch[1]
    qsub = (record / "qsub.txt").read_text().splitlines()
    assert "-l h_vmem=4G -pe smp 1" in qsub[0]
    assert "-l h_rt=00:30:00 -l h_vmem=683M -pe smp 3" in qsub[1] and "4G" not in qsub[1]
    # SLURM asks squeue whether a job is still queued.
    assert SLURMPlugin(plugin_args={})._is_pending(4242)
    assert (record / "squeue.txt").read_text().split() == ["-j", "4242"]


def _identity(x=None):
    return x


def test_hpc_page_describes_the_hints():
    """docs/hpc.rst names every heavy node with its memory, and the SLURM/SGE options."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "hpc.rst").read_text()
    section = " ".join(text.split("Resource hints\n--------------", 1)[1].split())
    for pattern, factor in HEAVY.items():
        name = pattern.split(".")[-1]
        assert f"``{name}``" in section, name
        if factor is not None:
            group = {3: "3 *S* for", 2: "2 *S* for", 1: "; *S* for"}[factor]
            assert f"``{name}``" in section.split(group, 1)[1].split(";")[0], (name, factor)
    for option in ("--mem=<MB>M", "--cpus-per-task=<n_procs>", "h_vmem", "-pe <pe> <n_procs>", "overwrite"):
        assert option in section, option
    assert f"plus {resources.JOB_OVERHEAD_GB:g} GB" in section


@pytest.mark.parametrize(("nprocs", "expected"), [(1, 1), (2, 2), (16, 4)])
def test_cli_lets_whole_series_resampling_use_the_idle_cpus(tmp_path, monkeypatch, nprocs, expected):
    import dmriprep_motion.workflows.base as base
    from dmriprep_motion.cli import run as cli_run

    captured: dict = {}
    monkeypatch.setattr(base, "init_dmriprep_motion_wf", lambda **kwargs: captured.update(kwargs))
    opts = build_parser().parse_args([str(tmp_path), str(tmp_path / "out"), "participant",
                                      "--nprocs", str(nprocs)])  # fmt: skip
    cli_run._build(opts, {}, tmp_path, tmp_path / "out", tmp_path / "work")
    assert captured["settings"].series_nthreads == expected
    assert captured["settings"].omp_nthreads == 1  # registrations stay one thread per process
