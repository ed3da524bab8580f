#!/usr/bin/env python3
"""Volume assembly: segnode vs dcm2niix, SimpleITK ImageSeriesReader and pydicom+numpy on
the same 300-slice 512x512 series, uncompressed and JPEG 2000 Lossless, in one run.

Each tool reads the folder and builds the whole volume; wall time and peak resident
memory (GNU time) are measured per run, best of ROUNDS. dcm2niix also writes its
NIfTI (uncompressed, to a tmpfs-backed folder when available): that is its job and the
write is part of its time. segnode runs `segnode inspect`, which assembles the HU
float32 volume and computes its statistics. Files are read once before timing so that
all tools read from the page cache.

Run from the project root: .venv/bin/python benches/volume.py
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PY = sys.executable
ROUNDS = 3
DATA = ROOT / "target" / "bench-data"

SITK = """
import sys, SimpleITK as sitk
r = sitk.ImageSeriesReader()
r.SetFileNames(r.GetGDCMSeriesFileNames(sys.argv[1]))
a = sitk.GetArrayFromImage(r.Execute())
print(a.shape)
"""

PYDICOM = """
import sys, pathlib, numpy as np, pydicom
files = sorted(pathlib.Path(sys.argv[1]).iterdir())
s = [pydicom.dcmread(f) for f in files]
o = np.array(s[0].ImageOrientationPatient, dtype=float)
n = np.cross(o[:3], o[3:])
s.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, dtype=float), n)))
v = np.empty((len(s), s[0].Rows, s[0].Columns), dtype=np.float32)
for i, d in enumerate(s):
    v[i] = d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept)
print(v.shape)
"""


def timed(cmd: list) -> tuple[float, int]:
    """(seconds, peak RSS in MiB) of one run under GNU time."""
    out = subprocess.run(["/usr/bin/time", "-f", "%e %M", *map(str, cmd)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if out.returncode != 0:
        sys.exit(f"{cmd[0]} failed: {out.stderr[-2000:]}")
    seconds, kib = out.stderr.strip().splitlines()[-1].split()
    return float(seconds), int(kib) // 1024


def ensure_series() -> dict:
    raw = DATA / "ct300-uncompressed"
    if not (raw / "CT0299.dcm").exists():
        subprocess.run([PY, ROOT / "scripts" / "make_series.py", raw], check=True)
    j2k = DATA / "ct300-j2k"
    if not (j2k / "CT0299.dcm").exists():
        j2k.mkdir(parents=True, exist_ok=True)
        for f in sorted(raw.glob("*.dcm")):
            subprocess.run(["gdcmconv", "--j2k", f, j2k / f.name], check=True)
    return {"uncompressed": raw, "JPEG 2000 lossless": j2k}


def main() -> None:
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    segnode = ROOT / "target" / "release" / "segnode"
    scratch = pathlib.Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    results = {}
    for label, folder in ensure_series().items():
        for f in folder.iterdir():
            f.read_bytes()
        n = len(list(folder.iterdir()))
        tools = {
            "segnode": [segnode, "inspect", "--json", folder],
            "dcm2niix": ["dcm2niix", "-z", "n", "-o", scratch, "-f", "out", folder],
            "SimpleITK": [PY, "-c", SITK, folder],
            "pydicom+numpy": [PY, "-c", PYDICOM, folder],
        }
        for tool, cmd in tools.items():
            runs = []
            for _ in range(ROUNDS):
                runs.append(timed(cmd))
                for p in scratch.iterdir():
                    p.unlink()
            seconds = min(r[0] for r in runs)
            peak = max(r[1] for r in runs)
            results[(label, tool)] = (seconds, peak)
        volume_mib = n * 512 * 512 * 4 / 2**20
        print(f"\n{label}: {n} slices 512x512, float32 volume {volume_mib:.0f} MiB, best of {ROUNDS}")
        anchor = results[(label, "dcm2niix")][0]
        for tool in tools:
            s, peak = results[(label, tool)]
            print(f"  {tool:14s} {s:6.2f} s  {n / s:6.0f} slices/s  speed vs dcm2niix {anchor / s:5.2f}x"
                  f"  peak {peak:5d} MiB ({peak / volume_mib:.2f}x volume)")
    shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps({f"{k[0]} / {k[1]}": {"seconds": v[0], "peak_mib": v[1]} for k, v in results.items()}))


if __name__ == "__main__":
    main()
