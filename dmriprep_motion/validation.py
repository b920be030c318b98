"""Optional BIDS validation with ``bids-validator-deno`` (when installed)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

from dmriprep_motion.bids import InputError

LOGGER = logging.getLogger("dmriprep_motion")


def validator_executable() -> str | None:
    """Path of the ``bids-validator-deno`` executable, if installed."""
    return shutil.which("bids-validator-deno")


def run_validator(path: Path, timeout: float = 600) -> tuple[int, str]:
    """Run the validator on ``path`` (JSON report); return its exit code and output."""
    exe = validator_executable()
    if exe is None:
        raise FileNotFoundError("bids-validator-deno is not installed")
    proc = subprocess.run(
        [exe, "--format", "json", str(path)], capture_output=True, text=True, timeout=timeout, check=False
    )
    return proc.returncode, proc.stdout + proc.stderr


def validation_errors(path: Path, timeout: float = 600) -> list[str]:
    """Errors (not warnings) the validator reports for ``path``, one ``CODE location`` string each.

    Raises
    ------
    RuntimeError
        When the validator fails without a JSON report.
    """
    code, output = run_validator(path, timeout)
    try:
        report = json.loads(output[output.index("{") :])
        issues = report["issues"]["issues"]
    except (ValueError, KeyError, TypeError):
        tail = output[-300:]
        raise RuntimeError(f"bids-validator-deno exited with {code} without a report: {tail}") from None
    errors = [
        f"{issue.get('code', '?')} {issue.get('location', '')}".strip()
        for issue in issues
        if issue.get("severity") == "error"
    ]
    if code != 0 and not errors:
        raise RuntimeError(f"bids-validator-deno exited with {code} but reported no error")
    return errors


def validate_input(bids_dir: Path) -> None:
    """Validate the input dataset; raise :class:`InputError` (16) when it has errors."""
    if validator_executable() is None:
        LOGGER.info("bids-validator-deno not installed: input not validated")
        return
    try:
        errors = validation_errors(bids_dir)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        LOGGER.warning("bids-validator-deno could not validate the input (%s); continuing", err)
        return
    if errors:
        raise InputError(
            f"the input is not valid BIDS ({len(errors)} error(s); first: {errors[0]}); "
            "fix it or use --skip-bids-validation",
            16,
        )
    LOGGER.info("bids-validator-deno: input is valid")
