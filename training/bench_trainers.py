"""Trainer speed on this machine: one training step (forward, backward, Adam) of a 3D
U-Net with model 2.0.0's layout (two poolings, 3x3x3 convolutions, patch 24x48x48, batch
2, 7 classes, cross-entropy plus soft Dice), with JAX (model 2.0.0's trainer, kept here)
or PyTorch (train.py's network and loss; oneDNN on CPU): float32, channels-last 3D,
bfloat16 autocast. Both run in .venv-train.

    .venv-train/bin/python training/bench_trainers.py jax --channels 8 16 32
    .venv-train/bin/python training/bench_trainers.py torch --channels 8 16 32 [--channels-last] [--bf16]

Prints one JSON line: steps per second and the convolutions' GFLOP/s (a training step
counts three times the forward pass's multiply-adds, times two), after warm-up steps.
Random data: the speed does not depend on the values.
"""

import argparse
import json
import os
import time

PATCH = (24, 48, 48)
BATCH = 2
CLASSES = 7


def conv_flops(channels):
    """Multiply-adds x 2 of the forward pass's convolutions, per sample."""
    c0, c1, c2 = channels
    d, h, w = PATCH
    level = [d * h * w, d * h * w // 8, d * h * w // 64]
    convs = [
        (0, 1, c0), (0, c0, c0), (1, c0, c1), (1, c1, c1), (2, c1, c2), (2, c2, c2),
        (1, c2 + c1, c1), (1, c1, c1), (0, c1 + c0, c0), (0, c0, c0),
    ]
    total = sum(level[lv] * 27 * cin * cout for lv, cin, cout in convs)
    total += level[0] * c0 * CLASSES
    return 2 * total


def jax_step(opt, classes):
    """Model 2.0.0's JAX training step (its network, loss and Adam update), compiled."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

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

    @jax.jit
    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y, classes)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    return init_unet, step


def bench_jax(channels, steps, warmup):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    opt = optax.adam(1e-3)
    init_unet, step = jax_step(opt, CLASSES)
    params = init_unet(jax.random.PRNGKey(0), channels, CLASSES)
    state = opt.init(params)

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(BATCH, *PATCH, 1)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, CLASSES, size=(BATCH, *PATCH)))
    for _ in range(warmup):
        params, state, loss = step(params, state, x, y)
    loss.block_until_ready()
    started = time.perf_counter()
    for _ in range(steps):
        params, state, loss = step(params, state, x, y)
    loss.block_until_ready()
    return time.perf_counter() - started, {"jax": jax.__version__}


def bench_torch(channels, steps, warmup, channels_last, bf16):
    import sys
    import pathlib

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import torch
    from train import UNet, loss_fn

    torch.manual_seed(0)

    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    model = UNet(channels, CLASSES).to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(BATCH, 1, *PATCH).to(memory_format=fmt)
    y = torch.randint(0, CLASSES, (BATCH, *PATCH))

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = loss_fn(logits, y, CLASSES)
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - started, {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("engine", choices=["jax", "torch"])
    p.add_argument("--channels", type=int, nargs=3, default=[8, 16, 32])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--bf16", action="store_true")
    a = p.parse_args()
    if a.engine == "jax":
        seconds, versions = bench_jax(a.channels, a.steps, a.warmup)
    else:
        seconds, versions = bench_torch(a.channels, a.steps, a.warmup, a.channels_last, a.bf16)
    per_step = seconds / a.steps
    flops = 3 * conv_flops(a.channels) * BATCH
    print(json.dumps({
        "engine": a.engine, "channels": a.channels, "channels_last": a.channels_last,
        "bf16": a.bf16, "cores": os.cpu_count(), "steps": a.steps,
        "seconds_per_step": round(per_step, 3), "steps_per_minute": round(60 / per_step, 1),
        "gflops": round(flops / per_step / 1e9, 2), **versions,
    }))


if __name__ == "__main__":
    main()
