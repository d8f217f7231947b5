"""Decoding of Kafka records into dlq_records and event rows (pure: no broker)."""

import json

import pandas as pd
import pytest

from forensics.schema import validate
from forensics.sources.kafka import (
    out_of_order_events,
    partition_for,
    runbook_md5_partition,
)
from forensics.sources.kafka_records import BATCH, decode_headers, decode_payload, dlq_frame, event_frame

T0 = pd.Timestamp("2025-12-03T14:00:00Z")
T0_MS = int(T0.timestamp() * 1000)

CAMEL = {"eventType": "MESSAGE_FAILED", "messageId": "m-1", "conversationId": "c-1", "channel": "WHATSAPP",
         "status": "FAILED", "timestamp": 1764770400.25, "metadata": {"retry_count": 3}}
SNAKE = {"message_id": "m-2", "conversation_id": "c-2", "event_type": "MESSAGE_CREATED", "timestamp": T0_MS}


def spring_headers(binary: bool) -> list[tuple[str, bytes]]:
    def num(value: int, width: int) -> bytes:
        return value.to_bytes(width, "big", signed=True) if binary else str(value).encode()

    return [
        ("kafka_dlt-original-topic", b"chat-events"),
        ("kafka_dlt-original-partition", num(7, 4)),
        ("kafka_dlt-original-offset", num(123456, 8)),
        ("kafka_dlt-original-timestamp", num(T0_MS, 8)),
        ("kafka_dlt-exception-fqcn", b"org.springframework.kafka.listener.ListenerExecutionFailedException"),
        ("kafka_dlt-exception-message", "Connector returned error: status=503, body=ça".encode()),
        ("__TypeId__", b"com.chat4all.common.event.MessageEvent"),
    ]


def record(value, headers=None, offset=0, key=b"m-1", topic="chat-events-dlq", partition=0, ts=T0_MS):
    return (topic, partition, offset, ts, key, value, headers)


def test_camel_and_snake_payloads_fill_the_same_columns():
    df = dlq_frame([record(json.dumps(CAMEL).encode()), record(json.dumps(SNAKE).encode(), offset=1)])
    validate("dlq_records", df)
    assert df["message_id"].tolist() == ["m-1", "m-2"]
    assert df["conversation_id"].tolist() == ["c-1", "c-2"]
    assert df["event_type"].tolist() == ["MESSAGE_FAILED", "MESSAGE_CREATED"]
    # decimal epoch seconds and epoch milliseconds
    assert df["event_time"].tolist() == [T0 + pd.Timedelta("250ms"), T0]
    assert df["decode_error"].isna().all()
    assert df["timestamp"].tolist() == [T0, T0]
    assert df["source_ref"].tolist() == ["0:0", "0:1"]
    assert (df["source"] == "kafka").all() and (df["source_object"] == "chat-events-dlq").all()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "text"])
def test_spring_dlt_headers_become_columns(binary):
    df = dlq_frame([record(json.dumps(CAMEL).encode(), spring_headers(binary))])
    row = df.iloc[0]
    assert row["original_topic"] == "chat-events"
    assert row["original_partition"] == 7
    assert row["original_offset"] == 123456
    assert row["original_timestamp"] == T0
    assert row["exception_class"].endswith("ListenerExecutionFailedException")
    assert row["exception_message"] == "Connector returned error: status=503, body=ça"
    headers = json.loads(row["headers"])
    assert headers["kafka_dlt-original-partition"] == "7"
    assert headers["kafka_dlt-original-offset"] == "123456"
    assert headers["__TypeId__"] == "com.chat4all.common.event.MessageEvent"


def test_text_number_of_binary_width_is_read_as_text():
    # "1234" is 4 bytes, as a binary int would be; as binary it would be partition 825373492
    _json, dlt = decode_headers([("kafka_dlt-original-partition", b"1234"),
                                 ("kafka_dlt-original-offset", b"12345678")])
    assert dlt == {"original_partition": 1234, "original_offset": 12345678}


def test_number_header_outside_int64_is_kept_as_text_not_a_column():
    text, dlt = decode_headers([("kafka_dlt-original-offset", b"99999999999999999999")])
    assert json.loads(text) == {"kafka_dlt-original-offset": "99999999999999999999"}
    assert dlt == {"original_offset": None}
    frame = dlq_frame([record(json.dumps(CAMEL).encode(), [("kafka_dlt-original-offset", b"-99999999999999999999")])])
    assert frame["original_offset"].isna().all()


def test_lone_surrogate_in_a_payload_field_becomes_a_replacement_character():
    frame = dlq_frame([record(b'{"messageId": "a \\ud800 b", "channel": ["\\udfff"]}')])
    assert frame["message_id"].iloc[0] == "a \ufffd b"
    assert frame["channel"].iloc[0] == '["\ufffd"]'


def test_header_values_not_utf8_become_hex_and_repeats_are_kept():
    text, dlt = decode_headers([("trace", b"\xff\x00"), ("x", b"a"), ("x", b"b"), ("empty", None)])
    assert json.loads(text) == {"trace": "ff00", "x": ["a", "b"], "empty": None}
    assert dlt == {}
    assert decode_headers(None) == (None, {})


@pytest.mark.parametrize(
    ("value", "payload", "error"),
    [
        (b"not json at all", "not json at all", "not JSON"),
        (b'{"messageId": "m-9", "conver', '{"messageId": "m-9", "conver', "not JSON"),
        (b"\xff\xfe\x00binary", "fffe0062696e617279", "not UTF-8"),
        (b"[1, 2]", "[1, 2]", "JSON list, not an object"),
        (b"", "", "empty payload"),
        (None, None, "no payload"),
    ],
    ids=["text", "truncated", "binary", "array", "empty", "tombstone"],
)
def test_garbage_payloads_are_kept_raw_with_a_reason(value, payload, error):
    df = dlq_frame([record(value, spring_headers(True))])
    validate("dlq_records", df)
    assert len(df) == 1
    row = df.iloc[0]
    assert (None if pd.isna(row["payload"]) else row["payload"]) == payload
    assert error in row["decode_error"]
    assert pd.isna(row["message_id"])
    assert row["original_offset"] == 123456  # headers still decoded
    assert (None if pd.isna(row["payload_bytes"]) else row["payload_bytes"]) == (None if value is None else len(value))


def test_batch_parser_and_record_parser_agree():
    good = [record(json.dumps({**(CAMEL if i % 2 else SNAKE), "messageId": f"m-{i}"}).encode(),
                   spring_headers(bool(i % 3)), offset=i) for i in range(50)]
    whole = dlq_frame(good)  # every payload well formed: parsed as one block
    mixed = dlq_frame(good + [record(b"garbage", offset=50)])  # one bad payload: record by record
    pd.testing.assert_frame_equal(whole, mixed.iloc[:50])


def test_batches_decoded_by_different_paths_concatenate():
    good = [record(json.dumps(CAMEL).encode(), offset=i) for i in range(BATCH)]
    df = dlq_frame(good + [record(b"\x00", offset=BATCH)])
    validate("dlq_records", df)
    assert len(df) == BATCH + 1 and df["decode_error"].notna().sum() == 1


def test_oversized_payload_is_kept_truncated_and_not_parsed():
    big = json.dumps({**CAMEL, "content": "é" * 600}).encode()
    d = decode_payload(big, max_bytes=100)
    assert d.fields == {} and "exceeds the 100-byte cap" in d.error
    assert big.decode().startswith(d.text) and len(d.text.encode()) <= 100
    row = dlq_frame([record(big)], max_payload_bytes=100).iloc[0]
    assert row["payload_bytes"] == len(big) and pd.isna(row["message_id"])


def test_twice_serialised_json_is_unwrapped():
    d = decode_payload(json.dumps(json.dumps(CAMEL)).encode())
    assert d.error is None and d.fields["messageId"] == "m-1"


def test_non_utf8_key_is_hex_and_channel_falls_back_to_the_topic():
    df = dlq_frame([record(json.dumps(SNAKE).encode(), key=b"\x80\x81", topic="whatsapp-outbound-dlq", ts=None)],
                   channel_of={"whatsapp-outbound-dlq": "WHATSAPP"})
    assert df["key"][0] == "8081"
    assert df["channel"][0] == "WHATSAPP"
    assert pd.isna(df["timestamp"][0])  # the record carried no timestamp


def test_empty_input_gives_the_empty_canonical_table():
    validate("dlq_records", dlq_frame([]))
    assert list(event_frame([]).columns)[:3] == ["topic", "partition", "offset"]


def test_event_rows_and_out_of_order_flags():
    def ev(conv, mid, t_s, partition, offset):
        payload = {"conversationId": conv, "messageId": mid, "eventType": "MESSAGE_CREATED", "timestamp": t_s}
        return ("chat-events", partition, offset, T0_MS, conv.encode(), json.dumps(payload).encode(), None)

    t = 1764770400.0
    events = event_frame([
        ev("c-ok", "a1", t, 3, 0), ev("c-ok", "a2", t + 1, 3, 1),
        ev("c-swap", "b1", t + 5, 1, 10), ev("c-swap", "b2", t + 2, 1, 11), ev("c-swap", "b3", t + 6, 1, 12),
        ev("c-split", "s1", t, 2, 0), ev("c-split", "s2", t + 1, 4, 0),
    ])
    flagged = out_of_order_events(events).set_index("message_id")
    assert flagged.loc["b2", "order_disagrees"]
    assert not flagged.loc[["a1", "a2", "b1", "b3", "s1", "s2"], "order_disagrees"].any()
    assert flagged.loc[["s1", "s2"], "several_partitions"].all()
    assert not flagged.loc[["a1", "b1"], "several_partitions"].any()
    assert flagged.loc["s1", "partitions_seen"] == 2


def test_partition_for_names_the_runbook_disagreement():
    out = partition_for("conv-1", 10)
    assert set(out) == {"partition", "runbook_md5_partition", "agrees"}
    assert out["runbook_md5_partition"] == runbook_md5_partition("conv-1", 10)
    assert out["agrees"] == (out["partition"] == out["runbook_md5_partition"])
    keys = [f"conv-{i}" for i in range(50)]
    assert any(not partition_for(k, 10)["agrees"] for k in keys)
