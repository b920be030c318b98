"""The benchmark scripts' helpers: per-pass transforms, table rows, the phantom frame check."""

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def test_pass_transforms_in_pass_order_with_gaps(tmp_path):
    mp = _load("models_and_passes")
    for k in (1, 2, 4):  # pass 4 from an older work directory (before the final anchor)
        folder = tmp_path / "wf" / "sub_01_wf" / f"hmc_pass{k:02d}_wf" / ("anchor" if k == 4 else "relax")
        folder.mkdir(parents=True)
        np.save(folder / "xforms.npy", np.tile(np.eye(4), (3, 1, 1)))
    found = mp.pass_transforms(tmp_path, 4)
    assert [p is not None for p in found] == [True, True, False, True]
    assert "hmc_pass04_wf" in str(found[3])


def test_rows_match_the_header(tmp_path):
    from dmriprep_motion.testing.metrics import Measured

    mp = _load("models_and_passes")
    width = mp.header(3).count("|")
    acc = {"median_mean_disp": 0.4, mp.WITHIN: 0.2, "max_mean_disp": 0.7,
           "median_rot_err": 0.1, "median_bvec_err": 0.1}  # fmt: skip
    ok = {"measured": Measured(0, 100.0, 7e8, ""), "per_pass": [acc, None, acc], "final": acc}
    failed = {"measured": Measured(1, 5.0, 1e8, "boom"), "error": "exit 1: boom"}
    good, bad = mp.row("s", "gp, median", 31, 3, ok), mp.row("s", "dki, median", 31, 3, failed)
    assert good.count("|") == bad.count("|") == width
    assert "0.400 (0.200) | – | 0.400 (0.200)" in good
    assert "FAILED: exit 1: boom" in bad


def test_benchmark_rows_match_the_header():
    from dmriprep_motion.testing.metrics import Measured

    rb = _load("run_benchmark")
    width = rb.HEADER.count("|")
    acc = {"median_mean_disp": 0.4, "max_mean_disp": 0.7, "rmse_mean_disp": 0.5,
           "median_mean_disp_offset_removed": 0.2, "median_rot_err": 0.1, "median_trans_err": 0.3,
           "median_bvec_err": 0.1, "group_offsets_disp": {"2": 0.45, "0": 0.01, "1": 0.25}}  # fmt: skip
    ok = {"measured": Measured(0, 62.0, 7e8, "", cpu_time=120.0, load=2.1), "acc": acc, "rotates_bvecs": True}
    failed = {"measured": Measured(1, 5.0, 1e8, "boom"), "error": "exit 1: boom"}
    ident = {"measured": Measured(0, 0.0, 0, ""), "acc": acc, "rotates_bvecs": False}
    rows = [rb.row("s", m, 31, r) for m, r in (("dmriprep", ok), ("dipy", failed), ("identity", ident))]
    assert [r.count("|") for r in rows] == [width] * 3
    assert "| 62 | 2.00 | 120 | 2.1 | 0.70 |" in rows[0]
    assert "FAILED: exit 1: boom" in rows[1] and "no correction" in rows[2]
    assert "| 0.200 | 0.250 / 0.450 | 0.100 |" in rows[0]  # each shell's offset, lowest b first, no b0s
    assert rb.shell_offsets({}) == "–"  # records scored before the column existed


@pytest.mark.slow
def test_mni_phantom_frames_agree(tmp_path):
    """On the MNI phantom the b0 and the mean DWI are in one frame, and the anchor finds it."""
    from dmriprep_motion.testing.simulate import mni_phantom

    frame = _load("phantom_frame")
    res = frame.frame_offset(mni_phantom(resolution=4.0), 1000.0)
    assert res["mean"] < 0.1, res


def test_frame_check_against_another_shell():
    """``phantom_frame.py --against B``: the moving image is shell B's noise-free mean, not the b0
    (the darker the higher the b-value), and on the MNI phantom the two shells agree."""
    from dmriprep_motion.testing.simulate import mni_phantom

    frame = _load("phantom_frame")
    phantom = mni_phantom(resolution=4.0)
    b0, _, _ = frame._noise_free(phantom, 2000.0)
    low, high, points = frame._noise_free(phantom, 2000.0, against=1000.0)
    brain = phantom.mask
    assert b0[brain].mean() > 1.5 * low[brain].mean() > 1.5 * high[brain].mean() > 0
    assert len(points) == brain.sum()
    assert frame.frame_offset(phantom, 2000.0, against=1000.0)["mean"] < 0.1


@pytest.mark.slow
def test_aligned_b0_brings_the_real_phantom_frames_together():
    """Registering ds-xa30's b0 to its mean DWI before the fit shrinks the phantom's frame offset.

    Measured with the jittered aligner (AP+PA fit, b=1000): 1.029 mm with the b0 as acquired,
    0.493 mm aligned (on the grid, as the benchmark's phantom is built).
    """
    frame = _load("phantom_frame")
    raw, aligned = (dict(frame.phantoms([name]))[name] for name in ("real-joint-raw", "real-joint"))
    assert "b0 aligned" in aligned.description and "b0 aligned" not in raw.description
    offsets = [frame.frame_offset(ph, 1000.0)["mean"] for ph in (raw, aligned)]
    assert offsets[1] < 0.7 < offsets[0], offsets


def test_preset_variants_and_pass_inputs(tmp_path):
    """``presets.py`` overrides one stage of a preset and finds a pass's registrations in a run."""
    pr = _load("presets")
    assert pr.parse_variant("sampling_percentage=0.25,number_of_iterations=100x50,smoothing_sigmas=1x0") == {
        "sampling_percentage": [0.25],
        "number_of_iterations": [[100, 50]],
        "smoothing_sigmas": [[1.0, 0.0]],
    }
    assert pr.parse_variant("sampling_strategy=Random") == {"sampling_strategy": ["Random"]}
    assert pr.parse_variant("") == {}
    dwi = tmp_path / "bids" / "sub-01" / "dwi"
    dwi.mkdir(parents=True)
    (dwi / "sub-01_dwi.bval").write_text("0 1000 5 1000\n")  # b=5 counts as a b0
    wf = tmp_path / "dmriprep" / "work" / "top_wf" / "sub_01_wf" / "dwi_motion_wf"
    relax = wf / "hmc_pass01_wf" / "relax"
    relax.mkdir(parents=True)
    np.save(relax / "xforms.npy", np.tile(np.eye(4), (4, 1, 1)) * 2)
    first, start1, mask = pr.pass_inputs(tmp_path, 1)
    second, start2, _ = pr.pass_inputs(tmp_path, 2)
    assert [item[0] for item in first] == [item[0] for item in second] == [1, 3]
    assert first[1][1].parent.name == "_predict1" and first[1][1].name == "prediction_0003.nii"
    assert first[1][2].name == "vol0003.nii" and first[1][3].name == "identity_0003.txt"
    assert second[0][3] == relax / "xform_0001.txt" and second[0][1].parts[-5] == "hmc_pass02_wf"
    assert np.allclose(start1, np.eye(4)) and np.allclose(start2, 2 * np.eye(4))
    assert mask.name == "reg_mask.nii.gz"


def test_sphere_neighbour_correlation_tells_smooth_from_independent_errors():
    """``fixed_point.py``: errors that vary smoothly with the gradient direction correlate with their
    neighbours on the sphere (antipodal directions are neighbours); independent errors do not."""
    fp = _load("fixed_point")
    rng = np.random.default_rng(0)
    g = rng.normal(size=(60, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    g[::2] *= -1  # the sign of a direction must not matter
    smooth = np.stack([g[:, 0] ** 2, g[:, 1] * g[:, 2], g[:, 2] ** 2 - g[:, 0] * g[:, 1]], axis=1)
    assert np.all(fp.sphere_neighbour_correlation(smooth, g) > 0.8)
    assert np.all(np.abs(fp.sphere_neighbour_correlation(rng.normal(size=(60, 3)), g)) < 0.4)


def test_tensor_span_fraction():
    """``tensor_span.py``: a residual pattern that a tensor can represent (a quadratic form of the
    direction, either sign of it) lies wholly in the span; independent errors by chance only."""
    ts = _load("tensor_span")
    rng = np.random.default_rng(1)
    g = rng.normal(size=(30, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    tensors = rng.normal(size=(3, 3, 3))
    quadratic = np.einsum("ni,kij,nj->nk", g, tensors + tensors.transpose(0, 2, 1), g)
    g[::2] *= -1
    assert ts.span_fraction(quadratic + [1.0, -2.0, 0.5], g) == pytest.approx(1.0)
    chance = [ts.span_fraction(rng.normal(size=(30, 3)), g) for _ in range(200)]
    assert np.mean(chance) == pytest.approx(5 / 29, abs=0.03)


def test_residual_translations_are_the_centroid_displacements():
    fp = _load("fixed_point")
    from dmriprep_motion.motion import matrix_from_params

    truth = np.stack([matrix_from_params(np.array([1.0, -2, 0.5, 0.02, 0, -0.01]))] * 2)
    shift = np.eye(4)
    shift[:3, 3] = (0.1, 0.0, -0.2)
    estimated = np.stack([truth[0], truth[1] @ shift])
    res = fp.residual_translations(estimated, truth, np.array([10.0, 20.0, 30.0]))
    assert np.allclose(res, [[0, 0, 0], [0.1, 0, -0.2]])


def test_repeated_runs_alternate_and_are_summarised():
    """--repeat runs the methods in alternating order; the speed table gives every run's wall
    time, the medians, and the median of the per-round ratios to the first method."""
    rb = _load("run_benchmark")
    assert [rb.round_order(["a", "b", "c"], k) for k in range(3)] == [
        ["a", "b", "c"], ["c", "b", "a"], ["a", "b", "c"]]  # fmt: skip
    records = [
        {"scenario": "s", "method": "a", "round": 0, "wall_time_s": 40.0, "cpu_time_s": 70.0},
        {"scenario": "s", "method": "b", "round": 0, "wall_time_s": 38.0, "cpu_time_s": 38.0},
        {"scenario": "s", "method": "b", "round": 1, "wall_time_s": 46.0, "cpu_time_s": 44.0},
        {"scenario": "s", "method": "a", "round": 1, "wall_time_s": 42.0, "cpu_time_s": 72.0},
        {"scenario": "s", "method": "a", "round": 2, "wall_time_s": 50.0, "cpu_time_s": 74.0},
        {"scenario": "s", "method": "b", "round": 2, "wall_time_s": 0.0, "cpu_time_s": 0.0, "error": "x"},
    ]
    lines = rb.speed_summary(records, ["a", "b"])
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|") == lines[3].count("|")
    assert "ratios to a" in lines[0]
    assert lines[2] == "| s | a | 3 | 40 / 42 / 50 | 42.0 | 72 | 1.00 |"
    # b: rounds 0 and 1 (its run of round 2 failed): 38 / 40 = 0.95 and 46 / 42 = 1.095
    assert lines[3] == "| s | b | 2 | 38 / 46 | 42.0 | 41 | 1.02 |"


def test_control_scenarios_have_no_motion_and_no_noise(tmp_path, monkeypatch):
    """``*-static`` scenarios: identity truth and noise-free data (the b0 of two simulations with
    different seeds, hence different noise if there were any, is the same)."""
    import nibabel as nb

    from dmriprep_motion.testing import simulate as sim
    from dmriprep_motion.testing.simulate import load_truth

    rb = _load("run_benchmark")
    assert {rb.SCENARIOS[name][3:] for name in ("real-static", "mni-static", "real-multishell-static")} == {
        ("none", None)
    }
    small = sim.mni_phantom(resolution=4.0)
    monkeypatch.setattr(sim, "mni_phantom", lambda **_: small)
    data = []
    for seed in (1, 2):
        bids = rb.simulate("mni-static", tmp_path / str(seed), seed)
        truth = load_truth(bids)
        np.testing.assert_allclose(truth["xfm"], np.broadcast_to(np.eye(4), truth["xfm"].shape))
        img = nb.load(bids / "sub-01" / "dwi" / "sub-01_dwi.nii.gz")
        data.append(np.asanyarray(img.dataobj, dtype=np.float32))
    assert data[0].shape[-1] == 31
    np.testing.assert_array_equal(data[0][..., 0], data[1][..., 0])
    assert data[0][..., 0].max() > 0


def test_fine_grid_scenario_uses_the_fine_phantom(tmp_path, monkeypatch):
    """``mni-fine-moderate`` is ``mni-moderate`` on the phantom at ``MNI_FINE_MM`` (1.5 mm)."""
    from dmriprep_motion.testing import simulate as sim

    rb = _load("run_benchmark")
    assert rb.SCENARIOS["mni-fine-moderate"][1:] == rb.SCENARIOS["mni-moderate"][1:]
    assert rb.MNI_FINE_MM < 2.0
    small = sim.mni_phantom(resolution=4.0)
    asked = []
    monkeypatch.setattr(sim, "mni_phantom", lambda **kw: asked.append(kw["resolution"]) or small)
    rb.simulate("mni-fine-moderate", tmp_path / "fine", 5)
    rb.simulate("mni-moderate", tmp_path / "coarse", 5)
    assert asked == [rb.MNI_FINE_MM, 2.0]
    record = json.loads((tmp_path / "fine" / rb.SIMULATION_RECORD).read_text())
    assert record == {"scenario": "mni-fine-moderate", "seed": 5, "phantom": "mni-fine"}


def test_simulations_are_recorded_and_never_reused_for_another_one(tmp_path, monkeypatch):
    """A work folder keeps what it simulated (seed, phantom) and refuses another simulation."""
    from dmriprep_motion.testing import simulate as sim

    rb = _load("run_benchmark")
    small = sim.mni_phantom(resolution=4.0)
    monkeypatch.setattr(sim, "mni_phantom", lambda **_: small)
    folder = tmp_path / "mni-static"
    bids = rb.simulate("mni-static", folder, 3)
    record = json.loads((folder / rb.SIMULATION_RECORD).read_text())
    assert record == {"scenario": "mni-static", "seed": 3, "phantom": "mni"}
    assert rb.simulate("mni-static", folder, 3) == bids  # reused
    with pytest.raises(SystemExit, match="seed 3 .* not seed 4"):
        rb.simulate("mni-static", folder, 4)
    # a folder simulated before the record existed: any seed, the raw real-data phantom only
    real = tmp_path / "real-static"
    (real / "bids" / "derivatives" / "truth").mkdir(parents=True)
    assert rb.simulate("real-static", real, 4) == real / "bids"
    refused = "an unrecorded seed and the raw phantom, not seed 4 and the corrected one"
    with pytest.raises(SystemExit, match=refused):
        rb.simulate("real-static", real, 4, phantom="corrected")
    with pytest.raises(ValueError, match="phantom must be one of"):
        rb.simulate("real-static", real, 4, phantom="smooth")


def test_corrected_source_runs_dmriprep_motion_once(tmp_path, monkeypatch):
    """The corrected phantom's source: ds-xa30 through dmriprep-motion (affine), made once."""
    rb = _load("run_benchmark")
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        out = Path(cmd[cmd.index("participant") - 1]) / "sub-01" / "dwi"
        out.mkdir(parents=True, exist_ok=True)
        for pe in ("AP", "PA"):
            (out / f"sub-01_dir-{pe}_desc-preproc_dwi.nii.gz").write_bytes(b"")
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(rb.subprocess, "run", fake_run)
    dwi = rb.corrected_source(tmp_path, nprocs=1)
    assert dwi == tmp_path / "ds-xa30-corrected" / "out" / "sub-01" / "dwi"
    assert rb.corrected_source(tmp_path) == dwi and len(calls) == 1  # reused, not re-run
    cmd = calls[0]
    assert cmd[cmd.index("-m") + 1] == "dmriprep_motion" and str(rb.DS_XA30) in cmd
    assert cmd[cmd.index("--transform") + 1] == "Affine" and cmd[cmd.index("--nprocs") + 1] == "1"

    monkeypatch.setattr(rb.subprocess, "run", lambda cmd, **kwargs: SimpleNamespace(returncode=1))
    with pytest.raises(RuntimeError, match="log.txt"):
        rb.corrected_source(tmp_path / "other")


def test_real_phantom_fits_the_corrected_runs(monkeypatch):
    """``source`` swaps ds-xa30 as acquired for the corrected runs (and their rotated b-vectors)."""
    from dmriprep_motion.testing import simulate as sim

    rb = _load("run_benchmark")
    seen = {}
    monkeypatch.setattr(sim, "real_data_phantom", lambda *files, **kw: seen.update(files=files, **kw))
    rb.real_phantom(source=Path("/corrected"))
    dwis, bvals, bvecs = seen["files"]
    assert dwis == [f"/corrected/sub-01_dir-{pe}_desc-preproc_dwi.nii.gz" for pe in ("AP", "PA")]
    assert bvecs[1] == "/corrected/sub-01_dir-PA_desc-preproc_dwi.bvec" and seen["align_b0"] is not None
    rb.real_phantom(("AP",), align_b0=False)
    assert seen["files"][0] == [f"{rb.DS_XA30}/sub-01/dwi/sub-01_dir-AP_dwi.nii.gz"]
    assert seen["align_b0"] is None


def test_lowest_shell_anchor_variants_split_the_mask():
    sa = _load("shell_anchor")
    mask = np.zeros((12, 10, 9), dtype=bool)
    mask[2:10, 1:9, 2:8] = True
    octants = list(sa.octant_masks(mask))
    assert len(octants) == 8
    left_out = [mask & ~subset for subset in octants]
    # each subset is the mask less one octant; the octants are disjoint and cover the mask
    assert all(not (subset & ~mask).any() for subset in octants)
    assert np.array_equal(np.sum(left_out, axis=0), mask.astype(int))
    assert all(part.sum() == mask.sum() // 8 for part in left_out)  # a symmetric box: equal octants
    halves = list(sa.block_masks(mask, draws=8, block=4, seed=0))
    assert len(halves) == 8 and all(not (half & ~mask).any() for half in halves)
    assert 0.25 < np.mean([half.sum() / mask.sum() for half in halves]) < 0.75
    blocks = halves[0][:8, :8, :8].reshape(2, 4, 2, 4, 2, 4)  # whole blocks kept or dropped
    inside = mask[:8, :8, :8].reshape(2, 4, 2, 4, 2, 4)
    kept = blocks.any(axis=(1, 3, 5))
    assert np.array_equal(blocks, inside & kept[:, None, :, None, :, None])


def test_rigid_summaries_of_corrections():
    from dmriprep_motion.motion import matrix_from_params, motion_parameters

    sa = _load("shell_anchor")
    params = np.array([[0.1, 0, 0, 0.01, 0, 0], [0.3, 0, 0, 0.03, 0, 0], [2.0, 0, 0, -0.2, 0, 0]])
    found = sa.rigid_summaries(np.stack([matrix_from_params(p) for p in params]))
    assert np.allclose(motion_parameters(found["mean"][None])[0], params.mean(axis=0))
    assert np.allclose(motion_parameters(found["median"][None])[0], np.median(params, axis=0))
