#!/usr/bin/env python3
"""Chooses the shipped checkpoint by the validation series only: evaluates every
checkpoint a training run exported (TRAINING_DIR/checkpoints/step-N, and the final model
in TRAINING_DIR) through `segnode run` on eval-ircadb-p1, scores each by its mean Dice
over the validation organs, and installs the best as OUT (default onnx/abdomen-cascade)
with the run's version. With --stage1-from MODEL_DIR, each checkpoint is also tried with
that model's stage 1 (same grid and patch) in place of the run's own. With --baseline
MODEL_DIR (the shipped model), only checkpoints that pass the shipping rule against it
may be installed (on validation every organ at least the baseline's Dice minus 0.01, and
a higher mean), the best of them by mean Dice; if none passes, nothing is installed and
the exit status is 2. The test series is not read here.

Usage (project root):
  .venv/bin/python training/choose_checkpoint.py TRAINING_DIR [--stage1-from DIR] [--baseline DIR]
                                                 [--out DIR] [--version 3.0.0]
"""

import argparse
import hashlib
import json
import pathlib
import re
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "training"))
from evaluate import build, evaluate  # noqa: E402


def name_of(model, training_dir):
    return "final" if model == training_dir else model.name


def with_stage1(candidate, stage1_model, training_dir):
    """A copy of `candidate` whose stage 1 is `stage1_model`'s (checksum in the manifest)."""
    out = training_dir / "combined" / f"{name_of(candidate, training_dir)}+stage1-{stage1_model.name}"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(candidate / "stage2.onnx", out / "stage2.onnx")
    shutil.copyfile(stage1_model / "stage1.onnx", out / "stage1.onnx")
    old = hashlib.sha256((candidate / "stage1.onnx").read_bytes()).hexdigest()
    new = hashlib.sha256((out / "stage1.onnx").read_bytes()).hexdigest()
    (out / "model.toml").write_text((candidate / "model.toml").read_text().replace(old, new))
    return out


def validation_score(model):
    """Mean Dice over the validation organs, and each organ's Dice."""
    report = evaluate(model.resolve(), validation_only=True)
    organs = report["results"][0]["organs"]
    mean = sum(o["dice"] for o in organs.values()) / len(organs)
    score = {"mean_dice": round(mean, 4), "organs": {k: v["dice"] for k, v in organs.items()}}
    print(f"{model}: validation mean Dice {mean:.4f} {json.dumps(score['organs'])}", file=sys.stderr)
    return score


# The shipping rule (issue 32): no validation organ worse than the baseline by more
# than this, and a better mean.
ORGAN_TOLERANCE = 0.01


def shipping_rule(candidate, baseline):
    """Whether `candidate` may replace `baseline`, with each organ's verdict."""
    organs = {name: {"baseline": base, "candidate": candidate["organs"][name],
                     "ok": candidate["organs"][name] >= base - ORGAN_TOLERANCE}
              for name, base in baseline["organs"].items()}
    mean_ok = candidate["mean_dice"] > baseline["mean_dice"]
    return {"organs": organs, "mean": {"baseline": baseline["mean_dice"], "candidate": candidate["mean_dice"],
                                       "ok": mean_ok},
            "passes": mean_ok and all(o["ok"] for o in organs.values())}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("training_dir", type=pathlib.Path)
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "onnx" / "abdomen-cascade")
    ap.add_argument("--version", default="3.0.0")
    ap.add_argument("--stage1-from", type=pathlib.Path)
    ap.add_argument("--baseline", type=pathlib.Path, help="the shipped model the best must beat (shipping rule)")
    args = ap.parse_args()
    build()
    candidates = sorted((args.training_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name[5:]))
    candidates.append(args.training_dir)
    if args.stage1_from:
        candidates += [with_stage1(c, args.stage1_from, args.training_dir) for c in list(candidates)]
    scores = {name_of(model, args.training_dir): validation_score(model) for model in candidates}
    eligible = list(scores)
    rules = {}
    if args.baseline:
        baseline = validation_score(args.baseline)
        rules = {name: shipping_rule(score, baseline) for name, score in scores.items()}
        eligible = [name for name in scores if rules[name]["passes"]]
    best_name = max(eligible or scores, key=lambda k: scores[k]["mean_dice"])
    rule = rules.get(best_name)
    if args.baseline:
        print(json.dumps({"checkpoint": best_name, "passing": eligible, "shipping_rule": rule}, indent=2))
        if not eligible:
            sys.exit(2)
    best = next(c for c in candidates if name_of(c, args.training_dir) == best_name)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("stage1.onnx", "stage2.onnx"):
        shutil.copyfile(best / name, args.out / name)
    manifest = (best / "model.toml").read_text()
    manifest = re.sub(r'^version = ".*"$', f'version = "{args.version}"', manifest, count=1, flags=re.M)
    (args.out / "model.toml").write_text(manifest)
    for name in ("training-log.txt", "training.json"):
        shutil.copyfile(args.training_dir / name, args.out / name)
    training = json.loads((args.out / "training.json").read_text())
    training["selected"] = {"checkpoint": best_name, "by": "mean Dice on eval-ircadb-p1 (validation)",
                            "validation": scores, "shipping_rule": rule}
    (args.out / "training.json").write_text(json.dumps(training, indent=2) + "\n")
    print(json.dumps(training["selected"], indent=2))


if __name__ == "__main__":
    main()
