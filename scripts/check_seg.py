#!/usr/bin/env python3
"""Independent check of a segnode SEG: reads it with highdicom, maps every frame back
onto the source series' slices by Image Position (Patient), and compares the result
with the node's label map voxel for voxel; with --dcmqi, does the same with dcmqi's
segimage2itkimage (BINARY and LABELMAP). Prints a JSON report; exit status 1 on any difference.

Usage: check_seg.py SEG.dcm SERIES_DIR LABELS.u8 [--dcmqi]
"""

import json
import pathlib
import subprocess
import sys
import tempfile

import highdicom as hd
import numpy as np
import pydicom


def source_positions(series):
    slices = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(series.iterdir()) if p.is_file()]
    o = np.array(slices[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(o[:3], o[3:])
    slices.sort(key=lambda s: float(np.dot(np.array(s.ImagePositionPatient, dtype=float), normal)))
    return [np.array(s.ImagePositionPatient, dtype=float) for s in slices], slices[0]


def segment_codes(segment):
    """A segment's type, its modifier and its anatomic region with the region's
    modifier, as [scheme, value] pairs (None where absent)."""
    def pair(item):
        return [item.CodingSchemeDesignator, item.CodeValue]

    def nested(sequence, modifier):
        if sequence not in segment:
            return None, None
        item = segment[sequence][0]
        inner = item[modifier][0] if modifier in item else None
        return pair(item), pair(inner) if inner is not None else None

    kind, kind_modifier = nested("SegmentedPropertyTypeCodeSequence", "SegmentedPropertyTypeModifierCodeSequence")
    region, region_modifier = nested("AnatomicRegionSequence", "AnatomicRegionModifierSequence")
    return {"type": kind, "type_modifier": kind_modifier, "region": region, "region_modifier": region_modifier}


def main():
    seg_path, series, labels_path = map(pathlib.Path, sys.argv[1:4])
    use_dcmqi = "--dcmqi" in sys.argv
    positions, first = source_positions(series)
    expected = np.fromfile(labels_path, dtype=np.uint8).reshape(len(positions), first.Rows, first.Columns)
    seg = hd.seg.segread(seg_path)
    seg_type = seg.SegmentationType
    # Segment number -> label value: segments are numbered in ascending label value.
    values = sorted(int(v) for v in np.unique(expected) if v != 0)
    number_to_value = {i + 1: v for i, v in enumerate(values)}
    got = np.zeros_like(expected)
    pixels = seg.pixel_array
    if pixels.ndim == 2:
        pixels = pixels[None]
    for i, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        pos = np.array(frame.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        z = min(range(len(positions)), key=lambda k: np.abs(positions[k] - pos).sum())
        assert np.abs(positions[z] - pos).sum() < 1e-3, f"frame {i} at {pos} matches no source slice"
        if seg_type == "BINARY":
            number = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            got[z][pixels[i] > 0] = number_to_value[number]
        else:
            for number, value in number_to_value.items():
                got[z][pixels[i] == number] = value
    report = {
        "segmentation_type": seg_type,
        "segments": [s.SegmentLabel for s in seg.SegmentSequence],
        "segment_codes": [segment_codes(s) for s in seg.SegmentSequence],
        "frames": int(seg.NumberOfFrames),
        "highdicom_equal": bool((got == expected).all()),
        "highdicom_differing_voxels": int((got != expected).sum()),
    }
    ok = report["highdicom_equal"]
    if use_dcmqi:
        import SimpleITK as sitk
        out = pathlib.Path(tempfile.mkdtemp())
        tool = pathlib.Path(sys.executable).parent / "segimage2itkimage"
        p = subprocess.run([str(tool), "--inputDICOM", str(seg_path), "--outputDirectory", str(out),
                            "--outputType", "nrrd"], capture_output=True, text=True)
        report["dcmqi_exit"] = p.returncode
        meta = json.loads((out / "meta.json").read_text()) if (out / "meta.json").exists() else {}
        dq = np.zeros_like(expected)
        for f in sorted(out.glob("*.nrrd")):
            number = int(f.stem.split("-")[-1]) if f.stem.split("-")[-1].isdigit() else None
            image = sitk.ReadImage(str(f))
            arr = sitk.GetArrayFromImage(image)
            # dcmqi writes the volume on the SEG's frame geometry: place each of its
            # slices on the source slice at the same position.
            origin = np.array(image.GetOrigin())
            slice_axis = np.array(image.GetDirection()).reshape(3, 3)[:, 2] * image.GetSpacing()[2]
            zs = []
            for k in range(arr.shape[0]):
                pos = origin + k * slice_axis
                z = min(range(len(positions)), key=lambda j: np.abs(positions[j] - pos).sum())
                assert np.abs(positions[z] - pos).sum() < 1e-2, f"dcmqi slice {k} at {pos} matches no source slice"
                zs.append(z)
            for k, z in enumerate(zs):
                if seg_type == "LABELMAP":
                    for n, value in number_to_value.items():
                        dq[z][arr[k] == n] = value
                else:
                    dq[z][arr[k] > 0] = number_to_value[number if number is not None else 1]
        report["dcmqi_equal"] = bool((dq == expected).all())
        report["dcmqi_differing_voxels"] = int((dq != expected).sum())
        report["dcmqi_segments"] = len(meta.get("segmentAttributes", []))
        ok = ok and p.returncode == 0 and report["dcmqi_equal"]
    print(json.dumps(report))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
