"""Entry point of ``dmriprep-motion``."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from dmriprep_motion import termination
from dmriprep_motion.cli.parser import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
    EXIT_VALIDATION,
    build_parser,
)

LOGGER = logging.getLogger("dmriprep_motion")
#: Threads of the nodes that resample a whole series (at most: they gain little beyond).
SERIES_MAX_THREADS = 4


def _setup_logging(verbose: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s [dmriprep-motion] %(message)s", "%y%m%d-%H:%M:%S"))
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(logging.DEBUG if verbose else logging.INFO)
    LOGGER.propagate = False


def configure_nipype(work_dir: Path, verbose: int) -> None:
    """Nipype settings shipped with the package (see ``data/nipype.cfg``)."""
    os.environ.setdefault("NIPYPE_NO_ET", "1")  # no telemetry / version check over the network
    from nipype import config
    from nipype import logging as nlogging

    from dmriprep_motion.data import load

    config.set_log_dir(str(work_dir))
    import configparser

    shipped = configparser.ConfigParser()
    shipped.read(load("nipype.cfg"))
    sections = {section: dict(shipped[section]) for section in shipped.sections()}
    if verbose > 1:
        sections["logging"].update(workflow_level="INFO", interface_level="INFO")
    config.update_config(sections)
    nlogging.update_logging(config)


class _Progress:
    """Nipype status callback that logs finished steps (per run, per pass).

    It also keeps Nipype's scheduler quick.  Nipype's MultiProc plugin calls ``gc.collect()``
    before every round of submissions and after every node it runs itself; with the
    execution graph's hundreds of nodes tracked, each call took about 0.1 s, 43 s of a
    100 s run on 31 volumes (cProfile of the scheduler process).  The first callback comes
    once that graph is built: it freezes the objects that exist then (``gc.freeze``), so
    later collections only scan what was created since.  :func:`_run` unfreezes them.
    (:class:`~dmriprep_motion.engine.WakefulMultiProcPlugin`, the command's MultiProc, no
    longer makes those calls; the freeze still shortens Python's own full collections.)
    """

    _STEPS = {"validate", "b0ref", "mask", "moved", "predict", "register", "merge", "final", "export"}

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.done = 0
        self.frozen = False

    def __call__(self, node, status: str) -> None:
        if not self.frozen:
            gc.collect()
            gc.freeze()
            self.frozen = True
        if status == "exception":
            LOGGER.error("failed: %s", node.fullname)
            return
        if status != "end":
            return
        self.done += 1
        if node.name in self._STEPS:
            parts = node.fullname.split(".")
            where = " / ".join(p.removesuffix("_wf") for p in parts[1:-1])
            LOGGER.info("[%6.1fs] %s: %s done", time.monotonic() - self.start, where, node.name)


def _plugin(opts) -> tuple[str, dict]:
    if opts.use_plugin is not None:
        import yaml

        try:
            spec = yaml.safe_load(opts.use_plugin.read_text()) or {}
            return spec["plugin"], dict(spec.get("plugin_args", {}) or {})
        except (yaml.YAMLError, KeyError, TypeError, AttributeError) as err:
            from dmriprep_motion.bids import InputError

            raise InputError(f"invalid --use-plugin file {opts.use_plugin}: {err}", EXIT_USAGE) from None
    if opts.nprocs == 1:
        return "Linear", {}
    args: dict = {"n_procs": opts.nprocs, "raise_insufficient": False}
    if opts.mem_mb:
        args["memory_gb"] = opts.mem_mb / 1024
    return "MultiProc", args


def _runner(plugin: str, plugin_args: dict) -> dict:
    """``Workflow.run`` arguments (MultiProc: :class:`~dmriprep_motion.engine.WakefulMultiProcPlugin`)."""
    if plugin == "MultiProc":
        from dmriprep_motion.engine import WakefulMultiProcPlugin

        return {"plugin": WakefulMultiProcPlugin(plugin_args=plugin_args)}
    return {"plugin": plugin, "plugin_args": plugin_args}


def _request_resources(workflow, plugin: str, plugin_args: dict, source: Path | None) -> None:
    """Turn the nodes' resource hints into per-node SLURM/SGE options (other plugins: nothing).

    Raises
    ------
    dmriprep_motion.bids.InputError
        When the plugin file's ``sbatch_args``/``qsub_args`` cannot be parsed (usage error).
    """
    from dmriprep_motion.workflows.resources import SCHEDULER_ARGS, apply_scheduler_hints

    if plugin not in SCHEDULER_ARGS:
        return
    try:
        count = apply_scheduler_hints(workflow, plugin, plugin_args)
    except ValueError as err:  # shlex: unbalanced quotes
        from dmriprep_motion.bids import InputError

        raise InputError(f"invalid {SCHEDULER_ARGS[plugin]} in {source}: {err}", EXIT_USAGE) from None
    LOGGER.info("%s: memory and CPU requests of %d node(s) taken from their resource hints", plugin, count)


def _log_ants() -> None:
    from dmriprep_motion.ants import add_scripts_to_path, describe_ants

    added = add_scripts_to_path()
    if added:
        LOGGER.info(
            "antsRegistration is not on PATH: using the one installed with dmriprep-motion, in %s", added
        )
    info = describe_ants()
    if info["backend"] == "missing":
        from dmriprep_motion.bids import InputError

        raise InputError(
            "antsRegistration is not on PATH, nor installed next to dmriprep-motion (reinstall it)",
            EXIT_FAILURE,
        )
    LOGGER.info(
        "ANTs: %s runs %s (%s backend), version %s",
        info["executable"],
        info["runs"],
        info["backend"],
        info["version"],
    )


def _write_boilerplate(workflow, output_dir: Path) -> Path:
    from dmriprep_motion.bids import atomic_write_text

    text = workflow.visit_desc()
    path = output_dir / "logs" / "CITATION.md"
    atomic_write_text(path, text + "\n")  # participants running at once write the same file
    return path


def _write_graph(workflow, work_dir: Path) -> None:
    try:
        workflow.write_graph(graph2use="colored", format="svg", simple_form=True)
    except Exception as err:  # noqa: BLE001 - graphviz may be missing; the .dot is still written
        LOGGER.warning("workflow graph written as .dot only in %s (%s)", work_dir, err)


def run(argv: list[str] | None = None) -> int:
    """Parse arguments, build and run the workflow; return the exit code.

    User errors end with their BIDS-Apps exit code and one line; a failed
    processing step with 1 and the crash files; any other exception is a bug:
    one line naming it, the traceback in a file (see :func:`_unexpected`), exit 1.
    """
    opts = build_parser().parse_args(argv)
    _setup_logging(opts.verbose)
    try:
        return _run(opts)
    except Exception as err:  # noqa: BLE001 - last resort: one line, not a traceback
        return _unexpected(err, opts.work_dir)


def _unexpected(err: Exception, work_dir: Path) -> int:
    """Log an unexpected exception in one line; keep its traceback in a file (and at debug level).

    Parameters
    ----------
    err : Exception
        The exception that ended the run.
    work_dir : path
        The run's work directory, where ``dmriprep-motion-error-<time>-<pid>.txt`` is
        written (the system's temporary folder if that fails).

    Returns
    -------
    int
        :data:`EXIT_FAILURE`.
    """
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    LOGGER.debug("%s", text.rstrip())
    name = f"dmriprep-motion-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    log: Path | None = None
    try:
        folder = Path(work_dir).expanduser().absolute()
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / name
        log.write_text(text)
    except OSError:
        try:
            fd, tmp = tempfile.mkstemp(prefix=name[:-4] + "-", suffix=".txt")
            with os.fdopen(fd, "w") as fobj:
                fobj.write(text)
            log = Path(tmp)
        except OSError:
            log = None
    first = (str(err).strip().splitlines() or [""])[0]
    where = f"traceback in {log}" if log else "re-run with -v for the traceback"
    LOGGER.error("unexpected error (%s: %s); %s; please report it", type(err).__name__, first, where)
    return EXIT_FAILURE


def _run(opts) -> int:
    """:func:`run` after parsing: every user error is handled here."""
    from dmriprep_motion import __version__
    from dmriprep_motion.bids import InputError, collect_runs, init_output_dir
    from dmriprep_motion.engine import worker_threads
    from dmriprep_motion.models import ModelError
    from dmriprep_motion.validation import InputValidation

    # resolve(): "..", and symlinks, must not hide that the output is inside the input.
    bids_dir = opts.bids_dir.expanduser().resolve()
    output_dir = opts.output_dir.expanduser().resolve()
    work_dir = opts.work_dir.expanduser().resolve()
    if output_dir == bids_dir or (
        bids_dir in output_dir.parents and (bids_dir / "derivatives") not in output_dir.parents
    ):
        LOGGER.error("the output directory must be outside the BIDS dataset (or below its derivatives/)")
        return EXIT_USAGE
    if work_dir == output_dir or work_dir == bids_dir:
        LOGGER.error("the work directory must differ from the BIDS and output directories")
        return EXIT_USAGE
    for what, folder in (("output", output_dir), ("work", work_dir)):
        if folder.exists() and not folder.is_dir():
            LOGGER.error("the %s directory is not a directory: %s", what, folder)
            return EXIT_USAGE
    LOGGER.info("dmriprep-motion %s", __version__)
    # The validator runs in the background while the dataset is indexed; its verdict is
    # awaited before anything else (an invalid dataset still exits with 16, having written nothing).
    validation = InputValidation(bids_dir, skip=opts.skip_bids_validation)
    try:
        runs = collect_runs(
            bids_dir,
            participants=opts.participant_label,
            sessions=opts.session_label,
            filter_file=opts.bids_filter_file,
            b0_threshold=opts.b0_threshold,
        )
        validation.check()
        plugin, plugin_args = _plugin(opts)
        configure_nipype(work_dir, opts.verbose)
        _log_ants()
        workflow = _build(opts, runs, bids_dir, output_dir, work_dir)
        _request_resources(workflow, plugin, plugin_args, opts.use_plugin)
    except InputError as err:
        LOGGER.error("%s", err)
        return err.code
    except ModelError as err:
        LOGGER.error("%s", err)
        return EXIT_USAGE
    finally:
        validation.stop()  # when collecting the runs failed first

    try:
        citation = _write_boilerplate(workflow, output_dir)
        if opts.boilerplate_only:
            LOGGER.info("methods boilerplate written to %s", citation)
            return EXIT_OK
        if opts.write_graph:
            _write_graph(workflow, work_dir)
        init_output_dir(output_dir, bids_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # e.g. read-only or full file system
        LOGGER.error("cannot write the outputs: %s", err)
        return EXIT_FAILURE
    n_runs = sum(len(r) for r in runs.values())
    LOGGER.info(
        "processing %d run(s) of %d participant(s) with %s %s; work dir %s",
        n_runs,
        len(runs),
        plugin,
        json.dumps(plugin_args),
        work_dir,
    )
    from dmriprep_motion.reports.assemble import start_citation_html, write_subject_reports

    start = time.monotonic()
    citation_html = start_citation_html(output_dir)  # pandoc, while the workflow runs
    plugin_args = {**plugin_args, "status_callback": _Progress()}
    try:
        with worker_threads(opts.omp_nthreads):  # BLAS of every worker: --omp-nthreads
            workflow.run(**_runner(plugin, plugin_args))
    except Exception as err:  # noqa: BLE001 - Nipype reports failures as RuntimeError with crash files
        termination.check()  # nodes whose workers a stop signal ended: not a failure to report
        logs = ", ".join(str(output_dir / f"sub-{s}" / "log") for s in runs)
        LOGGER.error("processing failed (%s); crash reports in %s", str(err).splitlines()[0], logs)
        _write_reports_after_failure(runs, output_dir, work_dir, citation_html)
        return EXIT_FAILURE
    finally:
        gc.unfreeze()  # frozen by the status callback
        citation_html.exception()  # never leave pandoc running (its own errors are logged)
    write_subject_reports(runs, output_dir, work_dir, citation_html=citation_html)
    LOGGER.info("finished in %.1f s; derivatives in %s", time.monotonic() - start, output_dir)
    return EXIT_OK


def _write_reports_after_failure(runs, output_dir: Path, work_dir: Path, citation_html=None) -> None:
    """Assemble whatever reportlets exist, so the report lists the crash files."""
    from dmriprep_motion.reports.assemble import write_subject_reports

    try:
        write_subject_reports(runs, output_dir, work_dir, citation_html=citation_html)
    except Exception as err:  # noqa: BLE001 - the processing error is the one to report
        LOGGER.warning("could not write the report after the failure: %s", err)


def _build(opts, runs, bids_dir: Path, output_dir: Path, work_dir: Path):
    from dmriprep_motion.workflows.base import Settings, init_dmriprep_motion_wf

    settings = Settings(
        model=opts.model,
        transform=opts.transform,
        passes=opts.passes,
        tolerance=opts.tolerance,
        relaxation=opts.relaxation,
        anchor=opts.anchor,
        outlier_threshold=opts.outlier_threshold,
        exclude_outliers=opts.exclude_outliers,
        b0_threshold=opts.b0_threshold,
        sloppy=opts.sloppy,
        seed=opts.seed,
        registration_config=str(opts.registration_config) if opts.registration_config else None,
        omp_nthreads=opts.omp_nthreads,
        # whole-series resampling runs between the passes, alone: let it use the idle CPUs
        series_nthreads=min(opts.nprocs, SERIES_MAX_THREADS),
    )
    return init_dmriprep_motion_wf(
        runs=runs, output_dir=output_dir, bids_dir=bids_dir, settings=settings, work_dir=work_dir
    )


_MAIN_PID: int | None = None


def _descendants(pid: int) -> list[int]:
    """Process ids of every descendant of ``pid`` (Linux ``/proc``; else multiprocessing children)."""
    children: dict[int, list[int]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        import multiprocessing

        return [p.pid for p in multiprocessing.active_children() if p.pid]
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _on_signal(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    """Stop the whole process tree on SIGTERM (batch schedulers, ``timeout``, ``kill``) or
    SIGINT (Ctrl-C).

    Without this, Python dies at once on SIGTERM and leaves MultiProc workers (and their
    ``antsRegistration`` children) running as orphans, and Ctrl-C, which the terminal sends
    to every process of the group, printed tracebacks from the workers.  Workers inherit the
    handler: they exit on SIGTERM and ignore SIGINT.  The main process terminates its
    descendants, then raises :class:`~dmriprep_motion.termination.Terminated` (SIGTERM) or
    :class:`KeyboardInterrupt` (SIGINT); a second Ctrl-C ends it at once.  Finished steps are
    kept in the work directory.  Where Python swallows that exception (in a finalizer),
    :mod:`dmriprep_motion.termination` stops the run anyway.
    """
    if os.getpid() != _MAIN_PID:  # a worker: the main process stops it
        if signum != signal.SIGINT:
            os._exit(128 + signum)
        return
    if termination.STOP.is_set():  # a second signal: no more waiting
        _stop_descendants()
        os._exit(128 + signum)
    termination.request(signum)
    # The process pool then reports its killed workers from a callback thread: expected, not news.
    logging.getLogger("concurrent.futures").disabled = True
    _stop_descendants()
    raise termination.exception(signum)


def _stop_descendants() -> None:
    """SIGTERM to every descendant of this process."""
    for pid in _descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``dmriprep-motion demo ...`` runs the demo)."""
    global _MAIN_PID
    argv = list(sys.argv[1:] if argv is None else argv)
    _MAIN_PID = os.getpid()
    termination.start_watchdog(cleanup=_stop_descendants)
    termination.quiet_unraisable()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        if argv[:1] == ["demo"]:
            from dmriprep_motion.cli.demo import main as demo

            code = demo(argv[1:])
        else:
            code = run(argv)
        termination.check()  # a signal whose exception was swallowed on the way
        _ignore_signals()
    except KeyboardInterrupt:
        _ignore_signals()
        LOGGER.error("interrupted; re-run with the same --work-dir to resume")
        code = EXIT_INTERRUPTED
    except termination.Terminated:
        _ignore_signals()
        LOGGER.error("terminated (SIGTERM); re-run with the same --work-dir to resume")
        code = EXIT_TERMINATED
    sys.exit(code)


def _ignore_signals() -> None:
    """The run is over: a later SIGTERM or SIGINT changes nothing (in the interpreter's
    teardown, where Python restores the default action of a handled signal, it would end the
    process with -15 or -2)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


__all__ = ["main", "run", "EXIT_VALIDATION"]
