"""Dead-letter triage: which DLQ records can be replayed, and which must not be.

Replaying a dead letter (runbook R2.4 / R3.3: republish the event) is safe only when the
message really failed and nothing will quietly undo the replay. :func:`replay_safety`
judges each DLQ record against the MongoDB message and the Redis keys:

1. ``undecodable``: the payload could not be parsed or names no message: nothing to replay
   as is.
2. ``unknown_message``: MongoDB evidence holds no such message (created outside the
   collected window, or never stored): look it up before replaying.
3. ``not_failed``: MongoDB has the message in another status than FAILED (DELIVERED, READ:
   a replay sends it twice; PENDING, SENT: it may still be on its way).
4. ``not_retryable``: the error class (:func:`forensics.analysis.classify.classify_series`) says an
   unchanged retry fails again (expired token, unknown recipient, content over the limit):
   do the runbook step first.
5. ``blocked``: the router's processed key of the message (``router:processed:{id}``) still
   lives: the router drops the replay without a word until the key is deleted (R2.4).
6. ``unverified``: MongoDB or Redis evidence was not collected, so 2., 3. or 5. cannot be
   ruled out.
7. ``duplicate``: an earlier dead letter of a message whose latest one is replayed.
8. ``safe``: FAILED in MongoDB, retryable, no processed key: replay it.

The first that applies is the record's ``verdict``; ``reason`` lists every one that applies,
so a record blocked for two reasons says both.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from forensics import schema
from forensics.analysis.classify import classify_series
from forensics.evidence import Evidence
from forensics.redact import Redactor

VERDICTS: dict[str, str] = {
    "undecodable": "payload not decoded or without a message id: inspect by hand",
    "unknown_message": "not among the MongoDB messages collected: look it up before replaying",
    "not_failed": "MongoDB does not have it FAILED: a replay could deliver it twice",
    "not_retryable": "an unchanged retry fails again: take the runbook step first",
    "blocked": "a router processed key would swallow the replay: delete the key first (R2.4)",
    "unverified": "MongoDB or Redis evidence missing: replay safety cannot be checked",
    "duplicate": "an earlier dead letter of a message whose latest one is replayed",
    "safe": "FAILED, retryable and no processed key: safe to replay",
}
"""Verdict -> what it means, in the order they take precedence."""

COLUMNS = {
    "topic": schema.STR, "partition": schema.INT, "offset": schema.INT, "timestamp": schema.UTC_TS,
    "message_id": schema.STR, "conversation_id": schema.STR, "channel": schema.STR, "original_topic": schema.STR,
    "exception": schema.STR, "error_category": schema.STR, "error_title": schema.STR, "runbook_step": schema.STR,
    "retryable": schema.BOOL, "mongo_status": schema.STR, "failed_in_mongo": schema.BOOL,
    "processed_key": schema.STR, "processed_key_ttl_s": schema.FLOAT, "verdict": schema.STR,
    "safe_to_replay": schema.BOOL, "reason": schema.STR,
}
"""Columns of :func:`replay_safety`: one row per DLQ record."""


def replay_blockers(locks: pd.DataFrame, message_ids: Iterable[str]) -> pd.DataFrame:
    """Processed keys of ``message_ids`` (the FAILED messages to replay): while one exists the
    router's deduplication drops a manual replay of that message without a word."""
    wanted = {str(m) for m in message_ids if not pd.isna(m)}
    return locks[((locks["kind"] == "processed") & locks["message_id"].isin(wanted)).fillna(False)]


def _short_class(fqcn: pd.Series) -> pd.Series:
    """``org.springframework.kafka.listener.ListenerExecutionFailedException`` -> the class name."""
    return fqcn.astype(schema.STR).str.rsplit(".", n=1).str[-1]


def replay_safety(dlq_records: pd.DataFrame, messages: pd.DataFrame | None,
                  locks: pd.DataFrame | None) -> pd.DataFrame:
    """Judge every DLQ record: is replaying it safe, and if not, why (module docstring).

    ``dlq_records``, ``messages`` and ``locks`` are canonical tables; pass None for
    ``messages`` or ``locks`` when that evidence was not collected (an empty table means
    collected and empty: no message, no key). Returns :data:`COLUMNS`, one row per record
    in the input order; ``processed_key_ttl_s`` is the key's remaining life in seconds (null:
    no expiry, or no key).
    """
    dlq = dlq_records.reset_index(drop=True)
    n = len(dlq)
    ids = dlq["message_id"].astype(schema.STR)
    error = classify_series(dlq["exception_message"], dlq["channel"])

    status = pd.Series(pd.NA, index=dlq.index, dtype=schema.STR)
    if messages is not None:
        # one status per message id (the last document wins when a store holds duplicates)
        latest = messages.drop_duplicates("message_id", keep="last").set_index("message_id")["status"]
        status = ids.map(latest).astype(schema.STR)
    key = pd.Series(pd.NA, index=dlq.index, dtype=schema.STR)
    ttl = pd.Series(np.nan, index=dlq.index, dtype=schema.FLOAT)
    if locks is not None:
        keys = replay_blockers(locks, ids.dropna()).drop_duplicates("message_id", keep="last").set_index("message_id")
        key, ttl = ids.map(keys["key"]).astype(schema.STR), ids.map(keys["ttl_s"]).astype(schema.FLOAT)

    undecodable = (dlq["decode_error"].notna() | ids.isna()).to_numpy(dtype=bool)
    checks = {
        "undecodable": undecodable,
        "unknown_message": (messages is not None) & status.isna().to_numpy(dtype=bool) & ~undecodable,
        "not_failed": status.notna().to_numpy(dtype=bool) & status.ne("FAILED").fillna(False).to_numpy(dtype=bool),
        "not_retryable": error["retryable"].eq(False).fillna(False).to_numpy(dtype=bool),
        "blocked": key.notna().to_numpy(dtype=bool),
        "unverified": np.full(n, messages is None or locks is None),
    }
    verdict = np.full(n, "safe", dtype=object)
    for name in reversed(list(checks)):  # the first check that applies wins
        verdict[checks[name]] = name
    # of the records that would be replayed, only the latest per message is
    safe = dlq.loc[verdict == "safe", ["timestamp", "offset", "message_id"]]
    older = safe.sort_values(["timestamp", "offset"], kind="stable").duplicated("message_id", keep="last")
    verdict[older[older].index.to_numpy()] = "duplicate"

    detail = {
        "not_failed": "MongoDB status " + status.fillna("?"),
        "not_retryable": ("error " + error["category"].fillna("unknown") + ": " + error["title"].fillna("")
                          + ", runbook " + error["runbook_step"].fillna("-")),
        "blocked": key.fillna("") + ttl.map(lambda s: f" (expires in {s / 3600:.1f} h)" if pd.notna(s)
                                            else " (no expiry)").astype(schema.STR),
        "unverified": pd.Series(", ".join(name for name, table in (("MongoDB", messages), ("Redis", locks))
                                          if table is None) + " not collected", index=dlq.index),
    }
    reasons = [[] for _ in range(n)]
    for name, hit in checks.items():
        text = (detail[name].to_numpy(dtype=object) if name in detail else np.full(n, VERDICTS[name], dtype=object))
        for i in np.flatnonzero(hit):
            reasons[i].append(f"{name}: {text[i]}")
    for i in np.flatnonzero(verdict == "duplicate"):
        reasons[i].append(f"duplicate: {VERDICTS['duplicate']}")

    out = pd.DataFrame({
        "topic": dlq["topic"], "partition": dlq["partition"], "offset": dlq["offset"], "timestamp": dlq["timestamp"],
        "message_id": ids, "conversation_id": dlq["conversation_id"], "channel": dlq["channel"],
        "original_topic": dlq["original_topic"], "exception": _short_class(dlq["exception_class"]),
        "error_category": error["category"].to_numpy(), "error_title": error["title"].to_numpy(),
        "runbook_step": error["runbook_step"].to_numpy(), "retryable": error["retryable"].to_numpy(),
        "mongo_status": status, "failed_in_mongo": status.eq("FAILED") if messages is not None else pd.NA,
        "processed_key": key, "processed_key_ttl_s": ttl, "verdict": verdict,
        "safe_to_replay": verdict == "safe", "reason": ["; ".join(r) or VERDICTS["safe"] for r in reasons],
    })
    return out.astype(COLUMNS)


def evidence_replay_safety(evidence: Evidence) -> pd.DataFrame:
    """:func:`replay_safety` of an incident's evidence; MongoDB or Redis tables that were not
    collected count as unknown (``unverified``), not as empty."""
    return replay_safety(evidence.table("dlq_records"),
                         evidence.table("messages") if evidence.has("messages") else None,
                         evidence.table("locks") if evidence.has("locks") else None)


def error_classes(safety: pd.DataFrame) -> pd.DataFrame:
    """Dead letters per original topic and error class (the catalog's reading of the exception
    message), the largest first: records, messages, how many are safe to replay, first and last."""
    keys = ["original_topic", "error_category", "error_title", "exception", "runbook_step", "retryable"]
    if safety.empty:
        return pd.DataFrame(columns=[*keys, "records", "messages", "safe_to_replay", "first", "last"])
    g = safety.groupby(keys, dropna=False, observed=True)
    out = g.agg(records=("offset", "size"), messages=("message_id", "nunique"),
                safe_to_replay=("safe_to_replay", "sum"), first=("timestamp", "min"), last=("timestamp", "max"))
    return out.reset_index().sort_values("records", ascending=False, kind="stable").reset_index(drop=True)


def verdict_counts(safety: pd.DataFrame) -> pd.DataFrame:
    """Records and distinct messages per verdict (precedence order), with what the verdict means."""
    g = safety.groupby("verdict")
    counts = pd.DataFrame({"records": g.size(), "messages": g["message_id"].nunique()})
    counts = counts.reindex([v for v in VERDICTS if v in counts.index])
    return counts.assign(meaning=[VERDICTS[v] for v in counts.index]).rename_axis("verdict").reset_index()


def payload_samples(dlq_records: pd.DataFrame, safety: pd.DataFrame, per_group: int = 2, max_chars: int = 300,
                    redactor: Redactor | None = None) -> pd.DataFrame:
    """Up to ``per_group`` payloads per (original topic, error class), the earliest first, cut
    to ``max_chars`` characters. With a ``redactor`` the payload is redacted as text (phone
    numbers, handles, known contents masked, the JSON shape kept) before it is cut, so a cut
    never leaves half a content unmasked. Raw evidence text: escape it for display."""
    dlq = dlq_records.reset_index(drop=True)
    frame = pd.DataFrame({"original_topic": safety["original_topic"], "error_category": safety["error_category"],
                          "timestamp": dlq["timestamp"], "where": dlq["topic"] + " " + dlq["source_ref"].fillna("?"),
                          "verdict": safety["verdict"], "payload_bytes": dlq["payload_bytes"],
                          "payload": dlq["payload"].astype(schema.STR), "decode_error": dlq["decode_error"]})
    frame = frame.sort_values("timestamp", kind="stable")
    keys = [frame["original_topic"].fillna("?"), frame["error_category"].fillna("?")]
    frame = frame[frame.groupby(keys).cumcount() < per_group].reset_index(drop=True)
    if redactor is not None:
        frame = redactor.frame(frame, columns=())
    return frame.assign(payload=frame["payload"].str.slice(0, max_chars))
