"""Canonical evidence back into the raw shapes the real systems hold.

For seeding a live stack (MongoDB, Kafka, Jaeger, Redis, PostgreSQL, log files) and for
loader round-trip tests: load what these functions return with the real clients, read it
back with the toolkit's loaders, and compare with the simulated tables.

- ``mongo_documents``: documents per collection, field names and error layout per profile,
  BSON-able values (tz-aware UTC datetimes at ms precision, ``bson.ObjectId`` when pymongo
  is installed); history documents WITHOUT the derived initial PENDING (the platform never
  writes it); plus ``conversations`` and ``files``.
- ``kafka_records``: (topic, partition, key, value, headers, timestamp_ms) for the message
  events topic, the DLQ topics and, in the deployed layout, status-updates. DLQ headers are
  encoded as Spring's DeadLetterPublishingRecoverer does: partition as a 4-byte and offset /
  timestamp as 8-byte big-endian integers, the rest UTF-8. Missing topics get no records.
- ``jaeger_v1``: the v1 JSON answer of ``GET /api/traces`` (``jaeger-query-api.md``).
- ``log_lines``: the JSON lines each service printed, in order.
- ``redis_keys``: (key, value, ttl_s or None).
- ``postgres_rows``: rows of the users and external identities tables.

These loop in Python over rows; they are meant for up to ~100k messages.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import pandas as pd

from forensics.evidence import Evidence
from forensics.profiles import Profile, load_profile
from forensics.simulate import population as pop
from forensics.sources.partitioner import partition_for

Record = tuple[str, int, bytes, bytes, list[tuple[str, bytes]], int]
_MIME = {pop.CONTENT_TYPES[ct]: (mime, stem, ext) for ct, (_m, _s, mime, stem, ext) in pop.FILE_SHAPES.items()}
_INT_HEADERS = {"kafka_dlt-original-partition": 4, "kafka_dlt-original-offset": 8, "kafka_dlt-original-timestamp": 8}
_EVENT_CLASS = "com.chat4all.common.event.MessageEvent"


def _profile(ev: Evidence, profile: Profile | str | None) -> Profile:
    return load_profile(profile if profile is not None else ev.profile)


def _dt(ts) -> datetime | None:
    """A tz-aware UTC datetime at millisecond precision (what a BSON date holds)."""
    if ts is None or pd.isna(ts):
        return None
    t = pd.Timestamp(ts).floor("ms")
    return t.to_pydatetime()


def _none(v):
    return None if v is None or (not isinstance(v, (list, dict)) and pd.isna(v)) else v


def _columns(frame: pd.DataFrame, names: list[str]) -> list[list]:
    """Columns as Python lists: nulls as None, times as UTC datetimes (ms), ints as int."""
    out = []
    for name in names:
        s = frame[name]
        if isinstance(s.dtype, pd.DatetimeTZDtype):
            values = list(s.dt.floor("ms").dt.to_pydatetime())
            out.append([None if pd.isna(v) else v for v in values])
        else:
            out.append(s.astype(object).where(s.notna(), None).tolist())
    return out


def _object_id(hex_id: str):
    try:
        from bson import ObjectId
    except ImportError:  # pymongo is a dependency; keep the hex string if it is absent
        return hex_id
    return ObjectId(hex_id)


def _put(doc: dict, path: str, value) -> None:
    """Set ``value`` at a dotted ``path`` of ``doc`` (creating nested dicts)."""
    *parents, leaf = path.split(".")
    for p in parents:
        doc = doc.setdefault(p, {})
    doc[leaf] = value


def _deployed(profile: Profile) -> bool:
    return profile.kafka.status_updates is not None


def _group_members(conversation_id: str, count: int, first: str) -> list[str]:
    """Recipient ids of a group: the first from the table, the rest stable per conversation."""
    extra = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"chat4all:{conversation_id}:{k}")) for k in range(1, count)]
    return [first, *extra]


def mongo_documents(ev: Evidence, profile: Profile | str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Collection name -> documents, laid out as the profile's platform writes them."""
    prof = _profile(ev, profile)
    coll = prof.mongo.collections
    mf = prof.mongo.message_fields
    m = ev.table("messages")
    docs = []
    cols = ["message_id", "conversation_id", "sender_id", "recipient_id", "recipient_count", "content",
            "content_type", "channel", "status", "created_at", "updated_at", "file_id", "retry_count",
            "error_message", "platform_message_id"]
    for (mid, conv, sender, rcpt, count, content, ctype, channel, status, created, updated, file_id, retries,
         error, pmid) in zip(*_columns(m, cols), strict=True):
        doc: dict[str, Any] = {
            "_id": mid, "message_id": mid, "conversation_id": conv, "sender_id": sender,
            "recipient_ids": _group_members(conv, count or 1, rcpt), "content": content, "content_type": ctype,
            "channel": channel, "status": status, "timestamp": created, "created_at": created, "updated_at": updated,
            "metadata": {},
        }
        if file_id is not None:
            doc["file_id"] = file_id
        _put(doc, mf["retry_count"][0], retries or 0)
        if error is not None:
            _put(doc, mf["error_message"][0], error)
        if pmid is not None:
            _put(doc, mf["platform_message_id"][0], pmid)
        docs.append(doc)

    hf = prof.mongo.history_fields
    se = ev.table("status_events")
    rows = se[~se["derived"].astype(bool)]
    history = []
    cols = ["source_ref", "message_id", "conversation_id", "old_status", "new_status", "timestamp", "updated_by",
            "error_message"]
    for ref, mid, conv, old, new, when, by, error in zip(*_columns(rows, cols), strict=True):
        doc = {"_id": _object_id(ref), hf["message_id"][0]: mid, hf["conversation_id"][0]: conv,
               hf["old_status"][0]: old, hf["new_status"][0]: new, hf["timestamp"][0]: when, "created_at": when,
               hf["updated_by"][0]: by}
        if error is not None:
            _put(doc, hf["error_message"][0], error)
        history.append(doc)

    return {coll["messages"]: docs, coll["status_history"]: history,
            coll["conversations"]: _conversations(ev, prof), coll["files"]: _files(ev, prof)}


def _conversations(ev: Evidence, prof: Profile) -> list[dict]:
    m = ev.table("messages")
    ids = ev.table("identities")
    user_of = dict(zip(zip(ids["platform"], ids["platform_user_id"], strict=True), ids["user_id"], strict=True))
    deployed = _deployed(prof)
    g = m.groupby("conversation_id", sort=False)
    first = g.head(1)
    counts = g.size().reindex(first["conversation_id"]).tolist()
    last_at = _columns(g["created_at"].max().reindex(first["conversation_id"]).reset_index(), ["created_at"])[0]
    cols = ["conversation_id", "sender_id", "recipient_id", "recipient_count", "channel", "created_at"]
    out = []
    for (conv, sender, rcpt, rcount, channel, created), n, last in zip(zip(*_columns(first, cols), strict=True),
                                                                       counts, last_at, strict=True):
        rcount = rcount or 1
        members = (_group_members(conv, rcount, rcpt) if channel == "INTERNAL"
                   else [user_of.get((channel, rcpt), rcpt)])
        people = [sender, *members]
        participants = people if deployed else [
            {"user_id": u, "role": "AGENT" if i == 0 else "MEMBER", "joined_at": created} for i, u in enumerate(people)]
        out.append({
            "conversation_id": conv,
            "conversation_type": "GROUP" if rcount > 1 else ("ONE_TO_ONE" if deployed else "1:1"),
            "participants": participants, "primary_channel": channel, "message_count": n,
            "last_message_at": last, "created_at": created, "archived": False, "metadata": {},
        })
    return out


def _files(ev: Evidence, prof: Profile) -> list[dict]:
    m = ev.table("messages")
    size_field = prof.mongo.file_fields["file_size"][0]
    out = []
    rows = m[m["file_id"].notna()]
    for file_id, mid, ctype, size, created in zip(*_columns(rows, ["file_id", "message_id", "content_type",
                                                                    "file_size", "created_at"]), strict=True):
        mime, stem, ext = _MIME.get(ctype, ("application/octet-stream", "FILE", "bin"))
        uploaded = created - timedelta(seconds=2)
        out.append({
            "file_id": file_id, "message_id": mid, "filename": f"{stem}_{uploaded:%Y%m%d_%H%M%S}_{file_id[:4]}.{ext}",
            size_field: size, "mime_type": mime, "storage_url": f"s3://chat4all-files/{file_id}",
            "uploaded_at": uploaded, "expires_at": uploaded + timedelta(hours=24), "scan_status": "CLEAN",
        })
    return out


def event_payload(message_id, conversation_id, sender_id, recipient_id, content, content_type, channel,
                  created_ns: int, camel: bool, event_type: str = "MESSAGE_CREATED") -> dict:
    """The message event a message was published as, in the profile's case."""
    keys = (("eventType", "messageId", "conversationId", "senderId", "recipientIds", "content", "contentType",
             "channel", "status", "timestamp", "metadata") if camel else
            ("event_type", "message_id", "conversation_id", "sender_id", "recipient_ids", "content",
             "content_type", "channel", "status", "timestamp", "metadata"))
    values = (event_type, message_id, conversation_id, sender_id, [recipient_id], content, content_type, channel,
              "PENDING", round(created_ns / 1e9, 6), {})
    return dict(zip(keys, values, strict=True))


def _json_bytes(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def kafka_records(ev: Evidence, profile: Profile | str | None = None) -> list[Record]:
    """Records for the message events topic (with a scenario's ``poison_record``, a record no
    consumer can read), the DLQ topics and (deployed layout) status-updates."""
    prof = _profile(ev, profile)
    missing = set((ev.scenario or {}).get("missing_topics", []))
    camel = prof.kafka.event_case == "camelCase"
    records: list[Record] = []
    topic = prof.kafka.message_events
    m = ev.table("messages")
    cols = ["message_id", "conversation_id", "sender_id", "recipient_id", "content", "content_type", "channel"]
    created_ns = m["created_at"].astype("int64").tolist() if len(m) else []
    for (mid, conv, sender, rcpt, content, ctype, channel), ns in zip(zip(*_columns(m, cols), strict=True),
                                                                      created_ns, strict=True):
        key = conv.encode()
        value = event_payload(mid, conv, sender, rcpt, content, ctype, channel, ns, camel)
        records.append((topic.name, partition_for(key, topic.partitions), key, _json_bytes(value),
                        [("__TypeId__", _EVENT_CLASS.encode())], ns // 1_000_000))
    stray = (ev.scenario or {}).get("poison_record")
    if stray and ev.window.start <= pd.Timestamp(stray["timestamp"]) < ev.window.end:
        key = stray["key"].encode() if stray["key"] else None
        records.append((topic.name, int(stray["partition"]), key, stray["value"].encode(),
                        [("__TypeId__", _EVENT_CLASS.encode())], pd.Timestamp(stray["timestamp"]).value // 1_000_000))
    for r in ev.table("dlq_records").itertuples(index=False):
        headers = [(k, _header_bytes(k, v)) for k, v in json.loads(r.headers).items()]
        records.append((r.topic, int(r.partition), r.key.encode(), r.payload.encode("utf-8"), headers,
                        int(pd.Timestamp(r.timestamp).value // 1_000_000)))
    su = prof.kafka.status_updates
    if su is not None and su.name not in missing:
        se = ev.table("status_events")
        rows = se[~se["derived"].astype(bool) & se["new_status"].isin(["DELIVERED", "FAILED"])]
        for r in rows.itertuples(index=False):
            ms = int(pd.Timestamp(r.timestamp).value // 1_000_000)
            value = {"messageId": r.message_id, "status": r.new_status, "timestamp": ms,
                     "updatedBy": _none(r.updated_by)}
            key = r.message_id.encode()
            records.append((su.name, partition_for(key, su.partitions), key, _json_bytes(value),
                            [("__TypeId__", b"com.chat4all.common.event.StatusUpdateEvent")], ms))
    order = {name: i for i, name in enumerate(dict.fromkeys(rec[0] for rec in records))}
    return sorted(records, key=lambda rec: (order[rec[0]], rec[5]))


def _header_bytes(key: str, value: str) -> bytes:
    width = _INT_HEADERS.get(key)
    if width is not None:
        return int(value).to_bytes(width, "big", signed=True)
    return value.encode("utf-8")


def jaeger_v1(ev: Evidence) -> dict[str, Any]:
    """The spans as Jaeger's v1 ``/api/traces`` answer: ``{"data": [trace, ...], ...}``."""
    sp = ev.table("spans")
    start_us = (sp["start"].astype("int64") // 1000).tolist() if len(sp) else []
    duration_us = (sp["duration_ms"] * 1000).round().astype("int64").tolist() if len(sp) else []
    cols = ["trace_id", "span_id", "parent_span_id", "service", "operation", "kind", "error", "status_message",
            "http_method", "http_route", "http_status_code", "message_id", "tags", "logs"]
    traces: dict[str, dict] = {}
    pids: dict[str, dict[str, str]] = {}
    for (trace_id, span_id, parent, service, operation, kind, error, status, method, route, http, mid, extra,
         logs), start, duration in zip(zip(*_columns(sp, cols), strict=True), start_us, duration_us, strict=True):
        tr = traces.get(trace_id)
        if tr is None:
            tr = traces[trace_id] = {"traceID": trace_id, "spans": [], "processes": {}, "warnings": None}
            pids[trace_id] = {}
        pid = pids[trace_id].get(service)
        if pid is None:
            pid = pids[trace_id][service] = f"p{len(pids[trace_id]) + 1}"
            tr["processes"][pid] = {"serviceName": service, "tags": []}
        tags = [{"key": "span.kind", "type": "string", "value": kind}]
        if error:
            tags += [{"key": "error", "type": "bool", "value": True},
                     {"key": "otel.status_code", "type": "string", "value": "ERROR"}]
            if status is not None:
                tags.append({"key": "otel.status_description", "type": "string", "value": status})
        if method is not None:
            tags.append({"key": "http.method", "type": "string", "value": method})
        if route is not None:
            tags.append({"key": "http.url" if kind == "client" else "http.route", "type": "string", "value": route})
        if http is not None:
            tags.append({"key": "http.status_code", "type": "int64", "value": int(http)})
        if mid is not None:
            tags.append({"key": "message_id", "type": "string", "value": mid})
        tags.extend(_extra_tags(extra or "{}"))
        tr["spans"].append({
            "traceID": trace_id, "spanID": span_id, "operationName": operation,
            "references": [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": parent}] if parent else [],
            "startTime": start, "duration": duration, "tags": tags, "logs": json.loads(logs) if logs else [],
            "processID": pid, "warnings": None,
        })
    return {"data": list(traces.values()), "total": 0, "limit": 0, "offset": 0, "errors": None}


@lru_cache(maxsize=4096)
def _extra_tags(text: str) -> tuple[dict, ...]:
    """The ``tags`` JSON of a span as v1 tag objects (cached: most spans share their tags)."""
    return tuple({"key": k, "type": _tag_type(v), "value": v} for k, v in json.loads(text).items())


def _tag_type(v) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int64"
    if isinstance(v, float):
        return "float64"
    return "string"


def log_lines(ev: Evidence) -> dict[str, list[str]]:
    """Service -> the JSON lines it printed, in line order."""
    lg = ev.table("log_events")
    out: dict[str, list[str]] = defaultdict(list)
    ordered = lg.assign(_line=lg["source_ref"].astype("int64")).sort_values(["service", "_line"], kind="stable")
    for service, raw in zip(ordered["service"], ordered["raw"], strict=True):
        out[service].append(raw)
    return dict(out)


def redis_keys(ev: Evidence) -> list[tuple[str, str, float | None]]:
    """(key, value, ttl_s or None for a key without expiry)."""
    lk = ev.table("locks")
    return [(k, v, None if pd.isna(ttl) else float(ttl))
            for k, v, ttl in zip(lk["key"], lk["value"], lk["ttl_s"], strict=True)]


def postgres_rows(ev: Evidence, profile: Profile | str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Rows of the users table (contacts and agents) and the external identities table."""
    prof = _profile(ev, profile)
    id_col = prof.postgres.users_id_column
    ids = ev.table("identities")
    start = _dt(ev.window.start) - timedelta(days=30)
    users, seen = [], set()
    for r in ids.itertuples(index=False):
        if r.user_id not in seen:
            seen.add(r.user_id)
            users.append({id_col: r.user_id, "display_name": r.display_name, "user_type": "CUSTOMER",
                          "created_at": start})
    agents = ev.table("messages")["sender_id"].dropna().unique()
    for i, agent in enumerate(sorted(agents)):
        if agent not in seen:
            seen.add(agent)
            users.append({id_col: agent, "display_name": f"Agente {i + 1}", "user_type": "AGENT",
                          "email": f"agente{i + 1}@chat4all.example", "created_at": start})
    identities = [{"id": int(r.source_ref), "user_id": r.user_id, "platform": r.platform,
                   "platform_user_id": r.platform_user_id, "verified": bool(r.verified), "linked_at": start}
                  for r in ids.itertuples(index=False)]
    return {prof.postgres.users_table: users, prof.postgres.identities_table: identities}
