"""The stores the seed writes: one class per target (MongoDB, Kafka, Jaeger over OTLP, PostgreSQL,
Redis, Prometheus), each opened on an address, then ``conflicts``, ``clear``, ``write``, ``close``.

:func:`forensics.simulate.seed.seed_evidence` drives them (``TARGET_CLASSES``); what each
writes, and how, is described in :mod:`forensics.simulate.seed`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import psycopg
import pymongo
import pymongo.errors
import redis
import requests
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from psycopg import sql
from pymongo import ASCENDING, DESCENDING

from forensics.config import DEFAULT_LIMITS
from forensics.errors import ForensicsError, SourceError
from forensics.evidence import Evidence
from forensics.profiles import Profile
from forensics.simulate import render
from forensics.sources.kafka import open_admin, open_consumer
from forensics.sources.partitioner import partitions_for
from forensics.sources.redis import key_patterns
from forensics.timeutil import utcnow

if TYPE_CHECKING:
    from forensics.simulate.seed import Placement

MONGO_BATCH = 20_000
"""Documents per ``insert_many`` call."""
SPAN_BATCH = 5_000
"""Spans per OTLP export request."""
REDIS_BATCH = 10_000
"""Commands per Redis pipeline round trip."""
DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000
"""Kafka's default ``retention.ms``; topics keep it unless the window is older."""
RECORD_COLUMNS = ("topic", "partition", "key", "value", "headers", "timestamp_ms")
"""A Kafka record as ``render.kafka_records`` gives it."""
_EVENT_CLASS = b"com.chat4all.common.event.MessageEvent"
_EVENT_FIELDS = ("message_id", "conversation_id", "sender_id", "recipient_id", "content", "content_type", "channel")
"""messages columns passed to ``render.event_payload``, in its order."""

Progress = Callable[..., None]

class SeedError(ForensicsError):
    """What was rendered cannot be seeded faithfully (e.g. a record off its default partition)."""



# ---- targets ------------------------------------------------------------------------------

class Target:
    """One store: open in ``__init__``, then ``conflicts`` (what is already there), ``clear``
    (drop what the seed owns), ``write`` (returns object -> count), ``close``."""

    name = ""

    def __init__(self, address: str, profile: Profile, placement: Placement, ev: Evidence, progress: Progress):
        self.address, self.profile, self.placement, self.ev, self.progress = address, profile, placement, ev, progress
        self.notes: list[str] = []

    def conflicts(self) -> list[str]:
        return []

    def clear(self) -> None:
        pass

    def write(self) -> dict[str, int]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


class _Prometheus(Target):
    """The scenario's metrics as OpenMetrics, backfilled with promtool into the data directory
    of the local Prometheus (address = that directory, FORENSICS_PROMETHEUS_DATA). A running
    server loads the new blocks at its next block reload (about a minute) or at once on restart
    (``scripts/services down --only prometheus && scripts/services up --only prometheus``)."""

    name = "prometheus"

    def write(self) -> dict[str, int]:
        from forensics.simulate.metrics import scenario_metrics, to_openmetrics
        from forensics.sources.prometheus import backfill

        frame = self.ev.tables.get("metrics")
        if frame is None:
            frame = scenario_metrics(self.ev, self.profile)
        blocks = backfill(to_openmetrics(frame), self.address)
        self.notes.append("prometheus: blocks written; a running server loads them within about a minute, "
                          "or at once after a restart")
        return {"samples": len(frame), "blocks": len(blocks)}


class _Mongo(Target):
    name = "mongo"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.client = pymongo.MongoClient(self.address, tz_aware=True, serverSelectionTimeoutMS=int(
            DEFAULT_LIMITS.connect_timeout_s * 1000))
        self.client.admin.command("ping")
        self.db = self.client[self.placement.database or self.profile.mongo.database]
        self.collections = list(dict.fromkeys(self.profile.mongo.collections.values()))

    def conflicts(self) -> list[str]:
        return [f"MongoDB {self.db.name}.{c} holds documents" for c in self.collections
                if self.db[c].find_one({}, {"_id": 1}) is not None]

    def clear(self) -> None:
        self.progress(f"mongo: dropping {', '.join(self.collections)} in {self.db.name}")
        for c in self.collections:
            self.db.drop_collection(c)

    def write(self) -> dict[str, int]:
        written = {}
        for collection, docs in render.mongo_documents(self.ev, self.profile).items():
            n = 0
            for chunk in _batches(docs, MONGO_BATCH):
                n += len(self.db[collection].insert_many(chunk, ordered=False)
                         .inserted_ids)
                self.progress(f"mongo: {collection} {n:,} documents")
            written[collection] = n
        self._indexes()
        return written

    def _indexes(self) -> None:
        """The indexes Chat4All has: unique message id, conversation and status by time, history by
        message and time, the files' 24 h TTL."""

        cols = self.profile.mongo.collections
        messages = self.db[cols["messages"]]
        sample = messages.find_one({}, {"_id": 0, "timestamp": 1}) or {}
        when = "timestamp" if "timestamp" in sample else self.profile.mongo.message_fields["created_at"][0]
        messages.create_index([("message_id", ASCENDING)], unique=True, name="message_id_unique")
        messages.create_index([("conversation_id", ASCENDING), (when, DESCENDING)], name=f"conversation_id_{when}")
        messages.create_index([("status", ASCENDING), (when, DESCENDING)], name=f"status_{when}")
        history = self.db[cols["status_history"]]
        history.create_index([("message_id", ASCENDING), ("timestamp", ASCENDING)], name="message_id_timestamp")
        files = self.db[cols["files"]]
        if files.find_one({"expires_at": {"$exists": True}}, {"_id": 1}) is not None:
            files.create_index([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expires_at_ttl")

    def close(self) -> None:
        self.client.close()


class _Kafka(Target):
    name = "kafka"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.admin = open_admin(self.address)
        self.reader = open_consumer(self.address)  # watermarks only; never commits
        prefix = self.placement.topic_prefix
        self.topics = {prefix + t.name: t.partitions for t in self.profile.kafka.expected_topics()}
        self.lost = {prefix + t for t in (self.ev.scenario or {}).get("missing_topics") or []}
        groups = self.profile.kafka.consumer_groups
        self.groups = [prefix + g for g in [groups["router"], *(groups.get("connectors") or {}).values()]]
        self.present(DEFAULT_LIMITS.connect_timeout_s)

    def present(self, timeout_s: float = DEFAULT_LIMITS.timeout_s) -> dict[str, int]:
        meta = self.admin.list_topics(timeout=timeout_s)
        return {n: len(t.partitions) for n, t in meta.topics.items() if t.error is None}

    def records(self, topic: str, partitions: int) -> int:
        total = 0
        for p in range(partitions):
            low, high = self.reader.get_watermark_offsets(TopicPartition(topic, p), timeout=DEFAULT_LIMITS.timeout_s)
            total += high - low
        return total

    def conflicts(self) -> list[str]:
        out = []
        present = self.present()
        for topic, partitions in self.topics.items():
            if topic not in present:
                continue
            if topic in self.lost:
                out.append(f"Kafka topic {topic} exists, but the scenario lost it")
            elif (n := self.records(topic, present[topic])):
                out.append(f"Kafka topic {topic} holds {n:,} record(s)")
            elif present[topic] != partitions:
                out.append(f"Kafka topic {topic} has {present[topic]} partitions, the profile says {partitions}")
        return out

    def clear(self) -> None:
        doomed = [t for t in self.topics if t in self.present()]
        self.progress(f"kafka: deleting {len(doomed)} topic(s) and the groups {', '.join(self.groups)}")
        if doomed:
            for fut in self.admin.delete_topics(doomed, operation_timeout=DEFAULT_LIMITS.timeout_s).values():
                fut.result(timeout=DEFAULT_LIMITS.timeout_s)
            self._wait(lambda present: not any(t in present for t in doomed), "deleted")
        for group, fut in self.admin.delete_consumer_groups(self.groups, request_timeout=DEFAULT_LIMITS.timeout_s
                                                            ).items():
            try:
                fut.result(timeout=DEFAULT_LIMITS.timeout_s)
            except KafkaException as exc:  # a group that never existed
                if "GROUP_ID_NOT_FOUND" not in str(exc):
                    raise SourceError("kafka", f"cannot delete consumer group {group}: {exc}") from None

    def _wait(self, done: Callable[[dict[str, int]], bool], what: str) -> None:
        deadline = time.monotonic() + DEFAULT_LIMITS.timeout_s
        while not done(self.present()):
            if time.monotonic() > deadline:
                raise SourceError("kafka", f"topics not {what} after {DEFAULT_LIMITS.timeout_s:.0f} s")
            time.sleep(0.2)

    def write(self) -> dict[str, int]:
        records = _kafka_frame(self.ev, self.profile, self.placement.topic_prefix)
        dropped = records["topic"].isin(self.lost)
        if dropped.any():
            self.notes.append(f"{int(dropped.sum()):,} records of the lost topic(s) {', '.join(sorted(self.lost))} "
                              "not produced (the platform could not have written them)")
            records = records[~dropped]
        self._create_topics(records)
        counts = self._produce(records)
        committed = self._commit_groups()
        return {**counts, **committed}

    def _create_topics(self, records: pd.DataFrame) -> None:
        present = self.present()
        wanted = {t: n for t, n in self.topics.items() if t not in self.lost and t not in present}
        if not wanted:
            return
        oldest = records["timestamp_ms"].min() if len(records) else None
        config = {}
        if oldest is not None and not pd.isna(oldest):
            age_ms = int(time.time() * 1000) - int(oldest)
            if age_ms > DEFAULT_RETENTION_MS // 2:  # an old window: keep its records from retention
                config["retention.ms"] = str(age_ms + DEFAULT_RETENTION_MS)
                self.notes.append(f"topics created with retention.ms={config['retention.ms']} so that records of an "
                                  "old window are not deleted at once")
        futures = self.admin.create_topics([NewTopic(t, num_partitions=n, config=config) for t, n in wanted.items()],
                                           operation_timeout=DEFAULT_LIMITS.timeout_s)
        for fut in futures.values():
            fut.result(timeout=DEFAULT_LIMITS.timeout_s)
        self._wait(lambda present: all(present.get(t) == n for t, n in wanted.items()), "created")

    def _produce(self, records: pd.DataFrame) -> dict[str, int]:
        failures: list[str] = []

        def delivered(err, msg) -> None:  # called for failures only (delivery.report.only.error)
            failures.append(f"{msg.topic()}[{msg.partition()}]: {err}")

        producer = Producer({
            "bootstrap.servers": self.address, "partitioner": "murmur2_random", "linger.ms": 20,
            "batch.num.messages": 10_000, "batch.size": 1 << 20, "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 1 << 20,
            "delivery.report.only.error": True, "on_delivery": delivered,
        })
        columns = [records[c].tolist() for c in ("topic", "partition", "key", "value", "headers", "timestamp_ms")]
        n = len(records)
        for i, (topic, partition, key, value, headers, ts) in enumerate(zip(*columns, strict=True)):
            while True:
                try:
                    producer.produce(topic, value=value, key=key, partition=partition, timestamp=ts, headers=headers)
                    break
                except BufferError:
                    producer.poll(0.05)
            if i % 100_000 == 99_999:
                producer.poll(0)
                self.progress(f"kafka: produced {i + 1:,} of {n:,} records")
        left = producer.flush(DEFAULT_LIMITS.timeout_s * 4)
        if left or failures:
            raise SourceError("kafka", f"{left + len(failures):,} records not delivered"
                              + (f", e.g. {failures[0]}" if failures else ""))
        return {str(t): int(c) for t, c in records.groupby("topic", sort=True).size().items()}

    def _commit_groups(self) -> dict[str, int]:
        """Commit, per group and partition, ``high watermark - lag`` of the scenario's last lag sample."""

        lag = self.ev.table("consumer_lag")
        if lag.empty:
            return {}
        prefix = self.placement.topic_prefix
        last = lag[lag["sampled_at"] == lag.groupby(["group", "topic"])["sampled_at"].transform("max")]
        present = self.present()
        written = {}
        for group, rows in last.groupby("group", sort=True):
            offsets = []
            for topic, partition, value in zip(rows["topic"], rows["partition"], rows["lag"], strict=True):
                name = prefix + topic
                if name not in present or pd.isna(value):
                    continue
                _, high = self.reader.get_watermark_offsets(TopicPartition(name, int(partition)),
                                                            timeout=DEFAULT_LIMITS.timeout_s, cached=False)
                committed = high - int(value)
                if committed < 0:
                    self.notes.append(f"{prefix}{group} {name}[{partition}]: lag {int(value)} > {high} records; "
                                      "committed 0")
                    committed = 0
                offsets.append(TopicPartition(name, int(partition), committed))
            if not offsets:
                continue
            # The group id is used for this commit only: no subscribe, no assign, no rebalance.
            committer = Consumer({"bootstrap.servers": self.address, "group.id": prefix + group,
                                  "enable.auto.commit": False})
            try:
                for tp in committer.commit(offsets=offsets, asynchronous=False) or ():
                    if tp.error:
                        raise SourceError("kafka", f"commit of {prefix}{group} {tp.topic}[{tp.partition}]: {tp.error}")
            finally:
                committer.close()
            written[f"group {prefix}{group}"] = len(offsets)
        return written

    def close(self) -> None:
        self.reader.close()


class _Jaeger(Target):
    name = "jaeger"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        base = self.address.rstrip("/")
        self.endpoint = base if base.endswith("/v1/traces") else base + "/v1/traces"
        # An empty export request: the collector answers 200 when it is up, before anything is written.
        requests.post(self.endpoint, data=b"", headers={"Content-Type": "application/x-protobuf"},
                      timeout=DEFAULT_LIMITS.connect_timeout_s).raise_for_status()

    def write(self) -> dict[str, int]:
        spans = self.ev.table("spans")
        if spans.empty:
            return {"spans": 0}
        return _send_spans(spans, self.endpoint, self.placement.service_prefix, self.progress)


class _Postgres(Target):
    name = "postgres"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.conn = psycopg.connect(self.address, connect_timeout=int(DEFAULT_LIMITS.connect_timeout_s),
                                    application_name="chat4all-forensics-seed")
        names, schema = self.profile.postgres, self.placement.pg_schema
        self.names = {kind: f"{schema}.{table}" if schema else table
                      for kind, table in (("users", names.users_table), ("identities", names.identities_table))}
        self.tables = {kind: sql.Identifier(*name.split(".")) for kind, name in self.names.items()}

    def conflicts(self) -> list[str]:
        out = []
        with self.conn.transaction():
            for kind, table in self.tables.items():
                exists = self.conn.execute("SELECT to_regclass(%s) IS NOT NULL", [table.as_string(self.conn)])
                if exists.fetchone()[0] and \
                        self.conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(table)).fetchone()[0]:
                    out.append(f"PostgreSQL table {self.names[kind]} holds rows")
        return out

    def clear(self) -> None:
        self.progress(f"postgres: dropping {self.names['identities']} and {self.names['users']}")
        with self.conn.transaction():
            self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {} CASCADE").format(
                self.tables["identities"], self.tables["users"]))

    def write(self) -> dict[str, int]:
        rows = render.postgres_rows(self.ev, self.profile)
        names = self.profile.postgres
        written = {}
        with self.conn.transaction():
            if self.placement.pg_schema:
                self.conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(self.placement.pg_schema)))
            for statement in _ddl(self.profile, self.tables):
                self.conn.execute(statement)
            for kind, table in (("users", names.users_table), ("identities", names.identities_table)):
                frame = pd.DataFrame(rows[table])
                frame = frame.astype(object).where(frame.notna(), None)
                copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    self.tables[kind], sql.SQL(", ").join(sql.Identifier(c) for c in frame.columns))
                with self.conn.cursor() as cur, cur.copy(copy) as out:
                    for row in frame.itertuples(index=False, name=None):
                        out.write_row(row)
                written[self.names[kind]] = len(frame)
        return written

    def close(self) -> None:
        self.conn.close()


def _ddl(profile: Profile, tables: dict[str, Any]) -> list[Any]:
    """CREATE TABLE statements as the profile's platform has them: users keyed by ``user_id``
    (the runbook's data model, with ``credentials`` on identities) or by ``id`` (the deployed JPA
    entities). Identities keep the renderer's integer ``id``, the simulated ``source_ref``."""
    users, identities = tables["users"], tables["identities"]
    uid = sql.Identifier(profile.postgres.users_id_column)
    credentials = "credentials JSONB DEFAULT '{{}}'::jsonb, " if profile.postgres.users_id_column == "user_id" else ""
    return [
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({} UUID PRIMARY KEY, display_name VARCHAR(255) NOT NULL, "
                "email VARCHAR(255), user_type VARCHAR(20) NOT NULL DEFAULT 'CUSTOMER', "
                "created_at TIMESTAMPTZ NOT NULL DEFAULT now())").format(users, uid),
        sql.SQL("CREATE TABLE IF NOT EXISTS {} (id BIGINT PRIMARY KEY, user_id UUID NOT NULL REFERENCES {} ({}), "
                "platform VARCHAR(20) NOT NULL, platform_user_id VARCHAR(255) NOT NULL, "
                "verified BOOLEAN NOT NULL DEFAULT false, " + credentials + "linked_at TIMESTAMPTZ NOT NULL "
                "DEFAULT now(), UNIQUE (platform, platform_user_id))").format(identities, users, uid),
    ]


class _Redis(Target):
    name = "redis"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.client = redis.Redis.from_url(self.address, socket_timeout=DEFAULT_LIMITS.timeout_s,
                                           socket_connect_timeout=DEFAULT_LIMITS.connect_timeout_s)
        self.client.ping()
        self.patterns = [p.glob for p in key_patterns(self.profile, self.placement.redis_prefix)]

    def conflicts(self) -> list[str]:
        return [f"Redis holds keys matching {p}" for p in self.patterns
                if next(self.client.scan_iter(match=p, count=1000), None) is not None]

    def clear(self) -> None:
        self.progress(f"redis: deleting keys matching {', '.join(self.patterns)}")
        for pattern in self.patterns:
            for chunk in _batches(self.client.scan_iter(match=pattern, count=1000), REDIS_BATCH):
                self.client.unlink(*chunk)

    def write(self) -> dict[str, int]:
        keys = pd.DataFrame(render.redis_keys(self.ev), columns=["key", "value", "ttl_s"])
        prefix = self.placement.redis_prefix
        # A TTL is what was left at the window end; the time since has run off it too, so every
        # key expires when it would have on the platform.
        since_end = max(0.0, (utcnow() - self.ev.window.end).total_seconds())
        ttl = pd.to_numeric(keys["ttl_s"], errors="coerce").to_numpy(dtype=float) - since_end
        alive = np.isnan(ttl) | (ttl > 0)
        if (~alive).any():
            self.notes.append(f"{int((~alive).sum()):,} Redis keys had expired by the time of seeding ({since_end:,.0f} s "
                              "after the window end): not written")
        written = expiring = 0
        rows = zip(keys["key"][alive].tolist(), keys["value"][alive].tolist(), ttl[alive].tolist(), strict=True)
        for chunk in _batches(rows, REDIS_BATCH):
            pipe = self.client.pipeline(transaction=False)
            for key, value, seconds in chunk:
                if np.isnan(seconds):
                    pipe.set(prefix + key, value)
                else:
                    pipe.set(prefix + key, value, px=max(1, int(seconds * 1000)))
                    expiring += 1
            pipe.execute()
            written += len(chunk)
        return {"keys": written, "with ttl": expiring}

    def close(self) -> None:
        self.client.close()


TARGET_CLASSES: dict[str, type[Target]] = {"mongo": _Mongo, "kafka": _Kafka, "jaeger": _Jaeger, "postgres": _Postgres,
                                      "redis": _Redis, "prometheus": _Prometheus}


# ---- rendering glue -----------------------------------------------------------------------

def _kafka_frame(ev: Evidence, profile: Profile, prefix: str) -> pd.DataFrame:
    """The rendered records (plus the outbound ones) with topics prefixed and the default-partitioner
    partition of each key, which must equal the renderer's placement (SeedError otherwise)."""
    frame = pd.DataFrame(render.kafka_records(ev, profile), columns=RECORD_COLUMNS)
    if profile.kafka.outbound:
        frame = pd.concat([frame, _outbound_records(ev, profile)], ignore_index=True)
    sizes = {t.name: t.partitions for t in profile.kafka.expected_topics()}
    partition = np.full(len(frame), -1, dtype=np.int64)  # -1: no key, the producer's partitioner picks
    for topic, idx in frame.groupby("topic", sort=False).indices.items():
        if topic not in sizes:
            raise SeedError(f"rendered records for topic {topic}, which profile {profile.name} does not name")
        keyed = idx[frame["key"].iloc[idx].notna().to_numpy()]
        partition[keyed] = partitions_for(frame["key"].iloc[keyed].tolist(), sizes[topic])
    given = pd.to_numeric(frame["partition"], errors="coerce").fillna(-1).to_numpy(dtype=np.int64)
    off = (partition >= 0) & (given >= 0) & (given != partition)
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise SeedError(f"{int(off.sum()):,} rendered records are not on Kafka's default partition, e.g. key "
                        f"{frame['key'].iloc[i]!r} of {frame['topic'].iloc[i]}: rendered {given[i]}, "
                        f"murmur2 gives {partition[i]}")
    frame["partition"] = partition
    frame["topic"] = prefix + frame["topic"].astype(str)
    if prefix:
        frame["headers"] = [_prefix_original(h, prefix) for h in frame["headers"]]
    frame["timestamp_ms"] = frame["timestamp_ms"].astype("int64")
    return frame


def _prefix_original(headers: Any, prefix: str) -> Any:
    """Point ``kafka_dlt-original-topic`` at the prefixed topic, so a placed seed stays consistent."""
    if not headers:
        return headers
    name = "kafka_dlt-original-topic"
    return [(k, (prefix.encode() + (v if isinstance(v, bytes) else str(v).encode())) if k == name else v)
            for k, v in headers]


# ---- what the renderer leaves out -----------------------------------------------------------

def _outbound_records(ev: Evidence, profile: Profile) -> pd.DataFrame:
    """Records of the runbook's per-channel outbound topics, which ``render.kafka_records`` does not
    produce: the message events the router forwarded (key = conversation id, 3 ms after creation).

    Forwarded = every message of the channel with a history row, plus, per partition, as many of
    the channel's still-PENDING messages (oldest first) as the connector group's last lag sample
    says are waiting there, so that the seeded backlog is the scenario's.
    """
    m = ev.table("messages")
    h = ev.table("status_events")
    touched = m["message_id"].isin(h.loc[~h["derived"].fillna(False).astype(bool), "message_id"]).to_numpy(bool)
    created = m["created_at"].to_numpy(dtype="datetime64[ns]").view("int64")
    lag = ev.table("consumer_lag")
    camel = profile.kafka.event_case == "camelCase"
    frames = []
    for topic in profile.kafka.outbound:
        channel = (m["channel"] == topic.channel).fillna(False).to_numpy(bool)
        chosen = channel & touched
        waiting = channel & ~touched & (m["status"] == "PENDING").fillna(False).to_numpy(bool)
        last = lag[lag["topic"] == topic.name]
        last = last[last["sampled_at"] == last["sampled_at"].max()]
        if len(last) and waiting.any():
            idx = np.flatnonzero(waiting)
            idx = idx[np.argsort(created[idx], kind="stable")]
            part = partitions_for(m["conversation_id"].iloc[idx].astype(str).tolist(), topic.partitions)
            for p, count in zip(last["partition"].astype(int), last["lag"].fillna(0).astype(int), strict=True):
                chosen[idx[part == p][:count]] = True
        rows = m[chosen]
        fields = [rows[c].astype(object).where(rows[c].notna(), None).tolist() for c in _EVENT_FIELDS]
        values = [json.dumps(render.event_payload(*row, ns, camel), ensure_ascii=False, separators=(",", ":")).encode()
                  for *row, ns in zip(*fields, created[chosen].tolist(), strict=True)]
        frames.append(pd.DataFrame({
            "topic": topic.name, "partition": -1, "key": [c.encode() for c in rows["conversation_id"]],
            "value": values, "headers": [[("__TypeId__", _EVENT_CLASS)]] * len(rows),
            "timestamp_ms": created[chosen] // 1_000_000 + 3}))
    if not frames:
        return pd.DataFrame(columns=RECORD_COLUMNS)
    return pd.concat(frames, ignore_index=True).sort_values(["topic", "timestamp_ms"], kind="stable",
                                                             ignore_index=True)


# ---- spans over OTLP ----------------------------------------------------------------------

def _send_spans(spans: pd.DataFrame, endpoint: str, service_prefix: str, progress: Progress) -> dict[str, int]:
    """Replay the ``spans`` table through the OpenTelemetry SDK, keeping every id and time.

    One TracerProvider per service (its ``service.name`` resource) sharing an id generator that
    hands out the span's own ids; a span whose parent is elsewhere starts under a remote parent
    context with that id. Ended spans are exported synchronously in batches of SPAN_BATCH by
    :class:`_SyncBatches`, so none is dropped and a failed export is an error, not a log line.
    """

    kinds = {"server": SpanKind.SERVER, "client": SpanKind.CLIENT, "producer": SpanKind.PRODUCER,
             "consumer": SpanKind.CONSUMER, "internal": SpanKind.INTERNAL}
    ids = _GivenIds()
    providers: dict[str, tuple[Any, Any, _SyncBatches]] = {}

    def tracer_for(service: str):
        if service not in providers:
            batches = _SyncBatches(OTLPSpanExporter(endpoint=endpoint, timeout=DEFAULT_LIMITS.timeout_s), service)
            provider = TracerProvider(resource=Resource.create({"service.name": service}), id_generator=ids,
                                      sampler=ALWAYS_ON)
            provider.add_span_processor(batches)
            providers[service] = (provider, provider.get_tracer("chat4all-forensics-seed"), batches)
        return providers[service]

    tags_cache: dict[str, dict[str, Any]] = {}
    cols = {c: spans[c].tolist() for c in ("trace_id", "span_id", "parent_span_id", "service", "operation", "kind",
                                           "error", "status_message", "http_method", "http_route",
                                           "http_status_code", "message_id", "tags", "logs")}
    start = spans["start"].to_numpy(dtype="datetime64[ns]").view("int64").tolist()
    end_ts = spans["end"].fillna(spans["start"] + pd.to_timedelta(spans["duration_ms"].fillna(0), unit="ms"))
    end = end_ts.to_numpy(dtype="datetime64[ns]").view("int64").tolist()
    n = len(spans)
    for i in range(n):
        service = service_prefix + (cols["service"][i] if _present(cols["service"][i]) else "unknown_service")
        _, tracer, batches = tracer_for(service)
        trace_id = int(cols["trace_id"][i], 16)
        parent = cols["parent_span_id"][i]
        context = None
        if _present(parent):
            context = trace.set_span_in_context(NonRecordingSpan(SpanContext(
                trace_id, int(parent, 16), is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))))
        ids.trace_id, ids.span_id = trace_id, int(cols["span_id"][i], 16)
        span = tracer.start_span(cols["operation"][i] if _present(cols["operation"][i]) else "unknown",
                                 context=context, kind=kinds.get(cols["kind"][i], SpanKind.INTERNAL),
                                 attributes=_attributes(cols, i, tags_cache), start_time=start[i])
        if _present(cols["logs"][i]):
            for name, attributes, at in _events(cols["logs"][i]):
                span.add_event(name, attributes, timestamp=at)
        if _present(cols["error"][i]) and cols["error"][i]:
            message = cols["status_message"][i]
            span.set_status(Status(StatusCode.ERROR, message if _present(message) else None))
        span.end(end_time=end[i])
        if len(batches.spans) >= SPAN_BATCH:
            batches.export()
        if i % 50_000 == 49_999:
            progress(f"jaeger: {i + 1:,} of {n:,} spans sent")
    sent = 0
    for provider, _, batches in providers.values():
        provider.force_flush()
        provider.shutdown()
        sent += batches.sent
    return {"spans": sent, "traces": int(spans["trace_id"].nunique()), "services": len(providers)}


def _present(value: Any) -> bool:
    return value is not None and value is not pd.NA and not (isinstance(value, float) and np.isnan(value))


def _attributes(cols: dict[str, list], i: int, cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The span's attributes: known columns under their OpenTelemetry names, then its other tags."""
    tags = cols["tags"][i]
    out: dict[str, Any] = {}
    if _present(tags):
        if tags not in cache:
            cache[tags] = {k: v if isinstance(v, str | bool | int | float) else json.dumps(v)
                           for k, v in json.loads(tags).items() if v is not None}
        out.update(cache[tags])
    route = cols["http_route"][i]
    for key, value in (("http.method", cols["http_method"][i]),
                       ("http.route" if _present(route) and str(route).startswith("/") else "http.url", route),
                       ("http.status_code", cols["http_status_code"][i]), ("message_id", cols["message_id"][i])):
        if _present(value):
            out[key] = int(value) if key == "http.status_code" else str(value)
    return out


def _events(logs: str) -> list[tuple[str, dict[str, Any], int]]:
    """Jaeger v1 span logs ``[{timestamp (us), fields: [{key, value}]}]`` as span events (name from ``event``)."""
    out = []
    for entry in json.loads(logs):
        fields = {f["key"]: f.get("value") for f in entry.get("fields") or []}
        name = str(fields.pop("event", "log"))
        out.append((name, {k: v if isinstance(v, str | bool | int | float) else json.dumps(v)
                           for k, v in fields.items() if v is not None}, int(entry["timestamp"]) * 1000))
    return out


class _GivenIds(IdGenerator):
    """Hands out the ids of the span about to start (set just before ``start_span``)."""

    trace_id = 0
    span_id = 0

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id


class _SyncBatches(SpanProcessor):
    """Collects ended spans; ``export`` sends them in one request and fails loudly.

    (BatchSpanProcessor drops spans when its queue is full and only logs failed exports.)
    """

    def __init__(self, exporter, service: str) -> None:
        self.exporter, self.service = exporter, service
        self.spans: list = []
        self.sent = 0

    def on_end(self, span) -> None:
        self.spans.append(span)

    def export(self) -> None:
        if not self.spans:
            return
        if self.exporter.export(self.spans) is not SpanExportResult.SUCCESS:
            raise SourceError("jaeger", f"OTLP export of {len(self.spans):,} spans of {self.service} failed",
                              "FORENSICS_OTLP_ENDPOINT (the collector's OTLP/HTTP port, 4318) and the collector log")
        self.sent += len(self.spans)
        self.spans = []

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self.export()
        return True

    def shutdown(self) -> None:
        self.exporter.shutdown()
