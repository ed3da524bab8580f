#!/usr/bin/env python3
"""Drives headless Chromium as a person would: opens a page, fills form fields, presses a
button, waits for the page it leads to, and prints that page's DOM. Speaks the Chrome
DevTools Protocol over the browser's debugging socket (websocket-client), so that the
dashboard's forms are tested in a real browser, cookies, redirects and scripts included.

Usage: browse.py URL [--fill SELECTOR VALUE ...] [--click SELECTOR] [--chromium PATH]
Prints the final page's HTML on stdout; exit status 1 when a selector matches nothing.
"""

import argparse
import itertools
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

TIMEOUT_S = 30


class Page:
    """One tab, driven over its DevTools websocket."""

    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=TIMEOUT_S)
        self.ids = itertools.count(1)

    def call(self, method, **params):
        n = next(self.ids)
        self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == n:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_loaded(self):
        """Until a new document (one without the mark `mark` left) is complete; its URL."""
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                href, state, marked = self.evaluate("[location.href, document.readyState, !!window.browsePyMark]")
                if state == "complete" and not marked:
                    return href
            except (RuntimeError, websocket.WebSocketException):
                pass  # the document is being replaced
            time.sleep(0.1)
        raise TimeoutError("the page did not load")

    def mark(self):
        """Marks the current document, so that `wait_loaded` waits for the next one."""
        self.evaluate("window.browsePyMark = true")


def debugging_url(profile, browser):
    """The first tab's websocket, once the browser has written its DevTools port (both
    lines of the file) and lists the tab: a loaded machine can be slow at either."""
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        if browser.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("chromium did not open its debugging socket and a tab")
        lines = port_file.read_text().split() if port_file.exists() else []
        if len(lines) == 2:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{lines[0]}/json/list") as r:
                    pages = [t["webSocketDebuggerUrl"] for t in json.load(r) if t["type"] == "page"]
                if pages:
                    return pages[0]
            except OSError:
                pass  # not listening yet
        time.sleep(0.1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--fill", nargs=2, action="append", default=[], metavar=("SELECTOR", "VALUE"))
    ap.add_argument("--click", metavar="SELECTOR")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    # Chromium's helper processes may still write to the profile as it goes.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        browser = subprocess.Popen(
            [args.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            page = Page(debugging_url(pathlib.Path(profile), browser))
            page.mark()
            page.call("Page.navigate", url=args.url)
            href = page.wait_loaded()
            for selector, value in args.fill:
                found = page.evaluate(
                    f"(function(e){{if(!e)return false;e.focus();e.value={json.dumps(value)};return true}})"
                    f"(document.querySelector({json.dumps(selector)}))")
                if not found:
                    sys.exit(f"nothing matches {selector!r} on {href}")
            if args.click:
                page.mark()
                found = page.evaluate(
                    f"(function(e){{if(!e)return false;e.click();return true}})"
                    f"(document.querySelector({json.dumps(args.click)}))")
                if not found:
                    sys.exit(f"nothing matches {args.click!r} on {href}")
                page.wait_loaded()
            print(page.evaluate("document.documentElement.outerHTML"))
        finally:
            os.killpg(browser.pid, signal.SIGTERM)  # the browser and its helpers
            browser.wait()


if __name__ == "__main__":
    main()
