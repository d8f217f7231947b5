"""OTLP JSON ``resourceSpans`` (api/v3 answers, OpenTelemetry exports) read span by span."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forensics.traces.jsontext import TEXT_DICT, dumps
from forensics.traces.parents import CHILD_OF, FOLLOWS_FROM, jaeger_parents
from forensics.traces.table import NAT_NS, Block, as_text, exception_message, iso_us
from forensics.traces.values import Unreadable, Warnings, integer

_OTLP_KIND = {0: None, 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_OTLP_KIND_NAMES = {f"SPAN_KIND_{v.upper()}": v for v in _OTLP_KIND.values() if v} | {"SPAN_KIND_UNSPECIFIED": None}


def _any_value(v: Mapping, unread: Warnings, key: Any) -> Any:
    """An OTLP JSON AnyValue ({"stringValue": ...}, {"intValue": "12"}, arrays, maps) as plain
    Python; an integer that cannot be read is None, noted in ``unread`` under ``key``."""
    for typ, x in v.items():
        if typ == "stringValue" or typ == "boolValue" or typ == "doubleValue":
            return x
        if typ == "intValue":
            return unread.read(integer, str(key), x)
        if typ == "arrayValue":
            return [_any_value(e, unread, key) for e in (x or {}).get("values") or ()]
        if typ == "kvlistValue":
            return {kv.get("key"): _any_value(kv.get("value") or {}, unread, kv.get("key"))
                    for kv in (x or {}).get("values") or ()}
        return x  # bytesValue stays base64 text
    return None


def _otlp_events(events: list, unread: Warnings) -> tuple[str, str | None]:
    out, exc = [], None
    for ev in events:
        when = unread.read(integer, "event timeUnixNano", ev.get("timeUnixNano"))
        entry: dict[str, Any] = {"timestamp": None if when is None else iso_us(when), "event": ev.get("name")}
        for a in ev.get("attributes") or ():
            entry[a.get("key")] = _any_value(a.get("value") or {}, unread, a.get("key"))
        exc = exc or exception_message(entry)
        out.append(entry)
    return dumps(out), exc


_OTLP_ROW = ("trace_id", "span_id", "service", "operation", "kind", "start", "duration", "error",
             "status_message", "exception", "logs", "warnings")


def _time_ns(field: str, value: Any, unread: Warnings) -> int:
    """An OTLP time (ns since the epoch, as text or number) as int64 ns; missing or 0 (OTLP's
    "not set") and unreadable as :data:`NAT_NS`, the unreadable named in ``unread``."""
    ns = unread.read(integer, field, None if value == "" else value)
    return NAT_NS if not ns else ns


def _duration_ns(start_ns: int, end_ns: int, unread: Warnings) -> int:
    """``end_ns - start_ns``; :data:`NAT_NS` when either time is, or when the difference has
    no int64 nanoseconds (then named in ``unread``)."""
    if NAT_NS in (start_ns, end_ns):
        return NAT_NS
    ns = end_ns - start_ns
    if NAT_NS < ns < -NAT_NS:
        return ns
    unread.append(str(Unreadable("duration", ns)))
    return NAT_NS


def otlp_block(resource_spans: Iterable[Mapping], where: str) -> Block:
    """OTLP JSON ``resourceSpans`` (api/v3 answers, OTLP exports) -> one block.

    Read in Python, span by span: api/v3 answers are small, and attribute values nest. The
    parent is ``parentSpanId`` (a CHILD_OF reference), else the first link into the same
    trace (Jaeger makes links FOLLOWS_FROM references): :mod:`~forensics.traces.parents`.
    Times that cannot be read are null, with a warning on the span.
    """
    rows: list[tuple] = []
    refs: list[tuple[int, str, Any, Any]] = []  # owner, type, trace id, span id
    keys: list = []
    values: list = []
    tag_counts: list[int] = []
    paths: list[tuple[str, int]] = []
    for r, rs in enumerate(resource_spans or ()):
        service = None
        for a in (rs.get("resource") or {}).get("attributes") or ():
            if a.get("key") == "service.name":
                service = _any_value(a.get("value") or {}, Warnings(), "service.name")
        scopes = rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or ()
        for s, ss in enumerate(scopes):
            # Jaeger's v1 view carries the instrumentation scope as tags: keep both views equal
            scope = ss.get("scope") or ss.get("instrumentationLibrary") or {}
            scope_tags = [(k, scope[f]) for k, f in (("otel.scope.name", "name"), ("otel.scope.version", "version"))
                          if scope.get(f)]
            spans = ss.get("spans") or ()
            paths.append((f"{where}resourceSpans[{r}].scopeSpans[{s}].spans", len(spans)))
            for sp in spans:
                unread = Warnings()
                tags = scope_tags + [(a.get("key"), _any_value(a.get("value") or {}, unread, a.get("key")))
                                     for a in sp.get("attributes") or ()]
                links = [ln for ln in sp.get("links") or () if isinstance(ln, Mapping)]
                if links:
                    tags.append(("follows_from", [ln.get("spanId") for ln in links]))
                if sp.get("parentSpanId"):
                    refs.append((len(rows), CHILD_OF, None, sp.get("parentSpanId")))
                refs.extend((len(rows), FOLLOWS_FROM, ln.get("traceId"), ln.get("spanId")) for ln in links)
                keys.extend(k for k, _ in tags)
                values.extend(v for _, v in tags)
                tag_counts.append(len(tags))
                st = sp.get("status") or {}
                code = st.get("code")
                events = sp.get("events")
                logs_json, exc = _otlp_events(events, unread) if events else (None, None)
                kind = sp.get("kind")
                start_ns = _time_ns("startTimeUnixNano", sp.get("startTimeUnixNano"), unread)
                end_ns = _time_ns("endTimeUnixNano", sp.get("endTimeUnixNano"), unread)
                rows.append((
                    sp.get("traceId"), sp.get("spanId"), service, sp.get("name"),
                    _OTLP_KIND.get(kind) if isinstance(kind, int) else _OTLP_KIND_NAMES.get(kind, kind),
                    start_ns, _duration_ns(start_ns, end_ns, unread),
                    code == 2 or code == "STATUS_CODE_ERROR", st.get("message") or None, exc, logs_json,
                    "; ".join(unread) or None,
                ))
    n = len(rows)
    c = dict(zip(_OTLP_ROW, zip(*rows, strict=True), strict=True)) if n else {k: () for k in _OTLP_ROW}
    columns = {k: as_text(np.array(c[k], dtype=object)) for k in Block.STRINGS if k in c}
    owner = np.array([r[0] for r in refs], dtype="int64")
    columns["parent_span_id"], columns["parent_ref_type"] = jaeger_parents(
        owner, pa.array([r[1] for r in refs], pa.string()), as_text(np.array([r[2] for r in refs], dtype=object)),
        as_text(np.array([r[3] for r in refs], dtype=object)), columns["trace_id"])
    columns.update(start=np.array(c["start"], dtype="int64"), duration=np.array(c["duration"], dtype="int64"),
                   error=np.array(c["error"], dtype=bool))
    return Block(columns, pc.cast(as_text(np.array(keys, dtype=object)), TEXT_DICT),
                  np.fromiter(values, dtype=object, count=len(values)), np.repeat(np.arange(n), tag_counts), paths)
