"""Estimation strategy: anchoring, early stopping, outliers, presets, seeds, affine confounds."""

import json
import logging
import math
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from dmriprep_motion.confounds import confounds_table
from dmriprep_motion.data import registration_preset
from dmriprep_motion.interfaces.registration import SkippableRegistration
from dmriprep_motion.interfaces.transforms import AnchorShells, CheckConvergence, anchor_targets
from dmriprep_motion.motion import load_itk, matrix_from_params, motion_parameters, write_itk
from dmriprep_motion.outliers import flag_outliers, robust_z
from dmriprep_motion.workflows.registration import configure_registration

DEG = np.pi / 180


def _anchor(tmp_path, mats, bvals, method="median", transform="Rigid"):
    np.save(tmp_path / "in.npy", mats)
    (tmp_path / "b.bval").write_text(" ".join(str(b) for b in bvals))
    node = AnchorShells(
        in_ras=str(tmp_path / "in.npy"), in_bval=str(tmp_path / "b.bval"), method=method, transform=transform
    )
    res = node.run(cwd=str(tmp_path))
    return np.load(res.outputs.out_ras)


def test_median_anchor_removes_common_motion_only(tmp_path):
    rng = np.random.default_rng(3)
    bvals = [0] + [1000] * 9 + [2000] * 9
    relative = [np.eye(4)] + [
        matrix_from_params(np.r_[rng.normal(0, 0.5, 3), rng.normal(0, 0.5, 3) * DEG]) for _ in range(18)
    ]
    common = {1000: matrix_from_params([1.0, -2.0, 0.5, 2 * DEG, 0, -1 * DEG]), 2000: np.eye(4)}
    # Make each shell's median exactly zero before adding the common part.
    mats = np.stack(relative)
    for b in (1000, 2000):
        sel = np.array(bvals) == b
        med = matrix_from_params(np.median(motion_parameters(mats[sel]), axis=0))
        mats[sel] = mats[sel] @ np.linalg.inv(med) @ common[b]
    out = _anchor(tmp_path, mats, bvals)
    assert np.allclose(out[0], np.eye(4))  # the reference b0 is untouched
    for b in (1000, 2000):
        sel = np.array(bvals) == b
        assert np.allclose(np.median(motion_parameters(out[sel]), axis=0), 0, atol=2e-3)
        # Volumes keep their positions relative to each other.
        assert np.allclose(
            out[sel][1] @ np.linalg.inv(out[sel][0]), mats[sel][1] @ np.linalg.inv(mats[sel][0])
        )


def test_median_anchor_ignores_spikes(tmp_path):
    bvals = [0] + [1000] * 10
    mats = np.tile(np.eye(4), (11, 1, 1))
    mats[3] = matrix_from_params([5, 0, 0, 5 * DEG, 0, 0])
    out = _anchor(tmp_path, mats, bvals)
    assert np.allclose(out, mats)


def test_anchor_none_passes_through(tmp_path):
    mats = np.stack(
        [np.eye(4), matrix_from_params([1, 2, 3, 0, 0, 0]), matrix_from_params([1, 2, 3, 0, 0, 0])]
    )
    assert np.allclose(_anchor(tmp_path, mats, [0, 1000, 1000], method="none"), mats)


def test_anchor_targets():
    """What each shell's mean is registered to: the b0, the next lower shell, or nothing."""
    assert anchor_targets([1000, 2000, 3000], "auto") == [0, 1, 2]
    assert anchor_targets([500, 1000, 3000], "auto") == [0, 0, 2]
    assert anchor_targets([2500], "auto") == [None]  # ds-xa30: the median anchor
    assert anchor_targets([2000, 3000], "auto") == [None, 1]
    assert anchor_targets([1000, 3000], "auto", max_bval=5000) == [0, 0]
    assert anchor_targets([1000, 3000], "registration") == [0, 0]
    assert anchor_targets([1000, 3000], "median") == anchor_targets([1000, 3000], "none") == [None, None]


def test_auto_anchor_chains_high_shells_to_the_next_lower_one(tmp_path):
    """``auto``: the b=1000 shell gets its registration to the b0; the b=3000 shell, registered to
    the b=1000 mean, gets that registration composed with the b=1000 correction; unregistered, the
    median correction."""
    rng = np.random.default_rng(5)
    bvals = [0] + [1000, 3000] * 7
    mats = np.stack(
        [np.eye(4)]
        + [matrix_from_params(np.r_[rng.normal(0, 1, 3), rng.normal(0, 1, 3) * DEG]) for _ in range(14)]
    )
    registered = {
        1: matrix_from_params([0.4, -0.3, 0.2, 0, 0, 0.01]),
        2: matrix_from_params([3, 0, 0, 0.02, 0, 0]),
    }
    for label, mat in registered.items():
        write_itk(tmp_path / f"shell{label}.txt", mat)
    np.save(tmp_path / "in.npy", mats)
    (tmp_path / "b.bval").write_text(" ".join(str(b) for b in bvals))
    node = AnchorShells(
        in_ras=str(tmp_path / "in.npy"), in_bval=str(tmp_path / "b.bval"), method="auto",
        shells=[1, 2], shell_xforms=[str(tmp_path / "shell1.txt"), str(tmp_path / "shell2.txt")],
    )  # fmt: skip
    out = np.load(node.run(cwd=str(tmp_path)).outputs.out_ras)
    low, high = np.array(bvals) == 1000, np.array(bvals) == 3000
    assert np.allclose(out[low], mats[low] @ registered[1])
    assert np.allclose(out[high], mats[high] @ registered[2] @ registered[1])
    assert np.allclose(out[0], np.eye(4))
    # a skipped registration (no transform) falls back to the median correction
    node.inputs.shell_xforms = [str(tmp_path / "shell1.txt"), []]
    out = np.load(node.run(cwd=str(tmp_path)).outputs.out_ras)
    assert np.allclose(out[low], mats[low] @ registered[1])
    assert np.allclose(np.median(motion_parameters(out[high]), axis=0), 0, atol=2e-3)


def test_shell_means_pair_each_shell_with_its_registration_target(tmp_path):
    """``--anchor auto``: b=1000 to the b0 reference, b=3000 to the b=1000 mean; a lone shell above
    b=1500 is not registered (median); ``registration`` registers every shell to the b0."""
    from dmriprep_motion.interfaces.dwi import ShellMeans
    from dmriprep_motion.workflows.anchor import init_shell_anchor_wf

    nb.Nifti1Image(np.ones((4, 4, 4, 5), np.float32), np.eye(4)).to_filename(tmp_path / "dwi.nii")
    nb.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)).to_filename(tmp_path / "ref.nii")
    np.save(tmp_path / "x.npy", np.tile(np.eye(4), (5, 1, 1)))
    inputs = {"in_file": str(tmp_path / "dwi.nii"), "in_xforms": str(tmp_path / "x.npy"),
              "in_bval": str(tmp_path / "b.bval"), "in_reference": str(tmp_path / "ref.nii")}  # fmt: skip
    (tmp_path / "b.bval").write_text("0 1000 3000 1000 3000")
    for method, fixed in (("auto", ["ref.nii", "shell01_mean.nii"]), ("registration", ["ref.nii"] * 2)):
        out = ShellMeans(**inputs, method=method).run(cwd=str(tmp_path)).outputs
        assert [Path(f).name for f in out.fixed_files] == fixed and out.skip == [False, False]
        assert [Path(f).name for f in out.out_files] == ["shell01_mean.nii", "shell02_mean.nii"]
    (tmp_path / "b.bval").write_text("0 2500 2500 2500 2500")
    assert ShellMeans(**inputs).run(cwd=str(tmp_path)).outputs.skip == [True]
    wf = init_shell_anchor_wf(anchor="auto", anchor_settings=registration_preset("shell", "Rigid", False))
    means, align = wf.get_node("shell_means"), wf.get_node("align_shells")
    assert means.interface.inputs.method == "auto"
    links = wf._graph.get_edge_data(means, align)["connect"]
    assert {("skip", "skip"), ("fixed_files", "fixed_image"), ("out_files", "moving_image")} <= set(links)
    assert {"skip", "fixed_image", "moving_image"} <= set(align.iterfield)


def test_shell_means_write_the_series_they_average(tmp_path):
    """The resampled series written for the similarity is the one the shell means average."""
    from dmriprep_motion.interfaces.dwi import ShellMeans
    from dmriprep_motion.motion import resample_series

    rng = np.random.default_rng(11)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    img = nb.Nifti1Image(rng.random((12, 12, 10, 5)).astype(np.float32), affine)
    img.to_filename(tmp_path / "dwi.nii")
    nb.Nifti1Image(np.ones((12, 12, 10), np.float32), affine).to_filename(tmp_path / "ref.nii")
    xforms = np.stack([np.eye(4)] + [matrix_from_params(p) for p in rng.normal(0, 0.5, (4, 6))])
    np.save(tmp_path / "x.npy", xforms)
    (tmp_path / "b.bval").write_text("0 1000 3000 1000 3000")
    out = ShellMeans(
        in_file=str(tmp_path / "dwi.nii"), in_xforms=str(tmp_path / "x.npy"),
        in_bval=str(tmp_path / "b.bval"), in_reference=str(tmp_path / "ref.nii"), num_threads=2,
    ).run(cwd=str(tmp_path)).outputs  # fmt: skip
    series = nb.load(out.out_series).get_fdata(dtype=np.float32)
    assert np.array_equal(series, resample_series(img, xforms))
    for mean_file, members in zip(out.out_files, ([1, 3], [2, 4]), strict=True):
        assert np.allclose(nb.load(mean_file).get_fdata(), series[..., members].mean(-1), atol=1e-6)


def test_similarity_scores_each_volume_in_the_frame_of_its_transform(tmp_path):
    """A volume that its last-pass transform puts onto its prediction scores ~1; b0s score
    against the reference, in the frame of their own transforms too.

    The original volume is the blob moved by ``G⁻¹`` (``vol(x) = blob(G⁻¹ x)``); resampled with
    ``G`` it is the blob again, which is the prediction.  Scored as it was acquired (identity
    transforms) it matches less.
    """
    from nipype.interfaces.base import Undefined

    from dmriprep_motion.interfaces.dwi import VolumeSimilarity
    from dmriprep_motion.motion import resample_series, resample_volume

    grid = np.mgrid[:24, :24, :20].astype(np.float32)
    blob = np.exp(-(((grid - np.array([11.0, 12.5, 9.0])[:, None, None, None]) / 4.0) ** 2).sum(0))
    blob += 0.5 * np.exp(-(((grid - np.array([6.0, 8.0, 12.0])[:, None, None, None]) / 2.0) ** 2).sum(0))
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    gmat = matrix_from_params([1.2, -0.9, 0.6, 0.03, 0.0, 0.02])
    acquired = resample_volume(blob, affine, np.linalg.inv(gmat), affine, blob.shape)
    b0_moved = resample_volume(blob, affine, gmat, affine, blob.shape)
    nb.Nifti1Image(np.stack([b0_moved, acquired], -1), affine).to_filename(tmp_path / "orig.nii")
    nb.Nifti1Image(blob, affine).to_filename(tmp_path / "pred.nii")
    nb.Nifti1Image(np.ones(blob.shape, np.uint8), affine).to_filename(tmp_path / "mask.nii")
    np.save(tmp_path / "identity.npy", np.tile(np.eye(4), (2, 1, 1)))
    np.save(tmp_path / "last.npy", np.stack([np.linalg.inv(gmat), gmat]))
    node = VolumeSimilarity(
        in_file=str(tmp_path / "orig.nii"), predictions=[str(tmp_path / "pred.nii")], dwi_indices=[1],
        reference=str(tmp_path / "pred.nii"), in_mask=str(tmp_path / "mask.nii"),
        in_xforms=str(tmp_path / "identity.npy"),
    )  # fmt: skip
    as_acquired = node.run(cwd=str(tmp_path)).outputs.similarity
    node.inputs.in_xforms = str(tmp_path / "last.npy")
    corrected = node.run(cwd=str(tmp_path)).outputs.similarity
    assert max(as_acquired) < 0.99 < 0.999 < min(corrected), (as_acquired, corrected)
    # without in_xforms, the series given is already in that frame (the shell means' copy)
    resampled = resample_series(nb.load(tmp_path / "orig.nii"), np.load(tmp_path / "last.npy"))
    nb.Nifti1Image(resampled, affine).to_filename(tmp_path / "resampled.nii")
    node = VolumeSimilarity(**{**node.inputs.get_traitsfree(), "in_file": str(tmp_path / "resampled.nii")})
    node.inputs.in_xforms = Undefined
    assert node.run(cwd=str(tmp_path)).outputs.similarity == corrected


def test_similarity_resamples_in_threads_as_in_series(tmp_path):
    """Resampling several volumes at a time gives the same scores, volume for volume."""
    from dmriprep_motion.interfaces.dwi import VolumeSimilarity

    rng = np.random.default_rng(5)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    data = rng.random((16, 16, 12, 5)).astype(np.float32)
    nb.Nifti1Image(data, affine).to_filename(tmp_path / "orig.nii")
    nb.Nifti1Image(np.ones(data.shape[:3], np.uint8), affine).to_filename(tmp_path / "mask.nii")
    preds = []
    for idx in range(1, 5):
        preds.append(str(tmp_path / f"pred{idx}.nii"))
        nb.Nifti1Image(data[..., idx] + 0.2 * rng.random(data.shape[:3]), affine).to_filename(preds[-1])
    xforms = np.stack([np.eye(4)] + [matrix_from_params(p) for p in rng.normal(0, 0.5, (4, 6))])
    xforms[2] = np.eye(4)  # not moved: scored without resampling
    np.save(tmp_path / "last.npy", xforms)
    inputs = {
        "in_file": str(tmp_path / "orig.nii"),
        "in_xforms": str(tmp_path / "last.npy"),
        "predictions": preds,
        "dwi_indices": [1, 2, 3, 4],
        "reference": str(tmp_path / "pred1.nii"),
        "in_mask": str(tmp_path / "mask.nii"),
    }
    scores = [
        VolumeSimilarity(**inputs, num_threads=threads).run(cwd=str(tmp_path)).outputs.similarity
        for threads in (1, 2, 3)
    ]
    assert scores[0] == scores[1] == scores[2] and len(set(scores[0])) == 5


def test_similarity_reads_a_compressed_series_once(tmp_path, monkeypatch):
    """A .nii.gz series is never sliced volume by volume (each slice re-inflates it)."""
    from nibabel.arrayproxy import ArrayProxy

    from dmriprep_motion.interfaces.dwi import VolumeSimilarity

    rng = np.random.default_rng(3)
    data = rng.random((10, 10, 8, 5)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nb.Nifti1Image(data, affine).to_filename(tmp_path / "orig.nii.gz")
    np.save(tmp_path / "identity.npy", np.tile(np.eye(4), (5, 1, 1)))
    preds = []
    for idx in (1, 2, 3, 4):
        preds.append(str(tmp_path / f"pred{idx}.nii"))
        noisy = data[..., idx] + 0.1 * rng.random(data.shape[:3], np.float32)
        nb.Nifti1Image(noisy, affine).to_filename(preds[-1])
    nb.Nifti1Image(data[..., 0], affine).to_filename(tmp_path / "ref.nii")
    nb.Nifti1Image(np.ones(data.shape[:3], np.uint8), affine).to_filename(tmp_path / "mask.nii")
    slices = []
    original = ArrayProxy.__getitem__

    def counting(proxy, key):
        slices.append(key)
        return original(proxy, key)

    monkeypatch.setattr(ArrayProxy, "__getitem__", counting)
    out = VolumeSimilarity(
        in_file=str(tmp_path / "orig.nii.gz"), in_xforms=str(tmp_path / "identity.npy"), predictions=preds,
        dwi_indices=[1, 2, 3, 4], reference=str(tmp_path / "ref.nii"), in_mask=str(tmp_path / "mask.nii"),
    ).run(cwd=str(tmp_path)).outputs.similarity  # fmt: skip
    assert slices == []
    assert out[0] == pytest.approx(1.0)  # the b0 against itself (the reference)
    for idx, pred in zip((1, 2, 3, 4), preds, strict=True):
        expected = np.corrcoef(data[..., idx].ravel(), nb.load(pred).get_fdata().ravel())[0, 1]
        assert out[idx] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    ("anchor", "threads"), [("auto", 1), ("registration", 1), ("median", 2), ("none", 2)]
)
def test_similarity_runs_next_to_the_anchor_registration(anchor, threads):
    """Scored from the last pass, not the written series; one thread beside a registered anchor."""
    from dmriprep_motion.workflows.hmc import init_dwi_motion_wf

    wf = init_dwi_motion_wf(model="dti", passes=2, anchor=anchor, series_nthreads=2)
    node = wf.get_node("similarity")
    assert node.n_procs == node.inputs.num_threads == threads
    sources = {edge[0].name: edge[2]["connect"] for edge in wf._graph.in_edges(node, data=True)}
    assert "final" not in sources and ("outputnode.predictions", "predictions") in sources["hmc_pass02_wf"]
    if threads == 1:  # the series the anchor resampled, in the last pass's frame
        assert sources["shell_anchor_wf"] == [("outputnode.pass_series", "in_file")]
    else:  # resampled here
        assert ("outputnode.out_ras", "in_xforms") in sources["hmc_pass02_wf"]


def test_every_pass_is_fed_by_the_reference_and_the_previous_pass():
    """Each pass gets every input once the graph is flattened (as it runs), the chained ones from
    the previous pass: Workflow.connect rewrites the connection lists it is given, so a list
    shared by the passes would feed only the first."""
    from dmriprep_motion.workflows.hmc import init_dwi_motion_wf
    from dmriprep_motion.workflows.passes import PASS_INPUTS

    flat = init_dwi_motion_wf(model="dti", passes=3, sloppy=True)._create_flat_graph()
    for index in (1, 2, 3):
        node = next(n for n in flat.nodes if n.fullname.endswith(f"hmc_pass{index:02d}_wf.inputnode"))
        fed = {}
        for source, _, data in flat.in_edges(node, data=True):
            fed.update({dest: source.fullname for _, dest in data["connect"]})
        chained = {"init_xforms", "init_ras"} | ({"prev_change", "prev_predictions"} if index > 1 else set())
        assert set(fed) == set(PASS_INPUTS) - ({"prev_change", "prev_predictions"} - chained)
        previous = "dwi_reference_wf" if index == 1 else f"hmc_pass{index - 1:02d}_wf"
        assert all(previous in fed[field] for field in chained)
        assert all("dwi_reference_wf" in fed[field] for field in set(fed) - chained)


def test_convergence_check():
    assert CheckConvergence(tolerance=0.05).run().outputs.skip is False  # first pass
    assert CheckConvergence(tolerance=0.05, prev_change=0.01).run().outputs.skip is True
    assert CheckConvergence(tolerance=0.05, prev_change=0.2).run().outputs.skip is False
    assert CheckConvergence(tolerance=0.0, prev_change=0.0).run().outputs.skip is False


def test_skipped_registration_returns_initial_transform(tmp_path):
    init = write_itk(tmp_path / "init.txt", matrix_from_params([1, 2, 3, 0.1, 0, 0]))
    img = tmp_path / "img.nii"
    nb.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)).to_filename(img)
    reg = SkippableRegistration(from_file=str(registration_preset("dwi", "Rigid", True)))
    reg.inputs.fixed_image = str(img)
    reg.inputs.moving_image = str(img)
    reg.inputs.initial_moving_transform = [str(init)]
    reg.inputs.skip = True
    res = reg.run(cwd=str(tmp_path))
    assert res.outputs.forward_transforms == [str(init)]
    skipped_cmd = reg.cmdline
    reg.inputs.skip = False
    assert reg.cmdline == skipped_cmd  # skip adds no command-line argument


def test_reference_b0_is_not_registered_to_itself(ds_xa30, tmp_path):
    """The first b0 is the reference: its registration is skipped, the other b0s are aligned to it.

    A copy of ds-xa30's b0, moved by a known rigid motion, is appended as a second b0.  Running
    ANTs on the reference b0 against itself cost 10 s of every run (a fifth of the time the
    b0 reference took to build with one b0) and its transform was discarded.
    """
    from nipype.utils.filemanip import loadpkl

    from dmriprep_motion.motion import mask_coordinates, transform_errors
    from dmriprep_motion.testing.inject import inject_motion
    from dmriprep_motion.workflows.reference import _skip_first, init_dwi_reference_wf

    assert _skip_first(["b0", "b0", "b0"]) == [True, False, False]
    base = ds_xa30 / "sub-01" / "dwi" / "sub-01_dir-AP_dwi"
    img = nb.load(f"{base}.nii.gz")
    data = img.get_fdata(dtype=np.float32)[..., :4]
    data = np.concatenate([data, data[..., :1]], axis=-1)  # volume 4: a second b0
    bvals = np.r_[np.loadtxt(f"{base}.bval")[:4], 0]
    bvecs = np.vstack([np.loadtxt(f"{base}.bvec").T[:4], [0, 0, 0]])
    motion = matrix_from_params([1.2, -0.8, 0.6, 1.5 * DEG, 0, -1 * DEG])
    data, _ = inject_motion(data, img.affine, bvecs, {4: motion})
    nb.Nifti1Image(data, img.affine).to_filename(tmp_path / "dwi.nii.gz")
    np.savetxt(tmp_path / "dwi.bval", bvals[None], fmt="%g")
    np.savetxt(tmp_path / "dwi.bvec", bvecs.T, fmt="%.8f")

    wf = init_dwi_reference_wf(b0_settings=registration_preset("b0", "Rigid", True), seed=7)
    wf.base_dir = str(tmp_path / "work")
    wf.inputs.inputnode.dwi_file = str(tmp_path / "dwi.nii.gz")
    wf.inputs.inputnode.in_bval = str(tmp_path / "dwi.bval")
    wf.inputs.inputnode.in_bvec = str(tmp_path / "dwi.bvec")
    wf.run()
    folder = tmp_path / "work" / "dwi_reference_wf"
    elements = sorted((folder / "align_b0" / "mapflow").glob("_align_b0*"))
    assert len(elements) == 2
    assert not list(elements[0].glob("command.txt")) and not list(elements[0].glob("*.mat"))
    assert len(list(elements[1].glob("*GenericAffine.mat"))) == 1  # the second b0 ran ANTs
    init = np.load(loadpkl(folder / "init" / "result_init.pklz").outputs.out_ras)
    assert np.allclose(init[0], np.eye(4))
    mask = nb.load(loadpkl(folder / "mask" / "result_mask.pklz").outputs.out_mask)
    error = transform_errors(init[[4]], motion[None], mask_coordinates(mask))["mean_disp"][0]
    assert error < 0.3, error
    assert not loadpkl(elements[0] / "result__align_b00.pklz").outputs.forward_transforms


def test_user_registration_config_reaches_cmdline(tmp_path):
    from dmriprep_motion.workflows.hmc import init_dwi_motion_wf

    custom = json.loads(registration_preset("dwi", "Rigid", False).read_text())
    custom.update(
        {
            "metric": ["MeanSquares"],
            "number_of_iterations": [[7, 3, 1]],
            "shrink_factors": [[4, 2, 1]],
            "smoothing_sigmas": [[2.0, 1.0, 0.0]],
        }
    )
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(custom))
    wf = init_dwi_motion_wf(registration_config=path, passes=2, seed=7)
    registers = [n for n in wf._get_all_nodes() if n.name == "register"]
    assert len(registers) == 2
    img = tmp_path / "img.nii"
    nb.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)).to_filename(img)
    for node in registers:
        iface = node.interface
        iface.inputs.fixed_image = str(img)
        iface.inputs.moving_image = str(img)
        cmd = iface.cmdline
        assert "MeanSquares[" in cmd and "[ 7x3x1," in cmd and "--shrink-factors 4x2x1" in cmd
        assert "--random-seed 7" in cmd and iface.inputs.environ["ANTS_RANDOM_SEED"] == "7"


@pytest.mark.parametrize("sloppy", [False, True])
def test_later_passes_register_at_full_resolution_only(sloppy, tmp_path):
    """Pass 1 registers coarse to fine; passes 2+ start close to the answer and skip the coarse levels."""
    from dmriprep_motion.workflows.hmc import init_dwi_motion_wf

    wf = init_dwi_motion_wf(passes=3, sloppy=sloppy)
    img = tmp_path / "img.nii"
    nb.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)).to_filename(img)
    shrink = {}
    for node in wf._get_all_nodes():
        if node.name == "register":
            node.interface.inputs.fixed_image = node.interface.inputs.moving_image = str(img)
            cmd = node.interface.cmdline
            shrink[node.fullname.split(".")[-2]] = cmd.split("--shrink-factors ")[1].split()[0]
    assert shrink == {"hmc_pass01_wf": "2x1x1", "hmc_pass02_wf": "1", "hmc_pass03_wf": "1"}
    assert "full resolution only" in wf.__desc__
    for transform in ("Rigid", "Affine"):
        first, later = (json.loads(registration_preset("dwi", transform, sloppy, refine=r).read_text())
                        for r in (False, True))  # fmt: skip
        assert later["shrink_factors"] == [[1]] and later["smoothing_sigmas"] == [[0.0]]
        same = ("metric", "sampling_strategy", "sampling_percentage", "transforms")
        assert all(first[k] == later[k] for k in same)
    # The rigid first pass works at half resolution and only takes a few full-resolution steps,
    # which the later passes redo (benchmarks/README.md: same accuracy, 60% less pass-1 time).
    first = json.loads(registration_preset("dwi", "Rigid", False).read_text())
    coarse, *fine = first["number_of_iterations"][0]
    assert first["shrink_factors"] == [[2, 1, 1]] and coarse >= 10 * sum(fine)


@pytest.mark.parametrize(
    ("target", "transform", "refine"),
    [("dwi", "Rigid", False), ("dwi", "Rigid", True), ("dwi", "Affine", False), ("dwi", "Affine", True),
     ("b0", "Rigid", False), ("shell", "Rigid", False)],
)  # fmt: skip
def test_sloppy_presets_do_less_work_than_the_precise_ones(target, transform, refine):
    """``--sloppy`` (the tests' setting) must stay the faster one: no more levels, samples or
    iterations than the precise preset it stands for, and less of at least one of them (in
    2026-12, after the precise presets were lightened, the old sloppy ones took 15% longer)."""
    precise, sloppy = (json.loads(registration_preset(target, transform, s, refine=refine).read_text())
                       for s in (False, True))  # fmt: skip
    assert precise["metric"] == sloppy["metric"] and precise["transforms"] == sloppy["transforms"]
    levels = len(precise["shrink_factors"][0])
    sloppy_levels = len(sloppy["shrink_factors"][0])
    fraction = {"None": 1.0}
    samples = (fraction.get(precise["sampling_strategy"][0], precise["sampling_percentage"][0]),
               fraction.get(sloppy["sampling_strategy"][0], sloppy["sampling_percentage"][0]))  # fmt: skip
    iterations = (sum(precise["number_of_iterations"][0]), sum(sloppy["number_of_iterations"][0]))
    assert sloppy_levels <= levels and samples[1] <= samples[0] and iterations[1] <= iterations[0]
    assert sloppy_levels < levels or samples[1] < samples[0] or iterations[1] < iterations[0]


def test_shell_anchor_registers_within_the_brain_mask():
    """The cross-contrast anchor uses the brain mask, not the dilated mask of the fits.

    On the real-data phantom (``real-moderate``, volumes corrected with the true motion), the
    dilated mask put the b0 0.58 mm away from the shell mean; the brain mask, 0.25 mm.
    """
    from dmriprep_motion.workflows.anchor import init_shell_anchor_wf
    from dmriprep_motion.workflows.passes import init_hmc_pass_wf

    wf = init_shell_anchor_wf(anchor="auto", anchor_settings=registration_preset("shell", "Rigid", True))
    inputnode, align = wf.get_node("inputnode"), wf.get_node("align_shells")
    links = dict(wf._graph.get_edge_data(inputnode, align)["connect"])
    assert links == {"brain_mask": "fixed_image_masks"}  # fixed: the reference or a shell mean
    means_links = dict(wf._graph.get_edge_data(inputnode, wf.get_node("shell_means"))["connect"])
    assert means_links["dwiref"] == "in_reference"
    wf = init_hmc_pass_wf(pass_index=1, model="gp", settings=registration_preset("dwi", "Rigid", True))
    inputnode, register = wf.get_node("inputnode"), wf.get_node("register")
    assert dict(wf._graph.get_edge_data(inputnode, register)["connect"])["reg_mask"] == "fixed_image_masks"


def test_shells_are_anchored_once_after_the_last_pass():
    """The passes only relax their transforms; one anchor workflow ties the shells to the b0.

    The written transforms (and the resampled series and confounds) are the anchored ones; the
    median anchor registers nothing, and the b0 model (registered to the b0 itself) has no anchor.
    """
    from dmriprep_motion.workflows.hmc import init_dwi_motion_wf

    wf = init_dwi_motion_wf(model="gp", passes=3, anchor="auto", sloppy=True)
    names = {node.fullname for node in wf._get_all_nodes()}
    assert {"shell_anchor_wf.shell_means", "shell_anchor_wf.align_shells", "shell_anchor_wf.anchor"} <= names
    assert not [n for n in names if n.startswith("hmc_pass") and ("align_shells" in n or "anchor" in n)]
    for index in (1, 2, 3):
        assert wf.get_node(f"hmc_pass{index:02d}_wf.relax").interface.inputs.method == "none"
    anchor_wf = wf.get_node("shell_anchor_wf")
    last = wf.get_node("hmc_pass03_wf")
    assert ("outputnode.out_ras", "inputnode.in_ras") in wf._graph.get_edge_data(last, anchor_wf)["connect"]
    for target in ("final", "confounds"):
        links = wf._graph.get_edge_data(anchor_wf, wf.get_node(target))["connect"]
        assert ("outputnode.out_ras", "in_xforms") in links
    median = init_dwi_motion_wf(model="gp", passes=2, anchor="median", sloppy=True)
    assert {n.name for n in median._get_all_nodes() if n.fullname.startswith("shell_anchor_wf")} >= {"anchor"}
    assert not [n for n in median._get_all_nodes() if n.name == "align_shells"]
    assert not [n for n in init_dwi_motion_wf(model="b0", passes=2)._get_all_nodes() if n.name == "anchor"]


@pytest.mark.parametrize("relaxation", [None, 0.4, 2.0])
@pytest.mark.parametrize("passes", [2, 4])
def test_only_the_middle_passes_are_relaxed(passes, relaxation):
    """Relaxation steers the next pass; the first and last passes keep their new estimates.

    Damping the last pass left part of its correction unapplied: within-shell error 0.146 against
    0.123 mm (``mni-moderate``), 0.271 against 0.225 (``real-large``), never better (9 scenarios).
    The default over-relaxes (2), and the methods paragraph says so when it applies.
    """
    from dmriprep_motion.workflows.hmc import init_dwi_motion_wf

    kwargs = {} if relaxation is None else {"relaxation": relaxation}
    wf = init_dwi_motion_wf(model="gp", passes=passes, anchor="median", sloppy=True, **kwargs)
    relax = [wf.get_node(f"hmc_pass{i:02d}_wf.relax") for i in range(1, passes + 1)]
    factors = [node.interface.inputs.relaxation for node in relax]
    middle = 2.0 if relaxation is None else relaxation
    assert factors == [1.0] + [middle] * (passes - 2) + [1.0]
    sentence = f"was applied {middle:g} times" if middle > 1 else f"was moved {middle:g} of the way"
    assert (sentence in wf.__desc__) == (passes > 2)
    assert ("over-relaxation" in wf.__desc__) == (passes > 2 and middle > 1)


@pytest.mark.parametrize("relaxation", [0.5, 2.0])
def test_relaxation_scales_the_step_from_the_previous_transforms(tmp_path, relaxation):
    """The relaxed transform is ``previous @ expm(ω · logm(previous⁻¹ @ new))``.

    For motion about one axis that is ω times the change of the angle and of the translation
    along it; the b0 (unchanged between passes) stays where it was.
    """
    previous = np.stack([np.eye(4), matrix_from_params([1.0, 0, 0, 0, 0, 1 * DEG])])
    new = np.stack([np.eye(4), matrix_from_params([2.0, 0, 0, 0, 0, 1 * DEG])])
    turned = np.stack([np.eye(4), matrix_from_params([0, 0, 0, 0, 0, 3 * DEG])])
    np.save(tmp_path / "previous.npy", previous)
    (tmp_path / "b.bval").write_text("0 1000")
    for current, expected in (
        (new, [1.0 + relaxation, 0, 0, 0, 0, 1 * DEG]),
        (turned, None),
    ):
        np.save(tmp_path / "new.npy", current)
        node = AnchorShells(
            in_ras=str(tmp_path / "new.npy"),
            previous=str(tmp_path / "previous.npy"),
            in_bval=str(tmp_path / "b.bval"),
            method="none",
            relaxation=relaxation,
        )
        out = np.load(node.run(cwd=str(tmp_path)).outputs.out_ras)
        assert np.allclose(out[0], np.eye(4))
        if expected is not None:
            assert np.allclose(motion_parameters(out[1:]), [expected], atol=1e-9)
        else:  # a rotation about z from 1 to 3 degrees (about the origin) is relaxed to 1 + 2ω
            step = np.linalg.solve(previous[1], out[1])
            angle = np.degrees(np.arccos(np.clip((np.trace(step[:3, :3]) - 1) / 2, -1, 1)))
            assert angle == pytest.approx(2 * relaxation, abs=1e-9)
            assert np.allclose(out[1][2], [0, 0, 1, 0])


def test_same_seed_gives_identical_transforms(ds_xa30, tmp_path):
    """Two runs of the packaged preset with the same seed on real volumes agree to the bit."""
    img = nb.load(ds_xa30 / "sub-01" / "dwi" / "sub-01_dir-AP_dwi.nii.gz")
    for i in (0, 5):
        nb.Nifti1Image(np.asanyarray(img.dataobj[..., i], np.float32), img.affine).to_filename(
            tmp_path / f"v{i}.nii"
        )
    results = []
    for run in range(2):
        reg = configure_registration(
            SkippableRegistration(from_file=str(registration_preset("dwi", "Rigid", True))), 11, 1
        )
        reg.inputs.fixed_image = str(tmp_path / "v0.nii")
        reg.inputs.moving_image = str(tmp_path / "v5.nii")
        assert reg.inputs.environ["NSLOTS"] == "1" and reg.inputs.environ["ANTS_RANDOM_SEED"] == "11"
        out = tmp_path / f"run{run}"
        out.mkdir()
        res = reg.run(cwd=str(out))
        results.append((out / "hmc_0GenericAffine.mat").read_bytes())
        assert res.outputs.forward_transforms
    assert results[0] == results[1]


def test_robust_outliers():
    sim = np.array([0.95, 0.951, 0.949, 0.952, 0.948, 0.80, 0.95, 0.96, 0.50, 0.40])
    shells = np.array([1, 1, 1, 1, 1, 1, 1, 1, 2, 2])
    flags = flag_outliers(sim, shells, 4.0)
    assert flags.tolist() == [False] * 5 + [True] + [False] * 4  # shell 2 too small to judge
    assert robust_z(sim, shells)[5] < -4
    assert not flag_outliers(sim, shells, 0.0).any()


def test_confounds_with_outliers_and_affine():
    rigid = matrix_from_params([1, 2, 3, 0.01, 0.02, 0.03])
    stretch = np.eye(4)
    stretch[:3, :3] = [[1.0, 0.0, 0.0], [0.0, 1.03, 0.01], [0.0, 0.01, 1.0]]
    xforms = np.stack([np.eye(4)] + [rigid @ stretch] * 6)
    bvals = np.array([0] + [1000] * 6)
    sim = np.array([1, 0.95, 0.95, 0.951, 0.949, 0.7, 0.95])
    cols, vals = confounds_table(xforms, bvals, sim, transform="Affine")
    table = dict(zip(cols, vals.T, strict=True))
    assert table["outlier"].tolist() == [0, 0, 0, 0, 0, 1, 0]
    assert np.allclose(table["trans_x"][1:], 1.0) and np.allclose(table["rot_z"][1:], 0.03)
    assert np.allclose(table["scale_y"][1:], 1.03) and np.allclose(table["shear_yz"][1:], 0.01)
    assert np.allclose(table["scale_x"][0], 1.0)


def test_b0_reference_averages_over_the_b0s_covering_each_voxel(tmp_path):
    """An aligned b0 has no data where its field of view ended: the average skips it there.

    The series is constant along z, so every b0, moved along z, holds the same image; once the
    second b0 is aligned (3 mm = 1 slice), its top slice lies outside its field of view.
    """
    from dmriprep_motion.interfaces.dwi import B0Reference

    x, y = np.meshgrid(np.arange(12.0), np.arange(10.0), indexing="ij")
    image = np.repeat((100 + 5 * x + 3 * y)[..., None], 8, axis=-1).astype(np.float32)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    nb.Nifti1Image(np.stack([image, image], axis=-1), affine).to_filename(tmp_path / "b0s.nii.gz")
    shift = write_itk(tmp_path / "shift.txt", matrix_from_params([0, 0, 3.0, 0, 0, 0]))
    res = B0Reference(
        in_file=str(tmp_path / "b0s.nii.gz"), b0_indices=[0, 1], in_xforms=[None, str(shift)]
    ).run(cwd=str(tmp_path))
    ref = nb.load(res.outputs.out_file).get_fdata()
    assert np.allclose(ref, image, rtol=1e-4)  # a plain average halves the top slice


def test_auto_anchor_puts_every_shell_back_at_the_b0(tmp_path):
    """End to end with ANTs (4 mm MNI phantom, three shells, no noise): every volume drifted by about
    1 mm / 0.6°, and the last pass left each shell at its own wrong common position.  ``auto``
    (b=1000 registered to the b0, b=2000 and b=3000 each to the next lower shell) brings every
    volume from 0.71-1.01 mm to within 0.3 mm of the truth (measured: 0.18 / 0.23 / 0.18 mm for
    b=1000 / 2000 / 3000, the b=1000 shell's registration to the b0 at 4 mm being most of it); the
    median anchor keeps the drift."""
    from dmriprep_motion.motion import mask_coordinates, transform_errors
    from dmriprep_motion.testing import simulate as sim
    from dmriprep_motion.workflows.anchor import init_shell_anchor_wf

    phantom = sim.mni_phantom(resolution=4.0)
    bvals, bvecs = sim.make_scheme(n_b0=1, shells={1000: 6, 2000: 6, 3000: 6}, seed=2)
    rng = np.random.default_rng(2)
    params = np.r_[0.8, -0.6, 0.5, 0.6 * DEG, -0.5 * DEG, 0.4 * DEG] + rng.uniform(-0.2, 0.2, (len(bvals), 6))
    params[0] = 0.0
    series = sim.simulate_series(phantom, bvals=bvals, bvecs_ras=bvecs, params=params, snr=None)
    last_pass = series.motions.copy()
    for bval, offset in ((1000, [0.5, 0.3, -0.4, 0, 0, 0]), (2000, [-0.6, 0.2, 0.5, 0.01, 0, 0]),
                         (3000, [0.4, -0.5, 0.3, 0, -0.01, 0.01])):  # fmt: skip
        last_pass[bvals == bval] = last_pass[bvals == bval] @ matrix_from_params(offset)
    affine = phantom.affine
    files = {"dwi_file": "dwi.nii.gz", "dwiref": "ref.nii.gz", "brain_mask": "mask.nii.gz"}
    nb.Nifti1Image(series.data, affine).to_filename(tmp_path / files["dwi_file"])
    nb.Nifti1Image(series.data[..., 0], affine).to_filename(tmp_path / files["dwiref"])
    nb.Nifti1Image(phantom.mask.astype(np.uint8), affine).to_filename(tmp_path / files["brain_mask"])
    np.savetxt(tmp_path / "dwi.bval", bvals[None], fmt="%g")
    np.save(tmp_path / "last.npy", last_pass)
    wf = init_shell_anchor_wf(
        anchor="auto", anchor_settings=registration_preset("shell", "Rigid", False), seed=1
    )
    wf.base_dir = str(tmp_path)
    for field, name in files.items():
        setattr(wf.inputs.inputnode, field, str(tmp_path / name))
    wf.inputs.inputnode.in_bval = str(tmp_path / "dwi.bval")
    wf.inputs.inputnode.in_ras = str(tmp_path / "last.npy")
    wf.run()
    anchored = np.load(tmp_path / "shell_anchor_wf" / "anchor" / "xforms.npy")
    points = mask_coordinates(nb.load(tmp_path / files["brain_mask"]))
    before = transform_errors(last_pass, series.motions, points)["mean_disp"]
    after = transform_errors(anchored, series.motions, points)["mean_disp"]
    assert before[1:].min() > 0.6 and after[1:].max() < 0.3, (before, after)
    (tmp_path / "median").mkdir()
    median = transform_errors(_anchor(tmp_path / "median", last_pass, bvals), series.motions, points)
    assert np.median(median["mean_disp"][1:]) > 0.5, median["mean_disp"]


def test_sampling_cap_keeps_small_grids_and_caps_large_ones():
    """A 3 mm brain keeps the preset's share (the same ANTs command); a 2 mm or finer brain is
    sampled at most ``max_samples`` times, with a percentage ANTs reads back as that step."""
    from dmriprep_motion.sampling import MAX_SAMPLES, capped_percentage, regular_step

    assert regular_step(0.4) == 3 and regular_step(0.25) == 4 and regular_step(1.0) == 1
    # ds-xa30 and the real-data phantom (3 mm): about 64,000 voxels in the registration mask
    assert capped_percentage(0.4, 63_684, MAX_SAMPLES) == 0.4
    assert capped_percentage(0.4, 10**6, 0) == 0.4  # no cap
    for n_voxels in (251_318, 330_000, 10**6, 3 * 10**6):
        capped = capped_percentage(0.4, n_voxels, MAX_SAMPLES)
        step = regular_step(capped)
        assert capped < 0.4 and n_voxels / step <= MAX_SAMPLES < n_voxels / (step - 1)
        # Nipype prints the number with %g; ANTs keeps 1 voxel in ceil(1/p) (also in single precision)
        assert math.ceil(1 / float(f"{capped:g}")) == math.ceil(1 / np.float32(f"{capped:g}")) == step
    with pytest.raises(ValueError, match="sampling percentage"):
        regular_step(0.0)


def test_sampling_counts_the_mask_or_the_whole_grid(tmp_path):
    """A registration with a mask samples its voxels; one without (the b0s') the whole grid."""
    from dmriprep_motion.interfaces.registration import CapSampling

    data = np.zeros((60, 60, 60), np.uint8)
    data[10:50, 10:50, 10:50] = 1  # 64,000 of 216,000 voxels
    nb.Nifti1Image(data, np.eye(4)).to_filename(tmp_path / "mask.nii.gz")
    out = {}
    for whole_grid in (False, True):
        node = CapSampling(in_mask=str(tmp_path / "mask.nii.gz"), percentages=[0.8], max_samples=50_000)
        node.inputs.whole_grid = whole_grid
        out[whole_grid] = node.run(cwd=str(tmp_path)).outputs
    assert out[False].sampling_percentage == [0.8] and out[False].n_samples == 32_000  # 1 in 2
    assert out[True].n_samples == 216_000 // 5 and out[True].sampling_percentage == [1 / 4.5]


@pytest.mark.parametrize(
    ("kwargs", "cap", "b0_cap"),
    [({}, "MAX_SAMPLES", "B0_MAX_SAMPLES"), ({"sloppy": True}, "MAX_SAMPLES_SLOPPY", "B0_MAX_SAMPLES_SLOPPY"),
     ({"max_samples": 0}, None, None), ({"registration_config": "user"}, None, "B0_MAX_SAMPLES"),
     ({"registration_config": "user", "max_samples": 9}, 9, "B0_MAX_SAMPLES")],
)  # fmt: skip
def test_every_registration_caps_its_samples_with_the_packaged_presets(kwargs, cap, b0_cap, tmp_path):
    """The cap feeds every pass's registrations and the b0-to-b0 ones (on the whole grid: they run
    before the mask exists); a user's own ANTs settings are kept as given."""
    from dmriprep_motion import sampling
    from dmriprep_motion.workflows.hmc import init_dwi_motion_wf

    if kwargs.get("registration_config") == "user":
        kwargs["registration_config"] = tmp_path / "user.json"
        kwargs["registration_config"].write_text(registration_preset("dwi", "Rigid", False).read_text())
    wf = init_dwi_motion_wf(passes=3, **kwargs)
    flat = wf._create_flat_graph()
    nodes = {n.fullname.split(".")[-2]: n for n in flat.nodes() if n.name == "sampling"}
    b0_node = nodes.pop("dwi_reference_wf", None)
    if b0_cap is None:
        assert b0_node is None and "sampled points" not in wf.get_node("dwi_reference_wf").__desc__
    else:
        inputs = b0_node.interface.inputs
        assert (inputs.max_samples, inputs.whole_grid, inputs.report) == (
            getattr(sampling, b0_cap),
            True,
            False,
        )
        (align,) = [v for _, v in flat.out_edges(b0_node)]
        assert align.name == "align_b0"
        assert f"at most {inputs.max_samples:,} sampled points" in wf.get_node("dwi_reference_wf").__desc__
    if cap is None:
        assert nodes == {} and "voxels (a regular sample" not in wf.__desc__
        return
    expected = getattr(sampling, cap) if isinstance(cap, str) else cap
    assert sorted(nodes) == ["hmc_pass01_wf", "hmc_pass02_wf", "hmc_pass03_wf"]
    assert {n.interface.inputs.max_samples for n in nodes.values()} == {expected}
    # a cap that acts is logged once per run, by the first pass
    assert [nodes[k].interface.inputs.report for k in sorted(nodes)] == [True, False, False]
    assert f"at most {expected:,} voxels (a regular sample of the dilated brain mask)" in wf.__desc__
    for node in nodes.values():
        (register,) = [v for _, v in flat.out_edges(node)]
        assert register.name == "register" and not node.interface.inputs.whole_grid
        edge = flat.get_edge_data(node, register)["connect"]
        assert edge == [("sampling_percentage", "sampling_percentage")]


def test_capped_sampling_recovers_a_known_shift_on_a_2mm_brain(tmp_path, caplog):
    """On the 2 mm MNI phantom (235,375 voxels in its mask) the cap samples a quarter of the
    voxels instead of a third: the registration still recovers a known 1.4 mm / 1.1° motion to
    within 0.05 mm, as the preset's share does (measured 2026-12-05: 0.030 mm capped, 0.036 not)."""
    from dmriprep_motion.interfaces.registration import CapSampling
    from dmriprep_motion.motion import mask_coordinates, resample_volume, transform_errors
    from dmriprep_motion.sampling import MAX_SAMPLES, regular_step
    from dmriprep_motion.testing import simulate as sim

    phantom = sim.mni_phantom(resolution=2.0)
    fixed = phantom.signal(1000.0, np.array([0.6, 0.48, 0.64]))
    # moving(y) = fixed(M y): ANTs' transform (fixed to moving points) is inv(M)
    motion = matrix_from_params([1.0, -0.8, 0.6, 1 * DEG, 0.0, -0.5 * DEG])
    moving = resample_volume(fixed, phantom.affine, motion, phantom.affine, phantom.shape)
    for name, data in (("fixed", fixed), ("moving", moving), ("mask", phantom.mask.astype(np.uint8))):
        nb.Nifti1Image(data, phantom.affine).to_filename(tmp_path / f"{name}.nii.gz")
    preset = registration_preset("dwi", "Rigid", False)
    percentages = json.loads(preset.read_text())["sampling_percentage"]
    mask = str(tmp_path / "mask.nii.gz")
    capped = CapSampling(in_mask=mask, percentages=percentages, max_samples=MAX_SAMPLES)
    with caplog.at_level(logging.INFO, logger="dmriprep_motion"):
        capped = capped.run(cwd=str(tmp_path)).outputs
    assert "235375 voxels: each registration samples 1 voxel in 4 instead of 1 in 3" in caplog.text
    assert capped.sampling_percentage[0] < percentages[0] and capped.n_samples <= MAX_SAMPLES
    assert regular_step(capped.sampling_percentage[0]) > regular_step(percentages[0])
    points = mask_coordinates(nb.load(tmp_path / "mask.nii.gz"))
    errors = {}
    for label, share in (("preset", percentages), ("capped", capped.sampling_percentage)):
        reg = configure_registration(SkippableRegistration(from_file=str(preset)), seed=3, omp_nthreads=1)
        reg.inputs.fixed_image = str(tmp_path / "fixed.nii.gz")
        reg.inputs.moving_image = str(tmp_path / "moving.nii.gz")
        reg.inputs.fixed_image_masks = [str(tmp_path / "mask.nii.gz")]
        reg.inputs.sampling_percentage = share
        reg.inputs.output_transform_prefix = f"{label}_"
        assert f"Regular, {share[0]:g} ]" in reg.cmdline
        out = reg.run(cwd=str(tmp_path)).outputs
        estimated = load_itk(out.forward_transforms[0])
        errors[label] = transform_errors(estimated, np.linalg.inv(motion), points)["mean_disp"][0]
    assert max(errors.values()) < 0.05, errors
