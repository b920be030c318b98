"""The simulator's ground truth is self-consistent, and simulated motion is recovered."""

import json
import sys

import nibabel as nb
import numpy as np
import pytest

from dmriprep_motion.gradients import fsl_to_ras, read_bvecs
from dmriprep_motion.motion import (
    load_itk_series,
    mask_coordinates,
    matrix_from_params,
    resample_volume,
    transform_errors,
)
from dmriprep_motion.testing import simulate as sim
from dmriprep_motion.testing.metrics import accuracy, bvec_angular_error, tree_rss

DEG = np.pi / 180


@pytest.fixture(scope="module")
def phantom(ds_xa30):
    src = [ds_xa30 / "sub-01" / "dwi" / f"sub-01_dir-{pe}_dwi" for pe in ("AP", "PA")]
    return sim.real_data_phantom(*([f"{s}.{ext}" for s in src] for ext in ("nii.gz", "bval", "bvec")))


@pytest.fixture(scope="module")
def simulated(phantom, tmp_path_factory):
    bvals, bvecs = sim.make_scheme(n_b0=2, shells={1000: 10, 2000: 6}, seed=3)
    params = sim.motion_pattern("large", len(bvals), seed=3)
    series = sim.simulate_series(phantom, bvals=bvals, bvecs_ras=bvecs, params=params, snr=20, seed=3)
    bids = tmp_path_factory.mktemp("sim") / "bids"
    paths = sim.write_bids(series, bids)
    return series, bids, paths


def test_real_phantom_b0_alignment_is_applied(ds_xa30):
    """``align_b0`` gets each run's mean DWI and mean b0, and the b0 map is moved by its answer."""
    src = ds_xa30 / "sub-01" / "dwi" / "sub-01_dir-AP_dwi"
    files = (f"{src}.nii.gz", f"{src}.bval", f"{src}.bvec")
    seen = []

    def shift_one_voxel(fixed, moving, mask, affine):
        seen.append((fixed.shape, moving.shape, mask.dtype))
        xfm = np.eye(4)
        xfm[:3, 3] = affine[:3, 0]  # reference point x maps onto x + one voxel along i
        return xfm

    plain = sim.real_data_phantom(*files)
    moved = sim.real_data_phantom(*files, align_b0=shift_one_voxel)
    assert seen == [(plain.shape, plain.shape, bool)]
    s0, s0_moved = plain.compartments[0].s0, moved.compartments[0].s0
    inner = (slice(2, -2),) * 3
    assert np.allclose(s0_moved[:-1][inner], s0[1:][inner], rtol=1e-3, atol=1e-2 * s0.max())
    assert "b0 aligned" in moved.description


def test_gamma_signal_limits():
    d = np.array([0.3e-3, 1.0e-3, 2.0e-3])
    # K -> 0 is the mono-exponential; low b matches the DKI expansion exp(-bD + b²D²K/6)
    assert np.allclose(sim.signal_attenuation(1000, d, 0.0), np.exp(-1000 * d))
    b, k = 100.0, 1.0
    dki = np.exp(-b * d + (b * d) ** 2 * k / 6)
    assert np.allclose(sim.signal_attenuation(b, d, k), dki, rtol=1e-3)
    # monotonic in b and positive even where the DKI expansion would turn up
    att = [sim.signal_attenuation(bb, d, 1.0) for bb in (0, 1000, 3000, 10000)]
    assert np.all(np.diff(np.stack(att), axis=0) < 0) and np.all(att[-1] > 0)
    # inverse of the apparent diffusivity
    apparent = -np.log(sim.signal_attenuation(2500, d, 0.8)) / 2500
    assert np.allclose(sim.true_diffusivity(apparent, 2500, 0.8), d)


@pytest.mark.parametrize(
    ("pattern", "max_t", "max_r"), [("drift", 1, 1), ("spikes", 3, 3), ("moderate", 2, 2), ("large", 5, 5)]
)
def test_motion_patterns_bounded(pattern, max_t, max_r):
    params = sim.motion_pattern(pattern, 40, seed=0)
    assert params.shape == (40, 6) and np.all(params[0] == 0)
    assert np.abs(params[:, :3]).max() <= max_t + 1e-9
    assert np.degrees(np.abs(params[:, 3:]).max()) <= max_r + 1e-9
    assert np.abs(params[:, :3]).max() > 0.3 * max_t  # not trivially small
    assert np.all(sim.motion_pattern("none", 5) == 0)


def test_scheme():
    bvals, bvecs = sim.make_scheme(n_b0=3, shells={1000: 20, 2000: 20, 3000: 20}, seed=0)
    assert bvals.size == 63 and bvals[0] == 0 and (bvals == 0).sum() == 3
    assert sorted(set(bvals[bvals > 0])) == [1000, 2000, 3000]
    assert np.allclose(np.linalg.norm(bvecs[bvals > 0], axis=1), 1)
    # nearly uniform: no two directions of a shell closer than 10 degrees (antipodal symmetry)
    shell = bvecs[bvals == 1000]
    cos = np.abs(shell @ shell.T) - 2 * np.eye(len(shell))
    assert np.degrees(np.arccos(cos.max())) > 10


def test_real_phantom_reproduces_source(phantom, ds_xa30):
    """The fit reproduces the measured b=2500 volumes (the model is extrapolated from there)."""
    src = ds_xa30 / "sub-01" / "dwi" / "sub-01_dir-AP_dwi"
    img = nb.load(f"{src}.nii.gz")
    g = fsl_to_ras(read_bvecs(f"{src}.bvec"), img.affine)
    data = img.get_fdata(dtype=np.float32)
    m = phantom.mask
    corr = [np.corrcoef(phantom.signal(2500, g[i])[m], data[..., i][m])[0, 1] for i in (1, 7, 15)]
    # 0.98 for a fit of this run alone; the joint AP+PA fit averages away the run's own
    # eddy-current and susceptibility displacements, which costs some voxelwise agreement
    assert min(corr) > 0.85, corr
    means = [phantom.signal(b, [1, 0, 0])[m].mean() for b in (0, 1000, 2000, 3000)]
    assert np.all(np.diff(means) < 0)
    assert 0.25 < means[1] / means[0] < 0.6  # plausible brain attenuation at b=1000


def test_truth_self_consistent(simulated):
    series, bids, paths = simulated
    points = mask_coordinates(nb.load(paths["mask"]))
    itk = load_itk_series(paths["xfm"])
    assert np.allclose(itk, series.motions, atol=1e-6)
    assert np.allclose(np.load(paths["xfm_npy"]), series.motions)
    errors = transform_errors(itk, series.motions, points)
    assert all(np.allclose(v, 0, atol=1e-4) for v in errors.values())
    assert np.allclose(series.motions[0], np.eye(4))
    # a real motion: the truth differs from the identity by up to several mm
    moved = transform_errors(series.motions, np.tile(np.eye(4), (len(series.bvals), 1, 1)), points)
    assert 2.0 < moved["mean_disp"].max() < 12.0
    acc = accuracy(
        series.motions,
        series.motions,
        points,
        est_bvecs=series.head_bvecs,
        true_bvecs=series.head_bvecs,
        affine=series.affine,
    )
    assert acc["median_mean_disp"] < 1e-6 and acc["max_bvec_err"] < 1e-3


def test_head_frame_bvecs_rotated_by_truth(simulated):
    series, _, paths = simulated
    file_ras = fsl_to_ras(read_bvecs(paths["bvec"]), series.affine)
    head_ras = fsl_to_ras(read_bvecs(paths["head_bvec"]), series.affine)
    dw = series.bvals > 0
    rotated = np.einsum("nij,nj->ni", series.motions[:, :3, :3], head_ras)
    assert np.allclose(rotated[dw], file_ras[dw], atol=1e-5)  # g_file = R g_head
    angles = bvec_angular_error(read_bvecs(paths["bvec"]), read_bvecs(paths["head_bvec"]), series.affine)
    assert np.nanmax(angles) > 2.0  # large motion: the rotation matters
    assert np.all(np.isnan(angles[~dw]))


def test_moved_volumes_carry_head_frame_contrast(phantom):
    """Undoing the motion gives the head-frame signal of g_head, not of the file's gradient."""
    bvals = np.array([0.0, 1000.0])
    bvecs = np.array([[0, 0, 0], [1.0, 0, 0]])
    params = np.array([np.zeros(6), [1.0, -1.0, 0.5, 0, 0, 30 * DEG]])
    series = sim.simulate_series(phantom, bvals=bvals, bvecs_ras=bvecs, params=params, snr=None)
    back = resample_volume(
        series.data[..., 1], series.affine, series.motions[1], series.affine, phantom.shape
    )
    from scipy import ndimage as ndi

    inner = ndi.binary_erosion(phantom.mask, iterations=3)
    g_head = fsl_to_ras(series.head_bvecs, series.affine)[1]
    assert np.degrees(np.arccos(abs(g_head @ bvecs[1]))) == pytest.approx(30, abs=0.01)
    err_head = np.abs(back - phantom.signal(1000, g_head))[inner].mean()
    err_file = np.abs(back - phantom.signal(1000, bvecs[1]))[inner].mean()
    assert err_head < 0.6 * err_file, (err_head, err_file)


def test_signal_and_noise_ranges(simulated, phantom):
    series, _, _ = simulated
    data = series.data
    assert np.isfinite(data).all() and data.min() >= 0
    m = series.mask
    b0, dw = data[..., series.bvals == 0].mean(-1), data[..., series.bvals > 0]
    assert np.all(dw[m].mean(0) < b0[m].mean())
    assert series.sigma == pytest.approx(phantom.s0()[m].mean() / 20)
    # background (no signal, far from the head) is Rayleigh noise: mean = sigma sqrt(pi/2)
    corner = data[:8, :8, :4, 0]
    assert corner.mean() == pytest.approx(series.sigma * np.sqrt(np.pi / 2), rel=0.15)


def test_bids_is_collected(simulated):
    from dmriprep_motion.bids import collect_runs

    series, bids, paths = simulated
    runs = collect_runs(bids)
    found = [r for subject in runs.values() for r in subject]
    assert len(found) == 1
    assert found[0].dwi == paths["dwi"] and found[0].shape[-1] == len(series.bvals)
    desc = json.loads((bids / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "raw" and "BIDSVersion" in desc
    assert np.allclose(np.loadtxt(paths["bval"]), series.bvals)
    truth = sim.load_truth(bids)
    assert np.allclose(truth["xfm"], series.motions) and truth["params"].shape == (len(series.bvals), 6)


def test_run_measured_counts_cpu_of_grandchildren(tmp_path):
    """CPU time includes the descendants a child waited for (e.g. Nipype workers and ANTs)."""
    from dmriprep_motion.testing.metrics import run_measured

    spin = "import time; t = time.process_time(); exec('while time.process_time() - t < 0.6: pass')"
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {spin!r}], check=True)"
    res = run_measured([sys.executable, "-c", child], log=tmp_path / "log.txt")
    assert res.returncode == 0 and res.cpu_time >= 0.6 and res.wall_time >= 0.6
    assert res.load > 0 and res.peak_rss > 0


def test_mni_phantom():
    ph = sim.mni_phantom(resolution=4.0)
    assert ph.mask.sum() * 64 / 1000 == pytest.approx(1500, rel=0.3)  # ~1.5 l of brain
    s0 = ph.s0()
    wm = ph.compartments[0]
    # anisotropy in white matter: signal depends on the gradient direction
    core = wm.s0 > 0.9 * 800 * 0.9
    sx, sy, sz = (ph.signal(1000, g)[core] for g in np.eye(3))
    spread = np.std([sx, sy, sz], axis=0) / np.mean([sx, sy, sz], axis=0)
    assert np.median(spread) > 0.1
    assert s0[ph.mask].max() > 1500  # CSF bright on b0
    assert ph.signal(1000, [0, 0, 1])[ph.mask].mean() < 0.6 * s0[ph.mask].mean()


def test_slab_acquisition_sees_tissue_moved_into_it(tmp_path):
    """Cut after the motion, a slab's end slice shows the tissue moved in from beyond it (cut
    first, it would be zeros); grid, world coordinates, mask and truth are those of the slab."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-12.0, -12.0, -20.0]
    shape = (12, 12, 20)
    mask = np.zeros(shape, bool)
    mask[3:9, 3:9, 3:17] = True
    head = np.broadcast_to(100.0 + 10.0 * np.arange(shape[2]), shape) * (1.0 + mask)
    compartment = sim.Compartment(s0=head, tensor=np.zeros((*shape, 3, 3)))
    ph = sim.Phantom(affine=affine, compartments=[compartment], mask=mask)
    params = np.zeros((2, 6))
    params[1, 2] = -4.0  # the head moves 2 slices down: tissue above the slab enters it
    series = sim.simulate_series(ph, bvals=np.zeros(2), bvecs_ras=np.zeros((2, 3)), params=params, snr=None)
    slab = sim.acquire_slab(series, below=2, above=3)
    assert slab.data.shape == (12, 12, 9, 2) and slab.mask.shape == (12, 12, 9)  # slices 5-13
    assert np.array_equal(slab.mask, mask[:, :, 5:14])
    assert slab.mask[..., 0].any() and slab.mask[..., -1].any()
    assert np.allclose(slab.affine @ [0, 0, 0, 1], affine @ [0, 0, 5, 1])
    assert np.array_equal(slab.data, series.data[:, :, 5:14])
    top = slab.data[..., -1, 1]  # slice 13 shows the head's slice 15, which the slab does not hold
    assert np.allclose(top[mask[..., 15]], 2 * (100.0 + 10.0 * 15), rtol=1e-3)
    assert np.array_equal(slab.motions, series.motions) and np.array_equal(slab.head_bvecs, series.head_bvecs)
    assert slab.metadata["Slab"] == {"below": 2, "above": 3}
    sim.write_bids(slab, tmp_path / "bids")  # the record is JSON-serializable
    with pytest.raises(ValueError, match="no slab"):
        sim.acquire_slab(series, below=8, above=7)


def test_tree_rss_counts_this_process():
    assert tree_rss(__import__("os").getpid()) > 10_000_000


@pytest.mark.slow
def test_demo_recovers_motion(tmp_path, capsys):
    """The demo runs on a tiny configuration, recovers the motion and prints the accuracy.

    This is also the end-to-end recovery test on simulated data: 4 mm MNI phantom, 1 b0 + 10
    directions, moderate motion (median injected mean displacement > 1 mm), SNR 30, sloppy
    registration, one pass.  0.5 mm (1/8 voxel) is the tolerance: a method that failed on a
    volume leaves an error of the size of the injected motion (1-3 mm); see
    benchmarks/README.md for the errors measured at full settings.  ~70-150 s on 2 busy cores.
    """
    from dmriprep_motion.cli.demo import main

    code = main(
        [
            str(tmp_path),
            "--resolution",
            "4",
            "--n-volumes",
            "11",
            "--sloppy",
            "--snr",
            "30",
            "--pattern",
            "moderate",
            "--nprocs",
            "2",
            "--passes",
            "1",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "mean displacement error" in printed and "b-vector angular error" in printed
    acc = json.loads((tmp_path / "accuracy.json").read_text())
    truth = sim.load_truth(tmp_path / "bids")
    injected = transform_errors(truth["xfm"], np.tile(np.eye(4), (11, 1, 1)), mask_coordinates(truth["mask"]))
    assert np.median(injected["mean_disp"][1:]) > 1.0  # the motion to recover is real
    assert acc["median_mean_disp"] < 0.5, acc
    assert acc["median_bvec_err"] < 0.5, acc


def test_matrix_helpers_agree():
    """Rotations about the centroid keep the centroid where the translation puts it."""
    center = np.array([10.0, -20.0, 5.0])
    mot = sim.motion_about_center(np.array([[1.0, 2.0, 3.0, 0.1, 0.2, 0.3]]), center)[0]
    assert np.allclose(mot[:3, :3], matrix_from_params([0, 0, 0, 0.1, 0.2, 0.3])[:3, :3])
    assert np.allclose(nb.affines.apply_affine(mot, center), center + [1, 2, 3])


def test_accuracy_separates_common_offset():
    rng = np.random.default_rng(0)
    points = rng.uniform(-60, 60, size=(500, 3))
    params = rng.uniform(-1, 1, size=(8, 6)) * [2, 2, 2, 0.03, 0.03, 0.03]
    truth = np.stack([matrix_from_params(p) for p in params])
    offset = matrix_from_params([0.3, -0.2, 0.1, 0.004, 0.0, -0.003])
    acc = accuracy(truth @ offset, truth, points)
    expected = transform_errors(offset, np.eye(4), points)["mean_disp"][0]
    assert acc["median_mean_disp"] > 0.25
    assert acc["common_offset_disp"] == pytest.approx(expected, rel=0.05)
    assert acc["median_mean_disp_offset_removed"] < 0.02


def test_accuracy_removes_each_shell_offset():
    """Shells tied to the b0 with different offsets: per-group removal leaves only the noise."""
    rng = np.random.default_rng(1)
    points = rng.uniform(-60, 60, size=(500, 3))
    params = rng.uniform(-1, 1, size=(13, 6)) * [2, 2, 2, 0.03, 0.03, 0.03]
    truth = np.stack([matrix_from_params(p) for p in params])
    groups = np.array([0] + [1, 2] * 6)
    offsets = {
        1: matrix_from_params([0.4, 0, 0, 0, 0, 0]),
        2: matrix_from_params([0, -0.5, 0.2, 0, 0.005, 0]),
    }
    estimated = np.stack([t @ offsets.get(g, np.eye(4)) for t, g in zip(truth, groups, strict=True)])
    acc = accuracy(estimated, truth, points, groups=groups)
    assert acc["median_mean_disp_offset_removed"] > 0.2  # one common offset cannot explain both
    assert acc["median_mean_disp_group_offsets_removed"] < 1e-6
    for label, offset in offsets.items():
        expected = transform_errors(offset, np.eye(4), points)["mean_disp"][0]
        assert acc["group_offsets_disp"][label] == pytest.approx(expected, rel=1e-6)
