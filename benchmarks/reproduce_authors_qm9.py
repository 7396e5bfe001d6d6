"""Reproduce the authors' released QM9 U0 run with wkdist: their split, their settings, our fit.

The run is `qm9.out` of the authors' repository (github.com/lab-cosmo/wigner_kernels, committed
in df8067e7f7073adfdd70b8f4e537a0e9a9586f13, "Clean-up", 2023-05-18, never regenerated):
500 training and 1,000 test QM9 molecules, r_cut 5, C 0.03, r0 1, nu_max 4, lambda_max 3,
10-fold CV of the mixing, final test MAE 1.6652 kcal/mol = 72.2 meV, CV MAE 2.2041 kcal/mol =
95.6 meV. Its data file holds qm9pack's 130,831 molecules in qm9pack's order, and its split is
``numpy.random.RandomState(0).permutation(130831)``: test = perm[:1000], train = perm[1000:1500]
(this reproduces the nu = 0 block it printed). It built k^{1,l} as the plain sum of products
of radial-basis coefficients, without the 8 pi^2 / (2l + 1) factor: ``normalization = "exact"``.

This script
1. checks wkdist's kernels of the first 6 training molecules against the 6 x 6 blocks that run
   printed, for both normalizations (see RESIDUAL_TOLERANCE for what "match" means here);
2. writes the split as train/test extxyz files and a config with ``wkdist.REFERENCE_QM9``, runs
   ``wkdist run`` on it (kernels through the tiled store, resumable; fit; predictions), and
   prints our test MAE next to their 72.2 meV and our CV MAE next to their 95.6 meV.

It reproduces one run on one split; accuracy claims are 5-split means (qm9_learning_curve.py).

    python benchmarks/reproduce_authors_qm9.py                  # normalization "exact"
    python benchmarks/reproduce_authors_qm9.py --normalization paper --out runs/authors_paper
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import zarr

import wkdist
from wkdist.app.export import write_extxyz
from wkdist.data.qm9 import load_qm9

MEV_PER_KCAL_MOL = 43.364104  # 1 kcal/mol in meV (their HARTREE_TO_KCAL_MOL conversion)
AUTHORS_TEST_MAE_MEV = 1.6652190293458697 * MEV_PER_KCAL_MOL  # 72.2 meV
AUTHORS_CV_MAE_MEV = 2.2041332641153715 * MEV_PER_KCAL_MOL  # 95.6 meV
QM9_SIZE = 130_831

# K^nu of their first 6 training molecules (train-train, nu = 0..4), as printed in qm9.out
# ("Printing a few representative kernels"), commit df8067e.
AUTHORS_BLOCKS = np.array([
    [[119, 134, 65, 74, 92, 106],
     [134, 153, 70, 82, 104, 119],
     [65, 70, 49, 50, 53, 62],
     [74, 82, 50, 54, 59, 70],
     [92, 104, 53, 59, 75, 82],
     [106, 119, 62, 70, 82, 97]],
    [[2.9748, 3.5089, 1.3304, 0.9182, 2.2349, 2.3097],
     [3.5089, 4.6653, 1.4207, 0.7402, 2.7487, 2.7571],
     [1.3304, 1.4207, 1.0359, 0.8613, 1.0420, 1.1916],
     [0.9182, 0.7402, 0.8613, 1.6567, 0.6386, 1.1818],
     [2.2349, 2.7487, 1.0420, 0.6386, 1.9171, 1.7416],
     [2.3097, 2.7571, 1.1916, 1.1818, 1.7416, 2.0788]],
    [[0.9994, 1.1415, 0.4208, 0.2565, 0.6914, 0.7773],
     [1.1415, 1.4783, 0.4354, 0.1330, 0.8506, 0.8845],
     [0.4208, 0.4354, 0.2635, 0.2442, 0.2875, 0.3707],
     [0.2565, 0.1330, 0.2442, 0.6888, 0.1122, 0.4162],
     [0.6914, 0.8506, 0.2875, 0.1122, 0.5672, 0.5327],
     [0.7773, 0.8845, 0.3707, 0.4162, 0.5327, 0.7257]],
    [[0.2681, 0.3072, 0.1086, 0.0687, 0.1761, 0.2167],
     [0.3072, 0.4224, 0.1098, 0.0260, 0.2248, 0.2489],
     [0.1086, 0.1098, 0.0648, 0.0688, 0.0661, 0.1006],
     [0.0687, 0.0260, 0.0688, 0.2399, 0.0196, 0.1419],
     [0.1761, 0.2248, 0.0661, 0.0196, 0.1448, 0.1397],
     [0.2167, 0.2489, 0.1006, 0.1419, 0.1397, 0.2315]],
    [[0.0817, 0.0944, 0.0320, 0.0211, 0.0510, 0.0693],
     [0.0944, 0.1434, 0.0319, 0.0058, 0.0680, 0.0811],
     [0.0320, 0.0319, 0.0198, 0.0234, 0.0175, 0.0320],
     [0.0211, 0.0058, 0.0234, 0.0964, 0.0041, 0.0594],
     [0.0510, 0.0680, 0.0175, 0.0041, 0.0432, 0.0424],
     [0.0693, 0.0811, 0.0320, 0.0594, 0.0424, 0.0910]],
])
# Their kernels are not our closed form to 4 decimals: their df8067e code projects each
# neighbour's Gaussian (width C exp(r / r0), up to 4.5 Å at the cutoff) on 25 Laplacian
# eigenstates per l inside the cutoff sphere, so the density is truncated at r_cut, while the
# closed form integrates over all space. Measured on these blocks: "exact" equals theirs up to
# one scale s^nu (s = 0.96) with a residual of at most 6.4 % of an entry, "paper" leaves 31-157 %
# whatever s is. The check: nu = 0 identical, and the residual after the best s^nu below
# RESIDUAL_TOLERANCE for "exact" (it is far above for "paper").
RESIDUAL_TOLERANCE = 0.10


def authors_split() -> tuple[np.ndarray, np.ndarray]:
    """Positions in qm9pack's order of their training (500) and test (1,000) molecules."""
    perm = np.random.RandomState(0).permutation(QM9_SIZE)
    return perm[1000:1500], perm[:1000]


def check_blocks(frames: list, settings: wkdist.KernelSettings) -> tuple[float, float]:
    """(largest |ours - theirs| at nu = 0, largest relative residual at nu >= 1 after the best
    single scale s^nu), printing the per-order figures."""
    ours = np.moveaxis(wkdist.structure_kernels(frames, settings=settings), -1, 0)
    theirs = AUTHORS_BLOCKS
    nus = np.arange(1, len(theirs))
    # least squares for log s over every entry: log(theirs / ours) ~ nu log s
    log_ratio = np.concatenate([np.log(theirs[nu] / ours[nu]).ravel() for nu in nus])
    weight = np.repeat(nus, theirs[0].size)
    scale = float(np.exp(weight @ log_ratio / (weight @ weight)))
    nu0 = float(np.max(np.abs(ours[0] - theirs[0])))
    print(f"  nu = 0: max |ours - theirs| {nu0:.1e}; best single scale s = {scale:.4f}")
    worst = 0.0
    for nu in nus:
        ratio = np.median(ours[nu] / theirs[nu])
        residual = float(np.max(np.abs(ours[nu] * scale**nu - theirs[nu]) / theirs[nu]))
        worst = max(worst, residual)
        print(f"  nu = {nu}: median ours / theirs {ratio:.4g}; after s^nu, largest relative "
              f"residual {residual:.1%}")
    return nu0, worst


def write_inputs(out: Path, settings: wkdist.KernelSettings, train: list, test: list) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for name, frames in (("train", train), ("test", test)):
        path = out / f"{name}.extxyz"
        if not path.exists():  # wkdist's writer: positions and targets round-trip exactly
            write_extxyz(path, frames, np.array([a.info["U0"] for a in frames]),
                         np.array([a.info["qm9_index"] for a in frames]), target_key="energy")
    kernel = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.to_dict().items())
    config = out / "config.toml"
    config.write_text(
        '[data]\ntrain = "train.extxyz"\ntest = "test.extxyz"\ntarget = "energy"\nunit = "eV"\n\n'
        f"[kernel]\n{kernel}\n\n"
        '[compute]\ncluster = "local"\nworkers = 2\nthreads_per_worker = 1\n\n'
        '[store]\npath = "store"\n\n[fit]\nfolds = 10\n'
    )
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--normalization", choices=("exact", "paper"), default="exact")
    parser.add_argument("--out", type=Path, default=None,
                        help="working directory (default runs/authors_qm9_<normalization>)")
    parser.add_argument("--blocks-only", action="store_true",
                        help="only compare the printed kernel blocks (seconds)")
    args = parser.parse_args()
    settings = dataclasses.replace(wkdist.REFERENCE_QM9, normalization=args.normalization)
    out = args.out or Path(f"runs/authors_qm9_{args.normalization}")

    qm9 = load_qm9()
    if qm9.n != QM9_SIZE:
        print(f"error: expected qm9pack's {QM9_SIZE} molecules, found {qm9.n}", file=sys.stderr)
        return 2
    train_rows, test_rows = authors_split()
    train, test = qm9.frames(train_rows), qm9.frames(test_rows)

    print(f"kernels of their first 6 training molecules against qm9.out (QM9 ids "
          f"{[a.info['qm9_index'] for a in train[:6]]}):")
    for normalization in ("exact", "paper"):
        print(f" normalization {normalization!r}:")
        nu0, residual = check_blocks(
            train[:6], dataclasses.replace(settings, normalization=normalization))
        if normalization == "exact" and (nu0 != 0 or residual > RESIDUAL_TOLERANCE):
            print(f"error: our exact kernels do not match the printed blocks (nu = 0 off by "
                  f"{nu0:g}; residual {residual:.1%} > {RESIDUAL_TOLERANCE:.0%})",
                  file=sys.stderr)
            return 1
    if args.blocks_only:
        return 0

    config = write_inputs(out, settings, train, test)
    command = [sys.executable, "-m", "wkdist", "run", str(config), "--out", str(out / "result")]
    print("running:", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    results = json.loads((out / "result" / "results.json").read_text())
    with zarr.config.set({"array.read_missing_chunks": False}):
        stored = zarr.open_array(zarr.storage.LocalStore(out / "store" / "K_train",
                                                         read_only=True), mode="r")[:, :6, :6]
    # the product path: the stored tiles equal the engine on the structures as read from the
    # files, bit for bit
    from wkdist.app.dataset import read_frames

    direct = np.moveaxis(wkdist.structure_kernels(read_frames(out / "train.extxyz")[:6],
                                                  settings=settings), -1, 0)
    print(f"store block vs engine on the same 6 molecules: max |difference| "
          f"{np.max(np.abs(stored - direct)):.1e}")
    test_mae = results["mae"] * 1000
    cv_mae = results["search"]["cv_mae"] * 1000
    print(f"settings: {settings.to_dict()}")
    print(f"test MAE: wkdist {test_mae:.1f} meV, authors {AUTHORS_TEST_MAE_MEV:.1f} meV")
    print(f"CV MAE:   wkdist {cv_mae:.1f} meV, authors {AUTHORS_CV_MAE_MEV:.1f} meV "
          f"(ours on {results['search']['n_used']} molecules, {results['search'].get('folds')}"
          "-fold)")
    print(f"coefficients c_0..c_4: {results['hyperparameters']['coefficients']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
