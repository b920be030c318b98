"""The MultiProc scheduler woken up by finished nodes (dmriprep_motion.engine)."""

from __future__ import annotations

from datetime import datetime

import pytest
from nipype import config
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from nipype.pipeline.plugins.multiproc import MultiProcPlugin

from dmriprep_motion.engine import THREAD_VARIABLES, WakefulMultiProcPlugin, worker_threads


def _nap(value: float) -> float:
    import time

    time.sleep(value)
    return value


def _total(values: list) -> float:
    return float(sum(values))


def _chain(base_dir, length: int, seconds: float) -> pe.Workflow:
    """``length`` nodes, each waiting for the previous one (nothing overlaps)."""
    wf = pe.Workflow(name="chain", base_dir=str(base_dir))
    nodes = [
        pe.Node(niu.Function(function=_nap, input_names=["value"], output_names=["value"]), name=f"n{i}")
        for i in range(length)
    ]
    nodes[0].inputs.value = seconds
    wf.connect([(a, b, [("value", "value")]) for a, b in zip(nodes, nodes[1:], strict=False)])
    return wf


def _times(node) -> tuple[float, float]:
    runtime = node.result.runtime
    return datetime.fromisoformat(runtime.startTime).timestamp(), datetime.fromisoformat(
        runtime.endTime
    ).timestamp()


class _Counting(WakefulMultiProcPlugin):
    rounds = 0

    def _send_procs_to_workers(self, updatehash=False, graph=None):
        type(self).rounds += 1
        super()._send_procs_to_workers(updatehash=updatehash, graph=graph)


def test_next_node_starts_when_the_previous_finishes_not_after_a_poll(tmp_path):
    """With a 20 s wait limit, a chain of short nodes still runs back to back: the
    scheduler is woken up by each finished node, and it does not spin while one runs."""
    saved = config.get("execution", "poll_sleep_duration")
    plugin = _Counting(plugin_args={"n_procs": 2, "max_wait": 20.0})
    start = datetime.now().timestamp()
    graph = _chain(tmp_path, length=4, seconds=0.6).run(plugin=plugin)
    # once the last node is done, nothing runs: the loop must not wait for another one
    assert datetime.now().timestamp() - start < 10.0
    nodes = sorted(graph.nodes(), key=lambda n: n.name)
    assert [n.result.outputs.value for n in nodes] == [0.6] * 4
    spans = [_times(n) for n in nodes]
    gaps = [later[0] - earlier[1] for earlier, later in zip(spans, spans[1:], strict=False)]
    assert max(gaps) < 3.0, gaps  # 0.06-0.1 s on a quiet machine; a timeout-driven loop waits 20 s
    # 4 x 0.6 s of work in 9 rounds; a loop without a sleep makes 50 (and hundreds once the
    # CLI has frozen the garbage collector's view of the graph)
    assert _Counting.rounds < 20, _Counting.rounds
    # the loop's poll was switched off on a copy of the configuration only
    assert config.get("execution", "poll_sleep_duration") == saved


def test_cli_runs_multiproc_with_the_wakeful_plugin():
    from dmriprep_motion.cli.run import _runner

    args = {"n_procs": 2, "raise_insufficient": False}
    runner = _runner("MultiProc", args)
    assert set(runner) == {"plugin"} and isinstance(runner["plugin"], WakefulMultiProcPlugin)
    assert runner["plugin"].processors == 2
    assert _runner("Linear", {}) == {"plugin": "Linear", "plugin_args": {}}
    assert _runner("SLURM", {"sbatch_args": "-p x"}) == {
        "plugin": "SLURM",
        "plugin_args": {"sbatch_args": "-p x"},
    }


@pytest.mark.parametrize("max_wait", [0.05, 0.5])
def test_parallel_nodes_all_run(tmp_path, max_wait):
    wf = pe.Workflow(name="fan", base_dir=str(tmp_path))
    source = pe.Node(niu.IdentityInterface(fields=["value"]), name="source")
    source.iterables = ("value", [0.01, 0.02, 0.03, 0.04, 0.05])
    nap = pe.Node(niu.Function(function=_nap, input_names=["value"], output_names=["value"]), name="nap")
    wf.connect(source, "value", nap, "value")
    graph = wf.run(plugin=WakefulMultiProcPlugin(plugin_args={"n_procs": 2, "max_wait": max_wait}))
    values = sorted(n.result.outputs.value for n in graph.nodes() if n.name.startswith("nap"))
    assert values == [0.01, 0.02, 0.03, 0.04, 0.05]


def _mapped(base_dir) -> pe.Workflow:
    """A MapNode of four 0.01 s naps, then one node napping for their total."""
    wf = pe.Workflow(name="mapped", base_dir=str(base_dir))
    nap = pe.MapNode(
        niu.Function(function=_nap, input_names=["value"], output_names=["value"]),
        iterfield=["value"],
        name="nap",
    )
    nap.inputs.value = [0.01] * 4
    after = pe.Node(niu.Function(function=_nap, input_names=["value"], output_names=["value"]), name="after")
    wf.connect(nap, ("value", _total), after, "value")
    return wf


def test_mapnode_elements_are_submitted_without_waiting(tmp_path):
    """A MapNode's elements join the graph in one round and are submitted in the next: that
    round must not wait for a node to finish first (here, none would before ``max_wait``)."""
    wf = _mapped(tmp_path)
    start = datetime.now().timestamp()
    graph = wf.run(plugin=WakefulMultiProcPlugin(plugin_args={"n_procs": 2, "max_wait": 20.0}))
    (last,) = [n for n in graph.nodes() if n.name == "after"]
    assert last.result.outputs.value == pytest.approx(0.04)
    # about 1-3 s with the pool's start-up (on a loaded machine); a round waiting for
    # max_wait would take over 20 s
    assert _times(last)[1] - start < 10.0


@pytest.mark.parametrize("plugin", [WakefulMultiProcPlugin, MultiProcPlugin])
def test_no_full_garbage_collection_per_round(tmp_path, monkeypatch, plugin):
    """MultiProc collects all generations before every round of submissions and after every
    node it runs itself (seconds per run on a large graph); the wakeful plugin collects the
    youngest generation only, and leaves Nipype's module as it found it."""
    import gc

    from nipype.pipeline.plugins import multiproc

    full = []
    collect = gc.collect
    monkeypatch.setattr(gc, "collect", lambda generation=2: (full.append(generation == 2), collect(0))[1])
    wf = _mapped(tmp_path)
    graph = wf.run(plugin=plugin(plugin_args={"n_procs": 2, "max_wait": 20.0} if plugin is not MultiProcPlugin
                                 else {"n_procs": 2}))  # fmt: skip
    assert [n.result.outputs.value for n in graph.nodes() if n.name == "after"] == [pytest.approx(0.04)]
    assert full, "no collection at all: the test does not see Nipype's calls"
    assert any(full) is (plugin is MultiProcPlugin)
    assert multiproc.gc is gc


def _command_runner_collector(value: float) -> str:
    """What Nipype's command-line runner calls to collect garbage, in the worker."""
    from nipype.utils import subprocess

    return subprocess.gc.__name__


def test_workers_collect_young_generation_after_commands(tmp_path):
    """Nipype collects every generation after each command-line program (each ANTs run,
    14 ms in a worker); the wakeful plugin's workers collect the youngest one, and the module
    is left as it was."""
    import gc

    from nipype.utils import subprocess

    wf = pe.Workflow(name="collector", base_dir=str(tmp_path))
    probe = pe.MapNode(
        niu.Function(function=_command_runner_collector, input_names=["value"], output_names=["name"]),
        iterfield=["value"],
        name="probe",
    )
    probe.inputs.value = [0.0, 0.0]
    wf.add_nodes([probe])
    graph = wf.run(plugin=WakefulMultiProcPlugin(plugin_args={"n_procs": 2}))
    (node,) = graph.nodes()
    assert node.result.outputs.name == ["_YoungCollections"] * 2
    assert subprocess.gc is gc


def _blas_threads() -> tuple[list[int], str | None]:
    """Threads of every BLAS library loaded in this process, and OPENBLAS_NUM_THREADS."""
    import os

    from threadpoolctl import threadpool_info

    return sorted(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"), os.environ.get(
        "OPENBLAS_NUM_THREADS"
    )


def test_worker_threads_caps_blas_in_forked_workers_and_restores(monkeypatch):
    """Nipype's MultiProc workers are forked: they inherit the cap of the libraries already
    loaded, and the environment tells libraries loaded afresh. Both are restored after."""
    import multiprocessing as mp
    import os

    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "7")  # a user's setting, overridden then restored
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before, _ = _blas_threads()
    assert before, "NumPy's BLAS is not visible to threadpoolctl"
    with worker_threads(1):
        here, env_here = _blas_threads()
        with mp.get_context("fork").Pool(1) as pool:
            child, env_child = pool.apply(_blas_threads)
        assert all(os.environ[name] == "1" for name in THREAD_VARIABLES)
    assert here == child == [1] * len(before) and env_here == env_child == "1"
    assert _blas_threads() == (before, "7") and "OMP_NUM_THREADS" not in os.environ
    with pytest.raises(ValueError, match="at least 1"), worker_threads(0):
        pass


def test_scheduler_stops_at_the_next_round_once_told(tmp_path, monkeypatch):
    """A SIGTERM whose exception was swallowed still stops the run: the loop checks the flag."""
    import threading

    from dmriprep_motion import termination

    stop = threading.Event()  # not the process's own flag (its watchdog would end pytest)
    monkeypatch.setattr(termination, "STOP", stop)

    class _StopsAfterTwo(WakefulMultiProcPlugin):
        rounds = 0

        def _send_procs_to_workers(self, updatehash=False, graph=None):
            type(self).rounds += 1
            if type(self).rounds == 2:
                stop.set()
            super()._send_procs_to_workers(updatehash=updatehash, graph=graph)

    start = datetime.now().timestamp()
    with pytest.raises(termination.Terminated):
        _chain(tmp_path, length=4, seconds=0.5).run(plugin=_StopsAfterTwo(plugin_args={"n_procs": 2}))
    assert _StopsAfterTwo.rounds == 2
    assert datetime.now().timestamp() - start < 1.8  # the 2 s chain did not run to its end
    assert not (tmp_path / "chain" / "n3" / "result_n3.pklz").exists()
