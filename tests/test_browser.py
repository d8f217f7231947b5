"""The HTML report in a real browser: headless Chromium draws every figure and logs no
JavaScript error. Negative controls (an injected error, a page without plotly.js) prove the
checks can fail.

Chromium is Debian's (/usr/bin/chromium, installed by the test setup; this test installs
nothing). Without it the test is skipped, or FAILS when CI=true. The browser is driven over
the DevTools protocol by forensics.report.browser (the client the PDF export uses): console errors
and uncaught exceptions are collected as events, the DOM is queried for Plotly's
``main-svg`` elements, and each figure is captured as a PNG that is decoded here (zlib and
the five PNG filters) to check it is not blank. The printable form (``--formats pdf``) is
read back with pypdf: a page per section, the summary's words, figures drawn as vectors.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from ci import skip_or_fail
from plotly.offline import get_plotlyjs

from forensics.bundle import write_bundle
from forensics.report.browser import FIGURES_DRAWN_JS, Browser, find_chromium, print_pdf, session_processes
from forensics.report.runner import build_report
from forensics.simulate import simulate

MIN_COLOURED_PIXELS = 50
"""Strongly coloured pixels a figure with data shows at least, captured at half scale (its
markers, lines, bars and legend; an empty figure or a text-only page shows none)."""


def _chromium() -> str:
    found = find_chromium()
    if found:
        return found
    skip_or_fail("headless Chromium not found (Debian: apt-get install -y chromium; or set FORENSICS_CHROMIUM)")


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


# ---- the page as the browser draws it -----------------------------------------------------------

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
    if browser.evaluate("!!window.Plotly"):
        browser.wait_for(FIGURES_DRAWN_JS)
    figures = browser.evaluate(FIGURES_JS)
    check = PageCheck(errors=browser.errors(), main_svg=browser.evaluate("document.querySelectorAll('.main-svg').length"))
    for f in figures:
        coloured = 0
        if f["width"] and f["height"]:
            clip = {"x": f["x"], "y": f["y"], "width": f["width"], "height": f["height"], "scale": 0.5}
            coloured = coloured_pixels(png_pixels(browser.screenshot(clip)))
        check.figures.append({**f, "coloured_pixels": coloured})
    height = browser.evaluate("document.documentElement.scrollHeight")
    check.screenshot = browser.screenshot({"x": 0, "y": 0, "width": 1280, "height": min(height, 16000), "scale": 1})
    return check


# ---- the report -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _chromium()
    b = Browser(tmp_path_factory.mktemp("chromium"))
    yield b
    b.close()


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    _chromium()  # skip (or fail in CI) before building anything
    root = tmp_path_factory.mktemp("browser")
    bundle = write_bundle(simulate("whatsapp-rate-limit", messages=1500, seed=11), root / "bundle")
    return build_report(bundle, root / "report", formats=("html", "pdf"))["html"]


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
    _chromium()
    b = Browser(tmp_path)
    assert len(session_processes(b.proc.pid)) > 1  # browser, zygote, ...
    b.close()
    assert b.proc.poll() is not None and not session_processes(b.proc.pid)


# ---- the printable form ---------------------------------------------------------------------------

PATH_OPERATORS = (b" l\n", b" c\n", b" re\n", b" m\n")
"""PDF content-stream operators that draw (line, curve, rectangle, move): Chromium prints
Plotly's SVG as vector paths, so a page with a figure holds thousands of them."""


def pdf_pages(path: Path) -> list[dict]:
    """Per page of a PDF: its text (pypdf) and how many drawing operators it holds."""
    import pypdf

    pages = []
    for page in pypdf.PdfReader(path).pages:
        content = page.get_contents()
        data = content.get_data() if content is not None else b""
        pages.append({"text": page.extract_text() or "", "drawing": sum(data.count(op) for op in PATH_OPERATORS)})
    return pages


def _sections(html: str) -> list[str]:
    import re

    return [re.sub(r"<[^>]+>|¶", "", h).strip() for h in re.findall(r"<h2[^>]*>(.*?)</h2>", html, flags=re.S)]


def section_pages(pages: list[dict], sections: list[str]) -> dict[str, list[int]]:
    """Section title -> the pages it spans, each section found at the top of a page."""
    starts: dict[str, int] = {}
    for i, page in enumerate(pages):
        top = [line.strip() for line in page["text"].splitlines() if line.strip()][:12]
        starts.update({title: i for title in sections if title in top and title not in starts})
    order = sorted(starts.items(), key=lambda kv: kv[1])
    ends = [start for _, start in order[1:]] + [len(pages)]
    return {title: list(range(start, end)) for (title, start), end in zip(order, ends, strict=True)}


def drawing(pages: list[dict], spans: dict[str, list[int]], title: str) -> int:
    return sum(pages[i]["drawing"] for i in spans.get(title, []))


FIGURE_DRAWING = 1000
"""Drawing operators a section with drawn figures holds at least (measured: Figures about 8,700,
Detection's alert panels about 1,500; the same sections without plotly.js about 130)."""


def test_pdf_has_a_page_per_section_the_summary_first_and_its_figures(report_html):
    pdf = report_html.with_name("report.pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    pages = pdf_pages(pdf)
    sections = _sections(report_html.read_text(encoding="utf-8"))
    assert len(sections) >= 10 and len(pages) >= len(sections)
    spans = section_pages(pages, sections)
    assert list(spans) == sections, f"sections not each starting a page: {spans}"
    first = " ".join(pages[0]["text"].split())
    assert sections[0] == "Summary" and "What happened" in first and "Delivery SLA" in first
    assert drawing(pages, spans, "Figures") > FIGURE_DRAWING, [p["drawing"] for p in pages]
    assert drawing(pages, spans, "Detection") > FIGURE_DRAWING, [p["drawing"] for p in pages]


def test_negative_control_a_pdf_without_plotly_has_no_figures(report_html, tmp_path):
    bare = tmp_path / "bare.html"
    html = report_html.read_text(encoding="utf-8")
    bare.write_text(html.replace(get_plotlyjs(), ""), encoding="utf-8")
    pages = pdf_pages(print_pdf(bare, tmp_path / "bare.pdf", tmp_path / "chromium"))
    spans = section_pages(pages, _sections(html))
    assert drawing(pages, spans, "Figures") < FIGURE_DRAWING / 2, [p["drawing"] for p in pages]
    assert any("figure cannot be drawn" in p["text"] for p in pages)
