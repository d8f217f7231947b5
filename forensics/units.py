"""Figures for a reader: every count names what it counts, shares and durations rounded the
way a person says them (4,702 messages, 29.8 %, 1.2 s, 4.2 min), times on the UTC clock.

The toolkit counts different things that are easy to confuse: messages, attempts (a message
retried three times leaves three error spans), log lines (one call logs in the router and
in the connector), DLQ records, lag records. :data:`ERROR_ROW_UNITS` names what one error
row of each evidence table counts; :func:`count` puts a number and its unit together.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

ERROR_ROW_UNITS = {"messages": "FAILED messages", "log_events": "error log lines",
                   "spans": "error spans", "dlq_records": "DLQ records"}
"""What one error row of each evidence table counts (error groups, log errors, error signals);
an error span is one attempt: a message retried three times leaves three."""
SINGULAR = {"messages": "message", "conversations": "conversation", "customers": "customer", "records": "record",
            "lines": "line", "spans": "span", "attempts": "attempt", "answers": "answer", "locks": "lock",
            "samples": "sample", "rows": "row", "deliveries": "delivery", "partitions": "partition"}
"""Plural nouns of the units and their singular (for a count of one)."""


def number(value: Any) -> str:
    """A measured value rounded for reading: whole from 100 on, thousands separated (4,702),
    else 3 significant digits (0.927, 88.4, 0.0004); "unknown" for none/NaN."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "unknown"
    if not math.isfinite(v):
        return "unknown"
    if abs(v) >= 100:
        return f"{round(v):,}"
    text = f"{v:.3g}"
    return text if "e" not in text else f"{v:.6f}".rstrip("0").rstrip(".")


def count(n: Any, unit: str) -> str:
    """``n`` things in words: "4,702 messages", "1 FAILED message", "1 error span (attempt)"."""
    try:
        k = int(n)
    except (TypeError, ValueError):
        return f"an unknown number of {unit}"
    if k == 1:
        return "1 " + re.sub(r"\b(" + "|".join(SINGULAR) + r")\b", lambda m: SINGULAR[m.group(1)], unit, count=2)
    return f"{k:,} {unit}"


def percent(part: Any, whole: Any = 1.0) -> str:
    """``part / whole`` as a percentage with one decimal ("29.8 %"); "< 0.1 %" for a small
    non-zero share; "unknown" without a whole."""
    try:
        p, w = float(part), float(whole)
    except (TypeError, ValueError):
        return "unknown"
    if not w or not math.isfinite(p) or not math.isfinite(w):
        return "unknown"
    share = p / w
    if 0 < share < 0.0005:
        return "< 0.1 %"
    return f"{share * 100:.1f} %".replace(".0 %", " %")


def duration(seconds: Any) -> str:
    """A duration for a reader: "0.8 s", "1.2 s", "5 s", "42 s", "4.2 min", "2 h 5 min"."""
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "unknown"
    if not math.isfinite(s):
        return "unknown"
    s = abs(s)
    if s < 10:
        return f"{s:.1f} s".replace(".0 s", " s")
    if s < 120:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.1f} min".replace(".0 min", " min")
    h, m = divmod(round(s / 60), 60)
    return f"{h} h {m} min" if m else f"{h} h"


def clock(ts: Any, with_date: bool = False) -> str:
    """A UTC time as the reader's clock: "14:25:00 UTC" (with the date when asked)."""
    if ts is None or (not isinstance(ts, str) and pd.isna(ts)):
        return "unknown"
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.strftime("%Y-%m-%d %H:%M:%S UTC" if with_date else "%H:%M:%S UTC")
