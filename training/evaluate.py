#!/usr/bin/env python3
"""Evaluates a model through the node itself on the held-out series: runs
`segnode run` on ../shared/data/ct-abdomen-j2k and compares its label map with
../shared/data/ct-abdomen-j2k-labels by organ name (Dice, volumes). Prints JSON.

Usage (project root): .venv/bin/python training/evaluate.py [MODEL_DIR]
"""

import json
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def main():
    model = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "onnx" / "abdomen-cascade"
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    out = pathlib.Path(tempfile.mkdtemp())
    started = time.perf_counter()
    run = subprocess.run([ROOT / "target" / "release" / "segnode", "run", DATA / "ct-abdomen-j2k", "--out", out,
                          "--model", model], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    summary = json.loads(run.stdout)["series"][0]
    ours = np.fromfile(out / "series-001" / "labels.u8", dtype=np.uint8)
    reference = np.fromfile(DATA / "ct-abdomen-j2k-labels" / "labels.u8", dtype=np.uint8)
    ref_meta = json.loads((DATA / "ct-abdomen-j2k-labels" / "labels.json").read_text())
    ref_values = {name: int(v) for v, name in ref_meta["labels"].items()}
    our_values = {name: int(v) for v, name in json.loads((out / "series-001" / "labels.json").read_text())["labels"].items()}
    spacing = summary["cascade"] and json.loads((out / "series-001" / "labels.json").read_text())["spacing_mm"]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    organs = {}
    for name, rv in ref_values.items():
        a = ours == our_values[name] if name in our_values else np.zeros_like(ours, dtype=bool)
        b = reference == rv
        dice = 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)
        organs[name] = {"dice": round(float(dice), 4), "ml_node": round(a.sum() * voxel_ml, 1),
                        "ml_reference": round(b.sum() * voxel_ml, 1)}
    print(json.dumps({
        "model": summary["cascade"]["model"], "version": summary["cascade"]["model_version"],
        "series": "ct-abdomen-j2k (held out)", "organs": organs,
        "wall_seconds": round(wall, 2), "timings_ms": summary["cascade"]["timings_ms"],
        "volume_ms": summary["volume_ms"],
        "stage2_region_fraction": summary["cascade"]["stage2_region_fraction"],
    }, indent=2))


if __name__ == "__main__":
    main()
