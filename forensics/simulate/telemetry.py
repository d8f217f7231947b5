"""Spans and log lines for a bounded sample of the traffic, so the big tables stay vectorised.

Sampling (recorded in ``Evidence.sources["simulator"]["sampling"]``):
- *detail sample*: at most ``detail_sample`` messages (default 20 000). Up to half of it is
  drawn from the messages the incident touched (failed, retried, stalled, duplicated,
  lost writes), the rest at random. These messages get full traces and INFO log lines.
  Below the cap every message is in it.
- *failure sample*: at most ``failure_sample`` messages (default 20 000) among those that
  met a platform error; each gets one log line per failed attempt (connector and router)
  and the final "Message delivery failed after retries" line.
- Incident lines not tied to one message (rebalance, Kafka connection errors, MongoDB
  monitor errors, metadata warnings) come from the scenario and are never sampled.

Traces follow the deployed platform: trace context does not cross Kafka, so each hop is
its own trace (ingest: api-gateway -> message-service -> MongoDB insert + Kafka publish;
route: router consume -> connector call(s) -> platform API; status: the MongoDB writes of
the final status; webhooks: api-gateway -> connector with ``webhook=true``). Spans carry a
``message_id`` tag only on a ``message_id_tag_fraction`` of the sampled messages.

Logs are logback JSON lines (``timestamp``, ``level``, ``thread``, ``logger``, ``message``,
``stack_trace``, ``app_name``); the canonical columns and the ``raw`` line say the same.
Rows of one service are numbered in time order: ``source_ref`` is the line number in
``docker logs chat4all-<service>`` (``source_object``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from forensics import schema
from forensics.simulate import population as pop
from forensics.simulate.columns import (
    MS,
    NAT,
    NS,
    bool_series,
    concat,
    hex_ids,
    int_series,
    int_text,
    iso_ms,
    json_str,
    lognormal_s,
    str_series,
    text,
    ts_series,
    where,
)
from forensics.simulate.failures import (
    ATTEMPT_S,
    BACKOFF_S,
    HTTP_STATUS,
    IS_API,
    IS_CALLBACK,
    IS_TRANSPORT,
    PLATFORM_HOSTS,
    PLATFORM_NAMES,
    PLATFORM_URLS,
    RATE_LIMITED,
    RETRY_AFTER_IN_BODY,
    RETRYABLE,
    connector_url,
)
from forensics.simulate.traffic import MAX_RETRIES, Traffic

DETAIL_SAMPLE = 20_000
FAILURE_SAMPLE = 20_000
LISTENER_THREAD = "org.springframework.kafka.KafkaListenerEndpointContainer#0-0-C-1"
MONGO_TIMEOUT = ("com.mongodb.MongoTimeoutException: Timed out after 30000 ms while waiting for a server that "
                 "matches WritableServerSelector. Client view of cluster state is {type=REPLICA_SET, "
                 "servers=[{address=mongodb:27017, type=UNKNOWN, state=CONNECTING, "
                 "exception={com.mongodb.MongoSocketReadTimeoutException: Timeout while receiving message}}]")
MONGO_STACK = (MONGO_TIMEOUT + "\n\tat com.mongodb.internal.connection.BaseCluster.createTimeoutException"
               "(BaseCluster.java:380)\n\tat com.mongodb.internal.connection.BaseCluster.selectServer"
               "(BaseCluster.java:125)\n\tat org.springframework.data.mongodb.core.MongoTemplate.doUpdate"
               "(MongoTemplate.java:1717)\n\tat com.chat4all.message.service.MessageService.updateStatus"
               "(MessageService.java:142)")
SOCKET_TIMEOUT = "com.mongodb.MongoSocketReadTimeoutException: Timeout while receiving message"
_CONNECTOR_PKG = {pop.WA: "whatsapp", pop.TG: "telegram", pop.IG: "instagram"}


def topic_timeout(topic: str) -> str:
    return f"Topic {topic} not present in metadata after 60000 ms."


# -- samples --------------------------------------------------------------------------------

@dataclass
class Samples:
    detail: np.ndarray
    failure: np.ndarray
    tagged: np.ndarray
    """Per message: its spans carry a message_id tag."""


def choose_samples(t: Traffic, rng: np.random.Generator, detail_cap: int, failure_cap: int,
                   tag_fraction: float) -> Samples:
    touched = ((t.fail_kind >= 0) | (t.transient_kind >= 0) | (t.duplicate_at != NAT) | (t.lost_from != NAT)
               | t.publish_failed | t.history_gap)
    if t.n <= detail_cap:
        detail = np.arange(t.n)
    else:
        hot = np.flatnonzero(touched)
        hot = rng.choice(hot, min(len(hot), detail_cap // 2), replace=False) if len(hot) else hot
        rest = np.setdiff1d(np.arange(t.n), hot, assume_unique=True)
        detail = np.sort(np.concatenate([hot, rng.choice(rest, detail_cap - len(hot), replace=False)]))
    failing = np.flatnonzero((t.fail_kind >= 0) | (t.transient_kind >= 0))
    if len(failing) > failure_cap:
        failing = np.sort(rng.choice(failing, failure_cap, replace=False))
    return Samples(detail, failing, rng.random(t.n) < tag_fraction)


# -- spans ----------------------------------------------------------------------------------

class SpanSink:
    """Accumulates blocks of spans (equal-length column arrays) and builds the ``spans`` table."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.blocks: list[dict] = []

    def add(self, trace, parent, service, operation, kind, start, duration, *, error=None, status=None,
            method=None, route=None, http=None, message_id=None, tags=None, keep=None) -> np.ndarray:
        """Add one span per element; returns their span ids (``S16``). ``keep`` False drops a row."""
        m = len(trace)
        span_ids = hex_ids(self.rng, m, 8)
        block = {
            "trace_id": trace, "span_id": span_ids,
            "parent_span_id": parent if parent is not None else np.full(m, None, dtype=object),
            "service": _full(service, m), "operation": _full(operation, m), "kind": _full(kind, m),
            "start": _ints(start, m), "duration": _ints(duration, m),
            "error": np.zeros(m, bool) if error is None else np.broadcast_to(np.asarray(error, dtype=bool), (m,)),
            "status_message": _full(status, m), "http_method": _full(method, m), "http_route": _full(route, m),
            "http_status_code": _ints(-1 if http is None else http, m),
            "message_id": _full(message_id, m), "tags": _full(tags if tags is not None else "{}", m),
        }
        if keep is not None:
            keep = np.asarray(keep, dtype=bool)
            block = {k: v[keep] for k, v in block.items()}
        self.blocks.append(block)
        return span_ids

    def frame(self) -> pd.DataFrame:
        if not self.blocks:
            return schema.empty("spans")
        cols = {k: np.concatenate([b[k] for b in self.blocks]) for k in self.blocks[0]}
        order = np.lexsort((cols["start"], cols["trace_id"]))
        cols = {k: v[order] for k, v in cols.items()}
        error = cols["error"]
        start_us = cols["start"] // 1000
        logs = where(error, concat('[{"timestamp":', int_text(start_us + cols["duration"] // 1000),
                                   ',"fields":[{"key":"event","type":"string","value":"exception"},'
                                   '{"key":"exception.message","type":"string","value":',
                                   json_str(np.where(error, cols["status_message"], "")), "}]}]"))
        trace = str_series(cols["trace_id"])
        frame = {
            "trace_id": trace,
            "span_id": str_series(cols["span_id"]),
            "parent_span_id": str_series(text(cols["parent_span_id"])),
            "service": str_series(cols["service"]),
            "operation": str_series(cols["operation"]),
            "kind": str_series(cols["kind"]),
            "start": ts_series(start_us * 1000),
            "duration_ms": (cols["duration"] // 1000) / 1000.0,
            "end": ts_series((start_us + cols["duration"] // 1000) * 1000),
            "error": bool_series(error),
            "status_message": str_series(np.where(error, cols["status_message"], None)),
            "http_method": str_series(cols["http_method"]),
            "http_route": str_series(cols["http_route"]),
            "http_status_code": int_series(cols["http_status_code"], mask=cols["http_status_code"] < 0),
            "message_id": str_series(text(cols["message_id"])),
            "tags": str_series(cols["tags"]),
            "logs": str_series(logs),
            "warnings": str_series(np.full(len(error), None, dtype=object)),
            "source": "jaeger",
            "source_object": str_series(cols["service"]),
            "source_ref": trace,
        }
        return schema.conform("spans", frame)


def _ints(value, m: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=np.int64), (m,))


def _full(value, m: int) -> np.ndarray:
    if value is None or isinstance(value, str):
        return np.full(m, value, dtype=object)
    return text(value)


def tags(**pairs) -> np.ndarray | str:
    """A JSON object per row from scalars and arrays (ints unquoted, bools as true/false)."""
    parts: list = ["{"]
    for i, (key, v) in enumerate(pairs.items()):
        parts.append(("," if i else "") + json.dumps(key) + ":")
        if isinstance(v, bool):
            parts.append("true" if v else "false")
        elif isinstance(v, (int, float)):
            parts.append(str(v))
        elif isinstance(v, str):
            parts.append(json.dumps(v))
        elif v.dtype.kind in "iu":
            parts.append(int_text(v))
        elif v.dtype.kind == "S":
            parts.extend(['"', text(v), '"'])
        else:
            parts.append(json_str(v))
    parts.append("}")
    if all(isinstance(p, str) for p in parts):
        return "".join(parts)
    return concat(*parts)


def build_spans(t: Traffic, s: Samples, rng: np.random.Generator, router_down_from: int | None,
                mongo_trouble: tuple[int, int] | None) -> pd.DataFrame:
    """Spans of the detail sample's traces (see the module docstring for the hops)."""
    prof, sv = t.profile, t.profile.services
    sink = SpanSink(rng)
    end = t.end_ns
    idx = s.detail
    m = len(idx)
    ch = t.channel
    mid = t.msg_ids
    tagged = s.tagged
    db = prof.mongo.database
    coll = prof.mongo.collections

    def mid_tag(i):
        return np.where(tagged[i], text(mid[i]), None)

    # Ingest: api-gateway -> message-service -> MongoDB insert, Kafka publish.
    created = t.created[idx]
    tr = hex_ids(rng, m, 16)
    gw_start = created - lognormal_s(rng, 0.008, 0.3, m)
    ms_dur = lognormal_s(rng, 0.012, 0.4, m)
    gw = sink.add(tr, None, sv.api_gateway, "POST /api/messages", "server", gw_start,
                  (created - gw_start) + ms_dur + 4 * MS, method="POST", route="/api/messages",
                  http=np.full(m, 202), tags=tags(**{"http.scheme": "http", "net.host.name": "api-gateway"}))
    srv = sink.add(tr, gw, sv.message_service, "POST /api/messages", "server", gw_start + 2 * MS,
                   (created - gw_start) + ms_dur, method="POST", route="/api/messages", http=np.full(m, 202),
                   message_id=mid_tag(idx))
    sink.add(tr, srv, sv.message_service, f"insert {db}.{coll['messages']}", "client", created,
             lognormal_s(rng, 0.003, 0.4, m),
             tags=tags(**{"db.system": "mongodb", "db.name": db, "db.operation": "insert",
                          "db.mongodb.collection": coll["messages"], "net.peer.name": "mongodb",
                          "net.peer.port": 27017}))
    topic = prof.kafka.message_events.name
    sink.add(tr, srv, sv.message_service, f"{topic} publish", "producer", created + 4 * MS,
             lognormal_s(rng, 0.002, 0.4, m),
             tags=tags(**{"messaging.system": "kafka", "messaging.destination.name": topic,
                          "messaging.kafka.destination.partition": t.event_partition[idx]}))

    _route_spans(t, sink, rng, idx, router_down_from, mid_tag)
    _status_spans(t, sink, rng, idx, mongo_trouble)

    # Webhooks: delivery receipts (runbook flow) and callback failures reach the connector.
    ext = ch[idx] != pop.INTERNAL
    cb = (t.fail_kind[idx] >= 0) & (t.failed[idx] != NAT) & (t.failed[idx] < end)
    cb &= IS_CALLBACK[np.maximum(t.fail_kind[idx], 0)]
    receipt = np.zeros(m, bool) if t.deployed_flow else ((t.delivered[idx] != NAT) & (t.delivered[idx] < end))
    hook = ext & (cb | receipt)
    w = idx[hook]
    if len(w):
        at = np.where(cb[hook], t.failed[w], t.delivered[w]) - 15 * MS
        trw = hex_ids(rng, len(w), 16)
        name = np.array([c.lower() for c in pop.CHANNELS], dtype=object)[ch[w]]
        route = concat("/api/connectors/", name, "/webhook")
        g = sink.add(trw, None, sv.api_gateway, concat("POST ", route), "server", at, 12 * MS, method="POST",
                     route=route, http=np.full(len(w), 200))
        conns = np.array([sv.connector(c) for c in pop.CHANNELS], dtype=object)[ch[w]]
        sink.add(trw, g, conns, "POST /webhook", "server", at + 2 * MS, 8 * MS, method="POST", route="/webhook",
                 http=np.full(len(w), 200), message_id=mid_tag(w), tags=tags(webhook=True))
    return sink.frame()


def _attempts(t: Traffic, idx: np.ndarray):
    """Per connector attempt of messages ``idx``: (message, attempt no, start, duration, failed, kind)."""
    final_fail = (t.fail_kind[idx] >= 0) & (t.failed[idx] != NAT)
    api_fail = final_fail & ~IS_CALLBACK[np.maximum(t.fail_kind[idx], 0)]
    # Failed attempts (retries) plus the last one, which succeeded unless the failure was final.
    reached = (t.ack[idx] != NAT) | api_fail
    count = np.where(reached, t.retries[idx].astype(np.int64) + 1, 0)
    msg, start = t.attempt_times(idx, count)
    k = np.arange(len(msg)) - np.repeat(np.cumsum(count) - count, count)
    last = k == np.repeat(count, count) - 1
    kind = np.where(t.fail_kind[msg] >= 0, t.fail_kind[msg], t.transient_kind[msg])
    failed = (k < t.retries[msg]) | (last & np.repeat(api_fail, count))
    duration = np.where(failed, (ATTEMPT_S[np.maximum(kind, 0)] * NS).astype(np.int64), t.call_ns[msg])
    return msg, k, start, duration, failed, kind


def _route_spans(t, sink, rng, idx, router_down_from, mid_tag) -> None:
    """The router's consumer span per message, its connector calls (one per attempt) and the
    platform API calls; the status publish (deployed flow) or the outbound publish and the
    connector's own consumer trace (runbook flow); a second pass for duplicate deliveries."""
    prof, sv, end = t.profile, t.profile.services, t.end_ns
    ch = t.channel
    alive = np.iinfo(np.int64).max if router_down_from is None else router_down_from
    outcome = np.where(t.failed != NAT, t.failed, np.where(t.ack != NAT, t.ack, NAT))
    ok = (t.routed[idx] != NAT) & (t.routed[idx] < min(end, alive)) & ((outcome[idx] != NAT) | t.publish_failed[idx])
    r = idx[ok]
    if not len(r):
        return
    msg, k, start, dur, failed, kind = _attempts(t, r)
    stop = np.full(t.n, NAT, dtype=np.int64)
    np.maximum.at(stop, msg, start + dur)
    pub_topic = prof.kafka.status_updates.name if t.deployed_flow else None
    # Root: the router's consumer span on the message events topic.
    pub_at = np.where(t.publish_failed[r], t.publish_at[r], np.where(stop[r] != NAT, stop[r] + 2 * MS, t.routed[r]))
    pub_dur = np.where(t.publish_failed[r], 60_000 * MS, 2 * MS)
    root_end = np.maximum(pub_at + pub_dur, np.where(stop[r] != NAT, stop[r], 0)) + MS
    keep_root = root_end < end
    tr = hex_ids(rng, len(r), 16)
    topic = prof.kafka.message_events.name
    root = sink.add(tr, None, sv.router, f"{topic} process", "consumer", t.routed[r], root_end - t.routed[r],
                    message_id=mid_tag(r), keep=keep_root,
                    tags=tags(**{"messaging.system": "kafka", "messaging.destination.name": topic,
                                 "messaging.kafka.source.partition": t.event_partition[r],
                                 "messaging.kafka.message.offset": t.event_offset[r],
                                 "messaging.kafka.consumer.group": prof.kafka.router_group}))
    # Ids of dropped rows never reach the table; children of a dropped root are dropped too.
    pos = np.full(t.n, -1, dtype=np.int64)
    pos[r] = np.arange(len(r))
    kept = keep_root[pos[msg]]
    conn = np.array([sv.connector(c) for c in pop.CHANNELS], dtype=object)[ch[msg]]
    http = np.where(failed, HTTP_STATUS[np.maximum(kind, 0)], 200)
    transport = failed & IS_TRANSPORT[np.maximum(kind, 0)]
    err_text = np.where(failed, t.error_text[msg], None)
    body = np.where(failed, t.body[msg], None)
    platform_url = np.array([PLATFORM_URLS.get(c, "") for c in range(4)], dtype=object)[ch[msg]]
    external = ch[msg] != pop.INTERNAL
    if t.deployed_flow:
        url = np.array([connector_url(sv.connector(c), i) if i < 3 else "" for i, c in enumerate(pop.CHANNELS)],
                       dtype=object)[ch[msg]]
        client = sink.add(tr[pos[msg]], root[pos[msg]], sv.router, "POST", "client", start, dur,
                          error=failed, status=err_text, method="POST", route=url, http=http,
                          keep=kept & external, tags=tags(**{"net.peer.name": conn, "retry.attempt": k}))
        srv = sink.add(tr[pos[msg]], client, conn, "POST /api/v1/messages", "server", start + MS, dur - 2 * MS,
                       error=failed & ~transport, status=body, method="POST", route="/api/v1/messages", http=http,
                       message_id=mid_tag(msg), keep=kept & external & ~transport)
        sink.add(tr[pos[msg]], srv, conn, "POST", "client", start + 2 * MS, dur - 4 * MS, error=failed & ~transport,
                 status=body, method="POST", route=platform_url, http=http, keep=kept & external & ~transport,
                 tags=tags(**{"net.peer.name": np.array([PLATFORM_HOSTS.get(c, "") for c in range(4)],
                                                        dtype=object)[ch[msg]]}))
        pub_status = np.where(t.publish_failed[r], topic_timeout(pub_topic), None)
        sink.add(tr, root, sv.router, f"{pub_topic} publish", "producer", pub_at, pub_dur,
                 error=t.publish_failed[r], status=pub_status, keep=keep_root,
                 tags=tags(**{"messaging.system": "kafka", "messaging.destination.name": pub_topic}))
    else:
        out_names = np.array([(prof.kafka.outbound_for(c).name if prof.kafka.outbound_for(c) else "")
                              for c in pop.CHANNELS], dtype=object)
        out = out_names[ch[r]]
        produce_at = np.where(t.publish_failed[r], t.publish_at[r], t.routed[r] + 2 * MS)
        sink.add(tr, root, sv.router, concat(out, " publish"), "producer", produce_at, pub_dur,
                 error=t.publish_failed[r], status=where(t.publish_failed[r], concat("Topic ", out,
                 " not present in metadata after 60000 ms.")), keep=keep_root & (ch[r] != pop.INTERNAL),
                 tags=tags(**{"messaging.system": "kafka", "messaging.destination.name": out}))
        # The connector consumes the outbound topic in its own trace and calls the platform.
        consumed = (ch[r] != pop.INTERNAL) & ~t.publish_failed[r] & (stop[r] != NAT) & (stop[r] < end)
        trc = hex_ids(rng, len(r), 16)
        conn_r = np.array([sv.connector(c) for c in pop.CHANNELS], dtype=object)[ch[r]]
        c_start = t.first_attempt[r] - 2 * MS
        croot = sink.add(trc, None, conn_r, concat(out, " process"), "consumer", c_start,
                         np.where(consumed, stop[r] - c_start + MS, 0), message_id=mid_tag(r), keep=consumed,
                         tags=tags(**{"messaging.system": "kafka", "messaging.destination.name": out}))
        sink.add(trc[pos[msg]], croot[pos[msg]], conn, "POST", "client", start, dur, error=failed, status=np.where(
                 transport, err_text, body), method="POST", route=platform_url, http=http,
                 keep=consumed[pos[msg]] & external, tags=tags(**{"retry.attempt": k}))
    # Duplicate deliveries (rebalance): the new owner processes the event a second time.
    dup = r[(t.duplicate_at[r] != NAT) & (t.duplicate_at[r] < end)]
    if len(dup):
        lead = t.delivered[dup] - t.routed[dup]
        d_start = t.duplicate_at[dup] - lead
        trd = hex_ids(rng, len(dup), 16)
        droot = sink.add(trd, None, sv.router, f"{topic} process", "consumer", d_start, lead + MS,
                         message_id=mid_tag(dup),
                         tags=tags(**{"messaging.system": "kafka", "messaging.destination.name": topic,
                                      "messaging.kafka.source.partition": t.event_partition[dup],
                                      "messaging.kafka.message.offset": t.event_offset[dup],
                                      "messaging.kafka.consumer.group": prof.kafka.router_group}))
        dconn = np.array([sv.connector(c) for c in pop.CHANNELS], dtype=object)[ch[dup]]
        sink.add(trd, droot, dconn, "POST", "client", d_start + (t.first_attempt[dup] - t.routed[dup]),
                 t.call_ns[dup], method="POST",
                 route=np.array([PLATFORM_URLS.get(c, "") for c in range(4)], dtype=object)[ch[dup]],
                 http=np.full(len(dup), 200), keep=ch[dup] != pop.INTERNAL)


def _status_spans(t, sink, rng, idx, mongo_trouble) -> None:
    """The MongoDB writes of each sampled message's final status (DELIVERED or FAILED)."""
    prof, sv, end = t.profile, t.profile.services, t.end_ns
    db, coll = prof.mongo.database, prof.mongo.collections
    x = np.where(t.failed[idx] != NAT, t.failed[idx], t.delivered[idx])
    ok = (x != NAT) & (x < end) & ~t.publish_failed[idx]
    w = idx[ok]
    x = x[ok]
    if not len(w):
        return
    n = len(w)
    lost = (t.lost_from[w] != NAT) & (t.lost_from[w] <= x) & t.mongo_timeout[w]
    slow = np.zeros(n, bool) if mongo_trouble is None else (x >= mongo_trouble[0]) & (x < mongo_trouble[1])
    upd = np.where(lost, 30_000 * MS, np.where(slow, lognormal_s(rng, 1.5, 0.7, n), lognormal_s(rng, 0.003, 0.4, n)))
    gap = t.history_gap[w] & ~lost
    ins = np.where(gap, 10_000 * MS, np.where(slow, lognormal_s(rng, 1.0, 0.7, n), lognormal_s(rng, 0.003, 0.4, n)))
    total = upd + np.where(lost, 0, ins) + 4 * MS
    tr = hex_ids(rng, n, 16)
    keep = x + 3 * MS + total < end
    if t.deployed_flow:
        st = prof.kafka.status_updates.name
        root = sink.add(tr, None, sv.message_service, f"{st} process", "consumer", x + 3 * MS, total,
                        error=lost, status=np.where(lost, "MongoDB write failed: timeout", None), keep=keep,
                        tags=tags(**{"messaging.system": "kafka", "messaging.destination.name": st,
                                     "messaging.kafka.consumer.group": sv.message_service}))
    else:
        route = "/api/messages/{messageId}/status"
        root = sink.add(tr, None, sv.message_service, f"PUT {route}", "server", x + 3 * MS, total,
                        error=lost, status=np.where(lost, "MongoDB write failed: timeout", None), method="PUT",
                        route=route, http=np.where(lost, 500, 200), keep=keep)
    mongo_tags = {"db.system": "mongodb", "db.name": db, "net.peer.name": "mongodb", "net.peer.port": 27017}
    sink.add(tr, root, sv.message_service, f"update {db}.{coll['messages']}", "client", x + 4 * MS, upd,
             error=lost, status=np.where(lost, MONGO_TIMEOUT, None), keep=keep,
             tags=tags(**mongo_tags, **{"db.operation": "update", "db.mongodb.collection": coll["messages"]}))
    sink.add(tr, root, sv.message_service, f"insert {db}.{coll['status_history']}", "client", x + 4 * MS + upd, ins,
             error=gap, status=np.where(gap, SOCKET_TIMEOUT, None), keep=keep & ~lost,
             tags=tags(**mongo_tags, **{"db.operation": "insert", "db.mongodb.collection": coll["status_history"]}))


# -- logs -----------------------------------------------------------------------------------

@dataclass
class LogBlock:
    """Log lines of one service: equal-length arrays (scalars broadcast by ``log_block``)."""

    ts: np.ndarray
    service: str
    level: np.ndarray
    logger: np.ndarray
    thread: np.ndarray
    message: np.ndarray
    stack_trace: np.ndarray
    message_id: np.ndarray
    conversation_id: np.ndarray
    http_status: np.ndarray
    rate_limit: np.ndarray


def log_block(ts, service: str, level, logger, thread, message, *, stack_trace=None, message_id=None,
              conversation_id=None, http_status=None, rate_limit=None) -> LogBlock:
    ts = np.atleast_1d(np.asarray(ts, dtype=np.int64))
    m = len(ts)
    return LogBlock(ts, service, _full(level, m), _full(logger, m), _full(thread, m),
                    _full(message, m) if not isinstance(message, str) else np.full(m, message, dtype=object),
                    _full(stack_trace, m), _full(message_id, m), _full(conversation_id, m),
                    np.full(m, -1) if http_status is None else np.broadcast_to(np.asarray(http_status), (m,)),
                    _full(rate_limit, m))


def _threads(rng, prefix: str, m: int, pool: int = 10) -> np.ndarray:
    return concat(prefix, int_text(rng.integers(1, pool + 1, m)))


def message_logs(t: Traffic, s: Samples, rng: np.random.Generator, router_down_from: int | None) -> list[LogBlock]:
    """INFO lines for the detail sample, failure lines for the failure sample, and the lines
    that lost writes and failed publishes leave behind."""
    sv, end = t.profile.services, t.end_ns
    ch = t.channel
    chan = np.array(pop.CHANNELS, dtype=object)
    alive = np.iinfo(np.int64).max if router_down_from is None else router_down_from
    blocks: list[LogBlock] = []
    i = s.detail
    mid, conv = t.msg_ids, t.conv_ids[t.conv]
    at = t.created[i] + MS
    blocks.append(log_block(at, sv.message_service, "INFO", "com.chat4all.message.service.MessageService",
                            _threads(rng, "http-nio-8082-exec-", len(i)),
                            concat("Message created: messageId=", mid[i], ", conversationId=", conv[i], ", channel=",
                                   chan[ch[i]]), message_id=text(mid[i]), conversation_id=text(conv[i])))
    r = i[(t.routed[i] != NAT) & (t.routed[i] < min(end, alive))]
    blocks.append(log_block(t.routed[r], sv.router, "INFO", "com.chat4all.router.consumer.MessageEventConsumer",
                            LISTENER_THREAD,
                            concat("Routing message: messageId=", mid[r], ", channel=", chan[ch[r]], ", partition=",
                                   int_text(t.event_partition[r]), ", offset=", int_text(t.event_offset[r])),
                            message_id=text(mid[r]), conversation_id=text(conv[r])))
    pmid = t.platform_ids
    for c in pop.EXTERNAL:
        a = i[(ch[i] == c) & (t.ack[i] != NAT) & (t.ack[i] < end)]
        name, pkg = PLATFORM_NAMES[c], _CONNECTOR_PKG[c]
        ref = {pop.WA: "wamid", pop.TG: "telegramMessageId", pop.IG: "mid"}[c]
        times = [t.ack[a]]
        sel = [a]
        dup = a[(t.duplicate_at[a] != NAT) & (t.duplicate_at[a] < end)]
        times.append(t.duplicate_at[dup] - (t.delivered[dup] - t.ack[dup]))
        sel.append(dup)
        a2, ts2 = np.concatenate(sel), np.concatenate(times)
        blocks.append(log_block(ts2, sv.connector(pop.CHANNELS[c]), "INFO",
                                f"com.chat4all.connector.{pkg}.service.{name}Service",
                                _threads(rng, "http-nio-809" + str(c + 1) + "-exec-", len(a2)),
                                concat(f"[{name}] Message sent: messageId=", mid[a2], f", {ref}=",
                                       pmid.take(pa.array(a2, type=pa.int64()))),
                                message_id=text(mid[a2]), http_status=None))
        if not t.deployed_flow:
            d = i[(ch[i] == c) & (t.delivered[i] != NAT) & (t.delivered[i] < end)]
            blocks.append(log_block(t.delivered[d], sv.connector(pop.CHANNELS[c]), "INFO",
                                    f"com.chat4all.connector.{pkg}.webhook.{name}WebhookController",
                                    _threads(rng, "http-nio-809" + str(c + 1) + "-exec-", len(d)),
                                    concat(f"[{name}] Delivery receipt: messageId=", mid[d], ", status=DELIVERED"),
                                    message_id=text(mid[d])))
    blocks += callback_logs(t, i, rng)
    blocks += redelivery_logs(t, alive)
    lost = np.where(t.lost_from == NAT, np.iinfo(np.int64).max, t.lost_from)
    d = i[(t.delivered[i] != NAT) & (t.delivered[i] < end) & (t.delivered[i] < lost[i]) & ~t.publish_failed[i]]
    if t.deployed_flow:
        d_r = d[t.delivered[d] < alive]
        blocks.append(log_block(t.delivered[d_r] - MS, sv.router, "INFO",
                                "com.chat4all.router.service.StatusPublisher", LISTENER_THREAD,
                                concat("Status update published: messageId=", mid[d_r], ", status=DELIVERED"),
                                message_id=text(mid[d_r])))
    prev = "PENDING" if t.deployed_flow else "SENT"
    blocks.append(log_block(t.delivered[d] + 2 * MS, sv.message_service, "INFO",
                            "com.chat4all.message.service.MessageService",
                            "org.springframework.kafka.KafkaListenerEndpointContainer#1-0-C-1",
                            concat("Status updated: messageId=", mid[d], f", {prev} -> DELIVERED"),
                            message_id=text(mid[d])))
    blocks += failure_logs(t, s.failure, rng, alive)
    blocks += incident_message_logs(t, rng)
    return blocks


def callback_logs(t: Traffic, i: np.ndarray, rng: np.random.Generator) -> list[LogBlock]:
    """The deployed connectors' READ-status callback to message-service, 2 s after each accepted
    message of the detail sample ``i``: "Callback sent successfully", or "Callback failed" with
    ``t.callback_error`` (every callback; the chronic noise) or ``t.callback_fault`` (one channel
    from a time on). The runbook flow has no such callback unless one of those is set."""
    sv, end = t.profile.services, t.end_ns
    if not t.deployed_flow and t.callback_error is None and t.callback_fault is None:
        return []
    blocks = []
    for c in pop.EXTERNAL:
        a = i[(t.channel[i] == c) & (t.ack[i] != NAT)]
        at = t.ack[a] + 2 * NS + lognormal_s(rng, 0.05, 0.5, len(a))
        a, at = a[at < end], at[at < end]
        error = np.full(len(a), t.callback_error, dtype=object)
        if t.callback_fault is not None and t.callback_fault[0] == c:
            error[at >= t.callback_fault[1]] = t.callback_fault[2]
        failed = np.array([e is not None for e in error], dtype=bool)
        if not (t.deployed_flow or failed.any()):
            continue
        name, pkg = PLATFORM_NAMES[c], _CONNECTOR_PKG[c]
        mid = t.msg_ids[a]
        blocks.append(log_block(
            at, sv.connector(pop.CHANNELS[c]), np.where(failed, "ERROR", "INFO"),
            f"com.chat4all.connector.{pkg}.service.{name}Service", _threads(rng, "reactor-http-nio-", len(a), 4),
            where(failed, concat(f"[{name}] Callback failed: messageId=", mid, ", error=", np.where(failed, error, "")),
                  concat(f"[{name}] Callback sent successfully: messageId=", mid)),
            message_id=text(mid)))
    return blocks


def redelivery_logs(t: Traffic, alive: int) -> list[LogBlock]:
    """The router's duplicate skips (chronic noise): every message whose event came back, not sampled."""
    if t.redelivery_ns is None or not t.redelivery_ns.any():
        return []
    finish = np.where(t.failed != NAT, t.failed, t.delivered)
    at = np.where((t.redelivery_ns > 0) & (finish != NAT), finish + t.redelivery_ns, NAT)
    r = np.flatnonzero((at != NAT) & (at < min(t.end_ns, alive)))
    mid, router = t.msg_ids[r], t.profile.services.router
    return [log_block(at[r], router, "WARN", "com.chat4all.router.handler.DeduplicationHandler", LISTENER_THREAD,
                      concat("Duplicate message detected in Redis: ", mid), message_id=text(mid)),
            log_block(at[r] + MS, router, "WARN", "com.chat4all.router.consumer.MessageEventConsumer",
                      LISTENER_THREAD, concat("Duplicate message detected, skipping processing: ", mid),
                      message_id=text(mid))]


def failure_logs(t: Traffic, f: np.ndarray, rng: np.random.Generator, alive: int) -> list[LogBlock]:
    """Per failed attempt: the connector's error (with X-RateLimit/Retry-After for rate limits)
    and the router's; per final failure: the router's summary or the webhook's callback line."""
    sv, end = t.profile.services, t.end_ns
    if not len(f):
        return []
    blocks: list[LogBlock] = []
    chan = np.array(pop.CHANNELS, dtype=object)
    ch = t.channel
    mid = t.msg_ids
    msg, k, start, dur, failed, kind = _attempts(t, f)
    sel = failed & (start + dur < end) & (start + dur < alive)
    msg, k, at, kind = msg[sel], k[sel], (start + dur)[sel], kind[sel]
    api, transport = IS_API[kind], IS_TRANSPORT[kind]
    http = HTTP_STATUS[kind]
    more = k < MAX_RETRIES
    retryable = RETRYABLE[kind]
    level = np.where(more & retryable, "WARN", "ERROR")
    # A body that says how long to wait puts that value on every line quoting it.
    waits = where(api & RETRY_AFTER_IN_BODY[kind],
                  concat('{"retry_after":"', int_text(BACKOFF_S[kind].astype(np.int64)), '"}'))
    for c in pop.EXTERNAL:
        name, pkg = PLATFORM_NAMES[c], _CONNECTOR_PKG[c]
        conn = sv.connector(pop.CHANNELS[c])
        thread = f"http-nio-809{c + 1}-exec-"
        a = (ch[msg] == c) & api
        if a.any():
            m_, body = msg[a], t.body[msg[a]]
            line = (concat("Telegram API client error: ", body) if c == pop.TG else
                    concat(f"[{name}] API error: messageId=", mid[m_], ", status=", int_text(http[a]), ", body=", body))
            blocks.append(log_block(at[a] - MS, conn, level[a], f"com.chat4all.connector.{pkg}.client.{name}ApiClient",
                                    _threads(rng, thread, a.sum()), line,
                                    message_id=None if c == pop.TG else text(mid[m_]), http_status=http[a],
                                    rate_limit=text(waits)[a]))
            rl = a & RATE_LIMITED[kind]
            if rl.any():
                m_ = msg[rl]
                retry_after = BACKOFF_S[kind[rl]].astype(np.int64)
                reset = (at[rl] // NS + retry_after).astype(np.int64)
                limit = 80 if c == pop.WA else 30
                blocks.append(log_block(
                    at[rl] - MS + 1, conn, "WARN", f"com.chat4all.connector.{pkg}.client.{name}ApiClient",
                    _threads(rng, thread, rl.sum()),
                    concat(f"[{name}] Rate limit hit: messageId=", mid[m_], f", X-RateLimit-Limit={limit}, "
                           "X-RateLimit-Remaining=0, X-RateLimit-Reset=", int_text(reset), ", Retry-After=",
                           int_text(retry_after)),
                    message_id=text(mid[m_]),
                    rate_limit=concat(f'{{"X-RateLimit-Limit":"{limit}","X-RateLimit-Remaining":"0",'
                                      '"X-RateLimit-Reset":"', int_text(reset), '","Retry-After":"',
                                      int_text(retry_after), '"}')))
    # The router sees every failed attempt; its lines name no message (the deployed code logs none).
    a = api | transport
    urls = np.array([connector_url(sv.connector(c), i) if i < 3 else "" for i, c in enumerate(pop.CHANNELS)],
                    dtype=object)[np.minimum(ch[msg], 3)]
    router_line = text(where(transport,
                             concat('Error calling connector: I/O error on POST request for "', urls,
                                    '": Read timed out'),
                             concat("Connector returned error: status=", int_text(http), ", body=",
                                    np.where(api, t.body[msg], ""))))
    stack = text(where(transport,
                       concat('org.springframework.web.client.ResourceAccessException: I/O error on POST request '
                              'for "', urls, '": Read timed out\n\tat org.springframework.web.client.RestTemplate.'
                              'doExecute(RestTemplate.java:915)\nCaused by: java.net.SocketTimeoutException: Read '
                              'timed out')))
    blocks.append(log_block(at[a] + MS, sv.router, "ERROR", "com.chat4all.router.service.ConnectorClient",
                            LISTENER_THREAD, router_line[a], stack_trace=stack[a],
                            http_status=np.where(transport[a], -1, http[a]), rate_limit=text(waits)[a]))
    w = a & more & retryable
    if w.any():
        backoff = (BACKOFF_S[kind[w]] * 1000).astype(np.int64)
        blocks.append(log_block(at[w] + 2 * MS, sv.router, "WARN", "com.chat4all.router.service.RoutingService",
                                LISTENER_THREAD,
                                concat("Retrying message delivery: messageId=", mid[msg[w]], ", attempt=",
                                       int_text(k[w] + 2), f"/{MAX_RETRIES + 1}, backoff=", int_text(backoff), "ms"),
                                message_id=text(mid[msg[w]])))
    # Final failures.
    done = f[(t.fail_kind[f] >= 0) & (t.failed[f] != NAT) & (t.failed[f] < min(end, alive))]
    cb = IS_CALLBACK[t.fail_kind[done]]
    if (~cb).any():
        d = done[~cb]
        blocks.append(log_block(t.failed[d] + 3 * MS, sv.router, "ERROR", "com.chat4all.router.service.RoutingService",
                                LISTENER_THREAD,
                                concat("Message delivery failed after retries: messageId=", mid[d], ", channel=",
                                       chan[ch[d]]), message_id=text(mid[d]), conversation_id=text(t.conv_ids[t.conv[d]])))
    if cb.any():
        d = done[cb]
        for c in pop.EXTERNAL:
            dc = d[ch[d] == c]
            if len(dc):
                name, pkg = PLATFORM_NAMES[c], _CONNECTOR_PKG[c]
                blocks.append(log_block(t.failed[dc], sv.connector(pop.CHANNELS[c]), "ERROR",
                                        f"com.chat4all.connector.{pkg}.webhook.{name}WebhookController",
                                        _threads(rng, f"http-nio-809{c + 1}-exec-", len(dc)),
                                        concat(f"[{name}] Callback failed: messageId=", mid[dc], ", error=", t.body[dc]),
                                        message_id=text(mid[dc])))
    return blocks


def incident_message_logs(t: Traffic, rng: np.random.Generator) -> list[LogBlock]:
    """Lines lost MongoDB writes and failed publishes leave, one per affected message (capped)."""
    sv, end = t.profile.services, t.end_ns
    mid = t.msg_ids
    blocks = []
    lost = np.flatnonzero(t.mongo_timeout & (t.lost_from != NAT) & (t.lost_from + 30 * NS < end))
    lost = lost[:FAILURE_SAMPLE]
    if len(lost):
        status = np.array(schema.STATUSES, dtype=object)[_status_at(t, lost, t.lost_from[lost])]
        blocks.append(log_block(t.lost_from[lost] + 30 * NS, sv.message_service, "ERROR",
                                "com.chat4all.message.service.MessageService",
                                "org.springframework.kafka.KafkaListenerEndpointContainer#1-0-C-1",
                                concat("MongoDB write failed: timeout (messageId=", mid[lost], ", status=", status, ")"),
                                stack_trace=MONGO_STACK, message_id=text(mid[lost])))
    gap = np.flatnonzero(t.history_gap & (t.delivered != NAT) & (t.delivered + 10 * NS < end))[:FAILURE_SAMPLE]
    if len(gap):
        blocks.append(log_block(t.delivered[gap] + 10 * NS, sv.message_service, "ERROR",
                                "com.chat4all.message.service.StatusHistoryService",
                                "org.springframework.kafka.KafkaListenerEndpointContainer#1-0-C-1",
                                concat("Failed to save status history: messageId=", mid[gap],
                                       ", status=DELIVERED: " + SOCKET_TIMEOUT),
                                stack_trace=SOCKET_TIMEOUT + "\n\tat com.mongodb.internal.connection."
                                "InternalStreamConnection.receiveMessage(InternalStreamConnection.java:614)",
                                message_id=text(mid[gap])))
    pub = np.flatnonzero(t.publish_failed & (t.publish_at != NAT) & (t.publish_at + 60 * NS < end))[:FAILURE_SAMPLE]
    if len(pub):
        if t.deployed_flow:
            topics = np.full(len(pub), t.profile.kafka.status_updates.name, dtype=object)
        else:
            topics = np.array([(t.profile.kafka.outbound_for(c).name if t.profile.kafka.outbound_for(c) else "")
                               for c in pop.CHANNELS], dtype=object)[t.channel[pub]]
        err = concat("org.apache.kafka.common.errors.TimeoutException: Topic ", topics,
                     " not present in metadata after 60000 ms.")
        blocks.append(log_block(t.publish_at[pub] + 60 * NS, sv.router, "ERROR",
                                "com.chat4all.router.service.MessagePublisher", "kafka-producer-network-thread | producer-1",
                                concat("Failed to publish to ", topics, ": messageId=", mid[pub], ": ", err),
                                stack_trace=concat(err, "\n\tat org.springframework.kafka.core.KafkaTemplate."
                                                   "doSend(KafkaTemplate.java:759)"),
                                message_id=text(mid[pub])))
    return blocks


def _status_at(t: Traffic, idx: np.ndarray, when: np.ndarray) -> np.ndarray:
    """Code of the status a write at ``when`` was recording (the transition happening then)."""
    from forensics.simulate.tables import DELIVERED, FAILED, READ, SENT

    code = np.full(len(idx), DELIVERED, dtype=np.int8)
    code[t.failed[idx] == when] = FAILED
    code[t.read[idx] == when] = READ
    if not t.deployed_flow:
        code[t.ack[idx] == when] = SENT
    return code


def log_frame(blocks: list[LogBlock]) -> pd.DataFrame:
    """All blocks -> the ``log_events`` table, numbered per service in time order, with raw lines."""
    blocks = [b for b in blocks if len(b.ts)]
    if not blocks:
        return schema.empty("log_events")
    svc = np.concatenate([np.full(len(b.ts), b.service, dtype=object) for b in blocks])
    cols = {name: np.concatenate([getattr(b, name) for b in blocks])
            for name in ("ts", "level", "logger", "thread", "message", "stack_trace", "message_id",
                         "conversation_id", "http_status", "rate_limit")}
    services, svc_code = np.unique(svc.astype(str), return_inverse=True)
    order = np.lexsort((cols["ts"], svc_code))
    cols = {k: v[order] for k, v in cols.items()}
    svc_code = svc_code[order]
    starts = np.r_[0, np.flatnonzero(np.diff(svc_code)) + 1]
    line_no = np.arange(len(svc_code)) - np.repeat(starts, np.diff(np.r_[starts, len(svc_code)])) + 1
    service = np.array(services, dtype=object)[svc_code]
    stamp = concat(iso_ms(cols["ts"]), "+0000")
    stack = cols["stack_trace"]
    has_stack = np.array([v is not None for v in stack], dtype=bool)
    raw = concat('{"timestamp":"', stamp, '","level":"', cols["level"], '","thread":', json_str(cols["thread"]),
                 ',"logger":"', cols["logger"], '","message":', json_str(cols["message"]),
                 where(has_stack, concat(',"stack_trace":', json_str(np.where(has_stack, stack, ""))), ""),
                 ',"app_name":"', service, '"}')
    http = cols["http_status"].astype(np.int64)
    frame = {
        "timestamp": ts_series((cols["ts"] // MS) * MS),
        "service": str_series(service),
        "level": str_series(cols["level"]),
        "logger": str_series(cols["logger"]),
        "thread": str_series(cols["thread"]),
        "message": str_series(cols["message"]),
        "stack_trace": str_series(stack),
        "message_id": str_series(cols["message_id"]),
        "conversation_id": str_series(cols["conversation_id"]),
        "http_status": int_series(http, mask=http < 0),
        "rate_limit": str_series(cols["rate_limit"]),
        "raw": str_series(raw),
        "parse_error": str_series(np.full(len(http), None, dtype=object)),
        "source": "logs",
        "source_object": str_series(concat("chat4all-", service)),
        "source_ref": str_series(int_text(line_no)),
    }
    return schema.conform("log_events", frame)
