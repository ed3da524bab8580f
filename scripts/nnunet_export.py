"""Exports an nnU-Net v2 results folder for `segnode import-nnunet` (which runs this
script and writes the model's manifest from what it prints).

    python nnunet_export.py RESULTS_DIR --configuration C --out DIR [--folds 0,1] [--no-mirroring]

RESULTS_DIR is a training output folder (plans.json, dataset.json, fold_N/) or a folder
holding `Trainer__Plans__Configuration` folders, one of which is the configuration's.
Each fold's network goes to DIR/fold_N.onnx (opset 17, free batch size, input "input",
output "logits", at the planned patch size), checked against PyTorch with ONNX Runtime
on a random patch; one JSON object on stdout says what nnU-Net's inference needs.
Needs `torch`, `nnunetv2`, `onnx` and `onnxruntime` (see training/nnunet/setup).
"""

import argparse
import json
import sys
from pathlib import Path

DEFAULT_RESAMPLING = ("resample_data_or_seg_to_shape",
                      {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
                      {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None})


def fail(message):
    print(f"nnunet_export: {message}", file=sys.stderr)
    sys.exit(2)


def training_folder(results: Path, configuration: str) -> Path:
    if (results / "plans.json").is_file():
        return results
    found = sorted(p for p in results.iterdir() if p.is_dir() and p.name.endswith(f"__{configuration}"))
    if len(found) != 1:
        fail(f"{results} holds {len(found)} training folders of configuration {configuration!r} "
             f"({', '.join(p.name for p in found) or 'none'}); give the one to import")
    return found[0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("results", type=Path)
    parser.add_argument("--configuration", required=True)
    parser.add_argument("--folds", default=None, help="comma-separated; default: every fold_N found")
    parser.add_argument("--checkpoint", default="checkpoint_final.pth")
    parser.add_argument("--no-mirroring", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import numpy as np
    import onnxruntime
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    folder = training_folder(args.results, args.configuration)
    folds = None if args.folds is None else [f if f == "all" else int(f) for f in args.folds.split(",")]
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=not args.no_mirroring,
                                device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), folds, args.checkpoint)
    folds = folds if folds is not None else predictor.auto_detect_available_folds(str(folder), args.checkpoint)
    plans = predictor.plans_manager
    config = predictor.configuration_manager
    labels = predictor.label_manager
    dataset = predictor.dataset_json
    trained = torch.load(folder / f"fold_{folds[0]}" / args.checkpoint, map_location="cpu", weights_only=False)
    if trained["init_args"]["configuration"] != args.configuration:
        fail(f"{folder} was trained as configuration {trained['init_args']['configuration']!r}, "
             f"not {args.configuration!r}")
    if len(config.patch_size) != 3:
        fail("only 3D configurations run in the node (this one is 2D)")
    if labels.has_regions:
        fail("region-based models (overlapping labels) are not supported")
    channels = dataset["channel_names"] if "channel_names" in dataset else dataset["modality"]
    if len(channels) != 1:
        fail(f"the node feeds one CT channel; this model takes {len(channels)} ({channels})")
    scheme = config.normalization_schemes[0]
    if scheme not in ("CTNormalization", "ZScoreNormalization"):
        fail(f"normalisation {scheme} is not supported (CTNormalization and ZScoreNormalization are)")
    if scheme == "ZScoreNormalization" and config.use_mask_for_norm[0]:
        fail("z-score normalisation within the non-zero mask is not supported")
    name, data_kwargs, prob_kwargs = DEFAULT_RESAMPLING
    resampling = (config.configuration.get("resampling_fn_data"),
                  config.configuration.get("resampling_fn_data_kwargs"),
                  config.configuration.get("resampling_fn_probabilities"),
                  config.configuration.get("resampling_fn_probabilities_kwargs"))
    if resampling != (name, data_kwargs, name, prob_kwargs):
        fail(f"resampling {resampling} differs from nnU-Net's default, which the node follows")

    args.out.mkdir(parents=True, exist_ok=True)
    network = predictor.network.eval()
    patch = [int(v) for v in config.patch_size]
    rng = np.random.default_rng(0)
    probe = torch.from_numpy(rng.standard_normal((2, 1, *patch)).astype(np.float32))
    exported = []
    for fold, parameters in zip(folds, predictor.list_of_parameters):
        network.load_state_dict(parameters)
        path = args.out / f"fold_{fold}.onnx"
        with torch.no_grad():
            torch.onnx.export(network, probe[:1], str(path), input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                              dynamo=False)
            expected = network(probe).numpy()
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(["logits"], {"input": probe.numpy()})[0]
        exported.append({"fold": fold, "file": path.name, "max_abs_difference": float(np.abs(got - expected).max())})

    intensity = plans.foreground_intensity_properties_per_channel["0"]
    mirror = [] if args.no_mirroring or predictor.allowed_mirroring_axes is None \
        else [int(a) for a in predictor.allowed_mirroring_axes]
    print(json.dumps({
        "dataset": plans.dataset_name,
        "plans": plans.plans_name,
        "configuration": args.configuration,
        "trainer": trained["trainer_name"],
        "folder": folder.name,
        "folds": exported,
        "patch_size": patch,
        "spacing": [float(v) for v in config.spacing],
        "transpose_forward": [int(v) for v in plans.transpose_forward],
        "transpose_backward": [int(v) for v in plans.transpose_backward],
        "normalization": scheme,
        "clip": [float(intensity["percentile_00_5"]), float(intensity["percentile_99_5"])],
        "mean": float(intensity["mean"]),
        "std": float(intensity["std"]),
        "mirror_axes": mirror,
        "labels": {k: int(v) for k, v in labels.label_dict.items()},
        "channel": next(iter(channels.values())),
        "num_classes": int(labels.num_segmentation_heads),
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
    }))


if __name__ == "__main__":
    main()
