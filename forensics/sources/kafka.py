"""Kafka evidence, read only: DLQ records, consumer lag, topic inventory, event order, key partitions.

Read-only toward production, by construction:
- records are read with ``assign()`` and explicit offsets, never ``subscribe()``: the
  reader joins no consumer group and triggers no rebalance of the platform's consumers;
- offsets are never committed (auto commit and the offset store are off, and no code path
  calls ``commit``); librdkafka refuses a consumer without ``group.id``, so each reader
  gets a unique throwaway one (``chat4all-forensics-readonly-<uuid>``) that never commits,
  hence never appears among the broker's groups;
- the AdminClient only describes and lists: ``list_topics``, ``describe_configs``,
  ``list_consumer_group_offsets``, ``list_offsets``.

A time window becomes offsets per partition through ``offsets_for_times``: a partition is
read from the first offset whose timestamp is at or after the window start up to (not
including) the first offset whose timestamp is at or after the window end. Records in that
offset range are kept as they are, even if a producer-set (CreateTime) timestamp lies
outside the window: that is evidence too. Every read has a record cap and a wall-clock
cap; hitting either is reported, never silent.

Payloads are decoded into the canonical columns for both event shapes (camelCase
``messageId``/``conversationId``/``eventType`` of the deployed code, snake_case
``message_id``/``conversation_id``/``event_type`` of the runbook's replay); the payload
``timestamp`` may be epoch seconds (decimal) or milliseconds. A payload that does not
decode (not UTF-8, not JSON, not an object, over the size cap) is kept raw, as text or
hex, with ``decode_error`` saying why: a DLQ record is never dropped.

Speed: each ``consume()`` batch is turned into columns (one comprehension per message
field), payloads of a well-formed batch are parsed at once by Arrow's JSON reader (exact
stdlib fallback otherwise), and columns go to Arrow arrays, then one DataFrame. What is
left per record is librdkafka's Python layer (``Message.headers()`` alone ~2 us) and the
headers JSON: this reader runs several times slower than kcat (benchmarks/bench_dlq.py).
"""

from __future__ import annotations

import codecs
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from hashlib import md5
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from forensics.config import DEFAULT_LIMITS, Limits, connection
from forensics.errors import SourceError
from forensics.profiles import Profile, Topic
from forensics.schema import DLQ_RECORDS, conform, storable_text
from forensics.sources import partitioner
from forensics.sources.registry import CollectRequest, SourceResult
from forensics.timeutil import Window, coerce_timestamps, utcnow

SOURCE = "kafka"

LAG_NORMAL = 100
"""Runbook step 1.2: consumer lag under 100 messages is normal."""
LAG_PROBLEM = 1000
"""Runbook step 1.2: consumer lag over 1000 messages is a problem (and the alert threshold)."""

MAX_PAYLOAD_BYTES = 1 << 20
"""Payloads over this size are kept (truncated to it) but not parsed."""

BATCH = 10_000
"""Messages per ``consume()`` call."""

KafkaRecord = tuple[str, int, int, "int | None", "bytes | None", "bytes | None", "list[tuple[str, bytes | None]] | None"]
"""(topic, partition, offset, timestamp_ms, key, value, headers): one record as read."""


@dataclass
class RawBatch:
    """Records as read, column by column (one ``consume()`` batch); timestamp -1 = none."""

    topic: list[str]
    partition: list[int]
    offset: list[int]
    timestamp_ms: list[int]
    key: list[bytes | None]
    value: list[bytes | None]
    headers: list[list[tuple[str, bytes | None]] | None]

    @classmethod
    def from_records(cls, records: Sequence[KafkaRecord]) -> RawBatch:
        topic, part, off, ts, key, value, headers = (list(c) for c in zip(*records, strict=True))
        return cls(topic, part, off, [-1 if t is None else t for t in ts], key, value, headers)

    def __len__(self) -> int:
        return len(self.offset)

# Spring Kafka's DeadLetterPublishingRecoverer headers -> dlq_records columns.
_DLT_TEXT = {
    "kafka_dlt-original-topic": "original_topic",
    "kafka_dlt-exception-fqcn": "exception_class",
    "kafka_dlt-exception-message": "exception_message",
}
# Spring writes these as big-endian binary numbers (4-byte int, 8-byte longs); other
# producers (and manual replays) write decimal text. Both are read.
_DLT_INT = {
    name: (column, width, f'"{name}":')  # column, binary width, JSON member prefix
    for name, column, width in (("kafka_dlt-original-partition", "original_partition", 4),
                                ("kafka_dlt-original-offset", "original_offset", 8),
                                ("kafka_dlt-original-timestamp", "original_timestamp", 8))
}
_DLT_COLUMNS = (*_DLT_TEXT.values(), *(spec[0] for spec in _DLT_INT.values()))

# Canonical payload field -> keys tried in order (camelCase, snake_case).
_PAYLOAD_KEYS = {
    "message_id": ("messageId", "message_id"),
    "conversation_id": ("conversationId", "conversation_id"),
    "channel": ("channel",),
    "event_type": ("eventType", "event_type"),
}
_PAYLOAD_TIME_KEY = "timestamp"


# ---- decoding (pure) ---------------------------------------------------------------------

def text_or_hex(data: bytes | None) -> str | None:
    """Bytes as UTF-8 text, else as lowercase hex (keys, header values)."""
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.hex()


def _dlt_int(value: bytes | None, width: int) -> int | None:
    """A Spring DLT number header: decimal text, else a big-endian binary int of ``width`` bytes.

    Text is tried first: an all-digit value of exactly ``width`` bytes read as binary would
    be an absurd partition (>= 808 million) or offset (>= 3.5e18).
    """
    if value is None:
        return None
    digits = value[1:] if value[:1] == b"-" else value
    if digits.isdigit():
        number = int(value)
        return number if -(1 << 63) <= number < (1 << 63) else None  # outside int64: kept as text only
    if len(value) == width:
        return int.from_bytes(value, "big", signed=True)
    return None


def _json_text(text: str) -> str:
    """``text`` as a JSON string literal (UTF-8 kept, compact)."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'  # nothing to escape: the common case, ~3x cheaper than json.dumps
    return json.dumps(text, ensure_ascii=False)


def _header(name: str, value: bytes | None) -> tuple[str, str | None, Any]:
    """One non-numeric header -> (its ``"name":value`` JSON member, its dlq_records column or None, text)."""
    text = text_or_hex(value)
    return f"{_json_text(name)}:{'null' if text is None else _json_text(text)}", _DLT_TEXT.get(name), text


def decode_headers(headers: Sequence[tuple[str, bytes | None]] | None,
                   cache: dict[tuple[str, bytes | None], tuple[str, str | None, Any]] | None = None
                   ) -> tuple[str | None, dict[str, Any]]:
    """Headers as a JSON object of decoded strings, and the Spring DLT columns they carry.

    Values are UTF-8 text, else hex; Spring's binary number headers are written as decimal
    text; a null value is JSON null. A header name that repeats keeps every value, as a
    JSON list in arrival order (a column takes the last). Returns ``(compact JSON text, or
    None when the record has no headers; {dlq_records column: value})``. ``cache`` (one
    dict per batch) reuses the decoding of (name, value) pairs that repeat across records,
    as exception class, message and original topic do.
    """
    if not headers:
        return None, {}
    if cache is None:
        cache = {}
    parts: list[str] = []
    dlt: dict[str, Any] = {}
    for pair in headers:
        spec = _DLT_INT.get(pair[0])
        if spec is not None:  # numbers differ per record: decoded inline, not cached
            column, width, prefix = spec
            value = pair[1]
            if value and len(value) == width and not value.isdigit() and value[0] != 45:  # 45: "-"
                number = int.from_bytes(value, "big", signed=True)
            else:
                number = _dlt_int(value, width)
            dlt[column] = number
            if number is not None:
                parts.append(f'{prefix}"{number}"')
            else:
                parts.append(_header(*pair)[0])
            continue
        hit = cache.get(pair)
        if hit is None:
            hit = cache[pair] = _header(*pair)
        if hit[1] is not None:
            dlt[hit[1]] = hit[2]
        parts.append(hit[0])
    if len({name for name, _v in headers}) < len(headers):
        return _repeated_headers(headers), dlt
    return "{" + ",".join(parts) + "}", dlt


def _repeated_headers(headers: Sequence[tuple[str, bytes | None]]) -> str:
    values: dict[str, list[str | None]] = {}
    for name, value in headers:
        spec = _DLT_INT.get(name)
        number = _dlt_int(value, spec[1]) if spec else None
        values.setdefault(name, []).append(str(number) if number is not None else text_or_hex(value))
    return json.dumps({k: v if len(v) > 1 else v[0] for k, v in values.items()}, ensure_ascii=False,
                      separators=(",", ":"))


@dataclass(frozen=True)
class DecodedPayload:
    text: str | None
    """Payload as UTF-8 text, else hex (truncated to the cap when oversized)."""
    fields: dict[str, Any]
    """The JSON object, when the payload is one; else empty."""
    error: str | None
    """Why the payload could not be parsed, else None."""


def decode_payload(value: bytes | None, max_bytes: int = MAX_PAYLOAD_BYTES) -> DecodedPayload:
    """Decode one record value: UTF-8 JSON object expected; anything else kept raw with an error.

    A JSON string holding a JSON object (a payload serialised twice, as a StringSerializer
    in front of a JSON one does) is unwrapped once.
    """
    if value is None:
        return DecodedPayload(None, {}, "no payload (null value)")
    if not value:
        return DecodedPayload("", {}, "empty payload")
    if len(value) > max_bytes:
        head = value[:max_bytes]
        try:  # final=False: a multi-byte character cut by the cap is dropped, not an error
            text = codecs.utf_8_decode(head, "strict", False)[0]
        except UnicodeDecodeError:
            text = head.hex()
        return DecodedPayload(text, {}, f"payload of {len(value)} bytes exceeds the {max_bytes}-byte cap: "
                                        f"first {max_bytes} bytes kept, not parsed")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return DecodedPayload(value.hex(), {}, f"not UTF-8 ({exc.reason} at byte {exc.start}): kept as hex")
    try:
        obj = json.loads(text)
        if isinstance(obj, str) and obj.lstrip().startswith("{"):
            obj = json.loads(obj)
    except ValueError as exc:
        return DecodedPayload(text, {}, f"not JSON: {exc}")
    if not isinstance(obj, dict):
        return DecodedPayload(text, {}, f"JSON {type(obj).__name__}, not an object")
    return DecodedPayload(text, obj, None)


def _field_text(value: Any) -> str | None:
    """A payload field as text: strings as they are, other JSON values as compact JSON.

    A lone surrogate (JSON allows ``"\\ud800"``; UTF-8 cannot hold it) becomes U+FFFD.
    """
    if value is None:
        return None
    return storable_text(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))


def _times(values: list[Any] | np.ndarray) -> pa.Array:
    """Payload times (epoch s/ms numbers, ISO strings, garbage) as an Arrow UTC timestamp array."""
    if isinstance(values, np.ndarray):
        series = pd.Series(values)
    else:
        numeric = all(v is None or (type(v) in (int, float)) for v in values)
        series = pd.Series(values, dtype="float64" if numeric else object)
    times = coerce_timestamps(series)
    return pa.array(times.array.asi8, pa.timestamp("ns", tz="UTC"), mask=times.isna().to_numpy())


UTC_NS = pa.timestamp("ns", tz="UTC")
_MAX_MS = (1 << 63) // 1_000_000


def _ms_times(values: Sequence[int | None] | np.ndarray, missing: np.ndarray | None = None) -> pa.Array:
    """Epoch milliseconds -> UTC ns timestamps; null where ``missing``, and for values outside
    datetime64[ns] (beyond the year 2262)."""
    ms = pd.array(values, dtype="Int64")
    raw = ms.to_numpy(dtype="int64", na_value=0)
    valid = ~ms.isna() & (raw >= -_MAX_MS) & (raw <= _MAX_MS)
    if missing is not None:
        valid &= ~missing
    return pa.array(np.where(valid, raw, 0) * 1_000_000, UTC_NS, mask=~valid)


def _texts(values: Sequence[bytes | None]) -> pa.Array:
    """Keys (or any bytes) as UTF-8 text, else hex: one Arrow cast when the whole batch is UTF-8."""
    try:
        return pa.array(values, pa.binary()).cast(pa.string())
    except pa.ArrowInvalid:
        return pa.array([text_or_hex(v) for v in values], pa.string())


_FAST_SCHEMA = pa.schema([(k, pa.string()) for keys in _PAYLOAD_KEYS.values() for k in keys]
                         + [(_PAYLOAD_TIME_KEY, pa.float64())])


def _payloads_fast(values: Sequence[bytes | None], max_bytes: int) -> dict[str, pa.Array] | None:
    """A batch of well-formed payloads parsed at once by Arrow's JSON reader, else None.

    Taken only when the result is exactly what :func:`decode_payload` gives record by
    record: every payload present, under the cap, valid UTF-8, starting with ``{`` and free
    of line breaks (so line i of the NDJSON block is payload i), every canonical field a
    JSON string (the time a number), and one row per payload. Arrow rejects everything
    the stdlib rejects here (trailing commas, bad escapes, control characters); any
    doubt, and the batch falls back to the record-by-record path.
    """
    import pyarrow.compute as pc
    import pyarrow.json as pj

    if None in values:
        return None
    raw = pa.array(values, pa.binary())
    lengths = pc.binary_length(raw)
    if len(raw) == 0 or pc.min(lengths).as_py() < 1 or pc.max(lengths).as_py() > max_bytes:
        return None
    if not pc.all(pc.starts_with(raw, "{")).as_py():
        return None
    blob = b"\n".join(values)
    if blob.count(b"\n") != len(values) - 1 or b"\r" in blob:
        return None
    try:
        text = raw.cast(pa.string())
        parsed = pj.read_json(pa.BufferReader(blob), parse_options=pj.ParseOptions(
            explicit_schema=_FAST_SCHEMA, unexpected_field_behavior="ignore"))
    except pa.ArrowInvalid:
        return None
    if parsed.num_rows != len(values):
        return None
    cols = {name: pc.coalesce(*(parsed[k].combine_chunks() for k in keys)) for name, keys in _PAYLOAD_KEYS.items()}
    cols["event_time"] = _times(parsed[_PAYLOAD_TIME_KEY].to_numpy())
    cols["payload"] = text
    cols["payload_bytes"] = lengths.cast(pa.int64())
    cols["decode_error"] = pa.nulls(len(values), pa.string())
    return cols


def _payloads(values: Sequence[bytes | None], max_bytes: int) -> dict[str, pa.Array]:
    """Payload columns of a batch: message_id, conversation_id, channel, event_type, event_time,
    payload, payload_bytes, decode_error."""
    fast = _payloads_fast(values, max_bytes)
    if fast is not None:
        return fast
    n = len(values)
    cols: dict[str, list[Any]] = {c: [None] * n for c in (*_PAYLOAD_KEYS, "event_time", "payload", "decode_error")}
    mid, cid, chan, etype, etime = (cols[c] for c in (*_PAYLOAD_KEYS, "event_time"))
    payload, err = cols["payload"], cols["decode_error"]
    for i, v in enumerate(values):
        d = decode_payload(v, max_bytes)
        payload[i], err[i] = d.text, d.error
        f = d.fields
        if f:
            for column, keys in zip((mid, cid, chan, etype), _PAYLOAD_KEYS.values(), strict=True):
                column[i] = _field_text(next((f[k] for k in keys if f.get(k) is not None), None))
            etime[i] = f.get(_PAYLOAD_TIME_KEY)
    out = {c: pa.array(v, pa.string()) for c, v in cols.items() if c != "event_time"}
    out["event_time"] = _times(etime)
    out["payload_bytes"] = pa.array([None if v is None else len(v) for v in values], pa.int64())
    return out


def _headers(headers: Sequence[list[tuple[str, bytes | None]] | None]) -> dict[str, pa.Array]:
    """Header columns of a batch: headers (JSON) and the Spring DLT columns."""
    n = len(headers)
    text: list[str | None] = [None] * n
    dlt: dict[str, list[Any]] = {c: [None] * n for c in _DLT_COLUMNS}
    cache: dict[tuple[str, bytes | None], tuple[str, str | None, Any]] = {}
    for i, h in enumerate(headers):
        if h:
            text[i], found = decode_headers(h, cache)
            for column, value in found.items():
                dlt[column][i] = value
    return {
        "headers": pa.array(text, pa.string()),
        "original_topic": pa.array(dlt["original_topic"], pa.string()),
        "original_partition": pa.array(dlt["original_partition"], pa.int64()),
        "original_offset": pa.array(dlt["original_offset"], pa.int64()),
        "original_timestamp": _ms_times(dlt["original_timestamp"]),
        "exception_class": pa.array(dlt["exception_class"], pa.string()),
        "exception_message": pa.array(dlt["exception_message"], pa.string()),
    }


def _record_columns(raw: RawBatch) -> dict[str, pa.Array]:
    """Columns every record has: topic, partition, offset, timestamp, key."""
    ts = np.asarray(raw.timestamp_ms, dtype="int64")
    return {"topic": pa.array(raw.topic, pa.string()), "partition": pa.array(raw.partition, pa.int64()),
            "offset": pa.array(raw.offset, pa.int64()),
            "timestamp": _ms_times(ts, missing=ts < 0), "key": _texts(raw.key)}


def _raw_columns(raw: RawBatch, headers: bool, max_bytes: int) -> dict[str, pa.Array]:
    """Decoded columns of one batch of records read through confluent-kafka (the reference
    decoding; the native reader's batches give the same columns)."""
    cols = _record_columns(raw)
    if headers:
        cols.update(_headers(raw.headers))
    cols.update(_payloads(raw.value, max_bytes))
    return cols


def _dlq_batch(cols: dict[str, pa.Array], channel_of: dict[str, str]) -> pa.RecordBatch:
    """Decoded columns of one batch -> the dlq_records columns as Arrow arrays."""
    import pyarrow.compute as pc

    n = len(cols["offset"])
    if channel_of and cols["channel"].null_count:
        text = cols["channel"].type  # string, or large_string from the native reader
        topic_channel = pc.index_in(cols["topic"], pa.array(list(channel_of), cols["topic"].type))
        cols["channel"] = pc.coalesce(cols["channel"], pc.take(pa.array(list(channel_of.values()), text),
                                                               topic_channel))
    text = cols["topic"].type
    if "source_ref" not in cols:  # the native reader writes it
        cols["source_ref"] = pc.binary_join_element_wise(cols["partition"].cast(text), cols["offset"].cast(text), ":")
    cols.update({"source": pa.nulls(n, text).fill_null(SOURCE), "source_object": cols["topic"]})
    return pa.RecordBatch.from_pydict({c: cols[c] for c in DLQ_RECORDS.names})


def _frame(batches: list[pa.RecordBatch], table: str | None, empty: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """Arrow batches -> one DataFrame (strings stay Arrow-backed), conformed to ``table``."""
    if not batches:
        return empty()
    arrow = pa.Table.from_batches(batches)
    mapping = {pa.string(): pd.StringDtype(), pa.large_string(): pd.StringDtype(), pa.int64(): pd.Int64Dtype(),
               pa.bool_(): pd.BooleanDtype()}
    frame = arrow.to_pandas(types_mapper=mapping.get, self_destruct=True, split_blocks=True)
    return conform(table, frame) if table else frame


def dlq_frame(records: Iterable[KafkaRecord], *, max_payload_bytes: int = MAX_PAYLOAD_BYTES,
              channel_of: dict[str, str] | None = None) -> pd.DataFrame:
    """Records as read from a DLQ topic -> canonical ``dlq_records`` rows.

    ``channel_of`` maps a DLQ topic to its channel (from the profile) for payloads that do
    not name one.
    """
    records = list(records)
    batches = [_dlq_batch(_raw_columns(RawBatch.from_records(records[i:i + BATCH]), True, max_payload_bytes),
                          channel_of or {})
               for i in range(0, len(records), BATCH)]
    return _frame(batches, "dlq_records", lambda: conform("dlq_records"))


EVENT_COLUMNS = ("topic", "partition", "offset", "timestamp", "key", "message_id", "conversation_id",
                 "event_type", "event_time", "decode_error")


def _event_batch(cols: dict[str, pa.Array]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({c: cols[c] for c in EVENT_COLUMNS})


def _empty_events() -> pd.DataFrame:
    dtypes = {"partition": "Int64", "offset": "Int64", "timestamp": "datetime64[ns, UTC]",
              "event_time": "datetime64[ns, UTC]"}
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, "string")) for c in EVENT_COLUMNS})


def event_frame(records: Iterable[KafkaRecord], *, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> pd.DataFrame:
    """Records of the message events topic -> one row per event (columns ``EVENT_COLUMNS``)."""
    records = list(records)
    batches = [_event_batch(_raw_columns(RawBatch.from_records(records[i:i + BATCH]), False, max_payload_bytes))
               for i in range(0, len(records), BATCH)]
    return _normalise_events(_frame(batches, None, _empty_events))


def _normalise_events(frame: pd.DataFrame) -> pd.DataFrame:
    for c in ("timestamp", "event_time"):
        frame[c] = frame[c].astype("datetime64[ns, UTC]")
    return frame


# ---- connections ---------------------------------------------------------------------------

def bootstrap_servers(explicit: str | None = None) -> str:
    """The bootstrap servers: explicit, else FORENSICS_KAFKA_BOOTSTRAP; a SourceError otherwise."""
    servers = connection("kafka", explicit)
    if not servers:
        raise SourceError(SOURCE, "no bootstrap servers given",
                          "pass --kafka / options['bootstrap'] or set FORENSICS_KAFKA_BOOTSTRAP")
    return servers


# librdkafka's own log lines (a refused connection is logged once per retry) go here instead
# of flooding stderr; what matters reaches the user as a SourceError naming the brokers.
LIBRDKAFKA_LOG = logging.getLogger("forensics.kafka.librdkafka")
LIBRDKAFKA_LOG.addHandler(logging.NullHandler())
LIBRDKAFKA_LOG.propagate = False


def consumer_config(bootstrap: str, limits: Limits = DEFAULT_LIMITS, **extra: Any) -> dict[str, Any]:
    """librdkafka settings of a read-only consumer (assign() only, never commits)."""
    return {
        "bootstrap.servers": bootstrap,
        # librdkafka requires a group.id even for assign(). A unique throwaway one: it never
        # joins (no subscribe) and never commits (auto commit and offset store off), so no
        # group is ever created on the broker and the platform's groups are untouched.
        "group.id": f"chat4all-forensics-readonly-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        # A start offset deleted by retention between lookup and fetch: read what is left.
        "auto.offset.reset": "earliest",
        "socket.connection.setup.timeout.ms": int(limits.connect_timeout_s * 1000),
        "queued.min.messages": 200_000,
        # Larger fetches per partition: on a local broker this halves the time spent waiting
        # in consume() for small records (1 MiB default -> 8 MiB).
        "max.partition.fetch.bytes": 8 << 20,
        # librdkafka (>= 2.x) postpones a partition's next fetch by this much once the local
        # queue is over its thresholds; the 1 s default leaves a fast reader idle most of the
        # time (a 1M-record DLQ read went from 3.8 s to 1.6 s with 10 ms).
        "fetch.queue.backoff.ms": 10,
        "logger": LIBRDKAFKA_LOG,
        **extra,
    }


def open_consumer(bootstrap: str, limits: Limits = DEFAULT_LIMITS, **extra: Any):
    from confluent_kafka import Consumer

    return Consumer(consumer_config(bootstrap, limits, **extra))


def open_admin(bootstrap: str, limits: Limits = DEFAULT_LIMITS, **extra: Any):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap, "logger": LIBRDKAFKA_LOG,
                        "socket.connection.setup.timeout.ms": int(limits.connect_timeout_s * 1000), **extra})


def _unreachable(bootstrap: str, exc: Exception) -> SourceError:
    return SourceError(SOURCE, f"cannot reach the brokers at {bootstrap}: {exc}",
                       "FORENSICS_KAFKA_BOOTSTRAP, network path, broker status")


def _cluster_topics(client, bootstrap: str, limits: Limits) -> dict[str, int]:
    """Topic -> partition count, from the cluster metadata (consumer or admin client)."""
    from confluent_kafka import KafkaException

    try:
        meta = client.list_topics(timeout=limits.timeout_s)
    except KafkaException as exc:
        raise _unreachable(bootstrap, exc) from exc
    return {name: len(t.partitions) for name, t in meta.topics.items() if t.error is None}


# ---- reading a window ----------------------------------------------------------------------

@dataclass
class WindowRead:
    """What a windowed read asked for and got."""

    frame: pd.DataFrame
    ranges: list[dict[str, Any]] = field(default_factory=list)
    """Per partition: topic, partition, start_offset, end_offset (exclusive), records."""
    truncated: str | None = None
    """Why the read stopped early (record cap, wall-clock cap), else None."""
    elapsed_s: float = 0.0
    missing_topics: list[str] = field(default_factory=list)
    reader: str = "confluent-kafka"
    """Which reader decoded the records: "native" (native/kafka_reader) or "confluent-kafka"."""

    def describe(self) -> dict[str, Any]:
        return {"ranges": self.ranges, "truncated": self.truncated, "elapsed_s": round(self.elapsed_s, 3),
                "missing_topics": self.missing_topics, "rows": len(self.frame), "reader": self.reader}


def window_offsets(consumer, topics: dict[str, int], window: Window, limits: Limits = DEFAULT_LIMITS
                   ) -> list[dict[str, Any]]:
    """Offset range per partition for ``window`` via ``offsets_for_times``.

    ``start_offset`` is the first offset with a timestamp >= window.start, ``end_offset``
    (exclusive) the first with a timestamp >= window.end; where the broker has no such
    record, the high watermark. ``topics`` maps topic -> partition count.
    """
    from confluent_kafka import TopicPartition

    start_ms, end_ms = int(window.start.value // 1_000_000), int(window.end.value // 1_000_000)
    tps = [(t, p) for t, n in topics.items() for p in range(n)]
    if not tps:
        return []
    deadline = time.monotonic() + limits.timeout_s
    starts = _offsets_for_times(consumer, [TopicPartition(t, p, start_ms) for t, p in tps], deadline)
    ends = _offsets_for_times(consumer, [TopicPartition(t, p, end_ms) for t, p in tps], deadline)
    ranges = []
    for (t, p), s, e in zip(tps, starts, ends, strict=True):
        if s.error or e.error:
            raise SourceError(SOURCE, f"offsets_for_times failed for {t}[{p}]: {s.error or e.error}")
        if s.offset < 0 or e.offset < 0:
            high = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=limits.timeout_s)[1]
        start = s.offset if s.offset >= 0 else high
        end = e.offset if e.offset >= 0 else high
        ranges.append({"topic": t, "partition": p, "start_offset": start, "end_offset": max(start, end)})
    return ranges


def _settling_codes() -> frozenset:
    from confluent_kafka import KafkaError

    return frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                      KafkaError._WAIT_COORD, KafkaError.REQUEST_TIMED_OUT})


def _offsets_for_times(consumer, partitions: list, deadline: float) -> list:
    """``consumer.offsets_for_times`` that waits out retriable broker errors until ``deadline``.

    A leader election (a broker restart, a topic created a moment ago) answers "not leader
    for partition" for a few hundred milliseconds; that is the cluster settling, not a
    failed source. Anything not retriable, or still failing at the deadline, is raised.
    """
    from confluent_kafka import KafkaException

    settling_codes = _settling_codes()
    pause = 0.1
    while True:
        try:
            return consumer.offsets_for_times(partitions, timeout=max(0.1, deadline - time.monotonic()))
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            settling = getattr(error, "code", lambda: None)() in settling_codes or getattr(error, "retriable", bool)()
            if not settling or time.monotonic() + pause >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


def _scan(consumer, ranges: list[dict[str, Any]], limits: Limits, headers: bool, max_bytes: int, progress=None
          ) -> tuple[list[dict[str, pa.Array]], str | None]:
    """Read every range with assign() (no group join, no commit) through confluent-kafka;
    decode one consume() batch at a time into columns."""
    from confluent_kafka import KafkaError, TopicPartition

    todo = {(r["topic"], r["partition"]): r for r in ranges if r["end_offset"] > r["start_offset"]}
    if not todo:
        return [], None
    ends = {tp: r["end_offset"] for tp, r in todo.items()}
    # consume(n) returns early only once n messages are there: asking for no more than the
    # records still due keeps the last call from idling until its timeout.
    due = sum(r["end_offset"] - r["start_offset"] for r in todo.values())
    consumer.assign([TopicPartition(t, p, r["start_offset"]) for (t, p), r in todo.items()])
    deadline = time.monotonic() + limits.timeout_s
    batches: list[dict[str, pa.Array]] = []
    total, truncated = 0, None
    eof = KafkaError._PARTITION_EOF
    while ends:
        left = deadline - time.monotonic()
        if left <= 0:
            truncated = f"wall-clock cap of {limits.timeout_s:g} s reached"
            break
        if total >= limits.max_rows:
            truncated = f"record cap of {limits.max_rows} reached"
            break
        want = max(1, min(BATCH, limits.max_rows - total, due - total))
        msgs = consumer.consume(num_messages=want, timeout=min(0.5, left))
        good = [m for m in msgs if m.error() is None]
        raw = _take(good, ends, consumer, headers) if good else None
        if len(good) < len(msgs):  # partition ends (after their messages) or failures
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() != eof:
                        raise SourceError(SOURCE, f"reading {m.topic()}[{m.partition()}] failed: {err}")
                    ends.pop((m.topic(), m.partition()), None)
        if raw:
            if len(raw) > limits.max_rows - total:
                raw = RawBatch(*(col[: limits.max_rows - total] for col in vars(raw).values()))
            total += len(raw)
            batches.append(_raw_columns(raw, headers, max_bytes))
            if progress:
                progress(f"kafka: {total} records read")
    consumer.unassign()
    return batches, truncated


def _count_records(ranges: list[dict[str, Any]], batches: list[dict[str, pa.Array]]) -> None:
    """Set each range's ``records``: how many of its records were read."""
    for r in ranges:
        r["records"] = 0
    if batches:
        per = pa.table({c: pa.chunked_array([b[c] for b in batches]) for c in ("topic", "partition", "offset")}
                       ).group_by(["topic", "partition"]).aggregate([("offset", "count")])
        counts = dict(zip(zip(per["topic"].to_pylist(), per["partition"].to_pylist(), strict=True),
                          per["offset_count"].to_pylist(), strict=True))
        for r in ranges:
            r["records"] = counts.get((r["topic"], r["partition"]), 0)


def _take(msgs: list, ends: dict[tuple[str, int], int], consumer, headers: bool) -> RawBatch | None:
    """The messages of one batch that lie inside their partition's range, as columns.

    Messages of a partition arrive in offset order; a partition whose range end is reached
    is dropped from ``ends`` and paused. Field access is done per column (a comprehension
    per field): it is the per-message cost that bounds the read rate.
    """
    from confluent_kafka import TopicPartition

    topic = [m.topic() for m in msgs]
    part = [m.partition() for m in msgs]
    off = np.fromiter((m.offset() for m in msgs), dtype=np.int64, count=len(msgs))
    end = np.fromiter((ends.get(tp, -1) for tp in zip(topic, part, strict=True)), dtype=np.int64, count=len(msgs))
    for i in np.flatnonzero(off >= end - 1):  # the last offset of a range, or past it (or a done partition)
        tp = (topic[i], part[i])
        if ends.pop(tp, None) is not None:
            consumer.pause([TopicPartition(*tp)])
    keep = off < end
    if not keep.all():
        idx = np.flatnonzero(keep)
        msgs = [msgs[i] for i in idx]
        topic = [topic[i] for i in idx]
        part = [part[i] for i in idx]
        off = off[idx]
        if not msgs:
            return None
    return RawBatch(topic, part, off.tolist(), [m.timestamp()[1] for m in msgs], [m.key() for m in msgs],
                    [m.value() for m in msgs], [m.headers() for m in msgs] if headers else [None] * len(msgs))


def _read_window(bootstrap: str, topics: Sequence[str], window: Window, limits: Limits,
                 decode: Callable[[dict[str, pa.Array]], pa.RecordBatch], headers: bool, max_bytes: int,
                 progress=None) -> tuple[list[pa.RecordBatch], WindowRead]:
    """Offsets for ``window`` (confluent-kafka), then the records: natively when the native
    reader is built (same librdkafka, same read-only settings), else through confluent-kafka."""
    from . import kafka_native

    started = time.monotonic()
    native = kafka_native.native_module()
    config = consumer_config(bootstrap, limits)
    consumer = open_consumer(bootstrap, limits)
    readers: list = []
    try:
        present = _cluster_topics(consumer, bootstrap, limits)
        wanted = {t: present[t] for t in topics if t in present}
        ranges = window_offsets(consumer, wanted, window, limits)
        if native is not None:
            readers = kafka_native.open_readers(native, config, headers, max_bytes)
            batches, truncated = kafka_native.scan(readers, ranges, limits, headers, max_bytes, decode, progress)
        else:
            columns, truncated = _scan(consumer, ranges, limits, headers, max_bytes, progress)
            _count_records(ranges, columns)
            batches = [decode(c) for c in columns]
    finally:
        for reader in readers:
            reader.close()
        consumer.close()
    info = WindowRead(pd.DataFrame(), ranges, truncated, time.monotonic() - started,
                      [t for t in topics if t not in present], "native" if native is not None else "confluent-kafka")
    return batches, info


def read_dlq(profile: Profile, window: Window, *, bootstrap: str | None = None, limits: Limits = DEFAULT_LIMITS,
             max_payload_bytes: int = MAX_PAYLOAD_BYTES, progress=None) -> WindowRead:
    """Every DLQ topic of ``profile`` over ``window`` -> canonical ``dlq_records`` (in ``.frame``).

    Missing DLQ topics are skipped and listed in ``.missing_topics``. ``limits.max_rows``
    caps the records over all topics, ``limits.timeout_s`` the wall-clock time of the read.
    """
    servers = bootstrap_servers(bootstrap)
    channel_of = {t.name: t.channel for t in profile.kafka.dlq if t.channel}
    batches, info = _read_window(servers, [t.name for t in profile.kafka.dlq], window, limits,
                                 lambda cols: _dlq_batch(cols, channel_of), True, max_payload_bytes, progress)
    info.frame = _frame(batches, "dlq_records", lambda: conform("dlq_records"))
    return info


def read_message_events(profile: Profile, window: Window, *, conversation_ids: Iterable[str] | None = None,
                        message_ids: Iterable[str] | None = None, bootstrap: str | None = None,
                        limits: Limits = DEFAULT_LIMITS, max_payload_bytes: int = MAX_PAYLOAD_BYTES,
                        progress=None) -> WindowRead:
    """The message events topic over ``window``, one row per event, in partition/offset order.

    Filtered client-side after decoding: a record is kept when its conversation id (payload,
    else the record key, which the platform sets to the conversation id) is in
    ``conversation_ids`` or its message id is in ``message_ids``; no filter keeps all.
    Columns: ``EVENT_COLUMNS``.
    """
    servers = bootstrap_servers(bootstrap)
    batches, info = _read_window(servers, [profile.kafka.message_events.name], window, limits,
                                 _event_batch, False, max_payload_bytes, progress)
    frame = _normalise_events(_frame(batches, None, _empty_events))
    convs = set(conversation_ids or ())
    msgs = set(message_ids or ())
    if convs or msgs:
        conv = frame["conversation_id"].fillna(frame["key"])
        keep = conv.isin(convs) | frame["message_id"].isin(msgs)
        frame = frame[keep.fillna(False).astype(bool)]
    info.frame = frame.sort_values(["topic", "partition", "offset"], kind="stable").reset_index(drop=True)
    return info


def out_of_order_events(events: pd.DataFrame) -> pd.DataFrame:
    """Flag delivery-order anomalies within each conversation (runbook symptom 4, SC-004).

    Kafka orders records only within a partition, so a conversation is delivered in order
    only if all its events sit on one partition and, on it, offsets follow event time.
    Adds to ``events`` (read by :func:`read_message_events`):
    - ``order_disagrees``: on its partition, an earlier offset of the same conversation
      carries a later ``event_time`` (the event was written after one it precedes);
    - ``several_partitions``: the conversation's events appear on more than one partition
      (its key changed, partitions were added, or a producer used another partitioner);
    - ``partitions_seen``: how many partitions the conversation's events are on.
    Rows without a conversation id (payload or key) are left unflagged.
    """
    out = events.copy()
    conv = out["conversation_id"].fillna(out["key"])
    order = out.assign(_conv=conv).sort_values(["_conv", "partition", "offset"], kind="stable")
    keys = [order["_conv"], order["partition"]]
    prior_max = order.groupby(keys, dropna=True)["event_time"].cummax().groupby(keys, dropna=True).shift(1)
    disagrees = (order["event_time"] < prior_max).fillna(False)
    out["order_disagrees"] = disagrees.reindex(out.index).fillna(False).astype("boolean")
    seen = out.assign(_conv=conv).groupby("_conv", dropna=True)["partition"].transform("nunique")
    out["partitions_seen"] = seen.astype("Int64")
    out["several_partitions"] = (seen > 1).fillna(False).astype("boolean")
    return out


# ---- consumer lag --------------------------------------------------------------------------

def group_topics(profile: Profile) -> dict[str, list[str]]:
    """Consumer group -> the topics it is expected to consume (router: message events;
    a channel connector group: that channel's outbound topic)."""
    kafka = profile.kafka
    out: dict[str, list[str]] = {kafka.router_group: [kafka.message_events.name]}
    for channel, group in (kafka.consumer_groups.get("connectors") or {}).items():
        topic = kafka.outbound_for(channel)
        out.setdefault(group, [])
        if topic:
            out[group].append(topic.name)
    return out


def consumer_lag(groups: dict[str, list[str]], *, bootstrap: str | None = None, limits: Limits = DEFAULT_LIMITS,
                 admin=None) -> pd.DataFrame:
    """One lag snapshot -> canonical ``consumer_lag`` rows.

    ``groups`` maps a group to its expected topics: every partition the group committed on
    any topic is reported, plus every partition of its expected topics (``committed_offset``
    null where the group has never committed). ``lag = end_offset - committed_offset``
    with the high watermark as end offset; it is negative if the group's committed offset
    is beyond the log end (topic recreated or truncated), which is kept as seen.
    Read-only: ``list_consumer_group_offsets`` and ``list_offsets`` only.
    """
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    servers = bootstrap_servers(bootstrap)
    admin = admin or open_admin(servers, limits)
    present = _cluster_topics(admin, servers, limits)
    committed: dict[tuple[str, str, int], int | None] = {}
    for group, topics in groups.items():
        try:
            fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                    request_timeout=limits.timeout_s)[group]
            result = fut.result(timeout=limits.timeout_s)
        except KafkaException as exc:
            raise SourceError(SOURCE, f"list_consumer_group_offsets({group}) failed: {exc}") from exc
        for tp in result.topic_partitions or ():
            committed[(group, tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
        for t in topics:
            for p in range(present.get(t, 0)):
                committed.setdefault((group, t, p), None)
    sampled_at = utcnow()
    wanted = sorted({(t, p) for _g, t, p in committed if t in present})
    ends: dict[tuple[str, int], int] = {}
    if wanted:
        futures = admin.list_offsets({TopicPartition(t, p): OffsetSpec.latest() for t, p in wanted},
                                     request_timeout=limits.timeout_s)
        for tp, fut in futures.items():
            try:
                ends[(tp.topic, tp.partition)] = fut.result(timeout=limits.timeout_s).offset
            except KafkaException as exc:
                raise SourceError(SOURCE, f"list_offsets({tp.topic}[{tp.partition}]) failed: {exc}") from exc
    rows = []
    for (g, t, p), c in sorted(committed.items()):
        end = ends.get((t, p))
        rows.append({"sampled_at": sampled_at, "group": g, "topic": t, "partition": p, "committed_offset": c,
                     "end_offset": end, "lag": end - c if end is not None and c is not None else None,
                     "source": SOURCE, "source_object": t, "source_ref": f"{g}/{t}[{p}]"})
    return conform("consumer_lag", pd.DataFrame(rows) if rows else None)


def sample_consumer_lag(groups: dict[str, list[str]], *, samples: int = 1, interval_s: float = 10.0,
                        bootstrap: str | None = None, limits: Limits = DEFAULT_LIMITS) -> pd.DataFrame:
    """``samples`` lag snapshots ``interval_s`` seconds apart, concatenated (``consumer_lag`` rows)."""
    if samples < 1:
        raise ValueError("samples must be at least 1")
    servers = bootstrap_servers(bootstrap)
    admin = open_admin(servers, limits)
    frames = []
    for i in range(samples):
        if i:
            time.sleep(interval_s)
        frames.append(consumer_lag(groups, bootstrap=servers, limits=limits, admin=admin))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def lag_band(lag: pd.Series) -> pd.Series:
    """Runbook bands per lag value: ``normal`` (< 100), ``elevated`` (100..1000), ``problem`` (> 1000)."""
    lag = lag.astype("Int64")
    band = pd.Series(pd.array([None] * len(lag), dtype="string"), index=lag.index)
    band[lag < LAG_NORMAL] = "normal"
    band[(lag >= LAG_NORMAL) & (lag <= LAG_PROBLEM)] = "elevated"
    band[lag > LAG_PROBLEM] = "problem"
    return band


def lag_trend(lag: pd.DataFrame) -> pd.DataFrame:
    """Whether each group's lag on each topic grows or drains over the samples.

    Per group and topic, the lag summed over partitions at each ``sampled_at`` is fitted
    with a least-squares line; its change over the sampled span (slope x span) says
    ``growing`` (> +0.5 messages), ``draining`` (< -0.5) or ``steady``; one sample gives
    ``single sample``. Columns: group, topic, samples, first_sampled_at, last_sampled_at,
    first_lag, last_lag, slope_per_s (messages/second), trend, band (of the last lag).
    """
    cols = ["group", "topic", "samples", "first_sampled_at", "last_sampled_at", "first_lag", "last_lag",
            "slope_per_s", "trend", "band"]
    if lag.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    totals = (lag.groupby(["group", "topic", "sampled_at"], observed=True)["lag"].sum(min_count=1)
              .reset_index().sort_values("sampled_at"))
    rows = []
    for (g, t), s in totals.groupby(["group", "topic"], sort=True):
        s = s.dropna(subset=["lag"])
        first = s.iloc[0] if len(s) else None
        last = s.iloc[-1] if len(s) else None
        slope, trend = float("nan"), "no committed offsets"
        if len(s) == 1:
            trend = "single sample"
        elif len(s) > 1:
            x = (s["sampled_at"] - s["sampled_at"].iloc[0]).dt.total_seconds().to_numpy()
            y = s["lag"].astype("float64").to_numpy()
            slope = float(np.polyfit(x, y, 1)[0]) if x[-1] > 0 else 0.0
            change = slope * x[-1]
            trend = "growing" if change > 0.5 else "draining" if change < -0.5 else "steady"
        rows.append({"group": g, "topic": t, "samples": len(s),
                     "first_sampled_at": first["sampled_at"] if first is not None else pd.NaT,
                     "last_sampled_at": last["sampled_at"] if last is not None else pd.NaT,
                     "first_lag": first["lag"] if first is not None else None,
                     "last_lag": last["lag"] if last is not None else None,
                     "slope_per_s": slope, "trend": trend})
    out = pd.DataFrame(rows)
    out["first_lag"] = out["first_lag"].astype("Int64")
    out["last_lag"] = out["last_lag"].astype("Int64")
    out["band"] = lag_band(out["last_lag"])
    return out[cols]


# ---- topic inventory -----------------------------------------------------------------------

def _roles(profile: Profile) -> list[tuple[str, Topic]]:
    kafka = profile.kafka
    roles = [("message_events", kafka.message_events), *(("outbound", t) for t in kafka.outbound)]
    if kafka.status_updates:
        roles.append(("status_updates", kafka.status_updates))
    return roles + [("dlq", t) for t in kafka.dlq]


def topic_inventory(profile: Profile, *, bootstrap: str | None = None, limits: Limits = DEFAULT_LIMITS
                    ) -> pd.DataFrame:
    """The profile's expected topics against the cluster (runbook 1.2 / R1.2).

    One row per expected topic: topic, role (message_events, outbound, status_updates,
    dlq), channel, present, expected_partitions, partitions (null when missing),
    partitions_match, retention_ms (``retention.ms``; -1 = unlimited), cleanup_policy.
    Read-only: ``list_topics`` and ``describe_configs``.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import ConfigResource, ResourceType

    servers = bootstrap_servers(bootstrap)
    admin = open_admin(servers, limits)
    present = _cluster_topics(admin, servers, limits)
    configs: dict[str, dict[str, str | None]] = {}
    names = [t.name for _r, t in _roles(profile) if t.name in present]
    if names:
        futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in names],
                                         request_timeout=limits.timeout_s)
        for res, fut in futures.items():
            try:
                entries = fut.result(timeout=limits.timeout_s)
            except KafkaException as exc:
                raise SourceError(SOURCE, f"describe_configs({res.name}) failed: {exc}") from exc
            configs[res.name] = {k: (e.value if e is not None else None) for k, e in
                                 ((k, entries.get(k)) for k in ("retention.ms", "cleanup.policy"))}
    rows = []
    for role, t in _roles(profile):
        actual = present.get(t.name)
        cfg = configs.get(t.name, {})
        retention = cfg.get("retention.ms")
        rows.append({"topic": t.name, "role": role, "channel": t.channel, "present": actual is not None,
                     "expected_partitions": t.partitions, "partitions": actual,
                     "partitions_match": None if actual is None else actual == t.partitions,
                     "retention_ms": int(retention) if retention not in (None, "") else None,
                     "cleanup_policy": cfg.get("cleanup.policy")})
    out = pd.DataFrame(rows)
    for c, dtype in {"topic": "string", "role": "string", "channel": "string", "present": "boolean",
                     "expected_partitions": "Int64", "partitions": "Int64", "partitions_match": "boolean",
                     "retention_ms": "Int64", "cleanup_policy": "string"}.items():
        out[c] = out[c].astype(dtype)
    return out


# ---- partitions of keys --------------------------------------------------------------------

def runbook_md5_partition(key: str | bytes, partitions: int) -> int:
    """Runbook step 4.2's formula, ``int(md5(key)[:8], 16) % partitions`` (not what Kafka does)."""
    data = key.encode("utf-8") if isinstance(key, str) else key
    return int(md5(data, usedforsecurity=False).hexdigest()[:8], 16) % partitions


def partition_for(key: str | bytes, partitions: int) -> dict[str, Any]:
    """The partition Kafka's default partitioner (murmur2) gives ``key``, and the runbook's md5 one.

    Returns ``{"partition", "runbook_md5_partition", "agrees"}``; ``agrees`` False means the
    runbook's step 4.2 names the wrong partition for this key. Note for producers in Python:
    librdkafka's default partitioner is ``consistent_random`` (CRC32); only
    ``partitioner='murmur2_random'`` matches the Java client used by the platform.
    """
    actual = partitioner.partition_for(key, partitions)
    runbook = runbook_md5_partition(key, partitions)
    return {"partition": actual, "runbook_md5_partition": runbook, "agrees": actual == runbook}


# ---- the evidence source -------------------------------------------------------------------

def collect(request: CollectRequest) -> SourceResult:
    """DLQ records and one consumer-lag snapshot (or ``samples`` of them) for the request window.

    Options: ``bootstrap`` (else FORENSICS_KAFKA_BOOTSTRAP), ``samples`` (1) and
    ``interval_s`` (10) for lag, ``max_records`` and ``timeout_s`` (config Limits),
    ``max_payload_bytes``. The description carries the topic inventory (``topics``) and the
    expected topics the cluster lacks (``missing_topics``, runbook R1.2).
    """
    opts = request.options
    servers = bootstrap_servers(opts.get("bootstrap"))
    limits = Limits(max_rows=int(opts.get("max_records") or DEFAULT_LIMITS.max_rows),
                    timeout_s=float(opts.get("timeout_s") or DEFAULT_LIMITS.timeout_s))
    max_payload = int(opts.get("max_payload_bytes") or MAX_PAYLOAD_BYTES)
    samples, interval = int(opts.get("samples") or 1), float(opts.get("interval_s") or 10.0)
    profile = request.profile

    inventory = topic_inventory(profile, bootstrap=servers, limits=limits)
    missing = inventory.loc[~inventory["present"].astype(bool), "topic"].tolist()
    dlq = read_dlq(profile, request.window, bootstrap=servers, limits=limits, max_payload_bytes=max_payload,
                   progress=request.progress)
    groups = group_topics(profile)
    lag = sample_consumer_lag(groups, samples=samples, interval_s=interval, bootstrap=servers, limits=limits)

    from forensics.credentials import host_of

    inventory_rows = [{k: (None if pd.isna(v) else v) for k, v in row.items()}
                      for row in inventory.astype(object).to_dict("records")]
    description = {
        "kind": SOURCE,
        "bootstrap": ",".join(host_of(f"kafka://{s.strip()}") for s in servers.split(",")),
        "missing_topics": missing,
        "topics": inventory_rows,
        "dlq": dlq.describe(),
        "lag": {"groups": groups, "samples": samples, "interval_s": interval},
    }
    if dlq.truncated:
        description["notes"] = [f"dlq_records truncated: {dlq.truncated}"]
    queries = {
        "dlq_records": {"topics": [t.name for t in profile.kafka.dlq], "window": request.window.to_dict(),
                        "ranges": dlq.ranges, "max_records": limits.max_rows, "timeout_s": limits.timeout_s},
        "consumer_lag": {"groups": groups, "samples": samples, "interval_s": interval},
    }
    return SourceResult(tables={"dlq_records": dlq.frame, "consumer_lag": lag}, description=description,
                        queries=queries)
