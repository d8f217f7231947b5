"""The unit every step passes along: one incident's evidence tables plus what describes them.

Sources fill an :class:`Evidence`; bundles write and read it; analysis and reports
consume it. Tables are always in the canonical schema (:mod:`forensics.schema`); a table
that was not collected is absent from ``tables`` and its source is named in ``missing``,
so a report can say exactly what it could not see.

A baseline is an :class:`Evidence` of its own (the same canonical tables over a normal
period, usually the one right before the window) held in ``baseline``; ``baseline_kind``
says how it was chosen (:data:`BASELINE_KINDS`). The analysis compares every finding of the
window with the same measure over the baseline (:mod:`forensics.analysis.change`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from forensics import schema
from forensics.config import cache_dir
from forensics.credentials import FINGERPRINT_HEX, SecretFingerprint, mask_frame_secrets
from forensics.timeutil import Window, iso

EXTENT_MARGIN = pd.Timedelta(hours=1)
"""How far the analysed window may reach beyond the first and last evidence row (the time
before the first row and after the last still counts: a silence, a message stuck since)."""

BASELINE_KINDS = ("preceding", "explicit", "pre-onset", "none")
"""How a baseline was chosen: the period of the window's length right before it, a range
given by hand, the part of the window before the detected onset (analysis only), or none."""
SNAPSHOT_TABLES = ("identities", "locks", "topics")
"""Tables that describe a state at collection time rather than events over time."""

STORED_TABLES = ("status_events", "locks")
"""Tables an analysis reads through :mod:`forensics.scan` and may therefore leave on disk."""
DEFERRED_TABLES = ("messages",)
"""Tables a lean bundle read leaves on disk until first asked for (``Evidence.table``), so the
analysis decides when each period's messages are in memory: a baseline's detectors run and
let its messages go before the window's are read (:mod:`forensics.analysis.change`)."""
UNREAD_COLUMNS = {"messages": ("content", "sender_id", "platform_message_id", "file_id", "content_type", "error_field",
                               "recipient_count"),
                  "dlq_records": ("payload", "headers"), "identities": ("user_id", "display_name")}
"""Columns no analysis reads (texts, payloads): a lean read of a bundle leaves them on disk."""


@dataclass(frozen=True)
class StoredTable:
    """A table left in a bundle's Parquet file, scoped to a window and a channel (None: all)."""

    name: str
    path: Path
    rows: int | None
    """Rows in scope when known (the manifest's count of an unscoped table)."""
    window: Window | None = None
    channel: str | None = None
    lean: tuple[str, ...] | None = None
    """A table of :data:`DEFERRED_TABLES` read by a lean bundle read: read back the same way,
    leaving these columns unread (null); None: a table the analysis asks through DuckDB."""


@dataclass
class Evidence:
    window: Window
    profile: str = "runbook"
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per source: masked connection string or file, parameters/query, status (ok, failed), error."""
    missing: dict[str, str] = field(default_factory=dict)
    """Source name -> why its evidence is absent (not configured, unreachable, ...)."""
    scenario: dict[str, Any] | None = None
    """For simulated incidents: name, seed, messages, root_cause, description."""
    baseline: Evidence | None = None
    """The same tables over a normal period to compare the window with (None: not collected)."""
    baseline_kind: str = "none"
    """One of BASELINE_KINDS."""
    stored: dict[str, StoredTable] = field(default_factory=dict)
    """Tables left on disk (a large bundle's ``status_events``, ``locks``): the analysis asks
    :mod:`forensics.scan` about them; ``table(name)`` reads one whole on first use."""
    unread: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Table -> columns a lean bundle read left on disk (null here): read the bundle again for them."""
    read_from: dict[str, StoredTable] = field(default_factory=dict, repr=False, compare=False)
    """Stored tables read whole by ``table(name)``: where each came from, so ``release`` can
    let it go again."""
    window_note: str | None = None
    """One sentence when the analysed window is not the one asked for (:func:`clamp_window`)."""
    secrets: dict[str, Any] | None = None
    """How secrets in the tables were treated (:func:`mask_evidence_secrets`): None = not
    looked at; {"masked": True, "fingerprint", "key_id", "cells"}; or {"masked": False, "kept_raw"}."""

    @classmethod
    def from_records(cls, window: Window, scenario: dict[str, Any] | None = None, *, source: str = "crafted",
                     **tables: Any) -> Evidence:
        """Evidence crafted by hand (tests, what-if questions in a notebook): each keyword is a
        table name with its rows (list of dicts or a DataFrame), conformed to the schema;
        rows without a ``source`` are marked ``source``."""
        ev = cls(window, scenario=scenario)
        for name, rows in tables.items():
            df = pd.DataFrame(rows)
            if "source" not in df.columns:
                df["source"] = source
            ev.put(name, schema.conform(name, df))
        return ev

    def table(self, name: str) -> pd.DataFrame:
        """The table ``name``, or an empty one of the right shape when it was not collected.
        A stored table is read whole here (and kept): drill-down, not whole-window analysis."""
        frame = self.tables.get(name)
        if frame is None and name in self.stored:
            from forensics.scan import materialise

            stored = self.stored[name]
            frame = self.tables[name] = materialise(stored)
            del self.stored[name]
            self.read_from[name] = stored
        return frame if frame is not None else schema.empty(name)

    def release(self, name: str) -> bool:
        """Let a table read from its file by ``table(name)`` go (it is stored again, read anew
        when asked); False, and nothing changes, for a table that has no file to go back to."""
        stored = self.read_from.pop(name, None)
        if stored is None:
            return False
        self.tables.pop(name, None)
        self.stored[name] = stored
        return True

    def has(self, name: str) -> bool:
        return name in self.tables or name in self.stored

    def put(self, name: str, frame: pd.DataFrame) -> None:
        """Store a table after checking it against the schema."""
        self.stored.pop(name, None)
        self.tables[name] = schema.validate(name, frame)

    def row_counts(self) -> dict[str, int]:
        from forensics.scan import count

        stored = {name: s.rows if s.rows is not None else count(self, name) for name, s in self.stored.items()}
        return {**{name: len(frame) for name, frame in self.tables.items()}, **stored}

    def between(self, start: pd.Timestamp, end: pd.Timestamp) -> Evidence:
        """The evidence of [start, end): every table with a time column cut to it (messages by
        creation), snapshot tables (:data:`SNAPSHOT_TABLES`) left out, since they say nothing
        about a part of the window. No baseline, no scenario. A stored table stays stored,
        scoped to the part."""
        part = Evidence(Window(start, end), self.profile, sources=self.sources, missing=dict(self.missing),
                        unread=dict(self.unread))
        for name, frame in self.tables.items():
            rows = rows_between(name, frame, start, end)
            if rows is not None:
                part.tables[name] = rows
        for name, stored in self.stored.items():
            if name not in SNAPSHOT_TABLES and schema.table(name).time_column is not None:
                part.stored[name] = replace(stored, rows=None, window=part.window)
        return part

    def time_extent(self) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """The first and last time, within the window, of any row of a timed table (each
        table's schema time column; a deferred table asked of its file); None when no row has
        a time in the window."""
        from forensics.scan import stored_columns

        lo = hi = None
        spans = [_extent(frame, schema.table(name).time_column, self.window)
                 for name, frame in self.tables.items() if name in schema.TABLES]
        for stored in self.stored.values():
            column = schema.table(stored.name).time_column
            if stored.lean is not None and column:
                spans.append(_extent(stored_columns(stored, [column]), column, self.window))
        for span in spans:
            if span is not None:
                first, last = span
                lo = first if lo is None or first < lo else lo
                hi = last if hi is None or last > hi else hi
        return None if lo is None else (lo, hi)


def _extent(frame: pd.DataFrame, column: str | None, window: Window) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """The first and last ``column`` time of ``frame`` within ``window`` (None: none)."""
    if not column or column not in frame.columns or not len(frame):
        return None
    t = frame[column]
    t = t[(t >= window.start) & (t <= window.end)]
    return (t.min(), t.max()) if len(t) and t.notna().any() else None


def period_table(name: str) -> bool:
    """Whether table ``name`` holds rows of a period (a time column, not a snapshot), so that a
    part of a window has rows of its own."""
    return name not in SNAPSHOT_TABLES and schema.table(name).time_column is not None


def rows_between(name: str, frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame | None:
    """The rows of table ``name`` timed in [start, end) (messages by creation); None for a table
    that says nothing about a part of a window (:data:`SNAPSHOT_TABLES`, no time column)."""
    if not period_table(name):
        return None
    ns = schema.to_utc(frame[schema.table(name).time_column]).astype(schema.UTC_TS).array.asi8
    return frame[(ns >= start.value) & (ns < end.value)].reset_index(drop=True)


def secret_fingerprint() -> SecretFingerprint:
    """The keyed fingerprint bundles mask secrets with (FORENSICS_FINGERPRINT_KEY, else a key
    created once in the cache directory)."""
    return SecretFingerprint.default(cache_dir() / "fingerprint.key")


def masked_secrets(fingerprint: SecretFingerprint, cells: int) -> dict[str, Any]:
    """``Evidence.secrets`` of evidence whose text was masked with ``fingerprint`` (``cells`` masked)."""
    return {"masked": True, "fingerprint": f"HMAC-SHA256, first {FINGERPRINT_HEX} hex digits, as ***#<fingerprint>",
            "key_id": fingerprint.key_id, "cells": cells}


def mask_evidence_secrets(evidence: Evidence, fingerprint: SecretFingerprint | None = None) -> Evidence:
    """The evidence with every secret in its text masked by a keyed fingerprint (bot tokens,
    token/key query parameters, Authorization headers, URI passwords: forensics.credentials),
    and ``secrets`` recording how; unchanged when already masked. What collection and bundle
    writing do by default, so a secret never reaches a bundle or a report."""
    if (evidence.secrets or {}).get("masked"):
        return evidence
    fingerprint = fingerprint or secret_fingerprint()
    tables, cells = {}, 0
    for name, frame in evidence.tables.items():
        tables[name], n = mask_frame_secrets(frame, fingerprint)
        cells += n
    baseline = evidence.baseline
    if baseline is not None:
        baseline = mask_evidence_secrets(baseline, fingerprint)
        cells += baseline.secrets.get("cells", 0)
    return replace(evidence, tables=tables, baseline=baseline, secrets=masked_secrets(fingerprint, cells))


def keep_secrets_raw(evidence: Evidence, why: str) -> Evidence:
    """The evidence marked as deliberately unmasked (a sealed internal bundle); ``why`` is recorded."""
    return replace(evidence, secrets={"masked": False, "kept_raw": why})


def clamp_window(evidence: Evidence, margin: pd.Timedelta = EXTENT_MARGIN) -> Evidence:
    """The evidence with its window cut to the evidence's own time extent (plus ``margin``
    either side), and ``window_note`` saying so; the same evidence when the window already fits.

    What the analysis builds per unit of time (alert replay steps, per-minute counts) then
    follows the evidence, not a window someone typed or a manifest claims: ``--until 2099``
    or a received bundle whose window spans a century costs what its rows cost. A window with
    no evidence row in it keeps its bounds and gets a note saying nothing can be concluded.
    """
    if evidence.baseline is not None:  # a baseline's window is as untrusted as the incident's
        baseline = clamp_window(evidence.baseline, margin)
        if baseline is not evidence.baseline:  # else the same evidence: what was asked of it is kept
            evidence = replace(evidence, baseline=baseline)
    w = evidence.window
    extent = evidence.time_extent()
    if extent is None:
        if evidence.window_note:
            return evidence
        return replace(evidence, window_note=f"No evidence in the window {_span(w.start, w.end)}: no row of any "
                                             "timed table falls inside it, so nothing can be concluded about it.")
    first, last = extent
    start, end = max(w.start, first - margin), min(w.end, last + margin)
    if (start, end) == (w.start, w.end):
        return evidence
    clamped = Window(start, end)  # start <= first <= last <= end, and the window is not empty
    note = (f"Asked for {_span(w.start, w.end)}; the evidence covers {_span(first, last)}, so the analysis uses "
            f"{_span(clamped.start, clamped.end)} (the evidence and up to {margin / pd.Timedelta(minutes=1):g} min "
            "either side).")
    return replace(evidence, window=clamped, window_note=note)


def _span(start: pd.Timestamp, end: pd.Timestamp) -> str:
    return f"{iso(start)} to {iso(end)}"
