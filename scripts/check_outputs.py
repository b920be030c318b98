#!/usr/bin/env python
"""Compare the files of a dmriprep-motion output directory with an expected listing.

The listing (``.circleci/expected_outputs.txt``) has one path per line, relative to
the output directory, sorted; ``#`` starts a comment. A line starting with ``? ``
holds an *optional* glob pattern (``fnmatch``; ``*`` also matches ``/``): files
matching it are allowed but not required. Files below ``sub-*/figures/`` (report
figures, which change with the report) and ``sub-*/log/`` (crash files) are not
compared.

Usage::

    python scripts/check_outputs.py OUTPUT_DIR [.circleci/expected_outputs.txt]

Exits 1 and prints the missing and unexpected files when they differ.
"""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = ROOT / ".circleci" / "expected_outputs.txt"
#: Folders whose content is not compared (patterns on the relative path).
IGNORED = ("sub-*/figures/*", "sub-*/log/*", "sub-*/ses-*/figures/*")


def listing(output_dir: Path) -> list[str]:
    """Relative paths of the files below ``output_dir``, sorted, without ignored folders."""
    out = []
    for path in sorted(Path(output_dir).rglob("*")):
        if path.is_file():
            rel = path.relative_to(output_dir).as_posix()
            if not any(fnmatch.fnmatch(rel, pattern) for pattern in IGNORED):
                out.append(rel)
    return out


def read_expected(path: Path = EXPECTED) -> tuple[list[str], list[str]]:
    """Required paths and optional patterns of an expected listing."""
    required, optional = [], []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("? "):
            optional.append(line[2:].strip())
        else:
            required.append(line)
    return required, optional


def compare(output_dir: Path, expected: Path = EXPECTED) -> tuple[list[str], list[str]]:
    """Return ``(missing, unexpected)`` files of ``output_dir`` against ``expected``."""
    required, optional = read_expected(expected)
    found = listing(output_dir)
    missing = sorted(set(required) - set(found))
    unexpected = [
        rel
        for rel in found
        if rel not in required and not any(fnmatch.fnmatch(rel, pattern) for pattern in optional)
    ]
    return missing, unexpected


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; return the exit code."""
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        sys.stderr.write(__doc__)
        return 2
    output_dir = Path(args[0])
    expected = Path(args[1]) if len(args) > 1 else EXPECTED
    missing, unexpected = compare(output_dir, expected)
    for rel in missing:
        print(f"missing:    {rel}")
    for rel in unexpected:
        print(f"unexpected: {rel}")
    if missing or unexpected:
        print(f"{output_dir} does not match {expected}")
        return 1
    print(f"{output_dir} matches {expected} ({len(listing(output_dir))} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
