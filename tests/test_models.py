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
