#!/usr/bin/env python3
"""Trains segnode's default abdominal cascade and exports it to onnx/abdomen-cascade/.

Data: the training sets of ../shared/data/README.md only (training_data.TRAINING_SETS:
two patients with CT and TotalSegmentator labels; training_data.SYNTHETIC: images that
training/synthesize.py renders from label maps anew for every sample, of the two
label-only anatomies in every contrast phase and of a real patient in the phases it was
not scanned in). Checkpoints are chosen afterwards, outside this script
(training/choose_checkpoint.py), on the validation series.

Stage 1: a 3D U-Net on the 6 mm grid, organ vs background (the candidate region).
Stage 2: a 3D U-Net on the 3 mm grid, six organs, trained on crops around the labels (as
Roth et al. 2018 do), half of them centred on an organ drawn uniformly among those the
volume has, with spatial augmentation (scaling, rotation about the head-feet axis,
elastic deformation), intensity and contrast-medium augmentation, and partial fields of
view (slabs padded like the node pads). No left-right mirroring: the node maps every
series into the model's frame, so the network never sees a mirrored patient, and a
mirror would teach it that the left and right kidney are the same.

PyTorch on CPU (oneDNN convolutions, channels-last 3D, bfloat16 autocast; the loss and
the weights stay float32; training/README.md, "Trainer comparison"), fixed seed.
Resumable: each stage's state (weights, Adam, schedule, sampler) is saved to
OUT/state-stageN.pt every --save-every steps, and a run started again with the same OUT
goes on from there, so training can span several sittings. Export: the weights are
written into ONNX graphs (Conv, Relu, MaxPool, Resize nearest, Concat) and checked
against the PyTorch forward pass with ONNX Runtime, then model.toml is written with the
files' checksums; stage 2 is also exported at each checkpoint step into
OUT/checkpoints/step-N/ (complete models).

Usage: training/run  (sets up .venv-train and runs this; see training/README.md)
"""

import argparse
import hashlib
import json
import math
import os
import pathlib
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from scipy import ndimage

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from reference_cascade import normalize, resample_linear, resample_nearest  # noqa: E402  (the node's semantics)
import synthesize  # noqa: E402
from training_data import LABELS, load_synthetic_anatomies, load_training_volumes  # noqa: E402

CLASSES = len(LABELS) + 1
WINDOW = (-500.0, 500.0)
STAGE1 = dict(spacing=6.0, patch=(24, 48, 48), channels=(8, 16, 32, 64))
STAGE2 = dict(spacing=3.0, patch=(32, 64, 64), channels=(12, 24, 48, 96))
AIR = -1024.0
BATCH = 2


# ---------------------------------------------------------------- the network

class Block(nn.Module):
    """Two 3x3x3 convolutions, each followed by ReLU."""

    def __init__(self, cin, cout):
        super().__init__()
        self.a = nn.Conv3d(cin, cout, 3, padding=1)
        self.b = nn.Conv3d(cout, cout, 3, padding=1)

    def forward(self, x):
        return F.relu(self.b(F.relu(self.a(x))))


class UNet(nn.Module):
    """A 3D U-Net with len(channels) levels: max pooling down, nearest-neighbour
    upsampling and concatenation with the level's encoder output up, a 1x1x1 head."""

    def __init__(self, channels, classes):
        super().__init__()
        ins = (1, *channels[:-1])
        self.down = nn.ModuleList(Block(cin, c) for cin, c in zip(ins, channels))
        self.up = nn.ModuleList(Block(channels[i + 1] + channels[i], channels[i]) for i in range(len(channels) - 1))
        self.head = nn.Conv3d(channels[0], classes, 1)

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.down):
            if i:
                skips.append(x)
                x = F.max_pool3d(x, 2)
            x = block(x)
        for i in reversed(range(len(self.up))):
            x = self.up[i](torch.cat([F.interpolate(x, scale_factor=2, mode="nearest"), skips[i]], 1))
        return self.head(x)


def loss_fn(logits, y, classes):
    """Cross-entropy plus soft Dice over the organs present in the batch, in float32.
    For an absent organ the Dice term would be 1 / (its predicted mass + 1), which pushes
    the organ towards never being predicted (with class-balanced crops most organs are
    absent from most batches); cross-entropy alone handles it there."""
    logits = logits.float()
    prob = logits.softmax(1)
    onehot = F.one_hot(y, classes).permute(0, 4, 1, 2, 3).float()
    inter = (prob * onehot).sum((0, 2, 3, 4))
    present = onehot.sum((0, 2, 3, 4))
    dice = (2 * inter + 1) / (prob.sum((0, 2, 3, 4)) + present + 1)
    weight = (present[1:] > 0).float()
    return F.cross_entropy(logits, y) + (weight * (1 - dice[1:])).sum() / weight.sum().clamp(min=1)


# ---------------------------------------------------------------- sampling and augmentation

def centre_pools(strata):
    """Where crops may be centred in one volume: every labelled voxel of `strata`, then
    one pool per label present."""
    return [np.argwhere(strata > 0)] + [np.argwhere(strata == v) for v in np.unique(strata) if v > 0]


# Contrast augmentation: the most HU contrast medium adds to each tissue of the tissue map
# (training_data: organs 1-6, arteries 7, veins 8) in a late portal-venous phase. Both
# training patients are non-contrast (liver about 50 HU, aorta 41), the validation
# series is enhanced (liver 112, spleen 119, kidneys 206 HU), and hospitals scan both.
ENHANCEMENT = np.array([0, 130, 230, 230, 100, 40, 90, 300, 200], dtype=np.float32)


def contrast_offsets(rng):
    """HU added per tissue: native (no contrast) 30 % of the time, otherwise one phase
    strength for the whole patient, each tissue jittered around it (both kidneys alike)."""
    if rng.random() < 0.3:
        return np.zeros_like(ENHANCEMENT)
    offsets = ENHANCEMENT * rng.uniform(0.2, 1.0) * rng.uniform(0.75, 1.25, ENHANCEMENT.shape).astype(np.float32)
    offsets[3] = offsets[2]
    return offsets


# Kidneys lie lower or further out in some patients than in any training anatomy (a
# ptotic kidney beside the iliac crest, below the liver): a share of the rendered crops
# (--kidney-displacement) moves one kidney as far as KIDNEY_DISPLACEMENT_MM (towards the
# feet, across, forwards or backwards; z grows towards the head).
KIDNEY_DISPLACEMENT_MM = ((-60.0, 0.0), (-15.0, 15.0), (-15.0, 15.0))
AUGMENT = {"kidney_displacement": 0.25}


def shifted(a, offset, fill):
    """`a` moved by whole voxels `offset` per axis, `fill` where nothing moved in."""
    out = np.full_like(a, fill)
    src = tuple(slice(max(0, -o), n - max(0, o)) for o, n in zip(offset, a.shape))
    dst = tuple(slice(max(0, o), n - max(0, -o)) for o, n in zip(offset, a.shape))
    out[dst] = a[src]
    return out


def displace_kidney(rng, ts, depth, label, spacing):
    """Moves one kidney of a rendered crop (its TotalSegmentator labels `ts`, depth map
    and training labels, in place) by a random offset within KIDNEY_DISPLACEMENT_MM; where
    it was becomes unlabelled (rendered as fat), and it covers what lay where it goes."""
    present = [k for k in synthesize.STRUCTURES["kidney"] if (ts == k).any()]
    if not present:
        return
    k = present[rng.integers(len(present))]
    kidney = ts == k
    offset = [int(round(rng.uniform(lo, hi) / spacing)) for lo, hi in KIDNEY_DISPLACEMENT_MM]
    moved = shifted(kidney, offset, False)
    moved_label = shifted(np.where(kidney, label, 0), offset, 0)
    moved_depth = shifted(np.where(kidney, depth, 0), offset, 0)
    ts[kidney], label[kidney], depth[kidney] = 0, 0, 0
    ts[moved], label[moved], depth[moved] = k, moved_label[moved], moved_depth[moved]


def sample(rng, volume, pools, patch, spacing, foreground_p):
    """One augmented training patch of `volume` (see train_stage): (normalised image,
    labels). With probability `foreground_p` the crop is centred on a labelled voxel:
    half of the time any labelled voxel (big organs dominate), half of the time an organ
    drawn uniformly first (small organs get seen); otherwise anywhere. A real CT's crop
    is resampled from its image and gets the contrast augmentation; a rendered
    anatomy's crop is rendered anew from its label map and distances, in one of its
    phases, sometimes with a kidney moved (displace_kidney)."""
    hu, labels, _, tissues, rendered = volume
    shape = np.array(labels.shape)
    if rng.random() < foreground_p and len(pools[0]):
        pool = pools[0] if rng.random() < 0.5 else pools[1 + rng.integers(len(pools) - 1)]
        centre = pool[rng.integers(len(pool))].astype(float)
    else:
        centre = rng.uniform(0, shape - 1)
    angle = np.deg2rad(rng.uniform(-15, 15))
    scale = rng.uniform(0.85, 1.15)
    rot = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    matrix = rot / scale
    half = (np.array(patch) - 1) / 2.0
    grid = np.stack(np.meshgrid(*[np.arange(p) - h for p, h in zip(patch, half)], indexing="ij"), axis=0)
    coords = np.tensordot(matrix, grid, axes=1) + centre[:, None, None, None]
    if rng.random() < 0.5:  # elastic: smooth random displacement, up to ~2 voxels
        for axis in range(3):
            field = ndimage.gaussian_filter(rng.normal(0, 1, patch), sigma=6) * 30
            coords[axis] += field
    label = ndimage.map_coordinates(labels, coords, order=0, mode="constant", cval=0).astype(np.int32)
    if rendered is None:
        image = ndimage.map_coordinates(hu, coords, order=1, mode="constant", cval=AIR).astype(np.float32)
        tissue = ndimage.map_coordinates(tissues, coords, order=0, mode="constant", cval=0).astype(np.int32)
        image += ndimage.gaussian_filter(contrast_offsets(rng)[tissue], sigma=0.7)
    else:
        (ts, hull, depth), phases = rendered
        ts = ndimage.map_coordinates(ts, coords, order=0, mode="constant", cval=0)
        hull = ndimage.map_coordinates(hull, coords, order=1, mode="constant", cval=synthesize.FAR)
        depth = ndimage.map_coordinates(depth, coords, order=1, mode="constant", cval=0)
        if rng.random() < AUGMENT["kidney_displacement"]:
            displace_kidney(rng, ts, depth, label, spacing)
        image, _ = synthesize.render(ts, hull, depth, [spacing] * 3, rng, phases[rng.integers(len(phases))],
                                     slice_axis=0)
    image = image * rng.uniform(0.93, 1.07) + rng.uniform(-30, 30)
    image += rng.normal(0, rng.uniform(0, 25), image.shape).astype(np.float32)
    x, pad = normalize(image, WINDOW, "window")
    if rng.random() < 0.3:  # partial field of view: a slab, the rest padded as the node pads
        depth = rng.integers(3, patch[0])
        start = rng.integers(0, patch[0] - depth + 1)
        x[:start], x[start + depth:] = pad, pad
        label[:start], label[start + depth:] = 0, 0
    if rng.random() < 0.25:  # a narrower in-plane field of view cutting through the body
        axis = 1 + rng.integers(2)
        cut = rng.integers(1, patch[axis] // 3)
        edge = [slice(None)] * 3
        edge[axis] = slice(0, cut) if rng.random() < 0.5 else slice(patch[axis] - cut, None)
        x[tuple(edge)], label[tuple(edge)] = pad, 0
    return x, label


def schedule(steps, alpha=0.05):
    """Cosine decay of the learning rate to `alpha` of its start over `steps`."""
    return lambda i: alpha + (1 - alpha) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps))


def train_stage(name, volumes, shares, cfg, classes, steps, seed, foreground_p, log, state_path,
                save_every, ema_decay, checkpoint=None):
    """Trains one stage on `volumes`, [(hu, labels, strata, tissues, rendered)] on this
    stage's grid (labels: what the network learns; strata: the organ labels the crop
    centres come from; tissues: the contrast augmentation's tissue map; rendered: None
    for a real CT, else a rendered anatomy's (synthesize.anatomy arrays, phases), and
    hu and tissues None). Each
    sample comes from a volume drawn with probability `shares`. The model exported is
    the exponential moving average of the weights (`ema_decay` per step; 0 keeps the
    last weights). Goes on from `state_path` when a sitting before saved one;
    `checkpoint(step, model)` is called after every step with the averaged model.
    Returns it and the seconds spent over all sittings."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    pools = [centre_pools(volume[2]) for volume in volumes]
    model = UNet(cfg["channels"], classes).to(memory_format=torch.channels_last_3d)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    lr = torch.optim.lr_scheduler.LambdaLR(opt, schedule(steps))
    start, spent = 0, 0.0
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        lr.load_state_dict(state["lr"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        start, spent = state["step"], state["seconds"]
        log(f"{name}: going on from step {start} ({spent:.0f} s before)")
    # The average starts from the weights as they are (a state saved before averages
    # were kept goes on from its last weights); decay 0 keeps the last weights.
    ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema_decay))
    if start and "ema" in state:
        ema.load_state_dict(state["ema"])

    def save(step):
        tmp = state_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "lr": lr.state_dict(),
                    "ema": ema.state_dict(),
                    "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "step": step,
                    "seconds": spent + time.time() - started}, tmp)
        os.replace(tmp, state_path)

    started = time.time()
    model.train()
    for i in range(start, steps):
        batch = []
        for _ in range(BATCH):
            v = rng.choice(len(volumes), p=shares)
            batch.append(sample(rng, volumes[v], pools[v], cfg["patch"], cfg["spacing"], foreground_p))
        x = torch.from_numpy(np.stack([b[0] for b in batch])[:, None]).contiguous(memory_format=torch.channels_last_3d)
        y = torch.from_numpy(np.stack([b[1] for b in batch]).astype(np.int64))
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
        loss = loss_fn(logits, y, classes)
        loss.backward()
        opt.step()
        lr.step()
        ema.update_parameters(model)
        if i % 50 == 0 or i == steps - 1:
            log(f"{name} step {i}/{steps} loss {loss.item():.4f} ({spent + time.time() - started:.0f} s)")
        if (i + 1) % save_every == 0 or i == steps - 1:
            save(i + 1)
        if checkpoint:
            checkpoint(i + 1, ema.module)
    return ema.module.eval(), spent + time.time() - started


# ---------------------------------------------------------------- ONNX export

def export_onnx(model, patch, classes, path):
    """Writes `model` as an ONNX graph of Conv, Relu, MaxPool, Resize (nearest) and Concat
    (opset 17) and checks it against the PyTorch forward pass with ONNX Runtime; returns
    the file's SHA-256 and the largest difference."""
    weights = {k: v.detach().float().contiguous().numpy() for k, v in model.state_dict().items()}
    inits, nodes = [], []
    for key, value in weights.items():
        inits.append(numpy_helper.from_array(value, key))

    def conv(inp, prefix, pads):
        nodes.append(helper.make_node("Conv", [inp, f"{prefix}.weight", f"{prefix}.bias"], [prefix],
                                      pads=[pads] * 6, name=prefix))
        return prefix

    def block(inp, prefix):
        for part in ("a", "b"):
            c = conv(inp, f"{prefix}.{part}", 1)
            inp = f"{c}.relu"
            nodes.append(helper.make_node("Relu", [c], [inp]))
        return inp

    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2, 2], np.float32), "scales"))
    x, skips = "image", []
    for i in range(len(model.down)):
        if i:
            skips.append(x)
            nodes.append(helper.make_node("MaxPool", [x], [f"pool{i}"], kernel_shape=[2, 2, 2], strides=[2, 2, 2]))
            x = f"pool{i}"
        x = block(x, f"down.{i}")
    for i in reversed(range(len(model.up))):
        nodes.append(helper.make_node("Resize", [x, "", "scales"], [f"upsampled{i}"], mode="nearest",
                                      coordinate_transformation_mode="asymmetric", nearest_mode="floor"))
        nodes.append(helper.make_node("Concat", [f"upsampled{i}", skips[i]], [f"cat{i}"], axis=1))
        x = block(f"cat{i}", f"up.{i}")
    nodes.append(helper.make_node("Conv", [x, "head.weight", "head.bias"], ["logits"], name="head"))
    graph = helper.make_graph(
        nodes, path.stem,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, *patch])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes, *patch])],
        inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="segnode-training")
    onnx_model.ir_version = 8
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, path)
    # The exported graph computes what PyTorch computes (in float32).
    x = np.random.default_rng(0).uniform(-1, 1, (1, 1, *patch)).astype(np.float32)
    with torch.no_grad():
        expected = model.float()(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["logits"], {"image": x})[0]
    diff = float(np.abs(expected - got).max())
    assert diff < 1e-3, f"{path.name}: ONNX and PyTorch differ by {diff}"
    return hashlib.sha256(path.read_bytes()).hexdigest(), diff


def write_manifest(out, sha1, sha2, version, dilation):
    labels = "\n".join(
        f'''[[labels]]
value = {v}
name = "{name}"
category = {{ scheme = "SCT", value = "91723000", meaning = "Anatomical Structure" }}
type = {{ scheme = "SCT", value = "{code}", meaning = "{meaning}" }}
color = {colour}
''' for v, name, _, code, meaning, colour in LABELS)

    def stage(n, sha, cfg, overlap):
        return f'''[stage{n}]
file = "stage{n}.onnx"
sha256 = "{sha}"
input = "image"
output = "logits"
spacing_mm = [{cfg["spacing"]}, {cfg["spacing"]}, {cfg["spacing"]}]
hu_window = [{WINDOW[0]}, {WINDOW[1]}]
normalization = "window"
patch = [{cfg["patch"][0]}, {cfg["patch"][1]}, {cfg["patch"][2]}]
overlap = {overlap}
blending = "gaussian"
'''
    text = f'''# segnode's default abdominal cascade. Made by training/train.py; see MODEL_CARD.md.
# Research and demonstration only: not for clinical decisions.
name = "abdomen-cascade"
version = "{version}"
description = "Two-stage 3D U-Net cascade (6 mm organ region, 3 mm organs) trained on two CT volumes and images rendered from four anatomies"\nframe = "SPL"                     # array (z, y, x) grows towards the head, the back, the left

{stage(1, sha1, STAGE1, 0.5)}
{stage(2, sha2, STAGE2, 0.5)}
[cascade]
dilation_voxels = {dilation}
body_mask = true
body_threshold_hu = -500.0

[postprocess]
largest_component = true
fill_holes = true

{labels}'''
    (out / "model.toml").write_text(text)


def stage_grids(labels, spacing, hu=None, tissues=None, rendered=None):
    """A real CT (hu, tissues) or a rendered anatomy (rendered: synthesize.anatomy's
    arrays, phases) on each stage's grid, made with the node's own resampling: stage 1
    (hu, organ vs background, organ strata, tissues, rendered), stage 2 (the same,
    organs)."""
    out = []
    for cfg, binary in ((STAGE1, True), (STAGE2, False)):
        grid = [max(1, int(round(labels.shape[i] * spacing[i] / cfg["spacing"]))) for i in range(3)]
        organs = resample_nearest(labels, grid)
        learn = (organs > 0).astype(np.uint8) if binary else organs
        if rendered is None:
            out.append((resample_linear(hu, grid), learn, organs, resample_nearest(tissues, grid), None))
        else:
            (ts, hull, depth), phases = rendered
            on_grid = (resample_nearest(ts, grid), resample_linear(hull, grid), resample_linear(depth, grid))
            out.append((None, learn, organs, None, (on_grid, phases)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps1", type=int, default=1500)
    ap.add_argument("--steps2", type=int, default=6000)
    ap.add_argument("--checkpoints", default="3000,4000,5000,6000",
                    help="stage-2 steps at which a complete model is exported to OUT/checkpoints/step-N")
    ap.add_argument("--channels1", type=int, nargs="+", default=list(STAGE1["channels"]))
    ap.add_argument("--channels2", type=int, nargs="+", default=list(STAGE2["channels"]))
    ap.add_argument("--patch2", type=int, nargs=3, default=list(STAGE2["patch"]))
    ap.add_argument("--ema", type=float, default=0.999,
                    help="decay of the exponential moving average of the weights that is exported (0: the last weights)")
    ap.add_argument("--dilation-voxels", type=int, default=8,
                    help="the manifest's stage-1 region growth, in stage-2 voxels")
    ap.add_argument("--real-share", type=float, default=0.5,
                    help="share of the samples drawn from the real CT volumes (the rest from rendered ones)")
    ap.add_argument("--kidney-displacement", type=float, default=AUGMENT["kidney_displacement"],
                    help="share of the rendered crops with one kidney moved (displace_kidney)")
    ap.add_argument("--save-every", type=int, default=100, help="steps between saved training states")
    ap.add_argument("--seed", type=int, default=20261207)
    ap.add_argument("--version", default="3.0.0")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "onnx" / "abdomen-cascade")
    args = ap.parse_args()
    STAGE1["channels"], STAGE2["channels"] = tuple(args.channels1), tuple(args.channels2)
    STAGE2["patch"] = tuple(args.patch2)
    AUGMENT["kidney_displacement"] = args.kidney_displacement
    args.out.mkdir(parents=True, exist_ok=True)
    log_file = (args.out / "training-log.txt").open("a")

    def log(msg):
        print(msg, flush=True)
        log_file.write(msg + "\n")
        log_file.flush()

    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads; stage 1 {STAGE1}, stage 2 {STAGE2}")
    real = load_training_volumes(tissues=True)
    synthetic, prepare_seconds = load_synthetic_anatomies(args.out / "synthetic", log)
    # The rendered share is split by phases, so an anatomy rendered in three phases is
    # drawn three times as often as one phase would be.
    phases = np.array([len(p) for *_, p in synthetic], dtype=float)
    shares = np.concatenate([np.full(len(real), args.real_share / len(real)),
                             (1 - args.real_share) * phases / phases.sum()])
    stage1, stage2 = [], []
    for name, hu, labels, spacing, tissues in real:
        log(f"{name}: {hu.shape} at {spacing} mm; label voxels {np.bincount(labels.ravel(), minlength=CLASSES).tolist()}")
        one, two = stage_grids(labels, spacing, hu=hu, tissues=tissues)
        stage1.append(one)
        stage2.append(two)
    for name, labels, spacing, arrays, phases in synthetic:
        log(f"{name} (rendered, {'/'.join(phases)}): {labels.shape} at {spacing} mm; "
            f"label voxels {np.bincount(labels.ravel(), minlength=CLASSES).tolist()}")
        one, two = stage_grids(labels, spacing, rendered=(arrays, phases))
        stage1.append(one)
        stage2.append(two)
    model1, seconds1 = train_stage("stage1", stage1, shares, STAGE1, 2, args.steps1, args.seed, 0.6, log,
                                   args.out / "state-stage1.pt", args.save_every, args.ema)
    sha1, d1 = export_onnx(model1, STAGE1["patch"], 2, args.out / "stage1.onnx")
    wanted = {int(s) for s in args.checkpoints.split(",") if s}

    def checkpoint(step, model):
        if step not in wanted:
            return
        out = args.out / "checkpoints" / f"step-{step}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "stage1.onnx").write_bytes((args.out / "stage1.onnx").read_bytes())
        sha2, _ = export_onnx(model, STAGE2["patch"], CLASSES, out / "stage2.onnx")
        write_manifest(out, sha1, sha2, f"{args.version}+step{step}", args.dilation_voxels)
        log(f"checkpoint {out.relative_to(args.out)}")

    model2, seconds2 = train_stage("stage2", stage2, shares, STAGE2, CLASSES, args.steps2, args.seed + 1, 0.85,
                                   log, args.out / "state-stage2.pt", args.save_every, args.ema, checkpoint)
    sha2, d2 = export_onnx(model2, STAGE2["patch"], CLASSES, args.out / "stage2.onnx")
    log(f"exported; ONNX vs PyTorch max difference {d1:.2e} (stage 1), {d2:.2e} (stage 2)")
    write_manifest(args.out, sha1, sha2, args.version, args.dilation_voxels)
    seconds = prepare_seconds + seconds1 + seconds2
    log(f"total training time {seconds:.0f} s (preparing the rendered anatomies {prepare_seconds:.0f} s, stage 1 {seconds1:.0f} s, "
        f"stage 2 {seconds2:.0f} s)")
    (args.out / "training.json").write_text(json.dumps({
        "seed": args.seed, "steps1": args.steps1, "steps2": args.steps2, "checkpoints": sorted(wanted),
        "channels1": STAGE1["channels"], "channels2": STAGE2["channels"], "patch2": STAGE2["patch"],
        "ema": args.ema, "dilation_voxels": args.dilation_voxels, "real_share": args.real_share,
        "kidney_displacement": args.kidney_displacement,
        "training_sets": [name for name, *_ in real], "rendered": {name: p for name, *_, p in synthetic},
        "seconds": round(seconds), "prepare_seconds": round(prepare_seconds),
        "stage_seconds": [round(seconds1), round(seconds2)], "torch": torch.__version__,
    }, indent=2))


if __name__ == "__main__":
    main()
