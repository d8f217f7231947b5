"""Headless Chromium for the report: the printable PDF, screenshots, and the browser test.

Chromium is found at ``FORENSICS_CHROMIUM`` or as ``chromium`` / ``chromium-browser`` /
``google-chrome`` on the PATH (Debian: ``apt-get install chromium``; ``scripts/test.sh``
installs it). Nothing here installs it: :func:`require_chromium` raises one line naming
what to do.

The browser is driven over the DevTools protocol by a tiny client on websocket-client (a
Jupyter dependency): console errors and uncaught exceptions arrive as events, the page is
evaluated, captured or printed with ``Page.printToPDF``. :func:`print_pdf` lays the page
out at the printable width, waits until every Plotly figure has drawn, and prints it with
its backgrounds on A4 (the report's CSS starts each section on a new page). The browser
runs as its own session leader and is stopped with everything it started.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from forensics.errors import ParameterError

CHROMIUM_ENV = "FORENSICS_CHROMIUM"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--window-size=1280,900")
TIMEOUT_S = 60
PRINT_WIDTH_PX = 760
"""Layout width while printing: A4's 210 mm less 2 x 8 mm margins at 96 px per inch, so
figures are drawn at the width they are printed at."""
FIGURES_DRAWN_JS = ("Array.from(document.querySelectorAll('.plotly-graph'))"
                    ".every(d => !!d.querySelector('.main-svg'))")


def find_chromium() -> str | None:
    """Path of the headless Chromium to use, or None when none is installed."""
    given = os.environ.get(CHROMIUM_ENV)
    if given:
        return given if Path(given).is_file() and os.access(given, os.X_OK) else None
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def require_chromium() -> str:
    """The Chromium path, or a ParameterError in one line saying how to get one."""
    path = find_chromium()
    if path is None:
        where = os.environ.get(CHROMIUM_ENV)
        raise ParameterError(f"formats: pdf needs headless Chromium; {CHROMIUM_ENV}={where} is not an executable"
                             if where else
                             "formats: pdf needs headless Chromium, which is not installed (Debian: apt-get "
                             f"install chromium; or set {CHROMIUM_ENV}=/path/to/chromium)")
    return path


class Browser:
    """One headless Chromium with one page, driven over the DevTools protocol; a context manager."""

    def __init__(self, workdir: Path, chromium: str | None = None) -> None:
        import websocket  # websocket-client, installed with jupyter

        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "chromium-stderr.txt"
        profile = workdir / "profile"
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen([chromium or require_chromium(), *FLAGS, f"--user-data-dir={profile}",
                                          "--remote-debugging-port=0", "about:blank"],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                         start_new_session=True)
        try:
            port = self._port(profile / "DevToolsActivePort")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:  # noqa: S310
                page = next(t for t in json.load(resp) if t["type"] == "page")
            self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=TIMEOUT_S,
                                                  suppress_origin=True)
        except BaseException:
            self.close()
            raise
        self.next_id, self.events = 0, []
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable")

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _port(self, port_file: Path) -> int:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            text = port_file.read_text() if port_file.exists() else ""
            if text.strip():
                return int(text.split()[0])
            time.sleep(0.05)
        raise TimeoutError(f"chromium did not open its DevTools port in {TIMEOUT_S} s")

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self.events.append(msg)

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def open(self, path: Path, width: int | None = None) -> None:
        """Navigate to ``path`` (laid out ``width`` px wide when given) and wait for the load event."""
        self.events.clear()
        if width:
            self.call("Emulation.setDeviceMetricsOverride", width=width, height=1100, deviceScaleFactor=1,
                      mobile=False)
        else:
            self.call("Emulation.clearDeviceMetricsOverride")
        self.call("Page.navigate", url=path.resolve().as_uri())
        deadline = time.monotonic() + TIMEOUT_S
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path.name} did not load in {TIMEOUT_S} s")
            self.events.append(json.loads(self.ws.recv()))

    def wait_for(self, expression: str, timeout_s: float = 20) -> bool:
        """Poll ``expression`` until it is true (at most ``timeout_s``); whether it became true."""
        deadline = time.monotonic() + timeout_s
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def errors(self) -> list[str]:
        """Uncaught exceptions, console.error/assert calls and error log entries since the page opened."""
        out = []
        for e in self.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(f"uncaught: {d.get('exception', {}).get('description') or d.get('text')}")
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console.{p['type']}: " + " ".join(str(a.get("value", a.get("description")))
                                                               for a in p.get("args", [])))
            elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"log: {p['entry'].get('text')}")
        return out

    def screenshot(self, clip: dict[str, float] | None = None) -> bytes:
        """A PNG of ``clip`` ({x, y, width, height, scale}) or of the viewport."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": clip is not None}
        if clip is not None:
            params["clip"] = clip
        return base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])

    def pdf(self) -> bytes:
        """The page printed (print media, backgrounds on, the CSS's page size and breaks)."""
        return base64.b64decode(self.call("Page.printToPDF", printBackground=True, preferCSSPageSize=True,
                                          displayHeaderFooter=False)["data"])

    def close(self) -> None:
        """Stop the browser, and whatever of its session (renderer, zygote) outlives it."""
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 5
        while session_processes(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if session_processes(self.proc.pid):
            os.killpg(self.proc.pid, signal.SIGKILL)  # only the session this browser started
        self.proc.wait(10)


def session_processes(sid: int) -> list[int]:
    """Live processes of session ``sid`` (the browser was started as its own session leader)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields after the name: state, ppid, pgrp, session
            out.append(int(stat.parent.name))
    return out


def print_pdf(html_path: Path, pdf_path: Path, workdir: Path) -> Path:
    """``html_path`` printed to ``pdf_path`` by headless Chromium, figures drawn first.

    A page whose figures do not draw within 20 s (no plotly.js) is printed as it is: the
    page itself says a figure cannot be drawn."""
    with Browser(workdir) as browser:
        browser.open(html_path, width=PRINT_WIDTH_PX)
        if browser.evaluate("!!window.Plotly"):
            browser.wait_for(FIGURES_DRAWN_JS)
        pdf_path.write_bytes(browser.pdf())
    return pdf_path
