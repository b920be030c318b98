"""Outputs appear whole or not at all: a failure while writing leaves no final file and no temporary file."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from dmriprep_motion.bids import atomic_copy, atomic_path, atomic_write_text


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_text(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    atomic_write_text(path, "complete\n")
    assert path.read_text() == "complete\n"
    assert path.stat().st_mode & 0o777 == 0o644
    assert _leftovers(path.parent) == []


@pytest.mark.parametrize("existing", [False, True])
def test_atomic_write_text_failing_midway(tmp_path, existing):
    """The text cannot be encoded past its first characters: the write fails half-way."""
    path = tmp_path / "a.txt"
    if existing:
        path.write_text("previous\n")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, "x" * 100_000 + "\ud800")
    assert path.read_text() == "previous\n" if existing else not path.exists()
    assert _leftovers(tmp_path) == []


def test_atomic_copy(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 1000)
    dst = tmp_path / "out" / "dst.bin"
    atomic_copy(src, dst)
    assert dst.read_bytes() == src.read_bytes()
    assert _leftovers(dst.parent) == []


@pytest.mark.parametrize("existing", [False, True])
def test_atomic_copy_failing_midway(tmp_path, monkeypatch, existing):
    """The disk fills up after half of the file is copied."""
    src = tmp_path / "src.bin"
    src.write_bytes(b"n" * 10_000)
    dst = tmp_path / "out" / "dst.bin"
    if existing:
        dst.parent.mkdir()
        dst.write_bytes(b"previous")

    def half_then_full(a, b):
        Path(b).write_bytes(Path(a).read_bytes()[:5000])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        atomic_copy(src, dst)
    assert dst.read_bytes() == b"previous" if existing else not dst.exists()
    assert _leftovers(dst.parent) == []


def test_atomic_path_interrupted(tmp_path):
    """Ctrl-C (a BaseException) while the temporary file is written: it is removed too."""
    path = tmp_path / "a.html"
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".a.html.")
        tmp.write_text("<html>partial")
        raise KeyboardInterrupt
    assert not path.exists() and _leftovers(tmp_path) == []


def _fake_pandoc(tmp_path: Path, monkeypatch, fail: bool) -> None:
    """A pandoc stand-in that writes to the -o file; when ``fail``, half a page and exit 1."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "pandoc"
    write = 'printf "<html><body>half" > "$2"; exit 1' if fail else 'printf "<html>whole</html>" > "$2"'
    fake.write_text(f'#!/bin/sh\nwhile [ "$1" != "-o" ]; do shift; done\n{write}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")


@pytest.mark.parametrize("fail", [False, True])
def test_citation_html_is_atomic(tmp_path, monkeypatch, caplog, fail):
    from dmriprep_motion.reports.assemble import write_citation_html

    _fake_pandoc(tmp_path, monkeypatch, fail)
    logs = tmp_path / "out" / "logs"
    logs.mkdir(parents=True)
    (logs / "CITATION.md").write_text("Methods.\n")
    result = write_citation_html(tmp_path / "out")
    if fail:
        assert result is None and not (logs / "CITATION.html").exists()
        assert "pandoc could not render the methods boilerplate to HTML" in caplog.text
    else:
        assert result == logs / "CITATION.html" and result.read_text() == "<html>whole</html>"
    assert _leftovers(logs) == []


def test_subject_report_is_atomic(tmp_path, monkeypatch):
    """nireports failing half-way through writing the page: no sub-<label>.html, no temporary file."""
    from nireports.assembler.report import Report

    from dmriprep_motion.reports.assemble import write_subject_report

    out = tmp_path / "out"
    out.mkdir()
    written = []

    def half_then_fail(self):
        Path(self.out_filename).write_text("<html><body>half")
        written.append(Path(self.out_filename))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Report, "generate_report", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_subject_report("03", [], out)
    assert written and written[0].parent == out and written[0].name != "sub-03.html"
    assert not (out / "sub-03.html").exists() and _leftovers(out) == []
    monkeypatch.undo()
    page = write_subject_report("03", [], out)
    assert page == out / "sub-03.html" and "</html>" in page.read_text()
    assert _leftovers(out) == []


def test_citation_html_renders_in_the_background(tmp_path, monkeypatch, caplog):
    """The command starts pandoc before the workflow runs; the reports take its result
    instead of rendering the boilerplate again."""
    import logging

    from dmriprep_motion.reports import assemble

    _fake_pandoc(tmp_path, monkeypatch, fail=False)
    logs = tmp_path / "out" / "logs"
    logs.mkdir(parents=True)
    (logs / "CITATION.md").write_text("Methods.\n")
    future = assemble.start_citation_html(tmp_path / "out")
    assert future.result(timeout=60) == logs / "CITATION.html"
    assert (logs / "CITATION.html").read_text() == "<html>whole</html>"

    def render_again(output_dir):
        raise AssertionError("rendered twice")

    monkeypatch.setattr(assemble, "write_citation_html", render_again)
    monkeypatch.setattr(assemble, "write_subject_report", lambda subject, runs, out: out / "r.html")
    caplog.set_level(logging.INFO, logger="dmriprep_motion")
    written = assemble.write_subject_reports({"01": []}, tmp_path / "out", tmp_path, citation_html=future)
    assert written == [tmp_path / "out" / "r.html"]
    assert "methods boilerplate rendered to HTML with pandoc" in caplog.text
