"""Optional BIDS validation with ``bids-validator-deno`` (when installed)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dmriprep_motion.bids import InputError

LOGGER = logging.getLogger("dmriprep_motion")


def validator_executable() -> str | None:
    """Path of the ``bids-validator-deno`` executable, if installed."""
    return shutil.which("bids-validator-deno")


class Validator:
    """``bids-validator-deno --format json`` running on ``path`` in the background.

    Its output is read by a thread (a JSON report larger than the pipe's buffer would
    otherwise block it), so the caller can do other work meanwhile: the command indexes the
    dataset and builds the workflow while the validator runs (about 1 s each on ds-xa30).
    """

    def __init__(self, path: Path, timeout: float = 600) -> None:
        exe = validator_executable()
        if exe is None:
            raise FileNotFoundError("bids-validator-deno is not installed")
        self._proc = subprocess.Popen(
            [exe, "--format", "json", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: stop() ends its children too
        )
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._output = self._pool.submit(self._proc.communicate, timeout=timeout)

    def output(self) -> tuple[int, str]:
        """Wait for the validator; return its exit code and output (stdout then stderr)."""
        try:
            stdout, stderr = self._output.result()
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        self._pool.shutdown()
        return self._proc.returncode, stdout + stderr

    def errors(self) -> list[str]:
        """Errors (not warnings) of the report, one ``CODE location`` string each.

        Raises
        ------
        RuntimeError
            When the validator fails without a JSON report.
        """
        code, output = self.output()
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

    def stop(self) -> None:
        """Kill the validator if it still runs (the command stopped before needing its verdict)."""
        if self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:  # ended meanwhile
                pass
        self._pool.shutdown(wait=True)  # the reader sees the pipes close


def validation_errors(path: Path, timeout: float = 600) -> list[str]:
    """Errors (not warnings) the validator reports for ``path`` (see :meth:`Validator.errors`)."""
    return Validator(path, timeout).errors()


class InputValidation:
    """Validation of the input dataset, started now and checked later (:meth:`check`).

    Nothing runs when ``skip`` is set or the validator is not installed (logged).
    """

    def __init__(self, bids_dir: Path, skip: bool = False) -> None:
        self._validator: Validator | None = None
        if skip:
            return
        if validator_executable() is None:
            LOGGER.info("bids-validator-deno not installed: input not validated")
            return
        try:
            self._validator = Validator(bids_dir)
        except OSError as err:
            LOGGER.warning("bids-validator-deno could not validate the input (%s); continuing", err)

    def check(self) -> None:
        """Wait for the verdict; raise :class:`InputError` (16) when the input has errors."""
        if self._validator is None:
            return
        try:
            errors = self._validator.errors()
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
            LOGGER.warning("bids-validator-deno could not validate the input (%s); continuing", err)
            return
        finally:
            self._validator = None
        if errors:
            raise InputError(
                f"the input is not valid BIDS ({len(errors)} error(s); first: {errors[0]}); "
                "fix it or use --skip-bids-validation",
                16,
            )
        LOGGER.info("bids-validator-deno: input is valid")

    def stop(self) -> None:
        """Stop a validation that is no longer needed (no-op once checked)."""
        if self._validator is not None:
            self._validator.stop()
            self._validator = None
