"""Trains the small nnU-Net v2 model that the node's nnU-Net parity test uses.

A real nnU-Net results folder, made by nnU-Net itself (`nnunetv2` from PyPI, on the CPU):
the two training patients (`train-ct-3mm`, `train-s0009`, their six organs), nnU-Net's own
fingerprint, planning and preprocessing, then a smaller network than nnU-Net plans for a
GPU (four stages, 8-64 features, patch 32x64x64) so that it trains on two cores in minutes
and its checkpoints are small enough to commit. Two folds, each trained on both patients
(two cases cannot make a five-fold split). Training is nnU-Net's own `nnUNetTrainer`
(its data loader, augmentation, deep-supervised Dice + cross-entropy loss, checkpoints)
with a CPU's schedule: fewer, shorter epochs and Adam (3e-3, poly decay) instead of SGD,
which learns nothing visible in five of nnU-Net's 250-iteration epochs on this CPU; fold 1
starts from fold 0's weights. The result, with each checkpoint's optimizer state dropped
(inference does not read it), is copied to `training/nnunet/model/`.

    .venv-nnunet/bin/python training/nnunet/make_model.py [--work var/nnunet]

`.venv-nnunet` is made by `training/nnunet/setup` (torch and nnunetv2 from PyPI, pinned).
"""

import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("SEGNODE_DATA", ROOT.parent / "shared" / "data"))
DATASET_ID = 601
DATASET = f"Dataset{DATASET_ID:03d}_SegnodeAbdomen"
PLANS = "nnUNetPlans_small"
CONFIGURATION = "3d_fullres"
# TotalSegmentator v2 class ids of the training labels -> this dataset's labels.
LABELS = {"background": 0, "spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 4,
          "stomach": 5, "pancreas": 6}
SOURCE_IDS = {1: 1, 2: 2, 3: 3, 5: 4, 6: 5, 7: 6}
CASES = {"case_000": "train-ct-3mm", "case_001": "train-s0009"}


def run(*args, env):
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True, env=env)


def write_raw(raw: Path):
    images, labels = raw / "imagesTr", raw / "labelsTr"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for case, folder in CASES.items():
        ct = nib.load(DATA / folder / "ct.nii.gz")
        seg = nib.load(DATA / folder / "labels.nii.gz")
        source = np.asarray(seg.dataobj).astype(np.int32)
        mapped = np.zeros(source.shape, np.uint8)
        for old, new in SOURCE_IDS.items():
            mapped[source == old] = new
        nib.save(nib.Nifti1Image(np.asarray(ct.dataobj).astype(np.float32), ct.affine),
                 images / f"{case}_0000.nii.gz")
        nib.save(nib.Nifti1Image(mapped, seg.affine), labels / f"{case}.nii.gz")
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"},
        "labels": LABELS,
        "numTraining": len(CASES),
        "file_ending": ".nii.gz",
        "name": "segnode abdomen (two TotalSegmentator patients)",
        "licence": "train-ct-3mm: Apache-2.0 (TotalSegmentator test files); train-s0009: CC BY 4.0",
    }, indent=2))


def small_plans(preprocessed: Path):
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    plans["plans_name"] = PLANS
    config = plans["configurations"][CONFIGURATION]
    config["data_identifier"] = f"{PLANS}_{CONFIGURATION}"
    config["patch_size"] = [32, 64, 64]
    config["batch_size"] = 2
    arch = config["architecture"]["arch_kwargs"]
    arch.update({
        "n_stages": 4,
        "features_per_stage": [8, 16, 32, 64],
        "kernel_sizes": [[3, 3, 3]] * 4,
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
        "n_conv_per_stage": [2, 2, 2, 2],
        "n_conv_per_stage_decoder": [2, 2, 2],
    })
    plans["configurations"] = {CONFIGURATION: config}
    (preprocessed / f"{PLANS}.json").write_text(json.dumps(plans, indent=2))
    cases = sorted(CASES)
    (preprocessed / "splits_final.json").write_text(json.dumps(
        [{"train": cases, "val": [cases[1]]}, {"train": cases, "val": [cases[0]]}], indent=2))


TRAINER = "nnUNetTrainer"
# (epochs, iterations per epoch) of each fold; fold 1 continues from fold 0.
SCHEDULE = {0: (6, 100), 1: (2, 60)}
LEARNING_RATE = 3e-3


def train(fold: int, results: Path):
    """nnU-Net's trainer for one fold, with the CPU schedule."""
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args
    from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
    trainer = get_trainer_from_args(str(DATASET_ID), CONFIGURATION, fold, TRAINER, PLANS,
                                    device=torch.device("cpu"))
    trainer.num_epochs, trainer.num_iterations_per_epoch = SCHEDULE[fold]
    trainer.num_val_iterations_per_epoch = 10

    def configure_optimizers():
        optimizer = torch.optim.Adam(trainer.network.parameters(), LEARNING_RATE, weight_decay=3e-5)
        return optimizer, PolyLRScheduler(optimizer, LEARNING_RATE, trainer.num_epochs)

    trainer.configure_optimizers = configure_optimizers
    if fold > 0:
        trainer.initialize()
        start = torch.load(results / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        trainer.network.load_state_dict(start["network_weights"])
    trainer.run_training()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "nnunet")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "model")
    parser.add_argument("--reuse-preprocessed", action="store_true")
    args = parser.parse_args()
    work = args.work.resolve()
    os.environ.update(nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work / "preprocessed"),
                      nnUNet_results=str(work / "results"), nnUNet_compile="f", nnUNet_n_proc_DA="2")
    env = dict(os.environ)
    bin_dir = Path(sys.executable).parent
    started = time.time()
    if not args.reuse_preprocessed:
        write_raw(work / "raw" / DATASET)
        run(bin_dir / "nnUNetv2_extract_fingerprint", "-d", DATASET_ID, "-np", "2", env=env)
        run(bin_dir / "nnUNetv2_plan_experiment", "-d", DATASET_ID, env=env)
        small_plans(work / "preprocessed" / DATASET)
        run(bin_dir / "nnUNetv2_preprocess", "-d", DATASET_ID, "-plans_name", PLANS, "-c", CONFIGURATION,
            "-np", "1", env=env)
    import torch
    torch.manual_seed(20261202)
    results = work / "results" / DATASET / f"{TRAINER}__{PLANS}__{CONFIGURATION}"
    for fold in (0, 1):
        train(fold, results)
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    for name in ("dataset.json", "plans.json", "dataset_fingerprint.json"):
        shutil.copy(results / name, args.out / name)
    for fold in (0, 1):
        checkpoint = torch.load(results / f"fold_{fold}" / "checkpoint_final.pth", map_location="cpu",
                                weights_only=False)
        checkpoint["optimizer_state"] = None
        checkpoint["grad_scaler_state"] = None
        (args.out / f"fold_{fold}").mkdir()
        torch.save(checkpoint, args.out / f"fold_{fold}" / "checkpoint_final.pth")
        shutil.copy(results / f"fold_{fold}" / "progress.png", args.out / f"fold_{fold}" / "progress.png")
    (args.out / "training.json").write_text(json.dumps({
        "trainer": TRAINER, "plans": PLANS, "configuration": CONFIGURATION, "folds": [0, 1],
        "schedule": {str(f): {"epochs": e, "iterations_per_epoch": i} for f, (e, i) in SCHEDULE.items()},
        "optimizer": f"Adam {LEARNING_RATE}, poly decay",
        "seconds": round(time.time() - started), "nnunetv2": importlib.metadata.version("nnunetv2"),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }, indent=2))
    print(f"model in {args.out} ({round(time.time() - started)} s)")


if __name__ == "__main__":
    main()
