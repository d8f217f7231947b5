"""Traces: spans from every file shape Jaeger users have, span flags, derived views, correlation.

Parsing
    :func:`parse_traces` turns decoded JSON of any shape the Jaeger UI accepts into the
    canonical ``spans`` table (:data:`forensics.schema.SPANS`): v1 ``{"data": [...]}``
    envelopes (UI downloads, ``/api/traces`` answers), single v1 traces, bare arrays of
    traces, OTLP JSON ``{"resourceSpans": [...]}`` and api/v3's
    ``{"result": {"resourceSpans": [...]}}``. :func:`read_trace_file` adds JSON Lines.
    Parsing is one pass over the spans into plain lists and one DataFrame at the end; ids
    are normalised afterwards with pyarrow kernels (trace ids 32 lowercase hex, left
    padded; OTLP base64 ids decoded).

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
import json
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

# Known tags -> a small code; everything else goes to the JSON ``tags`` map. Route fallbacks
# (url.path, http.target, http.url) stay in the map too: they carry more than the route.
_KIND, _ERROR, _OTEL_STATUS, _STATUS_DESC, _METHOD, _HTTP_STATUS, _ROUTE, _MESSAGE_ID = range(8)
_ROUTE_FALLBACK = {"url.path": 1, "http.target": 2, "url.full": 3, "http.url": 3}
_TAG_CODE = {
    "span.kind": _KIND,
    "error": _ERROR,
    "otel.status_code": _OTEL_STATUS,
    "otel.status_description": _STATUS_DESC,
    "http.method": _METHOD,
    "http.request.method": _METHOD,
    "http.status_code": _HTTP_STATUS,
    "http.response.status_code": _HTTP_STATUS,
    "http.route": _ROUTE,
    **dict.fromkeys(MESSAGE_ID_TAGS, _MESSAGE_ID),
}
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

class _SpanColumns:
    """Column lists filled in one pass over the spans; turned into one DataFrame at the end."""

    NAMES = ("trace_id", "span_id", "parent_span_id", "service", "operation", "kind", "start_ns",
             "duration_ns", "error", "status_message", "http_method", "http_route", "http_status_code",
             "message_id", "tags", "logs", "warnings", "source_ref")

    def __init__(self) -> None:
        for name in self.NAMES:
            setattr(self, name, [])

    def __len__(self) -> int:
        return len(self.span_id)


def _iso_us(ns: int) -> str:
    """Log/event time as ISO text at microseconds (v1's precision, so both APIs give the same text)."""
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{ns % 1_000_000_000 // 1000:06d}Z"


def _v1_logs(logs: list) -> tuple[str, str | None]:
    """v1 span logs as a JSON array of {timestamp, field: value...}; plus an exception message found."""
    out, exc = [], None
    for log in logs:
        entry: dict[str, Any] = {"timestamp": _iso_us(int(log.get("timestamp") or 0) * 1000)}
        for f in log.get("fields") or ():
            entry[f.get("key")] = f.get("value")
        if exc is None:
            exc = next((str(entry[k]) for k in _EXCEPTION_KEYS if entry.get(k) not in (None, "")), None)
        out.append(entry)
    return _dumps(out), exc


def _add_v1_trace(cols: _SpanColumns, trace: Mapping, where: str, spans_key: str = "spans") -> None:
    """Append the spans of one v1 trace object (``{"traceID", "spans", "processes"}``).

    ``where`` prefixes each span's JSON path (``data[0].``); ``spans_key`` names the list in
    it ("" for a bare array of spans)."""
    processes = trace.get("processes") or {}
    services = {pid: (p or {}).get("serviceName") for pid, p in processes.items()}
    trace_warnings = trace.get("warnings")
    a_trace, a_span, a_parent = cols.trace_id.append, cols.span_id.append, cols.parent_span_id.append
    a_service, a_op, a_kind = cols.service.append, cols.operation.append, cols.kind.append
    a_start, a_dur, a_err, a_msg = cols.start_ns.append, cols.duration_ns.append, cols.error.append, cols.status_message.append
    a_method, a_route, a_status = cols.http_method.append, cols.http_route.append, cols.http_status_code.append
    a_mid, a_tags, a_logs, a_warn, a_ref = (cols.message_id.append, cols.tags.append, cols.logs.append,
                                            cols.warnings.append, cols.source_ref.append)
    tag_code, fallback_rank = _TAG_CODE.get, _ROUTE_FALLBACK.get
    for i, sp in enumerate(trace.get("spans") or ()):
        parent = None
        follows = None
        for ref in sp.get("references") or ():
            rtype = ref.get("refType")
            if rtype == "CHILD_OF" or rtype == "child_of":
                if parent is None:
                    parent = ref.get("spanID")
            elif follows is None:
                follows = [ref.get("spanID")]
            else:
                follows.append(ref.get("spanID"))
        rest: dict[str, Any] = {}
        kind = error = message = method = status = mid = route = None
        fallback, fallback_at = None, 9
        for t in sp.get("tags") or ():
            key = t.get("key")
            value = t.get("value")
            code = tag_code(key)
            if code is None:
                rest[key] = value
                rank = fallback_rank(key)
                if rank is not None and rank < fallback_at:
                    fallback, fallback_at = value, rank
            elif code == _KIND:
                kind = value
            elif code == _ERROR:
                error = error or value is True or value == "true"
            elif code == _OTEL_STATUS:
                error = error or value == "ERROR"
            elif code == _STATUS_DESC:
                message = value
            elif code == _METHOD:
                method = value
            elif code == _HTTP_STATUS:
                status = value
            elif code == _ROUTE:
                route = value
            else:
                mid = str(value)
        if follows:
            rest["follows_from"] = follows
        logs = sp.get("logs")
        if logs:
            logs_json, exc = _v1_logs(logs)
            if message is None and error:
                message = exc
        else:
            logs_json = None
        warnings = sp.get("warnings")
        if trace_warnings and not warnings:
            warnings = trace_warnings
        process = sp.get("process")
        a_trace(sp.get("traceID") or trace.get("traceID"))
        a_span(sp.get("spanID"))
        a_parent(parent)
        a_service(process.get("serviceName") if process else services.get(sp.get("processID")))
        a_op(sp.get("operationName"))
        a_kind(kind)
        start = sp.get("startTime")
        a_start(NAT_NS if start is None else int(start) * 1000)
        a_dur(int(sp.get("duration") or 0) * 1000)
        a_err(bool(error))
        a_msg(message)
        a_method(method)
        a_route(route if route is not None else fallback)
        a_status(status)
        a_mid(mid)
        a_tags(_dumps(rest) if rest else None)
        a_logs(logs_json)
        a_warn("; ".join(map(str, warnings)) if warnings else None)
        a_ref(f"{where}{spans_key}[{i}]")


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
        if exc is None:
            exc = next((str(entry[k]) for k in _EXCEPTION_KEYS if entry.get(k) not in (None, "")), None)
        out.append(entry)
    return _dumps(out), exc


def _add_resource_spans(cols: _SpanColumns, resource_spans: Iterable[Mapping], where: str) -> None:
    """Append the spans of OTLP JSON ``resourceSpans`` (api/v3 answers, OTLP exports)."""
    tag_code, fallback_rank = _TAG_CODE.get, _ROUTE_FALLBACK.get
    for r, rs in enumerate(resource_spans or ()):
        service = None
        for a in (rs.get("resource") or {}).get("attributes") or ():
            if a.get("key") == "service.name":
                service = _any_value(a.get("value") or {})
        scopes = rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or ()
        for s, ss in enumerate(scopes):
            # Jaeger's v1 view carries the instrumentation scope as tags: keep both views equal
            scope = ss.get("scope") or ss.get("instrumentationLibrary") or {}
            scope_tags = {k: scope[f] for k, f in (("otel.scope.name", "name"), ("otel.scope.version", "version"))
                          if scope.get(f)}
            for i, sp in enumerate(ss.get("spans") or ()):
                rest: dict[str, Any] = dict(scope_tags)
                method = status = mid = route = None
                fallback, fallback_at = None, 9
                for a in sp.get("attributes") or ():
                    key = a.get("key")
                    value = _any_value(a.get("value") or {})
                    code = tag_code(key)
                    if code is None or code in (_KIND, _ERROR, _OTEL_STATUS, _STATUS_DESC):
                        rest[key] = value
                        rank = fallback_rank(key)
                        if rank is not None and rank < fallback_at:
                            fallback, fallback_at = value, rank
                    elif code == _METHOD:
                        method = value
                    elif code == _HTTP_STATUS:
                        status = value
                    elif code == _ROUTE:
                        route = value
                    else:
                        mid = str(value)
                st = sp.get("status") or {}
                code = st.get("code")
                error = code == 2 or code == "STATUS_CODE_ERROR"
                message = st.get("message") or None
                links = sp.get("links")
                if links:
                    rest["follows_from"] = [ln.get("spanId") for ln in links]
                events = sp.get("events")
                if events:
                    logs_json, exc = _otlp_events(events)
                    if message is None and error:
                        message = exc
                else:
                    logs_json = None
                kind = sp.get("kind")
                start = sp.get("startTimeUnixNano")
                end = sp.get("endTimeUnixNano")
                start_ns = NAT_NS if start in (None, "", "0", 0) else int(start)
                cols.trace_id.append(sp.get("traceId"))
                cols.span_id.append(sp.get("spanId"))
                cols.parent_span_id.append(sp.get("parentSpanId") or None)
                cols.service.append(service)
                cols.operation.append(sp.get("name"))
                cols.kind.append(_OTLP_KIND.get(kind) if isinstance(kind, int) else _OTLP_KIND_NAMES.get(kind, kind))
                cols.start_ns.append(start_ns)
                cols.duration_ns.append(int(end) - start_ns if end not in (None, "") and start_ns != NAT_NS else 0)
                cols.error.append(error)
                cols.status_message.append(message)
                cols.http_method.append(method)
                cols.http_route.append(route if route is not None else fallback)
                cols.http_status_code.append(status)
                cols.message_id.append(mid)
                cols.tags.append(_dumps(rest) if rest else None)
                cols.logs.append(logs_json)
                cols.warnings.append(None)
                cols.source_ref.append(f"{where}resourceSpans[{r}].scopeSpans[{s}].spans[{i}]")


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


def normalise_ids(values: Iterable[str | None], width: int) -> pa.Array:
    """Span or trace ids as lowercase hex of ``width`` characters (32 for traces, 16 for spans).

    Hex ids are lower-cased and left-padded with zeros (Jaeger prints a 64-bit trace id as
    16 characters); base64 ids (some OTLP JSON exports) are decoded; empty and all-zero
    ids (OTLP's "no parent") become null.
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
    return pc.if_else(pc.equal(out, "0" * width), pa.scalar(None, pa.string()), out)


def _string(values: list | pa.Array | pa.ChunkedArray) -> pd.Series:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    arr = values if isinstance(values, pa.Array) else pa.array(values, type=pa.string(), from_pandas=True)
    return pd.Series(pd.arrays.ArrowStringArray(arr), dtype=schema.STR)


def _frame(cols: _SpanColumns, source_object: str | None) -> pd.DataFrame:
    """The collected lists as a spans table, vectorised (ids, times, numbers)."""
    n = len(cols)
    start_ns = np.array(cols.start_ns, dtype="int64")
    dur_ns = np.array(cols.duration_ns, dtype="int64")
    start = pd.Series(start_ns.view("datetime64[ns]")).dt.tz_localize("UTC")
    end_ns = np.where(start_ns == NAT_NS, NAT_NS, start_ns + dur_ns)
    status = pd.to_numeric(pd.Series(cols.http_status_code, dtype=object), errors="coerce").astype(schema.INT)
    frame = pd.DataFrame({
        "trace_id": _string(normalise_ids(cols.trace_id, 32)),
        "span_id": _string(normalise_ids(cols.span_id, 16)),
        "parent_span_id": _string(normalise_ids(cols.parent_span_id, 16)),
        "service": _string(cols.service),
        "operation": _string(cols.operation),
        "kind": _string(pc.utf8_lower(pa.array(cols.kind, type=pa.string()))),
        "start": start,
        "duration_ms": dur_ns / 1e6,
        "end": pd.Series(end_ns.view("datetime64[ns]")).dt.tz_localize("UTC"),
        "error": pd.array(cols.error, dtype=schema.BOOL),
        "status_message": _string([None if v is None else str(v) for v in cols.status_message]),
        "http_method": _string(cols.http_method),
        "http_route": _string(cols.http_route),
        "http_status_code": status,
        "message_id": _string(cols.message_id),
        "tags": _string(cols.tags),
        "logs": _string(cols.logs),
        "warnings": _string(cols.warnings),
        "source": _string(["jaeger"] * n),
        "source_object": _string([source_object] * n),
        "source_ref": _string(cols.source_ref),
    })
    return schema.conform("spans", frame)


def _collect(doc: Any, cols: _SpanColumns, where: str) -> None:
    if isinstance(doc, list):
        if doc and all(isinstance(d, Mapping) and "spanID" in d for d in doc):
            _add_v1_trace(cols, {"spans": doc}, where, "")  # a bare array of v1 spans
            return
        for i, item in enumerate(doc):
            _collect(item, cols, f"{where}[{i}].")
        return
    if not isinstance(doc, Mapping):
        raise TraceFileError(f"{where or 'document'}: expected a JSON object or array, got {type(doc).__name__}")
    if "resourceSpans" in doc:
        _add_resource_spans(cols, doc.get("resourceSpans") or (), where)
    elif isinstance(doc.get("result"), Mapping) and "resourceSpans" in doc["result"]:
        _add_resource_spans(cols, doc["result"].get("resourceSpans") or (), f"{where}result.")
    elif "data" in doc and (doc["data"] is None or isinstance(doc["data"], list | Mapping)):
        data = doc["data"] or []
        for i, trace in enumerate(data if isinstance(data, list) else [data]):
            if not isinstance(trace, Mapping):
                raise TraceFileError(f"{where}data[{i}]: expected a trace object, got {type(trace).__name__}")
            _add_v1_trace(cols, trace, f"{where}data[{i}].")
    elif "spans" in doc:
        _add_v1_trace(cols, doc, where)
    else:
        keys = ", ".join(list(doc)[:6]) or "none"
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
    cols = _SpanColumns()
    _collect(doc, cols, "")
    return _frame(cols, source_object)


def read_trace_file(path: str | Path) -> pd.DataFrame:
    """A trace file (any shape :func:`parse_traces` takes, or JSON Lines of them) -> spans table."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise TraceFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    cols = _SpanColumns()
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
            _collect(item, cols, f"line {n}: ")
    else:
        _collect(doc, cols, "")
    return _frame(cols, path.name)


_TAG_COLUMN = {"span.kind": "kind", "error": "error", "otel.status_description": "status_message",
               "http.method": "http_method", "http.request.method": "http_method", "http.route": "http_route",
               "http.status_code": "http_status_code", "http.response.status_code": "http_status_code",
               **dict.fromkeys(MESSAGE_ID_TAGS, "message_id")}


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
    g = spans.groupby(keys, dropna=False)
    out = g.agg(spans=("span_id", "size"), errors=("error", "sum"), max_ms=("duration_ms", "max"))
    q = g["duration_ms"].quantile([p / 100 for p in percentiles]).unstack()
    q.columns = [f"p{p:g}_ms" for p in percentiles]
    out = out.join(q).reset_index()
    out["errors"] = out["errors"].astype(schema.INT)
    return out[keys + ["spans", "errors"] + list(q.columns) + ["max_ms"]]


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
        TimeWindowRule("api", (p.services.api_gateway, p.services.message_service), r"(?i)messages",
                       "created_at", 1.0, 2.0),
        TimeWindowRule("connector", None, r"(?i)send|messages|webhook", "updated_at", 30.0, 1.0),
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
                       rules: list[TimeWindowRule] | None = None) -> Correlation:
    """Join spans to messages: by message-id tag where one exists, else by service, time and route.

    - ``tag``: the span carries the message id (:data:`MESSAGE_ID_TAGS`); confidence 1.0.
    - ``time_window``: for a message with no tagged span, each :class:`TimeWindowRule`
      collects the traces with a fitting span; each is a match with confidence
      ``TIME_WINDOW_CONFIDENCE / candidates`` (two candidate traces: 0.4 each), the span
      nearest the anchor standing for its trace.
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
        parts.append(_time_window_matches(spans, rest, rule, prof)[cols])
    matches = pd.concat([p for p in parts if len(p)] or [parts[0]], ignore_index=True)
    matches = matches.astype({"message_id": schema.STR, "trace_id": schema.STR, "span_id": schema.STR,
                              "service": schema.STR, "operation": schema.STR, "method": schema.STR,
                              "rule": schema.STR, "confidence": "float64", "candidates": schema.INT,
                              "delta_ms": "float64"})
    untraced = messages[~messages["message_id"].isin(matches["message_id"])]
    return Correlation(matches.reset_index(drop=True),
                       untraced[["message_id", "channel", "status", "created_at"]].reset_index(drop=True))


def _time_window_matches(spans: pd.DataFrame, messages: pd.DataFrame, rule: TimeWindowRule,
                         profile: Profile) -> pd.DataFrame:
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
    return cand.drop(columns="abs_delta")
