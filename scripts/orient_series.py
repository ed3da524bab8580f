#!/usr/bin/env python3
"""The same patient written in other acquisition layouts, and the check that label maps
of the layouts agree once mapped back to patient space.

    orient_series.py write SERIES_DIR OUT_DIR [LAYOUT ...]
        Writes OUT_DIR/<layout>/ for each layout (default: feet_first prone transposed),
        and OUT_DIR/layouts.json with each layout's frame letters. Every voxel keeps its
        patient coordinates: only Image Orientation/Position, the pixel order and the
        UIDs (a new series per layout, same study and Frame of Reference) change.
        Pixel data are written uncompressed (Explicit VR Little Endian), same HU.
    orient_series.py compare LABELS_A FRAME_A LABELS_B FRAME_B
        Maps two label maps (labels.u8 with its labels.json beside it) into one frame and
        prints the voxels that differ; exit status 1 unless they are identical.

Frames are three letters, the patient direction each array axis (z, y, x) grows
towards, as in the model manifest (scripts/reference_cascade.py).
"""

import copy
import hashlib
import json
import pathlib
import sys

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from reference_cascade import frame_order, series_frame, to_frame  # noqa: E402

# Image Orientation (Patient) and Patient Position of each layout.
LAYOUTS = {
    "feet_first": ([-1, 0, 0, 0, 1, 0], "FFS"),
    "prone": ([-1, 0, 0, 0, -1, 0], "HFP"),
    "transposed": ([0, 1, 0, 1, 0, 0], "HFS"),
    "decubitus": ([0, -1, 0, 1, 0, 0], "HFDR"),
    "coronal": ([1, 0, 0, 0, 0, -1], "HFS"),
}
UNIT = {"R": (0, -1), "L": (0, 1), "A": (1, -1), "P": (1, 1), "I": (2, -1), "S": (2, 1)}


def uid(*parts):
    return "2.25." + str(int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:16], "big"))


def load(series):
    slices = [pydicom.dcmread(p) for p in sorted(series.iterdir()) if p.is_file()]
    o = np.array(slices[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(o[:3], o[3:])
    slices.sort(key=lambda s: float(np.dot(np.array(s.ImagePositionPatient, dtype=float), normal)))
    for s in slices:
        assert float(s.RescaleSlope) == float(slices[0].RescaleSlope)
        assert float(s.RescaleIntercept) == float(slices[0].RescaleIntercept)
    raw = np.stack([s.pixel_array.astype(np.int32) for s in slices])
    along = [float(np.dot(np.array(s.ImagePositionPatient, dtype=float), normal)) for s in slices]
    spacing = [(along[-1] - along[0]) / (len(along) - 1), *map(float, slices[0].PixelSpacing)]
    frame = series_frame(slices[0].ImageOrientationPatient)
    return slices, raw, spacing, frame, np.array(slices[0].ImagePositionPatient, dtype=float)


def patient_vector(letter):
    axis, sign = UNIT[letter]
    v = np.zeros(3)
    v[axis] = sign
    return v


def write(series, out, layouts):
    slices, raw, spacing, source, origin = load(series)
    out.mkdir(parents=True, exist_ok=True)
    frames = {}
    for name in layouts:
        orientation, position = LAYOUTS[name]
        target = series_frame(orientation)
        frames[name] = target
        order = frame_order(source, target)
        data = to_frame(raw, source, target)
        sp = [spacing[i] for i in order]
        # Patient position of the new voxel (0, 0, 0): the source voxel it came from.
        index = np.zeros(3)
        for m, t in enumerate(target):
            a = order[m]
            if source[a] != t:
                index[a] = raw.shape[a] - 1
        src_axes = [patient_vector(l) for l in source]
        corner = origin + sum(index[a] * spacing[a] * src_axes[a] for a in range(3))
        normal = patient_vector(target[0])
        series_uid = uid(str(slices[0].SeriesInstanceUID), name)
        folder = out / name
        folder.mkdir(exist_ok=True)
        template = copy.deepcopy(slices[0])
        description = f"{template.get('SeriesDescription', '')} ({name})".strip()
        for tag in ("PixelData", "SliceLocation", "SmallestImagePixelValue", "LargestImagePixelValue"):
            if tag in template:
                delattr(template, tag)
        for k in range(data.shape[0]):
            ds = copy.deepcopy(template)
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = uid(series_uid, str(k))
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.SeriesDescription = description
            ds.SeriesNumber = 900 + list(LAYOUTS).index(name)
            ds.InstanceNumber = k + 1
            ds.PatientPosition = position
            ds.ImageOrientationPatient = [str(v) for v in orientation]
            ds.ImagePositionPatient = [f"{v:.6f}" for v in corner + k * sp[0] * normal]
            ds.PixelSpacing = [f"{sp[1]:.10g}", f"{sp[2]:.10g}"]
            ds.Rows, ds.Columns = data.shape[1], data.shape[2]
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
            ds.PixelRepresentation = 0 if raw.min() >= 0 else 1
            dtype = np.uint16 if ds.PixelRepresentation == 0 else np.int16
            ds.PixelData = np.ascontiguousarray(data[k]).astype(dtype).tobytes()
            ds["PixelData"].VR = "OW"
            ds.save_as(folder / f"slice{k:04d}.dcm", enforce_file_format=True)
    (out / "layouts.json").write_text(json.dumps({"source": source, "layouts": frames}, indent=2) + "\n")
    print(json.dumps({"source": source, "layouts": frames}))


def read_labels(path):
    meta = json.loads((path.parent / "labels.json").read_text())
    return np.fromfile(path, dtype=np.uint8).reshape(meta["shape_zyx"])


def compare(a, frame_a, b, frame_b):
    la = read_labels(a)
    lb = to_frame(read_labels(b), frame_b, frame_a)
    report = {"shape": list(la.shape), "shape_mapped": list(lb.shape)}
    same = la.shape == lb.shape and bool((la == lb).all())
    report["identical"] = same
    report["differing_voxels"] = int((la != lb).sum()) if la.shape == lb.shape else None
    report["labelled_voxels"] = int((la > 0).sum())
    print(json.dumps(report))
    sys.exit(0 if same else 1)


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("write", "compare"):
        sys.exit(__doc__)
    if sys.argv[1] == "write":
        layouts = sys.argv[4:] or ["feet_first", "prone", "transposed"]
        write(pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]), layouts)
    else:
        a, fa, b, fb = sys.argv[2:6]
        compare(pathlib.Path(a), fa, pathlib.Path(b), fb)


if __name__ == "__main__":
    main()
