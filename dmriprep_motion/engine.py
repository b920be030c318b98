"""Nipype's MultiProc scheduler, woken up by finished nodes instead of a fixed poll.

Nipype's distributed plugins loop: collect finished nodes, submit the ready ones, then sleep
``poll_sleep_duration``.  Every node that finishes mid-sleep leaves its process idle until the
sleep ends.  dmriprep-motion runs hundreds of short nodes (one prediction, one registration,
one transform conversion per volume and pass), so that idle time adds up: with a 0.1 s poll,
``real-moderate`` (31 volumes) took 45 s, with 0.01 s 40 s (``benchmarks/README.md``).  A short
poll, however, spins the scheduler: on the 2 mm MNI phantom, whose nodes run longer, the
0.01 s poll cost 30 CPU-seconds over the run and made it slower.

:class:`WakefulMultiProcPlugin` keeps Nipype's loop and its scheduling decisions unchanged and
replaces the sleep: when a round of the loop had nothing to submit and nothing to run, it waits
for the next node to finish (an event set by the pool's completion callback), at most
``max_wait`` seconds, and goes on at once when one does.  It also drops MultiProc's explicit
full garbage collections (one before every round of submissions, one after every node it runs
itself): with the expanded graph of a 120-volume series they took 32 s of the scheduler's time
in a 166 s run, while finished workers waited for their next node.  The workers, forked during
the run, lose the full collection that Nipype makes after every command-line program (one per
registration): 14 ms each on ``real-moderate``, 1.3 CPU-seconds over the run.  These calls
collect the youngest generation (what the node created) instead.  Python's own collector
still runs.

:func:`worker_threads` caps the threads of the numerical libraries (OpenBLAS, MKL, OpenMP)
in the processes that run the nodes.  Without a cap, each Nipype worker's BLAS starts one
thread per CPU, and ``--nprocs`` workers on as many CPUs oversubscribe them: on 2 CPUs, the
Gaussian process's leave-one-out predictions of a 120-volume series took 4.5 times as long
(``real-moderate-120`` 370 s instead of 187 s, ``benchmarks/README.md``).
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Iterator

import numpy as np
from nipype.pipeline.plugins.multiproc import MultiProcPlugin

from dmriprep_motion import termination

#: Longest wait (s) for a node to finish before the loop checks again anyway.
MAX_WAIT = 0.5


class _YoungCollections:
    """Stands in for the ``gc`` module in Nipype's MultiProc and command-line runner: their
    explicit collections only collect the youngest generation (the objects created since the
    last collection)."""

    @staticmethod
    def collect(generation: int = 2) -> int:
        return gc.collect(0)


@contextlib.contextmanager
def _young_collections() -> Iterator[None]:
    """Within the block, the explicit collections of Nipype's MultiProc scheduler and of its
    command-line runner (in this process, and in the workers forked from it) are young ones."""
    from nipype.pipeline.plugins import multiproc
    from nipype.utils import subprocess

    modules = (multiproc, subprocess)
    saved = [module.gc for module in modules]
    for module in modules:
        module.gc = _YoungCollections
    try:
        yield
    finally:
        for module, previous in zip(modules, saved, strict=True):
            module.gc = previous


class WakefulMultiProcPlugin(MultiProcPlugin):
    """:class:`~nipype.pipeline.plugins.multiproc.MultiProcPlugin` without the polling delay.

    Parameters
    ----------
    plugin_args : dict
        MultiProc's arguments (``n_procs``, ``memory_gb``, ``status_callback``...), plus
        ``max_wait`` (s, default :data:`MAX_WAIT`): the longest idle wait between two
        rounds of the scheduling loop.
    """

    def __init__(self, plugin_args: dict | None = None) -> None:
        args = dict(plugin_args or {})
        self._max_wait = float(args.pop("max_wait", MAX_WAIT))
        self._finished = threading.Event()
        super().__init__(plugin_args=args)

    def run(self, graph, config, updatehash=False):
        # The loop's own sleep is replaced by the waits in _send_procs_to_workers (a copy of the
        # configuration: other plugins and later runs keep their poll).
        execution = {**config["execution"], "poll_sleep_duration": 0}
        with _young_collections():  # the pool forks its workers in the run
            return super().run(graph, {**config, "execution": execution}, updatehash=updatehash)

    def _async_callback(self, args):
        try:
            super()._async_callback(args)
        finally:
            self._finished.set()

    def _state(self) -> tuple[int, int, int, int]:
        # jobs submitted; jobs started and still running (a node run here in the scheduler
        # starts and ends within the round); jobs known (a MapNode's elements are added to the
        # graph in one round and submitted in the next)
        return self._taskid, int(np.sum(self.proc_done)), int(np.sum(self.proc_pending)), len(self.procs)

    def _send_procs_to_workers(self, updatehash=False, graph=None):
        termination.check()  # a stop signal's exception may have been swallowed (termination.py)
        before = self._state()
        super()._send_procs_to_workers(updatehash=updatehash, graph=graph)
        if self._state() != before:
            return  # submitted or ran nodes: the next round may have more to do at once
        if not self.pending_tasks:
            return  # nothing runs in the pool, so no node will finish (e.g. the run is over)
        self._finished.wait(self._max_wait)
        self._finished.clear()


#: Environment variables read by BLAS / OpenMP libraries when they are loaded (worker
#: processes started with ``spawn``/``forkserver``, and command-line tools).
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


@contextlib.contextmanager
def worker_threads(n_threads: int) -> Iterator[None]:
    """Cap the BLAS and OpenMP threads of this process and of the workers it starts.

    Within the block, the libraries already loaded here (NumPy's and SciPy's OpenBLAS,
    OpenMP runtimes) run ``n_threads`` threads, which processes forked from this one (Nipype's
    MultiProc workers) inherit, and :data:`THREAD_VARIABLES` say the same to processes that
    load them afresh.  Both are restored on exit.  Use it around ``Workflow.run`` with the
    threads each node may use (``--omp-nthreads``).

    Parameters
    ----------
    n_threads : int
        Threads per process (at least 1).
    """
    from threadpoolctl import threadpool_limits

    if n_threads < 1:
        raise ValueError(f"n_threads must be at least 1 (got {n_threads})")
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, str(n_threads)))
    try:
        with threadpool_limits(limits=n_threads):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
