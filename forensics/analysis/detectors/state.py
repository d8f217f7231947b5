"""State detectors: Redis locks and processed keys (R4.2, R2.4) and recipient identities (R3.1)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from forensics import schema
from forensics.analysis.detectors.base import (
    MAX_REF_VALUES,
    Context,
    Finding,
    _message_refs,
    _ts,
    detector,
    identity_rows,
    ref,
)
from forensics.scan import lock_rows

# ---- Redis locks and processed keys (R4.2, R2.4) --------------------------------------------

@detector("stuck_locks")
def stuck_locks(ctx: Context) -> Iterable[Finding]:
    """Conversation locks without a TTL, or with a TTL longer than ``lock_ttl_s`` (they outlive
    any holder): the conversation's next messages wait on them (R4.2)."""
    lk = lock_rows(ctx.evidence, "conversation_lock")
    ttl = lk["ttl_s"]
    bad = lk[ttl.isna() | (ttl < 0) | (ttl > ctx.t.lock_ttl_s)]
    if not len(bad):
        return []
    convs = bad["conversation_id"].dropna()
    waiting = np.flatnonzero(ctx.messages["conversation_id"].isin(convs).to_numpy()
                             & np.isin(ctx.status, ("PENDING", "SENT")))
    no_ttl = int((bad["ttl_s"].isna() | (bad["ttl_s"] < 0)).sum())
    return [Finding(
        "stuck_locks", "", "critical" if len(waiting) else "warning",
        f"{len(bad):,} conversation locks stuck in Redis",
        f"{no_ttl:,} conversation locks have no expiry and {len(bad) - no_ttl:,} a TTL above "
        f"{ctx.t.lock_ttl_s:g} s; {len(waiting):,} PENDING/SENT messages belong to those conversations. "
        "R4.2: delete the stuck locks and set CONVERSATION_LOCK_TTL_SECONDS.",
        bad["sampled_at"].min(), bad["sampled_at"].max(), None, len(bad), float(len(bad)), ctx.t.lock_ttl_s,
        [ref("locks", "key", bad["key"], total=len(bad))] + (_message_refs(ctx, waiting) if len(waiting) else []),
        waiting, {"conversations": len(pd.unique(convs))})]


@detector("replay_blockers")
def replay_blockers(ctx: Context) -> Iterable[Finding]:
    """``processed`` keys of FAILED messages: a manual replay (R2.4, R3.3) of those messages
    is silently dropped by the router while the key lives (7 days)."""
    if not ctx.evidence.has("locks") or not ctx.n_messages:
        return []
    failed = np.flatnonzero(ctx.failed)
    if not len(failed):
        return []
    keys = lock_rows(ctx.evidence, "processed", schema.take_text(ctx.messages["message_id"], failed))
    if not len(keys):
        return []
    pos = ctx.positions(keys["message_id"])
    p = np.unique(pos[pos >= 0])
    return [Finding(
        "replay_blockers", "", "warning" if len(p) >= 10 else "info",
        f"{len(p):,} FAILED messages have a router processed key: a replay would be dropped",
        f"{len(p):,} FAILED messages still have their processed key in Redis (TTL up to 7 days): republishing "
        "them (R2.4 / R3.3) is silently ignored by the router until the keys are deleted.",
        keys["sampled_at"].min(), None, None, len(p), float(len(p)), 0.0,
        [ref("locks", "key", keys["key"].head(MAX_REF_VALUES), total=len(keys))]
        + _message_refs(ctx, p), p)]


# ---- recipients (R3.1) ----------------------------------------------------------------------

@detector("recipient_identity")
def recipient_identity(ctx: Context) -> Iterable[Finding]:
    """FAILED messages whose recipient has a malformed platform id (identities.format_valid
    False: not E.164 for WhatsApp), an unverified identity, or no identity at all (only when
    the identities table was collected)."""
    ids = ctx.table("identities")
    if not len(ids) or not ctx.n_messages:
        return []
    failed = np.flatnonzero(ctx.failed)
    if not len(failed):
        return []
    at = identity_rows(ids, ctx.values("channel", failed), ctx.values("recipient_id", failed))
    found = at >= 0
    fmt = np.where(found, ids["format_valid"].to_numpy(dtype=object, na_value=None)[np.maximum(at, 0)], None)
    ver = np.where(found, ids["verified"].to_numpy(dtype=object, na_value=None)[np.maximum(at, 0)], None)
    kinds = {"malformed": found & (fmt == False), "unverified": found & (fmt != False) & (ver == False),  # noqa: E712
             "no_identity": ~found}
    out = []
    for kind, mask in kinds.items():
        pos = failed[mask]
        if not len(pos):
            continue
        share = len(pos) / len(failed)
        out.append(Finding(
            "recipient_identity", kind, "critical" if share >= 0.2 and len(pos) >= 10 else "warning",
            f"{len(pos):,} FAILED messages to recipients with {kind.replace('_', ' ')} identities",
            f"{len(pos):,} of {len(failed):,} FAILED messages ({share:.0%}) went to recipients whose external "
            f"identity is {kind.replace('_', ' ')} (E.164 for WhatsApp). Runbook R3.1.",
            _ts(int(ctx.created_ns[pos].min())), _ts(int(ctx.created_ns[pos].max())), None, len(pos), share, None,
            _message_refs(ctx, pos) + [ref("identities", "platform_user_id", ctx.values("recipient_id", pos))],
            pos, {"kind": kind, "share_of_failed": share}))
    return out
