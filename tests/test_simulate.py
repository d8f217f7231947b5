"""The incident simulator: determinism, schema validity, scenario signals, Kafka's partitioner
and the raw renderings."""

from __future__ import annotations

import json
import re
from functools import cache

import numpy as np
import pandas as pd
import pytest

from forensics import schema
from forensics.errors import ScenarioError
from forensics.profiles import load_profile
from forensics.simulate import REFERENCE_END, SCENARIOS, render, scenario_names, simulate
from forensics.simulate.population import TEXT_LIMITS, WA
from forensics.sources.documents import messages_from_documents, status_events_from_documents
from forensics.sources.identity import format_valid
from forensics.sources.partitioner import murmur2, murmur2_many, partition_for, partitions_for, to_positive

PROFILES = ("runbook", "chat4all-v2")
ROOT_CAUSES = {
    "baseline": "healthy",
    "router-outage": "router_down",
    "whatsapp-rate-limit": "platform_rate_limit",
    "token-expired": "credential_expiry",
    "recipient-not-on-whatsapp": "invalid_recipient",
    "content-too-long": "content_over_limit",
    "partition-rebalance": "partition_rebalance",
    "telegram-bot-blocked": "bot_blocked",
    "mongo-write-timeouts": "mongodb_write_failure",
    "missing-topic": "missing_topic",
    "whatsapp-outage": "platform_outage",
    "poison-pill": "partition_problem",
    "stuck-lock": "conversation_lock_stuck",
    "webhooks-stopped": "webhook_unreachable",
    "broker-restart": "healthy",
    "rebalance-drained": "healthy",
}
N = 2000


@cache
def sim(name: str, profile: str = "runbook", messages: int = N, seed: int = 7):
    """Cached simulation; tests must not modify what it returns."""
    return simulate(name, messages=messages, seed=seed, profile=profile)


def started(ev) -> pd.Timestamp:
    return pd.Timestamp(ev.scenario["started_at"])


def first_delivery(ev) -> pd.Series:
    se = ev.tables["status_events"]
    return se[se["new_status"] == "DELIVERED"].groupby("message_id")["timestamp"].min()


def out_of_order_pairs(ev) -> int:
    """Messages delivered before an earlier-created message of their conversation."""
    m = ev.tables["messages"]
    x = m[["message_id", "conversation_id", "created_at"]].assign(delivered=m["message_id"].map(first_delivery(ev)))
    x = x.dropna(subset=["delivered"]).sort_values(["conversation_id", "created_at"])
    before = x.groupby("conversation_id")["delivered"].cummax().groupby(x["conversation_id"]).shift()
    return int((x["delivered"] < before).sum())


def router_lag(ev) -> pd.Series:
    lag = ev.tables["consumer_lag"]
    prof = load_profile(ev.profile)
    mine = lag[(lag["group"] == prof.kafka.router_group) & (lag["topic"] == prof.kafka.message_events.name)]
    return mine.groupby("sampled_at")["lag"].sum()


# -- registry and parameters ----------------------------------------------------------------

def test_registry_names_scenarios_with_the_shared_root_cause_vocabulary():
    assert scenario_names() == list(ROOT_CAUSES)
    assert {name: sc.root_cause for name, sc in SCENARIOS.items()} == ROOT_CAUSES
    assert all(sc.description for sc in SCENARIOS.values())


def test_unknown_scenario_raises_scenario_error_naming_the_known_ones():
    with pytest.raises(ScenarioError) as err:
        simulate("kafka-on-fire", messages=10)
    for name in ROOT_CAUSES:
        assert name in str(err.value)


@pytest.mark.parametrize("kwargs", [
    {"messages": 0}, {"messages": -5}, {"messages": "100"}, {"messages": True}, {"messages": 2.5},
    {"seed": -1}, {"seed": "seven"}, {"end": "not a time"}, {"message_id_tag_fraction": 1.5},
    {"detail_sample": -1},
])
def test_bad_parameters_raise_scenario_error(kwargs):
    with pytest.raises(ScenarioError):
        simulate("baseline", **{"messages": 10, **kwargs})


def test_window_ends_at_the_reference_time_or_the_given_end():
    ev = sim("baseline")
    assert ev.window.end == REFERENCE_END and ev.window.duration == pd.Timedelta(minutes=60)
    end = pd.Timestamp("2026-01-02T03:04:05Z")
    ev2 = simulate("baseline", messages=300, seed=1, end=end)
    assert ev2.window.end == end
    created = ev2.tables["messages"]["created_at"]
    assert created.min() >= ev2.window.start and created.max() < end


def test_progress_reports_stages_up_to_done():
    seen = []
    simulate("baseline", messages=200, seed=1, progress=lambda stage, f: seen.append((stage, f)))
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and seen[-1] == ("done", 1.0)


def test_a_single_message_is_enough():
    ev = simulate("partition-rebalance", messages=1, seed=3)
    assert len(ev.tables["messages"]) == 1


# -- determinism ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["whatsapp-rate-limit", "partition-rebalance"])
def test_same_seed_gives_identical_frames(name):
    a = simulate(name, messages=1500, seed=11)
    b = simulate(name, messages=1500, seed=11)
    assert a.scenario == b.scenario and a.sources == b.sources
    for table in a.tables:
        pd.testing.assert_frame_equal(a.tables[table], b.tables[table])


def test_different_seed_gives_different_frames():
    a, b = simulate("baseline", messages=500, seed=1), simulate("baseline", messages=500, seed=2)
    assert not a.tables["messages"]["message_id"].equals(b.tables["messages"]["message_id"])
    assert not a.tables["messages"]["created_at"].equals(b.tables["messages"]["created_at"])


# -- schema and names -----------------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", list(ROOT_CAUSES))
def test_every_table_is_schema_valid_and_named_from_the_profile(name, profile):
    ev = sim(name, profile)
    prof = load_profile(profile)
    assert set(ev.tables) == {"messages", "status_events", "dlq_records", "spans", "log_events", "consumer_lag",
                              "topics", "identities", "locks", "metrics"}
    for table, frame in ev.tables.items():
        schema.validate(table, frame)
        assert frame["source"].notna().all()
    assert ev.profile == prof.name
    assert ev.scenario["root_cause"] == ROOT_CAUSES[name] and ev.scenario["messages"] == N
    assert {"name", "description", "root_cause", "seed", "messages", "trigger", "started_at", "channel"} <= set(
        ev.scenario)
    assert ev.sources["simulator"]["profile"] == prof.name
    t = ev.tables
    assert len(t["messages"]) == N and t["messages"]["message_id"].is_unique
    assert set(t["messages"]["source_object"]) == {prof.mongo.collections["messages"]}
    assert set(t["status_events"]["source_object"]) <= {prof.mongo.collections["messages"],
                                                        prof.mongo.collections["status_history"]}
    services = set(prof.services.all())
    assert set(t["spans"]["service"]) <= services and set(t["log_events"]["service"]) <= services
    assert set(t["status_events"]["updated_by"].dropna()) <= services
    assert set(t["dlq_records"]["topic"]) <= {tp.name for tp in prof.kafka.dlq}
    topics = {tp.name for tp in prof.kafka.expected_topics()}
    assert set(t["consumer_lag"]["topic"]) <= topics
    groups = {prof.kafka.router_group, *(prof.kafka.consumer_groups.get("connectors") or {}).values()}
    assert set(t["consumer_lag"]["group"]) <= groups
    patterns = {prof.redis.conversation_lock, prof.redis.idempotency, prof.redis.processed, prof.redis.ratelimit}
    assert set(t["locks"]["source_object"]) <= patterns
    assert set(t["identities"]["source_object"]) == {prof.postgres.identities_table}


def test_every_scenario_carries_hostile_texts():
    for name in ROOT_CAUSES:
        content = set(sim(name).tables["messages"]["content"])
        assert "<script>alert(1)</script>" in content and '{"$gt": ""}' in content
        assert any("\ufffd" in c for c in content)


@pytest.mark.parametrize("profile", PROFILES)
def test_status_model_follows_the_profile(profile):
    ev = sim("whatsapp-rate-limit", profile)
    m, se = ev.tables["messages"], ev.tables["status_events"]
    derived = se[se["derived"]]
    assert len(derived) == len(m) and derived["message_id"].is_unique
    assert (derived["new_status"] == "PENDING").all() and derived["old_status"].isna().all()
    assert (se.loc[~se["derived"], "new_status"] != "PENDING").all()
    failed = m[m["status"] == "FAILED"]
    assert len(failed) and failed["error_message"].notna().all()
    if profile == "chat4all-v2":
        assert not se["new_status"].isin(["SENT", "READ"]).any()
        assert set(failed["error_field"]) == {"metadata"}
        assert se.loc[~se["derived"], "error_message"].isna().all()
        assert set(se.loc[~se["derived"], "updated_by"]) <= {"router-service", "whatsapp-connector",
                                                             "telegram-connector", "instagram-connector"}
    else:
        assert {"SENT", "DELIVERED", "READ"} <= set(se["new_status"])
        assert set(failed["error_field"]) == {"top-level"}
        assert se.loc[se["new_status"] == "FAILED", "error_message"].notna().all()
    assert set(m["retry_count"].dropna()) <= {0, 1, 2, 3}


def test_transitions_move_forward_from_the_previous_status():
    se = sim("baseline").tables["status_events"]
    hist = se[~se["derived"]].sort_values("timestamp", kind="stable")
    order = {s: i for i, s in enumerate(schema.STATUSES)}
    ok = hist.apply(lambda r: r.new_status == "FAILED" or order[r.new_status] > order[r.old_status], axis=1)
    assert ok.all()


# -- scenario signals -----------------------------------------------------------------------

def test_baseline_is_healthy():
    ev = sim("baseline")
    m = ev.tables["messages"]
    assert m["status"].isin(["DELIVERED", "READ"]).mean() >= 0.99
    assert 0 < (m["status"] == "FAILED").sum() < 20
    latency = (m["message_id"].map(first_delivery(ev)) - m["created_at"]).dt.total_seconds().dropna()
    assert 0.5 < latency.quantile(0.95) < 2.5
    assert ev.tables["consumer_lag"]["lag"].max() < 100
    assert out_of_order_pairs(ev) == 0
    assert ev.scenario["trigger"] is None and ev.scenario["started_at"] is None


@pytest.mark.parametrize("profile", PROFILES)
def test_router_outage_leaves_a_pending_backlog_and_growing_lag(profile):
    ev = sim("router-outage", profile)
    T = started(ev)
    m, se, lg, sp = (ev.tables[k] for k in ("messages", "status_events", "log_events", "spans"))
    pending = (m["status"] == "PENDING").sum()
    assert pending > 0.3 * N
    moved = se[~se["derived"] & se["new_status"].isin(["SENT", "DELIVERED"])]
    assert moved["timestamp"].max() < T
    lag = router_lag(ev)
    after = lag[lag.index >= T]
    assert after.is_monotonic_increasing and after.iloc[-1] > 0.8 * pending
    assert lag[lag.index < T].max() < 100
    router = lg[lg["service"] == load_profile(profile).services.router]
    assert router["message"].str.contains("Failed to consume from Kafka: Connection refused").any()
    assert router["timestamp"].max() < T + pd.Timedelta(minutes=5)
    assert not ((sp["service"] == "router-service") & (sp["start"] >= T)).any()


def test_rate_limit_fails_whatsapp_with_130429_and_retry_after():
    ev = sim("whatsapp-rate-limit")
    m, dlq, lg, sp = (ev.tables[k] for k in ("messages", "dlq_records", "log_events", "spans"))
    failed = m[m["status"] == "FAILED"]
    rate = failed["error_message"].str.contains("130429")
    assert rate.sum() > 20 and rate.mean() > 0.85
    assert (failed.loc[rate, "channel"] == "WHATSAPP").all() and (failed.loc[rate, "retry_count"] == 3).all()
    assert 'status=429' in failed.loc[rate, "error_message"].iloc[0]
    others = m[m["channel"] != "WHATSAPP"]
    assert (others["status"] == "FAILED").mean() < 0.02
    assert set(dlq["message_id"]) == set(failed["message_id"])
    assert (dlq.loc[dlq["channel"] == "WHATSAPP", "topic"] == load_profile("runbook").kafka.dlq_for("WHATSAPP").name).all()
    limited = lg["rate_limit"].dropna().map(json.loads)
    assert len(limited) and all("Retry-After" in r and "X-RateLimit-Remaining" in r for r in limited)
    assert ((sp["http_status_code"] == 429) & sp["error"]).any()


@pytest.mark.parametrize("profile", PROFILES)
def test_token_expiry_fails_every_message_of_one_channel(profile):
    ev = sim("token-expired", profile)
    ch, T = ev.scenario["channel"], started(ev)
    assert ch in ("WHATSAPP", "INSTAGRAM")
    m = ev.tables["messages"]
    after = m[(m["channel"] == ch) & (m["created_at"] > T) & (m["created_at"] < ev.window.end - pd.Timedelta("5s"))]
    assert len(after) > 50 and (after["status"] == "FAILED").all()
    assert after["error_message"].str.contains('"code":190').all() and after["error_message"].str.contains(
        "status=401").all()
    before = m[(m["channel"] == ch) & (m["created_at"] < T - pd.Timedelta("1min"))]
    assert (before["status"] == "FAILED").mean() < 0.02


def test_invalid_recipients_are_concentrated_and_badly_formed():
    ev = sim("recipient-not-on-whatsapp")
    m, ids = ev.tables["messages"], ev.tables["identities"]
    failed = m[m["error_message"].str.contains("131026", na=False)]
    assert len(failed) > 30 and (failed["channel"] == "WHATSAPP").all()
    affected = failed["recipient_id"].isin(ev.scenario["affected_recipients"])
    assert affected.mean() > 0.95  # the rest: the sporadic 131026 of any day
    recipients = set(failed.loc[affected, "recipient_id"])
    assert len(recipients) < len(failed) / 3
    mine = ids[(ids["platform"] == "WHATSAPP") & ids["platform_user_id"].isin(recipients)]
    assert (~mine["format_valid"] | ~mine["verified"]).mean() >= 0.5


def test_content_over_the_platform_limit_fails_and_only_that():
    ev = sim("content-too-long")
    m = ev.tables["messages"]
    text = m[(m["content_type"] == "TEXT") & (m["channel"] != "INTERNAL")]
    limit = text["channel"].map({"WHATSAPP": 4096, "TELEGRAM": 4096, "INSTAGRAM": 1000})
    over = text["content_length"] > limit
    assert over.sum() > 5 and (text.loc[over, "status"] == "FAILED").all()
    too_long = m["error_message"].str.contains("too long|exceeds|at most 4096", na=False)
    assert (m.loc[too_long & (m["content_type"] == "TEXT"), "content_length"] > 1000).all()
    assert m["error_message"].str.contains("Bad Request: message is too long", na=False).any()
    long_ok = text[(text["content_length"] > 1000) & ~over]
    assert long_ok["status"].isin(["DELIVERED", "READ"]).mean() > 0.9
    assert TEXT_LIMITS[WA] == 4096


@pytest.mark.parametrize("profile", PROFILES)
def test_partition_rebalance_reorders_duplicates_and_drains(profile):
    ev = sim("partition-rebalance", profile)
    se, lg, locks = ev.tables["status_events"], ev.tables["log_events"], ev.tables["locks"]
    assert out_of_order_pairs(ev) >= 1
    delivered = se[se["new_status"] == "DELIVERED"].groupby("message_id").size()
    assert (delivered > 1).sum() >= 1
    router = lg[lg["service"] == "router-service"]["message"]
    assert router.str.contains("Revoking previously assigned partitions").any()
    assert router.str.contains("partitions assigned").any()
    lag = router_lag(ev)
    T = started(ev)
    peak = lag[lag.index >= T].max()
    assert peak > max(5, 3 * lag[lag.index < T].max()) and lag.iloc[-1] < peak / 2
    stuck = locks[locks["ttl_s"].isna()]
    assert len(stuck) == 1 and stuck["kind"].iloc[0] == "conversation_lock"
    assert stuck["key"].iloc[0] == ev.scenario["stuck_lock"]


def test_bot_blocked_hits_some_telegram_recipients_only():
    ev = sim("telegram-bot-blocked")
    m = ev.tables["messages"]
    blocked = m["error_message"].str.contains("Forbidden: bot was blocked by the user", na=False)
    assert blocked.sum() > 10 and (m.loc[blocked, "channel"] == "TELEGRAM").all()
    assert not m["error_message"].str.contains("status=401|\"code\":190", na=False).any()
    recipients = set(m.loc[blocked, "recipient_id"])
    others = m[(m["channel"] == "TELEGRAM") & ~m["recipient_id"].isin(recipients)]
    assert others["status"].isin(["DELIVERED", "READ"]).mean() > 0.95


@pytest.mark.parametrize("profile", PROFILES)
def test_mongo_write_timeouts_leave_stuck_messages_and_history_gaps(profile):
    ev = sim("mongo-write-timeouts", profile)
    m, se, lg, sp = (ev.tables[k] for k in ("messages", "status_events", "log_events", "spans"))
    old = m["created_at"] < ev.window.end - pd.Timedelta("2min")
    stuck = m[old & m["status"].isin(["PENDING", "SENT"])]
    assert len(stuck) > 10
    timeouts = lg[lg["message"].str.contains("MongoDB write failed: timeout")]
    assert len(timeouts) and timeouts["stack_trace"].str.contains("MongoTimeoutException").all()
    assert set(stuck["message_id"]) & set(timeouts["message_id"])
    with_row = set(se.loc[se["new_status"] == "DELIVERED", "message_id"])
    gaps = m[(m["status"] == "DELIVERED") & ~m["message_id"].isin(with_row)]
    assert len(gaps) > 0
    mongo = sp[sp["operation"].str.startswith(("update ", "insert ")) & sp["error"]]
    assert len(mongo) and mongo["duration_ms"].min() >= 10_000


@pytest.mark.parametrize("profile", PROFILES)
def test_missing_topic_is_named_and_shows_in_logs(profile):
    ev = sim("missing-topic", profile)
    prof = load_profile(profile)
    (topic,) = ev.scenario["missing_topics"]
    m, lg, lag = ev.tables["messages"], ev.tables["log_events"], ev.tables["consumer_lag"]
    assert topic not in ev.sources["simulator"]["kafka_topics"]
    assert ev.sources["simulator"]["missing_topics"] == [topic]
    inventory = ev.tables["topics"].set_index("topic")
    assert not inventory.loc[topic, "present"] and inventory.drop(index=topic)["present"].all()
    assert lg["message"].str.contains(f"{{{topic}=UNKNOWN_TOPIC_OR_PARTITION}}", regex=False).any()
    assert lg["message"].str.contains(f"Topic {topic} not present in metadata after 60000 ms", regex=False).any()
    stuck = m[(m["status"] == "PENDING") & (m["created_at"] < ev.window.end - pd.Timedelta("2min"))]
    assert len(stuck) > 50
    if profile == "runbook":
        assert topic == prof.kafka.outbound_for(ev.scenario["channel"]).name
        assert set(stuck["channel"]) == {ev.scenario["channel"]}
        assert lag.loc[lag["topic"] == topic, "sampled_at"].max() < started(ev)
    else:
        assert topic == prof.kafka.status_updates.name
        assert len(set(stuck["channel"])) > 1


def test_whatsapp_outage_bursts_of_5xx_and_dlq_growth():
    ev = sim("whatsapp-outage")
    m, sp, dlq = ev.tables["messages"], ev.tables["spans"], ev.tables["dlq_records"]
    failed = m[m["error_message"].str.contains("131016|502 Bad Gateway", na=False)]
    assert len(failed) > 10 and (failed["retry_count"] == 3).all() and (failed["channel"] == "WHATSAPP").all()
    fivexx = sp[(sp["service"] == "whatsapp-connector") & (sp["http_status_code"] >= 500)]
    assert {502, 503} <= set(fivexx["http_status_code"])
    assert fivexx.groupby(fivexx["start"].dt.floor("min")).size().max() > 10
    assert dlq["exception_message"].str.contains("131016").sum() > 5
    recovered = m[(m["channel"] == "WHATSAPP") & (m["retry_count"] > 0) & (m["status"] != "FAILED")]
    assert len(recovered) > 0


# -- table details --------------------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_dlq_records_are_partitioned_by_murmur2_with_spring_headers(profile):
    ev = sim("token-expired", profile)
    prof = load_profile(profile)
    dlq = ev.tables["dlq_records"]
    assert len(dlq) > 50
    for r in dlq.head(200).itertuples():
        parts = next(t.partitions for t in prof.kafka.dlq if t.name == r.topic)
        assert r.partition == partition_for(r.key, parts) and r.key == r.message_id
        h = json.loads(r.headers)
        assert h["kafka_dlt-original-topic"] == r.original_topic
        assert int(h["kafka_dlt-original-partition"]) == r.original_partition
        assert int(h["kafka_dlt-original-offset"]) == r.original_offset
        assert h["kafka_dlt-exception-fqcn"] == r.exception_class
        assert h["kafka_dlt-exception-message"] == r.exception_message
        payload = json.loads(r.payload)
        assert payload["messageId" if prof.kafka.event_case == "camelCase" else "message_id"] == r.message_id
        assert r.payload_bytes == len(r.payload.encode("utf-8"))
    for _, g in dlq.groupby(["topic", "partition"]):
        assert g.sort_values("timestamp")["offset"].is_monotonic_increasing


def test_spans_look_like_jaeger_traces():
    ev = sim("whatsapp-rate-limit")
    sp = ev.tables["spans"]
    assert sp["trace_id"].str.fullmatch(r"[0-9a-f]{32}").all() and sp["span_id"].str.fullmatch(r"[0-9a-f]{16}").all()
    ids = set(zip(sp["trace_id"], sp["span_id"], strict=True))
    parents = sp.dropna(subset=["parent_span_id"])
    assert all((t, p) in ids for t, p in zip(parents["trace_id"], parents["parent_span_id"], strict=True))
    # Trace context does not cross Kafka: no trace holds both the API ingest and the router.
    services = sp.groupby("trace_id")["service"].agg(lambda s: frozenset(s))
    assert not any({"api-gateway", "router-service"} <= set(s) for s in services)
    assert sp["error"].any() and sp.loc[sp["error"], "status_message"].notna().all()
    assert sp["message_id"].notna().any()
    assert sim("whatsapp-rate-limit", "chat4all-v2").tables["spans"]["message_id"].isna().all()


def test_log_rows_say_what_their_raw_json_line_says():
    lg = sim("whatsapp-rate-limit").tables["log_events"]
    for r in lg.sample(300, random_state=1).itertuples():
        doc = json.loads(r.raw)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000", doc["timestamp"])
        assert pd.Timestamp(doc["timestamp"]) == r.timestamp
        assert (doc["level"], doc["logger"], doc["thread"], doc["message"], doc["app_name"]) == (
            r.level, r.logger, r.thread, r.message, r.service)
        assert doc.get("stack_trace") == (None if pd.isna(r.stack_trace) else r.stack_trace)
        if not pd.isna(r.message_id):
            assert r.message_id in r.message
    coded = lg.dropna(subset=["http_status"])
    assert len(coded) and all(f"status={int(c)}" in msg or "error_code" in msg
                              for c, msg in zip(coded["http_status"], coded["message"], strict=True))
    lines = lg.groupby("service")["source_ref"].apply(lambda s: sorted(s.astype(int)))
    assert all(v == list(range(1, len(v) + 1)) for v in lines)


def test_consumer_lag_is_end_minus_committed_every_minute():
    ev = sim("router-outage")
    lag = ev.tables["consumer_lag"]
    assert (lag["lag"] == lag["end_offset"] - lag["committed_offset"]).all() and (lag["lag"] >= 0).all()
    # every minute from the window's start (the traffic began an hour before it) to its end
    assert set(lag["sampled_at"]) == set(pd.date_range(ev.window.start, ev.window.end, freq="1min"))
    assert (lag.groupby(["group", "topic", "partition"])["end_offset"].apply(lambda s: s.is_monotonic_increasing)).all()


def test_identities_cover_every_external_recipient_with_computed_format():
    ev = sim("recipient-not-on-whatsapp")
    m, ids = ev.tables["messages"], ev.tables["identities"]
    ext = m[m["channel"] != "INTERNAL"]
    known = set(zip(ids["platform"], ids["platform_user_id"], strict=True))
    assert set(zip(ext["channel"], ext["recipient_id"], strict=True)) <= known
    judged = format_valid(ids["platform"], ids["platform_user_id"])  # the rule's one home, as for live rows
    assert (judged.astype(bool) == ids["format_valid"]).all()
    wa = ids[ids["platform"] == "WHATSAPP"]["platform_user_id"]
    assert wa.str.startswith("+55").mean() > 0.9


def test_redis_keys_include_processed_markers_of_failed_messages():
    ev = sim("whatsapp-rate-limit")
    m, locks = ev.tables["messages"], ev.tables["locks"]
    prof = load_profile("runbook")
    processed = locks[locks["kind"] == "processed"]
    assert processed["key"].str.startswith("router:processed:").all()
    assert (processed["ttl_s"] <= prof.redis.processed_ttl_s).all()
    failed = set(m.loc[m["status"] == "FAILED", "message_id"])
    assert 0 < len(failed & set(processed["message_id"])) < len(failed)
    conv_locks = locks[locks["kind"] == "conversation_lock"]
    assert len(conv_locks) and (conv_locks["ttl_s"] <= prof.redis.lock_ttl_s).all()


@pytest.mark.slow
def test_two_hundred_thousand_messages_stay_consistent():
    ev = simulate("router-outage", messages=200_000, seed=5)
    m = ev.tables["messages"]
    assert len(m) == 200_000 and m["message_id"].is_unique
    assert len(ev.tables["status_events"]) > 350_000
    assert router_lag(ev).iloc[-1] > 50_000
    assert ev.sources["simulator"]["sampling"]["detail_messages"] == 20_000


# -- Kafka's partitioner --------------------------------------------------------------------

KAFKA_VECTORS = {  # clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java, testMurmur2
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_murmur2_matches_kafkas_own_test_vectors():
    for key, expected in KAFKA_VECTORS.items():
        assert murmur2(key) == expected
    assert list(murmur2_many(list(KAFKA_VECTORS))) == list(KAFKA_VECTORS.values())
    assert list(murmur2_many(np.array(list(KAFKA_VECTORS), dtype="S48"))) == list(KAFKA_VECTORS.values())


def test_to_positive_masks_the_sign_bit_and_partition_uses_it():
    assert to_positive(-1) == 0x7FFFFFFF and to_positive(-2**31) == 0 and to_positive(5) == 5
    assert partition_for(b"21", 10) == (-973932308 & 0x7FFFFFFF) % 10
    assert partition_for("foobar", 7) == partition_for(b"foobar", 7)
    with pytest.raises(ValueError):
        partition_for(b"x", 0)


def test_vectorised_partitions_equal_the_scalar_ones_for_any_key_length():
    rng = np.random.default_rng(0)
    keys = [bytes(rng.integers(0, 256, int(k), dtype=np.uint8)) for k in rng.integers(0, 40, 300)] + [b""]
    assert list(partitions_for(keys, 12)) == [partition_for(k, 12) for k in keys]
    uuids = ["0f8fad5b-d9cb-469f-a165-70867728950e", "7c9e6679-7425-40de-944b-e07fc1f90ae7"]
    assert list(partitions_for(np.array(uuids, dtype="S36"), 10)) == [partition_for(u, 10) for u in uuids]


# -- renderings -----------------------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_mongo_documents_round_trip_through_the_document_normaliser(profile):
    import bson
    ev = sim("whatsapp-rate-limit", profile)
    prof = load_profile(profile)
    docs = render.mongo_documents(ev)
    coll = prof.mongo.collections
    assert set(docs) == {coll["messages"], coll["status_history"], coll["conversations"], coll["files"]}
    history = docs[coll["status_history"]]
    assert all(d["new_status"] != "PENDING" for d in history)
    assert len(history) == (~ev.tables["status_events"]["derived"]).sum()
    for name in docs:
        bson.encode(docs[name][0])
    failed = next(d for d in docs[coll["messages"]] if d["status"] == "FAILED")
    if profile == "chat4all-v2":
        assert "error_message" in failed["metadata"] and "error_message" not in failed
    else:
        assert "error_message" in failed
    back = messages_from_documents(docs[coll["messages"]], prof)
    m = ev.tables["messages"]
    for col in ("message_id", "status", "channel", "content", "error_message", "error_field", "retry_count",
                "created_at", "updated_at", "recipient_id", "recipient_count", "platform_message_id"):
        pd.testing.assert_series_equal(back[col], m[col], check_names=False)
    events = status_events_from_documents(history, back, prof)
    assert len(events) == len(ev.tables["status_events"])
    files = docs[coll["files"]]
    assert len(files) == m["file_id"].notna().sum() and prof.mongo.file_fields["file_size"][0] in files[0]


def test_kafka_records_carry_murmur2_partitions_and_binary_dlt_headers():
    ev = sim("whatsapp-rate-limit", "chat4all-v2")
    prof = load_profile("chat4all-v2")
    records = render.kafka_records(ev)
    events = [r for r in records if r[0] == prof.kafka.message_events.name]
    assert len(events) == N
    for _topic, partition, key, value, _headers, ts in events[:100]:
        assert partition == partition_for(key, prof.kafka.message_events.partitions)
        assert json.loads(value)["conversationId"] == key.decode() and isinstance(ts, int)
    dlq = [r for r in records if r[0] == "chat-events-dlq"]
    assert len(dlq) == len(ev.tables["dlq_records"])
    headers = dict(dlq[0][4])
    assert len(headers["kafka_dlt-original-partition"]) == 4 and len(headers["kafka_dlt-original-offset"]) == 8
    row = ev.tables["dlq_records"].set_index("key").loc[dlq[0][2].decode()]
    assert int.from_bytes(headers["kafka_dlt-original-offset"], "big") == row["original_offset"]
    assert headers["kafka_dlt-original-topic"] == b"chat-events"
    assert any(r[0] == "status-updates" for r in records)
    missing = render.kafka_records(sim("missing-topic", "chat4all-v2"))
    assert not any(r[0] == "status-updates" for r in missing)


def test_jaeger_v1_has_the_documented_shape():
    ev = sim("whatsapp-rate-limit")
    out = json.loads(json.dumps(render.jaeger_v1(ev)))
    assert set(out) == {"data", "total", "limit", "offset", "errors"}
    assert sum(len(t["spans"]) for t in out["data"]) == len(ev.tables["spans"])
    for trace in out["data"][:200]:
        assert re.fullmatch(r"[0-9a-f]{32}", trace["traceID"])
        assert all(p.startswith("p") for p in trace["processes"])
        for span in trace["spans"]:
            assert span["processID"] in trace["processes"] and span["traceID"] == trace["traceID"]
            assert isinstance(span["startTime"], int) and span["startTime"] > 1.7e15
            assert all(ref["refType"] == "CHILD_OF" for ref in span["references"])
            kinds = [t for t in span["tags"] if t["key"] == "span.kind"]
            assert len(kinds) == 1
            assert all(t["type"] in {"string", "bool", "int64", "float64"} for t in span["tags"])


def test_log_lines_redis_keys_and_postgres_rows():
    ev = sim("partition-rebalance", "chat4all-v2")
    lines = render.log_lines(ev)
    assert sum(len(v) for v in lines.values()) == len(ev.tables["log_events"])
    assert all(json.loads(v[0])["app_name"] == k for k, v in lines.items())
    keys = render.redis_keys(ev)
    assert len(keys) == len(ev.tables["locks"]) and any(ttl is None for _, _, ttl in keys)
    rows = render.postgres_rows(ev)
    prof = load_profile("chat4all-v2")
    users, identities = rows[prof.postgres.users_table], rows[prof.postgres.identities_table]
    assert all(prof.postgres.users_id_column in u for u in users)
    assert len(identities) == len(ev.tables["identities"])
    user_ids = {u[prof.postgres.users_id_column] for u in users}
    assert {i["user_id"] for i in identities} <= user_ids
