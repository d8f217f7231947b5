"""Figures stay small whatever the incident size, say what is missing, and show evidence text literally."""

import numpy as np
import pandas as pd
import pytest

from forensics import schema
from forensics.evidence import Evidence
from forensics.report import figures
from forensics.timeutil import Window

T0 = pd.Timestamp("2025-12-03T14:00:00Z")


def _evidence(messages: pd.DataFrame, events: pd.DataFrame) -> Evidence:
    """The frames as evidence (partial columns are enough: figures read only what they name)."""
    return Evidence(Window(T0, T0 + pd.Timedelta("2h")), tables={"messages": messages, "status_events": events})


def _messages(n: int, seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """n messages over one hour (10 % FAILED) and their PENDING, SENT and DELIVERED/FAILED transitions."""
    rng = np.random.default_rng(seed)
    created = T0 + pd.to_timedelta(rng.uniform(0, 3600, n), unit="s")
    ids = pd.array(np.char.add("m", np.arange(n).astype(str)), dtype="string")
    status = np.where(rng.random(n) < 0.1, "FAILED", "DELIVERED")
    messages = pd.DataFrame({"message_id": ids, "created_at": created.astype(schema.UTC_TS),
                             "status": pd.array(status, dtype="string"),
                             "channel": pd.array(rng.choice(["WHATSAPP", "TELEGRAM"], n), dtype="string")})
    sent = created + pd.to_timedelta(0.2 + rng.exponential(0.3, n), unit="s")
    done = sent + pd.to_timedelta(rng.exponential(1.0, n), unit="s")
    events = pd.concat([pd.DataFrame({"message_id": ids, "new_status": pd.array(np.full(n, st), dtype="string")
                                      if st else pd.array(status, dtype="string"), "timestamp": t})
                        for st, t in (("PENDING", created), ("SENT", sent), (None, done))], ignore_index=True)
    return messages, events


@pytest.fixture(scope="module")
def million():
    return _messages(1_000_000)


def test_time_bucket_keeps_series_short():
    assert figures.time_bucket(T0, T0 + pd.Timedelta("1h")) == pd.Timedelta("30s")
    assert figures.time_bucket(T0, T0 + pd.Timedelta("90s")) == pd.Timedelta("1s")
    for span in ("10s", "1h", "1D", "30D"):
        bucket = figures.time_bucket(T0, T0 + pd.Timedelta(span))
        assert pd.Timedelta(span) / bucket <= figures.MAX_BUCKETS or bucket == figures.TIME_BUCKETS[-1]


@pytest.mark.slow
def test_a_million_messages_give_small_figures(million):
    messages, events = million
    built = [figures.status_flow(_evidence(messages, events)), figures.failure_rate(messages),
             figures.delivery_latency(_evidence(messages, events))]
    sizes = [len(f.to_json()) for f in built]
    assert max(sizes) < 100_000, sizes


def test_failure_rate_is_the_failed_share_per_bucket():
    messages, _ = _messages(5000)
    fig = figures.failure_rate(messages, threshold=0.05)
    overall = fig.data[0]
    assert overall.name == "all channels"
    assert len(overall.x) <= figures.MAX_BUCKETS + 1
    counts = np.asarray(overall.customdata)
    assert counts[:, 0].sum() == (messages["status"] == "FAILED").sum()
    assert counts[:, 1].sum() == len(messages)
    assert any(s.y0 == 0.05 for s in fig.layout.shapes)


def test_status_flow_counts_transitions_and_never_draws_a_cycle():
    _, events = _messages(2000)
    # a retry: FAILED -> PENDING -> SENT for one message must not loop back to an earlier node
    retry = pd.DataFrame({"message_id": pd.array(["r"] * 5, dtype="string"),
                          "new_status": pd.array(["PENDING", "SENT", "FAILED", "PENDING", "SENT"], dtype="string"),
                          "timestamp": [T0 + pd.Timedelta(seconds=s) for s in range(5)]})
    sankey = figures.status_flow(_evidence(schema.empty("messages"),
                                           pd.concat([events, retry], ignore_index=True))).data[0]
    x = list(sankey.node.x)
    assert all(x[s] < x[t] for s, t in zip(sankey.link.source, sankey.link.target, strict=True))
    labels = list(sankey.node.label)
    first = [v for s, t, v in zip(sankey.link.source, sankey.link.target, sankey.link.value, strict=True)
             if labels[s] == "PENDING" and labels[t] == "SENT" and x[s] == min(x)]
    assert sum(first) == 2001


def test_delivery_latency_p95_against_the_sla():
    messages, events = _messages(3000)
    fig = figures.delivery_latency(_evidence(messages, events), sla_s=5.0)
    assert 1.0 < float(np.nanmedian(fig.data[0].y)) < 10.0
    assert any(s.y0 == 5.0 for s in fig.layout.shapes)


def test_consumer_lag_sums_partitions_and_caps_series():
    samples = pd.date_range(T0, periods=30, freq="1min")
    rows = [{"sampled_at": t, "group": f"g{g}", "topic": "whatsapp-outbound", "partition": p, "lag": 100 * g}
            for t in samples for g in range(12) for p in range(3)]
    fig = figures.consumer_lag(pd.DataFrame(rows), threshold=1000)
    assert len(fig.data) == figures.MAX_SERIES
    assert fig.data[0].name == "g11 / whatsapp-outbound" and max(fig.data[0].y) == 3300


@pytest.mark.parametrize("build", [
    lambda: figures.status_flow(_evidence(schema.empty("messages"), schema.empty("status_events"))),
    lambda: figures.failure_rate(schema.empty("messages")),
    lambda: figures.delivery_latency(_evidence(schema.empty("messages"), schema.empty("status_events"))),
    lambda: figures.consumer_lag(schema.empty("consumer_lag")),
    lambda: figures.error_groups(pd.DataFrame({"group": [], "count": []})),
    lambda: figures.timeline_swimlane(schema.empty("timeline")),
])
def test_missing_evidence_gives_a_figure_that_says_so(build):
    fig = build()
    assert not fig.data
    assert fig.layout.annotations[0].text.startswith("no ")


def test_error_groups_cap_categories_and_show_markup_literally():
    groups = pd.DataFrame({"group": ["<a href='javascript:alert(1)'>x</a>"] + [f"code {i}" for i in range(40)],
                           "count": [500] + list(range(40, 0, -1))})
    fig = figures.error_groups(groups, top=15)
    labels = [y for trace in fig.data for y in trace.y]
    assert len(labels) == 16 and labels[-1] == "other (26 groups)"
    assert labels[0].startswith("&lt;a href=") and "<a" not in "".join(labels)


def test_timeline_swimlane_aggregates_large_timelines():
    n = figures.MAX_TIMELINE_POINTS * 4
    timeline = schema.conform("timeline", {
        "timestamp": T0 + pd.to_timedelta(np.arange(n), unit="s"), "lane": np.where(np.arange(n) % 2, "logs", "messages"),
        "severity": "warning", "kind": "error_log", "summary": "<b>failed</b>"})
    fig = figures.timeline_swimlane(timeline)
    points = sum(len(t.x) for t in fig.data)
    assert points <= 2 * (figures.MAX_BUCKETS + 1)
    assert "&lt;b&gt;failed&lt;/b&gt;" in fig.data[0].text[0]
    small = figures.timeline_swimlane(timeline.head(10))
    assert sum(len(t.x) for t in small.data) == 10


def test_volume_stacks_counts_per_bucket_and_caps_groups():
    messages, _ = _messages(3000)
    groups = pd.Series([f"<b>g{i % 12}</b>" for i in range(len(messages))], dtype="string")
    fig = figures.volume(messages.assign(group=groups), "created_at", by="group", top=5)
    assert len(fig.data) == 5 and fig.data[-1].name == "other (8)"
    assert sum(int(np.sum(t.y)) for t in fig.data) == len(messages)
    assert all("<b>" not in t.name for t in fig.data)  # evidence text shows literally
    by_status = figures.volume(messages, "created_at", by="status", colors=figures.STATUS_COLORS)
    assert {t.name: t.marker.color for t in by_status.data}["FAILED"] == figures.STATUS_COLORS["FAILED"]
    assert figures.volume(messages.iloc[:0], "created_at").layout.annotations[0].text.startswith("no rows")


def test_conversation_sequence_rows_in_creation_order_one_marker_per_transition():
    messages, events = _messages(30)
    fig = figures.conversation_sequence(messages, events, max_messages=10)
    first = messages.sort_values("created_at")["message_id"].iloc[0]
    assert list(fig.layout.yaxis.categoryarray)[0] == f"#1 {first[:8]}"
    markers = [t for t in fig.data if t.mode == "markers"]
    shown = set(messages.sort_values("created_at")["message_id"].head(10))
    assert sum(len(t.x) for t in markers) == events["message_id"].isin(shown).sum()
    assert "first 10 of 30" in fig.layout.title.text


def test_alert_panels_draw_each_rule_against_its_threshold():
    from forensics.analysis.pipeline import analyze
    from forensics.simulate import simulate

    ev = simulate("router-outage", messages=1500, seed=3)
    a = analyze(ev)
    fig = figures.alert_panels(ev.table("metrics"), a.alerts, ev.window)
    titles = [ann.text for ann in fig.layout.annotations]
    assert "HighPendingMessages" in titles
    assert any(t == "> 100" for t in titles)  # the threshold line is labelled
    assert len(fig.data) >= 5
    empty = figures.alert_panels(ev.table("metrics").iloc[0:0], a.alerts, ev.window)
    assert "no metrics" in empty.layout.annotations[0].text
