"""QM9 data layer: the real qm9pack files (skipped without qm9pack) and small fake CSVs."""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from wkdist.data import load_qm9
from wkdist.data import qm9 as qm9mod
from wkdist.errors import DataError

HAVE_QM9PACK = importlib.util.find_spec("qm9pack") is not None
needs_qm9pack = pytest.mark.skipif(
    not HAVE_QM9PACK, reason='qm9pack is not installed (pip install "wkdist[qm9]")'
)


# --------------------------------------------------------------------------- real QM9


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory) -> Path:
    cache_dir = tmp_path_factory.mktemp("qm9cache")
    load_qm9(cache_dir)  # the one-time conversion (~5 s)
    return cache_dir


@needs_qm9pack
def test_real_qm9_contents(real_cache):
    data = load_qm9(real_cache)
    assert data.n == 130_831 == qm9mod.N_MOLECULES
    assert np.all(np.diff(data.qm9_index) > 0)
    assert data.atom_ptr[0] == 0 and data.atom_ptr[-1] == data.numbers.size
    assert np.array_equal(np.diff(data.atom_ptr), data.n_atoms)
    assert np.isfinite(data.positions).all()
    assert set(np.unique(data.numbers)) == {1, 6, 7, 8, 9}
    assert not np.isnan(data.alpha_bohr3).any()

    # Index 1 is methane, U0 = -40.47893 Ha
    (methane,) = data.frames(np.array([0]))
    assert methane.info["qm9_index"] == 1
    assert methane.get_chemical_formula() == "CH4"
    assert methane.info["U0"] == pytest.approx(-40.47893 * 27.211386245988, abs=1e-9)
    assert data.targets([0])[0] == methane.info["U0"]
    assert not methane.pbc.any()
    assert np.allclose(data.targets([0], key="polarizability")[0], 13.211 * np.eye(3))

    last = data.frames([data.n - 1])[0]
    assert last.info["qm9_index"] == 133_885
    assert len(last) == data.n_atoms[-1]


@needs_qm9pack
def test_real_cache_reused_without_parsing(real_cache, monkeypatch):
    def no_parsing(files):
        raise AssertionError("the cache should have been reused, not rebuilt")

    monkeypatch.setattr(qm9mod, "_parse_qm9pack", no_parsing)
    zarr_json = qm9mod.cache_path(real_cache) / "zarr.json"
    mtime = zarr_json.stat().st_mtime_ns
    start = time.perf_counter()
    data = load_qm9(real_cache)
    elapsed = time.perf_counter() - start
    assert data.n == 130_831
    assert zarr_json.stat().st_mtime_ns == mtime
    assert elapsed < 10.0, f"reopening the cache took {elapsed:.1f} s"


# --------------------------------------------------------------------------- fake CSVs

_MOLECULES = [  # (Index, symbols, positions, U0 Ha, dipole D)
    (1, ["C", "H", "H", "H", "H"],
     [[-0.0126981359, 1.0858041578, 0.0080009958], [0.002150416, -0.0060313176, 0.0019761204],
      [1.0117308433, 1.4637511618, 0.0002765748], [-0.540815069, 1.4475266138, -0.8766437152],
      [-0.5238136345, 1.4379326443, 0.9063972942]], -40.47893, 0.0),
    (3, ["O", "H", "H"],
     [[-0.0343604951, 0.9775395708, 0.0076015923], [0.0647664923, 0.0205721989, 1.2E-5],
      [0.8717903737, 1.3007924048, 0.0006924022]], -76.404702, 1.8511),
    (7, ["F", "N"], [[0.0, 0.0, 0.0], [1.4, 0.0, 0.0]], -154.0, 0.5),
]


def _write_fake_qm9(folder: Path, alpha_for=(1, 7)) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    header = ["XYZ_file", "Index", "SMILES", "N_atoms", "Elements", "XYZ_Ang", "Dipole_debye",
              "InternalEnergy_0K_au", "InternalEnergy_298K_au"]
    parts = [_MOLECULES[:1], _MOLECULES[1:], []]
    files = {}
    for k, rows in enumerate(parts, start=1):
        path = folder / f"qm9_part{k}.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle, quoting=csv.QUOTE_NONNUMERIC)
            writer.writerow(header)
            for index, symbols, xyz, u0, mu in rows:
                writer.writerow([
                    f"dsgdb9nsd_{index:06d}.xyz", index, "X", len(symbols),
                    "[" + ",".join(f"'{s}'" for s in symbols) + "]",
                    "[" + ",".join("[" + ",".join(repr(v) for v in r) + "]" for r in xyz) + "]",
                    mu, u0, u0 + 0.003,
                ])
        # QM9 writes exponents as 1.2E-5, Python's repr as 1.2e-05
        path.write_text(path.read_text().replace("e-05", "E-5"))
        files[path.name] = path
    path = folder / "qm9_polarizability.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["XYZ_file", "A_xx", "A_xy", "A_yy", "A_xz", "A_yz", "A_zz"])
        for index in alpha_for:
            writer.writerow([f"dsgdb9nsd_{index:06d}.xyz", 1.0 * index, 2.0, 3.0, 4.0, 5.0, 6.0])
    files[path.name] = path
    return files


@pytest.fixture
def fake_source(tmp_path, monkeypatch):
    files = _write_fake_qm9(tmp_path / "qm9pack_data")
    monkeypatch.setattr(qm9mod, "_source_files", lambda: files)
    calls = []
    real_parse = qm9mod._parse_qm9pack

    def counting_parse(f):
        calls.append(1)
        return real_parse(f)

    monkeypatch.setattr(qm9mod, "_parse_qm9pack", counting_parse)
    return files, calls


def test_fake_conversion_values(tmp_path, fake_source):
    _, calls = fake_source
    data = load_qm9(tmp_path / "cache")
    assert calls == [1]
    assert data.n == 3
    assert data.qm9_index.tolist() == [1, 3, 7]
    assert data.n_atoms.tolist() == [5, 3, 2]
    assert data.atom_ptr.tolist() == [0, 5, 8, 10]
    assert data.attributes["format_version"] == qm9mod.FORMAT_VERSION
    water = data.frames(np.array([1]))[0]
    assert water.get_chemical_formula() == "H2O"
    assert water.positions[1, 2] == 1.2e-5  # exponent notation parsed, exactly
    assert water.positions.tolist() == _MOLECULES[1][2]
    assert water.info == {"U0": -76.404702 * 27.211386245988, "qm9_index": 3,
                          "dipole_magnitude": 1.8511}
    assert data.targets([2, 0], key="dipole_magnitude").tolist() == [0.5, 0.0]
    alpha = data.targets([0, 1, 2], key="polarizability")
    assert np.array_equal(alpha[0], [[1, 2, 4], [2, 3, 5], [4, 5, 6]])
    assert np.isnan(alpha[1]).all()  # Index 3 has no polarizability row
    assert alpha[2, 0, 0] == 7.0
    assert data.frames([]) == [] and data.targets([]).shape == (0,)


def test_second_load_reuses_cache(tmp_path, fake_source):
    _, calls = fake_source
    load_qm9(tmp_path)
    mtime = (qm9mod.cache_path(tmp_path) / "zarr.json").stat().st_mtime_ns
    again = load_qm9(tmp_path)
    assert calls == [1]
    assert again.n == 3
    assert (qm9mod.cache_path(tmp_path) / "zarr.json").stat().st_mtime_ns == mtime


def test_leftover_temporary_directory_is_not_a_cache(tmp_path, fake_source):
    _, calls = fake_source
    # a killed conversion leaves its temporary directory; give it even complete contents
    load_qm9(tmp_path / "other")
    final = qm9mod.cache_path(tmp_path / "cache")
    final.parent.mkdir()
    leftover = final.parent / f".{final.name}.tmp-killed"
    shutil.copytree(qm9mod.cache_path(tmp_path / "other"), leftover)
    stale = final.parent / f".{final.name}.tmp-long-ago"
    stale.mkdir()
    os.utime(stale, (time.time() - 2 * 86_400,) * 2)
    calls.clear()
    data = load_qm9(tmp_path / "cache")
    assert calls == [1], "the leftover must not be taken for the cache"
    assert data.path == final and final.is_dir()
    assert leftover.is_dir()  # recent: maybe another process still converting
    assert not stale.exists()  # a day old: cleaned up


def test_unwritable_cache_dir(tmp_path, fake_source):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DataError, match="WKDIST_CACHE_DIR"):
        load_qm9(blocker / "cache")


def test_failed_conversion_leaves_no_cache(tmp_path, fake_source, monkeypatch):
    def interrupted(root):
        raise KeyboardInterrupt

    monkeypatch.setattr(qm9mod, "_fsync_tree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_qm9(tmp_path / "cache")
    # neither a cache nor a temporary directory
    assert list((tmp_path / "cache").iterdir()) == []


def test_cache_without_completion_marker_is_rebuilt(tmp_path, fake_source):
    import zarr

    _, calls = fake_source
    load_qm9(tmp_path)
    group = zarr.open_group(str(qm9mod.cache_path(tmp_path)), mode="r+")
    group.attrs["complete"] = False
    data = load_qm9(tmp_path)
    assert calls == [1, 1] and data.n == 3 and data.attributes["complete"] is True


def test_changed_source_rebuilds(tmp_path, fake_source):
    files, calls = fake_source
    load_qm9(tmp_path)
    _write_fake_qm9(files["qm9_part1.csv"].parent, alpha_for=(1, 3, 7))  # a "new release"
    data = load_qm9(tmp_path)
    assert calls == [1, 1]
    assert not np.isnan(data.alpha_bohr3).any()


def test_environment_cache_dir(tmp_path, fake_source, monkeypatch):
    monkeypatch.setenv("WKDIST_CACHE_DIR", str(tmp_path / "env"))
    assert load_qm9().path == tmp_path / "env" / f"qm9-v{qm9mod.FORMAT_VERSION}.zarr"
    monkeypatch.delenv("WKDIST_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert qm9mod.cache_path() == tmp_path / "home" / ".cache" / "wkdist" / (
        f"qm9-v{qm9mod.FORMAT_VERSION}.zarr")


def test_bad_indices_and_keys(tmp_path, fake_source):
    data = load_qm9(tmp_path)
    with pytest.raises(DataError, match=r"0\.\.2, got 3"):
        data.frames([3])
    with pytest.raises(DataError, match="got -1"):
        data.targets([-1])
    with pytest.raises(DataError, match="integers"):
        data.targets([0.5])
    with pytest.raises(DataError, match="expected one of U0"):
        data.targets([0], key="U9")


def test_malformed_source_is_a_data_error(tmp_path, fake_source):
    files, _ = fake_source
    path = files["qm9_part2.csv"]
    path.write_text(path.read_text().replace("0.0647664923", "0.06476x4923"))
    with pytest.raises(DataError, match="XYZ_Ang"):
        load_qm9(tmp_path)
    assert not qm9mod.cache_path(tmp_path).exists()


def test_missing_qm9pack(tmp_path, monkeypatch):
    monkeypatch.setattr(qm9mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install qm9pack") as info:
        load_qm9(tmp_path)
    assert "\n" not in str(info.value)


def test_cache_loads_without_qm9pack(tmp_path, fake_source, monkeypatch):
    load_qm9(tmp_path)

    def gone():
        raise DataError("pip install qm9pack")

    monkeypatch.setattr(qm9mod, "_source_files", gone)
    assert load_qm9(tmp_path).n == 3
