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

Records become canonical columns in :mod:`forensics.sources.kafka_records` (a payload that does
not decode is kept raw with ``decode_error`` saying why: a DLQ record is never dropped).

Speed: each ``consume()`` batch is turned into columns (one comprehension per message
field), payloads of a well-formed batch are parsed at once by Arrow's JSON reader (exact
stdlib fallback otherwise), and columns go to Arrow arrays, then one DataFrame. What is
left per record is librdkafka's Python layer (``Message.headers()`` alone ~2 us) and the
headers JSON: this reader runs several times slower than kcat (benchmarks/bench_dlq.py).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field, replace
from hashlib import md5
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from forensics.config import DEFAULT_LIMITS, Limits, connection
from forensics.credentials import host_of
from forensics.errors import SourceError
from forensics.profiles import Profile, Topic
from forensics.schema import conform
from forensics.sources import kafka_native, partitioner
from forensics.sources.base import EvidenceSource, Option, Slices, SourceResult, drain
from forensics.sources.kafka_records import (
    BATCH,
    MAX_PAYLOAD_BYTES,
    SOURCE,
    RawBatch,
    arrow_frame,
    dlq_batch,
    empty_events,
    event_batch,
    normalise_events,
    raw_columns,
)
from forensics.timeutil import Window, utcnow

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
        "socket.connection.setup.timeout.ms": _setup_timeout_ms(limits),
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


def _setup_timeout_ms(limits: Limits) -> int:
    """``limits.connect_timeout_s`` in librdkafka's terms: milliseconds, at least its minimum of 1000."""
    return max(1000, int(limits.connect_timeout_s * 1000))


def open_consumer(bootstrap: str, limits: Limits = DEFAULT_LIMITS, **extra: Any):
    from confluent_kafka import Consumer

    return Consumer(consumer_config(bootstrap, limits, **extra))


def open_admin(bootstrap: str, limits: Limits = DEFAULT_LIMITS, **extra: Any):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap, "logger": LIBRDKAFKA_LOG,
                        "socket.connection.setup.timeout.ms": _setup_timeout_ms(limits), **extra})


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


def _scan(consumer, ranges: list[dict[str, Any]], limits: Limits, headers: bool, max_bytes: int,
          finish: Callable[[dict[str, pa.Array]], pa.RecordBatch], progress=None
          ) -> Generator[pa.RecordBatch, None, str | None]:
    """Read every range with assign() (no group join, no commit) through confluent-kafka;
    yield one consume() batch at a time decoded into columns and ``finish``-ed; return why the
    read was truncated, or None. Sets each range's ``records``."""
    from confluent_kafka import KafkaError, TopicPartition

    for r in ranges:
        r["records"] = 0
    todo = {(r["topic"], r["partition"]): r for r in ranges if r["end_offset"] > r["start_offset"]}
    if not todo:
        return None
    ends = {tp: r["end_offset"] for tp, r in todo.items()}
    # consume(n) returns early only once n messages are there: asking for no more than the
    # records still due keeps the last call from idling until its timeout.
    due = sum(r["end_offset"] - r["start_offset"] for r in todo.values())
    consumer.assign([TopicPartition(t, p, r["start_offset"]) for (t, p), r in todo.items()])
    deadline = time.monotonic() + limits.timeout_s
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
            _count_records(ranges, raw)
            if progress:
                progress(f"kafka: {total} records read")
            yield finish(raw_columns(raw, headers, max_bytes))
    consumer.unassign()
    return truncated


def _count_records(ranges: list[dict[str, Any]], raw: RawBatch) -> None:
    """Add to each range's ``records`` how many records of ``raw`` are its."""
    counts = Counter(zip(raw.topic, raw.partition, strict=True))
    for r in ranges:
        r["records"] += counts.get((r["topic"], r["partition"]), 0)


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


SLICE_RECORDS = 50_000
"""DLQ records per slice handed to collection (decoded batches are gathered up to it)."""


def _read_window(bootstrap: str, topics: Sequence[str], window: Window, limits: Limits,
                 decode: Callable[[dict[str, pa.Array]], pa.RecordBatch], headers: bool, max_bytes: int,
                 progress=None) -> Generator[pa.RecordBatch, None, WindowRead]:
    """Offsets for ``window`` (confluent-kafka), then the records, yielded batch by batch as
    they are decoded: natively when the native reader is built (same librdkafka, same
    read-only settings), else through confluent-kafka. Returns what was asked and got (its
    ``frame`` empty)."""
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
            truncated = yield from kafka_native.scan(readers, ranges, limits, headers, max_bytes, decode, progress)
        else:
            truncated = yield from _scan(consumer, ranges, limits, headers, max_bytes, decode, progress)
    finally:
        for reader in readers:
            reader.close()
        consumer.close()
    return WindowRead(pd.DataFrame(), ranges, truncated, time.monotonic() - started,
                      [t for t in topics if t not in present], "native" if native is not None else "confluent-kafka")


def read_dlq(profile: Profile, window: Window, *, bootstrap: str | None = None, limits: Limits = DEFAULT_LIMITS,
             max_payload_bytes: int = MAX_PAYLOAD_BYTES, progress=None) -> WindowRead:
    """Every DLQ topic of ``profile`` over ``window`` -> canonical ``dlq_records`` (in ``.frame``).

    Missing DLQ topics are skipped and listed in ``.missing_topics``. ``limits.max_rows``
    caps the records over all topics, ``limits.timeout_s`` the wall-clock time of the read.
    """
    batches: list[pa.RecordBatch] = []
    info = drain(iter_dlq(profile, window, bootstrap=bootstrap, limits=limits,
                                  max_payload_bytes=max_payload_bytes, progress=progress), batches.append)
    info.frame = arrow_frame(batches, "dlq_records", lambda: conform("dlq_records"))
    return info


def iter_dlq(profile: Profile, window: Window, *, bootstrap: str | None = None, limits: Limits = DEFAULT_LIMITS,
             max_payload_bytes: int = MAX_PAYLOAD_BYTES, progress=None) -> Generator[pa.RecordBatch, None, WindowRead]:
    """:func:`read_dlq` batch by batch: ``dlq_records`` as Arrow batches as they are decoded
    (a few thousand records each), then (returned) what was asked and got."""
    servers = bootstrap_servers(bootstrap)
    channel_of = {t.name: t.channel for t in profile.kafka.dlq if t.channel}
    return (yield from _read_window(servers, [t.name for t in profile.kafka.dlq], window, limits,
                                    lambda cols: dlq_batch(cols, channel_of), True, max_payload_bytes, progress))


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
    batches: list[pa.RecordBatch] = []
    info = drain(_read_window(bootstrap_servers(bootstrap), [profile.kafka.message_events.name], window,
                                      limits, event_batch, False, max_payload_bytes, progress), batches.append)
    frame = normalise_events(arrow_frame(batches, None, empty_events))
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

class Source(EvidenceSource):
    """DLQ records and one consumer-lag snapshot (or ``samples`` of them) for the window.

    Options: ``bootstrap`` (else FORENSICS_KAFKA_BOOTSTRAP), ``samples`` (1) and
    ``interval_s`` (10) for lag, ``max_records`` (the record cap, else ``max_rows``) and the
    other query bounds, ``max_payload_bytes``. The description carries the topic inventory
    (``topics``) and the expected topics the cluster lacks (``missing_topics``, runbook R1.2).
    """

    name = "kafka"
    tables = ("dlq_records", "consumer_lag")
    connection, env = "bootstrap", "kafka"
    options = (
        Option("samples", "int", 1, "consumer-lag snapshots", minimum=1),
        Option("interval_s", "float", 10.0, "seconds between lag snapshots", minimum=0),
        Option("max_records", "int", None, "DLQ records read at most (default max_rows)", minimum=1),
        Option("max_payload_bytes", "int", MAX_PAYLOAD_BYTES, "payloads over this are kept unparsed", minimum=1),
    )

    def stream(self, window: Window) -> Slices:
        opts, profile = self.opts, self.profile
        servers = bootstrap_servers(opts.connection)
        limits = replace(opts.limits, max_rows=opts["max_records"] or opts.limits.max_rows)
        samples, interval = opts["samples"], opts["interval_s"]
        inventory = topic_inventory(profile, bootstrap=servers, limits=limits)
        missing = inventory.loc[~inventory["present"].astype(bool), "topic"].tolist()
        reading = iter_dlq(profile, window, bootstrap=servers, limits=limits,
                           max_payload_bytes=opts["max_payload_bytes"], progress=self.say)
        held: list[pa.RecordBatch] = []
        rows = 0
        while True:  # DLQ records in slices of SLICE_RECORDS, each written before the next is read
            try:
                held.append(next(reading))
            except StopIteration as done:
                dlq = done.value
                break
            rows += held[-1].num_rows
            if sum(b.num_rows for b in held) >= SLICE_RECORDS:
                yield "dlq_records", arrow_frame(held, "dlq_records", lambda: conform("dlq_records"))
                held = []
        if held or not rows:
            yield "dlq_records", arrow_frame(held, "dlq_records", lambda: conform("dlq_records"))
        groups = group_topics(profile)
        lag = sample_consumer_lag(groups, samples=samples, interval_s=interval, bootstrap=servers, limits=limits)
        yield "consumer_lag", lag
        inventory_rows = [{k: (None if pd.isna(v) else v) for k, v in row.items()}
                          for row in inventory.astype(object).to_dict("records")]
        description = self.describe(
            {"dlq_records": rows, "consumer_lag": lag},
            notes=[f"dlq_records truncated: {dlq.truncated}"] if dlq.truncated else [],
            truncated=bool(dlq.truncated), connection=",".join(host_of(f"kafka://{s.strip()}") for s in servers.split(",")),
            missing_topics=missing, topics=inventory_rows, dlq={**dlq.describe(), "rows": rows},
            lag={"groups": groups, "samples": samples, "interval_s": interval})
        queries = {
            "dlq_records": {"topics": [t.name for t in profile.kafka.dlq], "window": window.to_dict(),
                            "ranges": dlq.ranges, "max_records": limits.max_rows, "timeout_s": limits.timeout_s},
            "consumer_lag": {"groups": groups, "samples": samples, "interval_s": interval},
        }
        return SourceResult(tables={}, description=description, queries=queries)
