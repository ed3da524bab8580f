"""CT images made from label maps, for training on anatomy without images (model 3.0,
issue 32): ../shared/data/labels-s0327 and labels-s0328 have TotalSegmentator's 117
reference masks but no CT; the same generator re-renders the real training patients in
contrast phases they were not scanned in.

Each structure gets an attenuation drawn from its tissue's range in the sampled phase
(none, arterial, portal venous), with texture (smooth noise inside the structure; a
kidney's medulla, under a 4-8 mm cortex, gets its own, darker with contrast), then
the whole image gets partial volume (a blur before the scanner's noise), a smooth bias
field, the scanner's noise, and a slice thickness. What no structure covers is fat inside
the body and air outside it; the body is the closed hull of all structures, grown by a
random subcutaneous layer.

    .venv/bin/python training/synthesize.py check     # re-renders train-ct-3mm (non-contrast)
                                                      # and compares each organ's HU with its CT
                                                      # (exit 1 beyond 25 HU)
    .venv/bin/python training/synthesize.py render labels-s0327 OUT.nii.gz [--phase portal] [--seed N]

Training data only: never the validation or test series.
"""

import argparse
import json
import pathlib
import sys

import nibabel as nib
import numpy as np
from scipy import ndimage

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"

PHASES = ("none", "arterial", "portal")

# The abdominal wall and subcutaneous fat around the hull of the labelled structures.
BODY_LAYER_MM = (10.0, 60.0)

# Tissue: HU range (low, high) per phase (none, arterial, portal venous), and the
# texture's standard deviation in HU. Ranges from typical adult abdominal CT.
TISSUES = {
    "air": ((-1000, -990),) * 3 + (2,),
    "fat": ((-115, -85),) * 3 + (8,),
    "lung": ((-880, -820),) * 3 + (25,),
    "muscle": ((25, 55), (35, 65), (40, 70), 6),
    "bone": ((150, 450), (150, 450), (150, 450), 60),
    "cartilage": ((90, 140),) * 3 + (10,),
    "liver": ((45, 70), (60, 90), (95, 135), 6),
    "spleen": ((40, 55), (90, 150), (105, 135), 6),
    # Enhanced renal cortex reaches 250-300 HU in the corticomedullary and nephrographic
    # phases.
    "kidney": ((25, 40), (140, 290), (150, 280), 8),
    # The kidney's medulla under its cortex (KIDNEY_CORTEX_MM): alike without contrast,
    # dark in the arterial (corticomedullary) phase, nearly as bright in the portal one.
    "medulla": ((20, 35), (50, 110), (110, 190), 8),
    "pancreas": ((0, 50), (60, 130), (60, 110), 8),
    "stomach": ((20, 45), (40, 80), (50, 90), 10),
    "bowel": ((15, 40), (40, 80), (50, 90), 12),
    "fluid": ((0, 15),) * 3 + (4,),
    "artery": ((35, 50), (200, 350), (140, 220), 5),
    "vein": ((35, 50), (60, 110), (130, 200), 5),
    "heart": ((35, 50), (150, 300), (120, 180), 8),
    "adrenal": ((25, 40), (50, 80), (55, 85), 6),
    "soft": ((30, 50), (40, 70), (50, 80), 8),
    "brain": ((25, 40),) * 3 + (4,),
}

# The renal cortex's thickness: the outer layer of a kidney label that keeps the kidney's
# attenuation; what lies deeper is medulla.
KIDNEY_CORTEX_MM = (4.0, 8.0)

# TotalSegmentator v2 `total` ids (totalsegmentator-plans/Dataset297_total_3mm) by tissue.
STRUCTURES = {
    "spleen": [1], "kidney": [2, 3], "liver": [5], "stomach": [6], "pancreas": [7],
    "fluid": [4, 21, 23, 24], "adrenal": [8, 9], "lung": [10, 11, 12, 13, 14],
    "soft": [15, 17, 22, 79], "air": [16], "bowel": [18, 19, 20],
    "bone": [25, *range(26, 51), *range(69, 79), 91, *range(92, 117)],
    "heart": [51, 61], "artery": [52, 54, 55, 56, 57, 58, 65, 66],
    "vein": [53, 59, 60, 62, 63, 64, 67, 68], "muscle": list(range(80, 90)),
    "brain": [90], "cartilage": [117],
}
TISSUE_OF = {i: t for t, ids in STRUCTURES.items() for i in ids}


def smooth_noise(rng, shape, sigma):
    """Gaussian noise low-passed with `sigma` voxels, scaled back to unit variance."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return n / max(float(n.std()), 1e-6)


FAR = 1e6  # mm: no body grows this far


def hull_distance(labels, spacing):
    """The in-plane distance (mm) of every voxel to the body's core: per slice (the last
    axis), the convex hull of every structure (the abdominal wall and the skin are not
    labelled); 0 inside it. The body is the core grown by a random layer
    (BODY_LAYER_MM); slices without a structure are FAR from any body."""
    from scipy.spatial import Delaunay

    core = np.zeros(labels.shape, dtype=bool)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in labels.shape[:2]), indexing="ij"), -1)
    for z in range(labels.shape[2]):
        points = np.argwhere(labels[:, :, z] > 0)
        if len(points) < 4 or np.linalg.matrix_rank(points - points.mean(0)) < 2:
            continue
        try:
            hull = Delaunay(points)
        except Exception:  # degenerate slices (collinear points) keep no body
            continue
        core[:, :, z] = hull.find_simplex(grid.reshape(-1, 2)).reshape(grid.shape[:2]) >= 0
    if not core.any():
        return np.full(labels.shape, FAR, dtype=np.float32)
    # Slices kept apart by a huge slice spacing.
    return ndimage.distance_transform_edt(~core, sampling=(spacing[0], spacing[1], FAR)).astype(np.float32)


def kidney_depth(labels, spacing):
    """Each kidney voxel's distance (mm) to its kidney's surface; 0 elsewhere."""
    depth = np.zeros(labels.shape, dtype=np.float32)
    for value in STRUCTURES["kidney"]:
        where = labels == value
        if where.any():
            depth[where] = ndimage.distance_transform_edt(where, sampling=spacing)[where]
    return depth


def anatomy(labels, spacing):
    """What rendering `labels` needs besides its random draws, computed once per label
    map: (labels, hull distance, kidney depth), all of one shape. They can be resampled
    together (the labels nearest, the distances linearly) and rendered at any grid."""
    return labels, hull_distance(labels, spacing), kidney_depth(labels, spacing)


def render(labels, hull, depth, spacing, rng, phase=None, slice_axis=2):
    """A CT-like HU volume for a TotalSegmentator label map with its `anatomy` (any axis
    order; `spacing` in mm per axis, the slice direction along `slice_axis`), and the
    phase it shows."""
    phase = phase or PHASES[rng.integers(len(PHASES))]
    p = PHASES.index(phase)
    shape = labels.shape
    body = hull <= rng.uniform(*BODY_LAYER_MM)
    hu = np.full(shape, TISSUES["air"][0][0], dtype=np.float32)
    lo, hi = TISSUES["fat"][p]
    hu[body] = rng.uniform(lo, hi)
    texture = smooth_noise(rng, shape, 1.5 / np.asarray(spacing) * 2)
    hu[body] += TISSUES["fat"][3] * texture[body]
    # One attenuation per structure (left and right kidneys alike: one draw per tissue,
    # jittered per structure), with texture.
    draws = {t: rng.uniform(*TISSUES[t][p]) for t in TISSUES}
    for value in np.unique(labels):
        if value == 0:
            continue
        tissue = TISSUE_OF.get(int(value), "soft")
        lo, hi = TISSUES[tissue][p]
        level = np.clip(draws[tissue] + rng.normal(0, 0.05 * (hi - lo + 10)), lo - 10, hi + 10)
        where = labels == value
        hu[where] = level + TISSUES[tissue][3] * texture[where]
        if tissue == "kidney":
            medulla = where & (depth > rng.uniform(*KIDNEY_CORTEX_MM))
            lo, hi = TISSUES["medulla"][p]
            hu[medulla] = min(rng.uniform(lo, hi), level) + TISSUES["medulla"][3] * texture[medulla]
    # Partial volume: the scanner's point spread before its noise.
    psf = rng.uniform(0.4, 0.9) / np.asarray(spacing) * min(spacing)
    hu = ndimage.gaussian_filter(hu, psf)
    # A smooth bias across the field (beam hardening, scatter): a few HU.
    bias = smooth_noise(rng, tuple(max(2, s // 8) for s in shape), 1.0)
    bias = ndimage.zoom(bias, np.asarray(shape) / np.asarray(bias.shape), order=1)
    hu += rng.uniform(0, 8) * bias[: shape[0], : shape[1], : shape[2]]
    # Slice thickness: 1 to 5 mm of blur along the slice axis.
    thickness = rng.uniform(1.0, 5.0)
    sigma_z = max(0.0, (thickness - spacing[slice_axis]) / 2.355 / spacing[slice_axis])
    if sigma_z > 0:
        hu = ndimage.gaussian_filter1d(hu, sigma_z, axis=slice_axis)
    # The scanner's noise: 5 to 25 HU, slightly correlated.
    hu += rng.uniform(5, 25) * smooth_noise(rng, shape, 0.6)
    hu[~body] = np.clip(hu[~body], -1024, -900)
    return np.clip(hu, -1024, 3071).astype(np.float32), phase


def synthesize(labels, spacing, rng, phase=None):
    """A CT-like HU volume for a TotalSegmentator label map (any axis order; `spacing`
    in mm per axis, the last axis the slice direction), and the phase it shows."""
    return render(*anatomy(labels, spacing), spacing, rng, phase)


def load(name):
    labels = nib.as_closest_canonical(nib.load(DATA / name / "labels.nii.gz"))
    return np.asarray(labels.dataobj).astype(np.int16), labels.header.get_zooms()[:3], labels.affine


# The check: the real CT's median HU of each structure must lie within the tissue's
# non-contrast range widened by TOLERANCE_HU (the ranges cover the real patient), and the
# re-rendered one's within RENDER_TOLERANCE_HU (the rendering keeps them: partial volume
# at 3 mm pulls thin structures such as the pancreas towards fat); and the body's share
# of the volume must lie between those of the thinnest and the thickest body wall.
TOLERANCE_HU = 25.0
RENDER_TOLERANCE_HU = 40.0
CHECKED = {
    "spleen": "spleen", "kidneys": "kidney", "liver": "liver", "stomach": "stomach",
    "pancreas": "pancreas", "aorta": "artery", "muscle": "muscle", "bone": "bone",
    "unlabelled body": "fat",
}


def check(seed):
    """Re-renders train-ct-3mm without contrast (the phase it was scanned in) and
    compares each abdominal organ's median HU, and the body's, with the real CT."""
    labels, spacing, _ = load("train-ct-3mm")
    ct = np.asarray(nib.as_closest_canonical(nib.load(DATA / "train-ct-3mm" / "ct.nii.gz")).dataobj)
    hu, phase = synthesize(labels, spacing, np.random.default_rng(seed), "none")
    rows = {}
    for name, ids in [("spleen", [1]), ("kidneys", [2, 3]), ("liver", [5]), ("stomach", [6]),
                      ("pancreas", [7]), ("aorta", [52]), ("muscle", list(range(80, 90))),
                      ("bone", STRUCTURES["bone"])]:
        where = np.isin(labels, ids)
        if where.sum() < 100:
            continue
        rows[name] = {"real": round(float(np.median(ct[where])), 1),
                      "synthetic": round(float(np.median(hu[where])), 1)}
    outside = labels == 0
    body = ct > -500
    rows["unlabelled body"] = {"real": round(float(np.median(ct[outside & body])), 1),
                               "synthetic": round(float(np.median(hu[outside & body])), 1)}
    rows["body fraction"] = {"real": round(float(body.mean()), 3),
                             "synthetic": round(float((hu > -500).mean()), 3)}
    for name, row in rows.items():
        tissue = CHECKED.get(name)
        if tissue:
            lo, hi = TISSUES[tissue][0]
            row["range"] = [lo, hi]
    far = sorted(
        name for name, row in rows.items()
        if "range" in row and not (
            row["range"][0] - TOLERANCE_HU <= row["real"] <= row["range"][1] + TOLERANCE_HU
            and row["range"][0] - RENDER_TOLERANCE_HU <= row["synthetic"]
            <= row["range"][1] + RENDER_TOLERANCE_HU
        )
    )
    # The body the generator can make, thinnest and thickest, must hold the real one's size.
    hull = hull_distance(labels, spacing)
    sizes = [float((hull <= mm).mean()) for mm in BODY_LAYER_MM]
    rows["body fraction"]["can_make"] = [round(f, 3) for f in sizes]
    if not sizes[0] <= rows["body fraction"]["real"] <= sizes[1]:
        far.append("body fraction")
    print(json.dumps({"phase": phase, "spacing": [float(s) for s in spacing], "organs": rows,
                      "tolerance_hu": TOLERANCE_HU, "beyond": far}, indent=1))
    return not far


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check")
    c.add_argument("--seed", type=int, default=20261207)
    r = sub.add_parser("render")
    r.add_argument("labels", help="a folder of ../shared/data with labels.nii.gz (training sets only)")
    r.add_argument("out")
    r.add_argument("--phase", choices=PHASES)
    r.add_argument("--seed", type=int, default=20261207)
    a = p.parse_args()
    if a.command == "check":
        sys.exit(0 if check(a.seed) else 1)
    if a.labels in ("eval-ircadb-p1", "ct-abdomen-j2k"):
        sys.exit("validation and test series are never rendered for training")
    labels, spacing, affine = load(a.labels)
    hu, phase = synthesize(labels, spacing, np.random.default_rng(a.seed), a.phase)
    nib.save(nib.Nifti1Image(hu, affine), a.out)
    print(json.dumps({"out": a.out, "phase": phase, "shape": list(hu.shape)}))


if __name__ == "__main__":
    main()
