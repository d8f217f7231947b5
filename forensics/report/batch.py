"""Batch mode: the RCA reports of many incidents in one run, and an index of them.

``build_batch`` takes bundles, or directories holding bundles, and builds each incident's
report (:func:`forensics.report.runner.build_report`, one after another) into its own
subdirectory of ``out_dir``. ``index.json`` and ``index.html`` list every incident with its
most likely cause, confidence, window and impact, or the error that stopped it: a bundle
that fails (tampered, unreadable, a notebook error) is recorded and the batch goes on.
The index is rewritten after every incident, so an interrupted batch still lists what it
finished.
"""

from __future__ import annotations

import html
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from forensics import __version__
from forensics.bundle import ARCHIVE_SUFFIXES, MANIFEST, is_archive
from forensics.errors import BundleError, ForensicsError
from forensics.report.runner import DEFAULT_FORMATS, build_report
from forensics.timeutil import iso, utcnow

INDEX_JSON = "index.json"
INDEX_HTML = "index.html"
IMPACT_KEYS = ("messages_total", "messages_affected", "messages_failed", "conversations_affected",
               "customers_affected", "delivery_p95_s", "sla_breach")
"""Impact measures the index carries per incident (from summary.json)."""


@dataclass
class Incident:
    """One bundle of a batch: where its report went, and what it says or why it failed."""

    name: str
    """Subdirectory of the batch output holding this incident's report."""
    bundle: str
    status: str = "pending"
    """ok, or failed (``error`` says why)."""
    error: str | None = None
    seconds: float | None = None
    files: dict[str, str] = field(default_factory=dict)
    """Format -> report file, relative to the batch output directory."""
    cause: str | None = None
    title: str | None = None
    confidence: float | None = None
    runbook_step: str | None = None
    window_start: str | None = None
    window_end: str | None = None
    impact: dict[str, Any] = field(default_factory=dict)
    missing_sources: list[str] = field(default_factory=list)
    scenario_root_cause: str | None = None
    """For a simulated incident, its true cause (to check the ranking against)."""

    def read_summary(self, summary: dict) -> None:
        top = (summary.get("hypotheses") or [{}])[0]
        self.cause, self.title = top.get("cause"), top.get("title")
        self.confidence, self.runbook_step = top.get("confidence"), top.get("runbook_step")
        window = summary.get("window") or {}
        self.window_start, self.window_end = window.get("start"), window.get("end")
        impact = summary.get("impact") or {}
        self.impact = {k: impact[k] for k in IMPACT_KEYS if k in impact}
        # sources that were asked and failed; tables merely absent are not a source's failure
        self.missing_sources = sorted(k for k, v in (summary.get("missing_sources") or {}).items()
                                      if v != "table not collected")
        self.scenario_root_cause = (summary.get("scenario") or {}).get("root_cause")


@dataclass
class BatchResult:
    out_dir: Path
    incidents: list[Incident]
    index_json: Path
    index_html: Path
    seconds: float

    @property
    def failed(self) -> list[Incident]:
        return [i for i in self.incidents if i.status != "ok"]


def is_bundle(path: Path) -> bool:
    """A bundle directory (holds manifest.json) or a bundle archive (.tar.gz, .tgz, .tar)."""
    return (path.is_dir() and (path / MANIFEST).is_file()) or is_archive(path)


def find_bundles(paths: Iterable[str | Path]) -> list[Path]:
    """The incidents of a batch, in the order given: each path that is a bundle, and the bundles
    directly inside each directory that is not one (sorted by name). A path that is neither
    is kept, so the batch records why it could not be read."""
    found: list[Path] = []
    for p in map(Path, paths):
        inside = sorted(c for c in p.iterdir() if is_bundle(c)) if p.is_dir() and not is_bundle(p) else []
        found.extend(inside or [p])
    return found


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def incident_name(bundle: Path) -> str:
    """The subdirectory name of a bundle's report: its name without the archive suffix, cut to
    letters, digits, ``.``, ``_`` and ``-`` (anything else becomes ``-``; no leading dot), so it
    stays a plain name inside the batch output whatever the bundle is called (``..``,
    ``javascript:...``)."""
    name = bundle.resolve().name if bundle.name in ("", ".", "..") else bundle.name
    base = next((name[: -len(s)] for s in ARCHIVE_SUFFIXES if name.endswith(s)), name)
    return _UNSAFE.sub("-", base).strip("-").lstrip(".")[:100] or "incident"


def incident_names(bundles: list[Path]) -> list[str]:
    """One subdirectory name per bundle (:func:`incident_name`), made unique with -2, -3, ...
    in order."""
    names: list[str] = []
    for b in bundles:
        base = incident_name(b)
        name, n = base, 1
        while name in names or name in (INDEX_JSON, INDEX_HTML):
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def incident_error(exc: BaseException) -> str:
    """The error on one line; the toolkit's own errors say what they are, others get their type."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, ForensicsError) else f"{type(exc).__name__}: {text}"


def build_batch(paths: Iterable[str | Path], out_dir: str | Path, formats: Iterable[str] = DEFAULT_FORMATS,
                parameters: dict[str, Any] | None = None, redact: bool = True,
                progress: Callable[[str], None] | None = None) -> BatchResult:
    """Build the report of every incident in ``paths`` (see :func:`find_bundles`) into
    ``out_dir/<name>/``, and ``out_dir/index.json`` and ``index.html``.

    ``formats``, ``parameters`` and ``redact`` are those of build_report (``json`` is always
    written: the index is read from it). A bundle that fails is recorded with its error and
    the batch goes on; the caller decides what the failures mean (:attr:`BatchResult.failed`).
    """
    started = time.monotonic()
    say = progress or (lambda _msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wanted = tuple(dict.fromkeys([*formats, "json"]))
    bundles = find_bundles(paths)
    incidents = [Incident(name, str(b)) for name, b in zip(incident_names(bundles), bundles, strict=True)]
    for number, (incident, bundle) in enumerate(zip(incidents, bundles, strict=True), start=1):
        say(f"[{number}/{len(incidents)}] {incident.name}: {bundle}")
        t0 = time.monotonic()
        try:
            if not is_bundle(bundle):
                raise BundleError(f"{bundle}: not an evidence bundle (no {MANIFEST}, not a .tar.gz)"
                                  if bundle.exists() else f"{bundle}: does not exist")
            written = build_report(bundle, out / incident.name, formats=wanted, parameters=parameters,
                                   redact=redact, progress=lambda m, n=incident.name: say(f"  {n}: {m}"))
            incident.read_summary(json.loads(written["json"].read_text(encoding="utf-8")))
            incident.files = {kind: path.relative_to(out).as_posix() for kind, path in written.items()}
            incident.status = "ok"
        except Exception as exc:  # noqa: BLE001 - one incident's failure must not stop the batch
            incident.status, incident.error = "failed", incident_error(exc)
            say(f"  {incident.name}: FAILED: {incident.error}")
        incident.seconds = round(time.monotonic() - t0, 2)
        write_index(out, incidents, time.monotonic() - started)
    seconds = time.monotonic() - started
    paths_written = write_index(out, incidents, seconds)
    return BatchResult(out, incidents, *paths_written, seconds=seconds)


def write_index(out: Path, incidents: list[Incident], seconds: float, *, kind: str = "batch",
                extra: dict[str, Any] | None = None, title: str = "Incident batch",
                columns: Iterable[tuple[str, Callable[[Any], Any]]] = ()) -> tuple[Path, Path]:
    """index.json and index.html of a batch (every incident, finished or not), each replaced
    whole. ``kind`` names the run's entry in index.json (with ``extra`` counts); ``columns``
    are (header, value of an incident) shown after the status (forensics.report.watch adds its own)."""
    meta = {"generated_at": iso(utcnow()), "toolkit_version": __version__, "seconds": round(seconds, 1),
            "incidents": len(incidents), "ok": sum(i.status == "ok" for i in incidents),
            "failed": sum(i.status == "failed" for i in incidents), **(extra or {})}
    index_json = out / INDEX_JSON
    _replace(index_json, json.dumps({kind: meta, "incidents": [asdict(i) for i in incidents]}, indent=2,
                                    default=str) + "\n")
    index_html = out / INDEX_HTML
    _replace(index_html, render_index(incidents, meta, title, tuple(columns)))
    return index_json, index_html


def _replace(path: Path, text: str) -> None:
    """Write ``path`` whole (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _cell(value: Any) -> str:
    return "<td>—</td>" if value is None or value == "" else f"<td>{html.escape(str(value))}</td>"


def _count(impact: dict, key: str) -> str | None:
    value = impact.get(key)
    return None if value is None else f"{value:,}"


def render_index(incidents: list[Incident], meta: dict, title: str = "Incident batch",
                 columns: tuple[tuple[str, Callable[[Any], Any]], ...] = ()) -> str:
    """The index page: one row per incident, every text escaped, links relative."""
    e = html.escape
    rows = []
    for i in incidents:
        report = i.files.get("html") or i.files.get("md") or i.files.get("json")
        # a relative ./ URL, percent-encoded: never a scheme (javascript:), never outside the batch
        name = f'<a href="./{e(quote(report))}">{e(i.name)}</a>' if report else e(i.name)
        affected = (f"{_count(i.impact, 'messages_affected')} of {_count(i.impact, 'messages_total')}"
                    if i.impact.get("messages_total") is not None else None)
        sla = {True: "breached", False: "met"}.get(i.impact.get("sla_breach"))
        what = (f'<td class="error" colspan="6">{e(i.error or "")}</td>' if i.status == "failed" else
                _cell(i.title) + _cell(None if i.confidence is None else f"{i.confidence:.0%}")
                + _cell(f"{i.window_start} to {i.window_end}" if i.window_start else None) + _cell(affected)
                + _cell(_count(i.impact, "customers_affected")) + _cell(sla))
        more = "".join(_cell(value(i)) for _, value in columns)
        rows.append(f'<tr class="{e(i.status)}"><td>{name}</td>{_cell(i.status)}{more}{what}'
                    f'{_cell(", ".join(i.missing_sources))}{_cell(i.seconds)}</tr>')
    head = ("incident", "status", *(h for h, _ in columns), "most likely cause", "confidence", "window",
            "messages affected", "customers", "SLA", "missing sources", "seconds")
    title = f"{title}: {meta['incidents']} incidents, {meta['ok']} reported, {meta['failed']} failed"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #263238; }}
table {{ border-collapse: collapse; width: 100%; font-size: 0.9rem; }}
th, td {{ border-bottom: 1px solid #cfd8dc; padding: 0.4rem 0.6rem; text-align: left; vertical-align: top; }}
th {{ background: #eceff1; }}
tr.failed td {{ background: #ffebee; }}
td.error {{ color: #b71c1c; font-family: monospace; }}
footer {{ margin-top: 1.5rem; color: #607d8b; font-size: 0.8rem; }}
</style>
</head>
<body>
<h1>{e(title)}</h1>
<table>
<thead><tr>{"".join(f"<th>{e(h)}</th>" for h in head)}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
<footer>chat4all-forensics {e(meta['toolkit_version'])} &middot; generated {e(meta['generated_at'])}
&middot; {e(str(meta['seconds']))} s</footer>
</body>
</html>
"""
