"""Incident simulator: schema-valid evidence of a Chat4All v2 incident, deterministic per seed.

    from forensics.simulate import simulate, SCENARIOS, scenario_names
    ev = simulate("whatsapp-rate-limit", messages=5000, seed=7)

``simulate`` draws a window of traffic (conversations over WhatsApp, Telegram, Instagram
and a little INTERNAL), times the healthy path of every message, lets the scenario rewrite
it (see :mod:`forensics.simulate.scenarios`), then writes what each evidence source would
hold at the window end: MongoDB ``messages`` and ``status_events``, Kafka ``dlq_records``,
``consumer_lag`` and the ``topics`` inventory, Jaeger ``spans``, service ``log_events``, PostgreSQL ``identities``
and Redis ``locks``. Every name (collections, topics, groups, services, key patterns) comes
from the naming profile.

Scale: messages, status events, DLQ records, lag, identities and Redis keys are complete
and built with numpy/Arrow column operations. Spans and log lines cover a bounded sample
(``detail_sample`` messages with full traces and INFO lines, ``failure_sample`` failing
messages with per-attempt error lines; 20 000 each by default; see
:mod:`forensics.simulate.telemetry`), recorded in ``sources["simulator"]["sampling"]``.

Determinism: the same (scenario, messages, seed, end, profile, options) gives identical
frames; ``end`` defaults to a fixed reference time (``REFERENCE_END``), not the clock.
Base traffic for a seed is shared by scenarios without a traffic plan, so scenarios can
be compared message for message.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from forensics.errors import ScenarioError, WindowError
from forensics.evidence import Evidence
from forensics.profiles import Profile, load_profile
from forensics.simulate import tables, telemetry
from forensics.simulate.scenarios import SCENARIOS, Incident, Scenario, scenario_names
from forensics.simulate.traffic import build_traffic
from forensics.timeutil import Window, iso, parse_time

__all__ = ["REFERENCE_END", "SCENARIOS", "Scenario", "scenario_names", "simulate"]

REFERENCE_END = pd.Timestamp("2025-12-03T15:00:00Z")
"""Default window end: the runbook's incident day, so default outputs never depend on the clock."""
MAX_MESSAGES = 20_000_000


def simulate(scenario: str, messages: int = 5000, seed: int = 7, end: pd.Timestamp | str | None = None,
             profile: str | Profile | None = "runbook", progress: Callable[[str, float], None] | None = None, *,
             detail_sample: int = telemetry.DETAIL_SAMPLE, failure_sample: int = telemetry.FAILURE_SAMPLE,
             message_id_tag_fraction: float | None = None, part: tuple[int, int] = (0, 1)) -> Evidence:
    """Simulate one incident and return its evidence.

    scenario: a name from ``scenario_names()``. messages: number of messages in the window
    (>= 1). seed: integer seed of every random draw. end: window end (UTC; ISO text or
    Timestamp; default ``REFERENCE_END``); the window is [end - duration, end), duration by
    scenario (60 min). profile: naming profile name, YAML path or Profile. progress:
    optional callback ``progress(stage, fraction_done)``. detail_sample / failure_sample:
    caps of the span/log samples (messages). message_id_tag_fraction: share of sampled
    messages whose spans carry a ``message_id`` tag (default 0.5 for the runbook flow, 0 for
    the deployed flow, which tags none). part: ``(k, parts)``: slice k of an incident
    simulated in ``parts`` independent slices of conversations (see
    :mod:`forensics.simulate.stream`): every slice shares the incident's own draws (trigger,
    affected channel, bursts) and draws its own traffic; the incident-wide log lines and
    Redis keys are in slice 0 only. Raises ScenarioError for an unknown scenario or a bad
    parameter.
    """
    sc = _scenario(scenario)
    messages, seed = _check(messages, seed, detail_sample, failure_sample, message_id_tag_fraction)
    prof = load_profile(profile)
    try:
        end_ts = REFERENCE_END if end is None else parse_time(end)
    except WindowError as exc:
        raise ScenarioError(f"bad end: {exc}") from None
    start_ts = end_ts - pd.Timedelta(seconds=sc.duration_s)
    start_ns, end_ns = int(start_ts.value), int(end_ts.value)
    report = progress or (lambda stage, fraction: None)

    traffic_rng, scenario_rng, detail_rng, extra_rng = (np.random.default_rng(s)
                                                        for s in np.random.SeedSequence(seed).spawn(4))
    k, parts = _part(part)
    if parts > 1:
        traffic_rng, detail_rng, extra_rng = (np.random.default_rng(s)
                                              for s in np.random.SeedSequence([seed, k, parts]).spawn(3))
    trigger_ns = None
    if sc.has_trigger:
        trigger_ns = start_ns + int(scenario_rng.uniform(0.35, 0.55) * sc.duration_s * 1000) * 1_000_000
    incident = Incident(start_ns, end_ns, trigger_ns, scenario_rng)
    report("traffic", 0.0)
    t = build_traffic(traffic_rng, prof, messages, start_ns, end_ns, sc.surge(incident) if sc.surge else None)
    t.rng = extra_rng
    report("scenario", 0.2)
    sc.shape(t, incident)
    t.floor_ms()
    tables.failure_texts(t)
    t.platform_ids = tables.platform_message_ids(t)

    # Bounded tables first, the complete MongoDB tables last, so that the traffic arrays they
    # no longer need can be released before the biggest table is built.
    report("traces/logs", 0.3)
    tag_fraction = message_id_tag_fraction if message_id_tag_fraction is not None else (
        0.0 if t.deployed_flow else 0.5)
    samples = telemetry.choose_samples(t, detail_rng, detail_sample, failure_sample, tag_fraction)
    ev_tables = {"spans": telemetry.build_spans(t, samples, detail_rng, incident.router_down_from,
                                                incident.mongo_trouble)}
    incident_wide = k == 0
    ev_tables["log_events"] = telemetry.log_frame(
        telemetry.message_logs(t, samples, detail_rng, incident.router_down_from)
        + (incident.logs if incident_wide else []))
    report("kafka", 0.5)
    ev_tables["dlq_records"] = tables.dlq_records(t)
    ev_tables["consumer_lag"] = tables.consumer_lag(t, incident.missing_topics)
    ev_tables["topics"] = tables.topics(t, incident.missing_topics)
    report("postgres/redis", 0.6)
    ev_tables["identities"] = tables.identities(t)
    ev_tables["locks"] = tables.locks(t, incident.locks if incident_wide else [])
    report("mongodb", 0.7)
    tr = tables.transitions(t)
    ev_tables["messages"] = tables.messages(t, tr)
    t.release()
    ev_tables["status_events"] = tables.status_events(t, tr, ev_tables["messages"])
    del tr
    report("done", 1.0)

    ev = Evidence(window=Window(start_ts, end_ts), profile=prof.name)
    for name in ("messages", "status_events", "dlq_records", "spans", "log_events", "consumer_lag", "topics",
                 "identities", "locks"):
        ev.put(name, ev_tables[name])
    started = None if trigger_ns is None else pd.Timestamp(trigger_ns, unit="ns", tz="UTC")
    ev.scenario = {
        "name": sc.name, "description": sc.description, "root_cause": sc.root_cause, "seed": seed,
        "messages": messages, "trigger": incident.trigger, "started_at": iso(started) if started is not None else None,
        "channel": incident.channel, **incident.details,
    }
    missing = set(incident.missing_topics)
    ev.sources = {"simulator": {
        "scenario": sc.name, "messages": messages, "seed": seed, "profile": prof.name, "end": iso(end_ts),
        "duration_s": sc.duration_s, "message_id_tag_fraction": tag_fraction,
        "flow": "deployed" if t.deployed_flow else "runbook",
        "kafka_topics": [tp.name for tp in prof.kafka.expected_topics() if tp.name not in missing],
        "missing_topics": sorted(missing),
        "sampling": {
            "detail_sample": detail_sample, "failure_sample": failure_sample,
            "detail_messages": int(len(samples.detail)), "failure_messages": int(len(samples.failure)),
            "detail_fraction": round(len(samples.detail) / messages, 6),
        },
        "status": "ok",
    }}
    # What Prometheus would have scraped over the window, derived from the same evidence.
    from forensics.simulate.metrics import scenario_metrics

    ev.put("metrics", scenario_metrics(ev, prof))
    return ev


def _scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except (KeyError, TypeError):
        raise ScenarioError(f"unknown scenario {name!r}; known: {', '.join(scenario_names())}") from None


def _part(part) -> tuple[int, int]:
    try:
        k, parts = (int(v) for v in part)
    except (TypeError, ValueError):
        raise ScenarioError(f"part must be (k, parts), got {part!r}") from None
    if not 0 <= k < parts:
        raise ScenarioError(f"part must satisfy 0 <= k < parts, got {part!r}")
    return k, parts


def _check(messages, seed, detail_sample, failure_sample, tag_fraction) -> tuple[int, int]:
    for label, value in (("messages", messages), ("seed", seed), ("detail_sample", detail_sample),
                         ("failure_sample", failure_sample)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ScenarioError(f"{label} must be an integer, got {value!r}")
    if not 1 <= messages <= MAX_MESSAGES:
        raise ScenarioError(f"messages must be between 1 and {MAX_MESSAGES}, got {messages}")
    if seed < 0:
        raise ScenarioError(f"seed must be >= 0, got {seed}")
    if detail_sample < 0 or failure_sample < 0:
        raise ScenarioError("detail_sample and failure_sample must be >= 0")
    if tag_fraction is not None and not 0.0 <= float(tag_fraction) <= 1.0:
        raise ScenarioError(f"message_id_tag_fraction must be within 0..1, got {tag_fraction}")
    return int(messages), int(seed)

