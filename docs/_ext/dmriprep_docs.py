"""Sphinx extension generating the parts of the documentation that come from the code.

At ``builder-inited`` it writes, into ``docs/_generated/`` (not versioned):

``confounds.rst.inc``
    Tables of the confounds columns, from :func:`dmriprep_motion.confounds.column_metadata`.
``qc.rst.inc``
    Table of the QC metrics, from :data:`dmriprep_motion.qc.QC_COLUMNS`.
``boilerplate.rst.inc``
    The methods text of a default run, from the workflow's ``visit_desc()``.
``workflow.dot`` and ``workflow.rst.inc``
    The hierarchical graph of ``init_dwi_motion_wf`` (Nipype's ``write_hierarchical_dotfile``),
    rendered by ``sphinx.ext.graphviz`` when Graphviz's ``dot`` is installed, else shown
    as a literal ``.dot`` block (so the build never needs Graphviz nor the network).
``usage.txt`` and ``slurm_usage.txt``
    ``--help`` of ``dmriprep-motion`` and ``dmriprep-motion-slurm``.
``motion_wf_doc.txt``
    The docstring of ``init_dwi_motion_wf`` (its parameters, inputs and outputs).
``benchmarks.md``
    The page including ``benchmarks/README.md`` when it exists, else a placeholder.
"""

from __future__ import annotations

import inspect
import os
import shutil
import textwrap
from pathlib import Path

os.environ.setdefault("NIPYPE_NO_ET", "1")

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks" / "README.md"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("`", "\\`").replace("|", "\\|")


def _list_table(title: str, header: list[str], rows: list[list[str]], widths: str) -> str:
    out = [f".. list-table:: {title}", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in [header, *rows]:
        out.append(f"   * - {row[0]}")
        out.extend(f"     - {cell}" for cell in row[1:])
    return "\n".join(out) + "\n"


def confounds_tables() -> str:
    """Confounds columns (rigid, then the extra affine ones) with units and conventions."""
    from dmriprep_motion.confounds import AFFINE_COLUMNS, column_metadata

    rigid = column_metadata("Rigid")
    affine = column_metadata("Affine")
    rows = [[f"``{c}``", m["Units"], _escape(m["Description"])] for c, m in rigid.items()]
    extra = [[f"``{c}``", affine[c]["Units"], _escape(affine[c]["Description"])] for c in AFFINE_COLUMNS]
    return (
        _list_table("Columns of every confounds table", ["column", "units", "meaning"], rows, "18 10 72")
        + "\n"
        + _list_table(
            "Extra columns with ``--transform Affine``", ["column", "units", "meaning"], extra, "18 10 72"
        )
    )


def qc_table() -> str:
    """Columns of the QC table (``<stem>_desc-qc_dwi.tsv``) with units and meaning."""
    from dmriprep_motion.qc import QC_COLUMNS

    rows = [[f"``{c}``", _escape(m["Units"]), _escape(m["Description"])] for c, m in QC_COLUMNS.items()]
    return _list_table("Columns of every QC table", ["column", "units", "meaning"], rows, "22 10 68")


def default_workflow(passes: int = 2):
    """The single-participant workflow of a default run on a 30-direction, one-shell series."""
    import numpy as np

    from dmriprep_motion.bids import DWIRun
    from dmriprep_motion.workflows.base import Settings, init_single_subject_wf

    bids = Path("/data/bids")
    # 30 directions spread over the half sphere (a golden-angle spiral).
    k = np.arange(30) + 0.5
    z, phi = 1 - k / 30, np.pi * (3 - np.sqrt(5)) * k
    dirs = np.column_stack([np.sqrt(1 - z**2) * np.cos(phi), np.sqrt(1 - z**2) * np.sin(phi), z])
    run = DWIRun(
        dwi=bids / "sub-01" / "dwi" / "sub-01_dwi.nii.gz",
        bval=bids / "sub-01" / "dwi" / "sub-01_dwi.bval",
        bvec=bids / "sub-01" / "dwi" / "sub-01_dwi.bvec",
        subject="01",
        session=None,
        shape=(96, 96, 60, 31),
        bvals=np.array([0.0] + [1000.0] * 30),
        bvecs=np.vstack([np.zeros(3), dirs]),
    )
    return init_single_subject_wf(
        subject="01",
        runs=[run],
        output_dir=Path("/data/out"),
        bids_dir=bids,
        settings=Settings(model="gp", passes=passes),
    )


def boilerplate() -> str:
    """The methods text (Markdown, with Pandoc citations) of a default run, as a literal block."""
    text = default_workflow().visit_desc().strip()
    wrapped = "\n\n".join(
        textwrap.fill(par, 96, break_on_hyphens=False, break_long_words=False) for par in text.split("\n\n")
    )
    return ".. code-block:: markdown\n\n" + textwrap.indent(wrapped, "   ") + "\n"


def workflow_graph(folder: Path, dot_available: bool) -> str:
    """Write ``workflow.dot``; return the reST that shows it (rendered or literal)."""
    from dmriprep_motion.workflows.hmc import init_dwi_motion_wf

    workflow = init_dwi_motion_wf(model="gp", passes=2)
    dotfile = folder / "workflow.dot"
    workflow.write_hierarchical_dotfile(dotfilename=str(dotfile), colored=True, simple_form=True)
    if dot_available:
        return (
            ".. graphviz:: /_generated/workflow.dot\n"
            "   :caption: init_dwi_motion_wf(passes=2): nodes grouped by sub-workflow\n"
            "   :align: center\n"
        )
    return (
        "Graphviz was not installed when these pages were built: the graph is shown in the\n"
        "DOT language (render it with ``dot -Tsvg workflow.dot``).\n\n"
        ".. literalinclude:: /_generated/workflow.dot\n   :language: none\n"
    )


def benchmarks_page() -> str:
    """MyST page including ``benchmarks/README.md`` (or a placeholder if it does not exist)."""
    if BENCHMARKS.is_file():
        first = BENCHMARKS.read_text().lstrip().splitlines()[:1]
        title = "" if first and first[0].startswith("# ") else "# Benchmarks\n\n"
        return (
            "(benchmarks)=\n"
            f"{title}"
            "```{include} ../../benchmarks/README.md\n"
            ":relative-images:\n"
            ":relative-docs: ../\n"
            "```\n"
        )
    return (
        "(benchmarks)=\n# Benchmarks\n\n"
        "The benchmark tables (accuracy against known motion, run time) are generated into\n"
        "`benchmarks/README.md` by the benchmark scripts; that file was not present when these\n"
        "pages were built.\n"
    )


def generate(srcdir: Path, dot_available: bool | None = None) -> Path:
    """Write every generated fragment into ``<srcdir>/_generated``; return that folder."""
    from dmriprep_motion.cli.hpc import build_parser as slurm_parser
    from dmriprep_motion.cli.parser import build_parser
    from dmriprep_motion.workflows.hmc import init_dwi_motion_wf

    if dot_available is None:
        dot_available = shutil.which("dot") is not None
    folder = Path(srcdir) / "_generated"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["COLUMNS"] = "100"  # stable --help wrapping
    files = {
        "confounds.rst.inc": confounds_tables(),
        "qc.rst.inc": qc_table(),
        "boilerplate.rst.inc": boilerplate(),
        "workflow.rst.inc": workflow_graph(folder, dot_available),
        "usage.txt": build_parser().format_help(),
        "slurm_usage.txt": slurm_parser().format_help(),
        "motion_wf_doc.txt": inspect.getdoc(init_dwi_motion_wf) + "\n",
        "benchmarks.md": benchmarks_page(),
    }
    for name, text in files.items():
        path = folder / name
        if not path.exists() or path.read_text() != text:  # unchanged files keep Sphinx's cache valid
            path.write_text(text)
    return folder


def _on_builder_inited(app) -> None:
    generate(Path(app.srcdir))


def setup(app):
    """Sphinx entry point."""
    app.connect("builder-inited", _on_builder_inited)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
