#!/usr/bin/env python3
"""Trains segnode's default abdominal cascade and exports it to onnx/abdomen-cascade/.

Data: the training sets of ../shared/data/README.md only (training_data.TRAINING_SETS:
two patients with TotalSegmentator labels). Checkpoints are chosen afterwards, outside
this script (training/choose_checkpoint.py).

Stage 1: a small 3D U-Net on the 6 mm grid, organ vs background (the candidate region).
Stage 2: a small 3D U-Net on the 3 mm grid, six organs, trained on crops around the
labels (as Roth et al. 2018 do), half of them centred on an organ drawn uniformly among
those the patient has, with the augmentation two training volumes need: intensity
scale/shift, noise, scaling, rotation about the head-feet axis, elastic deformation, and
partial fields of view (slabs padded like the node pads). No left-right mirroring: the
node maps every series into the model's frame, so the network never sees a mirrored
patient, and a mirror would teach it that the left and right kidney are the same.
JAX on CPU, fixed seed. Export: the trained weights are written into ONNX graphs (Conv,
Relu, MaxPool, Resize nearest, Concat) and checked against the JAX forward pass with ONNX
Runtime, then model.toml is written with the files' checksums; stage 2 is also exported
at each checkpoint step into OUT/checkpoints/step-N/ (complete models).

Usage: training/run  (sets up .venv-train and runs this; see training/README.md)
"""

import argparse
import hashlib
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import optax
from onnx import TensorProto, helper, numpy_helper
from scipy import ndimage

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from reference_cascade import normalize, resample_linear, resample_nearest  # noqa: E402  (the node's semantics)
from training_data import LABELS, load_training_volumes  # noqa: E402

CLASSES = len(LABELS) + 1
WINDOW = (-500.0, 500.0)
STAGE1 = dict(spacing=6.0, patch=(24, 48, 48), channels=(8, 16, 32))
STAGE2 = dict(spacing=3.0, patch=(24, 48, 48), channels=(8, 16, 32))
AIR = -1024.0


# ---------------------------------------------------------------- the network

def init_unet(key, channels, classes):
    c0, c1, c2 = channels
    shapes = {
        "e0a": (1, c0), "e0b": (c0, c0), "e1a": (c0, c1), "e1b": (c1, c1),
        "bna": (c1, c2), "bnb": (c2, c2), "d1a": (c2 + c1, c1), "d1b": (c1, c1),
        "d0a": (c1 + c0, c0), "d0b": (c0, c0),
    }
    params = {}
    for name, (cin, cout) in shapes.items():
        key, k = jax.random.split(key)
        params[name] = {
            "w": jax.random.normal(k, (3, 3, 3, cin, cout)) * np.sqrt(2.0 / (27 * cin)),
            "b": jnp.zeros(cout),
        }
    key, k = jax.random.split(key)
    params["head"] = {"w": jax.random.normal(k, (1, 1, 1, c0, classes)) * np.sqrt(1.0 / c0), "b": jnp.zeros(classes)}
    return params


def conv(x, p):
    y = jax.lax.conv_general_dilated(x, p["w"], (1, 1, 1), "SAME", dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    return y + p["b"]


def block(x, params, a, b):
    return jax.nn.relu(conv(jax.nn.relu(conv(x, params[a])), params[b]))


def pool(x):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 2, 1), (1, 2, 2, 2, 1), "VALID")


def up(x):
    for axis in (1, 2, 3):
        x = jnp.repeat(x, 2, axis=axis)
    return x


def unet(params, x):
    e0 = block(x, params, "e0a", "e0b")
    e1 = block(pool(e0), params, "e1a", "e1b")
    bn = block(pool(e1), params, "bna", "bnb")
    d1 = block(jnp.concatenate([up(bn), e1], axis=-1), params, "d1a", "d1b")
    d0 = block(jnp.concatenate([up(d1), e0], axis=-1), params, "d0a", "d0b")
    return conv(d0, params["head"])


def loss_fn(params, x, y, classes):
    logits = unet(params, x)
    onehot = jax.nn.one_hot(y, classes)
    ce = -jnp.mean(jnp.sum(onehot * jax.nn.log_softmax(logits), axis=-1))
    prob = jax.nn.softmax(logits)
    inter = jnp.sum(prob * onehot, axis=(0, 1, 2, 3))
    present = jnp.sum(onehot, axis=(0, 1, 2, 3))
    denom = jnp.sum(prob, axis=(0, 1, 2, 3)) + present
    dice = (2 * inter + 1.0) / (denom + 1.0)
    # Soft Dice over the organs present in the batch only: for an absent organ the term
    # would be 1 / (its predicted mass + 1), which pushes the organ towards never being
    # predicted (with class-balanced crops most organs are absent from most batches);
    # cross-entropy alone handles it there.
    weight = (present[1:] > 0).astype(dice.dtype)
    return ce + jnp.sum(weight * (1.0 - dice[1:])) / jnp.maximum(jnp.sum(weight), 1.0)


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


def sample(rng, hu, labels, tissues, pools, patch, foreground_p):
    """One augmented training patch: (normalised image, labels). With probability
    `foreground_p` the crop is centred on a labelled voxel: half of the time any
    labelled voxel (big organs dominate), half of the time an organ drawn uniformly
    first (small organs get seen); otherwise anywhere."""
    shape = np.array(hu.shape)
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
    image = ndimage.map_coordinates(hu, coords, order=1, mode="constant", cval=AIR).astype(np.float32)
    label = ndimage.map_coordinates(labels, coords, order=0, mode="constant", cval=0).astype(np.int32)
    tissue = ndimage.map_coordinates(tissues, coords, order=0, mode="constant", cval=0).astype(np.int32)
    image += ndimage.gaussian_filter(contrast_offsets(rng)[tissue], sigma=0.7)
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


def make_step(opt, classes):
    """One training step, compiled: the loss's gradient, then `opt`'s update."""

    @jax.jit
    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y, classes)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    return step


def train_stage(name, volumes, cfg, classes, steps, seed, foreground_p, log, checkpoint=None):
    """Trains one stage on `volumes`, [(hu, labels, strata, tissues)] on this stage's grid
    (labels: what the network learns; strata: the organ labels the crop centres come from;
    tissues: the contrast augmentation's tissue map). Each
    sample comes from a volume drawn uniformly. `checkpoint(step, params)` is called
    after every step."""
    rng = np.random.default_rng(seed)
    pools = [centre_pools(strata) for _, _, strata, _ in volumes]
    params = init_unet(jax.random.PRNGKey(seed), cfg["channels"], classes)
    schedule = optax.cosine_decay_schedule(2e-3, steps, alpha=0.05)
    opt = optax.adam(schedule)
    state = opt.init(params)
    step = make_step(opt, classes)

    started = time.time()
    for i in range(steps):
        batch = []
        for _ in range(2):
            v = rng.integers(len(volumes))
            hu, labels, _, tissues = volumes[v]
            batch.append(sample(rng, hu, labels, tissues, pools[v], cfg["patch"], foreground_p))
        x = jnp.asarray(np.stack([b[0] for b in batch])[..., None])
        y = jnp.asarray(np.stack([b[1] for b in batch]))
        params, state, loss = step(params, state, x, y)
        if i % 50 == 0 or i == steps - 1:
            log(f"{name} step {i}/{steps} loss {float(loss):.4f} ({time.time() - started:.0f} s)")
        if checkpoint:
            checkpoint(i + 1, params)
    return params


# ---------------------------------------------------------------- ONNX export

def export_onnx(params, patch, classes, path):
    inits, nodes = [], []

    def c(inp, out, p, name, pads):
        w = np.transpose(np.asarray(p["w"]), (4, 3, 0, 1, 2)).astype(np.float32)  # DHWIO -> OIDHW
        inits.append(numpy_helper.from_array(w, f"{name}_w"))
        inits.append(numpy_helper.from_array(np.asarray(p["b"], np.float32), f"{name}_b"))
        nodes.append(helper.make_node("Conv", [inp, f"{name}_w", f"{name}_b"], [out], pads=[pads] * 6, name=name))

    def blk(inp, a, b):
        c(inp, f"{a}_c", params[a], a, 1)
        nodes.append(helper.make_node("Relu", [f"{a}_c"], [f"{a}_r"]))
        c(f"{a}_r", f"{b}_c", params[b], b, 1)
        nodes.append(helper.make_node("Relu", [f"{b}_c"], [f"{b}_r"]))
        return f"{b}_r"

    def mp(inp, out):
        nodes.append(helper.make_node("MaxPool", [inp], [out], kernel_shape=[2, 2, 2], strides=[2, 2, 2]))
        return out

    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2, 2], np.float32), "scales"))

    def upsample(inp, out):
        nodes.append(helper.make_node("Resize", [inp, "", "scales"], [out], mode="nearest",
                                      coordinate_transformation_mode="asymmetric", nearest_mode="floor"))
        return out

    e0 = blk("image", "e0a", "e0b")
    e1 = blk(mp(e0, "p0"), "e1a", "e1b")
    bn = blk(mp(e1, "p1"), "bna", "bnb")
    nodes.append(helper.make_node("Concat", [upsample(bn, "u1"), e1], ["cat1"], axis=1))
    d1 = blk("cat1", "d1a", "d1b")
    nodes.append(helper.make_node("Concat", [upsample(d1, "u0"), e0], ["cat0"], axis=1))
    d0 = blk("cat0", "d0a", "d0b")
    c(d0, "logits", params["head"], "head", 0)
    graph = helper.make_graph(
        nodes, path.stem,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, *patch])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes, *patch])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="segnode-training")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    # The exported graph computes what JAX computes.
    x = np.random.default_rng(0).uniform(-1, 1, (1, *patch, 1)).astype(np.float32)
    expected = np.transpose(np.asarray(unet(params, jnp.asarray(x))), (0, 4, 1, 2, 3))
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["logits"], {"image": np.transpose(x, (0, 4, 1, 2, 3))})[0]
    diff = float(np.abs(expected - got).max())
    assert diff < 1e-3, f"{path.name}: ONNX and JAX differ by {diff}"
    return hashlib.sha256(path.read_bytes()).hexdigest(), diff


def write_manifest(out, sha1, sha2, version):
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
description = "Two-stage 3D U-Net cascade (6 mm organ region, 3 mm organs) trained on two CT volumes"\nframe = "SPL"                     # array (z, y, x) grows towards the head, the back, the left

{stage(1, sha1, STAGE1, 0.5)}
{stage(2, sha2, STAGE2, 0.5)}
[cascade]
dilation_voxels = 5
body_mask = true
body_threshold_hu = -500.0

[postprocess]
largest_component = true
fill_holes = true

{labels}'''
    (out / "model.toml").write_text(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps1", type=int, default=500)
    ap.add_argument("--steps2", type=int, default=2000)
    ap.add_argument("--checkpoints", default="1200,1600,2000",
                    help="stage-2 steps at which a complete model is exported to OUT/checkpoints/step-N")
    ap.add_argument("--seed", type=int, default=20261202)
    ap.add_argument("--version", default="2.0.0")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "onnx" / "abdomen-cascade")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "training-log.txt"
    log_file = log_path.open("w")

    def log(msg):
        print(msg, flush=True)
        log_file.write(msg + "\n")
        log_file.flush()

    started = time.time()
    stage1, stage2 = [], []
    for name, hu, labels, spacing, tissues in load_training_volumes(tissues=True):
        log(f"{name}: {hu.shape} at {spacing} mm; label voxels {np.bincount(labels.ravel(), minlength=CLASSES).tolist()}")
        # Each stage's grid, made with the node's own resampling.
        g1 = [max(1, int(round(hu.shape[i] * spacing[i] / STAGE1["spacing"]))) for i in range(3)]
        g2 = [max(1, int(round(hu.shape[i] * spacing[i] / STAGE2["spacing"]))) for i in range(3)]
        organs1 = resample_nearest(labels, g1)
        stage1.append((resample_linear(hu, g1), (organs1 > 0).astype(np.uint8), organs1, resample_nearest(tissues, g1)))
        organs2 = resample_nearest(labels, g2)
        stage2.append((resample_linear(hu, g2), organs2, organs2, resample_nearest(tissues, g2)))
    params1 = train_stage("stage1", stage1, STAGE1, 2, args.steps1, args.seed, 0.6, log)
    sha1, d1 = export_onnx(params1, STAGE1["patch"], 2, args.out / "stage1.onnx")
    wanted = {int(s) for s in args.checkpoints.split(",") if s}

    def checkpoint(step, params):
        if step not in wanted:
            return
        out = args.out / "checkpoints" / f"step-{step}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "stage1.onnx").write_bytes((args.out / "stage1.onnx").read_bytes())
        sha2, _ = export_onnx(params, STAGE2["patch"], CLASSES, out / "stage2.onnx")
        write_manifest(out, sha1, sha2, f"{args.version}+step{step}")
        log(f"checkpoint {out.relative_to(args.out)} ({time.time() - started:.0f} s)")

    params2 = train_stage("stage2", stage2, STAGE2, CLASSES, args.steps2, args.seed + 1, 0.85, log, checkpoint)
    sha2, d2 = export_onnx(params2, STAGE2["patch"], CLASSES, args.out / "stage2.onnx")
    log(f"exported; ONNX vs JAX max difference {d1:.2e} (stage 1), {d2:.2e} (stage 2)")
    write_manifest(args.out, sha1, sha2, args.version)
    log(f"total training time {time.time() - started:.0f} s")
    (args.out / "training.json").write_text(json.dumps({
        "seed": args.seed, "steps1": args.steps1, "steps2": args.steps2, "checkpoints": sorted(wanted),
        "training_sets": [name for name, *_ in load_training_volumes()],
        "seconds": round(time.time() - started), "jax": jax.__version__,
    }, indent=2))


if __name__ == "__main__":
    main()
