"""Drilling into an incident: the evidence a notebook or the CLI is about, and the message to follow.

:func:`load_evidence` (a bundle, verified, or live sources; scoped to the window and channel),
:func:`describe_evidence`, :func:`pick_message` (the message worth following), :func:`about`
(the rows that name a message or its conversation) and :func:`message_story` (one message
told as text lines). The CLI's ``forensics message`` and every notebook use these.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from forensics.catalog import check_platform_limits
from forensics.errors import ParameterError
from forensics.evidence import Evidence, clamp_window
from forensics.report.params import EvidenceParams
from forensics.scan import rows_in_scope
from forensics.timeutil import Window, iso

if TYPE_CHECKING:
    from forensics.report.pushdown import LivePlan

# --------------------------------------------------------------------------- loading

def scope(evidence: Evidence, window: Window, channel: str | None = None) -> Evidence:
    """The evidence restricted to ``window`` (rows whose time is unknown are kept) and, when
    given, to one channel (rows of another known channel are dropped; unknown kept); its
    baseline keeps its own window and is scoped to the same channel."""
    if window == evidence.window and channel is None:
        return evidence
    cut = window if window != evidence.window else None
    tables = {name: rows_in_scope(name, frame, cut, channel) for name, frame in evidence.tables.items()}
    baseline = scope(evidence.baseline, evidence.baseline.window, channel) if evidence.baseline is not None else None
    stored = {name: replace(s, rows=None, window=window if window != evidence.window else s.window,
                            channel=channel if channel is not None else s.channel)
              for name, s in evidence.stored.items()}
    return replace(evidence, window=window, tables=tables, baseline=baseline, stored=stored)


def load_evidence(params: EvidenceParams, progress: Callable[[str], None] | None = None, *,
                  lean: bool = False, plan: LivePlan | None = None) -> Evidence:
    """The evidence a notebook is about, scoped to its channel: the bundle, verified and
    scoped to the window; or the live sources collected over the window, each source that
    fails recorded in ``Evidence.missing`` with its reason (partial evidence, no error), with
    the baseline period ``params.baseline`` collected too. ``lean``: a bundle read for the
    analysis only (``read_bundle(lean=True)``: memory flat in the big tables, texts and
    payloads left on disk); drill-down notebooks read it whole. ``plan``
    (:func:`forensics.report.pushdown.live_plan`): the live window fixed once and, when it
    is big, the live evidence streamed into a bundle on disk and read back as a bundle is."""
    from forensics.bundle import read_bundle
    from forensics.sources.registry import collect, collect_baseline

    if params.bundle is not None:
        evidence = read_bundle(params.bundle, verify=True, lean=lean)
        return clamp_window(scope(evidence, params.window(evidence.window), params.channel))
    if not params.sources:
        raise ParameterError('bundle: expected an evidence bundle path, or sources (e.g. "mongo,kafka") and since '
                             "to collect live")
    window = plan.window if plan is not None else params.live_window()
    if plan is not None and plan.to_disk:
        evidence = read_bundle(collected_to_disk(params, window, progress), verify=True, lean=lean)
        return clamp_window(scope(evidence, evidence.window, params.channel))
    evidence, _queries, _custody = collect(list(params.sources), window, params.profile,
                                           params.source_options, progress)
    collect_baseline(evidence, list(params.sources), params.baseline, params.source_options, progress)
    return clamp_window(scope(evidence, evidence.window, params.channel))


def collected_to_disk(params: EvidenceParams, window: Window, progress: Callable[[str], None] | None = None) -> Path:
    """The live sources over ``window`` and the baseline streamed into a bundle in a temporary
    directory (removed when the process exits), slice by slice as ``forensics collect`` does:
    memory holds one slice, not the window."""
    from forensics.bundle import BundleWriter
    from forensics.sources.registry import collect_bundle

    home = Path(tempfile.mkdtemp(prefix="forensics-live-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    with BundleWriter(home / "bundle", progress=progress) as writer:
        collect_bundle(writer, list(params.sources), window, params.profile, params.source_options, progress,
                       baseline=params.baseline)
    return writer.path


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


# --------------------------------------------------------------------------- one message's story

def message_story(message, events, files=None, *, as_of=None, identities=None, locks=None) -> list[str]:
    """One message's story as text lines: what it is, its status history with the time
    between transitions, errors, retries, attached files against the platform limits, and
    the recipient's identity and the Redis keys steering its delivery when known.

    ``message`` is one ``messages`` row (a Series), ``events`` its ``status_events`` rows,
    ``files`` the rows of ``MongoSource.file_checks`` (None: judged from the row alone).
    ``as_of`` is the time a last non-final status is aged against (now, or a bundle's end).
    ``identities`` / ``locks``: rows of those tables, or a string saying why they are absent.
    """
    def val(v, fmt="{}"):
        return "-" if v is None or v is pd.NA or (not isinstance(v, str) and pd.isna(v)) else fmt.format(v)

    def secs(td) -> str:
        return "-" if pd.isna(td) else f"{td.total_seconds():.3f} s"

    def yes(v) -> bool:
        return v is not None and v is not pd.NA and bool(v)

    def age(td) -> str:
        s = int(td.total_seconds())
        parts = [(s // 86400, "d"), (s % 86400 // 3600, "h"), (s % 3600 // 60, "min"), (s % 60, "s")]
        return " ".join(f"{n} {u}" for n, u in parts if n) or secs(td)

    m = message
    lines = [f"message {m['message_id']}",
             f"  conversation {val(m['conversation_id'])}   channel {val(m['channel'])}   status {val(m['status'])}",
             f"  content {val(m['content_type'])}, {val(m['content_length'], '{:,} chars')}   "
             f"recipients {val(m['recipient_count'])}   created {val(iso(m['created_at']) if pd.notna(m['created_at']) else None)}"
             f"   updated {val(iso(m['updated_at']) if pd.notna(m['updated_at']) else None)}",
             f"  retries {val(m['retry_count'])}"
             + (f"   error ({val(m['error_field'])}): {m['error_message']}" if pd.notna(m["error_message"]) else ""),
             f"  platform message id {val(m['platform_message_id'])}   "
             f"source {val(m['source'])} {val(m['source_object'])}/{val(m['source_ref'])}"]
    checks = files if files is not None and len(files) else check_platform_limits(m.to_frame().T)
    for _, f in checks.iterrows():
        if yes(f.get("text_over_limit")):
            lines.append(f"  TEXT OVER LIMIT: {f['content_length']:,} chars > {f['text_limit_chars']:,} on {f['channel']}")
        if pd.notna(f.get("file_id")) or pd.notna(f.get("file_size")):
            size = val(f.get("file_size"), "{:,} bytes")
            line = f"  file {val(f.get('file_id'))} {val(f.get('filename'))} {val(f.get('mime_type'))} {size}"
            if yes(f.get("file_missing")):
                line += "   NOT IN THE FILES COLLECTION (expired after 24 h, or never stored)"
            if yes(f.get("file_over_limit")):
                line += f"   OVER the {f['channel']} limit of {f['file_limit_bytes']:,} bytes"
            lines.append(line)
    if identities is not None:
        if isinstance(identities, str):
            lines.append(f"  recipient identity: {identities}")
        else:
            mine = identities[identities["platform_user_id"] == m["recipient_id"]]
            if mine.empty:
                lines.append(f"  recipient {val(m['recipient_id'])}: NO external identity (runbook R3.1)")
            for _, i in mine.iterrows():
                lines.append(f"  recipient {i['platform_user_id']} on {i['platform']}: user {val(i['user_id'])}, "
                             f"verified {val(i['verified'])}, format valid {val(i['format_valid'])}")
    if locks is not None:
        if isinstance(locks, str):
            lines.append(f"  redis keys: {locks}")
        elif locks.empty:
            lines.append("  redis keys: none for this message or its conversation")
        for _, k in (locks.iterrows() if not isinstance(locks, str) else ()):
            ttl = "no expiry" if pd.isna(k["ttl_s"]) else f"ttl {k['ttl_s']:,.0f} s"
            note = "  (a manual replay is dropped while it exists)" if k["kind"] == "processed" else ""
            lines.append(f"  redis {k['kind']}: {k['key']} {ttl}{note}")
    ev = events.sort_values(["timestamp", "derived"], ascending=[True, False], kind="stable")
    lines.append("")
    if ev.empty:
        lines.append("status history: none (no history rows and no creation time)")
        return lines
    first, last = ev.iloc[0], ev.iloc[-1]
    lines.append(f"status history: {len(ev)} transition(s), {first['new_status']} -> {last['new_status']} "
                 f"in {secs(last['timestamp'] - first['timestamp'])}" if len(ev) > 1 else
                 f"status history: {first['new_status']} only")
    lines.append(f"  {'time':24s}  {'status':9s}  {'after prev':>12s}  {'since first':>12s}  {'by':16s}  note")
    prev = None
    for _, e in ev.iterrows():
        notes = []
        if e["derived"]:
            notes.append("derived from the creation time (no history row)")
        if pd.notna(e["old_status"]) and prev is not None and e["old_status"] != prev["new_status"]:
            notes.append(f"recorded old status {e['old_status']} differs from the previous {prev['new_status']}")
        if pd.notna(e["error_message"]):
            notes.append(f"error: {e['error_message']}")
        after = secs(e["timestamp"] - prev["timestamp"]) if prev is not None else "-"
        lines.append(f"  {iso(e['timestamp']):24s}  {e['new_status']:9s}  {after:>12s}  "
                     f"{secs(e['timestamp'] - first['timestamp']):>12s}  {val(e['updated_by']):16s}  {'; '.join(notes)}")
        prev = e
    if as_of is not None and last["new_status"] in ("PENDING", "SENT"):
        lines.append(f"  still {last['new_status']} {age(as_of - last['timestamp'])} after its last transition "
                     f"(as of {iso(as_of)})")
    return lines
