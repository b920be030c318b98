"""The ``antsRegistration`` console script and ANTs discovery.

Debian ships no ANTs, so dmriprep_motion installs a console script called
``antsRegistration`` that forwards its arguments to the ``antsRegistration``
entry point compiled into antspyx (``ants.lib.antsRegistration(argv)``).  Only
the compiled extension is loaded (about 30 ms), not the ``ants`` Python package
(about 2 s), so Nipype's :class:`~nipype.interfaces.ants.Registration` runs it
unchanged, once per volume, at little cost.  For the same reason the console script
imports nothing but :mod:`os`, :mod:`sys` and the import machinery: with ``shutil``,
``subprocess`` and ``pathlib``, ``antsRegistration --version`` took 0.084 s instead of
0.05 s, against about 0.4 s for a whole registration of the later passes.
:func:`describe_ants` imports what it needs when called.

Which ANTs runs
---------------
``DMRIPREP_MOTION_ANTS`` selects the backend:

``auto`` (default)
    A real ``antsRegistration`` found on ``PATH`` (any that is not one of these
    console scripts) is executed; otherwise antspyx's library runs.
``antspyx``
    Always run antspyx's library, even if a real ANTs is installed.
``system``
    Require a real ANTs on ``PATH``; fail (exit 127) if there is none.

The pipeline logs the backend, the executable and the ANTs version at start-up
(see :func:`describe_ants`).
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from types import ModuleType

ENV_BACKEND = "DMRIPREP_MOTION_ANTS"
_MARKER = b"dmriprep_motion.ants"
_NAME = "antsRegistration"
#: ``executable --version`` by (executable, (mtime, size), backend, PATH)
_VERSIONS: dict[tuple, str] = {}


def _is_our_script(path: str | os.PathLike) -> bool:
    """Tell whether ``path`` is one of our forwarding console scripts."""
    try:
        with open(path, "rb") as fobj:
            head = fobj.read(4096)
    except OSError:
        return False
    return _MARKER in head


def _which_in(folder: str) -> str | None:
    """``shutil.which("antsRegistration", path=folder)``, without importing :mod:`shutil`."""
    if os.name == "nt":  # executable extensions (PATHEXT)
        import shutil

        return shutil.which(_NAME, path=folder)
    candidate = os.path.join(folder, _NAME)
    return candidate if os.path.isfile(candidate) and os.access(candidate, os.X_OK) else None


def _every_ants(folders: list[str]) -> list[str]:
    """Every ``antsRegistration`` in ``folders``, in their order (empty entries skipped)."""
    return [candidate for folder in folders if folder and (candidate := _which_in(folder))]


def find_system_ants(path: str | None = None) -> str | None:
    """Return the first real ``antsRegistration`` on ``PATH`` (not our shim)."""
    search = os.environ.get("PATH", "") if path is None else path
    return next((c for c in _every_ants(search.split(os.pathsep)) if not _is_our_script(c)), None)


def _scripts_folders() -> list[str]:
    """Where this installation's console scripts may be: next to the running command, and the
    interpreter's (and user's) scripts folders."""
    import sysconfig

    folders = [os.path.dirname(os.path.abspath(sys.argv[0]))] if sys.argv and sys.argv[0] else []
    folders.append(sysconfig.get_path("scripts"))
    try:
        folders.append(sysconfig.get_path("scripts", f"{os.name}_user"))
    except KeyError:  # no user scheme
        pass
    return [folder for folder in dict.fromkeys(folders) if folder]


def add_scripts_to_path(folders: list[str] | None = None) -> str | None:
    """Append our ``antsRegistration``'s folder to ``PATH`` when no ``antsRegistration`` is on it.

    ``/path/to/env/bin/dmriprep-motion``, run without activating its environment (an absolute
    path in a job script), leaves the console script this package installs next to it
    off ``PATH``, and Nipype runs ANTs by name.  Appended, not prepended: a real ANTs on ``PATH``
    is found first, and nothing else on ``PATH`` is shadowed.  Child processes (Nipype's
    workers, ANTs) inherit the change.

    Parameters
    ----------
    folders : list of str, optional
        Where to look (default: :func:`_scripts_folders`).

    Returns
    -------
    str or None
        The folder appended to ``PATH``, or None (an ``antsRegistration`` is already on
        ``PATH``, or none of ours was found).
    """
    path = os.environ.get("PATH", "")
    if _every_ants(path.split(os.pathsep)):
        return None
    for folder in _scripts_folders() if folders is None else folders:
        candidate = _which_in(folder)
        if candidate and _is_our_script(candidate):
            os.environ["PATH"] = os.pathsep.join([path, folder]) if path else folder
            return folder
    return None


def load_ants_library() -> ModuleType:
    """Load antspyx's compiled extension without importing the ``ants`` package."""
    # sys.path's finder (importlib.util, with the meta path's other finders, costs 5 ms more)
    spec = importlib.machinery.PathFinder.find_spec("ants")
    if spec is None:
        from importlib.util import find_spec

        spec = find_spec("ants")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("antspyx is not installed (no 'ants' package found)")
    folder = next(iter(spec.submodule_search_locations))
    names = os.listdir(folder)
    candidates = [
        os.path.join(folder, name)
        for suffix in (".so", ".pyd")
        for name in sorted(names)
        if name.startswith("lib.") and name.endswith(suffix)
    ]
    if not candidates:
        raise ImportError(f"antspyx's compiled library was not found in {folder}")
    loader = importlib.machinery.ExtensionFileLoader("ants.lib", candidates[0])
    module = loader.create_module(importlib.machinery.ModuleSpec("ants.lib", loader, origin=candidates[0]))
    loader.exec_module(module)
    return module


def resolve_backend() -> tuple[str, str | None]:
    """Decide which ANTs runs: ``("system", path)`` or ``("antspyx", None)``."""
    choice = os.environ.get(ENV_BACKEND, "auto").strip().lower() or "auto"
    if choice not in {"auto", "antspyx", "system"}:
        raise ValueError(f"{ENV_BACKEND} must be auto, antspyx or system (got {choice!r})")
    if choice == "antspyx":
        return "antspyx", None
    system = find_system_ants()
    if system is not None:
        return "system", system
    if choice == "system":
        raise FileNotFoundError(f"{ENV_BACKEND}=system but no real antsRegistration is on PATH")
    return "antspyx", None


def describe_ants() -> dict[str, str]:
    """Describe the ``antsRegistration`` that Nipype will run.

    Returns
    -------
    dict
        ``executable`` (what ``PATH`` resolves), ``backend`` (``antspyx`` or
        ``system``), ``runs`` (the program that does the work) and ``version``.
    """
    import shutil

    executable = shutil.which(_NAME) or ""
    info = {"executable": executable, "backend": "missing", "runs": "", "version": "unknown"}
    if not executable:
        return info
    if _is_our_script(executable):
        try:
            backend, real = resolve_backend()
        except (ValueError, FileNotFoundError) as err:
            info["backend"] = f"error: {err}"
            return info
        info["backend"] = backend
        info["runs"] = real or "antspyx ants.lib.antsRegistration"
    else:
        info["backend"] = "system"
        info["runs"] = executable
    try:
        stat = os.stat(executable)
    except OSError:
        return info
    out = _version_output(
        executable,
        (stat.st_mtime_ns, stat.st_size),
        os.environ.get(ENV_BACKEND, ""),
        os.environ.get("PATH", ""),
    )
    for line in out.splitlines():
        if "Version" in line:
            info["version"] = line.split(":", 1)[-1].strip()
            break
    return info


def _version_output(executable: str, stamp: tuple[int, int], backend: str, path: str) -> str:
    """``executable --version`` (about 0.1 s), once per executable file, backend and ``PATH``.

    :func:`describe_ants` is called at start-up and again by the report's summary and
    provenance; ``stamp`` (mtime, size), ``backend`` and ``path`` are in the cache key, so a
    replaced executable or another choice of ANTs is asked again.
    """
    import subprocess

    key = (executable, stamp, backend, path)
    if key not in _VERSIONS:
        try:
            _VERSIONS[key] = subprocess.run(
                [executable, "--version"], capture_output=True, text=True, timeout=60, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return ""
    return _VERSIONS[key]


def main(argv: list[str] | None = None) -> int:
    """Run ``antsRegistration`` with the command-line arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        backend, real = resolve_backend()
    except (ValueError, FileNotFoundError) as err:
        sys.stderr.write(f"antsRegistration: {err}\n")
        sys.exit(127)
    if backend == "system":
        sys.stdout.flush()
        os.execv(real, [real, *args])
    try:
        lib = load_ants_library()
    except ImportError as err:
        sys.stderr.write(f"antsRegistration: {err}\n")
        sys.exit(127)
    try:
        code = int(lib.antsRegistration(args))
    except Exception as err:  # noqa: BLE001 - C++ exceptions surface as RuntimeError
        sys.stderr.write(f"antsRegistration failed: {err}\n")
        code = 1
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
