"""Traces: spans from every file shape Jaeger users have, span flags, derived views, correlation.

Parsing
    :func:`parse_traces` turns decoded JSON of any shape the Jaeger UI accepts into the
    canonical ``spans`` table (:data:`forensics.schema.SPANS`): v1 ``{"data": [...]}``
    envelopes (UI downloads, ``/api/traces`` answers), single v1 traces, bare arrays of
    traces, OTLP JSON ``{"resourceSpans": [...]}`` and api/v3's
    ``{"result": {"resourceSpans": [...]}}``. :func:`read_trace_file` adds JSON Lines.
    v1 spans are read by pyarrow straight from the decoded dicts (fixed fields in C++),
    tag values in one Python pass; tags then become columns and JSON text column-wise,
    and ids are normalised with pyarrow kernels (trace ids 32 lowercase hex, left padded;
    OTLP base64 ids decoded). No per-span DataFrame or json_normalize anywhere.

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
    :data:`NAT_NS`); tags stay flat: ``tag_keys[j]``/``tag_values[j]`` belong to span ``tag_span[j]``.
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


_V1_SPAN = pa.struct([
    ("traceID", pa.string()), ("spanID", pa.string()), ("operationName", pa.string()),
    ("references", pa.list_(pa.struct([("refType", pa.string()), ("spanID", pa.string())]))),
    ("startTime", pa.int64()), ("duration", pa.int64()),
    ("tags", pa.list_(pa.struct([("key", pa.string())]))),
    ("logs", pa.list_(pa.struct([("timestamp", pa.int64())]))),
    ("processID", pa.string()), ("process", pa.struct([("serviceName", pa.string())])),
    ("warnings", pa.list_(pa.string())),
])
"""What is read of a v1 span in C++ (pyarrow converts the dicts); tag values, whose types
vary, and log fields are read in Python."""


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


def _v1_block(traces: list[Mapping], prefixes: list[str]) -> _Block:
    """v1 trace objects (``{"traceID", "spans", "processes"}``) -> one block, vectorised.

    ``prefixes[i]`` is the JSON path of trace i's span list, for ``source_ref``.
    """
    spans: list = []
    counts = []
    for trace in traces:
        s = trace.get("spans") or []
        spans.extend(s)
        counts.append(len(s))
    try:
        arr = pa.array(spans, type=_V1_SPAN)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        spans = [_v1_sanitised(sp) for sp in spans]
        arr = pa.array(spans, type=_V1_SPAN)
    n = len(arr)
    f = dict(zip(_V1_SPAN.names, arr.flatten(), strict=True))
    trace_of = np.repeat(np.arange(len(traces)), counts)
    trace_ids = pa.array([None if t.get("traceID") is None else str(t.get("traceID")) for t in traces], pa.string())
    # service: an embedded process, else the trace's processes[processID] (ids are per trace)
    proc_keys, proc_names = [], []
    for t, trace in enumerate(traces):
        for pid, p in (trace.get("processes") or {}).items():
            proc_keys.append(f"{t}/{pid}")
            proc_names.append((p or {}).get("serviceName") if isinstance(p, Mapping) else None)
    span_proc = pc.binary_join_element_wise(pc.cast(pa.array(trace_of, pa.int64()), pa.string()),
                                            f["processID"], "/")
    service = pc.take(pa.array(proc_names, pa.string()), pc.index_in(span_proc, pa.array(proc_keys, pa.string())))
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
    try:
        tag_values = np.fromiter(map(_VALUE, itertools.chain.from_iterable(map(_TAGS, spans))), dtype=object,
                                 count=len(tag_span))
    except (KeyError, TypeError, ValueError):  # spans without tags, tags without values
        tag_values = np.fromiter(
            (t.get("value") if isinstance(t, Mapping) else None
             for t in itertools.chain.from_iterable(sp.get("tags") or () if sp else () for sp in spans)),
            dtype=object, count=len(tag_span))
    follows = np.flatnonzero(~is_child)
    if len(follows):
        links: dict[int, list] = defaultdict(list)
        for owner, span_id in zip(ref_owner[follows], pc.take(ref_span, pa.array(follows)).to_pylist(), strict=True):
            links[int(owner)].append(span_id)
        tag_keys = pa.concat_arrays([tag_keys, pa.array(["follows_from"] * len(links), pa.string())])
        tag_values = np.concatenate([tag_values, np.fromiter(links.values(), dtype=object, count=len(links))])
        tag_span = np.concatenate([tag_span, np.fromiter(links, dtype="int64", count=len(links))])
    # logs and warnings: few spans have them; read those in Python
    logs = np.full(n, None, dtype=object)
    exception = np.full(n, None, dtype=object)
    for i in np.flatnonzero(pc.fill_null(pc.list_value_length(f["logs"]), 0).to_numpy() > 0):
        logs[i], exception[i] = _v1_logs(spans[i].get("logs"))
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
        "exception": pa.array(exception, pa.string()), "logs": pa.array(logs, pa.string()), "warnings": warnings,
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
    return _Block(columns, _text(np.array(keys, dtype=object)),
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


def normalise_ids(values: Iterable[str | None], width: int, zero_is_null: bool = False) -> pa.Array:
    """Span or trace ids as lowercase hex of ``width`` characters (32 for traces, 16 for spans).

    Hex ids are lower-cased and left-padded with zeros (Jaeger prints a 64-bit trace id as
    16 characters); base64 ids (some OTLP JSON exports) are decoded; with ``zero_is_null``
    (parent ids) an all-zero id, OTLP's "no parent", becomes null.
    """
    arr = values if isinstance(values, pa.Array) else pa.array(values, type=pa.string())
    lower = pc.utf8_lower(arr)
    plain = pc.and_(pc.match_substring_regex(lower, r"^[0-9a-f]+$"), pc.less_equal(pc.utf8_length(lower), width))
    out = pc.utf8_lpad(lower, width=width, padding="0")
    odd = pc.and_(pc.invert(plain), pc.is_valid(arr))
    if pc.any(odd).as_py():
        odd_values = pc.filter(arr, odd).to_pylist()
        fixed = {v: _hex_id(v, width) for v in set(odd_values)}
        out = pc.replace_with_mask(out, odd, pa.array([fixed[v] for v in odd_values], type=pa.string()))
    if zero_is_null:
        out = pc.if_else(pc.equal(out, "0" * width), pa.scalar(None, pa.string()), out)
    return out


def _string(values: list | tuple | np.ndarray | pa.Array | pa.ChunkedArray) -> pd.Series:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = pa.array(values, type=pa.string(), from_pandas=True)
    return pd.Series(pd.arrays.ArrowStringArray(values), dtype=schema.STR)


_NEEDS_ESCAPE = r'[\x00-\x1f"\\]'


def _json_values(values: np.ndarray) -> pa.Array:
    """Each value as JSON text: strings quoted in pyarrow (json.dumps only for the few that need
    escaping), integers via str, the rest (floats, bools, lists, maps) via json.dumps."""
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
        raw = pa.array(values[strs], type=pa.string())
        quoted = pc.binary_join_element_wise('"', raw, '"', "")
        escape = pc.match_substring_regex(raw, _NEEDS_ESCAPE)
        if pc.any(escape).as_py():
            idx = np.flatnonzero(escape.to_numpy(zero_copy_only=False))
            quoted = pc.replace_with_mask(quoted, escape, pa.array([_dumps(v) for v in values[strs[idx]]],
                                                                   type=pa.string()))
        mask = pa.array(is_str)
        text = pc.replace_with_mask(text, mask, quoted)
    return text


def _tag_columns(keys: pa.Array, values: np.ndarray, span_of: np.ndarray, n: int) -> dict[str, Any]:
    """All spans' tags (flat; tag j belongs to span ``span_of[j]``) -> known columns and the JSON
    map of the rest.

    Known columns come back as object arrays with None where the span lacks the tag
    ("error" as a bool array). When a span repeats a key, the last value wins, as in a dict.
    """
    out: dict[str, Any] = {c: np.full(n, None, dtype=object) for c in set(_TAG_COLUMN.values()) - {"error"}}
    out["error"] = np.zeros(n, dtype=bool)
    out["tags"] = pa.nulls(n, pa.string())
    if not len(keys):
        return out
    encoded = keys.dictionary_encode()
    key_names = encoded.dictionary.to_pylist()
    key_idx = pc.fill_null(encoded.indices, len(key_names)).to_numpy()
    key_names.append(None)
    columns = [""] + sorted(out)
    column_of = np.array([columns.index(_TAG_COLUMN.get(k, "")) if k is not None else -1 for k in key_names],
                         dtype="int64")[key_idx]
    route_from = np.full(n, -1, dtype="int64")  # the fallback tag a span's route came from
    for key in _ROUTE_FALLBACKS:  # fallbacks first, so that http.route (below) overwrites them
        if key in key_names:
            at = np.flatnonzero(key_idx == key_names.index(key))
            out["http_route"][span_of[at]] = values[at]
            route_from[span_of[at]] = at
    for code, column in enumerate(columns[1:], start=1):
        at = np.flatnonzero(column_of == code)
        if not len(at):
            continue
        if column == "error":
            hit = np.fromiter((v is True or v == "true" or v == "ERROR" for v in values[at]), dtype=bool,
                              count=len(at))
            np.logical_or.at(out["error"], span_of[at], hit)
        elif column == "message_id":
            out[column][span_of[at]] = [None if v is None else str(v) for v in values[at]]
        else:
            out[column][span_of[at]] = values[at]
            if column == "http_route":
                route_from[span_of[at]] = -1
    # the rest: '"key":value' fragments, sorted by key within each span, joined per span; a
    # URL that became the route (no http.route) is not repeated in the map
    rest = np.setdiff1d(np.flatnonzero(column_of == 0), route_from[route_from >= 0], assume_unique=True)
    if not len(rest):
        return out
    key_rank = np.argsort(np.argsort(np.array(key_names[:-1], dtype=object), kind="stable"), kind="stable")
    rk, rs = key_rank[key_idx[rest]], span_of[rest]
    if not np.all((rs[1:] > rs[:-1]) | ((rs[1:] == rs[:-1]) & (rk[1:] >= rk[:-1]))):
        order = np.lexsort((np.arange(len(rest)), rk, rs))
        rest, rk, rs = rest[order], rk[order], rs[order]
    last = np.r_[(rs[1:] != rs[:-1]) | (rk[1:] != rk[:-1]), True]  # a repeated key: the last one stays
    rest, rs = rest[last], rs[last]
    key_json = pa.array([_dumps(k) + ":" for k in key_names[:-1]], type=pa.string())
    fragments = pc.binary_join_element_wise(pc.take(key_json, pa.array(key_idx[rest])), _json_values(values[rest]),
                                            "")
    per_span = np.bincount(rs, minlength=n)
    offsets = np.concatenate([[0], np.cumsum(per_span)]).astype("int32")
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), fragments), ",")
    out["tags"] = pc.if_else(pa.array(per_span > 0), pc.binary_join_element_wise("{", joined, "}", ""),
                             pa.scalar(None, pa.string()))
    return out


def _json_paths(paths: list[tuple[str, int]]) -> pa.Array:
    """``prefix[i]`` for every span: its JSON path within the document (``data[0].spans[3]``)."""
    counts = np.array([n for _, n in paths], dtype="int64")
    total = int(counts.sum())
    if not total:
        return pa.array([], type=pa.string())
    block = np.repeat(np.arange(len(paths)), counts)
    index = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    prefix = pc.take(pa.array([p for p, _ in paths], type=pa.string()), pa.array(block))
    return pc.binary_join_element_wise(prefix, "[", pc.cast(pa.array(index), pa.string()), "]", "")


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

    def cat(name: str) -> Any:
        parts = [b.columns[name] for b in blocks]
        return np.concatenate(parts) if isinstance(parts[0], np.ndarray) else pa.concat_arrays(parts)

    t = _tag_columns(pa.concat_arrays([b.tag_keys for b in blocks]),
                     np.concatenate([b.tag_values for b in blocks]),
                     np.concatenate([b.tag_span + o for b, o in zip(blocks, first, strict=True)]), n)
    start_ns, dur_ns = cat("start"), cat("duration")
    end_ns = np.where(start_ns == NAT_NS, NAT_NS, start_ns + dur_ns)
    error = cat("error") | t["error"]
    # status message: OTLP status, else otel.status_description, else an error span's exception
    message = pc.coalesce(cat("status_message"), _text(t["status_message"]))
    message = pc.if_else(pa.array(error), pc.coalesce(message, cat("exception")), message)
    status = pd.to_numeric(pd.Series(t["http_status_code"], dtype=object), errors="coerce").astype(schema.INT)
    frame = pd.DataFrame({
        "trace_id": _string(normalise_ids(cat("trace_id"), 32)),
        "span_id": _string(normalise_ids(cat("span_id"), 16)),
        "parent_span_id": _string(normalise_ids(cat("parent_span_id"), 16, zero_is_null=True)),
        "service": _string(cat("service")),
        "operation": _string(cat("operation")),
        "kind": _string(pc.utf8_lower(pc.coalesce(cat("kind"), _text(t["kind"])))),
        "start": pd.Series(start_ns.view("datetime64[ns]")).dt.tz_localize("UTC"),
        "duration_ms": dur_ns / 1e6,
        "end": pd.Series(end_ns.view("datetime64[ns]")).dt.tz_localize("UTC"),
        "error": pd.array(error, dtype=schema.BOOL),
        "status_message": _string(message),
        "http_method": _string(_text(t["http_method"])),
        "http_route": _string(_text(t["http_route"])),
        "http_status_code": status,
        "message_id": _string(_text(t["message_id"])),
        "tags": _string(t["tags"]),
        "logs": _string(cat("logs")),
        "warnings": _string(cat("warnings")),
        "source": _string(["jaeger"] * n),
        "source_object": _string([source_object] * n),
        "source_ref": _string(_json_paths([p for b in blocks for p in b.paths])),
    })
    return schema.conform("spans", frame)


def _is_v1_trace(doc: Any) -> bool:
    return isinstance(doc, Mapping) and "spans" in doc and "resourceSpans" not in doc


def _collect(doc: Any, blocks: list[_Block], where: str) -> None:
    """Find the spans in ``doc`` (any accepted shape) and add them to ``blocks``."""
    if isinstance(doc, list):
        if doc and all(isinstance(d, Mapping) and "spanID" in d for d in doc):
            blocks.append(_v1_block([{"spans": doc}], [where.rstrip(".")]))  # a bare array of v1 spans
        elif doc and all(_is_v1_trace(d) for d in doc):
            blocks.append(_v1_block(doc, [f"{where}[{i}].spans" for i in range(len(doc))]))
        else:
            for i, item in enumerate(doc):
                _collect(item, blocks, f"{where}[{i}].")
        return
    if not isinstance(doc, Mapping):
        raise TraceFileError(f"{where or 'document'}: expected a JSON object or array, got {type(doc).__name__}")
    if "resourceSpans" in doc:
        blocks.append(_otlp_block(doc.get("resourceSpans") or (), where))
    elif isinstance(doc.get("result"), Mapping) and "resourceSpans" in doc["result"]:
        blocks.append(_otlp_block(doc["result"].get("resourceSpans") or (), f"{where}result."))
    elif "data" in doc and (doc["data"] is None or isinstance(doc["data"], list | Mapping)):
        data = doc["data"] or []
        data = data if isinstance(data, list) else [data]
        for i, trace in enumerate(data):
            if not isinstance(trace, Mapping):
                raise TraceFileError(f"{where}data[{i}]: expected a trace object, got {type(trace).__name__}")
        blocks.append(_v1_block(data, [f"{where}data[{i}].spans" for i in range(len(data))]))
    elif "spans" in doc:
        blocks.append(_v1_block([doc], [f"{where}spans"]))
    else:
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
    blocks: list[_Block] = []
    _collect(doc, blocks, "")
    return _frame(blocks, source_object)


def read_trace_file(path: str | Path) -> pd.DataFrame:
    """A trace file (any shape :func:`parse_traces` takes, or JSON Lines of them) -> spans table."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise TraceFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    blocks: list[_Block] = []
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as whole:
        lines = text.splitlines()
        if whole.msg != "Extra data" or len(lines) < 2:
            raise TraceFileError(f"{path}: not JSON ({whole.msg} at line {whole.lineno})") from whole
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TraceFileError(f"{path}: line {n} of JSON Lines is not JSON ({exc.msg})") from exc
            _collect(item, blocks, f"line {n}: ")
    else:
        _collect(doc, blocks, "")
    return _frame(blocks, path.name)


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
