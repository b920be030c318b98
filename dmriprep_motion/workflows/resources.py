"""Pass the nodes' resource hints (``mem_gb``, ``n_procs``) on to batch schedulers.

Nipype's MultiProc plugin packs nodes by their hints, but the SLURM and SGE plugins
submit every node with the same ``sbatch_args`` / ``qsub_args`` and ignore them. The
functions here turn the hints of each node into per-node scheduler options
(``node.plugin_args``), which those plugins do read. They work on a built workflow and
take everything they need as arguments: the workflow factories stay free of
scheduler settings.
"""

from __future__ import annotations

import logging
import math
import shlex

from nipype.pipeline import engine as pe

LOGGER = logging.getLogger("dmriprep_motion")

#: Nipype's ``mem_gb`` when a node declares none (a node with it and one process keeps
#: the plugin file's options).
NIPYPE_DEFAULT_MEM_GB = 0.2

#: Memory added to every job's request: the Python interpreter with Nipype, NumPy and
#: nibabel loaded (about 0.1-0.2 GB resident, measured) with a margin. The hints only
#: count the data a node holds.
JOB_OVERHEAD_GB = 0.5

#: Plugin name -> the ``plugin_args`` key holding the options of each submission.
SCHEDULER_ARGS = {
    "SLURM": "sbatch_args",
    "SLURMGraph": "sbatch_args",
    "SGE": "qsub_args",
    "SGEGraph": "qsub_args",
}


def has_hints(node: pe.Node) -> bool:
    """Whether ``node`` declares resources of its own (not Nipype's defaults)."""
    return not math.isclose(node.mem_gb, NIPYPE_DEFAULT_MEM_GB) or node.n_procs > 1


def job_memory_mb(mem_gb: float, overhead_gb: float = JOB_OVERHEAD_GB) -> int:
    """Memory to request for a job running one node with hint ``mem_gb`` (MB, rounded up)."""
    return math.ceil((mem_gb + overhead_gb) * 1024)


def slurm_args(global_args: str, mem_mb: int, n_procs: int) -> str:
    """``sbatch`` options of one node: ``global_args`` with its memory and CPUs replaced.

    Parameters
    ----------
    global_args : str
        The plugin's ``sbatch_args`` (partition, time, account... are kept).
    mem_mb : int
        Memory of the job (``--mem``, MB).
    n_procs : int
        Threads of the node (``--cpus-per-task``).

    Returns
    -------
    str
        The options, with any ``--mem``, ``--mem-per-cpu``, ``--cpus-per-task`` or ``-c``
        of ``global_args`` removed.
    """
    kept = _drop_options(
        shlex.split(global_args or ""),
        long_names=("--mem", "--mem-per-cpu", "--cpus-per-task"),
        short_names=("-c",),
    )
    return shlex.join([*kept, f"--mem={mem_mb}M", f"--cpus-per-task={n_procs}"])


def sge_args(
    global_args: str,
    mem_mb: int,
    n_procs: int,
    *,
    pe_name: str | None = None,
    mem_resource: str = "h_vmem",
) -> str:
    """``qsub`` options of one node: ``global_args`` with its memory and slots replaced.

    Parameters
    ----------
    global_args : str
        The plugin's ``qsub_args`` (queue, run time, ``-V -cwd``... are kept).
    mem_mb : int
        Memory of the job (MB).
    n_procs : int
        Threads of the node: slots requested from the parallel environment.
    pe_name : str or None
        Parallel environment giving several slots on one host (``smp`` on many sites;
        ``qconf -spl`` lists them). ``None``: the one named by ``-pe`` in
        ``global_args``; when there is none, no slots are requested and multi-threaded
        nodes share one slot.
    mem_resource : str
        Memory resource requested with ``-l`` (``h_vmem``; some sites use ``mem_free``,
        ``m_mem_free``...). SGE counts it **per slot**: ``mem_mb / slots`` is requested.

    Returns
    -------
    str
        The options, with ``mem_resource`` removed from every ``-l`` list of
        ``global_args`` and its ``-pe`` replaced.
    """
    tokens = shlex.split(global_args or "")
    kept: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token == "-pe" and index + 2 < len(tokens):
            pe_name = pe_name or tokens[index + 1]
            index += 3
            continue
        if token == "-l" and index + 1 < len(tokens):
            resources = [
                item for item in tokens[index + 1].split(",") if item.split("=")[0].strip() != mem_resource
            ]
            if resources:
                kept += ["-l", ",".join(resources)]
            index += 2
            continue
        kept.append(token)
        index += 1
    slots = n_procs if pe_name else 1
    if n_procs > 1 and not pe_name:
        LOGGER.warning(
            "no SGE parallel environment (-pe) in qsub_args: %d-thread nodes get one slot", n_procs
        )
    extra = ["-l", f"{mem_resource}={math.ceil(mem_mb / slots)}M"]
    if pe_name:
        extra += ["-pe", pe_name, str(slots)]
    return shlex.join(kept + extra)


def _drop_options(tokens: list[str], long_names: tuple[str, ...], short_names: tuple[str, ...]) -> list[str]:
    """``tokens`` without the named options and their values (``--opt=v``, ``--opt v``, ``-cv``, ``-c v``)."""
    kept: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        name = token.split("=", 1)[0]
        if name in long_names:
            index += 1 if "=" in token else 2
            continue
        short = next((s for s in short_names if token.startswith(s)), None)
        if short is not None and not token.startswith("--"):
            index += 1 if len(token) > len(short) else 2
            continue
        kept.append(token)
        index += 1
    return kept


def apply_scheduler_hints(
    workflow: pe.Workflow,
    plugin: str,
    plugin_args: dict | None = None,
    *,
    overhead_gb: float = JOB_OVERHEAD_GB,
    sge_pe: str | None = None,
    sge_mem_resource: str = "h_vmem",
) -> int:
    """Give every node with resource hints the scheduler options that request them.

    For SLURM (``SLURM``, ``SLURMGraph``), a node asks for
    ``--mem=<(mem_gb + overhead_gb) in MB>M --cpus-per-task=<n_procs>``; for SGE
    (``SGE``, ``SGEGraph``), for ``-l h_vmem=<memory per slot>`` and ``-pe <name> <n_procs>``
    (see :func:`sge_args`). Other plugins (MultiProc, Linear...) read the hints
    themselves, or ignore them: nothing is changed.

    The options are the plugin's global ones (``plugin_args["sbatch_args"]`` or
    ``["qsub_args"]``) with their memory and CPU options replaced, set with
    ``overwrite: True``: Nipype then uses them *instead of* the global ones for that
    node. So partition, time limit, account, queue... of the plugin file still apply,
    and no option appears twice (Nipype's non-overwrite mode appends the node's options
    to the global ones, leaving it to ``sbatch``/``qsub`` to pick between two
    ``--mem``, and the Graph plugins append them without a separating space).
    Nodes without hints (Nipype's default 0.2 GB, one process) keep the global options,
    as do nodes that run in the submitting process (``run_without_submitting``).
    MapNodes pass their ``plugin_args`` on to the jobs of their iterations.

    Parameters
    ----------
    workflow : nipype Workflow
        The built workflow (sub-workflows are visited).
    plugin : str
        Nipype plugin name it will run with.
    plugin_args : dict or None
        The plugin's arguments.
    overhead_gb : float
        Memory added to each node's ``mem_gb`` (the job's Python process).
    sge_pe, sge_mem_resource : str
        See :func:`sge_args`.

    Returns
    -------
    int
        Number of nodes given options.
    """
    key = SCHEDULER_ARGS.get(plugin)
    if key is None:
        return 0
    global_args = str((plugin_args or {}).get(key) or "")
    count = 0
    for node in workflow._get_all_nodes():
        if node.run_without_submitting or not has_hints(node):
            continue
        mem_mb = job_memory_mb(node.mem_gb, overhead_gb)
        if key == "sbatch_args":
            args = slurm_args(global_args, mem_mb, node.n_procs)
        else:
            args = sge_args(global_args, mem_mb, node.n_procs, pe_name=sge_pe, mem_resource=sge_mem_resource)
        node.plugin_args = {**node.plugin_args, key: args, "overwrite": True}
        count += 1
    LOGGER.debug("%s: resource requests set on %d node(s)", plugin, count)
    return count
