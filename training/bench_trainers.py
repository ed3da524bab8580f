"""Trainer speed on this machine: one training step (forward, backward, Adam) of the
default cascade's 3D U-Net (train.py: two poolings, 3x3x3 convolutions, patch 24x48x48,
batch 2, 7 classes, cross-entropy plus soft Dice), with JAX (the current trainer, in .venv-train) or
PyTorch (oneDNN on CPU, in .venv-nnunet): float32, channels-last 3D, bfloat16 autocast.

    .venv-train/bin/python training/bench_trainers.py jax --channels 8 16 32
    .venv-nnunet/bin/python training/bench_trainers.py torch --channels 8 16 32 [--channels-last] [--bf16]

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


def bench_jax(channels, steps, warmup):
    import sys
    import pathlib

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from train import init_unet, make_step

    params = init_unet(jax.random.PRNGKey(0), channels, CLASSES)
    opt = optax.adam(1e-3)
    state = opt.init(params)
    step = make_step(opt, CLASSES)

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
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.a = nn.Conv3d(cin, cout, 3, padding=1)
            self.b = nn.Conv3d(cout, cout, 3, padding=1)

        def forward(self, x):
            return F.relu(self.b(F.relu(self.a(x))))

    class UNet(nn.Module):
        """train.py's network: the same layers, in PyTorch."""

        def __init__(self, c):
            super().__init__()
            c0, c1, c2 = c
            self.e0, self.e1, self.bn = Block(1, c0), Block(c0, c1), Block(c1, c2)
            self.d1, self.d0 = Block(c2 + c1, c1), Block(c1 + c0, c0)
            self.head = nn.Conv3d(c0, CLASSES, 1)

        def forward(self, x):
            e0 = self.e0(x)
            e1 = self.e1(F.max_pool3d(e0, 2))
            bn = self.bn(F.max_pool3d(e1, 2))
            d1 = self.d1(torch.cat([F.interpolate(bn, scale_factor=2, mode="nearest"), e1], 1))
            d0 = self.d0(torch.cat([F.interpolate(d1, scale_factor=2, mode="nearest"), e0], 1))
            return self.head(d0)

    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    model = UNet(channels).to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(BATCH, 1, *PATCH).to(memory_format=fmt)
    y = torch.randint(0, CLASSES, (BATCH, *PATCH))

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        # train.py's loss: cross-entropy plus soft Dice over the organs present.
        logits = logits.float()
        prob = logits.softmax(1)
        onehot = F.one_hot(y, CLASSES).permute(0, 4, 1, 2, 3).float()
        inter = (prob * onehot).sum((0, 2, 3, 4))
        present = onehot.sum((0, 2, 3, 4))
        dice = (2 * inter + 1) / (prob.sum((0, 2, 3, 4)) + present + 1)
        weight = (present[1:] > 0).float()
        loss = F.cross_entropy(logits, y) + (weight * (1 - dice[1:])).sum() / weight.sum().clamp(min=1)
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
