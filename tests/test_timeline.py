import pandas as pd

from forensics import schema
from forensics.analysis.detectors import detect
from forensics.analysis.timeline import build_timeline
from forensics.evidence import Evidence
from forensics.timeutil import Window

END = pd.Timestamp("2025-12-03T15:00:00Z")
WINDOW = Window(END - pd.Timedelta("1h"), END)
RATE = 'Connector returned error: status=429, body={"error":{"code":130429,"message":"(#130429) Rate limit hit"}}'


def ago(s):
    return END - pd.Timedelta(seconds=s)


def evidence(**tables) -> Evidence:
    return Evidence.from_records(WINDOW, source="test", **tables)


def timeline(ev):
    t = build_timeline(detect(ev))
    schema.validate("timeline", t)
    assert t["timestamp"].is_monotonic_increasing
    return t


def test_empty_evidence_gives_an_empty_canonical_timeline():
    t = timeline(Evidence(WINDOW))
    assert t.empty and list(t.columns) == schema.table("timeline").names


def test_first_and_last_failure_of_an_error_group_point_at_their_messages():
    n = 30
    ev = evidence(messages={
        "message_id": [f"m{i}" for i in range(n)], "channel": ["WHATSAPP"] * n, "status": ["FAILED"] * n,
        "created_at": [ago(1800 - 10 * i) for i in range(n)], "updated_at": [ago(1795 - 10 * i) for i in range(n)],
        "error_message": [RATE] * n, "source": "mongodb", "source_object": "messages",
        "source_ref": [f"oid{i}" for i in range(n)]})
    t = timeline(ev)
    first = t[t["kind"] == "first_failure"].iloc[0]
    last = t[t["kind"] == "last_failure"].iloc[0]
    assert first["timestamp"] == ago(1795) and first["source_ref"] == "oid0" and first["source"] == "mongodb"
    assert last["timestamp"] == ago(1795 - 290) and last["source_ref"] == "oid29"
    assert "Rate limit" in first["summary"] and first["lane"] == "messages"
    assert (t["kind"] == "finding").any()


def test_stuck_backlog_start_points_at_the_oldest_stuck_message():
    ev = evidence(messages={"message_id": ["a", "b"], "channel": ["TELEGRAM"] * 2, "status": ["PENDING"] * 2,
                            "created_at": [ago(300), ago(100)], "source_ref": ["r-a", "r-b"]})
    row = timeline(ev).query("kind == 'stuck_backlog_start'").iloc[0]
    assert row["timestamp"] == ago(270) and row["source_ref"] == "r-a"


def test_lag_threshold_crossings_up_and_down():
    lags = [10, 500, 1500, 3000, 800, 20, 2000]
    ev = evidence(consumer_lag={"sampled_at": [ago(600 - 60 * i) for i in range(len(lags))],
                                "group": "router-service-group", "topic": "message-events", "partition": 0,
                                "lag": lags})
    t = timeline(ev)
    crossings = t[t["kind"].isin(["lag_above", "lag_below"])]
    assert list(crossings["kind"]) == ["lag_above", "lag_below", "lag_above"]
    assert list(crossings["timestamp"]) == [ago(480), ago(360), ago(240)]
    assert (crossings["lane"] == "kafka").all()


def test_dlq_first_record_per_topic():
    ev = evidence(dlq_records={"topic": ["a-dlq", "a-dlq", "b-dlq"], "partition": [0, 0, 1], "offset": [3, 4, 9],
                               "timestamp": [ago(50), ago(80), ago(20)], "source": "kafka",
                               "source_object": ["a-dlq", "a-dlq", "b-dlq"], "source_ref": ["0:3", "0:4", "1:9"]})
    t = timeline(ev).query("kind == 'dlq_first_record'")
    assert dict(zip(t["source_object"], t["source_ref"], strict=True)) == {"a-dlq": "0:4", "b-dlq": "1:9"}


def test_error_burst_and_service_silence_are_on_the_logs_lane():
    n = 1200
    created = [ago(600 - i * 0.5) for i in range(n)]
    logs_t = [c for c in created if not (ago(400) < c < ago(300))]
    burst = [ago(250) + pd.Timedelta(seconds=i) for i in range(30)]
    ev = evidence(
        messages={"message_id": [f"m{i}" for i in range(n)], "channel": ["WHATSAPP"] * n,
                  "status": ["DELIVERED"] * n, "created_at": created},
        log_events={"timestamp": logs_t + burst, "service": ["router-service"] * (len(logs_t) + len(burst)),
                    "level": ["INFO"] * len(logs_t) + ["ERROR"] * len(burst),
                    "message": [None] * len(logs_t) + ["MongoDB write failed: timeout"] * len(burst),
                    "source_ref": [f"line{i}" for i in range(len(logs_t) + len(burst))]})
    t = timeline(ev)
    kinds = set(t.loc[t["lane"] == "logs", "kind"])
    assert {"error_burst", "service_silent", "service_resumed"} <= kinds
    silent = t[t["kind"] == "service_silent"].iloc[0]
    assert silent["source_object"] == "router-service" and silent["source_ref"].startswith("line")


def test_a_large_incident_gives_a_small_timeline():
    from forensics.simulate import simulate

    ev = simulate("whatsapp-outage", messages=20000, seed=3)
    t = timeline(ev)
    assert 10 < len(t) < 600
    assert {"findings", "messages", "kafka"} <= set(t["lane"])
    assert t["source_ref"].notna().mean() > 0.5


def test_alert_replay_is_on_the_timeline():
    from forensics.analysis.pipeline import analyze
    from forensics.simulate import simulate

    a = analyze(simulate("router-outage", messages=1500, seed=3))
    alerts = a.timeline[a.timeline["lane"] == "alerts"]
    assert "alert HighPendingMessages would have fired (replayed from evidence)" in set(alerts["summary"]) or \
        "alert HighPendingMessages would have fired (replayed from metrics)" in set(alerts["summary"])
    first = a.alerts.dropna(subset=["would_fire_at"])
    assert alerts["timestamp"].min() == first["would_fire_at"].min()
    assert a.timeline["timestamp"].is_monotonic_increasing
