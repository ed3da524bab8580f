#!/usr/bin/env python3
"""What DICOM TLS costs: the same 300-slice 512x512 uncompressed series sent by DCMTK
storescu to one segnode, once to its plain listener and once to its DICOM TLS listener
(client certificate required, as a hospital would run it), alternating, in the same
run. Certificates are made with openssl for the run. The node keeps its durability
(fsync, SQLite FULL) in both. Run from the project root: .venv/bin/python benches/tls.py
"""

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from bench_node import ct300_series, free_port, node_config, release_binary, wait_port

STORESCU = "/usr/bin/storescu"
ROUNDS = 3
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: pathlib.Path) -> None:
    openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=bench CA",
            "-keyout", "ca.key", "-out", "ca.crt")
    for name, san in (("node", "IP:127.0.0.1"), ("pacs", "DNS:pacs.bench")):
        openssl(d, "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-addext",
                f"subjectAltName={san}", "-keyout", f"{name}.key", "-out", f"{name}.csr")
        openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-copy_extensions", "copy", "-out", f"{name}.crt")


def send(port: int, files: list[pathlib.Path], tls: list[str]) -> float:
    start = time.perf_counter()
    p = subprocess.run([STORESCU, *tls, "-aet", "STORESCU", "-aec", "SEGNODE", "127.0.0.1", str(port),
                        *map(str, files)], capture_output=True, env=DCMTK_ENV)
    if p.returncode != 0:
        sys.exit(f"storescu failed: {p.stderr.decode()[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    files = ct300_series()
    binary = release_binary()
    work = pathlib.Path(tempfile.mkdtemp())
    pki = work / "pki"
    pki.mkdir()
    make_pki(pki)
    plain_port, tls_port = free_port(), free_port()
    tail = (f'[dicom.tls]\nlisten = "127.0.0.1:{tls_port}"\ncert_file = "{pki}/node.crt"\n'
            f'key_file = "{pki}/node.key"\nca_file = "{pki}/ca.crt"\nrequire_client_cert = true\n')
    # The TLS table belongs to [dicom]: insert it before [series].
    config = node_config(work / "data", plain_port, 3600).replace("[series]", tail + "[series]")
    (work / "segnode.toml").write_text(config)
    node = subprocess.Popen([binary, "serve", "--config", work / "segnode.toml"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(plain_port)
        wait_port(tls_port)
        tls_args = ["+tls", str(pki / "pacs.key"), str(pki / "pacs.crt"), "+cf", str(pki / "ca.crt")]
        times = {"plain": [], "tls": []}
        # A first, untimed send records the instances; every timed round is then an
        # identical re-send, received, hashed and answered in full on both listeners.
        send(plain_port, files, [])
        for _ in range(ROUNDS):
            times["plain"].append(send(plain_port, files, []))
            times["tls"].append(send(tls_port, files, tls_args))
    finally:
        node.terminate()
        node.wait()
        shutil.rmtree(work, ignore_errors=True)
    n = len(files)
    best = {k: min(v) for k, v in times.items()}
    print(f"300-slice 512x512 uncompressed series, {ROUNDS} rounds alternating, best of each:")
    for k, v in times.items():
        print(f"  {k:5s} {best[k]:6.2f} s ({n / best[k]:5.0f} slices/s)   rounds: {', '.join(f'{t:.2f}' for t in v)}")
    print(f"  TLS costs {100 * (best['tls'] / best['plain'] - 1):.0f} % (target: under 30 %)")


if __name__ == "__main__":
    main()
