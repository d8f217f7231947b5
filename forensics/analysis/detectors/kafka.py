"""Kafka detectors: consumer lag (alert 3), missing topics (1.2 / R1.2), dead letters (3.2)."""

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
    _group_severity,
    _message_refs,
    detector,
    ref,
)

# ---- recommended alert 3: consumer lag ------------------------------------------------------

@detector("consumer_lag")
def consumer_lag(ctx: Context) -> Iterable[Finding]:
    """Total lag per consumer group and topic over the samples: above ``consumer_lag`` is a
    problem (critical), between ``consumer_lag_normal`` and it elevated (warning). Says whether
    the lag was still growing or draining at the last sample, and how concentrated on
    partitions it was at its peak."""
    lag = ctx.table("consumer_lag")
    if not len(lag):
        return []
    t = ctx.t
    df = lag[["sampled_at", "group", "topic", "partition", "lag"]].copy()
    df["lag"] = df["lag"].fillna(0).astype("int64")
    total = df.groupby(["group", "topic", "sampled_at"], sort=True)["lag"].sum().reset_index()
    out = []
    for (group, topic), s in total.groupby(["group", "topic"], sort=False):
        s = s.sort_values("sampled_at")
        peak = int(s["lag"].max())
        if peak <= t.consumer_lag_normal:
            continue
        values = s["lag"].to_numpy()
        times = s["sampled_at"]
        above = values > t.consumer_lag
        critical = bool(above.any())
        limit = t.consumer_lag if critical else t.consumer_lag_normal
        crossing = times.iloc[int(np.argmax(values > limit))]
        last_above = times[values > limit].iloc[-1]
        final = int(values[-1])
        trend = ("growing" if final >= 0.8 * peak and final > values[0] else
                 "draining" if final < 0.5 * peak else "steady")
        at_peak = df[(df["group"] == group) & (df["topic"] == topic) &
                     (df["sampled_at"] == times.iloc[int(np.argmax(values))])]
        shares = np.sort(at_peak["lag"].to_numpy())[::-1] / max(peak, 1)
        n_parts = len(at_peak)
        top_share = float(shares[: max(1, n_parts // 5)].sum()) if n_parts else 0.0
        skewed = n_parts >= 3 and top_share > 0.8 and top_share > 2.0 * (max(1, n_parts // 5) / n_parts)
        hot = at_peak.sort_values("lag", ascending=False)["partition"].head(max(1, n_parts // 5)).tolist()
        out.append(Finding(
            "consumer_lag", f"{group}/{topic}", "critical" if critical else "warning",
            f"Consumer lag of {group} on {topic} peaked at {peak:,} ({trend})",
            f"Lag {'above' if critical else 'elevated above'} {limit:,.0f} from {crossing:%H:%M:%S} UTC, peak {peak:,}, "
            f"{final:,} at the last sample ({trend}); runbook: < {t.consumer_lag_normal:,.0f} normal, "
            f"> {t.consumer_lag:,.0f} a problem."
            + (f" {top_share:.0%} of the peak lag sits on partition(s) {', '.join(map(str, hot))}." if skewed else ""),
            crossing, last_above, None, int(above.sum()) if critical else int((values > limit).sum()), float(peak),
            float(limit), [ref("consumer_lag", "sampled_at", times[values > limit].astype(str)),
                           {"table": "consumer_lag", "column": "group/topic", "values": [f"{group}/{topic}"],
                            "total": 1}],
            None, {"group": group, "topic": topic, "trend": trend, "skewed": skewed, "hot_partitions": hot,
                   "final": final, "router": group == ctx.profile.kafka.router_group}))
    return out


# ---- localisation: a change confined to one partition (4.2) ---------------------------------

@detector("partition_confined")
def partition_confined(ctx: Context) -> Iterable[Finding]:
    """The router's lag on the message events topic held on one partition, and the stuck
    PENDING messages whose conversations hash there (Kafka's murmur2 partitioner on the
    conversation id, the topic's partition count from the lag samples or the profile).

    At the sample of peak total lag, a partition holding at least ``partition_share`` of it,
    and a backlog of at least ``min_window_messages`` records, confines the lag to that
    partition (the total may stay under the lag alert: one partition of ten); when the
    conversations of the stuck messages (at least ``min_window_messages`` / 4 of them) also
    hash to it in that share, the stall is the partition's (a poison record, a stuck
    consumer thread), not the router's as a whole: critical. A router that is down leaves
    every partition's lag growing and stuck conversations on all of them."""
    from forensics.sources.partitioner import partitions_for

    lag = ctx.table("consumer_lag")
    topic = ctx.profile.kafka.message_events
    group = ctx.profile.kafka.router_group
    if not len(lag):
        return []
    mine = lag[(lag["group"] == group) & (lag["topic"] == topic.name)]
    if not len(mine):
        return []
    total = mine.groupby("sampled_at")["lag"].sum()
    peak_at = total.idxmax()
    peak = float(total.max())
    at_peak = mine[mine["sampled_at"] == peak_at].groupby("partition")["lag"].sum()
    if len(at_peak) < 2 or float(at_peak.max()) < ctx.t.min_window_messages:
        return []
    hot = int(at_peak.idxmax())
    share = float(at_peak.max()) / peak
    if share < ctx.t.partition_share:
        return []
    n_parts = max(int(mine["partition"].max()) + 1, int(topic.partitions or 0))
    age_ns = ctx.now_ns - ctx.created_ns
    stuck = np.flatnonzero((ctx.status == "PENDING") & (ctx.created_ns != NAT) & (age_ns > ctx.t.stuck_pending_s * NS)
                           & (ctx.codes("conversation_id")[0] >= 0))
    convs = pd.unique(ctx.values("conversation_id", stuck)) if len(stuck) else np.empty(0, dtype=object)
    on_hot = partitions_for([str(c) for c in convs], n_parts) == hot if len(convs) else np.zeros(0, dtype=bool)
    stuck_share = float(on_hot.mean()) if len(convs) else 0.0
    enough = len(convs) >= ctx.t.min_window_messages / 4
    confined = enough and stuck_share >= ctx.t.partition_share
    hot_convs = set(convs[on_hot]) if len(convs) else set()
    affected = stuck[np.isin(ctx.values("conversation_id", stuck), list(hot_convs))] if confined else stuck[:0]
    others = at_peak.drop(hot)
    return [Finding(
        "partition_confined", f"{group}/{topic.name}:{hot}", "critical" if confined else "warning",
        f"Lag of {group} confined to partition {hot} of {topic.name}"
        + (f"; the {len(hot_convs):,} conversations stuck PENDING hash to it" if confined else ""),
        f"At the peak ({peak_at:%H:%M:%S} UTC) partition {hot} held {at_peak.max():,.0f} of {peak:,.0f} lag "
        f"({share:.0%}); the other {len(others)} partitions at most {others.max():,.0f}. "
        + (f"{stuck_share:.0%} of the {len(convs):,} conversations with messages stuck PENDING hash to partition "
           f"{hot} (murmur2 of the conversation id over {n_parts} partitions): the partition is stalled (a poison "
           "record the router cannot deserialize, a stuck consumer), not the router as a whole (runbook 4.2)."
           if confined else f"{stuck_share:.0%} of {len(convs):,} stuck conversations hash to it."),
        pd.Timestamp(peak_at), pd.Timestamp(peak_at), None, len(affected), share, ctx.t.partition_share,
        [ref("consumer_lag", "partition", [str(hot)]), _message_refs(ctx, affected)[0]] if confined
        else [ref("consumer_lag", "partition", [str(hot)])],
        affected, {"partition": hot, "group": group, "topic": topic.name, "lag_share": share,
                   "stuck_share": stuck_share, "conversations": len(hot_convs), "confined": confined})]


# ---- Kafka topics (1.2 / R1.2) --------------------------------------------------------------

def _inventory_missing(ctx: Context) -> tuple[list[str], str]:
    """Missing topics from the topic inventory, and where that came from: the ``topics`` table
    (latest sample per topic), else a source's description, else the simulator's scenario."""
    ev = ctx.evidence
    topics = ctx.table("topics")
    if len(topics):
        latest = topics.sort_values("sampled_at").drop_duplicates("topic", keep="last")
        return latest.loc[~latest["present"].astype(bool), "topic"].astype(str).tolist(), "topics inventory"
    for name, desc in (ev.sources or {}).items():
        if not isinstance(desc, dict):
            continue
        if desc.get("missing_topics"):
            return [str(t) for t in desc["missing_topics"]], f"{name} topic inventory"
        rows = desc.get("topics")
        if isinstance(rows, list):
            missing = [str(r.get("topic")) for r in rows if isinstance(r, dict) and r.get("present") is False]
            if missing:
                return missing, f"{name} topic inventory"
    if ev.scenario and ev.scenario.get("missing_topics"):
        return [str(t) for t in ev.scenario["missing_topics"]], "simulator scenario inventory"
    return [], ""


@detector("missing_topics")
def missing_topics(ctx: Context) -> Iterable[Finding]:
    """Expected topics (from the profile) that the topic inventory lacks, and producer /
    consumer errors in the logs that say a topic does not exist (UNKNOWN_TOPIC_OR_PARTITION)."""
    expected = [t.name for t in ctx.profile.kafka.expected_topics()]
    missing, origin = _inventory_missing(ctx)
    logs = ctx.log_errors
    topic_logs = logs[logs["signature"] == "kafka.unknown_topic_or_partition"] if len(logs) else logs
    named: dict[str, pd.DataFrame] = {}
    if len(topic_logs):
        text = topic_logs["message"].fillna("")  # the message, else the raw line (Context.log_errors)
        for name in sorted(expected, key=len, reverse=True):
            hit = text.str.contains(name, regex=False)
            hit &= ~text.index.isin([i for f in named.values() for i in f.index])
            if hit.any():
                named[name] = topic_logs[hit]
    out = []
    stuck = ctx.status == "PENDING"
    for name in dict.fromkeys(missing + list(named)):
        lines = named.get(name)
        topic = next((t for t in ctx.profile.kafka.expected_topics() if t.name == name), None)
        channel = topic.channel if topic else None
        affected = np.flatnonzero(stuck & ((ctx.channel == channel) if channel else True))
        first = lines["timestamp"].min() if lines is not None and len(lines) else None
        evidence = []
        if origin and name in missing:
            evidence.append({"table": "inventory", "column": "topic", "values": [name], "total": 1,
                             "origin": origin})
        if lines is not None and len(lines):
            evidence.append(ref("log_events", "source_ref", lines["source_ref"], total=len(lines)))
        out.append(Finding(
            "missing_topics", name, "critical",
            f"Kafka topic {name} is missing",
            (f"{origin}: {name} is not on the cluster" if name in missing else f"{name}: not in the inventory")
            + (f"; {len(lines):,} log lines report UNKNOWN_TOPIC_OR_PARTITION / topic not present for it"
               if lines is not None and len(lines) else "")
            + ". Runbook R1.2: create it from infrastructure/kafka/topics.json.",
            first if first is not None else ctx.evidence.window.start, ctx.now, channel,
            len(lines) if lines is not None else 0, None, None, evidence, affected,
            {"topic": name, "inventory": name in missing}))
    unnamed = topic_logs[~topic_logs.index.isin([i for f in named.values() for i in f.index])] if len(topic_logs) \
        else topic_logs
    if len(unnamed):
        out.append(Finding(
            "missing_topics", "logs", "critical",
            f"{len(unnamed):,} log lines report a missing Kafka topic",
            "Producer/consumer errors UNKNOWN_TOPIC_OR_PARTITION (topic not present in metadata) for a topic the "
            "profile does not name. Runbook R1.2.",
            unnamed["timestamp"].min(), unnamed["timestamp"].max(), None, len(unnamed), None, None,
            [ref("log_events", "source_ref", unnamed["source_ref"], total=len(unnamed))],
            np.flatnonzero(stuck), {"topic": None, "inventory": False}))
    topics = ctx.table("topics")
    if len(topics):
        latest = topics.sort_values("sampled_at").drop_duplicates("topic", keep="last")
        odd = latest[latest["present"].astype(bool) & (latest["partitions_match"] == False)]  # noqa: E712
        for _, r in odd.iterrows():
            out.append(Finding(
                "missing_topics", f"{r['topic']}:partitions", "warning",
                f"Kafka topic {r['topic']} has {r['partitions']} partitions, the profile expects "
                f"{r['expected_partitions']}",
                "A topic created by hand or by auto-creation with the broker default: per-conversation ordering "
                "and the consumers' assignment differ from the design (runbook 1.2, R1.2).",
                r["sampled_at"], r["sampled_at"], r["channel"] if pd.notna(r["channel"]) else None, 1,
                float(r["partitions"]) if pd.notna(r["partitions"]) else None,
                float(r["expected_partitions"]) if pd.notna(r["expected_partitions"]) else None,
                [ref("topics", "topic", [r["topic"]])], None, {"topic": r["topic"], "partitions_mismatch": True}))
    return out


# ---- dead letters (3.2) ---------------------------------------------------------------------

@detector("dead_letters")
def dead_letters(ctx: Context) -> Iterable[Finding]:
    """Records in the DLQ topics, per topic: how many, from when, and undecodable payloads."""
    dlq = ctx.table("dlq_records")
    if not len(dlq):
        return []
    out = []
    for topic, rows in dlq.groupby("topic", sort=False):
        pos = ctx.positions(rows["message_id"].dropna())
        pos = np.unique(pos[pos >= 0])
        bad = int(rows["decode_error"].notna().sum())
        n = len(rows)
        channel = next((t.channel for t in ctx.profile.kafka.dlq if t.name == topic), None)
        out.append(Finding(
            "dead_letters", str(topic), _group_severity(n, max(ctx.n_messages, 1)),
            f"{units.count(n, 'DLQ records')} in {topic}",
            f"{n:,} dead letters from {rows['timestamp'].min():%H:%M:%S} to {rows['timestamp'].max():%H:%M:%S} UTC"
            + (f"; {bad:,} payloads could not be decoded" if bad else "") + " (runbook 3.2).",
            rows["timestamp"].min(), rows["timestamp"].max(), channel, n, float(n), None,
            [ref("dlq_records", "offset", rows["partition"].astype(str) + ":" + rows["offset"].astype(str), total=n)]
            + (_message_refs(ctx, pos) if len(pos) else []),
            pos, {"topic": str(topic)}))
    return out
