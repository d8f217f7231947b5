"""``forensics seed`` against the real local stack: what it writes, read back with the plain
clients (pymongo, confluent-kafka, Jaeger's HTTP API, psycopg, redis-py), equals the scenario.

Every test seeds into its own places (fresh Mongo database, topic/group/service prefix, fresh
PostgreSQL schema, Redis key prefix), so tests never see each other's data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pandas as pd
import pytest

from forensics.profiles import load_profile
from forensics.simulate.seed import Placement, TargetNotEmpty, seed
from forensics.sources.partitioner import partition_for
from forensics.timeutil import utcnow

pytestmark = pytest.mark.integration

MESSAGES = 2000


@pytest.fixture
def groups_cleanup(kafka_admin, kafka_topic_prefix):
    """Delete the consumer groups a seed committed under the test's prefix."""
    yield kafka_topic_prefix
    listed = kafka_admin.list_consumer_groups(request_timeout=10).result(timeout=10)
    mine = [g.group_id for g in listed.valid if g.group_id.startswith(kafka_topic_prefix)]
    if mine:
        for fut in kafka_admin.delete_consumer_groups(mine, request_timeout=10).values():
            try:
                fut.result(timeout=10)
            except Exception:  # noqa: BLE001 - best-effort cleanup
                pass


@pytest.fixture
def places(stack, mongo_db, groups_cleanup, pg_schema, redis_db):
    """A Placement in the fixtures' isolated places, and the stack's connection strings."""
    placement = Placement(database=mongo_db.name, topic_prefix=groups_cleanup, pg_schema=pg_schema.name,
                          redis_prefix=redis_db.prefix, service_prefix=groups_cleanup)
    connections = {"mongo": stack.mongo_uri, "kafka": stack.kafka_bootstrap, "jaeger": stack.otlp_endpoint,
                   "postgres": stack.postgres_dsn, "redis": stack.redis_url}
    return placement, connections


def read_topic(bootstrap: str, topic: str, partitions: int) -> list:
    """Every record of ``topic`` (assign from the beginning up to the high watermark, no group)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader", "enable.auto.commit": False})
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p, end in ends.items() if end])
        records, deadline = [], time.monotonic() + 60
        while len(records) < sum(ends.values()) and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=1.0):
                assert msg.error() is None, msg.error()
                records.append(msg)
        return records
    finally:
        consumer.close()


def long_lived(ev) -> list[str]:
    """Keys whose TTL cannot run out during a test (the 30 s locks and rate limits can)."""
    locks = ev.table("locks")
    return locks.loc[locks["ttl_s"].isna() | (locks["ttl_s"] > 600), "key"].tolist()


def jaeger_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310
        return json.loads(resp.read())


@pytest.mark.parametrize("profile", ["runbook", "chat4all-v2"])
def test_seeded_stack_reads_back_as_the_scenario(profile, places, stack, mongo_db, kafka_admin, pg_schema, redis_db):
    from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, TopicPartition

    placement, connections = places
    prof = load_profile(profile)
    before = utcnow()
    result = seed("whatsapp-rate-limit", profile=profile, messages=MESSAGES, seed=11, placement=placement,
                  connections=connections, baseline=None)
    ev, window = result.evidence, result.window
    assert before - pd.Timedelta(seconds=1) <= window.end <= utcnow()  # the window ends when seeding starts
    messages, events = ev.table("messages"), ev.table("status_events")
    history = events[~events["derived"]]

    # MongoDB: counts, layout, BSON dates, indexes
    cols = prof.mongo.collections
    assert mongo_db[cols["messages"]].count_documents({}) == len(messages) == MESSAGES
    assert mongo_db[cols["status_history"]].count_documents({}) == len(history)
    assert mongo_db[cols["status_history"]].count_documents({"new_status": "PENDING"}) == 0
    for status, count in messages["status"].value_counts().items():
        assert mongo_db[cols["messages"]].count_documents({"status": status}) == count
    failed = mongo_db[cols["messages"]].find_one({"status": "FAILED"})
    error_path = prof.mongo.message_fields["error_message"][0]
    assert ("metadata" in failed and "error_message" in failed["metadata"]) == error_path.startswith("metadata.")
    when = prof.mongo.message_fields["created_at"][0]
    assert failed[when].tzinfo is not None and window.start <= pd.Timestamp(failed[when]) < window.end
    indexes = mongo_db[cols["messages"]].index_information()
    assert any(ix.get("unique") and ix["key"] == [("message_id", 1)] for ix in indexes.values())
    assert any(ix["key"][0] == ("message_id", 1) and len(ix["key"]) == 2
               for ix in mongo_db[cols["status_history"]].index_information().values())

    # Kafka: topics with the profile's partitions, records per topic, default-partitioner placement
    present = kafka_admin.list_topics(timeout=10).topics
    prefix = placement.topic_prefix
    read = {}
    for topic in prof.kafka.expected_topics():
        name = prefix + topic.name
        assert len(present[name].partitions) == topic.partitions
        read[topic.name] = read_topic(stack.kafka_bootstrap, name, topic.partitions)
        assert len(read[topic.name]) == result.written["kafka"].get(name, 0)
        for msg in read[topic.name]:
            assert msg.partition() == partition_for(msg.key(), topic.partitions)
            kind, ms = msg.timestamp()
            assert kind == TIMESTAMP_CREATE_TIME
            assert window.start.value // 10**6 <= ms <= window.end.value // 10**6 + 1000
    assert len(read[prof.kafka.message_events.name]) == MESSAGES
    keys = {m.key().decode() for m in read[prof.kafka.message_events.name]}
    assert keys == set(messages["conversation_id"])  # message events keyed by conversation
    dlq = ev.table("dlq_records")
    for topic, count in dlq["topic"].value_counts().items():
        records = read[topic]
        assert len(records) == count
        assert {m.key().decode() for m in records} == set(dlq.loc[dlq["topic"] == topic, "message_id"])
        headers = dict(records[0].headers())
        assert headers["kafka_dlt-original-topic"].decode().startswith(prefix)
        assert len(headers["kafka_dlt-original-offset"]) == 8  # Spring writes a big-endian long
        assert headers["kafka_dlt-exception-message"] and headers["__TypeId__"]
    if prof.kafka.status_updates:
        updates = read[prof.kafka.status_updates.name]
        assert len(updates) == len(history)
        assert {m.key().decode() for m in updates} <= set(messages["message_id"])  # keyed by message

    # Consumer lag by hand: high watermark - committed offset = the scenario's last lag sample
    lag = ev.table("consumer_lag")
    last = lag[lag["sampled_at"] == lag.groupby(["group", "topic"])["sampled_at"].transform("max")]
    assert len(last)
    for group, rows in last.groupby("group"):
        consumer = Consumer({"bootstrap.servers": stack.kafka_bootstrap, "group.id": prefix + group})
        try:
            tps = [TopicPartition(prefix + t, int(p)) for t, p in zip(rows["topic"], rows["partition"], strict=True)]
            committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(tps, timeout=10)}
            for tp, expected in zip(tps, rows["lag"], strict=True):
                high = consumer.get_watermark_offsets(tp, timeout=10)[1]
                assert high - committed[(tp.topic, tp.partition)] == expected, (group, tp.topic, tp.partition)
        finally:
            consumer.close()

    # Jaeger: services under the prefix, one trace count
    spans = ev.table("spans")
    services = set(jaeger_json(stack.jaeger_url + "/api/services")["data"] or [])
    assert {placement.service_prefix + s for s in spans["service"].unique()} <= services
    router = prof.services.router
    query = urllib.parse.urlencode({"service": placement.service_prefix + router, "limit": 100_000,
                                    "start": window.start.value // 1000 - 60_000_000,
                                    "end": window.end.value // 1000 + 60_000_000})
    traces = jaeger_json(f"{stack.jaeger_url}/api/traces?{query}")["data"]
    assert len(traces) == spans.loc[spans["service"] == router, "trace_id"].nunique()
    one = spans[spans["service"] == router].iloc[0]
    assert one["trace_id"] in {t["traceID"] for t in traces}

    # PostgreSQL: users (recipients and agents) keyed per profile, identities
    identities = ev.table("identities")
    with pg_schema.connect() as conn:
        assert conn.execute("SELECT count(*) FROM external_identities").fetchone()[0] == len(identities)
        column = prof.postgres.users_id_column
        assert conn.execute(f"SELECT count(DISTINCT {column}) FROM users").fetchone()[0] == \
            len(set(identities["user_id"]) | set(messages["sender_id"]))  # noqa: S608 - column from the profile

    # Redis: every key still alive, with the TTL it had at the window end less the time since
    locks = ev.table("locks")
    seeded = set(redis_db.client.scan_iter(match=redis_db.prefix + "*", count=1000))
    assert {redis_db.prefix + k for k in long_lived(ev)} <= seeded
    assert len(seeded) <= result.written["redis"]["keys"] <= len(locks)  # short locks may have expired since
    processed = locks[locks["kind"] == "processed"].iloc[0]
    ttl = redis_db.client.ttl(redis_db.prefix + processed["key"])
    assert processed["ttl_s"] - 120 < ttl <= processed["ttl_s"]


def test_a_target_with_data_is_refused_without_force(places, mongo_db, redis_db, pg_schema):
    placement, connections = places
    targets = ["mongo", "postgres", "redis"]
    first = seed("baseline", messages=300, seed=3, placement=placement, connections=connections, targets=targets)
    counts = (mongo_db.messages.count_documents({}), len(list(redis_db.client.scan_iter(match=redis_db.prefix + "*"))))
    assert counts[0] == 300 + len(first.evidence.baseline.table("messages"))  # the window and its baseline

    with pytest.raises(TargetNotEmpty) as refused:
        seed("router-outage", messages=500, seed=4, placement=placement, connections=connections, targets=targets)
    text = str(refused.value)
    assert f"{mongo_db.name}.messages holds documents" in text and "--force" in text
    assert f"{pg_schema.name}.users holds rows" in text and "Redis holds keys" in text
    # nothing was written
    assert (mongo_db.messages.count_documents({}),
            len(list(redis_db.client.scan_iter(match=redis_db.prefix + "*")))) == counts

    again = seed("router-outage", messages=500, seed=4, placement=placement, connections=connections,
                 targets=targets, force=True, baseline=None)
    assert mongo_db.messages.count_documents({}) == 500
    with pg_schema.connect() as conn:
        assert conn.execute("SELECT count(*) FROM external_identities").fetchone()[0] == \
            len(again.evidence.table("identities"))
    keys = set(redis_db.client.scan_iter(match=redis_db.prefix + "*"))
    assert {redis_db.prefix + k for k in long_lived(again.evidence)} <= keys
    assert len(keys) <= again.written["redis"]["keys"]
    assert first.window.end <= again.window.end


@pytest.mark.parametrize("profile", ["runbook", "chat4all-v2"])
def test_the_missing_topic_scenario_leaves_its_topic_absent(profile, places, kafka_admin):
    placement, connections = places
    result = seed("missing-topic", profile=profile, messages=500, seed=5, placement=placement,
                  connections=connections, targets=["kafka"])
    lost = result.evidence.scenario["missing_topics"]
    assert lost
    present = kafka_admin.list_topics(timeout=10).topics
    prof = load_profile(profile)
    for topic in prof.kafka.expected_topics():
        assert (placement.topic_prefix + topic.name in present) == (topic.name not in lost), topic.name
    # a rerun with --force keeps it absent; a topic recreated by hand is refused without --force
    from confluent_kafka.admin import NewTopic

    name = placement.topic_prefix + lost[0]
    kafka_admin.create_topics([NewTopic(name, num_partitions=1)])[name].result(timeout=30)
    with pytest.raises(TargetNotEmpty, match=f"{name} exists, but the scenario lost it"):
        seed("missing-topic", profile=profile, messages=500, seed=5, placement=placement, connections=connections,
             targets=["kafka"])
    seed("missing-topic", profile=profile, messages=500, seed=5, placement=placement, connections=connections,
         targets=["kafka"], force=True)
    assert name not in kafka_admin.list_topics(timeout=10).topics


def test_cli_prints_the_window_and_no_credentials(stack, groups_cleanup, kafka_admin):
    prefix = groups_cleanup
    env = {**os.environ, "FORENSICS_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
           "FORENSICS_MONGO_URI": stack.mongo_uri}
    args = [sys.executable, "-m", "forensics.cli", "seed", "--scenario", "baseline", "--messages", "200",
            "--end", "2025-12-03T15:00:00Z", "--target-prefix", prefix, "--targets", "kafka"]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "window: 2025-12-03T14:00:00.000Z 2025-12-03T15:00:00.000Z" in proc.stdout.splitlines()
    assert "baseline: 2025-12-03T13:00:00.000Z 2025-12-03T14:00:00.000Z" in proc.stdout.splitlines()
    assert f"{prefix}message-events" in kafka_admin.list_topics(timeout=10).topics
    assert "[" in proc.stderr  # progress on stderr
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 2
    last = again.stderr.strip().splitlines()[-1]
    assert last.startswith("forensics seed: error: the target already holds data") and "--force" in last

    bad = subprocess.run(args[:-2] + ["--targets", "mongo"], capture_output=True, text=True, timeout=120,
                         env={**env, "FORENSICS_MONGO_URI": "mongodb://chat4all:s3cr3t-pw@127.0.0.1:1/?"
                                                            "serverSelectionTimeoutMS=500"}, check=False)
    assert bad.returncode == 2
    assert "s3cr3t-pw" not in bad.stdout + bad.stderr and "***" in bad.stderr


def test_the_toolkit_readers_find_the_seed_under_the_placed_profile(places, stack):
    from forensics.sources import kafka
    from forensics.sources.mongo import MongoSource
    from forensics.sources.redis import read_locks

    placement, connections = places
    result = seed("router-outage", profile="chat4all-v2", messages=600, seed=9, placement=placement,
                  connections=connections, targets=["mongo", "kafka", "redis"], baseline=None)
    ev, prof, window = result.evidence, result.profile, result.window
    with MongoSource(stack.mongo_uri, prof) as src:
        messages, events = src.window_evidence(window)
    assert len(messages) == 600
    assert len(events) == len(ev.table("status_events"))
    assert set(events["new_status"]) == set(ev.table("status_events")["new_status"])

    assert len(kafka.read_dlq(prof, window, bootstrap=stack.kafka_bootstrap).frame) == len(ev.table("dlq_records"))
    lag = kafka.consumer_lag(kafka.group_topics(prof), bootstrap=stack.kafka_bootstrap)
    expected = ev.table("consumer_lag")
    expected = expected[expected["sampled_at"] == expected["sampled_at"].max()]
    assert lag["lag"].sum() == expected["lag"].sum() > 0  # the router stopped: a backlog on chat-events

    locks = read_locks(stack.redis_url, profile=prof)
    assert {placement.redis_prefix + k for k in long_lived(ev)} <= set(locks["key"])
    assert len(locks) <= result.written["redis"]["keys"]
    assert set(locks["kind"]) >= {"processed", "idempotency"}


@pytest.mark.parametrize("profile", ["runbook", "chat4all-v2"])
def test_a_baseline_period_is_laid_down_before_the_incident(profile, places, stack):
    """The live path of a preceding baseline: the stores hold a normal hour, then the incident's."""
    from forensics.sources import kafka
    from forensics.sources.mongo import MongoSource
    from forensics.timeutil import Window

    placement, connections = places
    result = seed("poison-pill", profile=profile, messages=800, seed=5, placement=placement,
                  connections=connections, targets=["mongo", "kafka", "redis"], baseline="1h")
    ev, prof, window = result.evidence, result.profile, result.window
    base = ev.baseline
    assert base.window == Window(window.start - pd.Timedelta("1h"), window.start)
    with MongoSource(stack.mongo_uri, prof) as src:
        before, before_events = src.window_evidence(base.window)
        during, _ = src.window_evidence(window)
    # a collection over each period finds its messages (plus, as live collections do, earlier
    # messages updated in the later period)
    assert set(base.table("messages")["message_id"]) <= set(before["message_id"])
    assert set(ev.table("messages")["message_id"]) <= set(during["message_id"])
    assert (before["status"] == "PENDING").sum() <= 3 < (during["status"] == "PENDING").sum()
    assert before_events["timestamp"].min() >= base.window.start

    # Kafka: both periods' events; the router group stopped at the poison record of one partition
    topic = prof.kafka.message_events
    events = read_topic(stack.kafka_bootstrap, topic.name, topic.partitions)
    poison = [m for m in events if not m.value().startswith(b"{\"")]
    assert len(events) == len(base.table("messages")) + len(ev.table("messages")) + 1
    assert len(poison) == 1 and poison[0].partition() == ev.scenario["partition"]
    lag = kafka.consumer_lag(kafka.group_topics(prof), bootstrap=stack.kafka_bootstrap)
    router = lag[lag["topic"] == topic.name].set_index("partition")["lag"]
    assert router.idxmax() == ev.scenario["partition"] and router.drop(router.idxmax()).max() <= 1
    from confluent_kafka import Consumer, TopicPartition

    group = Consumer({"bootstrap.servers": stack.kafka_bootstrap, "group.id": prof.kafka.router_group})
    try:
        at = group.committed([TopicPartition(topic.name, ev.scenario["partition"])], timeout=10)[0].offset
    finally:
        group.close()
    assert at == poison[0].offset()  # the group is stuck on the record it cannot read
