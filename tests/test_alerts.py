"""Alert replay: rule files, the PromQL subset, the pending -> firing state machine, missing
metrics, evidence-derived alerts and detection(). Series are crafted per minute so that each
threshold is met exactly (does not fire) and exceeded by the smallest step (fires)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from forensics import schema
from forensics.analysis.alerts import EVIDENCE_SERIES, describe_detection, detection, replay, replay_evidence, translate
from forensics.analysis.promql import PromQLError, UnsupportedPromQL, parse_promql, referenced_metrics
from forensics.analysis.promql_eval import evaluate
from forensics.evidence import Evidence
from forensics.rules import (
    ROLES,
    Rule,
    RuleFileError,
    load_rules,
    metric_names,
    parse_duration,
    parse_rules,
    renames,
)
from forensics.simulate import simulate
from forensics.simulate.metrics import BUCKETS, scenario_metrics, to_openmetrics
from forensics.timeutil import Window

T0 = pd.Timestamp("2025-12-03T14:00:00Z")
WINDOW = Window(T0, T0 + pd.Timedelta(minutes=30))
RUNBOOK = {r.name: r for r in load_rules()}


def at(minute: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=minute)


def series(metric: str, values, labels: dict | None = None, start: float = 0) -> pd.DataFrame:
    """One series sampled every minute from ``start`` (minutes after T0)."""
    values = list(values)
    return pd.DataFrame({"metric": metric, "labels": json.dumps(labels or {}, sort_keys=True),
                         "timestamp": [at(start + i) for i in range(len(values))],
                         "value": np.asarray(values, dtype=float)})


def metrics(*frames: pd.DataFrame) -> pd.DataFrame:
    return schema.conform("metrics", pd.concat(frames, ignore_index=True).assign(source="test"))


def outcome(rule: Rule | str, frame: pd.DataFrame, **kwargs) -> pd.Series:
    if isinstance(rule, str):
        rule = Rule("R", rule)
    rows = replay([rule], frame, WINDOW, **kwargs)
    assert len(rows) == 1
    return rows.iloc[0]


def counter(increments) -> list[float]:
    """A counter's samples from per-minute increments (first sample 0)."""
    return list(np.r_[0.0, np.cumsum(increments)])


# ---- rule files ----------------------------------------------------------------------------

def test_shipped_runbook_rules_are_the_five_recommended_alerts():
    assert list(RUNBOOK) == ["HighPendingMessages", "HighFailedRate", "HighConsumerLag", "ConnectorServerErrors",
                             "DeliveryLatencyP95"]
    assert RUNBOOK["HighPendingMessages"].for_s == 120
    assert {r.evidence for r in RUNBOOK.values()} <= set(EVIDENCE_SERIES)
    thresholds = {name: parse_promql(r.expr).rhs.value for name, r in RUNBOOK.items()}
    assert thresholds == {"HighPendingMessages": 100, "HighFailedRate": 0.05, "HighConsumerLag": 1000,
                          "ConnectorServerErrors": 10, "DeliveryLatencyP95": 5}
    assert all(r.group == "chat4all-runbook" and r.interval_s == 60 for r in RUNBOOK.values())


def test_rule_file_parsing(tmp_path):
    path = tmp_path / "alerts.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "interval": "30s", "rules": [
        {"record": "job:x:rate5m", "expr": "sum(rate(x[5m]))", "labels": {"team": "p"}},
        {"alert": "A", "expr": "job:x:rate5m > 1", "for": "1h30m", "keep_firing_for": "90s",
         "labels": {"severity": "page"}, "annotations": {"summary": "s {{ $value }}"}},
    ]}]}))
    rec, alert = load_rules(path)
    assert (rec.kind, rec.name, rec.labels, rec.interval_s) == ("record", "job:x:rate5m", {"team": "p"}, 30)
    assert (alert.kind, alert.for_s, alert.keep_firing_for_s, alert.origin) == ("alert", 5400, 90, str(path))
    assert alert.annotations["summary"] == "s {{ $value }}" and alert.evidence is None


@pytest.mark.parametrize("doc, problem", [
    ({"rules": []}, "top-level 'groups'"),
    ({"groups": [{"rules": []}]}, "needs a 'name'"),
    ({"groups": [{"name": "g", "rules": [{"alert": "A", "record": "r", "expr": "x"}]}]}, "exactly one"),
    ({"groups": [{"name": "g", "rules": [{"alert": "A"}]}]}, "missing 'expr'"),
    ({"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "x", "for": "2 minutes"}]}]}, "not a Prometheus duration"),
    ({"groups": [{"name": "g", "rules": [{"record": "r", "expr": "x", "for": "1m"}]}]}, "recording rule"),
    ({"groups": [{"name": "g", "rules": {"alert": "A"}}]}, "must be a list"),
])
def test_rule_file_errors_name_the_place(doc, problem):
    with pytest.raises(RuleFileError, match=problem):
        parse_rules(doc, "site.yml")


def test_rule_file_that_is_missing_or_not_yaml(tmp_path):
    with pytest.raises(RuleFileError, match="does not exist"):
        load_rules(tmp_path / "nope.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("groups: [\n")
    with pytest.raises(RuleFileError, match="not valid YAML"):
        load_rules(bad)


def test_durations():
    assert [parse_duration(d) for d in ("0", "90s", "5m", "1h30m", "500ms", "1d", 45)] == [
        0, 90, 300, 5400, 0.5, 86400, 45]
    for bad in ("5", "m5", "-1m", "1.5m", True):
        with pytest.raises(RuleFileError):
            parse_duration(bad)


def test_metric_names_per_profile_and_renames():
    v2 = metric_names("chat4all-v2")
    assert v2.name("failed_total") == "messages_routed_failure_total" and v2.name("stuck_pending") is None
    assert "messages_processing_time_seconds_bucket" in v2.series()
    assert metric_names("some-site-profile").profile == "runbook"
    assert set(metric_names("runbook").names) == set(ROLES)
    mapping = renames("chat4all-v2")
    assert mapping["message_delivery_time_seconds_count"] == "messages_routed_total"  # deliveries, not the _count
    assert mapping["message_delivery_time_seconds_bucket"] == "messages_processing_time_seconds_bucket"


def test_translate_renames_selectors_only():
    rules = {r.name: r for r in translate(load_rules(), "chat4all-v2")}
    assert rules["HighFailedRate"].expr.count("messages_routed_failure_total") == 2
    assert "messages_routed_total" in rules["HighFailedRate"].expr
    assert "messages_processing_time_seconds_bucket" in rules["DeliveryLatencyP95"].expr
    assert rules["HighPendingMessages"].expr == RUNBOOK["HighPendingMessages"].expr  # v2 exports no such gauge
    assert translate(load_rules(), "runbook") == load_rules()


# ---- PromQL subset ---------------------------------------------------------------------------

def test_parser_reports_syntax_and_unsupported_constructs():
    assert referenced_metrics("a / on(x) b + sum(rate(c{d=~'e.*'}[5m]))") == ["a", "b", "c"]
    for text in ("sum(x", "x >", "rate(x)", "x[5m][5m]", "{a=b}", "x{a=~'('}"):
        with pytest.raises(PromQLError):
            parse_promql(text)
    for text in ("x offset 5m", "rate(x[5m:1m])", "topk(3, x)", "label_replace(x, 'a', 'b', 'c', 'd')",
                 "a * on(x) group_left b", "x @ 100"):
        with pytest.raises(UnsupportedPromQL):
            parse_promql(text)


def test_rate_increase_and_extrapolation_match_prometheus():
    """A counter +60/min sampled every minute: increase over [t-5m, t] covers 5 min exactly,
    rate = 1/s; over [t-90s, t] two samples 60 s apart extrapolate by half an interval each side."""
    frame = metrics(series("c_total", counter([60] * 20)))
    inc = evaluate("increase(c_total[5m])", frame, WINDOW)
    assert np.allclose(inc.set_index("timestamp").loc[at(5):at(20), "value"], 300)
    assert inc["timestamp"].min() == at(1)  # at 14:00 only one sample is in range
    rate = evaluate("rate(c_total[90s])", frame, WINDOW).set_index("timestamp")["value"]
    assert rate[at(10)] == pytest.approx(90 / 90)
    reset = metrics(series("r_total", [0, 10, 20, 5, 15]))
    assert evaluate("increase(r_total[4m])", reset, WINDOW).set_index("timestamp")["value"][at(4)] == pytest.approx(35)


def test_histogram_quantile_interpolates_within_the_bucket():
    """100 observations: 90 <= 1 s, 100 <= 5 s. P95: rank 95 falls in (1, 5] half way -> 3 s."""
    rows = [series("h_bucket", [0, 90], {"le": "1"}), series("h_bucket", [0, 100], {"le": "5"}),
            series("h_bucket", [0, 100], {"le": "+Inf"})]
    out = evaluate("histogram_quantile(0.95, rate(h_bucket[1m]))", metrics(*rows), WINDOW)
    assert out.set_index("timestamp")["value"][at(1)] == pytest.approx(3.0)
    tail = [series("h_bucket", [0, 90], {"le": "1"}), series("h_bucket", [0, 95], {"le": "5"}),
            series("h_bucket", [0, 100], {"le": "+Inf"})]
    top = evaluate("histogram_quantile(0.99, rate(h_bucket[1m]))", metrics(*tail), WINDOW)
    assert top.set_index("timestamp")["value"][at(1)] == pytest.approx(5.0)  # rank in +Inf: the last finite bound


def test_vector_matching_aggregation_and_errors():
    frame = metrics(series("a", [4] * 3, {"job": "x", "i": "1"}), series("a", [6] * 3, {"job": "x", "i": "2"}),
                    series("b", [2] * 3, {"job": "x", "i": "1"}), series("b", [3] * 3, {"job": "x", "i": "2"}))
    ratio = evaluate("a / b", frame, WINDOW)
    assert sorted(ratio.drop_duplicates("labels")["value"]) == [2.0, 2.0]
    assert set(ratio["metric"]) == {"a / b"}  # arithmetic drops the name
    summed = evaluate("sum by (job) (a) / on(job) sum by (job) (b)", frame, WINDOW)
    assert summed["value"].iloc[0] == pytest.approx(2.0) and json.loads(summed["labels"].iloc[0]) == {"job": "x"}
    with pytest.raises(PromQLError, match="same labelset"):
        evaluate("a / on(job) b", frame, WINDOW)
    with pytest.raises(PromQLError, match="bool"):
        evaluate("1 > 0", frame, WINDOW)
    assert evaluate("count(a > 5) or vector(0)", frame, WINDOW)["value"].iloc[0] == 1
    assert evaluate("absent(nothing{job='x'})", frame, WINDOW)["labels"].iloc[0] == '{"job":"x"}'


def test_instant_selector_looks_back_five_minutes():
    frame = metrics(series("g", [7]))
    got = evaluate("g", frame, WINDOW).set_index("timestamp")["value"]
    assert list(got.index) == [at(m) for m in range(6)]


# ---- the alert state machine, threshold by threshold -------------------------------------------

@pytest.mark.parametrize("value, fires", [(100, False), (101, True)])
def test_pending_alert_fires_after_for_when_just_above(value, fires):
    frame = metrics(series("messages_stuck_pending", [0] * 5 + [value] * 10 + [0] * 15))
    row = outcome(RUNBOOK["HighPendingMessages"], frame)
    if fires:
        assert row["would_fire_at"] == at(7)  # true from 14:05, for: 2m
        assert row["resolved_at"] == at(15) and row["value_at_fire"] == value
    else:
        assert pd.isna(row["would_fire_at"])
    assert row["peak_value"] == value and row["peak_at"] == at(5) and row["threshold"] == 100


@pytest.mark.parametrize("minutes, fires", [(2, False), (3, True)])
def test_for_duration_is_respected(minutes, fires):
    """Above for 2 evaluations = 1 min of activity: not enough for `for: 2m`; 3 evaluations are."""
    frame = metrics(series("messages_stuck_pending", [0] * 5 + [500] * minutes + [0] * 20))
    row = outcome(RUNBOOK["HighPendingMessages"], frame)
    assert (row["would_fire_at"] == at(7)) if fires else pd.isna(row["would_fire_at"])
    if fires:
        assert row["resolved_at"] == at(8)


@pytest.mark.parametrize("failed, fires", [(5, False), (6, True)])
def test_failed_rate_just_below_and_above(failed, fires):
    """From 14:10 on, each minute 20 outcomes of which `failed` per 5 min fail: 5/100 = 5 % (no).
    The first 5-minute range wholly inside is the one ending 14:15."""
    fail = [0] * 10 + [failed / 5] * 20
    ok = [20] * 10 + [20 - failed / 5] * 20
    frame = metrics(series("message_failed_total", counter(fail)),
                    series("message_delivery_time_seconds_count", counter(ok)))
    row = outcome(RUNBOOK["HighFailedRate"], frame)
    if fires:
        assert row["would_fire_at"] == at(15) and row["value_at_fire"] == pytest.approx(failed / 100)
        assert row["peak_value"] == pytest.approx(0.06)
    else:
        assert pd.isna(row["would_fire_at"]) and row["peak_value"] == pytest.approx(0.05)


@pytest.mark.parametrize("errors, fires", [(10, False), (11, True)])
def test_connector_5xx_per_minute_per_service(errors, fires):
    per_minute = [0] * 12 + [errors] + [0] * 17
    frame = metrics(series("http_client_requests_seconds_count", counter(per_minute),
                           {"service": "whatsapp-connector", "status": "503"}),
                    series("http_client_requests_seconds_count", counter([50] * 30),
                           {"service": "whatsapp-connector", "status": "429"}))
    row = outcome(RUNBOOK["ConnectorServerErrors"], frame)
    assert (row["would_fire_at"] == at(13)) if fires else pd.isna(row["would_fire_at"])
    if fires:
        assert json.loads(row["labels"]) == {"service": "whatsapp-connector"} and row["resolved_at"] == at(14)


@pytest.mark.parametrize("lag, fires", [(1000, False), (1001, True)])
def test_consumer_lag_summed_per_topic(lag, fires):
    parts = [series("kafka_consumergroup_lag", [0] * 20 + [lag / 2] * 10,
                    {"consumergroup": "router-service-group", "topic": "message-events", "partition": str(p)})
             for p in (0, 1)]
    row = outcome(RUNBOOK["HighConsumerLag"], metrics(*parts))
    assert (row["would_fire_at"] == at(20)) if fires else pd.isna(row["would_fire_at"])


@pytest.mark.parametrize("slow, fires", [(5, False), (6, True)])
def test_delivery_p95_just_below_and_above(slow, fires):
    """Per minute 20 deliveries; from 14:10 `slow` of each 100 take > 5 s -> P95 rank 95 sits at the 5 s bound
    (5 slow: exactly 5.0, no alert) or beyond it (6 slow: above 5 s)."""
    fast = [20] * 10 + [20 - slow / 5] * 20
    rows = [series("message_delivery_time_seconds_bucket", counter(fast), {"le": "5"}),
            series("message_delivery_time_seconds_bucket", counter([20] * 30), {"le": "10"}),
            series("message_delivery_time_seconds_bucket", counter([20] * 30), {"le": "+Inf"})]
    row = outcome(RUNBOOK["DeliveryLatencyP95"], metrics(*rows))
    if fires:
        assert row["would_fire_at"] == at(15) and row["value_at_fire"] > 5
    else:
        assert pd.isna(row["would_fire_at"]) and row["peak_value"] == pytest.approx(5.0)


def test_keep_firing_for_holds_the_alert_through_a_gap():
    frame = metrics(series("g", [0, 9, 9, 0, 9, 0, 0, 0, 0, 0]))
    plain = outcome(Rule("R", "g > 5"), frame)
    held = outcome(Rule("R", "g > 5", keep_firing_for_s=120), frame)
    assert plain["would_fire_at"] == at(1) and plain["resolved_at"] == at(3)
    assert json.loads(plain["episodes"])[1]["fired_at"] == "2025-12-03T14:04:00Z"
    assert held["would_fire_at"] == at(1) and held["resolved_at"] == at(7)
    assert len(json.loads(held["episodes"])) == 1


def test_still_firing_at_the_end_of_the_window():
    row = outcome(Rule("R", "g > 5"), metrics(series("g", [0] * 25 + [9] * 6)))
    assert row["would_fire_at"] == at(25) and pd.isna(row["resolved_at"])
    assert "still firing" in row["note"]


def test_recording_rules_feed_later_alerts():
    frame = metrics(series("c_total", counter([0] * 10 + [120] * 20)))
    rules = [Rule("job:c:rate1m", "rate(c_total[1m])", kind="record"), Rule("Fast", "job:c:rate1m > 1.5")]
    rows = replay(rules, frame, WINDOW)
    assert list(rows["rule"]) == ["Fast"] and rows["would_fire_at"].iloc[0] == at(11)


# ---- rules that cannot fire -------------------------------------------------------------------

def test_rule_on_a_missing_metric_is_flagged():
    frame = metrics(series("messages_routed_total", counter([10] * 30)),
                    series("messages_routed_failure_total", counter([1] * 30)))
    rule = Rule("HighRoutingErrorRate", "rate(messages_routing_errors_total[5m]) / rate(messages_routed_total[5m]) > 0.01",
                for_s=120)
    row = outcome(rule, frame)
    assert pd.isna(row["would_fire_at"])
    assert row["note"].startswith("can never fire: metric messages_routing_errors_total does not exist")
    assert "(closest: messages_routed_" in row["note"] and row["threshold"] == 0.01
    known = outcome(rule, frame, known_metrics=["messages_routing_errors_total"])
    assert "can never fire" not in (known["note"] or "")
    spared = outcome(Rule("R", "absent(some_heartbeat_total)"), frame)
    assert spared["would_fire_at"] == at(0)  # absent() expects its metric to be missing


def test_unsupported_rule_is_reported_not_guessed():
    row = outcome(Rule("R", "topk(1, messages_routed_total) > 1"), metrics(series("messages_routed_total", [1, 2])))
    assert row["note"].startswith("not evaluated: unsupported PromQL: aggregation topk")


# ---- from the evidence itself -----------------------------------------------------------------

def _evidence(messages: pd.DataFrame, events: pd.DataFrame, scenario: dict | None = None) -> Evidence:
    ev = Evidence(window=WINDOW)
    ev.put("messages", schema.conform("messages", messages.assign(source="mongodb")))
    ev.put("status_events", schema.conform("status_events", events.assign(source="mongodb", derived=False)))
    ev.scenario = scenario
    return ev


@pytest.mark.parametrize("stuck, fires", [(100, False), (101, True)])
def test_pending_alert_from_messages_and_status_events(stuck, fires):
    """`stuck` messages created at 14:00:10 never leave PENDING (stuck from 14:00:40); 50 others are
    delivered after 1 s. Pending from 14:01, firing at 14:03."""
    n = stuck + 50
    ids = [f"m{i}" for i in range(n)]
    created = [at(0) + pd.Timedelta(seconds=10)] * n
    status = ["PENDING"] * stuck + ["DELIVERED"] * 50
    msgs = pd.DataFrame({"message_id": ids, "channel": "WHATSAPP", "status": status, "created_at": created})
    delivered = pd.DataFrame({"message_id": ids[stuck:], "channel": "WHATSAPP", "old_status": "PENDING",
                              "new_status": "DELIVERED", "timestamp": at(0) + pd.Timedelta(seconds=11)})
    ev = _evidence(msgs, delivered, {"started_at": "2025-12-03T14:00:10Z"})
    rows = replay_evidence(load_rules(), ev).set_index("rule")
    row = rows.loc["HighPendingMessages"]
    assert row["source"] == "evidence" and row["peak_value"] == stuck
    assert (row["would_fire_at"] == at(3)) if fires else pd.isna(row["would_fire_at"])
    assert pd.isna(rows.loc["DeliveryLatencyP95", "would_fire_at"])
    assert rows.loc["DeliveryLatencyP95", "peak_value"] == pytest.approx(1.0)
    frame = detection(ev)
    assert frame.attrs["incident_start_basis"] == "scenario started_at"
    if fires:
        first = frame.iloc[0]
        assert first["rule"] == "HighPendingMessages" and first["time_to_detect_s"] == pytest.approx(170)
        assert describe_detection(frame)[0] == ("HighPendingMessages (from evidence) would have fired at 14:03 UTC, "
                                                "2.8 min after the incident began")


@pytest.mark.parametrize("failed, fires", [(5, False), (6, True)])
def test_failed_rate_from_status_events(failed, fires):
    """100 outcomes between 14:19 and 14:20, `failed` of them FAILED: the 5-minute ranges ending
    14:20 to 14:24 hold all of them and nothing else."""
    ids = [f"m{i}" for i in range(100)]
    times = [at(19) + pd.Timedelta(milliseconds=500 * i + 100) for i in range(100)]
    status = ["FAILED"] * failed + ["DELIVERED"] * (100 - failed)
    msgs = pd.DataFrame({"message_id": ids, "channel": "TELEGRAM", "status": status,
                         "created_at": [t - pd.Timedelta(seconds=1) for t in times]})
    events = pd.DataFrame({"message_id": ids, "channel": "TELEGRAM", "old_status": "PENDING", "new_status": status,
                           "timestamp": times})
    row = replay_evidence(load_rules(), _evidence(msgs, events)).set_index("rule").loc["HighFailedRate"]
    assert row["peak_value"] == pytest.approx(failed / 100)
    assert (row["would_fire_at"] == at(20)) if fires else pd.isna(row["would_fire_at"])
    if fires:
        assert row["resolved_at"] == at(25)


def test_detection_without_metrics_and_with_real_pages():
    ev = simulate("router-outage", messages=1500, seed=3)
    ev.tables.pop("metrics")  # an incident collected without Prometheus
    ev.sources["prometheus"] = {"rules": [{"group": "site", "name": "ServiceInstanceDown", "type": "alerting",
                                           "query": "up == 0", "duration": 60}]}
    frame = detection(ev)
    evid = frame[frame["source"] == "evidence"].set_index("rule")
    assert evid.loc["HighPendingMessages", "would_fire_at"] > pd.Timestamp(ev.scenario["started_at"])
    site = frame[frame["rule"] == "ServiceInstanceDown"].iloc[0]
    assert site["source"] == "metrics" and site["note"] == "not evaluated: the evidence holds no metrics"
    assert pd.isna(frame["fired_at"]).all()
    # the same incident with the platform's metrics, and the page Prometheus really sent
    m = scenario_metrics(ev)
    page = schema.conform("metrics", pd.DataFrame({
        "metric": "ALERTS", "labels": json.dumps({"alertname": "HighPendingMessages", "alertstate": "firing"}),
        "timestamp": [evid.loc["HighPendingMessages", "would_fire_at"] + pd.Timedelta(minutes=11)], "value": 1.0,
        "source": "prometheus"}))
    ev.put("metrics", pd.concat([m, page], ignore_index=True))
    both = detection(ev)
    pending = both[both["rule"] == "HighPendingMessages"].set_index("source")
    assert pending.loc["metrics", "would_fire_at"] == pending.loc["evidence", "would_fire_at"]
    assert (pending["fired_at"] - pending["would_fire_at"] == pd.Timedelta(minutes=11)).all()
    assert "11.0 min before the first page" in describe_detection(both)[0]
    down = both[both["rule"] == "ServiceInstanceDown"].iloc[0]
    assert pd.isna(down["would_fire_at"]) and down["peak_value"] == 1.0


def test_deployed_profile_has_no_pending_gauge():
    ev = simulate("router-outage", messages=3000, seed=5, profile="chat4all-v2")
    ev.put("metrics", scenario_metrics(ev))
    frame = detection(ev).set_index(["rule", "source"])
    assert frame.loc[("HighPendingMessages", "metrics"), "note"].startswith(
        "can never fire: metric messages_stuck_pending does not exist")
    assert pd.notna(frame.loc[("HighPendingMessages", "evidence"), "would_fire_at"])
    lag = frame.loc[("HighConsumerLag", "metrics")]
    assert pd.notna(lag["would_fire_at"])
    assert lag["would_fire_at"] == frame.loc[("HighConsumerLag", "evidence"), "would_fire_at"]


# ---- simulator metrics and OpenMetrics ---------------------------------------------------------

def test_scenario_metrics_agree_with_the_evidence():
    ev = simulate("whatsapp-rate-limit", messages=1500, seed=2)
    m = scenario_metrics(ev)
    schema.validate("metrics", m)
    last = m[m["timestamp"] == m["timestamp"].max()]
    failed = last.loc[last["metric"] == "message_failed_total", "value"].sum()
    delivered = last.loc[last["metric"] == "message_delivery_time_seconds_count", "value"].sum()
    se = ev.table("status_events")
    assert failed == (se["new_status"] == "FAILED").sum() and delivered == (se["new_status"] == "DELIVERED").sum()
    buckets = last[last["metric"] == "message_delivery_time_seconds_bucket"]
    assert buckets["labels"].str.contains('"le":"+Inf"', regex=False).sum() == m.loc[
        m["metric"] == "message_failed_total", "labels"].nunique()
    assert len(buckets) == len(BUCKETS) * buckets["labels"].str.replace(r',?"le":"[^"]+"', "", regex=True).nunique()
    assert (m["timestamp"].dt.second == 0).all()


def test_openmetrics_text():
    frame = metrics(series("x_total", [1, 2], {"path": 'a"b\\c\nd'}), series("g", [np.nan, 0.5]),
                    series("h_bucket", [1], {"le": "+Inf"}), series("h_count", [1]), series("h_sum", [0.25]))
    frame.loc[0, "timestamp"] += pd.Timedelta(milliseconds=1)
    text = to_openmetrics(frame)
    lines = text.splitlines()
    assert lines[-1] == "# EOF" and text.endswith("\n")
    assert lines[0] == "g 0.5 1764770460.000"  # the NaN row has no value: skipped
    assert "# TYPE h histogram" in lines and "# TYPE x counter" in lines
    assert 'x_total{path="a\\"b\\\\c\\nd"} 1.0 1764770400.001' in lines
    assert lines.index("# TYPE h histogram") < lines.index('h_bucket{le="+Inf"} 1.0 1764770400.000')
    with pytest.raises(Exception, match="not a valid Prometheus metric name"):
        to_openmetrics(metrics(series("rate(x[5m])", [1])))
    assert to_openmetrics(schema.empty("metrics")) == "# EOF\n"
