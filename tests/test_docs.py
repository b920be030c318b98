"""Documentation: generated fragments, coverage of the outputs, and a warnings-as-errors build."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))
import dmriprep_docs  # noqa: E402


@pytest.fixture
def generated(tmp_path):
    return dmriprep_docs.generate(tmp_path, dot_available=False)


def test_confounds_table_is_generated_from_column_metadata(generated):
    from dmriprep_motion.confounds import column_metadata

    text = (generated / "confounds.rst.inc").read_text()
    rigid, affine = text.split("Extra columns with")
    for column, meta in column_metadata("Rigid").items():
        row = re.search(rf"\* - ``{column}``\n\s+- (.+)\n\s+- (.+)\n", rigid)
        assert row, column
        assert row.group(1) == meta["Units"]
        assert row.group(2).replace("\\", "") == meta["Description"]
    extra = set(column_metadata("Affine")) - set(column_metadata("Rigid"))
    assert extra and all(f"``{c}``" in affine and f"``{c}``" not in rigid for c in extra)


def test_qc_table_is_generated_from_qc_columns(generated):
    from dmriprep_motion.qc import QC_COLUMNS

    text = (generated / "qc.rst.inc").read_text()
    for column, meta in QC_COLUMNS.items():
        row = re.search(rf"\* - ``{column}``\n\s+- (.+)\n\s+- (.+)\n", text)
        assert row, column
        assert row.group(1) == meta["Units"]
        assert row.group(2).replace("\\", "") == meta["Description"]


def test_boilerplate_comes_from_visit_desc(generated):
    text = (generated / "boilerplate.rst.inc").read_text()
    assert text.startswith(".. code-block:: markdown\n")
    desc = dmriprep_docs.default_workflow().visit_desc()
    flat = " ".join(text.split()[3:])
    assert flat == " ".join(desc.split())
    # Each workflow's text is its own paragraph (no "sentence.Next" glued together).
    assert not re.search(r"[a-z]\.[A-Z]", desc)
    paragraphs = [p for p in desc.split("\n\n") if p.strip()]
    assert [p.split()[0] for p in paragraphs] == ["Diffusion", "Head", "The", "Outlier", "Framewise"]
    for key in re.findall(r"\[@(\w+)\]", desc):  # every citation key has a reference
        assert f"``@{key}``" in (DOCS / "method.rst").read_text()


def test_workflow_graph_fragment(tmp_path):
    from dmriprep_motion.workflows.hmc import init_dwi_motion_wf

    literal = dmriprep_docs.generate(tmp_path / "a", dot_available=False)
    assert ".. literalinclude:: /_generated/workflow.dot" in (literal / "workflow.rst.inc").read_text()
    rendered = dmriprep_docs.generate(tmp_path / "b", dot_available=True)
    assert (rendered / "workflow.rst.inc").read_text().startswith(".. graphviz:: /_generated/workflow.dot")
    dot = (rendered / "workflow.dot").read_text()
    assert dot.lstrip().startswith("digraph")
    names = {n.name for n in init_dwi_motion_wf(model="gp", passes=2)._get_all_nodes()}
    for name in names:  # every node of the code is drawn
        assert re.search(rf"\b{name}\b", dot), name
    assert "hmc_pass01_wf" in dot and "hmc_pass02_wf" in dot and "dwi_reference_wf" in dot


def test_benchmarks_page_with_and_without_readme(tmp_path, monkeypatch):
    monkeypatch.setattr(dmriprep_docs, "BENCHMARKS", tmp_path / "missing.md")
    placeholder = dmriprep_docs.benchmarks_page()
    assert "# Benchmarks" in placeholder and "{include}" not in placeholder
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks of dmriprep_motion\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    monkeypatch.setattr(dmriprep_docs, "BENCHMARKS", readme)
    page = dmriprep_docs.benchmarks_page()
    assert "```{include} ../../benchmarks/README.md" in page
    assert "# Benchmarks\n" not in page  # the README's own title is the page title


def test_usage_pages_are_generated_from_the_parsers(generated):
    from dmriprep_motion.cli.parser import build_parser

    usage = (generated / "usage.txt").read_text()
    for action in build_parser()._actions:
        for flag in action.option_strings:
            assert flag in usage
    assert "--dry-run" in (generated / "slurm_usage.txt").read_text()


def test_readme_option_table_matches_the_parser():
    """The README's option table names every option of the parser, and quotes the GP's taper range."""
    from dmriprep_motion.cli.parser import build_parser
    from dmriprep_motion.models import GPModel

    readme = (ROOT / "README.md").read_text()
    table = readme.split("| option | meaning |\n", 1)[1].split("\n\n", 1)[0]
    for action in build_parser()._actions:
        flags = [f for f in action.option_strings if f not in ("-h", "--help")]
        if flags:  # one spelling of each option is enough (aliases such as --participant_label)
            assert any(re.search(rf"`{re.escape(f)}(?![\w-])", table) for f in flags), flags
    low, high = (f"{1e3 * adc:g}" for adc in GPModel.free_water_adc)
    assert f"({low}–{high} µm²/ms)" in table


def _heading_anchor(title: str) -> str:
    """GitHub's (and MyST's) anchor of a Markdown heading: lower case, punctuation dropped."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def test_benchmarks_readme_contents_link_every_section():
    """The benchmarks README's contents list links every section, and every in-page link lands."""
    text = (ROOT / "benchmarks" / "README.md").read_text()
    headings = re.findall(r"^(#{2,6}) (.+)$", text, flags=re.MULTILINE)
    anchors = {_heading_anchor(title) for _, title in headings}
    links = set(re.findall(r"\]\(#([^)\s]+)\)", text))
    broken = links - anchors
    assert not broken, sorted(broken)
    sections = {_heading_anchor(title) for level, title in headings if level == "##"}
    unlisted = sections - links - {"contents"}
    assert not unlisted, sorted(unlisted)


def test_outputs_page_lists_every_derivative():
    from dmriprep_motion.bids import DERIVATIVE_SUFFIXES

    text = (DOCS / "outputs.rst").read_text()
    for suffix in DERIVATIVE_SUFFIXES.values():
        assert f"``<stem>_{suffix}``" in text
    for name in ("sub-<label>.html", "logs/CITATION.md", "dataset_description.json", ".bidsignore"):
        assert f"``{name}``" in text
    assert ".. include:: _generated/confounds.rst.inc" in text
    assert ".. include:: _generated/qc.rst.inc" in text


def _list_table(text: str, caption: str) -> str:
    """The body of the ``list-table`` with ``caption`` (up to the next unindented line)."""
    body = text.split(f".. list-table:: {caption}\n", 1)[1]
    end = re.search(r"^\S", body, re.M)
    return body[: end.start()] if end else body


def test_outputs_page_lists_every_report_figure(tmp_path):
    """The figures table names exactly the files the reports workflow writes, and nothing else."""
    from dmriprep_motion.workflows.reports import init_dwi_reports_wf

    stem = "sub-01_dir-AP"
    wf = init_dwi_reports_wf(output_dir=tmp_path, subject="01", stem=stem, settings={})
    written = set()
    for node in wf._get_all_nodes():
        if node.name.startswith("export_"):
            path = Path(node.inputs.out_file)
            assert path.parent == tmp_path.absolute() / "sub-01" / "figures"
            assert path.name.startswith(f"{stem}_")
            written.add("<stem>" + path.name.removeprefix(stem))
    assert len(written) == 8  # summary (html), volumes (gif) and six svg figures
    table = _list_table(
        (DOCS / "outputs.rst").read_text(), "Figures per DWI series, in ``<output_dir>/sub-<label>/figures/``"
    )
    documented = re.findall(r"^   \* - ``(<stem>_[^`]+)``$", table, re.M)
    assert len(documented) == len(set(documented)) and set(documented) == written


def test_outputs_page_summarises_every_confounds_column():
    from dmriprep_motion.confounds import column_metadata

    text = (DOCS / "outputs.rst").read_text()
    row = re.search(r"``<stem>_desc-confounds_timeseries.tsv``\n +- (.+?)\n   \*", text, re.S)
    prose = " ".join(row.group(1).split())
    words = {"trans": "motion parameters", "rot": "motion parameters", "bval": "b-value"}
    for column in column_metadata("Rigid"):
        word = words.get(column.split("_")[0], column.replace("_", " "))
        assert word in prose, column


def test_exit_code_tables_list_every_code():
    """usage.rst and troubleshooting.rst list the exit codes the program has, no more."""
    from dmriprep_motion.cli import parser

    codes = {value for name, value in vars(parser).items() if name.startswith("EXIT_")}
    assert {130, 143} <= codes
    usage = (DOCS / "usage.rst").read_text().split("Exit codes\n")[1].split("Examples\n")[0]
    assert {int(c) for c in re.findall(r"^   \* - (\d+)$", usage, re.M)} == codes
    trouble = re.search(
        r"^Code +Meaning\n=+ =+\n(.*?)^=+ =+$", (DOCS / "troubleshooting.rst").read_text(), re.M | re.S
    )
    assert {int(c) for c in re.findall(r"^(\d+) +\S", trouble.group(1), re.M)} == codes
    # The codes are returned through these names (no bare numbers left in the entry point).
    source = (ROOT / "dmriprep_motion" / "cli" / "run.py").read_text()
    assert not re.search(r"(code = |return )\d", source)


def test_every_page_is_in_the_toctree():
    index = (DOCS / "index.rst").read_text()
    entries = set(re.findall(r"^   (\S+)$", index, re.M))
    pages = {p.stem for p in DOCS.glob("*.rst")} - {"index"}
    assert pages <= entries
    assert {"troubleshooting", "_generated/benchmarks"} <= entries


def _build(tmp_path: Path, path_env: str) -> Path:
    out = tmp_path / "html"
    env = {**os.environ, "PATH": path_env, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-E", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return out


def _text(html: Path) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html.read_text()).split())


def test_docs_build_without_graphviz(tmp_path):
    """sphinx-build -W succeeds with Graphviz absent: the graph is shown as DOT source."""
    out = _build(tmp_path, str(Path(sys.executable).parent))  # a PATH without dot
    for page in ("installation", "usage", "outputs", "method", "workflow", "containers", "hpc",
                 "embedding", "troubleshooting", "_generated/benchmarks"):  # fmt: skip
        assert (out / f"{page}.html").is_file(), page
    assert "digraph" in _text(out / "workflow.html")
    outputs = _text(out / "outputs.html")
    for column in ("trans_x", "rot_z", "framewise_displacement", "similarity", "bval", "shear_yz"):
        assert column in outputs
    assert "Columns of every QC table" in outputs and "Mean Pearson correlation" in outputs
    assert "Head motion was estimated" in _text(out / "method.html")
    assert "sbatch_args" in _text(out / "hpc.html") and "qsub_args" in _text(out / "hpc.html")
    assert "def init_parent_wf" in _text(out / "embedding.html")
    assert "antsx/ants" in _text(out / "containers.html")


@pytest.mark.skipif(
    shutil.which("dot") is None, reason="Graphviz (dot) not installed: apt-get install graphviz"
)
def test_docs_build_with_graphviz(tmp_path):
    """With Graphviz, the workflow graph is rendered as an SVG image."""
    out = _build(tmp_path, os.environ["PATH"])
    images = list((out / "_images").glob("graphviz-*.svg"))
    assert len(images) == 1 and "hmc_pass02_wf" in images[0].read_text()
    assert images[0].name in (out / "workflow.html").read_text()


SAMPLE_BENCHMARKS = """# Benchmarks

Accuracy against injected motion ([raw results](results.csv)):

| model | median error (mm) |
|-------|-------------------|
| gp    | 0.123456          |

### Details

```bash
python benchmarks/run.py
```
"""


def test_docs_build_includes_benchmarks_readme(tmp_path):
    """The benchmarks page shows benchmarks/README.md (a sample one if it does not exist yet)."""
    readme = ROOT / "benchmarks" / "README.md"
    created_dir = not readme.parent.exists()
    created = not readme.exists()
    if created:
        readme.parent.mkdir(exist_ok=True)
        readme.write_text(SAMPLE_BENCHMARKS)
    try:
        out = _build(tmp_path, str(Path(sys.executable).parent))
        page = _text(out / "_generated" / "benchmarks.html")
        first_cell = "0.123456" if created else None
        if first_cell:
            assert first_cell in page and "python benchmarks/run.py" in page
        else:  # the real README: its first heading is the page's title
            title = next(line for line in readme.read_text().splitlines() if line.startswith("#"))
            assert title.lstrip("# ").strip() in page
    finally:
        if created:
            readme.unlink()
            if created_dir:
                readme.parent.rmdir()
            dmriprep_docs.generate(DOCS)  # back to the placeholder page
