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

Then the 1.5 mm parts (`--parts`, e.g. 291,292 or 291..295) imported at once as one
merged model behind the default model's stage 1 (`--behind onnx/abdomen-cascade`), with
`[model] labels` naming the six abdominal organs: the node runs only the part that has
them, only on the box of stage 1's region (what TotalSegmentator's `--roi_subset` does
with its own coarse model). Compared with nnUNetPredictor on the same box (the image
cropped to the box the node reports, `stage2_box`; Dice on the six organs), and with
nnUNetPredictor on the whole image (the time of each part's whole-image run above, times
the number of parts: what running the merged model without a subset costs nnU-Net); and
served with the subset: the SEG's segments are the subset's.

Usage (project root, after training/nnunet/setup and cargo build --release):
    .venv-nnunet/bin/python benches/totalsegmentator.py [--tasks 297,291] [--parts 291,292] [--series DIR]
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


ORGANS = ["spleen", "kidney_right", "kidney_left", "liver", "stomach", "pancreas"]


def predictor(folder: Path, image: Path, work: Path):
    """nnUNetPredictor in a process of its own on `image`, its labels to work/case.nii.gz:
    (seconds, peak MiB)."""
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


def cropped_predictor(folder: Path, image: Path, box, work: Path):
    """nnUNetPredictor on `image` (RAS) cropped to `box` ([lo, end] of the node's
    model-frame z, y, x: the RAS array's axes reversed), its labels put back in the whole
    image at work/case.nii.gz: (seconds, peak MiB)."""
    import nibabel as nib
    (z0, y0, x0), (z1, y1, x1) = box
    whole = nib.load(image)
    crop_dir = work / "crop"
    crop_dir.mkdir(exist_ok=True)
    crop = whole.slicer[x0:x1, y0:y1, z0:z1]
    nib.save(crop, crop_dir / "case_0000.nii.gz")
    seconds, peak = predictor(folder, crop_dir / "case_0000.nii.gz", crop_dir)
    labels = np.zeros(whole.shape, np.uint8)
    labels[x0:x1, y0:y1, z0:z1] = np.asarray(nib.load(crop_dir / "case.nii.gz").dataobj)
    nib.save(nib.Nifti1Image(labels, whole.affine), work / "case.nii.gz")
    return seconds, peak


def served(model: Path, series: Path, work: Path, names: set, model_extra: str = ""):
    """The series through `segnode serve` to a storescp: the SEG's dciodvfy errors and
    whether its segment labels are label names of the model (`names`)."""
    inbox = work / "inbox"
    inbox.mkdir()
    scp_port, dicom_port = free_port(), free_port()
    config = work / "segnode.toml"
    config.write_text(node_config(work / "node", dicom_port, 2,
                                  f'[http]\nlisten = "127.0.0.1:0"\n[model]\npath = "{model}"\n{model_extra}'
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
    parser.add_argument("--parts", default="291,292", help="1.5 mm parts merged into one model; empty: none")
    parser.add_argument("--series", type=Path, default=reference.DATA / "ct-abdomen-j2k")
    args = parser.parse_args()
    threads = os.cpu_count()
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        parts = [p for p in args.parts.split(",") if p]
        tasks = sorted(set(args.tasks.split(",")) | set(parts))
        subprocess.run([sys.executable, str(ROOT / "scripts" / "totalsegmentator_fixture.py"), str(work / "results"),
                        "--tasks", ",".join(tasks)], check=True, capture_output=True)
        native, image = reference.series_to_nifti(args.series, work)
        whole_seconds = {}
        for dataset in sorted((work / "results").iterdir()):
            name = dataset.name.split("_")[0]
            if name.removeprefix("Dataset") not in args.tasks.split(","):
                continue
            model = work / f"model-{name}"
            _, import_seconds, _ = timed([BINARY, "import-nnunet", dataset, "--configuration", "3d_fullres",
                                          "--out", model, "--python", sys.executable])
            out = work / f"out-{name}"
            p, node_seconds, node_peak = timed([BINARY, "run", args.series, "--out", out, "--model", model], cwd=ROOT)
            report = json.loads(p.stdout)["series"][0]
            node_labels = np.fromfile(out / "series-001" / "labels.u8", np.uint8)
            nnunet_seconds, nnunet_peak = predictor(results_folder(dataset), image, work)
            nnunet_labels = reference.to_series_order(work / "case.nii.gz", native).ravel()
            whole_seconds[name.removeprefix("Dataset")] = nnunet_seconds
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
        if parts:
            summary.append(merged(parts, work, args.series, native, image, whole_seconds, threads))
    print(json.dumps(summary, indent=2))


def merged(parts, work: Path, series: Path, native: Path, image: Path, whole_seconds, threads):
    """The parts as one model behind the default model's stage 1, the six organs asked
    for: against nnUNetPredictor on the same box and on the whole image."""
    folders = [next((work / "results").glob(f"Dataset{p}_*")) for p in parts]
    model = work / "model-merged"
    _, import_seconds, _ = timed([BINARY, "import-nnunet", *folders, "--configuration", "3d_fullres",
                                  "--behind", ROOT / "onnx" / "abdomen-cascade",
                                  "--out", model, "--python", sys.executable])
    subset = "labels = [" + ", ".join(f'"{o}"' for o in ORGANS) + "]\n"
    config = work / "merged.toml"
    config.write_text(node_config(work / "merged-node", free_port(), 1, f'[model]\npath = "{model}"\n{subset}'))
    out = work / "out-merged"
    p, node_seconds, node_peak = timed([BINARY, "run", "--config", config, series, "--out", out, "--model", model],
                                       cwd=ROOT)
    report = json.loads(p.stdout)["series"][0]
    cascade = report["cascade"]
    node_labels = np.fromfile(out / "series-001" / "labels.u8", np.uint8)
    crop_work = work / "predictor-crop"
    crop_work.mkdir()
    nnunet_seconds, nnunet_peak = cropped_predictor(results_folder(folders[0]), image,
                                                    cascade["stage2_box"], crop_work)
    nnunet_labels = reference.to_series_order(crop_work / "case.nii.gz", native).ravel()
    values = [l["value"] for l in cascade["labels"] if l["name"] in ORGANS]
    keep = lambda labels: np.where(np.isin(labels, values), labels, 0)
    per_label = dice(keep(node_labels), keep(nnunet_labels))
    whole = whole_seconds.get(parts[0])
    row = {
        "model": "merged " + ",".join(parts) + " behind stage 1, " + ", ".join(ORGANS),
        "threads": threads, "import_seconds": round(import_seconds, 1),
        "node_seconds": round(node_seconds, 1),
        "node_inference_seconds": round((cascade["timings_ms"]["stage1_inference"]
                                         + cascade["timings_ms"]["stage2_inference"]) / 1000, 1),
        "parts_skipped": cascade.get("parts_skipped", 0), "stage2_box": cascade["stage2_box"],
        "stage2_patches": cascade["stage2_patches_run"],
        "nnunet_on_box_seconds": round(nnunet_seconds, 1),
        "speedup_same_box": round(nnunet_seconds / node_seconds, 2),
        "nnunet_whole_image_estimate_seconds": round(whole * len(parts), 1) if whole else None,
        "speedup_against_whole_image": round(whole * len(parts) / node_seconds, 2) if whole else None,
        "node_peak_mib": round(node_peak), "nnunet_peak_mib": round(nnunet_peak),
        "labels_compared": len(per_label),
        "min_dice": min(per_label.values()) if per_label else None,
    }
    print(f"merged {','.join(parts)}: segnode run {node_seconds:.1f} s ({row['stage2_patches']} patches, "
          f"{row['parts_skipped']} parts skipped, peak {row['node_peak_mib']} MiB); nnUNetPredictor on the same box "
          f"{nnunet_seconds:.1f} s (peak {row['nnunet_peak_mib']} MiB), {row['speedup_same_box']}x; on the whole "
          f"image (estimate) {row['nnunet_whole_image_estimate_seconds']} s, {row['speedup_against_whole_image']}x; "
          f"Dice min {row['min_dice']} over {len(per_label)} organs", flush=True)
    serve_work = work / "serve-merged"
    serve_work.mkdir()
    row["serve"] = served(model, series, serve_work, set(ORGANS), subset)
    print(f"  served to storescp: {row['serve']}", flush=True)
    return row


if __name__ == "__main__":
    main()
