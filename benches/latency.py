#!/usr/bin/env python3
"""End-to-end latency: from the last instance acknowledged (storescu exits) to the
results (SEG and measurement report) stored at the destination (a DCMTK storescp), with
the stable-age wait excluded and reported apart, and the job's stage breakdown, for the
real 20-slice series and a 300-slice 512x512 series, with the configured model on this
machine's cores. `results_cost_ms` is what the SR and the key images add (their
encoding; their spool writes are part of `spool`).

Usage (project root): .venv/bin/python benches/latency.py [MODEL_DIR]
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from bench_node import free_port, node_config, pacs_destination, wait_port

ROOT = pathlib.Path(__file__).resolve().parent.parent
STABLE = 1.0


def run_case(binary, model, series, syntax_flag):
    work = pathlib.Path(tempfile.mkdtemp())
    inbox = work / "inbox"
    inbox.mkdir()
    node_port, scp_port = free_port(), free_port()
    env = {**os.environ, "TCP_NODELAY": "1"}
    scp = subprocess.Popen(["/usr/bin/storescp", "-aet", "PACS", "-od", inbox, str(scp_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    config = work / "segnode.toml"
    config.write_text(node_config(work / "data", node_port, STABLE,
                                  f'[model]\npath = "{model}"\n' + pacs_destination(scp_port)))
    node = subprocess.Popen([binary, "--config", config, "serve"], stdout=subprocess.DEVNULL,
                            stderr=open(work / "node.log", "w"))
    try:
        wait_port(node_port)
        wait_port(scp_port)
        subprocess.run(["/usr/bin/storescu", "-aet", "STORESCU", "-aec", "SEGNODE", "+sd", syntax_flag,
                        "127.0.0.1", str(node_port), series], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        acked = time.perf_counter()
        while len(list(inbox.iterdir())) < 2:
            if time.perf_counter() - acked > 600:
                sys.exit("no SEG and SR after 10 minutes")
            time.sleep(0.02)
        stored = time.perf_counter()
        time.sleep(0.5)
        job = json.loads(subprocess.run([binary, "--config", config, "job", "1"], capture_output=True,
                                        text=True, check=True).stdout)
    finally:
        node.terminate()
        scp.terminate()
        node.wait()
        scp.wait()
    summary = job["summary"]
    return {
        "series": pathlib.Path(series).name,
        "slices": len(list(pathlib.Path(series).iterdir())),
        "latency_s_excluding_stable_age": round(stored - acked - STABLE, 2),
        "stable_age_s": STABLE,
        "stages_ms": {**summary["timings_ms"], "cascade_detail": summary.get("cascade", {}).get("timings_ms")},
        "results_cost_ms": summary["timings_ms"].get("sr", 0) + summary["timings_ms"].get("key_images", 0),
        "job_state": job["job"]["state"],
    }


def main():
    model = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "onnx" / "abdomen-cascade"
    # 300 slices of real anatomy (the training volume resampled; for speed only).
    big = ROOT / "target" / "bench-data" / "ct300-real"
    if not (big / "CT0299.dcm").exists():
        subprocess.run([sys.executable, ROOT / "scripts" / "make_series.py", big, "--from-nifti",
                        ROOT.parent / "shared" / "data" / "train-ct-3mm" / "ct.nii.gz"], check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    binary = ROOT / "target" / "release" / "segnode"
    real = ROOT.parent / "shared" / "data" / "ct-abdomen-j2k"
    for series, flag in ((real, "-xv"), (big, "-xs")):
        print(json.dumps(run_case(binary, model.resolve(), series, flag)))


if __name__ == "__main__":
    main()
