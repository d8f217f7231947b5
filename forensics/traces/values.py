"""Single values as trace files write them in different ways: times, durations, ids, typed tags.

Every reader returns the value in v1's terms (times and durations in integer microseconds,
ids as hex text, tag values as plain JSON values) or raises :class:`Unreadable`; the
callers turn that into a null and a warning on the span, never a silent 0.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Callable
from typing import Any

import pandas as pd

_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
             "m": 60_000_000_000, "h": 3_600_000_000_000}
_GO_DURATION = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?")


class Unreadable(ValueError):
    """A value of a trace file that cannot be read as what its field holds."""

    def __init__(self, field: str, value: Any) -> None:
        self.field, self.value = field, value
        super().__init__(f"{field}: cannot read {value!r}"[:200])


class Warnings(list):
    """The warnings of one span: :meth:`read` runs a reader and notes what it could not read."""

    def read(self, reader: Callable[..., Any], *args: Any) -> Any:
        try:
            return reader(*args)
        except Unreadable as exc:
            self.append(str(exc))
            return None


def is_number_text(text: str) -> bool:
    """Whether ``text`` is a decimal number (``"1485467191639875"``, ``"72.5"``)."""
    return _NUMBER.fullmatch(text.strip()) is not None


_INT64 = range(-(2**63), 2**63)


def integer(field: str, value: Any) -> int | None:
    """A whole number within int64 written as a number or as decimal text
    (``"1485467191639875"``); None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise Unreadable(field, value)
    if isinstance(value, int) and value in _INT64:
        return value
    if isinstance(value, float) and value.is_integer() and int(value) in _INT64:
        return int(value)
    if isinstance(value, str) and is_number_text(value):
        number = float(value) if any(c in value for c in ".eE") else int(value)
        if float(number).is_integer() and int(number) in _INT64:
            return int(number)
    raise Unreadable(field, value)


def time_us(field: str, value: Any) -> int | None:
    """A point in time as µs since the epoch: a number of µs (v1, Thrift) or RFC 3339 text
    (Jaeger's domain model, ``"2017-01-26T16:46:31.639875139-05:00"``; below µs truncated,
    as Jaeger's own v1 conversion does)."""
    if isinstance(value, str) and not is_number_text(value):
        try:
            ts = pd.Timestamp(value)
        except (ValueError, OverflowError):
            raise Unreadable(field, value) from None
        if ts.tzinfo is None:
            raise Unreadable(field, value)  # RFC 3339 always names the offset
        return ts.value // 1000
    return integer(field, value)


def duration_us(field: str, value: Any, number_unit_ns: int = 1_000) -> int | None:
    """A duration as µs: a number in ``number_unit_ns`` (1000 for v1/Thrift µs, 1 for the domain
    model's nanoseconds) or Go/protobuf duration text (``"5000ns"``, ``"1.5ms"``, ``"0.000005s"``,
    ``"1m30s"``)."""
    if isinstance(value, str) and not is_number_text(value):
        text = value.strip()
        sign = -1 if text.startswith("-") else 1
        parts = _GO_DURATION.findall(text.lstrip("+-"))
        if not parts or "".join(a + u for a, u in parts) != text.lstrip("+-"):
            raise Unreadable(field, value)
        return sign * round(sum(float(a) * _UNITS_NS[u] for a, u in parts)) // 1_000
    number = integer(field, value)
    return None if number is None else number * number_unit_ns // 1_000


def hex_id(field: str, value: Any, width: int) -> str | None:
    """An id as hex text: hex or base64 text pass (normalised later with the others), numbers
    (Thrift's signed 64-bit ids) become two's-complement hex of ``width`` characters."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value & ((1 << (4 * width)) - 1):0{width}x}"
    raise Unreadable(field, value)


def thrift_trace_id(low: Any, high: Any) -> str | None:
    """Thrift's trace id halves (signed 64-bit numbers) as 32 hex characters."""
    lo, hi = hex_id("traceIdLow", low, 16), hex_id("traceIdHigh", high or 0, 16)
    return None if lo is None else f"{hi}{lo}"


_TYPED_FIELDS = ("vStr", "vInt64", "vLong", "vBool", "vFloat64", "vDouble", "vBinary", "vNum")


def typed_value(tag: dict) -> Any:
    """A domain-model or Thrift key-value's value (``vType`` with ``vStr``, ``vInt64``/``vLong``,
    ``vBool``, ``vFloat64``/``vDouble``, ``vBinary`` (base64 -> hex, as Jaeger's v1 JSON writes
    binary) or the older ``vNum``) as a plain JSON value. A missing value of the type is the
    protobuf default (jsonpb leaves defaults out): "", 0, false. Types by name only: the
    model's and Thrift's enums number them differently."""
    kind = str(tag.get("vType") or "STRING").upper()
    key = tag.get("key")
    if kind == "STRING":
        value = tag.get("vStr", "")
        return value if isinstance(value, str) else str(value)
    if kind == "BOOL":
        value = tag.get("vBool", tag.get("vNum", False))
        if isinstance(value, bool):
            return value
        return integer(str(key), value) != 0
    if kind in ("INT64", "LONG"):  # the model's name, Thrift's name
        return integer(str(key), tag.get("vInt64", tag.get("vLong", tag.get("vNum", 0))))
    if kind in ("FLOAT64", "DOUBLE"):
        if "vNum" in tag and not any(f in tag for f in ("vFloat64", "vDouble")):
            bits = integer(str(key), tag["vNum"])  # the older model JSON: the float's IEEE 754 bits
            return struct.unpack("<d", struct.pack("<q", bits))[0]
        value = tag.get("vFloat64", tag.get("vDouble", 0.0))
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        raise Unreadable(str(key), value)
    if kind == "BINARY":
        value = tag.get("vBinary", "")
        try:
            return base64.b64decode(value, validate=True).hex()
        except (binascii.Error, ValueError, TypeError):
            raise Unreadable(str(key), value) from None
    raise Unreadable(f"{key} vType", tag.get("vType"))


def has_typed_value(tag: Any) -> bool:
    """Whether a key-value is written the domain-model/Thrift way (``vType``, ``vStr``, ...)."""
    return isinstance(tag, dict) and ("vType" in tag or any(f in tag for f in _TYPED_FIELDS))
