#!/usr/bin/env python3
"""SEG encoding: segnode vs highdicom, BINARY, the same label map (three segments) of a
300-slice 512x512 series, in one run. Each side's time covers building and writing the
SEG; memory is each encoder's own peak (peak resident set reset just before encoding
via /proc/self/clear_refs, minus the resident set at that moment).

Usage (project root): .venv/bin/python benches/seg.py [SERIES_DIR]
"""

import json
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent

HIGHDICOM = r"""
import json, pathlib, sys, time
import numpy as np, pydicom, highdicom as hd
from pydicom.sr.codedict import codes

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])

series, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
sources = [pydicom.dcmread(p) for p in sorted(series.iterdir())]
o = np.array(sources[0].ImageOrientationPatient, dtype=float)
n = np.cross(o[:3], o[3:])
sources.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, dtype=float), n)))
labels = np.fromfile(out / "labels.u8", dtype=np.uint8).reshape(len(sources), sources[0].Rows, sources[0].Columns)
algorithm = hd.AlgorithmIdentificationSequence(name="bench", version="1", family=codes.cid7162.ArtificialIntelligence)
descriptions = [
    hd.seg.SegmentDescription(segment_number=i + 1, segment_label=name,
        segmented_property_category=codes.cid7150.AnatomicalStructure,
        segmented_property_type=code, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm)
    for i, (name, code) in enumerate([("liver", codes.SCT.Liver), ("spleen", codes.SCT.Spleen), ("pancreas", codes.SCT.Pancreas)])
]
open("/proc/self/clear_refs", "w").write("5")
before = rss("VmRSS:")
t = time.perf_counter()
seg = hd.seg.Segmentation(
    source_images=sources, pixel_array=labels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
    segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=9001,
    sop_instance_uid=hd.UID(), instance_number=1, manufacturer="bench", manufacturer_model_name="bench",
    software_versions="1", device_serial_number="1")
seg.save_as(out / "highdicom.dcm")
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "frames": int(seg.NumberOfFrames), "bytes": (out / "highdicom.dcm").stat().st_size,
                  "peak_extra_mib": (rss("VmHWM:") - before) / 1024}))
"""


def main():
    series = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target" / "bench-data" / "ct300-uncompressed"
    if not (series / "CT0299.dcm").exists() and len(sys.argv) <= 1:
        subprocess.run([sys.executable, ROOT / "scripts" / "make_series.py", series], check=True)
    out = pathlib.Path(tempfile.mkdtemp())
    node = subprocess.run(["cargo", "bench", "--quiet", "--bench", "seg", "--", str(series), str(out)],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    node = json.loads(node.stdout.strip().splitlines()[-1])
    hd_run = subprocess.run([sys.executable, "-c", HIGHDICOM, str(series), str(out)], capture_output=True, text=True)
    if hd_run.returncode != 0:
        sys.exit(hd_run.stderr[-3000:])
    hdr = json.loads(hd_run.stdout.strip().splitlines()[-1])
    print(f"BINARY SEG, 3 segments, {series.name}")
    print(f"  segnode   {node['seconds']:7.3f} s  {node['frames']} frames  {node['bytes'] / 2**20:6.1f} MiB  encoder peak +{node['peak_extra_mib']:.0f} MiB")
    print(f"  highdicom {hdr['seconds']:7.3f} s  {hdr['frames']} frames  {hdr['bytes'] / 2**20:6.1f} MiB  encoder peak +{hdr['peak_extra_mib']:.0f} MiB")
    print(f"  speed-up {hdr['seconds'] / node['seconds']:.1f}x, memory {hdr['peak_extra_mib'] / max(node['peak_extra_mib'], 0.1):.1f}x less")
    ok = subprocess.run([sys.executable, ROOT / "scripts" / "check_seg.py", out / "seg.dcm", series, out / "labels.u8"],
                        capture_output=True, text=True)
    print(f"  node SEG reads back in highdicom: {ok.stdout.strip()}")


if __name__ == "__main__":
    main()
