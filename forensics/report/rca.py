"""The RCA report: what the report says, and how it is built.

``build_report`` runs ``notebooks/rca_report.ipynb`` with papermill on an evidence bundle, or
on live sources over a window (the notebook collects them itself; a source that cannot be
read is recorded as missing and the report says so), and writes, into ``out_dir``:

- ``report.html``  the notebook rendered through ``templates/rca`` without code or prompts,
  self-contained (plotly.js inlined once, no network);
- ``report.md``    the post-mortem in Markdown (``templates/postmortem.md.j2``);
- ``summary.json`` the analysis summary, hypotheses ranked most likely first;
- ``report.ipynb`` the executed notebook, for audit.

The notebook computes the analysis once and publishes what the report says (``RcaReport.
to_dict()``, already redacted) as an output of its own mimetype; Markdown and JSON are
rendered from that, so the three formats always agree. ``markdown_report`` renders the same
Markdown straight from an Analysis, without a notebook.

Exports are redacted by default (:mod:`forensics.report.redact`); every text that comes from
evidence is escaped for the format it goes into (HTML entities, Markdown escapes, JSON).
Everything is written into a temporary sibling directory and moved into place only when all
formats succeeded, so a half-written report never looks complete.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from traitlets import default

from forensics import __version__, schema
from forensics.analysis.change import LEVELS
from forensics.analysis.rank import close_call
from forensics.errors import ForensicsError, ParameterError
from forensics.evidence import Evidence
from forensics.report.figures import PLOTLY_MIMETYPE
from forensics.report.params import EvidenceParams, ReportParams, validate_report_params
from forensics.report.redact import Redactor
from forensics.report.resources import find_notebook, find_template
from forensics.timeutil import Window, iso, utcnow

if TYPE_CHECKING:
    from forensics.analysis.pipeline import Analysis

REPORT_NOTEBOOK = "rca_report"
HTML_TEMPLATE = "rca"
MARKDOWN_TEMPLATE = "postmortem.md.j2"
FORMATS = ("html", "md", "json")
EXPORT_MIMETYPE = "application/vnd.chat4all.rca+json"
"""Mimetype of the notebook output that carries RcaReport.to_dict() to build_report."""
REMOVE_IN_REPORT = ("remove-in-report", "parameters", "injected-parameters")
"""Cells with these tags are machinery (parameters, loading, publishing): not in the HTML."""
MAX_TABLE_ROWS = 200
MAX_TIMELINE_ROWS = 60
"""Timeline events listed in the report tables (the most severe first; the figure shows all)."""

# What an absent evidence table leaves unknown, in the reader's words, and where it comes from.
UNKNOWN_WITHOUT = {
    "messages": "message statuses: how many messages failed or are stuck, and since when",
    "status_events": "status history: when each message moved (PENDING, SENT, DELIVERED, FAILED) "
                     "and how long delivery took",
    "dlq_records": "dead-letter queue: which outbound events were given up on, and with which exception",
    "consumer_lag": "Kafka consumer lag: whether the router or a connector fell behind",
    "spans": "traces: where in the request path time was lost or errors were raised",
    "log_events": "service logs: connector errors, HTTP statuses and platform rate-limit headers",
    "identities": "recipient identities: whether recipients exist and are verified on their platform",
    "locks": "Redis locks and keys: stuck conversation locks and duplicate-processing guards",
    "topics": "topic inventory: whether the Kafka topics the platform needs exist (runbook R1.2)",
    "metrics": "metrics: the platform's own counters and latencies over time",
}
TABLE_SOURCE = {"messages": "mongodb", "status_events": "mongodb", "dlq_records": "kafka",
                "consumer_lag": "kafka", "spans": "jaeger", "log_events": "logs", "identities": "postgres",
                "locks": "redis", "topics": "kafka", "metrics": "prometheus"}
SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}
IMPACT_LABELS = {
    "messages_total": "Messages in the window",
    "messages_affected": "Messages affected (failed, stuck or late)",
    "messages_failed": "Messages FAILED",
    "messages_stuck": "Messages stuck (PENDING or SENT)",
    "messages_late": "Messages delivered after the SLA",
    "failed_rate": "Share of messages FAILED",
    "conversations_affected": "Conversations affected",
    "channels_affected": "Channels affected",
    "customers_affected": "Customers affected (distinct recipients)",
    "delivery_p95_s": "Delivery time P95 (created to DELIVERED)",
    "sla_breach": "Delivery SLA breached",
    "oldest_stuck_s": "Oldest stuck message, age",
    "evidence_coverage": "Evidence coverage",
}
IMPACT_HIDDEN = ("window_start", "window_end")
"""Impact entries the report header already shows."""
ERROR_GROUP_VIEW = ("group", "category", "count", "share", "channels", "first_seen", "last_seen", "retryable",
                    "runbook_step", "example_message_ids")


# --------------------------------------------------------------------------- loading

def scope(evidence: Evidence, window: Window, channel: str | None = None) -> Evidence:
    """The evidence restricted to ``window`` (rows whose time is unknown are kept) and, when
    given, to one channel (rows of another known channel are dropped; unknown kept); its
    baseline keeps its own window and is scoped to the same channel."""
    if window == evidence.window and channel is None:
        return evidence
    tables = {}
    for name, frame in evidence.tables.items():
        keep = pd.Series(True, index=frame.index)
        tcol = schema.table(name).time_column
        if tcol and window != evidence.window:
            t = frame[tcol]
            keep &= t.isna() | ((t >= window.start) & (t < window.end))
        if channel is not None and "channel" in frame.columns:
            keep &= frame["channel"].isna() | frame["channel"].eq(channel)
        tables[name] = frame[keep.to_numpy()].reset_index(drop=True)
    stored = {name: replace(s, rows=None, window=window if window != evidence.window else s.window,
                            channel=channel if channel is not None else s.channel)
              for name, s in evidence.stored.items()}
    baseline = scope(evidence.baseline, evidence.baseline.window, channel) if evidence.baseline is not None else None
    return Evidence(window=window, profile=evidence.profile, tables=tables, sources=evidence.sources,
                    missing=evidence.missing, scenario=evidence.scenario, stored=stored, unread=evidence.unread,
                    baseline=baseline, baseline_kind=evidence.baseline_kind)


def load_evidence(params: EvidenceParams, progress: Callable[[str], None] | None = None, *,
                  lean: bool = False) -> Evidence:
    """The evidence a notebook is about, scoped to its channel: the bundle, verified and
    scoped to the window; or the live sources collected over the window, each source that
    fails recorded in ``Evidence.missing`` with its reason (partial evidence, no error), with
    the baseline period ``params.baseline`` collected too. ``lean``: a bundle read for the
    analysis only (``read_bundle(lean=True)``: memory flat in the big tables, texts and
    payloads left on disk); drill-down notebooks read it whole."""
    from forensics.bundle import read_bundle
    from forensics.sources.registry import collect, collect_baseline

    if params.bundle is not None:
        evidence = read_bundle(params.bundle, verify=True, lean=lean)
        return scope(evidence, params.window(evidence.window), params.channel)
    if not params.sources:
        raise ParameterError('bundle: expected an evidence bundle path, or sources (e.g. "mongo,kafka") and since '
                             "to collect live")
    evidence, _queries, _custody = collect(list(params.sources), params.live_window(), params.profile,
                                           params.source_options, progress)
    collect_baseline(evidence, list(params.sources), params.baseline, params.source_options, progress)
    return scope(evidence, evidence.window, params.channel)


def describe_evidence(evidence: Evidence) -> list[str]:
    """What a notebook is looking at, as lines: the window, rows per table, missing sources and why."""
    counts = ", ".join(f"{table} {rows:,}" for table, rows in evidence.row_counts().items()) or "none"
    return ([f"window {evidence.window}", f"tables: {counts}"]
            + [f"missing: {source}: {why}" for source, why in sorted(evidence.missing.items())])


# --------------------------------------------------------------------------- drilling in

STUCK_STATUSES = ("PENDING", "SENT")


def pick_message(messages: pd.DataFrame, message_id: str = "") -> pd.DataFrame:
    """The message to drill into, as one row: ``message_id`` (ParameterError when the evidence
    does not hold it), else the earliest FAILED message, else the earliest stuck one (PENDING,
    SENT), else the earliest. Empty when there are no messages at all."""
    if message_id:
        found = messages[messages["message_id"].eq(message_id).fillna(False).to_numpy(dtype=bool)]
        if found.empty:
            raise ParameterError(f"message_id: {message_id!r} is not among the {len(messages):,} messages "
                                 "of the evidence (window and channel applied)")
        return found.head(1)
    ordered = messages.sort_values("created_at", kind="stable")
    for wanted in (("FAILED",), STUCK_STATUSES):
        hit = ordered[ordered["status"].isin(wanted).fillna(False).to_numpy(dtype=bool)]
        if len(hit):
            return hit.head(1)
    return ordered.head(1)


def about(frame: pd.DataFrame, message_id: str | None, conversation_id: str | None) -> pd.DataFrame:
    """Rows of ``frame`` (DLQ records, log lines, Redis keys, ...) that name the message or the
    conversation, in time order when the table has a time."""
    keep = pd.Series(False, index=frame.index)
    for column, value in (("message_id", message_id), ("conversation_id", conversation_id)):
        if value and column in frame.columns:
            keep |= frame[column].eq(value).fillna(False)
    rows = frame[keep.to_numpy(dtype=bool)]
    time_column = next((c for c in ("timestamp", "start", "sampled_at", "created_at") if c in rows.columns), None)
    return rows.sort_values(time_column, kind="stable") if time_column else rows


# --------------------------------------------------------------------------- what the report says

def _loads(text: Any) -> list:
    if not isinstance(text, str) or not text.strip():
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return [text]
    return value if isinstance(value, list) else [value]


def _statement(item: Any) -> str:
    """One evidence item (a finding reference or a statement) as a sentence."""
    if isinstance(item, dict):
        for key in ("statement", "title", "text", "detail"):
            if item.get(key):
                ref = item.get("finding_id") or item.get("finding")
                return f"{item[key]} ({ref})" if ref else str(item[key])
        return json.dumps(item, sort_keys=True, default=str)
    return str(item)


def _number(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if pd.isna(f) else f


def _fmt_int(value: Any) -> str:
    f = _number(value)
    return "unknown" if f is None else f"{int(f):,}"


def _fmt_time(ts: Any) -> str:
    if ts is None or (not isinstance(ts, str) and pd.isna(ts)):
        return "unknown"
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def _records(df: pd.DataFrame) -> list[dict]:
    """JSON-ready rows: timestamps as ISO 8601, missing values as None."""
    out = df.copy()
    for c in out.columns:
        if isinstance(out[c].dtype, pd.DatetimeTZDtype):
            out[c] = out[c].map(iso, na_action="ignore")
    out = out.astype(object).where(out.notna(), None)
    return out.to_dict(orient="records")


@dataclass
class RcaReport:
    """What the RCA report says about one incident, redacted once, rendered three ways
    (notebook HTML sections, Markdown, JSON)."""

    evidence: Evidence
    analysis: Analysis
    params: ReportParams
    redactor: Redactor

    @classmethod
    def build(cls, evidence: Evidence, analysis: Analysis, params: ReportParams) -> RcaReport:
        return cls(evidence, analysis, params, Redactor.for_evidence(evidence, enabled=params.redact))

    # -- facts
    @property
    def hypotheses(self) -> pd.DataFrame:
        h = self.analysis.hypotheses
        return h.sort_values("rank").reset_index(drop=True) if len(h) else h

    @property
    def top(self) -> dict | None:
        h = self.hypotheses
        return None if h.empty else h.iloc[0].to_dict()

    @property
    def impact(self) -> dict:
        return dict(self.analysis.impact or {})

    def threshold(self, name: str) -> float:
        """A detector threshold as the analysis used it (defaults overridden by parameters)."""
        return float(getattr(self.analysis.thresholds, name))

    @property
    def title(self) -> str:
        if self.params.title:
            return self.redactor.text(self.params.title)
        top = self.top
        what = top["title"] if top else "no root cause found"
        return f"Incident RCA: {what} ({self.evidence.window.start:%Y-%m-%d})"

    def text(self, value: Any) -> str:
        """Evidence text as it may appear in an export (redacted when redaction is on)."""
        return self.redactor.text("" if value is None else str(value))

    def frame(self, df: pd.DataFrame) -> pd.DataFrame:
        return self.redactor.frame(df)

    # -- narrative
    def summary_text(self) -> str:
        """What happened, when and how bad, in one paragraph for a non-engineer."""
        imp, top, w = self.impact, self.top, self.evidence.window
        total = imp.get("messages_total", len(self.evidence.table("messages")))
        affected = imp.get("messages_affected", top.get("messages_affected") if top else None)
        parts = [f"Between {_fmt_time(w.start)} and {_fmt_time(w.end)}"]
        if _number(affected):
            share = f" ({_number(affected) / _number(total):.1%})" if _number(total) else ""
            parts.append(f", {_fmt_int(affected)} of {_fmt_int(total)} messages were not delivered normally{share}")
            conv = imp.get("conversations_affected", top.get("conversations_affected") if top else None)
            cust = imp.get("customers_affected", top.get("customers_affected") if top else None)
            chans = imp.get("channels_affected", top.get("channels_affected") if top else None)
            if isinstance(chans, list | tuple):
                chans = ", ".join(map(str, chans))
            parts.append(f", in {_fmt_int(conv)} conversations reaching {_fmt_int(cust)} customers"
                         + (f" on {chans}" if chans else "") + ".")
        else:
            parts.append(f", {_fmt_int(total)} messages were examined and no delivery problem stood out.")
        if top:
            since = f", starting {_fmt_time(top.get('first_seen'))}" if top.get("first_seen") is not None else ""
            parts.append(f" The most likely cause is {top['title']} (confidence {_number(top['confidence']) or 0:.0%})"
                         f"{since}.")
            first_for = [_statement(i) for i in _loads(top.get("evidence_for"))][:1]
            if first_for:
                parts.append(f" The strongest evidence: {first_for[0].rstrip('.')}.")
        breach = self.sla_breach()
        if breach is not None:
            parts.append(" The delivery SLA was breached." if breach else " The delivery SLA held.")
        if top and top.get("recommended_action"):
            step = f" (runbook {top['runbook_step']})" if top.get("runbook_step") else ""
            parts.append(f" Recommended next step{step}: {str(top['recommended_action']).rstrip('.')}.")
        if self.evidence.missing:
            parts.append(f" The evidence is partial: {', '.join(sorted(self.evidence.missing))} could not be read "
                         "(see Evidence and data gaps).")
        return self.text("".join(parts))

    def sla_breach(self) -> bool | None:
        value = self.impact.get("sla_breach")
        return None if value is None else bool(value)

    def impact_rows(self) -> pd.DataFrame:
        """The impact as measure/value rows in words (IMPACT_LABELS order; others after)."""
        imp = self.impact
        rows = []
        for key in [*IMPACT_LABELS, *(k for k in imp if k not in IMPACT_LABELS and k not in IMPACT_HIDDEN)]:
            if key not in imp:
                continue
            value = imp[key]
            if value is None:
                shown = "unknown"
            elif isinstance(value, list | tuple):
                shown = ", ".join(map(str, value)) or "none"
            elif isinstance(value, bool):
                shown = "yes" if value else "no"
            elif key.endswith(("_rate", "_coverage")):
                shown = f"{value:.1%}"
            elif key.endswith("_s"):
                shown = f"{value:,.1f} s"
            elif isinstance(value, int | float):
                shown = f"{value:,}"
            else:
                shown = str(value)
            rows.append({"measure": IMPACT_LABELS.get(key, key.replace("_", " ").capitalize()),
                         "value": self.text(shown)})
        return pd.DataFrame(rows, columns=["measure", "value"])

    def hypothesis_dicts(self) -> list[dict]:
        out = []
        for row in self.hypotheses.to_dict(orient="records"):
            row = {k: (None if not isinstance(v, str | list | dict) and pd.isna(v) else v) for k, v in row.items()}
            row["evidence_for"] = [self.text(_statement(i)) for i in _loads(row.get("evidence_for"))]
            row["evidence_against"] = [self.text(_statement(i)) for i in _loads(row.get("evidence_against"))]
            row["first_seen"] = iso(row["first_seen"]) if row.get("first_seen") is not None else None
            row["title"], row["recommended_action"] = self.text(row.get("title")), self.text(row.get("recommended_action"))
            out.append(row)
        return out

    def findings(self) -> pd.DataFrame:
        f = self.analysis.findings
        cols = [c for c in ("severity", "title", "detail", "first_seen", "last_seen", "channel", "count", "metric",
                            "threshold", "detector") if c in f.columns]
        f = f.assign(_rank=f["severity"].map(SEVERITY_RANK)).sort_values(["_rank", "first_seen"])
        return self.frame(f[cols].reset_index(drop=True))

    def baseline_note(self) -> str:
        """Which baseline the verdicts are against, and when the incident began (or that it was
        already under way when the window opened)."""
        used, onset = self.analysis.baseline_used, self.analysis.onset
        window = used.get("window") or {}
        span = f"{_fmt_time(window.get('start'))} to {_fmt_time(window.get('end'))}" if window else ""
        text = {"preceding": f"Compared with the period of the same length right before the window ({span}).",
                "explicit": f"Compared with the baseline period chosen for it ({span}).",
                "pre-onset": f"No baseline was collected: compared with the part of the window before the onset "
                             f"({span}).",
                }.get(used.get("kind"), "No baseline: no period before the incident was collected and no onset "
                                        "splits the window, so every finding is judged on its own.")
        if onset.get("under_way_at_window_start"):
            text += (f" The incident was already under way when the window opened: the earliest evidence is at "
                     f"{_fmt_time(onset.get('earliest_evidence'))}; collect again from "
                     f"{_fmt_time(onset.get('suggested_since'))} to see it begin.")
        elif onset.get("start"):
            text += f" What changed began at {_fmt_time(onset['start'])}."
        return text

    def _changes(self, frame: pd.DataFrame) -> pd.DataFrame:
        f = frame.assign(_rank=frame["severity"].map(SEVERITY_RANK)).sort_values(["_rank", "onset", "first_seen"])
        out = pd.DataFrame({"change": f["change"], "severity": f["severity"], "title": f["title"],
                            "now": f["metric"].where(f["detector"].isin(LEVELS), f["count"].astype("Float64")),
                            "baseline": f["baseline_value"],
                            "ratio": f["change_ratio"].mask(f["change_ratio"] == float("inf")),
                            "onset": f["onset"], "detector": f["detector"]})
        return self.frame(out.reset_index(drop=True))

    def close_call_text(self) -> str:
        """When the top two causes are close: say so, and the check that separates them."""
        call = close_call(self.analysis.ranked)
        if not call:
            return ""
        a, b = (self.analysis.hypotheses.set_index("cause").loc[c, "title"] for c in call["causes"])
        return (f"A close call: {a} leads {b} by only {call['margin']:.0%}. To separate them: "
                f"{call['separating_check']}")

    def what_changed_rows(self) -> pd.DataFrame:
        """Findings new or worse than the baseline: the value now and before, the ratio, the onset."""
        return self._changes(self.analysis.what_changed)

    def chronic_rows(self) -> pd.DataFrame:
        """Findings that were there in the baseline too: never the cause."""
        return self._changes(self.analysis.chronic)

    def alert_replay(self) -> list[str]:
        """One sentence per alert rule: when it fired or would have fired, and the time to detect."""
        from forensics.analysis.alerts import describe_detection

        alerts = self.analysis.alerts
        if alerts is None or alerts.empty:
            return []
        return [self.text(line) for line in describe_detection(alerts)]

    def alert_table(self) -> pd.DataFrame:
        """The replayed alert rules as a table (source: metrics or the evidence itself)."""
        a = self.analysis.alerts
        if a is None or a.empty:
            return pd.DataFrame()
        cols = [c for c in ("rule", "source", "would_fire_at", "fired_at", "resolved_at", "peak_value", "threshold",
                            "time_to_detect_s", "note") if c in a.columns]
        return self.frame(a[cols].reset_index(drop=True))

    def timeline_highlights(self, limit: int) -> pd.DataFrame:
        """The ``limit`` most severe timeline events (earliest first within a severity), in time
        order, each with the evidence row it comes from (source/object: reference)."""
        t = self.analysis.timeline
        if len(t) > limit:
            t = t.assign(_rank=t["severity"].map(SEVERITY_RANK)).sort_values(["_rank", "timestamp"]).head(limit)
        t = t.sort_values("timestamp")
        where = (t["source"].fillna("?") + "/" + t["source_object"].fillna("?") + ": " + t["source_ref"].fillna("?"))
        view = pd.DataFrame({"timestamp": t["timestamp"], "lane": t["lane"], "severity": t["severity"],
                             "summary": t["summary"], "evidence": where})
        return self.frame(view.reset_index(drop=True))

    def timeline(self) -> pd.DataFrame:
        """The whole timeline, redacted (for the swimlane figure, which aggregates it)."""
        t = self.analysis.timeline
        return t.assign(summary=t["summary"].map(self.text)) if self.redactor.enabled else t

    def error_groups(self) -> pd.DataFrame:
        """Error groups for reading: the columns of ERROR_GROUP_VIEW, share as a percentage."""
        g = self.analysis.error_groups
        view = g[[c for c in ERROR_GROUP_VIEW if c in g.columns]]
        if "share" in view.columns:
            view = view.assign(share=view["share"].map(lambda v: f"{v:.1%}", na_action="ignore"))
        return self.frame(view.reset_index(drop=True))

    def sources(self) -> pd.DataFrame:
        """Per evidence table: where it comes from, whether it was collected, how many rows, and
        what stays unknown without it."""
        counts = self.evidence.row_counts()
        rows = [{"table": table, "source": TABLE_SOURCE.get(table, "?"), "rows": counts.get(table),
                 "status": "collected" if table in counts else "missing",
                 "unknown without it": "" if table in counts else UNKNOWN_WITHOUT.get(table, "its evidence")}
                for table in schema.EVIDENCE_TABLES]
        return self.frame(pd.DataFrame(rows).astype({"rows": "Int64"}))

    def source_runs(self) -> pd.DataFrame:
        """Per source asked: its status and, when it failed or was skipped, why."""
        rows = [{"source": name, "status": str(info.get("status", "ok")),
                 "note": str(info.get("error") or info.get("kind") or "")}
                for name, info in sorted(self.evidence.sources.items()) if isinstance(info, dict)]
        rows += [{"source": name, "status": "missing", "note": str(why)}
                 for name, why in sorted(self.evidence.missing.items()) if name not in self.evidence.sources]
        return self.frame(pd.DataFrame(rows, columns=["source", "status", "note"]))

    def gaps(self) -> list[str]:
        """Data gaps as sentences: missing sources (with the reason) and what stays unknown."""
        out = [f"Source {source} was not read: {why}." for source, why in sorted(self.evidence.missing.items())]
        out += [f"Without {table} ({TABLE_SOURCE.get(table, '?')}) the report cannot tell "
                f"{UNKNOWN_WITHOUT.get(table, 'what it holds')}."
                for table in schema.EVIDENCE_TABLES if not self.evidence.has(table)]
        return [self.text(s) for s in out]

    def scenario_truth(self) -> dict | None:
        """For a simulated incident: the scenario's true root cause against the ranking."""
        sc = self.evidence.scenario
        if not sc:
            return None
        ranked = [h["cause"] for h in self.hypothesis_dicts()]
        truth = sc.get("root_cause")
        rank = ranked.index(truth) + 1 if truth in ranked else None
        return {"scenario": sc.get("name"), "root_cause": truth, "description": sc.get("description"),
                "seed": sc.get("seed"), "messages": sc.get("messages"), "rank_of_true_cause": rank,
                "verdict": ("the analysis ranked the true cause first" if rank == 1 else
                            f"the analysis ranked the true cause #{rank}" if rank else
                            "the analysis did not list the true cause")}

    def trigger(self) -> str:
        """What set the incident off: the earliest critical event on the timeline."""
        t = self.analysis.timeline
        crit = t[t["severity"].eq("critical")].sort_values("timestamp")
        if crit.empty:
            return "No critical event on the timeline."
        first = crit.iloc[0]
        return self.text(f"{_fmt_time(first['timestamp'])}: {first['summary']} ({first['lane']})")

    def detection(self) -> str:
        """How many findings, the first of them, and when the evidence for the top cause starts."""
        f = self.analysis.findings.dropna(subset=["first_seen"]).sort_values("first_seen")
        if f.empty:
            return "No detector fired."
        alarming = f[f["severity"].ne("info")]
        first = (alarming if len(alarming) else f).iloc[0]
        text = (f"{len(f)} findings, {len(alarming)} of them warning or critical; the first of those at "
                f"{_fmt_time(first['first_seen'])}: {first['title']}." if len(alarming) else
                f"{len(f)} findings, all informational; the first at {_fmt_time(first['first_seen'])}: "
                f"{first['title']}.")
        top = self.top
        if top and top.get("first_seen") is not None and not pd.isna(top["first_seen"]):
            text += f" The evidence for the most likely cause starts at {_fmt_time(top['first_seen'])}."
        return self.text(text)

    def action_items(self) -> list[str]:
        top, items = self.top, []
        if top and top.get("recommended_action"):
            step = f" (runbook {top['runbook_step']})" if top.get("runbook_step") else ""
            items.append(f"{str(top['recommended_action']).rstrip('.')}{step}.")
        for h in self.hypothesis_dicts()[1:3]:
            items.append(f"Rule out {h['title']} (confidence {_number(h['confidence']) or 0:.0%}).")
        if self.gaps():
            items.append("Collect the missing evidence sources listed under data gaps and rebuild this report.")
        if self.sla_breach():
            items.append("Notify affected customers of the SLA breach and share this report's summary.")
        items.append("Add or tune alerts for the detectors that fired (runbook: Monitoring & Alerting).")
        return [self.text(i) for i in items]

    def lessons(self) -> list[str]:
        out = []
        conflicts = self.catalog_conflicts()
        if conflicts:
            out.append(f"The runbook's error-code appendix disagrees with the platform documentation for "
                       f"{len(conflicts)} code(s) seen here; trust the platform's meaning and correct the runbook.")
        if self.gaps():
            out.append("Some evidence was not available; make those sources part of routine collection.")
        out.append(self.detection())
        return [self.text(i) for i in out]

    def catalog_conflicts(self) -> list[str]:
        """Where the runbook's error-code appendix disagrees with the platform, per error group seen."""
        g = self.analysis.error_groups.dropna(subset=["conflict"])
        return [self.text(f"{row.group}: {row.conflict}") for row in g.itertuples() if str(row.conflict).strip()]

    # -- exports
    def meta(self) -> dict:
        return {"title": self.title, "window": f"{_fmt_time(self.evidence.window.start)} to "
                                               f"{_fmt_time(self.evidence.window.end)}",
                "generated_at": _fmt_time(utcnow()), "version": __version__,
                "bundle": self.text(self.params.bundle.name if self.params.bundle else ""),
                "sources": ", ".join(self.params.sources),
                "redacted": self.redactor.enabled,
                "channel": self.params.channel or "all channels"}

    def summary_json(self) -> dict:
        """analysis.summary() (hypotheses ranked most likely first), redacted, with report metadata."""
        data = self.redactor.value(json.loads(json.dumps(self.analysis.summary(), default=str)))
        data["report"] = {"generated_at": iso(utcnow()), "toolkit_version": __version__,
                          "redacted": self.redactor.enabled, "parameters": self.params.to_dict(masked=True)}
        return data

    def to_dict(self) -> dict:
        """Everything report.md and summary.json need, JSON-ready and redacted."""
        return {
            "meta": self.meta(),
            "summary": self.summary_text(),
            "impact": _records(self.impact_rows()),
            "sla_breach": self.sla_breach(),
            "sla_s": self.threshold("p95_latency_s"),
            "hypotheses": self.hypothesis_dicts(),
            "trigger": self.trigger(),
            "detection": self.detection(),
            "alert_replay": self.alert_replay(),
            "findings": _records(self.findings()),
            "baseline_note": self.baseline_note(),
            "close_call": self.close_call_text(),
            "what_changed": _records(self.what_changed_rows().head(MAX_TABLE_ROWS)),
            "chronic": _records(self.chronic_rows().head(MAX_TABLE_ROWS)),
            "timeline": _records(self.timeline_highlights(MAX_TIMELINE_ROWS)),
            "timeline_total": len(self.analysis.timeline),
            "error_groups": _records(self.error_groups().head(MAX_TABLE_ROWS)),
            "catalog_conflicts": self.catalog_conflicts(),
            "sources": _records(self.sources()),
            "source_runs": _records(self.source_runs()),
            "gaps": self.gaps(),
            "action_items": self.action_items(),
            "lessons": self.lessons(),
            "scenario": self.scenario_truth(),
            "summary_json": self.summary_json(),
        }


# --------------------------------------------------------------------------- notebook display

def html_table(df: pd.DataFrame, max_rows: int = MAX_TABLE_ROWS, caption: str = "") -> Any:
    """``df`` as an escaped HTML table (IPython HTML object): timestamps in UTC, missing as
    "—", a severity column coloured, at most ``max_rows`` rows with a note of how many more."""
    from IPython.display import HTML

    shown = df.head(max_rows).copy()
    if shown.empty:
        return HTML(f'<p class="report-note">{html.escape(f"{caption}: none" if caption else "none")}</p>')
    times = [c for c in shown.columns if isinstance(shown[c].dtype, pd.DatetimeTZDtype)]
    for c in times:
        shown[c] = shown[c].dt.strftime("%Y-%m-%d %H:%M:%S")
    styler = (shown.style.format(escape="html", na_rep="—", precision=2, thousands=",")
              .format_index(escape="html", axis=1).hide(axis="index"))
    classes = pd.DataFrame("", index=shown.index, columns=shown.columns)
    classes[times] = "ts"
    if "severity" in shown.columns:
        classes["severity"] = "sev-" + shown["severity"].astype(str)
    styler = styler.set_td_classes(classes)
    note = f"{caption} " if caption else ""
    if len(df) > max_rows:
        note += f"(showing {max_rows:,} of {len(df):,} rows)"
    styler = styler.set_caption(html.escape(note.strip())) if note.strip() else styler
    return HTML(styler.to_html())


def html_text(text: str, css: str = "") -> Any:
    """A paragraph of (untrusted) text, escaped."""
    from IPython.display import HTML

    return HTML(f'<p class="{css}">{html.escape(text)}</p>' if css else f"<p>{html.escape(text)}</p>")


def html_list(items: Iterable[str], empty: str = "none") -> Any:
    """Items of (untrusted) text as an escaped bullet list; ``empty`` when there are none."""
    from IPython.display import HTML

    items = list(items)
    if not items:
        return HTML(f'<p class="report-note">{html.escape(empty)}</p>')
    return HTML('<ul class="report-list">' + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")


def kpis(rca: RcaReport) -> Any:
    """Impact as a row of big numbers."""
    from IPython.display import HTML

    top = rca.top or {}
    imp = rca.impact
    tiles = []
    for key, label in (("messages_affected", "messages affected"), ("conversations_affected", "conversations"),
                       ("customers_affected", "customers"), ("channels_affected", "channels")):
        value = imp.get(key, top.get(key))
        if isinstance(value, list | tuple):
            value = ", ".join(map(str, value)) or "none"
        shown = _fmt_int(value) if not isinstance(value, str) else value
        state = "good" if shown in ("0", "none") else "bad"
        tiles.append(f'<div class="report-kpi {state}"><div class="value">{html.escape(shown)}</div>'
                     f'<div class="label">{html.escape(label)}</div></div>')
    breach = rca.sla_breach()
    if breach is not None:
        tiles.append(f'<div class="report-kpi {"bad" if breach else "good"}"><div class="value">'
                     f'{"breached" if breach else "met"}</div><div class="label">delivery SLA '
                     f'(P95 ≤ {rca.threshold("p95_latency_s"):g} s)</div></div>')
    return HTML('<div class="report-kpis">' + "".join(tiles) + "</div>")


def root_cause_card(rca: RcaReport) -> Any:
    from IPython.display import HTML

    hs = rca.hypothesis_dicts()
    if not hs:
        return HTML('<p class="report-note">No hypothesis fits the evidence.</p>')
    h = hs[0]
    e = html.escape

    def items(values: list[str]) -> str:
        return "<ul class=\"report-list\">" + "".join(f"<li>{e(v)}</li>" for v in values) + "</ul>" if values \
            else '<p class="report-note">none recorded</p>'

    return HTML(
        f'<div class="report-callout"><h3>{e(str(h["title"]))} '
        f'<span class="report-note">({e(str(h["cause"]))}, confidence {_number(h["confidence"]) or 0:.0%}, '
        f'{_number(h.get("margin")) or 0:.0%} ahead of the next)</span></h3>'
        f"<p>First seen {e(_fmt_time(h.get('first_seen')))}{e(_radius(h))}.</p>"
        + (f'<p class="report-note">{e(rca.close_call_text())}</p>' if rca.close_call_text() else "")
        +
        f"<h3>Evidence for</h3>{items(h['evidence_for'])}<h3>Evidence against</h3>{items(h['evidence_against'])}"
        f"<p><b>Runbook step:</b> {e(str(h.get('runbook_step') or 'none'))}<br>"
        f"<b>Recommended action:</b> {e(str(h.get('recommended_action') or 'none'))}</p></div>")


def _radius(h: dict) -> str:
    """The hypothesis' own blast radius, when the ranking could attribute messages to it."""
    if not _number(h.get("messages_affected")):
        return ""
    return (f"; {_fmt_int(h['messages_affected'])} messages in {_fmt_int(h.get('conversations_affected'))} "
            f"conversations, {_fmt_int(h.get('customers_affected'))} customers")


def other_hypotheses(rca: RcaReport) -> pd.DataFrame:
    hs = rca.hypothesis_dicts()[1:]
    rows = [{"rank": h["rank"], "cause": h["title"], "confidence": f"{_number(h['confidence']) or 0:.0%}",
             "evidence for": "; ".join(h["evidence_for"][:3]), "evidence against": "; ".join(h["evidence_against"][:3]),
             "runbook step": h.get("runbook_step")} for h in hs]
    return pd.DataFrame(rows, columns=["rank", "cause", "confidence", "evidence for", "evidence against",
                                       "runbook step"])


def scenario_section(rca: RcaReport) -> Any:
    """The scenario truth section, only for a simulated bundle (None otherwise: no output)."""
    from IPython.display import HTML

    truth = rca.scenario_truth()
    if truth is None:
        return None
    rows = pd.DataFrame([{"field": k.replace("_", " "), "value": "" if v is None else str(v)}
                         for k, v in truth.items()])
    return HTML("<h2>Scenario truth</h2><p>This incident was simulated; the simulator knows its true cause, "
                "so the ranking can be checked.</p>" + html_table(rows).data)


def publish(rca: RcaReport) -> None:
    """Hand what the report says to build_report (an output of EXPORT_MIMETYPE)."""
    from IPython.display import display

    display({EXPORT_MIMETYPE: rca.to_dict(), "text/plain": "RCA report content (for report.md, summary.json)"},
            raw=True)


# --------------------------------------------------------------------------- Markdown

def _md(value: Any) -> str:
    """Untrusted text for Markdown: one line, HTML-escaped, Markdown punctuation escaped."""
    text = html.escape("" if value is None else str(value), quote=False)
    text = " ".join(text.split())
    for ch in "\\`*_[]|#":
        text = text.replace(ch, "\\" + ch)
    return text


def render_markdown(content: dict) -> str:
    """report.md from RcaReport.to_dict() (the post-mortem shape)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(find_template(MARKDOWN_TEMPLATE).parent),
                             undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["md"] = _md
    env.filters["pct"] = lambda v: "?" if _number(v) is None else f"{_number(v):.0%}"
    return env.get_template(MARKDOWN_TEMPLATE).render(**content)


def markdown_report(evidence: Evidence, analysis: Analysis, *, redact: bool = True, title: str = "") -> str:
    """The post-mortem Markdown straight from an analysis (no notebook)."""
    params = validate_report_params(bundle="", redact=redact, title=title)
    return render_markdown(RcaReport.build(evidence, analysis, params).to_dict())


# --------------------------------------------------------------------------- running and exporting

class ThisPythonKernelManager(AsyncKernelManager):
    """Runs notebooks on this interpreter (``sys.executable``), whatever kernelspecs a global
    Jupyter installation has, over IPC sockets (no TCP ports) named after the kernel under the
    temporary directory: absolute and unique, so kernels run at once from one process (the
    watcher's concurrent investigations) never share a socket."""

    @property
    def kernel_spec(self) -> KernelSpec:
        return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                          display_name=f"Python {sys.version_info[0]}.{sys.version_info[1]} (chat4all-forensics)",
                          language="python")

    @default("transport")
    def _default_transport(self) -> str:
        return "ipc"

    @default("ip")
    def _default_ip(self) -> str:
        # jupyter_client's default, "kernel-ipc", is relative: two kernels started at once pick the same files
        return str(Path(tempfile.gettempdir()) / f"forensics-kernel-{uuid.uuid4().hex[:16]}-ipc")


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def run_notebook(notebook: str | Path, output: Path, parameters: dict[str, Any], *, cwd: Path | None = None,
                 progress: Callable[[str], None] | None = None, timeout_s: float | None = 1800):
    """Execute a notebook with papermill on this interpreter; return the executed notebook.

    A failing cell raises one line: ParameterError as it was raised, anything else as a
    ForensicsError naming the notebook, the cell's section and the error.
    """
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    path = Path(notebook) if Path(notebook).suffix == ".ipynb" else find_notebook(str(notebook))
    sections = _sections(nbformat.read(path, as_version=4))
    running: dict[str, str | None] = {"section": None}

    def on_cell_start(cell=None, **_):
        # keyed by cell id: papermill's injected parameters cell shifts the indices
        section = sections.get(cell.get("id")) if cell is not None else None
        if section and section != running["section"]:
            running["section"] = section
            if progress:
                progress(f"report: {section}")

    try:
        return papermill.execute_notebook(
            str(path), str(output), parameters=parameters, kernel_manager_class=ThisPythonKernelManager,
            progress_bar=False, cwd=str(cwd or output.parent), execution_timeout=timeout_s, start_timeout=60,
            on_cell_start=on_cell_start)
    except PapermillExecutionError as exc:
        if exc.ename == "ParameterError":
            raise ParameterError(_one_line(exc.evalue)) from None
        where = running["section"] or f"cell {exc.exec_count}"
        raise ForensicsError(f"{path.stem}: {where} failed: {exc.ename}: {_one_line(exc.evalue)}") from None


def _sections(nb) -> dict[str, str]:
    """Code cell id -> the title of the section it is in (the last ``##`` heading above it)."""
    out, current = {}, None
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            current = next((line[3:].strip() for line in cell.source.splitlines() if line.startswith("## ")),
                           current)
        elif cell.cell_type == "code" and current:
            out[cell.get("id")] = current
    return out


def export_html(nb, path: Path, meta: dict) -> Path:
    """The executed notebook as the self-contained report page (templates/rca)."""
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor
    from plotly.offline import get_plotlyjs
    from traitlets.config import Config

    config = Config()
    config.HTMLExporter.exclude_input = True
    config.HTMLExporter.exclude_input_prompt = True
    config.HTMLExporter.exclude_output_prompt = True
    config.HTMLExporter.extra_template_basedirs = [str(find_template(HTML_TEMPLATE).parent)]
    config.HTMLExporter.template_name = HTML_TEMPLATE
    config.NbConvertBase.display_data_priority = [PLOTLY_MIMETYPE, "text/html", "text/markdown", "image/svg+xml",
                                                  "image/png", "text/plain"]
    config.TagRemovePreprocessor.remove_cell_tags = set(REMOVE_IN_REPORT)
    config.TagRemovePreprocessor.enabled = True
    exporter = HTMLExporter(config=config)
    exporter.register_preprocessor(TagRemovePreprocessor(config=config), enabled=True)
    body, _ = exporter.from_notebook_node(nb, resources={"report": meta, "plotly_js": get_plotlyjs()})
    path.write_text(body, encoding="utf-8")
    return path


def _published(nb) -> dict:
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if EXPORT_MIMETYPE in data:
                return data[EXPORT_MIMETYPE]
    raise ForensicsError(f"the report notebook published no {EXPORT_MIMETYPE} output (report.publish(rca) missing?)")


def build_report(bundle_path: str | Path | None, out_dir: str | Path, formats: Iterable[str] = FORMATS,
                 parameters: dict[str, Any] | None = None, redact: bool = True,
                 progress: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Build the RCA report of a bundle into ``out_dir``; return {format: path} of what was written.

    ``formats`` is any of html, md, json (the executed notebook, report.ipynb, is always
    kept for audit). ``parameters`` are further notebook parameters (since, until, channel,
    thresholds, profile, title); they are validated before the kernel starts. With
    ``bundle_path`` None the notebook collects live: ``parameters`` name the ``sources``
    (comma list), ``since`` (and ``until``, default now) and any ``source_options``;
    connection strings default to the FORENSICS_* variables, and passwords in them are
    masked in everything written. ``progress`` receives one line per step. Files are
    written into a temporary sibling of ``out_dir`` and moved into place only when every
    format succeeded.
    """
    started = time.monotonic()
    say = progress or (lambda _msg: None)
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ParameterError(f"formats: unknown {', '.join(unknown)}; expected any of {', '.join(FORMATS)}")
    extra = dict(parameters or {})
    for reserved in ("bundle", "redact"):
        if reserved in extra:
            raise ParameterError(f"parameters: {reserved} is given as its own argument, not in parameters")
    bundle = str(Path(bundle_path).resolve()) if bundle_path else ""
    params = validate_report_params(bundle=bundle, redact=redact, **_known(extra))
    if params.bundle is None and not params.sources:
        raise ParameterError('bundle: expected an evidence bundle path, or parameters with sources (e.g. '
                             '"mongo,kafka") and since to collect live')
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        say(f"running the report notebook on {params.bundle.name}" if params.bundle else
            f"running the report notebook on live sources {', '.join(params.sources)}")
        executed = run_notebook(find_notebook(REPORT_NOTEBOOK), tmp / "report.ipynb", params.to_dict(),
                                cwd=tmp, progress=say)
        if params.to_dict(masked=True) != params.to_dict():
            _record_parameters(executed, params.to_dict(masked=True), tmp / "report.ipynb")
        content = _published(executed)
        written = {"ipynb": tmp / "report.ipynb"}
        if "html" in formats:
            say("rendering report.html")
            written["html"] = export_html(executed, tmp / "report.html", content["meta"])
        if "md" in formats:
            say("rendering report.md")
            written["md"] = tmp / "report.md"
            written["md"].write_text(render_markdown(content), encoding="utf-8")
        if "json" in formats:
            written["json"] = tmp / "summary.json"
            written["json"].write_text(json.dumps(content["summary_json"], indent=2, default=str) + "\n",
                                       encoding="utf-8")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"report written in {time.monotonic() - started:.1f} s")
    return {kind: out / p.name for kind, p in written.items()}


def _record_parameters(nb, parameters: dict[str, Any], path: Path) -> None:
    """Rewrite the executed notebook's record of its parameters (the injected cell and the
    papermill metadata) with ``parameters``: the audit copy keeps no connection password."""
    import nbformat
    from papermill.translators import translate_parameters

    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.source = translate_parameters("python3", "python", parameters, "Parameters")
    nb.metadata["papermill"]["parameters"] = parameters
    nbformat.write(nb, str(path))


def _known(parameters: dict[str, Any]) -> dict[str, Any]:
    allowed = ("sources", "source_options", "since", "until", "channel", "thresholds", "profile", "title", "baseline")
    unknown = sorted(set(parameters) - set(allowed))
    if unknown:
        raise ParameterError(f"parameters: unknown {', '.join(unknown)}; expected any of {', '.join(allowed)}")
    return parameters


REPORT_FILES = ("report.ipynb", "report.html", "report.md", "summary.json")


def _replace_dir(src: Path, dst: Path) -> None:
    """Move the finished ``src`` to ``dst``. A new or earlier report directory is swapped whole
    (so no stale format survives); a directory holding anything else gets only our files."""
    if not dst.exists():
        os.replace(src, dst)
        return
    if dst.is_dir() and all(p.name in REPORT_FILES for p in dst.iterdir()):
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
        return
    if not dst.is_dir():
        raise ForensicsError(f"{dst} exists and is not a directory; choose another --out")
    for name in REPORT_FILES:
        (dst / name).unlink(missing_ok=True)
        if (src / name).exists():
            os.replace(src / name, dst / name)
    shutil.rmtree(src, ignore_errors=True)
