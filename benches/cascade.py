#!/usr/bin/env python3
"""Cascade benchmark, in one run, both cores used:

1. time per stage and the stage-2 voxel fraction on a 300-slice 512x512 series, the
   cascade's total against running the fine stage over the whole volume (`segnode run
   --stage2-everywhere`, the saving the cascade exists for), and peak memory (GNU time);
2. the same anatomy written as 100, 300, 600 and 1,200 slices: the cascade's total, its
   two inference stages and everything else (resampling, region, post-processing, back
   to the native grid), which must not grow with the slice count.

Every figure is the median of three runs (in 1., of three cascade/fine-stage pairs).

Usage (project root): .venv/bin/python benches/cascade.py [MODEL_DIR]
Series: the training volume resampled by scripts/make_series.py --from-nifti (real
anatomy; for speed only, not accuracy), made once under target/bench-data/.
"""

import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


RUNS = 3


def median_run(binary, model, series):
    """The run with the median cascade total of RUNS runs (one run is at the mercy of
    whatever else the two cores do)."""
    return sorted((run(binary, model, series, False) for _ in range(RUNS)), key=total)[RUNS // 2]


def total(row):
    """The cascade's own total (ms) of a run's (seconds, MiB, report)."""
    return row[2]["cascade"]["timings_ms"]["total"]


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


def real_anatomy(slices):
    """The training volume written as `slices` 512x512 slices (made once)."""
    series = ROOT / "target" / "bench-data" / f"ct{slices}-real"
    if not (series / f"CT{slices - 1:04d}.dcm").exists():
        subprocess.run([sys.executable, ROOT / "scripts" / "make_series.py", series, "--slices", str(slices),
                        "--from-nifti", ROOT.parent / "shared" / "data" / "train-ct-3mm" / "ct.nii.gz"], check=True)
    return series


def slice_counts(binary, model):
    print("same anatomy, more slices: the cascade's total and what is not inference")
    print("  slices   total ms   stage 1 + stage 2 inference ms   everything else ms (share)   volume ms")
    for slices in (100, 300, 600, 1200):
        series = real_anatomy(slices)
        _, _, report = median_run(binary, model, series)
        t = report["cascade"]["timings_ms"]
        inference = t["stage1_inference"] + t["stage2_inference"]
        other = t["total"] - inference
        print(f"  {slices:6d}   {t['total']:8.0f}   {inference:30.0f}   {other:8.0f} ({other / t['total']:5.1%})"
              f"   {report['volume_ms']:9d}   {json.dumps(t)}")
        if slices > 300:  # 0.3-0.6 GB each: not kept
            shutil.rmtree(series)


def main():
    model = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "onnx" / "abdomen-cascade"
    series = real_anatomy(300)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    binary = ROOT / "target" / "release" / "segnode"
    # Cascade and fine stage alternate, so that each pair sees the same machine; the
    # pair with the median ratio of cascade totals is reported.
    pairs = sorted(((run(binary, model, series, False), run(binary, model, series, True)) for _ in range(RUNS)),
                   key=lambda p: total(p[0]) / total(p[1]))
    rows = dict(zip(("cascade", "fine stage everywhere"), pairs[RUNS // 2]))
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
          f"{total(rows['fine stage everywhere']) / total(rows['cascade']):.2f}x (inference), "
          f"{rows['fine stage everywhere'][0] / rows['cascade'][0]:.2f}x (wall); the cascade takes "
          f"{total(rows['cascade']) / total(rows['fine stage everywhere']):.2f}x "
          f"the fine stage's time")
    slice_counts(binary, model)


if __name__ == "__main__":
    main()
