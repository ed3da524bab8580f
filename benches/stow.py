#!/usr/bin/env python3
"""STOW-RS intake against C-STORE intake: the same 300-slice 512x512 uncompressed series
sent to one node by DCMTK storescu (one association) and by one STOW-RS request (curl,
the 300 instances as the parts of one multipart/related body, as Orthanc's DICOMweb
client sends a series), in the same run; Orthanc (Debian's, with its DICOMweb plugin)
takes the same two intakes as the anchor. Every round starts a fresh receiver in a new
directory; the best of ROUNDS is kept. Run from the project root:
.venv/bin/python benches/stow.py

Both of the node's intakes keep the same contract: an instance is answered as stored
only once its spool file is fsynced and renamed into place and its row committed.
Orthanc writes its files without fsync.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from bench_node import ct300_series, free_port, node_config, release_binary, wait_port

STORESCU = "/usr/bin/storescu"
ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
ROUNDS = 3
BOUNDARY = "segnode-bench-boundary"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def stow_body(files: list[pathlib.Path], out: pathlib.Path) -> None:
    with out.open("wb") as body:
        for f in files:
            body.write(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode())
            body.write(f.read_bytes())
            body.write(b"\r\n")
        body.write(f"--{BOUNDARY}--\r\n".encode())


def c_store(port: int, called: str, files: list[pathlib.Path]) -> float:
    start = time.perf_counter()
    done = subprocess.run([STORESCU, "-aet", "STORESCU", "-aec", called, "127.0.0.1", str(port), *map(str, files)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=DCMTK_ENV)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"storescu failed: {done.stderr.decode()}")
    return seconds


def stow(url: str, body: pathlib.Path, count: int) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        ["curl", "-sS", "--fail", "-X", "POST", "-H", "Expect:", "-H", "Accept: application/dicom+json",
         "-H", f'Content-Type: multipart/related; type="application/dicom"; boundary={BOUNDARY}',
         "--data-binary", f"@{body}", url], capture_output=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"STOW-RS to {url} failed: {done.stderr.decode()} {done.stdout[:500]!r}")
    stored = json.loads(done.stdout).get("00081199", {}).get("Value", [])
    if len(stored) != count:
        sys.exit(f"STOW-RS to {url}: {len(stored)} of {count} stored")
    return seconds


def start_node(binary: pathlib.Path, out: pathlib.Path) -> tuple[subprocess.Popen, int, int]:
    dicom, http = free_port(), free_port()
    cfg = out / "segnode.toml"
    cfg.write_text(node_config(out / "data", dicom, 600,
                               f'[http]\nlisten = "127.0.0.1:{http}"\nallow_unauthenticated_loopback = true\n'))
    proc = subprocess.Popen([binary, "--config", cfg, "serve"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(dicom)
    wait_port(http)
    return proc, dicom, http


def start_orthanc(out: pathlib.Path) -> tuple[subprocess.Popen, int, int]:
    dicom, http = free_port(), free_port()
    cfg = out / "orthanc.json"
    cfg.write_text(json.dumps({
        "Name": "bench", "StorageDirectory": str(out / "storage"), "IndexDirectory": str(out / "index"),
        "HttpPort": http, "DicomPort": dicom, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "UnknownSopClassAccepted": True,
        "DicomAlwaysAllowStore": True, "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}))
    proc = subprocess.Popen([ORTHANC, cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
    wait_port(http)
    wait_port(dicom)
    return proc, dicom, http


def main() -> None:
    work = pathlib.Path(tempfile.mkdtemp(prefix="segnode-bench-stow-"))
    files = ct300_series()
    binary = release_binary()
    body = work / "body.bin"
    stow_body(files, body)

    results = {}
    for round_no in range(ROUNDS):
        for receiver in ("segnode", "orthanc"):
            for intake in ("C-STORE", "STOW-RS"):
                out = work / f"{receiver}-{intake}-{round_no}"
                out.mkdir()
                proc, dicom, http = (start_node(binary, out) if receiver == "segnode" else start_orthanc(out))
                try:
                    if intake == "C-STORE":
                        seconds = c_store(dicom, "SEGNODE" if receiver == "segnode" else "ORTHANC", files)
                    else:
                        seconds = stow(f"http://127.0.0.1:{http}/dicom-web/studies", body, len(files))
                finally:
                    proc.terminate()
                    proc.wait()
                os.sync()
                key = f"{receiver} {intake}"
                results[key] = min(results.get(key, seconds), seconds)
    shutil.rmtree(work, ignore_errors=True)

    n = len(files)
    mib = sum(f.stat().st_size for f in files) / 2**20
    print(f"intake of {n} slices 512x512 uncompressed ({mib:.0f} MiB), best of {ROUNDS} (slices/s)")
    for receiver in ("segnode", "orthanc"):
        c, s = results[f"{receiver} C-STORE"], results[f"{receiver} STOW-RS"]
        print(f"  {receiver:8s} C-STORE {n / c:6.0f}  STOW-RS {n / s:6.0f}  ratio STOW-RS/C-STORE {c / s:.2f}")
    print(f"  segnode/orthanc: C-STORE {results['orthanc C-STORE'] / results['segnode C-STORE']:.2f}, "
          f"STOW-RS {results['orthanc STOW-RS'] / results['segnode STOW-RS']:.2f}")
    print(json.dumps({k: round(v, 3) for k, v in results.items()}))


if __name__ == "__main__":
    main()
