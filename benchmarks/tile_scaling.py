"""Tile pipeline figures (printed, not a timed test).

    python benchmarks/tile_scaling.py [--n-train 96] [--n-test 32] [--tile-size 32]

Measures, on the same tiles and settings:
  * the engine called directly (pack once per tile row, kernel_block per tile, one process,
    one numba thread) against `compute_kernels` on a LocalCluster of 1 worker process
    (Dask + zarr + fsync overhead), and of 2 worker processes (speed-up);
  * write + fsync cost per tile, and fsync alone;
  * peak resident memory per worker;
  * a full-QM9 cost model (n_train = 110,000) from the measured per-core throughput.
Uses QM9 (wkdist.data.qm9) when available, else jittered small molecules.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore", message="Setting the shape on a NumPy array",
                        category=DeprecationWarning)

import ase.io  # noqa: E402

from wkdist.app.config import parse_config  # noqa: E402
from wkdist.app.dataset import load_dataset  # noqa: E402
from wkdist.engine.structures import species_of  # noqa: E402
from wkdist.tiled.graph import pack_block, tile_values  # noqa: E402
from wkdist.tiled.tiles import TRAIN, all_tiles, tile_bounds  # noqa: E402


def frames_for(n: int, seed: int = 0) -> list:
    try:
        from wkdist.data.qm9 import load_qm9

        qm9 = load_qm9()
        rows = np.random.default_rng(seed).permutation(qm9.n)[:n]
        frames = qm9.frames(rows)
        for atoms, y in zip(frames, qm9.targets(rows)):
            atoms.info["U"] = float(y)
        return frames, "QM9"
    except Exception:  # no QM9 here: small molecules of 3-8 atoms
        from ase.build import molecule

        names = ["H2O", "CH4", "NH3", "C2H6", "CH3OH", "C2H4", "HCN", "CO2", "H2CO", "C2H2"]
        rng = np.random.default_rng(seed)
        frames = []
        for i in range(n):
            atoms = molecule(names[i % len(names)])
            atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
            atoms.info["U"] = float(rng.normal())
            frames.append(atoms)
        return frames, "small molecules (QM9 not available)"


def direct(data, settings, tile_size):
    """The engine alone on the same tiles, one numba thread."""
    import numba

    numba.set_num_threads(1)
    _warm(settings)  # numba compile / cache load outside the timing, as in the workers
    species = species_of(data.train_frames, data.test_frames)
    start = time.perf_counter()
    packs = {}

    def pack(side, index):
        if (side, index) not in packs:
            frames = data.train_frames if side == "train" else data.test_frames
            packs[side, index] = pack_block(frames[tile_bounds(index, tile_size, len(frames))],
                                            settings=settings, species=species)
        return packs[side, index]

    pairs = 0
    for tile in all_tiles(data.n_train, data.n_test, tile_size):
        if tile.array == TRAIN:
            a = pack("train", tile.row)
            b = None if tile.row == tile.col else pack("train", tile.col)
        else:
            a, b = pack("test", tile.row), pack("train", tile.col)
        values = tile_values(a, b, settings=settings)
        pairs += values.shape[1] * values.shape[2]
    return time.perf_counter() - start


def pipeline(root, xyz, args, workers):
    from distributed import Client, LocalCluster

    from wkdist.app.compute import compute_kernels

    config = parse_config({
        "data": {"path": str(xyz), "target": "U", "n_train": args.n_train,
                 "n_test": args.n_test, "seed": 0},
        # the reference settings (wkdist.REFERENCE_QM9), whose figures the README records
        "kernel": {"cutoff": 5.0, "cutoff_smoothing": 0.5, "nu_max": args.nu_max,
                   "lambda_max": args.lambda_max},
        "compute": {"tile_size": args.tile_size, "workers": workers},
        "store": {"path": str(root / f"store-{workers}.zarr")},
    })
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        # warm up numba (load the cache) in every worker before timing
        client.run(_warm, config.kernel)
        start = time.perf_counter()
        summary = compute_kernels(config, client=client, numba_threads=1, progress=False)
        wall = time.perf_counter() - start
        peak = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return config, summary, wall, max(peak.values()) / 1024


def _warm(settings):
    from ase import Atoms

    from wkdist.engine.structures import pack_structures

    atoms = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    packed = pack_structures([atoms], settings, species=np.array([1, 8]))
    tile_values(packed, None, settings=settings, threads=1)


def fsync_cost(root, n=50):
    """ms per fsync of a 1 MiB file plus its directory, the store's durability step."""
    path = root / "fsync"
    path.mkdir()
    payload = os.urandom(1 << 20)
    times = []
    for i in range(n):
        file = path / f"{i}"
        file.write_bytes(payload)
        start = time.perf_counter()
        fd = os.open(file, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(fd)
        os.close(fd)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=96)
    parser.add_argument("--n-test", type=int, default=32)
    parser.add_argument("--tile-size", type=int, default=32)
    parser.add_argument("--nu-max", type=int, default=4)
    parser.add_argument("--lambda-max", type=int, default=3)
    args = parser.parse_args()
    frames, what = frames_for(args.n_train + args.n_test)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        xyz = root / "data.xyz"
        ase.io.write(xyz, frames, format="extxyz")
        config, s1, wall1, peak1 = pipeline(root, xyz, args, 1)
        data = load_dataset(config.data)
        t_direct = direct(data, config.kernel, config.compute.tile_size)
        _, s2, wall2, peak2 = pipeline(root, xyz, args, 2)
        fsync_ms = fsync_cost(root)
    n_tiles = s1.total_tiles
    pairs = s1.pairs
    print(f"data: {what}; n_train {args.n_train}, n_test {args.n_test}, tile_size "
          f"{args.tile_size}, nu_max {args.nu_max}, lambda_max {args.lambda_max}; {n_tiles} tiles, "
          f"{pairs} structure pairs; {os.cpu_count()} cores")
    print(f"engine direct (1 process, 1 thread): {t_direct:.2f} s "
          f"({pairs / t_direct:,.0f} pairs/s)")
    print(f"pipeline 1 worker: {wall1:.2f} s  -> overhead vs direct "
          f"{100 * (wall1 / t_direct - 1):+.1f}%")
    print(f"pipeline 2 workers: {wall2:.2f} s -> speed-up 1 -> 2 workers {wall1 / wall2:.2f}x")
    print(f"write + fsync per tile (in task): {1e3 * s2.write_s / s2.computed_tiles:.1f} ms; "
          f"fsync of a 1 MiB file + directory: {fsync_ms:.1f} ms (median)")
    print(f"peak RSS per worker: {peak1:.0f} MiB (1 worker), {peak2:.0f} MiB (2 workers)")
    # full QM9 cost model from the measured per-core throughput
    rate = pairs / t_direct
    n_train, n_test, tile, depth = 110_000, 20_831, 256, args.nu_max + 1
    nt, ns = -(-n_train // tile), -(-n_test // tile)
    full_pairs = n_train * (n_train + 1) // 2 + n_test * n_train
    stored = depth * 8 * (n_train * n_train + n_test * n_train)
    core_hours = full_pairs / rate / 3600
    print(f"full QM9 model (n_train {n_train}, n_test {n_test}, tile {tile}): "
          f"{nt * (nt + 1) // 2 + ns * nt} tiles, {full_pairs:.3e} pairs, "
          f"{stored / 1e9:,.0f} GB stored, {core_hours:,.0f} core-hours at {rate:,.0f} "
          "pairs/s/core, "
          f"{core_hours / 256:,.1f} h wall on 256 cores")
    if what.startswith("small"):
        print("  (throughput from small molecules; QM9 molecules have ~18 atoms and cost more: "
              "rerun where QM9 is installed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
