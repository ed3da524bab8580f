#!/usr/bin/env python3
"""Opens the OHIF viewer in headless Chromium (software WebGL) and checks that an image
and its DICOM SEG are drawn: waits until OHIF has a cornerstone viewport showing an image
and a segmentation loaded with its segments, takes a screenshot, and counts the pixels of
each expected segment colour inside the viewports. Speaks the Chrome DevTools Protocol
over websocket-client, with browse.py's Page and debugging_url.

Usage: view_seg.py URL --screenshot OUT.png [--cookie NAME=VALUE ...] [--header 'K: V' ...]
                   [--expect-colour R,G,B ...] [--min-pixels N] [--timeout 120] [--console OUT.json]
e.g.   view_seg.py 'http://127.0.0.1:8080/viewer/viewer?StudyInstanceUIDs=S&initialSeriesInstanceUID=SEG' \
           --screenshot /tmp/ohif.png --expect-colour 221,130,101

A pixel counts for a colour when its hue is within HUE_TOL degrees of the colour's and its
chroma (max - min channel) is at least CHROMA_FRACTION of the colour's. Measured on OHIF
3.13.2: it fills a segment at 50% opacity over the grey image (same hue, half the chroma)
and outlines it at full opacity; 99% of the fill pixels are within 3.3 degrees of the
segment's hue. Colours of nearly the same hue (liver, stomach, kidney in the
GenericAnatomyColors palette: 221,130,101 / 216,132,105 / 185,102,83) count each other's
pixels: the check tells a colour is drawn, not which of those segments. The image itself
must be drawn too: MIN_IMAGE_FRACTION of the viewports grey and not black, in levels
spread by MIN_GREY_STD (segments over a black or flat grey viewport fail). Without
--expect-colour every colour OHIF gives the segments is counted and one must be present.
When the segment labels are not in the page (the viewer's layout keeps the segmentation
panel closed), the panel is opened through OHIF's panelService, as a click on its tab would.
Prints a JSON report on stdout (timings, viewports, segmentations with labels and colours,
labels found in the page text, pixel counts, failed requests, console errors); exit status
1 when the image, a colour or a segment label is missing or the page never got there.
"""

import argparse
import base64
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import numpy as np
import websocket
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from browse import TIMEOUT_S, Page, debugging_url  # noqa: E402

HUE_TOL = 10.0          # degrees
CHROMA_FRACTION = 0.3   # of the segment colour's chroma
MIN_GREY_STD = 20.0     # spread of the image's grey levels on screen
MIN_IMAGE_FRACTION = 0.05
# Chromium's WebGL on the CPU: ANGLE over SwiftShader (no GPU, no X server).
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--no-first-run",
                  "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                  "--ignore-gpu-blocklist", "--hide-scrollbars", "--mute-audio"]

# What OHIF shows: viewports (with the image index each shows), segmentations, labels.
PROBE = r"""(() => {
  const out = {services: !!window.services, viewports: [], segmentations: [], cpuRendering: null};
  const cs = window.cornerstone;
  try { out.cpuRendering = cs ? cs.getShouldUseCPURendering() : null; } catch (e) {}
  for (const c of document.querySelectorAll('canvas.cornerstone-canvas')) {
    const r = c.getBoundingClientRect();
    if (r.width < 16 || r.height < 16) continue;
    const el = c.closest('[data-viewport-uid]') || c.closest('.viewport-element');
    const id = el && (el.getAttribute('data-viewport-uid') || el.id);
    const v = {id, x: r.x, y: r.y, width: r.width, height: r.height};
    try {
      for (const engine of cs.getRenderingEngines()) {
        const vp = engine.getViewport(id);
        if (!vp) continue;
        v.type = vp.type;
        v.imageIds = vp.getImageIds ? vp.getImageIds().length : null;
        v.imageIndex = vp.getCurrentImageIdIndex ? vp.getCurrentImageIdIndex() : null;
        v.hasImage = !!(vp.getImageData && vp.getImageData());
      }
    } catch (e) { v.error = String(e); }
    out.viewports.push(v);
  }
  const s = window.services;
  if (s && s.segmentationService) {
    const segService = s.segmentationService;
    for (const seg of segService.getSegmentations() || []) {
      const reps = [];
      for (const v of out.viewports) {
        try {
          if (segService.getSegmentationRepresentations(v.id, {segmentationId: seg.segmentationId}).length)
            reps.push(v.id);
        } catch (e) {}
      }
      const segments = Object.values(seg.segments || {}).filter(Boolean).map(x => {
        let colour = null;
        if (reps.length) try { colour = segService.getSegmentColor(reps[0], seg.segmentationId, x.segmentIndex); } catch (e) {}
        return {index: x.segmentIndex, label: x.label, colour: colour && Array.from(colour)};
      });
      out.segmentations.push({id: seg.segmentationId, label: seg.label, viewports: reps, segments});
    }
  }
  out.text = document.body ? document.body.innerText : '';
  out.href = location.href;
  return out;
})()"""


OPEN_PANEL = r"""(() => {
  const p = window.services.panelService;
  const panel = p.getPanels('right').find(x => /panelSegmentation/.test(x.id));
  if (!panel) return null;
  p.activatePanel(panel.id, true);
  return panel.id;
})()"""


class EventPage(Page):
    """browse.py's Page, read by a thread of its own: answers go to their callers, events
    to `events`. Attaches itself to the page's workers (OHIF decodes images in them), so
    that they run with the extra headers and their errors and requests are seen too."""

    def __init__(self, ws_url, headers=None):
        super().__init__(ws_url)
        self.ws.settimeout(1.0)
        self.headers = headers
        self.events, self.answers = [], {}
        self.cv, self.send_lock = threading.Condition(), threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def send(self, method, params, session=None):
        n = next(self.ids)
        message = {"id": n, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        with self.send_lock:
            self.ws.send(json.dumps(message))
        return n

    def call(self, method, **params):
        n = self.send(method, params)
        with self.cv:
            if not self.cv.wait_for(lambda: n in self.answers, timeout=TIMEOUT_S):
                raise TimeoutError(f"{method}: no answer")
            message = self.answers.pop(n)
        if "error" in message:
            raise RuntimeError(f"{method}: {message['error']}")
        return message.get("result", {})

    def _read(self):
        while True:
            try:
                message = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                continue
            except Exception:  # the browser has gone
                return
            if "id" in message:
                if "sessionId" not in message:
                    with self.cv:
                        self.answers[message["id"]] = message
                        self.cv.notify_all()
                continue
            if message.get("method") == "Target.attachedToTarget":
                session = message["params"]["sessionId"]
                if self.headers:
                    self.send("Network.setExtraHTTPHeaders", {"headers": self.headers}, session)
                for method in ("Network.enable", "Runtime.enable"):
                    self.send(method, {}, session)
                self.send("Target.setAutoAttach", {"autoAttach": True, "waitForDebuggerOnStart": True,
                                                   "flatten": True}, session)
                self.send("Runtime.runIfWaitingForDebugger", {}, session)
            self.events.append(message)


def parse_colour(text):
    rgb = tuple(int(v) for v in text.split(","))
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise argparse.ArgumentTypeError(f"not R,G,B: {text}")
    return rgb


def hue_chroma(rgb):
    """Hue in degrees and chroma (max - min, 0..255) of arrays (..., 3) of uint8."""
    a = rgb.astype(np.float32)
    mx, mn = a.max(axis=-1), a.min(axis=-1)
    c = mx - mn
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    safe = np.where(c == 0, 1, c)
    h = np.where(mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4))
    return h * 60.0, c


def count_colour(pixels, colour):
    (h0,), (c0,) = hue_chroma(np.array([colour], dtype=np.uint8))
    if c0 < 20:
        raise SystemExit(f"colour {colour} is too grey to be told from the image")
    h, c = hue_chroma(pixels)
    dh = np.abs((h - h0 + 180.0) % 360.0 - 180.0)
    match = (dh <= HUE_TOL) & (c >= CHROMA_FRACTION * c0)
    exact = np.all(np.abs(pixels.astype(np.int16) - np.array(colour, np.int16)) <= 8, axis=-1)
    return int(match.sum()), int(exact.sum())


def image_drawn(pixels):
    """The share of the viewports' pixels that are grey and not dark, and the spread of
    their levels: a CT slice drawn covers part of the viewport in many levels (measured:
    20% of it, standard deviation 54-60), a frame decoded wrongly is black or one flat grey
    (standard deviation 3.5)."""
    _, c = hue_chroma(pixels)
    grey = pixels.max(axis=-1)[(c < 12) & (pixels.max(axis=-1) >= 40)]
    if not len(grey):
        return 0.0, 0.0
    return round(len(grey) / len(pixels), 4), round(float(grey.std()), 1)


def viewport_pixels(png, viewports):
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    parts = []
    for v in viewports:
        x0, y0 = max(0, int(v["x"])), max(0, int(v["y"]))
        x1, y1 = min(img.shape[1], int(v["x"] + v["width"])), min(img.shape[0], int(v["y"] + v["height"]))
        parts.append(img[y0:y1, x0:x1].reshape(-1, 3))
    return np.concatenate(parts) if parts else np.zeros((0, 3), np.uint8)


def screenshot(page):
    return base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--screenshot", required=True, metavar="OUT.png")
    ap.add_argument("--cookie", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'")
    ap.add_argument("--expect-colour", action="append", default=[], type=parse_colour, metavar="R,G,B")
    ap.add_argument("--min-pixels", type=int, default=50, help="per expected colour (default 50)")
    ap.add_argument("--min-image-fraction", type=float, default=MIN_IMAGE_FRACTION,
                    help="share of the viewports' pixels that must be grey, not black: the image (default 0.05)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds for the whole load (default 120)")
    ap.add_argument("--window", default="1600x1000", metavar="WxH")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromium-flag", action="append", default=[], metavar="--FLAG",
                    help="one more Chromium flag (e.g. --disable-web-security for a viewer "
                         "reading another origin's DICOMweb)")
    ap.add_argument("--console", metavar="OUT.json", help="write every console message and page error there")
    args = ap.parse_args()
    width, height = (int(v) for v in args.window.split("x"))
    origin = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(args.url))

    report = {"url": args.url, "ok": False}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        browser = subprocess.Popen(
            [args.chromium, *CHROMIUM_FLAGS, *args.chromium_flag, f"--window-size={width},{height}", f"--user-data-dir={profile}",
             "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            headers = dict((k.strip(), v.strip()) for k, _, v in (h.partition(":") for h in args.header))
            page = EventPage(debugging_url(pathlib.Path(profile), browser), headers)
            for domain in ("Network", "Runtime", "Log", "Page"):
                page.call(f"{domain}.enable")
            page.call("Target.setAutoAttach", autoAttach=True, waitForDebuggerOnStart=True, flatten=True)
            page.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                      mobile=False)
            for cookie in args.cookie:
                name, _, value = cookie.partition("=")
                page.call("Network.setCookie", name=name, value=value, url=origin)
            if headers:
                page.call("Network.setExtraHTTPHeaders", headers=headers)
            report["gpu"] = page.evaluate(
                "(() => { const g = document.createElement('canvas').getContext('webgl2');"
                " if (!g) return null; const d = g.getExtension('WEBGL_debug_renderer_info');"
                " return d ? g.getParameter(d.UNMASKED_RENDERER_WEBGL) : 'webgl2'; })()")
            t_nav = time.monotonic()
            page.call("Page.navigate", url=args.url)
            deadline = t_nav + args.timeout
            state, png, counts, milestones, panel_tried = None, None, {}, {}, False
            while time.monotonic() < deadline:
                time.sleep(1.0)
                try:
                    state = page.evaluate(PROBE)
                except Exception as e:  # the document is being replaced
                    state = {"error": str(e)}
                    continue
                now = round(time.monotonic() - t_nav, 1)
                images = [v for v in state["viewports"] if v.get("hasImage")]
                shown = [s for s in state["segmentations"] if s["viewports"]]
                if images:
                    milestones.setdefault("image_s", now)
                if shown:
                    milestones.setdefault("segmentation_s", now)
                if not (images and shown):
                    continue
                labels = {x["label"] for s in shown for x in s["segments"] if x["label"]}
                if not panel_tried and not all(label in state["text"] for label in labels):
                    # The segment labels are in the segmentation panel, which the layout
                    # keeps closed: opened as a click on its tab would, then looked again.
                    panel_tried = True
                    report["opened_segmentation_panel"] = page.evaluate(OPEN_PANEL)
                    time.sleep(1.0)
                    continue
                if not all(label in state["text"] for label in labels):
                    continue
                colours = args.expect_colour or sorted(
                    {tuple(int(c) for c in x["colour"][:3]) for s in shown for x in s["segments"] if x["colour"]})
                png = screenshot(page)
                pixels = viewport_pixels(png, images)
                counts = {",".join(map(str, c)): dict(zip(("matching", "exact"), count_colour(pixels, c)))
                          for c in colours}
                found = [c for c, n in counts.items() if n["matching"] >= args.min_pixels]
                fraction, spread = image_drawn(pixels)
                report["image"] = {"grey_fraction": fraction, "grey_std": spread}
                if fraction < args.min_image_fraction or spread < MIN_GREY_STD:
                    continue  # the image itself is not drawn (yet): segments over black or flat grey
                if (len(found) == len(counts) if args.expect_colour else found):
                    milestones.setdefault("drawn_s", now)
                    report["ok"] = True
                    break
            if png is None or not report["ok"]:
                png = screenshot(page)
            pathlib.Path(args.screenshot).write_bytes(png)
        finally:
            os.killpg(browser.pid, signal.SIGTERM)  # the browser and its helpers
            browser.wait()

    # The requests that failed, and what the page logged as errors or warnings.
    urls, failed, console, everything = {}, [], [], []
    for e in page.events:
        p = e.get("params", {})
        if e["method"] == "Network.requestWillBeSent":
            urls[e.get("sessionId"), p["requestId"]] = p["request"]["url"]
        elif e["method"] == "Network.responseReceived" and p["response"]["status"] >= 400:
            failed.append({"url": p["response"]["url"], "status": p["response"]["status"]})
        elif e["method"] == "Network.loadingFailed" and not p.get("canceled"):
            failed.append({"url": urls.get((e.get("sessionId"), p["requestId"])), "error": p.get("errorText")})
        elif e["method"] == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            everything.append({"level": p["type"], "text": text})
            if p["type"] in ("error", "warning", "assert"):
                console.append({"level": p["type"], "text": text[:500]})
        elif e["method"] == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            console.append({"level": "exception", "text": (d.get("exception", {}).get("description") or d.get("text", ""))[:500]})
        elif e["method"] == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
            console.append({"level": "log-" + p["entry"]["level"], "text": p["entry"]["text"][:500],
                            "url": p["entry"].get("url")})
    if args.console:
        pathlib.Path(args.console).write_text(json.dumps(everything + console, indent=1))
    state = state or {}
    labels = sorted({x["label"] for s in state.get("segmentations", []) for x in s["segments"] if x.get("label")})
    text = state.get("text", "")
    report.update({
        "seconds": round(time.monotonic() - t0, 1), "milestones": milestones,
        "screenshot": args.screenshot, "href": state.get("href"), "cpu_rendering": state.get("cpuRendering"),
        "viewports": state.get("viewports", []),
        "segmentations": [{k: s[k] for k in ("id", "label", "viewports", "segments")} for s in state.get("segmentations", [])],
        "labels_in_page": [label for label in labels if label in text],
        "labels_missing_from_page": [label for label in labels if label not in text],
        "colour_pixels": counts, "min_pixels": args.min_pixels,
        "failed_requests": failed, "console": console,
    })
    print(json.dumps(report, indent=1))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
