"""One trace as a waterfall: the table and the plotly figure."""

from __future__ import annotations

import pandas as pd

from forensics.errors import ForensicsError
from forensics.traces.critical import critical_path
from forensics.traces.structure import span_tree


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
