"""Plotly figures of an incident, aggregated before plotting.

Every builder reduces its table to at most a few hundred points first (time buckets,
capped categories), so that a million-message incident gives the same small figure as a
thousand-message one and the report's HTML stays small. Builders take canonical tables
(:mod:`forensics.schema`) or analysis frames and return a ``go.Figure``; an empty input gives
a figure that says what is missing rather than an error.

Figures carry no personal data of their own (statuses, channels, consumer groups, error
groups); the timeline's hover text is whatever the caller passes, so redact it first.
Text from evidence (error groups, timeline summaries) goes through :func:`plain`, because
Plotly reads a subset of HTML in labels (``<a href>``, ``<b>``, ``<br>``).
"""

from __future__ import annotations

import html
import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from forensics.evidence import Evidence
from forensics.scan import NAT, message_status, status_steps

TIME_BUCKETS = tuple(pd.Timedelta(s) for s in (
    "1s", "2s", "5s", "10s", "15s", "30s", "1min", "2min", "5min", "10min", "15min", "30min",
    "1h", "2h", "3h", "6h", "12h", "1D", "2D", "7D"))
MAX_BUCKETS = 150
"""Time series are bucketed to at most this many points."""
MAX_TIMELINE_POINTS = 1500
"""Above this many timeline events the swimlane shows counts per lane, severity and bucket."""
MAX_SERIES = 8
"""Lines per figure (consumer groups, ...): the largest are kept."""
MAX_STEPS = 6
"""Status-flow depth: transitions after the sixth are folded into the sixth step."""

STATUS_COLORS = {"PENDING": "#9e9e9e", "SENT": "#42a5f5", "DELIVERED": "#66bb6a", "READ": "#2e7d32",
                 "FAILED": "#e53935", "RECEIVED": "#ab47bc", "UNKNOWN": "#795548"}
SEVERITY_COLORS = {"info": "#90a4ae", "warning": "#fb8c00", "critical": "#d32f2f"}
THRESHOLD_COLOR = "#d32f2f"
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}
PLOTLY_MIMETYPE = "application/vnd.plotly.v1+json"


def plain(values: pd.Series) -> pd.Series:
    """Untrusted text as Plotly label text: markup characters escaped, so it shows literally.
    Each distinct text is escaped once (a channel column of 10M messages has four)."""
    text = values.astype(str)
    codes, uniques = pd.factorize(text)
    escaped = np.array([html.escape(v, quote=False) for v in uniques] + [""], dtype=object)  # -1: no text
    return pd.Series(escaped[codes], index=values.index, dtype=text.dtype)


def time_bucket(start: pd.Timestamp, end: pd.Timestamp, max_buckets: int = MAX_BUCKETS) -> pd.Timedelta:
    """The smallest round bucket (1 s .. 7 days) that cuts [start, end] into at most ``max_buckets``."""
    span = max(end - start, pd.Timedelta(0))
    for bucket in TIME_BUCKETS:
        if span / bucket <= max_buckets:
            return bucket
    return TIME_BUCKETS[-1]


def _bucket_of(times: pd.Series, bucket: pd.Timedelta | None = None) -> tuple[pd.Series, pd.Timedelta]:
    t = times.dropna()
    bucket = bucket or (time_bucket(t.min(), t.max()) if len(t) else TIME_BUCKETS[0])
    return times.dt.floor(bucket), bucket


def _label(bucket: pd.Timedelta) -> str:
    seconds = int(bucket.total_seconds())
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _layout(fig: go.Figure, title: str, yaxis: str = "", height: int = 380) -> go.Figure:
    fig.update_layout(title={"text": title, "x": 0.01}, template="plotly_white", height=height,
                      margin={"l": 60, "r": 20, "t": 60, "b": 50}, yaxis_title=yaxis,
                      legend={"orientation": "h", "y": -0.18})
    return fig


def _empty(title: str, why: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=why, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 14})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, height=220)


def _threshold(fig: go.Figure, value: float, text: str) -> None:
    fig.add_hline(y=value, line={"color": THRESHOLD_COLOR, "dash": "dash", "width": 1.5},
                  annotation_text=text, annotation_position="top left", annotation_font_color=THRESHOLD_COLOR)


def status_flow(evidence: Evidence) -> go.Figure:
    """Sankey of status transitions, step by step (PENDING -> SENT -> DELIVERED -> READ, and
    the failure and retry branches). Nodes are (step, status) so retries never draw a cycle.
    The steps are counted by DuckDB wherever the status events are (:func:`forensics.scan.status_steps`)."""
    title = "How messages moved between statuses"
    if not evidence.has("status_events"):
        return _empty(title, "no status transitions in the evidence")
    links = status_steps(evidence, MAX_STEPS)
    if links.empty:
        return _empty(title, "no message changed status")
    nodes = pd.concat([links[["src_step", "src"]].set_axis(["step", "status"], axis=1),
                       links[["dst_step", "dst"]].set_axis(["step", "status"], axis=1)]).drop_duplicates()
    nodes = nodes.sort_values(["step", "status"]).reset_index(drop=True)
    index = {(s, st): i for i, (s, st) in enumerate(zip(nodes["step"], nodes["status"], strict=True))}
    last = max(nodes["step"].max(), 1)
    fig = go.Figure(go.Sankey(
        arrangement="snap",
        node={"label": nodes["status"].tolist(), "pad": 14,
              "color": [STATUS_COLORS.get(s, "#607d8b") for s in nodes["status"]],
              "x": (0.01 + 0.98 * nodes["step"] / last).tolist()},
        link={"source": [index[k] for k in zip(links["src_step"], links["src"], strict=True)],
              "target": [index[k] for k in zip(links["dst_step"], links["dst"], strict=True)],
              "value": links["size"].tolist(),
              "hovertemplate": "%{source.label} → %{target.label}: %{value:,} messages<extra></extra>"},
    ))
    return _layout(fig, title + " (left to right: successive transitions)", height=420)


def failure_rate(messages: pd.DataFrame, threshold: float = 0.05, bucket: pd.Timedelta | None = None) -> go.Figure:
    """Share of messages created in each time bucket that are FAILED now, overall and per
    channel, against the alert threshold (runbook: > 5 % FAILED)."""
    title = "Failure rate by creation time"
    m = messages[["created_at", "status", "channel"]]  # not a copy of every column (10M messages: 2 GB)
    if m["created_at"].isna().any():
        m = m[m["created_at"].notna().to_numpy(dtype=bool)]
    if m.empty:
        return _empty(title, "no messages in the evidence")
    when, bucket = _bucket_of(m["created_at"], bucket)
    failed = m["status"].eq("FAILED").fillna(False).to_numpy(dtype=np.int64)
    channel = plain(m["channel"].fillna("unknown")).astype("category")  # four names, not 10M strings
    frame = pd.DataFrame({"t": when, "channel": channel, "failed": failed})
    fig = go.Figure()
    overall = frame.groupby("t")["failed"].agg(["mean", "size", "sum"]).reset_index()
    fig.add_trace(go.Scatter(x=overall["t"], y=overall["mean"], name="all channels", mode="lines",
                             line={"width": 3, "color": "#263238"}, customdata=overall[["sum", "size"]],
                             hovertemplate="%{y:.1%} (%{customdata[0]:,} of %{customdata[1]:,})<extra>all</extra>"))
    per = frame.groupby(["channel", "t"], observed=True)["failed"].agg(["mean", "size", "sum"]).reset_index()
    for channel, rows in per.groupby("channel", observed=True):
        fig.add_trace(go.Scatter(x=rows["t"], y=rows["mean"], name=str(channel), mode="lines",
                                 line={"width": 1.5, "dash": "dot"}, customdata=rows[["sum", "size"]],
                                 hovertemplate="%{y:.1%} (%{customdata[0]:,} of %{customdata[1]:,})"
                                               f"<extra>{channel}</extra>"))
    _threshold(fig, threshold, f"alert threshold {threshold:.0%}")
    fig.update_yaxes(tickformat=".0%", rangemode="tozero")
    return _layout(fig, f"{title} (per {_label(bucket)})", "messages FAILED")


def delivery_latency(evidence: Evidence, sla_s: float = 5.0, bucket: pd.Timedelta | None = None) -> go.Figure:
    """P95 of the time from creation (PENDING) to the first DELIVERED, per creation-time bucket,
    against the delivery SLA (runbook: P95 > 5 s). Messages never delivered are not in it:
    the failure-rate figure shows them."""
    title = "Delivery time P95 (created → DELIVERED)"
    messages = evidence.table("messages")
    if messages.empty or not evidence.has("status_events"):
        return _empty(title, "no DELIVERED transitions in the evidence")
    first = message_status(evidence, messages["message_id"]).first_delivered_at[:len(messages)]
    created = messages["created_at"].array.asi8  # int64 ns (NaT is NAT): no Timestamp object per message
    known = (first != NAT) & (created != NAT)
    if not known.any():
        return _empty(title, "DELIVERED transitions match no message")
    latency_s = pd.Series((first[known] - created[known]).astype("timedelta64[ns]")).dt.total_seconds()
    when, bucket = _bucket_of(pd.Series(pd.to_datetime(created[known], utc=True)), bucket)
    p95 = latency_s.groupby(when).quantile(0.95)
    fig = go.Figure(go.Scatter(x=p95.index, y=p95.to_numpy(), mode="lines+markers", name="P95",
                               line={"color": "#1e88e5", "width": 2.5}, marker={"size": 4},
                               hovertemplate="P95 %{y:.2f} s<extra></extra>"))
    _threshold(fig, sla_s, f"SLA {sla_s:g} s")
    fig.update_yaxes(rangemode="tozero")
    return _layout(fig, f"{title} (per {_label(bucket)})", "seconds")


def consumer_lag(lag: pd.DataFrame, threshold: float = 1000, bucket: pd.Timedelta | None = None) -> go.Figure:
    """Total lag per consumer group and topic (summed over partitions, worst sample per
    bucket) against the alert threshold (runbook: lag > 1000 messages)."""
    title = "Kafka consumer lag"
    rows = lag.dropna(subset=["sampled_at", "lag"])
    if rows.empty:
        return _empty(title, "no consumer-lag samples in the evidence")
    total = rows.groupby(["group", "topic", "sampled_at"], as_index=False)["lag"].sum()
    total["t"], bucket = _bucket_of(total["sampled_at"], bucket)
    series = total.groupby(["group", "topic", "t"], as_index=False)["lag"].max()
    series["name"] = plain(series["group"].astype(str) + " / " + series["topic"].astype(str))
    worst = series.groupby("name")["lag"].max().sort_values(ascending=False)
    fig = go.Figure()
    for name in worst.index[:MAX_SERIES]:
        s = series[series["name"] == name]
        fig.add_trace(go.Scatter(x=s["t"], y=s["lag"].astype(float), name=name, mode="lines",
                                 hovertemplate="%{y:,.0f} messages<extra>" + name + "</extra>"))
    _threshold(fig, threshold, f"alert threshold {threshold:,.0f}")
    fig.update_yaxes(rangemode="tozero")
    shown = f", {MAX_SERIES} largest of {len(worst)}" if len(worst) > MAX_SERIES else ""
    return _layout(fig, f"{title} (per {_label(bucket)}{shown})", "messages behind")


def error_groups(groups: pd.DataFrame, label: str = "group", count: str = "count", color: str | None = None,
                 top: int = 15) -> go.Figure:
    """Horizontal bars of the ``top`` largest error groups (``label`` and ``count`` columns);
    the rest are summed into one "other" bar."""
    title = "Failures by error group"
    if groups.empty:
        return _empty(title, "no errors grouped")
    g = groups.sort_values(count, ascending=False)
    head, rest = g.iloc[:top], g.iloc[top:]
    labels = plain(head[label].astype(str).str.slice(0, 70)).tolist()
    values = head[count].astype(float).tolist()
    colors = head[color].astype(str).tolist() if color else None
    if len(rest):
        labels.append(f"other ({len(rest)} groups)")
        values.append(float(rest[count].sum()))
        colors = colors + ["other"] if colors else None
    frame = pd.DataFrame({"label": labels, "value": values, "color": colors or ["errors"] * len(labels)})
    fig = go.Figure()
    for name, rows in frame.groupby("color", sort=False):
        fig.add_trace(go.Bar(y=rows["label"], x=rows["value"], orientation="h", name=str(name),
                             hovertemplate="%{y}: %{x:,.0f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=labels, automargin=True)
    fig.update_layout(barmode="stack", showlegend=bool(color))
    return _layout(fig, title, height=max(260, 60 + 26 * len(labels)))


def timeline_swimlane(timeline: pd.DataFrame) -> go.Figure:
    """The timeline as swimlanes (one row per lane, colour by severity). Above
    MAX_TIMELINE_POINTS events, each marker is a bucket of events sized by its count."""
    title = "Timeline across sources"
    t = timeline.dropna(subset=["timestamp"])
    if t.empty:
        return _empty(title, "no timeline events")
    if len(t) <= MAX_TIMELINE_POINTS:
        points = t.assign(n=1, text=plain(t["summary"].astype(str).str.slice(0, 200)))
        suffix = ""
    else:
        when, bucket = _bucket_of(t["timestamp"])
        points = (t.assign(timestamp=when)
                  .groupby(["lane", "severity", "timestamp"], as_index=False, observed=True)
                  .agg(n=("summary", "size"), text=("summary", "first")))
        points["text"] = points["n"].map("{:,} events; first: ".format) + plain(points["text"].astype(str).str.slice(0, 160))
        suffix = f" (events per {_label(bucket)})"
    fig = go.Figure()
    for severity in ("info", "warning", "critical"):
        rows = points[points["severity"] == severity]
        if rows.empty:
            continue
        fig.add_trace(go.Scatter(
            x=rows["timestamp"], y=rows["lane"], mode="markers", name=severity, text=rows["text"],
            marker={"color": SEVERITY_COLORS[severity], "size": (6 + 3 * np.log1p(rows["n"] - 1)).tolist(),
                    "line": {"width": 0.5, "color": "#37474f"}},
            hovertemplate="%{x}<br>%{text}<extra>%{y}</extra>"))
    lanes = sorted(points["lane"].astype(str).unique())
    return _layout(fig, title + suffix, height=max(260, 120 + 40 * len(lanes)))


def volume(frame: pd.DataFrame, time_column: str, by: str | None = None, title: str = "Records over time",
           yaxis: str = "records", colors: dict[str, str] | None = None, bucket: pd.Timedelta | None = None,
           top: int = MAX_SERIES) -> go.Figure:
    """Rows per time bucket as stacked bars, one colour per value of ``by`` (the ``top``
    largest; the rest summed as "other"; missing values as "unknown"). For DLQ records by
    original topic or error class, messages by status, log lines by level."""
    rows = frame.dropna(subset=[time_column])
    if rows.empty:
        return _empty(title, "no rows with a time in the evidence")
    when, bucket = _bucket_of(rows[time_column], bucket)
    group = (rows[by].astype(str).where(rows[by].notna(), "unknown") if by else
             pd.Series("all", index=rows.index))
    names = group.value_counts().index.tolist()
    if len(names) > top:
        other = f"other ({len(names) - top + 1})"
        group = group.where(group.isin(names[:top - 1]), other)
        names = [*names[:top - 1], other]
    counts = pd.DataFrame({"t": when, "g": group}).groupby(["g", "t"]).size()
    fig = go.Figure()
    for name in names:
        series = counts.loc[name]
        label = html.escape(str(name), quote=False)
        fig.add_trace(go.Bar(x=series.index, y=series.to_numpy(), name=label,
                             marker_color=(colors or {}).get(str(name)),
                             hovertemplate="%{x}: %{y:,}<extra>" + label + "</extra>"))
    fig.update_layout(barmode="stack", bargap=0.05, showlegend=by is not None)
    return _layout(fig, f"{title} (per {_label(bucket)})", yaxis)


def conversation_sequence(messages: pd.DataFrame, status_events: pd.DataFrame, max_messages: int = 60) -> go.Figure:
    """One conversation's messages in creation order (one row each, the first on top) with a
    marker per status transition, coloured by status: gaps, retries, failures and messages
    delivered out of order show at a glance. The first ``max_messages`` are drawn."""
    title = "Conversation: messages in order and their status transitions"
    m = messages.dropna(subset=["message_id"]).sort_values("created_at", kind="stable").head(max_messages)
    if m.empty:
        return _empty(title, "no messages in this conversation")
    rows = {mid: f"#{i + 1} {str(mid)[:8]}" for i, mid in enumerate(m["message_id"])}
    ev = status_events[status_events["message_id"].isin(rows)].dropna(subset=["timestamp"])
    ev = ev.assign(row=ev["message_id"].map(rows)).sort_values(["row", "timestamp"])
    # one line trace for all messages, broken between them by None
    xs: list = []
    ys: list = []
    for _, one in ev.groupby("message_id", sort=False):
        xs += [*one["timestamp"], None]
        ys += [*one["row"], None]
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="lines", showlegend=False, line={"color": "#b0bec5", "width": 1},
                               hoverinfo="skip"))
    for status, one in ev.groupby("new_status", sort=False):
        fig.add_trace(go.Scatter(
            x=one["timestamp"], y=one["row"], mode="markers", name=str(status),
            marker={"color": STATUS_COLORS.get(str(status), "#607d8b"), "size": 9,
                    "line": {"width": 0.5, "color": "#37474f"}},
            text=plain(one["error_message"].fillna("")) if "error_message" in one else None,
            hovertemplate="%{x}<br>%{y}: " + html.escape(str(status)) + "<br>%{text}<extra></extra>"))
    fig.update_yaxes(categoryorder="array", categoryarray=list(rows.values()), autorange="reversed", type="category")
    shown = f" (first {max_messages} of {len(messages)})" if len(messages) > max_messages else ""
    return _layout(fig, title + shown, height=max(260, 120 + 22 * len(rows)))


def alert_panels(metrics: pd.DataFrame, alerts: pd.DataFrame, window=None, max_panels: int = 6) -> go.Figure:
    """Metric panels: each replayed alert rule's value over time against its threshold, with the
    minute it fired or would have fired marked (one panel per rule, at most ``max_panels``)."""
    from plotly.subplots import make_subplots

    from forensics.analysis.promql import UnsupportedPromQL
    from forensics.analysis.promql_eval import condition_values
    from forensics.errors import ForensicsError

    title = "Alert rules replayed over the window"
    if metrics is None or metrics.empty or alerts is None or alerts.empty:
        return _empty(title, "no metrics in the evidence")
    rules = alerts[alerts["source"] == "metrics"].drop_duplicates("rule").head(max_panels)
    panels = []
    for row in rules.itertuples(index=False):
        try:
            values, op, threshold = condition_values(row.expr, metrics, window)
        except (UnsupportedPromQL, ForensicsError):
            continue
        if len(values):
            panels.append((row, values, op, threshold))
    if not panels:
        return _empty(title, "no rule could be evaluated on these metrics")
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[html.escape(str(p[0].rule), quote=False) for p in panels])
    for i, (row, values, op, threshold) in enumerate(panels, start=1):
        for n, (labels, series) in enumerate(values.groupby("labels", sort=False)):
            if n >= MAX_SERIES:
                break
            fig.add_trace(go.Scatter(x=series["timestamp"], y=series["value"], mode="lines",
                                     name=html.escape(f"{row.rule} {labels}", quote=False), showlegend=False),
                          row=i, col=1)
        if op and not np.isnan(threshold):
            fig.add_hline(y=threshold, line_dash="dash", line_color=THRESHOLD_COLOR, row=i, col=1,
                          annotation_text=f"{op} {threshold:g}", annotation_position="top left")
        if pd.notna(row.would_fire_at):
            fig.add_vline(x=row.would_fire_at, line_dash="dot", line_color="#7f8c8d", row=i, col=1)
    return _layout(fig, title + " (dotted: would have fired)", height=180 + 170 * len(panels))


def show(fig: go.Figure) -> None:
    """Display ``fig`` as Plotly JSON (application/vnd.plotly.v1+json): JupyterLab and VS Code
    render it natively, and the report template draws it with the one inlined plotly.js.

    Built by hand rather than through plotly.io's renderers, whose import pulls in nbformat
    and its JSON-schema stack (seconds of kernel time per report)."""
    from IPython.display import display

    spec = json.loads(fig.to_json(validate=False))
    spec["config"] = PLOTLY_CONFIG
    display({PLOTLY_MIMETYPE: spec, "text/plain": f"<figure: {fig.layout.title.text or 'untitled'}>"}, raw=True)
