"""Leave-one-volume-out models on DIPY's real small_64D crop and on ds-xa30."""

import nibabel as nb
import numpy as np
import pytest

from dmriprep_motion.gradients import load_gradient_table
from dmriprep_motion.models import MODEL_NAMES, ModelError, choose_model, get_model


@pytest.fixture(scope="module")
def small_64d():
    from dipy.data import get_fnames

    fimg, fbval, fbvec = get_fnames(name="small_64D")
    data = np.asanyarray(nb.load(fimg).dataobj, dtype=np.float32)
    gtab = load_gradient_table(fbval, fbvec, data.shape[-1])
    voxels = data.reshape(-1, data.shape[-1])
    voxels = voxels[voxels[:, 0] > np.percentile(voxels[:, 0], 20)]
    return voxels, gtab


def _rel_rmse(pred, truth):
    return float(np.sqrt(np.mean((pred - truth) ** 2)) / truth.mean())


@pytest.mark.parametrize("name", ["b0", "avgdwi", "dti", "gp"])
def test_target_never_enters_its_own_fit(small_64d, name):
    data, gtab = small_64d
    model = get_model(name)
    target = gtab.dwi_indices[7]
    reference = model.predict(data, gtab.bvals, gtab.bvecs, target)
    corrupted = data.copy()
    corrupted[:, target] = np.random.default_rng(1).uniform(0, 5000, size=data.shape[0])
    assert np.array_equal(model.predict(corrupted, gtab.bvals, gtab.bvecs, target), reference)


def test_dki_never_uses_target_multishell(small_64d):
    data, gtab = small_64d
    bvals = gtab.bvals.copy()
    bvals[1::2][bvals[1::2] > 0] = 2000  # a synthetic second shell (labels only)
    model = get_model("dki")
    target = 5
    ref = model.predict(data, bvals, gtab.bvecs, target)
    corrupted = data.copy()
    corrupted[:, target] = 1.0
    assert np.array_equal(model.predict(corrupted, bvals, gtab.bvecs, target), ref)


def test_excluded_volumes_do_not_enter_the_fit(small_64d):
    data, gtab = small_64d
    model = get_model("gp")
    train = np.ones(gtab.bvals.size, dtype=bool)
    train[[10, 11]] = False
    ref = model.predict(data, gtab.bvals, gtab.bvecs, 3, train=train)
    corrupted = data.copy()
    corrupted[:, [10, 11]] = 0.0
    assert np.array_equal(model.predict(corrupted, gtab.bvals, gtab.bvecs, 3, train=train), ref)


def test_signal_models_beat_the_shell_average(small_64d):
    data, gtab = small_64d
    errors = {name: [] for name in ("avgdwi", "dti", "gp")}
    for target in gtab.dwi_indices[::8]:
        for name in errors:
            pred = get_model(name).predict(data, gtab.bvals, gtab.bvecs, target)
            errors[name].append(_rel_rmse(pred, data[:, target]))
    mean = {k: np.mean(v) for k, v in errors.items()}
    assert mean["dti"] < 0.8 * mean["avgdwi"]
    assert mean["gp"] < 0.8 * mean["avgdwi"]


def test_predictions_are_finite_and_nonnegative(small_64d):
    data, gtab = small_64d
    for name in ("b0", "avgdwi", "dti", "gp"):
        pred = get_model(name).predict(data, gtab.bvals, gtab.bvecs, 2)
        assert pred.shape == (data.shape[0],)
        assert np.isfinite(pred).all() and (pred >= 0).all()


def test_dki_refuses_single_shell(small_64d):
    _, gtab = small_64d
    with pytest.raises(ModelError, match="shells"):
        get_model("dki").check(gtab.bvals, gtab.bvecs)


def test_dti_refuses_too_few_directions():
    bvals = np.array([0, 1000, 1000, 1000, 1000, 1000])
    with pytest.raises(ModelError, match="at least 7"):
        get_model("dti").check(bvals, np.zeros((6, 3)))


SIX = (
    np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]])
    / np.array([1, 1, 1, np.sqrt(2), np.sqrt(2), np.sqrt(2)])[:, None]
)


def test_direction_groups_are_antipodal_and_tolerant():
    from dmriprep_motion.models import direction_groups, leave_one_out_directions

    tilt = np.deg2rad(1.0)  # within SAME_DIRECTION_DEG of x
    vecs = np.array([[0, 0, 0], [1, 0, 0], [-1, 0, 0], [np.cos(tilt), np.sin(tilt), 0], [0, 1, 0],
                     [np.cos(5 * tilt), np.sin(5 * tilt), 0]])  # fmt: skip
    labels = direction_groups(vecs)
    assert labels.tolist() == [-1, 0, 0, 0, 1, 2]
    assert leave_one_out_directions(labels) == (3, 2)  # y and the 5° one are single
    assert leave_one_out_directions(direction_groups(vecs[:4])) == (1, 1)
    assert leave_one_out_directions(np.array([-1, -1])) == (0, 0)


@pytest.mark.parametrize(
    ("vecs", "model", "ok"),
    [
        (np.vstack([SIX, [0.5774, 0.5774, 0.5774]]), "dti", True),  # 7 distinct
        (np.vstack([SIX, -SIX]), "dti", True),  # 6 distinct, each twice (antipodal)
        (SIX, "dti", False),  # leaving one out leaves 5
        (np.vstack([SIX[:3], SIX[:3], SIX[:1]]), "dti", False),  # 7 volumes, 3 directions
        (np.vstack([SIX[:3], SIX[:1]]), "gp", False),  # 4 volumes, 3 directions, one single
        (np.vstack([SIX[:3], SIX[:3]]), "gp", True),  # 3 directions, each twice
    ],
)
def test_distinct_directions_not_volumes(vecs, model, ok):
    bvals = np.r_[0.0, np.full(len(vecs), 1000.0)]
    bvecs = np.vstack([[0, 0, 0], vecs])
    if ok:
        get_model(model).check(bvals, bvecs)
    else:
        with pytest.raises(ModelError, match="distinct gradient directions"):
            get_model(model).check(bvals, bvecs)


def test_dti_refuses_coplanar_directions():
    angles = np.arange(9) * np.pi / 9
    bvecs = np.vstack([[0, 0, 0], np.column_stack([np.cos(angles), np.sin(angles), np.zeros(9)])])
    with pytest.raises(ModelError, match="9 distinct gradient directions and 1 shell"):
        get_model("dti").check(np.r_[0.0, np.full(9, 1000.0)], bvecs)


def test_leave_one_out_full_rank():
    from dmriprep_motion.models import leave_one_out_full_rank

    design = np.array([[1.0, 0], [0, 1], [0, 1]])
    assert not leave_one_out_full_rank(design, np.array([True, True, True]))  # row 0 is essential
    assert leave_one_out_full_rank(design, np.array([False, True, True]))
    assert leave_one_out_full_rank(np.vstack([design, [1000.0, 0]]), np.ones(4, bool))  # scale-free
    assert not leave_one_out_full_rank(np.array([[1.0, 2], [2, 4], [3, 6]]), np.zeros(3, bool))


def test_auto_model_counts_directions():
    bvals = np.r_[0.0, np.full(8, 1000.0)]
    few = np.vstack([[0, 0, 0], np.tile(SIX[:2], (4, 1))])
    model, why = choose_model(bvals, 50.0, bvecs=few)
    assert model == "avgdwi" and why.startswith("2 distinct gradient directions in 8")
    assert choose_model(bvals, 50.0, bvecs=np.vstack([[0, 0, 0], SIX, SIX[:2]]))[0] == "gp"


def test_unknown_model():
    with pytest.raises(ModelError, match="unknown model"):
        get_model("nope")


def test_auto_model_choice():
    assert choose_model(np.array([0] + [1000] * 30))[0] == "gp"
    assert choose_model(np.array([0, 1000, 1000, 1000, 1000, 1000]))[0] == "avgdwi"
    assert choose_model(np.array([0, 1000, 1000]))[0] == "b0"
    assert set(MODEL_NAMES) == {"b0", "avgdwi", "dti", "dki", "gp"}


def test_dti_closed_form_equals_dipy_least_squares(small_64d):
    """The one-pseudo-inverse prediction is DIPY's own log-linear least-squares fit, predicted."""
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    data, gtab = small_64d
    data = data[(data > 0).all(axis=1)][:300].astype(np.float64)
    target = int(gtab.dwi_indices[5])
    train = np.arange(gtab.bvals.size) != target
    ours = get_model("dti").predict(data, gtab.bvals, gtab.bvecs, target)
    fit = TensorModel(
        gradient_table(gtab.bvals[train], bvecs=gtab.bvecs[train]), fit_method="OLS", return_S0_hat=True
    ).fit(data[:, train])
    one = gradient_table(gtab.bvals[[target]], bvecs=gtab.bvecs[[target]])
    dipy = np.asarray(fit.predict(one, S0=fit.S0_hat))[..., 0]
    assert np.mean(np.isclose(ours, dipy, rtol=1e-4)) > 0.99  # DIPY floors low signals its own way
    assert np.allclose(ours, dipy, rtol=5e-3)


def _two_shells(small_64d):
    """small_64D's voxels with every other diffusion-weighted volume relabelled b=2000 (and
    attenuated): enough to exercise the per-shell normalisation of the GP."""
    data, gtab = small_64d
    data = data[:400].astype(np.float32).copy()
    bvals = gtab.bvals.astype(float).copy()
    second = gtab.dwi_indices[::2]
    bvals[second] = 2000.0
    data[:, second] *= 0.6
    return data, bvals, gtab.bvecs


@pytest.mark.parametrize("shells", [1, 2])
def test_gp_prediction_is_its_definition(small_64d, shells):
    """The GP predicts mean_t (1 + Σ_k w_k (x_k / mean_s(k) - 1)), with each shell's mean over
    its training volumes, and picks the hyper-parameters with the least leave-one-out error
    over the grid (each candidate's residuals computed one volume at a time, here)."""
    from dmriprep_motion.gradients import shell_labels
    from dmriprep_motion.models import GPModel

    if shells == 1:
        data, gtab = small_64d
        data, bvals, bvecs = data[:400].astype(np.float32), gtab.bvals.astype(float), gtab.bvecs
    else:
        data, bvals, bvecs = _two_shells(small_64d)
    labels = shell_labels(bvals)
    target = int(np.flatnonzero(labels > 0)[7])
    train = np.ones(bvals.size, dtype=bool)
    train[[target, int(np.flatnonzero(labels > 0)[3])]] = False  # and one excluded volume
    model = GPModel(free_water=None)  # the GP alone (the free-water taper: its own test)
    pred = model.predict(data, bvals, bvecs, target, train=train)

    cols = np.flatnonzero(train & (labels > 0))
    means = {
        lab: data[:, train & (labels == lab)].mean(axis=1, dtype=np.float64) for lab in set(labels[cols])
    }
    resid = np.stack([data[:, c] / means[labels[c]] - 1.0 for c in cols], axis=1)
    theta = GPModel._angles(bvecs[np.append(cols, target)])
    logb = np.log(bvals[np.append(cols, target)])

    def loo_error(a, lam, scale):
        kernel = model._kernel(theta[:-1, :-1], logb[:-1], a, scale) + lam * np.eye(cols.size)
        errors = []
        for j in range(cols.size):
            rest = np.arange(cols.size) != j
            # kernel[rest, j]: covariances with the others, free of the volume's own noise term
            w = np.linalg.solve(kernel[np.ix_(rest, rest)], kernel[rest, j])
            errors.append(resid[:, j] - resid[:, rest] @ w)
        return float(np.mean(np.square(errors)))

    grid = [(a, lam, s) for s in (GPModel.log_b_scales if shells == 2 else [None])
            for a in GPModel.angles for lam in GPModel.ratios]  # fmt: skip
    best = min(grid, key=lambda h: loo_error(*h))
    chosen = model.hyperparameters
    assert (chosen["a"], chosen["lambda"], chosen["log_b_scale"] or None) == best

    a, lam, scale = best
    full = model._kernel(theta, logb, a, scale)
    weights = np.linalg.solve(full[:-1, :-1] + lam * np.eye(cols.size), full[:-1, -1])
    expected = np.clip(means[labels[target]] * (1.0 + resid @ weights), 0.0, None)
    np.testing.assert_allclose(pred, expected, rtol=2e-5, atol=1e-4 * float(expected.mean()))


def test_gp_tapers_the_directional_part_in_free_water():
    """A free-water voxel is predicted as its shell's mean whatever its directional pattern; a
    tissue voxel keeps its anisotropy; in between, part of the directional part is kept."""
    from dmriprep_motion.models import GPModel
    from dmriprep_motion.testing.simulate import hemisphere_directions

    bvecs = np.vstack([np.zeros(3), hemisphere_directions(30)])
    bvals = np.r_[0.0, np.full(30, 1000.0)]
    tensor = np.diag([1.7e-3, 0.3e-3, 0.3e-3])  # white matter along x
    quad = np.einsum("ij,jk,ik->i", bvecs, tensor, bvecs)
    rng = np.random.default_rng(0)
    tissue = 1000.0 * np.exp(-bvals * quad) * rng.normal(1.0, 0.005, (200, 31))
    # the same relative directional pattern on voxels of mean diffusivity 3.0 (free water) and
    # 2.0 (halfway through the taper): what motion at the edge of CSF looks like to the model
    pattern = np.exp(-bvals * quad) / np.exp(-bvals * quad)[1:].mean()
    water = 1000.0 * np.exp(-bvals * 3.0e-3) * pattern * rng.normal(1.0, 0.005, (100, 31))
    middle = 1000.0 * np.exp(-bvals * 2.0e-3) * pattern * rng.normal(1.0, 0.005, (100, 31))
    data = np.vstack([tissue, water, middle]).astype(np.float32)
    data[:, 0] = 1000.0
    target = 5
    kept, tapered = (
        GPModel(free_water=fw).predict(data, bvals, bvecs, target) for fw in (None, GPModel.free_water_adc)
    )
    shell_mean = np.delete(data[:, 1:], target - 1, axis=1).mean(axis=1)
    sl = {"tissue": slice(0, 200), "water": slice(200, 300), "middle": slice(300, 400)}
    # tissue: unchanged, and closer to the volume than the shell mean is (by half or more)
    np.testing.assert_array_equal(tapered[sl["tissue"]], kept[sl["tissue"]])
    err = np.abs(kept[sl["tissue"]] - data[sl["tissue"], target]).mean()
    assert err < 0.5 * np.abs(shell_mean[sl["tissue"]] - data[sl["tissue"], target]).mean()
    # free water: the shell mean exactly, while the GP alone follows the pattern
    np.testing.assert_allclose(tapered[sl["water"]], shell_mean[sl["water"]], rtol=1e-5)
    assert np.abs(kept[sl["water"]] / shell_mean[sl["water"]] - 1).mean() > 0.1
    # halfway (apparent diffusivity about 2.0e-3): about half of the directional part is kept
    ratio = (tapered[sl["middle"]] - shell_mean[sl["middle"]]) / (
        kept[sl["middle"]] - shell_mean[sl["middle"]]
    )
    assert 0.4 < float(np.median(ratio)) < 0.6


@pytest.mark.parametrize("kind", ["float32 file", "scaled int16 file", "in memory"])
def test_masked_series_is_data_indexed_by_mask(tmp_path, kind):
    """The prediction node reads the mask voxels in file order; same values, same voxel order."""
    from dmriprep_motion.interfaces.models import masked_series

    rng = np.random.default_rng(3)
    data = rng.random((9, 8, 7, 5)) * 300
    mask = rng.random((9, 8, 7)) > 0.4
    if kind == "in memory":
        img = nb.Nifti1Image(data.astype(np.float64), np.eye(4))
    else:
        img = nb.Nifti1Image(data.astype(np.float32 if kind == "float32 file" else np.int16), np.eye(4))
        if kind != "float32 file":
            img.header.set_slope_inter(0.5, 10.0)
        nb.save(img, tmp_path / "dwi.nii")
        img = nb.load(tmp_path / "dwi.nii")
    got = masked_series(img, mask)
    assert got.dtype == np.float32 and got.shape == (mask.sum(), 5)
    np.testing.assert_array_equal(got, np.asanyarray(img.dataobj, dtype=np.float32)[mask])


def test_a_worker_reads_the_series_once_per_pass(tmp_path, monkeypatch):
    """The predictions of a pass share one read of the series, read-only; a rewritten file or
    another mask is read again; a series above the cap is not kept."""
    import os

    from dmriprep_motion.interfaces import models as imodels
    from dmriprep_motion.interfaces.models import masked_series

    rng = np.random.default_rng(4)
    mask = rng.random((8, 7, 6)) > 0.3
    nb.Nifti1Image(mask.astype(np.uint8), np.eye(4)).to_filename(tmp_path / "mask.nii")
    nb.Nifti1Image(rng.random((8, 7, 6, 5)).astype(np.float32), np.eye(4)).to_filename(tmp_path / "dwi.nii")
    reads = []
    monkeypatch.setattr(imodels, "masked_series", lambda img, m: reads.append(1) or masked_series(img, m))
    files = (str(tmp_path / "dwi.nii"), str(tmp_path / "mask.nii"))
    first = imodels.load_masked_series(*files)
    second = imodels.load_masked_series(*files)
    assert len(reads) == 1 and second[1] is first[1]
    np.testing.assert_array_equal(first[0], mask)
    np.testing.assert_array_equal(first[1], masked_series(nb.load(files[0]), mask))
    with pytest.raises(ValueError, match="read-only"):
        first[1][0, 0] = 1.0
    # the next pass writes another series at the same path: read again
    nb.Nifti1Image(rng.random((8, 7, 6, 5)).astype(np.float32), np.eye(4)).to_filename(files[0])
    stat = os.stat(files[0])
    os.utime(files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
    third = imodels.load_masked_series(*files)
    assert len(reads) == 2 and not np.array_equal(third[1], first[1])
    monkeypatch.setattr(imodels, "CACHE_MAX_BYTES", 10)
    imodels._CACHE.clear()
    imodels.load_masked_series(*files)
    imodels.load_masked_series(*files)
    assert len(reads) == 4 and not imodels._CACHE
