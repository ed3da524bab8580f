#!/usr/bin/env python3
"""TotalSegmentator as a site brings it: results folders laid out as released, with
generated weights (scripts/totalsegmentator_fixture.py: the 3 mm `total` model, Dataset297,
and the first 1.5 mm part, Dataset291), imported unchanged with `segnode import-nnunet`,
then, in one run per model:

- `segnode run` (release build, end to end: DICOM decoding, volume, model loading,
  inference, SEG, SR and key images written) against nnU-Net's own `nnUNetPredictor` on
  the same series (NIfTI in RAS, as TotalSegmentator feeds it; model loading and the
  conversion not counted), both on every core; the ratio of their times; the Dice per
  label between the two label maps, of the labels with at least 1,000 voxels in either;
  each side's peak resident memory (GNU time, the predictor in a process of its own);
- `segnode serve` with the imported model and a DCMTK storescp as destination: the series
  sent with storescu, the SEG received checked with dciodvfy and its segment labels
  against the model's label names.

Usage (project root, after training/nnunet/setup and cargo build --release):
    .venv-nnunet/bin/python benches/totalsegmentator.py [--tasks 297,291] [--series DIR]
Prints one line per model and a JSON summary at the end.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "training" / "nnunet"))
import reference  # noqa: E402
from bench_node import free_port, node_config, pacs_destination, wait_port  # noqa: E402

BINARY = ROOT / "target" / "release" / "segnode"
MIN_VOXELS = 1000


def timed(command, **kwargs):
    """Runs `command` under GNU time: (completed process, seconds, peak RSS in MiB)."""
    started = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "peak-kib %M", *map(str, command)],
                       capture_output=True, text=True, **kwargs)
    seconds = time.perf_counter() - started
    if p.returncode != 0:
        sys.exit(f"{command[0]} failed:\n{p.stderr[-3000:]}")
    peak = int(re.findall(r"peak-kib (\d+)", p.stderr)[-1]) / 1024
    return p, seconds, peak


def results_folder(root: Path) -> Path:
    """The `Trainer__Plans__Configuration` folder under a dataset folder."""
    return next(p for p in root.iterdir() if p.name.endswith("__3d_fullres"))


def predictor(folder: Path, image: Path, work: Path):
    """nnUNetPredictor in a process of its own: (seconds, peak MiB, label map z,y,x)."""
    code = ("import sys, json; sys.path.insert(0, sys.argv[1]); import reference; from pathlib import Path; "
            "print(json.dumps(reference.predict(Path(sys.argv[2]), [0], False, Path(sys.argv[3]), "
            "Path(sys.argv[4]), int(sys.argv[5]))))")
    p, _, peak = timed([sys.executable, "-c", code, reference.HERE, folder, image, work, os.cpu_count()])
    return float(p.stdout.strip().splitlines()[-1]), peak


def dice(a, b):
    result = {}
    for label in sorted(set(np.unique(a)) | set(np.unique(b))):
        x, y = a == label, b == label
        if label == 0 or max(x.sum(), y.sum()) < MIN_VOXELS:
            continue
        result[int(label)] = round(2 * float((x & y).sum()) / float(x.sum() + y.sum()), 4)
    return result


def served(model: Path, series: Path, work: Path, names: set):
    """The series through `segnode serve` to a storescp: the SEG's dciodvfy errors and
    whether its segment labels are label names of the model."""
    inbox = work / "inbox"
    inbox.mkdir()
    scp_port, dicom_port = free_port(), free_port()
    config = work / "segnode.toml"
    config.write_text(node_config(work / "node", dicom_port, 2,
                                  f'[http]\nlisten = "127.0.0.1:0"\n[model]\npath = "{model}"\n'
                                  + pacs_destination(scp_port, 'objects = ["seg"]\n')))
    scp = subprocess.Popen(["storescp", "--fork", "-aet", "PACS", "-od", str(inbox), str(scp_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    node = subprocess.Popen([str(BINARY), "serve", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=open(work / "node.log", "w"))
    try:
        wait_port(dicom_port)
        subprocess.run(["storescu", "-aet", "STORESCU", "-aec", "SEGNODE", "+sd", "+r", "-xv", "127.0.0.1",
                        str(dicom_port), str(series)], check=True, capture_output=True)
        deadline = time.time() + 1800
        while time.time() < deadline and not any(inbox.iterdir()):
            time.sleep(2)
        time.sleep(2)
        files = list(inbox.iterdir())
        if not files:
            sys.exit(f"nothing delivered; the node's log: {(work / 'node.log').read_text()[-3000:]}")
        seg = files[0]
        check = subprocess.run(["dciodvfy", str(seg)], capture_output=True, text=True)
        errors = [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
        dump = subprocess.run(["dcmdump", "+P", "SegmentLabel", str(seg)], capture_output=True, text=True).stdout
        labels = re.findall(r"\(0062,0005\) LO \[([^\]]*)\]", dump)
        return {"dciodvfy_errors": len(errors), "segments": len(labels),
                "segment_labels_are_model_labels": all(label in names for label in labels)}
    finally:
        node.terminate()
        node.wait()
        scp.terminate()
        scp.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="297,291")
    parser.add_argument("--series", type=Path, default=reference.DATA / "ct-abdomen-j2k")
    args = parser.parse_args()
    threads = os.cpu_count()
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run([sys.executable, str(ROOT / "scripts" / "totalsegmentator_fixture.py"), str(work / "results"),
                        "--tasks", args.tasks], check=True, capture_output=True)
        native, image = reference.series_to_nifti(args.series, work)
        for dataset in sorted((work / "results").iterdir()):
            name = dataset.name.split("_")[0]
            model = work / f"model-{name}"
            _, import_seconds, _ = timed([BINARY, "import-nnunet", dataset, "--configuration", "3d_fullres",
                                          "--out", model, "--python", sys.executable])
            out = work / f"out-{name}"
            p, node_seconds, node_peak = timed([BINARY, "run", args.series, "--out", out, "--model", model], cwd=ROOT)
            report = json.loads(p.stdout)["series"][0]
            node_labels = np.fromfile(out / "series-001" / "labels.u8", np.uint8)
            nnunet_seconds, nnunet_peak = predictor(results_folder(dataset), image, work)
            nnunet_labels = reference.to_series_order(work / "case.nii.gz", native).ravel()
            per_label = dice(node_labels, nnunet_labels)
            names = set(json.loads((out / "series-001" / "labels.json").read_text())["labels"].values())
            row = {
                "model": dataset.name, "series": args.series.name, "threads": threads,
                "import_seconds": round(import_seconds, 1),
                "node_seconds": round(node_seconds, 1),
                "node_inference_seconds": round(report["cascade"]["timings_ms"]["stage2_inference"] / 1000, 1),
                "nnunet_seconds": round(nnunet_seconds, 1),
                "speedup": round(nnunet_seconds / node_seconds, 2),
                "node_peak_mib": round(node_peak), "nnunet_peak_mib": round(nnunet_peak),
                "labels_compared": len(per_label),
                "min_dice": min(per_label.values()) if per_label else None,
                "organs_reported": len(report["sr"]["organs"]) if report.get("sr") else 0,
            }
            print(f"{dataset.name}: segnode run {node_seconds:.1f} s (inference {row['node_inference_seconds']} s, "
                  f"peak {row['node_peak_mib']} MiB), nnUNetPredictor {nnunet_seconds:.1f} s "
                  f"(peak {row['nnunet_peak_mib']} MiB), {row['speedup']}x; Dice min {row['min_dice']} over "
                  f"{len(per_label)} labels of >= {MIN_VOXELS} voxels", flush=True)
            serve_work = work / f"serve-{name}"
            serve_work.mkdir()
            row["serve"] = served(model, args.series, serve_work, names)
            print(f"  served to storescp: {row['serve']}", flush=True)
            summary.append(row)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
