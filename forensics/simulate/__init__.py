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

import json
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from forensics import schema
from forensics.errors import ScenarioError, WindowError
from forensics.evidence import Evidence
from forensics.profiles import Profile, load_profile
from forensics.simulate import tables, telemetry
from forensics.simulate.columns import NS
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
             message_id_tag_fraction: float | None = None, baseline: str | float | pd.Timedelta | None = "window",
             noise: bool | None = None, under_way: bool = False,
             collected: Sequence[str] | None = None, part: tuple[int, int] = (0, 1)) -> Evidence:
    """Simulate one incident and return its evidence.

    scenario: a name from ``scenario_names()``. messages: number of messages in the window
    (>= 1). seed: integer seed of every random draw. end: window end (UTC; ISO text or
    Timestamp; default ``REFERENCE_END``); the window is [end - duration, end), duration by
    scenario (60 min). profile: naming profile name, YAML path or Profile. progress:
    optional callback ``progress(stage, fraction_done)``. detail_sample / failure_sample:
    caps of the span/log samples (messages). message_id_tag_fraction: share of sampled
    messages whose spans carry a ``message_id`` tag (default 0.5 for the runbook flow, 0 for
    the deployed flow, which tags none).

    Variants (recorded in ``scenario["variant"]``):
    baseline: length of the normal period right before the window, simulated with the window
    as one continuous stretch of traffic at the same rate and returned as ``ev.baseline``
    (``baseline_kind`` "preceding"): ``"window"`` (default) the window's length, seconds, a
    Timedelta or text like ``"30m"``; None, 0 or ``"none"`` for no baseline. noise: the
    deployed code's chronic noise (:func:`~forensics.simulate.traffic.add_chronic_noise`) in
    baseline and window alike; None = the profile's default (:func:`noise_default`).
    under_way: the trigger falls 5-20 min before the window opens. collected: the sources
    that were collected (e.g. ``("mongo", "logs")``); the others' tables are absent and named
    in ``ev.missing``. part: ``(k, parts)``: slice k of an incident simulated in
    ``parts`` independent slices of conversations (see :mod:`forensics.simulate.stream`):
    every slice shares the incident's own draws (trigger, affected channel, bursts) and draws
    its own traffic; the incident-wide log lines and Redis keys are in slice 0 only. Raises
    ScenarioError for an unknown scenario or a bad parameter.
    """
    sc = _scenario(scenario)
    messages, seed = _check(messages, seed, detail_sample, failure_sample, message_id_tag_fraction)
    prof = load_profile(profile)
    try:
        end_ts = REFERENCE_END if end is None else parse_time(end)
    except WindowError as exc:
        raise ScenarioError(f"bad end: {exc}") from None
    baseline_s = baseline_seconds(baseline, sc.duration_s)
    kept_sources = _collected(collected)
    if under_way and not sc.has_trigger:
        raise ScenarioError(f"scenario {sc.name!r} has no trigger, so it cannot be under way when the window opens")
    chronic = noise_default(prof) if noise is None else bool(noise)
    start_ts = end_ts - pd.Timedelta(seconds=sc.duration_s)
    start_ns, end_ns = int(start_ts.value), int(end_ts.value)
    # An incident under way started before the window: traffic must run long enough before it
    # for the backlog it left to exist, even when no baseline is returned.
    lead_ns = max(baseline_s, UNDER_WAY_LEAD_S if under_way else 0) * NS
    traffic_start = start_ns - lead_ns
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
        if under_way:
            trigger_ns = start_ns - int(scenario_rng.uniform(5, 20) * 60_000) * 1_000_000
    incident = Incident(start_ns, end_ns, trigger_ns, scenario_rng)
    report("traffic", 0.0)
    lead = (int(round(messages * lead_ns / (end_ns - start_ns))), traffic_start)
    t = build_traffic(traffic_rng, prof, messages, start_ns, end_ns, sc.surge(incident) if sc.surge else None,
                      chronic, lead)
    t.rng = extra_rng
    t.cuts_ns = tuple(c for c in (start_ns - baseline_s * NS, start_ns) if c > traffic_start)
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
    ev_tables["consumer_lag"] = tables.consumer_lag(t, incident.missing_topics, incident.stray_records)
    # Snapshots as a capture at the window's end sees them and, for the baseline, at its end.
    captures = (end_ns, start_ns) if baseline_s else (end_ns,)
    ev_tables["topics"], *before = tables.topics(t, incident.missing_topics, captures)
    report("postgres/redis", 0.6)
    ev_tables["identities"] = tables.identities(t)
    ev_tables["locks"], *locks_before = tables.locks(t, incident.locks if incident_wide else [], captures)
    snapshots_before = {"topics": before[0], "locks": locks_before[0]} if baseline_s else {}
    report("mongodb", 0.7)
    tr = tables.transitions(t)
    ev_tables["messages"] = tables.messages(t, tr)
    t.release()
    ev_tables["status_events"] = tables.status_events(t, tr, ev_tables["messages"])
    del tr
    report("done", 1.0)

    ev = Evidence(window=Window(pd.Timestamp(traffic_start, unit="ns", tz="UTC"), end_ts), profile=prof.name)
    for name in ("messages", "status_events", "dlq_records", "spans", "log_events", "consumer_lag", "topics",
                 "identities", "locks"):
        ev.put(name, ev_tables.pop(name))
    started = None if trigger_ns is None else pd.Timestamp(trigger_ns, unit="ns", tz="UTC")
    variant = {"noise": chronic, "under_way": bool(under_way), "baseline_s": baseline_s,
               "collected": sorted(kept_sources) if kept_sources is not None else None}
    ev.scenario = {
        "name": sc.name, "description": sc.description, "root_cause": sc.root_cause, "seed": seed,
        "messages": messages, "trigger": incident.trigger, "started_at": iso(started) if started is not None else None,
        "channel": incident.channel, "under_way": bool(under_way), "variant": variant, **incident.details,
    }
    missing = set(incident.missing_topics)
    ev.sources = {"simulator": {
        "scenario": sc.name, "messages": messages, "seed": seed, "profile": prof.name, "end": iso(end_ts),
        "duration_s": sc.duration_s, "message_id_tag_fraction": tag_fraction,
        "flow": "deployed" if t.deployed_flow else "runbook", "variant": variant,
        "kafka_topics": [tp.name for tp in prof.kafka.expected_topics() if tp.name not in missing],
        "missing_topics": sorted(missing),
        "sampling": {
            "detail_sample": detail_sample, "failure_sample": failure_sample,
            "detail_messages": int(len(samples.detail)), "failure_messages": int(len(samples.failure)),
            "detail_fraction": round(len(samples.detail) / t.n, 6),
        },
        "status": "ok",
    }}
    # What Prometheus would have scraped, derived from the same evidence.
    from forensics.simulate.metrics import scenario_metrics

    ev.put("metrics", scenario_metrics(ev, prof))
    base = Window(start_ts - pd.Timedelta(seconds=baseline_s), start_ts) if baseline_s else None
    out = _split(ev, t.history_msg, Window(start_ts, end_ts), base, snapshots_before)
    if kept_sources is not None:
        for part in (out, out.baseline):
            if part is not None:
                _keep_sources(part, kept_sources)
    return out


UNDER_WAY_LEAD_S = 1800
"""Traffic simulated before the window of an incident under way when no baseline is asked for (s)."""
MAX_BASELINE_S = 7 * 86_400
SNAPSHOTS = ("topics", "identities", "locks")
"""Tables that are a picture taken at capture time: the window's as at its end; the baseline's
Kafka topics and Redis keys as a capture at the baseline's end would have seen them (the
normal picture of the code before the incident); identities (reference data) in the window's only."""
SOURCE_TABLES = {
    "mongo": ("messages", "status_events"), "kafka": ("dlq_records", "consumer_lag", "topics"),
    "jaeger": ("spans",), "logs": ("log_events",), "postgres": ("identities",), "redis": ("locks",),
    "prometheus": ("metrics",),
}
"""Which source collects which table (the ``collected`` variant)."""


def noise_default(profile: Profile) -> bool:
    """Whether the profile's platform carries the deployed code's chronic noise by default: the
    deployed code's layout (a status-updates topic; connectors with CALLBACK_BASE_URL unset) does,
    the runbook's does not."""
    return profile.kafka.status_updates is not None


def baseline_seconds(baseline: str | float | pd.Timedelta | None, window_s: int) -> int:
    """Length of a baseline period in whole seconds (0: none): ``"window"`` (or ``"preceding"``,
    as ``collect --baseline`` says it) = ``window_s``;
    ``None``/``"none"``/0; seconds; a Timedelta or text like ``"1h"``. ScenarioError otherwise."""
    if baseline is None or (isinstance(baseline, str) and baseline.strip().lower() in ("none", "0", "")):
        return 0
    if isinstance(baseline, str) and baseline.strip().lower() in ("window", "preceding"):
        return int(window_s)
    try:
        if isinstance(baseline, bool):
            raise ValueError(baseline)
        if isinstance(baseline, (int, float, np.integer, np.floating)):
            seconds = float(baseline)
        else:
            seconds = pd.Timedelta(baseline).total_seconds()
    except (ValueError, TypeError):
        raise ScenarioError(f"bad baseline {baseline!r}: give a duration like 1h or 30m, seconds, 'window' or "
                            "'none'") from None
    if not 0 <= seconds <= MAX_BASELINE_S:
        raise ScenarioError(f"baseline must be between 0 and {MAX_BASELINE_S // 86_400} days, got {baseline!r}")
    return int(seconds)


def _collected(collected: Sequence[str] | None) -> set[str] | None:
    if collected is None:
        return None
    names = {str(c).strip().lower() for c in ([collected] if isinstance(collected, str) else collected)} - {""}
    unknown = names - set(SOURCE_TABLES)
    if unknown or not names:
        raise ScenarioError(f"collected: unknown source(s) {', '.join(sorted(unknown)) or '(none given)'}; "
                            f"known: {', '.join(SOURCE_TABLES)}")
    return names


def _keep_sources(ev: Evidence, kept: set[str]) -> None:
    for source, names in SOURCE_TABLES.items():
        if source not in kept:
            for name in names:
                ev.tables.pop(name, None)
            ev.missing[source] = "not collected (partial evidence)"


def _split(full: Evidence, history_msg: np.ndarray, window: Window, base: Window | None,
           snapshots_before: dict[str, pd.DataFrame] | None = None) -> Evidence:
    """The window's evidence and, when ``base`` is given, the baseline's, from one stretch of traffic.

    What a collection over each period returns: messages created in it with their status as at
    capture time and all their status events (a live collection also takes the messages of an
    earlier period updated in the window; here those stay in the baseline's evidence only);
    DLQ records, spans, log lines, lag and metric samples timed in it (the window's samples
    include those taken at its end, at capture); snapshots (topics, identities, locks) of the
    window's end in the window's evidence, those of the baseline's end (``snapshots_before``)
    in the baseline's. Rows before ``base`` (or the window)
    are dropped. Messages are in creation order and history rows by period first (see
    ``Traffic.cuts_ns``), so both big tables are cut into slices without a copy.
    """
    messages, events = full.tables["messages"], full.tables["status_events"]
    n = len(messages)
    created = messages["created_at"].to_numpy(dtype="datetime64[ns]")
    out = []
    for period in (window, base):
        if period is None:
            continue
        lo, hi = np.searchsorted(created, [_np_time(period.start), _np_time(period.end)])
        ev = Evidence(window=period, profile=full.profile, sources=json.loads(json.dumps(full.sources)),
                      missing=dict(full.missing), scenario=full.scenario)
        ev.tables["messages"] = messages.iloc[lo:hi].reset_index(drop=True)
        h_lo, h_hi = n + np.searchsorted(history_msg, [lo, hi])
        ev.tables["status_events"] = pd.concat([events.iloc[lo:hi], events.iloc[h_lo:h_hi]], ignore_index=True)
        for name, frame in full.tables.items():
            if name in ("messages", "status_events"):
                continue
            if name in SNAPSHOTS:
                if period is window:
                    ev.tables[name] = frame
                elif name in (snapshots_before or {}):
                    ev.tables[name] = snapshots_before[name]
                continue
            times = frame[schema.TABLES[name].time_column]
            # Samples taken at capture time (lag, metrics) belong to the window.
            until = (times <= period.end) if period is window else (times < period.end)
            keep = ((times >= period.start) & until).to_numpy(dtype=bool, na_value=False)
            ev.tables[name] = frame[keep].reset_index(drop=True)
        if "log_events" in ev.tables:
            ev.tables["log_events"] = _renumbered(ev.tables["log_events"])
        out.append(ev)
    window_ev = out[0]
    if base is not None:
        baseline_ev = out[1]
        baseline_ev.scenario = None
        baseline_ev.sources["simulator"]["part"] = "baseline"
        window_ev.baseline, window_ev.baseline_kind = baseline_ev, "preceding"
    return window_ev


def _np_time(ts: pd.Timestamp) -> np.datetime64:
    return ts.tz_convert(None).to_datetime64()


def _renumbered(logs: pd.DataFrame) -> pd.DataFrame:
    """Log lines numbered from 1 per service again: each period's logs are a file of their own."""
    number = logs.groupby("source_object", sort=False, observed=True).cumcount() + 1
    logs["source_ref"] = number.astype(str).astype(logs["source_ref"].dtype)
    return logs


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

