"""The training volumes and the default model's labels, shared by train.py and
insample.py. Data: the training sets of ../shared/data/README.md only (the CT of
train-ct-3mm and train-s0009, the label maps of labels-s0327 and labels-s0328); never
the validation or test series."""

import json
import pathlib
import time

import nibabel as nib
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"

# The training patients (folder names under ../shared/data).
TRAINING_SETS = ["train-ct-3mm", "train-s0009"]

# Anatomies rendered from label maps (training/synthesize.py), with the contrast phases
# each is rendered in: the two label-only anatomies in every phase, and a real patient
# (scanned without contrast) in the two enhanced ones. Every training sample drawn from
# one is rendered anew (its own intensities, texture, blur and noise), from the label map
# and the distances the renderer needs, prepared once on a 3 mm grid and kept in the
# cache folder.
SYNTHETIC = [("labels-s0327", ("none", "arterial", "portal")), ("labels-s0328", ("none", "arterial", "portal")),
             ("train-ct-3mm", ("arterial", "portal"))]
SYNTHETIC_SPACING = 3.0

# Output label values of the default model and the TotalSegmentator v2 ids they come from.
LABELS = [
    # value, name, TotalSegmentator id, SNOMED CT code, meaning, colour
    (1, "spleen", 1, "78961009", "Spleen", [157, 108, 162]),
    (2, "right kidney", 2, "9846003", "Right kidney", [185, 102, 83]),
    (3, "left kidney", 3, "18639004", "Left kidney", [185, 102, 83]),
    (4, "liver", 5, "10200004", "Liver", [221, 130, 101]),
    (5, "stomach", 6, "69695003", "Stomach", [216, 132, 105]),
    (6, "pancreas", 7, "15776009", "Pancreas", [249, 180, 111]),
]


# Tissues whose brightness contrast medium changes, for the contrast augmentation of
# train.py: the six organs (their label values) plus arteries (7) and veins (8), from the
# TotalSegmentator ids a training set has (train-s0009 has no vessel labels).
ARTERIES = (52, 65, 66)  # aorta, iliac arteries
VEINS = (63, 64, 67, 68)  # inferior vena cava, portal and splenic vein, iliac veins


def to_frame(a):
    """A RAS-canonical array in the model's frame (see load_training_volume)."""
    return np.ascontiguousarray(np.transpose(a, (2, 1, 0))[:, ::-1, ::-1])


def load_training_volume(name="train-ct-3mm"):
    """One training CT and its labels in the model's frame ("SPL" in model.toml): array
    (z, y, x) with z growing towards the head (S), y towards the back (P), x towards the
    patient's left (L), i.e. DICOM LPS; HU float32. The node maps every series into this
    frame before stage 1, whatever its acquisition layout."""
    data = DATA / name
    ct = nib.as_closest_canonical(nib.load(data / "ct.nii.gz"))
    lab = nib.as_closest_canonical(nib.load(data / "labels.nii.gz"))
    assert nib.aff2axcodes(ct.affine) == ("R", "A", "S")
    hu = to_frame(np.asarray(ct.dataobj, dtype=np.float32))
    ts = to_frame(np.asarray(lab.dataobj)).astype(np.int32)
    labels = from_totalsegmentator(ts)
    tissues = labels.copy()
    tissues[np.isin(ts, ARTERIES)] = 7
    tissues[np.isin(ts, VEINS)] = 8
    spacing = [float(v) for v in ct.header.get_zooms()][::-1]
    return hu, labels, spacing, tissues


def load_training_volumes(tissues=False):
    """Every training patient: [(name, hu, labels, spacing)], with the tissue map of
    the contrast augmentation appended when `tissues`."""
    return [(name, *load_training_volume(name)[: 4 if tissues else 3]) for name in TRAINING_SETS]


def from_totalsegmentator(ts):
    """The default model's labels from a TotalSegmentator v2 label map."""
    labels = np.zeros(ts.shape, dtype=np.uint8)
    for value, _, ts_id, *_ in LABELS:
        labels[ts == ts_id] = value
    return labels


def load_synthetic_anatomies(cache, log):
    """The anatomies of SYNTHETIC in the model's frame: ([(name, labels, spacing,
    (TotalSegmentator label map, hull distance, kidney depth), phases)], the seconds spent
    preparing them, kept across runs). Prepares what `cache` does not hold yet."""
    import synthesize
    from reference_cascade import resample_nearest

    cache.mkdir(parents=True, exist_ok=True)
    timing = cache / "prepare-seconds.json"
    seconds = json.loads(timing.read_text()) if timing.exists() else {}
    anatomies = []
    for name, phases in SYNTHETIC:
        path = cache / f"{name}.npz"
        if not path.exists():
            started = time.time()
            ts, zooms, _ = synthesize.load(name)
            grid = [max(1, int(round(ts.shape[i] * float(zooms[i]) / SYNTHETIC_SPACING))) for i in range(3)]
            ts, hull, depth = synthesize.anatomy(resample_nearest(ts, grid), (SYNTHETIC_SPACING,) * 3)
            np.savez_compressed(path, ts=ts, hull=hull, depth=depth)
            seconds[name] = round(time.time() - started, 1)
            timing.write_text(json.dumps(seconds, indent=1))
            log(f"prepared {path.name}: {ts.shape} in {seconds[name]:.0f} s")
        stored = np.load(path)
        ts, hull, depth = (to_frame(stored[k]) for k in ("ts", "hull", "depth"))
        anatomies.append((name, from_totalsegmentator(ts), [SYNTHETIC_SPACING] * 3, (ts, hull, depth), phases))
    return anatomies, float(sum(seconds.values()))
