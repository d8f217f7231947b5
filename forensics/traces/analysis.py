"""Summaries of spans: where the time went, errors, latency percentiles, service calls."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forensics import schema
from forensics.traces.structure import span_tree, structure_of


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
    st = structure_of(spans)
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
