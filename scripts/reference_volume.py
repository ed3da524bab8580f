#!/usr/bin/env python3
"""Independent reference for volume assembly: reads a folder of one CT series with
pydicom (pylibjpeg-openjpeg for JPEG 2000), orders slices by position along the slice
normal, applies each slice's Rescale Slope/Intercept, and writes the HU volume as raw
little-endian float32 (z, y, x). Usage: reference_volume.py DIR OUT.f32"""

import pathlib
import sys

import numpy as np
import pydicom


def main() -> None:
    folder, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    slices = [pydicom.dcmread(p) for p in sorted(folder.iterdir()) if p.is_file()]
    o = np.array(slices[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(o[:3], o[3:])
    slices.sort(key=lambda s: float(np.dot(np.array(s.ImagePositionPatient, dtype=float), normal)))
    volume = np.stack([
        s.pixel_array.astype(np.float64) * float(getattr(s, "RescaleSlope", 1))
        + float(getattr(s, "RescaleIntercept", 0))
        for s in slices
    ]).astype("<f4")
    volume.tofile(out)


if __name__ == "__main__":
    main()
