#!/usr/bin/env python3
"""nnU-Net models: the node against nnU-Net's own predictor, same model, same series,
same CPU threads, in one run.

For each variant (one fold or two, mirroring off or on; two folds with mirroring is nnU-Net's
default), the imported model (`segnode import-nnunet` of `training/nnunet/model` into a
temporary folder) through `segnode run` (release build) against `nnUNetPredictor` on
the same series: the node's time is end to end (DICOM decoding, volume, model loading,
inference, SEG written), nnU-Net's is `predict_from_files` on the series already
converted to NIfTI, with the model already loaded (its DICOM conversion and start-up are
not counted). Both use every core (`torch.set_num_threads`, ONNX Runtime's default).
Also the two label maps' Dice per label.

Usage (project root, after training/nnunet/setup and cargo build --release):
    .venv-nnunet/bin/python benches/nnunet.py [--series DIR] [--repeat N]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "training" / "nnunet"))
import reference  # noqa: E402

BINARY = ROOT / "target" / "release" / "segnode"


def node(model: Path, series: Path):
    out = tempfile.mkdtemp()
    started = time.perf_counter()
    p = subprocess.run([str(BINARY), "run", str(series), "--out", out, "--model", str(model)],
                       capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if p.returncode != 0:
        sys.exit(p.stderr[-3000:])
    report = json.loads(p.stdout)["series"][0]
    labels = np.fromfile(Path(out) / "series-001" / "labels.u8", np.uint8)
    return seconds, report["cascade"]["timings_ms"], labels


def dice(a, b):
    result = {}
    for label in sorted(set(np.unique(a)) | set(np.unique(b))):
        if label == 0:
            continue
        x, y = a == label, b == label
        result[int(label)] = round(2 * float((x & y).sum()) / float(x.sum() + y.sum()), 4)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=Path, default=reference.DATA / "ct-abdomen-j2k")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    threads = os.cpu_count()
    variants = reference.VARIANTS
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        native, image = reference.series_to_nifti(args.series, work)
        for folds, mirroring in variants:
            name = reference.variant_name(folds, mirroring)
            model = work / name
            command = [str(BINARY), "import-nnunet", str(reference.HERE / "model"), "--configuration",
                       "3d_fullres", "--folds", ",".join(map(str, folds)), "--out", str(model),
                       "--python", sys.executable]
            if not mirroring:
                command.append("--no-mirroring")
            subprocess.run(command, check=True, capture_output=True)
            nnunet_seconds = min(reference.predict(reference.HERE / "model", folds, mirroring, image, work,
                                                   threads) for _ in range(args.repeat))
            nnunet_labels = reference.to_series_order(work / "case.nii.gz", native).ravel()
            runs = [node(model, args.series) for _ in range(args.repeat)]
            node_seconds, timings, node_labels = min(runs, key=lambda r: r[0])
            print(f"{name}: segnode run {node_seconds:.1f} s (inference {timings['stage2_inference'] / 1000:.1f} s), "
                  f"nnUNetPredictor {nnunet_seconds:.1f} s, ratio {nnunet_seconds / node_seconds:.2f}x; "
                  f"Dice per label {dice(node_labels, nnunet_labels)}; {threads} threads", flush=True)


if __name__ == "__main__":
    main()
