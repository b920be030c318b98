#!/usr/bin/env python
"""Accuracy of every diffusion model after each estimation pass, against known motion.

For every scenario (simulated as in ``run_benchmark.py``), every model and every shell anchor,
dmriprep-motion runs once with ``--model M --anchor A --passes P --tolerance 0`` (no early stop,
so every pass is estimated); the transforms each pass hands to the next
(``hmc_passNN_wf/relax/xforms.npy`` in the work directory; ``.../anchor/`` in work directories
from before the shells were anchored once, after the last pass) are scored against the truth.
The shells of a pass are not tied to the b0 until the end, so the per-pass errors in
parentheses (each shell's offset removed) are the comparable ones; the last column is the
written, anchored ``desc-hmc_xfm``.
One Markdown table is printed: per pass, the median mean-displacement error over the brain and,
in parentheses, the same once each shell's common offset is removed (how a shell is tied to the
b0 reference is left out; see ``dmriprep_motion.testing.metrics.accuracy``); then the last
pass's max error, rotation and b-vector errors, wall time and peak memory of the whole run.

    PYTHONPATH=. python benchmarks/models_and_passes.py --scenarios real-moderate real-multishell \\
        --models b0 avgdwi dti dki gp --anchors registration median --passes 4 --sloppy \\
        --output /tmp/models_passes
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_benchmark import (  # noqa: E402
    DEFAULT_CACHE,
    SCENARIOS,
    failure,
    measured_from_record,
    outputs,
    record,
    run_method,
    score,
    separator,
    simulate,
)

MODELS = ("b0", "avgdwi", "dti", "dki", "gp")
#: the error once each shell's common offset to the truth is removed (volume-to-volume accuracy)
WITHIN = "median_mean_disp_group_offsets_removed"


def pass_transform(work: Path, k: int) -> Path | None:
    """``xforms.npy`` of pass ``k`` under ``work`` (``None`` if that pass did not run).

    ``relax/`` since the shells are anchored once, after the last pass; ``anchor/`` in older
    work directories.
    """
    hits = sorted(work.glob(f"**/hmc_pass{k:02d}_wf/relax/xforms.npy"))
    hits = hits or sorted(work.glob(f"**/hmc_pass{k:02d}_wf/anchor/xforms.npy"))
    return hits[0] if hits else None


def pass_transforms(work: Path, passes: int) -> list[Path | None]:
    """The transforms each pass produced (``None`` for a pass that did not run)."""
    return [pass_transform(work, k) for k in range(1, passes + 1)]


def header(passes: int) -> str:
    cells = [f"pass {k} (mm)" for k in range(1, passes + 1)]
    return (
        "| scenario | model, anchor | vols | "
        + " | ".join(cells)
        + " | max err (mm) | median rot err (deg) | median b-vec err (deg)"
        + " | wall (s) | s/vol | peak RSS (GB) | note |"
    )


def row(scenario: str, model: str, n_vol: int, passes: int, result: dict) -> str:
    """One table row (``FAILED: reason`` when the run did not finish)."""
    base = f"| {scenario} | {model} | {n_vol} |"
    meas = result["measured"]
    tail = f" {meas.wall_time:.0f} | {meas.wall_time / n_vol:.2f} | {meas.peak_rss / 1e9:.2f} |"
    scored = [a for a in result.get("per_pass", []) if a is not None]
    if result.get("error") and not scored:
        return base + " – |" * (passes + 3) + tail + f" FAILED: {result['error']} |"
    cells = [
        "–" if a is None else f"{a['median_mean_disp']:.3f} ({a[WITHIN]:.3f})" for a in result["per_pass"]
    ]
    last = result.get("final") or scored[-1]
    note = f"stopped after pass {len(scored)}: {result['error']}" if result.get("error") else ""
    return (
        base
        + " "
        + " | ".join(cells)
        + f" | {last['max_mean_disp']:.3f} | {last['median_rot_err']:.3f} | {last['median_bvec_err']:.2f} |"
        + tail
        + f" {note} |"
    )


def _folder(opts: argparse.Namespace, scenario: str, model: str, anchor: str) -> Path:
    label = model if anchor == "registration" else f"{model}-{anchor}"
    if opts.relaxation is not None:
        label += f"-relax{opts.relaxation:g}"
    return opts.work / scenario / "passes" / (label if opts.sloppy else f"{label}-precise")


def score_passes(bids: Path, folder: Path, result: dict, passes: int) -> dict:
    """Add the per-pass and final accuracy of a finished run (``folder``: its method folder)."""
    result = {**outputs("dmriprep", folder), **result}
    if not Path(result["bvec"]).exists():  # stopped before writing outputs: score the input table
        result["bvec"] = None
    result["per_pass"] = [
        None if path is None else score(bids, {**result, "xfm": path})
        for path in pass_transforms(folder / "dmriprep" / "work", passes)
    ]
    if Path(result["xfm"]).exists():  # a run stopped early has only its finished passes
        result["final"] = score(bids, result)
    return result


def run_one(scenario: str, model: str, anchor: str, opts: argparse.Namespace) -> dict:
    """Run one model with one shell anchor on one scenario and score each pass."""
    bids = simulate(scenario, opts.work / scenario, opts.seed)
    extra = ("--model", model, "--anchor", anchor, "--passes", str(opts.passes), "--tolerance", "0")
    extra += ("--sloppy",) if opts.sloppy else ()
    extra += ("--relaxation", str(opts.relaxation)) if opts.relaxation is not None else ()
    folder = _folder(opts, scenario, model, anchor)
    result = run_method(
        "dmriprep", bids, folder, nprocs=opts.nprocs, cache=opts.cache_dir, seed=opts.seed, extra=extra
    )
    if result["measured"].returncode != 0:
        result["error"] = failure(result["measured"])
        return result
    return score_passes(bids, folder, result, opts.passes)


def rescore(opts: argparse.Namespace) -> list[tuple[str, str, str, dict]]:
    """Re-score the runs listed in earlier JSON outputs from their folders (nothing is re-run)."""
    found = []
    for path in opts.rescore:
        for rec in json.loads(path.read_text()):
            anchor = rec.get("anchor", "registration")
            result = {"measured": measured_from_record(rec), "error": rec["error"]}
            if not rec["error"] or rec["error"].startswith("exit 143"):  # finished, or stopped (SIGTERM)
                bids = opts.work / rec["scenario"] / "bids"
                folder = _folder(opts, rec["scenario"], rec["model"], anchor)
                result = score_passes(bids, folder, result, opts.passes)
            found.append((rec["scenario"], rec["model"], anchor, result))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=["real-moderate"], choices=sorted(SCENARIOS))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument(
        "--anchors", nargs="+", default=["auto"], choices=["auto", "registration", "median"],
        help="shell anchors (--anchor) to run every model with",
    )  # fmt: skip
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--sloppy", action="store_true", help="run with --sloppy registration presets")
    parser.add_argument(
        "--relaxation", type=float, default=None, metavar="F",
        help="pass --relaxation F to every run (default: the pipeline's default)",
    )  # fmt: skip
    parser.add_argument("--work", type=Path, default=DEFAULT_CACHE / "runs_v3")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--output", type=Path, default=None, help="write the table (.md) and raw JSON here")
    parser.add_argument(
        "--rescore", nargs="+", type=Path, default=None, metavar="JSON",
        help="do not run: re-score the runs of these earlier --output JSON files with the current metrics",
    )  # fmt: skip
    opts = parser.parse_args(argv)

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"# models × passes {started}, {os.cpu_count()} CPUs, "
        f"{'--sloppy' if opts.sloppy else 'default presets'}, seed {opts.seed}"
        + ("" if opts.relaxation is None else f", --relaxation {opts.relaxation:g}"),
        header(opts.passes),
        separator(header(opts.passes)),
    ]
    print(*lines, sep="\n", flush=True)
    raw = []
    if opts.rescore:
        runs = rescore(opts)
    else:
        runs = (
            (scenario, model, anchor, run_one(scenario, model, anchor, opts))
            for scenario in opts.scenarios
            for model in opts.models
            for anchor in opts.anchors
        )
    for scenario, model, anchor, result in runs:
        bval = opts.work / scenario / "bids" / "sub-01" / "dwi" / "sub-01_dwi.bval"
        n_vol = len(np.loadtxt(bval))
        line = row(scenario, f"{model}, {anchor}", n_vol, opts.passes, result)
        lines.append(line)
        print(line, flush=True)
        raw.append(
            {
                **record(scenario, n_vol, result),
                "model": model,
                "anchor": anchor,
                "per_pass": [
                    None if acc is None else {k: v for k, v in acc.items() if k != "per_volume"}
                    for acc in result.get("per_pass", [])
                ],
            }
        )
    if opts.output is not None:
        opts.output.parent.mkdir(parents=True, exist_ok=True)
        opts.output.with_suffix(".md").write_text("\n".join(lines) + "\n")
        opts.output.with_suffix(".json").write_text(json.dumps(raw, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
