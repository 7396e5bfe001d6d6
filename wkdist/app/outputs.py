"""Files a run leaves for people and scripts: results.json, predictions.csv, report.png.

Column layouts and keys are documented in the README ("Outputs of `wkdist run` / `wkdist fit`").
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_json", "write_predictions", "write_report"]


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically (temp + rename): a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def write_predictions(path: Path | None, index: Sequence[int], prediction: np.ndarray,
                      target: np.ndarray | None = None) -> str:
    """``index,target,prediction`` rows (target omitted when None); floats by repr.

    Vectors (n, 3) and symmetric tensors (n, 6) get one column per component:
    ``target_x .. prediction_z`` or the suffixes xx, xy, xz, yy, yz, zz (README).
    Returns the text; writes it atomically to ``path`` unless None.
    """
    from ..engine.targets import column_suffixes, target_kind

    prediction = np.asarray(prediction, dtype=np.float64)
    suffixes = column_suffixes(target_kind(prediction))
    columns = ["index"]
    if target is not None:
        target = np.asarray(target, dtype=np.float64).reshape(len(prediction), -1)
        columns += [f"target{s}" for s in suffixes]
    columns += [f"prediction{s}" for s in suffixes]
    rows = prediction.reshape(len(prediction), -1)
    lines = [",".join(columns)]
    for row, k in enumerate(index):
        values = [] if target is None else [repr(float(v)) for v in target[row]]
        values += [repr(float(v)) for v in rows[row]]
        lines.append(",".join([str(int(k))] + values))
    text = "\n".join(lines) + "\n"
    if path is not None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return text


def write_report(path: Path, *, target: np.ndarray, prediction: np.ndarray, unit: str | None,
                 title: str, learning_curve: Sequence[tuple[int, float]] | None = None,
                 baseline: np.ndarray | None = None) -> bool:
    """Parity plot (and learning curve when given) as a PNG; False if matplotlib is missing.

    With ``baseline`` (per-structure b(x)) the parity plot shows target and prediction minus
    it: total energies span thousands of eV and would hide errors of a few meV.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = 2 if learning_curve and len(learning_curve) > 1 else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.8), squeeze=False)
    ax = axes[0, 0]
    label = f" ({unit})" if unit else ""
    mae = float(np.mean(np.abs(np.asarray(prediction) - np.asarray(target))))
    if baseline is not None:
        target = np.asarray(target) - baseline
        prediction = np.asarray(prediction) - baseline
        label = f" minus element baseline{label}"
    ax.scatter(target, prediction, s=6, alpha=0.6)
    low = float(min(np.min(target), np.min(prediction)))
    high = float(max(np.max(target), np.max(prediction)))
    ax.plot([low, high], [low, high], color="black", lw=0.8)
    ax.set_xlabel(f"target{label}")
    ax.set_ylabel(f"prediction{label}")
    ax.set_title(f"{title}: test MAE {np.format_float_positional(mae, 4, fractional=False)}"
                 f"{f' {unit}' if unit else ''}")
    if panels == 2:
        n, err = zip(*sorted(learning_curve))
        ax = axes[0, 1]
        ax.loglog(n, err, "o-")
        ax.set_xlabel("n_train")
        ax.set_ylabel(f"test MAE{f' ({unit})' if unit else ''}")
        ax.set_title("learning curve")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return True
