"""Traces: spans from every file shape Jaeger users have, span flags, derived views, correlation.

Parsing
    :func:`parse_traces` turns decoded JSON of any shape the Jaeger UI accepts into the
    canonical ``spans`` table (:data:`forensics.schema.SPANS`): v1 ``{"data": [...]}``
    envelopes (UI downloads, ``/api/traces`` answers), single v1 traces, bare arrays of
    traces, OTLP JSON ``{"resourceSpans": [...]}`` and api/v3's
    ``{"result": {"resourceSpans": [...]}}``. :func:`read_trace_file` adds JSON Lines.
    v1 spans are read by pyarrow straight from the decoded dicts (fixed fields in C++),
    tag and log field values in one Python pass, a thousand spans at a time (the Python
    pass then finds the dicts in the CPU cache); tags then become columns and JSON text
    column-wise (each distinct value written once), logs too, and ids are normalised with
    pyarrow kernels (trace ids 32 lowercase hex, left padded; OTLP base64 ids decoded).
    No per-span DataFrame or json_normalize anywhere.

Flags
    :func:`span_flags` marks orphans, clock skew, duplicated span ids and reference cycles,
    one row per span row, as a frame apart from the spans table.

Derived views
    :func:`span_tree` (root, depth, children, self time), :func:`critical_path`,
    :func:`self_time_by_service`, :func:`error_spans`, :func:`latency_percentiles`,
    :func:`dependency_edges`, :func:`waterfall`.

Correlation
    :func:`correlate_messages` joins spans to the canonical ``messages`` table by a
    message-id tag (confidence 1.0) or, where the platform sets none (the deployed
    Chat4All v2 code sets none), by service, time window and HTTP route.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import functools
import itertools
import json
import operator
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from forensics import schema
from forensics.errors import ForensicsError
from forensics.profiles import Profile, load_profile

NAT_NS = np.iinfo("int64").min
"""int64 nanoseconds standing for a missing time (pandas' NaT)."""

_TEXT_DICT = pa.dictionary(pa.int32(), pa.string())
"""Text that repeats (tag keys, tag values), dictionary-encoded."""

MESSAGE_ID_TAGS = ("message_id", "messageId", "message.id", "chat4all.message_id", "app.message_id")
"""Span attributes that carry a Chat4All message id (messaging.message.id is Kafka's own id, not ours)."""

# Known tags -> the column they fill; everything else goes to the JSON ``tags`` map.
# Without http.route, a URL tag (url.path, http.target, http.url) fills http_route instead;
# with it, the URL stays in the map. Several keys may feed one column (http.method /
# http.request.method).
_TAG_COLUMN = {
    "span.kind": "kind",
    "error": "error",
    "otel.status_code": "error",
    "otel.status_description": "status_message",
    "http.method": "http_method",
    "http.request.method": "http_method",
    "http.status_code": "http_status_code",
    "http.response.status_code": "http_status_code",
    "http.route": "http_route",
    **dict.fromkeys(MESSAGE_ID_TAGS, "message_id"),
}
_ROUTE_FALLBACKS = ("http.url", "url.full", "http.target", "url.path")
"""Fill http_route when http.route is absent; later ones win (url.path is the closest to a route)."""
_OTLP_KIND = {0: None, 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_OTLP_KIND_NAMES = {f"SPAN_KIND_{v.upper()}": v for v in _OTLP_KIND.values() if v} | {"SPAN_KIND_UNSPECIFIED": None}
_EXCEPTION_KEYS = ("exception.message", "error.message", "message", "error.object")

# sorted keys: the same span read from v1 (sorted tags) and api/v3 (attributes as sent) gives the same text
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str).encode


class TraceFileError(ForensicsError):
    """A trace file or document of a shape no Jaeger tool produces."""


# ---------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------
#
# Each part of a document (a v1 envelope, a v1 trace, an OTLP document) becomes a _Block:
# its spans column-wise, with all tags in flat arrays. _frame then finishes every block at
# once: tags into columns and JSON text, ids normalised, times from int64 nanoseconds.

class _Block:
    """Spans of one document part, column-wise, before ids, tags and times are finished.

    String columns are pyarrow arrays, the others numpy arrays (times int64 ns, NaT as
    :data:`NAT_NS`); tags stay flat: ``tag_keys[j]``/``tag_values[j]`` belong to span ``tag_span[j]``
    (keys dictionary-encoded, :data:`_TEXT_DICT`).
    """

    STRINGS = ("trace_id", "span_id", "parent_span_id", "service", "operation", "kind", "status_message",
               "exception", "logs", "warnings")

    def __init__(self, columns: dict[str, Any], tag_keys: pa.Array, tag_values: np.ndarray, tag_span: np.ndarray,
                 paths: list[tuple[str, int]]) -> None:
        self.columns, self.paths = columns, paths
        self.tag_keys, self.tag_values, self.tag_span = tag_keys, tag_values, tag_span

    def __len__(self) -> int:
        return len(self.columns["start"])


@functools.lru_cache(maxsize=4096)
def _second_text(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def _iso_us(ns: int) -> str:
    """Log/event time as ISO text at microseconds (v1's precision, so both APIs give the same text)."""
    return f"{_second_text(ns // 1_000_000_000)}{ns % 1_000_000_000 // 1000:06d}Z"


def _exception(entry: Mapping) -> str | None:
    return next((str(entry[k]) for k in _EXCEPTION_KEYS if entry.get(k) not in (None, "")), None)


def _v1_logs(logs: list) -> tuple[str, str | None]:
    """v1 span logs as a JSON array of {timestamp, field: value...}; plus an exception message found."""
    out, exc = [], None
    for log in logs:
        log = log or {}
        entry: dict[str, Any] = {"timestamp": _iso_us(int(log.get("timestamp") or 0) * 1000)}
        for f in log.get("fields") or ():
            entry[f.get("key")] = f.get("value")
        exc = exc or _exception(entry)
        out.append(entry)
    return _dumps(out), exc


_V1_LOG = pa.struct([("timestamp", pa.int64()), ("fields", pa.list_(pa.struct([("key", pa.string())])))])
"""What is read of a v1 log entry in C++; field values are read in Python."""
_LOGS_COLUMNWISE = 64
"""From this many spans with logs on, logs are written column-wise; fewer, one by one (faster then)."""
_LOG_TIME_END = 253_402_300_800_000_000
"""Log times (µs) from 0 up to here (year 10000) are written column-wise; others by :func:`_v1_logs`."""


def _v1_log_columns(logs: list[list], read: pa.ListArray | None, values: np.ndarray | None
                    ) -> tuple[pa.Array, pa.Array]:
    """:func:`_v1_logs` for many spans' logs (non-empty lists) at once: JSON text and exception messages.

    Column-wise from ``read`` (the same logs as lists of :data:`_V1_LOG`) and ``values`` (their
    fields' values, flat): each entry is written as a JSON object by :func:`_json_maps`, as
    ``_dumps`` writes the entry dict (keys sorted, the last of a repeated key kept, a
    ``timestamp`` field replacing the time). Without ``read``, and for logs of other shapes (an
    entry or field that is no object, a key that is no text, a time that is text or out of
    range), by :func:`_v1_logs`, which gives the same or raises.
    """
    if read is not None:
        entries = read.flatten()
        fields = entries.field("fields")
        field_keys = fields.flatten().field("key")
        time_us = pc.fill_null(entries.field("timestamp"), 0).to_numpy()
    if (read is None or values is None or entries.null_count or fields.flatten().null_count or field_keys.null_count
            or len(values) != len(field_keys) or not np.all((time_us >= 0) & (time_us < _LOG_TIME_END))):
        pairs = [_v1_logs(lg) for lg in logs]
        return pa.array([p[0] for p in pairs], pa.string()), pa.array([p[1] for p in pairs], pa.string())
    m = len(entries)
    # items: each entry's time first, then its fields in order (the order a dict is written in)
    seconds, second_at = np.unique(time_us // 1_000_000, return_inverse=True)
    times = pc.binary_join_element_wise(
        '"', pc.take(pa.array([_second_text(int(x)) for x in seconds], pa.string()), pa.array(second_at)),
        pc.utf8_lpad(pc.cast(pa.array(time_us % 1_000_000), pa.string()), width=6, padding="0"), 'Z"', "")
    encoded = pa.concat_arrays([pa.array(["timestamp"] * m, pa.string()), field_keys]).dictionary_encode()
    names, key = encoded.dictionary, encoded.indices.to_numpy()
    owner = np.concatenate([np.arange(m), pc.list_parent_indices(fields).to_numpy()])
    kept = _last_of_each_key(owner, _sort_rank(names)[key])
    is_field = kept >= m
    field_text = _json_values(values, kept[is_field] - m, key[kept[is_field]])
    texts = pc.replace_with_mask(pc.take(times, pa.array(np.where(is_field, 0, kept))), pa.array(is_field),
                                 field_text.dictionary.take(field_text.indices))
    entry_text = _json_maps(names, key[kept], texts, owner[kept], m)
    # the exception message: per span its first entry with one, per entry the first of _EXCEPTION_KEYS set
    priority = pc.fill_null(pc.index_in(names, pa.array(_EXCEPTION_KEYS)), -1).to_numpy()[key[kept]]
    found = kept[priority >= 0]
    found_values = values[found - m]
    usable = np.fromiter((v not in (None, "") for v in found_values), dtype=bool, count=len(found))
    found, found_values, priority = found[usable], found_values[usable], priority[priority >= 0][usable]
    span = pc.list_parent_indices(read).to_numpy()[owner[found]]
    first = np.lexsort((priority, owner[found]))  # entries are numbered in span order
    first = first[np.diff(span[first], prepend=-1) != 0]
    exception = np.full(len(logs), None, dtype=object)
    exception[span[first]] = [str(v) for v in found_values[first]]
    text = pc.binary_join(pa.ListArray.from_arrays(read.offsets, entry_text), ",")
    return pc.binary_join_element_wise("[", text, "]", ""), pa.array(exception, pa.string())


def _v1_span_type(log: pa.StructType) -> pa.StructType:
    """What is read of a v1 span in C++, with ``log`` as what is read of its log entries."""
    return pa.struct([
        ("traceID", pa.string()), ("spanID", pa.string()), ("operationName", pa.string()),
        ("references", pa.list_(pa.struct([("refType", pa.string()), ("spanID", pa.string())]))),
        ("startTime", pa.int64()), ("duration", pa.int64()),
        ("tags", pa.list_(pa.struct([("key", _TEXT_DICT)]))), ("logs", pa.list_(log)),
        ("processID", _TEXT_DICT), ("process", pa.struct([("serviceName", pa.string())])),
        ("warnings", pa.list_(pa.string())),
    ])


_V1_SPAN = _v1_span_type(_V1_LOG)
"""What is read of a v1 span in C++ (pyarrow converts the dicts); tag and log field values,
whose types vary, are read in Python."""
_V1_SPAN_BARE = _v1_span_type(pa.struct([("timestamp", pa.int64())]))
""":data:`_V1_SPAN` without log fields, for logs whose fields pyarrow cannot read (keys that are
no text): those logs are written one by one by :func:`_v1_logs`."""


_TAGS, _VALUE = operator.itemgetter("tags"), operator.itemgetter("value")


def _v1_sanitised(sp: Any) -> dict | None:
    """A v1 span of odd types (times as strings, numeric ids, ...) in the types of :data:`_V1_SPAN`."""
    if not isinstance(sp, Mapping):
        return None

    def text(v: Any) -> str | None:
        return None if v is None else str(v)

    def integer(v: Any) -> int | None:
        try:
            return None if v in (None, "") else int(float(v)) if not isinstance(v, int) else v
        except (TypeError, ValueError):
            return None

    def dicts(v: Any) -> list:
        return [d for d in v if isinstance(d, Mapping)] if isinstance(v, list) else []

    process = sp.get("process")
    return {
        "traceID": text(sp.get("traceID")), "spanID": text(sp.get("spanID")),
        "operationName": text(sp.get("operationName")),
        "references": [{"refType": text(r.get("refType")), "spanID": text(r.get("spanID"))}
                       for r in dicts(sp.get("references"))],
        "startTime": integer(sp.get("startTime")), "duration": integer(sp.get("duration")),
        "tags": [{"key": text(t.get("key")), "value": t.get("value")} for t in dicts(sp.get("tags"))],
        "logs": [{"timestamp": integer(lg.get("timestamp")), "fields": lg.get("fields")} for lg in dicts(sp.get("logs"))],
        "processID": text(sp.get("processID")),
        "process": {"serviceName": text(process.get("serviceName"))} if isinstance(process, Mapping) else None,
        "warnings": [str(w) for w in sp.get("warnings") or () if w is not None]
        if isinstance(sp.get("warnings"), list) else None,
    }


_CHUNK = 1000
"""Spans read at a time: the Python passes over a chunk (tag values, logs) find its dicts still
in the CPU cache after pyarrow's pass, which saves about a third of the reading time."""
_TAGS_FIELD, _LOGS_FIELD = _V1_SPAN.get_field_index("tags"), _V1_SPAN.get_field_index("logs")


@dataclass(frozen=True)
class _V1Read:
    """v1 spans as read by :func:`_v1_read`."""

    spans: pa.StructArray
    """The fixed fields (:data:`_V1_SPAN` or :data:`_V1_SPAN_BARE`)."""
    tag_values: np.ndarray
    """All tags' values, flat (any JSON type)."""
    logs: list
    """The logs lists of the spans that have logs, as given."""
    log_values: np.ndarray | None
    """Their fields' values, flat; None when not read (:data:`_V1_SPAN_BARE`, or entries or fields
    that are no objects)."""


def _v1_read(spans: list, span_type: pa.StructType) -> _V1Read:
    """v1 spans read chunk by chunk (:data:`_CHUNK`); raises what pyarrow raises on odd types."""
    arrays, logs = [], []
    values, filled = np.empty(0, dtype=object), 0  # written in place: a concatenation would read them all again
    log_values: list | None = [] if span_type == _V1_SPAN else None
    for i in range(0, len(spans), _CHUNK):
        part = spans[i:i + _CHUNK]
        arr = pa.array(part, type=span_type)
        arrays.append(arr)
        tag_offsets = arr.field(_TAGS_FIELD).offsets.to_numpy()
        count = int(tag_offsets[-1] - tag_offsets[0])
        if filled + count > len(values):  # room for all at the tags per span seen so far, and an eighth more
            expected = (filled + count) * len(spans) // (i + len(part)) * 9 // 8
            grown = max(expected, 2 * len(values), filled + count)
            values = np.concatenate([values, np.empty(grown - len(values), dtype=object)])
        try:
            values[filled:filled + count] = np.fromiter(
                map(_VALUE, itertools.chain.from_iterable(map(_TAGS, part))), dtype=object, count=count)
        except (KeyError, TypeError, ValueError):  # spans without tags, tags without values
            values[filled:filled + count] = np.fromiter(
                (t.get("value") if isinstance(t, Mapping) else None
                 for t in itertools.chain.from_iterable(sp.get("tags") or () if sp else () for sp in part)),
                dtype=object, count=count)
        filled += count
        part_logs = [part[j].get("logs") for j in np.flatnonzero(np.diff(arr.field(_LOGS_FIELD).offsets.to_numpy()))]
        logs.extend(part_logs)
        if part_logs and log_values is not None:
            try:
                log_values.append(np.fromiter(
                    (f.get("value") for lg in part_logs for log in lg for f in log.get("fields") or ()), dtype=object))
            except (AttributeError, TypeError):  # entries or fields that are no objects: _v1_logs says what
                log_values = None
    arrays = arrays or [pa.array([], type=span_type)]
    return _V1Read(arrays[0] if len(arrays) == 1 else pa.concat_arrays(arrays), values[:filled], logs,
                   None if log_values is None else np.concatenate(log_values or [np.zeros(0, dtype=object)]))


class _Unread(Exception):
    """Spans pyarrow could not read as they are (raised with :func:`_v1_block`'s ``as_is``)."""


def _v1_block(traces: list[Mapping], prefixes: list[str], as_is: bool = False) -> _Block:
    """v1 trace objects (``{"traceID", "spans", "processes"}``) -> one block, vectorised.

    ``prefixes[i]`` is the JSON path of trace i's span list, for ``source_ref``. Spans of odd
    types are read again with fewer fields, then coerced (:func:`_v1_sanitised`); with
    ``as_is``, :class:`_Unread` is raised instead.
    """
    spans: list = []
    counts = []
    for trace in traces:
        s = trace.get("spans") or []
        spans.extend(s)
        counts.append(len(s))
    odd = (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError)
    try:
        read = _v1_read(spans, _V1_SPAN)
    except odd:
        if as_is:
            raise _Unread from None
        try:
            read = _v1_read(spans, _V1_SPAN_BARE)
        except odd:
            read = _v1_read([_v1_sanitised(sp) for sp in spans], _V1_SPAN_BARE)
    arr, tag_values = read.spans, read.tag_values
    n = len(arr)
    f = dict(zip(_V1_SPAN.names, arr.flatten(), strict=True))
    trace_of = np.repeat(np.arange(len(traces)), counts)
    trace_ids = pa.array([None if t.get("traceID") is None else str(t.get("traceID")) for t in traces], pa.string())
    # service: an embedded process, else the trace's processes[processID] (ids are per trace),
    # looked up by trace and process id as one number
    pids = f["processID"].dictionary.to_pylist()
    pid_code = {pid: c for c, pid in enumerate(pids)}
    services: dict[int, str | None] = {}
    for t, trace in enumerate(traces):
        for pid, p in (trace.get("processes") or {}).items():
            if str(pid) in pid_code:
                services.setdefault(t * len(pids) + pid_code[str(pid)],
                                    (p or {}).get("serviceName") if isinstance(p, Mapping) else None)
    span_proc = np.where(f["processID"].is_null().to_numpy(zero_copy_only=False), -1,
                         trace_of * len(pids) + pc.fill_null(f["processID"].indices, 0).to_numpy())
    table = sorted(services.items())
    keys = np.array([k for k, _ in table] + [np.iinfo("int64").max], dtype="int64")  # and one past every key
    at = np.searchsorted(keys, span_proc)
    service = pc.take(pa.array([name for _, name in table] + [None], pa.string()),
                      pa.array(np.where(keys[at] == span_proc, at, len(table))))
    service = pc.coalesce(f["process"].flatten()[0], service)
    # parent: the first CHILD_OF reference; FOLLOWS_FROM references become a follows_from tag
    refs = f["references"]
    ref_owner = pc.list_parent_indices(refs).to_numpy()
    ref_type, ref_span = refs.flatten().flatten()
    is_child = pc.fill_null(pc.is_in(ref_type, pa.array(["CHILD_OF", "child_of"])), False).to_numpy(
        zero_copy_only=False)
    child = np.flatnonzero(is_child)
    owners, first = np.unique(ref_owner[child], return_index=True)
    pick = np.full(n, -1, dtype="int64")
    pick[owners] = child[first]
    parent = pc.take(ref_span, pa.array(pick, mask=pick < 0))
    # tags: keys from C++, values (any JSON type) from the dicts
    tag_span = pc.list_parent_indices(f["tags"]).to_numpy()
    tag_keys = f["tags"].flatten().flatten()[0]
    follows = np.flatnonzero(~is_child)
    if len(follows):
        links: dict[int, list] = defaultdict(list)
        for owner, span_id in zip(ref_owner[follows], pc.take(ref_span, pa.array(follows)).to_pylist(), strict=True):
            links[int(owner)].append(span_id)
        tag_keys = pa.concat_arrays([tag_keys, pa.array(["follows_from"] * len(links), _TEXT_DICT)])
        tag_values = np.concatenate([tag_values, np.fromiter(links.values(), dtype=object, count=len(links))])
        tag_span = np.concatenate([tag_span, np.fromiter(links, dtype="int64", count=len(links))])
    # logs: of the spans that have them
    logs = exception = pa.nulls(n, pa.string())
    has_logs = pc.fill_null(pc.greater(pc.list_value_length(f["logs"]), 0), False)
    if pc.any(has_logs).as_py():
        columnwise = read.log_values is not None and len(read.logs) >= _LOGS_COLUMNWISE
        text, exc = _v1_log_columns(read.logs, pc.filter(f["logs"], has_logs) if columnwise else None,
                                    read.log_values)
        logs, exception = pc.replace_with_mask(logs, has_logs, text), pc.replace_with_mask(exception, has_logs, exc)
    warnings = pc.binary_join(f["warnings"], "; ")
    trace_warnings = [("; ".join(map(str, t["warnings"])) if t.get("warnings") else None) for t in traces]
    if any(trace_warnings):
        warnings = pc.coalesce(warnings, pc.take(pa.array(trace_warnings, pa.string()), pa.array(trace_of)))
    start = pc.fill_null(f["startTime"], NAT_NS).to_numpy()
    start = np.where(start == NAT_NS, NAT_NS, start * 1000)
    columns = {
        "trace_id": pc.coalesce(f["traceID"], pc.take(trace_ids, pa.array(trace_of, pa.int64()))),
        "span_id": f["spanID"], "parent_span_id": parent, "service": service, "operation": f["operationName"],
        "kind": pa.nulls(n, pa.string()), "start": start,
        "duration": pc.fill_null(f["duration"], 0).to_numpy() * 1000,
        "error": np.zeros(n, dtype=bool), "status_message": pa.nulls(n, pa.string()),
        "exception": exception, "logs": logs, "warnings": warnings,
    }
    return _Block(columns, tag_keys, tag_values, tag_span, list(zip(prefixes, counts, strict=True)))


def _any_value(v: Mapping) -> Any:
    """An OTLP JSON AnyValue ({"stringValue": ...}, {"intValue": "12"}, arrays, maps) as plain Python."""
    for typ, x in v.items():
        if typ == "stringValue" or typ == "boolValue" or typ == "doubleValue":
            return x
        if typ == "intValue":
            return int(x)
        if typ == "arrayValue":
            return [_any_value(e) for e in (x or {}).get("values") or ()]
        if typ == "kvlistValue":
            return {kv.get("key"): _any_value(kv.get("value") or {}) for kv in (x or {}).get("values") or ()}
        return x  # bytesValue stays base64 text
    return None


def _otlp_events(events: list) -> tuple[str, str | None]:
    out, exc = [], None
    for ev in events:
        entry: dict[str, Any] = {"timestamp": _iso_us(int(ev.get("timeUnixNano") or 0)), "event": ev.get("name")}
        for a in ev.get("attributes") or ():
            entry[a.get("key")] = _any_value(a.get("value") or {})
        exc = exc or _exception(entry)
        out.append(entry)
    return _dumps(out), exc


_OTLP_ROW = ("trace_id", "span_id", "parent_span_id", "service", "operation", "kind", "start", "duration", "error",
             "status_message", "exception", "logs")


def _otlp_block(resource_spans: Iterable[Mapping], where: str) -> _Block:
    """OTLP JSON ``resourceSpans`` (api/v3 answers, OTLP exports) -> one block.

    Read in Python, span by span: api/v3 answers are small, and attribute values nest.
    """
    rows: list[tuple] = []
    keys: list = []
    values: list = []
    tag_counts: list[int] = []
    paths: list[tuple[str, int]] = []
    for r, rs in enumerate(resource_spans or ()):
        service = None
        for a in (rs.get("resource") or {}).get("attributes") or ():
            if a.get("key") == "service.name":
                service = _any_value(a.get("value") or {})
        scopes = rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or ()
        for s, ss in enumerate(scopes):
            # Jaeger's v1 view carries the instrumentation scope as tags: keep both views equal
            scope = ss.get("scope") or ss.get("instrumentationLibrary") or {}
            scope_tags = [(k, scope[f]) for k, f in (("otel.scope.name", "name"), ("otel.scope.version", "version"))
                          if scope.get(f)]
            spans = ss.get("spans") or ()
            paths.append((f"{where}resourceSpans[{r}].scopeSpans[{s}].spans", len(spans)))
            for sp in spans:
                tags = scope_tags + [(a.get("key"), _any_value(a.get("value") or {})) for a in sp.get("attributes") or ()]
                links = sp.get("links")
                if links:
                    tags.append(("follows_from", [ln.get("spanId") for ln in links]))
                keys.extend(k for k, _ in tags)
                values.extend(v for _, v in tags)
                tag_counts.append(len(tags))
                st = sp.get("status") or {}
                code = st.get("code")
                events = sp.get("events")
                logs_json, exc = _otlp_events(events) if events else (None, None)
                kind = sp.get("kind")
                start, end = sp.get("startTimeUnixNano"), sp.get("endTimeUnixNano")
                start_ns = NAT_NS if start in (None, "", "0", 0) else int(start)
                rows.append((
                    sp.get("traceId"), sp.get("spanId"), sp.get("parentSpanId") or None, service, sp.get("name"),
                    _OTLP_KIND.get(kind) if isinstance(kind, int) else _OTLP_KIND_NAMES.get(kind, kind),
                    start_ns, int(end) - start_ns if end not in (None, "") and start_ns != NAT_NS else 0,
                    code == 2 or code == "STATUS_CODE_ERROR", st.get("message") or None, exc, logs_json,
                ))
    n = len(rows)
    c = dict(zip(_OTLP_ROW, zip(*rows, strict=True), strict=True)) if n else {k: () for k in _OTLP_ROW}
    columns = {k: _text(np.array(c[k], dtype=object)) for k in _Block.STRINGS if k in c}
    columns.update(start=np.array(c["start"], dtype="int64"), duration=np.array(c["duration"], dtype="int64"),
                   error=np.array(c["error"], dtype=bool), warnings=pa.nulls(n, pa.string()))
    return _Block(columns, pc.cast(_text(np.array(keys, dtype=object)), _TEXT_DICT),
                  np.fromiter(values, dtype=object, count=len(values)), np.repeat(np.arange(n), tag_counts), paths)


_HEX = re.compile(r"^[0-9a-f]+$")


def _hex_id(value: str, width: int) -> str | None:
    """One id that is not plain hex (OTLP JSON exports in base64) as lowercase hex, left padded."""
    text = value.strip()
    if _HEX.match(text.lower()) and len(text) <= width:
        return text.lower().rjust(width, "0")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return text.lower() or None
    return raw.hex().rjust(width, "0") if raw else None


_HEX_DIGITS = "0123456789abcdef"


def normalise_ids(values: Iterable[str | None], width: int, zero_is_null: bool = False) -> pa.Array:
    """Span or trace ids as lowercase hex of ``width`` characters (32 for traces, 16 for spans).

    Hex ids are lower-cased and left-padded with zeros (Jaeger prints a 64-bit trace id as
    16 characters); base64 ids (some OTLP JSON exports) are decoded; with ``zero_is_null``
    (parent ids) an all-zero id, OTLP's "no parent", becomes null.
    """
    arr = values if isinstance(values, pa.Array) else pa.array(values, type=pa.string())
    if pc.all(pc.and_(pc.equal(pc.binary_length(arr), width), pc.equal(pc.ascii_trim(arr, _HEX_DIGITS), ""))).as_py():
        out = arr  # the usual case: all normal already
    else:
        out = _normal_ids(arr, width)
    if zero_is_null:
        out = pc.if_else(pc.equal(out, "0" * width), pa.scalar(None, pa.string()), out)
    return out


def _normal_ids(arr: pa.Array, width: int) -> pa.Array:
    """:func:`normalise_ids` for ids not all lowercase hex of ``width`` characters already."""
    lower = pc.utf8_lower(arr)
    length = pc.utf8_length(lower)
    plain = pc.and_(pc.equal(pc.ascii_trim(lower, _HEX_DIGITS), ""),  # all hex: nothing left after a trim
                    pc.and_(pc.greater(length, 0), pc.less_equal(length, width)))
    out = pc.utf8_lpad(lower, width=width, padding="0")
    odd = pc.and_(pc.invert(plain), pc.is_valid(arr))
    if pc.any(odd).as_py():
        odd_values = pc.filter(arr, odd).to_pylist()
        fixed = {v: _hex_id(v, width) for v in set(odd_values)}
        out = pc.replace_with_mask(out, odd, pa.array([fixed[v] for v in odd_values], type=pa.string()))
    return out


def _string(values: list | tuple | np.ndarray | pa.Array | pa.ChunkedArray) -> pd.Series:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = pa.array(values, type=pa.string(), from_pandas=True)
    return pd.Series(pd.arrays.ArrowStringArray(values), dtype=schema.STR)


_TYPED_GROUP = 32
"""Values of one key are typed by pyarrow as a group from this many on; fewer, one by one."""


def _needs_escape(text: pa.Array) -> np.ndarray:
    """Positions of the strings of ``text`` (a string array) that JSON escapes a character of:
    a control character, a quote or a backslash (json.dumps with ensure_ascii=False)."""
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int32)[text.offset:text.offset + len(text) + 1]
    data = text.buffers()[2]
    if data is None or offsets[-1] == offsets[0]:
        return np.zeros(0, dtype="int64")
    raw = np.frombuffer(data, dtype=np.uint8)[offsets[0]:offsets[-1]]
    at = np.flatnonzero((raw < 0x20) | (raw == ord('"')) | (raw == ord("\\"))) + offsets[0]
    return np.unique(np.searchsorted(offsets, at, side="right") - 1)


def _quoted(raw: pa.Array) -> pa.Array:
    """Strings as JSON text: quoted in pyarrow, json.dumps only for the few that need escaping."""
    quoted = pc.binary_join_element_wise('"', raw, '"', "")
    escape = _needs_escape(raw)
    if len(escape):
        mask = np.zeros(len(raw), dtype=bool)
        mask[escape] = True
        quoted = pc.replace_with_mask(quoted, pa.array(mask), pa.array([_dumps(v) for v in raw.take(escape).to_pylist()],
                                                                        type=pa.string()))
    return quoted


def _typed_json(values: np.ndarray) -> tuple[pa.Array, np.ndarray] | None:
    """JSON text of values of one type, typed by pyarrow in C: strings, integers, booleans (None
    as null), as distinct texts and the index of each value's text; None for anything else
    (floats, lists, maps, a mix), which needs json.dumps."""
    try:  # text: dictionary-encoded while converted, so that only distinct strings are quoted
        arr = pa.array(values, type=_TEXT_DICT) if type(values[0]) is str else pa.array(values)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = pc.cast(arr, pa.string()).dictionary_encode()
    elif pa.types.is_integer(arr.type) or pa.types.is_boolean(arr.type):
        arr = arr.dictionary_encode()
    elif pa.types.is_null(arr.type):
        return pa.array(["null"]), np.zeros(len(values), dtype="int64")
    if not pa.types.is_dictionary(arr.type):
        return None
    words = arr.dictionary
    if pa.types.is_string(words.type):
        text = _quoted(words)
    elif pa.types.is_boolean(words.type):
        text = pc.if_else(words, "true", "false")
    else:
        text = pc.cast(words, pa.string())
    return pa.concat_arrays([text, pa.array(["null"])]), pc.fill_null(arr.indices, len(words)).to_numpy()


def _each_json(values: np.ndarray) -> pa.Array:
    """JSON text of values of any types, one by one (strings still quoted in pyarrow)."""
    types = np.fromiter(map(type, values), dtype=object, count=len(values))
    is_str = np.equal(types, str)
    out = np.empty(len(values), dtype=object)
    others = np.flatnonzero(~is_str)
    if len(others):
        is_int = np.equal(types[others], int)  # exactly int: bool is a subclass
        ints = others[is_int]
        out[ints] = list(map(str, values[ints]))
        rest = others[~is_int]
        out[rest] = [_dumps(v) for v in values[rest]]
    text = pa.array(out, type=pa.string(), from_pandas=True)
    strs = np.flatnonzero(is_str)
    if len(strs):
        text = pc.replace_with_mask(text, pa.array(is_str), _quoted(pa.array(values[strs], type=pa.string())))
    return text


def _json_values(values: np.ndarray, at: np.ndarray, group: np.ndarray) -> pa.DictionaryArray:
    """Each of ``values[at]`` as JSON text, as json.dumps writes it, dictionary-encoded (tag values
    repeat).

    ``group`` (the tag key) gathers values that usually share a type: a large group of strings,
    integers or booleans is typed by pyarrow and only its distinct values are written; the
    rest are written value by value.
    """
    if not len(at):
        return pa.DictionaryArray.from_arrays(pa.array([], pa.int64()), pa.array([], pa.string()))
    runs = np.flatnonzero(np.diff(group)) + 1
    if len(runs) + 1 == np.count_nonzero(np.bincount(group)):  # already grouped
        order, starts = np.arange(len(group)), np.r_[0, runs]
    else:
        order = np.argsort(group, kind="stable")
        starts = np.r_[0, np.flatnonzero(np.diff(group[order])) + 1]
    sizes = np.diff(np.r_[starts, len(order)])
    done = np.zeros(len(at), dtype=bool)
    words, index = [], np.empty(len(at), dtype="int64")
    distinct = 0
    for g in np.flatnonzero(sizes >= _TYPED_GROUP):
        members = order[starts[g]:starts[g] + sizes[g]]
        typed = _typed_json(values[at[members]])
        if typed is not None:
            words.append(typed[0])
            index[members] = typed[1] + distinct
            distinct += len(typed[0])
            done[members] = True
    left = np.flatnonzero(~done)
    if len(left):
        words.append(_each_json(values[at[left]]))
        index[left] = np.arange(len(left)) + distinct
    return pa.DictionaryArray.from_arrays(pa.array(index), pa.concat_arrays(words))


def _tag_columns(keys: pa.DictionaryArray, values: np.ndarray, span_of: np.ndarray, n: int) -> dict[str, Any]:
    """All spans' tags (flat; tag j belongs to span ``span_of[j]``) -> known columns and the JSON
    map of the rest.

    Known columns come back as text (pyarrow strings, null where the span lacks the tag),
    ``http_status_code`` as an Int64 series and ``error`` as a bool array. When a span repeats
    a key, the last value wins, as in a dict.
    """
    found: dict[str, np.ndarray] = {}  # column -> the values found, by span

    def column(name: str) -> np.ndarray:
        if name not in found:
            found[name] = np.full(n, None, dtype=object)
        return found[name]

    error, tags = np.zeros(n, dtype=bool), pa.nulls(n, pa.string())
    if len(keys):
        key_names = keys.dictionary
        key_idx = pc.fill_null(keys.indices, len(key_names)).to_numpy()  # a missing key: len(key_names)
        # tag positions grouped by key, in written order within a key: one stable (radix) sort
        by_key = np.argsort(key_idx.astype(np.uint16) if len(key_names) < 2**16 else key_idx, kind="stable")
        bounds = np.r_[0, np.cumsum(np.bincount(key_idx, minlength=len(key_names) + 1))]
        wanted = [*_ROUTE_FALLBACKS, *_TAG_COLUMN]
        code = {k: c for k, c in zip(wanted, pc.index_in(pa.array(wanted), key_names).to_pylist(), strict=True)
                if c is not None}

        def at(*names: str) -> np.ndarray:
            """Positions of the tags with any of these keys, in written order."""
            parts = [by_key[bounds[code[k]]:bounds[code[k] + 1]] for k in set(names) if k in code]
            return np.sort(np.concatenate(parts)) if len(parts) > 1 else parts[0] if parts else np.zeros(0, "int64")

        route_from = np.full(n, -1, dtype="int64")  # the fallback tag a span's route came from
        for key in _ROUTE_FALLBACKS:  # fallbacks first, so that http.route (below) overwrites them
            pos = at(key)
            if len(pos):
                column("http_route")[span_of[pos]] = values[pos]
                route_from[span_of[pos]] = pos
        for name in sorted(set(_TAG_COLUMN.values())):
            pos = at(*(k for k, c in _TAG_COLUMN.items() if c == name))
            if not len(pos):
                continue
            if name == "error":
                error[span_of[pos][_error_hits(values[pos])]] = True
            elif name == "message_id":
                column(name)[span_of[pos]] = [None if v is None else str(v) for v in values[pos]]
            else:
                column(name)[span_of[pos]] = values[pos]
                if name == "http_route":
                    route_from[span_of[pos]] = -1
        # the rest, still grouped by key; a URL that became the route (no http.route) is not
        # repeated in the map
        is_rest = np.ones(len(key_names) + 1, dtype=bool)
        is_rest[[c for k, c in code.items() if k in _TAG_COLUMN] + [len(key_names)]] = False
        is_rest = is_rest[key_idx]
        is_rest[route_from[route_from >= 0]] = False
        rest = by_key[is_rest[by_key]]
        if len(rest):
            tags = _tag_map(key_names, key_idx, values, span_of, rest, n)
    out: dict[str, Any] = {"error": error, "tags": tags}
    for name in set(_TAG_COLUMN.values()) - {"error", "http_status_code"}:
        out[name] = _text(found[name]) if name in found else pa.nulls(n, pa.string())
    codes = found.get("http_status_code", np.full(n, None, dtype=object))
    out["http_status_code"] = pd.to_numeric(pd.Series(codes, dtype=object), errors="coerce").astype(schema.INT)
    return out


def _tag_map(key_names: pa.Array, key_idx: np.ndarray, values: np.ndarray, span_of: np.ndarray, rest: np.ndarray,
             n: int) -> pa.Array:
    """The tags at positions ``rest`` (grouped by key) as a JSON object per span, keys sorted."""
    kept = _last_of_each_key(span_of[rest], _sort_rank(key_names)[key_idx[rest]])
    in_key_order = np.zeros(len(rest), dtype=bool)
    in_key_order[kept] = True
    text_at = (np.cumsum(in_key_order) - 1)[kept]  # where entry j's value is among the kept ones in key order
    rest_kept = rest[in_key_order]
    return _json_maps(key_names, key_idx[rest[kept]], _json_values(values, rest_kept, key_idx[rest_kept]),
                      span_of[rest[kept]], n, text_at)


def _sort_rank(names: pa.Array) -> np.ndarray:
    """Each of these distinct strings' place in sorted order (UTF-8 byte order is code point order,
    Python's order)."""
    rank = np.empty(len(names), dtype="int64")
    rank[pc.sort_indices(names).to_numpy()] = np.arange(len(names))
    return rank


def _last_of_each_key(owner: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Positions of the entries (in written order) of JSON objects to be made, ordered by owner
    and key rank, keeping the last of a repeated key as a dict does."""
    # one stable sort on owner and rank together: entries come nearly in order (by owner), which
    # the sort (timsort) finds in runs; equal keys keep their written order
    order = np.argsort(owner.astype("int64") * (int(rank.max(initial=0)) + 1) + rank, kind="stable")
    o, r = owner[order], rank[order]
    return order[(np.diff(o, append=-1) != 0) | (np.diff(r, append=-1) != 0)]


def _error_hits(values: np.ndarray) -> np.ndarray:
    """Which error-tag values say error: True, "true", or "ERROR" (otel.status_code). Typed by
    pyarrow when the values share a type, else read one by one."""
    try:
        arr = pa.array(values)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        arr = None
    if arr is not None and pa.types.is_boolean(arr.type):
        return pc.fill_null(arr, False).to_numpy(zero_copy_only=False)
    if arr is not None and (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        hit = pc.is_in(pc.cast(arr, pa.string()), pa.array(["true", "ERROR"]))
        return pc.fill_null(hit, False).to_numpy(zero_copy_only=False)
    if arr is not None and (pa.types.is_integer(arr.type) or pa.types.is_null(arr.type)):
        return np.zeros(len(values), dtype=bool)  # (pyarrow types a mix of ints and bools as double, not int)
    return np.fromiter((v is True or v == "true" or v == "ERROR" for v in values), dtype=bool, count=len(values))


def _json_maps(names: pa.Array, key: np.ndarray, text: pa.Array | pa.DictionaryArray, owner: np.ndarray, n: int,
               text_at: np.ndarray | None = None) -> pa.Array:
    """JSON objects ``{"name": text, ...}``, one per owner 0..n-1, null for an owner without entries.

    Entry j is ``names[key[j]]`` with JSON value text ``text[text_at[j]]`` (``text[j]`` without
    ``text_at``), entries grouped by owner (``owner`` ascending) in the order they are to be
    written. Each distinct value text is joined to its key once (``{"k":v`` or ``,"k":v``);
    these pieces and the closing ``}`` are put in order by one take and joined per owner by
    one list join.
    """
    m = len(key)
    at = np.arange(m) if text_at is None else text_at
    if isinstance(text, pa.DictionaryArray):
        at, text = text.indices.to_numpy()[at], text.dictionary
    key_of = np.full(len(text), -1, dtype="int64")  # each text's key: one, as values are typed per key
    key_of[at] = key
    if not np.array_equal(key_of[at], key):
        key_of, text, at = key.copy(), text.take(pa.array(at)), np.arange(m)  # shared texts: one per entry
    names_json = pc.binary_join_element_wise(_quoted(names), ":", "").take(pa.array(np.maximum(key_of, 0)))
    pool = pa.concat_arrays([pc.binary_join_element_wise("{", names_json, text, ""),
                             pc.binary_join_element_wise(",", names_json, text, ""), pa.array(["}"])])
    first, last = np.diff(owner, prepend=-1) != 0, np.diff(owner, append=-1) != 0
    slot = np.arange(m) + np.cumsum(first) - 1  # entry j: one piece per entry before it, one "}" per owner
    pieces = np.empty(m + int(first.sum()), dtype="int64")
    pieces[slot] = np.where(first, at, at + len(text))
    pieces[slot[last] + 1] = 2 * len(text)
    per_owner = np.bincount(owner, minlength=n)
    offsets = np.r_[0, np.cumsum(np.where(per_owner > 0, per_owner + 1, 0))].astype("int32")
    lists = pa.ListArray.from_arrays(pa.array(offsets), pc.take(pool, pa.array(pieces)), mask=pa.array(per_owner == 0))
    return pc.binary_join(lists, "")


def _json_paths(paths: list[tuple[str, int]]) -> pa.Array:
    """``prefix[i]`` for every span: its JSON path within the document (``data[0].spans[3]``)."""
    counts = np.array([n for _, n in paths], dtype="int64")
    total = int(counts.sum())
    if not total:
        return pa.array([], type=pa.string())
    block = np.repeat(np.arange(len(paths)), counts)
    index = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    prefix = pc.take(pa.array([p for p, _ in paths], type=pa.string()), pa.array(block))
    indexes = pc.binary_join_element_wise("[", pc.cast(pa.array(np.arange(counts.max())), pa.string()), "]", "")
    return pc.binary_join_element_wise(prefix, pc.take(indexes, pa.array(index)), "")


def _text(values: np.ndarray) -> pa.Array:
    """Values as text: a route or method that came as a number or list is shown, not lost."""
    try:
        return pa.array(values, type=pa.string(), from_pandas=True)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return pa.array([v if v is None or isinstance(v, str) else str(v) for v in values], type=pa.string())


def _frame(blocks: list[_Block], source_object: str | None) -> pd.DataFrame:
    """The collected blocks as one spans table: tags, ids, times and numbers finished vectorised."""
    blocks = [b for b in blocks if len(b)]
    if not blocks:
        return schema.empty("spans")
    n = sum(len(b) for b in blocks)
    first = np.cumsum([0] + [len(b) for b in blocks[:-1]])

    def joined(parts: list) -> Any:
        if len(parts) == 1:  # the usual single document part: no copy
            return parts[0]
        return np.concatenate(parts) if isinstance(parts[0], np.ndarray) else pa.concat_arrays(parts)

    def cat(name: str) -> Any:
        return joined([b.columns[name] for b in blocks])

    t = _tag_columns(joined([b.tag_keys for b in blocks]), joined([b.tag_values for b in blocks]),
                     joined([b.tag_span + o for b, o in zip(blocks, first, strict=True)]), n)
    start_ns, dur_ns = cat("start"), cat("duration")
    end_ns = np.where(start_ns == NAT_NS, NAT_NS, start_ns + dur_ns)
    error = cat("error") | t["error"]
    # status message: OTLP status, else otel.status_description, else an error span's exception
    message = pc.coalesce(cat("status_message"), t["status_message"])
    message = pc.if_else(pa.array(error), pc.coalesce(message, cat("exception")), message)
    frame = pd.DataFrame({
        "trace_id": _string(normalise_ids(cat("trace_id"), 32)),
        "span_id": _string(normalise_ids(cat("span_id"), 16)),
        "parent_span_id": _string(normalise_ids(cat("parent_span_id"), 16, zero_is_null=True)),
        "service": _string(cat("service")),
        "operation": _string(cat("operation")),
        "kind": _string(pc.utf8_lower(pc.coalesce(cat("kind"), t["kind"]))),
        "start": pd.Series(start_ns.view("datetime64[ns]")).dt.tz_localize("UTC"),
        "duration_ms": dur_ns / 1e6,
        "end": pd.Series(end_ns.view("datetime64[ns]")).dt.tz_localize("UTC"),
        "error": pd.array(error, dtype=schema.BOOL),
        "status_message": _string(message),
        "http_method": _string(t["http_method"]),
        "http_route": _string(t["http_route"]),
        "http_status_code": t["http_status_code"],
        "message_id": _string(t["message_id"]),
        "tags": _string(t["tags"]),
        "logs": _string(cat("logs")),
        "warnings": _string(cat("warnings")),
        "source": _string(pa.repeat(pa.scalar("jaeger", pa.string()), n)),
        "source_object": _string(pa.repeat(pa.scalar(source_object, pa.string()), n)),
        "source_ref": _string(_json_paths([p for b in blocks for p in b.paths])),
    })
    return schema.conform("spans", frame)


class _Parts:
    """The blocks of a document, in document order. Consecutive v1 parts (a JSON Lines file of
    traces, an array of envelopes) are kept back and made one block (many small blocks cost
    more than one), unless their spans must be coerced or anything fails: then block by block,
    as on their own, so that coercion and the error raised are those of each part alone."""

    def __init__(self) -> None:
        self.blocks: list[_Block] = []
        self.v1: list[tuple[list[Mapping], list[str]]] = []

    def add_v1(self, traces: list[Mapping], prefixes: list[str]) -> None:
        self.v1.append((traces, prefixes))

    def done(self) -> list[_Block]:
        """The blocks so far, v1 parts kept back included (call before anything else can fail,
        so that the first failure in document order is the one raised)."""
        if len(self.v1) > 1:
            try:
                self.blocks.append(_v1_block([t for ts, _ in self.v1 for t in ts], [p for _, ps in self.v1 for p in ps],
                                             as_is=True))
            except Exception:  # noqa: BLE001 - redone part by part, which raises the first failure
                self.blocks.extend(_v1_block(ts, ps) for ts, ps in self.v1)
        elif self.v1:
            self.blocks.append(_v1_block(*self.v1[0]))
        self.v1 = []
        return self.blocks


def _is_v1_trace(doc: Any) -> bool:
    return isinstance(doc, Mapping) and "spans" in doc and "resourceSpans" not in doc


def _collect(doc: Any, parts: _Parts, where: str) -> None:
    """Find the spans in ``doc`` (any accepted shape) and add them to ``parts``."""
    if isinstance(doc, list):
        if doc and all(isinstance(d, Mapping) and "spanID" in d for d in doc):
            parts.add_v1([{"spans": doc}], [where.rstrip(".")])  # a bare array of v1 spans
        elif doc and all(_is_v1_trace(d) for d in doc):
            parts.add_v1(doc, [f"{where}[{i}].spans" for i in range(len(doc))])
        else:
            for i, item in enumerate(doc):
                _collect(item, parts, f"{where}[{i}].")
        return
    if not isinstance(doc, Mapping):
        parts.done()
        raise TraceFileError(f"{where or 'document'}: expected a JSON object or array, got {type(doc).__name__}")
    if "resourceSpans" in doc:
        parts.done().append(_otlp_block(doc.get("resourceSpans") or (), where))
    elif isinstance(doc.get("result"), Mapping) and "resourceSpans" in doc["result"]:
        parts.done().append(_otlp_block(doc["result"].get("resourceSpans") or (), f"{where}result."))
    elif "data" in doc and (doc["data"] is None or isinstance(doc["data"], list | Mapping)):
        data = doc["data"] or []
        data = data if isinstance(data, list) else [data]
        for i, trace in enumerate(data):
            if not isinstance(trace, Mapping):
                parts.done()
                raise TraceFileError(f"{where}data[{i}]: expected a trace object, got {type(trace).__name__}")
        parts.add_v1(data, [f"{where}data[{i}].spans" for i in range(len(data))])
    elif "spans" in doc:
        parts.add_v1([doc], [f"{where}spans"])
    else:
        parts.done()
        keys = ", ".join(map(str, list(doc)[:6])) or "none"
        raise TraceFileError(f"{where or 'document'}: not a Jaeger or OTLP trace document (keys: {keys}); "
                             "expected data, spans, resourceSpans or result.resourceSpans")


def parse_traces(doc: Any, source_object: str | None = None) -> pd.DataFrame:
    """Decoded JSON of any Jaeger/OTLP trace shape -> the canonical ``spans`` table.

    Accepts ``{"data": [trace, ...]}`` (v1 API answers and UI downloads), one v1 trace
    ``{"traceID", "spans", "processes"}``, a bare list of traces or of such documents,
    ``{"resourceSpans": [...]}`` (OTLP JSON) and ``{"result": {"resourceSpans": ...}}``
    (api/v3). ``source_object`` names the file or endpoint; ``source_ref`` of each row is
    the JSON path of the span within it (``data[0].spans[3]``), so duplicates can be told apart.
    Times are nanoseconds internally; v1 microseconds and OTLP nanoseconds are both exact.
    """
    return _parse([(doc, "")], source_object)


def _without_lone_surrogates(obj: Any) -> Any:
    """``obj`` with every lone surrogate in its strings (JSON allows ``"\\ud800"``, UTF-8
    cannot hold it) replaced by U+FFFD."""
    if isinstance(obj, str):
        return schema.storable_text(obj)
    if isinstance(obj, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_without_lone_surrogates(v) for v in obj]
    return obj


def _parse(items: list[tuple[Any, str]], source_object: str | None) -> pd.DataFrame:
    """Decoded documents (each with its JSON-path prefix) -> the spans table; documents with
    a lone surrogate in a string are read again with it replaced (rare: only then the cost)."""
    try:
        return _parse_once(items, source_object)
    except UnicodeEncodeError:
        return _parse_once([(_without_lone_surrogates(doc), prefix) for doc, prefix in items], source_object)


def _parse_once(items: list[tuple[Any, str]], source_object: str | None) -> pd.DataFrame:
    parts = _Parts()
    for doc, prefix in items:
        _collect(doc, parts, prefix)
    return _frame(parts.done(), source_object)


def read_trace_file(path: str | Path) -> pd.DataFrame:
    """A trace file (any shape :func:`parse_traces` takes, or JSON Lines of them) -> spans table."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise TraceFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        items = [(json.loads(text), "")]
    except json.JSONDecodeError as whole:
        lines = text.splitlines()
        if whole.msg != "Extra data" or len(lines) < 2:
            raise TraceFileError(f"{path}: not JSON ({whole.msg} at line {whole.lineno})") from whole
        items = []
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                items.append((json.loads(line), f"line {n}: "))
            except json.JSONDecodeError as exc:
                _parse(items, path.name)  # a failure in an earlier line is the one to report
                raise TraceFileError(f"{path}: line {n} of JSON Lines is not JSON ({exc.msg})") from exc
    return _parse(items, path.name)


def tag_values(spans: pd.DataFrame, key: str) -> pd.Series:
    """The value of tag ``key`` on each span as text (<NA> where absent), wherever the parser put it.

    Known tags live in columns (``http.status_code`` -> http_status_code, ``error`` ->
    error as "true"/"false"), the others in the JSON ``tags`` map.
    """
    column = _TAG_COLUMN.get(key)
    if column is not None:
        values = spans[column]
        if column == "error":
            return values.map({True: "true", False: "false"}).astype(schema.STR)
        return values.astype(schema.STR)
    has = spans["tags"].str.contains(json.dumps(key), regex=False).fillna(False).astype(bool)
    out = pd.Series(pd.NA, index=spans.index, dtype=schema.STR)
    if has.any():
        def one(text: str) -> str | None:
            value = json.loads(text).get(key)
            if value is None:
                return None
            return ("true" if value else "false") if isinstance(value, bool) else str(value)
        out[has] = spans.loc[has, "tags"].map(one)
    return out


# ---------------------------------------------------------------------------------------------
# structure: parents, flags, tree
# ---------------------------------------------------------------------------------------------

def _keys(frame: pd.DataFrame, column: str) -> pd.Index:
    """``trace_id/<column>`` per row, for hash lookups of (trace, span) pairs."""
    joined = pc.binary_join_element_wise(pa.array(frame["trace_id"].array), pa.array(frame[column].array),
                                         pa.scalar("/", pa.large_string()))
    return pd.Index(_string(joined))


def _ns(series: pd.Series) -> np.ndarray:
    return series.to_numpy(dtype="datetime64[ns]", na_value=np.datetime64("NaT")).view("int64")


@dataclass(frozen=True)
class _Structure:
    """Parent links of a spans frame with one row per (trace_id, span_id): positions, not ids."""

    frame: pd.DataFrame
    """The spans, first occurrence of each (trace_id, span_id), index reset."""
    parent: np.ndarray
    """Row position of the parent, -1 for a root or an orphan (parent not in the trace)."""
    root: np.ndarray
    """Row position of the root of the span's tree, -1 when the span hangs under a cycle."""
    depth: np.ndarray
    """0 for roots, -1 under a cycle."""
    start: np.ndarray
    end: np.ndarray


def _structure(spans: pd.DataFrame) -> _Structure:
    first = ~_keys(spans, "span_id").duplicated(keep="first")
    frame = spans.loc[first].reset_index(drop=True)
    keys = _keys(frame, "span_id")
    parent = keys.get_indexer(_keys(frame, "parent_span_id")).astype("int64")
    n = len(frame)
    pos = np.arange(n)
    # Pointer jumping: after k rounds every span knows its 2^k-th ancestor and the distance;
    # roots point at themselves, so log2(n) rounds reach the root of every acyclic chain.
    jump = np.where(parent >= 0, parent, pos)
    dist = (parent >= 0).astype("int64")
    for _ in range(max(1, int(np.ceil(np.log2(max(n, 2)))) + 1)):
        dist = dist + dist[jump]
        jump = jump[jump]
    reached = parent[jump] < 0 if n else np.zeros(0, bool)
    root = np.where(reached, jump, -1)
    depth = np.where(reached, dist, -1)
    return _Structure(frame, parent, root, depth, _ns(frame["start"]), _ns(frame["end"]))


def _cycle_members(st: _Structure) -> np.ndarray:
    """Positions on a reference cycle (each is its own ancestor); spans merely below one are not."""
    on_cycle = np.zeros(len(st.parent), bool)
    state: dict[int, int] = {}
    for s in np.flatnonzero(st.root < 0):
        path, node = [], int(s)
        while node >= 0 and node not in state:
            state[node] = 1
            path.append(node)
            node = int(st.parent[node])
        if node >= 0 and state.get(node) == 1 and node in path:
            on_cycle[path[path.index(node):]] = True
        for p in path:
            state[p] = 2
    return on_cycle


def span_flags(spans: pd.DataFrame) -> pd.DataFrame:
    """Data-quality flags, one row per row of ``spans`` (same order and index).

    Columns: trace_id, span_id and the boolean flags
    - ``orphan``: the span names a parent that is not in the trace (not sampled, not
      flushed yet, or lost);
    - ``clock_skew``: the span starts before its parent or ends after it (host clocks
      disagree, or an asynchronous child outlives its caller); ``skew_ms`` is the larger
      overhang in milliseconds;
    - ``duplicate_span_id``: another row of the same trace has this span id (every copy is flagged);
    - ``cycle``: the span lies on a reference cycle (A's parent is B, B's parent is A), so
      the trace has no single root there.
    """
    st = _structure(spans)
    keys = _keys(spans, "span_id")
    pos = pd.Index(_keys(st.frame, "span_id")).get_indexer(keys)
    parent = st.parent[pos]
    has_parent_ref = spans["parent_span_id"].notna().to_numpy()
    start, end = _ns(spans["start"]), _ns(spans["end"])
    pstart = np.where(parent >= 0, st.start[parent], 0)
    pend = np.where(parent >= 0, st.end[parent], 0)
    before = np.where(parent >= 0, pstart - start, 0)
    after = np.where(parent >= 0, end - pend, 0)
    skew = (parent >= 0) & ((before > 0) | (after > 0))
    on_cycle = _cycle_members(st)[pos]
    return pd.DataFrame({
        "trace_id": spans["trace_id"].to_numpy(),
        "span_id": spans["span_id"].to_numpy(),
        "orphan": has_parent_ref & (parent < 0) & ~on_cycle,
        "clock_skew": skew,
        "skew_ms": np.where(skew, np.maximum(before, after) / 1e6, 0.0),
        "duplicate_span_id": keys.duplicated(keep=False),
        "cycle": on_cycle,
    }, index=spans.index).astype({"trace_id": schema.STR, "span_id": schema.STR, "orphan": schema.BOOL,
                                  "clock_skew": schema.BOOL, "duplicate_span_id": schema.BOOL,
                                  "cycle": schema.BOOL})


def _self_ns(st: _Structure) -> np.ndarray:
    """Span duration minus the union of its children's intervals clipped to the span (ns)."""
    n = len(st.parent)
    child = np.flatnonzero(st.parent >= 0)
    par = st.parent[child]
    cs = np.maximum(st.start[child], st.start[par])
    ce = np.minimum(st.end[child], st.end[par])
    keep = ce > cs
    par, cs, ce = par[keep], cs[keep], ce[keep]
    order = np.lexsort((cs, par))
    par, cs, ce = par[order], cs[order], ce[order]
    # Union length per parent: each interval adds what reaches past the furthest end so far.
    reach = pd.Series(ce).groupby(par).cummax().to_numpy()
    prev = np.empty_like(reach)
    if len(reach):
        prev[0] = np.iinfo("int64").min
        prev[1:] = reach[:-1]
        prev[np.r_[True, par[1:] != par[:-1]]] = np.iinfo("int64").min
    covered = np.clip(ce - np.maximum(cs, prev), 0, None)
    total = np.bincount(par, weights=covered, minlength=n) if len(par) else np.zeros(n)
    return np.clip((st.end - st.start) - total, 0, None)


def span_tree(spans: pd.DataFrame) -> pd.DataFrame:
    """Each trace's tree: one row per span (first copy of a duplicated id), in depth-first order.

    Columns: trace_id, span_id, parent_span_id, root_span_id (the root of the span's tree;
    an orphan is the root of its own), depth (0 = root; <NA> under a cycle), children,
    service, operation, start, end, duration_ms, self_ms (duration minus the union of its
    children's time, clipped to the span), error.
    """
    st = _structure(spans)
    f = st.frame
    children = np.bincount(st.parent[st.parent >= 0], minlength=len(f))
    root_ids = f["span_id"].to_numpy()[np.where(st.root >= 0, st.root, 0)] if len(f) else np.array([])
    out = pd.DataFrame({
        "trace_id": f["trace_id"],
        "span_id": f["span_id"],
        "parent_span_id": f["parent_span_id"],
        "root_span_id": pd.Series(root_ids, dtype=schema.STR).where(st.root >= 0),
        "depth": pd.Series(st.depth).where(st.depth >= 0).astype(schema.INT),
        "children": pd.array(children, dtype=schema.INT),
        "service": f["service"],
        "operation": f["operation"],
        "start": f["start"],
        "end": f["end"],
        "duration_ms": f["duration_ms"],
        "self_ms": _self_ns(st) / 1e6,
        "error": f["error"],
    })
    order = _depth_first(st)
    return out.iloc[order].reset_index(drop=True)


def _depth_first(st: _Structure) -> np.ndarray:
    """Row positions in depth-first order, children by start time; spans under cycles last."""
    kids: dict[int, list[int]] = defaultdict(list)
    by_start = np.argsort(st.start, kind="stable")
    for c in by_start:
        if st.parent[c] >= 0:
            kids[int(st.parent[c])].append(int(c))
    trace_ids = st.frame["trace_id"].to_numpy()
    roots = [int(r) for r in by_start if st.parent[r] < 0]
    roots.sort(key=lambda r: (trace_ids[r], st.start[r]))
    out: list[int] = []
    stack = roots[::-1]
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(reversed(kids.get(node, ())))
    seen = np.zeros(len(st.parent), bool)
    seen[out] = True
    return np.concatenate([np.array(out, dtype="int64"), np.flatnonzero(~seen)])


# ---------------------------------------------------------------------------------------------
# critical path
# ---------------------------------------------------------------------------------------------

def _critical_sections(parent: np.ndarray, start: np.ndarray, end: np.ndarray, root: int
                       ) -> list[tuple[int, int, int]]:
    """Critical-path sections (span position, section start ns, section end ns) of one tree.

    See :func:`critical_path` for the method. Works on positions within one trace.
    """
    # 1. Clip children to their (already clipped) parent, top down; drop children that lie
    #    wholly outside it, and with them their subtrees.
    kids: dict[int, list[int]] = defaultdict(list)
    for c in np.flatnonzero(parent >= 0):
        kids[int(parent[c])].append(int(c))
    cs: dict[int, int] = {root: int(start[root])}
    ce: dict[int, int] = {root: int(end[root])}
    queue = [root]
    for node in queue:
        ps, pe = cs[node], ce[node]
        for c in kids.get(node, ()):
            s, e = int(start[c]), int(end[c])
            if (s >= pe) if s >= ps else (e <= ps):
                continue
            cs[c], ce[c] = max(s, ps), min(e, pe)
            queue.append(c)
    # 2. Children of each span sorted by clipped end (ties: the earlier start wins).
    ends: dict[int, list[int]] = {}
    order: dict[int, list[int]] = {}
    for node in queue:
        live = sorted((c for c in kids.get(node, ()) if c in cs), key=lambda c: (ce[c], -cs[c]))
        if live:
            order[node] = live
            ends[node] = [ce[c] for c in live]
    # 3. Walk back from the root's end.
    sections: list[tuple[int, int, int]] = []
    node, cursor = root, None
    while True:
        limit = ce[node] if cursor is None else cursor
        child = None
        if node in order:
            live, live_ends = order[node], ends[node]
            i = bisect.bisect_right(live_ends, limit) - 1
            # a child ending at the cursor counts (back-to-back siblings); the child we
            # returned from, or a zero-length one at the cursor, does not
            while i >= 0 and cs[live[i]] >= limit and cursor is not None:
                i -= 1
            child = live[i] if i >= 0 else None
        if child is not None:
            if ce[child] < limit:
                sections.append((node, ce[child], limit))
            node, cursor = child, None
            continue
        if cs[node] < limit:
            sections.append((node, cs[node], limit))
        if node == root:
            break
        node, cursor = int(parent[node]), cs[node]
    return sections


def critical_path(spans: pd.DataFrame, trace_id: str | None = None) -> pd.DataFrame:
    """The critical path of each trace (or of ``trace_id``): the chain of work that set its end.

    Method (Jaeger UI's, ``TracePage/CriticalPath``), per tree of the trace:

    1. Clip children to their parent, top down: a child that starts before its parent or
       ends after it (clock skew, or an asynchronous child) is cut to the parent's span; a
       child wholly outside its parent is dropped with its subtree. A parent can only wait
       on work inside its own span.
    2. Walk back from the end of the root. At a span with cursor ``t`` (its end at first),
       take the last-finishing child that ends at or before ``t``. The time between that
       child's end and ``t`` belongs to the span itself (a section of the path); then
       descend into the child and repeat from its end.
    3. A span with no such child owns everything from its own start to ``t``; the walk
       then returns to the parent with the cursor moved to this span's start, so the next
       child taken is one that had finished before this span began.
    4. Overlapping siblings: of children running at the same time only the one that
       finished last is on the path; a sibling that ends after the cursor (it overlaps the
       child already walked) is skipped, its time is not blocking.

    One deliberate difference from the UI: it takes children ending strictly before the
    cursor, so a child that ends exactly when the next one starts (back-to-back sequential
    calls) falls off the path and its time goes to the parent. Here a child ending at the
    cursor counts; the child just returned from is excluded by its start.

    Spans whose parent is missing (orphans) root trees of their own and get a path each;
    spans under a reference cycle have no root and no path. Duplicated span ids: the first
    copy counts. Iterative (no recursion limit); O(n log n) per trace.

    Returns one row per section, ordered by trace, root and time: trace_id, root_span_id,
    span_id, service, operation, section_start, section_end (UTC), section_ms.
    """
    if trace_id is not None:
        spans = spans[spans["trace_id"] == trace_id.lower().rjust(32, "0")]
    st = _structure(spans)
    rows_span, rows_root, rows_s, rows_e = [], [], [], []
    trace_codes, _ = pd.factorize(st.frame["trace_id"])
    order = np.argsort(trace_codes, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(trace_codes[order]) != 0, True])
    for a, b in zip(bounds[:-1], bounds[1:], strict=False):
        idx = order[a:b]
        local = np.full(len(st.parent), -1, dtype="int64")
        local[idx] = np.arange(len(idx))
        parent = np.where(st.parent[idx] >= 0, local[st.parent[idx]], -1)
        start, end = st.start[idx], st.end[idx]
        roots = [r for r in np.flatnonzero(parent < 0) if st.root[idx[r]] >= 0]
        roots.sort(key=lambda r: start[r])
        for r in roots:
            for node, s, e in _critical_sections(parent, start, end, int(r)):
                rows_span.append(idx[node])
                rows_root.append(idx[r])
                rows_s.append(s)
                rows_e.append(e)
    f = st.frame
    span_pos = np.array(rows_span, dtype="int64")
    s_ns, e_ns = np.array(rows_s, dtype="int64"), np.array(rows_e, dtype="int64")
    out = pd.DataFrame({
        "trace_id": f["trace_id"].to_numpy()[span_pos],
        "root_span_id": f["span_id"].to_numpy()[np.array(rows_root, dtype="int64")],
        "span_id": f["span_id"].to_numpy()[span_pos],
        "service": f["service"].to_numpy()[span_pos],
        "operation": f["operation"].to_numpy()[span_pos],
        "section_start": pd.Series(s_ns.view("datetime64[ns]")).dt.tz_localize("UTC"),
        "section_end": pd.Series(e_ns.view("datetime64[ns]")).dt.tz_localize("UTC"),
        "section_ms": (e_ns - s_ns) / 1e6,
    }).astype({c: schema.STR for c in ("trace_id", "root_span_id", "span_id", "service", "operation")})
    return out.sort_values(["trace_id", "root_span_id", "section_start"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# summaries
# ---------------------------------------------------------------------------------------------

def self_time_by_service(spans: pd.DataFrame) -> pd.DataFrame:
    """Where the time went, per service: span count, total and self time (ms), share of all self time.

    Self time of a span = its duration minus the union of its children's intervals clipped
    to it (so overlapping children are not counted twice). Sorted by self time, largest first.
    """
    tree = span_tree(spans)
    out = (tree.groupby("service", dropna=False)
           .agg(spans=("span_id", "size"), duration_ms=("duration_ms", "sum"), self_ms=("self_ms", "sum"))
           .reset_index())
    total = out["self_ms"].sum()
    out["self_share"] = out["self_ms"] / total if total else 0.0
    return out.sort_values("self_ms", ascending=False, kind="stable").reset_index(drop=True)


def error_spans(spans: pd.DataFrame) -> pd.DataFrame:
    """Spans marked as errors (error tag or OTLP status ERROR) with their messages, oldest first."""
    cols = ["trace_id", "span_id", "service", "operation", "start", "duration_ms", "status_message",
            "http_method", "http_route", "http_status_code", "message_id", "logs"]
    err = spans[spans["error"].fillna(False).astype(bool)]
    return err[cols].sort_values("start", kind="stable").reset_index(drop=True)


def latency_percentiles(spans: pd.DataFrame, by: tuple[str, ...] = ("service", "operation"),
                        percentiles: tuple[float, ...] = (50, 90, 95, 99)) -> pd.DataFrame:
    """Span duration percentiles (ms) per ``by`` group, with count, error count and maximum."""
    keys = list(by)
    columns = keys + ["spans", "errors"] + [f"p{p:g}_ms" for p in percentiles] + ["max_ms"]
    if spans.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
    g = spans.groupby(keys, dropna=False)
    out = g.agg(spans=("span_id", "size"), errors=("error", "sum"), max_ms=("duration_ms", "max"))
    q = g["duration_ms"].quantile([p / 100 for p in percentiles]).unstack()
    q.columns = [f"p{p:g}_ms" for p in percentiles]
    out = out.join(q).reset_index()
    out["errors"] = out["errors"].astype(schema.INT)
    return out[columns]


def dependency_edges(spans: pd.DataFrame) -> pd.DataFrame:
    """Calls between services (parent span's service -> child span's service) with counts.

    Same edges as Jaeger's ``/api/dependencies`` (only calls that cross a service
    boundary); ``error_count`` counts calls whose child span is an error.
    """
    st = _structure(spans)
    f = st.frame
    child = np.flatnonzero(st.parent >= 0)
    edges = pd.DataFrame({
        "parent": f["service"].to_numpy()[st.parent[child]],
        "child": f["service"].to_numpy()[child],
        "error": f["error"].fillna(False).to_numpy(dtype=bool)[child],
    })
    edges = edges[edges["parent"] != edges["child"]]
    out = edges.groupby(["parent", "child"], dropna=False).agg(call_count=("error", "size"),
                                                               error_count=("error", "sum")).reset_index()
    out = out.astype({"parent": schema.STR, "child": schema.STR, "call_count": schema.INT,
                      "error_count": schema.INT})
    return out.sort_values("call_count", ascending=False, kind="stable").reset_index(drop=True)


def waterfall(spans: pd.DataFrame, trace_id: str) -> pd.DataFrame:
    """One trace laid out as the Jaeger UI draws it: depth-first rows, offsets from the trace start.

    Columns: span_id, depth, label (service: operation), offset_ms, duration_ms, error,
    status_message, critical_ms (time of the span on the critical path).
    """
    tid = trace_id.lower().rjust(32, "0")
    one = spans[spans["trace_id"] == tid]
    if one.empty:
        raise ForensicsError(f"trace {tid} is not among the spans")
    tree = span_tree(one)
    cp = critical_path(one).groupby("span_id")["section_ms"].sum()
    t0 = tree["start"].min()
    msgs = one.drop_duplicates("span_id").set_index("span_id")["status_message"]
    return pd.DataFrame({
        "span_id": tree["span_id"],
        "depth": tree["depth"],
        "label": tree["service"].fillna("?") + ": " + tree["operation"].fillna("?"),
        "offset_ms": (tree["start"] - t0).dt.total_seconds() * 1000,
        "duration_ms": tree["duration_ms"],
        "error": tree["error"],
        "status_message": tree["span_id"].map(msgs),
        "critical_ms": tree["span_id"].map(cp).fillna(0.0).astype(float),
    })


def waterfall_figure(spans: pd.DataFrame, trace_id: str):
    """A plotly waterfall (Gantt-like bars) of one trace; errors red, critical path outlined."""
    import plotly.graph_objects as go

    w = waterfall(spans, trace_id)
    labels = ["  " * int(d if pd.notna(d) else 0) + lab for d, lab in zip(w["depth"], w["label"], strict=True)]
    colors = ["#d62728" if e else "#1f77b4" for e in w["error"].fillna(False)]
    fig = go.Figure(go.Bar(
        x=w["duration_ms"], base=w["offset_ms"], y=labels, orientation="h", marker_color=colors,
        marker_line_width=[2 if c > 0 else 0 for c in w["critical_ms"]], marker_line_color="#ff7f0e",
        hovertext=w["status_message"].fillna(""),
    ))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_layout(title=f"trace {trace_id}", xaxis_title="ms from trace start", height=120 + 22 * len(w),
                      showlegend=False)
    return fig


# ---------------------------------------------------------------------------------------------
# correlation with messages
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TimeWindowRule:
    """Where a message without a message-id tag should show in the traces.

    A span is a candidate for a message when its service is one of ``services`` (``None``:
    the connector of the message's channel, from the profile), its HTTP route (or, without
    one, its operation) matches ``route`` (a regex) and it starts within
    [anchor - before_s, anchor + after_s], ``anchor`` being a column of the messages table.
    """

    name: str
    services: tuple[str, ...] | None
    route: str
    anchor: str = "created_at"
    before_s: float = 1.0
    after_s: float = 2.0


def default_rules(profile: str | Profile | None = None) -> list[TimeWindowRule]:
    """The API hop (gateway/message-service POST on a messages route around creation) and
    the connector hop (the channel's connector around the last update)."""
    p = load_profile(profile)
    return [
        # the request reaches the gateway a few ms before message-service stamps created_at
        TimeWindowRule("api", (p.services.api_gateway, p.services.message_service), r"^/api(?:/v\d+)?/messages/?$",
                       "created_at", 1.0, 0.1),
        # the last connector call ends shortly before the final status is written
        TimeWindowRule("connector", None, r"(?i)/messages|send|webhook", "updated_at", 5.0, 0.5),
    ]


TIME_WINDOW_CONFIDENCE = 0.8
"""Confidence of a time-window match with a single candidate trace; divided by the candidate count."""


@dataclass
class Correlation:
    """Spans matched to messages, and messages with no trace."""

    matches: pd.DataFrame
    """message_id, trace_id, span_id, service, operation, method ("tag" or "time_window"),
    rule, confidence (0..1), candidates (traces that fit), delta_ms (span start - anchor)."""
    untraced: pd.DataFrame
    """message_id, channel, status, created_at: messages with no matching span (sampling
    gaps, or spans outside the collected window)."""


def correlate_messages(spans: pd.DataFrame, messages: pd.DataFrame, profile: str | Profile | None = None,
                       rules: list[TimeWindowRule] | None = None, max_candidates: int = 5) -> Correlation:
    """Join spans to messages: by message-id tag where one exists, else by service, time and route.

    - ``tag``: the span carries the message id (:data:`MESSAGE_ID_TAGS`); confidence 1.0.
    - ``time_window``: for a message with no tagged span, each :class:`TimeWindowRule`
      collects the traces with a fitting span; each is a match with confidence
      ``TIME_WINDOW_CONFIDENCE / candidates`` (two candidate traces: 0.4 each), the span
      nearest the anchor standing for its trace. Only the ``max_candidates`` nearest
      traces are listed; ``candidates`` still counts them all.
    """
    rules = default_rules(profile) if rules is None else rules
    prof = load_profile(profile)
    cols = ["message_id", "trace_id", "span_id", "service", "operation", "method", "rule", "confidence",
            "candidates", "delta_ms"]
    tagged = spans[spans["message_id"].notna() & spans["message_id"].isin(messages["message_id"])]
    tag_matches = (tagged.sort_values("start", kind="stable").drop_duplicates(["message_id", "trace_id"])
                   .assign(method="tag", rule=None, confidence=1.0, delta_ms=np.nan))
    tag_matches["candidates"] = tag_matches.groupby("message_id")["trace_id"].transform("size")
    parts = [tag_matches[cols]]
    rest = messages[~messages["message_id"].isin(tagged["message_id"])]
    for rule in rules:
        parts.append(_time_window_matches(spans, rest, rule, prof, max_candidates)[cols])
    matches = pd.concat([p for p in parts if len(p)] or [parts[0]], ignore_index=True)
    matches = matches.astype({"message_id": schema.STR, "trace_id": schema.STR, "span_id": schema.STR,
                              "service": schema.STR, "operation": schema.STR, "method": schema.STR,
                              "rule": schema.STR, "confidence": "float64", "candidates": schema.INT,
                              "delta_ms": "float64"})
    untraced = messages[~messages["message_id"].isin(matches["message_id"])]
    return Correlation(matches.reset_index(drop=True),
                       untraced[["message_id", "channel", "status", "created_at"]].reset_index(drop=True))


def _time_window_matches(spans: pd.DataFrame, messages: pd.DataFrame, rule: TimeWindowRule,
                         profile: Profile, max_candidates: int) -> pd.DataFrame:
    """Candidate traces per message for one rule, vectorised per service with searchsorted."""
    route_text = spans["http_route"].fillna(spans["operation"]).fillna("")
    eligible = spans[route_text.str.contains(rule.route, regex=True)]
    if rule.services is None:
        wanted = messages["channel"].map(lambda c: profile.services.connector(c) if isinstance(c, str) else None)
    else:
        wanted = pd.Series([rule.services] * len(messages), index=messages.index)
    anchor = _ns(messages[rule.anchor]) if rule.anchor in messages else np.full(len(messages), NAT_NS)
    pieces = []
    for service, group in eligible.groupby("service"):
        has = wanted.map(lambda w, s=service: w == s if isinstance(w, str) else (w is not None and s in w))
        m_idx = np.flatnonzero(has.to_numpy(dtype=bool) & (anchor != NAT_NS))
        if not len(m_idx):
            continue
        g = group.sort_values("start", kind="stable")
        starts = _ns(g["start"])
        lo = np.searchsorted(starts, anchor[m_idx] - int(rule.before_s * 1e9), side="left")
        hi = np.searchsorted(starts, anchor[m_idx] + int(rule.after_s * 1e9), side="right")
        counts = hi - lo
        msg_rows = np.repeat(m_idx, counts)
        span_rows = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi, strict=True)]) if counts.sum() else \
            np.zeros(0, dtype="int64")
        pieces.append(pd.DataFrame({
            "message_id": messages["message_id"].to_numpy()[msg_rows],
            "trace_id": g["trace_id"].to_numpy()[span_rows],
            "span_id": g["span_id"].to_numpy()[span_rows],
            "service": g["service"].to_numpy()[span_rows],
            "operation": g["operation"].to_numpy()[span_rows],
            "delta_ms": (starts[span_rows] - anchor[msg_rows]) / 1e6,
        }))
    if not pieces:
        return pd.DataFrame(columns=["message_id", "trace_id", "span_id", "service", "operation", "method", "rule",
                                     "confidence", "candidates", "delta_ms"])
    cand = pd.concat(pieces, ignore_index=True)
    cand["abs_delta"] = cand["delta_ms"].abs()
    cand = cand.sort_values(["message_id", "abs_delta"], kind="stable").drop_duplicates(["message_id", "trace_id"])
    cand["candidates"] = cand.groupby("message_id")["trace_id"].transform("size")
    cand["confidence"] = TIME_WINDOW_CONFIDENCE / cand["candidates"]
    cand["method"] = "time_window"
    cand["rule"] = rule.name
    cand = cand[cand.groupby("message_id").cumcount() < max_candidates]
    return cand.drop(columns="abs_delta")
