"""Root-cause ranking: hypotheses scored from the findings of every source by declarative rules.

Method
------
1. **Signals.** The findings of one run that *changed* (new or worse than the baseline, or
   not judged for want of one: :mod:`forensics.analysis.change`) are reduced to named signals, each
   with a strength in 0..1 and the findings behind it (:func:`signals`). What was there in
   the baseline too (chronic) never supports a cause:

   - symptom signals: ``stuck_pending``, ``stuck_all_channels``, ``stuck_sent``,
     ``failed_spike``, ``router_lag``, ``lag_skewed``, ``router_silent``, ``connector_5xx``,
     ``p95_breach``, ``out_of_order``, ``duplicates``, ``missing_topic``, ``stuck_locks``,
     ... Strength = the finding's severity (critical 1, warning 0.5, info 0.15), scaled by
     its size where a size matters. A stuck lock is a state: one lock without expiry that
     holds messages counts in full, however few conversations it holds.
   - error signals ``cause:<id>``: FAILED messages (error groups) and error log lines / DLQ
     records / error spans whose catalog entry names the cause. Strength = dominance x
     magnitude: dominance = the cause's share among the errors that name a cause and rose
     above the baseline (all of them when there is none);
     magnitude = its share of the messages / ``FULL_MAGNITUDE`` (1 % of messages is full
     strength), capped at 1, counting only as many as the cause's errors rose above the
     baseline's rate of the same cause, and nothing unless that rise is significant: one
     test per cause, in messages where a source counts them (a retried message leaves
     several rows), Holm-adjusted over all the causes shown (among many causes of a mixed
     background each tested alone, some always looks new; a few dozen new rejections stand
     out even where the background's total volume hides them). Sporadic errors of
     every kind in a healthy window stay weak.
   - ``runbook_cause:<id>``: the same for the cause the runbook's appendix implies where it
     disagrees with the platform's documentation (WhatsApp 131047 "rate limit" per the
     runbook, re-engagement window per WhatsApp). Rules give it a small weight, so the
     documented meaning wins but the runbook's reading stays visible.
   - data signals: ``content_data`` (FAILED messages over the platform's limits),
     ``recipient_data`` (FAILED messages to malformed or unknown identities).
   - localisation: ``one_partition`` (the router's lag on one partition and the stuck
     conversations hashing to it: the partition, not the router, ``partition_confined``);
     ``one_channel`` / ``all_channels``, ``one_connector`` / ``all_connectors`` (the failures
     confined to one channel or connector, or spread over all: ``channel_scope``,
     ``connector_scope``), ``few_recipients`` (confined to a few recipients or an identity
     class: ``recipient_scope``), ``core_service`` (the new errors confined to services off
     the connectors' path: ``service_scope``). Confined counts 1, concentrated (the rest rose
     too) 0.5, times the failures placed as a share of the messages (full at
     ``FULL_MAGNITUDE``). Confined to one channel supports that channel's connector and platform causes
     (as context, scaled by their own evidence) and counts against causes of the whole
     platform; spread over every channel counts against a single connector's.
   - blips: when no message was lost or held anew (:func:`lost_anew`: stuck, behind a stuck
     lock, a channel's FAILED rate risen, or more FAILED in all than the baseline's rate;
     a new code among as many FAILED messages as before is not a loss), a signal whose
     findings all lasted at most ``blip_s`` and ended at least ``blip_s`` before the
     window's end keeps :data:`BLIP` of its strength (a broker restart, a rebalance that drained).

2. **Rules.** Each cause has a :class:`Rule`: supporting signals with weights (summing to
   about 1), contradicting signals with weights, and the signals of which at least one
   must be present for the cause to be considered at all. Score =
   clip(sum(w x strength of support) - sum(w x strength of against), 0, 1).

3. **Healthy and unknown.** ``healthy`` = coverage x (1 - strongest changed symptom or error signal), where
   coverage is the share of the key evidence tables that were collected; so it ranks first
   only when nothing significant fired. ``unknown`` = (1 - coverage) / 2 carries the note
   about missing sources, and ranks first when (almost) nothing was collected.

4. **Confidence and margin.** The score is mapped to a probability by the calibration fitted
   on held-apart simulator seeds (:mod:`forensics.analysis.calibration`; monotonic, so the order is
   the scores'); ``margin`` is a hypothesis' confidence minus the next one's. When the top
   two are within :data:`CLOSE_MARGIN` the analysis says so and names the checks that
   separate them (:func:`close_call`, the causes' ``check`` in the catalog).

Every hypothesis is one :class:`Hypothesis` (cause, confidence, margin, evidence for and
against as finding ids with statements, each finding once and on one side only, first
seen, blast radius, runbook step and action from the catalog), the one result type all
rankings share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from forensics import schema, units
from forensics.analysis.calibration import load_calibration
from forensics.analysis.change import ALPHA, CHANGED, count_verdict, exposures, is_change, rate_test
from forensics.analysis.detectors import Context, Detection, Finding
from forensics.analysis.detectors.localisation import CONCENTRATED, CONFINED, LOCALISERS, SPREAD
from forensics.analysis.significance import holm
from forensics.catalog import load_catalog

SEVERITY_STRENGTH = {"critical": 1.0, "warning": 0.5, "info": 0.15}
FULL_MAGNITUDE = 0.01
"""Share of all messages at which an error cause counts at full strength."""
KEY_TABLES = ("messages", "status_events", "log_events", "consumer_lag", "spans", "dlq_records")
"""Tables whose absence leaves a root cause undecidable (coverage)."""
SYMPTOMS = ("stuck_pending", "stuck_sent", "failed_spike", "router_lag", "connector_lag", "router_silent",
            "service_silent", "connector_5xx", "service_5xx", "p95_breach", "out_of_order", "duplicates", "missing_topic",
            "stuck_locks", "one_partition")
"""Signals that mean delivery is impaired; healthy is judged against them."""
RUNBOOK_READING = 0.3
"""Weight of the runbook's reading of a conflicting code, relative to the documented one."""
BLIP = 0.3
"""Strength left to a signal whose findings are all blips (over within ``blip_s`` and recovered
well before the window's end) while the messages show none FAILED or stuck anew: a broker
restart or a rebalance that drained, not an impairment. Without the messages nothing can be
called harmless."""
WINDOWED = ("delivery_p95", "failed_rate")
"""Detectors whose findings span whole ``rate_window_s`` windows."""
HELD = ("stuck_pending", "stuck_sent", "stuck_locks")
"""Detectors whose new findings mean messages are held (stuck locks: when messages wait on them):
then nothing is a blip (:func:`lost_anew`)."""
CLOSE_MARGIN = 0.1
"""A top cause that leads the runner-up by less than this is a close call."""
SCOPE_STRENGTH = {CONFINED: 1.0, CONCENTRATED: 0.5, SPREAD: 1.0}
"""Strength of a localisation signal by its finding's scope."""


@dataclass
class Signal:
    name: str
    strength: float
    findings: list[Finding] = field(default_factory=list)
    note: str = ""


@dataclass(frozen=True)
class Rule:
    """How one cause is scored: supporting and contradicting signals with weights, and the
    signals of which one must be present (``requires``) for the cause to score at all.
    ``context`` signals are generic symptoms (a FAILED spike, a P95 breach) that support the
    cause only as far as its own evidence explains them: their weight is scaled by the
    strongest of the ``requires`` signals. ``radius`` names the signals whose findings'
    messages make the blast radius."""

    support: dict[str, float]
    against: dict[str, float] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    radius: tuple[str, ...] = ()
    context: dict[str, float] = field(default_factory=dict)


PLATFORM_WIDE = {"one_channel": 0.3, "one_connector": 0.2}
"""Against a cause of the whole platform (router, MongoDB, the message events topic): the
failures confined to one channel or connector (localisation)."""
ONE_CONNECTOR = {"all_channels": 0.2, "all_connectors": 0.1, "core_service": 0.2}
"""Against one connector's or platform's cause: the failures spread over every channel or
connector, or the new errors confined to services off the connectors' path."""
IN_ONE_CHANNEL = {"one_channel": 0.1, "one_connector": 0.05}
"""Context of one connector's or platform's cause: the failures confined to one channel."""
TO_FEW_RECIPIENTS = {"few_recipients": 0.1}
"""Context of a recipient's cause: the failures confined to a few recipients or an identity class."""


def _error_rule(cause: str, extra: dict[str, float] | None = None, against: dict[str, float] | None = None,
                context: dict[str, float] | None = None) -> Rule:
    """An error-driven cause: mostly its own errors, a little of the generic failure symptoms."""
    support = {f"cause:{cause}": 0.65, f"runbook_cause:{cause}": 0.65 * RUNBOOK_READING, **(extra or {})}
    return Rule(support, {"stuck_pending": 0.1, "missing_topic": 0.3, "router_silent": 0.3, **(against or {})},
                requires=(f"cause:{cause}", f"runbook_cause:{cause}", *(extra or {})),
                radius=(f"cause:{cause}", f"runbook_cause:{cause}", *(extra or {})),
                context={"failed_spike": 0.15, "p95_breach": 0.05, **(context or {})})


RULES: dict[str, Rule] = {
    "router_down": Rule(
        {"router_silent": 0.4, "stuck_pending": 0.25, "router_lag": 0.2, "stuck_all_channels": 0.1,
         "p95_breach": 0.05, "cause:router_down": 0.25},
        {"missing_topic": 0.6, "cause:mongodb_write_failure": 0.5, "failed_spike": 0.15, "lag_skewed": 0.2,
         "one_partition": 0.5, **PLATFORM_WIDE},
        requires=("router_silent", "stuck_pending", "router_lag", "cause:router_down"),
        radius=("stuck_pending", "router_silent")),
    "missing_topic": Rule(
        {"missing_topic": 0.65, "cause:missing_topic": 0.2, "stuck_pending": 0.15},
        {"router_silent": 0.2},
        requires=("missing_topic", "cause:missing_topic"),
        radius=("missing_topic", "stuck_pending")),
    "mongodb_write_failure": Rule(
        {"cause:mongodb_write_failure": 0.7, "stuck_pending": 0.15, "stuck_sent": 0.05, "p95_breach": 0.05},
        {"missing_topic": 0.4, "router_silent": 0.3, **PLATFORM_WIDE},
        requires=("cause:mongodb_write_failure",),
        radius=("stuck_pending", "stuck_sent")),
    "partition_problem": Rule(
        {"one_partition": 0.35, "lag_skewed": 0.3, "cause:partition_problem": 0.25, "topic_partitions": 0.1,
         "stuck_pending": 0.1},
        {"router_silent": 0.3, "missing_topic": 0.3, "cause:partition_rebalance": 0.3, **PLATFORM_WIDE},
        requires=("one_partition", "lag_skewed", "cause:partition_problem", "topic_partitions"),
        radius=("one_partition", "stuck_pending")),
    "partition_rebalance": Rule(
        {"out_of_order": 0.4, "duplicates": 0.2, "cause:partition_rebalance": 0.3, "router_lag": 0.05,
         "p95_breach": 0.05},
        {"router_silent": 0.3, "missing_topic": 0.3},
        requires=("out_of_order", "duplicates", "cause:partition_rebalance"),
        radius=("out_of_order", "duplicates")),
    "platform_rate_limit": _error_rule("platform_rate_limit", against={"cause:platform_outage": 0.1, **ONE_CONNECTOR},
                                       context=IN_ONE_CHANNEL),
    "credential_expiry": _error_rule("credential_expiry", against=ONE_CONNECTOR, context=IN_ONE_CHANNEL),
    "invalid_recipient": _error_rule("invalid_recipient", {"recipient_data": 0.2}, context=TO_FEW_RECIPIENTS),
    "bot_blocked": _error_rule("bot_blocked", against=ONE_CONNECTOR, context={**IN_ONE_CHANNEL, **TO_FEW_RECIPIENTS}),
    "content_over_limit": _error_rule("content_over_limit", {"content_data": 0.3}),
    "platform_outage": _error_rule("platform_outage", against={"cause:platform_rate_limit": 0.1, **ONE_CONNECTOR},
                                   context={"connector_5xx": 0.25, **IN_ONE_CHANNEL}),
    "policy_window": _error_rule("policy_window", context=TO_FEW_RECIPIENTS),
    "connector_unreachable": _error_rule("connector_unreachable", {"connector_silent": 0.2}, against=ONE_CONNECTOR,
                                         context=IN_ONE_CHANNEL),
    "webhook_unreachable": Rule(
        {"stuck_sent": 0.6, "cause:webhook_unreachable": 0.4},
        {"failed_spike": 0.1, "cause:mongodb_write_failure": 0.5, **ONE_CONNECTOR},
        requires=("stuck_sent", "cause:webhook_unreachable"),
        radius=("stuck_sent", "cause:webhook_unreachable")),
    "conversation_lock_stuck": Rule(  # a rebalance's revoked member leaves a lock too, among reordered deliveries
        {"stuck_locks": 0.8, "stuck_pending": 0.2},
        {"router_silent": 0.3, "missing_topic": 0.3, "out_of_order": 0.3, "duplicates": 0.2},
        requires=("stuck_locks",),
        radius=("stuck_locks",)),
}
"""Cause -> rule. Add a cause: one entry here and its title/step/action under ``causes`` in
the catalog."""


@dataclass
class Hypothesis:
    """One root-cause hypothesis: the result type every ranking returns."""

    cause: str
    title: str
    confidence: float
    evidence_for: list[dict[str, Any]] = field(default_factory=list)
    evidence_against: list[dict[str, Any]] = field(default_factory=list)
    first_seen: pd.Timestamp | None = None
    messages_affected: int = 0
    conversations_affected: int = 0
    channels_affected: list[str] = field(default_factory=list)
    customers_affected: int = 0
    runbook_step: str | None = None
    recommended_action: str | None = None
    rank: int = 0
    score: float = 0.0
    """The rule's raw score (0..1) before calibration."""
    margin: float = 0.0
    """Confidence minus the next hypothesis' (for the top one: its lead over the runner-up)."""
    where: list[dict[str, Any]] = field(default_factory=list)
    """Where the change is confined or spread (the localisation findings that changed), each with
    its ``bearing`` on this cause: for, against or neutral (:func:`where`)."""

    def row(self) -> dict[str, Any]:
        return {"rank": self.rank, "cause": self.cause, "title": self.title, "confidence": round(self.confidence, 4),
                "margin": round(self.margin, 4),
                "evidence_for": json.dumps(self.evidence_for, ensure_ascii=False, default=str),
                "evidence_against": json.dumps(self.evidence_against, ensure_ascii=False, default=str),
                "first_seen": self.first_seen, "messages_affected": self.messages_affected,
                "conversations_affected": self.conversations_affected,
                "channels_affected": ", ".join(self.channels_affected), "customers_affected": self.customers_affected,
                "runbook_step": self.runbook_step, "recommended_action": self.recommended_action}


# ---- signals --------------------------------------------------------------------------------

def _severity(f: Finding) -> float:
    return SEVERITY_STRENGTH.get(f.severity, 0.0)


def _best(name: str, found: list[Finding], strength=_severity, note: str = "") -> Signal | None:
    if not found:
        return None
    return Signal(name, max(min(1.0, strength(f)) for f in found), found, note)


def _size(f: Finding) -> int:
    """Messages a finding concerns: distinct messages where the lines name them, else its count."""
    messages = f.tags.get("messages")
    return int(messages) if messages is not None else int(f.count or 0)


def _cause_sizes(items: list[Finding], key: str) -> tuple[dict[tuple[str, str], dict[str, int]],
                                                          dict[tuple[str, str], dict[str, list[Finding]]]]:
    """Per (source, ``cause:<id>`` / ``<key>:<id>``): messages per service, and the findings."""
    sizes: dict[tuple[str, str], dict[str, int]] = {}
    found: dict[tuple[str, str], dict[str, list[Finding]]] = {}
    for f in items:
        if f.detector not in ("error_groups", "log_errors") or not f.tags.get("cause"):
            continue
        source = "messages" if f.detector == "error_groups" else str(f.tags.get("source"))
        service = "" if f.detector == "error_groups" else str(f.tags.get("service"))
        for k in {"cause", key}:
            cause = f.tags.get(k)
            if not cause:
                continue
            slot = (source, f"{k}:{cause}")
            per_service = sizes.setdefault(slot, {})
            per_service[service] = per_service.get(service, 0) + _size(f)
            found.setdefault(slot, {}).setdefault(service, []).append(f)
    return sizes, found


ROW_MULTIPLICITY = ("dlq_records", "log_events", "spans")
"""Sources that count rows, by how many rows one failed message tends to leave (fewest first)."""


def _counts(items: list[Finding], key: str) -> dict[tuple[str, str], tuple[int, bool]]:
    """Per (source, ``<key>:<id>``): its size (the largest service's) and whether it counts
    messages (FAILED messages, or rows whose findings all name the messages) rather than rows."""
    sizes, found = _cause_sizes(items, key)
    return {slot: (max(per.values()), slot[0] == "messages" or all(
                f.tags.get("messages") is not None for fs in found[slot].values() for f in fs))
            for slot, per in sizes.items() if slot[1].startswith(f"{key}:")}


def _beyond(detection: Detection, key: str) -> dict[tuple[str, str], float]:
    """Per (source, ``<key>:<id>``) the baseline measured: the window's errors of that cause
    beyond the baseline's rate of the same cause (scaled to the window's traffic), or none
    unless the cause rose significantly. One test per cause (exact conditional test of two
    counts), on its count in messages where a source counts them, else on the rows closest to
    one per event (ROW_MULTIPLICITY: a message retried three times leaves three log lines in
    each of two services and six error spans; rows of one message are not independent events,
    and counting them as such makes three transient errors look like a rise). Holm-adjusted
    over every cause either period shows that could be significant at all (Tarone's rule,
    :func:`~forensics.analysis.significance.holm`), family-wise ALPHA: a false rise in a
    harmless window costs more than a small real incident ranked under healthy. A cause whose
    errors ran at the same rate before is chronic, however many there are; a cause of a mixed
    background that happens to look new alone does not survive the family's adjustment; a few
    dozen new rejections do, even when the background's volume hides them."""
    base = detection.baseline
    if base is None:
        return {}
    window, before = detection.context, base.context
    e1, e0 = exposures(window, before)

    def measured(source: str) -> bool:
        return before.evidence.has(source) or (source == "messages" and before.evidence.has("status_events"))

    now = {slot: v for slot, v in _counts(detection.items, key).items() if measured(slot[0])}
    then = {slot: v for slot, v in _counts(base.items, key).items() if measured(slot[0])}

    def events_first(slot: tuple[str, str]) -> tuple[int, int]:
        """Sources in the order of how close a row is to one event: messages (counted), then rows
        that name their messages, dead letters (one per message given up), log lines, spans (one
        per hop and per retry); within one kind, the larger count."""
        in_messages = now.get(slot, then.get(slot))[1]
        kind = 0 if in_messages else ROW_MULTIPLICITY.index(slot[0]) + 1 if slot[0] in ROW_MULTIPLICITY \
            else len(ROW_MULTIPLICITY) + 1
        return -kind, now.get(slot, (0,))[0] + then.get(slot, (0,))[0]

    p_values: dict[str, float] = {}
    least: dict[str, float] = {}  # the p of all the cause's events falling in the window
    for name in {n for _, n in (*now, *then)}:
        test = max((slot for slot in (*now, *then) if slot[1] == name), key=events_first)
        c1, c0 = now.get(test, (0,))[0], then.get(test, (0,))[0]
        p_values[name] = rate_test(c1, e1, c0, e0, exact=True)[1]
        least[name] = rate_test(c1 + c0, e1, 0, e0, exact=True)[1]
    adjusted = holm(p_values, least)
    return {slot: max(0.0, c1 - then.get(slot, (0,))[0] * e1 / e0) if adjusted[slot[1]] < ALPHA else 0.0
            for slot, (c1, _) in now.items()}


def _error_signals(detection: Detection, items: list[Finding], key: str) -> dict[str, Signal]:
    """``cause:<id>`` (key ``cause``) or ``runbook_cause:<id>`` signals from error findings.

    FAILED messages (error_groups) and each log-like source (log lines, dead letters, error
    spans) are scored separately and the strongest counts: the deployed code keeps reasons
    only in logs, a runbook deployment stores them on the message. Within one log-like
    source the same call shows in several services (router and connector), so a cause's
    size there is its largest service, not their sum.
    """
    n = max(detection.context.n_messages, 1)
    sizes, found = _cause_sizes(items, key)
    excess = _beyond(detection, key)
    counts = {slot: max(per.values()) for slot, per in sizes.items() if slot[1].startswith(f"{key}:")}
    beyonds = {slot: min(c, excess[slot]) if slot in excess else c for slot, c in counts.items()}
    rose: dict[str, float] = {}  # per source: the errors that rose above the baseline, all causes
    for (source, _), b in beyonds.items():
        rose[source] = rose.get(source, 0.0) + b
    out: dict[str, Signal] = {}
    for (source, name), count in counts.items():
        beyond = beyonds[(source, name)]
        dominance = min(1.0, beyond / max(rose[source], 1.0))
        strength = min(1.0, dominance * min(1.0, beyond / n / FULL_MAGNITUDE))
        rows = units.ERROR_ROW_UNITS.get(source, f"{source} rows")
        named = source == "messages" or all(f.tags.get("messages") is not None
                                            for fs in found[(source, name)].values() for f in fs)
        what = rows if source == "messages" else f"messages named in {rows}" if named else rows
        share = f"{units.percent(count, n)} of the {n:,} messages, " if named else ""
        note = f"{units.count(count, what)} ({share}{units.percent(dominance)} of the classified {rows} there that rose)"
        if round(beyond) < count:
            note += f"; only {units.count(round(beyond), rows)} above the baseline's rate of the same cause"
        if name not in out or strength > out[name].strength:
            out[name] = Signal(name, strength, [], note)
    for name, sig in out.items():  # every finding of the cause, FAILED messages first, backs the signal
        for source in ["messages"] + sorted({s for s, _ in found} - {"messages"}):
            sig.findings.extend(f for fs in found.get((source, name), {}).values() for f in fs)
    return out


def signals(detection: Detection) -> dict[str, Signal]:
    """The named signals of one detection run (see the module docstring), from the findings
    that changed: new or worse than the baseline, or not judged for want of one. What was
    there before the incident too never supports a cause."""
    items = [f for f in detection.items if is_change(f)]
    by: dict[str, list[Finding]] = {}
    for f in items:
        by.setdefault(f.detector, []).append(f)
    ctx = detection.context
    n = max(ctx.n_messages, 1)
    out: dict[str, Signal] = {}

    def put(sig: Signal | None) -> None:
        if sig is not None and sig.strength > 0:
            out[sig.name] = sig

    stuck = by.get("stuck_pending", [])
    stuck_share = sum(int(f.count or 0) for f in stuck) / n
    put(_best("stuck_pending", stuck, lambda f: _severity(f) * min(1.0, stuck_share / 0.02),
              f"{stuck_share:.1%} of messages stuck PENDING"))
    real_channels = [f for f in stuck if f.channel and f.channel != "INTERNAL"]
    if len(real_channels) >= 2:
        put(_best("stuck_all_channels", real_channels, lambda f: min(1.0, stuck_share / 0.02)))
    put(_best("stuck_sent", by.get("stuck_sent", []),
              lambda f: _severity(f) * min(1.0, int(f.count or 0) / n / 0.02)))
    failed = by.get("failed_rate", [])
    put(_best("failed_spike", failed, lambda f: min(1.0, float(f.tags.get("windows", 1)) / 2)))
    lag = by.get("consumer_lag", [])
    put(_best("router_lag", [f for f in lag if f.tags.get("router")]))
    put(_best("connector_lag", [f for f in lag if not f.tags.get("router")]))
    put(_best("lag_skewed", [f for f in lag if f.tags.get("skewed")]))
    put(_best("one_partition", by.get("partition_confined", [])))
    _localisation(by, ctx, put)
    silence = by.get("service_silence", [])
    put(_best("router_silent", [f for f in silence if f.tags.get("router")]))
    put(_best("connector_silent", [f for f in silence if f.channel]))
    put(_best("service_silent", [f for f in silence if not f.tags.get("router") and not f.channel]))
    put(_best("connector_5xx", [f for f in by.get("connector_5xx", []) if f.tags.get("connector")]))
    put(_best("service_5xx", [f for f in by.get("connector_5xx", []) if not f.tags.get("connector")]))
    put(_best("topic_partitions", [f for f in by.get("missing_topics", []) if f.tags.get("partitions_mismatch")]))
    p95 = by.get("delivery_p95", [])  # the SLA is on all messages; one channel's P95 counts when the whole's held
    put(_best("p95_breach", [f for f in p95 if f.channel is None] or p95))
    ooo = [f for f in by.get("out_of_order", []) if f.tags.get("kind") == "reordered"]
    reordered = sum(int(f.tags.get("conversations", 0)) for f in ooo)
    put(_best("out_of_order", ooo, lambda f: min(1.0, reordered / 10),
              f"{reordered:,} conversations with messages reordered beyond the tolerance"))
    dup = [f for f in by.get("duplicate_deliveries", []) if f.key == "status_events"]
    put(_best("duplicates", dup, lambda f: _severity(f) * min(1.0, int(f.count or 0) / 10)))
    put(_best("missing_topic", [f for f in by.get("missing_topics", []) if not f.tags.get("partitions_mismatch")]))
    put(_best("stuck_locks", by.get("stuck_locks", [])))  # one lock that holds messages is a fault in full
    n_failed = max(int(ctx.failed.sum()), 1)
    content = by.get("content_over_limit", [])
    content_failed = sum(int(f.tags.get("failed", 0)) for f in content)
    put(_best("content_data", content,
              lambda f: min(1.0, content_failed / n_failed * 2) * min(1.0, content_failed / n / FULL_MAGNITUDE),
              f"{content_failed:,} FAILED messages over the platform's limits"))
    recipients = [f for f in by.get("recipient_identity", []) if f.tags.get("kind") in ("malformed", "no_identity")]
    bad_recipients = sum(int(f.count or 0) for f in recipients)
    put(_best("recipient_data", recipients,
              lambda f: min(1.0, bad_recipients / n_failed * 2) * min(1.0, bad_recipients / n / FULL_MAGNITUDE),
              f"{bad_recipients:,} FAILED messages to malformed or unknown recipients"))
    for key in ("cause", "runbook_cause"):
        for sig in _error_signals(detection, items, key).values():
            put(sig)
    if ctx.n_messages and not lost_anew(detection, items):
        for sig in out.values():
            if sig.findings and all(_blip(f, ctx) for f in sig.findings):
                sig.strength *= BLIP
                sig.note = (sig.note + "; " if sig.note else "") + "a blip: over and recovered, nothing lost"
    return out


def _localisation(by: dict[str, list[Finding]], ctx: Context, put) -> None:
    """The localisation signals (module docstring) from the ``*_scope`` findings that changed:
    strength by scope, scaled by the failures placed (1 % of the messages is full strength)."""
    n = max(ctx.n_messages, 1)

    def _scope_strength(f: Finding) -> float:
        return SCOPE_STRENGTH.get(f.tags.get("scope"), 0.0) * min(1.0, int(f.count or 0) / n / FULL_MAGNITUDE)

    for detector_name, one, every in (("channel_scope", "one_channel", "all_channels"),
                                      ("connector_scope", "one_connector", "all_connectors")):
        found = by.get(detector_name, [])
        put(_best(one, [f for f in found if f.tags.get("scope") != SPREAD], _scope_strength))
        put(_best(every, [f for f in found if f.tags.get("scope") == SPREAD], _scope_strength))
    put(_best("few_recipients", [f for f in by.get("recipient_scope", [])
                                 if f.tags.get("attribute") in ("recipient", "identity")], _scope_strength))
    path = {ctx.profile.services.router, *ctx.profile.services.connectors.values()}
    put(_best("core_service", [f for f in by.get("service_scope", []) if f.tags.get("scope") != SPREAD
                               and not path & set(f.tags.get("levels", []))], _scope_strength))


def lost_anew(detection: Detection, items: list[Finding]) -> bool:
    """Whether messages were lost or held anew among the changed findings ``items``: stuck
    PENDING or SENT, waiting behind a stuck lock, a channel's FAILED rate risen, or more
    messages FAILED in all than the baseline's rate explains (the two-count test). A new error
    code among FAILED messages whose number did not rise is the usual mix, not a loss. Without
    a baseline of the messages, any FAILED finding counts."""
    if any(f.detector in HELD and f.severity != "info" and (f.detector != "stuck_locks" or f.severity == "critical")
           for f in items):
        return True
    if any(f.detector == "failed_rate" and f.severity != "info" for f in items):
        return True
    base = detection.baseline
    if base is None or not base.context.evidence.has("messages"):
        return any(f.detector == "error_groups" and f.severity != "info" for f in items)
    window, before = detection.context, base.context
    e1, e0 = exposures(window, before)
    return count_verdict(float(window.failed.sum()), e1, float(before.failed.sum()), e0).change in CHANGED


def _blip(f: Finding, ctx: Context) -> bool:
    """A disturbance that lasted at most ``blip_s`` and ended at least ``blip_s`` before the
    window's end (so not an incident that has just begun). Findings judged per
    ``rate_window_s`` window span whole windows: a blip across a window boundary touches two."""
    if f.first_seen is None or f.last_seen is None or pd.isna(f.first_seen) or pd.isna(f.last_seen):
        return False
    blip = pd.Timedelta(seconds=ctx.t.blip_s)
    quantum = pd.Timedelta(seconds=ctx.t.rate_window_s if f.detector in WINDOWED else 0)
    return f.last_seen - f.first_seen <= blip + quantum and f.last_seen <= ctx.now - blip


# ---- hypotheses -----------------------------------------------------------------------------

def _statement(sig: Signal, weight: float) -> list[dict[str, Any]]:
    """The signal's note, then its three largest findings, as evidence items."""
    items = [{"statement": sig.note, "signal": sig.name, "strength": round(sig.strength, 3), "weight": weight}] \
        if sig.note else []
    for f in sorted(sig.findings, key=lambda f: -(f.count or 0))[:3]:
        items.append({"finding_id": f.finding_id, "statement": f.title, "signal": sig.name,
                      "strength": round(sig.strength, 3), "weight": weight})
    return items


def _radius(detection: Detection, found: list[Finding]) -> dict[str, Any]:
    ctx = detection.context
    arrays = [f.messages for f in found if f.messages is not None and len(f.messages)]
    if not arrays:
        return {"messages_affected": 0, "conversations_affected": 0, "channels_affected": [],
                "customers_affected": 0}
    pos = np.unique(np.concatenate(arrays))
    channels = pd.unique(ctx.values("channel", pos))
    return {"messages_affected": int(len(pos)),
            "conversations_affected": ctx.distinct("conversation_id", pos),
            "channels_affected": sorted(str(c) for c in channels if isinstance(c, str)),
            "customers_affected": ctx.distinct("recipient_id", pos)}


def _first_seen(found: list[Finding]) -> pd.Timestamp | None:
    times = [f.first_seen for f in found if f.first_seen is not None and not pd.isna(f.first_seen)]
    return min(times) if times else None


def coverage(detection: Detection) -> tuple[float, list[str]]:
    """Share of KEY_TABLES collected, and notes naming what is missing. No coverage at all
    when the key tables hold no row in the window: an empty window is not a healthy one."""
    ev = detection.context.evidence
    absent = [t for t in KEY_TABLES if not ev.has(t)]
    notes = [f"source {name} missing: {why}" for name, why in sorted(ev.missing.items())]
    notes += [f"table {t} not collected" for t in absent]
    if not any(len(ev.table(t)) for t in KEY_TABLES):
        return 0.0, notes + [ev.window_note or f"no evidence in the window {ev.window}: the key tables "
                                               f"({', '.join(KEY_TABLES)}) hold no row in it"]
    return 1.0 - len(absent) / len(KEY_TABLES), notes


def hypotheses(detection: Detection, rules: dict[str, Rule] | None = None) -> list[Hypothesis]:
    """Score every rule's cause plus healthy and unknown; most likely first, ranks set."""
    rules = RULES if rules is None else rules
    cat = load_catalog()
    sig = signals(detection)
    out: list[Hypothesis] = []
    for cause, rule in rules.items():
        if rule.requires and not any(r in sig for r in rule.requires):
            continue
        own = max((sig[r].strength for r in rule.requires if r in sig), default=1.0)
        weights = {**rule.support, **{s: w * own for s, w in rule.context.items()}}
        score = sum(w * sig[s].strength for s, w in weights.items() if s in sig)
        penalty = sum(w * sig[s].strength for s, w in rule.against.items() if s in sig)
        confidence = float(np.clip(score - penalty, 0.0, 1.0))
        present = sorted(((s, w) for s, w in weights.items() if s in sig), key=lambda sw: -sw[1] * sig[sw[0]].strength)
        ev_for, ev_against = _sides([i for s, w in present for i in _statement(sig[s], w)],
                                    [i for s, w in rule.against.items() if s in sig for i in _statement(sig[s], -w)])
        ev_against += [{"statement": f"expected {s.replace('_', ' ')} not observed"}
                       for s, w in rule.support.items() if s not in sig and w >= 0.2]
        supporting = [f for s in weights if s in sig for f in sig[s].findings]
        radius_findings = [f for s in (rule.radius or tuple(rule.support)) if s in sig for f in sig[s].findings]
        c = cat.cause(cause)
        out.append(Hypothesis(cause, c.title, confidence, ev_for, ev_against, _first_seen(supporting),
                              runbook_step=c.runbook_step, recommended_action=c.action, score=confidence,
                              where=where(detection, sig, weights, rule.against),
                              **_radius(detection, radius_findings)))
    cover, notes = coverage(detection)
    symptoms = [sig[s] for s in SYMPTOMS if s in sig] + [v for k, v in sig.items() if k.startswith("cause:")]
    worst = max((s.strength for s in symptoms), default=0.0)
    healthy = cat.cause("healthy")
    chronic = [f for f in detection.items if not is_change(f) and f.severity != "info"]
    score = float(np.clip(cover * (1.0 - worst), 0.0, 1.0))
    out.append(Hypothesis(
        "healthy", healthy.title, score,
        ([{"statement": "nothing changed against the baseline" if _judged(detection) else "no symptom detector fired"}]
         if not symptoms else [{"statement": f"symptoms changed (strongest {worst:.2f})"}])
        + [{"finding_id": f.finding_id, "statement": f"present before the incident too ({f.change}): {f.title}"}
           for f in chronic[:5]],
        [i for s in symptoms for i in _statement(s, -1.0)] + [{"statement": n} for n in notes],
        runbook_step=healthy.runbook_step, recommended_action=healthy.action, score=score,
        where=where(detection, sig, {}, {})))
    if cover < 1.0:
        out.append(Hypothesis(
            "unknown", "Not enough evidence to decide", (1.0 - cover) / 2,
            [{"statement": n} for n in notes], [],
            recommended_action="Collect the missing evidence sources and analyse again.", score=(1.0 - cover) / 2))
    calibration = load_calibration()
    for h in out:
        h.confidence = calibration(h.score)
    out.sort(key=lambda h: (-h.score, h.cause != "healthy", h.cause))
    for i, h in enumerate(out, 1):
        h.rank = i
        h.margin = h.confidence - (out[i].confidence if i < len(out) else 0.0)
    return out


WHERE_DETECTORS = ("partition_confined", *LOCALISERS)
"""Findings that say where a change is: the partition, channel, connector, service, recipient set."""


def where(detection: Detection, sig: dict[str, Signal], support: dict[str, float], against: dict[str, float]
          ) -> list[dict[str, Any]]:
    """The localisation findings that changed, each with its bearing on a cause whose rule weighs
    ``support`` and ``against`` (for: it feeds a supporting signal; against: a contradicting one)."""
    def weighs(f: Finding, names: dict[str, float]) -> bool:
        return any(s in sig and any(g is f for g in sig[s].findings) for s in names)

    out = []
    for f in detection.items:
        if f.detector not in WHERE_DETECTORS or not is_change(f):
            continue
        partition = f.detector == "partition_confined"
        scope = (CONFINED if f.tags.get("confined") else CONCENTRATED) if partition else f.tags.get("scope")
        out.append({"finding_id": f.finding_id, "statement": f.title,
                    "dimension": "partition" if partition else f.tags.get("dimension"),
                    "attribute": "partition" if partition else f.tags.get("attribute"), "scope": scope,
                    "levels": [str(f.tags.get("partition"))] if partition else list(f.tags.get("levels", []))[:50],
                    "bearing": "for" if weighs(f, support) else "against" if weighs(f, against) else "neutral"})
    return out


def _judged(detection: Detection) -> bool:
    return any(f.change is not None for f in detection.items)


def _sides(ev_for: list[dict[str, Any]], ev_against: list[dict[str, Any]]
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Evidence for and against without repeats: each finding once per side, and a finding
    that shows on both sides (two signals of one finding) only on the side it weighs most."""
    def weight(items: list[dict[str, Any]]) -> dict[str, float]:
        out: dict[str, float] = {}
        for i in items:
            if "finding_id" in i:
                out[i["finding_id"]] = out.get(i["finding_id"], 0.0) + abs(i["weight"] * i["strength"])
        return out

    w_for, w_against = weight(ev_for), weight(ev_against)

    def keep(items: list[dict[str, Any]], mine: dict[str, float], theirs: dict[str, float], wins_ties: bool):
        seen: set[str] = set()
        out = []
        for i in items:
            fid = i.get("finding_id")
            if fid is not None:
                lost = theirs.get(fid, -1.0) > mine[fid] or (theirs.get(fid) == mine[fid] and not wins_ties)
                if fid in seen or lost:
                    continue
                seen.add(fid)
            out.append(i)
        return out

    return keep(ev_for, w_for, w_against, True), keep(ev_against, w_against, w_for, False)


def close_call(ranked: list[Hypothesis]) -> dict[str, Any] | None:
    """When the top cause leads the runner-up by less than CLOSE_MARGIN: both, the margin and
    the check that separates them (each cause's confirming check from the catalog)."""
    if len(ranked) < 2 or ranked[0].margin >= CLOSE_MARGIN:
        return None
    a, b = ranked[0], ranked[1]
    cat = load_catalog()
    checks = [c for c in (cat.cause(a.cause).check, cat.cause(b.cause).check) if c]
    return {"causes": [a.cause, b.cause], "margin": round(a.margin, 4),
            "separating_check": " / ".join(checks) if checks else
            f"compare the evidence for {a.title} with that for {b.title}"}


def hypotheses_frame(items: list[Hypothesis]) -> pd.DataFrame:
    """Hypotheses as the canonical ``hypotheses`` table."""
    frame = pd.DataFrame([h.row() for h in items], columns=schema.table("hypotheses").names)
    return schema.validate("hypotheses", schema.conform("hypotheses", frame))


def rank(detection: Detection, rules: dict[str, Rule] | None = None) -> pd.DataFrame:
    """Ranked hypotheses of one detection run as the ``hypotheses`` table."""
    return hypotheses_frame(hypotheses(detection, rules))
