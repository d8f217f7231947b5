"""The RCA report: what it says (:class:`RcaReport`), built from the evidence and the analysis.

The report notebook (``notebooks/rca_report.ipynb``) builds one ``RcaReport`` and shows it
through :mod:`forensics.report.widgets`; :mod:`forensics.report.runner` runs that notebook with
papermill and renders HTML, Markdown and JSON from what it published (``RcaReport.to_dict()``,
already redacted), so the three formats always agree. Every text that comes from evidence is
escaped for the format it goes into.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from forensics import __version__, schema
from forensics.analysis.change import LEVELS
from forensics.analysis.rank import close_call
from forensics.evidence import Evidence
from forensics.redact import Redactor
from forensics.report.params import ReportParams
from forensics.timeutil import iso, utcnow

if TYPE_CHECKING:
    from forensics.analysis.pipeline import Analysis


MAX_TABLE_ROWS = 200
EXPORT_MIMETYPE = "application/vnd.chat4all.rca+json"
"""Mimetype of the notebook output that carries RcaReport.to_dict() to build_report."""
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


def as_number(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if pd.isna(f) else f


def fmt_int(value: Any) -> str:
    f = as_number(value)
    return "unknown" if f is None else f"{int(f):,}"


def fmt_time(ts: Any) -> str:
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
        parts = [f"Between {fmt_time(w.start)} and {fmt_time(w.end)}"]
        if as_number(affected):
            share = f" ({as_number(affected) / as_number(total):.1%})" if as_number(total) else ""
            parts.append(f", {fmt_int(affected)} of {fmt_int(total)} messages were not delivered normally{share}")
            conv = imp.get("conversations_affected", top.get("conversations_affected") if top else None)
            cust = imp.get("customers_affected", top.get("customers_affected") if top else None)
            chans = imp.get("channels_affected", top.get("channels_affected") if top else None)
            if isinstance(chans, list | tuple):
                chans = ", ".join(map(str, chans))
            parts.append(f", in {fmt_int(conv)} conversations reaching {fmt_int(cust)} customers"
                         + (f" on {chans}" if chans else "") + ".")
        else:
            parts.append(f", {fmt_int(total)} messages were examined and no delivery problem stood out.")
        if top:
            since = f", starting {fmt_time(top.get('first_seen'))}" if top.get("first_seen") is not None else ""
            parts.append(f" The most likely cause is {top['title']} (confidence {as_number(top['confidence']) or 0:.0%})"
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
        span = f"{fmt_time(window.get('start'))} to {fmt_time(window.get('end'))}" if window else ""
        text = {"preceding": f"Compared with the period of the same length right before the window ({span}).",
                "explicit": f"Compared with the baseline period chosen for it ({span}).",
                "pre-onset": f"No baseline was collected: compared with the part of the window before the onset "
                             f"({span}).",
                }.get(used.get("kind"), "No baseline: no period before the incident was collected and no onset "
                                        "splits the window, so every finding is judged on its own.")
        if onset.get("under_way_at_window_start"):
            text += (f" The incident was already under way when the window opened: the earliest evidence is at "
                     f"{fmt_time(onset.get('earliest_evidence'))}; collect again from "
                     f"{fmt_time(onset.get('suggested_since'))} to see it begin.")
        elif onset.get("start"):
            text += f" What changed began at {fmt_time(onset['start'])}."
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
        out = [self.evidence.window_note] if self.evidence.window_note else []
        out += [f"Source {source} was not read: {why}." for source, why in sorted(self.evidence.missing.items())]
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
        return {"scenario": sc.get("name"), "root_cause": truth, "description": self.text(sc.get("description")),
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
        return self.text(f"{fmt_time(first['timestamp'])}: {first['summary']} ({first['lane']})")

    def detection(self) -> str:
        """How many findings, the first of them, and when the evidence for the top cause starts."""
        f = self.analysis.findings.dropna(subset=["first_seen"]).sort_values("first_seen")
        if f.empty:
            return "No detector fired."
        alarming = f[f["severity"].ne("info")]
        first = (alarming if len(alarming) else f).iloc[0]
        text = (f"{len(f)} findings, {len(alarming)} of them warning or critical; the first of those at "
                f"{fmt_time(first['first_seen'])}: {first['title']}." if len(alarming) else
                f"{len(f)} findings, all informational; the first at {fmt_time(first['first_seen'])}: "
                f"{first['title']}.")
        top = self.top
        if top and top.get("first_seen") is not None and not pd.isna(top["first_seen"]):
            text += f" The evidence for the most likely cause starts at {fmt_time(top['first_seen'])}."
        return self.text(text)

    def action_items(self) -> list[str]:
        top, items = self.top, []
        if top and top.get("recommended_action"):
            step = f" (runbook {top['runbook_step']})" if top.get("runbook_step") else ""
            items.append(f"{str(top['recommended_action']).rstrip('.')}{step}.")
        for h in self.hypothesis_dicts()[1:3]:
            items.append(f"Rule out {h['title']} (confidence {as_number(h['confidence']) or 0:.0%}).")
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
        return {"title": self.title, "window": f"{fmt_time(self.evidence.window.start)} to "
                                               f"{fmt_time(self.evidence.window.end)}",
                "generated_at": fmt_time(utcnow()), "version": __version__,
                "bundle": self.text(self.params.bundle.name if self.params.bundle else ""),
                "sources": ", ".join(self.params.sources),
                "redacted": self.redactor.enabled,
                "channel": self.params.channel or "all channels"}

    def summary_json(self) -> dict:
        """analysis.summary() (hypotheses ranked most likely first), redacted, with report metadata."""
        data = self.redactor.value(json.loads(json.dumps(self.analysis.summary(), default=str)))
        data["report"] = {"generated_at": iso(utcnow()), "toolkit_version": __version__,
                          "redacted": self.redactor.enabled,
                          "parameters": self.redactor.value(self.params.to_dict(masked=True))}
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


