"""nnU-Net's own predictions of a DICOM series, as the node's parity test compares them.

The series is read with SimpleITK, written as NIfTI and reoriented to RAS (as
TotalSegmentator prepares its input: the frame the model was trained in), then
`nnUNetPredictor` labels it; the label map goes back to the series' own voxel order
(z ascending along the slice normal, rows, columns: the order of `segnode run`'s
`labels.u8`). For each variant (one fold or two, mirroring on or off) it writes
`OUT/nnunet-<folds>-<mirror>.u8.gz` and the seconds nnU-Net took in `OUT/timings.json`.

    .venv-nnunet/bin/python training/nnunet/reference.py [--series DIR] [--out DIR]
"""

import argparse
import gzip
import json
import os
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATA = Path(os.environ.get("SEGNODE_DATA", ROOT.parent / "shared" / "data"))
VARIANTS = [((0,), False), ((0,), True), ((0, 1), False), ((0, 1), True)]


def variant_name(folds, mirroring):
    return f"nnunet-{'f' + ''.join(map(str, folds))}-{'mirror' if mirroring else 'nomirror'}"


def series_to_nifti(series: Path, work: Path):
    """The series as NIfTI in its own voxel order, and reoriented to RAS."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    image = reader.Execute()
    native = work / "native.nii.gz"
    sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32), str(native))
    ras = nib.as_closest_canonical(nib.load(native))
    path = work / "case_0000.nii.gz"
    nib.save(ras, path)
    return native, path


def to_series_order(seg_path: Path, native: Path) -> np.ndarray:
    """A label map on the RAS grid back in the series' voxel order, as (z, y, x)."""
    seg = nib.load(seg_path)
    original = nib.load(native)
    transform = nib.orientations.ornt_transform(nib.io_orientation(seg.affine),
                                                nib.io_orientation(original.affine))
    data = nib.orientations.apply_orientation(np.asarray(seg.dataobj), transform)
    return np.ascontiguousarray(data.transpose(2, 1, 0)).astype(np.uint8)


def predict(model: Path, folds, mirroring, image: Path, out_dir: Path, threads: int,
            checkpoint="checkpoint_final.pth") -> float:
    """Runs nnUNetPredictor on one image; returns its seconds (loading the model excluded)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    torch.set_num_threads(threads)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"),
                                verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), folds, checkpoint)
    started = time.perf_counter()
    predictor.predict_from_files([[str(image)]], [str(out_dir / "case")], save_probabilities=False,
                                 overwrite=True, num_processes_preprocessing=1,
                                 num_processes_segmentation_export=1)
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=HERE / "model")
    parser.add_argument("--series", type=Path, default=DATA / "ct-abdomen-j2k")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "nnunet")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint", default="checkpoint_final.pth")
    parser.add_argument("--only", help="one variant, e.g. nnunet-f0-nomirror")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    timings = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        native, image = series_to_nifti(args.series, work)
        for folds, mirroring in VARIANTS:
            name = variant_name(folds, mirroring)
            if args.only and name != args.only:
                continue
            seconds = predict(args.model, folds, mirroring, image, work, args.threads, args.checkpoint)
            timings[name] = round(seconds, 2)
            labels = to_series_order(work / "case.nii.gz", native)
            with open(args.out / f"{name}.u8.gz", "wb") as raw, \
                    gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
                f.write(labels.tobytes())
            counts = {int(v): int(c) for v, c in zip(*np.unique(labels, return_counts=True))}
            print(name, labels.shape, counts, f"{timings[name]} s", flush=True)
    (args.out / "timings.json").write_text(json.dumps(
        {"series": args.series.name, "threads": args.threads, "seconds": timings}, indent=2) + "\n")


if __name__ == "__main__":
    main()
