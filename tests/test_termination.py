"""SIGTERM stops the command even where Python swallows the exception its handler raises."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

#: The command's ``run`` replaced by one that receives a signal (SIGTERM or SIGINT) inside a
#: finalizer, where Python drops the handler's exception (and prints "Exception ignored"), then
#: returns 0 or hangs.
SCRIPT = """
import os, signal, sys, time
from dmriprep_motion import termination
from dmriprep_motion.cli import run as cli

termination.GRACE = 1.0

class Finalized:
    def __del__(self):
        os.kill(os.getpid(), getattr(signal, sys.argv[2]))
        for _ in range(100_000):  # the Python-level handler runs here
            pass

def fake_run(argv):
    Finalized()  # dropped at once: its __del__ runs
    print("after the signal", flush=True)
    while argv[0] == "hang":
        time.sleep(0.05)
    return 0

cli.run = fake_run
cli.main(sys.argv[1:])
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``python -c code args...`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(("name", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
@pytest.mark.parametrize("how", ["returns", "hang"])
def test_swallowed_signal_still_stops_the_command(how, name, code):
    start = time.monotonic()
    proc = _python(SCRIPT, how, name)
    elapsed = time.monotonic() - start
    assert "after the signal" in proc.stdout  # the handler's exception was dropped: the run went on
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert proc.returncode == code, proc.stderr
    if how == "hang":  # ended by the watchdog, GRACE (1 s) after the signal
        assert f"still running 1 s after {name}: stopped" in proc.stderr
        assert elapsed < 20
    else:  # the command noticed when the run returned
        assert ("terminated (SIGTERM)" if name == "SIGTERM" else "interrupted;") in proc.stderr


def test_other_dropped_exceptions_are_still_printed():
    code = (
        "from dmriprep_motion import termination\n"
        "termination.quiet_unraisable()\n"
        "class Broken:\n"
        "    def __del__(self):\n"
        "        raise ValueError('from a finalizer')\n"
        "Broken()\n"
    )
    proc = _python(code)
    assert proc.returncode == 0 and "Exception ignored" in proc.stderr and "from a finalizer" in proc.stderr


def test_signal_after_the_run_leaves_its_exit_code():
    """A SIGTERM (or SIGINT) while the finished command exits (at-exit callbacks, the
    interpreter's teardown) neither raises nor ends the process with -15 (-2)."""
    code = (
        "import atexit, os, signal, sys, time\n"
        "from dmriprep_motion.cli import run as cli\n"
        "def late():\n"
        "    for sig in (signal.SIGTERM, signal.SIGINT):\n"
        "        print('ignored' if signal.getsignal(sig) is signal.SIG_IGN else 'handled')\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(0.2)\n"
        "atexit.register(late)\n"
        "cli.run = lambda argv: 0\n"
        "cli.main([])\n"
    )
    proc = _python(code)
    assert proc.returncode == 0 and "Terminated" not in proc.stderr, proc.stderr
    # ignored, not handled: Python keeps an ignored signal ignored through its teardown, where it
    # restores the default action of a handled one (SIGTERM there ended finished runs with -15)
    assert proc.stdout.split() == ["ignored", "ignored"]
