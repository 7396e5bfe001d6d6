"""wkdist.kernels stays free of ase, dask and zarr (numba kernels on plain arrays)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import wkdist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(wkdist.__file__)))
FORBIDDEN = ("ase", "dask", "distributed", "zarr")


def loaded_after(statement: str) -> list[str]:
    code = (
        "import json, sys\n"
        f"{statement}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({FORBIDDEN!r}))))"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_wkdist_kernels_loads_no_ase_dask_or_zarr():
    assert loaded_after("import wkdist.kernels") == []


@pytest.mark.parametrize(
    "module", ["__init__", "coupling", "harmonics", "plans", "radial", "wigner"]
)
def test_kernel_modules_do_not_import_ase_dask_or_zarr(module):
    """Static check of the sources, independent of what the parent package imports."""
    import ast
    import importlib.util

    name = "wkdist.kernels" if module == "__init__" else f"wkdist.kernels.{module}"
    spec = importlib.util.find_spec(name)
    with open(spec.origin, encoding="utf-8") as source:
        tree = ast.parse(source.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & set(FORBIDDEN)
