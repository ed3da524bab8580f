#!/usr/bin/env python3
"""What the quality assessment costs, against the cascade it assesses, in one run: the
default model on the 300-slice 512x512 series of real anatomy (benches/cascade.py's), both
cores. Per run: the cascade's total, the network's evidence (the softmax pass over stage
2's labelled voxels, the cascade's `evidence` step, inside its total), and the SR stage
(measuring every organ, assessing it and encoding the report: an upper bound of the
assessment's own share, which the SR's encoding and the volumes existed without).
The cost is (evidence + SR stage) / (cascade total - evidence): what the assessment adds
to the cascade's time. Median of five runs.

Usage (project root): .venv/bin/python benches/quality.py [MODEL_DIR]
"""

import json
import pathlib
import subprocess
import sys

from cascade import ROOT, real_anatomy, run

RUNS = 5


def main():
    model = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "onnx" / "abdomen-cascade"
    series = real_anatomy(300)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    binary = ROOT / "target" / "release" / "segnode"
    rows = []
    for _ in range(RUNS):
        _, _, report = run(binary, model, series, False)
        t = report["cascade"]["timings_ms"]
        cascade = t["total"] - t["evidence"]
        added = t["evidence"] + report["sr"]["encode_ms"]
        rows.append((added / cascade, cascade, t["evidence"], report["sr"]["encode_ms"], report["sr"]["organs"]))
    rows.sort(key=lambda r: r[0])
    share, cascade, evidence, sr, organs = rows[RUNS // 2]
    print(f"model {model.name}, series {series.name}: median of {RUNS} runs")
    print(f"  cascade without the evidence {cascade:.0f} ms; evidence {evidence:.0f} ms; "
          f"SR stage (measure, assess, encode) {sr:.0f} ms")
    print(f"  the assessment adds at most {share:.1%} to the cascade's time "
          f"(all runs: {', '.join(f'{r[0]:.1%}' for r in rows)})")
    print("  verdicts: " + json.dumps({o["name"]: o["qa"]["verdict"] for o in organs}))


if __name__ == "__main__":
    main()
