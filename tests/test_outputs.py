"""wkdist.app.outputs: predictions.csv and results.json writers."""

from __future__ import annotations

import csv
import io
import json
import math
import os

import numpy as np
import pytest

from wkdist.app import outputs
from wkdist.app.outputs import write_json, write_predictions, write_report

AWKWARD = [1 / 3, -0.1 - 0.2, 1e-300, 5e-324, -1.7976931348623157e308, 123456789.12345679,
           2.0 ** 0.5, -0.0, 0.0, 7.0]


def parse(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_write_predictions_round_trips_floats_exactly(tmp_path, rng):
    prediction = np.concatenate([AWKWARD, rng.normal(size=20) * 10.0 ** rng.integers(-8, 8, 20)])
    target = prediction[::-1].copy()
    index = np.arange(len(prediction)) * 7 + 3
    path = tmp_path / "predictions.csv"
    text = write_predictions(path, index, prediction, target)
    assert path.read_text() == text and text.endswith("\n")
    rows = parse(text)
    assert rows[0] == ["index", "target", "prediction"]
    assert len(rows) == len(prediction) + 1
    assert [int(r[0]) for r in rows[1:]] == index.tolist()
    got_target = np.array([float(r[1]) for r in rows[1:]])
    got_prediction = np.array([float(r[2]) for r in rows[1:]])
    np.testing.assert_array_equal(got_prediction, prediction)  # bitwise: repr round-trips
    np.testing.assert_array_equal(got_target, target)
    assert math.copysign(1.0, got_prediction[AWKWARD.index(-0.0)]) == -1.0
    assert [r[2] for r in rows[1:len(AWKWARD) + 1]] == [repr(float(v)) for v in AWKWARD]
    assert sorted(os.listdir(tmp_path)) == ["predictions.csv"]  # no temp file left


def test_write_predictions_without_target_and_to_nowhere(tmp_path):
    text = write_predictions(None, [5, 0], np.array([1.5, -2.25]))
    assert text == "index,prediction\n5,1.5\n0,-2.25\n"
    assert os.listdir(tmp_path) == []
    # numpy integer indices and float32 predictions come out as plain ints and Python floats
    text = write_predictions(None, np.array([2], dtype=np.int32), np.array([0.1], np.float32),
                             np.array([1], dtype=np.int64))
    assert text == f"index,target,prediction\n2,1.0,{float(np.float32(0.1))!r}\n"


def test_write_predictions_replaces_an_existing_file(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("old,content\n" * 100)
    write_predictions(path, [0], np.array([1.0]))
    assert path.read_text() == "index,prediction\n0,1.0\n"
    assert sorted(os.listdir(tmp_path)) == ["p.csv"]


def test_write_json_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    payload = {"mae": 0.1 + 0.2, "unit": None, "hyperparameters": {"coefficients": [1e-300, 2.5]},
               "n_train": 3}
    write_json(path, payload)
    assert json.loads(path.read_text()) == payload  # floats exact through json
    assert sorted(os.listdir(tmp_path)) == ["results.json"]
    # a writer that dies half-way leaves the old file whole
    def broken_write_text(self, text, *args, **kwargs):
        with open(self, "w") as handle:
            handle.write(text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(path), "write_text", broken_write_text)
    with pytest.raises(OSError):
        write_json(path, {"other": list(range(100))})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == payload
    # the rename did not happen; the half-written temp file is beside it, never at `path`
    leftovers = [p for p in os.listdir(tmp_path) if p != "results.json"]
    assert all(p.startswith(".") for p in leftovers)
    # and the next successful write replaces both
    write_json(path, {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}
    assert sorted(os.listdir(tmp_path)) == ["results.json"]


def test_write_report_png(tmp_path, rng):
    pytest.importorskip("matplotlib")
    target = rng.normal(size=30)
    path = tmp_path / "report.png"
    assert write_report(path, target=target, prediction=target + 0.1, unit="eV", title="t",
                        learning_curve=[(10, 0.3), (20, 0.2), (30, 0.1)])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path)) == ["report.png"]
    assert write_report(path, target=target, prediction=target, unit=None, title="t")


def test_public_names():
    assert set(outputs.__all__) == {"write_json", "write_predictions", "write_report"}
