"""The Kafka source against the real local broker (scripts/services): windows through
offsets_for_times, lag against committed offsets, topic inventory, the default partitioner,
event order, and that reading never commits an offset or creates a consumer group.

Every topic and group carries the test's unique prefix (``kafka_topic_prefix``); the
profile used is the runbook's with those prefixed names, loaded from a YAML file.
"""

from __future__ import annotations

import json
import time
import uuid
from importlib import resources

import pandas as pd
import pytest
import yaml

from forensics.config import Limits
from forensics.profiles import Profile, load_profile
from forensics.schema import validate
from forensics.sources import kafka, kafka_native
from forensics.timeutil import Window

pytestmark = pytest.mark.integration

T0 = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta("50min")  # the broker refuses future timestamps
WINDOW = Window(T0, T0 + pd.Timedelta("10min"))


def ms(ts: pd.Timestamp) -> int:
    return int(ts.value // 1_000_000)


def prefixed_profile(prefix: str, tmp_path) -> Profile:
    """The runbook profile with every topic and consumer group name prefixed, as a YAML file."""
    data = yaml.safe_load(resources.files("forensics.profiles").joinpath("runbook.yaml").read_text())
    k = data["kafka"]
    for topic in [k["message_events"], *k["outbound"], *k["dlq"]]:
        topic["name"] = prefix + topic["name"]
        if topic.get("original"):
            topic["original"] = prefix + topic["original"]
    groups = k["consumer_groups"]
    groups["router"] = prefix + groups["router"]
    groups["connectors"] = {ch: prefix + g for ch, g in groups["connectors"].items()}
    data["name"] = "runbook-" + prefix
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_profile(path)


def create_topics(admin, topics: dict[str, int], config: dict[str, str] | None = None) -> None:
    from confluent_kafka.admin import NewTopic

    futures = admin.create_topics([NewTopic(t, n, 1, config=config or {}) for t, n in topics.items()],
                                  operation_timeout=30)
    for f in futures.values():
        f.result(timeout=30)
    # the broker's metadata follows the controller shortly after: wait until it lists them
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        listed = admin.list_topics(timeout=10).topics
        if all(t in listed and len(listed[t].partitions) == n for t, n in topics.items()):
            return
        time.sleep(0.1)


def producer(bootstrap: str):
    from confluent_kafka import Producer

    # murmur2_random is librdkafka's name for the Java client's default partitioner; its own
    # default (consistent_random, CRC32) would put keys on other partitions than the platform.
    return Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 5})


def produce(prod, topic: str, value, *, key=None, partition=None, ts: pd.Timestamp, headers=None) -> None:
    kwargs = {"partition": partition} if partition is not None else {}
    prod.produce(topic, value, key=key, timestamp=ms(ts), headers=headers, **kwargs)


def spring_headers(original: str, partition: int, offset: int, ts: pd.Timestamp, message: str):
    return [("kafka_dlt-original-topic", original.encode()),
            ("kafka_dlt-original-partition", partition.to_bytes(4, "big")),
            ("kafka_dlt-original-offset", offset.to_bytes(8, "big")),
            ("kafka_dlt-original-timestamp", ms(ts).to_bytes(8, "big")),
            ("kafka_dlt-exception-fqcn", b"org.springframework.kafka.listener.ListenerExecutionFailedException"),
            ("kafka_dlt-exception-message", message.encode()),
            ("__TypeId__", b"com.chat4all.common.event.MessageEvent")]


def event(message_id: str, conversation_id: str, t: pd.Timestamp, case: str = "snake") -> bytes:
    if case == "camel":
        body = {"eventType": "MESSAGE_FAILED", "messageId": message_id, "conversationId": conversation_id,
                "channel": "WHATSAPP", "timestamp": t.timestamp()}
    else:
        body = {"event_type": "MESSAGE_FAILED", "message_id": message_id, "conversation_id": conversation_id,
                "timestamp": ms(t)}
    return json.dumps(body).encode()


def group_offsets(admin, group: str) -> dict[tuple[str, int], int]:
    from confluent_kafka import ConsumerGroupTopicPartitions

    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=30)
    return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions or () if tp.offset >= 0}


def group_ids(admin) -> set[str]:
    res = admin.list_consumer_groups(request_timeout=30).result(timeout=30)
    return {g.group_id for g in res.valid}


def commit(bootstrap: str, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Commit offsets for a test-only group, as the platform's consumers would."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
    finally:
        c.close()


@pytest.fixture(params=["native", "python"])
def reader(request, monkeypatch, skip_or_fail) -> str:
    """Each reading test runs through both readers: the native one (native/kafka_reader) and
    confluent-kafka alone; they must give the same frames."""
    if request.param == "native" and kafka_native.native_module() is None:
        skip_or_fail("the native Kafka reader is not built (scripts/setup-venv.sh builds it with cargo)")
    monkeypatch.setenv(kafka_native.READER_ENV, request.param)
    return request.param


def expected_reader(reader: str) -> str:
    return "native" if reader == "native" else "confluent-kafka"


@pytest.fixture
def profile(kafka_topic_prefix, tmp_path) -> Profile:
    return prefixed_profile(kafka_topic_prefix, tmp_path)


@pytest.fixture
def seeded_dlq(profile, kafka_admin, kafka_bootstrap):
    """WhatsApp and Telegram DLQ topics (Instagram's left missing) with records before, at the
    edges of, inside and after WINDOW; partition 0 of the WhatsApp DLQ pins the boundaries."""
    wa, tg, ig = profile.kafka.dlq
    create_topics(kafka_admin, {wa.name: wa.partitions, tg.name: tg.partitions})
    prod = producer(kafka_bootstrap)
    start, end = WINDOW.start, WINDOW.end
    one = pd.Timedelta("1ms")
    edges = [start - one, start, start + one, end - one, end, end + one]  # offsets 0..5 on partition 0
    for i, t in enumerate(edges):
        produce(prod, wa.name, event(f"edge-{i}", "c-edge", t), key=f"edge-{i}".encode(), partition=0, ts=t,
                headers=spring_headers(wa.original, 2, 1000 + i, t, "Connector returned error: status=503"))
    inside = [start + pd.Timedelta(seconds=5 * i) for i in range(1, 21)]
    for i, t in enumerate(inside):
        # partitions 1-4: partition 0's timestamps must stay ordered for its boundary checks
        produce(prod, wa.name, event(f"in-{i}", f"c-{i % 3}", t, "camel" if i % 2 else "snake"), key=f"in-{i}",
                partition=1 + i % 4, ts=t, headers=spring_headers(wa.original, i % 5, i, t, "WhatsApp API error 131026"))
    produce(prod, tg.name, b"\xff\xfe garbage", key=b"bad", partition=1, ts=start + pd.Timedelta("1min"),
            headers=[("kafka_dlt-original-partition", b"3"), ("kafka_dlt-original-offset", b"77")])
    produce(prod, tg.name, event("tg-old", "c-tg", start - pd.Timedelta("1h")), partition=2,
            ts=start - pd.Timedelta("1h"))
    assert prod.flush(30) == 0
    return {"edges": edges, "inside": inside}


def test_dlq_window_is_bounded_by_offsets_for_times(profile, seeded_dlq, kafka_bootstrap, reader):
    read = kafka.read_dlq(profile, WINDOW, bootstrap=kafka_bootstrap)
    assert read.reader == expected_reader(reader)
    df = read.frame
    validate("dlq_records", df)
    wa, tg, ig = (t.name for t in profile.kafka.dlq)
    assert read.missing_topics == [ig]
    assert read.truncated is None
    # partition 0: [first offset with ts >= start, first offset with ts >= end) = [1, 4)
    p0 = next(r for r in read.ranges if r["topic"] == wa and r["partition"] == 0)
    assert (p0["start_offset"], p0["end_offset"]) == (1, 4)
    edges = df[df["message_id"].str.startswith("edge-").fillna(False)]
    assert sorted(edges["offset"].tolist()) == [1, 2, 3]
    assert sorted(edges["message_id"].tolist()) == ["edge-1", "edge-2", "edge-3"]
    assert (df["timestamp"] >= WINDOW.start).all() and (df["timestamp"] < WINDOW.end).all()
    assert df["message_id"].str.startswith("in-").fillna(False).sum() == 20
    assert "tg-old" not in set(df["message_id"].dropna())
    assert len(df) == 3 + 20 + 1
    assert sum(r["records"] for r in read.ranges) == len(df)

    row = df[df["message_id"] == "in-3"].iloc[0]  # camelCase payload, decimal seconds
    assert row["event_time"] == seeded_dlq["inside"][3]
    assert row["original_topic"] == profile.kafka.dlq[0].original
    assert row["original_partition"] == 3 and row["original_offset"] == 3
    assert row["exception_message"] == "WhatsApp API error 131026"
    assert row["channel"] == "WHATSAPP"
    assert json.loads(row["headers"])["__TypeId__"] == "com.chat4all.common.event.MessageEvent"
    assert row["source_ref"] == f"{row['partition']}:{row['offset']}"

    bad = df[df["topic"] == tg].iloc[0]  # garbage payload kept, text DLT headers decoded
    assert bad["decode_error"].startswith("not UTF-8") and bad["payload"] == "fffe2067617262616765"
    assert bad["original_partition"] == 3 and bad["original_offset"] == 77
    assert bad["channel"] == "TELEGRAM"


def test_dlq_record_cap_truncates_and_says_so(profile, seeded_dlq, kafka_bootstrap, reader):
    read = kafka.read_dlq(profile, WINDOW, bootstrap=kafka_bootstrap, limits=Limits(max_rows=7))
    assert len(read.frame) == 7
    assert read.truncated == "record cap of 7 reached"


def test_empty_window_reads_nothing(profile, seeded_dlq, kafka_bootstrap, reader):
    later = Window(WINDOW.end + pd.Timedelta("1h"), WINDOW.end + pd.Timedelta("2h"))
    read = kafka.read_dlq(profile, later, bootstrap=kafka_bootstrap)
    validate("dlq_records", read.frame)
    assert read.frame.empty and all(r["start_offset"] == r["end_offset"] for r in read.ranges)


def lag_findings(*samples: pd.DataFrame) -> list:
    from forensics.analysis.detectors import detect
    from forensics.evidence import Evidence

    lag = pd.concat(samples, ignore_index=True)
    ev = Evidence(Window(lag["sampled_at"].min(), lag["sampled_at"].max() + pd.Timedelta(seconds=1)))
    ev.put("consumer_lag", lag)
    return detect(ev, only=["consumer_lag"]).items


def test_lag_against_committed_offsets_and_its_trend(profile, kafka_admin, kafka_bootstrap):
    topic = profile.kafka.message_events
    create_topics(kafka_admin, {topic.name: topic.partitions})
    prod = producer(kafka_bootstrap)
    for p, n in {0: 50, 1: 1500, 2: 300}.items():
        for i in range(n):
            produce(prod, topic.name, event(f"m{p}-{i}", f"c{p}", T0), partition=p, ts=T0)
    assert prod.flush(30) == 0
    group = profile.kafka.router_group
    commit(kafka_bootstrap, group, {(topic.name, 0): 40, (topic.name, 1): 100, (topic.name, 2): 300})

    groups = kafka.group_topics(profile)
    first = kafka.consumer_lag(groups, bootstrap=kafka_bootstrap)
    validate("consumer_lag", first)
    mine = first[first["group"] == group].set_index("partition")
    assert len(mine) == topic.partitions  # uncommitted partitions are listed too
    assert mine.loc[0, ["committed_offset", "end_offset", "lag"]].tolist() == [40, 50, 10]
    assert mine.loc[1, "lag"] == 1400 and mine.loc[2, "lag"] == 0
    assert pd.isna(mine.loc[5, "committed_offset"]) and pd.isna(mine.loc[5, "lag"])
    # connector groups have no outbound topics here: nothing committed, nothing listed
    assert set(first["group"]) == {group}

    for i in range(200):
        produce(prod, topic.name, event(f"late-{i}", "c1", T0), partition=1, ts=T0)
    assert prod.flush(30) == 0
    second = kafka.consumer_lag(groups, bootstrap=kafka_bootstrap)
    commit(kafka_bootstrap, group, {(topic.name, 1): 1700})
    third = kafka.consumer_lag(groups, bootstrap=kafka_bootstrap)

    # the rule (runbook bands, growing or draining) is the consumer_lag detector's
    (grew,) = lag_findings(first, second)
    assert grew.severity == "critical" and grew.tags["trend"] == "growing" and grew.tags["final"] == 10 + 1600
    (drained,) = lag_findings(second, third)
    assert drained.tags["trend"] == "draining" and drained.tags["final"] == 10

    sampled = kafka.sample_consumer_lag(groups, samples=2, interval_s=0.2, bootstrap=kafka_bootstrap)
    assert sampled["sampled_at"].nunique() == 2
    assert lag_findings(sampled) == []  # 10 messages behind: normal


def test_partition_for_agrees_with_the_broker(profile, kafka_admin, kafka_bootstrap):
    topic = profile.kafka.message_events
    create_topics(kafka_admin, {topic.name: topic.partitions})
    placed: dict[str, int] = {}

    def delivered(err, msg):
        assert err is None
        placed[msg.key().decode()] = msg.partition()

    prod = producer(kafka_bootstrap)
    keys = [str(uuid.uuid4()) for _ in range(200)] + ["c", "conv-1", "ü-unicode-key"]
    for key in keys:
        prod.produce(topic.name, b"{}", key=key.encode(), on_delivery=delivered)
    assert prod.flush(30) == 0
    assert len(placed) == len(keys)
    results = {key: kafka.partition_for(key, topic.partitions) for key in keys}
    assert {key: r["partition"] for key, r in results.items()} == placed
    disagreeing = [key for key, r in results.items() if not r["agrees"]]
    assert disagreeing, "the runbook's md5 formula should name another partition for most keys"
    assert all(results[k]["runbook_md5_partition"] != placed[k] for k in disagreeing)


def test_topic_inventory_lists_missing_topics_partitions_and_retention(profile, kafka_admin, kafka_bootstrap):
    events, wa_out = profile.kafka.message_events, profile.kafka.outbound[0]
    create_topics(kafka_admin, {events.name: 3})  # the runbook expects 10
    create_topics(kafka_admin, {wa_out.name: wa_out.partitions}, {"retention.ms": "3600000"})
    inv = kafka.topic_inventory(profile, bootstrap=kafka_bootstrap).set_index("topic")
    assert len(inv) == len(profile.kafka.expected_topics())
    assert inv.loc[events.name, "present"] and not inv.loc[events.name, "partitions_match"]
    assert inv.loc[events.name, ["expected_partitions", "partitions"]].tolist() == [10, 3]
    assert inv.loc[wa_out.name, "partitions_match"] and inv.loc[wa_out.name, "retention_ms"] == 3600000
    missing = set(inv.index[~inv["present"].astype(bool)])
    assert missing == {t.name for t in profile.kafka.expected_topics()} - {events.name, wa_out.name}
    assert inv.loc[profile.kafka.dlq[0].name, "role"] == "dlq"
    assert pd.isna(inv.loc[profile.kafka.dlq[0].name, "partitions"])


def test_message_event_order_within_conversations(profile, kafka_admin, kafka_bootstrap, reader):
    topic = profile.kafka.message_events
    create_topics(kafka_admin, {topic.name: topic.partitions})
    prod = producer(kafka_bootstrap)
    t = T0 + pd.Timedelta("1min")
    # c-swap: keyed by conversation (one partition), but written in the wrong order
    for mid, dt in [("s1", 0), ("s3", 3), ("s2", 2), ("s4", 4)]:
        produce(prod, topic.name, event(mid, "c-swap", t + pd.Timedelta(seconds=dt), "camel"), key=b"c-swap", ts=t)
    # c-split: forced onto two partitions, as a producer with another partitioner would
    for mid, p in [("x1", 1), ("x2", 7)]:
        produce(prod, topic.name, event(mid, "c-split", t), key=b"c-split", partition=p, ts=t)
    produce(prod, topic.name, event("other", "c-other", t), key=b"c-other", ts=t)
    assert prod.flush(30) == 0

    read = kafka.read_message_events(profile, WINDOW, conversation_ids=["c-swap", "c-split"],
                                     bootstrap=kafka_bootstrap)
    events = read.frame
    assert set(events["conversation_id"]) == {"c-swap", "c-split"}
    swap = events[events["conversation_id"] == "c-swap"]
    assert swap["partition"].nunique() == 1
    assert swap["partition"].iloc[0] == kafka.partition_for("c-swap", topic.partitions)["partition"]
    assert swap["message_id"].tolist() == ["s1", "s3", "s2", "s4"]  # offset order
    flags = kafka.out_of_order_events(events).set_index("message_id")
    assert flags["order_disagrees"].to_dict() == {"s1": False, "s3": False, "s2": True, "s4": False,
                                                  "x1": False, "x2": False}
    assert flags.loc[["x1", "x2"], "several_partitions"].all()
    assert not flags.loc[["s1", "s2"], "several_partitions"].any()

    by_message = kafka.read_message_events(profile, WINDOW, message_ids=["other"], bootstrap=kafka_bootstrap)
    assert by_message.frame["message_id"].tolist() == ["other"]


def test_collect_fills_dlq_and_lag_and_names_missing_topics(profile, seeded_dlq, kafka_bootstrap, reader):
    from forensics.sources.registry import collect

    ev, queries, custody = collect(["kafka"], WINDOW, profile, options={"bootstrap": kafka_bootstrap})
    assert not ev.missing
    assert len(ev.tables["dlq_records"]) == 24
    validate("consumer_lag", ev.tables["consumer_lag"])
    desc = ev.sources["kafka"]
    missing = set(desc["missing_topics"])
    assert profile.kafka.dlq[2].name in missing and profile.kafka.message_events.name in missing
    assert profile.kafka.dlq[0].name not in missing
    assert {t["topic"] for t in desc["topics"]} == {t.name for t in profile.kafka.expected_topics()}
    assert queries["dlq_records"]["ranges"]
    assert desc["dlq"]["reader"] == expected_reader(reader)


def test_unreachable_broker_is_a_source_error(profile):
    from forensics.sources.registry import collect

    ev, _q, _c = collect(["kafka"], WINDOW, profile,
                         options={"bootstrap": "127.0.0.1:9", "timeout_s": 2})
    assert "kafka" in ev.missing and "127.0.0.1:9" in ev.missing["kafka"]


def test_reading_commits_no_offsets_and_creates_no_group(profile, seeded_dlq, kafka_admin, kafka_bootstrap, reader):
    group = profile.kafka.router_group
    topic = profile.kafka.dlq[0].name
    commit(kafka_bootstrap, group, {(topic, 0): 2})
    groups_before = group_ids(kafka_admin)
    offsets_before = group_offsets(kafka_admin, group)
    assert offsets_before == {(topic, 0): 2}

    kafka.read_dlq(profile, WINDOW, bootstrap=kafka_bootstrap)
    kafka.read_message_events(profile, WINDOW, bootstrap=kafka_bootstrap)
    kafka.consumer_lag(kafka.group_topics(profile), bootstrap=kafka_bootstrap)
    kafka.topic_inventory(profile, bootstrap=kafka_bootstrap)
    from forensics.sources.registry import collect

    collect(["kafka"], WINDOW, profile, options={"bootstrap": kafka_bootstrap})

    groups_after = group_ids(kafka_admin)
    assert not {g for g in groups_after - groups_before if g.startswith("chat4all-forensics")}
    assert group_offsets(kafka_admin, group) == offsets_before


HOSTILE_PAYLOADS: list[bytes | None] = [
    b'{"messageId": "m-camel", "conversationId": "c", "channel": "WHATSAPP", "eventType": "E", "timestamp": 1.7e9}',
    b'{"message_id": "m-snake", "conversation_id": "c", "event_type": "E", "timestamp": 1732867200123}',
    b'  \r\n {"messageId": "esc \\" \\\\ \\n \\u00e9 \\ud83d\\ude00 \xc3\xa9", "timestamp": "2026-11-29T08:00:00+01:00"}',
    b'{"messageId": null, "message_id": "snake-wins-over-null", "channel": 7, "eventType": {"nested": [1, 2.5]}}',
    b'{"messageId": "m", "timestamp": "garbage"}',
    b'{"messageId": "m", "timestamp": true}',
    b'{"messageId": "m", "timestamp": -0}',
    b'{"messageId": "m", "timestamp": 1e400}',
    b'{"messageId": "m", "timestamp": NaN}',
    b'{"messageId": "lone \\ud800 surrogate"}',
    b'{"messageId": "dup", "messageId": "last"}',
    b'{"messageId": "deep", "x": ' + b"[" * 200 + b"]" * 200 + b"}",
    b'[{"messageId": "array"}]',
    b'"{\\"messageId\\": \\"double-encoded\\"}"',
    b'{"messageId": "trailing"} x',
    b'{"messageId": "ctl \x01 char"}',
    b"\xef\xbb\xbf{\"messageId\": \"bom\"}",
    b'{"messageId": "big", "pad": "' + b"x" * 600 + b'"}',
    b"\xff\xfe not utf-8",
    b"",
    None,
    b"12345",
    b'{"messageId": "' + "\u2028 \x7f".encode() + b'"}',
    # epoch units by magnitude and their edges, rounding half to even, out of range
    *(b'{"messageId": "t", "timestamp": %s}' % t for t in (
        b"99999999999", b"100000000000", b"99999999999999", b"100000000000000", b"99999999999999999",
        b"100000000000000000", b"9200000000000000000", b"1.0000005", b"1.0000015", b"-1.5", b"12345678901.2345")),
]

HOSTILE_HEADERS: list[list[tuple[str, bytes | None]] | None] = [
    None,
    [("kafka_dlt-original-partition", b"3"), ("kafka_dlt-original-offset", b"-77")],
    [("kafka_dlt-original-partition", (7).to_bytes(4, "big")), ("kafka_dlt-original-offset", (-2).to_bytes(8, "big", signed=True))],
    [("kafka_dlt-original-offset", b"99999999999999999999")],  # decimal text outside int64
    [("kafka_dlt-original-offset", b"\x01\x02\x03")],  # neither text nor 8 bytes
    [("kafka_dlt-original-partition", b"1234")],  # 4 digits: text, not binary
    [("kafka_dlt-original-topic", b"\xff\xfe"), ("kafka_dlt-exception-message", None)],
    [("kafka_dlt-exception-fqcn", b"a"), ("kafka_dlt-exception-fqcn", b"b")],  # repeated name
    [('we"ird\\name\n\t', 'va"lue \\ \x00 \x1f é'.encode())],
    [("kafka_dlt-exception-message", b""), ("x", None)],
    [("kafka_dlt-original-timestamp", b"9223372036854"), ("kafka_dlt-original-offset", b"9223372036854775807")],
    [("kafka_dlt-original-timestamp", b"9223372036855"), ("kafka_dlt-original-partition", b"-0")],
    [("kafka_dlt-original-timestamp", (-1).to_bytes(8, "big", signed=True))],
    # left to the Python decoder (a repeated name, a number outside int64), times included
    [("kafka_dlt-original-timestamp", b"1764770400123"), ("x", b"1"), ("x", b"2")],
    [("kafka_dlt-original-timestamp", (1764770400456).to_bytes(8, "big")), ("kafka_dlt-original-offset", b"-99999999999999999999")],
]


def test_native_and_confluent_readers_give_identical_frames(profile, kafka_admin, kafka_bootstrap, monkeypatch,
                                                          skip_or_fail):
    """Every odd payload, header and key, read by both readers: the frames must be equal."""
    if kafka_native.native_module() is None:
        skip_or_fail("the native Kafka reader is not built (scripts/setup-venv.sh builds it with cargo)")
    wa = profile.kafka.dlq[0]
    create_topics(kafka_admin, {wa.name: wa.partitions})
    prod = producer(kafka_bootstrap)
    t = T0 + pd.Timedelta("1min")
    keys = [None, b"\xff key", b"plain", "ключ".encode()]
    n = 0
    for i, payload in enumerate(HOSTILE_PAYLOADS):
        for j, headers in enumerate(HOSTILE_HEADERS[i % 3::3] if i % 2 else HOSTILE_HEADERS):
            produce(prod, wa.name, payload, key=keys[(i + j) % len(keys)], partition=(i + j) % wa.partitions,
                    ts=t + pd.Timedelta(milliseconds=n), headers=headers)
            n += 1
    assert prod.flush(30) == 0

    frames = {}
    for choice in ("native", "python"):
        monkeypatch.setenv(kafka_native.READER_ENV, choice)
        read = kafka.read_dlq(profile, WINDOW, bootstrap=kafka_bootstrap, max_payload_bytes=512)
        assert read.reader == expected_reader(choice)
        frames[choice] = read.frame.sort_values(["partition", "offset"]).reset_index(drop=True)
        validate("dlq_records", frames[choice])
    native, python = frames["native"], frames["python"]
    assert len(native) == n
    pd.testing.assert_frame_equal(native, python)
    # and the decoding is what it should be, not merely the same
    by_id = native.dropna(subset=["message_id"]).drop_duplicates("message_id").set_index("message_id")
    assert "esc \" \\ \n é 😀 é" in by_id.index
    assert by_id.loc["snake-wins-over-null", "channel"] == "7"
    assert by_id.loc["last", "payload"] == '{"messageId": "dup", "messageId": "last"}'
    assert native["decode_error"].str.startswith("payload of").any()  # the 600-byte one, cap 512
    assert native["decode_error"].str.startswith("not UTF-8").any()
    assert native["headers"].dropna().map(lambda h: isinstance(json.loads(h), dict)).all()
    assert native["original_offset"].isin([-77, -2]).sum() > 0
    times = native.loc[native["message_id"] == "t", "event_time"].dropna().drop_duplicates()
    assert pd.Timestamp("1970-01-01 00:00:01.000000", tz="UTC") + pd.Timedelta("1us") in set(times)  # 1.0000005 s, half to even
    assert len(times) >= 8
    originals = set(native["original_timestamp"].dropna())
    assert pd.Timestamp(9223372036854, unit="ms", tz="UTC") in originals
    assert {pd.Timestamp(1764770400123, unit="ms", tz="UTC"), pd.Timestamp(1764770400456, unit="ms", tz="UTC")} <= originals
