"""Optional BIDS validation with ``bids-validator-deno`` (when installed)."""

from __future__ import annotations

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
    """Run the validator on ``path``; return its exit code and output."""
    exe = validator_executable()
    if exe is None:
        raise FileNotFoundError("bids-validator-deno is not installed")
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=timeout, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def validate_input(bids_dir: Path) -> None:
    """Validate the input dataset; raise :class:`InputError` (16) when it has errors."""
    if validator_executable() is None:
        LOGGER.info("bids-validator-deno not installed: input not validated")
        return
    code, output = run_validator(bids_dir)
    if code != 0:
        errors = [line.strip() for line in output.splitlines() if "ERROR" in line.upper()]
        first = errors[0] if errors else output.strip().splitlines()[-1:]
        raise InputError(f"the input is not valid BIDS ({first}); fix it or use --skip-bids-validation", 16)
    LOGGER.info("bids-validator-deno: input is valid")
