#!/usr/bin/env python3
"""Makes TotalSegmentator-shaped nnU-Net results folders with generated weights, laid out
exactly as a site unpacks the released ones, for `segnode import-nnunet` tests and
benchmarks (the released weights cannot be fetched on these machines).

    .venv-nnunet/bin/python scripts/totalsegmentator_fixture.py OUT [--tasks 297,291,...] [--seed 0]

For each task: OUT/<dataset folder>/<trainer>__nnUNetPlans__3d_fullres/ with plans.json and
dataset.json, and fold_0/checkpoint_final.pth in nnU-Net's checkpoint format (network
weights, trainer name, init arguments, no mirroring), the network built by nnU-Net's own
trainer class from the plans (legacy layout and all) and initialised with a seeded
generator. Tasks:

  297  `total` at 3 mm (117 classes), trainer nnUNetTrainer_4000epochs_NoMirroring
  291  first 1.5 mm `total` part (organs, 24 classes), trainer nnUNetTrainerNoMirroring
  292..295  the other four parts (vertebrae, cardiac, muscles, ribs): Dataset291's plans
       (the same network, as the plans' README says), their labels from TotalSegmentator's
       own class map (the PyPI package, downloaded without its dependencies)

Plans and dataset.json of 297 and 291 come from ../shared/data/totalsegmentator-plans
(SEGNODE_DATA overrides ../shared/data).
"""

import argparse
import copy
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("SEGNODE_DATA", ROOT.parent / "shared" / "data"))
PLANS = DATA / "totalsegmentator-plans"
TS_VERSION = "2.18.0"

TASKS = {
    297: ("Dataset297_TotalSegmentator_total_3mm_1559subj", "nnUNetTrainer_4000epochs_NoMirroring",
          "Dataset297_total_3mm", None),
    291: ("Dataset291_TotalSegmentator_part1_organs_1559subj", "nnUNetTrainerNoMirroring",
          "Dataset291_organs", None),
    292: ("Dataset292_TotalSegmentator_part2_vertebrae_1532subj", "nnUNetTrainerNoMirroring",
          "Dataset291_organs", "class_map_part_vertebrae"),
    293: ("Dataset293_TotalSegmentator_part3_cardiac_1559subj", "nnUNetTrainerNoMirroring",
          "Dataset291_organs", "class_map_part_cardiac"),
    294: ("Dataset294_TotalSegmentator_part4_muscles_1559subj", "nnUNetTrainerNoMirroring",
          "Dataset291_organs", "class_map_part_muscles"),
    295: ("Dataset295_TotalSegmentator_part5_ribs_1559subj", "nnUNetTrainerNoMirroring",
          "Dataset291_organs", "class_map_part_ribs"),
}


def class_map_5_parts():
    """TotalSegmentator's labels of the five 1.5 mm parts, from its package on PyPI."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        f"totalsegmentator=={TS_VERSION}", "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        source = zipfile.ZipFile(wheel).read("totalsegmentator/map_to_binary.py")
        path = Path(tmp) / "map_to_binary.py"
        path.write_bytes(source)
        spec = importlib.util.spec_from_file_location("map_to_binary", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.class_map_5_parts


def make(task, out, seed, parts):
    import torch
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    import nnunetv2

    folder_name, trainer_name, source, part = TASKS[task]
    plans = json.loads((PLANS / source / "plans.json").read_text())
    dataset = json.loads((PLANS / source / "dataset.json").read_text())
    if part is not None:
        plans = copy.deepcopy(plans)
        plans["dataset_name"] = folder_name
        labels = {"background": 0, **{name: value for value, name in sorted(parts[part].items())}}
        dataset = {**dataset, "labels": labels}
    folder = out / folder_name / f"{trainer_name}__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))

    manager = PlansManager(plans)
    configuration = manager.get_configuration("3d_fullres")
    heads = manager.get_label_manager(dataset).num_segmentation_heads
    trainer = recursive_find_python_class(str(Path(nnunetv2.__path__[0]) / "training" / "nnUNetTrainer"),
                                          trainer_name, "nnunetv2.training.nnUNetTrainer")
    torch.manual_seed(seed + task)
    network = trainer.build_network_architecture(manager, configuration, 1, heads,
                                                 enable_deep_supervision=False)
    checkpoint = {
        "network_weights": network.state_dict(),
        "optimizer_state": None,
        "grad_scaler_state": None,
        "logging": {},
        "_best_ema": None,
        "current_epoch": 4000 if "4000epochs" in trainer_name else 1000,
        "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0,
                      "dataset_json": dataset, "device": "cpu"},
        "trainer_name": trainer_name,
        "inference_allowed_mirroring_axes": None,
    }
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    weights = sum(p.numel() for p in network.parameters())
    print(f"{folder.relative_to(out)}: {heads} outputs, {weights / 1e6:.1f} M weights, seed {seed + task}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--tasks", default="297,291", help="comma-separated task ids (297, 291..295)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tasks = [int(t) for t in args.tasks.split(",")]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        sys.exit(f"unknown task(s) {unknown}: choose from {sorted(TASKS)}")
    parts = class_map_5_parts() if any(TASKS[t][3] for t in tasks) else None
    for task in tasks:
        make(task, args.out, args.seed, parts)


if __name__ == "__main__":
    main()
