"""Kafka records into canonical columns: DLQ records and message events, decoded without losing one.

Payloads are decoded into the canonical columns for both event shapes (camelCase
``messageId``/``conversationId``/``eventType`` of the deployed code, snake_case
``message_id``/``conversation_id``/``event_type`` of the runbook's replay); the payload
``timestamp`` may be epoch seconds (decimal) or milliseconds. A payload that does not
decode (not UTF-8, not JSON, not an object, over the size cap) is kept raw, as text or
hex, with ``decode_error`` saying why: a DLQ record is never dropped. Spring's
dead-letter headers (``kafka_dlt-*``) become the DLQ columns.

Columns go to Arrow arrays (one comprehension per message field; payloads of a
well-formed batch are parsed at once by Arrow's JSON reader, exact stdlib fallback
otherwise), then one DataFrame. Both readers use this module: confluent-kafka
(:mod:`forensics.sources.kafka`) and the native one (:mod:`forensics.sources.kafka_native`).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from forensics.schema import DLQ_RECORDS, conform, storable_text
from forensics.timeutil import coerce_timestamps

SOURCE = "kafka"

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
PAYLOAD_KEYS = {
    "message_id": ("messageId", "message_id"),
    "conversation_id": ("conversationId", "conversation_id"),
    "channel": ("channel",),
    "event_type": ("eventType", "event_type"),
}
PAYLOAD_TIME_KEY = "timestamp"


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


def field_text(value: Any) -> str | None:
    """A payload field as text: strings as they are, other JSON values as compact JSON.

    A lone surrogate (JSON allows ``"\\ud800"``; UTF-8 cannot hold it) becomes U+FFFD.
    """
    if value is None:
        return None
    return storable_text(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))


def utc_times(values: list[Any] | np.ndarray) -> pa.Array:
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


def ms_times(values: Sequence[int | None] | np.ndarray, missing: np.ndarray | None = None) -> pa.Array:
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


_FAST_SCHEMA = pa.schema([(k, pa.string()) for keys in PAYLOAD_KEYS.values() for k in keys]
                         + [(PAYLOAD_TIME_KEY, pa.float64())])


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
    cols = {name: pc.coalesce(*(parsed[k].combine_chunks() for k in keys)) for name, keys in PAYLOAD_KEYS.items()}
    cols["event_time"] = utc_times(parsed[PAYLOAD_TIME_KEY].to_numpy())
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
    cols: dict[str, list[Any]] = {c: [None] * n for c in (*PAYLOAD_KEYS, "event_time", "payload", "decode_error")}
    mid, cid, chan, etype, etime = (cols[c] for c in (*PAYLOAD_KEYS, "event_time"))
    payload, err = cols["payload"], cols["decode_error"]
    for i, v in enumerate(values):
        d = decode_payload(v, max_bytes)
        payload[i], err[i] = d.text, d.error
        f = d.fields
        if f:
            for column, keys in zip((mid, cid, chan, etype), PAYLOAD_KEYS.values(), strict=True):
                column[i] = field_text(next((f[k] for k in keys if f.get(k) is not None), None))
            etime[i] = f.get(PAYLOAD_TIME_KEY)
    out = {c: pa.array(v, pa.string()) for c, v in cols.items() if c != "event_time"}
    out["event_time"] = utc_times(etime)
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
        "original_timestamp": ms_times(dlt["original_timestamp"]),
        "exception_class": pa.array(dlt["exception_class"], pa.string()),
        "exception_message": pa.array(dlt["exception_message"], pa.string()),
    }


def _record_columns(raw: RawBatch) -> dict[str, pa.Array]:
    """Columns every record has: topic, partition, offset, timestamp, key."""
    ts = np.asarray(raw.timestamp_ms, dtype="int64")
    return {"topic": pa.array(raw.topic, pa.string()), "partition": pa.array(raw.partition, pa.int64()),
            "offset": pa.array(raw.offset, pa.int64()),
            "timestamp": ms_times(ts, missing=ts < 0), "key": _texts(raw.key)}


def raw_columns(raw: RawBatch, headers: bool, max_bytes: int) -> dict[str, pa.Array]:
    """Decoded columns of one batch of records read through confluent-kafka (the reference
    decoding; the native reader's batches give the same columns)."""
    cols = _record_columns(raw)
    if headers:
        cols.update(_headers(raw.headers))
    cols.update(_payloads(raw.value, max_bytes))
    return cols


def dlq_batch(cols: dict[str, pa.Array], channel_of: dict[str, str]) -> pa.RecordBatch:
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


def arrow_frame(batches: list[pa.RecordBatch], table: str | None, empty: Callable[[], pd.DataFrame]) -> pd.DataFrame:
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
    batches = [dlq_batch(raw_columns(RawBatch.from_records(records[i:i + BATCH]), True, max_payload_bytes),
                          channel_of or {})
               for i in range(0, len(records), BATCH)]
    return arrow_frame(batches, "dlq_records", lambda: conform("dlq_records"))


EVENT_COLUMNS = ("topic", "partition", "offset", "timestamp", "key", "message_id", "conversation_id",
                 "event_type", "event_time", "decode_error")


def event_batch(cols: dict[str, pa.Array]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({c: cols[c] for c in EVENT_COLUMNS})


def empty_events() -> pd.DataFrame:
    dtypes = {"partition": "Int64", "offset": "Int64", "timestamp": "datetime64[ns, UTC]",
              "event_time": "datetime64[ns, UTC]"}
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, "string")) for c in EVENT_COLUMNS})


def event_frame(records: Iterable[KafkaRecord], *, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> pd.DataFrame:
    """Records of the message events topic -> one row per event (columns ``EVENT_COLUMNS``)."""
    records = list(records)
    batches = [event_batch(raw_columns(RawBatch.from_records(records[i:i + BATCH]), False, max_payload_bytes))
               for i in range(0, len(records), BATCH)]
    return normalise_events(arrow_frame(batches, None, empty_events))


def normalise_events(frame: pd.DataFrame) -> pd.DataFrame:
    for c in ("timestamp", "event_time"):
        frame[c] = frame[c].astype("datetime64[ns, UTC]")
    return frame
