"""Delivery detectors: what the messages and their status history say (runbook symptoms 1, 2, 4,
alerts 2 and 5, duplicates, content over the platforms' limits).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from forensics import units
from forensics.analysis.detectors.base import (
    NAT,
    NS,
    Context,
    Finding,
    _by_channel,
    _channel_or_none,
    _message_refs,
    _runs,
    _ts,
    _windows,
    detector,
    ref,
)
from forensics.catalog import load_catalog
from forensics.scan import repeated_status_events

# ---- Symptom 1: stuck PENDING ---------------------------------------------------------------

def pending_stuck(ctx: Context) -> np.ndarray:
    """Per message: still PENDING more than ``stuck_pending_s`` after its creation (Symptom 1)."""
    age_ns = ctx.now_ns - ctx.created_ns
    return (ctx.status == "PENDING") & (ctx.created_ns != NAT) & (age_ns > ctx.t.stuck_pending_s * NS)


@detector("stuck_pending")
def stuck_pending(ctx: Context) -> Iterable[Finding]:
    """Messages still PENDING more than ``stuck_pending_s`` after creation, per channel;
    critical when more than ``stuck_pending_alert_count`` have been for ``stuck_pending_alert_s``."""
    if not ctx.n_messages:
        return []
    t = ctx.t
    age_ns = ctx.now_ns - ctx.created_ns
    stuck = np.flatnonzero(pending_stuck(ctx))
    out = []
    for channel, pos in _by_channel(ctx, stuck).items():
        ages = age_ns[pos] / NS
        alert = int((ages > t.stuck_pending_alert_s).sum())
        critical = alert > t.stuck_pending_alert_count
        oldest = int(ctx.created_ns[pos].min())
        out.append(Finding(
            "stuck_pending", channel, "critical" if critical else "warning",
            f"{len(pos):,} {channel} messages stuck in PENDING for more than {t.stuck_pending_s:g} s",
            f"{len(pos):,} messages are still PENDING more than {t.stuck_pending_s:g} s after creation "
            f"(oldest {units.duration(ages.max())}); {alert:,} for more than {units.duration(t.stuck_pending_alert_s)} "
            f"(alert above {t.stuck_pending_alert_count:g}). Runbook Symptom 1: router not processing, "
            f"Kafka topic issues or MongoDB failures.",
            _ts(oldest + int(t.stuck_pending_s * NS)), ctx.now, _channel_or_none(channel), len(pos),
            float(alert), float(t.stuck_pending_alert_count), _message_refs(ctx, pos), pos,
            {"alert": critical, "share": len(pos) / ctx.n_messages}))
    return out


# ---- Symptom 2: stuck SENT ------------------------------------------------------------------

def sent_stuck(ctx: Context) -> np.ndarray:
    """Per message: SENT with no DELIVERED/READ/FAILED for ``stuck_sent_s`` since it was sent
    (its last SENT event, else its last update, else its creation) (Symptom 2)."""
    out = np.zeros(ctx.n_messages, dtype=bool)
    sent = np.flatnonzero(ctx.status == "SENT")
    if not len(sent):
        return out
    since = ctx.updated_ns[sent]
    last = ctx.history.last_sent_at[sent]
    since = np.where(last != NAT, last, since)
    since = np.where(since == NAT, ctx.created_ns[sent], since)
    out[sent[(since != NAT) & (ctx.now_ns - since > ctx.t.stuck_sent_s * NS)]] = True
    return out


@detector("stuck_sent")
def stuck_sent(ctx: Context) -> Iterable[Finding]:
    """Messages SENT to the platform with no DELIVERED/READ/FAILED for ``stuck_sent_s``."""
    if not ctx.n_messages:
        return []
    stuck = np.flatnonzero(sent_stuck(ctx))
    out = []
    for channel, pos in _by_channel(ctx, stuck).items():
        out.append(Finding(
            "stuck_sent", channel, "critical" if len(pos) > ctx.t.stuck_pending_alert_count else "warning",
            f"{len(pos):,} {channel} messages stuck in SENT for more than {units.duration(ctx.t.stuck_sent_s)}",
            f"{len(pos):,} messages reached SENT but got no DELIVERED/FAILED within {units.duration(ctx.t.stuck_sent_s)}. "
            "Runbook Symptom 2: no webhook callback from the platform (2.3), rate limiting or retries (2.4).",
            _ts(int(ctx.created_ns[pos].min()) + int(ctx.t.stuck_sent_s * NS)), ctx.now, _channel_or_none(channel),
            len(pos), float(len(pos)), float(ctx.t.stuck_pending_alert_count), _message_refs(ctx, pos), pos))
    return out


# ---- recommended alert 2: FAILED rate -------------------------------------------------------

@detector("failed_rate")
def failed_rate(ctx: Context) -> Iterable[Finding]:
    """Share of FAILED among the messages created in each ``rate_window_s`` window, over all
    channels and per channel; windows above ``failed_rate`` (with at least
    ``min_window_messages`` messages) are merged into one finding per channel."""
    if not ctx.n_messages:
        return []
    t = ctx.t
    valid = ctx.created_ns != NAT
    win = _windows(ctx.created_ns, t.rate_window_s)
    frame = pd.DataFrame({"window": win[valid], "channel": ctx.channel[valid],
                          "failed": ctx.failed[valid]})
    step = int(t.rate_window_s * NS)
    out = []
    overall = frame.groupby("window")["failed"].agg(["size", "sum"]).assign(channel="ALL")
    per = frame.groupby(["channel", "window"])["failed"].agg(["size", "sum"]).reset_index("channel")
    stats = pd.concat([overall, per])
    stats["rate"] = stats["sum"] / stats["size"]
    bad = stats[(stats["size"] >= t.min_window_messages) & (stats["rate"] > t.failed_rate)]
    for channel, rows in bad.groupby("channel", sort=False):
        starts = np.sort(rows.index.to_numpy())
        first, last = int(starts[0]), int(starts[-1]) + step
        in_windows = valid & (win >= first) & (win < last) & ctx.failed
        if channel != "ALL":
            in_windows &= (ctx.channel == channel)
        pos = np.flatnonzero(in_windows)
        worst = float(rows["rate"].max())
        runs = _runs(starts, step)
        out.append(Finding(
            "failed_rate", str(channel), "critical",
            f"FAILED rate up to {worst:.1%} on {'all channels' if channel == 'ALL' else channel} "
            f"(alert above {t.failed_rate:.0%} per {units.duration(t.rate_window_s)})",
            f"{len(rows)} window(s) of {units.duration(t.rate_window_s)} above {t.failed_rate:.0%} "
            f"({len(runs)} period(s)); {int(rows['sum'].sum()):,} FAILED of {int(rows['size'].sum()):,} messages "
            "in them. Runbook Symptom 3: group the errors (3.3).",
            _ts(first), _ts(last), _channel_or_none(str(channel)), len(pos), worst, t.failed_rate,
            _message_refs(ctx, pos), pos, {"windows": len(rows), "overall_rate": float(ctx.failed.mean())}))
    return out


# ---- recommended alert 5: delivery P95 ------------------------------------------------------

@detector("delivery_p95")
def delivery_p95(ctx: Context) -> Iterable[Finding]:
    """P95 of delivery latency (first DELIVERED status event - messages.created_at) per
    ``rate_window_s`` window, over all channels and per channel; windows above
    ``p95_latency_s`` are merged into one finding per channel."""
    if not ctx.n_messages:
        return []
    t = ctx.t
    ok = (ctx.delivered_ns != NAT) & (ctx.created_ns != NAT)
    if not ok.any():
        return []
    pos_all = np.flatnonzero(ok)
    lat = (ctx.delivered_ns[ok] - ctx.created_ns[ok]) / NS
    win = _windows(ctx.created_ns[ok], t.rate_window_s)
    frame = pd.DataFrame({"window": win, "channel": ctx.channel[ok], "lat": lat})
    overall = frame.groupby("window")["lat"].agg(n="size", p95=lambda x: x.quantile(0.95)).assign(channel="ALL")
    per = (frame.groupby(["channel", "window"])["lat"].quantile(0.95).rename("p95").to_frame()
           .join(frame.groupby(["channel", "window"]).size().rename("n")).reset_index("channel"))
    stats = pd.concat([overall, per])
    bad = stats[(stats["n"] >= t.min_window_messages) & (stats["p95"] > t.p95_latency_s)]
    step = int(t.rate_window_s * NS)
    out = []
    for channel, rows in bad.groupby("channel", sort=False):
        starts = np.sort(rows.index.to_numpy())
        first, last = int(starts[0]), int(starts[-1]) + step
        sel = (win >= first) & (win < last) & (lat > t.p95_latency_s)
        if channel != "ALL":
            sel &= frame["channel"].to_numpy() == channel
        pos = pos_all[sel]
        worst = float(rows["p95"].max())
        out.append(Finding(
            "delivery_p95", str(channel), "critical" if worst > 2 * t.p95_latency_s else "warning",
            f"Delivery P95 up to {units.duration(worst)} on {'all channels' if channel == 'ALL' else channel} "
            f"(SLA {t.p95_latency_s:g} s)",
            f"{len(rows)} window(s) of {units.duration(t.rate_window_s)} with P95(created -> DELIVERED) above "
            f"{t.p95_latency_s:g} s; {len(pos):,} messages took longer. SLA SC-002: 95 % delivered within 5 s.",
            _ts(first), _ts(last), _channel_or_none(str(channel)), len(pos), worst, t.p95_latency_s,
            _message_refs(ctx, pos), pos))
    return out


# ---- Symptom 4: out-of-order delivery -------------------------------------------------------

@detector("out_of_order")
def out_of_order(ctx: Context) -> Iterable[Finding]:
    """Messages delivered before an earlier-created message of the same conversation
    (SC-004: zero out-of-order within a conversation).

    Method: sort each conversation's delivered messages by creation; a message is late when
    its first DELIVERED precedes the latest delivery among the messages created before it
    (a running max per conversation). The message holding that max is the *holder*. Each
    inversion is one of three kinds, one finding per channel and kind:

    - ``reordered``: the holder was not retried and arrived more than
      ``out_of_order_tolerance_s`` late (what a rebalance or concurrent consumers do);
    - ``after_retry``: the holder had retries (retry_count > 0): its own failures delayed it;
    - ``jitter``: within the tolerance, messages sent almost at once (info).
    """
    if not ctx.n_messages:
        return []
    conv_codes = ctx.codes("conversation_id")[0]
    ok = (ctx.delivered_ns != NAT) & (ctx.created_ns != NAT) & (conv_codes >= 0)
    pos = np.flatnonzero(ok)
    if len(pos) < 2:
        return []
    conv = conv_codes[pos]
    order = np.lexsort((ctx.created_ns[pos], conv))
    conv, pos = conv[order], pos[order]
    delivered = ctx.delivered_ns[pos]
    n = len(pos)
    starts = np.r_[True, conv[1:] != conv[:-1]]
    block = np.cumsum(starts) - 1
    running = pd.Series(delivered).groupby(block).cummax().to_numpy()
    setter = pd.Series(np.where(delivered == running, np.arange(n), -1)).groupby(block).cummax().to_numpy()
    prev_max = np.r_[NAT, running[:-1]]
    prev_holder = np.r_[-1, setter[:-1]]
    late = (~starts) & (prev_max > delivered)
    if not late.any():
        return []
    idx = np.flatnonzero(late)
    late_pos, holder_pos = pos[idx], pos[prev_holder[idx]]
    inversion_s = (prev_max[idx] - delivered[idx]) / NS
    retries = ctx.messages["retry_count"].to_numpy(dtype=float, na_value=0.0)
    retried = retries[holder_pos] > 0
    kinds = {"reordered": ~retried & (inversion_s > ctx.t.out_of_order_tolerance_s),
             "after_retry": retried,
             "jitter": ~retried & (inversion_s <= ctx.t.out_of_order_tolerance_s)}
    texts = {"reordered": "Runbook Symptom 4: partition rebalancing or concurrent connector processing (4.2, 4.3).",
             "after_retry": "The earlier message was retried after platform errors and overtaken by the next one.",
             "jitter": f"Inversions within {ctx.t.out_of_order_tolerance_s:g} s: messages sent almost at once."}
    out = []
    for kind, mask in kinds.items():
        for channel, p in _by_channel(ctx, late_pos[mask]).items():
            convs = ctx.values("conversation_id", p)
            n_conv = len(pd.unique(convs))
            worst = float(inversion_s[mask].max())
            severity = ("critical" if n_conv >= 10 else "warning") if kind == "reordered" else "info"
            out.append(Finding(
                "out_of_order", f"{channel}:{kind}", severity,
                f"{len(p):,} {channel} messages delivered out of order in {n_conv:,} conversations"
                + {"reordered": "", "after_retry": " after retries", "jitter": " (within jitter)"}[kind],
                f"{len(p):,} messages were delivered before a message created earlier in the same conversation, up "
                f"to {units.duration(worst)} ahead (SC-004 allows none). {texts[kind]}",
                _ts(int(ctx.delivered_ns[p].min())), _ts(int(ctx.delivered_ns[p].max())), _channel_or_none(channel),
                len(p), float(n_conv), ctx.t.out_of_order_tolerance_s if kind != "after_retry" else 0.0,
                _message_refs(ctx, p) + [ref("messages", "conversation_id", convs, total=n_conv)], p,
                {"conversations": n_conv, "kind": kind, "max_inversion_s": worst}))
    return out


# ---- duplicates (SC-007) --------------------------------------------------------------------

@detector("duplicate_deliveries")
def duplicate_deliveries(ctx: Context) -> Iterable[Finding]:
    """More than one DELIVERED per message; DLQ records repeated (same topic/partition/offset,
    or the same message dead-lettered twice); status events repeated exactly."""
    out = []
    dup = np.flatnonzero(ctx.delivered_count > 1)
    if len(dup):
        extra = int((ctx.delivered_count[dup] - 1).sum())
        convs = ctx.values("conversation_id", dup)
        out.append(Finding(
            "duplicate_deliveries", "status_events", "critical" if len(dup) >= 10 else "warning",
            f"{len(dup):,} messages delivered more than once",
            f"{len(dup):,} messages have more than one DELIVERED status event ({extra:,} extra). SC-007: no "
            "duplicates. Concurrent processing or redelivery after a rebalance (4.2, 4.3).",
            _ts(int(ctx.delivered_ns[dup].min())), None, None, len(dup), float(extra), 0.0,
            _message_refs(ctx, dup) + [ref("messages", "conversation_id", convs, total=len(pd.unique(convs)))],
            dup, {"conversations": len(pd.unique(convs))}))
    rep = repeated_status_events(ctx.evidence)
    if len(rep):
        ids = rep["message_id"]
        pos = ctx.positions(ids)
        times = pd.to_datetime(rep["at"], utc=True)
        total = int(rep["repeats"].sum())
        out.append(Finding(
            "duplicate_deliveries", "status_events_repeated", "warning",
            f"{total:,} status events recorded twice",
            "Identical (message_id, new_status, timestamp) rows in the status history: a transition "
            "written twice (double processing) or a collection artefact.",
            times.min(), times.max(), None, total, float(total), 0.0, [ref("status_events", "message_id", ids)],
            np.unique(pos[pos >= 0])))
    dlq = ctx.table("dlq_records")
    if len(dlq):
        same_offset = dlq.duplicated(["topic", "partition", "offset"], keep="first")
        with_id = dlq[dlq["message_id"].notna()]
        same_msg = with_id.duplicated("message_id", keep="first")
        if same_offset.any() or same_msg.any():
            ids = with_id.loc[same_msg, "message_id"]
            pos = ctx.positions(ids)
            n = int(same_offset.sum()) + int(same_msg.sum())
            out.append(Finding(
                "duplicate_deliveries", "dlq", "warning",
                f"{n:,} duplicated dead letters",
                f"{int(same_offset.sum()):,} DLQ records repeat a topic/partition/offset and {int(same_msg.sum()):,} "
                "dead-letter a message already dead-lettered: the same failure was processed more than once.",
                dlq["timestamp"].min(), dlq["timestamp"].max(), None, n, float(n), 0.0,
                [ref("dlq_records", "message_id", ids)], np.unique(pos[pos >= 0])))
    return out


# ---- content over the platform's limits (R3.2) ----------------------------------------------

@detector("content_over_limit")
def content_over_limit(ctx: Context) -> Iterable[Finding]:
    """Messages whose text or file is over the platform's limit (catalog ``limits``), per
    channel, and how many of them FAILED."""
    if not ctx.n_messages:
        return []
    limits = load_catalog().limits
    codes, uniques = ctx.codes("channel")
    at = np.where(codes >= 0, codes, len(uniques))
    text_limit = np.array([limits.get(u, {}).get("text_chars", np.inf) for u in uniques] + [np.inf])[at]
    file_limit = np.array([limits.get(u, {}).get("file_bytes", np.inf) for u in uniques] + [np.inf])[at]
    length = ctx.messages["content_length"].to_numpy(dtype=float, na_value=np.nan)
    size = ctx.messages["file_size"].to_numpy(dtype=float, na_value=np.nan)
    over = (length > text_limit) | (size > file_limit)
    pos_all = np.flatnonzero(over)
    out = []
    for channel, pos in _by_channel(ctx, pos_all).items():
        failed = int(ctx.failed[pos].sum())
        lim = limits.get(channel, {})
        out.append(Finding(
            "content_over_limit", channel, "critical" if failed >= 10 else "warning" if failed else "info",
            f"{len(pos):,} {channel} messages over the platform's limits ({failed:,} FAILED)",
            f"Text over {lim.get('text_chars', '?')} characters or files over {lim.get('file_bytes', 0) / 2**20:,.0f} MB "
            f"(runbook R3.2); {failed:,} of them FAILED.",
            _ts(int(ctx.created_ns[pos].min())), _ts(int(ctx.created_ns[pos].max())), _channel_or_none(channel),
            len(pos), float(failed), None, _message_refs(ctx, pos), pos,
            {"failed": failed, "failed_share": failed / len(pos)}))
    return out
