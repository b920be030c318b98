#!/usr/bin/env python
"""Split the wall time of a finished dmriprep-motion run by step, from its work directory.

Usage::

    python benchmarks/profile_run.py WORK_DIR [--wall SECONDS] [--nprocs N]

Nipype stores each node's runtime in ``result_*.pklz``.  Node times are summed
per category (model fitting = ``predict``, registration = ANTs nodes, other
nodes); with ``--wall`` (the measured wall time) and ``--nprocs``, the part of
the available CPU time not spent inside any node is reported as scheduling and
start-up overhead (Nipype, process pool, Python imports).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from nipype.utils.filemanip import loadpkl

CATEGORIES = {
    "predict": "model fit + prediction",
    "register": "registration (ANTs)",
    "align_b0": "registration (ANTs)",
    "align_shells": "registration (ANTs)",
}


def node_times(work_dir: Path) -> dict[str, list[float]]:
    """Durations (s) of every executed node (MapNode elements counted individually)."""
    times: dict[str, list[float]] = defaultdict(list)
    for result in Path(work_dir).rglob("result_*.pklz"):
        folder = result.parent
        if folder.name.startswith("_") and folder.parent.name == "mapflow":
            name = folder.parent.parent.name  # a MapNode element
        elif (folder / "mapflow").is_dir():
            continue  # the MapNode itself: its elements are counted
        else:
            name = folder.name
        try:
            duration = float(loadpkl(result).runtime.duration)
        except (AttributeError, TypeError, ValueError, OSError):
            continue
        times[name].append(duration)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--wall", type=float, help="measured wall time of the run (s)")
    parser.add_argument("--nprocs", type=int, default=2, help="processes the run used")
    args = parser.parse_args()
    times = node_times(args.work_dir)
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for name, values in times.items():
        category = CATEGORIES.get(name, "other nodes")
        totals[category] += sum(values)
        counts[category] += len(values)
    busy = sum(totals.values())
    print(f"{'step':28s} {'node runs':>9s} {'CPU-s':>8s}")
    for category in ("model fit + prediction", "registration (ANTs)", "other nodes"):
        print(f"{category:28s} {counts[category]:9d} {totals[category]:8.1f}")
    print(f"{'total inside nodes':28s} {sum(counts.values()):9d} {busy:8.1f}")
    if args.wall:
        capacity = args.wall * args.nprocs
        print(f"wall {args.wall:.1f} s x {args.nprocs} processes = {capacity:.1f} process-s; "
              f"outside nodes (Nipype scheduling, pool, imports, idle): {capacity - busy:.1f} process-s "
              f"({100 * (capacity - busy) / capacity:.0f}%)")  # fmt: skip


if __name__ == "__main__":
    main()
