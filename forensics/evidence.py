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

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from forensics import schema
from forensics.timeutil import Window

BASELINE_KINDS = ("preceding", "explicit", "pre-onset", "none")
"""How a baseline was chosen: the period of the window's length right before it, a range
given by hand, the part of the window before the detected onset (analysis only), or none."""
SNAPSHOT_TABLES = ("identities", "locks", "topics")
"""Tables that describe a state at collection time rather than events over time."""


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
        """The table ``name``, or an empty one of the right shape when it was not collected."""
        frame = self.tables.get(name)
        return frame if frame is not None else schema.empty(name)

    def has(self, name: str) -> bool:
        return name in self.tables

    def put(self, name: str, frame: pd.DataFrame) -> None:
        """Store a table after checking it against the schema."""
        self.tables[name] = schema.validate(name, frame)

    def row_counts(self) -> dict[str, int]:
        return {name: len(frame) for name, frame in self.tables.items()}

    def between(self, start: pd.Timestamp, end: pd.Timestamp) -> Evidence:
        """The evidence of [start, end): every table with a time column cut to it (messages by
        creation), snapshot tables (:data:`SNAPSHOT_TABLES`) left out, since they say nothing
        about a part of the window. No baseline, no scenario."""
        part = Evidence(Window(start, end), self.profile, sources=self.sources, missing=dict(self.missing))
        lo, hi = start.value, end.value
        for name, frame in self.tables.items():
            column = schema.table(name).time_column
            if name in SNAPSHOT_TABLES or column is None:
                continue
            ns = schema.to_utc(frame[column]).astype(schema.UTC_TS).array.asi8
            part.tables[name] = frame[(ns >= lo) & (ns < hi)].reset_index(drop=True)
        return part
