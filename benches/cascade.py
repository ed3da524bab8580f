#!/usr/bin/env python3
"""Cascade benchmark: time per stage and the stage-2 voxel fraction on a 300-slice
512x512 series, the cascade's total against running the fine stage over the whole
volume (`segnode run --stage2-everywhere`, the saving the cascade exists for), both
cores used, and peak memory (GNU time) of each, in one run.

Usage (project root): .venv/bin/python benches/cascade.py [MODEL_DIR] [SERIES_DIR]
Defaults: the default model, a 300-slice 512x512 series of real anatomy (the training
volume resampled by scripts/make_series.py --from-nifti; for speed only, not accuracy).
"""

import json
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run(binary, model, series, everywhere):
    out = tempfile.mkdtemp()
    cmd = ["/usr/bin/time", "-f", "%e %M", binary, "run", series, "--out", out, "--model", model]
    if everywhere:
        cmd.append("--stage2-everywhere")
    p = subprocess.run(list(map(str, cmd)), capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(p.stderr[-3000:])
    seconds, kib = p.stderr.strip().splitlines()[-1].split()
    report = json.loads(p.stdout)["series"][0]
    return float(seconds), int(kib) // 1024, report


def main():
    model = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "onnx" / "abdomen-cascade"
    series = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "target" / "bench-data" / "ct300-real"
    if not (series / "CT0299.dcm").exists() and len(sys.argv) <= 2:
        subprocess.run([sys.executable, ROOT / "scripts" / "make_series.py", series, "--from-nifti",
                        ROOT.parent / "shared" / "data" / "train-ct-3mm" / "ct.nii.gz"], check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    binary = ROOT / "target" / "release" / "segnode"
    rows = {}
    for label, everywhere in (("cascade", False), ("fine stage everywhere", True)):
        rows[label] = run(binary, model, series, everywhere)
    n = len(list(series.iterdir()))
    volume_mib = n * 512 * 512 * 4 / 2**20
    print(f"model {model.name}, series {series.name} ({n} slices), float32 volume {volume_mib:.0f} MiB")
    for label, (seconds, peak, report) in rows.items():
        c = report["cascade"]
        print(f"  {label:22s} wall {seconds:6.2f} s (volume {report['volume_ms']} ms)  peak {peak} MiB"
              f"  stage-2 region fraction {c['stage2_region_fraction']:.3f}"
              f"  patches {c['stage2_patches_run']}/{c['stage2_patches_total']}")
        print(f"  {'':22s} timings ms {json.dumps(c['timings_ms'])}")
    print(f"  cascade speed-up over the fine stage everywhere: "
          f"{rows['fine stage everywhere'][2]['cascade']['timings_ms']['total'] / rows['cascade'][2]['cascade']['timings_ms']['total']:.2f}x (inference), "
          f"{rows['fine stage everywhere'][0] / rows['cascade'][0]:.2f}x (wall)")


if __name__ == "__main__":
    main()
