#!/usr/bin/env python3
"""Writes an axial CT series for benchmarks: N slices of SIZE x SIZE 16-bit pixels,
Explicit VR Little Endian, CT Image Storage. By default a synthetic phantom (an
ellipse of soft tissue with noise, 1 mm spacing); with --from-nifti, a real CT volume
(e.g. ../shared/data/train-ct-3mm/ct.nii.gz) resampled to SLICES x SIZE x SIZE over its
own field of view, so that speed can be measured on real anatomy.
Usage: make_series.py OUT_DIR [--slices 300] [--size 512] [--from-nifti CT.nii.gz]"""

import argparse
import pathlib

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def write_slice(path, uids, k, hu, spacing, origin, patient, description, signed=False):
    """Slice `k` of an axial CT series (Explicit VR Little Endian): the HU plane `hu` at
    `origin` + k slices along +z (spacing z, y, x in mm); `uids` = (study, series, frame
    of reference), `patient` = (ID, name, accession). Stored as 12-bit unsigned with
    intercept -1024 as scanners write it, or `signed`, 16-bit HU."""
    study, series, frame = uids
    if signed:
        pixels, bits, intercept = np.clip(np.rint(hu), -32768, 32767).astype(np.int16), (16, 16, 15, 1), 0
    else:
        pixels, bits, intercept = np.clip(hu + 1024, 0, 4095).astype(np.uint16), (16, 12, 11, 0), -1024
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = f"{series}.{k + 1}"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
    ds.Modality = "CT"
    ds.PatientID, ds.PatientName, ds.AccessionNumber = patient
    ds.PatientBirthDate, ds.PatientSex, ds.ReferringPhysicianName = "19700101", "O", ""
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20261126", "120000", "1"
    ds.SeriesNumber, ds.Manufacturer = 1, "segnode-bench"
    ds.SeriesDescription = description
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = k + 1
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [round(origin[0], 4), round(origin[1], 4), round(origin[2] + k * spacing[0], 4)]
    ds.SliceThickness, ds.PixelSpacing = round(spacing[0], 4), [round(spacing[1], 4), round(spacing[2], 4)]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits
    ds.RescaleIntercept, ds.RescaleSlope = intercept, 1
    ds.PixelData = pixels.tobytes()
    ds.save_as(ds.filename, enforce_file_format=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=pathlib.Path)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--from-nifti", type=pathlib.Path)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    # 2.25 UUID-derived UIDs leave room for the ".N" instance suffix within 64 chars.
    study, series, frame = generate_uid(None), generate_uid(None), generate_uid(None)
    n = args.size
    if args.from_nifti:
        import nibabel as nib
        from scipy import ndimage
        img = nib.as_closest_canonical(nib.load(args.from_nifti))
        ras = np.asarray(img.dataobj, dtype=np.float32)
        # To (z, y, x) in DICOM LPS: z inferior->superior, y anterior->posterior, x right->left.
        vol = np.transpose(ras, (2, 1, 0))[:, ::-1, ::-1]
        zooms = img.header.get_zooms()[::-1]
        extent = [vol.shape[i] * zooms[i] for i in range(3)]
        volume = ndimage.zoom(vol, (args.slices / vol.shape[0], n / vol.shape[1], n / vol.shape[2]), order=1)
        spacing = [extent[0] / args.slices, extent[1] / n, extent[2] / n]
    else:
        y, x = np.mgrid[0:n, 0:n]
        body = ((x - n / 2) / (0.45 * n)) ** 2 + ((y - n / 2) / (0.35 * n)) ** 2 < 1
        spacing = [1.0, 1.0, 1.0]
    for i in range(args.slices):
        if args.from_nifti:
            hu = volume[i]
        else:
            hu = np.where(body, 40.0, -1000.0) + rng.normal(0, 10, (n, n))
        write_slice(args.out / f"CT{i:04d}.dcm", (study, series, frame), i, hu, spacing,
                    [-n / 2 * spacing[2], -n / 2 * spacing[1], 0.0], ("BENCH-0001", "Bench^Phantom", "BENCH1"),
                    "Benchmark phantom")


if __name__ == "__main__":
    main()
