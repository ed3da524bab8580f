#!/usr/bin/env python3
"""How well the node's quality checks (each organ's verdict ok/warn/fail and its reason
codes, made from the image and the label map alone) tell good results from bad ones,
measured against reference labels on an evaluation set built at run time in a
temporary folder (nothing derived is kept; the 3D-IRCADb files are only read).

  series    eval-ircadb-p1 (validation, manual masks by its make_labels.py) and the
            training volumes train-ct-3mm, train-s0009 (in sample: the good examples),
            written as axial DICOM series (LPS, z ascending towards the head)
  variants  original; cut_top40 (the slices of the upper 40 % of the labelled organs'
            extent along the slice normal, and all above, dropped); cut_mid40 (only the
            middle 40 % of that extent kept); noise40 (Gaussian noise, sigma 40 HU);
            thick (every second slice, spacing doubled); coarse (in-plane 2x2 block
            mean, reference by majority); contrast (an enhanced series made to look
            non-contrast: 40..200 HU pressed into 40..60 HU; a non-contrast one enhanced
            per tissue from its labels, as train.py's augmentation does)
  models    onnx/abdomen-cascade (the default), abdomen-cascade 1.0.0 from git history
            (the commit before d759c63), onnx/nnunet-reference (NNUNET_VARIANTS only:
            it is slower)
  test      ct-abdomen-j2k, once per model: reported only, never used to choose

One row per organ result: Dice against the reference, volumes, whether the reference
reaches the first or last slice or the in-plane edge of the series, the node's verdict,
reason codes and confidence fields. Organs in neither the reference nor the output are
skipped; an organ of the reference that the node did not output has no verdict to judge
and is counted apart as missed. Figures, of the series used for choosing and, apart,
of the test series:

  bad flagged   of the organ results with Dice < 0.5, the share flagged warn or fail
                (target >= 95 %)
  good ok       of the whole organs (reference on neither end slice nor in-plane edge)
                with Dice >= 0.85, the share left ok (target >= 80 %); and of all the
                organs with Dice >= 0.85, the share with no flag but a truncation that
                the reference confirms (it reaches an end slice or the in-plane edge)
  truncation    cut variants: of the organs whose reference reaches the first or last
                slice, the share flagged truncated (all, and those with Dice >= 0.5: the
                check reads the node's labels, so an organ it lost at the edge cannot be
                seen cut); of those whose reference lies wholly inside the grid, the
                share not flagged (target 100 % each); the same of the other variants

Then a sweep of each numeric confidence field (flagging an organ whose field is below t
as low_confidence, besides its verdict), which reason codes catch the bad results (and
how many each catches alone), which good results are flagged without a confirmed
truncation and which bad ones are left ok.

Usage (project root; needs target/release/segnode):
  .venv/bin/python training/evaluate_quality.py [--rows ROWS.json]
  .venv/bin/python training/evaluate_quality.py --from-rows ROWS.json
--rows keeps every row (to re-analyse without running the node); --from-rows only
analyses. Prints a JSON report on stdout and Markdown tables on stderr.
"""

import argparse
import dataclasses
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zlib

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from evaluate import DATA, ROOT, SEGNODE, reference_labels, run_node, score  # noqa: E402
from training_data import LABELS, load_training_volumes  # noqa: E402
from make_series import write_slice  # noqa: E402  (scripts/, put on the path by evaluate)
from orient_series import load, uid  # noqa: E402

MODEL_1_0_0 = "d759c63^"  # the commit whose onnx/abdomen-cascade is model 1.0.0
NNUNET = ROOT / "onnx" / "nnunet-reference"
NNUNET_VARIANTS = ("original", "cut_top40", "cut_mid40")
NOISE_HU = 40.0
# Contrast medium added to a non-contrast series (HU), by tissue of training_data's
# tissue map: the six organs by their label values, arteries 7, veins 8.
ENHANCEMENT = {1: 120, 2: 200, 3: 200, 4: 90, 5: 30, 6: 80, 7: 250, 8: 160}
ENHANCED_LIVER_HU = 80.0  # a reference liver brighter than this: the series is enhanced
BAD_DICE, GOOD_DICE = 0.5, 0.85


@dataclasses.dataclass
class Case:
    """A series as arrays: HU and reference labels (z, y, x), z ascending along the
    slice normal (+z, Image Orientation 1\\0\\0\\0\\1\\0), spacing (z, y, x) in mm, the
    patient position of voxel (0, 0, 0), and the tissue map where there is one."""
    name: str
    hu: np.ndarray
    spacing: list
    origin: list
    reference: np.ndarray
    names: dict
    tissues: np.ndarray | None = None


def ircadb_case(work):
    folder = work / "ircadb-labels"
    subprocess.run([sys.executable, DATA / "eval-ircadb-p1" / "make_labels.py", folder],
                   check=True, capture_output=True)
    reference, names = reference_labels(folder)
    slices, raw, spacing, _, origin = load(DATA / "eval-ircadb-p1" / "ct")
    assert [float(v) for v in slices[0].ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    hu = raw * float(slices[0].RescaleSlope) + float(slices[0].RescaleIntercept)
    return Case("eval-ircadb-p1", hu.astype(np.float32), spacing, list(origin), reference, names)


def training_cases():
    names = {str(value): name for value, name, *_ in LABELS}
    for name, hu, labels, spacing, tissues in load_training_volumes(tissues=True):
        origin = [-hu.shape[2] / 2 * spacing[2], -hu.shape[1] / 2 * spacing[1], 0.0]
        yield Case(name, hu, spacing, origin, labels, names, tissues)


def without_contrast(hu):
    """Enhanced soft tissue (40..200 HU) pressed into 40..60 HU; 200..400 HU stretched
    to 60..400 HU so that the mapping stays continuous; the rest as it was."""
    return np.interp(hu, [-4000, 40, 200, 400, 4000], [-4000, 40, 60, 400, 4000]).astype(np.float32)


def with_contrast(hu, tissues):
    lut = np.zeros(256, dtype=np.float32)
    for value, hu_added in ENHANCEMENT.items():
        lut[value] = hu_added
    return hu + ndimage.gaussian_filter(lut[tissues], 0.7)


def halve_in_plane(hu, reference):
    """2x2 blocks: the mean HU, and the label most of the four voxels have."""
    ny, nx = hu.shape[1] // 2 * 2, hu.shape[2] // 2 * 2

    def blocks(a):
        return [a[:, i:ny:2, j:nx:2] for i in (0, 1) for j in (0, 1)]
    votes = np.stack(blocks(reference))
    agree = (votes[:, None] == votes[None]).sum(1, dtype=np.uint8)
    return sum(blocks(hu)) / 4, np.take_along_axis(votes, agree.argmax(0)[None], 0)[0]


def variants(case):
    """(variant, HU, spacing, origin, reference) of each variant of `case`."""
    hu, ref, sp, origin = case.hu, case.reference, case.spacing, case.origin
    yield "original", hu, sp, origin, ref
    labelled = np.nonzero(ref.any(axis=(1, 2)))[0]  # the organs' extent along the slice normal
    bottom, span = int(labelled[0]), int(labelled[-1] + 1 - labelled[0])
    for variant, first, end in (("cut_top40", 0, bottom + round(0.6 * span)),
                                ("cut_mid40", bottom + round(0.3 * span), bottom + round(0.7 * span))):
        yield variant, hu[first:end], sp, [origin[0], origin[1], origin[2] + first * sp[0]], ref[first:end]
    rng = np.random.default_rng(zlib.crc32(case.name.encode()))
    yield "noise40", hu + rng.normal(0.0, NOISE_HU, hu.shape).astype(np.float32), sp, origin, ref
    yield "thick", hu[::2], [2 * sp[0], sp[1], sp[2]], origin, ref[::2]
    coarse, coarse_ref = halve_in_plane(hu, ref)
    yield ("coarse", coarse, [sp[0], 2 * sp[1], 2 * sp[2]],
           [origin[0] + sp[2] / 2, origin[1] + sp[1] / 2, origin[2]], coarse_ref)
    liver = next(int(v) for v, name in case.names.items() if name == "liver")
    if hu[ref == liver].mean() > ENHANCED_LIVER_HU:
        yield "contrast", without_contrast(hu), sp, origin, ref
    else:
        yield "contrast", with_contrast(hu, case.tissues), sp, origin, ref


def write_series(folder, hu, spacing, origin, series_id):
    """An axial CT series, one signed 16-bit HU slice per file, slice k at origin + k
    slices along +z."""
    folder.mkdir(parents=True)
    uids = (uid("segnode-quality", "study"), uid("segnode-quality", series_id),
            uid("segnode-quality", series_id, "frame"))
    for k, plane in enumerate(hu):
        write_slice(folder / f"CT{k:04d}.dcm", uids, k, plane, spacing, origin,
                    ("SEGNODE-QA", "Quality^Evaluation", "QA1"), series_id, signed=True)


def models(work):
    """{model key: folder}: the default, 1.0.0 from git history, the nnU-Net fixture."""
    old = work / "abdomen-cascade-1.0.0"
    old.mkdir()
    for name in ("model.toml", "stage1.onnx", "stage2.onnx"):
        blob = subprocess.run(["git", "-C", ROOT, "show", f"{MODEL_1_0_0}:onnx/abdomen-cascade/{name}"],
                              check=True, capture_output=True).stdout
        (old / name).write_bytes(blob)
    folders = [ROOT / "onnx" / "abdomen-cascade", old, NNUNET]
    keyed = {}
    for folder in folders:
        manifest = tomllib.loads((folder / "model.toml").read_text())
        keyed[f"{manifest['name']} {manifest['version']}"] = folder
    return keyed


def canonical_names(model):
    """The manifest's label names mapped to training_data's names, by SNOMED CT code
    (the nnU-Net fixture says kidney_right where the cascade says right kidney)."""
    by_code = {code: name for _, name, _, code, *_ in LABELS}
    manifest = tomllib.loads((model / "model.toml").read_text())
    return {label["name"]: by_code[label["type"]["value"]] for label in manifest["labels"]}


def organ_rows(model, series, out, reference, names, where):
    """Runs the node; one row per organ the reference labels that it or the node has."""
    labels, meta, summary, wall = run_node(model, series, out)
    canon = canonical_names(model)
    meta = {**meta, "labels": {v: canon[name] for v, name in meta["labels"].items()}}
    reference = reference.reshape(labels.shape)
    organs, _ = score(labels, meta, reference, names)
    reported = {canon[o["name"]]: o for o in (summary.get("sr") or {}).get("organs", [])}
    rows = []
    for value, name in names.items():
        o = organs[name]
        if not (o["ml_reference"] or o["ml_node"] or name in reported):
            continue
        mask = reference == int(value)
        node = reported.get(name)
        ours = {n: int(v) for v, n in meta["labels"].items()}
        drawn = np.flatnonzero((labels == ours.get(name, -1)).any(axis=(1, 2)))
        dz = meta["spacing_mm"][0]
        rows.append({**where, "organ": name, **o,
                     "ref_at_slice_edge": bool(mask[0].any() or mask[-1].any()),
                     "ref_at_fov_edge": bool(mask[:, [0, -1]].any() or mask[:, :, [0, -1]].any()),
                     "ref_at_ends": [bool(mask[0].any()), bool(mask[-1].any())],
                     # How far the node's organ stops short of the first and last slice.
                     "node_gap_mm": ([round(drawn[0] * dz, 1), round((len(labels) - 1 - drawn[-1]) * dz, 1)]
                                     if drawn.size else None),
                     "verdict": node["qa"]["verdict"] if node else None,
                     "reasons": node["qa"]["reasons"] if node else [],
                     "confidence": {k: v for k, v in (node or {}).get("confidence", {}).items()
                                    if isinstance(v, (int, float))}})
    return rows, round(wall, 2)


def collect():
    """Runs every model on every series of the set: (rows, runs)."""
    rows, runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        keyed = models(work)

        def run(key, series, reference, names, where):
            out = work / "out"
            found, wall = organ_rows(keyed[key], series, out, reference, names, {**where, "model": key})
            shutil.rmtree(out)
            rows.extend(found)
            runs.append({**where, "model": key, "wall_seconds": wall})
            print(f"{where['series']} {where['variant']} {key}: {wall} s", file=sys.stderr)

        for case in [ircadb_case(work), *training_cases()]:
            for variant, hu, spacing, origin, reference in variants(case):
                where = {"series": case.name, "variant": variant, "role": "choosing"}
                if case.name == "eval-ircadb-p1" and variant == "original":
                    series = DATA / "eval-ircadb-p1" / "ct"  # the published files themselves
                else:
                    series = work / "series"
                    write_series(series, hu, spacing, origin, f"{case.name}/{variant}")
                for key in keyed:
                    if keyed[key] != NNUNET or variant in NNUNET_VARIANTS:
                        run(key, series, reference, case.names, where)
                if series.is_relative_to(work):
                    shutil.rmtree(series)
        reference, names = reference_labels(DATA / "ct-abdomen-j2k-labels")
        for key in keyed:
            run(key, DATA / "ct-abdomen-j2k", reference, names,
                {"series": "ct-abdomen-j2k", "variant": "original", "role": "test"})
    return rows, runs


def low(row, field, threshold):
    return field is not None and row["confidence"].get(field, np.inf) < threshold


def flagged(row, field=None, threshold=None):
    """Warn or fail, or (in the sweep) `field` below `threshold`."""
    return row["verdict"] != "ok" or low(row, field, threshold)


def whole(row):
    return not (row["ref_at_slice_edge"] or row["ref_at_fov_edge"])


def unjustified(row, field=None, threshold=None):
    """Flagged for anything but a truncation that the reference confirms."""
    codes = {reason["code"] for reason in row["reasons"]}
    return bool(codes - {"truncated"}) or ("truncated" in codes and whole(row)) or low(row, field, threshold)


def share(n, total):
    return {"n": n, "N": total, "share": round(n / total, 4) if total else None}


def truncation(rows):
    """Of the organs whose reference reaches an end slice (all, and those segmented with
    Dice >= 0.5), the share flagged truncated; of those whose reference touches no edge
    of the grid, the share not flagged."""
    def truncated(r):
        return any(reason["code"] == "truncated" for reason in r["reasons"])
    at_end = [r for r in rows if r["ref_at_slice_edge"]]
    segmented = [r for r in at_end if r["dice"] >= BAD_DICE]
    inside = [r for r in rows if r["ml_reference"] and whole(r)]
    return {"at_end_flagged": share(sum(map(truncated, at_end)), len(at_end)),
            "at_end_segmented_flagged": share(sum(map(truncated, segmented)), len(segmented)),
            "inside_not_flagged": share(sum(not truncated(r) for r in inside), len(inside))}


def analyse(rows):
    judged = [r for r in rows if r["verdict"]]
    bad = [r for r in judged if r["dice"] < BAD_DICE]
    good = [r for r in judged if r["dice"] >= GOOD_DICE]
    good_whole = [r for r in good if whole(r)]
    cut = [r for r in judged if r["variant"].startswith("cut")]
    uncut = [r for r in judged if not r["variant"].startswith("cut")]

    def figures(field=None, t=None):
        return {"bad_flagged": share(sum(flagged(r, field, t) for r in bad), len(bad)),
                "good_whole_ok": share(sum(not flagged(r, field, t) for r in good_whole), len(good_whole)),
                "good_justified": share(sum(not unjustified(r, field, t) for r in good), len(good))}
    sweep = {}
    for field in sorted({f for r in judged for f in r["confidence"]}):
        values = [r["confidence"][field] for r in judged if field in r["confidence"]]
        sweep[field] = [{"threshold": t, **figures(field, t)}
                        for t in sorted({round(float(q), 3) for q in np.quantile(values, np.linspace(0, 1, 21))})]

    def codes_of(r):
        return {reason["code"] for reason in r["reasons"]}
    codes = sorted(set().union(*map(codes_of, judged)))
    return {
        **figures(),
        "truncation_cut_variants": truncation(cut),
        "truncation_other_variants": truncation(uncut),
        "missed": sum(1 for r in rows if not r["verdict"] and r["ml_reference"]),
        "organ_results": len(rows),
        "confidence_sweep": sweep,
        "bad_caught_by_code": {c: {"catches": sum(c in codes_of(r) for r in bad),
                                   "alone": sum(codes_of(r) == {c} for r in bad)} for c in codes},
        "good_flagged_by_code": {c: sum(c in codes_of(r) for r in good) for c in codes},
        "good_flagged_unjustified": [r for r in good if unjustified(r)],
        "bad_passed": [r for r in bad if not flagged(r)],
    }


def pct(s):
    return f"{s['n']}/{s['N']}" + (f" ({100 * s['share']:.1f} %)" if s["N"] else "")


def describe(r):
    reasons = "; ".join(f"{x['code']}: {x['detail']}" for x in r["reasons"]) or "none"
    return (f"{r['series']} {r['variant']} {r['model']} {r['organ']}: Dice {r['dice']:.3f}, "
            f"{r['ml_node']} ml (reference {r['ml_reference']}); {r['verdict']}; {reasons}")


def markdown(rows, report):
    lines = ["| series | variant | model | organ | Dice | ref ml | node ml | ref at end slice | ref at edge "
             "| verdict | reasons | confidence |", "| --- " * 12 + "|"]
    for r in rows:
        conf = ", ".join(f"{k} {v:.3f}" for k, v in r["confidence"].items())
        lines.append(f"| {r['series']} | {r['variant']} | {r['model']} | {r['organ']} | {r['dice']:.3f} | "
                     f"{r['ml_reference']} | {r['ml_node']} | {r['ref_at_slice_edge']} | {r['ref_at_fov_edge']} | "
                     f"{r['verdict'] or 'missed'} | {', '.join(x['code'] for x in r['reasons'])} | {conf} |")
    for role, a in report.items():
        title = "test series (reported only, not used for choosing)" if role == "test" else "evaluation set"
        t, o = a["truncation_cut_variants"], a["truncation_other_variants"]
        figures = [
            (f"Dice < {BAD_DICE}: flagged warn or fail", a["bad_flagged"], ">= 95 %"),
            (f"whole, Dice >= {GOOD_DICE}: left ok", a["good_whole_ok"], ">= 80 %"),
            (f"Dice >= {GOOD_DICE}: no flag but a confirmed truncation", a["good_justified"], ""),
            ("cut variants, reference at an end slice: truncated", t["at_end_flagged"], "100 %"),
            (f"cut variants, reference at an end slice, Dice >= {BAD_DICE}: truncated",
             t["at_end_segmented_flagged"], "100 %"),
            ("cut variants, reference inside: not truncated", t["inside_not_flagged"], "100 %"),
            ("other variants, reference at an end slice: truncated", o["at_end_flagged"], ""),
            ("other variants, reference inside: not truncated", o["inside_not_flagged"], "")]
        lines += [f"\n## {title}: {a['organ_results']} organ results, {a['missed']} missed (no verdict)\n",
                  "| figure | n/N | target |", "| --- | --- | --- |"]
        lines += [f"| {name} | {pct(s)} | {target} |" for name, s, target in figures]
        for field, steps in a["confidence_sweep"].items():
            lines += [f"\nlow_confidence also when {field} < t\n",
                      f"| t | Dice < {BAD_DICE} flagged | whole, Dice >= {GOOD_DICE} ok "
                      f"| Dice >= {GOOD_DICE} justified |", "| --- | --- | --- | --- |"]
            lines += [f"| {s['threshold']} | {pct(s['bad_flagged'])} | {pct(s['good_whole_ok'])} | "
                      f"{pct(s['good_justified'])} |" for s in steps]
        lines += [f"\n| reason code | Dice < {BAD_DICE} caught | caught by it alone "
                  f"| Dice >= {GOOD_DICE} flagged by it |", "| --- | --- | --- | --- |"]
        lines += [f"| {c} | {v['catches']} | {v['alone']} | {a['good_flagged_by_code'][c]} |"
                  for c, v in a["bad_caught_by_code"].items()]
        lines += [f"\nGood results (Dice >= {GOOD_DICE}) flagged without a confirmed truncation:"]
        lines += [f"- {describe(r)}" for r in a["good_flagged_unjustified"]]
        lines += [f"\nBad results (Dice < {BAD_DICE}) left ok:"] + [f"- {describe(r)}" for r in a["bad_passed"]]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=pathlib.Path, help="write every row (and the runs) here as JSON")
    ap.add_argument("--from-rows", type=pathlib.Path, help="analyse these rows instead of running the node")
    args = ap.parse_args()
    if args.from_rows:
        collected = json.loads(args.from_rows.read_text())
    else:
        if not SEGNODE.exists():
            sys.exit(f"{SEGNODE} is missing: cargo build --release")
        started = time.perf_counter()
        rows, runs = collect()
        collected = {"rows": rows, "runs": runs, "seconds": round(time.perf_counter() - started, 1)}
    if args.rows:
        args.rows.write_text(json.dumps(collected, indent=1) + "\n")
    rows = collected["rows"]
    report = {role: analyse([r for r in rows if r["role"] == role]) for role in ("choosing", "test")}
    print(json.dumps({**collected, "analysis": report}, indent=2))
    print(markdown(rows, report), file=sys.stderr)


if __name__ == "__main__":
    main()
