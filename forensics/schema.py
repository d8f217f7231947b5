"""The canonical evidence schema: every table the toolkit reads, derives or reports.

Every evidence source (MongoDB, Kafka, Jaeger, logs, PostgreSQL, Redis, the simulator,
an evidence bundle) returns DataFrames in exactly these shapes, and every analysis step
consumes them. One table, one declaration: column name, pandas dtype, unit, meaning.

Conventions
- Every timestamp is a tz-aware UTC ``datetime64[ns, UTC]``.
- Durations carry their unit in the column name (``duration_ms``, ``ttl_s``).
- Strings use pandas' nullable ``string`` dtype, integers ``Int64``, flags ``boolean``,
  so that a missing field is ``<NA>``, never a crash and never a fake zero.
- Rows that come from evidence keep where they came from in three provenance columns:
  ``source`` (mongodb, kafka, jaeger, logs, postgres, redis, prometheus),
  ``source_object`` (collection, topic, file or key pattern) and ``source_ref``
  (document id, ``partition:offset``, line number, key).
- Columns holding nested data (headers, tags, evidence references) hold JSON text, so
  that Parquet files stay flat and readable by any tool.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from forensics.errors import SchemaError

UTC_TS = "datetime64[ns, UTC]"
STR = "string"
INT = "Int64"
FLOAT = "float64"
BOOL = "boolean"

STATUSES = ("PENDING", "SENT", "DELIVERED", "READ", "FAILED", "RECEIVED", "UNKNOWN")
"""Message statuses in forward order; RECEIVED is inbound-only in the deployed code, UNKNOWN marks a
value outside this vocabulary (the document itself stays referenced by source_ref)."""

PLATFORMS = ("WHATSAPP", "TELEGRAM", "INSTAGRAM")
"""The external messaging platforms a connector delivers to."""
CHANNELS = (*PLATFORMS, "INTERNAL")
"""Every delivery channel: the platforms and Chat4All's own INTERNAL one."""
SEVERITIES = ("info", "warning", "critical")
CHANGES = ("new", "worse", "unchanged", "better")
"""Verdicts of a finding against its baseline (forensics.analysis.change)."""


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str
    description: str
    unit: str = ""
    required: bool = True
    """A required column must be present; its values may still be null unless ``nullable`` is False."""
    nullable: bool = True


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    time_column: str | None = None
    evidence: bool = True
    """Evidence tables carry the provenance columns; derived tables (findings, ...) do not."""
    _by_name: dict[str, Column] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name.update({c.name: c for c in self.columns})

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def dtypes(self) -> dict[str, str]:
        return {c.name: c.dtype for c in self.columns}

    def column(self, name: str) -> Column:
        return self._by_name[name]


def _c(name: str, dtype: str, description: str, unit: str = "", nullable: bool = True) -> Column:
    return Column(name, dtype, description, unit, nullable=nullable)


PROVENANCE = (
    _c("source", STR, "evidence source: mongodb, kafka, jaeger, logs, postgres, redis, prometheus", nullable=False),
    _c("source_object", STR, "collection, topic, file or key pattern the row was read from"),
    _c("source_ref", STR, "document id, partition:offset, line number or key within source_object"),
)


def _evidence(name: str, description: str, columns: list[Column], key=(), time_column=None) -> Table:
    return Table(name, description, tuple(columns) + PROVENANCE, tuple(key), time_column, True)


def _derived(name: str, description: str, columns: list[Column], key=(), time_column=None) -> Table:
    return Table(name, description, tuple(columns), tuple(key), time_column, False)


MESSAGES = _evidence(
    "messages",
    "One row per message document (MongoDB messages collection).",
    [
        _c("message_id", STR, "message UUID", nullable=False),
        _c("conversation_id", STR, "conversation the message belongs to"),
        _c("sender_id", STR, "Chat4All user id of the sender"),
        _c("recipient_id", STR, "first recipient id (platform id: E.164, handle, chat id)"),
        _c("recipient_count", INT, "number of recipients in recipient_ids[]"),
        _c("channel", STR, "WHATSAPP, TELEGRAM, INSTAGRAM or INTERNAL"),
        _c("content_type", STR, "TEXT, FILE, IMAGE, VIDEO, AUDIO, DOCUMENT, ..."),
        _c("content", STR, "message text (personal data: redacted in exports)"),
        _c("content_length", INT, "length of content", "characters"),
        _c("file_id", STR, "attached file id, if any"),
        _c("file_size", INT, "attached file size from the files collection", "bytes"),
        _c("status", STR, "current status (status or state field)"),
        _c("created_at", UTC_TS, "creation time (created_at, else timestamp)", "UTC"),
        _c("updated_at", UTC_TS, "last update time", "UTC"),
        _c("retry_count", INT, "delivery retries (top-level or metadata.retry_count)"),
        _c("error_message", STR, "failure reason (top-level or metadata.error_message)"),
        _c("error_field", STR, "where the document kept its error: top-level, metadata or null"),
        _c("platform_message_id", STR, "id the external platform gave the message"),
    ],
    key=("message_id",),
    time_column="created_at",
)

STATUS_EVENTS = _evidence(
    "status_events",
    "One row per status transition. The initial PENDING, which the deployed platform never "
    "writes to message_status_history, is derived from the message's creation (derived=True).",
    [
        _c("message_id", STR, "message UUID", nullable=False),
        _c("conversation_id", STR, "conversation id"),
        _c("channel", STR, "channel of the message"),
        _c("old_status", STR, "status before the transition (null for the first)"),
        _c("new_status", STR, "status after the transition", nullable=False),
        _c("timestamp", UTC_TS, "time of the transition", "UTC", nullable=False),
        _c("updated_by", STR, "service that wrote the transition"),
        _c("error_message", STR, "error recorded with the transition"),
        _c("derived", BOOL, "True when inferred (initial PENDING) rather than read", nullable=False),
    ],
    key=("message_id", "timestamp", "new_status"),
    time_column="timestamp",
)

DLQ_RECORDS = _evidence(
    "dlq_records",
    "One row per dead-letter-queue record; undecodable payloads kept raw with decode_error.",
    [
        _c("topic", STR, "DLQ topic", nullable=False),
        _c("partition", INT, "partition", nullable=False),
        _c("offset", INT, "offset within the partition", nullable=False),
        _c("timestamp", UTC_TS, "Kafka record timestamp", "UTC"),
        _c("key", STR, "record key (UTF-8, else hex)"),
        _c("headers", STR, "all headers as a JSON object of decoded strings"),
        _c("original_topic", STR, "kafka_dlt-original-topic"),
        _c("original_partition", INT, "kafka_dlt-original-partition"),
        _c("original_offset", INT, "kafka_dlt-original-offset"),
        _c("original_timestamp", UTC_TS, "kafka_dlt-original-timestamp", "UTC"),
        _c("exception_class", STR, "kafka_dlt-exception-fqcn"),
        _c("exception_message", STR, "kafka_dlt-exception-message"),
        _c("message_id", STR, "messageId / message_id from the payload"),
        _c("conversation_id", STR, "conversationId / conversation_id from the payload"),
        _c("channel", STR, "channel from the payload"),
        _c("event_type", STR, "eventType / event_type from the payload"),
        _c("event_time", UTC_TS, "timestamp inside the payload", "UTC"),
        _c("payload", STR, "payload text as received (UTF-8, else hex)"),
        _c("payload_bytes", INT, "payload size", "bytes"),
        _c("decode_error", STR, "why the payload could not be parsed, else null"),
    ],
    key=("topic", "partition", "offset"),
    time_column="timestamp",
)

SPANS = _evidence(
    "spans",
    "One row per tracing span (Jaeger v1 JSON, api/v3 OTLP JSON, or files).",
    [
        _c("trace_id", STR, "32 lowercase hex characters; null when a file's value cannot be read (see warnings)"),
        _c("span_id", STR, "16 lowercase hex characters; null when a file's value cannot be read (see warnings)"),
        _c("parent_span_id", STR, "parent span id by Jaeger's rule (first CHILD_OF reference into the same trace, "
                                  "else first FOLLOWS_FROM into it), null for roots"),
        _c("parent_ref_type", STR, "CHILD_OF or FOLLOWS_FROM: the reference the parent came from"),
        _c("service", STR, "service name (process serviceName / service.name)"),
        _c("operation", STR, "operation name"),
        _c("kind", STR, "server, client, producer, consumer, internal"),
        _c("start", UTC_TS, "span start; null when a file's value cannot be read (see warnings)", "UTC"),
        _c("duration_ms", FLOAT, "span duration; null when not given or unreadable", "milliseconds"),
        _c("end", UTC_TS, "span end", "UTC"),
        _c("error", BOOL, "error tag or OTLP status ERROR"),
        _c("status_message", STR, "otel.status_description or error message"),
        _c("http_method", STR, "http.method / http.request.method"),
        _c("http_route", STR, "http.route / http.url"),
        _c("http_status_code", INT, "http.status_code / http.response.status_code"),
        _c("message_id", STR, "message id tag, where the platform set one"),
        _c("tags", STR, "remaining tags as a JSON object"),
        _c("logs", STR, "span logs/events as a JSON array"),
        _c("warnings", STR, "Jaeger warnings, joined"),
    ],
    key=("trace_id", "span_id"),
    time_column="start",
)

LOG_EVENTS = _evidence(
    "log_events",
    "One row per service log line (logback JSON or plain text); unparseable lines kept raw.",
    [
        _c("timestamp", UTC_TS, "log time", "UTC"),
        _c("service", STR, "service (app_name or container)"),
        _c("level", STR, "ERROR, WARN, INFO, DEBUG, TRACE"),
        _c("logger", STR, "logger name"),
        _c("thread", STR, "thread name"),
        _c("message", STR, "log message"),
        _c("stack_trace", STR, "stack trace, if any"),
        _c("message_id", STR, "message id mentioned in the line"),
        _c("conversation_id", STR, "conversation id mentioned in the line"),
        _c("http_status", INT, "HTTP status mentioned (status=NNN)"),
        _c("rate_limit", STR, "X-RateLimit-* / Retry-After values mentioned, as JSON"),
        _c("raw", STR, "the original line"),
        _c("parse_error", STR, "why the line could not be parsed, else null"),
    ],
    time_column="timestamp",
)

CONSUMER_LAG = _evidence(
    "consumer_lag",
    "One row per consumer group, topic and partition per sample.",
    [
        _c("sampled_at", UTC_TS, "snapshot time", "UTC", nullable=False),
        _c("group", STR, "consumer group", nullable=False),
        _c("topic", STR, "topic", nullable=False),
        _c("partition", INT, "partition", nullable=False),
        _c("committed_offset", INT, "group's committed offset (null: none committed)"),
        _c("end_offset", INT, "high watermark"),
        _c("lag", INT, "end_offset - committed_offset", "messages"),
    ],
    key=("sampled_at", "group", "topic", "partition"),
    time_column="sampled_at",
)

IDENTITIES = _evidence(
    "identities",
    "External identities of recipients (PostgreSQL external_identities joined to users).",
    [
        _c("user_id", STR, "Chat4All user id"),
        _c("platform", STR, "WHATSAPP, TELEGRAM, INSTAGRAM", nullable=False),
        _c("platform_user_id", STR, "E.164 number, handle or chat id", nullable=False),
        _c("verified", BOOL, "identity verified"),
        _c("display_name", STR, "user's display name (personal data)"),
        _c("format_valid", BOOL, "platform_user_id has the platform's form (E.164, handle)"),
    ],
    key=("platform", "platform_user_id"),
)

LOCKS = _evidence(
    "locks",
    "Redis keys that steer delivery: conversation locks, idempotency and processed keys.",
    [
        _c("key", STR, "Redis key", nullable=False),
        _c("kind", STR, "conversation_lock, idempotency, processed, ratelimit", nullable=False),
        _c("conversation_id", STR, "conversation id in the key"),
        _c("message_id", STR, "message id in the key"),
        _c("ttl_s", FLOAT, "remaining time to live; null when the key has no expiry", "seconds"),
        _c("value", STR, "key value (truncated)"),
        _c("sampled_at", UTC_TS, "when the key was read", "UTC", nullable=False),
    ],
    key=("key",),
    time_column="sampled_at",
)

TOPICS = _evidence(
    "topics",
    "Kafka topic inventory: the profile's expected topics, present or missing, with partitions and retention.",
    [
        _c("sampled_at", UTC_TS, "when the inventory was taken", "UTC", nullable=False),
        _c("topic", STR, "topic name", nullable=False),
        _c("role", STR, "message_events, outbound, status_updates, dlq, or unexpected"),
        _c("channel", STR, "channel the topic serves, if any"),
        _c("present", BOOL, "topic exists on the cluster", nullable=False),
        _c("expected_partitions", INT, "partitions the profile expects"),
        _c("partitions", INT, "partitions on the cluster"),
        _c("partitions_match", BOOL, "partitions == expected_partitions"),
        _c("retention_ms", INT, "retention.ms (-1 = unlimited)", "milliseconds"),
        _c("cleanup_policy", STR, "cleanup.policy"),
    ],
    key=("sampled_at", "topic"),
    time_column="sampled_at",
)

METRICS = _evidence(
    "metrics",
    "Time series samples (Prometheus range queries, actuator snapshots, simulator).",
    [
        _c("metric", STR, "metric name, e.g. messages_routed_failure_total", nullable=False),
        _c("labels", STR, "series labels as a JSON object (sorted keys), without __name__"),
        _c("timestamp", UTC_TS, "sample time", "UTC", nullable=False),
        _c("value", FLOAT, "sample value (unit per metric; seconds for *_seconds)"),
    ],
    key=("metric", "labels", "timestamp"),
    time_column="timestamp",
)

FINDINGS = _derived(
    "findings",
    "What a detector saw: one row per finding, with references to its evidence rows.",
    [
        _c("finding_id", STR, "stable id: detector plus a discriminator", nullable=False),
        _c("detector", STR, "registered detector name", nullable=False),
        _c("severity", STR, "info, warning, critical", nullable=False),
        _c("title", STR, "one-line statement", nullable=False),
        _c("detail", STR, "explanation with figures"),
        _c("first_seen", UTC_TS, "first moment the condition held", "UTC"),
        _c("last_seen", UTC_TS, "last moment the condition held", "UTC"),
        _c("channel", STR, "channel concerned, null for all"),
        _c("count", INT, "number of evidence rows"),
        _c("metric", FLOAT, "observed value"),
        _c("threshold", FLOAT, "threshold the value was compared against"),
        _c("evidence", STR, "JSON list of {table, column, values} references (capped)"),
        _c("baseline_value", FLOAT, "the same measure over the baseline period (null: no baseline)"),
        _c("change", STR, "against the baseline: new, worse, unchanged, better (null: no baseline)"),
        _c("change_ratio", FLOAT, "window rate / baseline rate (inf: none in the baseline)"),
        _c("onset", UTC_TS, "change point: when the signal's rate rose (null: not within the window)", "UTC"),
    ],
    key=("finding_id",),
    time_column="first_seen",
)

HYPOTHESES = _derived(
    "hypotheses",
    "Root-cause hypotheses ranked most likely first.",
    [
        _c("rank", INT, "1 = most likely", nullable=False),
        _c("cause", STR, "cause identifier (same vocabulary as scenario.root_cause)", nullable=False),
        _c("title", STR, "cause in words", nullable=False),
        _c("confidence", FLOAT, "calibrated probability that this is the cause (simulator incident mix)", "0..1"),
        _c("margin", FLOAT, "confidence minus the next hypothesis' (the top one: its lead over the runner-up)",
           "0..1"),
        _c("evidence_for", STR, "JSON list of finding ids and statements supporting it"),
        _c("evidence_against", STR, "JSON list of statements against it"),
        _c("first_seen", UTC_TS, "first moment its evidence shows on the timeline", "UTC"),
        _c("messages_affected", INT, "blast radius: messages"),
        _c("conversations_affected", INT, "blast radius: conversations"),
        _c("channels_affected", STR, "blast radius: channels, comma separated"),
        _c("customers_affected", INT, "blast radius: distinct recipients"),
        _c("runbook_step", STR, "runbook resolution step (R1.1 .. R4.2)"),
        _c("recommended_action", STR, "what to do next"),
    ],
    key=("cause",),
)

TIMELINE = _derived(
    "timeline",
    "One ordered timeline across all sources; each event points back to its evidence.",
    [
        _c("timestamp", UTC_TS, "when", "UTC", nullable=False),
        _c("lane", STR, "swimlane: messages, kafka, traces, logs, redis, findings, ...", nullable=False),
        _c("severity", STR, "info, warning, critical", nullable=False),
        _c("kind", STR, "event kind, e.g. first_failure, finding, error_log", nullable=False),
        _c("summary", STR, "what happened", nullable=False),
        _c("source", STR, "evidence source"),
        _c("source_object", STR, "collection, topic, file"),
        _c("source_ref", STR, "row reference"),
    ],
    time_column="timestamp",
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        MESSAGES,
        STATUS_EVENTS,
        DLQ_RECORDS,
        SPANS,
        LOG_EVENTS,
        CONSUMER_LAG,
        IDENTITIES,
        LOCKS,
        TOPICS,
        METRICS,
        FINDINGS,
        HYPOTHESES,
        TIMELINE,
    )
}
EVIDENCE_TABLES = tuple(name for name, t in TABLES.items() if t.evidence)


def table(name: str) -> Table:
    """The declaration of table ``name``; a SchemaError names the known tables otherwise."""
    try:
        return TABLES[name]
    except KeyError:
        raise SchemaError(name, None, f"unknown table; known: {', '.join(TABLES)}") from None


def empty(name: str) -> pd.DataFrame:
    """An empty DataFrame with the table's columns and dtypes."""
    t = table(name)
    return pd.DataFrame({c.name: pd.Series(dtype=c.dtype) for c in t.columns})


NULL_CHUNK_ROWS = 1 << 20
"""Rows of the one Arrow chunk every all-null (or one-valued) text column is made of."""


def nulls(dtype: str, n: int) -> pd.Series:
    """An all-null column of ``n`` rows (no list of n Nones). A text column is slices of one
    shared Arrow chunk of nulls, so a column left unread (a lean read of millions of
    messages) costs no memory whatever ``n``."""
    if dtype != STR or not n:
        return pd.Series(index=pd.RangeIndex(n), dtype=dtype)
    return repeated_text(None, n)


def arrow_text(values: pd.Series) -> pa.ChunkedArray:
    """A text column as Arrow ``large_string`` chunks: the column's own buffers when it is
    already Arrow-backed text (no copy: a copy of 10M message ids is 440 MB), else converted."""
    array = values.array
    if isinstance(array, pd.arrays.ArrowStringArray) and array._pa_array.type == pa.large_string():
        return array._pa_array
    return pa.chunked_array([pa.array(values.astype(STR).array, type=pa.large_string())], type=pa.large_string())


def take_text(values: pd.Series, positions: np.ndarray) -> pd.Series:
    """``values.iloc[positions]`` (a default index) for Arrow-backed text, taken chunk by chunk:
    Arrow's take over a chunked column first joins its chunks (a copy of the whole column per
    call: 20 ms at 1M message ids, for the 200 a finding names), this touches only the rows asked."""
    positions = np.asarray(positions, dtype=np.int64)
    array = values.array
    if not isinstance(array, pd.arrays.ArrowStringArray) or array._pa_array.num_chunks < 2:
        return values.iloc[positions].reset_index(drop=True)
    chunks = array._pa_array.chunks
    bounds = np.cumsum([0] + [len(c) for c in chunks])
    which = np.searchsorted(bounds, positions, side="right") - 1
    order = np.argsort(which, kind="stable")
    parts = [chunks[k].take(pa.array(positions[order][which[order] == k] - bounds[k])) for k in np.unique(which)]
    taken = pa.chunked_array(parts, type=array._pa_array.type) if parts else pa.chunked_array([], array._pa_array.type)
    back = np.empty(len(positions), dtype=np.int64)
    back[order] = np.arange(len(positions))
    return pd.Series(pd.arrays.ArrowStringArray(taken.take(pa.array(back)) if len(positions) else taken))


def repeated_text(value: str | None, n: int) -> pd.Series:
    """A text column holding ``value`` (None: null) on each of its ``n`` rows, made of slices of
    one shared Arrow chunk: a column with one value throughout (``source``, ``source_object``
    of a table read from one collection) costs one chunk, not ``n`` strings."""
    rows = max(min(n, NULL_CHUNK_ROWS), 1)
    chunk = (pa.nulls(rows, pa.large_string()) if value is None
             else pa.repeat(pa.scalar(value, pa.large_string()), rows))
    parts = [chunk] * (n // rows) + ([chunk.slice(0, n % rows)] if n % rows else [])
    return pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array(parts, type=pa.large_string())))


def same_dtype(actual, declared: str) -> bool:
    """Exact dtype identity (pandas 3 treats "str" and "string" as equal; we do not)."""
    return str(actual) == str(pd.api.types.pandas_dtype(declared))


def storable_text(text: str) -> str:
    """``text`` as the canonical ``string`` dtype can hold it: a lone surrogate (JSON allows
    ``"\\ud800"``; UTF-8, Arrow and Parquet cannot hold it) becomes U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def to_utc(values: pd.Series) -> pd.Series:
    """Coerce a Series of datetimes (naive = UTC, or any timezone) to datetime64[ns, UTC]."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").astype(UTC_TS)
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize("UTC").astype(UTC_TS)
    return pd.to_datetime(values, utc=True, errors="coerce", format="mixed").astype(UTC_TS)


def conform(name: str, frame: pd.DataFrame | Mapping[str, object] | None = None) -> pd.DataFrame:
    """Return ``frame`` with exactly the table's columns, in order, cast to the declared dtypes.

    Missing optional columns become all-null; extra columns are dropped. Use this at the
    end of every loader so that a source can never hand the analysis a foreign shape.
    """
    t = table(name)
    if frame is None:
        return empty(name)
    df = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)
    n = len(df)
    out: dict[str, pd.Series] = {}
    for c in t.columns:
        if c.name in df.columns:
            s = df[c.name]
            try:
                if c.dtype == UTC_TS:
                    s = to_utc(s)
                elif not same_dtype(s.dtype, c.dtype):
                    s = s.astype(c.dtype)
            except (TypeError, ValueError) as exc:
                raise SchemaError(name, c.name, f"cannot convert {s.dtype} to {c.dtype}: {exc}") from exc
            out[c.name] = s.reset_index(drop=True)
        else:
            out[c.name] = nulls(c.dtype, n)
    return pd.DataFrame(out, copy=False)


def validate(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Check ``frame`` against the declaration; raise SchemaError(table, column, problem).

    Checks: every declared column present, dtype exactly as declared, timestamps tz-aware
    UTC, non-nullable columns without nulls, statuses/severities from their vocabularies.
    Returns the frame unchanged so calls can be chained.
    """
    t = table(name)
    if not isinstance(frame, pd.DataFrame):
        raise SchemaError(name, None, f"expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in t.names if c not in frame.columns]
    if missing:
        raise SchemaError(name, missing[0], f"missing column(s): {', '.join(missing)}")
    extra = [c for c in frame.columns if c not in t.names]
    if extra:
        raise SchemaError(name, str(extra[0]), f"unexpected column(s): {', '.join(map(str, extra))}")
    for c in t.columns:
        s = frame[c.name]
        if not same_dtype(s.dtype, c.dtype):
            raise SchemaError(name, c.name, f"dtype is {s.dtype}, expected {c.dtype}")
        if not c.nullable and s.isna().any():
            first = int(s.isna().to_numpy().argmax())
            raise SchemaError(name, c.name, f"null value at row {first} in a non-nullable column")
    vocab = {
        ("messages", "status"): STATUSES,
        ("status_events", "new_status"): STATUSES,
        ("status_events", "old_status"): STATUSES,
        ("findings", "severity"): SEVERITIES,
        ("findings", "change"): CHANGES,
        ("timeline", "severity"): SEVERITIES,
    }
    for (tname, col), allowed in vocab.items():
        if tname == name:
            bad = frame[col].dropna()
            bad = bad[~bad.isin(allowed)]
            if len(bad):
                raise SchemaError(name, col, f"value {bad.iloc[0]!r} not in {', '.join(allowed)}")
    return frame


def describe() -> pd.DataFrame:
    """The whole schema as a table (for the README and notebooks)."""
    rows = [
        {"table": t.name, "column": c.name, "dtype": c.dtype, "unit": c.unit, "description": c.description}
        for t in TABLES.values()
        for c in t.columns
    ]
    return pd.DataFrame(rows)
