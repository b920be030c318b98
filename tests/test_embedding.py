"""The documented example of init_dwi_motion_wf embedded in a parent Nipype workflow."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "embed_motion_wf.py"


def _example():
    spec = importlib.util.spec_from_file_location("embed_motion_wf", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _edges(workflow) -> set[tuple[str, str, str, str]]:
    out = set()
    for src, dst, data in workflow._graph.edges(data=True):
        for a, b in data["connect"]:
            out.add((src.name, a, dst.name, b))
    return out


def test_parent_graph_feeds_and_consumes_the_motion_workflow(tmp_path):
    example = _example()
    bvals = np.array([0] + [1000] * 20)
    parent = example.init_parent_wf(bvals=bvals, base_dir=tmp_path, passes=2)
    edges = _edges(parent)
    for field, target in (("dwi", "dwi_file"), ("bval", "in_bval"), ("bvec", "in_bvec")):
        assert ("inputnode", field, "dwi_motion_wf", f"inputnode.{target}") in edges
    assert ("dwi_motion_wf", "outputnode.confounds", "summary", "confounds") in edges
    assert ("dwi_motion_wf", "outputnode.dwi_file", "sink", "dwi.@corrected") in edges
    assert ("dwi_motion_wf", "outputnode.out_bvec", "sink", "dwi.@bvec") in edges
    # Only existing outputs are used, and the flattened graph resolves them to real nodes.
    from dmriprep_motion.workflows.hmc import OUTPUTS

    for _, src_field, _, _ in (e for e in edges if e[0] == "dwi_motion_wf"):
        assert src_field.split(".", 1)[1] in OUTPUTS
    flat = parent._create_flat_graph()
    names = {n.fullname for n in flat.nodes()}
    assert "parent_wf.dwi_motion_wf.hmc_pass02_wf.register" in names
    summary = next(n for n in flat.nodes() if n.name == "summary")
    assert [p.fullname for p in flat.predecessors(summary)] == ["parent_wf.dwi_motion_wf.outputnode"]
    # The auto-chosen model is the one --model auto would pick for this scheme.
    predict = next(n for n in flat.nodes() if n.name == "predict")
    assert predict.interface.inputs.model == "gp"


def test_summarize_motion_reads_a_confounds_table(tmp_path):
    from dmriprep_motion.confounds import confounds_table, write_tsv

    xforms = np.tile(np.eye(4), (3, 1, 1))
    xforms[1, 0, 3], xforms[2, 0, 3] = 1.0, 3.0  # 1 mm then 2 mm steps along x
    columns, values = confounds_table(xforms, np.array([0, 1000, 1000]))
    write_tsv(tmp_path / "c.tsv", columns, values)
    summary = _example().summarize_motion(str(tmp_path / "c.tsv"))
    assert summary == {"mean_fd": pytest.approx(1.5), "max_fd": pytest.approx(2.0), "n_volumes": 3}


@pytest.mark.slow
def test_embedded_run_on_ds_xa30(ds_xa30, tmp_path):
    """Run the parent pipeline (sloppy, one pass) on a real series and check what it consumed."""
    example = _example()
    stem = ds_xa30 / "sub-01" / "dwi" / "sub-01_dir-AP_dwi"
    bval, bvec = Path(f"{stem}.bval"), Path(f"{stem}.bvec")
    parent = example.init_parent_wf(bvals=np.loadtxt(bval), base_dir=tmp_path, sloppy=True, passes=1)
    parent.inputs.inputnode.dwi = f"{stem}.nii.gz"
    parent.inputs.inputnode.bval = str(bval)
    parent.inputs.inputnode.bvec = str(bvec)
    # as the example's main(): Nipype's MultiProc, woken up by finished nodes
    plugin = example.WakefulMultiProcPlugin(plugin_args={"n_procs": 2, "raise_insufficient": False})
    result = parent.run(plugin=plugin)
    summary = next(n for n in result.nodes() if n.name == "summary").result.outputs.summary
    assert summary["n_volumes"] == 21
    assert 0 < summary["mean_fd"] <= summary["max_fd"] < 10
    results = tmp_path / "results"
    corrected = list((results / "dwi").glob("*.nii.gz"))
    assert len(corrected) == 2  # corrected series and b0 reference
    series = next(nb.load(p) for p in corrected if nb.load(p).ndim == 4)
    assert series.shape == nb.load(f"{stem}.nii.gz").shape
    bvecs = np.loadtxt(next((results / "dwi").glob("*.bvec")))
    assert bvecs.shape == (3, 21) and np.allclose(np.linalg.norm(bvecs[:, 1:], axis=0), 1, atol=1e-5)
    assert len(list((results / "motion").glob("*.tsv"))) == 1
