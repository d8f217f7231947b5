"""Each detector on crafted tables just below and just above its threshold."""

import json

import numpy as np
import pandas as pd
import pytest

from forensics import schema
from forensics.analysis.detectors import DETECTORS, Thresholds, detect, detector, run_detectors
from forensics.errors import ParameterError
from forensics.evidence import Evidence
from forensics.timeutil import Window

END = pd.Timestamp("2025-12-03T15:00:00Z")
WINDOW = Window(END - pd.Timedelta("1h"), END)


def evidence(scenario=None, **tables) -> Evidence:
    return Evidence.from_records(WINDOW, scenario, source="test", **tables)


def ago(seconds) -> pd.Timestamp:
    return END - pd.Timedelta(seconds=seconds)


def messages(n, *, status="DELIVERED", age_s=600.0, channel="WHATSAPP", start=0, conv=None, **extra) -> dict:
    ages = age_s if isinstance(age_s, list | np.ndarray) else [age_s] * n
    return {"message_id": [f"m{start + i}" for i in range(n)],
            "conversation_id": conv if conv is not None else [f"c{start + i}" for i in range(n)],
            "recipient_id": [f"+551199{start + i:07d}" for i in range(n)],
            "channel": [channel] * n, "status": status if isinstance(status, list) else [status] * n,
            "created_at": [ago(a) for a in ages], **extra}


def concat(*parts: dict) -> dict:
    keys = dict.fromkeys(k for p in parts for k in p)
    return {k: sum((list(p[k]) if k in p else [None] * len(p["message_id"]) for p in parts), []) for k in keys}


def run(name, ev, **thresholds):
    return [f for f in detect(ev, thresholds, only=[name]).items]


# ---- registry, thresholds, empty evidence ------------------------------------------------------

def test_registry_has_the_runbook_checks():
    assert {"stuck_pending", "stuck_sent", "failed_rate", "consumer_lag", "connector_5xx", "delivery_p95",
            "out_of_order", "duplicate_deliveries", "missing_topics", "stuck_locks", "replay_blockers",
            "error_groups", "error_log_burst", "service_silence"} <= set(DETECTORS)


def test_a_detector_registers_with_one_decorator():
    @detector("test_only_detector")
    def fn(ctx):
        return []

    try:
        assert DETECTORS["test_only_detector"] is fn
        with pytest.raises(ValueError):
            detector("test_only_detector")(fn)
    finally:
        DETECTORS.pop("test_only_detector")


def test_thresholds_default_to_the_runbook_and_reject_unknown_keys():
    t = Thresholds()
    assert (t.stuck_pending_s, t.failed_rate, t.consumer_lag, t.connector_5xx_per_min, t.p95_latency_s) == \
        (30, 0.05, 1000, 10, 5)
    assert Thresholds.from_dict({"failed_rate": 0.1}).failed_rate == 0.1
    with pytest.raises(ParameterError, match="unknown threshold 'failed_ratio'.*known: .*failed_rate"):
        Thresholds.from_dict({"failed_ratio": 0.1})
    with pytest.raises(ParameterError, match="non-negative number"):
        Thresholds.from_dict({"failed_rate": "high"})
    with pytest.raises(ParameterError):
        Thresholds.from_dict({"failed_rate": True})


@pytest.mark.parametrize("name", list(DETECTORS))
def test_every_detector_is_silent_on_absent_sources(name):
    assert run(name, Evidence(WINDOW)) == []


@pytest.mark.parametrize("name", list(DETECTORS))
def test_every_detector_is_silent_on_empty_tables(name):
    ev = Evidence(WINDOW)
    for table in schema.EVIDENCE_TABLES:
        ev.put(table, schema.empty(table))
    assert run(name, ev) == []


def test_run_detectors_returns_the_findings_table():
    ev = evidence(messages=messages(3, status="PENDING", age_s=120))
    f = run_detectors(ev)
    schema.validate("findings", f)
    assert f["finding_id"].is_unique
    refs = json.loads(f.loc[f["detector"] == "stuck_pending", "evidence"].iat[0])
    assert refs[0] == {"table": "messages", "column": "message_id", "values": ["m0", "m1", "m2"], "total": 3}


def test_evidence_references_are_capped_at_50_values_with_the_total():
    ev = evidence(messages=messages(120, status="PENDING", age_s=60))
    (f,) = run("stuck_pending", ev)
    assert len(f.evidence[0]["values"]) == 50 and f.evidence[0]["total"] == 120


def test_time_is_relative_to_the_window_end_not_the_wall_clock():
    ev = evidence(messages=messages(1, status="PENDING", age_s=31))
    (f,) = run("stuck_pending", ev)
    assert f.last_seen == END


# ---- stuck PENDING ---------------------------------------------------------------------------

def test_stuck_pending_just_below_threshold():
    assert run("stuck_pending", evidence(messages=messages(5, status="PENDING", age_s=29.9))) == []


def test_stuck_pending_just_above_threshold():
    (f,) = run("stuck_pending", evidence(messages=messages(5, status="PENDING", age_s=30.1)))
    assert f.count == 5 and f.channel == "WHATSAPP" and f.severity == "warning"
    assert f.first_seen == ago(30.1) + pd.Timedelta(seconds=30)


def test_stuck_pending_alert_just_below_threshold():
    (f,) = run("stuck_pending", evidence(messages=messages(100, status="PENDING", age_s=121)))
    assert f.severity == "warning"


def test_stuck_pending_alert_just_above_threshold():
    (f,) = run("stuck_pending", evidence(messages=messages(101, status="PENDING", age_s=121)))
    assert f.severity == "critical" and f.metric == 101


def test_stuck_pending_per_channel():
    ev = evidence(messages=concat(messages(3, status="PENDING", age_s=60),
                                  messages(2, status="PENDING", age_s=60, channel="TELEGRAM", start=3)))
    assert {f.channel: f.count for f in run("stuck_pending", ev)} == {"WHATSAPP": 3, "TELEGRAM": 2}


def test_stuck_pending_derived_from_status_events_when_messages_are_missing():
    ev = evidence(status_events={"message_id": ["a", "b"], "new_status": ["PENDING", "PENDING"],
                                 "timestamp": [ago(100), ago(10)], "derived": [True, True], "channel": ["TELEGRAM"] * 2})
    (f,) = run("stuck_pending", ev)
    assert f.count == 1 and f.channel == "TELEGRAM"


# ---- stuck SENT -------------------------------------------------------------------------------

def _sent(age_s):
    return evidence(messages=messages(3, status="SENT", age_s=age_s + 5),
                    status_events={"message_id": ["m0", "m1", "m2"], "new_status": ["SENT"] * 3,
                                   "timestamp": [ago(age_s)] * 3, "derived": [False] * 3})


def test_stuck_sent_just_below_threshold():
    assert run("stuck_sent", _sent(119)) == []


def test_stuck_sent_just_above_threshold():
    (f,) = run("stuck_sent", _sent(121))
    assert f.count == 3


# ---- FAILED rate --------------------------------------------------------------------------------

def _failed(n_failed, n=100, channel="WHATSAPP"):
    status = ["FAILED"] * n_failed + ["DELIVERED"] * (n - n_failed)
    return messages(n, status=status, age_s=list(np.linspace(1790, 1510, n)), channel=channel)


def test_failed_rate_just_below_threshold():
    assert run("failed_rate", evidence(messages=_failed(5))) == []


def test_failed_rate_just_above_threshold():
    found = run("failed_rate", evidence(messages=_failed(6)))
    assert {f.key for f in found} == {"ALL", "WHATSAPP"}
    f = next(f for f in found if f.key == "ALL")
    assert f.metric == pytest.approx(0.06) and f.threshold == 0.05 and f.count == 6 and f.channel is None
    assert f.first_seen == pd.Timestamp("2025-12-03T14:30:00Z") and f.last_seen == pd.Timestamp("2025-12-03T14:35:00Z")


def test_failed_rate_per_channel_even_when_the_total_is_below():
    m = concat(_failed(0, n=400), {**_failed(6, n=40, channel="INSTAGRAM"),
                                   "message_id": [f"i{i}" for i in range(40)]})
    found = run("failed_rate", evidence(messages=m))
    assert [f.key for f in found] == ["INSTAGRAM"]


def test_failed_rate_ignores_windows_with_too_few_messages():
    assert run("failed_rate", evidence(messages=_failed(5, n=19))) == []


# ---- consumer lag ---------------------------------------------------------------------------------

def _lag(values, partitions=1, group="router-service-group"):
    rows = {"sampled_at": [], "group": [], "topic": [], "partition": [], "lag": []}
    for i, v in enumerate(values):
        for p in range(partitions):
            rows["sampled_at"].append(ago(600 - 60 * i))
            rows["group"].append(group)
            rows["topic"].append("message-events")
            rows["partition"].append(p)
            rows["lag"].append(v[p] if isinstance(v, list) else v // partitions)
    return evidence(consumer_lag=rows)


def test_consumer_lag_just_below_threshold():
    (f,) = run("consumer_lag", _lag([50, 400, 1000, 600]))
    assert f.severity == "warning" and f.threshold == 100


def test_consumer_lag_just_above_threshold():
    (f,) = run("consumer_lag", _lag([50, 400, 1001, 600]))
    assert f.severity == "critical" and f.metric == 1001 and f.threshold == 1000
    assert f.first_seen == ago(480) and f.tags["router"] is True


def test_consumer_lag_normal_just_below_and_above():
    assert run("consumer_lag", _lag([10, 100, 50])) == []
    assert len(run("consumer_lag", _lag([10, 101, 50]))) == 1


def test_consumer_lag_growing_and_draining():
    assert run("consumer_lag", _lag([100, 2000, 4000, 6000]))[0].tags["trend"] == "growing"
    assert run("consumer_lag", _lag([100, 6000, 2000, 200]))[0].tags["trend"] == "draining"


def test_consumer_lag_on_few_partitions_is_skewed():
    (f,) = run("consumer_lag", _lag([[0, 0, 0, 0, 0], [3000, 10, 10, 10, 10]], partitions=5))
    assert f.tags["skewed"] and f.tags["hot_partitions"] == [0]
    (g,) = run("consumer_lag", _lag([[0] * 5, [600] * 5], partitions=5))
    assert not g.tags["skewed"]


# ---- connector 5xx ---------------------------------------------------------------------------------

def _spans(n, status=503, service="whatsapp-connector"):
    minute_start = ago(300)
    return {"trace_id": [f"{i:032x}" for i in range(n)], "span_id": [f"{i:016x}" for i in range(n)],
            "service": [service] * n, "start": [minute_start + pd.Timedelta(seconds=i * 50 / max(n, 1))
                                                for i in range(n)],
            "http_status_code": [status] * n}


def test_connector_5xx_just_below_threshold():
    assert run("connector_5xx", evidence(spans=_spans(10))) == []


def test_connector_5xx_just_above_threshold():
    (f,) = run("connector_5xx", evidence(spans=_spans(11)))
    assert f.metric == 11 and f.channel == "WHATSAPP" and f.key == "whatsapp-connector"


def test_connector_5xx_counts_4xx_as_nothing_and_logs_as_well():
    assert run("connector_5xx", evidence(spans=_spans(50, status=429))) == []
    logs = {"timestamp": [ago(300) + pd.Timedelta(seconds=i) for i in range(11)], "service": ["telegram-connector"] * 11,
            "level": ["ERROR"] * 11, "http_status": [502] * 11, "message": ["status=502"] * 11}
    (f,) = run("connector_5xx", evidence(log_events=logs))
    assert f.channel == "TELEGRAM"


def test_connector_5xx_does_not_add_spans_and_logs_of_the_same_calls():
    logs = {"timestamp": [ago(300) + pd.Timedelta(seconds=i) for i in range(8)], "service": ["whatsapp-connector"] * 8,
            "level": ["ERROR"] * 8, "http_status": [503] * 8}
    assert run("connector_5xx", evidence(spans=_spans(8), log_events=logs)) == []


# ---- delivery P95 ---------------------------------------------------------------------------------

def _latency(slow_s, n=40):
    # 37 fast messages and three slow ones: the P95 of 40 lies between the 38th and 39th values, both slow
    m = messages(n, age_s=list(np.linspace(1790, 1600, n)))
    created = m["created_at"]
    lat = [1.0] * (n - 3) + [slow_s] * 3
    ev = {"message_id": m["message_id"], "new_status": ["DELIVERED"] * n,
          "timestamp": [c + pd.Timedelta(seconds=x) for c, x in zip(created, lat, strict=True)], "derived": [False] * n}
    return evidence(messages=m, status_events=ev)


def test_delivery_p95_just_below_threshold():
    assert run("delivery_p95", _latency(4.999)) == []


def test_delivery_p95_just_above_threshold():
    found = run("delivery_p95", _latency(5.001))
    assert {f.key for f in found} == {"ALL", "WHATSAPP"}
    assert all(f.metric == pytest.approx(5.001) and f.count == 3 for f in found)


def test_delivery_p95_measures_from_created_to_first_delivered():
    ev = _latency(1.0)
    assert run("delivery_p95", ev) == []


# ---- out of order ---------------------------------------------------------------------------------

def _ordered(swap: bool, ahead_s=1.5, retries=0):
    m = messages(3, conv=["c1", "c1", "c1"], age_s=[100, 90, 80], retry_count=[retries, 0, 0])
    delivered = [ago(99), ago(89), ago(79)]
    if swap:
        delivered[1] = ago(99 + ahead_s)  # the second message arrives before the first
    ev = {"message_id": m["message_id"], "new_status": ["DELIVERED"] * 3, "timestamp": delivered,
          "derived": [False] * 3}
    return evidence(messages=m, status_events=ev)


def test_out_of_order_just_below_threshold():
    assert run("out_of_order", _ordered(False)) == []


def test_out_of_order_just_above_threshold():
    (f,) = run("out_of_order", _ordered(True))
    assert f.key == "WHATSAPP:reordered" and f.severity == "warning"
    assert f.count == 1 and f.metric == 1
    assert f.evidence[0]["values"] == ["m1"]


def test_out_of_order_within_the_tolerance_is_jitter():
    (f,) = run("out_of_order", _ordered(True, ahead_s=0.9))
    assert f.key == "WHATSAPP:jitter" and f.severity == "info"


def test_out_of_order_behind_a_retried_message_is_attributed_to_the_retry():
    (f,) = run("out_of_order", _ordered(True, ahead_s=30, retries=2))
    assert f.key == "WHATSAPP:after_retry" and f.severity == "info"


def test_out_of_order_never_compares_across_conversations():
    m = messages(2, conv=["c1", "c2"], age_s=[100, 90])
    ev = {"message_id": ["m0", "m1"], "new_status": ["DELIVERED"] * 2, "timestamp": [ago(50), ago(95)],
          "derived": [False] * 2}
    assert run("out_of_order", evidence(messages=m, status_events=ev)) == []


# ---- duplicates -----------------------------------------------------------------------------------

def test_duplicate_deliveries_just_below_threshold():
    ev = evidence(messages=messages(2), status_events={"message_id": ["m0", "m1"], "new_status": ["DELIVERED"] * 2,
                                                       "timestamp": [ago(500), ago(400)], "derived": [False] * 2})
    assert run("duplicate_deliveries", ev) == []


def test_duplicate_deliveries_just_above_threshold():
    ev = evidence(messages=messages(2), status_events={"message_id": ["m0", "m1", "m1"],
                                                       "new_status": ["DELIVERED"] * 3,
                                                       "timestamp": [ago(500), ago(400), ago(390)],
                                                       "derived": [False] * 3})
    (f,) = run("duplicate_deliveries", ev)
    assert f.key == "status_events" and f.count == 1 and f.metric == 1


def test_duplicate_dead_letters():
    dlq = {"topic": ["whatsapp-outbound-dlq"] * 3, "partition": [0, 0, 1], "offset": [5, 5, 7],
           "message_id": ["m0", "m0", "m1"], "timestamp": [ago(100)] * 3}
    found = run("duplicate_deliveries", evidence(messages=messages(2), dlq_records=dlq))
    assert [f.key for f in found] == ["dlq"]


# ---- missing topics -----------------------------------------------------------------------------

def test_missing_topics_just_below_threshold():
    assert run("missing_topics", evidence(scenario={"missing_topics": []}, messages=messages(2))) == []


def test_missing_topics_just_above_threshold():
    ev = evidence(scenario={"missing_topics": ["whatsapp-outbound"]},
                  messages=concat(messages(2, status="PENDING", age_s=60),
                                  messages(1, status="PENDING", channel="TELEGRAM", start=2)))
    (f,) = run("missing_topics", ev)
    assert f.key == "whatsapp-outbound" and f.channel == "WHATSAPP" and f.severity == "critical"
    assert len(f.messages) == 2


def test_missing_topics_from_producer_errors_in_logs():
    logs = {"timestamp": [ago(300), ago(200)], "service": ["router-service"] * 2, "level": ["ERROR", "WARN"],
            "message": ["Topic telegram-outbound not present in metadata after 60000 ms.",
                        "Error while fetching metadata: {telegram-outbound=UNKNOWN_TOPIC_OR_PARTITION}"],
            "source_ref": ["1", "2"]}
    (f,) = run("missing_topics", evidence(log_events=logs))
    assert f.key == "telegram-outbound" and f.count == 2 and f.first_seen == ago(300)


def test_missing_topics_from_a_source_inventory():
    ev = evidence(messages=messages(1))
    ev.sources["kafka"] = {"status": "ok", "topics": [{"topic": "message-events", "present": False},
                                                      {"topic": "whatsapp-outbound", "present": True}]}
    assert [f.key for f in run("missing_topics", ev)] == ["message-events"]


def test_missing_topics_from_the_topics_table_latest_sample_wins():
    topics = {"sampled_at": [ago(600), ago(10), ago(10)], "topic": ["message-events", "message-events", "whatsapp-outbound"],
              "present": [True, False, True], "partitions": [10, None, 3], "expected_partitions": [10, 10, 5],
              "partitions_match": [True, None, False], "channel": [None, None, "WHATSAPP"]}
    found = {f.key: f for f in run("missing_topics", evidence(topics=topics, messages=messages(1)))}
    assert set(found) == {"message-events", "whatsapp-outbound:partitions"}
    assert found["message-events"].severity == "critical"
    assert found["whatsapp-outbound:partitions"].severity == "warning"
    assert found["whatsapp-outbound:partitions"].metric == 3 and found["whatsapp-outbound:partitions"].threshold == 5


# ---- locks and processed keys ---------------------------------------------------------------------

def _locks(ttl):
    return evidence(messages=messages(1, status="PENDING", conv=["c9"]),
                    locks={"key": ["conversation:lock:c9"], "kind": ["conversation_lock"], "conversation_id": ["c9"],
                           "ttl_s": [ttl], "sampled_at": [END]})


def test_stuck_locks_just_below_threshold():
    assert run("stuck_locks", _locks(30.0)) == []


def test_stuck_locks_just_above_threshold():
    (f,) = run("stuck_locks", _locks(30.5))
    assert f.count == 1 and f.severity == "critical"


def test_stuck_locks_without_expiry():
    assert len(run("stuck_locks", _locks(None))) == 1
    assert len(run("stuck_locks", _locks(-1.0))) == 1


def _processed(status):
    return evidence(messages=messages(1, status=status),
                    locks={"key": ["router:processed:m0"], "kind": ["processed"], "message_id": ["m0"],
                           "ttl_s": [600000.0], "sampled_at": [END]})


def test_replay_blockers_just_below_threshold():
    assert run("replay_blockers", _processed("DELIVERED")) == []


def test_replay_blockers_just_above_threshold():
    (f,) = run("replay_blockers", _processed("FAILED"))
    assert f.count == 1


# ---- error groups and logs ------------------------------------------------------------------------

RATE = 'Connector returned error: status=429, body={"error":{"code":130429,"message":"(#130429) Rate limit hit"}}'
BLOCKED = 'Telegram API client error: {"ok":false,"error_code":403,"description":"Forbidden: bot was blocked by the user"}'


def test_error_groups_group_failed_messages_by_classified_error():
    m = concat(messages(3, status="FAILED", error_message=[RATE] * 3),
               messages(2, status="FAILED", channel="TELEGRAM", start=3, error_message=[BLOCKED] * 2),
               messages(2, status="FAILED", start=5, error_message=["odd thing id=1234", "odd thing id=98765"]),
               messages(1, status="DELIVERED", start=7))
    found = {f.key: f for f in run("error_groups", evidence(messages=m))}
    assert found["whatsapp.130429"].count == 3 and found["whatsapp.130429"].tags["cause"] == "platform_rate_limit"
    assert found["telegram.403.bot_blocked"].channel == "TELEGRAM"
    assert found["unknown:odd thing id=<n>"].count == 2


def test_error_groups_take_the_reason_from_logs_when_the_message_has_none():
    m = messages(2, status="FAILED")
    logs = {"timestamp": [ago(100)] * 3, "service": ["router-service"] * 3, "level": ["ERROR"] * 3,
            "message_id": ["m0", "m0", "m1"],
            "message": ["Message delivery failed after retries: messageId=m0, channel=WHATSAPP", RATE, RATE]}
    (f,) = run("error_groups", evidence(messages=m, log_events=logs))
    assert f.key == "whatsapp.130429" and f.count == 2


def test_error_groups_just_below_and_above_the_warning_size():
    def group(n_failed, n_total=1000):
        m = concat(messages(n_failed, status="FAILED", error_message=[RATE] * n_failed),
                   messages(n_total - n_failed, start=n_failed))
        return run("error_groups", evidence(messages=m))[0].severity
    assert group(1) == "info"
    assert group(2) == "warning"
    assert group(19) == "warning"
    assert group(20) == "critical"


def test_log_errors_classify_infrastructure_errors_by_service():
    logs = {"timestamp": [ago(100 - i) for i in range(5)], "service": ["router-service"] * 5, "level": ["ERROR"] * 5,
            "message": ["MongoDB write failed: timeout"] * 5, "source_ref": [str(i) for i in range(5)]}
    (f,) = run("log_errors", evidence(log_events=logs, messages=messages(100)))
    assert f.tags["cause"] == "mongodb_write_failure" and f.count == 5


def _burst(n):
    base = ago(600)
    times = [base + pd.Timedelta(seconds=i * 50 / n) for i in range(n)]
    return evidence(log_events={"timestamp": times, "service": ["router-service"] * n, "level": ["ERROR"] * n,
                                "message": ["MongoDB write failed: timeout"] * n})


def test_error_log_burst_just_below_threshold():
    assert run("error_log_burst", _burst(10)) == []


def test_error_log_burst_just_above_threshold():
    (f,) = run("error_log_burst", _burst(11))
    assert f.count == 11 and f.tags["signature"] == "chat4all.mongodb_write_failed"


# ---- service silence --------------------------------------------------------------------------------

def _silence(gap_s):
    n = 1200  # one message every 0.5 s over the last 10 minutes
    created = [ago(600 - i * 0.5) for i in range(n)]
    m = {**messages(n), "created_at": created}
    gap_start = ago(400)
    gap_end = gap_start + pd.Timedelta(seconds=gap_s)
    log_times = [t for t in created if not (gap_start < t < gap_end)]
    logs = {"timestamp": log_times, "service": ["router-service"] * len(log_times), "level": ["INFO"] * len(log_times)}
    return evidence(messages=m, log_events=logs)


def test_service_silence_just_below_threshold():
    assert run("service_silence", _silence(59.5)) == []


def test_service_silence_just_above_threshold():
    (f,) = run("service_silence", _silence(61))
    assert f.key == "router-service" and f.tags["router"] and not f.tags["until_end"]
    assert f.metric == pytest.approx(61, abs=0.6)


def test_service_silence_until_the_end_of_the_window():
    n = 600
    created = [ago(600 - i) for i in range(n)]
    logs = {"timestamp": created[:300], "service": ["router-service"] * 300, "level": ["INFO"] * 300}
    (f,) = run("service_silence", evidence(messages={**messages(n), "created_at": created}, log_events=logs))
    assert f.tags["until_end"] and f.last_seen == END


def test_service_silence_needs_traffic_the_service_would_have_handled():
    # a connector that is quiet only while its channel has no traffic is not silent
    created = [ago(600 - i) for i in range(300)]
    logs = {"timestamp": created[:100], "service": ["instagram-connector"] * 100, "level": ["INFO"] * 100}
    m = {**messages(300, channel="WHATSAPP"), "created_at": created}
    m["channel"] = ["INSTAGRAM"] * 100 + ["WHATSAPP"] * 200
    assert run("service_silence", evidence(messages=m, log_events=logs)) == []


# ---- dead letters, content, recipients ------------------------------------------------------------

def test_dead_letters_per_topic():
    dlq = {"topic": ["whatsapp-outbound-dlq"] * 2, "partition": [0, 1], "offset": [1, 2], "message_id": ["m0", "m1"],
           "timestamp": [ago(100), ago(50)]}
    (f,) = run("dead_letters", evidence(messages=messages(2), dlq_records=dlq))
    assert f.count == 2 and f.channel == "WHATSAPP" and f.first_seen == ago(100)


def _content(length, channel="WHATSAPP"):
    return evidence(messages=messages(1, status="FAILED", channel=channel, content_length=[length]))


def test_content_over_limit_just_below_threshold():
    assert run("content_over_limit", _content(4096)) == []
    assert run("content_over_limit", _content(1000, "INSTAGRAM")) == []


def test_content_over_limit_just_above_threshold():
    (f,) = run("content_over_limit", _content(4097))
    assert f.tags["failed"] == 1
    assert len(run("content_over_limit", _content(1001, "INSTAGRAM"))) == 1


def test_recipient_identity_malformed_and_unknown():
    m = messages(3, status="FAILED")
    ids = {"platform": ["WHATSAPP"] * 2, "platform_user_id": m["recipient_id"][:2], "verified": [True, True],
           "format_valid": [True, False]}
    found = {f.key: f.count for f in run("recipient_identity", evidence(messages=m, identities=ids))}
    assert found == {"malformed": 1, "no_identity": 1}


# ---- scale --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_all_detectors_on_200k_messages():
    # Speed is measured by benchmarks/bench_analysis.py, never asserted here.
    rng = np.random.default_rng(3)
    n = 200_000
    created = END - pd.to_timedelta(rng.uniform(0, 3600, n), unit="s")
    status = np.where(rng.random(n) < 0.05, "FAILED", "DELIVERED")
    m = {"message_id": [f"m{i}" for i in range(n)], "conversation_id": [f"c{i // 4}" for i in range(n)],
         "channel": np.array(["WHATSAPP", "TELEGRAM", "INSTAGRAM"])[rng.integers(0, 3, n)], "status": status,
         "created_at": created, "error_message": np.where(status == "FAILED", RATE, None)}
    ev = {"message_id": m["message_id"] * 2, "new_status": ["SENT"] * n + ["DELIVERED"] * n,
          "timestamp": list(created + pd.Timedelta(seconds=1)) + list(created + pd.Timedelta(seconds=2)),
          "derived": [False] * (2 * n)}
    evid = evidence(messages=m, status_events=ev)
    f = run_detectors(evid)
    assert "error_groups:whatsapp.130429" in set(f["finding_id"])


def test_detectors_tolerate_nulls_everywhere():
    m = {"message_id": ["a", "b", "c", "d"], "conversation_id": [None, "c1", "c1", None],
         "channel": [None, "WHATSAPP", None, "TELEGRAM"], "status": ["PENDING", "UNKNOWN", "FAILED", None],
         "created_at": [None, ago(100), ago(50), ago(40)], "error_message": [None, None, None, "x"],
         "content_length": [None, 5000, None, 3]}
    ev = {"message_id": ["a", "b", "b", "zz"], "new_status": ["DELIVERED", "DELIVERED", "DELIVERED", "FAILED"],
          "timestamp": [ago(10), ago(20), ago(20), ago(5)], "derived": [False] * 4}
    logs = {"timestamp": [None, ago(3)], "service": [None, "router-service"], "level": [None, "ERROR"],
            "message": [None, '{"$gt": ""}']}
    f = run_detectors(evidence(messages=m, status_events=ev, log_events=logs))
    schema.validate("findings", f)
    assert "stuck_pending:UNKNOWN" not in set(f["finding_id"])  # no creation time: age unknown, not stuck
    assert "duplicate_deliveries:status_events" in set(f["finding_id"])
