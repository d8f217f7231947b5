"""Canonical tables from simulated traffic: what MongoDB, Kafka, PostgreSQL and Redis would hold.

Everything here is vectorised over messages. What a source holds is what was *recorded*
before the capture time (the window end): a transition at time x is in MongoDB only if
x < end and no write of the message was lost before x (``Traffic.lost_from``).

Status model by flow (see ``Traffic.deployed_flow``):
- runbook flow: PENDING (derived) -> SENT (platform accepted) -> DELIVERED (receipt) -> READ;
  FAILED from PENDING (API error) or from SENT (webhook callback); history rows carry
  ``error_message``; writer (``updated_by``) is the channel's connector.
- deployed flow: PENDING (derived) -> DELIVERED or FAILED, written by router-service
  (callback failures DELIVERED -> FAILED by the connector); no SENT, no READ; history rows
  carry no ``error_message``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from forensics import schema
from forensics.simulate import population as pop
from forensics.simulate.columns import (
    MS,
    NAT,
    NS,
    bool_series,
    chunked,
    concat,
    const,
    fill,
    int_series,
    int_text,
    json_str,
    object_ids,
    rank_within,
    str_series,
    take,
    text,
    to_arrow,
    token_ids,
    ts_series,
    vocab_series,
)
from forensics.simulate.failures import (
    EXCEPTION,
    IS_CALLBACK,
    IS_TRANSPORT,
    KINDS,
    bodies,
    connector_url,
    stored_errors,
)
from forensics.simulate.traffic import Traffic
from forensics.sources.identity import format_valid
from forensics.sources.partitioner import partitions_for

STATUS = {s: i for i, s in enumerate(schema.STATUSES)}
PENDING, SENT, DELIVERED, READ, FAILED = (STATUS[s] for s in ("PENDING", "SENT", "DELIVERED", "READ", "FAILED"))
_EVENT_CLASS = "com.chat4all.common.event.MessageEvent"
_LISTENER_FAILED = "org.springframework.kafka.listener.ListenerExecutionFailedException"


def error_field(profile) -> str:
    """Where the profile's platform keeps ``error_message``: ``metadata`` or ``top-level``."""
    return "metadata" if profile.mongo.message_fields["error_message"][0].startswith("metadata.") else "top-level"


def failure_texts(t: Traffic) -> None:
    """Fill ``t.body`` (platform error body) and ``t.error_text`` (stored error) per failing message."""
    n = t.n
    t.body = np.full(n, None, dtype=object)
    t.error_text = np.full(n, None, dtype=object)
    kind = np.where(t.fail_kind >= 0, t.fail_kind, t.transient_kind)
    ch = t.channel
    services = t.profile.services
    for k in np.unique(kind[kind >= 0]):
        idx = np.flatnonzero(kind == k)
        fk = KINDS[k]
        body = bodies(t.rng, fk, len(idx))
        urls = np.array([connector_url(services.connector(pop.CHANNELS[c]), c) for c in range(3)],
                        dtype=object)[np.minimum(ch[idx], 2)]
        t.body[idx] = text(body)
        t.error_text[idx] = text(stored_errors(fk, body, urls))


# -- what MongoDB recorded ------------------------------------------------------------------

def transitions(t: Traffic) -> dict[str, np.ndarray]:
    """Every status transition that reached MongoDB, in time order (initial PENDING excluded).

    Returns arrays msg, time, new, old, in_history (False for the history-gap rows).
    """
    end = t.end_ns
    parts = []
    if not t.deployed_flow:
        parts += [(t.ack, SENT), (t.delivered, DELIVERED), (t.read, READ)]
    else:
        parts += [(t.delivered, DELIVERED)]
    parts += [(t.failed, FAILED), (t.duplicate_at, DELIVERED)]
    msgs, times, codes = [], [], []
    lost = np.where(t.lost_from == NAT, np.iinfo(np.int64).max, t.lost_from)
    for arr, code in parts:
        ok = (arr != NAT) & (arr < end) & (arr < lost)
        idx = np.flatnonzero(ok)
        msgs.append(idx)
        times.append(arr[idx])
        codes.append(np.full(len(idx), code, dtype=np.int8))
    msg = np.concatenate(msgs)
    time = np.concatenate(times)
    new = np.concatenate(codes)
    order = np.lexsort((time, msg))
    msg, time, new = msg[order], time[order], new[order]
    first = np.ones(len(msg), dtype=bool)
    first[1:] = msg[1:] != msg[:-1]
    old = np.empty(len(msg), dtype=np.int8)
    old[0:1] = PENDING
    old[1:] = new[:-1]
    old[first] = PENDING
    last = np.ones(len(msg), dtype=bool)
    last[:-1] = msg[:-1] != msg[1:]
    in_history = ~(last & t.history_gap[msg] & (new == DELIVERED))
    return {"msg": msg, "time": time, "new": new, "old": old, "in_history": in_history, "last": last}


def messages(t: Traffic, tr: dict[str, np.ndarray]) -> pd.DataFrame:
    """The ``messages`` table: one row per message document as it stood at capture time."""
    n = t.n
    status = np.full(n, PENDING, dtype=np.int8)
    updated = t.created.copy()
    last = tr["last"]
    status[tr["msg"][last]] = tr["new"][last]
    updated[tr["msg"][last]] = tr["time"][last]
    ch = t.channel
    has_file = t.content_type != pop.TEXT
    failed = status == FAILED
    accepted = (t.ack != NAT) & (t.ack < t.end_ns) & (ch != pop.INTERNAL) & np.isin(status, (SENT, DELIVERED, READ))
    message_id = str_series(t.msg_ids)
    frame = {
        "message_id": message_id,
        "conversation_id": str_series(t.conv_ids[t.conv]),
        "sender_id": str_series(t.sender_ids[t.conv_sender[t.conv]]),
        "recipient_id": str_series(take(t.recipients.platform_id, t.recipient)),
        "recipient_count": int_series(t.conv_recipient_count[t.conv]),
        "channel": vocab_series(pop.CHANNELS, ch),
        "content_type": vocab_series(pop.CONTENT_TYPES, t.content_type),
        "content": vocab_series(t.vocab, t.content_code),
        "content_length": int_series(t.content_length),
        "file_id": str_series(t.file_ids, mask=~has_file),
        "file_size": int_series(np.maximum(t.file_size, 0), mask=~has_file),
        "status": vocab_series(schema.STATUSES, status),
        "created_at": ts_series(t.created),
        "updated_at": ts_series(updated),
        "retry_count": int_series(t.retries),
        "error_message": str_series(np.where(failed, t.error_text, None)),
        "error_field": vocab_series([error_field(t.profile)], np.where(failed, 0, -1)),
        "platform_message_id": str_series(t.platform_ids, mask=~accepted),
        "source": str_series(const("mongodb", n)),
        "source_object": str_series(const(t.profile.mongo.collections["messages"], n)),
        "source_ref": message_id,
    }
    t.status = status
    return _conform("messages", frame)


def platform_message_ids(t: Traffic) -> pa.Array:
    """Ids the platforms give accepted messages: wamid.*, Telegram message ids, Instagram m_* (null
    for INTERNAL)."""
    ch = t.channel
    rng = np.random.default_rng(t.rng.integers(2**63))
    parts, order = [], []
    for c, make in ((pop.WA, lambda k: concat("wamid.HBgM", token_ids(rng, k, 30), "==")),
                    (pop.TG, lambda k: int_text(rng.integers(100, 999_999, k))),
                    (pop.IG, lambda k: concat("m_", token_ids(rng, k, 32)))):
        idx = np.flatnonzero(ch == c)
        parts.append(make(len(idx)))
        order.append(idx)
    rest = np.flatnonzero(ch == pop.INTERNAL)
    parts.append(pa.nulls(len(rest), pa.large_string()))
    order.append(rest)
    position = np.empty(t.n, dtype=np.int64)
    position[np.concatenate(order)] = np.arange(t.n)
    return pa.concat_arrays(parts).take(pa.array(position))


def status_events(t: Traffic, tr: dict[str, np.ndarray], messages_frame: pd.DataFrame) -> pd.DataFrame:
    """The derived initial PENDING of every message, then the history rows MongoDB holds.

    Rows: first one derived PENDING per message (``derived=True``, in creation order, sharing
    the messages table's buffers), then the history rows in time order, as the
    collection returns them in insertion order (per period of ``t.cuts_ns`` first).
    """
    prof = t.profile
    keep = tr["in_history"]
    msg, time, new, old = tr["msg"][keep], tr["time"][keep], tr["new"][keep], tr["old"][keep]
    period = np.searchsorted(np.asarray(t.cuts_ns, dtype=np.int64), t.created[msg], side="right")
    order = np.lexsort((msg, time, period))
    msg, time, new, old = msg[order], time[order], new[order], old[order]
    t.history_msg = msg
    n, h = t.n, len(msg)
    ch = t.channel[msg]
    services = [prof.services.router] + [prof.services.connector(c) for c in pop.CHANNELS[:3]]
    conn_code = np.where(ch == pop.INTERNAL, 0, ch + 1)
    fk = t.fail_kind[msg]
    transport = (fk >= 0) & IS_TRANSPORT[np.maximum(fk, 0)]
    if t.deployed_flow:
        callback_fail = (new == FAILED) & (fk >= 0) & IS_CALLBACK[np.maximum(fk, 0)]
        writer = np.where(callback_fail, conn_code, 0)
        err = const(None, h)
    else:
        writer = np.where(transport & (new == FAILED), 0, conn_code)
        err = to_arrow(np.where(new == FAILED, t.error_text[msg], None))
    m = messages_frame
    frame = {
        "message_id": str_series(chunked(m["message_id"], t.msg_ids[msg])),
        "conversation_id": str_series(chunked(m["conversation_id"], t.conv_ids[t.conv[msg]])),
        "channel": str_series(chunked(m["channel"], take(m["channel"], msg))),
        "old_status": str_series(chunked(const(None, n), vocab_series(schema.STATUSES, old))),
        "new_status": str_series(chunked(const("PENDING", n), vocab_series(schema.STATUSES, new))),
        "timestamp": ts_series(np.concatenate([t.created, time])),
        "updated_by": str_series(chunked(const(None, n), vocab_series(services, writer))),
        "error_message": str_series(chunked(const(None, n), err)),
        "derived": bool_series(np.concatenate([np.ones(n, bool), np.zeros(h, bool)])),
        "source": str_series(const("mongodb", n + h)),
        "source_object": str_series(chunked(m["source_object"], const(prof.mongo.collections["status_history"], h))),
        "source_ref": str_series(chunked(m["message_id"], object_ids(t.rng, time))),
    }
    return _conform("status_events", frame)


# -- what Kafka holds -----------------------------------------------------------------------

def outbound_partitions(t: Traffic) -> tuple[np.ndarray, np.ndarray]:
    """(partition, offset) of each message's record on its channel's outbound topic (runbook flow;
    -1 where the channel has none). Computed once per traffic."""
    if t.out_partition is None:
        n = t.n
        part = np.full(n, -1, dtype=np.int32)
        off = np.full(n, -1, dtype=np.int64)
        for c in range(3):
            topic = t.profile.kafka.outbound_for(pop.CHANNELS[c])
            if topic is None:
                continue
            sel = np.flatnonzero(t.channel == c)
            p = partitions_for(t.conv_ids, topic.partitions)[t.conv[sel]]
            part[sel] = p
            off[sel] = t.rng.integers(10_000, 2_000_000, topic.partitions)[p] + rank_within(p, t.routed[sel])
        t.out_partition, t.out_offset = part, off
    return t.out_partition, t.out_offset


def event_payloads(t: Traffic, idx: np.ndarray, event_type: str = "MESSAGE_CREATED") -> np.ndarray:
    """The message event JSON of messages ``idx`` in the profile's case (camelCase or snake_case)."""
    camel = t.profile.kafka.event_case == "camelCase"
    keys = (("eventType", "messageId", "conversationId", "senderId", "recipientIds", "content", "contentType",
             "channel", "status", "timestamp", "metadata") if camel else
            ("event_type", "message_id", "conversation_id", "sender_id", "recipient_ids", "content", "content_type",
             "channel", "status", "timestamp", "metadata"))
    escaped = json_str(t.vocab)
    ch = t.channel[idx]
    secs = t.created[idx] / NS
    ts = np.char.mod("%.6f", secs).astype(object)
    rcpt = json_str(t.recipients.platform_id[t.recipient[idx]])
    return concat(
        f'{{"{keys[0]}":"{event_type}","{keys[1]}":"', t.msg_ids[idx],
        f'","{keys[2]}":"', t.conv_ids[t.conv[idx]],
        f'","{keys[3]}":"', t.sender_ids[t.conv_sender[t.conv[idx]]],
        f'","{keys[4]}":[', rcpt,
        f'],"{keys[5]}":', escaped[t.content_code[idx]],
        f',"{keys[6]}":"', np.array(pop.CONTENT_TYPES, dtype=object)[t.content_type[idx]],
        f'","{keys[7]}":"', np.array(pop.CHANNELS, dtype=object)[ch],
        f'","{keys[8]}":"PENDING","{keys[9]}":', ts,
        f',"{keys[10]}":{{}}}}',
    )


def dlq_records(t: Traffic) -> pd.DataFrame:
    """One dead-letter record per failed message, as Spring's DeadLetterPublishingRecoverer writes it.

    Key = message id; partition = murmur2(key) on the channel's DLQ topic; offsets increase
    per partition in time order. Headers hold the kafka_dlt-* values as decoded strings.
    """
    prof = t.profile
    idx = np.flatnonzero((t.failed != NAT) & (t.failed < t.end_ns))
    if not len(idx):
        return schema.empty("dlq_records")
    idx = idx[np.argsort(t.failed[idx], kind="stable")]
    ch = t.channel[idx]
    # Only connector channels fail, and each has a DLQ topic in every profile.
    topics = {c: prof.kafka.dlq_for(pop.CHANNELS[c]) for c in np.unique(ch)}
    topic_names = sorted({tp.name for tp in topics.values()})
    code_of = np.full(len(pop.CHANNELS), -1, dtype=np.int32)
    for c, tp in topics.items():
        code_of[c] = topic_names.index(tp.name)
    topic_code = code_of[ch]
    partition = np.empty(len(idx), dtype=np.int32)
    offset = np.empty(len(idx), dtype=np.int64)
    rng = t.rng
    for j, name in enumerate(topic_names):
        sel = np.flatnonzero(topic_code == j)
        parts = next(tp.partitions for tp in topics.values() if tp.name == name)
        p = partitions_for(t.msg_ids[idx[sel]], parts)
        partition[sel] = p
        offset[sel] = rng.integers(0, 5_000, parts)[p] + rank_within(p, np.arange(len(sel)))
    ts = t.failed[idx] + 5 * MS
    if t.deployed_flow:
        orig_topic = np.full(len(idx), prof.kafka.message_events.name, dtype=object)
        orig_part, orig_off, orig_ts = t.event_partition[idx], t.event_offset[idx], t.created[idx] + 2 * MS
        group = prof.kafka.router_group
    else:
        op, oo = outbound_partitions(t)
        names = np.array([(prof.kafka.outbound_for(c).name if prof.kafka.outbound_for(c) else "")
                          for c in pop.CHANNELS], dtype=object)
        orig_topic = names[ch]
        orig_part, orig_off, orig_ts = op[idx], oo[idx], t.routed[idx] + 3 * MS
        groups = prof.kafka.consumer_groups.get("connectors") or {}
        group = np.array([groups.get(c, prof.kafka.router_group) for c in pop.CHANNELS], dtype=object)[ch]
    cause = EXCEPTION[t.fail_kind[idx]]
    err = t.error_text[idx]
    stack = concat(cause, ": ", err, "\n\tat com.chat4all.router.service.ConnectorClient.send(ConnectorClient.java:87)"
                   "\n\tat com.chat4all.router.consumer.MessageEventConsumer.consume(MessageEventConsumer.java:54)")
    orig_ms = orig_ts // MS
    headers = concat(
        '{"__TypeId__":"', _EVENT_CLASS,
        '","kafka_dlt-exception-fqcn":"', _LISTENER_FAILED,
        '","kafka_dlt-exception-cause-fqcn":"', cause,
        '","kafka_dlt-exception-message":', json_str(err),
        ',"kafka_dlt-exception-stacktrace":', json_str(stack),
        ',"kafka_dlt-original-topic":"', orig_topic,
        '","kafka_dlt-original-partition":"', int_text(orig_part),
        '","kafka_dlt-original-offset":"', int_text(orig_off),
        '","kafka_dlt-original-timestamp":"', int_text(orig_ms),
        '","kafka_dlt-original-timestamp-type":"CreateTime","kafka_dlt-original-consumer-group":"', group, '"}',
    )
    payload = event_payloads(t, idx)
    pay = pa.array(payload, type=pa.string())
    frame = {
        "topic": vocab_series(topic_names, topic_code),
        "partition": int_series(partition),
        "offset": int_series(offset),
        "timestamp": ts_series(ts),
        "key": str_series(t.msg_ids[idx]),
        "headers": str_series(headers),
        "original_topic": str_series(orig_topic),
        "original_partition": int_series(orig_part),
        "original_offset": int_series(orig_off),
        "original_timestamp": ts_series(orig_ms * MS),
        "exception_class": _LISTENER_FAILED,
        "exception_message": str_series(err),
        "message_id": str_series(t.msg_ids[idx]),
        "conversation_id": str_series(t.conv_ids[t.conv[idx]]),
        "channel": vocab_series(pop.CHANNELS, ch),
        "event_type": "MESSAGE_CREATED",
        "event_time": ts_series((t.created[idx] // 1000) * 1000),
        "payload": str_series(pay),
        "payload_bytes": int_series(pc.binary_length(pay).to_numpy(zero_copy_only=False)),
        "source": "kafka",
    }
    frame["source_object"] = frame["topic"]
    frame["source_ref"] = str_series(concat(int_text(partition), ":", int_text(offset)))
    return _conform("dlq_records", frame)


def consumer_lag(t: Traffic, missing_from: dict[str, int],
                 stray: list[tuple[int, int, int]] | tuple = ()) -> pd.DataFrame:
    """Per-minute lag of the router group on the message events topic (and, in the runbook flow,
    of each connector group on its outbound topic), consistent with the messages: end offset =
    events produced before the sample, committed offset = events the group finished before it.

    A topic in ``missing_from`` (name -> ns) has no rows from that time on: the group describes
    nothing for a topic that does not exist. ``stray``: records of the message events topic
    that are no message, (partition, time ns, offset), never consumed.
    """
    prof = t.profile
    samples = t.start_ns + np.arange(1, (t.end_ns - t.start_ns) // (60 * NS) + 1) * 60 * NS
    frames = []
    topic = prof.kafka.message_events
    done = np.where(t.routed == NAT, np.iinfo(np.int64).max, t.routed + 5 * MS)
    part, produced, offsets = t.event_partition, t.created + 2 * MS, t.event_offset
    if len(stray):
        s_part, s_time, s_offset = (np.array(col, dtype=np.int64) for col in zip(*stray, strict=True))
        part, produced = np.concatenate([part, s_part]), np.concatenate([produced, s_time])
        done, offsets = np.concatenate([done, np.full(len(s_part), np.iinfo(np.int64).max)]), np.concatenate(
            [offsets, s_offset])
    frames.append(_lag_rows(t, samples, prof.kafka.router_group, topic.name, topic.partitions,
                            part, produced, done, offsets, missing_from))
    connector_groups = prof.kafka.consumer_groups.get("connectors") or {}
    if not t.deployed_flow and connector_groups:
        op, oo = outbound_partitions(t)
        finished = np.minimum(np.where(t.ack == NAT, np.iinfo(np.int64).max, t.ack),
                              np.where(t.failed == NAT, np.iinfo(np.int64).max, t.failed))
        produced = np.where(t.publish_failed | (t.routed == NAT), np.iinfo(np.int64).max, t.routed + 3 * MS)
        for c in range(3):
            out = prof.kafka.outbound_for(pop.CHANNELS[c])
            group = connector_groups.get(pop.CHANNELS[c])
            if out is None or group is None:
                continue
            sel = np.flatnonzero(t.channel == c)
            frames.append(_lag_rows(t, samples, group, out.name, out.partitions, op[sel], produced[sel],
                                    finished[sel], oo[sel], missing_from))
    frame = pd.concat(frames, ignore_index=True)
    return _conform("consumer_lag", frame)


def _lag_rows(t, samples, group, topic, partitions, part, produced, finished, offsets, missing_from):
    rows_t, rows_p, end_o, com_o = [], [], [], []
    for p in range(partitions):  # partitions x samples, never per message
        m = part == p
        prod = np.sort(produced[m])
        fin = np.sort(np.maximum(finished[m], produced[m]))
        base = int(offsets[m].min()) if m.any() else 0
        rows_t.append(samples)
        rows_p.append(np.full(len(samples), p))
        end_o.append(base + np.searchsorted(prod, samples, side="left"))
        com_o.append(base + np.searchsorted(fin, samples, side="left"))
    sampled = np.concatenate(rows_t)
    keep = sampled < missing_from.get(topic, np.iinfo(np.int64).max)
    part_col = np.concatenate(rows_p)[keep]
    end_col = np.concatenate(end_o)[keep]
    com_col = np.concatenate(com_o)[keep]
    return pd.DataFrame({
        "sampled_at": ts_series(sampled[keep]),
        "group": group,
        "topic": topic,
        "partition": int_series(part_col),
        "committed_offset": int_series(com_col),
        "end_offset": int_series(end_col),
        "lag": int_series(end_col - com_col),
        "source": "kafka",
        "source_object": group,
        "source_ref": str_series(concat(f"{topic}:", int_text(part_col))),
    })


def topics(t: Traffic, missing_from: dict[str, int], at_ns: tuple[int, ...] = ()) -> list[pd.DataFrame]:
    """The topic inventory as the Kafka source takes it at each time of ``at_ns`` (default: the
    traffic's end): one row per topic the profile expects (role, channel, present, partitions,
    retention), missing ones present=False."""
    kafka = t.profile.kafka
    roles = [("message_events", kafka.message_events), *(("outbound", tp) for tp in kafka.outbound)]
    if kafka.status_updates is not None:
        roles.append(("status_updates", kafka.status_updates))
    roles += [("dlq", tp) for tp in kafka.dlq]
    out = []
    for end in at_ns or (t.end_ns,):
        rows = []
        for role, tp in roles:
            present = missing_from.get(tp.name, np.iinfo(np.int64).max) > end
            rows.append({
                "sampled_at": pd.Timestamp(end, unit="ns", tz="UTC"), "topic": tp.name, "role": role,
                "channel": tp.channel, "present": present, "expected_partitions": tp.partitions,
                "partitions": tp.partitions if present else None, "partitions_match": True if present else None,
                "retention_ms": (1_209_600_000 if role == "dlq" else 604_800_000) if present else None,
                "cleanup_policy": "delete" if present else None,
                "source": "kafka", "source_object": tp.name, "source_ref": tp.name,
            })
        frame = pd.DataFrame(rows)
        out.append(_conform("topics", frame.astype({"partitions": "Int64", "retention_ms": "Int64",
                                                    "partitions_match": "boolean"})))
    return out


# -- PostgreSQL and Redis ---------------------------------------------------------------------

def identities(t: Traffic) -> pd.DataFrame:
    """external_identities joined to users, one row per external recipient."""
    r = t.recipients
    ext = np.flatnonzero(r.channel != pop.INTERNAL)
    platform = vocab_series(pop.CHANNELS, r.channel[ext])
    pid = str_series(r.platform_id[ext])
    valid = format_valid(platform, pid).fillna(False).to_numpy(dtype=bool)
    frame = {
        "user_id": str_series(r.user_id[ext]),
        "platform": platform,
        "platform_user_id": pid,
        "verified": bool_series(r.verified[ext]),
        "display_name": str_series(r.display_name[ext]),
        "format_valid": bool_series(valid),
        "source": "postgres",
        "source_object": t.profile.postgres.identities_table,
        "source_ref": str_series(int_text(np.arange(1, len(ext) + 1))),
    }
    return _conform("identities", frame)


def locks(t: Traffic, extra: list[dict], at_ns: tuple[int, ...] = ()) -> list[pd.DataFrame]:
    """Redis keys as a capture at each time of ``at_ns`` (default: the traffic's end) would see
    them: processed markers, idempotency keys, live conversation locks, rate-limit counters,
    plus the scenario's own keys (``extra``: dicts of columns, ``set_at`` ns: left out of a
    capture before it). The random draws are made once, so every capture shows the same
    keys of a message."""
    rd = t.profile.redis
    keep_failed = t.rng.random(t.n) < 0.7
    idem = np.flatnonzero(t.rng.random(t.n) < 0.2)
    out = []
    for end in at_ns or (t.end_ns,):
        frames = []
        # router:processed:{id}: set when the router finished a message (delivered or failed); most
        # FAILED ones keep it, which is what silently swallows a manual replay.
        finished = np.where(t.failed != NAT, t.failed, t.ack)
        proc = (finished != NAT) & (finished < end) & ((t.failed == NAT) | keep_failed)
        idx = np.flatnonzero(proc)
        frames.append(_keys(t, rd.processed, "processed", idx, rd.processed_ttl_s - (end - finished[idx]) / NS, "1",
                            end))
        # idempotency:message:{id} for the share of API calls that sent an Idempotency-Key (24 h).
        sent = idem[t.created[idem] < end]
        frames.append(_keys(t, rd.idempotency, "idempotency", sent, 86_400 - (end - t.created[sent]) / NS,
                            concat('{"status":"ACCEPTED","messageId":"', t.msg_ids[sent], '"}'), end))
        # conversation:lock:{conversation_id}: taken with SET NX EX when a message is routed and left
        # to expire, so every conversation routed in the last lock_ttl_s still holds one.
        busy = (t.routed != NAT) & (t.routed < end) & ((end - t.routed) / NS < rd.lock_ttl_s)
        lidx = np.flatnonzero(busy)[::-1]
        lidx = lidx[np.unique(t.conv[lidx], return_index=True)[1]]
        frames.append(_keys(t, rd.conversation_lock, "conversation_lock", lidx,
                            rd.lock_ttl_s - (end - t.routed[lidx]) / NS, f"{t.profile.services.router}-1", end))
        # ratelimit:user:{user_id}: requests per sender in the last minute, expiring a minute
        # after the first of them.
        recent = np.flatnonzero((t.created >= end - 60 * NS) & (t.created < end))
        senders, first, counts = np.unique(t.conv_sender[t.conv[recent]], return_index=True, return_counts=True)
        if len(senders):
            keys = fill(rd.ratelimit, user_id=t.sender_ids[senders])
            frames.append(_frame(keys, "ratelimit", None, None, 60.0 - (end - t.created[recent[first]]) / NS,
                                 int_text(counts), end, rd.ratelimit))
        for row in extra:
            if row.get("set_at", end) <= end:
                frames.append(_frame(np.array(row["key"], dtype=object), row["kind"],
                                     np.array(row.get("conversation_id"), dtype=object),
                                     np.array(row.get("message_id"), dtype=object), np.array(row["ttl_s"], dtype=float),
                                     np.array(row["value"], dtype=object), end, row["pattern"]))
        out.append(_conform("locks", pd.concat(frames, ignore_index=True)))
    return out


def _keys(t: Traffic, pattern: str, kind: str, idx: np.ndarray, ttl: np.ndarray, value, at_ns: int) -> pd.DataFrame:
    if "{conversation_id}" in pattern:
        conv = t.conv_ids[t.conv[idx]]
        return _frame(fill(pattern, conversation_id=conv), kind, conv, None, ttl, value, at_ns, pattern)
    mid = t.msg_ids[idx]
    return _frame(fill(pattern, message_id=mid), kind, None, mid, ttl, value, at_ns, pattern)


def _frame(keys, kind, conv, mid, ttl, value, sampled_ns, pattern) -> pd.DataFrame:
    n = len(keys)
    key = str_series(keys)
    return pd.DataFrame({
        "key": key,
        "kind": str_series(const(kind, n)),
        "conversation_id": str_series(const(None, n) if conv is None else conv),
        "message_id": str_series(const(None, n) if mid is None else mid),
        "ttl_s": np.round(np.asarray(ttl, dtype=float), 3),
        "value": str_series(const(value, n) if isinstance(value, str) else value),
        "sampled_at": ts_series(np.full(n, sampled_ns, dtype=np.int64)),
        "source": str_series(const("redis", n)),
        "source_object": str_series(const(pattern, n)),
        "source_ref": key,
    })


def _conform(name: str, frame) -> pd.DataFrame:
    # Evidence.put validates; conform is enough here.
    return schema.conform(name, frame)
