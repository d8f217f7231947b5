"""Traces: spans from every file shape Jaeger users have, span flags, derived views, correlation.

One module per job:

:mod:`~forensics.traces.readers`
    Documents and files of any shape (gzip or not, JSON Lines) -> the spans table:
    :func:`parse_traces`, :func:`read_trace_file`, ``read_trace_files``. The readers per
    shape: :mod:`~forensics.traces.v1` (UI downloads and ``/api/traces`` answers, read
    column-wise by pyarrow), :mod:`~forensics.traces.otlp` (OTLP JSON and api/v3),
    :mod:`~forensics.traces.model` (Jaeger's domain-model and Thrift-style JSON, read into
    v1 spans); single values written in different ways: :mod:`~forensics.traces.values`
    (what cannot be read is null, with a warning on the span).
:mod:`~forensics.traces.parents`
    Jaeger's parent rule: the first CHILD_OF reference into the span's own trace, else the
    first FOLLOWS_FROM into it.
:mod:`~forensics.traces.table`
    The canonical ``spans`` table (:data:`forensics.schema.SPANS`) from spans read
    column-wise: tags into columns and JSON text (:mod:`~forensics.traces.jsontext`), ids
    normalised, times from int64 nanoseconds.
:mod:`~forensics.traces.structure`
    Parent links, :func:`span_flags` (orphans, clock skew, duplicated span ids, reference
    cycles) and :func:`span_tree`.
:mod:`~forensics.traces.critical`
    :func:`critical_path`, the Jaeger UI's algorithm (documented there).
:mod:`~forensics.traces.analysis`
    :func:`self_time_by_service`, :func:`error_spans`, :func:`latency_percentiles`,
    :func:`dependency_edges`.
:mod:`~forensics.traces.figure`
    :func:`waterfall` and :func:`waterfall_figure`.
:mod:`~forensics.traces.correlate`
    :func:`correlate_messages`: spans joined to the canonical ``messages`` table by a
    message-id tag (confidence 1.0) or, where the platform sets none (the deployed
    Chat4All v2 code sets none), by service, time window and HTTP route.
"""

from forensics.traces.analysis import dependency_edges, error_spans, latency_percentiles, self_time_by_service
from forensics.traces.correlate import (
    TIME_WINDOW_CONFIDENCE,
    Correlation,
    TimeWindowRule,
    correlate_messages,
    default_rules,
)
from forensics.traces.critical import critical_path
from forensics.traces.figure import waterfall, waterfall_figure
from forensics.traces.readers import TraceFileError, parse_traces, read_trace_file
from forensics.traces.structure import span_flags, span_tree
from forensics.traces.table import MESSAGE_ID_TAGS, NAT_NS, normalise_ids, tag_values

__all__ = [
    "MESSAGE_ID_TAGS", "NAT_NS", "TIME_WINDOW_CONFIDENCE", "Correlation", "TimeWindowRule", "TraceFileError",
    "correlate_messages", "critical_path", "default_rules", "dependency_edges", "error_spans",
    "latency_percentiles", "normalise_ids", "parse_traces", "read_trace_file", "self_time_by_service",
    "span_flags", "span_tree", "tag_values", "waterfall", "waterfall_figure",
]
