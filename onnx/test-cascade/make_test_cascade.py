#!/usr/bin/env python3
"""Builds the tiny test cascade (a few kB) that the tests run in seconds.

Both stages are hand-weighted 3D fully convolutional networks (no training): a 3x3x3
averaging convolution, then 1x1x1 convolutions with ReLU that turn HU ranges into
class logits. Stage 1 (6 mm grid) marks soft tissue (about 25..275 HU) as the
candidate region; stage 2 (3 mm grid) labels soft tissue (1) and bone (2, above
about 400 HU) inside it. The manifest's checksums are written from the files.

Usage: .venv/bin/python onnx/test-cascade/make_test_cascade.py
"""

import hashlib
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = pathlib.Path(__file__).resolve().parent


def conv(name, inp, out, weights, bias, pads):
    w = numpy_helper.from_array(np.asarray(weights, dtype=np.float32), f"{name}_w")
    b = numpy_helper.from_array(np.asarray(bias, dtype=np.float32), f"{name}_b")
    node = helper.make_node("Conv", [inp, w.name, b.name], [out], pads=pads, name=name)
    return node, [w, b]


def network(patch, heads_w, heads_b, mix_w, mix_b, classes, path):
    smooth_w = np.full((1, 1, 3, 3, 3), 1.0 / 27.0)
    nodes, inits = [], []
    for n, i in [
        conv("smooth", "image", "s", smooth_w, [0.0], [1] * 6),
        conv("heads", "s", "a", heads_w, heads_b, [0] * 6),
    ]:
        nodes.append(n)
        inits += i
    nodes.append(helper.make_node("Relu", ["a"], ["h"], name="relu"))
    n, i = conv("mix", "h", "logits", mix_w, mix_b, [0] * 6)
    nodes.append(n)
    inits += i
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, *patch])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes, *patch])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="segnode")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    k = lambda v: np.asarray(v, dtype=np.float32).reshape(len(v), -1, 1, 1, 1)
    # Stage 1: window [-500, 500] -> s = HU / 500. h0 = relu(s), h1 = relu(s - 0.3);
    # candidate logit 10 h0 - 20 h1 - 0.5 > 0 for 0.05 < s < 0.55 (25..275 HU).
    sha1 = network(
        [8, 32, 32],
        k([1.0, 1.0]), [0.0, -0.3],
        k([[0.0, 0.0], [10.0, -20.0]]), [0.0, -0.5],
        2, HERE / "stage1.onnx",
    )
    # Stage 2: window [-1000, 1000] -> s = HU / 1000. h = relu(s - [0, 0.15, 0.4]);
    # soft tissue 20 h0 - 40 h1 - 0.5 > 0 for 0.025 < s < 0.275; bone 20 h2 - 0.1 > 0 for s > 0.405.
    sha2 = network(
        [16, 32, 32],
        k([1.0, 1.0, 1.0]), [0.0, -0.15, -0.4],
        k([[0.0, 0.0, 0.0], [20.0, -40.0, 0.0], [0.0, 0.0, 20.0]]), [0.0, -0.5, -0.1],
        3, HERE / "stage2.onnx",
    )
    manifest = (HERE / "model.toml.in").read_text()
    (HERE / "model.toml").write_text(manifest.replace("@STAGE1_SHA256@", sha1).replace("@STAGE2_SHA256@", sha2))


if __name__ == "__main__":
    main()
