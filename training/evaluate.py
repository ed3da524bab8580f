#!/usr/bin/env python3
"""Evaluates a model through the node itself: runs `segnode run` on every validation and
test series of ../shared/data (README, "Which data is for what") and prints Dice and
volumes per organ per series, plus the same for the test series written in other
acquisition layouts (scripts/orient_series.py: feet-first, prone, in-plane transposed),
whose label maps are mapped back to the stored layout before comparing.

  validation  eval-ircadb-p1   manual masks, built at run time by its make_labels.py
                               (CC BY-NC-ND: nothing derived is kept)
  test        ct-abdomen-j2k   TotalSegmentator labels; report once per shipped model,
                               never choose anything by it

Usage (project root):
  .venv/bin/python training/evaluate.py [MODEL_DIR] [--validation-only] [--against BASELINE_DIR]
Prints a JSON report on stdout and a Markdown table on stderr; with --against, both
models' reports and one table with their figures side by side (the baseline first).
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
SEGNODE = ROOT / "target" / "release" / "segnode"
sys.path.insert(0, str(ROOT / "scripts"))
from reference_cascade import to_frame  # noqa: E402

LAYOUTS = {"feet_first": "IPR", "prone": "SAR", "transposed": "ILP"}


def build():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)


def run_node(model, series, out):
    """`segnode run`: (label map as stored, its labels.json, the series summary, seconds)."""
    started = time.perf_counter()
    run = subprocess.run([SEGNODE, "run", series, "--out", out, "--model", model],
                         capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    summary = json.loads(run.stdout)["series"][0]
    meta = json.loads((out / "series-001" / "labels.json").read_text())
    labels = np.fromfile(out / "series-001" / "labels.u8", dtype=np.uint8).reshape(meta["shape_zyx"])
    return labels, meta, summary, wall


def score(ours, our_meta, reference, ref_names):
    """Dice and volumes per organ of the reference, matched by name."""
    our_values = {name: int(v) for v, name in our_meta["labels"].items()}
    voxel_ml = float(np.prod(our_meta["spacing_mm"])) / 1000.0
    organs = {}
    for rv, name in ref_names.items():
        a = ours == our_values[name] if name in our_values else np.zeros(ours.shape, dtype=bool)
        b = reference == int(rv)
        dice = 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)
        organs[name] = {"dice": round(float(dice), 4), "ml_node": round(a.sum() * voxel_ml, 1),
                        "ml_reference": round(b.sum() * voxel_ml, 1)}
    found = sorted(name for name, v in our_values.items() if (ours == v).any())
    return organs, found


def reference_labels(folder):
    meta = json.loads((folder / "labels.json").read_text())
    shape = meta.get("shape")
    labels = np.fromfile(folder / "labels.u8", dtype=np.uint8)
    return labels.reshape(shape) if shape else labels, meta["labels"]


def evaluate_series(model, name, role, series, ref_folder, work, frame=None):
    labels, meta, summary, wall = run_node(model, series, work / name)
    reference, names = reference_labels(ref_folder)
    if frame:  # back to the stored layout of the reference
        labels = to_frame(labels, frame, "SPL")
    reference = reference.reshape(labels.shape)
    organs, found = score(labels, meta, reference, names)
    return {"series": name, "role": role, "organs": organs, "labels_output": found,
            "frame": summary["cascade"]["frame"], "wall_seconds": round(wall, 2),
            "cascade_ms": summary["cascade"]["timings_ms"]["total"]}, labels


def evaluate(model, validation_only=False):
    work = pathlib.Path(tempfile.mkdtemp())
    ircadb_labels = work / "ircadb-labels"
    subprocess.run([sys.executable, DATA / "eval-ircadb-p1" / "make_labels.py", ircadb_labels],
                   check=True, capture_output=True)
    results = [evaluate_series(model, "eval-ircadb-p1", "validation", DATA / "eval-ircadb-p1" / "ct",
                               ircadb_labels, work)[0]]
    if not validation_only:
        test_ref = DATA / "ct-abdomen-j2k-labels"
        stored, stored_labels = evaluate_series(model, "ct-abdomen-j2k", "test", DATA / "ct-abdomen-j2k",
                                                test_ref, work)
        results.append(stored)
        variants = work / "layouts"
        subprocess.run([sys.executable, ROOT / "scripts" / "orient_series.py", "write", DATA / "ct-abdomen-j2k",
                        variants, *LAYOUTS], check=True, capture_output=True)
        for layout, frame in LAYOUTS.items():
            result, labels = evaluate_series(model, f"ct-abdomen-j2k ({layout})", "test", variants / layout,
                                             test_ref, work, frame)
            result["identical_to_stored"] = bool((labels == stored_labels).all())
            results.append(result)
    manifest = (model / "model.toml").read_text()
    version = next(line.split("=", 1)[1].strip().strip('"') for line in manifest.splitlines()
                   if line.startswith("version"))
    return {"model": str(model), "version": version, "results": results}


def markdown(report):
    lines = ["| series | role | organ | Dice | node ml | reference ml |", "| --- | --- | --- | --- | --- | --- |"]
    for r in report["results"]:
        for organ, o in r["organs"].items():
            lines.append(f"| {r['series']} | {r['role']} | {organ} | {o['dice']:.3f} | {o['ml_node']} | "
                         f"{o['ml_reference']} |")
    for r in report["results"]:
        extra = f", identical to the stored layout: {r['identical_to_stored']}" if "identical_to_stored" in r else ""
        lines.append(f"\n{r['series']}: labels output {', '.join(r['labels_output']) or 'none'}; "
                     f"frame {r['frame']['source']} ({r['frame']['mapping']}); cascade {r['cascade_ms']:.0f} ms{extra}")
    return "\n".join(lines)


def side_by_side(baseline, candidate):
    """One table of two reports on the same series: Dice and volume of each, per organ."""
    a, b = baseline["version"], candidate["version"]
    lines = [f"| series | role | organ | Dice {a} | Dice {b} | ml {a} | ml {b} | reference ml |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for old, new in zip(baseline["results"], candidate["results"]):
        for organ, o in old["organs"].items():
            n = new["organs"][organ]
            lines.append(f"| {old['series']} | {old['role']} | {organ} | {o['dice']:.3f} | {n['dice']:.3f} | "
                         f"{o['ml_node']} | {n['ml_node']} | {o['ml_reference']} |")
    for role in ("validation", "test"):
        means = [sum(o["dice"] for o in r["organs"].values()) / len(r["organs"])
                 for report in (baseline, candidate) for r in report["results"][:2] if r["role"] == role]
        if len(means) == 2:
            lines.append(f"| {role} mean | | | {means[0]:.3f} | {means[1]:.3f} | | | |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", type=pathlib.Path, default=ROOT / "onnx" / "abdomen-cascade")
    ap.add_argument("--validation-only", action="store_true")
    ap.add_argument("--against", type=pathlib.Path, help="a baseline model evaluated on the same series")
    args = ap.parse_args()
    build()
    report = evaluate(args.model.resolve(), args.validation_only)
    if args.against:
        baseline = evaluate(args.against.resolve(), args.validation_only)
        print(json.dumps({"baseline": baseline, "candidate": report}, indent=2))
        print(side_by_side(baseline, report), file=sys.stderr)
    else:
        print(json.dumps(report, indent=2))
        print(markdown(report), file=sys.stderr)


if __name__ == "__main__":
    main()
