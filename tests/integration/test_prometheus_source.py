"""The Prometheus source against a real Prometheus (Debian's 2.42, started by scripts/services).

A simulated incident's metrics are written as OpenMetrics, backfilled with promtool into
the data directory of a Prometheus of our own (separate stack dir and port, so the shared
stack is not disturbed), which then loads the blocks at start. The range queries must
give back exactly what was written, and the alert replay's PromQL must compute what
Prometheus computes on the same data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import yaml
from stack_tools import REPO, free_ports, private_services, require_installed

from forensics import schema
from forensics.analysis.alerts import detection
from forensics.analysis.promql_eval import evaluate
from forensics.errors import ParameterError, SourceError
from forensics.profiles import load_profile
from forensics.simulate import simulate
from forensics.simulate.metrics import scenario_metrics, to_openmetrics
from forensics.sources.base import CollectRequest
from forensics.sources.prometheus import (
    ActuatorSource,
    BadPromQL,
    NoSeries,
    PrometheusClient,
    PrometheusUnavailable,
    Source,
    backfill,
    choose_step,
    health_snapshot,
)
from forensics.sources.registry import collect as run_collect
from forensics.timeutil import Window

pytestmark = pytest.mark.integration

MISSING_METRIC_RULE = {
    "alert": "HighDeliveryErrorRate",
    "expr": "rate(message_delivery_errors_total[5m]) / rate(message_delivery_time_seconds_count[5m]) > 0.01",
    "for": "2m",
}


@dataclass
class Prom:
    url: str
    blocks: list[str]
    evidence: object
    metrics: pd.DataFrame


@pytest.fixture(scope="module")
def prom(tmp_path_factory) -> Prom:
    """A Prometheus of our own holding a simulated WhatsApp outage (2025-12-03, runbook names)."""
    require_installed("prometheus")
    ev = simulate("whatsapp-outage", messages=1500, seed=11)
    metrics = scenario_metrics(ev)
    stack = tmp_path_factory.mktemp("prometheus-stack")
    rules = stack / "rules.yml"
    runbook = yaml.safe_load((REPO / "forensics" / "rules" / "runbook_alerts.yaml").read_text())
    runbook["groups"].append({"name": "site", "rules": [MISSING_METRIC_RULE]})
    rules.write_text(yaml.safe_dump(runbook))
    port = free_ports(1)[0]
    blocks = backfill(to_openmetrics(metrics), stack / "prometheus" / "data")
    with private_services("prometheus", stack, {"FORENSICS_PROMETHEUS_PORT": str(port),
                                                "FORENSICS_PROMETHEUS_RULES": str(rules)}):
        yield Prom(f"http://127.0.0.1:{port}", blocks, ev, metrics)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["metric", "labels", "timestamp"], kind="stable").reset_index(drop=True)


def test_backfill_wrote_blocks_the_server_loads(prom):
    client = PrometheusClient(prom.url)
    assert prom.blocks, "promtool wrote no block"
    assert client.buildinfo()["version"].startswith("2.")
    names = client.metric_names(prom.evidence.window.start, prom.evidence.window.end)
    assert set(prom.metrics["metric"].unique()) <= set(names)


def test_range_queries_return_the_backfilled_series_exactly(prom):
    client = PrometheusClient(prom.url)
    win = prom.evidence.window
    for name in prom.metrics["metric"].unique():
        got = _sorted(client.query_range(name, win.start, win.end, step=60))
        want = _sorted(prom.metrics[prom.metrics["metric"] == name])
        assert len(got) == len(want), name
        assert (got["labels"] == want["labels"]).all(), name
        assert (got["timestamp"] == want["timestamp"]).all(), name
        np.testing.assert_array_equal(got["value"].to_numpy(), want["value"].to_numpy(), err_msg=name)
        assert (got["source"] == "prometheus").all() and (got["source_object"] == name).all()


def test_collect_gives_the_profile_metrics_rules_and_names(prom):
    win = prom.evidence.window
    result = Source.collect(CollectRequest(win, load_profile("runbook"), {"prometheus_url": prom.url, "step": 60}))
    got = _sorted(result.tables["metrics"])
    want = _sorted(prom.metrics)
    schema.validate("metrics", got)
    pd.testing.assert_frame_equal(got[["metric", "labels", "timestamp", "value"]],
                                  want[["metric", "labels", "timestamp", "value"]])
    desc = result.description
    assert desc["version"].startswith("2.") and desc["step_s"] == 60
    assert {r["name"] for r in desc["rules"]} >= {"HighPendingMessages", "DeliveryLatencyP95",
                                                  MISSING_METRIC_RULE["alert"]}
    assert "message_failed_total" in desc["metric_names"]
    assert any("no series in the window" in n and "rate_limit_remaining" in n for n in desc["notes"])
    assert all(q["status"] == 200 for q in result.queries["metrics"])


def test_automatic_step_keeps_points_per_series_bounded(prom):
    client = PrometheusClient(prom.url)
    end = prom.evidence.window.end
    start = end - pd.Timedelta(days=30)
    frame = client.query_range("message_failed_total", start, end)
    step = float(client.history[-1]["params"]["step"])
    assert step == choose_step(start, end) and (end - start).total_seconds() / step + 1 <= 1100
    assert frame.groupby("labels").size().max() <= 1100
    with pytest.raises(ParameterError, match="points per series"):
        client.query_range("message_failed_total", start, end, step=60)


@pytest.mark.parametrize("expr", [
    "sum(increase(message_failed_total[5m])) / (sum(increase(message_failed_total[5m]))"
    " + sum(increase(message_delivery_time_seconds_count[5m])))",
    "histogram_quantile(0.95, sum by (le) (rate(message_delivery_time_seconds_bucket[5m])))",
    "histogram_quantile(0.5, rate(message_delivery_time_seconds_bucket[3m]))",
    "sum by (service) (increase(http_client_requests_seconds_count{status=~\"5..\"}[1m]))",
    "sum by (topic) (kafka_consumergroup_lag)",
    "sum(messages_stuck_pending)",
    "rate(message_failed_total[2m]) * 60",
    "irate(message_delivery_time_seconds_count[5m])",
    "delta(message_delivery_time_seconds_sum[10m]) / delta(message_delivery_time_seconds_count[10m])",
    "max_over_time(kafka_consumergroup_lag[10m]) - min_over_time(kafka_consumergroup_lag[10m])",
    "avg by (channel) (increase(message_failed_total[5m])) > bool 1",
    "count(up == 1) or vector(0)",
])
def test_replay_computes_what_prometheus_computes(prom, expr):
    """The replay's PromQL against Prometheus' own evaluation of the same expression on the same data."""
    win = prom.evidence.window
    theirs = PrometheusClient(prom.url).query_range(expr, win.start, win.end, step=60)
    ours = evaluate(expr, prom.metrics, Window(win.start, win.end), step="1m")
    assert len(theirs), f"Prometheus returned nothing for {expr}"
    theirs = theirs[theirs["value"].notna()]  # the replay treats NaN (e.g. 0/0) as no sample
    key = ["labels", "timestamp"]
    merged = theirs[key + ["value"]].merge(ours[key + ["value"]], on=key, how="outer", suffixes=("_prom", "_ours"),
                                           indicator=True)
    only = merged[merged["_merge"] != "both"]
    assert only.empty, f"{expr}: series/steps on one side only:\n{only.head(10)}"
    np.testing.assert_allclose(merged["value_ours"], merged["value_prom"], rtol=1e-9, atol=1e-9, err_msg=expr)


def test_bad_promql_is_reported_with_the_server_reason(prom):
    client = PrometheusClient(prom.url)
    win = prom.evidence.window
    with pytest.raises(BadPromQL, match="parse error") as err:
        client.query_range("sum(rate(message_failed_total[5m])", win.start, win.end, step=60)
    assert err.value.status == 400 and err.value.error_type == "bad_data"
    with pytest.raises(BadPromQL, match="range vector"):
        client.query("rate(message_failed_total)")


def test_unreachable_server_is_a_clear_error_and_a_missing_source():
    url = f"http://127.0.0.1:{free_ports(1)[0]}"
    with pytest.raises(PrometheusUnavailable, match="connection refused"):
        PrometheusClient(url).buildinfo()
    window = Window(pd.Timestamp("2025-12-03T14:00Z"), pd.Timestamp("2025-12-03T15:00Z"))
    ev, _, custody = run_collect(["prometheus"], window, "runbook", {"prometheus_url": url})
    assert "connection refused" in ev.missing["prometheus"] and not ev.has("metrics")
    assert custody[-1]["action"] == "collect-failed"


def test_empty_results(prom):
    client = PrometheusClient(prom.url)
    win = prom.evidence.window
    assert client.query_range("no_such_metric_total", win.start, win.end, step=60).empty
    later = Window(win.end + pd.Timedelta(days=1), win.end + pd.Timedelta(days=1, hours=1))
    with pytest.raises(NoSeries, match="none of the metrics"):
        Source.collect(CollectRequest(later, load_profile("runbook"), {"prometheus_url": prom.url}))
    with pytest.raises(SourceError, match="none of the metrics"):
        Source.collect(CollectRequest(win, load_profile("runbook"), {"prometheus_url": prom.url,
                                                              "metrics": ["no_such_metric_total"]}))


def test_detection_replays_the_loaded_rules_and_flags_a_missing_metric(prom):
    win = prom.evidence.window
    ev, _, _ = run_collect(["prometheus"], win, "runbook", {"prometheus_url": prom.url, "step": 60})
    ev.scenario = prom.evidence.scenario
    frame = detection(ev)
    flagged = frame[(frame["rule"] == MISSING_METRIC_RULE["alert"]) & (frame["source"] == "metrics")]
    assert len(flagged) == 1
    note = flagged["note"].iloc[0]
    assert "can never fire: metric message_delivery_errors_total does not exist" in note
    assert "Prometheus' series list" in note
    # the loaded runbook rules and the shipped ones agree on when they would have fired
    fired = frame[frame["source"] == "metrics"].dropna(subset=["would_fire_at"])
    assert {"ConnectorServerErrors", "HighFailedRate"} <= set(fired["rule"])
    for rule, group in fired.groupby("rule"):
        assert group["would_fire_at"].nunique() == 1, rule
    assert frame.attrs["incident_start_basis"] == "scenario started_at"


def test_health_snapshot_reads_a_real_exposition_and_reports_a_dead_service(prom):
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    frame = health_snapshot({"prometheus": prom.url, "message-service": dead}, health_path="/-/healthy",
                            metrics_path="/metrics")
    schema.validate("metrics", frame)
    assert (frame["source"] == "actuator").all()
    health = frame[frame["metric"] == "actuator_health_status"]
    status = {json.loads(lab)["service"]: (json.loads(lab)["status"], v)
              for lab, v in zip(health["labels"], health["value"], strict=True)}
    assert status == {"prometheus": ("UP", 1.0), "message-service": ("UNREACHABLE", 0.0)}
    assert "message-service" in frame.attrs["errors"]
    build = frame[frame["metric"] == "prometheus_build_info"]
    assert len(build) == 1 and json.loads(build["labels"].iloc[0])["version"].startswith("2.")
    assert json.loads(build["labels"].iloc[0])["service"] == "prometheus"
    assert frame["timestamp"].notna().all()


def test_actuator_snapshots_join_the_metrics_table(prom):

    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    win = prom.evidence.window
    result = Source.collect(CollectRequest(win, load_profile("runbook"), {
        "prometheus_url": prom.url, "step": 60, "actuator_urls": {"router-service": dead}}))
    table = result.tables["metrics"]
    schema.validate("metrics", table)
    snap = table[table["source"] == "actuator"]
    assert list(snap["metric"]) == ["actuator_health_status"] and snap["value"].iloc[0] == 0
    assert any(n.startswith("actuator router-service:") for n in result.description["notes"])
    assert len(table[table["source"] == "prometheus"]) == len(prom.metrics)
    with pytest.raises(SourceError, match="no service answered"):
        ActuatorSource.collect(CollectRequest(win, load_profile("runbook"), {"actuator_urls": {"router-service": dead}}))


def test_seed_backfills_the_scenario_history_into_prometheus(tmp_path):
    """`forensics seed --targets prometheus`: the scenario's metrics as blocks in the data
    directory; a server started on it answers range queries over the past window."""
    from forensics.simulate.seed import seed_evidence

    require_installed("prometheus")
    ev = simulate("router-outage", messages=1200, seed=5)
    stack = tmp_path / "stack"
    data = stack / "prometheus" / "data"
    result = seed_evidence(ev, targets=["prometheus"], connections={"prometheus": str(data)})
    assert result.written["prometheus"]["blocks"] >= 1
    assert result.written["prometheus"]["samples"] == len(ev.tables["metrics"]) + len(ev.baseline.tables["metrics"])
    port = free_ports(1)[0]
    with private_services("prometheus", stack, {"FORENSICS_PROMETHEUS_PORT": str(port)}):
        client = PrometheusClient(f"http://127.0.0.1:{port}")
        names = set(client.metric_names())
        assert set(ev.tables["metrics"]["metric"]) - {"ALERTS"} <= names
        frame = client.query_range("sum(messages_stuck_pending)", ev.window.start, ev.window.end, step=60)
        assert frame["value"].max() > 100  # the router outage's PENDING backlog
