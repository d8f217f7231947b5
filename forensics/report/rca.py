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
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pandas as pd

from forensics import __version__, schema, units
from forensics.analysis.change import LEVELS
from forensics.analysis.rank import close_call
from forensics.evidence import Evidence
from forensics.redact import Redactor
from forensics.report import narrative
from forensics.report.params import ReportParams
from forensics.timeutil import iso, utcnow

if TYPE_CHECKING:
    from forensics.analysis.pipeline import Analysis
    from forensics.report.pushdown import WindowFigures


MAX_TABLE_ROWS = 200
MAX_BODY_ROWS = 10
"""Rows of What changed / Present before the incident too in the body (every finding, with its
baseline verdict, is in Appendix A)."""
EXPORT_MIMETYPE = "application/vnd.chat4all.rca+json"
"""Mimetype of the notebook output that carries RcaReport.to_dict() to build_report."""

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
RULE_OUT_CONFIDENCE = 0.1
"""Other candidates at least this likely become an action item ("Rule out ...")."""
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
    "delivery_p95_s": "Delivery time P95 of the DELIVERED messages (created to DELIVERED)",
    "sla_breach": "Delivery SLA breached",
    "sla_met_share": "Share of messages DELIVERED within the SLA's time (target 95 %)",
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
    on_server: WindowFigures | None = None
    """A big live window's whole-window figures, computed on the server (forensics.report.pushdown)."""

    @classmethod
    def build(cls, evidence: Evidence, analysis: Analysis, params: ReportParams, *,
              on_server: WindowFigures | None = None) -> RcaReport:
        return cls(evidence, analysis, params, Redactor.for_evidence(evidence, enabled=params.redact), on_server)

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
    @cached_property
    def review(self) -> narrative.Review:
        """What the review reads first (forensics.report.narrative), not yet redacted."""
        return narrative.review(self.evidence, self.analysis)

    def summary_sentences(self) -> list[tuple[str, str]]:
        """The plain summary as (heading, sentence) pairs: what happened, when, who, why, what
        to do now, how sure, and the delivery SLA."""
        return [(head, self.text(sentence)) for head, sentence in self.review.sentences()]

    def summary_text(self) -> str:
        """The plain summary as one paragraph."""
        return " ".join(sentence for _, sentence in self.summary_sentences())

    def window_note(self) -> str | None:
        """Why the window the report covers differs from the one asked for, when it does."""
        return self.text(self.review.window_note) if self.review.window_note else None

    def sla_breach(self) -> bool | None:
        return self.review.sla["breached"]

    def sla_statement(self) -> str:
        """The delivery SLA stated, then whether it held."""
        return self.text(f"{self.review.sla['statement']} {self.review.sla['text']}")

    def key_moments(self) -> pd.DataFrame:
        """The review timeline: onset, first failure of the cause, alerts, peak, recovery or end."""
        rows = [{"time (UTC)": units.clock(m.at).removesuffix(" UTC"), "moment": self.text(m.text)}
                for m in self.review.key_moments]
        return pd.DataFrame(rows, columns=["time (UTC)", "moment"])

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
            elif key.endswith(("_rate", "_coverage", "_share")):
                shown = units.percent(value)
            elif key.endswith("_s"):
                shown = units.duration(value)
            elif isinstance(value, int | float):
                shown = units.number(value)
            else:
                shown = str(value)
            rows.append({"measure": IMPACT_LABELS.get(key, key.replace("_", " ").capitalize()),
                         "value": self.text(shown)})
        return pd.DataFrame(rows, columns=["measure", "value"])

    def hypothesis_dicts(self) -> list[dict]:
        """The hypotheses for reading, most likely first; ``where``: where the change is and how
        each place weighs on the cause (forensics.report.narrative.where_text)."""
        places = {h.cause: h.where for h in self.analysis.ranked}
        out = []
        for row in self.hypotheses.to_dict(orient="records"):
            row = {k: (None if not isinstance(v, str | list | dict) and pd.isna(v) else v) for k, v in row.items()}
            row["evidence_for"] = [self.text(_statement(i)) for i in _loads(row.get("evidence_for"))]
            row["evidence_against"] = [self.text(_statement(i)) for i in _loads(row.get("evidence_against"))]
            row["first_seen"] = iso(row["first_seen"]) if row.get("first_seen") is not None else None
            row["title"], row["recommended_action"] = self.text(row.get("title")), self.text(row.get("recommended_action"))
            row["where"] = [self.text(narrative.where_text(w)) for w in places.get(row["cause"], [])]
            out.append(row)
        return out

    @cached_property
    def _delivery_severity(self) -> dict[str, str]:
        """Finding id -> severity by impact on delivery (forensics.report.narrative.delivery_severity)."""
        from forensics.analysis.pipeline import affected_messages

        detection = self.analysis.detection
        if detection is None:
            return {}
        return narrative.delivery_severity(detection, affected_messages(detection),
                                           narrative.chronic_ids(self.analysis.findings))

    def findings(self) -> pd.DataFrame:
        """Every finding for reading: severity by impact on delivery, what it counts in its
        unit, its value and threshold in theirs; most severe first, then in time order."""
        f = self.analysis.findings
        severity = f["finding_id"].map(self._delivery_severity).fillna(f["severity"])
        detection = self.analysis.detection
        items = {i.finding_id: i for i in detection.items} if detection is not None else {}
        n = detection.context.n_messages if detection is not None else 0
        rows = f.to_dict(orient="records")
        view = pd.DataFrame({
            "severity": severity, "finding": f["title"].map(self.text),
            "first seen": f["first_seen"].map(lambda t: units.clock(t).removesuffix(" UTC"), na_action="ignore"),
            "counted": [narrative.count_text(r) for r in rows],
            "value": [narrative.value_text(items[r["finding_id"]], n) if r["finding_id"] in items else
                      narrative.metric_text(r["detector"], r["metric"]) for r in rows],
            "threshold": [narrative.metric_text(r["detector"], r["threshold"]) if r["threshold"] else "" for r in rows],
        })
        if "change" in f.columns:
            view["before the incident"] = f["change"].fillna("")
        order = view.assign(_rank=severity.map(SEVERITY_RANK), _t=f["first_seen"]).sort_values(["_rank", "_t"])
        return order.drop(columns=["_rank", "_t"]).reset_index(drop=True)

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

    def where_note(self) -> str:
        """Where the change is (partition, channel, connector, recipient set, service), in one
        line for What changed; empty when no localisation changed."""
        top = self.analysis.top
        places = [narrative.where_text(w, bearing=False) for w in (top.where if top else [])]
        return self.text("Where: " + "; ".join(places) + ".") if places else ""

    def _changes(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Findings against the baseline, for reading: severity by impact on delivery, the value
        now and before in the finding's unit (a level, or what it counts), the ratio, when it began."""
        severity = frame["finding_id"].map(self._delivery_severity).fillna(frame["severity"])
        f = frame.assign(severity=severity, _rank=severity.map(SEVERITY_RANK)).sort_values(
            ["_rank", "onset", "first_seen"])

        def measure(row: dict, value: Any) -> str:
            if value is None or pd.isna(value):
                return ""
            if row["detector"] in LEVELS:
                return narrative.metric_text(row["detector"], value)
            return narrative.count_text({**row, "count": round(float(value))})

        rows = f.to_dict(orient="records")
        ratio = f["change_ratio"].mask(f["change_ratio"] == float("inf"))
        out = pd.DataFrame({
            "change": f["change"], "severity": f["severity"], "finding": f["title"].map(self.text),
            "now": [measure(r, r["metric"] if r["detector"] in LEVELS else r["count"]) for r in rows],
            "before": [measure(r, r["baseline_value"]) for r in rows],
            "ratio": [f"{units.number(v)}x" if pd.notna(v) else "" for v in ratio],
            "began": f["onset"].map(lambda t: units.clock(t).removesuffix(" UTC"), na_action="ignore").fillna("")})
        return out.reset_index(drop=True)

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
        """One sentence per alert rule: when it fired or would have fired, and how long after
        the onset (forensics.report.narrative.alert_lines)."""
        start = self.review.when.get("start")
        onset = pd.Timestamp(start) if start else None
        return [self.text(line) for line in narrative.alert_lines(self.analysis.alerts, onset)]

    def alert_table(self) -> pd.DataFrame:
        """The replayed alert rules for reading (replayed from the metrics or the evidence
        itself): times on the UTC clock, peak and threshold rounded, time after the onset."""
        a = self.analysis.alerts
        if a is None or a.empty:
            return pd.DataFrame()
        start = self.review.when.get("start")
        onset = pd.Timestamp(start) if start else None

        def clock(t: Any) -> str:
            return "" if t is None or pd.isna(t) else units.clock(t).removesuffix(" UTC")

        view = pd.DataFrame({
            "rule": a["rule"], "replayed from": a["source"], "would fire at": a["would_fire_at"].map(clock),
            "Prometheus fired at": a["fired_at"].map(clock), "resolved at": a["resolved_at"].map(clock),
            "peak": a["peak_value"].map(units.number, na_action="ignore").fillna(""),
            "threshold": a["threshold"].map(units.number, na_action="ignore").fillna(""),
            "after the onset": [units.duration((t - onset).total_seconds()) if onset is not None and pd.notna(t)
                                else "" for t in a["would_fire_at"]],
            "note": a["note"].fillna("")})
        return self.frame(view.reset_index(drop=True))

    def timeline_table(self) -> pd.DataFrame:
        """Every timeline event in time order, each with the evidence row it comes from
        (source/object: reference); a finding's event carries its delivery-impact severity."""
        t = self.analysis.timeline.sort_values("timestamp", kind="stable")
        finding = t["summary"].str.extract(r"\[([^\[\]]+)\]$", expand=False)
        severity = finding.map(self._delivery_severity).where(t["kind"].eq("finding")).fillna(t["severity"])
        where = (t["source"].fillna("?") + "/" + t["source_object"].fillna("?") + ": " + t["source_ref"].fillna("?"))
        view = pd.DataFrame({"time (UTC)": t["timestamp"].map(lambda x: units.clock(x).removesuffix(" UTC"),
                                                              na_action="ignore"),
                             "lane": t["lane"], "severity": severity, "event": t["summary"], "evidence": where})
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
            view = view.assign(share=view["share"].map(units.percent, na_action="ignore"))
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
        """Data gaps as sentences: missing sources (with the reason), what each missing table
        leaves unknown, and which causes it leaves open (cannot be confirmed or ruled out)."""
        from forensics.catalog import load_catalog

        cat = load_catalog()
        top = self.top
        left = narrative.open_causes(self.evidence, top["cause"] if top else None)

        def titles(causes: list[str]) -> str:
            return ", ".join(cat.cause(c).title.lower() for c in causes)

        out = [self.evidence.window_note] if self.evidence.window_note else []
        out += [f"Source {source} was not read: {why}." for source, why in sorted(self.evidence.missing.items())]
        for table in schema.EVIDENCE_TABLES:
            if self.evidence.has(table):
                continue
            text = (f"Without {table} ({TABLE_SOURCE.get(table, '?')}) the report cannot tell "
                    f"{UNKNOWN_WITHOUT.get(table, 'what it holds')}.")
            open_ = left.get(table, {})
            if open_.get("cannot_confirm"):
                text += f" Cannot be confirmed without it: {titles(open_['cannot_confirm'])}."
            if open_.get("cannot_rule_out"):
                text += f" Cannot be ruled out without it: {titles(open_['cannot_rule_out'])}."
            out.append(text)
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
        """What set the incident off: the first failure of the most likely cause (never a
        condition present before the incident too)."""
        first = next((m for m in self.review.key_moments if m.kind == "first_failure_of_cause"), None)
        if first is None:
            return "No failure could be attributed to the most likely cause."
        return self.text(f"{units.clock(first.at, True)}: {first.text}")

    def detection(self) -> str:
        """When the incident was detected (or would have been), and how many findings, by their
        impact on delivery."""
        when = self.review.when
        by = pd.Series(list(self._delivery_severity.values()), dtype=object).value_counts()
        counts = ", ".join(f"{int(by.get(s, 0)):,} {s}" for s in ("critical", "warning", "info"))
        n = len(self.analysis.findings)
        text = (f"{units.count(n, 'findings')}; by their impact on delivery: {counts} (every finding is in "
                "Appendix A).")
        if when.get("detected"):
            after = ""
            if when.get("start"):
                ttd = (pd.Timestamp(when["detected"]) - pd.Timestamp(when["start"])).total_seconds()
                after = f" That is {units.duration(ttd)} after the onset ({units.clock(when['start'])})."
            text = f"Detected at {units.clock(when['detected'])}: {when['detected_by']}{after} {text}"
        elif when.get("start"):
            text = f"No alert rule fired or would have fired during the incident. {text}"
        return self.text(text)

    def action_items(self) -> list[str]:
        """What to do now (the summary's), then the other likely candidates to rule out, the
        customers to notify, the alerts to tune."""
        items = list(self.review.what_to_do)
        for h in self.hypothesis_dicts()[1:3]:
            if (as_number(h["confidence"]) or 0) >= RULE_OUT_CONFIDENCE:
                items.append(f"Rule out {h['title']} (confidence {units.percent(h['confidence'])}).")
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
        """The plain summary (``review``, first, as in every format), then analysis.summary()
        (hypotheses ranked most likely first), redacted, with report metadata."""
        review = self.redactor.value(json.loads(json.dumps(self.review.to_dict(), default=str)))
        data = {"review": review, **self.redactor.value(json.loads(json.dumps(self.analysis.summary(), default=str)))}
        data["report"] = {"generated_at": iso(utcnow()), "toolkit_version": __version__,
                          "redacted": self.redactor.enabled,
                          "parameters": self.redactor.value(self.params.to_dict(masked=True))}
        if self.on_server is not None:
            data["report"]["computed_on_server"] = self.redactor.value(self.on_server.summary())
        return data

    def to_dict(self) -> dict:
        """Everything report.md and summary.json need, JSON-ready and redacted."""
        return {
            "meta": self.meta(),
            "summary": self.summary_text(),
            "summary_sentences": self.summary_sentences(),
            "window_note": self.window_note(),
            "sla": {"statement": self.text(self.review.sla["statement"]), "text": self.text(self.review.sla["text"]),
                    "breached": self.sla_breach()},
            "key_moments": _records(self.key_moments()),
            "impact": _records(self.impact_rows()),
            "hypotheses": self.hypothesis_dicts(),
            "trigger": self.trigger(),
            "detection": self.detection(),
            "alert_replay": self.alert_replay(),
            "findings": _records(self.findings()),
            "baseline_note": self.baseline_note(),
            "where": self.where_note(),
            "close_call": self.close_call_text(),
            "what_changed": _records(self.what_changed_rows().head(MAX_BODY_ROWS)),
            "what_changed_total": len(self.analysis.what_changed),
            "chronic": _records(self.chronic_rows().head(MAX_BODY_ROWS)),
            "chronic_total": len(self.analysis.chronic),
            "timeline": _records(self.timeline_table()),
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
