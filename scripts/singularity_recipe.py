#!/usr/bin/env python
"""Generate the Singularity/Apptainer recipe ``Singularity`` from the ``Dockerfile``.

The conversion is done by spython (``pip install spython``); the few Docker
instructions that have no Singularity meaning are then adapted:

* ``USER`` becomes ``su - <uid>`` in ``%post``, which would fail the build: it is
  dropped (Singularity always runs as the calling user);
* ``ENV`` assignments spython writes in ``%post`` are exported, so the build
  commands that follow see them (as ``docker build`` does);
* ``HOME`` is not exported at run time (Singularity binds the caller's home);
* ``WORKDIR`` would ``cd`` in ``%runscript``, breaking relative paths given on the
  command line: the runscript starts in the caller's directory.

Usage::

    python scripts/singularity_recipe.py            # rewrite ./Singularity
    python scripts/singularity_recipe.py --check    # exit 1 if ./Singularity is stale

Most users do not need the recipe: ``singularity build dmriprep-motion.sif
docker://<registry>/dmriprep-motion:<version>`` converts the published image.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = "# Generated from Dockerfile by scripts/singularity_recipe.py (spython); do not edit.\n"


def convert(dockerfile: Path) -> str:
    """Convert ``dockerfile`` into a Singularity recipe (see the module docstring)."""
    from spython.main.parse.parsers import DockerParser
    from spython.main.parse.writers import SingularityWriter

    recipes = DockerParser(str(dockerfile)).parse()
    text = SingularityWriter(recipes).convert()
    lines = []
    section = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("%"):
            section = stripped.split()[0]
        if section == "%post" and re.match(r"^su -\s", stripped):
            continue  # USER: meaningless (and failing) in Singularity
        if section == "%post" and re.match(r"^[A-Z_][A-Z0-9_]*=", stripped):
            line = f"export {stripped}"
        if section == "%environment" and stripped.startswith("export HOME="):
            continue
        if section in ("%runscript", "%startscript") and re.match(r"^cd\s", stripped):
            continue
        lines.append(line.rstrip())
    return HEADER + "\n".join(lines).strip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or check) the recipe; return the exit code."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dockerfile", type=Path, default=ROOT / "Dockerfile")
    parser.add_argument("--output", type=Path, default=ROOT / "Singularity")
    parser.add_argument("--check", action="store_true", help="fail if the recipe differs from the output")
    opts = parser.parse_args(argv)
    recipe = convert(opts.dockerfile)
    if opts.check:
        current = opts.output.read_text() if opts.output.exists() else ""
        if current != recipe:
            sys.stderr.write(f"{opts.output} is out of date: run python scripts/singularity_recipe.py\n")
            return 1
        return 0
    opts.output.write_text(recipe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
