"""ANTs registration nodes configured from the JSON presets in ``dmriprep_motion/data``."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.ants import Registration
from nipype.pipeline import engine as pe


def init_registration_node(
    *,
    name: str,
    settings: str | Path,
    iterfield: list[str],
    seed: int | None,
    omp_nthreads: int,
    mem_gb: float,
) -> pe.MapNode:
    """A MapNode of Nipype's :class:`~nipype.interfaces.ants.Registration`.

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
    """
    interface = Registration(from_file=str(settings))
    interface.inputs.num_threads = omp_nthreads
    # Set the ITK thread limit explicitly: Nipype only exports it when num_threads
    # *changes* from its default (1), so with 1 thread ANTs used every core, and its
    # multi-threaded metric sums made runs (and resumed runs) differ at ~0.01 mm.
    environ = {
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": str(omp_nthreads),
        "NSLOTS": str(omp_nthreads),
    }
    if seed is not None:
        interface.inputs.random_seed = int(seed)
        environ["ANTS_RANDOM_SEED"] = str(int(seed))
    interface.inputs.environ = environ
    return pe.MapNode(
        interface,
        iterfield=iterfield,
        name=name,
        n_procs=omp_nthreads,
        mem_gb=mem_gb,
    )
