#!/usr/bin/env python3
"""What a model learned of its own training volumes: runs the cascade (the node's
semantics, scripts/reference_cascade.py) on each training set (train-ct-3mm,
train-s0009) and compares with its labels: Dice per organ after post-processing (what the node outputs), Dice of
the raw stage-2 argmax, how much of each organ stage 1's candidate region covers, and
which label each organ's voxels got (confusion). This is the check a recipe change is
judged by in sample; recipes and checkpoints are chosen on the validation series
(training/evaluate.py, training/choose_checkpoint.py), and the test series is only reported.

Usage (project root): .venv/bin/python training/insample.py [MODEL_DIR]
"""

import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from reference_cascade import resample_nearest, run_cascade  # noqa: E402
from training_data import LABELS, load_training_volumes  # noqa: E402


def dice(a, b):
    return round(float(2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)), 4)


def insample(model, hu, labels, spacing):
    raw = {}
    final = run_cascade(hu, spacing, model, raw)
    grid = list(raw["stage2"].shape)
    on_grid = resample_nearest(labels, grid)
    names = ["background"] + [name for _, name, *_ in LABELS]
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(confusion, (on_grid.ravel(), raw["stage2"].ravel()), 1)
    organs = {}
    for value, name, *_ in LABELS:
        if not (labels == value).any():
            continue
        organs[name] = {
            "dice": dice(final == value, labels == value),
            "dice_stage2_raw": dice(raw["stage2"] == value, on_grid == value),
            "stage1_coverage": round(float(raw["candidate"][on_grid == value].mean()), 4),
            "predicted_as": {names[j]: int(n) for j, n in enumerate(confusion[value]) if n},
        }
    return organs


def main():
    model = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "onnx" / "abdomen-cascade"
    volumes = {name: insample(model, hu, labels, spacing) for name, hu, labels, spacing in load_training_volumes()}
    print(json.dumps({"model": str(model), "in_sample": volumes}, indent=2))


if __name__ == "__main__":
    main()
