"""deploy/bootstrap.sh finds a Python >= 3.12 (pyenv's refusing shims included) or says what to
install. Run with a PATH of fake interpreters; the install itself is what `.ci/run` runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "bootstrap.sh"
BASH = shutil.which("bash")

pytestmark = pytest.mark.skipif(BASH is None, reason="needs bash")

OLD_PYTHON = """#!/bin/sh
case "$*" in *version_info*) exit 1;; *python_version*) echo 3.11.7;; esac
"""
# What pyenv puts on PATH for a version that is installed but not selected.
REFUSING_SHIM = """#!/bin/sh
echo "pyenv: python3.12: command not found" >&2
exit 127
"""
PYENV = """#!/bin/sh
if [ "$1" = latest ] && [ "$2" = 3.12 ]; then echo 3.12.1; exit 0; fi
if [ "$1" = which ] && [ "$2" = python3.12 ] && [ "$PYENV_VERSION" = 3.12.1 ]; then
    echo "{real}"; exit 0
fi
exit 1
"""


def fake_path(directory: Path, **programs: str) -> str:
    directory.mkdir()
    os.symlink(shutil.which("dirname"), directory / "dirname")
    for name, text in programs.items():
        path = directory / name.replace("_", ".")
        path.write_text(text)
        path.chmod(0o755)
    return str(directory)


def bootstrap(path: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([BASH, str(SCRIPT), *args], capture_output=True, text=True,
                          env={"PATH": path, **env}, timeout=600)


def test_finds_pyenv_python_behind_a_refusing_shim(tmp_path):
    path = fake_path(tmp_path / "bin", python3=OLD_PYTHON, python3_12=REFUSING_SHIM,
                     pyenv=PYENV.format(real=sys.executable))
    done = bootstrap(path, "--print-python")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == sys.executable


def test_no_suitable_python_says_what_to_install(tmp_path):
    path = fake_path(tmp_path / "bin", python3=OLD_PYTHON, python3_12=REFUSING_SHIM)
    done = bootstrap(path, "--print-python")
    assert done.returncode == 1 and done.stdout == ""
    assert "wkdist needs Python >= 3.12" in done.stderr
    assert "python3=3.11.7" in done.stderr and "pyenv install 3.12" in done.stderr
    # the real run, on a copy of the script in a checkout without a .venv (the real checkout
    # has one, which the script would reuse and install into): it stops at the same point
    checkout = tmp_path / "checkout"
    (checkout / "deploy").mkdir(parents=True)
    shutil.copy(SCRIPT, checkout / "deploy" / "bootstrap.sh")
    done = subprocess.run([BASH, str(checkout / "deploy" / "bootstrap.sh")], capture_output=True,
                          text=True, env={"PATH": path}, timeout=600)
    assert done.returncode == 1 and "wkdist needs Python >= 3.12" in done.stderr
    assert not (checkout / ".venv").exists()


def test_wkdist_python_overrides_the_search(tmp_path):
    path = fake_path(tmp_path / "bin", python3=OLD_PYTHON)
    done = bootstrap(path, "--print-python", WKDIST_PYTHON=sys.executable)
    assert done.returncode == 0 and done.stdout.strip() == sys.executable
    done = bootstrap(path, "--print-python", WKDIST_PYTHON=str(tmp_path / "bin" / "python3"))
    assert done.returncode == 1 and "does not run as Python >= 3.12" in done.stderr


def test_unknown_argument_is_refused(tmp_path):
    done = bootstrap(fake_path(tmp_path / "bin"), "--help-me")
    assert done.returncode == 2 and "unknown argument --help-me" in done.stderr


def test_ci_runs_the_readme_quick_start_commands():
    done = subprocess.run([BASH, str(ROOT / ".ci" / "run"), "--commands"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    install, tests = done.stdout.splitlines()
    assert install == ("bash deploy/bootstrap.sh && . .venv/bin/activate && "
                       "wkdist run --out runs/demo")
    assert tests == "python -m pytest -q"
    readme = (ROOT / "README.md").read_text().splitlines()
    assert install in readme and tests in readme


def test_ci_fails_loudly_without_the_readme_markers(tmp_path):
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    readme = (ROOT / "README.md").read_text()
    (tmp_path / "README.md").write_text(readme.replace("<!-- /quick-start", "<!-- end"))
    done = subprocess.run([BASH, str(tmp_path / ".ci" / "run"), "--commands"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and done.stdout == ""
    assert "expects README.md to hold exactly two commands" in done.stderr
