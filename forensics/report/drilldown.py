"""Drilling into an incident: the evidence a notebook or the CLI is about, and the message to follow.

:func:`load_evidence` (a bundle, verified, or live sources; scoped to the window and channel),
:func:`describe_evidence`, :func:`pick_message` (the message worth following) and
:func:`about` (the rows that name a message or its conversation).
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from forensics import schema
from forensics.errors import ParameterError
from forensics.evidence import Evidence
from forensics.report.params import EvidenceParams
from forensics.timeutil import Window

# --------------------------------------------------------------------------- loading

def scope(evidence: Evidence, window: Window, channel: str | None = None) -> Evidence:
    """The evidence restricted to ``window`` (rows whose time is unknown are kept) and, when
    given, to one channel (rows of another known channel are dropped; unknown kept)."""
    if window == evidence.window and channel is None:
        return evidence
    tables = {}
    for name, frame in evidence.tables.items():
        keep = pd.Series(True, index=frame.index)
        tcol = schema.table(name).time_column
        if tcol and window != evidence.window:
            t = frame[tcol]
            keep &= t.isna() | ((t >= window.start) & (t < window.end))
        if channel is not None and "channel" in frame.columns:
            keep &= frame["channel"].isna() | frame["channel"].eq(channel)
        tables[name] = frame[keep.to_numpy()].reset_index(drop=True)
    return Evidence(window=window, profile=evidence.profile, tables=tables, sources=evidence.sources,
                    missing=evidence.missing, scenario=evidence.scenario)


def load_evidence(params: EvidenceParams, progress: Callable[[str], None] | None = None) -> Evidence:
    """The evidence a notebook is about, scoped to its channel: the bundle, verified and
    scoped to the window; or the live sources collected over the window, each source that
    fails recorded in ``Evidence.missing`` with its reason (partial evidence, no error)."""
    from forensics.bundle import read_bundle
    from forensics.sources.registry import collect

    if params.bundle is not None:
        evidence = read_bundle(params.bundle, verify=True)
        return scope(evidence, params.window(evidence.window), params.channel)
    if not params.sources:
        raise ParameterError('bundle: expected an evidence bundle path, or sources (e.g. "mongo,kafka") and since '
                             "to collect live")
    evidence, _queries, _custody = collect(list(params.sources), params.live_window(), params.profile,
                                           params.source_options, progress)
    return scope(evidence, evidence.window, params.channel)


def describe_evidence(evidence: Evidence) -> list[str]:
    """What a notebook is looking at, as lines: the window, rows per table, missing sources and why."""
    counts = ", ".join(f"{table} {rows:,}" for table, rows in evidence.row_counts().items()) or "none"
    return ([f"window {evidence.window}", f"tables: {counts}"]
            + [f"missing: {source}: {why}" for source, why in sorted(evidence.missing.items())])


# --------------------------------------------------------------------------- drilling in

STUCK_STATUSES = ("PENDING", "SENT")


def pick_message(messages: pd.DataFrame, message_id: str = "") -> pd.DataFrame:
    """The message to drill into, as one row: ``message_id`` (ParameterError when the evidence
    does not hold it), else the earliest FAILED message, else the earliest stuck one (PENDING,
    SENT), else the earliest. Empty when there are no messages at all."""
    if message_id:
        found = messages[messages["message_id"].eq(message_id).fillna(False).to_numpy(dtype=bool)]
        if found.empty:
            raise ParameterError(f"message_id: {message_id!r} is not among the {len(messages):,} messages "
                                 "of the evidence (window and channel applied)")
        return found.head(1)
    ordered = messages.sort_values("created_at", kind="stable")
    for wanted in (("FAILED",), STUCK_STATUSES):
        hit = ordered[ordered["status"].isin(wanted).fillna(False).to_numpy(dtype=bool)]
        if len(hit):
            return hit.head(1)
    return ordered.head(1)


def about(frame: pd.DataFrame, message_id: str | None, conversation_id: str | None) -> pd.DataFrame:
    """Rows of ``frame`` (DLQ records, log lines, Redis keys, ...) that name the message or the
    conversation, in time order when the table has a time."""
    keep = pd.Series(False, index=frame.index)
    for column, value in (("message_id", message_id), ("conversation_id", conversation_id)):
        if value and column in frame.columns:
            keep |= frame[column].eq(value).fillna(False)
    rows = frame[keep.to_numpy(dtype=bool)]
    time_column = next((c for c in ("timestamp", "start", "sampled_at", "created_at") if c in rows.columns), None)
    return rows.sort_values(time_column, kind="stable") if time_column else rows


# --------------------------------------------------------------------------- what the report says
