"""The HTML report in a real browser: headless Chromium draws every figure and logs no
JavaScript error. Negative controls (an injected error, a page without plotly.js) prove the
checks can fail.

Chromium is Debian's (/usr/bin/chromium, installed by the test setup; this test installs
nothing). Without it the test is skipped, or FAILS when CI=true. The browser is driven over
the DevTools protocol (a tiny client on websocket-client, a Jupyter dependency): console
errors and uncaught exceptions are collected as events, the DOM is queried for Plotly's
``main-svg`` elements, and each figure is captured as a PNG that is decoded here (zlib and
the five PNG filters) to check it is not blank.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import struct
import subprocess
import time
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from plotly.offline import get_plotlyjs

from forensics.bundle import write_bundle
from forensics.report.runner import build_report
from forensics.simulate import simulate

CHROMIUM = os.environ.get("FORENSICS_CHROMIUM", "/usr/bin/chromium")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,900")
TIMEOUT_S = 60
MIN_COLOURED_PIXELS = 50
"""Strongly coloured pixels a figure with data shows at least, captured at half scale (its
markers, lines, bars and legend; an empty figure or a text-only page shows none)."""


def _chromium() -> str:
    if Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    why = f"headless Chromium not found at {CHROMIUM} (Debian: apt-get install -y chromium)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{why}; CI=true, so the browser check cannot be skipped")
    pytest.skip(why)


# ---- a tiny PNG decoder (8-bit RGB/RGBA, not interlaced: what Chromium writes) ----------------

def png_pixels(png: bytes) -> np.ndarray:
    """Pixels of a PNG as an (height, width, channels) uint8 array."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        body = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and not interlace, f"unsupported PNG {header}"
    bpp = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(height, width * bpp + 1)
    out = np.zeros((height, width * bpp), np.uint8)
    prior = np.zeros(width * bpp, np.uint8)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:]
        if kind == 0:
            row = line.copy()
        elif kind == 1:  # Sub: each byte adds the reconstructed byte bpp to its left
            row = np.cumsum(line.reshape(width, bpp), axis=0, dtype=np.uint64).astype(np.uint8).ravel()
        elif kind == 2:  # Up
            row = line + prior
        else:  # Average, Paeth: sequential along the row
            row, up, f = bytearray(line.tobytes()), prior.tobytes(), line.tobytes()
            for i in range(len(row)):
                a = row[i - bpp] if i >= bpp else 0
                b, c = up[i], (up[i - bpp] if i >= bpp else 0)
                if kind == 3:
                    row[i] = (f[i] + (a + b) // 2) & 0xFF
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    row[i] = (f[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
            row = np.frombuffer(bytes(row), np.uint8)
        out[y] = row
        prior = row
    return out.reshape(height, width, bpp)


def coloured_pixels(pixels: np.ndarray) -> int:
    """Pixels of a strong colour (channel spread > 80): what figure traces add to a page of
    dark text on white. Plotly's own text colour (#2a3f5f, spread 53) and greys do not count."""
    rgb = pixels[..., :3].astype(np.int16)
    return int(((rgb.max(axis=-1) - rgb.min(axis=-1)) > 80).sum())


def test_png_decoder_reads_every_filter():
    """A 3x5 RGB image written with filters None, Sub, Up, Average and Paeth decodes to itself."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (5, 3, 3), dtype=np.uint8)
    flat = image.reshape(5, 9).astype(np.int16)
    lines, prior = [], np.zeros(9, np.int16)
    for kind in range(5):
        row = flat[kind]
        left = np.r_[np.zeros(3, np.int16), row[:-3]]
        upleft = np.r_[np.zeros(3, np.int16), prior[:-3]]
        if kind == 0:
            f = row
        elif kind == 1:
            f = row - left
        elif kind == 2:
            f = row - prior
        elif kind == 3:
            f = row - (left + prior) // 2
        else:
            p = left + prior - upleft
            pa, pb, pc = abs(p - left), abs(p - prior), abs(p - upleft)
            f = row - np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prior, upleft))
        lines.append(bytes([kind]) + (f % 256).astype(np.uint8).tobytes())
        prior = row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 3, 5, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"".join(lines))) + chunk(b"IEND", b""))
    assert (png_pixels(png) == image).all()


# ---- a tiny DevTools-protocol client ------------------------------------------------------------

@dataclass
class PageCheck:
    """What the browser saw of one HTML page."""

    errors: list[str] = field(default_factory=list)
    """Uncaught exceptions, console.error/assert calls and error log entries, one line each."""
    figures: list[dict] = field(default_factory=list)
    """Per ``.plotly-graph`` div: drawn (has a main-svg), traces (its data length), coloured_pixels."""
    main_svg: int = 0
    screenshot: bytes = b""
    """The whole page as a PNG (kept beside the report for a human to look at)."""
    stderr: str = ""


class Browser:
    """One headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, workdir: Path) -> None:
        import websocket  # websocket-client, installed with jupyter

        self.log = workdir / "chromium-stderr.txt"
        profile = workdir / "profile"
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen([_chromium(), *FLAGS, f"--user-data-dir={profile}",
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

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def open(self, path: Path) -> None:
        """Navigate to ``path`` and wait for the load event."""
        self.events.clear()
        self.call("Page.navigate", url=path.resolve().as_uri())
        deadline = time.monotonic() + TIMEOUT_S
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            assert time.monotonic() < deadline, f"{path.name} did not load in {TIMEOUT_S} s"
            self.events.append(json.loads(self.ws.recv()))

    def errors(self) -> list[str]:
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
            os.killpg(self.proc.pid, signal.SIGKILL)  # only the session this test started
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


FIGURES_JS = """
Array.from(document.querySelectorAll('.plotly-graph')).map(div => {
  const r = div.getBoundingClientRect();
  return {drawn: !!div.querySelector('.main-svg'), traces: (div.data || []).length,
          x: r.x + window.scrollX, y: r.y + window.scrollY, width: r.width, height: r.height};
})"""


def check_page(browser: Browser, path: Path) -> PageCheck:
    """Load ``path``, wait until Plotly has drawn (at most 20 s; not at all without plotly.js),
    and look at it."""
    browser.open(path)
    deadline = time.monotonic() + 20
    figures = browser.evaluate(FIGURES_JS)
    while (not all(f["drawn"] for f in figures) and browser.evaluate("!!window.Plotly")
           and time.monotonic() < deadline):
        time.sleep(0.1)
        figures = browser.evaluate(FIGURES_JS)
    check = PageCheck(errors=browser.errors(), main_svg=browser.evaluate("document.querySelectorAll('.main-svg').length"))
    for f in figures:
        coloured = 0
        if f["width"] and f["height"]:
            clip = {"x": f["x"], "y": f["y"], "width": f["width"], "height": f["height"], "scale": 0.5}
            shot = browser.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)
            coloured = coloured_pixels(png_pixels(base64.b64decode(shot["data"])))
        check.figures.append({**f, "coloured_pixels": coloured})
    height = browser.evaluate("document.documentElement.scrollHeight")
    whole = {"x": 0, "y": 0, "width": 1280, "height": min(height, 16000), "scale": 1}
    check.screenshot = base64.b64decode(browser.call("Page.captureScreenshot", format="png", clip=whole,
                                                     captureBeyondViewport=True)["data"])
    return check


# ---- the report -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(tmp_path_factory.mktemp("chromium"))
    yield b
    b.close()


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    _chromium()  # skip (or fail in CI) before building anything
    root = tmp_path_factory.mktemp("browser")
    bundle = write_bundle(simulate("whatsapp-rate-limit", messages=1500, seed=11), root / "bundle")
    return build_report(bundle, root / "report", formats=("html",))["html"]


def test_report_figures_render_without_javascript_errors(browser, report_html):
    check = check_page(browser, report_html)
    (report_html.parent / "report.png").write_bytes(check.screenshot)
    where = f"(screenshot {report_html.parent / 'report.png'}, browser log {browser.log})"
    assert not check.errors, f"JavaScript errors {where}: {check.errors}"
    expected = report_html.read_text(encoding="utf-8").count("Plotly.newPlot(div")
    assert expected >= 5 and len(check.figures) == expected
    assert all(f["drawn"] for f in check.figures), f"figures not drawn {where}: {check.figures}"
    assert check.main_svg >= expected
    blank = [f for f in check.figures if f["traces"] and f["coloured_pixels"] < MIN_COLOURED_PIXELS]
    assert not blank, f"figures with data drawn blank {where}: {blank}"
    assert sum(f["traces"] > 0 for f in check.figures) >= 5


def test_negative_control_an_injected_error_is_caught(browser, report_html, tmp_path):
    broken = tmp_path / "broken.html"
    page = report_html.read_text(encoding="utf-8")
    broken.write_text(page.replace("</body>", '<script>throw new Error("deliberate test error")</script>'
                                              '<script>console.error("deliberate console error")</script></body>'),
                      encoding="utf-8")
    check = check_page(browser, broken)
    assert any("deliberate test error" in e and e.startswith("uncaught") for e in check.errors), check.errors
    assert any("deliberate console error" in e for e in check.errors), check.errors


def test_negative_control_a_page_without_plotly_draws_nothing(browser, report_html, tmp_path):
    bare = tmp_path / "bare.html"
    page = report_html.read_text(encoding="utf-8")
    assert page.count(get_plotlyjs()) == 1
    bare.write_text(page.replace(get_plotlyjs(), ""), encoding="utf-8")
    check = check_page(browser, bare)
    assert check.figures and not any(f["drawn"] for f in check.figures) and check.main_svg == 0
    assert all(f["coloured_pixels"] == 0 for f in check.figures)


def test_chromium_is_not_left_running(tmp_path):
    b = Browser(tmp_path)
    assert len(session_processes(b.proc.pid)) > 1  # browser, zygote, ...
    b.close()
    assert b.proc.poll() is not None and not session_processes(b.proc.pid)
