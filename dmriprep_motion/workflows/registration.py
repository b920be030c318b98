"""ANTs registration nodes configured from the JSON presets in ``dmriprep_motion/data``."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import isdefined
from nipype.pipeline import engine as pe

from dmriprep_motion.interfaces.registration import CapSampling, SkippableRegistration

#: Memory hint (GB) of one registration: two 3D volumes, whatever the size of the series.
ANTS_MEM_GB = 0.5


def configure_registration(interface, seed: int | None, omp_nthreads: int):
    """Pin the threads and the seed of an ANTs registration so that runs are repeatable.

    The environment is merged, not replaced: Nipype puts the ITK thread limit
    (``NSLOTS``) there, and losing it lets ITK use every core, whose parallel
    reductions make results differ from run to run.
    """
    interface.inputs.num_threads = omp_nthreads
    env = dict(interface.inputs.environ)
    # Nipype exports NSLOTS only when num_threads changes from its default (1).
    env["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(omp_nthreads)
    env["NSLOTS"] = str(omp_nthreads)
    if seed is not None:
        interface.inputs.random_seed = int(seed)
        env["ANTS_RANDOM_SEED"] = str(int(seed))
    interface.inputs.environ = env
    return interface


def init_registration_node(
    *,
    name: str,
    settings: str | Path,
    iterfield: list[str],
    seed: int | None,
    omp_nthreads: int,
    mem_gb: float = ANTS_MEM_GB,
) -> pe.MapNode:
    """A MapNode of Nipype's :class:`~nipype.interfaces.ants.Registration` (skippable).

    Parameters
    ----------
    settings : path
        JSON file of ``Registration`` inputs (a packaged preset or the user's
        ``--registration-config``), loaded with ``Registration(from_file=...)``.
    iterfield : list of str
        Inputs that vary per volume.
    seed : int or None
        Sets ``--random-seed`` and ``ANTS_RANDOM_SEED`` so runs are repeatable.
    omp_nthreads : int
        ITK threads of each registration.
    mem_gb : float
        Memory hint of each registration (GB).
    """
    interface = configure_registration(SkippableRegistration(from_file=str(settings)), seed, omp_nthreads)
    return pe.MapNode(
        interface,
        iterfield=iterfield,
        name=name,
        n_procs=omp_nthreads,
        mem_gb=mem_gb,
    )


def sampling_connections(
    max_samples: int,
    source: tuple[pe.Node, str],
    register: pe.Node,
    *,
    report: bool = True,
    whole_grid: bool = False,
) -> list[tuple]:
    """Connections capping ``register``'s samples (:class:`CapSampling`, node ``sampling``).

    Parameters
    ----------
    max_samples : int
        Most points sampled; ``0`` adds nothing.
    source : (node, field)
        Where the registration's fixed mask comes from (or, with ``whole_grid``, its fixed
        image: a registration without a mask samples the whole grid).
    register : Node or MapNode
        The registration (:func:`init_registration_node`): its settings' sampling percentage
        is the starting point, and the capped one is connected to it.
    report : bool
        Log a cap that acts (one node per run should).
    whole_grid : bool
        Count every voxel of the grid, not the mask's.

    Returns
    -------
    list
        ``Workflow.connect`` tuples; empty when there is nothing to cap (no cap, or settings
        that sample every voxel).
    """
    inputs = register.interface.inputs
    strategies = inputs.sampling_strategy if isdefined(inputs.sampling_strategy) else []
    if max_samples <= 0 or not {"Regular", "Random"} & set(strategies):
        return []
    sampling = pe.Node(
        CapSampling(
            percentages=[float(p) for p in inputs.sampling_percentage],
            max_samples=max_samples,
            report=report,
            whole_grid=whole_grid,
        ),
        name="sampling",
        run_without_submitting=True,
    )
    node, field = source
    return [
        (node, sampling, [(field, "in_mask")]),
        (sampling, register, [("sampling_percentage", "sampling_percentage")]),
    ]
