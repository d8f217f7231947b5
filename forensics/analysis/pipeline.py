"""The analysis of one incident: detectors -> findings -> ranked hypotheses, timeline, error
groups and impact, in one call (``analyze``) and one result type (:class:`Analysis`).

The report notebook calls ``analyze(evidence, thresholds)`` and reads the frames; automation
reads ``Analysis.summary()`` (``summary.json``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from forensics import schema, units
from forensics.analysis.change import (
    CHANGED,
    PRESENT_BEFORE,
    ChangeAnalysis,
    analyse_change,
    baseline_detection,
    findings_with_change,
)
from forensics.analysis.detectors import NAT, NS, Detection, Finding, Thresholds, detect
from forensics.analysis.detectors.localisation import LOCALISERS
from forensics.analysis.rank import Hypothesis, close_call, coverage, hypotheses, hypotheses_frame
from forensics.analysis.timeline import build_timeline
from forensics.catalog import PLATFORM_NAMES
from forensics.evidence import Evidence, clamp_window
from forensics.timeutil import iso

DEFAULT_THRESHOLDS: dict[str, float] = Thresholds().to_dict()
"""Threshold name -> default (runbook values); ``analyze(thresholds=...)`` overrides them."""
EXAMPLES = 5
"""Example message ids kept per error group."""

ERROR_GROUP_COLUMNS = {
    "group": schema.STR, "signature": schema.STR, "platform": schema.STR, "code": schema.STR,
    "category": schema.STR, "cause": schema.STR, "title": schema.STR, "count": schema.INT, "share": schema.FLOAT,
    "channel": schema.STR, "channels": schema.STR, "first_seen": schema.UTC_TS, "last_seen": schema.UTC_TS,
    "example_message_ids": schema.STR, "conflict": schema.STR, "retryable": schema.BOOL,
    "runbook_step": schema.STR, "origin": schema.STR,
}
"""Columns of ``Analysis.error_groups``: one row per classified error of the FAILED messages."""


@dataclass
class Analysis:
    """Everything the report shows about one incident."""

    evidence: Evidence
    thresholds: Thresholds
    findings: pd.DataFrame
    hypotheses: pd.DataFrame
    timeline: pd.DataFrame
    error_groups: pd.DataFrame
    impact: dict[str, Any]
    ranked: list[Hypothesis] = field(default_factory=list)
    detection: Detection | None = field(default=None, repr=False)
    alerts: pd.DataFrame | None = None
    """The platform's alert rules replayed over the window (forensics.analysis.alerts.detection):
    when each alert fired or would have fired, and the time to detect."""
    change: ChangeAnalysis | None = None
    """The baseline used, the verdict of every finding against it, the onset (forensics.analysis.change)."""

    @property
    def top(self) -> Hypothesis | None:
        return self.ranked[0] if self.ranked else None

    @property
    def what_changed(self) -> pd.DataFrame:
        """Findings new or worse than the baseline (the "What changed" section)."""
        return findings_with_change(self.detection, CHANGED) if self.detection else self.findings.head(0)

    @property
    def chronic(self) -> pd.DataFrame:
        """Findings that were there in the baseline too, unchanged or better ("Present before the
        incident too"): never presented as the cause."""
        return findings_with_change(self.detection, PRESENT_BEFORE) if self.detection else self.findings.head(0)

    @property
    def baseline_used(self) -> dict[str, Any]:
        """Which baseline the verdicts are against: kind (preceding, explicit, pre-onset, none) and window."""
        return self.change.used() if self.change else {"kind": "none", "window": None}

    @property
    def onset(self) -> dict[str, Any]:
        """When the incident began, and whether it was already under way at window open."""
        return self.change.onset if self.change else {}

    def missing_sources(self) -> dict[str, str]:
        """Source or table -> why it is absent."""
        out = dict(self.evidence.missing)
        for t in schema.EVIDENCE_TABLES:
            if not self.evidence.has(t):
                out.setdefault(t, "table not collected")
        return out

    def detection_summary(self) -> list[dict[str, Any]]:
        """Per alert rule (and replay source): when it would have fired, when Prometheus fired
        it (when known), and the time to detect in seconds."""
        if self.alerts is None or self.alerts.empty:
            return []
        out = []
        for row in self.alerts.to_dict(orient="records"):
            out.append({"rule": row["rule"], "source": row["source"], "would_fire_at": _iso(row.get("would_fire_at")),
                        "fired_at": _iso(row.get("fired_at")), "time_to_detect_s": _float(row.get("time_to_detect_s")),
                        "note": row["note"] if isinstance(row.get("note"), str) and row["note"] else None})
        return out

    def first_finding_at(self) -> pd.Timestamp | None:
        """When the first warning or critical finding began (the first finding when all are info)."""
        f = self.findings.dropna(subset=["first_seen"])
        alarming = f[f["severity"].ne("info")]
        times = (alarming if len(alarming) else f)["first_seen"]
        return times.min() if len(times) else None

    def findings_detail(self) -> list[dict[str, Any]]:
        """Every finding for summary.json, most severe first, with its value against the
        threshold and, when a baseline was compared, against the baseline."""
        f = self.findings
        f = f.assign(_rank=f["severity"].map({s: i for i, s in enumerate(reversed(schema.SEVERITIES))}))
        items = {i.finding_id: i for i in self.detection.items} if self.detection else {}
        out = []
        for row in f.sort_values(["_rank", "first_seen"], kind="stable").to_dict(orient="records"):
            out.append({"finding_id": row["finding_id"], "detector": row["detector"], "severity": row["severity"],
                        "title": row["title"], "first_seen": _iso(row["first_seen"]),
                        "last_seen": _iso(row["last_seen"]), "channel": _str(row["channel"]),
                        "count": None if pd.isna(row["count"]) else int(row["count"]),
                        "value": _float(row["metric"]), "threshold": _float(row["threshold"]),
                        "baseline_value": _float(row.get("baseline_value")), "change": _str(row.get("change")),
                        "change_ratio": _float(row.get("change_ratio")), "onset": _iso(row.get("onset"))})
            if row["detector"] in LOCALISERS and row["finding_id"] in items:
                out[-1]["localisation"] = localisation_summary(items[row["finding_id"]])
        return out

    def summary(self) -> dict[str, Any]:
        """``summary.json`` (the contract in forensics/contracts/summary.schema.json): window,
        impact, missing sources, findings, detection times, and the hypotheses most likely
        first, each with its evidence (finding ids), first seen, blast radius and action."""
        from forensics.contracts import SUMMARY_SCHEMA_VERSION

        out: dict[str, Any] = {
            "schema_version": SUMMARY_SCHEMA_VERSION,
            "window": self.evidence.window.to_dict(),
            "window_note": self.evidence.window_note,
            "profile": self.evidence.profile,
            "impact": self.impact,
            "missing_sources": self.missing_sources(),
            "findings": {s: int((self.findings["severity"] == s).sum()) for s in schema.SEVERITIES},
            "findings_detail": self.findings_detail(),
            "detection": {"first_finding_at": _iso(self.first_finding_at()), "alerts": self.detection_summary()},
            "hypotheses": [hypothesis_summary(h) for h in self.ranked],
            "baseline": self.baseline_used,
            "onset": self.onset,
            "what_changed": self.what_changed["finding_id"].tolist(),
            "chronic": self.chronic["finding_id"].tolist(),
            "close_call": close_call(self.ranked),
        }
        if self.evidence.scenario:
            out["scenario"] = dict(self.evidence.scenario)
        return out


def _iso(value: Any) -> str | None:
    return None if value is None or not isinstance(value, pd.Timestamp | str) or pd.isna(value) else iso(value)


def _float(value: Any) -> float | None:
    """A finite float for JSON; None for null and for inf (a rate against none in the baseline)."""
    return None if value is None or pd.isna(value) or not np.isfinite(float(value)) else float(value)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def localisation_summary(f: Finding) -> dict[str, Any]:
    """Where a localisation finding places the change, for summary.json: the dimension and
    attribute, the scope (confined, concentrated, spread), the set, and the shares behind it."""
    t = f.tags
    return {"dimension": t["dimension"], "attribute": t["attribute"], "scope": t["scope"],
            "levels": [str(v) for v in t["levels"][:50]], "failures": int(t["failures"]), "unit": t["unit"],
            "failure_share": _float(t["failure_share"]), "traffic_share": _float(t["traffic_share"]),
            "expected_share": _float(t["expected_share"]), "baseline_share": _float(t.get("baseline_share")),
            "p_value": _float(t["p_value"]), "against_baseline": bool(t["against_baseline"])}


def hypothesis_summary(h: Hypothesis) -> dict[str, Any]:
    """One hypothesis as summary.json holds it: evidence as {statement, finding_id, signal}."""

    def evidence(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"statement": str(i.get("statement") or i.get("finding_id") or ""), "finding_id": i.get("finding_id"),
                 "signal": i.get("signal")} for i in items]

    return {"rank": h.rank, "cause": h.cause, "title": h.title, "confidence": round(h.confidence, 4),
            "margin": round(h.margin, 4), "score": round(h.score, 4),
            "evidence_for": evidence(h.evidence_for), "evidence_against": evidence(h.evidence_against),
            "first_seen": _iso(h.first_seen),
            "blast_radius": {"messages": h.messages_affected, "conversations": h.conversations_affected,
                             "channels": list(h.channels_affected), "customers": h.customers_affected},
            "runbook_step": h.runbook_step, "recommended_action": h.recommended_action,
            "where": [{k: w[k] for k in ("finding_id", "statement", "dimension", "attribute", "scope", "levels",
                                         "bearing")} for w in h.where]}


def _channels_text(channels: np.ndarray) -> tuple[str | None, str]:
    counts = pd.Series(channels).fillna("UNKNOWN").value_counts()
    main = str(counts.index[0]) if len(counts) and counts.iloc[0] >= 0.9 * counts.sum() else None
    return main, ", ".join(f"{k} {v:,}" for k, v in counts.items())


def error_groups_frame(detection: Detection) -> pd.DataFrame:
    """FAILED messages grouped by classified error: counts, channels, first/last seen, example
    message ids and the catalog's conflict note; unknown errors by normalised signature."""
    ctx = detection.context
    errs = ctx.errors
    if not len(errs):
        return pd.DataFrame({c: pd.Series(dtype=d) for c, d in ERROR_GROUP_COLUMNS.items()})
    pos = errs["position"].to_numpy()
    frame = errs.assign(
        signature=errs["signature"].fillna("none: no error recorded"),
        _channel=ctx.values("channel", pos),
        _when=np.where(ctx.updated_ns[pos] != NAT, ctx.updated_ns[pos], ctx.created_ns[pos]))
    rows = []
    n = max(ctx.n_messages, 1)
    for sig, g in frame.groupby("signature", sort=False):
        first = g.iloc[0]
        when = g["_when"].to_numpy()
        when = when[when != NAT]
        main, breakdown = _channels_text(g["_channel"].to_numpy())
        platform = first["platform"] if pd.notna(first["platform"]) else None
        code = first["code"] if pd.notna(first["code"]) else None
        title = first["title"] if pd.notna(first["title"]) else "no error message recorded"
        label = " ".join(str(x) for x in (PLATFORM_NAMES.get(platform, platform), code) if x) + (": " if platform or code else "") + str(title)
        rows.append({
            "group": label, "signature": sig, "platform": platform, "code": code,
            "category": first["category"] if pd.notna(first["category"]) else "none",
            "cause": first["cause"] if pd.notna(first["cause"]) else None, "title": title, "count": len(g),
            "share": len(g) / n, "channel": main, "channels": breakdown,
            "first_seen": pd.Timestamp(int(when.min()), tz="UTC") if len(when) else None,
            "last_seen": pd.Timestamp(int(when.max()), tz="UTC") if len(when) else None,
            "example_message_ids": ", ".join(map(str, schema.take_text(ctx.messages["message_id"],
                                                                          g["position"].to_numpy()[:EXAMPLES]))),
            "conflict": first["conflict"] if pd.notna(first["conflict"]) else None,
            "retryable": first["retryable"] if pd.notna(first["retryable"]) else None,
            "runbook_step": first["runbook_step"] if pd.notna(first["runbook_step"]) else None,
            "origin": ", ".join(sorted(g["origin"].dropna().unique())),
        })
    out = pd.DataFrame(rows, columns=list(ERROR_GROUP_COLUMNS)).sort_values("count", ascending=False)
    out["first_seen"] = schema.to_utc(out["first_seen"])
    out["last_seen"] = schema.to_utc(out["last_seen"])
    return out.astype(ERROR_GROUP_COLUMNS).reset_index(drop=True)


SLA_SHARE = 0.95
"""Share of the messages created that the delivery SLA (SC-002) promises DELIVERED within
``p95_latency_s`` seconds (5 s by default)."""


@dataclass
class Sla:
    """The delivery SLA over the window: ``met_share`` of the messages created were DELIVERED
    within ``within_s``; FAILED and never-delivered messages count as missed (a P95 of the
    delivered messages alone would call an incident where half the messages FAILED "met");
    messages younger than ``within_s`` at the window's end are not judged yet."""

    within_s: float
    target_share: float
    judged: int
    met: int
    failed: int
    undelivered: int
    late: int

    @property
    def met_share(self) -> float | None:
        return self.met / self.judged if self.judged else None

    @property
    def breached(self) -> bool | None:
        return None if self.met_share is None else self.met_share < self.target_share

    def statement(self) -> str:
        """The SLA as one sentence a reader can check."""
        return (f"Delivery SLA: {units.percent(self.target_share)} of the messages created are DELIVERED within "
                f"{units.number(self.within_s)} s; a FAILED or never-delivered message counts as missed.")

    def verdict(self) -> str:
        """Whether it held, and the messages that missed it, in one sentence."""
        if self.met_share is None:
            return "The delivery SLA cannot be judged: no message old enough to judge."
        missed = [f"{self.failed:,} FAILED" if self.failed else "",
                  f"{self.undelivered:,} never delivered" if self.undelivered else "",
                  f"{self.late:,} delivered after {units.number(self.within_s)} s" if self.late else ""]
        why = ", ".join(m for m in missed if m)
        return (f"{'Breached' if self.breached else 'Met'}: {units.percent(self.met, self.judged)} of "
                f"{units.count(self.judged, 'messages')} were DELIVERED within {units.number(self.within_s)} s"
                + (f" (missed: {why})." if why else "."))

    def to_dict(self) -> dict[str, Any]:
        return {"statement": self.statement(), "within_s": self.within_s, "target_share": self.target_share,
                "judged_messages": self.judged, "met_messages": self.met, "met_share": self.met_share,
                "breached": self.breached, "text": self.verdict()}


def delivery_sla(detection: Detection) -> Sla:
    """The delivery SLA judged over every message created in the window (see :class:`Sla`)."""
    ctx = detection.context
    within = float(ctx.t.p95_latency_s)
    created = ctx.created_ns
    judged = (created != NAT) & (created <= ctx.now_ns - int(within * NS))
    delivered = ctx.delivered_ns != NAT
    latency = np.where(delivered & judged, (ctx.delivered_ns - created) / NS, np.inf)
    met = judged & (latency <= within)
    return Sla(within, SLA_SHARE, int(judged.sum()), int(met.sum()), int((judged & ctx.failed).sum()),
               int((judged & ~delivered & ~ctx.failed).sum()), int((judged & delivered & (latency > within)).sum()))


def stuck_messages(detection: Detection) -> np.ndarray:
    """Boolean per message: stuck PENDING or SENT (the stuck detectors' messages)."""
    out = np.zeros(detection.context.n_messages, dtype=bool)
    for f in detection.items:
        if f.detector in ("stuck_pending", "stuck_sent") and f.messages is not None:
            out[f.messages] = True
    return out


def affected_messages(detection: Detection) -> np.ndarray:
    """Boolean per message: not delivered normally (FAILED, stuck PENDING/SENT, or DELIVERED
    after the SLA's ``p95_latency_s``)."""
    ctx = detection.context
    out = ctx.failed | stuck_messages(detection)
    delivered = (ctx.delivered_ns != NAT) & (ctx.created_ns != NAT)
    late = np.where(delivered, (ctx.delivered_ns - ctx.created_ns) / NS, 0) > ctx.t.p95_latency_s
    return out | (delivered & late)


def impact(detection: Detection) -> dict[str, Any]:
    """Messages total / failed / stuck / late, and the conversations, channels and customers
    (distinct recipient_id) of the affected ones (failed, stuck, or delivered after the SLA);
    delivery P95 of the delivered messages, and whether the delivery SLA was breached
    (:func:`delivery_sla`: FAILED and never-delivered messages count as missed)."""
    ctx = detection.context
    n = ctx.n_messages
    if not n:
        return {"messages_total": 0, "messages_failed": 0, "messages_stuck": 0, "messages_late": 0,
                "messages_affected": 0, "failed_rate": None, "conversations_affected": 0, "channels_affected": [],
                "customers_affected": 0, "delivery_p95_s": None, "sla_breach": None, "sla_met_share": None}
    t = ctx.t
    age = ctx.now_ns - ctx.created_ns
    stuck = stuck_messages(detection)
    delivered = (ctx.delivered_ns != NAT) & (ctx.created_ns != NAT)
    latency = np.where(delivered, (ctx.delivered_ns - ctx.created_ns) / NS, np.nan)
    late = delivered & (latency > t.p95_latency_s)
    pos = np.flatnonzero(affected_messages(detection))
    p95 = float(np.nanpercentile(latency, 95)) if delivered.any() else None
    sla = delivery_sla(detection)
    channels = pd.unique(ctx.values("channel", pos))
    return {
        "messages_total": int(n),
        "messages_failed": int(ctx.failed.sum()),
        "messages_stuck": int(stuck.sum()),
        "messages_late": int(late.sum()),
        "messages_affected": int(len(pos)),
        "failed_rate": float(ctx.failed.mean()),
        "conversations_affected": ctx.distinct("conversation_id", pos),
        "channels_affected": sorted(str(c) for c in channels if isinstance(c, str)),
        "customers_affected": ctx.distinct("recipient_id", pos),
        "delivery_p95_s": round(p95, 3) if p95 is not None else None,
        "sla_breach": sla.breached,
        "sla_met_share": round(sla.met_share, 4) if sla.met_share is not None else None,
        "oldest_stuck_s": float(age[stuck].max() / NS) if stuck.any() else None,
        "window_start": iso(ctx.evidence.window.start), "window_end": iso(ctx.now),
        "evidence_coverage": round(coverage(detection)[0], 3),
    }


def analyze(evidence: Evidence, thresholds: Thresholds | Mapping[str, Any] | None = None) -> Analysis:
    """Run the detectors over ``evidence``, rank the root causes, build the timeline, group
    the errors and measure the impact. ``thresholds`` overrides :data:`DEFAULT_THRESHOLDS`.
    The window is first cut to the evidence's extent (:func:`forensics.evidence.clamp_window`),
    so the work follows the evidence, never the window's length."""
    from forensics.analysis.alerts import detection as replay_alerts

    evidence = clamp_window(evidence)
    th = Thresholds.from_dict(thresholds)
    before = baseline_detection(evidence, th)  # first: its messages go before the window's come
    detection = detect(evidence, th)
    change = analyse_change(evidence, detection, th, before)
    ranked = hypotheses(detection)
    alerts = replay_alerts(evidence, findings=detection.findings)
    timeline = build_timeline(detection)
    extra = [e for e in (alert_timeline(alerts), onset_timeline(change.onset)) if len(e)]
    if extra:
        timeline = schema.validate("timeline", pd.concat([timeline, *extra], ignore_index=True)
                                   .sort_values("timestamp", kind="stable").reset_index(drop=True))
    return Analysis(evidence=evidence, thresholds=th, findings=detection.findings,
                    hypotheses=hypotheses_frame(ranked), timeline=timeline,
                    error_groups=error_groups_frame(detection), impact=impact(detection), ranked=ranked,
                    detection=detection, alerts=alerts, change=change)


def onset_timeline(onset: dict[str, Any]) -> pd.DataFrame:
    """The incident's start on the timeline: the earliest change point of what changed, or the
    earliest evidence of an incident already under way when the window opened."""
    under_way = onset.get("under_way_at_window_start")
    at = onset.get("earliest_evidence") if under_way else onset.get("start")
    if not at:
        return schema.empty("timeline")
    summary = ("incident already under way when the window opened (earliest evidence); collect from "
               f"{onset.get('suggested_since')} to see it begin" if under_way else
               "incident start: the earliest change point of what changed against the baseline")
    return schema.conform("timeline", pd.DataFrame([{
        "timestamp": pd.Timestamp(at), "lane": "analysis", "severity": "critical", "kind": "incident_onset",
        "summary": summary, "source": "analysis", "source_object": "change points",
        "source_ref": ", ".join(onset.get("earliest_findings") or []) or "onset"}]))


def alert_timeline(alerts: pd.DataFrame) -> pd.DataFrame:
    """Timeline events of the alert replay: when each rule would have fired (from the metrics,
    or from the evidence where no metric exists) and when Prometheus really fired it (ALERTS)."""
    if alerts is None or alerts.empty:
        return schema.empty("timeline")
    rows = []
    for rule, group in alerts.groupby("rule", sort=False):
        fired = group.dropna(subset=["would_fire_at"])
        if len(fired):
            first = fired.sort_values("would_fire_at").iloc[0]
            rows.append({"timestamp": first["would_fire_at"], "lane": "alerts", "severity": "warning",
                         "kind": "alert_would_fire",
                         "summary": f"alert {rule} would have fired (replayed from {first['source']})",
                         "source": "prometheus" if first["source"] == "metrics" else "analysis",
                         "source_object": "metrics" if first["source"] == "metrics" else "alert replay",
                         "source_ref": str(rule)})
        paged = group.dropna(subset=["fired_at"])
        if len(paged):
            rows.append({"timestamp": paged["fired_at"].min(), "lane": "alerts", "severity": "critical",
                         "kind": "alert_fired", "summary": f"alert {rule} fired (Prometheus ALERTS)",
                         "source": "prometheus", "source_object": "ALERTS", "source_ref": str(rule)})
    return schema.conform("timeline", pd.DataFrame(rows)) if rows else schema.empty("timeline")

