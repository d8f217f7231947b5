"""Service detectors: connector 5xx (alert 4), error groups (3.3), log errors, error-log bursts,
service silence (router down), from spans and service logs.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from forensics import schema, units
from forensics.analysis.classify import classify_series
from forensics.analysis.detectors.base import (
    NAT,
    NS,
    Context,
    Finding,
    _group_severity,
    _message_refs,
    _runs,
    _ts,
    _value,
    _windows,
    detector,
    ref,
    to_ns,
)
from forensics.catalog import PLATFORM_NAMES, load_catalog

# ---- recommended alert 4: connector 5xx -----------------------------------------------------

@detector("connector_5xx")
def connector_5xx(ctx: Context) -> Iterable[Finding]:
    """5xx answers per minute and service from spans (http_status_code) and logs
    (http_status); per minute the larger of the two counts (the same call may show in both).
    Minutes above ``connector_5xx_per_min`` are merged into one finding per service."""
    frames = []
    spans = ctx.table("spans")
    if len(spans):
        s = spans[spans["http_status_code"].fillna(0) >= 500]
        frames.append(pd.DataFrame({"service": s["service"].fillna("unknown").to_numpy(),
                                    "minute": _windows(to_ns(s["start"]), 60), "src": "spans"}))
    logs = ctx.table("log_events")
    if len(logs):
        lg = logs[logs["http_status"].fillna(0) >= 500]
        frames.append(pd.DataFrame({"service": lg["service"].fillna("unknown").to_numpy(),
                                    "minute": _windows(to_ns(lg["timestamp"]), 60), "src": "logs"}))
    frames = [f for f in frames if len(f)]
    if not frames:
        return []
    both = pd.concat(frames, ignore_index=True)
    both = both[both["minute"] >= 0]
    per = both.groupby(["service", "minute", "src"]).size().groupby(["service", "minute"]).max()
    out = []
    limit = ctx.t.connector_5xx_per_min
    for service, counts in per.groupby(level="service"):
        counts = counts.droplevel("service")
        bad = counts[counts > limit]
        if bad.empty:
            continue
        starts = np.sort(bad.index.to_numpy())
        channel = ctx.service_channels.get(str(service))
        out.append(Finding(
            "connector_5xx", str(service), "critical" if channel else "warning",
            f"{service}: up to {int(bad.max()):,} 5xx answers per minute (alert above {limit:g})",
            f"{len(bad)} minute(s) above {limit:g} 5xx/min, {int(bad.sum()):,} 5xx in them, "
            f"{int(counts.sum()):,} 5xx in the window. Platform-side errors: check the platform's status (2.2) "
            "and retry once it recovers (R3.3).",
            _ts(starts[0]), _ts(starts[-1] + 60 * NS), channel, int(bad.sum()), float(bad.max()), limit,
            [{"table": "spans", "column": "http_status_code", "values": [">=500"], "total": int(bad.sum())},
             {"table": "log_events", "column": "service", "values": [str(service)], "total": 1}],
            None, {"service": str(service), "connector": channel is not None}))
    return out


# ---- error groups (3.3) ---------------------------------------------------------------------



@detector("error_groups")
def error_groups(ctx: Context) -> Iterable[Finding]:
    """FAILED messages grouped by classified error (runbook 3.3), one finding per group;
    unknown errors form groups by their normalised signature."""
    errs = ctx.errors
    if not len(errs):
        return []
    out = []
    g = errs.groupby("signature", dropna=False, sort=False)
    for sig, rows in sorted(g, key=lambda kv: -len(kv[1])):
        pos = rows["position"].to_numpy()
        first = rows.iloc[0]
        by_ch = pd.Series(ctx.channel[pos]).value_counts()
        channel = str(by_ch.index[0]) if by_ch.iloc[0] >= 0.9 * len(pos) else None
        updated = ctx.updated_ns[pos]
        created = ctx.created_ns[pos]
        sig_s = "no error recorded" if pd.isna(sig) else str(sig)
        title = first["title"] if pd.notna(first["title"]) else "no error message recorded"
        platform = PLATFORM_NAMES.get(first["platform"], first["platform"]) if pd.notna(first["platform"]) else ""
        code = f" {first['code']}" if pd.notna(first["code"]) else ""
        conflict = first["conflict"] if pd.notna(first["conflict"]) else None
        out.append(Finding(
            "error_groups", sig_s, _group_severity(len(pos), ctx.n_messages),
            f"{len(pos):,} FAILED: {platform}{code} {title}".replace("  ", " "),
            f"category {first['category'] if pd.notna(first['category']) else 'none'}; "
            f"channels {', '.join(f'{k} {v:,}' for k, v in by_ch.items())}; text from "
            f"{', '.join(sorted(rows['origin'].dropna().unique()))}."
            + (f" Note: {conflict}." if conflict else ""),
            _ts(int(created[created != NAT].min())) if (created != NAT).any() else None,
            _ts(int(updated.max())) if (updated != NAT).any() else None,
            channel, len(pos), len(pos) / max(ctx.n_messages, 1), None,
            _message_refs(ctx, pos) + [{"table": "catalog", "column": "id",
                                        "values": [str(first["entry_id"])] if pd.notna(first["entry_id"]) else [],
                                        "total": 1, "signature": sig_s}],
            pos, {"signature": sig_s, "category": first["category"] if pd.notna(first["category"]) else "unknown",
                  "cause": first["cause"] if pd.notna(first["cause"]) else None,
                  "runbook_cause": first["runbook_cause"] if pd.notna(first["runbook_cause"]) else None,
                  "share_of_failed": len(pos) / max(int(ctx.failed.sum()), 1),
                  "share": len(pos) / max(ctx.n_messages, 1)}))
    return out


@detector("log_errors")
def log_errors(ctx: Context) -> Iterable[Finding]:
    """ERROR/WARN log lines (and lines with a stack trace), DLQ exception messages and error
    spans grouped by source, service and classified error: the infrastructure errors that
    never reach a message document (MongoDB timeouts, missing topics, connection refused)
    show here. ``tags["messages"]`` counts the distinct messages the lines name, where most
    lines name one (a retried message logs several lines)."""
    parts = []

    def part(source, service, cls, ts, refs, message_ids):
        parts.append(pd.DataFrame({
            "source": source, "service": service, "signature": cls["signature"].to_numpy(), "ts": ts, "ref": refs,
            "title": cls["title"].to_numpy(), "category": cls["category"].to_numpy(), "cause": cls["cause"].to_numpy(),
            "message_id": message_ids}))

    logs = ctx.log_errors
    if len(logs):
        part("log_events", logs["service"].fillna("unknown").to_numpy(), logs, to_ns(logs["timestamp"]),
             logs["source_ref"].to_numpy(), logs["message_id"].to_numpy())
    dlq = ctx.table("dlq_records")
    if len(dlq):
        cls = classify_series(dlq["exception_message"].fillna(dlq["decode_error"]), dlq["channel"])
        part("dlq_records", dlq["topic"].to_numpy(), cls, to_ns(dlq["timestamp"]),
             (dlq["topic"].astype(str) + ":" + dlq["partition"].astype(str) + ":" + dlq["offset"].astype(str)).to_numpy(),
             dlq["message_id"].to_numpy())
    spans = ctx.table("spans")
    if len(spans):
        s = spans[spans["error"].fillna(False).astype(bool) & spans["status_message"].notna()]
        if len(s):
            cls = classify_series(s["status_message"], s["service"].map(ctx.service_channels).astype(schema.STR))
            part("spans", s["service"].fillna("unknown").to_numpy(), cls, to_ns(s["start"]),
                 (s["trace_id"] + ":" + s["span_id"]).to_numpy(), s["message_id"].to_numpy())
    parts = [p for p in parts if len(p)]
    if not parts:
        return []
    df = pd.concat(parts, ignore_index=True)
    df = df[df["signature"].notna()].reset_index(drop=True)
    df["position"] = ctx.positions(df["message_id"])  # one lookup for every group's ids
    volume = max(ctx.n_messages, 1)
    out = []
    for (source, service, sig), rows in df.groupby(["source", "service", "signature"], sort=False):
        n = len(rows)
        first = rows.iloc[0]
        ts = rows["ts"][rows["ts"] != NAT]
        named = rows["message_id"].notna().to_numpy()
        ids = rows["message_id"][named].unique()
        messages = len(ids) if len(ids) and named.mean() >= 0.5 else None
        pos = pd.unique(rows["position"].to_numpy()[named])  # distinct ids have distinct positions
        out.append(Finding(
            "log_errors", f"{source}:{service}:{sig}", _group_severity(messages or n, volume),
            f"{units.count(n, units.ERROR_ROW_UNITS.get(source, source))} in {service}: {first['title']}",
            f"category {first['category']}; signature {sig}"
            + (f"; {messages:,} distinct messages named." if messages is not None else "."),
            _ts(ts.min()) if len(ts) else None, _ts(ts.max()) if len(ts) else None,
            ctx.service_channels.get(str(service)), n, (messages or n) / volume, None,
            [ref(source, "source_ref", rows["ref"], total=n),
             {"table": "catalog", "column": "id", "values": [str(sig)], "total": 1}],
            pos[pos >= 0], {"signature": sig, "category": _value(first["category"]), "cause": _value(first["cause"]),
                   "source": source, "service": service, "messages": messages, "share": (messages or n) / volume},
            ts.to_numpy()))
    return out


# ---- error-log bursts -----------------------------------------------------------------------

def _median_with_zeros(values: np.ndarray, n: int) -> float:
    """The median of ``values`` (positive counts) padded with zeros to ``n`` items, without
    building the padding (``n`` follows the window's length, ``values`` the evidence)."""
    zeros = max(0, n - len(values))
    ordered = np.sort(values)
    total = zeros + len(ordered)

    def nth(k: int) -> float:
        return 0.0 if k < zeros else float(ordered[k - zeros])

    return (nth((total - 1) // 2) + nth(total // 2)) / 2


@detector("error_log_burst")
def error_log_burst(ctx: Context) -> Iterable[Finding]:
    """Minutes in which a service logged more than ``error_burst_per_min`` ERROR lines and
    ``error_burst_factor`` times its median ERROR lines per minute over the window;
    consecutive minutes form one burst (up to 3 largest per service)."""
    logs = ctx.log_errors
    if not len(logs):
        return []
    errors = logs[logs["level"].isin(("ERROR", "FATAL", "SEVERE"))]
    if not len(errors):
        return []
    minute = _windows(to_ns(errors["timestamp"]), 60)
    df = pd.DataFrame({"service": errors["service"].fillna("unknown").to_numpy(), "minute": minute,
                       "signature": errors["signature"].to_numpy(), "ref": errors["source_ref"].to_numpy()})
    df = df[df["minute"] >= 0]
    n_minutes = max(1, int((ctx.now_ns - ctx.start_ns) // (60 * NS)))
    out = []
    for service, rows in df.groupby("service", sort=False):
        counts = rows.groupby("minute").size()
        median = _median_with_zeros(counts.to_numpy(), n_minutes)
        limit = max(ctx.t.error_burst_per_min, ctx.t.error_burst_factor * median)
        bad = counts[counts > limit]
        if bad.empty:
            continue
        bursts = []
        for a, b in _runs(np.sort(bad.index.to_numpy()), 60 * NS):
            in_burst = rows[(rows["minute"] >= a) & (rows["minute"] <= b)]
            bursts.append((len(in_burst), a, b, in_burst))
        for size, a, b, in_burst in sorted(bursts, key=lambda x: -x[0])[:3]:
            top = in_burst["signature"].value_counts()
            sig = str(top.index[0]) if len(top) else None
            entry = load_catalog().by_id(sig) if sig else None
            out.append(Finding(
                "error_log_burst", f"{service}:{pd.Timestamp(a, tz='UTC'):%Y%m%dT%H%M}", "warning",
                f"{service}: burst of {size:,} ERROR log lines"
                + (f", mostly {entry.title if entry else sig}" if sig else ""),
                f"{size:,} ERROR lines in {(b - a) // (60 * NS) + 1} minute(s) against a median of {median:g} per "
                f"minute; top signatures: {', '.join(f'{k} ({v:,})' for k, v in top.head(3).items())}.",
                _ts(a), _ts(b + 60 * NS), ctx.service_channels.get(str(service)), size,
                float(in_burst.groupby("minute").size().max()), limit,
                [ref("log_events", "source_ref", in_burst["ref"], total=size),
                 {"table": "catalog", "column": "id", "values": [sig] if sig else [], "total": 1}],
                None, {"service": service, "signature": sig, "cause": entry.cause if entry else None,
                       "category": entry.category if entry else "unknown"}))
    return out


# ---- service silence (router down) ----------------------------------------------------------

@detector("service_silence")
def service_silence(ctx: Context) -> Iterable[Finding]:
    """A service whose logs and spans stop for more than ``silence_s`` while traffic it
    would have handled continues. Expected events in a gap = the service's events per
    message over the window x the messages created in the gap (connectors: of their
    channel); a gap is reported when at least ``silence_min_expected`` were expected. The
    largest gap per service is reported, including one that lasts until the window's end."""
    frames = []
    logs = ctx.table("log_events")
    if len(logs):
        frames.append(pd.DataFrame({"service": logs["service"].to_numpy(), "ts": to_ns(logs["timestamp"])}))
    spans = ctx.table("spans")
    if len(spans):
        frames.append(pd.DataFrame({"service": spans["service"].to_numpy(), "ts": to_ns(spans["start"])}))
    frames = [f for f in frames if len(f)]
    if not frames or not ctx.n_messages:
        return []
    act = pd.concat(frames, ignore_index=True)
    act = act[act["service"].notna() & (act["ts"] != NAT)]
    valid = ctx.created_ns != NAT
    created = ctx.created_ns[valid]
    channels = ctx.channel[valid]
    sorted_all = np.sort(created)
    by_channel = {ch: np.sort(created[channels == ch]) for ch in pd.unique(channels)}
    t = ctx.t
    out = []
    router = ctx.profile.services.router
    for service, rows in act.groupby("service", sort=False):
        channel = ctx.service_channels.get(str(service))
        traffic = by_channel.get(channel, np.empty(0, np.int64)) if channel else sorted_all
        if len(traffic) < t.silence_min_expected:
            continue
        ts = np.sort(rows["ts"].to_numpy())
        ts = ts[(ts >= ctx.start_ns) & (ts <= ctx.now_ns)]
        if len(ts) < 2:
            continue
        per_message = len(ts) / len(traffic)
        edges = np.r_[ts, ctx.now_ns]
        gaps = np.diff(edges)
        cand = np.flatnonzero(gaps > t.silence_s * NS)
        if not len(cand):
            continue
        a, b = edges[cand], edges[cand + 1]
        in_gap = np.searchsorted(traffic, b, side="left") - np.searchsorted(traffic, a, side="right")
        expected = in_gap * per_message
        best = int(np.argmax(expected))
        if expected[best] < t.silence_min_expected:
            continue
        start, end = int(a[best]), int(b[best])
        until_end = end == ctx.now_ns
        n_msgs = int(in_gap[best])
        affected = np.flatnonzero(valid & (ctx.created_ns > start) & (ctx.created_ns < end)
                                  & ((ctx.channel == channel) if channel else True))
        out.append(Finding(
            "service_silence", str(service), "critical",
            f"{service} went silent for {units.duration((end - start) / NS)}"
            + (" (until the end of the window)" if until_end else "") + " while traffic continued",
            f"No logs or spans from {service} between {pd.Timestamp(start, tz='UTC'):%H:%M:%S} and "
            f"{pd.Timestamp(end, tz='UTC'):%H:%M:%S} UTC while {n_msgs:,} messages it would handle were created "
            f"(about {expected[best]:,.0f} events expected at its usual {per_message:.2f} per message). "
            "A crashed or hung service (runbook 1.3 / R1.1 for the router).",
            _ts(start), _ts(end), channel, n_msgs, (end - start) / NS, t.silence_s,
            [{"table": "log_events", "column": "service", "values": [str(service)], "total": 1},
             {"table": "spans", "column": "service", "values": [str(service)], "total": 1}]
            + (_message_refs(ctx, affected) if len(affected) else []),
            affected, {"service": str(service), "router": service == router, "until_end": until_end,
                       "expected": float(expected[best])}))
    return out
