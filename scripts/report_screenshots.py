"""Annotated screenshots of the RCA report, one per section, for the README's "Reading the report".

    .venv/bin/python scripts/report_screenshots.py [--out docs/report] [--scenario whatsapp-rate-limit]

Builds the report of a simulated incident (and of the same incident without its logs, traces,
lag and Redis keys, for the data-gaps section), opens it in headless Chromium (forensics.report.browser),
draws numbered callouts over what a reader should look at in each section (outlines and
labels added to the page itself, so no image library is needed), and captures each section
as a PNG at reduced scale: ``<out>/<n>-<section>.png``. Needs Chromium like ``--formats pdf``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import tempfile
from pathlib import Path

from forensics.bundle import write_bundle
from forensics.errors import ForensicsError
from forensics.report.browser import FIGURES_DRAWN_JS, Browser, require_chromium
from forensics.report.runner import build_report
from forensics.simulate import simulate

WIDTH = 1120
CONTENT = 800
"""Width the report is laid out in; the callout labels go in the margin to its right."""
SCALE = 0.6
MAX_HEIGHT = 1400
"""Section height captured at most, in CSS pixels (long appendices are cut)."""
PARTIAL = ("log_events", "spans", "consumer_lag", "locks")
"""Tables left out of the incident whose "Evidence and data gaps" section is shown."""

# Section title -> callouts: (CSS selector inside the section, which match: its index, or a text
# it contains, label).
CALLOUTS: dict[str, list[tuple[str, int, str]]] = {
    "Summary": [("dl.report-summary dd", 0, "what happened, in messages not delivered normally"),
                ("dl.report-summary dd", 1, "onset, detection, end (or still going)"),
                ("dl.report-summary dd", 3, "cause + strongest evidence in its own unit"),
                ("dl.report-summary dd", 5, "how sure, and why"),
                ("p.report-note", 0, "the SLA counts FAILED messages as missed")],
    "Key moments": [("tbody tr", "Onset", "onset"), ("tbody tr", "First evidence", "first failure of the cause"),
                    ("tbody tr", "would have fired", "an alert (would have) fired"), ("tbody tr", "Peak", "peak"),
                    ("tbody tr", -1, "recovery or end of window")],
    "Impact": [(".report-kpi", 0, "messages not delivered normally"), (".report-kpi", -1, "delivery SLA verdict"),
               ("p.report-sla", 0, "SLA stated, then the messages that missed it")],
    "Root cause": [(".report-callout h3", 0, "most likely cause and its confidence"),
                   (".report-callout ul", 0, "evidence for, each in its unit"),
                   ("table", 0, "the other candidates")],
    "What changed": [("p", 1, "which baseline, and when the change began"),
                     ("tbody tr", 0, "new or worse than the baseline: now, before, ratio, onset")],
    "Present before the incident too": [("tbody tr", 0, "chronic: there before too, never the cause")],
    "Detection": [("p", 1, "when it was (or would have been) detected"),
                  ("ul.report-list", 0, "each alert rule, minutes after the onset"),
                  (".report-figure", 0, "alert panels: metric against threshold")],
    "Evidence and data gaps": [("ul.report-list li", 0, "why a source was not read"),
                               ("ul.report-list li", 2, "what a missing table leaves unknown, and the causes it "
                                                        "leaves open")],
    "Figures": [(".report-figure", 0, "every source on one timeline"), (".report-figure", 1, "status flow")],
    "Appendix A: every finding": [("td.sev-critical, td.sev-warning, td.sev-info", 0, "severity = impact on delivery"),
                                  ("thead th", 3, "what the finding counts"),
                                  ("thead th", 4, "its value, in its unit")],
    "Appendix B: every event": [("thead th", 4, "the evidence row behind each event")],
    "Appendix C: error groups": [("tbody tr", 0, "failures by platform error, largest first")],
    "Appendix D: alert rules and sources": [("table", 0, "each rule replayed from metrics and evidence"),
                                            ("table", 2, "rows per evidence table")],
}

NARROW_JS = r"""
(function (width) {
  const style = document.createElement('style');
  style.textContent = `main.report, .report-footer { max-width: ${width}px !important; margin: 0 !important; }
    td { max-width: 300px !important; }`;
  document.head.appendChild(style);
  document.querySelectorAll('.plotly-graph').forEach(d => window.Plotly && Plotly.Plots.resize(d));
  return true;
})(%d)
"""
ANNOTATE_JS = r"""
(function (title, callouts, CONTENT) {
  const cells = Array.from(document.querySelectorAll('main.report > .jp-Cell'));
  const start = cells.findIndex(c => { const h = c.querySelector('h2'); return h && h.textContent.replace('¶', '').trim() === title; });
  if (start < 0) return null;
  let end = cells.length;
  for (let i = start + 1; i < cells.length; i++) { if (cells[i].querySelector('h2')) { end = i; break; } }
  const mine = cells.slice(start, end);
  document.querySelectorAll('.shot-mark').forEach(e => e.remove());
  const top = mine[0].getBoundingClientRect().top + window.scrollY;
  const last = mine[mine.length - 1].getBoundingClientRect();
  const bottom = last.bottom + window.scrollY;
  const picked = [];
  for (const [selector, index, label] of callouts) {
    const found = mine.flatMap(c => Array.from(c.querySelectorAll(selector)));
    const el = typeof index === 'string' ? found.find(e => e.textContent.includes(index))
                                         : found[index < 0 ? found.length + index : index];
    if (el) picked.push([el, label]);
  }
  picked.sort((a, b) => a[0].getBoundingClientRect().top - b[0].getBoundingClientRect().top);
  let n = 0, below = 0;
  for (const [el, label] of picked) {
    n += 1;
    const r = el.getBoundingClientRect();
    const y = r.top + window.scrollY;
    const box = document.createElement('div');
    box.className = 'shot-mark';
    Object.assign(box.style, {position: 'absolute', left: (r.left + window.scrollX - 3) + 'px', top: (y - 3) + 'px',
      width: Math.min(r.width + 6, CONTENT - r.left + 4) + 'px', height: (r.height + 6) + 'px',
      border: '3px solid #d81b60', borderRadius: '4px', zIndex: 1000, pointerEvents: 'none'});
    const at = Math.max(y - 2, below + 4);
    const tag = document.createElement('div');
    tag.className = 'shot-mark';
    tag.textContent = n + '  ' + label;
    Object.assign(tag.style, {position: 'absolute', left: (CONTENT + 16) + 'px', top: at + 'px', width: '280px',
      background: '#d81b60', color: '#fff', font: '600 14px/1.3 sans-serif', padding: '4px 9px',
      borderRadius: '8px', zIndex: 1001, pointerEvents: 'none'});
    const line = document.createElement('div');
    line.className = 'shot-mark';
    Object.assign(line.style, {position: 'absolute', left: Math.min(r.right, CONTENT) + 'px', top: (at + 11) + 'px',
      width: Math.max(CONTENT + 16 - Math.min(r.right, CONTENT), 0) + 'px', height: '0',
      borderTop: '2px dashed #d81b60', zIndex: 999, pointerEvents: 'none'});
    document.body.appendChild(box);
    document.body.appendChild(line);
    document.body.appendChild(tag);
    below = at + tag.getBoundingClientRect().height;
  }
  return {top: top, height: Math.max(bottom, below) - top, marks: n};
})(%s, %s, %d)
"""


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def screenshots(reports: dict[str, Path], out: Path, workdir: Path) -> list[Path]:
    """One annotated PNG per section into ``out``, each from ``reports[title]`` (default
    ``reports[""]``)."""
    out.mkdir(parents=True, exist_ok=True)
    written, opened = [], None
    with Browser(workdir) as browser:
        for i, (title, callouts) in enumerate(CALLOUTS.items(), 1):
            report_html = reports.get(title, reports[""])
            if report_html != opened:
                browser.open(report_html, width=WIDTH)
                browser.wait_for(FIGURES_DRAWN_JS)
                browser.evaluate(NARROW_JS % CONTENT)
                opened = report_html
            box = browser.evaluate(ANNOTATE_JS % (json.dumps(title), json.dumps(callouts), CONTENT))
            if box is None:
                raise ForensicsError(f"section {title!r} not in {report_html}")
            clip = {"x": 0, "y": box["top"] - 8, "width": WIDTH, "height": min(box["height"] + 16, MAX_HEIGHT),
                    "scale": SCALE}
            path = out / f"{i:02d}-{slug(title)}.png"
            path.write_bytes(browser.screenshot(clip))
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/report", help="directory for the PNGs (default docs/report)")
    p.add_argument("--scenario", default="whatsapp-rate-limit")
    p.add_argument("--messages", type=int, default=3000)
    args = p.parse_args(argv)
    try:
        require_chromium()
        with tempfile.TemporaryDirectory(prefix="report-shots-") as tmp:
            root = Path(tmp)
            bundle = write_bundle(simulate(args.scenario, messages=args.messages, seed=1), root / "bundle")
            reports = {"": build_report(bundle, root / "report", formats=("html",))["html"]}
            partial = simulate(args.scenario, messages=args.messages, seed=1)
            partial = dataclasses.replace(partial, tables={k: v for k, v in partial.tables.items() if k not in PARTIAL},
                                          missing={"logs": "no log files were given",
                                                   "jaeger": "unreachable: connection refused"})
            reports["Evidence and data gaps"] = build_report(write_bundle(partial, root / "partial"), root / "gaps",
                                                             formats=("html",))["html"]
            for path in screenshots(reports, Path(args.out), root / "chromium"):
                print(f"{path} {path.stat().st_size / 1024:,.0f} KiB")
    except ForensicsError as exc:
        print(f"report_screenshots: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
