"""QM9 (130,831 molecules) from the files shipped by ``qm9pack``, cached once as a zarr group.

We never ``import qm9pack``: its ``__init__`` needs ``pkg_resources`` and warns, which fails under
warnings-as-errors. Its CSV files are found through the import system and
parsed here without pandas (csv module plus one vectorized float parse, ~5 s for all of QM9).

The cache is a zarr 3 group ``<cache_dir>/qm9-v<FORMAT_VERSION>.zarr``:

============  ===================  ========================================================
array         shape, dtype         content
============  ===================  ========================================================
qm9_index     (n,) int64           the original QM9 id (``Index`` column, 1-based, gaps)
n_atoms       (n,) int64           atoms per molecule
atom_ptr      (n + 1,) int64       molecule i owns atoms ``atom_ptr[i]:atom_ptr[i + 1]``
numbers       (total,) int8        atomic numbers (H, C, N, O, F)
positions     (total, 3) float64   Cartesian positions in Å
U0_eV         (n,) float64         internal energy at 0 K in eV (1 Ha = 27.211386245988 eV)
dipole_D      (n,) float64         dipole moment magnitude in debye
alpha_bohr3   (n, 6) float64       polarizability tensor in bohr^3, components in the file's
                                   order A_xx, A_xy, A_yy, A_xz, A_yz, A_zz (NaN if absent)
============  ===================  ========================================================

It is written into a temporary sibling directory and renamed into place only once complete, so a
killed conversion leaves at most a ``.qm9-v*.tmp-*`` directory, which is never read as a cache.
"""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from ..errors import DataError

__all__ = [
    "FORMAT_VERSION",
    "HARTREE_TO_EV",
    "N_MOLECULES",
    "TARGET_KEYS",
    "Qm9",
    "load_qm9",
    "cache_path",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the layout or a unit changes: the file name changes with it
HARTREE_TO_EV = 27.211386245988  # CODATA 2018
N_MOLECULES = 130_831
TARGET_KEYS = ("U0", "dipole_magnitude", "polarizability")

_PARTS = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
_POLARIZABILITY = "qm9_polarizability.csv"
_ALPHA_COLUMNS = ("A_xx", "A_xy", "A_yy", "A_xz", "A_yz", "A_zz")
# packed (file order) component -> (row, column) of the 3 x 3 tensor
_ALPHA_SLOTS = ((0, 0), (0, 1), (1, 1), (0, 2), (1, 2), (2, 2))
_ARRAYS = ("qm9_index", "n_atoms", "atom_ptr", "numbers", "positions", "U0_eV", "dipole_D",
           "alpha_bohr3")
_INSTALL_HINT = 'pip install qm9pack (or pip install "wkdist[qm9]")'


# --------------------------------------------------------------------------- locations


def _cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    """Argument, else $WKDIST_CACHE_DIR, else ~/.cache/wkdist."""
    if cache_dir is None:
        cache_dir = os.environ.get("WKDIST_CACHE_DIR") or Path.home() / ".cache" / "wkdist"
    return Path(cache_dir).expanduser()


def cache_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the QM9 cache lives (or will live) for ``cache_dir``."""
    return _cache_dir(cache_dir) / f"qm9-v{FORMAT_VERSION}.zarr"


def _source_files() -> dict[str, Path]:
    """qm9pack's CSV files, without importing qm9pack (its __init__ warns)."""
    try:
        spec = importlib.util.find_spec("qm9pack")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"QM9 needs the qm9pack data files, not installed: {_INSTALL_HINT}")
    data_dir = Path(list(spec.submodule_search_locations)[0]) / "data"
    files = {name: data_dir / name for name in (*_PARTS, _POLARIZABILITY)}
    missing = [name for name, path in files.items() if not path.is_file()]
    if missing:
        raise DataError(
            f"qm9pack at {data_dir.parent} lacks {', '.join(missing)}: {_INSTALL_HINT}"
        )
    return files


def _fingerprint(files: dict[str, Path]) -> dict[str, int]:
    # sizes are enough to notice a different qm9pack release without reading 230 MB
    return {name: path.stat().st_size for name, path in sorted(files.items())}


# --------------------------------------------------------------------------- parsing


def _parse_floats(text: str, expected: int, what: str) -> np.ndarray:
    # np.fromstring(sep=",") is a C loop, 3x faster than float() per item, and rounds exactly
    # like float(); malformed text is reported by numpy as a DeprecationWarning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        try:
            values = np.fromstring(text, dtype=np.float64, sep=",")
        except (DeprecationWarning, ValueError) as exc:
            raise DataError(f"QM9 {what}: unreadable numbers ({exc})") from None
    if values.size != expected:
        raise DataError(f"QM9 {what}: expected {expected} numbers, got {values.size}")
    return values


def _column(header: list[str], name: str, path: Path) -> int:
    try:
        return header.index(name)
    except ValueError:
        raise DataError(f"{path}: expected a column {name!r}, got {header}") from None


def _parse_qm9pack(files: dict[str, Path]) -> dict[str, np.ndarray]:
    """Read qm9pack's CSVs into the cache arrays (see the module docstring)."""
    index: list[str] = []
    n_atoms: list[str] = []
    elements: list[str] = []
    xyz: list[str] = []
    u0: list[str] = []
    dipole: list[str] = []
    for name in _PARTS:
        path = files[name]
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None) or []
            cols = [
                _column(header, c, path)
                for c in ("Index", "N_atoms", "Elements", "XYZ_Ang", "InternalEnergy_0K_au",
                          "Dipole_debye")
            ]
            for row in reader:
                if not row:
                    continue
                i_idx, i_n, i_el, i_xyz, i_u0, i_mu = cols
                index.append(row[i_idx])
                n_atoms.append(row[i_n])
                elements.append(row[i_el])
                xyz.append(row[i_xyz])
                u0.append(row[i_u0])
                dipole.append(row[i_mu])
    n = len(index)
    if n == 0:
        raise DataError(f"QM9: no molecules in {', '.join(str(files[p]) for p in _PARTS)}")
    try:
        qm9_index = np.array(index, dtype=np.int64)
        counts = np.array(n_atoms, dtype=np.int64)
        u0_ha = np.array(u0, dtype=np.float64)
        dipole_d = np.array(dipole, dtype=np.float64)
    except ValueError as exc:
        raise DataError(f"QM9: unreadable Index/N_atoms/energy/dipole value ({exc})") from None
    if np.unique(qm9_index).size != n:
        raise DataError("QM9: duplicate values in the Index column")
    if (counts < 1).any():
        raise DataError("QM9: a molecule with N_atoms < 1")

    # Elements and XYZ_Ang are Python literals of plain symbols and numbers: stripping the
    # brackets and quotes and splitting once is safe and ~50x faster than ast.literal_eval.
    symbols = ",".join(elements).translate(str.maketrans("", "", "[]'\" ")).split(",")
    total = int(counts.sum())
    if len(symbols) != total:
        raise DataError(
            f"QM9 Elements: expected {total} symbols (sum of N_atoms), got {len(symbols)}"
        )
    per_molecule = np.array([e.count(",") + 1 for e in elements])
    if (per_molecule != counts).any():
        bad = int(qm9_index[np.argmax(per_molecule != counts)])
        raise DataError(f"QM9 Index {bad}: Elements does not have N_atoms entries")
    try:
        numbers = np.array([atomic_numbers[s] for s in symbols], dtype=np.int8)
    except KeyError as exc:
        raise DataError(f"QM9 Elements: unknown element symbol {exc}") from None
    rows_per_molecule = np.array([x.count("[") - 1 for x in xyz])
    if (rows_per_molecule != counts).any():
        bad = int(qm9_index[np.argmax(rows_per_molecule != counts)])
        raise DataError(f"QM9 Index {bad}: XYZ_Ang does not have N_atoms rows")
    positions = _parse_floats(
        ",".join(xyz).translate(str.maketrans("", "", "[] ")), 3 * total, "XYZ_Ang"
    ).reshape(total, 3)
    if not np.isfinite(positions).all():
        raise DataError("QM9 XYZ_Ang: non-finite coordinates")

    atom_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=atom_ptr[1:])
    return {
        "qm9_index": qm9_index,
        "n_atoms": counts,
        "atom_ptr": atom_ptr,
        "numbers": numbers,
        "positions": positions,
        "U0_eV": u0_ha * HARTREE_TO_EV,
        "dipole_D": dipole_d,
        "alpha_bohr3": _parse_polarizability(files[_POLARIZABILITY], qm9_index),
    }


def _parse_polarizability(path: Path, qm9_index: np.ndarray) -> np.ndarray:
    """(n, 6) tensors in file order, matched to molecules by the XYZ file name's id."""
    ids: list[int] = []
    values: list[str] = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None) or []
        i_file = _column(header, "XYZ_file", path)
        cols = [_column(header, c, path) for c in _ALPHA_COLUMNS]
        for row in reader:
            if not row:
                continue
            stem = row[i_file].rsplit("_", 1)[-1].split(".", 1)[0]  # dsgdb9nsd_000001.xyz
            try:
                ids.append(int(stem))
            except ValueError:
                raise DataError(f"{path}: unreadable XYZ_file {row[i_file]!r}") from None
            values.extend(row[c] for c in cols)
    tensors = _parse_floats(",".join(values), 6 * len(ids), _POLARIZABILITY).reshape(-1, 6)
    out = np.full((qm9_index.size, 6), np.nan)
    order = np.argsort(qm9_index)
    where = np.searchsorted(qm9_index[order], ids)
    where = np.minimum(where, qm9_index.size - 1)
    known = qm9_index[order][where] == np.asarray(ids, dtype=np.int64)
    out[order[where[known]]] = tensors[known]
    return out


# --------------------------------------------------------------------------- the cache


def _fsync_tree(root: Path) -> None:
    # A rename is atomic but not durable by itself: flush every file and directory first, so
    # a power loss cannot leave a renamed (complete-looking) cache with empty chunks.
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_stale(final: Path, age_s: float = 86_400.0) -> None:
    # Killed conversions leave temporary directories; one untouched for a day is not another
    # process still converting.
    now = time.time()
    for leftover in final.parent.glob(f".{final.name}.*-*"):
        try:
            if now - leftover.stat().st_mtime > age_s:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            pass


def _write_cache(final: Path, arrays: dict[str, np.ndarray], attributes: dict) -> None:
    import zarr  # deferred: zarr's import costs ~0.3 s, not needed by the engine

    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    except OSError as exc:
        raise DataError(
            f"cannot write the QM9 cache in {final.parent} ({exc.strerror}): pass cache_dir "
            "or set WKDIST_CACHE_DIR to a writable directory"
        ) from None
    _remove_stale(final)
    try:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        for name in _ARRAYS:
            data = arrays[name]
            # one chunk per array: the whole data set is loaded at once anyway (~75 MB)
            group.create_array(name, data=data, chunks=data.shape)
        # written last: a group without these attributes is never taken for a cache
        group.attrs.update({**attributes, "format_version": FORMAT_VERSION, "complete": True})
        _fsync_tree(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            # another process finished first; its cache is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
            return
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_cache(path: Path) -> tuple[dict[str, np.ndarray], dict] | None:
    """Arrays and attributes of a complete cache of this format, else None."""
    import zarr

    if not (path / "zarr.json").is_file():
        return None
    try:
        group = zarr.open_group(str(path), mode="r", zarr_format=3)
        attributes = group.attrs.asdict()
        if (attributes.get("format_version") != FORMAT_VERSION
                or attributes.get("complete") is not True):
            return None
        arrays = {name: np.asarray(group[name][...]) for name in _ARRAYS}
    except Exception as exc:  # any unreadable cache is rebuilt, never trusted
        log.warning("QM9 cache at %s is unreadable (%s); rebuilding it", path, exc)
        return None
    n = arrays["qm9_index"].shape[0]
    ptr = arrays["atom_ptr"]
    consistent = (
        ptr.shape == (n + 1,)
        and arrays["n_atoms"].shape == (n,)
        and ptr[0] == 0
        and np.array_equal(np.diff(ptr), arrays["n_atoms"])
        and arrays["numbers"].shape == (ptr[-1],)
        and arrays["positions"].shape == (ptr[-1], 3)
        and arrays["U0_eV"].shape == (n,)
        and arrays["dipole_D"].shape == (n,)
        and arrays["alpha_bohr3"].shape == (n, 6)
    )
    return (arrays, attributes) if consistent else None


def _discard(path: Path) -> None:
    # move aside first so a half-deleted directory never sits under the cache's name
    if path.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        os.rename(path, trash / "cache")
        shutil.rmtree(trash, ignore_errors=True)


@dataclass(frozen=True, eq=False)
class Qm9:
    """QM9 held in memory as flat numpy arrays; molecules are addressed by position 0..n-1."""

    qm9_index: np.ndarray
    n_atoms: np.ndarray
    atom_ptr: np.ndarray
    numbers: np.ndarray
    positions: np.ndarray
    U0_eV: np.ndarray
    dipole_D: np.ndarray
    alpha_bohr3: np.ndarray
    path: Path
    attributes: dict

    @property
    def n(self) -> int:
        """Number of molecules."""
        return int(self.qm9_index.shape[0])

    def __len__(self) -> int:
        return self.n

    def _positions(self, indices: np.ndarray | list[int] | int) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.dtype == bool or not np.issubdtype(idx.dtype, np.integer):
            if idx.size:  # an empty list has dtype float: let it through
                raise DataError(f"QM9 indices: expected integers, got dtype {idx.dtype}")
            idx = idx.astype(np.int64)
        idx = idx.reshape(-1).astype(np.int64, copy=False)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            bad = int(idx[(idx < 0) | (idx >= self.n)][0])
            raise DataError(f"QM9 indices: expected positions in 0..{self.n - 1}, got {bad}")
        return idx

    def frames(self, indices: np.ndarray | list[int]) -> list[Atoms]:
        """Molecules at positions ``indices`` as non-periodic ase.Atoms.

        ``info`` carries ``U0`` (eV), ``qm9_index`` (the original id) and ``dipole_magnitude``
        (debye).
        """
        out = []
        for i in self._positions(indices):
            lo, hi = self.atom_ptr[i], self.atom_ptr[i + 1]
            atoms = Atoms(
                numbers=self.numbers[lo:hi].astype(np.int64),
                positions=self.positions[lo:hi].copy(),
                pbc=False,
            )
            atoms.info["U0"] = float(self.U0_eV[i])
            atoms.info["qm9_index"] = int(self.qm9_index[i])
            atoms.info["dipole_magnitude"] = float(self.dipole_D[i])
            out.append(atoms)
        return out

    def targets(self, indices: np.ndarray | list[int], key: str = "U0") -> np.ndarray:
        """Targets at positions ``indices``.

        ``"U0"``: (m,) eV; ``"dipole_magnitude"``: (m,) debye; ``"polarizability"``: (m, 3, 3)
        symmetric tensors in bohr^3 (NaN where qm9pack has none).
        """
        idx = self._positions(indices)
        if key == "U0":
            return self.U0_eV[idx].copy()
        if key == "dipole_magnitude":
            return self.dipole_D[idx].copy()
        if key == "polarizability":
            packed = self.alpha_bohr3[idx]
            out = np.empty((idx.size, 3, 3))
            for c, (r, s) in enumerate(_ALPHA_SLOTS):
                out[:, r, s] = out[:, s, r] = packed[:, c]
            return out
        raise DataError(f"QM9 target: expected one of {', '.join(TARGET_KEYS)}, got {key!r}")


def load_qm9(cache_dir: str | os.PathLike | None = None) -> Qm9:
    """Open the QM9 cache, converting qm9pack's CSV files into it on first use (~5-10 s).

    A cache of this format is used as is; it is rebuilt when it is unreadable, or when qm9pack
    is installed and its files differ in size from those the cache was made from. Without
    qm9pack an existing cache still loads.
    """
    path = cache_path(cache_dir)
    cached = _read_cache(path)
    try:
        files = _source_files()
    except DataError:
        if cached is not None:
            return _make(cached, path)
        raise
    if cached is not None and cached[1].get("source_sizes") == _fingerprint(files):
        return _make(cached, path)

    start = time.perf_counter()
    arrays = _parse_qm9pack(files)
    parse_s = time.perf_counter() - start
    try:
        version = importlib.metadata.version("qm9pack")
    except importlib.metadata.PackageNotFoundError:
        version = None
    attributes = {
        "source": "qm9pack",
        "qm9pack_version": version,
        "source_sizes": _fingerprint(files),
        "n_molecules": int(arrays["qm9_index"].shape[0]),
        "units": {"positions": "Å", "U0_eV": "eV", "dipole_D": "debye",
                  "alpha_bohr3": "bohr^3"},
        "hartree_to_ev": HARTREE_TO_EV,
        "alpha_components": list(_ALPHA_COLUMNS),
        "parse_seconds": round(parse_s, 3),
    }
    if cached is not None or path.exists():
        _discard(path)  # stale or unreadable: replace it
    _write_cache(path, arrays, attributes)
    log.info("QM9 converted into %s in %.1f s", path, time.perf_counter() - start)
    cached = _read_cache(path)
    if cached is None:
        raise DataError(f"QM9 cache at {path} could not be read back after conversion")
    return _make(cached, path)


def _make(cached: tuple[dict[str, np.ndarray], dict], path: Path) -> Qm9:
    arrays, attributes = cached
    for value in arrays.values():
        value.setflags(write=False)  # shared by every frames()/targets() caller
    return Qm9(**arrays, path=path, attributes=attributes)
