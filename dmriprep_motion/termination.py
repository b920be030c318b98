"""Stopping a run on SIGTERM, even where Python swallows the exception that stops it.

The command's SIGTERM handler (``cli/run.py``) stops the process tree and raises
:class:`Terminated` in the main thread.  Python runs a signal handler wherever the main thread
is between two bytecodes, and that can be inside a finalizer (``__del__``, a weak-reference
callback run by the garbage collector), where an exception is printed as "Exception ignored"
and dropped.  A run interrupted there used to go on: to the end with exit code 0 when that
happened at start-up, or waiting forever for the workers the handler had killed (found by
SIGTERM at random moments of a short run: 2 of 12 early signals were swallowed, in a weak
reference's callback of the dataset index's SQLAlchemy objects, or in logging's at-fork
callback).  So the handler also sets :data:`STOP`, which

- the scheduler checks at every round (:class:`~dmriprep_motion.engine.WakefulMultiProcPlugin`,
  at most ``MAX_WAIT`` s apart), raising :class:`Terminated` again;
- the command checks when the run returns, and exits 143 whatever the run returned (nodes
  failing because their workers were stopped are not reported as a processing failure);
- :func:`quiet_unraisable` keeps the dropped exception from printing a traceback;
- a watchdog thread (:func:`start_watchdog`) ends the process with exit code 143 if it is still
  alive :data:`GRACE` seconds later (outputs are written atomically, so nothing left behind
  looks complete).

Once the run is over, the command ignores SIGTERM: in the interpreter's teardown Python restores
the default action of a handled signal, and a SIGTERM there ended a finished run with -15.

Imports nothing heavy: the command line imports it before Nipype.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

#: Set when the run must stop (SIGTERM received).
STOP = threading.Event()
#: Seconds between SIGTERM and the watchdog ending a process that has not stopped.
GRACE = 15.0


class Terminated(BaseException):
    """SIGTERM received (not an ``Exception``, so that ``except Exception`` lets it through)."""


def check() -> None:
    """Raise :class:`Terminated` if the run must stop."""
    if STOP.is_set():
        raise Terminated


_WATCHDOG: threading.Thread | None = None


def start_watchdog(code: int, cleanup: Callable[[], None] | None = None) -> threading.Thread:
    """Start (once per process) a daemon thread that ends the process with ``code``
    :data:`GRACE` seconds after :data:`STOP` is set, unless it has exited by then (``cleanup``
    runs first: e.g. stop the child processes again)."""
    global _WATCHDOG
    if _WATCHDOG is not None:
        return _WATCHDOG

    def watch() -> None:
        STOP.wait()
        time.sleep(GRACE)  # a process that exits first takes this daemon thread with it
        if cleanup is not None:
            cleanup()
        # not logging: the main thread may hold the handlers' locks
        os.write(2, f"dmriprep-motion: still running {GRACE:g} s after SIGTERM: stopped\n".encode())
        os._exit(code)

    _WATCHDOG = threading.Thread(target=watch, name="sigterm-watchdog", daemon=True)
    _WATCHDOG.start()
    return _WATCHDOG


def _unraisable(unraisable) -> None:
    if isinstance(unraisable.exc_value, Terminated):
        return  # STOP is set: the run stops anyway; no "Exception ignored" traceback
    sys.__unraisablehook__(unraisable)


def quiet_unraisable() -> None:
    """Do not print :class:`Terminated` when Python drops it (raised inside a finalizer)."""
    sys.unraisablehook = _unraisable
