"""The incident scenarios: each rewrites healthy traffic the way one root cause would.

A :class:`Scenario` names the incident, its ``root_cause`` identifier (the vocabulary the
analysis uses for hypotheses) and a ``shape`` function that rewrites a
:class:`~forensics.simulate.traffic.Traffic` in place and fills an :class:`Incident` with
what is not tied to one message (the trigger, incident log lines, Redis keys, missing
topics). ``SCENARIOS`` is the registry; adding a scenario is one function and one entry.

Every scenario also carries the sporadic failures of any day (0.3 % of connector traffic:
130429, 131026, 131047, 131000, Telegram 403/400/429, Instagram 551/613, connector read
timeouts), so a detector must look at rates and concentration, not at a single row.
Signals each scenario leaves, by table (T = ``scenario["started_at"]``):

- router-outage (router_down): messages PENDING from T; no SENT/DELIVERED/FAILED history row
  at or after T; router group lag on the message events topic rising every minute from T
  (sum over partitions = events not consumed); router-service logs: "Failed to consume from
  Kafka: Connection refused" + NetworkClient warnings for 1.5-4 min, then "Stopping container
  due to an Error" and silence; no router-service spans starting after T.
- whatsapp-rate-limit (platform_rate_limit): a WhatsApp broadcast from T-2 min; WhatsApp
  messages retried (retry_count 1-3) and FAILED with 130429 / status=429 after 3 retries;
  DLQ records on the WhatsApp DLQ topic; connector WARN lines with X-RateLimit-* and
  Retry-After (``rate_limit`` column); client spans with http 429 and error; whatsapp
  outbound lag (runbook layout); delivery P95 far above 5 s; other channels unaffected.
- token-expired (credential_expiry): one channel (``scenario["channel"]``, WhatsApp or
  Instagram) fails every message from T: code 190 subcode 463, status=401, retry_count 0;
  DLQ records; 401 error spans.
- recipient-not-on-whatsapp (invalid_recipient): 131026 callback failures (runbook: SENT ->
  FAILED; deployed: DELIVERED -> FAILED) on a few recipients with many messages each
  (``scenario["affected_recipients"]``); most have ``format_valid`` False or ``verified``
  False in identities; "[WhatsApp] Callback failed" connector lines; webhook spans.
- content-too-long (content_over_limit): from T, texts over 1000 (Instagram) / 4096 (WhatsApp,
  Telegram) characters and Instagram images > 8 MB / WhatsApp videos > 100 MB FAIL; FAILED
  iff over the limit (``content_length``, ``file_size``); long texts within the limit deliver.
- partition-rebalance (partition_rebalance): router log lines "Revoking previously assigned
  partitions", "partitions revoked", "Offset commit failed", CommitFailedException, "partitions
  assigned" at T and T+2.5-5 min; router lag spike on the moved partitions then drain; later
  messages DELIVERED before earlier ones of the same conversation; duplicate DELIVERED history
  rows (old_status DELIVERED) and second router/connector spans; one conversation lock without
  TTL (``scenario["stuck_lock"]``) whose later messages stay PENDING with "Conversation lock
  busy" WARN lines.
- telegram-bot-blocked (bot_blocked): 403 "Forbidden: bot was blocked by the user" for a few
  Telegram recipients (``affected_recipients``) from T; other Telegram messages deliver; no 401.
- mongo-write-timeouts (mongodb_write_failure): for 8-15 min from T, 35 % of status writes
  lost: messages stuck PENDING (deployed) or SENT/PENDING (runbook) although delivered (spans and
  connector logs show success); messages DELIVERED without a DELIVERED history row (history
  gaps); message-service "MongoDB write failed: timeout" with MongoTimeoutException stacks, "Failed
  to save status history", driver monitor exceptions; MongoDB spans with errors (30 s) and slow
  writes (seconds).
- missing-topic (missing_topic): ``scenario["missing_topics"]`` and the ``topics`` table
  (present False) name it; router logs "{topic=UNKNOWN_TOPIC_OR_PARTITION}" and "Topic ... not
  present in metadata after 60000 ms"; producer spans with errors lasting 60 s. Runbook layout:
  one channel's outbound topic, that channel's messages PENDING from T and no lag rows for the
  topic from T. Deployed layout: status-updates, every channel PENDING from T although the
  platforms delivered.
- whatsapp-outage (platform_outage): three 2-6 min bursts from T of 131016 / 503 (75 %) and 502
  (25 %); retries, many recover (retry_count > 0, delivered late), the rest FAILED with
  retry_count 3 and DLQ records; whatsapp-connector 5xx client spans above 10 per minute.
- baseline (healthy): ~99.7 % DELIVERED/READ, delivery P95 ~1-1.6 s, lag < 100, no
  out-of-order delivery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from forensics.simulate import population as pop
from forensics.simulate.columns import MS, NAT, NS, concat, int_text
from forensics.simulate.failures import IS_CALLBACK, KIND
from forensics.simulate.telemetry import LISTENER_THREAD, LogBlock, log_block
from forensics.simulate.traffic import Surge, Traffic, sequence_conversations
from forensics.timeutil import iso

MINUTE = 60 * NS


@dataclass
class Incident:
    """What a scenario did that is not in the traffic arrays."""

    start_ns: int
    end_ns: int
    trigger_ns: int | None
    rng: np.random.Generator
    channel: str | None = None
    trigger: str | None = None
    """What set the incident off, in words."""
    details: dict[str, Any] = field(default_factory=dict)
    """Extra keys for ``Evidence.scenario`` (missing_topics, affected_recipients, ...)."""
    logs: list[LogBlock] = field(default_factory=list)
    locks: list[dict] = field(default_factory=list)
    missing_topics: dict[str, int] = field(default_factory=dict)
    """Topic name -> time (ns) from which it does not exist."""
    router_down_from: int | None = None
    mongo_trouble: tuple[int, int] | None = None
    stray_records: list[tuple[int, int, int]] = field(default_factory=list)
    """Records on the message events topic that are no message: (partition, time ns, offset)."""


@dataclass(frozen=True)
class Scenario:
    name: str
    root_cause: str
    description: str
    shape: Callable[[Traffic, Incident], None]
    surge: Callable[[Incident], Surge | None] | None = None
    """Traffic plan drawn before the messages (e.g. a broadcast campaign)."""
    duration_s: int = 3600
    has_trigger: bool = True


# -- helpers --------------------------------------------------------------------------------

def _times(rng: np.random.Generator, start: int, stop: int, mean_gap_s: float) -> np.ndarray:
    """Irregular instants between start and stop (exponential gaps)."""
    count = max(1, int((stop - start) / (mean_gap_s * NS) * 1.5) + 2)
    t = start + np.cumsum(rng.exponential(mean_gap_s * NS, count)).astype(np.int64)
    return np.concatenate([[start], t[t < stop]])


def _routable(t: Traffic) -> np.ndarray:
    return t.routed != NAT


def _untouched(t: Traffic) -> np.ndarray:
    return (t.fail_kind < 0) & (t.transient_kind < 0)


def _pool(t: Traffic, channel: int) -> np.ndarray:
    return np.flatnonzero(t.recipients.channel == channel)


def _platform_ids(t: Traffic, idx: np.ndarray, cap: int = 200) -> list[str]:
    return sorted(str(v) for v in t.recipients.platform_id[idx])[:cap]


# -- scenarios ------------------------------------------------------------------------------

def baseline(t: Traffic, inc: Incident) -> None:
    """Nothing beyond the sporadic failures every window has."""


def router_outage(t: Traffic, inc: Incident) -> None:
    T = inc.trigger_ns
    prof = t.profile
    t.never_routed(np.flatnonzero(t.routed >= T))
    # Whatever the router still had in hand dies with it: no SENT/DELIVERED/FAILED after T.
    late_ack = (t.ack != NAT) & (t.ack >= T)
    for arr in (t.ack, t.delivered, t.read):
        arr[late_ack] = NAT
    late = (t.delivered != NAT) & (t.delivered >= T)
    t.delivered[late] = NAT
    t.read[late] = NAT
    late = (t.failed != NAT) & (t.failed >= T)
    t.failed[late] = NAT
    t.fail_kind[late] = -1
    inc.router_down_from = T
    topic, group = prof.kafka.message_events.name, prof.kafka.router_group
    inc.trigger = f"{prof.services.router} stopped consuming from {topic}"
    rng = inc.rng
    errors = _times(rng, T, T + int(rng.uniform(90, 240) * NS), 6.0)
    client = f"consumer-{group}-1"
    inc.logs.append(log_block(
        errors, prof.services.router, "ERROR", "org.springframework.kafka.listener.KafkaMessageListenerContainer",
        LISTENER_THREAD, "Failed to consume from Kafka: Connection refused",
        stack_trace="org.apache.kafka.common.KafkaException: Failed to consume from Kafka\n\tat org.apache.kafka."
                    "clients.consumer.internals.Fetcher.collectFetch(Fetcher.java:145)\nCaused by: "
                    "java.net.ConnectException: Connection refused\n\tat java.base/sun.nio.ch.Net.pollConnect"
                    "(Native Method)"))
    inc.logs.append(log_block(
        errors + 300 * MS, prof.services.router, "WARN", "org.apache.kafka.clients.NetworkClient", LISTENER_THREAD,
        f"[Consumer clientId={client}, groupId={group}] Connection to node 1 (kafka/172.18.0.5:9092) could not be "
        "established. Node may not be available."))
    last = int(errors[-1]) + NS
    inc.logs.append(log_block(
        [last, last + 50 * MS], prof.services.router, "ERROR",
        ["org.springframework.kafka.listener.KafkaMessageListenerContainer", "org.springframework.boot.SpringApplication"],
        [LISTENER_THREAD, "main"], ["Stopping container due to an Error", "Application run failed"]))


def rate_limit_surge(inc: Incident) -> Surge:
    return Surge(pop.WA, inc.trigger_ns - 2 * MINUTE, 20 * MINUTE, 0.12)


def whatsapp_rate_limit(t: Traffic, inc: Incident) -> None:
    T = inc.trigger_ns
    stop = min(T + 25 * MINUTE, t.end_ns)

    def p_fail(times):
        ramp = np.clip((times - T) / (3 * MINUTE), 0, 1) * np.clip((stop - times) / (5 * MINUTE), 0, 1)
        return 0.75 * ramp

    sel = np.flatnonzero((t.channel == pop.WA) & _routable(t) & _untouched(t) & (t.first_attempt >= T)
                         & (t.first_attempt < stop))
    t.retry(sel, KIND["wa_rate_limit"], p_fail)
    sequence_conversations(t)  # retries block the conversation: later messages wait, in order
    inc.channel = "WHATSAPP"
    inc.trigger = "broadcast campaign on WhatsApp exceeded the Cloud API throughput limit"
    inc.details["rate_limit_window"] = [iso(_ts(T)), iso(_ts(stop))]


def token_expired(t: Traffic, inc: Incident) -> None:
    T = inc.trigger_ns
    c = int(inc.rng.choice([pop.WA, pop.IG]))
    kind = KIND["wa_token_expired" if c == pop.WA else "ig_token_expired"]
    sel = np.flatnonzero((t.channel == c) & _routable(t) & (t.first_attempt >= T))
    t.fail_now(sel, kind)
    connector = t.profile.services.connector(pop.CHANNELS[c])
    inc.channel = pop.CHANNELS[c]
    inc.trigger = f"{connector} access token expired"
    inc.details["connector"] = connector


def recipient_not_on_whatsapp(t: Traffic, inc: Incident) -> None:
    T, rng, r = inc.trigger_ns, inc.rng, t.recipients
    pool = _pool(t, pop.WA)
    bad = rng.choice(pool, min(int(np.clip(len(pool) * 0.03, 3, 300)), max(1, len(pool) - 1)), replace=False)
    broken = bad[rng.random(len(bad)) < 0.6]
    r.platform_id[broken] = pop.malformed_e164(r.platform_id[broken], rng)
    r.malformed[broken] = True
    r.verified[bad[rng.random(len(bad)) < 0.5]] = False
    others = np.setdiff1d(pool, bad)
    wa = t.conv_channel == pop.WA
    before = wa & (t.conv_start < T) & np.isin(t.conv_recipient, bad)
    if len(others):
        t.conv_recipient[before] = rng.choice(others, before.sum())
    # The campaign after T addresses an imported list: a few bad numbers get many messages.
    after = wa & (t.conv_start >= T) & (rng.random(len(wa)) < 0.3)
    t.conv_recipient[after] = rng.choice(bad, after.sum())
    sel = np.flatnonzero((t.channel == pop.WA) & _routable(t) & np.isin(t.recipient, bad))
    t.fail_now(sel, KIND["wa_undeliverable"])
    inc.channel = "WHATSAPP"
    inc.trigger = "broadcast to an imported contact list with numbers that are not on WhatsApp"
    inc.details["affected_recipients"] = _platform_ids(t, bad)


def content_too_long(t: Traffic, inc: Incident) -> None:
    T, rng = inc.trigger_ns, inc.rng
    ch, n = t.channel, t.n
    text = (t.content_type == pop.TEXT) & (ch != pop.INTERNAL)
    for c in pop.EXTERNAL:
        limit = pop.TEXT_LIMITS[c]
        lo = 300 if c == pop.IG else 1000
        within = [t.add_text(pop.long_text(int(v))) for v in rng.integers(lo, limit + 1, 16)]
        over = [t.add_text(pop.long_text(int(v))) for v in rng.integers(limit + 1, int(limit * 1.8), 16)]
        mine = text & (ch == c)
        w = mine & (rng.random(n) < 0.02)
        t.content_code[w] = rng.choice(within, w.sum())
        o = mine & (t.created >= T) & (rng.random(n) < 0.04)
        t.content_code[o] = rng.choice(over, o.sum())
    # Files: Instagram images over 8 MB and WhatsApp videos over 100 MB after the release.
    for c, ct in ((pop.IG, pop.IMAGE), (pop.WA, pop.VIDEO)):
        limit = pop.FILE_LIMITS[c]
        mine = (ch == c) & (t.content_type == ct)
        big = mine & (rng.random(n) < 0.05)
        t.file_size[big] = (limit * rng.uniform(0.4, 0.99, big.sum())).astype(np.int64)
        over = mine & (t.created >= T) & (rng.random(n) < 0.25)
        t.file_size[over] = (limit * rng.uniform(1.05, 3.0, over.sum())).astype(np.int64)
    limits = np.array([pop.TEXT_LIMITS[pop.WA], pop.TEXT_LIMITS[pop.TG], pop.TEXT_LIMITS[pop.IG], 10**9])
    file_limits = np.array([pop.FILE_LIMITS[pop.WA], pop.FILE_LIMITS[pop.TG], pop.FILE_LIMITS[pop.IG], 10**15])
    too_long = (t.content_length > limits[ch]) & _routable(t)
    too_big = (t.content_type != pop.TEXT) & (t.file_size > file_limits[ch]) & _routable(t) & ~too_long
    text_kind = np.array([KIND["wa_text_too_long"], KIND["tg_text_too_long"], KIND["ig_text_too_long"], -1])
    file_kind = np.array([KIND["wa_media_too_large"], -1, KIND["ig_image_too_large"], -1])
    t.fail_now(np.flatnonzero(too_long), text_kind[ch[too_long]])
    t.fail_now(np.flatnonzero(too_big), file_kind[ch[too_big]])
    inc.trigger = "client release stopped truncating long texts and large media"
    inc.details["text_limits"] = {pop.CHANNELS[c]: pop.TEXT_LIMITS[c] for c in pop.EXTERNAL}
    inc.details["file_limits"] = {pop.CHANNELS[c]: pop.FILE_LIMITS[c] for c in pop.EXTERNAL}


def partition_rebalance(t: Traffic, inc: Incident) -> None:
    T, rng, prof = inc.trigger_ns, inc.rng, t.profile
    topic, group = prof.kafka.message_events.name, prof.kafka.router_group
    parts = prof.kafka.message_events.partitions
    resume = T + int(rng.uniform(150, 300) * NS)
    moved = np.sort(rng.choice(parts, max(1, parts // 2), replace=False))
    zombie = np.zeros(t.n, bool)
    for candidate in (moved, np.arange(parts)):
        on_moved = np.isin(t.event_partition, candidate) & _routable(t)
        batch = np.flatnonzero(on_moved & (t.created >= T - 5 * NS) & (t.created < resume))
        convs, first, counts = np.unique(t.conv[batch], return_index=True, return_counts=True)
        multi = np.isin(t.conv[batch], convs[counts >= 2])
        zombie[:] = False
        zombie[batch[multi]] = True
        zombie[batch[first[counts >= 2]]] = False
        if zombie.any():
            moved = candidate
            break
    # The revoked partitions' events wait for the new assignment, then drain. The zombie member
    # still delivers later messages of a conversation it had fetched, while the first one
    # waits: out of order.
    queue = np.flatnonzero(on_moved & (t.created >= T - 5 * NS) & (t.created < resume + 10 * MINUTE))
    depart = _drained(t, queue, resume, on_moved.sum())
    z = zombie[queue]
    _delay(t, queue[~z], (depart - t.routed[queue])[~z])
    zq = queue[z]
    t.duplicate_at[zq] = np.where(t.delivered[zq] == NAT, NAT, depart[z] + (t.delivered[zq] - t.routed[zq]))
    # One conversation lock was left behind by the revoked member, without a TTL.
    later = np.flatnonzero(on_moved & (t.created >= resume) & (t.created < resume + 10 * MINUTE))
    if len(later):
        _lock_left_behind(t, inc, t.conv[later[:1]], resume, f"{prof.services.router}-1:{LISTENER_THREAD}")
    _rebalance_logs(t, inc, T, resume, moved)
    inc.trigger = f"{prof.services.router} consumer group {group} rebalanced (a new replica joined)"
    inc.details["rebalance"] = {"start": iso(_ts(T)), "end": iso(_ts(resume)), "topic": topic,
                                "moved_partitions": [int(p) for p in moved]}


def _drained(t: Traffic, queue: np.ndarray, resume: int, arrivals: int) -> np.ndarray:
    """When the router takes each event of ``queue`` (message indices in creation order) that
    could not be consumed before ``resume``: first in, first out, at three times the arrival rate
    (``arrivals`` events over the traffic's span), at most 50 ms each. Returns times (ns)."""
    rate = max(int(arrivals), 1) / (t.end_ns - t.start_ns)
    svc = min(1.0 / (3.0 * rate), 50.0 * MS)
    arrival = np.maximum(t.routed[queue], resume).astype(np.float64)
    j = np.arange(len(queue), dtype=np.float64)
    return ((j + 1) * svc + np.maximum.accumulate(arrival - j * svc)).astype(np.int64)


def _delay(t: Traffic, idx: np.ndarray, shift: np.ndarray) -> None:
    """Everything from routing on happens ``shift`` ns later for messages ``idx``."""
    for arr in (t.routed, t.first_attempt, t.ack, t.delivered, t.read, t.failed):
        arr[idx] = np.where(arr[idx] == NAT, NAT, arr[idx] + shift)


def _lock_left_behind(t: Traffic, inc: Incident, convs: np.ndarray, since: int, holder: str) -> None:
    """Conversation locks ``convs`` held without a TTL by a consumer that is gone: the router
    skips every message of those conversations it takes from ``since`` on ("Conversation lock
    busy"), so they stay PENDING; the keys are in Redis at capture time."""
    prof = t.profile
    keys = [prof.redis.conversation_lock.format(conversation_id=t.conv_ids[c].decode()) for c in convs]
    for conv, key in zip(convs, keys, strict=True):
        stuck = np.flatnonzero((t.conv == conv) & (t.routed >= since) & _routable(t))
        t.stall(stuck)
        inc.logs.append(log_block(
            t.routed[stuck], prof.services.router, "WARN", "com.chat4all.router.service.ConversationLockService",
            LISTENER_THREAD,
            concat("Conversation lock busy, message not processed: messageId=", t.msg_ids[stuck], f", lock={key}, "
                   f"holder={holder}"), message_id=t.msg_ids[stuck].astype("U").astype(object)))
    inc.locks.append({"key": keys, "kind": "conversation_lock", "set_at": since,
                      "conversation_id": [t.conv_ids[c].decode() for c in convs], "message_id": [None] * len(keys),
                      "ttl_s": [np.nan] * len(keys), "value": [holder] * len(keys),
                      "pattern": prof.redis.conversation_lock})
    inc.details["stuck_lock"] = keys[0]
    inc.details["stuck_locks"] = keys


def _rebalance_logs(t: Traffic, inc: Incident, T: int, resume: int, moved: np.ndarray, kicked: bool = True) -> None:
    """The group's rebalance as the router logs it; ``kicked``: the old member had been kicked
    out of the group, so its offset commit failed (CommitFailedException)."""
    prof = t.profile
    topic, group, router = prof.kafka.message_events.name, prof.kafka.router_group, prof.services.router
    parts = prof.kafka.message_events.partitions
    coord = "org.apache.kafka.clients.consumer.internals.ConsumerCoordinator"
    container = "org.springframework.kafka.listener.KafkaMessageListenerContainer"
    every = ", ".join(f"{topic}-{p}" for p in range(parts))
    kept = ", ".join(f"{topic}-{p}" for p in range(parts) if p not in set(moved))
    gone = ", ".join(f"{topic}-{p}" for p in moved)
    c1, c2 = f"consumer-{group}-1", f"consumer-{group}-2"
    gen = int(inc.rng.integers(5, 40))
    member = f"{c2}-{inc.rng.integers(0, 2**32):08x}"
    lines = [
        (T, "INFO", coord, f"[Consumer clientId={c1}, groupId={group}] Request joining group due to: group is "
                           "already rebalancing"),
        (T + 80 * MS, "INFO", coord, f"[Consumer clientId={c1}, groupId={group}] Revoking previously assigned "
                                     f"partitions [{every}]"),
        (T + 120 * MS, "INFO", container, f"{group}: partitions revoked: [{every}]"),
        (T + 150 * MS, "INFO", coord, f"[Consumer clientId={c1}, groupId={group}] (Re-)joining group"),
        (resume, "INFO", coord, f"[Consumer clientId={c2}, groupId={group}] Successfully joined group with "
                                f"generation Generation{{generationId={gen}, memberId='{member}', protocol='range'}}"),
        (resume + 40 * MS, "INFO", coord, f"[Consumer clientId={c1}, groupId={group}] Successfully joined group with "
                                          f"generation Generation{{generationId={gen}, memberId='{c1}-"
                                          f"{inc.rng.integers(0, 2**32):08x}', protocol='range'}}"),
        (resume + 90 * MS, "INFO", coord, f"[Consumer clientId={c1}, groupId={group}] Adding newly assigned "
                                          f"partitions: {kept}"),
        (resume + 95 * MS, "INFO", coord, f"[Consumer clientId={c2}, groupId={group}] Adding newly assigned "
                                          f"partitions: {gone}"),
        (resume + 130 * MS, "INFO", container, f"{group}: partitions assigned: [{kept}]"),
        (resume + 135 * MS, "INFO", container, f"{group}: partitions assigned: [{gone}]"),
    ]
    if kicked:
        offset = int(t.event_offset[t.event_partition == moved[0]][:1].sum())
        lines.append((T + 4 * NS, "WARN", coord, f"[Consumer clientId={c1}, groupId={group}] Offset commit failed on "
                                                 f"partition {topic}-{moved[0]} at offset {offset}: The coordinator "
                                                 "is not aware of this member."))
    ts, level, logger, message = zip(*lines, strict=True)
    inc.logs.append(log_block(list(ts), router, list(level), list(logger), LISTENER_THREAD, list(message)))
    if not kicked:
        return
    inc.logs.append(log_block(
        T + 5 * NS, router, "ERROR", container, LISTENER_THREAD, "Consumer exception",
        stack_trace="org.apache.kafka.clients.consumer.CommitFailedException: Offset commit cannot be completed "
                    "since the consumer is not part of an active group for auto partition assignment; it is likely "
                    "that the consumer was kicked out of the group.\n\tat org.apache.kafka.clients.consumer.internals."
                    "ConsumerCoordinator.sendOffsetCommitRequest(ConsumerCoordinator.java:1351)"))


def telegram_bot_blocked(t: Traffic, inc: Incident) -> None:
    T, rng = inc.trigger_ns, inc.rng
    pool = _pool(t, pop.TG)
    blocked = rng.choice(pool, int(np.clip(len(pool) * 0.03, 3, 200)), replace=False)
    since = np.full(len(t.recipients), np.iinfo(np.int64).max, dtype=np.int64)
    since[blocked] = T + (rng.random(len(blocked)) * 15 * MINUTE).astype(np.int64)
    since[blocked[0]] = T
    tg = t.conv_channel == pop.TG
    again = tg & (rng.random(len(tg)) < 0.12)
    t.conv_recipient[again] = rng.choice(blocked, again.sum())
    sel = np.flatnonzero((t.channel == pop.TG) & _routable(t) & (t.first_attempt >= since[t.recipient]))
    t.fail_now(sel, KIND["tg_bot_blocked"])
    inc.channel = "TELEGRAM"
    inc.trigger = "recipients blocked the Telegram bot"
    inc.details["affected_recipients"] = _platform_ids(t, blocked)


def mongo_write_timeouts(t: Traffic, inc: Incident) -> None:
    T, rng = inc.trigger_ns, inc.rng
    stop = min(T + int(rng.uniform(8, 15) * MINUTE), t.end_ns)
    writes = [t.delivered, t.failed] if t.deployed_flow else [t.ack, t.delivered, t.read, t.failed]
    for arr in writes:  # in the order a message's writes happen
        hit = (arr != NAT) & (arr >= T) & (arr < stop) & (rng.random(t.n) < 0.35) & (t.lost_from == NAT)
        t.lost_from[hit] = arr[hit]
        t.mongo_timeout |= hit
    t.history_gap = (t.delivered >= T) & (t.delivered < stop) & (t.lost_from == NAT) & (rng.random(t.n) < 0.12)
    inc.mongo_trouble = (T, stop)
    sv = t.profile.services
    monitor = _times(rng, T, stop, 10.0)
    for service in (sv.message_service, sv.router):
        inc.logs.append(log_block(
            monitor + int(rng.integers(0, 900)) * MS, service, "INFO", "org.mongodb.driver.cluster",
            "cluster-ClusterId{value='6930a1f2c3d4e5f6a7b8c9d0', description='null'}-mongodb:27017",
            "Exception in monitor thread while connecting to server mongodb:27017",
            stack_trace="com.mongodb.MongoSocketReadTimeoutException: Timeout while receiving message\n\tat "
                        "com.mongodb.internal.connection.InternalStreamConnection.translateReadException"
                        "(InternalStreamConnection.java:760)"))
    inc.logs.append(log_block(
        stop, sv.message_service, "INFO", "org.mongodb.driver.cluster",
        "cluster-ClusterId{value='6930a1f2c3d4e5f6a7b8c9d0', description='null'}-mongodb:27017",
        "Monitor thread successfully connected to server with description ServerDescription{address=mongodb:27017, "
        "type=REPLICA_SET_PRIMARY, state=CONNECTED, ok=true}"))
    inc.trigger = "MongoDB primary stalled: writes time out"
    inc.details["trouble_window"] = [iso(_ts(T)), iso(_ts(stop))]


def missing_topic(t: Traffic, inc: Incident) -> None:
    T, rng, prof = inc.trigger_ns, inc.rng, t.profile
    if prof.kafka.status_updates is not None:
        # Deployed flow: the router's status publish fails for every channel; the platforms
        # did deliver, but MongoDB never hears of it.
        topic = prof.kafka.status_updates.name
        final = np.where(t.delivered != NAT, t.delivered, t.failed)
        sel = np.flatnonzero((final != NAT) & (final >= T))
        t.publish_failed[sel] = True
        t.publish_at[sel] = final[sel] - 2 * MS
        t.lost_from[sel] = np.where(t.delivered[sel] != NAT, t.delivered[sel], t.failed[sel])
    else:
        # Runbook flow: one channel's outbound topic is gone; that channel's messages stay PENDING.
        channels = [c for c in pop.EXTERNAL if prof.kafka.outbound_for(pop.CHANNELS[c])]
        c = int(rng.choice(channels))
        topic = prof.kafka.outbound_for(pop.CHANNELS[c]).name
        sel = np.flatnonzero((t.channel == c) & _routable(t) & (t.routed >= T))
        t.stall(sel)
        t.publish_failed[sel] = True
        t.publish_at[sel] = t.routed[sel] + 2 * MS
        inc.channel = pop.CHANNELS[c]
    inc.missing_topics[topic] = T
    inc.details["missing_topics"] = [topic]
    warn = _times(rng, T, t.end_ns, 7.0)
    inc.logs.append(log_block(
        warn, prof.services.router, "WARN", "org.apache.kafka.clients.NetworkClient",
        "kafka-producer-network-thread | producer-1",
        concat("[Producer clientId=producer-1] Error while fetching metadata with correlation id ",
               int_text(1000 + np.arange(len(warn)) * 3), f" : {{{topic}=UNKNOWN_TOPIC_OR_PARTITION}}")))
    inc.trigger = f"topic {topic} deleted (auto-creation disabled)"


def whatsapp_outage(t: Traffic, inc: Incident) -> None:
    T, rng = inc.trigger_ns, inc.rng
    starts = np.array([T, T + int(rng.uniform(8, 14) * MINUTE), T + int(rng.uniform(20, 28) * MINUTE)])
    stops = np.minimum(starts + (rng.uniform(2, 6, 3) * MINUTE).astype(np.int64), t.end_ns)
    starts, stops = starts[starts < t.end_ns], stops[starts < t.end_ns]

    def p_fail(times):
        inside = np.zeros(times.shape, bool)
        for a, b in zip(starts, stops, strict=True):
            inside |= (times >= a) & (times < b)
        return np.where(inside, 0.8, 0.0)

    sel = np.flatnonzero((t.channel == pop.WA) & _routable(t) & _untouched(t) & (t.first_attempt >= T - 30 * NS)
                         & (t.first_attempt < stops.max()))
    gateway = rng.random(len(sel)) < 0.25
    t.retry(sel[~gateway], KIND["wa_service_unavailable"], p_fail)
    t.retry(sel[gateway], KIND["wa_bad_gateway"], p_fail)
    sequence_conversations(t)
    inc.channel = "WHATSAPP"
    inc.trigger = "WhatsApp Cloud API outage (131016 service unavailable, HTTP 503/502)"
    inc.details["outage_bursts"] = [[iso(_ts(a)), iso(_ts(b))] for a, b in zip(starts, stops, strict=True)]


_SPRING_CONTAINER = "org.springframework.kafka.listener.KafkaMessageListenerContainer"


def poison_pill(t: Traffic, inc: Incident) -> None:
    T, rng, prof = inc.trigger_ns, inc.rng, t.profile
    topic, group = prof.kafka.message_events.name, prof.kafka.router_group
    later = _routable(t) & (t.routed >= T)
    busy = np.unique(t.event_partition[later])
    p = int(rng.choice(busy)) if len(busy) else 0
    stuck = np.flatnonzero(later & (t.event_partition == p))
    before = t.event_offset[(t.event_partition == p) & ~later]
    # The record takes the next offset of its partition; the events after it move up by one.
    offset = int(before.max()) + 1 if len(before) else int(t.event_offset[stuck].min()) if len(stuck) else 0
    t.event_offset[stuck] += 1
    t.never_routed(stuck)
    stack = (
        "java.lang.IllegalStateException: This error handler cannot process 'SerializationException's directly; "
        "please consider configuring an 'ErrorHandlingDeserializer' in the value deserializer\n\tat org.springframework."
        "kafka.listener.DefaultErrorHandler.handleOtherException(DefaultErrorHandler.java:198)\n\tat org.springframework."
        "kafka.listener.KafkaMessageListenerContainer$ListenerConsumer.handleConsumerException(KafkaMessageListener"
        "Container.java:1998)\nCaused by: org.apache.kafka.common.errors.RecordDeserializationException: Error "
        f"deserializing key/value for partition {topic}-{p} at offset {offset}. If needed, please seek past the record "
        "to continue consumption.\n\tat org.apache.kafka.clients.consumer.internals.CompletedFetch.parseRecord("
        "CompletedFetch.java:331)\nCaused by: org.apache.kafka.common.errors.SerializationException: Can't "
        f"deserialize data from topic [{topic}]\nCaused by: com.fasterxml.jackson.core.JsonParseException: Unexpected "
        "character ('m' (code 109)): was expecting double-quote to start field name")
    # The container polls again at once and meets the same record: the error repeats until someone seeks past it.
    loop = _times(rng, T + 200 * MS, t.end_ns, 1.0)
    inc.logs.append(log_block(loop, prof.services.router, "ERROR", _SPRING_CONTAINER, LISTENER_THREAD,
                              "Consumer exception", stack_trace=stack))
    inc.stray_records.append((p, T, offset))
    replayed = t.msg_ids[stuck[0]].decode() if len(stuck) else t.msg_ids[-1].decode()
    key = t.conv_ids[t.conv[stuck[0]]].decode() if len(stuck) else None
    inc.trigger = (f"a record on {topic} partition {p} (offset {offset}) that is not JSON, published by hand with "
                   f"unquoted keys, stops the {group} consumer of that partition")
    inc.details.update({
        "topic": topic, "partition": p, "poison_offset": offset, "stuck_conversations": int(len(np.unique(
            t.conv[stuck]))),
        "poison_record": {"topic": topic, "partition": p, "key": key, "timestamp": iso(_ts(T)),
                          "value": f"{{message_id: {replayed}, event_type: MESSAGE_CREATED}}"},
    })


def stuck_lock(t: Traffic, inc: Incident) -> None:
    T, rng, prof = inc.trigger_ns, inc.rng, t.profile
    router, group = prof.services.router, prof.kafka.router_group
    # The pod is killed (SIGKILL: no shutdown lines) while it holds the locks of the
    # conversations it was working on; a new pod takes over after 30-60 s.
    restart = T + int(rng.uniform(30, 60) * NS)
    active = np.unique(t.conv[(t.routed != NAT) & (t.routed >= T - 10 * NS) & (t.routed < T)])
    going_on = active[np.isin(active, t.conv[t.created >= restart])]
    pool = going_on if len(going_on) else active
    convs = rng.choice(pool, min(len(pool), int(rng.integers(1, 4))), replace=False) if len(pool) else pool
    routable = _routable(t)
    queue = np.flatnonzero(routable & (t.routed >= T) & (t.created < restart + 10 * MINUTE))
    _delay(t, queue, _drained(t, queue, restart, routable.sum()) - t.routed[queue])
    if len(convs):
        # The event being worked on when the pod died was never acknowledged: the new pod
        # takes it again and meets the lock, like every later message of the conversation.
        for c in convs:
            last = np.flatnonzero((t.conv == c) & routable & (t.routed < T))[-1:]
            t.routed[last] = restart
        _lock_left_behind(t, inc, convs, restart, f"{router}-7d9f8b6c5-x2k4q:{LISTENER_THREAD}")
    coord = "org.apache.kafka.clients.consumer.internals.ConsumerCoordinator"
    client = f"consumer-{group}-1"
    parts = ", ".join(f"{prof.kafka.message_events.name}-{p}" for p in range(prof.kafka.message_events.partitions))
    lines = [
        (restart - 9 * NS, "INFO", "com.chat4all.router.RouterServiceApplication", "main",
         f"Starting RouterServiceApplication v1.0.0 using Java 21.0.5 with PID 1 ({router}-7d9f8b6c5-m8r2t)"),
        (restart - 800 * MS, "INFO", "com.chat4all.router.RouterServiceApplication", "main",
         "Started RouterServiceApplication in 8.9 seconds (process running for 9.6)"),
        (restart - 300 * MS, "INFO", coord, LISTENER_THREAD,
         f"[Consumer clientId={client}, groupId={group}] Successfully joined group with generation "
         f"Generation{{generationId={int(rng.integers(5, 40))}, memberId='{client}-{rng.integers(0, 2**32):08x}', "
         "protocol='range'}"),
        (restart - 100 * MS, "INFO", _SPRING_CONTAINER, LISTENER_THREAD, f"{group}: partitions assigned: [{parts}]"),
    ]
    ts, level, logger, thread, message = zip(*lines, strict=True)
    inc.logs.append(log_block(list(ts), router, list(level), list(logger), list(thread), list(message)))
    inc.trigger = f"a {router} pod was killed (OOMKilled) while holding conversation locks that have no TTL"
    inc.details["restart"] = [iso(_ts(T)), iso(_ts(restart))]


def webhooks_stopped(t: Traffic, inc: Incident) -> None:
    T, rng, prof = inc.trigger_ns, inc.rng, t.profile
    c = int(rng.choice(pop.EXTERNAL))
    connector = prof.services.connector(pop.CHANNELS[c])
    inc.channel = pop.CHANNELS[c]
    inc.details["connector"] = connector
    if t.deployed_flow:
        # The deployed connectors report back to message-service by callback (this installation
        # has CALLBACK_BASE_URL set); one connector is redeployed with a host that does not resolve.
        host = f"{prof.services.message_service}.chat4all-prod.svc"
        t.callback_error = None
        t.callback_fault = (c, T, f"Failed to resolve '{host}' [A(1), AAAA(28)] after 2 queries")
        inc.trigger = f"{connector} redeployed with a callback URL whose host does not resolve ({host})"
        return
    # Runbook flow: the platform's delivery webhooks for the channel no longer reach the
    # connector: its messages stay SENT, and failures reported by webhook never arrive.
    sel = (t.channel == c) & (t.ack != NAT) & (t.ack >= T - 5 * NS)
    late = sel & (t.delivered != NAT) & (t.delivered >= T)
    t.delivered[late] = NAT
    t.read[late] = NAT
    cb = sel & (t.fail_kind >= 0) & IS_CALLBACK[np.maximum(t.fail_kind, 0)] & (t.failed >= T)
    t.failed[cb] = NAT
    t.fail_kind[cb] = -1
    inc.trigger = (f"the platform's delivery webhooks stopped reaching {connector} (its public /webhook route was "
                   "dropped from the reverse proxy)")


def broker_restart(t: Traffic, inc: Incident) -> None:
    T, rng, prof = inc.trigger_ns, inc.rng, t.profile
    back = T + int(rng.uniform(30, 45) * NS)
    routable = _routable(t)
    queue = np.flatnonzero(routable & (t.routed >= T) & (t.created < back + 10 * MINUTE))
    _delay(t, queue, _drained(t, queue, back, routable.sum()) - t.routed[queue])
    group = prof.kafka.router_group
    node = "Connection to node 1 (kafka/172.18.0.5:9092) could not be established. Node may not be available."
    clients = [(prof.services.router, f"[Consumer clientId=consumer-{group}-1, groupId={group}] ", LISTENER_THREAD),
               (prof.services.message_service, "[Producer clientId=producer-1] ",
                "kafka-producer-network-thread | producer-1")]
    if t.deployed_flow:
        clients.append((prof.services.router, "[Producer clientId=producer-1] ",
                        "kafka-producer-network-thread | producer-1"))
    for service, prefix, thread in clients:
        retries = _times(rng, T + int(rng.integers(50, 900)) * MS, back, 1.0)
        inc.logs.append(log_block(retries, service, "WARN", "org.apache.kafka.clients.NetworkClient", thread,
                                  prefix + node))
    coord = "org.apache.kafka.clients.consumer.internals.ConsumerCoordinator"
    consumer = f"[Consumer clientId=consumer-{group}-1, groupId={group}] "
    inc.logs.append(log_block(
        [T + 30 * MS, back + 400 * MS], prof.services.router, "INFO", coord, LISTENER_THREAD,
        [consumer + "Group coordinator kafka:9092 (id: 2147483646 rack: null) is unavailable or invalid due to "
                    "cause: coordinator unavailable. isDisconnected: true. Rediscovery will be attempted.",
         consumer + "Discovered group coordinator kafka:9092 (id: 2147483646 rack: null)"]))
    inc.trigger = "the Kafka broker restarted (rolling upgrade); clients reconnected within a minute"
    inc.details["broker_down"] = [iso(_ts(T)), iso(_ts(back))]


def rebalance_drained(t: Traffic, inc: Incident) -> None:
    T, rng, prof = inc.trigger_ns, inc.rng, t.profile
    parts = prof.kafka.message_events.partitions
    resume = T + int(rng.uniform(20, 60) * NS)
    moved = np.sort(rng.choice(parts, max(1, parts // 2), replace=False))
    routable = _routable(t)
    # The eager (range) protocol stops every partition until the new assignment; no member was
    # lost, so nothing is processed twice and no lock is left behind.
    queue = np.flatnonzero(routable & (t.routed >= T) & (t.created < resume + 10 * MINUTE))
    _delay(t, queue, _drained(t, queue, resume, routable.sum()) - t.routed[queue])
    _rebalance_logs(t, inc, T, resume, moved, kicked=False)
    inc.trigger = f"{prof.services.router} scaled out: a second replica joined consumer group {prof.kafka.router_group}"
    inc.details["rebalance"] = {"start": iso(_ts(T)), "end": iso(_ts(resume)),
                                "topic": prof.kafka.message_events.name, "moved_partitions": [int(p) for p in moved]}


def _ts(ns: int) -> pd.Timestamp:
    return pd.Timestamp(int(ns), unit="ns", tz="UTC")


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("baseline", "healthy",
             "Normal traffic: ~99.5% DELIVERED/READ, a handful of sporadic failures of mixed kinds, "
             "delivery P95 ~1-2 s, consumer lag < 100.", baseline, has_trigger=False),
    Scenario("router-outage", "router_down",
             "The router stops consuming: new messages stay PENDING, no SENT/DELIVERED after the trigger, the "
             "router group's lag on the message events topic grows into the thousands, router logs end with "
             "'Failed to consume from Kafka: Connection refused' and then stop.", router_outage),
    Scenario("whatsapp-rate-limit", "platform_rate_limit",
             "A WhatsApp broadcast hits the Cloud API throughput limit: code 130429 / HTTP 429 with "
             "X-RateLimit/Retry-After in the connector logs, retries, FAILED WhatsApp messages in the DLQ; "
             "other channels fine.", whatsapp_rate_limit, surge=rate_limit_surge),
    Scenario("token-expired", "credential_expiry",
             "One connector's access token expires: OAuthException code 190 / HTTP 401 on every call from "
             "the trigger on; every message of that channel fails.", token_expired),
    Scenario("recipient-not-on-whatsapp", "invalid_recipient",
             "A broadcast to an imported list: code 131026 (message undeliverable) concentrated on a set of "
             "recipients, many with malformed E.164 numbers or unverified identities.", recipient_not_on_whatsapp),
    Scenario("content-too-long", "content_over_limit",
             "A client release stops truncating: texts over the platform limits (Instagram 1000, WhatsApp/"
             "Telegram 4096 characters) and media over the file limits fail; failure follows content_length.",
             content_too_long),
    Scenario("partition-rebalance", "partition_rebalance",
             "The router group rebalances: partitions revoked and reassigned, lag spikes then drains, later "
             "messages of a conversation delivered before earlier ones, some delivered twice, a conversation "
             "lock left without TTL.", partition_rebalance),
    Scenario("telegram-bot-blocked", "bot_blocked",
             "Some Telegram users blocked the bot: 403 'Forbidden: bot was blocked by the user' for those "
             "recipients only; other Telegram messages succeed (not a credential problem).", telegram_bot_blocked),
    Scenario("mongo-write-timeouts", "mongodb_write_failure",
             "MongoDB writes time out for a while: 'MongoDB write failed: timeout' / MongoTimeoutException, "
             "status updates lost (messages stuck in SENT/PENDING), history rows missing, slow and failed "
             "MongoDB spans.", mongo_write_timeouts),
    Scenario("missing-topic", "missing_topic",
             "A topic the router publishes to does not exist (an outbound topic in the runbook layout, "
             "status-updates in the deployed one): UNKNOWN_TOPIC_OR_PARTITION and 'not present in metadata "
             "after 60000 ms' in the router logs, messages stuck PENDING.", missing_topic),
    Scenario("whatsapp-outage", "platform_outage",
             "WhatsApp Cloud API outage bursts: code 131016 / HTTP 503 and 502, retried; connector 5xx rate "
             "high, FAILED messages and DLQ growth during the bursts.", whatsapp_outage),
    Scenario("poison-pill", "partition_problem",
             "A record that is not JSON (a manual replay typed with unquoted keys) sits on one partition of the "
             "message events topic: the router logs RecordDeserializationException for that partition in a loop, "
             "lag grows into the hundreds there and stays 0-1 elsewhere; only conversations hashed (murmur2) to "
             "it are stuck PENDING.", poison_pill),
    Scenario("stuck-lock", "conversation_lock_stuck",
             "A router pod is killed while it holds conversation locks that have no TTL: after a short lag blip "
             "the new pod drains the backlog, but every later message of those conversations stays PENDING with "
             "'Conversation lock busy' WARN lines; the keys sit in Redis without TTL.", stuck_lock),
    Scenario("webhooks-stopped", "webhook_unreachable",
             "One channel's delivery webhooks stop arriving: in the runbook flow its messages stay SENT forever; "
             "in the deployed flow that connector's status callbacks to message-service fail from the trigger on.",
             webhooks_stopped),
    Scenario("broker-restart", "healthy",
             "Harmless: the Kafka broker restarts, clients log 'Node may not be available' for ~40 s and the "
             "router's lag blips, then drains within a minute.", broker_restart),
    Scenario("rebalance-drained", "healthy",
             "Harmless: a router replica joins, the group rebalances (partitions revoked and assigned), lag "
             "spikes for under a minute and drains; nothing out of order, duplicated or locked.", rebalance_drained),
)}


def scenario_names() -> list[str]:
    """Names of the registered scenarios, in registry order."""
    return list(SCENARIOS)
