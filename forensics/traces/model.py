"""Jaeger's domain-model JSON and Thrift-style JSON, read into v1 spans.

Domain model (``model.Span`` as jsonpb writes it: the storage integration fixtures, the
converter fixtures, ``jaeger-anonymizer`` input): ``traceId``/``spanId`` in base64 (or
hex), ``startTime`` as RFC 3339 text, ``duration`` as Go duration text (``"5000ns"``) or
integer nanoseconds, ``references`` with ``refType`` (absent: CHILD_OF, the protobuf
default), tags and log fields as ``{"key", "vType", "vStr" | "vInt64" | ...}``, the
process embedded or named by ``processId`` in the trace's ``processMap``.

Thrift style (``jaeger.thrift`` ``Batch`` as JSON: ``{"process", "spans"}``):
``traceIdLow``/``traceIdHigh``/``spanId``/``parentSpanId`` as signed 64-bit numbers,
times in µs, tags as ``{"key", "vType", "vStr" | "vLong" | "vDouble" | ...}``; a non-zero
``parentSpanId`` is a CHILD_OF reference, as Jaeger's Thrift converter makes it.

Both become v1 span dicts (what :mod:`forensics.traces.v1` reads), with every value that
cannot be read set to null and named in the span's ``warnings``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from forensics.traces.values import (
    Warnings,
    duration_us,
    has_typed_value,
    hex_id,
    is_number_text,
    thrift_trace_id,
    time_us,
    typed_value,
)


def is_thrift_span(span: Any) -> bool:
    return isinstance(span, Mapping) and ("traceIdLow" in span or "traceIdHigh" in span)


def is_model_span(span: Any) -> bool:
    """A span written as the domain model: camel-case ``Id`` fields, typed tags or an RFC 3339
    start (a v1 span with its µs written as text is a v1 span)."""
    if not isinstance(span, Mapping) or "startTimeUnixNano" in span:
        return False
    tags, start = span.get("tags"), span.get("startTime")
    return ("traceId" in span or "spanId" in span or (isinstance(start, str) and not is_number_text(start))
            or (isinstance(tags, list) and bool(tags) and has_typed_value(tags[0])))


class _Reader(Warnings):
    """Reads one span's values, collecting a warning for each that cannot be read."""

    def __call__(self, read: Callable[..., Any], *args: Any) -> Any:
        return self.read(read, *args)

    def fields(self, items: Any) -> list[dict]:
        out = []
        for item in items if isinstance(items, list) else ():
            if isinstance(item, Mapping):
                out.append({"key": item.get("key"), "value": self(typed_value, item)})
        return out

    def logs(self, logs: Any) -> list[dict]:
        return [{"timestamp": self(time_us, "log timestamp", log.get("timestamp")),
                 "fields": self.fields(log.get("fields"))}
                for log in (logs if isinstance(logs, list) else ()) if isinstance(log, Mapping)]

    def finish(self, span: dict, given: Any) -> dict:
        span["warnings"] = ([str(w) for w in given] if isinstance(given, list) else []) + self or None
        return span


def _first(span: Mapping, *names: str) -> Any:
    return next((span[n] for n in names if n in span), None)


def model_span(span: Mapping, processes: Mapping[str, Any]) -> dict:
    """One domain-model span as a v1 span dict; ``processes`` maps process ids to processes."""
    r = _Reader()
    process = span.get("process")
    if not isinstance(process, Mapping):
        process = processes.get(str(_first(span, "processId", "processID")))
    refs = [{"refType": ref.get("refType") or "CHILD_OF",
             "traceID": r(hex_id, "reference traceId", _first(ref, "traceId", "traceID"), 32),
             "spanID": r(hex_id, "reference spanId", _first(ref, "spanId", "spanID"), 16)}
            for ref in span.get("references") or () if isinstance(ref, Mapping)]
    out = {
        "traceID": r(hex_id, "traceId", _first(span, "traceId", "traceID"), 32),
        "spanID": r(hex_id, "spanId", _first(span, "spanId", "spanID"), 16),
        "operationName": span.get("operationName"),
        "references": refs,
        "startTime": r(time_us, "startTime", span.get("startTime")),
        "duration": r(duration_us, "duration", span.get("duration"), 1),
        "tags": r.fields(span.get("tags")),
        "logs": r.logs(span.get("logs")),
        "process": {"serviceName": process.get("serviceName")} if isinstance(process, Mapping) else None,
    }
    return r.finish(out, span.get("warnings"))


def model_processes(process_map: Any) -> dict[str, Any]:
    """A domain-model trace's ``processMap`` (a list of ``{processId, process}``, or a map)."""
    if isinstance(process_map, Mapping):
        return {str(k): v for k, v in process_map.items()}
    return {str(_first(p, "processId", "processID")): p.get("process")
            for p in process_map or () if isinstance(p, Mapping)}


def thrift_span(span: Mapping, process: Any) -> dict:
    """One Thrift-style span (of a ``Batch`` whose process is ``process``) as a v1 span dict."""
    r = _Reader()
    trace_id = r(thrift_trace_id, span.get("traceIdLow"), span.get("traceIdHigh"))
    refs = [{"refType": ref.get("refType") or "CHILD_OF",
             "traceID": r(thrift_trace_id, ref.get("traceIdLow"), ref.get("traceIdHigh")),
             "spanID": r(hex_id, "reference spanId", ref.get("spanId"), 16)}
            for ref in span.get("references") or () if isinstance(ref, Mapping)]
    parent = r(hex_id, "parentSpanId", span.get("parentSpanId"), 16)
    if parent is not None and parent.strip("0") and not any(ref["spanID"] == parent for ref in refs):
        refs.insert(0, {"refType": "CHILD_OF", "traceID": trace_id, "spanID": parent})
    out = {
        "traceID": trace_id,
        "spanID": r(hex_id, "spanId", span.get("spanId"), 16),
        "operationName": span.get("operationName"),
        "references": refs,
        "startTime": r(time_us, "startTime", span.get("startTime")),
        "duration": r(duration_us, "duration", span.get("duration")),
        "tags": r.fields(span.get("tags")),
        "logs": r.logs(span.get("logs")),
        "process": {"serviceName": process.get("serviceName")} if isinstance(process, Mapping) else None,
    }
    return r.finish(out, span.get("warnings"))


def v1_spans(spans: list, container: Mapping | None = None) -> list[dict]:
    """Domain-model or Thrift-style spans (of ``container``: a model trace or a Thrift batch) as
    v1 span dicts; the shape is told by the first span."""
    container = container or {}
    if spans and is_thrift_span(spans[0]):
        return [thrift_span(sp, container.get("process")) if isinstance(sp, Mapping) else sp for sp in spans]
    processes = model_processes(container.get("processMap"))
    return [model_span(sp, processes) if isinstance(sp, Mapping) else sp for sp in spans]
