"""Per-subject HTML report, assembled by nireports from the reportlets in ``sub-X/figures/``.

The reportlets are written by the Nipype nodes of
:func:`dmriprep_motion.workflows.reports.init_dwi_reports_wf`; this module only
assembles them (and the methods boilerplate, crash files and provenance) into
``<output_dir>/sub-<label>.html`` following ``data/reports/bootstrap.yml`` and
our self-contained Jinja template ``data/reports/report.tpl`` (nireports' default
template loads jQuery and Bootstrap from CDNs; ours needs no network).
"""

from __future__ import annotations

import html
import logging
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

from dmriprep_motion import __version__
from dmriprep_motion.bids import DWIRun, atomic_path
from dmriprep_motion.data import load
from dmriprep_motion.qc import read_confounds

LOGGER = logging.getLogger("dmriprep_motion")

__all__ = [
    "read_confounds",
    "start_citation_html",
    "write_subject_reports",
    "write_subject_report",
    "local_references",
    "unique_anchors",
]


def write_citation_html(output_dir: Path) -> Path | None:
    """Render ``logs/CITATION.md`` to ``logs/CITATION.html`` with pandoc, when pandoc is installed."""
    pandoc = shutil.which("pandoc")
    source = Path(output_dir) / "logs" / "CITATION.md"
    if pandoc is None or not source.is_file():
        return None
    out = source.with_suffix(".html")
    bib = str(load("reports/boilerplate.bib"))
    try:
        # pandoc writes to a temporary name (the format given, not guessed from the
        # name); the page appears complete, by an atomic rename, or not at all.
        with atomic_path(out) as tmp:
            cmd = [pandoc, str(source), "--standalone", "--citeproc", "--metadata",
                   "pagetitle=dmriprep-motion methods", "--bibliography", bib, "--to", "html",
                   "-o", str(tmp)]  # fmt: skip
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as err:
        LOGGER.warning("pandoc could not render the methods boilerplate to HTML: %s", err)
        return None
    return out


def start_citation_html(output_dir: Path) -> Future:
    """Run :func:`write_citation_html` in a background thread; its future.

    pandoc takes about 0.2 s, which the command spends while the workflow runs instead of
    after it; :func:`write_subject_reports` waits for the result.
    """
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pandoc")
    future = pool.submit(write_citation_html, output_dir)
    pool.shutdown(wait=False)
    return future


def provenance(subject: str, runs: list[DWIRun], output_dir: Path) -> dict:
    """Metadata of the "Reproducibility and provenance" reportlet."""
    from dmriprep_motion.interfaces.reports import software_versions

    return {
        "Execution provenance": {
            "dmriprep-motion version": __version__,
            "Command": f"<code>{html.escape(' '.join([Path(sys.argv[0]).name, *sys.argv[1:]]))}</code>",
            "Date report assembled": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "Participant": f"sub-{subject}",
            "DWI runs": ", ".join(run.dwi.name for run in runs),
            "Output directory": str(output_dir),
        },
        "Software versions": software_versions(),
    }


def write_subject_report(subject: str, runs: list[DWIRun], output_dir: Path) -> Path:
    """Assemble ``<output_dir>/sub-<subject>.html`` from the reportlets of ``subject``."""
    from nireports.assembler.report import Report

    output_dir = Path(output_dir).absolute()
    path = output_dir / f"sub-{subject}.html"
    # nireports writes its output in place: give it a temporary name in the same folder
    # (relative links stay valid) and rename the finished page atomically.
    with atomic_path(path) as tmp:
        report = Report(
            output_dir,
            None,
            bootstrap_file=load("reports/bootstrap.yml"),
            out_filename=str(tmp),
            reportlets_dir=output_dir,
            metadata={
                "filename": path.stem,
                "template": str(load("reports/report.tpl")),
                "provenance": provenance(subject, runs, output_dir),
            },
            subject=subject,
        )
        unique_anchors(report.sections)
        report.generate_report()
    missing = [ref for ref in local_references(path) if not (path.parent / ref).exists()]
    if missing:
        LOGGER.warning("report %s refers to missing files: %s", path, ", ".join(missing))
    return path


def unique_anchors(sections: list) -> dict[str, str]:
    """Give every reportlet of a report a distinct, URL-safe HTML id.

    The template uses ``reportlet.name`` as the ``id`` of each reportlet and the navigation
    bar links to the first reportlet of every run. nireports names per-run reportlets after
    their BIDS query (``..._direction-AP_extension-['.svg']_...``), while a ``name`` set in the
    bootstrap file would be shared by every run. Names are reduced to ``[A-Za-z0-9_.-]`` and
    numbered when they repeat a section name (the sections' ids, also their headings, are
    kept) or an earlier reportlet.

    Parameters
    ----------
    sections : list of nireports ``SubReport``
        The report's sections (``Report.sections``); their reportlets are renamed in place.

    Returns
    -------
    dict
        New id to old name, for the reportlets whose name changed.
    """
    taken = {str(section.name) for section in sections}
    renamed: dict[str, str] = {}
    for section in sections:
        for reportlet in section.reportlets:
            base = re.sub(r"[^A-Za-z0-9_.-]+", "", str(reportlet.name)) or "reportlet"
            anchor, count = base, 1
            while anchor in taken:
                count += 1
                anchor = f"{base}-{count}"
            taken.add(anchor)
            if anchor != reportlet.name:
                renamed[anchor] = str(reportlet.name)
                reportlet.name = anchor
    return renamed


def write_subject_reports(
    runs: dict[str, list[DWIRun]], output_dir: Path, work_dir: Path, *, citation_html: Future | None = None
) -> list[Path]:
    """Write ``sub-<label>.html`` for every processed participant.

    Parameters
    ----------
    runs : dict
        DWI runs by participant label.
    output_dir : path
        Derivatives root (reportlets are in ``sub-<label>/figures/``).
    work_dir : path
        Nipype working directory (unused: everything the report shows is in ``output_dir``).
    citation_html : Future, optional
        The methods boilerplate's rendering, started earlier (:func:`start_citation_html`);
        without it, the boilerplate is rendered here.
    """
    del work_dir
    if citation_html.result() if citation_html is not None else write_citation_html(output_dir):
        LOGGER.info("methods boilerplate rendered to HTML with pandoc")
    written = []
    for subject, subject_runs in runs.items():
        path = write_subject_report(subject, subject_runs, output_dir)
        written.append(path)
        LOGGER.info("report: %s", path)
    return written


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("src", "data", "href") and value:
                self.refs.append(value)


def local_references(html_file: str | Path) -> list[str]:
    """Relative file references (``src``, ``data``, ``href``) of an HTML page, anchors excluded.

    Raises
    ------
    ValueError
        If the page loads anything from the network (``http(s)://`` or ``//`` in ``src``/``data``).
    """
    text = Path(html_file).read_text()
    parser = _References()
    parser.feed(text)
    out = []
    for ref in parser.refs:
        url = urlparse(ref)
        if url.scheme in ("http", "https") or ref.startswith("//"):
            if re.search(rf'(src|data)=["\']{re.escape(ref)}', text):
                raise ValueError(f"{html_file} loads a remote resource: {ref}")
            continue  # a plain link, not a resource the page needs
        if url.scheme or ref.startswith("#"):
            continue
        out.append(unquote(url.path))
    return out
