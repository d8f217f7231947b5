"""Alert replay: when each alert rule fired, or would have fired, judged from the evidence itself.

Two replays answer "would the runbook's alerts (or the platform's own rules) have paged,
and when?" for one incident window, and :func:`detection` puts them side by side with the
incident start to give a time to detect.

From metrics (:func:`replay`)
    Rule files in Prometheus format are evaluated over the canonical ``metrics`` table
    (Prometheus range queries, actuator snapshots, the simulator) the way Prometheus 2.x
    evaluates them: at every evaluation step (1 min by default) the expression gives a set
    of series; a series that satisfies the condition becomes *pending*, and *firing* once
    it has held for the rule's ``for:``; it resolves at the first evaluation it is absent
    (``keep_firing_for:`` honoured). Recording rules run first, in file order, and their
    series can be used by later rules. The PromQL understood is the subset rule files
    need (:data:`FUNCTIONS`, :data:`AGGREGATIONS`, arithmetic, comparison with and
    without ``bool``, ``and``/``or``/``unless``, ``on``/``ignoring``); ``offset``, ``@``,
    subqueries and ``group_left``/``group_right`` are reported as unsupported, never
    guessed. Semantics follow Prometheus 2.42 (Debian's): instant selectors look back
    5 minutes for the last sample, range selectors ``x[r]`` take the samples in the
    closed interval ``[t - r, t]``, ``rate``/``increase`` extrapolate like Prometheus'
    ``extrapolatedRate``, ``histogram_quantile`` interpolates like ``bucketQuantile``.
    One difference: an absent sample and a NaN value are the same here (both compare false).
    A rule whose metric is neither in the evidence nor in the live server's series list
    is flagged "can never fire: metric X does not exist".

From canonical tables (:func:`replay_evidence`)
    When no metrics were collected, the runbook's alerts are replayed from what the
    evidence holds: each rule's ``evidence`` annotation names a derivation in
    :data:`EVIDENCE_SERIES` (PENDING count from messages/status events, FAILED share from
    status events, lag from consumer_lag, 5xx from spans and logs, P95 from status
    events) that yields the series the rule's left-hand side would have had; the rule's
    own threshold, range and ``for:`` are applied to it with the same state machine.

Everything runs on numpy arrays over the evaluation steps (one array per series), so a
day at one-minute steps with a few hundred series takes well under a second.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forensics import schema
from forensics.analysis.detectors import NS, to_ns
from forensics.analysis.promql import (
    Binary,
    Call,
    PromQLError,
    Selector,
    UnsupportedPromQL,
    parse_promql,
    referenced_metrics,
    split_condition,
    walk,
)
from forensics.analysis.promql_eval import (
    CMP,
    DEFAULT_STEP_S,
    LOOKBACK_S,
    MAX_STEPS,
    Evaluator,
    Key,
    SeriesStore,
    Vector,
    evaluation_steps,
    parse_labels,
    replay_step_ns,
    series_key,
    window_of,
)
from forensics.evidence import Evidence
from forensics.messages import message_index
from forensics.rules import Rule as Rule
from forensics.rules import load_rules, renames
from forensics.scan import return_freed_memory
from forensics.series import (
    STUCK_PENDING_S,
    count_in,
    delivery_observations,
    http_error_counts,
    http_errors,
    stuck_counts,
    stuck_intervals,
    transitions,
)
from forensics.timeutil import NAT, Window

DEFAULT_RANGE_S = 300.0
"""Range an evidence derivation uses when its rule has no range selector."""
MAX_EPISODES_LISTED = 20


# ==== alert state machine =======================================================================

@dataclass
class Episode:
    """One stretch during which one series of a rule was pending and then (maybe) firing."""

    labels: dict[str, str]
    active_at: pd.Timestamp
    fired_at: pd.Timestamp | None
    resolved_at: pd.Timestamp | None
    value_at_fire: float | None


def _episodes(cond: np.ndarray, values: np.ndarray, steps: np.ndarray, for_ns: int, keep_ns: int,
              labels: dict[str, str]) -> list[Episode]:
    """Prometheus' alerting-rule state machine over one series' condition at every step.

    A new true step makes the alert pending (active_at); it fires at the first step at which
    it has been active for ``for_ns``; it resolves at the first step the condition is false
    (or, with keep_firing_for, once it has been false that long). A pending alert whose
    condition goes away is dropped: only firing episodes are returned.
    """
    out: list[Episode] = []
    state, active, fired, keep_since = None, 0, 0, None

    def ts(j: int) -> pd.Timestamp:
        return pd.Timestamp(int(steps[j]), unit="ns", tz="UTC")

    for j in range(len(steps)):
        if cond[j]:
            keep_since = None
            if state is None:
                state, active = "pending", j
            if state == "pending" and steps[j] - steps[active] >= for_ns:
                state, fired = "firing", j
            continue
        if state == "firing":
            if keep_ns > 0:
                keep_since = j if keep_since is None else keep_since
                if steps[j] - steps[keep_since] < keep_ns:
                    continue
            out.append(Episode(labels, ts(active), ts(fired), ts(j), float(values[fired])))
        state, keep_since = None, None
    if state == "firing":
        out.append(Episode(labels, ts(active), ts(fired), None, float(values[fired])))
    return out


@dataclass
class RuleReplay:
    """The outcome of replaying one rule from one source over the window."""

    rule: Rule
    source: str
    """"metrics" or "evidence"."""
    episodes: list[Episode] = field(default_factory=list)
    op: str | None = None
    threshold: float = float("nan")
    peak_value: float | None = None
    peak_at: pd.Timestamp | None = None
    series: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def first(self) -> Episode | None:
        fired = [e for e in self.episodes if e.fired_at is not None]
        return min(fired, key=lambda e: e.fired_at) if fired else None

    def row(self) -> dict[str, Any]:
        first = self.first
        episodes = sorted(self.episodes, key=lambda e: e.fired_at)
        listed = [{"labels": e.labels, "active_at": _iso(e.active_at), "fired_at": _iso(e.fired_at),
                   "resolved_at": _iso(e.resolved_at)} for e in episodes[:MAX_EPISODES_LISTED]]
        notes = list(self.notes)
        if first is not None and first.resolved_at is None:
            notes.append("still firing at the end of the window")
        return {
            "rule": self.rule.name, "group": self.rule.group, "source": self.source, "expr": self.rule.expr,
            "for_s": self.rule.for_s, "op": self.op, "threshold": self.threshold,
            "would_fire_at": first.fired_at if first else pd.NaT,
            "resolved_at": first.resolved_at if first and first.resolved_at is not None else pd.NaT,
            "value_at_fire": first.value_at_fire if first else np.nan,
            "peak_value": self.peak_value if self.peak_value is not None else np.nan,
            "peak_at": self.peak_at if self.peak_at is not None else pd.NaT,
            "labels": json.dumps(first.labels, sort_keys=True) if first else None,
            "firing_series": len({json.dumps(e.labels, sort_keys=True) for e in self.episodes}),
            "episodes": json.dumps(listed), "note": "; ".join(notes) or None,
        }


def _iso(ts: pd.Timestamp | None) -> str | None:
    return None if ts is None or pd.isna(ts) else ts.isoformat().replace("+00:00", "Z")


RESULT_COLUMNS: dict[str, str] = {
    "rule": schema.STR, "group": schema.STR, "source": schema.STR, "expr": schema.STR, "for_s": schema.FLOAT,
    "op": schema.STR, "threshold": schema.FLOAT, "would_fire_at": schema.UTC_TS, "resolved_at": schema.UTC_TS,
    "value_at_fire": schema.FLOAT, "peak_value": schema.FLOAT, "peak_at": schema.UTC_TS, "labels": schema.STR,
    "firing_series": schema.INT, "episodes": schema.STR, "note": schema.STR,
}
"""Columns of :func:`replay` / :func:`replay_evidence`; :func:`detection` adds fired_at and time_to_detect_s."""


def _result_frame(replays: list[RuleReplay], columns: dict[str, str] = RESULT_COLUMNS) -> pd.DataFrame:
    rows = pd.DataFrame([r.row() for r in replays], columns=list(RESULT_COLUMNS))
    out = {}
    for name, dtype in columns.items():
        s = rows[name] if name in rows else pd.Series([None] * len(rows))
        out[name] = schema.to_utc(s) if dtype == schema.UTC_TS else s.astype(dtype)
    return pd.DataFrame(out)



def _judge(replay: RuleReplay, vec: Vector, steps: np.ndarray) -> RuleReplay:
    """Apply the rule's comparison and state machine to the value series ``vec``."""
    rule = replay.rule
    for_ns, keep_ns = int(rule.for_s * NS), int(rule.keep_firing_for_s * NS)
    want_low = replay.op in ("<", "<=")
    best: tuple[float, int] | None = None
    for key, vals in vec.series.items():
        ok = ~np.isnan(vals)
        if not ok.any():
            continue
        replay.series += 1
        cond = ok & (CMP[replay.op](np.where(ok, vals, 0.0), replay.threshold) if replay.op else ok)
        idx = np.flatnonzero(ok)
        j = int(idx[np.argmin(vals[idx])] if want_low else idx[np.argmax(vals[idx])])
        if best is None or (vals[j] < best[0] if want_low else vals[j] > best[0]):
            best = (float(vals[j]), j)
        labels = {k: v for k, v in key if k != "__name__"}
        replay.episodes.extend(_episodes(cond, vals, steps, for_ns, keep_ns, labels))
    if best is not None:
        replay.peak_value = best[0]
        replay.peak_at = pd.Timestamp(int(steps[best[1]]), unit="ns", tz="UTC")
    return replay


# ==== replay from metrics =======================================================================

def _as_rules(rules: Iterable[Rule | str | Path] | Rule | str | Path | None) -> list[Rule]:
    if rules is None:
        return load_rules()
    if isinstance(rules, Rule):
        return [rules]
    if isinstance(rules, str | Path):
        return load_rules(rules)
    out: list[Rule] = []
    for item in rules:
        out.extend([item] if isinstance(item, Rule) else load_rules(item))
    return out


def _missing_metric_note(missing: list[str], available: set[str], checked: str, fatal: bool) -> str:
    parts = []
    for name in missing:
        close = difflib.get_close_matches(name, sorted(available), n=1, cutoff=0.6)
        parts.append(f"metric {name} does not exist" + (f" (closest: {close[0]})" if close else ""))
    head = "can never fire: " if fatal else ""
    return f"{head}{'; '.join(parts)} ({checked})"


def replay(rules: Iterable[Rule | str | Path] | Rule | str | Path | None, metrics: pd.DataFrame,
           window: Window | None = None, *, step: Any = DEFAULT_STEP_S, known_metrics: Iterable[str] | None = None,
           lookback_s: float = LOOKBACK_S) -> pd.DataFrame:
    """Replay rule files over a ``metrics`` table: one row per alerting rule (:data:`RESULT_COLUMNS`).

    rules: Rule objects, rule-file paths, shipped file names, or None for the runbook's
    alerts. window: evaluation window (default: the metrics' time span). step: evaluation
    interval ("1m", seconds or a Timedelta). known_metrics: metric names a live Prometheus
    has (its series list); a metric in neither the table nor this list makes the rule
    "can never fire". A rule whose expression is outside the supported subset, or fails to
    evaluate, gets a note and no firing time.
    """
    return _result_frame(_replay_metrics(_as_rules(rules), metrics, window, step, known_metrics, lookback_s))


def _replay_metrics(rules: list[Rule], metrics: pd.DataFrame, window: Window | None, step: Any,
                    known_metrics: Iterable[str] | None, lookback_s: float) -> list[RuleReplay]:
    win = window or window_of(metrics)
    steps = evaluation_steps(win, step)
    store = SeriesStore(metrics)
    known = set(known_metrics or ())
    checked = ("neither in the evidence's metrics nor in Prometheus' series list" if known
               else "not in the evidence's metrics")
    out: list[RuleReplay] = []
    for rule in rules:
        replay_ = RuleReplay(rule, "metrics")
        try:
            node = parse_promql(rule.expr)
            available = store.names() | known
            names = referenced_metrics(node)
            # A metric only under absent() is expected to be missing; one beside "or" may be.
            absent_only = {n for c in walk(node) if isinstance(c, Call) and c.func == "absent"
                           for n in referenced_metrics(c)}
            has_or = any(isinstance(c, Binary) and c.op in ("or", "unless") for c in walk(node))
            missing = [n for n in names if n not in available and n not in absent_only]
            if missing:
                replay_.notes.append(_missing_metric_note(missing, available, checked, fatal=not has_or))
                if not has_or and rule.kind == "alert":
                    _, replay_.op, replay_.threshold = split_condition(node)
                    out.append(replay_)
                    continue
            ev = Evaluator(store, steps, rule.expr, lookback_s)
            if rule.kind == "record":
                value = ev.eval(node)
                vec = value if isinstance(value, Vector) else Vector({(): value})
                for key, vals in vec.series.items():
                    ok = ~np.isnan(vals)
                    store.add(rule.name, {**dict(key), **rule.labels}, steps[ok], vals[ok])
                continue
            lhs, replay_.op, replay_.threshold = split_condition(node)
            value = ev.eval(lhs)
            vec = value if isinstance(value, Vector) else Vector({(): value})
            _judge(replay_, vec, steps)
            if not replay_.series:
                replay_.notes.append("no result at any step" + (" (its series have no samples in the window)"
                                                                if not missing else ""))
        except UnsupportedPromQL as exc:
            replay_.notes.append(f"not evaluated: unsupported PromQL: {exc.problem}")
        except PromQLError as exc:
            replay_.notes.append(f"not evaluated: {exc}")
        if rule.kind == "alert":
            out.append(replay_)
    return out


# ==== replay from canonical tables ==============================================================

EvidenceFn = Callable[[Evidence, np.ndarray, int], tuple[Vector, str]]
EVIDENCE_SERIES: dict[str, EvidenceFn] = {}
"""Derivation name (a rule's ``evidence`` annotation) -> fn(evidence, steps, range_ns) ->
(value series, note on how they were derived)."""


def evidence_series(name: str) -> Callable[[EvidenceFn], EvidenceFn]:
    def register(fn: EvidenceFn) -> EvidenceFn:
        EVIDENCE_SERIES[name] = fn
        return fn
    return register



@evidence_series("stuck_pending")
def _stuck_pending(ev: Evidence, steps: np.ndarray, range_ns: int) -> tuple[Vector, str]:
    """Messages stuck in PENDING (older than 30 s) at each step, from messages and status events."""
    if not (message_index(ev).created_by_code != NAT).any():
        return Vector(), "no messages or status events"
    starts, ends = stuck_intervals(ev)
    return (Vector({(): stuck_counts(starts, ends, steps)}),
            f"PENDING for more than {STUCK_PENDING_S:g} s at each step, from messages/status_events")


@evidence_series("failed_rate")
def _failed_rate(ev: Evidence, steps: np.ndarray, range_ns: int) -> tuple[Vector, str]:
    """FAILED / (FAILED + DELIVERED) among the status events of the rule's range before each step."""
    failed, delivered = transitions(ev, "FAILED")["at"].to_numpy(), transitions(ev, "DELIVERED")["at"].to_numpy()
    if not len(failed) and not len(delivered):
        return Vector(), "no DELIVERED or FAILED status events"
    f = count_in(failed, steps - range_ns, steps)
    d = count_in(delivered, steps - range_ns, steps)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(f + d > 0, f / (f + d), np.nan)
    return (Vector({(): share}),
            f"FAILED share of the messages that finished in the {range_ns / NS / 60:g} min before each step, "
            "from status_events")


@evidence_series("consumer_lag")
def _consumer_lag(ev: Evidence, steps: np.ndarray, range_ns: int) -> tuple[Vector, str]:
    """Total lag per consumer group and topic, the last sample at most 5 min before each step."""
    lag = ev.table("consumer_lag")
    if not len(lag):
        return Vector(), "no consumer_lag samples"
    df = pd.DataFrame({"group": lag["group"].astype(str).to_numpy(), "topic": lag["topic"].astype(str).to_numpy(),
                       "at": to_ns(lag["sampled_at"]), "lag": lag["lag"].fillna(0).astype("float64").to_numpy()})
    total = df.groupby(["group", "topic", "at"], sort=True)["lag"].sum().reset_index()
    out: dict[Key, np.ndarray] = {}
    lookback = int(LOOKBACK_S * NS)
    for (group, topic), g in total.groupby(["group", "topic"], sort=True):
        t, v = g["at"].to_numpy(), g["lag"].to_numpy()
        idx = np.searchsorted(t, steps, side="right") - 1
        j = np.maximum(idx, 0)
        vals = np.where((idx >= 0) & (steps - t[j] <= lookback), v[j], np.nan)
        if not np.isnan(vals).all():
            out[series_key({"group": str(group), "topic": str(topic)})] = vals
    samples = total["at"].nunique()
    return Vector(out), (f"summed over partitions per group and topic from {samples} consumer_lag sample time(s)"
                         + ("; a single snapshot shows lag only near the moment it was taken" if samples < 2 else ""))


@evidence_series("connector_5xx")
def _connector_5xx(ev: Evidence, steps: np.ndarray, range_ns: int) -> tuple[Vector, str]:
    """HTTP 5xx answers per service in the rule's range before each step, from spans and logs."""
    errors = http_errors(ev, 500)
    if not errors:
        has = [t for t in ("spans", "log_events") if ev.has(t)]
        return Vector(), ("no 5xx in " + " or ".join(has)) if has else "no spans or logs"
    counts = http_error_counts(errors, steps - range_ns, steps)
    per_service: dict[Key, np.ndarray] = {}
    for (service, _status), c in counts.items():
        key = series_key({"service": service})
        per_service[key] = per_service.get(key, 0) + c
    return (Vector(per_service),
            f"from {' and '.join(sorted(errors))} (the larger count per service and status); spans and logs may be "
            "sampled, so counts are a lower bound")


@evidence_series("delivery_p95")
def _delivery_p95(ev: Evidence, steps: np.ndarray, range_ns: int) -> tuple[Vector, str]:
    """Exact 95th percentile of delivery latency among the DELIVERED events of the rule's range."""
    obs = delivery_observations(ev)
    if not len(obs):
        return Vector(), "no DELIVERED status events with a known creation time"
    at, lat = obs["at"].to_numpy(), obs["latency_s"].to_numpy()
    lo = np.searchsorted(at, steps - range_ns, side="right")
    hi = np.searchsorted(at, steps, side="right")
    vals = np.full(len(steps), np.nan)
    for k in np.flatnonzero(hi > lo):
        vals[k] = np.quantile(lat[lo[k]:hi[k]], 0.95)
    return (Vector({(): vals}),
            f"exact P95 of created -> DELIVERED over the {range_ns / NS / 60:g} min before each step "
            "(a histogram interpolates between buckets)")


def replay_evidence(rules: Iterable[Rule | str | Path] | Rule | str | Path | None, evidence: Evidence, *,
                    step: Any = DEFAULT_STEP_S) -> pd.DataFrame:
    """Replay the alerting rules that carry an ``evidence`` annotation from the canonical tables
    (one row per such rule, :data:`RESULT_COLUMNS`, source "evidence")."""
    return _result_frame(_replay_evidence(_as_rules(rules), evidence, step))


def _replay_evidence(rules: list[Rule], evidence: Evidence, step: Any) -> list[RuleReplay]:
    steps = evaluation_steps(evidence.window, step)
    out = []
    for rule in rules:
        if rule.kind != "alert" or not rule.evidence:
            continue
        replay_ = RuleReplay(rule, "evidence")
        out.append(replay_)
        fn = EVIDENCE_SERIES.get(rule.evidence)
        if fn is None:
            replay_.notes.append(f"not evaluated: unknown evidence derivation {rule.evidence!r}; known: "
                                 f"{', '.join(EVIDENCE_SERIES)}")
            continue
        try:
            node = parse_promql(rule.expr)
        except PromQLError as exc:
            replay_.notes.append(f"not evaluated: {exc}")
            continue
        _, replay_.op, replay_.threshold = split_condition(node)
        ranges = [n.range_ns for n in walk(node) if isinstance(n, Selector) and n.range_ns]
        vec, how = fn(evidence, steps, int(ranges[0]) if ranges else int(DEFAULT_RANGE_S * NS))
        replay_.notes.append(how)
        _judge(replay_, vec, steps)
    return out


# ==== profiles, collected rules, detection ======================================================

def translate(rules: Iterable[Rule], profile: Any, from_profile: Any = "runbook") -> list[Rule]:
    """Rules written in ``from_profile``'s metric names, renamed to ``profile``'s (forensics/rules/metrics.yaml).

    Only selector names are renamed; a role the target profile does not export keeps its
    old name, so the replay will say the metric does not exist there.
    """
    mapping = renames(profile, from_profile)
    out = []
    for rule in rules:
        try:
            node = parse_promql(rule.expr)
        except PromQLError:
            out.append(rule)
            continue
        spans = sorted((n.span for n in walk(node) if isinstance(n, Selector) and n.span and n.name in mapping),
                       reverse=True)
        expr = rule.expr
        for a, b in spans:
            expr = expr[:a] + mapping[expr[a:b]] + expr[b:]
        out.append(replace(rule, expr=expr) if expr != rule.expr else rule)
    return out


def collected_rules(evidence: Evidence) -> list[Rule]:
    """The rules a live Prometheus had loaded (``/api/v1/rules``, kept by the prometheus source)."""
    desc = evidence.sources.get("prometheus") or {}
    origin = f"prometheus {desc.get('url', '')} /api/v1/rules".strip()
    out = []
    for r in desc.get("rules") or []:
        if not isinstance(r, dict) or not r.get("name") or not r.get("query"):
            continue
        out.append(Rule(name=str(r["name"]), expr=str(r["query"]),
                        kind="alert" if r.get("type") == "alerting" else "record",
                        for_s=float(r.get("duration") or 0), keep_firing_for_s=float(r.get("keepFiringFor") or 0),
                        labels={str(k): str(v) for k, v in (r.get("labels") or {}).items()},
                        annotations={str(k): str(v) for k, v in (r.get("annotations") or {}).items()},
                        group=str(r.get("group") or ""), origin=origin))
    return out


def incident_start(evidence: Evidence, findings: pd.DataFrame | None = None) -> tuple[pd.Timestamp | None, str]:
    """When the incident began, and on what basis: the scenario's start when the evidence is
    simulated, else the earliest finding, else unknown."""
    started = (evidence.scenario or {}).get("started_at")
    if started:
        return pd.Timestamp(started).tz_convert("UTC"), "scenario started_at"
    if findings is not None and len(findings) and findings["first_seen"].notna().any():
        return schema.to_utc(findings["first_seen"]).min(), "first finding"
    return None, "unknown"


def fired_alerts(metrics: pd.DataFrame) -> dict[str, pd.Timestamp]:
    """Alert name -> the first time Prometheus had it firing, from its ``ALERTS`` series."""
    if not len(metrics):
        return {}
    a = metrics[(metrics["metric"] == "ALERTS") & metrics["value"].fillna(0).gt(0)]
    out: dict[str, pd.Timestamp] = {}
    for labels, ts in zip(a["labels"], schema.to_utc(a["timestamp"]), strict=True):
        lab = parse_labels(labels)
        name = lab.get("alertname")
        if name and lab.get("alertstate") == "firing" and (name not in out or ts < out[name]):
            out[name] = ts
    return out


DETECTION_COLUMNS: dict[str, str] = {**RESULT_COLUMNS, "fired_at": schema.UTC_TS, "time_to_detect_s": schema.FLOAT}


def detection(evidence: Evidence, rules: Iterable[Rule | str | Path] | Rule | str | Path | None = None, *,
              step: Any = DEFAULT_STEP_S, findings: pd.DataFrame | None = None,
              known_metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """When each alert fired or would have fired, and the time to detect: the report's "Detection".

    rules: default the runbook's recommended alerts renamed for the evidence's profile plus
    the rules the prometheus source collected from the live server. Each alerting rule is
    replayed from the ``metrics`` table when the evidence has one (source "metrics"), and
    from the canonical tables when it carries an ``evidence`` annotation (source
    "evidence"). ``fired_at`` is when Prometheus really had the alert firing (its ALERTS
    series, when collected); ``time_to_detect_s`` = would_fire_at - incident start
    (``attrs["incident_start"]``, basis in ``attrs["incident_start_basis"]``: the scenario's
    start, else the first of ``findings``). Rows are ordered by would_fire_at, never-firing
    rules last.
    """
    if rules is None:
        chosen = translate(load_rules(), evidence.profile) + collected_rules(evidence)
    else:
        chosen = _as_rules(rules)
    metrics = evidence.table("metrics")
    desc = evidence.sources.get("prometheus") or {}
    known = list(known_metrics) if known_metrics is not None else list(desc.get("metric_names") or [])
    replays: list[RuleReplay] = []
    if len(metrics) or known:
        replays += _replay_metrics(chosen, metrics, evidence.window, step, known, LOOKBACK_S)
    else:
        for rule in chosen:
            if rule.kind == "alert" and not rule.evidence:
                replays.append(RuleReplay(rule, "metrics", notes=["not evaluated: the evidence holds no metrics"]))
    replays += _replay_evidence(chosen, evidence, step)
    return_freed_memory()  # the replayed series and their per-message intermediates
    frame = _result_frame(replays)
    fired = fired_alerts(metrics)
    frame["fired_at"] = schema.to_utc(pd.Series([fired.get(r) for r in frame["rule"]], dtype=object))
    start, basis = incident_start(evidence, findings)
    ttd = (frame["would_fire_at"] - start).dt.total_seconds() if start is not None else np.nan
    frame["time_to_detect_s"] = pd.Series(ttd, index=frame.index, dtype="float64")
    frame = frame.sort_values(["would_fire_at", "rule", "source"], na_position="last", kind="stable")
    frame = frame.reset_index(drop=True)[list(DETECTION_COLUMNS)]
    frame.attrs.update({"incident_start": start, "incident_start_basis": basis,
                        "step_s": replay_step_ns(evidence.window, step) / NS})
    return frame


def describe_detection(frame: pd.DataFrame) -> list[str]:
    """One sentence per replayed rule, e.g. "DeliveryLatencyP95 (from evidence) would have fired
    at 14:31 UTC, 4.2 min after the incident began, 11.0 min before the first page"."""
    start = frame.attrs.get("incident_start")
    pages = frame["fired_at"].dropna()
    first_page = pages.min() if len(pages) else None
    out = []
    for row in frame.itertuples(index=False):
        head = f"{row.rule} (from {row.source})"
        if pd.isna(row.would_fire_at):
            note = row.note if isinstance(row.note, str) else ""
            out.append(f"{head} would not have fired" + (f": {note}" if note else ""))
            continue
        text = f"{head} would have fired at {row.would_fire_at:%H:%M} UTC"
        if start is not None:
            ttd = row.time_to_detect_s
            text += f", {_minutes(abs(ttd))} {'after' if ttd >= 0 else 'before'} the incident began"
        if first_page is not None:
            gap = (first_page - row.would_fire_at).total_seconds()
            text += f", {_minutes(abs(gap))} {'before' if gap >= 0 else 'after'} the first page"
        out.append(text)
    step_s = frame.attrs.get("step_s")
    if step_s and step_s > DEFAULT_STEP_S:
        out.append(f"Replayed every {_minutes(step_s)} instead of every {_minutes(DEFAULT_STEP_S)}: the window is long, "
                   f"and a replay takes at most {MAX_STEPS:,} steps.")
    return out


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if abs(seconds) >= 60 else f"{seconds:.0f} s"
