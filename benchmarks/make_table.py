#!/usr/bin/env python
"""Re-score finished benchmark runs and print one table (no method is re-run).

Reads the JSON files written by ``run_benchmark.py --output`` (wall time, peak memory, errors),
re-computes the accuracy of every method from its outputs under ``<work>/<scenario>/<method>``
with the current metrics, and prints a Markdown table with the injected motion (``identity``) as
the reference row of each scenario.

    PYTHONPATH=. python benchmarks/make_table.py --work ~/.cache/dmriprep_motion_bench/runs_v3 \\
        results/*.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_benchmark import (  # noqa: E402
    DEFAULT_CACHE,
    HEADER,
    METHODS,
    SCENARIOS,
    measured_from_record,
    outputs,
    row,
    score,
    separator,
)

#: table order of the scenarios, and of the methods in each scenario
SCENARIO_ORDER = {name: i for i, name in enumerate(SCENARIOS)}
ORDER = {name: i for i, name in enumerate(METHODS)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="JSON files of run_benchmark.py --output")
    parser.add_argument("--work", type=Path, default=DEFAULT_CACHE / "runs_v3")
    opts = parser.parse_args(argv)
    rows = {}
    for path in opts.results:
        for rec in json.loads(path.read_text()):
            rows[(rec["scenario"], rec["method"])] = rec  # later files win
    print(HEADER)
    print(separator(HEADER))

    def order(item):
        (scenario, method), _ = item
        return SCENARIO_ORDER.get(scenario, 99), ORDER.get(method, 99)

    for (scenario, method), rec in sorted(rows.items(), key=order):
        folder = opts.work / scenario
        res = {"measured": measured_from_record(rec), "error": rec.get("error"), **outputs(method, folder)}
        if not rec.get("error"):
            res["acc"] = score(folder / "bids", res)
        print(row(scenario, method, rec["n_volumes"], res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
