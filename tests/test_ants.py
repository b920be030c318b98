"""The antsRegistration console script and ANTs discovery."""

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from dmriprep_motion import ants


def test_console_script_runs_antspyx_library():
    exe = shutil.which("antsRegistration")
    assert exe and ants._is_our_script(exe)
    env = {**os.environ, ants.ENV_BACKEND: "antspyx"}
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0
    assert "ANTs Version" in proc.stdout


def test_library_loads_without_importing_ants_package():
    code = (
        "import sys; from dmriprep_motion.ants import load_ants_library; "
        "lib = load_ants_library(); assert 'ants' not in sys.modules; "
        "assert hasattr(lib, 'antsRegistration')"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_console_script_imports_little():
    """Each registration starts the console script: it must not import the modules that
    took 30 ms more than its 50 ms start-up (a registration of the later passes: ~0.4 s)."""
    code = (
        "import sys; from dmriprep_motion.ants import main; "
        "heavy = {'shutil', 'subprocess', 'pathlib', 'numpy', 'nipype'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_arguments_return_nonzero():
    proc = subprocess.run(
        [shutil.which("antsRegistration"), "--not-an-option"], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0


def _fake_ants(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    fake = folder / "antsRegistration"
    fake.write_text("#!/bin/sh\necho 'ANTs Version: 9.9.9-fake'\necho \"args: $*\"\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return fake


def test_real_ants_on_path_is_not_shadowed(tmp_path):
    """A real ANTs later on PATH runs instead of antspyx (auto), and is described as such."""
    fake = _fake_ants(tmp_path / "ants" / "bin")
    ours = str(Path(shutil.which("antsRegistration")).parent)
    env = {**os.environ, "PATH": os.pathsep.join([ours, str(fake.parent), "/usr/bin", "/bin"])}
    env.pop(ants.ENV_BACKEND, None)
    proc = subprocess.run(
        ["antsRegistration", "--version"], capture_output=True, text=True, env=env, check=False
    )
    assert "9.9.9-fake" in proc.stdout
    forced = subprocess.run(
        ["antsRegistration", "--version"],
        capture_output=True,
        text=True,
        env={**env, ants.ENV_BACKEND: "antspyx"},
        check=False,
    )
    assert "9.9.9-fake" not in forced.stdout and "ANTs Version" in forced.stdout


def test_describe_reports_backend(monkeypatch, tmp_path):
    fake = _fake_ants(tmp_path / "bin")
    ours = str(Path(shutil.which("antsRegistration")).parent)
    monkeypatch.setenv("PATH", os.pathsep.join([ours, str(fake.parent), "/usr/bin", "/bin"]))
    monkeypatch.delenv(ants.ENV_BACKEND, raising=False)
    info = ants.describe_ants()
    assert info["backend"] == "system" and info["runs"] == str(fake) and info["version"] == "9.9.9-fake"
    monkeypatch.setenv(ants.ENV_BACKEND, "antspyx")
    info = ants.describe_ants()
    assert info["backend"] == "antspyx" and info["version"].startswith("v2.")


def test_describe_asks_each_executable_once(monkeypatch, tmp_path):
    """The version is asked once per executable (start-up, report summary and provenance all
    describe ANTs); a replaced executable is asked again."""
    fake = _fake_ants(tmp_path / "bin")
    monkeypatch.setenv("PATH", os.pathsep.join([str(fake.parent), "/usr/bin", "/bin"]))
    calls = []
    run = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: (calls.append(cmd), run(cmd, **kw))[1])
    assert ants.describe_ants()["version"] == "9.9.9-fake"
    assert ants.describe_ants()["version"] == "9.9.9-fake"
    assert len(calls) == 1
    fake.write_text("#!/bin/sh\necho 'ANTs Version: 9.9.10-fake'\n")
    os.utime(fake, ns=(fake.stat().st_atime_ns, fake.stat().st_mtime_ns + 10**9))
    assert ants.describe_ants()["version"] == "9.9.10-fake"
    assert len(calls) == 2


def test_system_backend_without_ants_fails(monkeypatch):
    ours = str(Path(shutil.which("antsRegistration")).parent)
    monkeypatch.setenv("PATH", os.pathsep.join([ours, "/usr/bin", "/bin"]))
    monkeypatch.setenv(ants.ENV_BACKEND, "system")
    proc = subprocess.run(["antsRegistration", "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 127 and "no real antsRegistration" in proc.stderr


def test_own_ants_added_to_path_only_when_none_is_on_it(monkeypatch, tmp_path):
    """``/env/bin/dmriprep-motion`` run without its environment on PATH finds its own ANTs."""
    ours = str(Path(shutil.which("antsRegistration")).parent)
    monkeypatch.setenv("PATH", os.pathsep.join(["/usr/bin", "/bin"]))
    assert shutil.which("antsRegistration") is None
    assert ants.add_scripts_to_path() == ours  # the interpreter's scripts folder
    assert os.environ["PATH"].split(os.pathsep) == ["/usr/bin", "/bin", ours]  # appended
    assert ants.add_scripts_to_path() is None  # now on PATH: nothing more
    fake = _fake_ants(tmp_path / "bin")  # a real ANTs on PATH is left alone
    monkeypatch.setenv("PATH", os.pathsep.join([str(fake.parent), "/usr/bin"]))
    assert ants.add_scripts_to_path([ours]) is None
    assert os.environ["PATH"] == f"{fake.parent}{os.pathsep}/usr/bin"
    monkeypatch.setenv("PATH", "/usr/bin")  # only our console script is added, not another ANTs
    assert ants.add_scripts_to_path([str(fake.parent)]) is None and os.environ["PATH"] == "/usr/bin"


def test_run_finds_its_own_ants_off_path(monkeypatch, caplog):
    from dmriprep_motion.cli import run

    ours = str(Path(shutil.which("antsRegistration")).parent)
    monkeypatch.setenv("PATH", os.pathsep.join(["/usr/bin", "/bin"]))
    monkeypatch.delenv(ants.ENV_BACKEND, raising=False)
    with caplog.at_level("INFO", logger="dmriprep_motion"):
        run._log_ants()
    assert f"installed with dmriprep-motion, in {ours}" in caplog.text
    assert "ANTs: " in caplog.text and "antspyx backend" in caplog.text
