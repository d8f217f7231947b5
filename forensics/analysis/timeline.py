"""One timeline across all sources, aggregated so it stays small.

Events are not one per evidence row but one per thing an engineer reads on a timeline:
first and last failure of each error group, each finding, consumer-lag threshold
crossings, error-log bursts, services falling silent and coming back, the first
dead letter of each DLQ topic, the start of the stuck backlog. A million-message incident
gives a few hundred events. Each event points back to a row of its source (``source``,
``source_object``, ``source_ref``) so the report can be traced to the evidence.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from forensics import schema
from forensics.analysis.detectors import NAT, Detection, Finding, to_ns

GROUPED = ("error_groups", "log_errors")
"""Detectors whose info-level findings stay off the timeline (one per error signature and source)."""
MAX_CROSSINGS = 10
"""Lag threshold crossings kept per consumer group and topic."""


def _event(ts, lane: str, severity: str, kind: str, summary: str, source=None, source_object=None,
           source_ref=None) -> dict:
    return {"timestamp": ts, "lane": lane, "severity": severity, "kind": kind, "summary": summary,
            "source": source, "source_object": source_object, "source_ref": source_ref}


def _message_row(detection: Detection, position: int) -> tuple:
    m = detection.context.messages
    return (m["source"].iat[position], m["source_object"].iat[position],
            m["source_ref"].iat[position] if pd.notna(m["source_ref"].iat[position]) else m["message_id"].iat[position])


def _finding_events(f: Finding) -> list[dict]:
    first_ref = next((r for r in f.evidence if r.get("values")), None)
    ref = f"{first_ref['table']}.{first_ref['column']}={first_ref['values'][0]}" if first_ref else None
    return [_event(f.first_seen, "findings", f.severity, "finding", f"{f.title} [{f.finding_id}]",
                   "analysis", f.detector, ref)]


def _error_group_events(detection: Detection) -> list[dict]:
    """First and last failure of each error group (by the messages' creation and update times)."""
    ctx = detection.context
    out = []
    for f in detection.items:
        if f.detector != "error_groups" or f.messages is None or not len(f.messages):
            continue
        pos = f.messages
        created = ctx.created_ns[pos]
        updated = ctx.updated_ns[pos]
        when = np.where(updated != NAT, updated, created)
        ok = when != NAT
        if not ok.any():
            continue
        first_i, last_i = pos[ok][np.argmin(when[ok])], pos[ok][np.argmax(when[ok])]
        label = f.title.split(": ", 1)[-1]
        out.append(_event(pd.Timestamp(int(when[ok].min()), tz="UTC"), "messages", f.severity, "first_failure",
                          f"first failure: {label} ({f.count:,} in the group)", *_message_row(detection, first_i)))
        if f.count and f.count > 1:
            out.append(_event(pd.Timestamp(int(when[ok].max()), tz="UTC"), "messages", "info", "last_failure",
                              f"last failure: {label}", *_message_row(detection, last_i)))
    return out


def _stuck_events(detection: Detection) -> list[dict]:
    ctx = detection.context
    out = []
    for f in detection.items:
        if f.detector not in ("stuck_pending", "stuck_sent") or f.messages is None or not len(f.messages):
            continue
        oldest = f.messages[np.argmin(ctx.created_ns[f.messages])]
        status = "PENDING" if f.detector == "stuck_pending" else "SENT"
        out.append(_event(f.first_seen, "messages", f.severity, "stuck_backlog_start",
                          f"{status} backlog starts on {f.channel or 'all channels'}: oldest of {f.count:,} stuck "
                          "messages passes the threshold", *_message_row(detection, int(oldest))))
    return out


def _lag_crossings(detection: Detection) -> list[dict]:
    """Times the total lag of a group/topic crossed the problem threshold, up and down."""
    ctx = detection.context
    lag = ctx.table("consumer_lag")
    if not len(lag):
        return []
    limit = ctx.t.consumer_lag
    total = (lag.assign(lag=lag["lag"].fillna(0).astype("int64"))
             .groupby(["group", "topic", "sampled_at"], sort=True)["lag"].sum().reset_index())
    out = []
    for (group, topic), s in total.groupby(["group", "topic"], sort=False):
        above = (s["lag"] > limit).to_numpy()
        change = np.flatnonzero(np.diff(np.r_[False, above].astype(np.int8)) != 0)
        for i in change[:MAX_CROSSINGS]:
            up = bool(above[i])
            out.append(_event(s["sampled_at"].iat[i], "kafka", "critical" if up else "info",
                              "lag_above" if up else "lag_below",
                              f"lag of {group} on {topic} {'rises above' if up else 'falls back below'} "
                              f"{limit:,.0f} ({int(s['lag'].iat[i]):,})", "kafka", group, f"{topic}@{s['sampled_at'].iat[i]}"))
    return out


def _dlq_events(detection: Detection) -> list[dict]:
    dlq = detection.context.table("dlq_records")
    if not len(dlq):
        return []
    out = []
    firsts = dlq.sort_values("timestamp").groupby("topic", sort=False).head(1)
    counts = dlq.groupby("topic").size()
    for _, r in firsts.iterrows():
        out.append(_event(r["timestamp"], "kafka", "warning", "dlq_first_record",
                          f"first dead letter in {r['topic']} ({int(counts[r['topic']]):,} in the window)",
                          r["source"], r["source_object"], r["source_ref"] if pd.notna(r["source_ref"])
                          else f"{r['partition']}:{r['offset']}"))
    return out


def _log_events(detection: Detection) -> list[dict]:
    """Error bursts and service silences, pointing at their first log line where there is one."""
    ctx = detection.context
    logs = ctx.table("log_events")
    out = []
    for f in detection.items:
        if f.detector == "error_log_burst":
            first_ref = next((r["values"][0] for r in f.evidence if r.get("table") == "log_events" and r["values"]),
                             None)
            out.append(_event(f.first_seen, "logs", f.severity, "error_burst", f.title, "logs",
                              f.tags.get("service"), first_ref))
        elif f.detector == "service_silence":
            service = f.tags.get("service")
            last_ref = None
            if len(logs):
                lines = logs[logs["service"] == service]
                if len(lines):
                    ts = to_ns(lines["timestamp"])
                    before = np.flatnonzero((ts != NAT) & (ts <= f.first_seen.value))
                    if len(before):
                        last_ref = lines["source_ref"].iat[int(before[np.argmax(ts[before])])]
            out.append(_event(f.first_seen, "logs", "critical", "service_silent",
                              f"last sign of life from {service} before a silence of "
                              f"{(f.last_seen - f.first_seen).total_seconds():,.0f} s", "logs", service, last_ref))
            if not f.tags.get("until_end"):
                out.append(_event(f.last_seen, "logs", "info", "service_resumed", f"{service} logs again",
                                  "logs", service, None))
    return out


def build_timeline(detection: Detection) -> pd.DataFrame:
    """The ``timeline`` table of one detection run, in time order."""
    events: list[dict] = []
    for f in detection.items:
        if f.first_seen is None or pd.isna(f.first_seen):
            continue
        # small error groups are on the timeline as their first/last failure already
        if f.severity == "info" and f.detector in GROUPED:
            continue
        events.extend(_finding_events(f))
    for part in (_error_group_events, _stuck_events, _lag_crossings, _dlq_events, _log_events):
        events.extend(part(detection))
    events = [e for e in events if e["timestamp"] is not None and not pd.isna(e["timestamp"])]
    frame = pd.DataFrame(events, columns=schema.table("timeline").names)
    frame = schema.conform("timeline", frame)
    order = frame["severity"].map({"critical": 0, "warning": 1, "info": 2})
    frame = frame.assign(_o=order).sort_values(["timestamp", "_o", "lane"], kind="stable").drop(columns="_o")
    return schema.validate("timeline", frame.reset_index(drop=True))
