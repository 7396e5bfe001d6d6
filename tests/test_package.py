"""The package as a user meets it: version, help(wkdist), dir(wkdist), lazy engine import."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import pydoc
import subprocess
import sys

import pytest

import wkdist
import wkdist.cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_version_matches_the_package_metadata():
    assert wkdist.__version__ == importlib.metadata.version("wkdist")


def test_wkdist_version_prints_name_and_version(capsys):
    with pytest.raises(SystemExit) as exit_:  # argparse's version action exits
        wkdist.cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"wkdist {wkdist.__version__}\n"


def test_version_from_a_fresh_process():
    proc = subprocess.run([sys.executable, "-m", "wkdist", "--version"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"wkdist {wkdist.__version__}\n"


def test_dir_lists_exactly_the_public_api():
    assert dir(wkdist) == sorted(wkdist.__all__)
    for name in ("Any", "import_module", "errors", "settings"):
        assert name not in dir(wkdist)
    for name in wkdist.__all__:
        assert getattr(wkdist, name) is not None


def test_help_shows_the_engine_functions_with_their_docstrings():
    text = pydoc.render_doc(wkdist, renderer=pydoc.plaintext)
    functions = text[text.index("FUNCTIONS"):]
    for name in ("structure_kernels", "equivariant_structure_kernels"):
        assert f"    {name}(frames_a" in functions, functions
        first_line = getattr(wkdist, name).__doc__.strip().splitlines()[0]
        assert first_line in functions


def test_import_and_dir_load_no_ase_dask_or_zarr():
    """dir() must not trigger the lazy engine import (help() may: it shows the engine)."""
    code = ("import json, sys, wkdist, wkdist.kernels\n"
            "names = dir(wkdist)\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'ase', 'dask', 'distributed', 'zarr'})))")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


@pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None,
                    reason='qm9pack is not installed (pip install "wkdist[qm9]")')
def test_qm9pack_imports_and_wkdist_reads_qm9_without_it():
    """The qm9 extra installs what `import qm9pack` needs (a user may use it directly);
    wkdist's own QM9 loader never imports it (it warns)."""
    proc = subprocess.run([sys.executable, "-c", "import qm9pack"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    code = ("import sys\nfrom wkdist.data.qm9 import load_qm9\nload_qm9()\n"
            "print('qm9pack' in sys.modules)")
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"


def test_built_in_example_runs_at_the_default_kernel_settings(tmp_path):
    import tomllib
    from importlib import resources

    from wkdist.app.config import parse_config
    from wkdist.app.pipeline import DEFAULT_CONFIG

    text = resources.files("wkdist").joinpath(DEFAULT_CONFIG).read_text()
    assert "kernel" not in tomllib.loads(text)
    config = parse_config(tomllib.loads(text), base_dir=tmp_path, source=tmp_path / "c.toml")
    assert config.kernel == wkdist.KernelSettings()
    assert (config.data.source, config.data.n_train, config.data.n_test) == ("qm9", 500, 120)


def test_traceback_flag_shows_the_whole_error(tmp_path):
    """Without -T an error is one line; with it (for a bug report) the full traceback."""
    missing = tmp_path / "absent.toml"
    plain = subprocess.run([sys.executable, "-m", "wkdist", "plan", str(missing)],
                           capture_output=True, text=True, timeout=600)
    assert plain.returncode == 2 and plain.stderr.count("\n") == 1
    assert plain.stderr.startswith("wkdist: error: ") and "Traceback" not in plain.stderr
    full = subprocess.run([sys.executable, "-m", "wkdist", "-T", "plan", str(missing)],
                          capture_output=True, text=True, timeout=600)
    assert full.returncode != 0 and "Traceback (most recent call last)" in full.stderr
    assert "ConfigError" in full.stderr and str(missing) in full.stderr


def test_library_code_logs_and_only_the_cli_prints(tmp_path, capsys, caplog):
    """A job run from Python reports through the `wkdist` logger, not on stdout/stderr."""
    import logging

    from wkdist.app.progress import say

    logger = logging.getLogger("wkdist")
    saved = logger.handlers[:]  # an earlier in-process `wkdist` call installs the CLI's
    logger.handlers[:] = []
    try:
        with caplog.at_level(logging.INFO, logger="wkdist"):
            say("a line of progress")
    finally:
        logger.handlers[:] = saved
    assert capsys.readouterr() == ("", "")
    assert [r.getMessage() for r in caplog.records] == ["a line of progress"]
