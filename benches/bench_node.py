"""What the benchmarks that run a node over loopback share: the 300-slice series and the
release binary, free ports, waiting for a listener, and the node's configuration."""

import pathlib
import socket
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def ct300_series() -> list[pathlib.Path]:
    """The synthetic 300-slice 512x512 uncompressed series (made once by
    scripts/make_series.py under target/bench-data), its files in order."""
    series = ROOT / "target" / "bench-data" / "ct300-uncompressed"
    if not (series / "CT0299.dcm").exists():
        subprocess.run([sys.executable, ROOT / "scripts" / "make_series.py", series], check=True)
    return sorted(series.glob("*.dcm"))


def release_binary() -> pathlib.Path:
    """segnode, built in release mode."""
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    return ROOT / "target" / "release" / "segnode"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int) -> None:
    for _ in range(400):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def node_config(data_dir: pathlib.Path, port: int, stable_seconds: float, tail: str = "") -> str:
    """A node called SEGNODE on 127.0.0.1:`port` that accepts any calling AE."""
    return (
        f'[node]\nae_title = "SEGNODE"\ndata_dir = "{data_dir}"\n'
        f'[dicom]\nlisten = "127.0.0.1:{port}"\nallow_any_calling_ae = true\nmin_free_disk_mb = 100\n'
        f"[series]\nstable_seconds = {stable_seconds}\n{tail}"
    )


def pacs_destination(port: int, extra: str = "") -> str:
    """A `[[destinations]]` table: the storescp "PACS" on 127.0.0.1:`port`, receiving
    the results of what STORESCU sends."""
    return (
        f'[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\nport = {port}\n'
        f'route_from = ["STORESCU"]\n{extra}'
    )
