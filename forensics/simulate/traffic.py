"""Traffic: the messages of one window and what happened to each, as numpy arrays.

``build_traffic`` draws conversations (bursts of messages a few seconds apart), their
channel, recipient and agent, message texts and files, and the partition and offset of
each message's event on the message events topic (Kafka's murmur2 partitioner on the
conversation id). ``healthy_delivery`` then times the normal path of every message:

    created -> routed (router consumed the event) -> first attempt (connector call)
            -> ack (platform accepted; the runbook's SENT) -> delivered -> read

Scenarios then rewrite these arrays (fail, retry, stall, lose writes) through the
methods below. Times are int64 ns since the epoch; ``NAT`` means it never happened.
Nothing here builds a table: see :mod:`forensics.simulate.tables`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from forensics.profiles import Profile
from forensics.simulate import population as pop
from forensics.simulate.columns import MS, NAT, NS, lognormal_s, uuids
from forensics.simulate.failures import ATTEMPT_S, CHRONIC, IS_CALLBACK, KIND, KINDS, NOISE
from forensics.sources.partitioner import partitions_for

MAX_RETRIES = 3
NOISE_RATE = 0.003
"""Share of connector-bound messages that meet a sporadic platform error in any scenario."""
CHRONIC_RATE = (0.005, 0.02)
"""Range of the extra share of connector-bound messages failing with the ``CHRONIC`` mix when
the deployed code's chronic noise is on (drawn per seed: installations differ)."""
REDELIVERY_RATE = (0.001, 0.005)
"""Range of the share of messages whose event the router meets a second time (chronic noise;
drawn per seed): it finds the ``router:processed`` key and skips it with two WARN lines."""
CALLBACK_REFUSED = "Connection refused: localhost/127.0.0.1:8081"
"""What a connector's READ-status callback meets when CALLBACK_BASE_URL is unset: the
default ``http://localhost:8081`` points at the connector's own container."""
_CALL_MEDIAN_S = {pop.WA: 0.40, pop.TG: 0.25, pop.IG: 0.45, pop.INTERNAL: 0.01}


@dataclass
class Surge:
    """Extra single-message conversations (a broadcast campaign) on one channel."""

    channel: int
    start_ns: int
    duration_ns: int
    share: float
    """Share of all conversations that belong to the campaign."""


@dataclass
class Traffic:
    profile: Profile
    deployed_flow: bool
    """True: the deployed flow (status-updates topic, no SENT/READ, router calls connectors over HTTP).
    False: the runbook flow (SENT, DELIVERED, READ; connectors consume per-channel outbound topics)."""
    start_ns: int
    end_ns: int
    rng: np.random.Generator
    # conversations (C)
    conv_ids: np.ndarray
    conv_channel: np.ndarray
    conv_recipient: np.ndarray
    conv_sender: np.ndarray
    conv_group: np.ndarray
    conv_recipient_count: np.ndarray
    conv_partition: np.ndarray
    conv_start: np.ndarray
    # people
    recipients: pop.Recipients
    sender_ids: np.ndarray
    sender_names: np.ndarray
    # messages (n), in creation order
    msg_ids: np.ndarray
    created: np.ndarray
    conv: np.ndarray
    content_code: np.ndarray
    content_type: np.ndarray
    file_size: np.ndarray
    file_ids: np.ndarray
    event_partition: np.ndarray
    event_offset: np.ndarray
    vocab: list[str]
    vocab_len: np.ndarray
    # what happened (filled by healthy_delivery, rewritten by scenarios)
    routed: np.ndarray = field(init=False)
    first_attempt: np.ndarray = field(init=False)
    call_ns: np.ndarray = field(init=False)
    step_ns: np.ndarray = field(init=False)
    ack: np.ndarray = field(init=False)
    delivered: np.ndarray = field(init=False)
    read: np.ndarray = field(init=False)
    failed: np.ndarray = field(init=False)
    fail_kind: np.ndarray = field(init=False)
    transient_kind: np.ndarray = field(init=False)
    retries: np.ndarray = field(init=False)
    duplicate_at: np.ndarray = field(init=False)
    lost_from: np.ndarray = field(init=False)
    """Mongo writes of this message at or after this time never land (doc and history)."""
    mongo_timeout: np.ndarray = field(init=False)
    """The lost writes were lost to MongoDB timeouts (else to a failed status publish)."""
    history_gap: np.ndarray = field(init=False)
    """The message document was updated but the history insert of the last transition failed."""
    publish_failed: np.ndarray = field(init=False)
    """The router could not publish the message onward (missing topic)."""
    publish_at: np.ndarray = field(init=False)
    """When the failed publish was attempted (the producer gives up max.block.ms later)."""
    chronic_noise: bool = field(init=False, default=False)
    """The deployed code's chronic noise is on (``add_chronic_noise``)."""
    redelivery_ns: np.ndarray | None = field(init=False, default=None)
    """How long after the message finished (delivered or failed) the router met its event a
    second time and skipped it as a duplicate (0: never)."""
    callback_error: str | None = field(init=False, default=None)
    """What every connector READ-status callback meets (``CALLBACK_REFUSED`` with the chronic
    noise); None: the callbacks reach message-service."""
    callback_fault: tuple[int, int, str] | None = field(init=False, default=None)
    """(channel, from ns, error): that channel's callbacks fail with ``error`` from then on."""
    # derived once the scenario has run (tables.failure_texts / tables.messages / tables.status_events)
    cuts_ns: tuple[int, ...] = field(init=False, default=())
    """Boundaries between periods returned apart (a baseline before the window); the history
    rows of ``status_events`` are ordered by period first, so each period is one slice."""
    history_msg: np.ndarray | None = field(init=False, default=None)
    """Message index of each history row of ``status_events``, in the table's order."""
    body: np.ndarray | None = field(init=False, default=None)
    error_text: np.ndarray | None = field(init=False, default=None)
    status: np.ndarray | None = field(init=False, default=None)
    platform_ids: np.ndarray | None = field(init=False, default=None)
    out_partition: np.ndarray | None = field(init=False, default=None)
    out_offset: np.ndarray | None = field(init=False, default=None)

    @property
    def n(self) -> int:
        return len(self.created)

    @property
    def channel(self) -> np.ndarray:
        return self.conv_channel[self.conv]

    @property
    def recipient(self) -> np.ndarray:
        return self.conv_recipient[self.conv]

    @property
    def content_length(self) -> np.ndarray:
        return self.vocab_len[self.content_code]

    def add_text(self, text: str) -> int:
        """Add a text to the vocabulary; returns its code."""
        self.vocab.append(text)
        self.vocab_len = np.append(self.vocab_len, len(text))
        return len(self.vocab) - 1

    # -- outcome rewrites used by the scenarios -------------------------------------------
    def fail_now(self, idx: np.ndarray, kind: int | np.ndarray) -> None:
        """Non-retryable failure at the first attempt (api/transport) or by callback after the ack."""
        idx = np.asarray(idx)
        kinds = np.broadcast_to(np.asarray(kind, dtype=np.int16), idx.shape)
        callback = IS_CALLBACK[kinds]
        attempt = ATTEMPT_S[kinds]
        self.fail_kind[idx] = kinds
        self.transient_kind[idx] = -1
        self.retries[idx] = 0
        api_fail = self.first_attempt[idx] + (attempt * NS).astype(np.int64)
        cb_fail = self.ack[idx] + lognormal_s(self.rng, 4.0, 0.8, len(idx))
        self.failed[idx] = np.where(callback, cb_fail, api_fail)
        self.ack[idx] = np.where(callback, self.ack[idx], NAT)
        # In the deployed flow the router already published DELIVERED when the platform
        # accepted the message; the webhook's failure comes after it.
        self.delivered[idx] = np.where(callback & self.deployed_flow, self.delivered[idx], NAT)
        self.read[idx] = NAT

    def retry(self, idx: np.ndarray, kind: int, p_fail: Callable[[np.ndarray], np.ndarray]) -> None:
        """Retryable failures: each of up to 1 + MAX_RETRIES attempts fails with ``p_fail(time)``.

        Attempts start ``step_ns`` apart (the failed attempt plus the kind's backoff). A message
        whose attempts all fail is FAILED with retry_count = MAX_RETRIES; one that succeeds on
        attempt k is delivered late with retry_count = k.
        """
        idx = np.asarray(idx)
        if not len(idx):
            return
        k = KINDS[kind]
        step = ((k.attempt_s + k.backoff_s * self.rng.uniform(0.8, 1.2, len(idx))) * NS).astype(np.int64)
        self.step_ns[idx] = step
        first = self.first_attempt[idx]
        attempts = np.arange(MAX_RETRIES + 1)
        times = first[:, None] + step[:, None] * attempts[None, :]
        fails = self.rng.random(times.shape) < p_fail(times)
        ok = ~fails
        first_ok = np.where(ok.any(axis=1), ok.argmax(axis=1), -1)
        failed_all = first_ok < 0
        hit = first_ok != 0
        sel, k_ok = idx[hit & ~failed_all], first_ok[hit & ~failed_all]
        shift = step[hit & ~failed_all] * k_ok
        for arr in (self.ack, self.delivered, self.read):
            arr[sel] = np.where(arr[sel] == NAT, NAT, arr[sel] + shift)
        self.retries[sel] = k_ok
        self.transient_kind[sel] = kind
        dead = idx[failed_all]
        self.retries[dead] = MAX_RETRIES
        self.transient_kind[dead] = kind
        self.fail_kind[dead] = kind
        self.failed[dead] = first[failed_all] + step[failed_all] * MAX_RETRIES + int(k.attempt_s * NS)
        self.ack[dead] = NAT
        self.delivered[dead] = NAT
        self.read[dead] = NAT

    def never_routed(self, idx: np.ndarray) -> None:
        """The router never consumed these events: nothing after PENDING."""
        self.routed[idx] = NAT
        self.stall(idx)

    def stall(self, idx: np.ndarray) -> None:
        """The router consumed these events but never handed them on: nothing after PENDING."""
        for arr in (self.first_attempt, self.ack, self.delivered, self.read, self.failed):
            arr[idx] = NAT
        self.fail_kind[idx] = -1
        self.transient_kind[idx] = -1
        self.retries[idx] = 0

    def floor_ms(self) -> None:
        """Round every instant down to the millisecond: MongoDB dates and Kafka timestamps hold ms."""
        for name in ("created", "routed", "first_attempt", "ack", "delivered", "read", "failed", "duplicate_at",
                     "lost_from", "publish_at"):
            arr = getattr(self, name)
            real = arr != NAT
            arr[real] = arr[real] // MS * MS

    def release(self) -> None:
        """Drop the per-message arrays only the bounded tables and ``messages`` needed."""
        for name in ("routed", "first_attempt", "call_ns", "step_ns", "ack", "delivered", "read", "failed",
                     "duplicate_at", "lost_from", "publish_at", "redelivery_ns", "file_size", "body", "platform_ids",
                     "event_offset", "out_partition", "out_offset", "content_code"):
            setattr(self, name, None)

    def attempt_times(self, idx: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(message index, attempt start) of the first ``count[i]`` attempts of each message."""
        rep = np.repeat(idx, count)
        k = np.arange(len(rep)) - np.repeat(np.cumsum(count) - count, count)
        return rep, self.first_attempt[rep] + self.step_ns[rep] * k


def build_traffic(rng: np.random.Generator, profile: Profile, n: int, start_ns: int, end_ns: int,
                  surge: Surge | None = None, chronic_noise: bool = False,
                  lead: tuple[int, int] | None = None) -> Traffic:
    """Draw ``n`` messages in [start_ns, end_ns) grouped into conversations.

    lead: ``(count, since_ns)``: about that many more messages from ``since_ns`` on (a baseline
    period before the window; the traffic then starts at ``since_ns``). Its conversations run
    on into the window as they would, and the window's own conversations make up the rest,
    so the window still holds exactly ``n`` messages. chronic_noise: the deployed code's
    everyday noise (``add_chronic_noise``).
    """
    window_start, share = start_ns, surge.share if surge is not None else 0.0
    if lead is not None and lead[0] > 0:
        before = _conversations(rng, lead[0], lead[1], start_ns, 0.0, run_on=True)
        spill = int((before[2] >= start_ns).sum())
        after = _conversations(rng, max(n - spill, 1), start_ns, end_ns, share)
        sizes, campaign, created, conv_start = (np.concatenate(pair) for pair in zip(before, after, strict=True))
        start_ns, n = lead[1], len(created)
    else:
        sizes, campaign, created, conv_start = _conversations(rng, n, start_ns, end_ns, share)
    n_conv = len(sizes)
    conv = np.repeat(np.arange(n_conv, dtype=np.int32), sizes)
    span = created[np.cumsum(sizes) - 1] - conv_start
    conv_channel = rng.choice(len(pop.CHANNELS), n_conv, p=pop.CHANNEL_MIX).astype(np.int8)
    if surge is not None:
        conv_channel[campaign] = surge.channel
        moved = surge.start_ns + (rng.random(campaign.sum()) * surge.duration_ns).astype(np.int64)
        moved = np.minimum(moved, end_ns - span[campaign] - 1)
        created[np.repeat(campaign, sizes)] += np.repeat(moved - conv_start[campaign], sizes[campaign])
        conv_start[campaign] = moved
    order = np.argsort(created, kind="stable")
    created, conv = created[order], conv[order]

    # Recipients: each channel's pool is a bit smaller than its conversation count, so some
    # recipients have several conversations.
    per_channel = np.bincount(conv_channel, minlength=len(pop.CHANNELS))
    sizes_by_ch = {ch: max(3, int(per_channel[ch] * 0.75)) for ch in range(len(pop.CHANNELS))}
    rcpt = pop.recipients(rng, sizes_by_ch)
    pool_start = {ch: int(np.flatnonzero(rcpt.channel == ch)[0]) for ch in sizes_by_ch}
    conv_recipient = np.empty(n_conv, dtype=np.int32)
    for ch, size in sizes_by_ch.items():
        sel = conv_channel == ch
        conv_recipient[sel] = pool_start[ch] + rng.integers(0, size, sel.sum())
    conv_group = (conv_channel == pop.INTERNAL) & (rng.random(n_conv) < 0.5)
    n_senders = int(np.clip(n // 2000, 5, 500))
    sender_names, _, _ = pop.names(rng, n_senders)
    conv_sender = rng.integers(0, n_senders, n_conv).astype(np.int32)

    # Texts: greeting x body for TEXT, captions for files; a few hostile texts in every run.
    texts = pop.short_texts()
    vocab = texts + list(pop.CAPTIONS) + list(pop.HOSTILE_CONTENT)
    content_type = rng.choice(len(pop.CONTENT_TYPES), n, p=pop.CONTENT_MIX).astype(np.int8)
    is_text = content_type == pop.TEXT
    content_code = np.where(is_text, rng.integers(0, len(texts), n),
                            len(texts) + rng.integers(0, len(pop.CAPTIONS), n)).astype(np.int32)
    in_window = np.flatnonzero(created >= window_start)  # a few hostile texts in every window
    hostile = rng.choice(in_window, min(len(in_window), len(pop.HOSTILE_CONTENT)), replace=False)
    content_code[hostile] = len(texts) + len(pop.CAPTIONS) + np.arange(len(hostile))
    content_type[hostile] = pop.TEXT
    file_size = np.full(n, -1, dtype=np.int64)
    for ct, (median, sigma, *_rest) in pop.FILE_SHAPES.items():
        sel = content_type == ct
        file_size[sel] = (median * rng.lognormal(0.0, sigma, sel.sum())).astype(np.int64)
    file_ids = uuids(rng, n)

    conv_ids = uuids(rng, n_conv)
    topic = profile.kafka.message_events
    conv_partition = partitions_for(conv_ids, topic.partitions)
    event_partition = conv_partition[conv]
    event_offset = _offsets(rng, event_partition, topic.partitions)

    t = Traffic(
        profile=profile, deployed_flow=profile.kafka.status_updates is not None,
        start_ns=start_ns, end_ns=end_ns, rng=rng,
        conv_ids=conv_ids, conv_channel=conv_channel, conv_recipient=conv_recipient, conv_sender=conv_sender,
        conv_group=conv_group, conv_recipient_count=np.where(conv_group, rng.integers(2, 9, n_conv), 1),
        conv_partition=conv_partition, conv_start=conv_start,
        recipients=rcpt, sender_ids=uuids(rng, n_senders), sender_names=sender_names,
        msg_ids=uuids(rng, n), created=created, conv=conv, content_code=content_code,
        content_type=content_type, file_size=file_size, file_ids=file_ids,
        event_partition=event_partition, event_offset=event_offset,
        vocab=vocab, vocab_len=np.array([len(v) for v in vocab], dtype=np.int64),
    )
    t.chronic_noise = chronic_noise
    healthy_delivery(t)
    return t


def _conversations(rng: np.random.Generator, n: int, start_ns: int, end_ns: int, campaign_share: float,
                   run_on: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Conversations of exactly ``n`` messages starting in [start_ns, end_ns): sizes (1 +
    Poisson(3), the last one cut), which are single-message campaign conversations
    (``campaign_share`` of them), each message's creation time (in conversation order) and
    each conversation's start. ``run_on``: conversations may go on past ``end_ns``; otherwise
    every message is created before it."""
    sizes = 1 + rng.poisson(3.0, n // 3 + 2)
    campaign = rng.random(len(sizes)) < campaign_share
    sizes[campaign] = 1
    ends = np.cumsum(sizes)
    n_conv = int(np.searchsorted(ends, n) + 1)
    sizes, campaign = sizes[:n_conv].copy(), campaign[:n_conv]
    sizes[-1] -= ends[n_conv - 1] - n
    conv = np.repeat(np.arange(n_conv, dtype=np.int32), sizes)
    first_of_conv = np.cumsum(sizes) - sizes
    # Messages of a conversation follow each other by exponential gaps (mean 25 s).
    gaps = rng.exponential(25.0 * NS, n).astype(np.int64)
    gaps[first_of_conv] = 0
    offsets = np.cumsum(gaps)
    offsets -= np.repeat(offsets[first_of_conv], sizes)
    span = offsets[first_of_conv + sizes - 1]
    duration = end_ns - start_ns
    squeeze = span > duration * 0.5
    if squeeze.any():
        factor = np.where(squeeze, duration * 0.5 / np.maximum(span, 1), 1.0)
        offsets = (offsets * factor[conv]).astype(np.int64)
        span = offsets[first_of_conv + sizes - 1]
    room = duration if run_on else duration - span - 1
    conv_start = start_ns + (rng.random(n_conv) * room).astype(np.int64)
    return sizes, campaign, conv_start[conv] + offsets, conv_start


def _offsets(rng: np.random.Generator, partition: np.ndarray, partitions: int) -> np.ndarray:
    """Offsets increasing per partition in the arrays' (time) order, from a random base."""
    order = np.argsort(partition, kind="stable")
    counts = np.bincount(partition, minlength=partitions)
    starts = np.cumsum(counts) - counts
    rank = np.empty(len(partition), dtype=np.int64)
    rank[order] = np.arange(len(partition)) - np.repeat(starts, counts)
    base = rng.integers(100_000, 5_000_000, partitions)
    return base[partition] + rank


def healthy_delivery(t: Traffic) -> None:
    """Time the normal path of every message, then add the sporadic failures of any day."""
    rng, n = t.rng, t.n
    ch = t.channel
    t.routed = t.created + lognormal_s(rng, 0.04, 0.5, n)
    hop = lognormal_s(rng, 0.012, 0.4, n) if t.deployed_flow else lognormal_s(rng, 0.035, 0.5, n)
    t.first_attempt = t.routed + hop
    t.call_ns = np.zeros(n, dtype=np.int64)
    for c, median in _CALL_MEDIAN_S.items():
        sel = ch == c
        t.call_ns[sel] = lognormal_s(rng, median, 0.55, sel.sum())
    t.step_ns = np.zeros(n, dtype=np.int64)
    t.ack = t.first_attempt + t.call_ns
    if t.deployed_flow:
        t.delivered = t.ack + lognormal_s(rng, 0.02, 0.4, n)
        t.read = np.full(n, NAT, dtype=np.int64)
    else:
        t.delivered = t.ack + np.where(ch == pop.INTERNAL, 20 * MS, lognormal_s(rng, 0.35, 0.5, n))
        t.read = np.where(rng.random(n) < 0.35, t.delivered + rng.exponential(180.0 * NS, n).astype(np.int64), NAT)
    t.failed = np.full(n, NAT, dtype=np.int64)
    t.fail_kind = np.full(n, -1, dtype=np.int16)
    t.transient_kind = np.full(n, -1, dtype=np.int16)
    t.retries = np.zeros(n, dtype=np.int8)
    t.duplicate_at = np.full(n, NAT, dtype=np.int64)
    t.lost_from = np.full(n, NAT, dtype=np.int64)
    t.mongo_timeout = np.zeros(n, dtype=bool)
    t.history_gap = np.zeros(n, dtype=bool)
    t.publish_failed = np.zeros(n, dtype=bool)
    t.publish_at = np.full(n, NAT, dtype=np.int64)
    t.redelivery_ns = np.zeros(n, dtype=np.int64)
    add_noise(t)
    if t.chronic_noise:
        add_chronic_noise(t)
    sequence_conversations(t)


def sequence_conversations(t: Traffic, max_passes: int = 20) -> None:
    """A conversation's events share a partition and are processed one after the other: the
    router takes a message only once the previous one of its conversation is finished
    (delivered or failed). Shifts later messages until no conversation overlaps, so healthy
    traffic has no out-of-order deliveries (spec SC-004)."""
    order = np.lexsort((t.created, t.conv))
    conv = t.conv[order]
    same = np.r_[False, conv[1:] == conv[:-1]]
    for _ in range(max_passes):
        finish = np.where(t.failed != NAT, t.failed, np.where(t.delivered != NAT, t.delivered, t.routed))[order]
        running = pd.Series(finish).groupby(conv).cummax().to_numpy()
        prev = np.r_[NAT, running[:-1]]
        routed = t.routed[order]
        wait = np.where(same & (prev != NAT) & (routed <= prev), prev + MS - routed, 0)
        if not wait.any():
            return
        delay = np.zeros(t.n, dtype=np.int64)
        delay[order] = wait
        for arr in (t.routed, t.first_attempt, t.ack, t.delivered, t.read, t.failed):
            arr += np.where(arr == NAT, 0, delay)


def add_chronic_noise(t: Traffic) -> None:
    """The deployed code's everyday noise, the same before and during any incident: background
    failures of a wide mix of platform codes, connectors whose READ-status callbacks are refused
    (CALLBACK_BASE_URL unset), and events the router meets twice and skips as duplicates."""
    add_noise(t, t.rng.uniform(*CHRONIC_RATE), CHRONIC)
    t.callback_error = CALLBACK_REFUSED
    again = np.flatnonzero((t.routed != NAT) & (t.rng.random(t.n) < t.rng.uniform(*REDELIVERY_RATE)))
    t.redelivery_ns[again] = lognormal_s(t.rng, 20.0, 1.0, len(again))


def add_noise(t: Traffic, rate: float = NOISE_RATE, mix: dict[int, dict[str, float]] = NOISE) -> None:
    """Sporadic failures of mixed kinds on every connector channel (``mix``: channel -> kind -> share)."""
    ch = t.channel
    hit = (ch != pop.INTERNAL) & (t.fail_kind < 0) & (t.transient_kind < 0) & (t.rng.random(t.n) < rate)
    for c, shares in mix.items():
        idx = np.flatnonzero(hit & (ch == c))
        names = list(shares)
        picks = t.rng.choice(len(names), len(idx), p=list(shares.values()))
        for j, name in enumerate(names):
            sel = idx[picks == j]
            kind = KIND[name]
            if KINDS[kind].retryable:
                # Transient trouble: each attempt fails with probability 0.6.
                t.retry(sel, kind, lambda times: np.full(times.shape, 0.6))
            else:
                t.fail_now(sel, kind)
