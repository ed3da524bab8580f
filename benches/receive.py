#!/usr/bin/env python3
"""Receive throughput: segnode vs DCMTK storescp, same 300-slice 512x512 uncompressed
series over loopback, one association and 4 in parallel, in the same run.

segnode runs with its durability on (each instance fsynced, renamed, recorded in
SQLite with synchronous=FULL before the C-STORE response); storescp writes files
without fsync. storescp runs with --fork so that parallel associations are served in
parallel, and every DCMTK process gets TCP_NODELAY=1 (without it DCMTK leaves Nagle's
algorithm on and each object waits ~40 ms for a delayed ACK: 23 instead of ~300
slices/s). Run from the project root: .venv/bin/python benches/receive.py
"""

import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import os

from bench_node import free_port, node_config, wait_port

ROOT = pathlib.Path(__file__).resolve().parent.parent
STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
ROUNDS = 3
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def send(port: int, called: str, groups: list[list[pathlib.Path]]) -> float:
    """Sends each group on its own association, all at once; returns seconds."""
    start = time.perf_counter()
    procs = [
        subprocess.Popen([STORESCU, "-aet", "STORESCU", "-aec", called, "127.0.0.1", str(port), *map(str, g)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=DCMTK_ENV)
        for g in groups
    ]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            sys.exit(f"storescu failed: {err.decode()}")
    return time.perf_counter() - start


def split(files: list[pathlib.Path], n: int) -> list[list[pathlib.Path]]:
    return [files[i::n] for i in range(n)]


def main() -> None:
    work = pathlib.Path(tempfile.mkdtemp(prefix="segnode-bench-"))
    series = ROOT / "target" / "bench-data" / "ct300-uncompressed"
    if not (series / "CT0299.dcm").exists():
        subprocess.run([sys.executable, ROOT / "scripts" / "make_series.py", series], check=True)
    files = sorted(series.glob("*.dcm"))
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    binary = ROOT / "target" / "release" / "segnode"

    # Rounds alternate between the two receivers, and every round writes into a new
    # directory: outputs are removed only at the end, because creating files right
        # after deleting many slows inode allocation on ext4 (it skips recently freed
    # inodes when it runs without a journal), which would penalise whoever runs next.
    results = {}
    for assocs in (1, 4):
        for round_no in range(ROUNDS):
            for target in ("storescp", "segnode"):
                out = work / f"{target}-{assocs}-{round_no}"
                out.mkdir(parents=True)
                port = free_port()
                if target == "storescp":
                    proc = subprocess.Popen([STORESCP, "--fork", "-aet", "STORESCP", "-od", str(out), str(port)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
                    called = "STORESCP"
                else:
                    cfg = out / "segnode.toml"
                    cfg.write_text(node_config(out / "data", port, 600))
                    proc = subprocess.Popen([binary, "--config", cfg, "serve"],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    called = "SEGNODE"
                try:
                    wait_port(port)
                    seconds = send(port, called, split(files, assocs))
                finally:
                    proc.terminate()
                    proc.wait()
                # storescp leaves its files for the kernel to write back later: that
                # writeback must not run into the next round's timing.
                os.sync()
                key = f"{target}, {assocs} association(s)"
                results[key] = min(results.get(key, seconds), seconds)
    shutil.rmtree(work, ignore_errors=True)

    n = len(files)
    print(f"receive throughput, {n} slices 512x512 uncompressed, best of {ROUNDS} (slices/s)")
    for assocs in (1, 4):
        scp = results[f"storescp, {assocs} association(s)"]
        node = results[f"segnode, {assocs} association(s)"]
        print(f"  {assocs} assoc: storescp {n / scp:7.0f}  segnode {n / node:7.0f}  ratio segnode/storescp {scp / node:.2f}")
    print(json.dumps({k: round(v, 3) for k, v in results.items()}))


if __name__ == "__main__":
    main()
