"""GFN2-xTB dipole vectors for N random QM9 molecules, cached as extxyz: a covariant benchmark.

QM9 ships only |mu| (B3LYP); this computes the dipole vector in the frame of the QM9
coordinates with tblite (see wkdist.data.xtb) for the first N molecules of
``np.random.default_rng(seed).permutation(n_qm9)`` and writes them, in that order, as extxyz:

    positions (Å), numbers; info: qm9_index, U0 (eV, QM9's B3LYP), dipole (3 floats, debye,
    GFN2-xTB). ase's extxyz reader moves ``dipole`` into atoms.calc.results.

    python benchmarks/make_qm9_xtb_dipoles.py --n 3000 --out runs/qm9_xtb_dipoles.extxyz

With --polarizability each frame also gets info ``polarizability``: the GFN2-xTB static dipole
polarizability alpha_ij = d mu_i / d F_j (wkdist.data.xtb.xtb_polarizability: central finite
differences in a uniform field, six more single points), 9 floats, row-major, bohr^3, symmetric.
The default output is then runs/qm9_xtb_polarizability.extxyz, so the dipole file is not touched;
the dipole written alongside is the same xtb_dipole value as in the dipole-only file.

    python benchmarks/make_qm9_xtb_dipoles.py --polarizability --n 1500

Resumable: finished chunks (--chunk molecules) are appended to ``OUT.seedS.partial`` (fsync'ed
after each chunk); a rerun with the same seed skips every molecule found there (a torn last
frame of a killed run is cut off). Only when all N are done is the file assembled in a temporary
sibling and renamed to OUT, so a file at OUT is always complete. An existing OUT is left alone
unless --overwrite. A partial file written with the other --polarizability setting is refused,
not reused or cut.

Threads: OMP_NUM_THREADS is set to 1 here, before numpy or tblite load, unless it is already set
(tblite is OpenMP-parallel and would otherwise start one thread per core in every worker); use
--jobs for parallelism. A QM9 molecule takes ~5 ms on one core (3000 in ~16 s); with
--polarizability ~50 ms.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy / tblite start thread pools

import argparse  # noqa: E402
import fcntl  # noqa: E402
import functools  # noqa: E402
import io  # noqa: E402
import multiprocessing  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import ase.io  # noqa: E402
import numpy as np  # noqa: E402
from ase import Atoms  # noqa: E402

from wkdist.data import load_qm9  # noqa: E402
from wkdist.data.xtb import xtb_dipole, xtb_polarizability  # noqa: E402
from wkdist.errors import DataError  # noqa: E402


def partial_path(out: Path, seed: int) -> Path:
    return out.with_name(f"{out.name}.seed{seed}.partial")


Result = tuple[np.ndarray, np.ndarray | None]  # dipole (3,) debye, polarizability (3, 3) bohr^3


def read_partial(
    path: Path, polarizability: bool = False
) -> tuple[dict[int, tuple[str, np.ndarray, np.ndarray | None]], int, int]:
    """Complete frames of a partial file: {qm9_index: (extxyz text, dipole, polarizability or
    None)}, the byte length of the valid prefix, and the file size (larger when a killed run left
    a torn frame). A complete frame with (``polarizability`` False) or without (True) a
    polarizability raises DataError: it was written in the other mode."""
    if not path.exists():
        return {}, 0, 0
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    frames: dict[int, tuple[str, np.ndarray]] = {}
    valid = 0
    i = 0
    while i < len(lines):
        try:
            n_atoms = int(lines[i])
        except ValueError:
            break
        block = lines[i:i + n_atoms + 2]
        if n_atoms < 1 or len(block) < n_atoms + 2 or not block[-1].endswith(b"\n"):
            break
        text = b"".join(block).decode()
        try:
            atoms = ase.io.read(io.StringIO(text), format="extxyz")
            index = int(atoms.info["qm9_index"])
            dipole = np.asarray(atoms.calc.results["dipole"], dtype=np.float64)
        except Exception:  # a torn or foreign frame ends the valid prefix
            break
        if dipole.shape != (3,) or not np.isfinite(dipole).all():
            break
        alpha = atoms.info.get("polarizability")
        if (alpha is not None) != polarizability:
            raise DataError(
                f"{path}: frame of qm9_index {index} was written "
                f"{'with' if alpha is not None else 'without'} --polarizability; use another "
                f"--out (or delete the partial file)")
        if alpha is not None:
            alpha = np.asarray(alpha, dtype=np.float64)
            if alpha.shape != (9,) or not np.isfinite(alpha).all():
                break
            alpha = alpha.reshape(3, 3)
        frames[index] = (text, dipole, alpha)
        valid += sum(len(line) for line in block)
        i += n_atoms + 2
    return frames, valid, len(data)


def frame_text(atoms: Atoms, dipole: np.ndarray, polarizability: np.ndarray | None = None) -> str:
    out = Atoms(numbers=atoms.numbers, positions=atoms.positions, pbc=False)
    out.info["qm9_index"] = int(atoms.info["qm9_index"])
    out.info["U0"] = float(atoms.info["U0"])
    out.info["dipole"] = np.asarray(dipole, dtype=np.float64)
    if polarizability is not None:  # row-major 9 floats (ase keeps an info 9-vector as is)
        out.info["polarizability"] = np.asarray(polarizability, dtype=np.float64).reshape(9)
    buffer = io.StringIO()
    ase.io.write(buffer, out, format="extxyz")
    return buffer.getvalue()


def compute(atoms: Atoms, polarizability: bool) -> Result:
    return xtb_dipole(atoms), (xtb_polarizability(atoms) if polarizability else None)


def _worker(item: tuple[np.ndarray, np.ndarray, int], polarizability: bool = False) -> Result:
    numbers, positions, qm9_index = item
    atoms = Atoms(numbers=numbers, positions=positions, pbc=False)
    atoms.info["qm9_index"] = qm9_index
    return compute(atoms, polarizability)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_final(out: Path, texts: list[str]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=out.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600
        with os.fdopen(fd, "w") as handle:
            handle.write("".join(texts))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(out.parent)


def summary(xtb: np.ndarray, b3lyp: np.ndarray) -> str:
    norm = np.linalg.norm(xtb, axis=1)
    r = float(np.corrcoef(norm, b3lyp)[0, 1])
    slope = float(np.dot(norm, b3lyp) / np.dot(b3lyp, b3lyp))
    return (
        f"|mu| GFN2-xTB vs QM9 B3LYP over {len(norm)} molecules (debye):\n"
        f"  mean xTB {norm.mean():.4f}  mean B3LYP {b3lyp.mean():.4f}  "
        f"(xTB std {norm.std():.4f}, B3LYP std {b3lyp.std():.4f})\n"
        f"  Pearson r {r:.4f}  MAE {np.abs(norm - b3lyp).mean():.4f}  "
        f"RMSE {np.sqrt(np.mean((norm - b3lyp) ** 2)):.4f}  "
        f"median xTB/B3LYP {np.median(norm[b3lyp > 0.1] / b3lyp[b3lyp > 0.1]):.3f}  "
        f"slope through 0 {slope:.3f}"
    )


def polarizability_summary(alpha: np.ndarray) -> str:
    eig = np.linalg.eigvalsh(alpha)
    iso = eig.mean(axis=1)
    aniso = eig[:, -1] - eig[:, 0]
    asym = np.abs(alpha - alpha.transpose(0, 2, 1)).max()
    return (
        f"GFN2-xTB polarizability over {len(alpha)} molecules (bohr^3):\n"
        f"  isotropic mean {iso.mean():.3f}  std {iso.std():.3f}  range [{iso.min():.3f}, "
        f"{iso.max():.3f}]\n"
        f"  anisotropy (max - min eigenvalue) mean {aniso.mean():.3f}  max {aniso.max():.3f}\n"
        f"  smallest eigenvalue {eig[:, 0].min():.4f}  max |alpha - alpha^T| {asym:.1e}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=3000, help="molecules (default 3000)")
    parser.add_argument("--seed", type=int, default=0, help="selection seed (default 0)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output extxyz (default runs/qm9_xtb_dipoles.extxyz, or "
                             "runs/qm9_xtb_polarizability.extxyz with --polarizability)")
    parser.add_argument("--polarizability", action="store_true",
                        help="also compute the GFN2-xTB polarizability tensor (info "
                             "'polarizability', 9 floats row-major, bohr^3; ~10x slower)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--chunk", type=int, default=100,
                        help="molecules per appended chunk (default 100)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    if args.n < 1 or args.jobs < 1 or args.chunk < 1:
        parser.error("--n, --jobs and --chunk must be positive")

    start = time.perf_counter()
    if args.out is None:
        args.out = Path("runs/qm9_xtb_polarizability.extxyz" if args.polarizability
                        else "runs/qm9_xtb_dipoles.extxyz")
    out: Path = args.out
    if out.exists() and not args.overwrite:
        print(f"{out} exists; nothing to do (pass --overwrite to recompute it)")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)

    qm9 = load_qm9()
    if args.n > qm9.n:
        parser.error(f"--n: QM9 has {qm9.n} molecules")
    order = np.random.default_rng(args.seed).permutation(qm9.n)[: args.n]
    frames = qm9.frames(order)
    indices = [int(a.info["qm9_index"]) for a in frames]

    partial = partial_path(out, args.seed)
    with open(partial, "ab") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"error: another run is writing {partial}", file=sys.stderr)
            return 1
        try:
            done, valid, size = read_partial(partial, args.polarizability)
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if valid < size:
            print(f"{partial}: cutting a torn frame ({size - valid} bytes) off the end")
            handle.truncate(valid)
            handle.flush()
            os.fsync(handle.fileno())
        wanted = set(indices)
        reused = sum(1 for k in done if k in wanted)
        todo = [a for a in frames if int(a.info["qm9_index"]) not in done]
        print(f"{args.n} molecules (seed {args.seed}): {reused} already in {partial}, "
              f"{len(todo)} to compute with {args.jobs} process(es), "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
              f"{', with polarizability' if args.polarizability else ''}", flush=True)

        executor = None
        if args.jobs > 1 and todo:
            # spawn, not fork: GNU OpenMP is not safe across fork
            executor = ProcessPoolExecutor(args.jobs,
                                           mp_context=multiprocessing.get_context("spawn"))
        compute_start = time.perf_counter()
        computed = 0
        try:
            for lo in range(0, len(todo), args.chunk):
                chunk = todo[lo: lo + args.chunk]
                if executor is None:
                    results = [compute(a, args.polarizability) for a in chunk]
                else:
                    items = [(a.numbers, a.positions, int(a.info["qm9_index"])) for a in chunk]
                    size_hint = max(1, len(items) // (4 * args.jobs))
                    worker = functools.partial(_worker, polarizability=args.polarizability)
                    results = list(executor.map(worker, items, chunksize=size_hint))
                texts = [frame_text(a, d, p) for a, (d, p) in zip(chunk, results)]
                handle.write("".join(texts).encode())
                handle.flush()
                os.fsync(handle.fileno())
                for a, text, (d, p) in zip(chunk, texts, results):
                    done[int(a.info["qm9_index"])] = (text, d, p)
                computed += len(chunk)
                elapsed = time.perf_counter() - compute_start
                rate = computed / elapsed
                remaining = len(todo) - computed
                print(f"{reused + computed}/{args.n} done  {rate:.1f} molecules/s  "
                      f"ETA {remaining / rate:.0f} s", flush=True)
        except DataError as exc:
            print(f"error: {exc}\n(finished chunks are kept in {partial}; rerun to resume)",
                  file=sys.stderr)
            return 1
        finally:
            if executor is not None:
                executor.shutdown()
        compute_s = time.perf_counter() - compute_start

        write_final(out, [done[k][0] for k in indices])
    partial.unlink()
    _fsync_dir(out.parent)

    xtb = np.array([done[k][1] for k in indices])
    b3lyp = np.array([a.info["dipole_magnitude"] for a in frames])
    wall = time.perf_counter() - start
    per_molecule = f"{compute_s / computed:.4f} s per molecule" if computed else "all reused"
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {args.n} frames)")
    print(f"total wall time {wall:.1f} s; computed {computed} in {compute_s:.1f} s "
          f"({per_molecule}, {args.jobs} process(es))")
    print(summary(xtb, b3lyp))
    if args.polarizability:
        print(polarizability_summary(np.array([done[k][2] for k in indices])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
