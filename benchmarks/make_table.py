#!/usr/bin/env python
"""Re-score finished benchmark runs and print one table (no method is re-run).

Reads the JSON files written by ``run_benchmark.py --output`` (wall time, peak memory, errors),
re-computes the accuracy of every method from its outputs under ``<work>/<scenario>/<method>``
with the current metrics, and prints a Markdown table with the injected motion (``identity``) as
the reference row of each scenario.

    PYTHONPATH=. python benchmarks/make_table.py --work ~/.cache/dmriprep_motion_bench/runs_v2 \\
        ~/.cache/dmriprep_motion_bench/results/v2-*.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_benchmark import DEFAULT_CACHE, outputs, score  # noqa: E402

HEADER = (
    "| scenario | method | vols | median mean-disp err (mm) | max mean-disp err (mm) | RMSE (mm) "
    "| common offset (mm) | median err, offset removed (mm) | median rot err (deg) | median trans err (mm) "
    "| median b-vec err (deg) | wall (s) | s/vol | peak RSS (GB) | note |"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="JSON files of run_benchmark.py")
    parser.add_argument("--work", type=Path, default=DEFAULT_CACHE / "runs_v2")
    opts = parser.parse_args(argv)
    rows = {}
    for path in opts.results:
        if path.suffix == ".json":
            records = json.loads(path.read_text())
        else:  # the printed table of a run (e.g. its log), when it was stopped before writing JSON
            records = []
            for line in path.read_text().splitlines():
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                if not line.startswith("|") or len(cells) < 13 or not cells[2].isdigit():
                    continue
                records.append(
                    {
                        "scenario": cells[0],
                        "method": cells[1],
                        "n_volumes": int(cells[2]),
                        "wall_time_s": float(cells[-4]),
                        "peak_rss_bytes": float(cells[-2]) * 1e9,
                        "error": cells[-1] if cells[-1].startswith("FAILED") else None,
                    }
                )
        for rec in records:
            rows[(rec["scenario"], rec["method"])] = rec  # later files win
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    order = ["identity", "dmriprep", "dmriprep-sloppy", "dipy", "nifreeze-b0", "nifreeze-dti"]
    for (scenario, method), rec in sorted(
        rows.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]) if kv[0][1] in order else 99)
    ):
        folder = opts.work / scenario
        bids = folder / "bids"
        n_vol, wall, peak = rec["n_volumes"], rec["wall_time_s"], rec["peak_rss_bytes"]
        timing = (
            f" {wall:.0f} | {wall / n_vol:.2f} | {peak / 1e9:.2f} |"
            if method != "identity"
            else " – | – | – |"
        )
        base = f"| {scenario} | {method} | {n_vol} |"
        if rec.get("error"):
            print(base + " – |" * 8 + timing + f" FAILED: {rec['error']} |")
            continue
        res = outputs(method, folder)
        m = score(bids, res)
        note = "" if res["rotates_bvecs"] else "b-vectors not rotated by the tool"
        if method == "identity":
            note = "no correction: size of the injected motion"
        print(
            base + f" {m['median_mean_disp']:.3f} | {m['max_mean_disp']:.3f} | {m['rmse_mean_disp']:.3f} |"
            f" {m['common_offset_disp']:.3f} | {m['median_mean_disp_offset_removed']:.3f} |"
            f" {m['median_rot_err']:.3f} | {m['median_trans_err']:.3f} | {m['median_bvec_err']:.2f} |"
            + timing
            + f" {note} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
