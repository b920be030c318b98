"""Visual report, reportlets and QC metrics (issue #4)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dmriprep_motion.motion import FD_RADIUS
from dmriprep_motion.qc import (
    QC_COLUMNS,
    QC_FIELDS,
    flag_outliers,
    qc_metrics,
    qc_sidecar,
    qc_tsv,
    read_confounds,
)
from dmriprep_motion.reports import plotting
from dmriprep_motion.reports.assemble import local_references, write_subject_report
from dmriprep_motion.workflows.reports import REPORTLETS

RUNS = ("sub-01_dir-AP", "sub-01_dir-PA")
SVG_NS = "{http://www.w3.org/2000/svg}"


def _confounds(n: int = 21, outlier: int | None = 7, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    conf = {f"trans_{a}": rng.normal(0, 0.5, n) for a in "xyz"}
    conf.update({f"rot_{a}": np.radians(rng.normal(0, 0.3, n)) for a in "xyz"})
    params = np.stack([conf[k] for k in conf], axis=1)
    params[:, 3:] *= 50.0
    fd = np.r_[np.nan, np.abs(np.diff(params, axis=0)).sum(axis=1)]
    conf["framewise_displacement"] = fd
    conf["bval"] = np.r_[0.0, np.full(n - 1, 1000.0)]
    conf["bval"][n // 2 :] = 2000.0
    sim = 0.95 + rng.normal(0, 0.004, n)
    sim[0] = 1.0
    if outlier is not None:
        sim[outlier] = 0.80
    conf["similarity"] = sim
    return conf


def _parse_svg(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG_NS}svg", path
    return root


# ------------------------------------------------------------------------ QC (pure)
def test_qc_metrics_flag_low_similarity_within_shell():
    conf = _confounds(outlier=7)
    flags, rule = flag_outliers(conf)
    assert np.flatnonzero(flags).tolist() == [7]
    assert "MAD" in rule
    qc = qc_metrics(conf)
    assert list(qc) == list(QC_FIELDS)
    assert qc["volumes"] == 21 and qc["outliers"] == 1
    assert qc["outliers_percent"] == pytest.approx(100 / 21, abs=1e-4)
    assert qc["fd_mean_mm"] == pytest.approx(np.nanmean(conf["framewise_displacement"]), abs=1e-5)
    assert qc["fd_max_mm"] == pytest.approx(np.nanmax(conf["framewise_displacement"]), abs=1e-5)
    trans = np.abs(np.stack([conf[f"trans_{a}"] for a in "xyz"])).max()
    assert qc["translation_max_mm"] == pytest.approx(trans, abs=1e-5)
    rot = np.degrees(np.abs(np.stack([conf[f"rot_{a}"] for a in "xyz"]))).max()
    assert qc["rotation_max_deg"] == pytest.approx(rot, abs=1e-5)
    assert qc["similarity_mean"] == pytest.approx(conf["similarity"].mean(), abs=1e-5)


def test_convergence_metrics():
    """Passes run, last change and convergence follow the skip rule of the passes."""
    from dmriprep_motion.qc import convergence_metrics

    # Pass 3 changed nothing by more than 0.05 mm: pass 4 was skipped (its change is 0).
    changes = [[2.0, 1.0], [0.4, 0.2], [0.03, 0.01], [0.0, 0.0]]
    assert convergence_metrics(changes, 0.05) == {
        "passes_run": 3, "last_pass_change_mm": 0.03, "converged": True
    }  # fmt: skip
    # The passes ran out while the transforms still moved.
    assert convergence_metrics(changes[:2], 0.05) == {
        "passes_run": 2, "last_pass_change_mm": 0.4, "converged": False
    }  # fmt: skip
    # Without a tolerance every pass runs and nothing is called converged.
    assert convergence_metrics(changes, 0.0)["passes_run"] == 4
    assert convergence_metrics(changes, 0.0)["converged"] is False
    assert convergence_metrics([], 0.05)["passes_run"] == 0


def test_qc_node_warns_when_not_converged(tmp_path, caplog):
    """The QC node adds the convergence metrics and warns when the passes ran out first."""
    from dmriprep_motion.interfaces.reports import QCMetrics

    conf = _confounds()
    tsv = tmp_path / "sub-01_dir-AP_desc-confounds_timeseries.tsv"
    tsv.write_text(
        "\t".join(conf) + "\n"
        + "\n".join("\t".join(f"{conf[k][i]:g}" for k in conf) for i in range(21)) + "\n"
    )  # fmt: skip
    with caplog.at_level("WARNING", logger="dmriprep_motion"):
        qc = QCMetrics(in_confounds=str(tsv), pass_changes=[[1.0] * 21, [0.4] * 21], tolerance=0.05,
                       label="sub-01_dir-AP")  # fmt: skip
        result = qc.run(cwd=str(tmp_path)).outputs.qc
    assert result["converged"] is False and result["passes_run"] == 2
    assert "sub-01_dir-AP: the last of 2 passes still moved a transform by 0.40 mm" in caplog.text
    tsv_row = qc_tsv(result).splitlines()[1].split("\t")
    assert tsv_row[list(result).index("converged")] == "false"


def test_qc_uses_outlier_column_when_present():
    conf = _confounds(outlier=None)
    conf["outlier"] = np.zeros(21)
    conf["outlier"][[3, 4]] = 1
    flags, rule = flag_outliers(conf)
    assert np.flatnonzero(flags).tolist() == [3, 4] and "outlier" in rule
    assert qc_metrics(conf)["outliers"] == 2


def test_qc_tsv_is_one_row_with_bids_na():
    text = qc_tsv({"volumes": 3, "fd_mean_mm": 0.5, "similarity_mean": float("nan")})
    header, row = text.splitlines()
    assert header.split("\t") == ["volumes", "fd_mean_mm", "similarity_mean"]
    assert row.split("\t") == ["3", "0.5", "n/a"]


def test_qc_sidecar_describes_every_column():
    """One table (qc.QC_COLUMNS) gives the TSV columns, their order and their JSON description."""
    sidecar = qc_sidecar()
    assert list(sidecar) == list(QC_FIELDS) == list(qc_metrics(_confounds()))
    for name, meta in sidecar.items():
        assert set(meta) == {"LongName", "Description", "Units"}, name
        assert all(isinstance(v, str) and v for v in meta.values()), name
        assert meta["Description"] == QC_FIELDS[name]
    sidecar["volumes"]["Units"] = "changed"  # a copy: the table itself is untouched
    assert QC_COLUMNS["volumes"]["Units"] == "unitless"
    units = {name: meta["Units"] for name, meta in QC_COLUMNS.items()}
    assert units["fd_mean_mm"] == units["translation_max_mm"] == "mm" and units["rotation_max_deg"] == "deg"


def test_export_writes_qc_table_and_its_sidecar(tmp_path):
    """ExportDerivatives writes <stem>_desc-qc_dwi.tsv and .json (atomically, no temporary left)."""
    from dmriprep_motion.bids import DERIVATIVE_SUFFIXES
    from dmriprep_motion.interfaces.bids import ExportDerivatives

    src = tmp_path / "src"
    src.mkdir()
    files = {}
    for key in ("dwi", "bval", "bvec", "dwiref", "mask", "confounds", "confounds_json", "xforms"):
        files[key] = src / f"{key}.dat"
        files[key].write_text(key)
    qc = qc_metrics(_confounds())
    out = tmp_path / "out"
    result = ExportDerivatives(output_dir=str(out), reldir="sub-01/dwi", stem="sub-01_dir-AP",
                               metadata={"SkullStripped": False}, qc=qc,
                               **{k: str(v) for k, v in files.items()}).run()  # fmt: skip
    folder = out / "sub-01" / "dwi"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"sub-01_dir-AP_{suffix}" for suffix in DERIVATIVE_SUFFIXES.values()
    )  # every derivative, nothing else (no temporary file)
    assert {str(folder / f"sub-01_dir-AP_{s}") for s in DERIVATIVE_SUFFIXES.values()} == set(
        result.outputs.out_files
    )
    header = (folder / "sub-01_dir-AP_desc-qc_dwi.tsv").read_text().splitlines()[0].split("\t")
    sidecar = json.loads((folder / "sub-01_dir-AP_desc-qc_dwi.json").read_text())
    assert list(sidecar) == header and sidecar == qc_sidecar()
    assert json.loads((folder / "sub-01_dir-AP_desc-preproc_dwi.json").read_text())["QC"] == qc


@pytest.mark.parametrize(
    ("extra", "expected", "absent"),
    [
        (["--outlier-threshold", "3.5", "--exclude-outliers", "--passes", "2"],
         ["robust z-score below −3.5 within its shell", "left out of the model fits"],
         ["kept in the model fits"]),
        ([], ["robust z-score below −4 within its shell", "kept in the model fits"],
         ["left out of the model fits"]),
        (["--outlier-threshold", "0"], ["outlier detection disabled"], ["robust z-score"]),
    ],
)  # fmt: skip
def test_boilerplate_describes_outliers_and_qc(ds_xa30, tmp_path, extra, expected, absent):
    """logs/CITATION.md (--boilerplate-only) describes outlier flagging, FD and the QC metrics."""
    from dmriprep_motion.cli.run import run
    from dmriprep_motion.data import load
    from tests._datasets import small_dataset

    bids = small_dataset(ds_xa30, tmp_path / "bids", n_volumes=6)
    args = [str(bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"),
            "--skip-bids-validation", "--boilerplate-only", *extra]  # fmt: skip
    assert run(args) == 0
    text = (tmp_path / "out" / "logs" / "CITATION.md").read_text()
    for phrase in expected:
        assert phrase in text, phrase
    for phrase in absent:
        assert phrase not in text, phrase
    assert "Framewise displacement (FD)" in text and "[@power2012]" in text
    assert f"sphere of {FD_RADIUS:g} mm radius" in text
    for meta in QC_COLUMNS.values():  # every QC metric is named
        assert meta["LongName"] in text, meta["LongName"]
    assert not (tmp_path / "work").exists()  # nothing processed
    # Every citation key has an entry in the bibliography pandoc renders the methods with.
    keys = set(re.findall(r"\[@(\w+)\]", text))
    bib = set(re.findall(r"^@\w+\{(\w+),", Path(load("reports/boilerplate.bib")).read_text(), re.M))
    assert {"ants", "power2012"} <= keys and keys <= bib


# ------------------------------------------------------------- reportlets (pure)
def test_plots_are_valid_svg(tmp_path):
    conf = _confounds()
    conf.update({"scale_x": np.ones(21), "shear_xy": np.zeros(21)})  # affine columns are plotted too
    labels = np.r_[0, np.ones(10, int), np.full(10, 2)]
    flags, _ = flag_outliers(conf)
    out = plotting.plot_motion(conf, labels, flags, tmp_path / "motion.svg")
    root = _parse_svg(out)
    text = "".join(root.itertext())
    for word in ("translation (mm)", "rotation (deg)", "FD (mm)", "b=1000", "b=2000", "outlier", "scale_x"):
        assert word in text, word
    thresholds = np.full(21, 0.9)
    sim = plotting.plot_similarity(
        conf["similarity"], thresholds, labels, conf["bval"], flags, tmp_path / "s.svg"
    )
    assert "outlier (1)" in "".join(_parse_svg(sim).itertext())
    conv = plotting.plot_convergence([[0.5, 1.0, 2.0], [0.01, 0.02, 0.05]], tmp_path / "c.svg")
    assert "2 mm" in "".join(_parse_svg(conv).itertext())
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(21, 3))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs[0] = 0
    grad = plotting.plot_gradients(conf["bval"], vecs, vecs, labels, tmp_path / "g.svg")
    assert "rotated b-vectors" in "".join(_parse_svg(grad).itertext())


def test_flicker_and_animation(tmp_path):
    rng = np.random.default_rng(0)
    shape = (20, 22, 18)
    mask = np.zeros(shape, bool)
    mask[4:16, 5:17, 3:15] = True
    before = rng.random(shape).astype(np.float32) + mask
    after = before + 0.5 * mask
    out = plotting.plot_flicker(before, after, mask, tmp_path / "flicker.svg", labels=("orig", "corr"))
    root = _parse_svg(out)
    classes = {el.get("class") for el in root.iter()}
    assert {"background-svg", "foreground-svg"} <= classes
    assert "foreground-svg:hover" in out.read_text()
    n = 5
    series = rng.random((*shape, n)).astype(np.float32)
    targets = {i: series[..., i] for i in range(1, n)}
    bvals = np.r_[0, np.full(n - 1, 1000.0)]
    gif = plotting.volumes_gif(series, targets, series, mask, bvals, np.zeros(n, bool), tmp_path / "v.gif")
    with Image.open(gif) as img:
        assert img.format == "GIF" and img.n_frames == n
        assert img.info.get("loop") == 0


def test_averages_of_one_series(tmp_path):
    """The flicker reportlets' averages: one node per series, each with the mean of its
    diffusion-weighted volumes and of its b0s (float32, on the series's grid)."""
    import nibabel as nb
    from nipype.interfaces.base import isdefined

    from dmriprep_motion.interfaces.reports import AverageImages

    rng = np.random.default_rng(4)
    affine = np.diag([2.0, 2.0, 2.5, 1.0])
    data = rng.random((6, 7, 5, 5)).astype(np.float32)
    nb.Nifti1Image(data, affine).to_filename(tmp_path / "dwi.nii")
    np.savetxt(tmp_path / "dwi.bval", [[0, 1000, 5, 1000, 2000]], fmt="%g")
    res = AverageImages(in_file=str(tmp_path / "dwi.nii"), in_bval=str(tmp_path / "dwi.bval")).run(
        cwd=str(tmp_path)
    )
    for key, index in (("dwi_mean", [1, 3, 4]), ("b0_mean", [0, 2])):
        img = nb.load(getattr(res.outputs, key))
        assert np.allclose(img.affine, affine) and img.get_data_dtype() == np.float32
        assert np.allclose(img.get_fdata(), data[..., index].mean(axis=-1), atol=1e-6)
    # the corrected series's node needs no b0 mean (the flicker shows the b0 reference)
    (tmp_path / "dwi_only").mkdir()
    res = AverageImages(in_file=str(tmp_path / "dwi.nii"), in_bval=str(tmp_path / "dwi.bval"),
                        b0_mean=False).run(cwd=str(tmp_path / "dwi_only"))  # fmt: skip
    assert Path(res.outputs.dwi_mean).exists() and not isdefined(res.outputs.b0_mean)
    assert [p.name for p in (tmp_path / "dwi_only").glob("*.nii.gz")] == ["dwi_mean.nii.gz"]


def test_local_references_rejects_remote_resources(tmp_path):
    page = tmp_path / "p.html"
    page.write_text('<a href="https://example.org">x</a><img src="./a/b.svg"><a href="#top">t</a>')
    assert local_references(page) == ["./a/b.svg"]
    page.write_text('<script src="https://cdn.example.org/x.js"></script>')
    with pytest.raises(ValueError, match="remote"):
        local_references(page)


def test_errors_section_lists_crash_files(tmp_path):
    """The About section shows the methods text and every crash file of sub-XX/log/."""
    out = tmp_path / "out"
    (out / "logs").mkdir(parents=True)
    (out / "logs" / "CITATION.md").write_text("Head motion was estimated with *dmriprep_motion* [@ants].\n")
    log = out / "sub-02" / "log"
    log.mkdir(parents=True)
    (log / "crash-20250101-000000-root-register-abc.txt").write_text(
        "Node: dmriprep_motion_wf.sub_02_wf.dir_AP_motion_wf.hmc_pass01_wf.register\n"
        "Working directory: /work/register\n\nNode inputs:\n\nfixed_image = a.nii\n\n"
        "Traceback (most recent call last):\nRuntimeError: antsRegistration failed\n"
    )
    (out / "sub-02" / "figures").mkdir()
    page = write_subject_report("02", [], out)
    text = page.read_text()
    assert page == out / "sub-02.html"
    assert "Head motion was estimated" in text
    assert "One or more execution steps failed (1)" in text
    assert "hmc_pass01_wf.register" in text and "antsRegistration failed" in text
    assert local_references(page) == [] or all((out / r).exists() for r in local_references(page))


def test_unique_anchors_renames_repeated_and_unsafe_names():
    from types import SimpleNamespace

    from dmriprep_motion.reports.assemble import unique_anchors

    def items(*names):
        return [SimpleNamespace(name=name) for name in names]

    runs = items("summary", "summary", "desc-a_extension-['.svg']", "About")
    about = items("boilerplate", "errors")
    sections = [
        SimpleNamespace(name="Diffusion", reportlets=runs),
        SimpleNamespace(name="About", reportlets=about),
    ]
    renamed = unique_anchors(sections)
    assert [r.name for r in runs] == ["summary", "summary-2", "desc-a_extension-.svg", "About-2"]
    assert [r.name for r in about] == ["boilerplate", "errors"]  # nireports' own anchors kept
    assert [s.name for s in sections] == ["Diffusion", "About"]  # section ids are also headings
    assert renamed == {"summary-2": "summary", "desc-a_extension-.svg": "desc-a_extension-['.svg']",
                       "About-2": "About"}  # fmt: skip


class _Anchors(HTMLParser):
    """Collect the ``id`` attributes and the in-page links (``href``/``data-bs-target="#x"``)."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.links: list[tuple[str, str]] = []  # (target, tag)
        self.nav_links: list[str] = []
        self._in_nav = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "nav":
            self._in_nav = True
        if attrs.get("id") is not None:
            self.ids.append(attrs["id"])
        for key in ("href", "data-bs-target"):
            if (attrs.get(key) or "").startswith("#"):
                self.links.append((attrs[key][1:], tag))
                if self._in_nav and key == "href":
                    self.nav_links.append(attrs[key][1:])

    def handle_endtag(self, tag):
        if tag == "nav":
            self._in_nav = False


# ------------------------------------------------------------ end to end (ds-xa30)
def test_report_sections_and_files(xa30_run):
    out, _, _ = xa30_run
    page = out / "sub-01.html"
    text = page.read_text()
    refs = local_references(page)  # raises if anything is loaded from the network
    assert refs and all((page.parent / ref).is_file() for ref in refs), refs
    assert "<link" not in text and "cdn." not in text
    for stem in RUNS:
        for desc, ext in REPORTLETS.items():
            fig = out / "sub-01" / "figures" / f"{stem}_desc-{desc}_dwi.{ext}"
            assert fig.is_file(), fig
            if ext != "html":
                assert f"./sub-01/figures/{fig.name}" in refs
    # One group per run, and every section of the issue.
    assert 'direction <span class="bids-entity">AP</span>' in text
    assert 'direction <span class="bids-entity">PA</span>' in text
    for heading in ("Gradient scheme", "Estimated head motion", "Average diffusion-weighted image",
                    "b0 reference and brain mask", "registration targets", "Convergence over passes",
                    "Similarity of corrected volumes", "Methods", "Errors", "No errors to report",
                    "Reproducibility and provenance"):  # fmt: skip
        assert heading in text, heading
    for row in ("Volumes", "Shells", "b-values", "Model", "Transform", "Passes", "Framewise displacement",
                "Flagged volumes", "criterion", "ANTs", "Software", "nipype"):  # fmt: skip
        assert f"{row}" in text, row
    assert "21 (1 b0, 20 diffusion-weighted)" in text and "b=2500 (20 volumes)" in text
    assert "Head motion was estimated" in text  # methods boilerplate (CITATION.md)


def test_report_ids_are_unique_and_links_resolve(xa30_run):
    """Every id of sub-01.html is unique, every in-page link has its target, per-run links differ."""
    out, _, _ = xa30_run
    parser = _Anchors()
    parser.feed((out / "sub-01.html").read_text())
    duplicated = sorted({i for i in parser.ids if parser.ids.count(i) > 1})
    assert not duplicated, duplicated
    assert all(i and not re.search(r"\s", i) for i in parser.ids), parser.ids
    dangling = [(target, tag) for target, tag in parser.links if target not in parser.ids]
    assert not dangling, dangling
    # The navigation bar: sections, one link per run (to that run's first reportlet), About items.
    runs = [link for link in parser.nav_links if "desc-summary" in link]
    assert len(runs) == len(set(runs)) == len(RUNS)
    assert ["direction-AP" in runs[0], "direction-PA" in runs[1]] == [True, True]
    assert {"Diffusion", "About", "boilerplate", "errors"} <= set(parser.nav_links)


@pytest.mark.parametrize("stem", RUNS)
def test_reportlets_are_valid_images(xa30_run, stem):
    out, _, _ = xa30_run
    figures = out / "sub-01" / "figures"
    for desc in ("gradients", "motion", "convergence", "similarity", "avgdwi", "b0ref"):
        root = _parse_svg(figures / f"{stem}_desc-{desc}_dwi.svg")
        assert root.get("viewBox"), desc
    for desc in ("avgdwi", "b0ref"):  # flickers: two layers, embedded raster slices
        svg = (figures / f"{stem}_desc-{desc}_dwi.svg").read_text()
        assert 'class="foreground-svg"' in svg and 'class="background-svg"' in svg
        assert "data:image/png;base64" in svg
    with Image.open(figures / f"{stem}_desc-volumes_dwi.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == 21
        assert gif.size[0] > 3 * 72 and gif.size[1] > 72
        frames = []
        for i in (0, 10):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("L"), dtype=float))
        assert frames[1].std() > 10  # real image content
        assert not np.array_equal(frames[0], frames[1])  # frames differ (volumes differ)
        # The most moved diffusion-weighted volume: original | target (model prediction) | corrected.
        conf = read_confounds(out / "sub-01" / "dwi" / f"{stem}_desc-confounds_timeseries.tsv")
        trans = np.stack([conf[f"trans_{a}"] for a in "xyz"], axis=1)
        rots = np.stack([conf[f"rot_{a}"] for a in "xyz"], axis=1)
        moved = np.abs(trans).sum(axis=1) + FD_RADIUS * np.abs(rots).sum(axis=1)  # mm, as FD
        moved[conf["bval"] <= 50] = -1.0  # b0 volumes are shown against the b0 reference
        volume = int(np.argmax(moved))
        assert moved[volume] > 0.5, moved  # ds-xa30 has real motion
        gif.seek(volume)
        body = np.asarray(gif.convert("L"), dtype=float)[plotting.GIF_HEADER :]
        width = gif.size[0] // 3
        original, target, corrected = (body[:, i * width : (i + 1) * width] for i in range(3))
        assert target.std() > 10  # a real prediction, not a blank panel

        def mean_diff(a, b):
            return np.abs(a - b).mean()

        def corr(a, b):
            return np.corrcoef(a.ravel(), b.ravel())[0, 1]

        assert mean_diff(target, original) > 2 and mean_diff(target, corrected) > 2  # its own panel
        assert mean_diff(original, corrected) > 2  # the volume was moved back
        assert corr(target, corrected) > 0.8  # the same slices of the same brain ...
        assert corr(target, corrected) > corr(target, original)  # ... the corrected one aligned to it


def test_summary_shows_the_ants_version(xa30_run):
    """The summary's ANTs row holds the version the ANTs helper reports (and the run logs)."""
    import html

    from dmriprep_motion.ants import describe_ants

    out, _, _ = xa30_run
    info = describe_ants()  # what cli.run._log_ants logs at start-up
    assert info["backend"] in ("antspyx", "system")
    assert re.search(r"\d+\.\d+", info["version"]), info  # a version, not "unknown"
    page = (out / "sub-01.html").read_text()
    for stem in RUNS:
        text = (out / "sub-01" / "figures" / f"{stem}_desc-summary_dwi.html").read_text()
        row = re.search(r"<tr><th>ANTs</th><td>(.*?)</td></tr>", text)
        assert row, text
        assert row.group(1).startswith(html.escape(info["version"]) + " ")
        assert f"{info['backend']} backend" in row.group(1)
        assert row.group(0) in page  # shown in the report


@pytest.mark.parametrize("stem", RUNS)
def test_qc_tsv_and_sidecar(xa30_run, stem):
    out, _, _ = xa30_run
    folder = out / "sub-01" / "dwi"
    header, row, *rest = (folder / f"{stem}_desc-qc_dwi.tsv").read_text().splitlines()
    assert not rest
    tsv = dict(zip(header.split("\t"), row.split("\t"), strict=True))
    assert list(tsv) == list(QC_FIELDS)
    columns = json.loads((folder / f"{stem}_desc-qc_dwi.json").read_text())
    assert list(columns) == list(tsv) and columns == qc_sidecar()  # every column described
    sidecar = json.loads((folder / f"{stem}_desc-preproc_dwi.json").read_text())
    assert set(sidecar["QC"]) == set(QC_FIELDS)
    for key, value in sidecar["QC"].items():
        if isinstance(value, bool):
            assert tsv[key] == str(value).lower(), key
        else:
            assert float(tsv[key]) == pytest.approx(value, rel=1e-5, abs=1e-6), key
    # Convergence of the passes (E2E_ARGS: 3 passes, the default 0.05 mm tolerance).
    qc = sidecar["QC"]
    assert 1 <= qc["passes_run"] <= 3 and qc["last_pass_change_mm"] > 0
    assert qc["converged"] is (qc["last_pass_change_mm"] < 0.05)
    assert qc["converged"] or qc["passes_run"] == 3  # a run stops early only once converged
    conf = read_confounds(folder / f"{stem}_desc-confounds_timeseries.tsv")
    assert sidecar["QC"]["volumes"] == 21
    assert sidecar["QC"]["fd_mean_mm"] == pytest.approx(np.nanmean(conf["framewise_displacement"]), abs=1e-5)
    assert sidecar["QC"]["fd_max_mm"] == pytest.approx(np.nanmax(conf["framewise_displacement"]), abs=1e-5)
    assert sidecar["QC"]["similarity_mean"] == pytest.approx(np.mean(conf["similarity"]), abs=1e-5)
    assert 0 <= sidecar["QC"]["outliers"] <= 21


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _screenshot(page: Path, shot: Path, height: int, profile: Path) -> np.ndarray:
    """Render ``page`` offline in headless Chromium, 1280 px wide; return the RGB pixels."""
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={profile}", f"--screenshot={shot}", f"--window-size=1280,{height}",
           page.as_uri()]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=180)
    with Image.open(shot) as img:
        assert img.size == (1280, height)
        return np.asarray(img.convert("RGB"), dtype=float)


def _css_background(selector: str) -> np.ndarray:
    """RGB background colour of ``selector`` in the report template's stylesheet."""
    from dmriprep_motion.data import load

    css = Path(load("reports/report.tpl")).read_text()
    hexa = re.search(rf"{re.escape(selector)} \{{[^}}]*background: #([0-9a-fA-F]{{6}})", css).group(1)
    return np.array([int(hexa[i : i + 2], 16) for i in (0, 2, 4)], dtype=float)


@pytest.mark.skipif(
    _chromium() is None,
    reason="headless Chromium not installed (Debian: apt-get install chromium); screenshot check skipped",
)
def test_report_screenshot(xa30_run, tmp_path):
    """Render the whole page offline in headless Chromium: figures, Methods, Errors, provenance drawn."""
    out, _, _ = xa30_run
    # Tall enough for the whole page: grown until the bottom of the screenshot is blank page.
    for height in (12_000, 24_000, 48_000):
        pixels = _screenshot(out / "sub-01.html", tmp_path / "report.png", height, tmp_path / "profile")
        gray = pixels.mean(axis=2)
        drawn = np.flatnonzero((gray < 250).any(axis=1))
        if drawn.size and drawn[-1] < height - 200:
            break
    else:
        pytest.fail(f"the report is taller than {height} px")
    end = drawn[-1] + 1
    assert end > 3000, f"only {end} px drawn"
    pixels, gray = pixels[:end], gray[:end]
    # Black mosaic backgrounds of the flicker SVGs and the GIF: present only if the figures loaded.
    assert (gray < 20).mean() > 0.05
    # Coloured plot content (motion traces, shell shading), not just text on white.
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert (saturation > 60).mean() > 0.002
    # Below the last figure, in order: the Methods box (copyright waiver, .alert-info), the Errors
    # box ("No errors to report!", .alert-success), then the provenance accordion to the page end.
    figure_rows = np.flatnonzero((gray < 20).mean(axis=1) > 0.3)  # rows crossing a black mosaic

    def box_rows(selector: str) -> np.ndarray:
        close = np.abs(pixels - _css_background(selector)).max(axis=2) <= 3
        return np.flatnonzero(close.sum(axis=1) > 200)  # rows of a wide box, not stray pixels

    methods, errors = box_rows(".alert-info"), box_rows(".alert-success")
    assert figure_rows.size and methods.size and errors.size
    methods = methods[methods > figure_rows[-1]]
    assert methods.size > 20, "Methods (About section) not drawn below the figures"
    assert errors.min() > methods.max(), "Errors section not drawn below Methods"
    assert end - errors.max() > 100, "provenance not drawn below Errors"


def test_methods_html_when_pandoc_is_installed(tmp_path, monkeypatch):
    """With pandoc on PATH, CITATION.md is rendered to CITATION.html and shown in its own tab."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "pandoc"
    # Stand-in for pandoc: records its arguments and writes a standalone HTML page to -o.
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {tmp_path}/args\n'
        'while [ "$1" != "-o" ]; do shift; done\n'
        'printf "<html><body><p>Rendered methods</p></body></html>" > "$2"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{Path('/usr/bin')}:{Path('/bin')}")
    out = tmp_path / "out"
    (out / "logs").mkdir(parents=True)
    (out / "logs" / "CITATION.md").write_text("Methods [@ants].\n")
    from dmriprep_motion.reports.assemble import write_citation_html

    html_file = write_citation_html(out)
    assert html_file == out / "logs" / "CITATION.html"
    args = (tmp_path / "args").read_text()
    assert "--citeproc" in args and "boilerplate.bib" in args
    page = write_subject_report("03", [], out).read_text()
    assert "Rendered methods" in page and ">HTML</button>" in page and ">Markdown</button>" in page


@pytest.mark.skipif(shutil.which("pandoc") is None, reason="pandoc not installed")
def test_methods_html_with_real_pandoc(ds_xa30, tmp_path):
    """The real pandoc renders the generated boilerplate: every citation resolves to a reference."""
    from dmriprep_motion.cli.run import run
    from dmriprep_motion.reports.assemble import write_citation_html
    from tests._datasets import small_dataset

    bids = small_dataset(ds_xa30, tmp_path / "bids", n_volumes=6)
    out = tmp_path / "out"
    args = [str(bids), str(out), "participant", "-w", str(tmp_path / "work"), "--skip-bids-validation",
            "--boilerplate-only"]  # fmt: skip
    assert run(args) == 0
    keys = set(re.findall(r"@([\w-]+)", (out / "logs" / "CITATION.md").read_text()))
    html_file = write_citation_html(out)
    assert html_file is not None, "pandoc failed"
    page = html_file.read_text()
    assert "???" not in page  # pandoc's mark of a citation missing from the bibliography
    entries = set(re.findall(r'id="ref-([\w-]+)"', page))
    assert keys and keys <= entries, keys - entries
    assert not re.search(r'(?:src|href)="https?://[^"]*\.(?:css|js)"', page)  # standalone, offline


def test_crash_files_go_to_the_subject_log_folder(ds_xa30, tmp_path):
    """Every node (not only the subject workflow) writes its crash file to sub-XX/log/."""
    from dmriprep_motion.bids import collect_runs
    from dmriprep_motion.workflows.base import Settings, all_nodes, init_dmriprep_motion_wf

    runs = collect_runs(ds_xa30, participants=["01"])
    out = tmp_path / "out"
    wf = init_dmriprep_motion_wf(runs=runs, output_dir=out, bids_dir=ds_xa30, settings=Settings(sloppy=True),
                                 work_dir=tmp_path / "work")  # fmt: skip
    nodes = all_nodes(wf)
    names = {n.name for n in nodes}
    assert {f"export_{desc}" for desc in REPORTLETS} <= names and "qc" in names
    for node in nodes:
        assert node.config["execution"]["crashdump_dir"] == str(out.absolute() / "sub-01" / "log"), node
