#!/usr/bin/env python3
"""Independent reference implementation of the model manifest's semantics (numpy,
scipy.ndimage, onnxruntime), for parity checks of segnode's cascade.

Reads one CT series folder with pydicom, runs the cascade described by MODEL/model.toml
and writes the label map as raw uint8 (z, y, x) on the source grid.
Usage: reference_cascade.py SERIES_DIR MODEL_DIR OUT.u8

Semantics (as in segnode's src/cascade): grid-aligned resampling (voxel centres map
as (i + 0.5) * n_src / n_dst - 0.5, clamped; linear separable z, y, x; nearest via
floor((i + 0.5) * n_src / n_dst)); HU clipped to the window then normalised; sliding
window with the manifest's patch, overlap and blending, logits accumulated in
float32 in patch order, argmax (first maximum); stage-1 labels > 0 -> candidate,
nearest to the stage-2 grid, box-dilated, intersected with the body mask (threshold,
erosion, largest 6-connected component, dilation, hole filling); stage 2 only on
patches laid over the region's bounding box that touch the region, background outside
it; post-processing per label on the stage-2 grid; nearest back to the source grid.
The series is first brought into the model's frame (manifest `frame`: the patient
direction each array axis grows towards) by transposes and flips, and the label map
back into the series' own layout at the end.
"""

import itertools
import pathlib
import sys
import tomllib

import numpy as np
import onnxruntime as ort
import pydicom
from scipy import ndimage


def load_series(folder):
    slices = [pydicom.dcmread(p) for p in sorted(folder.iterdir()) if p.is_file()]
    o = np.array(slices[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(o[:3], o[3:])
    along = [float(np.dot(np.array(s.ImagePositionPatient, dtype=float), normal)) for s in slices]
    order = np.argsort(along, kind="stable")
    slices = [slices[i] for i in order]
    along = sorted(along)
    hu = np.stack([
        (s.pixel_array.astype(np.float64) * float(getattr(s, "RescaleSlope", 1)) + float(getattr(s, "RescaleIntercept", 0))).astype(np.float32)
        for s in slices
    ])
    dz = (along[-1] - along[0]) / (len(along) - 1)
    ps = [float(v) for v in slices[0].PixelSpacing]
    return hu, [dz, ps[0], ps[1]]


def target_shape(shape, spacing, target):
    return [max(1, int(round(shape[i] * spacing[i] / target[i]))) for i in range(3)]


def linear_taps(n_src, n_dst):
    c = np.clip((np.arange(n_dst) + 0.5) * n_src / n_dst - 0.5, 0, n_src - 1)
    i0 = np.floor(c).astype(int)
    i1 = np.minimum(i0 + 1, n_src - 1)
    return i0, i1, (c - i0).astype(np.float32)


def nearest_taps(n_src, n_dst):
    return np.minimum(np.floor((np.arange(n_dst) + 0.5) * n_src / n_dst).astype(int), n_src - 1)


def resample_linear(a, to):
    for axis in (0, 1, 2):
        if a.shape[axis] == to[axis]:
            continue
        i0, i1, w = linear_taps(a.shape[axis], to[axis])
        shape = [1, 1, 1]
        shape[axis] = -1
        w = w.reshape(shape)
        a = np.take(a, i0, axis=axis) * (np.float32(1) - w) + np.take(a, i1, axis=axis) * w
    return a.astype(np.float32)


def resample_nearest(a, to):
    for axis in (2, 1, 0):
        if a.shape[axis] != to[axis]:
            a = np.take(a, nearest_taps(a.shape[axis], to[axis]), axis=axis)
    return a


def normalize(a, window, mode):
    lo, hi = np.float32(window[0]), np.float32(window[1])
    a = np.clip(a, lo, hi)
    if mode == "window":
        offset, scale = float(lo + hi) / 2.0, float(hi - lo) / 2.0
    else:
        a64 = a.astype(np.float64)
        offset, scale = a64.mean(), max(a64.std(), 1e-6)
    offset, scale = np.float32(offset), np.float32(scale)
    return (a - offset) / scale, (lo - offset) / scale


def window_starts(n, p, step):
    if n <= p:
        return [0]
    starts = list(range(0, n - p, step))
    starts = [s for s in starts if s + p < n]
    return starts + [n - p]


def blend_weights(patch, mode):
    def axis(p):
        if mode == "constant":
            return np.ones(p)
        sigma, c = p / 8.0, (p - 1) / 2.0
        return np.exp(-((np.arange(p) - c) ** 2) / (2 * sigma * sigma))
    w = axis(patch[0])[:, None, None] * axis(patch[1])[None, :, None] * axis(patch[2])[None, None, :]
    return np.maximum(w.astype(np.float32), np.float32(1e-6))


def infer(session, stage, x, pad, region=None):
    patch = stage["patch"]
    padded = [max(x.shape[i], patch[i]) for i in range(3)]
    inp = np.full(padded, pad, dtype=np.float32)
    inp[: x.shape[0], : x.shape[1], : x.shape[2]] = x
    step = [max(1, int(np.floor(p * (1 - stage["overlap"])))) for p in patch]
    if region is not None:
        # Patches are laid over each 6-connected component's bounding box (at least a
        # patch long), in raster order, duplicates once.
        components, _ = ndimage.label(region, structure=SIX)
        found = set()
        for box in ndimage.find_objects(components):
            axes = []
            for i in range(3):
                length = max(box[i].stop - box[i].start, patch[i])
                first = min(box[i].start, padded[i] - length)
                axes.append([first + s for s in window_starts(length, patch[i], step[i])])
            found.update((z0, y0, x0) for z0 in axes[0] for y0 in axes[1] for x0 in axes[2])
        starts = sorted(found)
    else:
        starts = [(z0, y0, x0) for z0 in window_starts(padded[0], patch[0], step[0])
                  for y0 in window_starts(padded[1], patch[1], step[1])
                  for x0 in window_starts(padded[2], patch[2], step[2])]
    w = blend_weights(patch, stage["blending"])
    acc = None
    for z0, y0, x0 in starts:
        if region is not None and not region[z0:z0 + patch[0], y0:y0 + patch[1], x0:x0 + patch[2]].any():
            continue
        block = inp[z0:z0 + patch[0], y0:y0 + patch[1], x0:x0 + patch[2]][None, None]
        logits = session.run([stage["output"]], {stage["input"]: block})[0][0]
        if acc is None:
            acc = np.zeros((logits.shape[0], *padded), dtype=np.float32)
            covered = np.zeros(padded, dtype=bool)
        acc[:, z0:z0 + patch[0], y0:y0 + patch[1], x0:x0 + patch[2]] += logits * w
        covered[z0:z0 + patch[0], y0:y0 + patch[1], x0:x0 + patch[2]] = True
    labels = np.zeros(x.shape, dtype=np.uint8)
    if acc is None:
        return labels
    best = np.argmax(acc, axis=0)[: x.shape[0], : x.shape[1], : x.shape[2]].astype(np.uint8)
    keep = covered[: x.shape[0], : x.shape[1], : x.shape[2]]
    if region is not None:
        keep = keep & region
    labels[keep] = best[keep]
    return labels


SIX = ndimage.generate_binary_structure(3, 1)


def largest_component(mask):
    labelled, n = ndimage.label(mask, structure=SIX)
    if n == 0:
        return mask
    sizes = np.bincount(labelled.ravel())[1:]
    return labelled == (np.argmax(sizes) + 1)


def box(r):
    return np.ones((2 * r + 1,) * 3, dtype=bool)


def body_mask(hu, threshold):
    m = ndimage.binary_erosion(hu > threshold, structure=box(1), border_value=0)
    m = largest_component(m)
    m = ndimage.binary_dilation(m, structure=box(1), border_value=0)
    return ndimage.binary_fill_holes(m)


def run_cascade(hu, spacing, model_dir, raw=None):
    """The label map (uint8, hu's shape) the cascade in `model_dir` gives for `hu`
    (float32 HU, (z, y, x)) with voxel `spacing` (mm, z y x). If `raw` is a dict, the
    stage-2 argmax before post-processing, on the stage-2 grid, is left in raw["stage2"]
    and the stage-1 candidate, nearest on that grid, in raw["candidate"]."""
    manifest = tomllib.loads((model_dir / "model.toml").read_text())
    s1, s2, cascade = manifest["stage1"], manifest["stage2"], manifest["cascade"]

    def stage_spacing(stage):
        return stage["spacing_mm"] if "spacing_mm" in stage else [v * stage["downsample"] for v in spacing]

    def session(stage):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        return ort.InferenceSession(str(model_dir / stage["file"]), options, providers=["CPUExecutionProvider"])

    g1 = target_shape(hu.shape, spacing, stage_spacing(s1))
    g2 = target_shape(hu.shape, spacing, stage_spacing(s2))
    x1, pad1 = normalize(resample_linear(hu, g1), s1["hu_window"], s1["normalization"])
    candidate = infer(session(s1), s1, x1, pad1) > 0
    labels = np.zeros(hu.shape, dtype=np.uint8)
    if candidate.any():
        hu2 = resample_linear(hu, g2)
        r = cascade["dilation_voxels"]
        region = resample_nearest(candidate, g2)
        if raw is not None:
            raw["candidate"] = region.copy()
        if r > 0:
            region = ndimage.binary_dilation(region, structure=box(r), border_value=0)
        if cascade["body_mask"]:
            region &= body_mask(hu2, np.float32(cascade.get("body_threshold_hu", -500.0)))
        x2, pad2 = normalize(hu2, s2["hu_window"], s2["normalization"])
        labels = infer(session(s2), s2, x2, pad2, region)
        if raw is not None:
            raw["stage2"] = labels.copy()
        post = manifest.get("postprocess", {})
        for value in sorted(l["value"] for l in manifest["labels"]):
            mask = labels == value
            if not mask.any():
                continue
            if post.get("largest_component"):
                mask = largest_component(mask)
            if post.get("fill_holes"):
                mask = ndimage.binary_fill_holes(mask)
            labels[(labels == value) & ~mask] = 0
            labels[mask & (labels == 0)] = value
        labels = resample_nearest(labels, list(hu.shape))
    return labels.astype(np.uint8)


LETTERS = [("R", "L"), ("A", "P"), ("I", "S")]


def series_frame(orientation):
    """The frame letters of a series loaded by load_series (z along the normal, y along
    the column direction, x along the row direction), nearest axis-aligned."""
    o = np.array(orientation, dtype=float)
    along = [np.cross(o[:3], o[3:]), o[3:], o[:3]]
    best = max(itertools.permutations(range(3)), key=lambda p: sum(abs(along[a][p[a]]) for a in range(3)))
    return "".join(LETTERS[best[a]][int(along[a][best[a]] >= 0)] for a in range(3))


def patient_axis(letter):
    return next(i for i, pair in enumerate(LETTERS) if letter in pair)


def frame_order(source, target):
    """For each axis of frame `target`, the axis of frame `source` along the same patient axis."""
    return [[patient_axis(l) for l in source].index(patient_axis(t)) for t in target]


def to_frame(a, source, target):
    """Array `a` in frame `source` rearranged into frame `target` (transposes and flips)."""
    order = frame_order(source, target)
    a = np.transpose(a, order)
    for m, t in enumerate(target):
        if source[order[m]] != t:
            a = np.flip(a, axis=m)
    return np.ascontiguousarray(a)


def main():
    series, model_dir, out = map(pathlib.Path, sys.argv[1:4])
    hu, spacing = load_series(series)
    first = pydicom.dcmread(next(p for p in sorted(series.iterdir()) if p.is_file()), stop_before_pixels=True)
    source = series_frame(first.ImageOrientationPatient)
    model = tomllib.loads((model_dir / "model.toml").read_text())["frame"]
    spacing = [spacing[i] for i in frame_order(source, model)]
    labels = run_cascade(to_frame(hu, source, model), spacing, model_dir)
    to_frame(labels, model, source).tofile(out)


if __name__ == "__main__":
    main()
