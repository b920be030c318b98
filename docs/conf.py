"""Sphinx configuration of the dmriprep_motion documentation.

Build (warnings are errors)::

    pip install ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html

Parts of the pages are generated from the code at build time by ``_ext/dmriprep_docs.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))  # the package of this checkout, even if another one is installed
os.environ.setdefault("NIPYPE_NO_ET", "1")

from dmriprep_motion import __version__  # noqa: E402

project = "dmriprep_motion"
author = "dmriprep_motion developers"
copyright = "dmriprep_motion developers, Apache-2.0"  # noqa: A001
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.graphviz",
    "dmriprep_docs",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "examples", "Thumbs.db", ".DS_Store"]
myst_heading_anchors = 3
# Pages written by other parts of the project (benchmarks/README.md) may link to files
# that are not documentation pages: do not fail the build on those links.
suppress_warnings = ["myst.xref_missing", "myst.header"]

graphviz_output_format = "svg"
html_theme = "alabaster"
html_theme_options = {"description": "Head-motion correction for diffusion MRI", "fixed_sidebar": True}
html_static_path: list[str] = []
html_last_updated_fmt = None
nitpicky = False
