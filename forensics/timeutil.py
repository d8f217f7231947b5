"""Time coercion and incident windows.

Chat4All variants store times as BSON dates, ISO 8601 strings, epoch seconds (the
deployed event payloads use decimal seconds) or epoch milliseconds (status-updates).
``coerce_timestamps`` turns any mix of these into ``datetime64[ns, UTC]``; values it cannot
read become NaT, never an exception, so one odd document cannot sink a load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from forensics.errors import WindowError
from forensics.schema import UTC_TS, to_utc

NS = 1_000_000_000
"""Nanoseconds per second: times inside the analysis are int64 ns since the epoch."""
NAT = np.iinfo(np.int64).min
"""The int64 ns of NaT: "no time"."""

# Epoch numbers are told apart by magnitude: seconds until ~year 5138, then milliseconds,
# then microseconds, then nanoseconds.
_MS_FROM = 1e11
_US_FROM = 1e14
_NS_FROM = 1e17


def to_ns(series: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 ns, NaT as NAT."""
    if len(series) == 0:
        return np.empty(0, dtype=np.int64)
    return to_utc(series).astype(UTC_TS).array.asi8.copy()


def _epoch_to_ns(x: np.ndarray) -> np.ndarray:
    """Epoch numbers of any unit (seconds/ms/us/ns by magnitude) to int64 ns (NaT where unreadable).

    Sub-nanosecond float noise is avoided by rounding to whole microseconds in float and
    scaling to nanoseconds in integers (float64 cannot hold 1.7e18 ns exactly).
    """
    x = np.asarray(x, dtype="float64")
    a = np.abs(x)
    to_us = np.where(a >= _US_FROM, 1e-3, np.where(a >= _MS_FROM, 1e3, 1e6))
    ok = np.isfinite(x) & (a < 9.2e18)
    out = np.full(x.shape, NAT, dtype="int64")
    is_ns = ok & (a >= _NS_FROM)
    out[is_ns] = x[is_ns].astype("int64")
    rest = ok & ~is_ns
    out[rest] = np.round(x[rest] * to_us[rest]).astype("int64") * 1000
    return out


def coerce_timestamps(values: pd.Series | list | np.ndarray) -> pd.Series:
    """Coerce datetimes, ISO strings, epoch seconds/ms/us/ns (numbers or numeric strings) to UTC.

    Naive datetimes and offset-less ISO strings are taken as UTC (BSON dates are UTC).
    Unreadable values become NaT.
    """
    s = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    index = s.index
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        return s.dt.tz_convert("UTC").astype(UTC_TS)
    if pd.api.types.is_datetime64_dtype(s.dtype):
        return s.dt.tz_localize("UTC").astype(UTC_TS)
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        ns = _epoch_to_ns(s.astype("float64").to_numpy())
        return _from_ns(ns, index)
    out = pd.Series(pd.NaT, index=index, dtype=UTC_TS)
    if s.empty:
        return out
    obj = s.astype(object)
    is_num = obj.map(lambda v: isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool))
    if is_num.any():
        ns = _epoch_to_ns(obj[is_num].astype("float64").to_numpy())
        out[is_num] = _from_ns(ns, obj[is_num].index)
    is_dt = obj.map(lambda v: isinstance(v, (datetime, pd.Timestamp, np.datetime64)))
    if is_dt.any():
        out[is_dt] = pd.to_datetime(obj[is_dt].map(_as_utc_datetime), utc=True)
    is_str = obj.map(lambda v: isinstance(v, str))
    if is_str.any():
        strs = obj[is_str].str.strip()
        numeric = pd.to_numeric(strs, errors="coerce")
        num_mask = numeric.notna()
        if num_mask.any():
            out[numeric[num_mask].index] = _from_ns(
                _epoch_to_ns(numeric[num_mask].to_numpy(dtype="float64")), numeric[num_mask].index
            )
        rest = strs[~num_mask]
        if len(rest):
            out[rest.index] = pd.to_datetime(rest, utc=True, errors="coerce", format="ISO8601").where(
                lambda x: x.notna(), pd.to_datetime(rest, utc=True, errors="coerce", format="mixed")
            )
    return out.astype(UTC_TS)


def _as_utc_datetime(v):
    ts = pd.Timestamp(v)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _from_ns(ns: np.ndarray, index) -> pd.Series:
    return pd.Series(ns.view("datetime64[ns]"), index=index).dt.tz_localize("UTC").astype(UTC_TS)


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*(?:ago)?\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "sec": "seconds", "m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(value: str | datetime | pd.Timestamp | None, *, now: pd.Timestamp | None = None) -> pd.Timestamp:
    """Parse an ISO 8601 time, ``now``, or a relative time like ``2h`` (= 2 hours ago), to UTC."""
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    if value is None:
        raise WindowError("no time given")
    text = str(value).strip()
    try:
        if isinstance(value, (datetime, pd.Timestamp)):
            ts = _as_utc_datetime(value)
        elif text.lower() == "now":
            ts = now
        elif m := _RELATIVE.match(text):
            ts = now - timedelta(**{_UNITS[m.group(2).lower()]: float(m.group(1))})
        else:
            ts = pd.Timestamp(text)
            if ts is pd.NaT:
                raise WindowError(f"cannot parse time {text!r}")
            ts = _as_utc_datetime(ts)
        # every time of the toolkit is datetime64[ns]: years 1677 to 2262
        return ts.as_unit("ns")
    except (OverflowError, pd.errors.OutOfBoundsDatetime) as exc:
        raise WindowError(f"time {text[:60]!r} is out of range (times run from 1677 to 2262)") from exc
    except (ValueError, TypeError) as exc:
        raise WindowError(f"cannot parse time {text[:60]!r}: use ISO 8601 (2025-12-03T14:00:00Z) or relative (2h)"
                          ) from exc


@dataclass(frozen=True)
class Window:
    """An incident window [start, end) in UTC."""

    start: pd.Timestamp
    end: pd.Timestamp

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise WindowError(f"window end {iso(self.end)} is not after its start {iso(self.start)}")

    @classmethod
    def parse(cls, since, until=None, *, now: pd.Timestamp | None = None) -> Window:
        """Window from two times (ISO 8601, relative like ``2h``, or datetimes); until defaults to now."""
        now = now if now is not None else pd.Timestamp.now(tz="UTC")
        return cls(parse_time(since, now=now), parse_time(until if until is not None else "now", now=now))

    @property
    def duration(self) -> pd.Timedelta:
        return self.end - self.start

    def to_dict(self) -> dict[str, str]:
        return {"start": iso(self.start), "end": iso(self.end)}

    def __str__(self) -> str:
        return f"{iso(self.start)} {iso(self.end)}"


def iso(ts: pd.Timestamp | datetime | None) -> str | None:
    """ISO 8601 UTC with a Z suffix, millisecond precision."""
    if ts is None or ts is pd.NaT:
        return None
    t = _as_utc_datetime(ts)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def utcnow() -> pd.Timestamp:
    return pd.Timestamp(datetime.now(UTC))
