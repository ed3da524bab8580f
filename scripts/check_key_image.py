#!/usr/bin/env python3
"""Independent check of a key image (its DICOM file, or a rendering such as Orthanc's
/instances/{id}/preview PNG): compares its coloured pixels with the boundary of the node's label map on the
slice it shows. A boundary pixel is a labelled pixel with a 4-neighbour of another
value (or the image edge); the legend's rows (top and bottom bands) are left out: the
top eighth of the image, or with LEGEND_LINES, the rows that many lines of the legend
take (4 + 10 x columns/256 each).
Prints a JSON report.

Usage: check_key_image.py IMAGE.png|IMAGE.dcm LABELS.u8 LABELS.json SLICE [LEGEND_LINES]
"""

import json
import sys

import numpy as np
from PIL import Image


def main():
    png, labels_path, meta_path, z = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    shape = json.load(open(meta_path))["shape_zyx"]
    labels = np.fromfile(labels_path, dtype=np.uint8).reshape(shape)[z]
    if png.endswith(".dcm"):
        import pydicom
        image = pydicom.dcmread(png).pixel_array.astype(int)
    else:
        image = np.asarray(Image.open(png).convert("RGB")).astype(int)
    rows, columns = labels.shape
    padded = np.pad(labels, 1, constant_values=255)
    centre = padded[1:-1, 1:-1]
    boundary = (labels != 0) & (
        (padded[:-2, 1:-1] != centre) | (padded[2:, 1:-1] != centre)
        | (padded[1:-1, :-2] != centre) | (padded[1:-1, 2:] != centre)
    )
    coloured = (image[..., 0] != image[..., 1]) | (image[..., 1] != image[..., 2])
    body = np.zeros_like(boundary)
    top = rows // 8
    if len(sys.argv) > 5:
        top = max(top, 4 + int(sys.argv[5]) * 10 * max(columns // 256, 1))
    body[top : rows - rows // 12, :] = True
    report = {
        "size": [int(image.shape[0]), int(image.shape[1])],
        "boundary_pixels": int((boundary & body).sum()),
        "boundary_coloured": float(coloured[boundary & body].mean()) if (boundary & body).any() else 0.0,
        "other_coloured": float(coloured[~boundary & body].mean()),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
