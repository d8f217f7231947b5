"""What the report tells a post-incident review, in plain words and honest units.

The analysis produces findings, hypotheses, a timeline and an impact; this module turns
them into what a review meeting reads first (:func:`review`):

- **what happened**, **when** (onset, detection, end or "still going at the end of the
  window"), **who** was affected (messages, conversations, customers, channels), **why**
  (the most likely cause and its strongest evidence, in the unit that evidence counts),
  **what to do now**, and **how sure** the toolkit is and why;
- the **delivery SLA** stated as a promise about every message: 95 % of the messages
  created are DELIVERED within 5 s; a FAILED or never-delivered message counts as missed
  (:func:`forensics.analysis.pipeline.delivery_sla`, which the impact's ``sla_breach`` uses too);
- the **key moments** (onset, first failure of the cause, each alert firing or when it
  would have, the peak, recovery or end): the onset is the analysis' own (:func:`onset`, the
  change point of what changed, the same in the timeline and summary.json), the peak and the
  end from the course of the incident over the runbook's 5-minute windows (:func:`course`);
- a **delivery-impact severity** per finding (:func:`delivery_severity`): critical when the
  messages it concerns that were not delivered normally are at least 1 % of the window's
  messages, warning from 0.1 %, info below; a finding that names no message is at most a
  warning; a condition present before the incident too (baseline verdict "unchanged" or
  "better") is info, and never the cause's first failure or a key moment;
- **what each finding counts** (:data:`FINDING_UNITS`): messages, attempts (error spans),
  log lines, DLQ records, lag records; figures rounded for a reader (1.2 s, 29.8 %,
  4,702 messages) by :func:`count`, :func:`percent`, :func:`duration`, :func:`number`;
- **which causes stay open** without each missing evidence table (:func:`open_causes`).

Everything here reads the Analysis; nothing is decided twice: the ranking, the impact and
the alert replay stay where they are computed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from forensics import schema
from forensics.analysis.change import PRESENT_BEFORE
from forensics.analysis.detectors import NAT, NS, Detection, Finding
from forensics.analysis.pipeline import affected_messages, delivery_sla
from forensics.analysis.rank import RULES, signals
from forensics.timeutil import iso
from forensics.units import ERROR_ROW_UNITS, clock, count, duration, number, percent

if TYPE_CHECKING:
    from forensics.analysis.pipeline import Analysis
    from forensics.evidence import Evidence

CRITICAL_SHARE = 0.01
"""A finding is critical for delivery when the messages it concerns that were not delivered
normally are at least this share of the window's messages."""
WARNING_SHARE = 0.001
"""... and a warning from this share (below: info)."""

# What a finding's count and metric measure, per detector: (count unit, metric unit). Units
# are nouns the reader counts; "share" metrics are fractions shown as percentages, "s" seconds.
FINDING_UNITS: dict[str, tuple[str, str]] = {
    "stuck_pending": ("messages", "messages stuck past the alert age"),
    "stuck_sent": ("messages", "messages"),
    "failed_rate": ("FAILED messages", "share of messages FAILED in a 5-minute window"),
    "consumer_lag": ("lag samples above the limit", "records behind (lag)"),
    "partition_confined": ("messages stuck on the partition", "share of the lag on one partition"),
    "connector_5xx": ("5xx answers", "5xx answers per minute"),
    "delivery_p95": ("messages delivered late", "s"),
    "out_of_order": ("messages", "conversations"),
    "duplicate_deliveries": ("messages", "extra deliveries"),
    "missing_topics": ("log lines", "partitions"),
    "stuck_locks": ("locks", "locks"),
    "replay_blockers": ("FAILED messages", "FAILED messages"),
    "error_groups": ("FAILED messages", "share of messages"),
    "log_errors": ("error log lines", "share of messages"),
    "error_log_burst": ("ERROR log lines", "ERROR log lines per minute"),
    "service_silence": ("messages created meanwhile", "s"),
    "dead_letters": ("DLQ records", "DLQ records"),
    "content_over_limit": ("messages", "FAILED messages"),
    "recipient_identity": ("FAILED messages", "share of FAILED messages"),
    "channel_scope": ("messages not delivered normally", "share of those messages"),
    "recipient_scope": ("messages not delivered normally", "share of those messages"),
    "connector_scope": ("error rows", "share of the error rows"),
    "service_scope": ("error rows", "share of the error rows"),
}


def metric_text(detector: str, value: Any) -> str:
    """A finding's metric (or threshold) in its unit: "33.7 %", "88.4 s", "1,250 records behind (lag)"."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    unit = FINDING_UNITS.get(detector, ("", ""))[1]
    if unit.startswith("share"):
        return percent(value)
    if unit == "s":
        return duration(value)
    return f"{number(value)} {unit}".strip()


def value_text(f: Finding, n_messages: int) -> str:
    """A finding's measured value in its unit; for error rows of a log-like source, the
    messages they name (a share of lines per message would mix units), else nothing."""
    if f.detector == "log_errors":
        named = f.tags.get("messages")
        return f"{count(named, 'messages')} named ({percent(named, n_messages)} of messages)" if named else ""
    return metric_text(f.detector, f.metric)


def alert_lines(alerts: pd.DataFrame | None, onset: pd.Timestamp | None) -> list[str]:
    """One sentence per alert rule, in the order they fired: when it would have fired (from
    which replay sources), how long after the report's onset, and when Prometheus really
    fired it; or that it would not have fired, and why."""
    if alerts is None or alerts.empty:
        return []
    out = []
    for rule, g in alerts.groupby("rule", sort=False):
        would = g.dropna(subset=["would_fire_at"]).sort_values("would_fire_at")
        if len(would):
            at = would["would_fire_at"].iloc[0]
            sources = " and ".join(f"the {s}" for s in pd.unique(would["source"]))
            text = f"{rule} would have fired at {clock(at)} (replayed from {sources})"
            if onset is not None:
                ttd = (at - onset).total_seconds()
                text += f", {duration(ttd)} {'after' if ttd >= 0 else 'before'} the onset"
        else:
            notes = [n for n in g["note"] if isinstance(n, str) and n]
            text = f"{rule} would not have fired" + (f" ({notes[0]})" if notes else "")
        fired = g["fired_at"].dropna()
        if len(fired):
            text += f"; Prometheus fired it at {clock(fired.min())}"
        out.append(text + ".")
    return out


BEARING = {"for": "supports this cause", "against": "counts against this cause"}
"""How a localisation weighs on a cause, in words (Hypothesis.where's ``bearing``)."""


def where_text(item: dict[str, Any], bearing: bool = True) -> str:
    """One place of the change (an item of Hypothesis.where) as the report writes it: the
    localisation finding's statement, and how it weighs on the cause when it does."""
    weighs = BEARING.get(item.get("bearing")) if bearing else None
    return f"{item['statement']}" + (f" ({weighs})" if weighs else "")


def count_text(f: Finding | dict) -> str:
    """What a finding (or a findings-table row) counts, in its unit: "1,912 error spans
    (attempts)", "273 FAILED messages"; a log_errors finding counts rows of its source table
    (its id is ``log_errors:<table>:<service>:<signature>``)."""
    row = f if isinstance(f, dict) else {"count": f.count, "detector": f.detector, "finding_id": f.finding_id}
    n = row.get("count")
    if n is None or pd.isna(n):
        return ""
    detector = str(row.get("detector"))
    unit = FINDING_UNITS.get(detector, ("rows", ""))[0]
    parts = str(row.get("finding_id") or "").split(":")
    if detector == "log_errors" and len(parts) > 1:
        unit = ERROR_ROW_UNITS.get(parts[1], unit)
    return count(n, unit)


# --------------------------------------------------------------------------- how the incident ran

@dataclass
class Course:
    """How the incident ran over windows of ``step_s`` (the runbook's 5 minutes) of message
    creation. The incident's run: the windows around the peak (the window with the most
    messages not delivered normally) in which more than ``level`` of the messages created
    were not delivered normally; end = the end of the run (None: still going at the end of
    the window, or messages still stuck). When it began is not decided here: the onset is
    the analysis' (:func:`onset`)."""

    step_s: float
    level: float
    end: pd.Timestamp | None = None
    peak: pd.Timestamp | None = None
    peak_affected: int = 0
    peak_total: int = 0

    @property
    def ongoing(self) -> bool:
        return self.peak is not None and self.end is None


def course(detection: Detection, affected: np.ndarray) -> Course:
    """The course of the incident (see :class:`Course`); empty when no window is above the level."""
    ctx = detection.context
    t = ctx.t
    step = int(t.rate_window_s * NS)
    out = Course(float(t.rate_window_s), float(t.failed_rate))
    valid = ctx.created_ns != NAT
    if not valid.any():
        return out
    idx = (ctx.created_ns[valid] - ctx.start_ns) // step
    ok = idx >= 0
    idx, bad = idx[ok], affected[valid][ok]
    if not len(idx):
        return out
    n_windows = int(max(idx.max(), (ctx.now_ns - 1 - ctx.start_ns) // step)) + 1
    total = np.bincount(idx, minlength=n_windows)
    hit = np.bincount(idx, weights=bad.astype(float), minlength=n_windows)
    above = (total >= t.min_window_messages) & (hit > t.failed_rate * np.maximum(total, 1))
    if not above.any():
        return out
    peak = last = int(np.argmax(np.where(above, hit, -1)))
    while last + 1 < n_windows and (above[last + 1] or total[last + 1] < t.min_window_messages):
        last += 1
    stuck_at_end = any(f.detector in ("stuck_pending", "stuck_sent") and f.severity == "critical"
                       for f in detection.items)
    at = lambda i: pd.Timestamp(ctx.start_ns + i * step, tz="UTC")  # noqa: E731
    out.peak = at(peak)
    out.end = None if last == n_windows - 1 or stuck_at_end else at(last + 1)
    out.peak_affected, out.peak_total = int(hit[peak]), int(total[peak])
    return out


def onset(analysis: Analysis) -> tuple[pd.Timestamp | None, bool]:
    """When the incident began, as the analysis found it (:func:`forensics.analysis.change.incident_onset`:
    the earliest change point of what is new or worse, or its earliest evidence when it was
    under way at window open), and whether it was under way; the report's one onset."""
    found = analysis.onset or {}
    start = found.get("start")
    return (pd.Timestamp(start) if start else None), bool(found.get("under_way_at_window_start"))


# --------------------------------------------------------------------------- findings for delivery

def chronic_ids(findings: pd.DataFrame) -> set[str]:
    """Finding ids whose baseline verdict says they were present before the incident too."""
    if "change" not in findings.columns:
        return set()
    return set(findings.loc[findings["change"].isin(PRESENT_BEFORE).fillna(False).to_numpy(dtype=bool),
                            "finding_id"])


def delivery_severity(detection: Detection, affected: np.ndarray, chronic: set[str]) -> dict[str, str]:
    """Finding id -> severity by its impact on delivery (see the module docstring)."""
    n = max(detection.context.n_messages, 1)
    out = {}
    for f in detection.items:
        if f.finding_id in chronic:
            out[f.finding_id] = "info"
            continue
        if f.messages is None or not len(f.messages):
            out[f.finding_id] = "warning" if f.severity in ("critical", "warning") else "info"
            continue
        share = int(affected[f.messages].sum()) / n
        out[f.finding_id] = "critical" if share >= CRITICAL_SHARE else "warning" if share >= WARNING_SHARE else "info"
    return out


def _own_findings(detection: Detection, cause: str, chronic: set[str]) -> list[Finding]:
    """The findings behind the cause's own signals (its rule's ``requires``), not chronic,
    the signal weighing most in the cause's rule first (FAILED messages first within one)."""
    rule = RULES.get(cause)
    if rule is None:
        return []
    sig = signals(detection)
    own = sorted((s for s in rule.requires if s in sig),
                 key=lambda s: -rule.support.get(s, 0.0) * sig[s].strength)
    found = [f for s in own for f in sig[s].findings]
    return [f for f in found if f.finding_id not in chronic]


def strongest_evidence(detection: Detection, cause: str, chronic: set[str]) -> dict[str, Any] | None:
    """The cause's strongest evidence, in the unit it counts: the findings of the signal that
    weighs most in its rule; FAILED messages when the messages carry the reason, else its
    largest finding (error log lines, error spans, DLQ records, stuck messages, a silence).
    {text, value, unit, whole, share}; share = value / whole."""
    own = _own_findings(detection, cause, chronic)
    if not own:
        return None
    ctx = detection.context
    n, failed = ctx.n_messages, int(ctx.failed.sum())
    groups = [f for f in own if f.detector == "error_groups"]
    if groups:
        k = sum(int(f.count or 0) for f in groups)
        top = max(groups, key=lambda f: f.count or 0)
        label = top.title.split(": ", 1)[-1] if ": " in top.title else top.title
        return {"text": f"{count(k, 'FAILED messages')} failed with {label} "
                        f"({percent(k, failed)} of the {count(failed, 'FAILED messages')})",
                "value": k, "unit": "FAILED messages", "whole": failed, "share": k / failed if failed else None}
    lead = own[0].detector
    top = max((f for f in own if f.detector == lead), key=lambda f: f.count or 0)
    if top.detector == "log_errors":
        unit = ERROR_ROW_UNITS.get(str(top.tags.get("source")), "error rows")
        named = top.tags.get("messages")
        text = f"{count(top.count, unit)} in {top.tags.get('service')} report {top.title.split(': ', 1)[-1]}"
        if named:
            text += f", naming {count(named, 'messages')} ({percent(named, n)} of the {count(n, 'messages')})"
        return {"text": text, "value": int(top.count or 0), "unit": unit, "whole": n if named else None,
                "share": named / n if named and n else None}
    unit = FINDING_UNITS.get(top.detector, ("rows", ""))[0]
    shown = count_text(top)
    return {"text": top.title + (f" ({shown})" if shown and f"{int(top.count or 0):,}" not in top.title else ""),
            "value": int(top.count) if top.count is not None else None, "unit": unit,
            "whole": n if "messages" in unit else None,
            "share": int(top.count or 0) / n if "messages" in unit and n else None}


# --------------------------------------------------------------------------- data gaps: causes left open

SIGNAL_TABLES: dict[str, tuple[str, ...]] = {
    "stuck_pending": ("messages", "status_events"), "stuck_all_channels": ("messages", "status_events"),
    "stuck_sent": ("messages", "status_events"), "failed_spike": ("messages", "status_events"),
    "router_lag": ("consumer_lag",), "connector_lag": ("consumer_lag",), "lag_skewed": ("consumer_lag",),
    "one_partition": ("consumer_lag",),
    "router_silent": ("log_events", "spans"), "connector_silent": ("log_events", "spans"),
    "service_silent": ("log_events", "spans"), "connector_5xx": ("log_events", "spans"),
    "service_5xx": ("log_events", "spans"), "topic_partitions": ("topics",), "p95_breach": ("status_events",),
    "out_of_order": ("status_events",), "duplicates": ("status_events",), "missing_topic": ("topics", "log_events"),
    "stuck_locks": ("locks",), "content_data": ("messages",), "recipient_data": ("identities",),
    "one_channel": ("messages", "status_events"), "all_channels": ("messages", "status_events"),
    "few_recipients": ("messages", "status_events"), "one_connector": ("log_events", "spans"),
    "all_connectors": ("log_events", "spans"), "core_service": ("log_events", "spans"),
}
"""The evidence tables each ranking signal is read from (any one of them is enough);
``cause:<id>`` signals read the reasons of failures from any of ERROR_TABLES."""
ERROR_TABLES = ("messages", "status_events", "log_events", "spans", "dlq_records")


def _tables_of(signal: str) -> tuple[str, ...]:
    if signal.startswith(("cause:", "runbook_cause:")):
        return ERROR_TABLES
    return SIGNAL_TABLES.get(signal, ())


def open_causes(evidence: Evidence, ranked_first: str | None = None) -> dict[str, dict[str, list[str]]]:
    """Per missing evidence table: the causes it leaves open. ``cannot_confirm``: every signal
    that could put the cause forward is read only from missing tables; ``cannot_rule_out``:
    some of its evidence (a supporting signal of weight >= 0.2) is read only from missing
    tables, so its absence here proves nothing. The cause ranked first is not listed."""
    missing = [t for t in schema.EVIDENCE_TABLES if not evidence.has(t)]
    out: dict[str, dict[str, list[str]]] = {t: {"cannot_confirm": [], "cannot_rule_out": []} for t in missing}
    blind = lambda s: bool(_tables_of(s)) and all(not evidence.has(t) for t in _tables_of(s))  # noqa: E731
    for cause, rule in RULES.items():
        if cause == ranked_first:
            continue
        required = [s for s in rule.requires if _tables_of(s)]
        if required and all(blind(s) for s in required):
            for t in {t for s in required for t in _tables_of(s) if t in out}:
                out[t]["cannot_confirm"].append(cause)
            continue
        for s, w in rule.support.items():
            if w >= 0.2 and blind(s):
                for t in _tables_of(s):
                    if t in out and cause not in out[t]["cannot_rule_out"]:
                        out[t]["cannot_rule_out"].append(cause)
    return out


# --------------------------------------------------------------------------- the review

@dataclass
class Moment:
    """One key moment of the review timeline."""

    at: pd.Timestamp
    kind: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"at": iso(self.at), "kind": self.kind, "text": self.text}


@dataclass
class Review:
    """What the review reads first; every text already in reader's units (not yet redacted)."""

    what_happened: str
    when: dict[str, Any]
    who: dict[str, Any]
    why: dict[str, Any]
    what_to_do: list[str]
    confidence: dict[str, Any]
    sla: dict[str, Any]
    key_moments: list[Moment] = field(default_factory=list)
    window_note: str | None = None

    def sentences(self) -> list[tuple[str, str]]:
        """The plain summary as (heading, sentence) pairs, in reading order."""
        return [("What happened", self.what_happened), ("When", self.when["text"]), ("Who", self.who["text"]),
                ("Why", self.why["text"]), ("What to do now", " ".join(self.what_to_do)),
                ("How sure", self.confidence["text"]), ("Delivery SLA", self.sla["text"])]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["key_moments"] = [m.to_dict() for m in self.key_moments]
        return data


def _channels(detection: Detection, affected: np.ndarray) -> list[tuple[str, int]]:
    ch = detection.context.channel[affected]
    counts = pd.Series(ch).value_counts()
    return [(str(k), int(v)) for k, v in counts.items() if k != "UNKNOWN"]


def _alert_moments(alerts: pd.DataFrame | None) -> list[Moment]:
    """Per alert rule, the first time it fired (Prometheus ALERTS) or would have fired."""
    if alerts is None or alerts.empty:
        return []
    out = []
    for rule, g in alerts.groupby("rule", sort=False):
        fired = g["fired_at"].dropna()
        if len(fired):
            out.append(Moment(fired.min(), "alert_fired", f"Alert {rule} fired (Prometheus)."))
        would = g.dropna(subset=["would_fire_at"]).sort_values("would_fire_at")
        if len(would):
            row = would.iloc[0]
            out.append(Moment(row["would_fire_at"], "alert_would_fire",
                              f"Alert {rule} would have fired (replayed from the {row['source']})."))
    return out


def _confidence(analysis: Analysis, evidence: Evidence) -> dict[str, Any]:
    ranked = analysis.ranked
    if not ranked:
        return {"value": None, "level": "low", "reasons": ["no hypothesis fits the evidence"],
                "text": "Low: no hypothesis fits the evidence."}
    top, runner = ranked[0], (ranked[1] if len(ranked) > 1 else None)
    confidence = round(top.confidence, 4)  # as the hypotheses table holds it
    margin = confidence - (round(runner.confidence, 4) if runner else 0.0)
    missing = [t for t in schema.EVIDENCE_TABLES if not evidence.has(t)]
    level = ("high" if confidence >= 0.75 and margin >= 0.3 and len(missing) <= 2 else
             "medium" if confidence >= 0.5 and margin >= 0.15 else "low")
    reasons = [f"the ranking gives it {percent(confidence)}"]
    if runner:
        reasons.append(f"the next candidate, {runner.title.lower()}, gets {percent(round(runner.confidence, 4))}")
    against = [e for e in top.evidence_against if e.get("finding_id") or e.get("signal")]
    if against:
        reasons.append(f"{count(len(against), 'findings')} speak against it")
    reasons.append(f"{len(schema.EVIDENCE_TABLES) - len(missing)} of {len(schema.EVIDENCE_TABLES)} evidence "
                   "tables were read" + (f" (missing: {', '.join(missing)})" if missing else ""))
    if evidence.missing:
        reasons.append(f"the evidence is partial: {', '.join(sorted(evidence.missing))} could not be read "
                       "(see Evidence and data gaps)")
    return {"value": confidence, "level": level, "margin": margin, "reasons": reasons,
            "text": f"{level.capitalize()}: " + "; ".join(reasons) + "."}


def review(evidence: Evidence, analysis: Analysis) -> Review:
    """The review of one incident from its analysis (see the module docstring)."""
    detection = analysis.detection
    imp = analysis.impact or {}
    chronic = chronic_ids(analysis.findings)
    affected = affected_messages(detection)
    run = course(detection, affected)
    start, under_way = onset(analysis)
    sla = delivery_sla(detection)
    top = analysis.ranked[0] if analysis.ranked else None
    total = int(imp.get("messages_total", detection.context.n_messages) or 0)
    n_aff = int(affected.sum())
    w = evidence.window

    # what happened
    if n_aff and run.peak is not None:
        parts = [f"{imp['messages_failed']:,} FAILED" if imp.get("messages_failed") else "",
                 f"{imp['messages_stuck']:,} stuck undelivered" if imp.get("messages_stuck") else "",
                 f"{imp['messages_late']:,} delivered after {number(sla.within_s)} s" if imp.get("messages_late")
                 else ""]
        what = (f"{n_aff:,} of the {count(total, 'messages')} created in the window "
                f"({percent(n_aff, total)}) were not delivered normally: " + ", ".join(p for p in parts if p) + ".")
    elif n_aff:
        what = (f"No delivery incident stands out: {n_aff:,} of the {count(total, 'messages')} "
                f"({percent(n_aff, total)}) were not delivered normally, never more than "
                f"{percent(run.level)} of a {duration(run.step_s)} window.")
    else:
        what = f"No delivery problem: all {count(total, 'messages')} created in the window were delivered normally."

    # when
    alerts = _alert_moments(analysis.alerts)
    paged = sorted((m for m in alerts if m.kind == "alert_fired"), key=lambda m: m.at)
    would = sorted((m for m in alerts if m.kind == "alert_would_fire"), key=lambda m: m.at)
    detected = paged[0] if paged else (would[0] if would else None)
    when_text = []
    if start is not None:
        when_text.append(("It was already under way when the window starts (earliest evidence " if under_way else
                          "It started ") + f"at {clock(start, True)}" + (")" if under_way else ""))
        if detected is not None:
            rule = detected.text.split(" ")[1]
            when_text.append(f"was detected at {clock(detected.at)} (alert {rule} "
                             + ("fired)" if detected.kind == "alert_fired" else
                                "would have fired; no alert fired in the evidence)"))
        else:
            when_text.append("no alert rule fired or would have fired")
        when_text.append(f"and was still going at the end of the window ({clock(w.end)})" if run.ongoing else
                         f"and ended by {clock(run.end)}" if run.end is not None else
                         f"and no {duration(run.step_s)} window had more than {percent(run.level)} of its "
                         "messages undelivered")
    when = {"start": iso(start) if start is not None else None,
            "detected": iso(detected.at) if detected is not None else None,
            "detected_by": detected.text if detected is not None else None,
            "end": iso(run.end) if run.end is not None else None, "ongoing": run.ongoing,
            "under_way_at_window_start": under_way,
            "text": (", ".join(when_text[:-1]) + " " + when_text[-1] + "." if when_text else
                     f"No {duration(run.step_s)} window had more than {percent(run.level)} of its messages "
                     f"undelivered between {clock(w.start, True)} and {clock(w.end)}.")}

    # who
    chans = _channels(detection, affected)
    conv, cust = imp.get("conversations_affected"), imp.get("customers_affected")
    who = {"messages_total": total, "messages_affected": n_aff, "messages_failed": imp.get("messages_failed"),
           "messages_stuck": imp.get("messages_stuck"), "messages_late": imp.get("messages_late"),
           "conversations": conv, "customers": cust, "channels": [c for c, _ in chans],
           "text": (f"{count(n_aff, 'messages')} in {count(conv, 'conversations')} reaching "
                    f"{count(cust, 'customers')} (distinct recipients)"
                    + (" on " + ", ".join(f"{c} ({count(k, 'messages')})" for c, k in chans) if chans else "") + "."
                    if n_aff else "Nobody: no message was affected.")}

    # why
    if top is None or top.cause in ("healthy", "unknown"):
        why = {"cause": top.cause if top else None, "title": top.title if top else None, "evidence": None,
               "text": (f"{top.title} ({percent(round(top.confidence, 4))} confident)." if top else
                        "No cause could be ranked.")}
    else:
        ev = strongest_evidence(detection, top.cause, chronic)
        why = {"cause": top.cause, "title": top.title, "evidence": ev,
               "text": f"Most likely cause: {top.title.lower()} ({percent(round(top.confidence, 4))} confident)."
                       + (f" Strongest evidence: {ev['text']}." if ev else "")}

    # what to do
    todo = []
    if top is not None and top.recommended_action:
        step = f" (runbook {top.runbook_step})" if top.runbook_step and top.runbook_step not in \
            top.recommended_action else ""
        todo.append(f"{top.recommended_action.rstrip('.')}{step}.")
    blockers = [f for f in detection.items if f.detector == "replay_blockers" and f.count]
    if blockers and why["evidence"] is not None:
        todo.append(f"Before replaying, delete the router's processed keys of {count(blockers[0].count, 'FAILED messages')}"
                    " (a replay would be dropped silently otherwise).")
    missing = [t for t in schema.EVIDENCE_TABLES if not evidence.has(t)]
    if missing:
        todo.append(f"Collect the missing evidence ({', '.join(missing)}) and rebuild this report.")

    # key moments
    moments = []
    if start is not None:
        moments.append(Moment(start, "onset",
                              "Onset: the earliest evidence, already there when the window starts (collect a wider "
                              "window to see it begin)." if under_way else
                              "Onset: what is new or worse against the baseline begins (its earliest change point)."))
    own = _own_findings(detection, top.cause, chronic) if top is not None else []
    severity = delivery_severity(detection, affected, chronic)
    dated = [f for f in own if f.first_seen is not None and not pd.isna(f.first_seen)]
    dated = [f for f in dated if severity.get(f.finding_id) != "info"] or dated
    if dated:
        first = min(dated, key=lambda f: f.first_seen)
        moments.append(Moment(first.first_seen, "first_failure_of_cause",
                              f"First evidence of the cause ({top.title.lower()}): {first.title}."))
    moments += alerts
    if run.peak is not None:
        moments.append(Moment(run.peak, "peak", f"Peak: {run.peak_affected:,} of the "
                                                f"{count(run.peak_total, 'messages')} created in the next "
                                                f"{duration(run.step_s)} "
                                                f"({percent(run.peak_affected, run.peak_total)}) were not "
                                                "delivered normally."))
    if run.peak is not None:
        moments.append(Moment(run.end if run.end is not None else w.end, "end" if run.ongoing else "recovery",
                              "End of the window: the incident is still going." if run.ongoing else
                              f"Recovery: back under {percent(run.level)} of messages not delivered normally."))
    moments.sort(key=lambda m: (m.at, m.kind != "onset"))
    return Review(what_happened=what, when=when, who=who, why=why, what_to_do=todo,
                  confidence=_confidence(analysis, evidence), sla=sla.to_dict(), key_moments=moments,
                  window_note=getattr(evidence, "window_note", None))
