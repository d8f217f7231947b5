"""The native trace reader (native/trace_reader, a Rust extension) behind :func:`read_trace_file`.

Decoding a 100k-span UI download into Python objects and freeing them costs more than
everything the spans table is made of afterwards. The extension reads the bytes of v1
documents (a UI download or ``/api/traces`` answer ``{"data": [...]}``, one v1 trace, a
bare array of v1 spans or traces, JSON Lines of these) straight into the columns pyarrow's conversion of the decoded spans gives the Python
reader (:class:`~forensics.traces.v1.V1Read`), log entries' times and fields' keys too:
only tag and log field values, of any JSON type, become Python objects (each distinct
string once); the logs lists themselves are decoded only for logs the column-wise writing
leaves to :func:`~forensics.traces.v1._v1_logs`.
Every rule after that (services, Jaeger's parents, tags into columns, logs and warnings)
is the Python reader's own :func:`~forensics.traces.v1.v1_read_block`.

A document the extension does not read with certainty is declined as a whole, with the
reason, and read by the Python reader: JSON that is not strictly valid (the Python reader
names the line), other shapes (OTLP, api/v3, domain model, Thrift style, arrays of mixed
things),
a value of another type than pyarrow reads (a time as text, an id as a number), numbers
beyond 64 bits, lone surrogates, a repeated key. Both readers give identical frames
(tests/test_trace_native.py runs both over every trace fixture and hostile variants).

``FORENSICS_TRACE_READER``: ``auto`` (default: native when built), ``native`` (required:
a clear error when missing) or ``python``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from forensics.errors import ForensicsError
from forensics.traces.table import Block
from forensics.traces.v1 import V1_LOG, V1Read, V1Traces, v1_read_block

READER_ENV = "FORENSICS_TRACE_READER"


def native_module() -> Any:
    """The extension module when it is built and wanted, else None (the Python reader is used)."""
    choice = os.environ.get(READER_ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "native", "python"):
        raise ForensicsError(f"{READER_ENV}={choice!r} is not one of auto, native, python")
    if choice == "python":
        return None
    try:
        import forensics_trace_native
    except ImportError as exc:
        if choice == "native":
            raise ForensicsError(f"{READER_ENV}=native but the native trace reader is not installed ({exc}); "
                                 "run scripts/setup-venv.sh (it builds native/trace_reader with cargo)") from exc
        return None
    return forensics_trace_native


def _validity(col: dict[str, Any]) -> pa.Buffer | None:
    return pa.py_buffer(col["validity"]) if col["nulls"] else None


def _strings(col: dict[str, Any]) -> pa.Array:
    return pa.Array.from_buffers(pa.string(), col["len"], [_validity(col), pa.py_buffer(col["offsets"]),
                                                          pa.py_buffer(col["data"])], null_count=col["nulls"])


def _ints(col: dict[str, Any]) -> pa.Array:
    return pa.Array.from_buffers(pa.int64(), col["len"], [_validity(col), pa.py_buffer(col["values"])],
                                 null_count=col["nulls"])


def _words(col: dict[str, Any]) -> pa.DictionaryArray:
    codes = pa.Array.from_buffers(pa.int32(), col["len"], [_validity(col), pa.py_buffer(col["codes"])],
                                  null_count=col["nulls"])
    return pa.DictionaryArray.from_arrays(codes, _strings(col["words"]))


def _lists(col: dict[str, Any], items: pa.Array) -> pa.Array:
    return pa.Array.from_buffers(pa.list_(items.type), col["len"], [_validity(col), pa.py_buffer(col["offsets"])],
                                 null_count=col["nulls"], children=[items])


def _read(out: dict[str, Any]) -> V1Read:
    """The extension's columns as the Python reader's :class:`V1Read`."""
    n = out["spans"]
    refs = pa.StructArray.from_arrays([_strings(out["refType"]), _strings(out["refTraceID"]),
                                       _strings(out["refSpanID"])], names=["refType", "traceID", "spanID"])
    tags = pa.StructArray.from_arrays([_words(out["tagKey"])], names=["key"])
    log_fields = _lists(out["logFields"], pa.StructArray.from_arrays([_strings(out["logKey"])], names=["key"]))
    entries = pa.StructArray.from_arrays([_ints(out["logTime"]), log_fields], names=V1_LOG.names)
    process = pa.StructArray.from_arrays([_strings(out["serviceName"])], names=["serviceName"])
    fields = {
        "traceID": _strings(out["traceID"]), "spanID": _strings(out["spanID"]),
        "operationName": _strings(out["operationName"]), "references": _lists(out["references"], refs),
        "startTime": _ints(out["startTime"]), "duration": _ints(out["duration"]), "tags": _lists(out["tags"], tags),
        "logs": _lists(out["logs"], entries), "processID": _words(out["processID"]), "process": process,
        "warnings": _lists(out["warnings"], _strings(out["warning"])),
    }
    assert all(len(a) == n for a in fields.values()), "native trace reader: columns of unequal length"
    return V1Read(fields, _values(out["tagValues"]), _LogsText(out["logsText"], out["logsListed"]),
                  _values(out["logValues"]))


def _values(col: dict[str, Any]) -> np.ndarray:
    """Tag or log field values as a flat object array, from the distinct ones and each value's
    code; arrays and objects (given as JSON text) decoded as the Python reader's decoder gives
    them."""
    distinct = np.fromiter(col["distinct"], dtype=object, count=len(col["distinct"]))
    for code, text in col["raw"]:
        distinct[code] = orjson.loads(text)
    return distinct[np.frombuffer(col["codes"], dtype=np.int32)]


class _LogsText(Sequence):
    """The logs lists of the spans that have logs, kept as the JSON text the file holds them in
    and decoded on first use: the logs are written column-wise from the columns, and only logs
    of other shapes (a time missing or out of range, a field without a key) need the lists."""

    def __init__(self, text: bytes, count: int) -> None:
        self._text, self._count = text, count
        self._lists: list | None = None

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i):  # noqa: ANN001, ANN204 - Sequence's signature
        if self._lists is None:
            self._lists = orjson.loads(self._text)
        return self._lists[i]


def native_block(raw: bytes, split_from: int | None = None) -> tuple[Block | None, str | None]:
    """The bytes of a v1 document -> its block by the native reader; ``(None, reason)`` when the
    extension is not used (not built, not wanted, or the document declined). ``split_from``:
    the size from which two threads scan the document (the extension's own by default; tests
    force either way)."""
    module = native_module()
    if module is None:
        return None, "the native trace reader is not in use"
    out, reason = module.read_v1(raw) if split_from is None else module.read_v1(raw, split_from)
    if out is None:
        return None, reason
    ids, services, warnings, counts, prefixes = ([list(x) for x in zip(*out["traces"], strict=True)]
                                                 if out["traces"] else [[], [], [], [], []])
    return v1_read_block(_read(out), V1Traces(ids, services, warnings, counts), prefixes), None
