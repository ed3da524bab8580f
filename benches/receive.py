#!/usr/bin/env python3
"""Receive throughput: segnode vs DCMTK storescp, same 300-slice 512x512 uncompressed
series over loopback, one association and 4 in parallel, in the same run.

segnode runs with its durability on (each instance fsynced, renamed, recorded in
SQLite with synchronous=FULL before the C-STORE response); storescp writes files
without fsync. storescp runs with --fork so that parallel associations are served in
parallel, and every DCMTK process gets TCP_NODELAY=1 (without it DCMTK leaves Nagle's
algorithm on and each object waits ~40 ms for a delayed ACK: 23 instead of ~300
slices/s). Run from the project root: .venv/bin/python benches/receive.py

With one association the sender waits for each response before it sends the next
instance, so whatever a receiver does between the last byte and its response adds to
every instance. Two more figures bound what any receiver that answers only once the
instance is durable can reach against storescp: `storescp --ignore` (receives, stores
nothing: the sender's own pace) and the time to make the same instances durable once
written to new files: fsync, rename, fsync of the directory, one after another (the
disk's part, which cannot start before the last byte; no database, no hashing, no
network). Their sum per instance is the least such a receiver can take.
"""

import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import os

from bench_node import ct300_series, free_port, node_config, release_binary, wait_port

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


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy (all processes and the kernel)."""
    fields = pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = map(int, fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def durable_writes(files: list[pathlib.Path], dest: pathlib.Path) -> float:
    """Seconds spent making the files durable once written: for each file in turn, write
    its bytes to a new file (not timed: a receiver can do that while the data arrives),
    then fsync it, rename it into place and fsync the directory (timed)."""
    datas = [f.read_bytes() for f in files]
    (dest / "tmp").mkdir(parents=True)
    (dest / "objects").mkdir()
    seconds = 0.0
    for i, data in enumerate(datas):
        tmp = dest / "tmp" / f"{i}.part"
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, data)
        start = time.perf_counter()
        os.fsync(fd)
        os.close(fd)
        os.rename(tmp, dest / "objects" / f"{i}.dcm")
        dirfd = os.open(dest / "objects", os.O_RDONLY)
        os.fsync(dirfd)
        os.close(dirfd)
        seconds += time.perf_counter() - start
    return seconds


def split(files: list[pathlib.Path], n: int) -> list[list[pathlib.Path]]:
    return [files[i::n] for i in range(n)]


def main() -> None:
    work = pathlib.Path(tempfile.mkdtemp(prefix="segnode-bench-"))
    files = ct300_series()
    binary = release_binary()

    # Rounds alternate between the two receivers, and every round writes into a new
    # directory: outputs are removed only at the end, because creating files right
        # after deleting many slows inode allocation on ext4 (it skips recently freed
    # inodes when it runs without a journal), which would penalise whoever runs next.
    results = {}
    busy = {}
    for assocs in (1, 4):
        for round_no in range(ROUNDS):
            targets = ("storescp", "segnode", "storescp --ignore") + (("durable writes",) if assocs == 1 else ())
            for target in targets:
                out = work / f"{target.replace(' ', '')}-{assocs}-{round_no}"
                out.mkdir(parents=True)
                key = f"{target}, {assocs} association(s)"
                if target == "durable writes":
                    seconds = durable_writes(files, out)
                    os.sync()
                    results[key] = min(results.get(key, seconds), seconds)
                    continue
                port = free_port()
                if target.startswith("storescp"):
                    ignore = ["--ignore"] if target.endswith("--ignore") else []
                    proc = subprocess.Popen([STORESCP, "--fork", *ignore, "-aet", "STORESCP", "-od", str(out), str(port)],
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
                    before = busy_cpu_seconds()
                    seconds = send(port, called, split(files, assocs))
                    busy[key] = min(busy.get(key, 1e9), busy_cpu_seconds() - before)
                finally:
                    proc.terminate()
                    proc.wait()
                # storescp leaves its files for the kernel to write back later: that
                # writeback must not run into the next round's timing.
                os.sync()
                results[key] = min(results.get(key, seconds), seconds)
    shutil.rmtree(work, ignore_errors=True)

    n = len(files)
    print(f"receive throughput, {n} slices 512x512 uncompressed, best of {ROUNDS} (slices/s)")
    for assocs in (1, 4):
        scp = results[f"storescp, {assocs} association(s)"]
        node = results[f"segnode, {assocs} association(s)"]
        print(f"  {assocs} assoc: storescp {n / scp:7.0f}  segnode {n / node:7.0f}  ratio segnode/storescp {scp / node:.2f}")
    ignore = results["storescp --ignore, 1 association(s)"]
    durable = results["durable writes, 1 association(s)"]
    scp = results["storescp, 1 association(s)"]
    print(f"  1 assoc bound: sender's pace (storescp --ignore) {1000 * ignore / n:.2f} ms + making it durable "
          f"{1000 * durable / n:.2f} ms per instance: a durable receiver reaches at most {scp / (ignore + durable):.2f}")
    print(f"machine CPU-seconds busy while sending (senders, receiver, kernel; least of {ROUNDS}):")
    for assocs in (1, 4):
        print(f"  {assocs} assoc: " + ", ".join(f"{t} {busy[f'{t}, {assocs} association(s)']:.2f}"
                                           for t in ("storescp --ignore", "storescp", "segnode")))
    print(json.dumps({k: round(v, 3) for k, v in results.items()}))


if __name__ == "__main__":
    main()
