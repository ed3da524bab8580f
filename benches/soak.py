#!/usr/bin/env python3
"""Soak run: drives `segnode serve` (release build, default model, embedded SQLite) for a
set time with a realistic mix, records its resources over time, and checks at the end
that nothing was lost or delivered twice.

The mix, all at once:
- senders: a new 80-slice 256x256 series (4.2 mm) of real anatomy (the training CT resampled by
  scripts/make_series.py, fresh UIDs each time) every SERIES_EVERY_S seconds, from
  alternating calling AE titles, each on its own DCMTK storescu association;
- bad objects: every BAD_EVERY-th round also a CT image whose pixel data does not match
  its Rows x Columns and one without pixel data, in a series of their own (both must be
  refused: no job may ever have that series; nothing else disturbed);
- pollers: the API (/api/jobs, /metrics, /healthz) and the dashboard (/ui/) every 2 s;
- a destination that goes down and comes back: a DCMTK storescp "PACS" that every
  OUTAGE_EVERY_S seconds is stopped for OUTAGE_S seconds (deliveries are retried).

Every SAMPLE_S seconds: resident memory (VmRSS) and open files of the node process, the
database's size (with its WAL) and the spool's. At the end (senders stopped, the queue
and the outbox drained): every series sent is one job that is delivered, with all its
instances; every result object (SEG, SR) reached the PACS exactly once (storescp keeps
every received copy under a unique name).

Usage: .venv/bin/python benches/soak.py [--minutes 30] [--report soak.json]
Prints a summary and writes the samples and checks as JSON.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import pydicom

from bench_node import free_port, node_config, release_binary, wait_port

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = pathlib.Path(os.environ.get("SEGNODE_TEST_DATA", ROOT.parent / "shared" / "data"))
STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
SERIES_EVERY_S = 20
BAD_EVERY = 5
OUTAGE_EVERY_S = 300
OUTAGE_S = 60
SAMPLE_S = 10
SLICES = 80
SENDERS = ["STORESCU", "ORTHANC"]


def make_series(out: pathlib.Path, seed: int) -> None:
    subprocess.run([sys.executable, ROOT / "scripts" / "make_series.py", out, "--slices", str(SLICES),
                    "--size", "256", "--seed", str(seed), "--from-nifti", DATA / "train-ct-3mm" / "ct.nii.gz"],
                   check=True, capture_output=True)


def sample(pid: int, data: pathlib.Path) -> dict:
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    db = sum(p.stat().st_size for p in data.glob("segnode.db*"))
    spool = sum(p.stat().st_size for p in (data / "spool").rglob("*") if p.is_file())
    return {"rss_mib": round(rss_kb / 1024, 1), "open_files": fds, "db_mib": round(db / 2**20, 2),
            "spool_mib": round(spool / 2**20, 1)}


class Pacs:
    """The destination: a storescp that can be stopped and started again."""

    def __init__(self, port: int, out: pathlib.Path):
        self.port, self.out, self.proc = port, out, None
        out.mkdir(parents=True)

    def start(self):
        self.proc = subprocess.Popen([STORESCP, "+uf", "-aet", "PACS", "-od", str(self.out), str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
        wait_port(self.port)

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()
            self.proc = None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--report", type=pathlib.Path, default=pathlib.Path("soak.json"))
    args = ap.parse_args()

    work = pathlib.Path(tempfile.mkdtemp(prefix="segnode-soak-"))
    binary = release_binary()
    dicom, http, pacs_port = free_port(), free_port(), free_port()
    data = work / "data"
    pacs = Pacs(pacs_port, work / "pacs")
    pacs.start()
    config = work / "segnode.toml"
    config.write_text(node_config(data, dicom, 2, (
        f'[http]\nlisten = "127.0.0.1:{http}"\nallow_unauthenticated_loopback = true\n'
        f'[model]\npath = "{ROOT / "onnx" / "abdomen-cascade"}"\n'
        f'[delivery]\nmax_attempts = 1000\ninitial_backoff_seconds = 2\nmax_backoff_seconds = 20\n'
        f'[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\nport = {pacs_port}\n'
        f'fan_out = true\nobjects = ["seg", "sr"]\n')))
    log = open(work / "node.log", "w")
    node = subprocess.Popen([binary, "--config", config, "serve"], stdout=log, stderr=log, cwd=ROOT,
                            env={**os.environ, "RUST_LOG": "warn"})
    wait_port(dicom)
    wait_port(http)

    stop = threading.Event()
    sent, refused_bad, problems, polls = [], [], [], [0]
    lock = threading.Lock()

    def get(path: str) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}{path}", timeout=30) as r:
            r.read()
            return r.status

    def poller():
        while not stop.is_set():
            for path in ("/api/jobs?limit=20", "/metrics", "/ui/"):
                try:
                    get(path)
                    polls[0] += 1
                except Exception as e:  # noqa: BLE001: every failure is a finding
                    with lock:
                        problems.append(f"GET {path}: {e}")
            stop.wait(2)

    def send(round_no: int):
        folder = work / "series" / f"s{round_no:04d}"
        make_series(folder, round_no)
        files = sorted(folder.glob("*.dcm"))
        series_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
        calling = SENDERS[round_no % len(SENDERS)]
        done = subprocess.run([STORESCU, "-aet", calling, "-aec", "SEGNODE", "127.0.0.1", str(dicom),
                               *map(str, files)], capture_output=True, env=DCMTK_ENV)
        with lock:
            if done.returncode == 0:
                sent.append(series_uid)
            else:
                problems.append(f"series {round_no} from {calling}: storescu {done.returncode}")
        if round_no % BAD_EVERY == 0:
            # Two objects the node must refuse, in a series of their own: pixel data that
            # does not match Rows x Columns, and a CT image without pixel data.
            bad_series = pydicom.uid.generate_uid()
            for name, spoil in (("mismatch", lambda ds: setattr(ds, "Rows", ds.Rows + 7)),
                                ("no-pixels", lambda ds: delattr(ds, "PixelData"))):
                ds = pydicom.dcmread(files[0])
                ds.SeriesInstanceUID = bad_series
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
                spoil(ds)
                bad = folder / f"{name}.dcm"
                ds.save_as(bad, enforce_file_format=True)
                subprocess.run([STORESCU, "-aet", calling, "-aec", "SEGNODE", "127.0.0.1", str(dicom), str(bad)],
                               capture_output=True, env=DCMTK_ENV)
            with lock:
                refused_bad.append(str(bad_series))
        shutil.rmtree(folder)

    samples = []
    threading.Thread(target=poller, daemon=True).start()
    start = time.monotonic()
    deadline = start + args.minutes * 60
    next_series, next_sample, round_no, senders = start, start, 0, []
    outage_until, next_outage = None, start + OUTAGE_EVERY_S
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_series:
            t = threading.Thread(target=send, args=(round_no,))
            t.start()
            senders.append(t)
            round_no += 1
            next_series += SERIES_EVERY_S
        if now >= next_outage and outage_until is None:
            pacs.stop()
            outage_until = now + OUTAGE_S
        if outage_until is not None and now >= outage_until:
            pacs.start()
            outage_until, next_outage = None, now + OUTAGE_EVERY_S
        if now >= next_sample:
            samples.append({"t_s": round(now - start), **sample(node.pid, data)})
            next_sample += SAMPLE_S
        time.sleep(0.5)
    for t in senders:
        t.join()
    if pacs.proc is None:
        pacs.start()

    # Drain: every job finished and every delivery made (bounded).
    drained = False
    for _ in range(600):
        jobs = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{http}/api/jobs?limit=1000").read())["jobs"]
        if jobs and all(j["state"] in ("delivered", "failed", "ignored") for j in jobs):
            drained = True
            break
        time.sleep(1)
    samples.append({"t_s": round(time.monotonic() - start), **sample(node.pid, data)})
    stop.set()

    jobs = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{http}/api/jobs?limit=1000").read())["jobs"]
    by_series = {}
    for j in jobs:
        if j.get("superseded_by") is None:
            by_series.setdefault(j["series_uid"], []).append(j)
    lost = [s for s in sent if not any(j["state"] == "delivered" and j["instance_count"] == SLICES
                                       for j in by_series.get(s, []))]
    received = {}
    for f in (work / "pacs").iterdir():
        uid = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
        received[uid] = received.get(uid, 0) + 1
    duplicates = {u: n for u, n in received.items() if n > 1}
    expected_results = 2 * len(sent)
    node.terminate()
    node.wait()
    pacs.stop()

    warm = [s for s in samples if s["t_s"] >= min(300, args.minutes * 60 / 3)]
    first, last = (warm[0], warm[-1]) if warm else (samples[0], samples[-1])
    report = {
        "minutes": args.minutes, "series_sent": len(sent), "bad_objects_sent": 2 * len(refused_bad),
        "bad_objects_kept": [b for b in refused_bad if b in by_series],
        "jobs": len(jobs), "drained": drained, "lost_series": lost,
        "results_expected": expected_results, "results_received": sum(received.values()),
        "distinct_results_received": len(received), "duplicates": duplicates,
        "api_polls": polls[0], "problems": problems, "after_warm_up": {"first": first, "last": last},
        "rss_growth_after_warm_up": round(last["rss_mib"] / first["rss_mib"] - 1, 3),
        "samples": samples,
    }
    args.report.write_text(json.dumps(report, indent=1))
    print(f"soak {args.minutes} min: {len(sent)} series sent, {len(jobs)} jobs, drained {drained}")
    print(f"  lost {len(lost)}, results {sum(received.values())} received of {expected_results} "
          f"({len(received)} distinct), duplicates {len(duplicates)}")
    print(f"  bad objects {2 * len(refused_bad)}, kept {len(report['bad_objects_kept'])}; "
          f"API polls {polls[0]}, problems {len(problems)}")
    for label, s in (("start", samples[0]), ("after warm-up", first), ("end", last)):
        print(f"  {label:14s} t={s['t_s']:5d}s RSS {s['rss_mib']:7.1f} MiB, open files {s['open_files']:4d}, "
              f"db {s['db_mib']:6.2f} MiB, spool {s['spool_mib']:7.1f} MiB")
    print(f"  RSS growth after warm-up {100 * report['rss_growth_after_warm_up']:+.1f} %; report: {args.report}")
    ok = (drained and not lost and not duplicates and not problems and not report["bad_objects_kept"]
          and received and len(received) == expected_results)
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
