"""Stopping a run on SIGTERM or Ctrl-C, even where Python swallows the exception that stops it.

The command's signal handler (``cli/run.py``) stops the process tree and raises
:class:`Terminated` (SIGTERM) or :class:`KeyboardInterrupt` (SIGINT) in the main thread.  Python
runs a signal handler wherever the main thread is between two bytecodes, and that can be inside
a finalizer (``__del__``, a weak-reference callback run by the garbage collector), where an
exception is printed as "Exception ignored" and dropped.  A run interrupted there used to go
on: to the end with exit code 0 when that happened at start-up, or waiting forever for the
workers the handler had killed (found by SIGTERM at random moments of a short run: 2 of 12
early signals were swallowed, in a weak reference's callback of the dataset index's SQLAlchemy
objects, or in logging's at-fork callback).  So the handler also calls :func:`request`, and

- the scheduler checks at every round (:class:`~dmriprep_motion.engine.WakefulMultiProcPlugin`,
  at most ``MAX_WAIT`` s apart), raising the exception again;
- the command checks when the run returns, and exits 143 (130) whatever the run returned
  (nodes failing because their workers were stopped are not reported as a processing failure);
- :func:`quiet_unraisable` keeps the dropped exception from printing a traceback;
- a watchdog thread (:func:`start_watchdog`) ends the process with exit code 143 (130) if it is
  still alive :data:`GRACE` seconds later (outputs are written atomically, so nothing left
  behind looks complete).

Once the run is over, the command ignores both signals: in the interpreter's teardown Python
restores the default action of a handled signal, and a signal there ended a finished run with
-15 (-2).

Imports nothing heavy: the command line imports it before Nipype.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable

#: Set when the run must stop (SIGTERM or SIGINT received: :func:`request`).
STOP = threading.Event()
#: The signal that stopped the run.
_SIGNUM = 0
#: Seconds between the signal and the watchdog ending a process that has not stopped.
GRACE = 15.0


class Terminated(BaseException):
    """SIGTERM received (not an ``Exception``, so that ``except Exception`` lets it through)."""


def request(signum: int) -> None:
    """The run must stop because of signal ``signum`` (exit code ``128 + signum``)."""
    global _SIGNUM
    _SIGNUM = signum
    STOP.set()


def exception(signum: int) -> BaseException:
    """What stops the run on signal ``signum``: :class:`KeyboardInterrupt` for SIGINT, else
    :class:`Terminated`."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def check() -> None:
    """Raise the exception of the signal that stopped the run, if one did."""
    if STOP.is_set():
        raise exception(_SIGNUM)


_WATCHDOG: threading.Thread | None = None


def start_watchdog(cleanup: Callable[[], None] | None = None) -> threading.Thread:
    """Start (once per process) a daemon thread that ends the process with exit code
    ``128 + signum`` :data:`GRACE` seconds after :func:`request`, unless it has exited by then
    (``cleanup`` runs first: e.g. stop the child processes again)."""
    global _WATCHDOG
    if _WATCHDOG is not None:
        return _WATCHDOG

    def watch() -> None:
        STOP.wait()
        time.sleep(GRACE)  # a process that exits first takes this daemon thread with it
        if cleanup is not None:
            cleanup()
        # not logging: the main thread may hold the handlers' locks
        name = signal.Signals(_SIGNUM).name
        os.write(2, f"dmriprep-motion: still running {GRACE:g} s after {name}: stopped\n".encode())
        os._exit(128 + _SIGNUM)

    _WATCHDOG = threading.Thread(target=watch, name="stop-watchdog", daemon=True)
    _WATCHDOG.start()
    return _WATCHDOG


def _unraisable(unraisable) -> None:
    if STOP.is_set() and isinstance(unraisable.exc_value, (Terminated, KeyboardInterrupt)):
        return  # the run stops anyway; no "Exception ignored" traceback
    sys.__unraisablehook__(unraisable)


def quiet_unraisable() -> None:
    """Do not print the exception that stops the run when Python drops it (raised inside a
    finalizer)."""
    sys.unraisablehook = _unraisable
