"""MongoDB query documents built from literal parameters: every caller value an operand, never an operator.

Ids must be ``str`` and only ever appear as the operand of ``$eq``/``$in``; times may be BSON
dates, epoch seconds, milliseconds or ISO strings and :func:`time_range` covers all four;
where the profile lists several paths for one field the filter accepts any of them
(:func:`any_path_in`, :func:`first_of`).
"""


from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from bson import json_util

from forensics.errors import ParameterError
from forensics.timeutil import Window, iso, parse_time

# Epoch numbers are told apart by magnitude, exactly as forensics.timeutil does.
_MS_FROM, _US_FROM, _NS_FROM = 1e11, 1e14, 1e17
_ISO_MIN, _ISO_MAX = "0000-01-01", "9999-12-31"



# ---- literal parameters -------------------------------------------------------------

def literal_id(value: Any, what: str = "message id") -> str:
    """``value`` if it is a non-empty ``str``; anything else is refused.

    A dict (``{"$ne": None}``), a list, a number or None could change what a query means
    or match by accident; such values are never sent to the server.
    """
    if not isinstance(value, str):
        raise ParameterError(f"{what} must be a string, got {type(value).__name__} {value!r:.80}: "
                             "ids are matched literally, never as query operators")
    if not value:
        raise ParameterError(f"{what} is empty")
    return value


def literal_ids(values: Any, what: str = "message id") -> list[str]:
    """A sequence of ids (list, tuple, Series, array) -> unique ``str`` ids in first-seen order."""
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Sequence | pd.Series | np.ndarray):
        raise ParameterError(f"{what}s must be a list of strings, got {type(values).__name__}")
    return list(dict.fromkeys(literal_id(v, what) for v in values))


def spellings(value: str) -> list[str]:
    """The spellings a status or channel is stored with across variants (PENDING, pending, Pending)."""
    return list(dict.fromkeys([value, value.upper(), value.lower(), value.capitalize()]))


def any_path_in(paths: Sequence[str], values: Sequence[str]) -> dict:
    """Filter: some path of ``paths`` holds one of ``values`` (``$in``: operands are literals)."""
    clauses = [{p: {"$in": list(values)}} for p in paths]
    return clauses[0] if len(clauses) == 1 else {"$or": clauses}


def all_of(*filters: dict | None) -> dict:
    parts = [f for f in filters if f]
    return {} if not parts else parts[0] if len(parts) == 1 else {"$and": parts}


def _ts(value) -> pd.Timestamp | None:
    return None if value is None else parse_time(value)


def time_range(paths: Sequence[str], start=None, end=None) -> dict:
    """Filter: some path of ``paths`` holds a time in [start, end), whatever its storage.

    MongoDB compares values of one BSON type only, so one clause per representation:
    BSON dates; epoch seconds (< 1e11), epoch milliseconds (< 1e14); ISO 8601 strings in UTC
    with ``T`` or a space between date and time (compared as text, so an ISO string with a
    non-UTC offset or a numeric string is not selected by the server: rows that are
    returned are checked again after normalisation). An open bound still bounds the type.
    """
    s, e = _ts(start), _ts(end)
    bounds: list[tuple[Any, Any]] = [
        (s.to_pydatetime() if s is not None else None, e.to_pydatetime() if e is not None else None),
        (s.timestamp() if s is not None else None, e.timestamp() if e is not None else _MS_FROM),
        (s.timestamp() * 1000 if s is not None else _MS_FROM, e.timestamp() * 1000 if e is not None else _US_FROM),
    ]
    for sep in ("T", " "):
        lo = iso(s)[:-1].replace("T", sep).removesuffix(".000") if s is not None else _ISO_MIN
        hi = iso(e)[:-1].replace("T", sep).removesuffix(".000") if e is not None else _ISO_MAX
        bounds.append((lo, hi))
    clauses = []
    for path in paths:
        for lo, hi in bounds:
            cond = {}
            if lo is not None:
                cond["$gte"] = lo
            if hi is not None:
                cond["$lt"] = hi
            if not cond:  # a date range open at both ends: any date
                cond = {"$type": "date"}
            clauses.append({path: cond})
    return {"$or": clauses}


def times_before(paths: Sequence[str], cutoff) -> dict:
    """Filter: every path of ``paths`` is absent or holds a time before ``cutoff``, and one holds one."""
    before = [time_range([p], None, cutoff) for p in paths]
    each = [{"$or": [{p: None}, *b["$or"]]} for p, b in zip(paths, before, strict=True)]
    return {"$and": [*each, {"$or": [c for b in before for c in b["$or"]]}]}


def first_of(paths: Sequence[str]) -> dict:
    """Aggregation expression: the first of ``paths`` that holds a value (``$ifNull``), else null."""
    return {"$ifNull": [*(f"${p}" for p in paths), None]}


def as_date(path: str) -> dict:
    """Aggregation expression: the time in ``path`` as a BSON date, whatever its storage, else null.

    Numbers are epoch seconds, milliseconds, microseconds or nanoseconds by magnitude (as
    :func:`forensics.timeutil.coerce_timestamps`); strings go through ``$dateFromString``.
    """
    v, t = f"${path}", {"$type": f"${path}"}
    number = {"$switch": {"branches": [
        {"case": {"$lt": [{"$abs": v}, _MS_FROM]}, "then": {"$multiply": [v, 1000]}},
        {"case": {"$lt": [{"$abs": v}, _US_FROM]}, "then": v},
        {"case": {"$lt": [{"$abs": v}, _NS_FROM]}, "then": {"$divide": [v, 1000]}},
    ], "default": {"$divide": [v, 1_000_000]}}}
    return {"$switch": {"branches": [
        {"case": {"$eq": [t, "date"]}, "then": v},
        {"case": {"$in": [t, ["double", "int", "long", "decimal"]]}, "then": {"$toDate": {"$toLong": number}}},
        {"case": {"$eq": [t, "string"]}, "then": {"$dateFromString": {"dateString": v, "onError": None}}},
    ], "default": None}}


def first_date_of(paths: Sequence[str]) -> dict:
    """Aggregation expression: the first of ``paths`` readable as a time, as a BSON date."""
    return {"$ifNull": [*(as_date(p) for p in paths), None]}


def path_supplying(paths: Sequence[str]) -> dict:
    """Aggregation expression: which of ``paths`` supplies the value ``first_of(paths)`` takes."""
    return {"$switch": {"branches": [{"case": {"$ne": [{"$ifNull": [f"${p}", None]}, None]}, "then": p}
                                     for p in paths], "default": None}}


def date_bucket(bucket: str | pd.Timedelta) -> tuple[str, int]:
    """A bucket width -> ``$dateTrunc`` (unit, binSize); whole seconds, at most whole days."""
    try:
        width = pd.Timedelta(bucket)
    except (ValueError, TypeError) as exc:
        raise ParameterError(f"bucket {bucket!r} is not a duration (e.g. 1min, 30s, 1h)") from exc
    ms = int(width / pd.Timedelta("1ms"))
    if ms <= 0 or ms % 1000:
        raise ParameterError(f"bucket {bucket!r} must be a positive whole number of seconds")
    for unit, size in (("day", 86_400_000), ("hour", 3_600_000), ("minute", 60_000), ("second", 1000)):
        if ms % size == 0:
            return unit, ms // size
    raise AssertionError("unreachable: ms is a multiple of 1000")


def query_json(value: Any) -> Any:
    """A query (filter, pipeline) as plain JSON (dates as {"$date": ISO}), for bundles and reports."""
    return json.loads(json_util.dumps(value, json_options=json_util.RELAXED_JSON_OPTIONS))


def mark_truncated(frame: pd.DataFrame, cap: int, what: str) -> str:
    note = f"{what}: truncated at {cap:,} rows (Limits.max_rows or limit); the rest was not read"
    frame.attrs.update({"truncated": True, "truncated_at": cap})
    frame.attrs.setdefault("warnings", []).append(note)
    return note


# ---- frames read ----------------------------------------------------------------------------

def _capped(frame: pd.DataFrame, cap: int, what: str, warnings_: list[str]) -> pd.DataFrame:
    """Chunked reads: cut the combined frame at ``cap`` and mark it."""
    if len(frame) <= cap:
        return frame
    attrs = frame.attrs
    frame = frame.iloc[:cap].reset_index(drop=True)
    frame.attrs = {k: v for k, v in attrs.items() if k != "warnings"}
    warnings_.append(mark_truncated(frame, cap, what))
    return frame


def _keep(frame: pd.DataFrame, mask: pd.Series) -> pd.DataFrame:
    attrs = frame.attrs
    out = frame[mask.fillna(False).astype(bool)].reset_index(drop=True)
    out.attrs = attrs
    return out


def _sorted(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    attrs = frame.attrs
    out = frame.sort_values(by, kind="stable", na_position="last").reset_index(drop=True)
    out.attrs = attrs
    return out


def _within(times: pd.Series, window: Window) -> pd.Series:
    return ((times >= window.start) & (times < window.end)).fillna(False).astype(bool)


def _with_attrs(out: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    out.attrs = dict(rows.attrs)
    return out
