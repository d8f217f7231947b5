"""What changed: every finding of the window judged against a baseline, and when it began.

Method
------
1. **Baseline.** The evidence's own baseline (``Evidence.baseline``: the period right
   before the window, or a range given by hand). Without one, the part of the window before
   the detected onset (``pre-onset``) when the onset leaves at least
   :data:`MIN_PRE_ONSET_SHARE` of the window (and :data:`MIN_PRE_ONSET_S`) before it;
   otherwise none, and every finding is judged in isolation (``change`` null).
   The same detectors run over the baseline with the same thresholds (:func:`analyse_change`).

2. **Verdict per finding** (:func:`judge`): ``new``, ``worse``, ``unchanged`` or ``better``,
   with the baseline's value and the ratio of the two rates.

   - Counts (error lines, FAILED messages of one error, stuck messages, dead letters, ...):
     the finding's count in the window against the matching baseline finding's count, both
     per exposure (messages created in each period; the period's length when either has no
     messages). The test is the conditional test for two Poisson rates: given both counts,
     the window's count is binomial with p = e1 / (e0 + e1) under equal rates; its tail is
     taken from the signed-root likelihood ratio (normal tail), which holds for small and
     large counts. A rise needs p < :data:`ALPHA` *and* a rate ratio of at least
     :data:`MIN_RATIO` (a significant 5 % rise over a million lines is not an incident):
     ``new`` when the baseline had none, else ``worse``; ``better`` the mirror. A few
     sporadic events where the baseline had none are ``unchanged``: noise, not a change.
   - States (a missing topic, a silent service, stuck locks, a stalled partition): ``new``
     when the baseline did not show the condition at all, else compared as counts.
   - Rates with a threshold (FAILED rate): the same test on the FAILED counts of the channel;
     ``new`` when the baseline's rate was under the threshold, ``worse`` when it was over.
   - Delivery P95: the messages delivered later than the SLA, per message delivered, as
     counts (a windowed P95 turns on two or three slow messages); ``new`` when the baseline's
     P95 kept the SLA.
   - Levels (consumer lag peak): ``new`` when the baseline stayed normal (lag under
     ``consumer_lag_normal``), else a ratio of :data:`MIN_RATIO` either way makes ``worse`` /
     ``better``.
   - A finding whose evidence the baseline did not collect (its tables, :data:`NEEDS`) gets
     no verdict: it cannot be told apart from what was always there, so it counts as a change.

3. **Onset** (:func:`change_point`): the events of each finding (its own times, else its
   messages' creation times) are binned into :data:`BINS` bins over the window; the split
   that best separates a lower rate before from a higher rate after (Poisson likelihood
   ratio) is the change point when 2 x log LR exceeds :data:`MIN_LLR`. A signal without one
   that shows from the window's first bin was already there when the window opened.
   The incident's onset (:func:`incident_onset`) is the earliest onset of what is new or worse;
   when that evidence is there from the first bin, the incident was under way at window
   open: say so, give the earliest evidence and suggest a window twice as long.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from forensics.analysis.detectors import NAT, NS, Context, Detection, Finding, Thresholds, detect
from forensics.analysis.detectors.localisation import LOCALISERS, localise
from forensics.analysis.significance import (  # noqa: F401  (ALPHA, CHANGED, MIN_RATIO, rate_test: re-exported)
    ALPHA,
    CHANGED,
    MIN_RATIO,
    Verdict,
    count_verdict,
    level_verdict,
    rate_test,
)
from forensics.evidence import Evidence
from forensics.scan import return_freed_memory
from forensics.timeutil import iso

BINS = 60
"""Bins of the window for the change point."""
MIN_LLR = 13.8
"""2 x log likelihood ratio a change point needs (chi-square(1) p ~ 0.0002: one of ~60
splits is picked, so the single-test level is kept strict)."""
MIN_EVENTS = 5
"""Fewer events than this have no change point."""
MIN_PRE_ONSET_S = 600.0
MIN_PRE_ONSET_SHARE = 0.2
"""A pre-onset baseline needs this much of the window (seconds, share) before the onset."""
PRESENT_BEFORE = ("unchanged", "better")
"""Verdicts of conditions that were there before the incident too (chronic)."""

NEEDS: dict[str, tuple[str, ...]] = {
    "stuck_pending": ("messages", "status_events"), "stuck_sent": ("messages", "status_events"),
    "failed_rate": ("messages", "status_events"), "delivery_p95": ("status_events",),
    "out_of_order": ("status_events",), "duplicate_deliveries": ("status_events", "dlq_records"),
    "consumer_lag": ("consumer_lag",), "connector_5xx": ("spans", "log_events"),
    "missing_topics": ("topics",), "stuck_locks": ("locks",), "replay_blockers": ("locks",),
    "error_groups": ("messages", "status_events"), "error_log_burst": ("log_events",),
    "service_silence": ("log_events", "spans"), "dead_letters": ("dlq_records",),
    "content_over_limit": ("messages",), "recipient_identity": ("identities",),
    "partition_confined": ("consumer_lag",),
}
"""Detector -> tables of which the baseline needs one to measure the same thing
(log_errors: the table its lines came from)."""


LEVELS = ("failed_rate", "delivery_p95", "consumer_lag")
"""Detectors whose finding is compared on its ``metric`` (a rate or a level); the others on ``count``."""


# ---- measures -----------------------------------------------------------------------------------

Measure = Callable[[Finding, Context, Context, list[Finding]], Verdict]
MEASURES: dict[str, Measure] = {}


def measure(detector: str) -> Callable[[Measure], Measure]:
    """Register how one detector's finding is compared with the baseline (default: its count)."""

    def register(fn: Measure) -> Measure:
        MEASURES[detector] = fn
        return fn

    return register


def exposures(window: Context, base: Context) -> tuple[float, float]:
    """Messages created in each period, or the periods' lengths (s) when either has none."""
    if window.n_messages and base.n_messages:
        return float(window.n_messages), float(base.n_messages)
    return (window.now_ns - window.start_ns) / NS, (base.now_ns - base.start_ns) / NS


def _match_key(f: Finding) -> str:
    """What makes a baseline finding the same condition: its id, or for time-keyed bursts the service."""
    return f"{f.detector}:{f.tags.get('service')}" if f.detector == "error_log_burst" else f.finding_id


def _default(f: Finding, window: Context, base: Context, same: list[Finding]) -> Verdict:
    e1, e0 = exposures(window, base)
    return count_verdict(float(f.count or 0), e1, float(sum(int(b.count or 0) for b in same)), e0)


def _state(f: Finding, window: Context, base: Context, same: list[Finding]) -> Verdict:
    """A condition that either holds or not: new when the baseline never showed it."""
    return _default(f, window, base, same) if same else Verdict(0.0, "new", math.inf)


MEASURES.update(dict.fromkeys(("missing_topics", "service_silence", "stuck_locks", "partition_confined"), _state))


def _own(f: Finding, window: Context, base: Context, same: list[Finding]) -> Verdict:
    """A localisation finding was judged against the baseline when it was made (:func:`localise`)."""
    return Verdict(f.baseline_value, f.change, f.change_ratio)


MEASURES.update(dict.fromkeys(LOCALISERS, _own))


def _channel_mask(ctx: Context, channel: str | None) -> np.ndarray:
    return np.ones(ctx.n_messages, dtype=bool) if channel is None else ctx.channel == channel


@measure("failed_rate")
def _failed_rate(f: Finding, window: Context, base: Context, same: list[Finding]) -> Verdict:
    """FAILED messages of the channel per message created, against the threshold."""
    w, b = _channel_mask(window, f.channel), _channel_mask(base, f.channel)
    c1, e1 = float((window.failed & w).sum()), float(w.sum())
    c0, e0 = float((base.failed & b).sum()), float(b.sum())
    before = c0 / e0 if e0 else 0.0
    return count_verdict(c1, e1, c0, e0, over_before=before > window.t.failed_rate, value=before)


def _p95(ctx: Context, channel: str | None) -> float:
    ok = (ctx.delivered_ns != NAT) & (ctx.created_ns != NAT) & _channel_mask(ctx, channel)
    return float(np.percentile((ctx.delivered_ns[ok] - ctx.created_ns[ok]) / NS, 95)) if ok.any() else 0.0


def _slow(ctx: Context, channel: str | None) -> tuple[float, float]:
    """Messages of the channel delivered later than the SLA, and messages delivered."""
    ok = (ctx.delivered_ns != NAT) & (ctx.created_ns != NAT) & _channel_mask(ctx, channel)
    late = (ctx.delivered_ns[ok] - ctx.created_ns[ok]) / NS > ctx.t.p95_latency_s
    return float(late.sum()), float(ok.sum())


@measure("delivery_p95")
def _delivery_p95(f: Finding, window: Context, base: Context, same: list[Finding]) -> Verdict:
    """Messages of the channel delivered later than the SLA per message delivered, window
    against baseline (the two-count test): a windowed P95 is the worst of many small windows,
    moved by two or three slow messages, and no match for the baseline's P95 over its whole
    period. ``new`` when the baseline's P95 kept the SLA; the baseline value shown is that P95."""
    (c1, e1), (c0, e0) = _slow(window, f.channel), _slow(base, f.channel)
    if not e1 or not e0:
        return level_verdict(float(f.metric or 0.0), _p95(base, f.channel), window.t.p95_latency_s)
    before = _p95(base, f.channel)
    return count_verdict(c1, e1, c0, e0, over_before=before > window.t.p95_latency_s, value=before)


@measure("consumer_lag")
def _consumer_lag(f: Finding, window: Context, base: Context, same: list[Finding]) -> Verdict:
    """Peak total lag of the group on the topic against the baseline's peak."""
    lag = base.table("consumer_lag")
    mine = lag[(lag["group"] == f.tags.get("group")) & (lag["topic"] == f.tags.get("topic"))]
    peak = float(mine.groupby("sampled_at")["lag"].sum().max()) if len(mine) else 0.0
    return level_verdict(float(f.metric or 0.0), peak, window.t.consumer_lag_normal)


def _5xx(ctx: Context, service: str) -> int:
    """5xx answers of ``service``: the larger of the span and the log counts (one call may show in both)."""
    spans, logs = ctx.table("spans"), ctx.table("log_events")
    from_spans = int(((spans["service"] == service) & (spans["http_status_code"].fillna(0) >= 500)).sum())
    from_logs = int(((logs["service"] == service) & (logs["http_status"].fillna(0) >= 500)).sum())
    return max(from_spans, from_logs)


@measure("connector_5xx")
def _connector_5xx(f: Finding, window: Context, base: Context, same: list[Finding]) -> Verdict:
    """All 5xx answers of the service in each period, per exposure."""
    e1, e0 = exposures(window, base)
    service = str(f.tags.get("service"))
    return count_verdict(float(_5xx(window, service)), e1, float(_5xx(base, service)), e0)


def _measurable(f: Finding, base: Evidence) -> bool:
    tables = (str(f.tags.get("source")),) if f.detector == "log_errors" else NEEDS.get(f.detector, ())
    return not tables or any(base.has(t) for t in tables)


def judge(detection: Detection, baseline: Detection | None) -> None:
    """Set ``baseline_value``, ``change`` and ``change_ratio`` on every finding of
    ``detection`` against the same detectors' run over the baseline (nothing without one)."""
    if baseline is None:
        return
    window, base = detection.context, baseline.context
    by_key: dict[str, list[Finding]] = {}
    for b in baseline.items:
        by_key.setdefault(_match_key(b), []).append(b)
    for f in detection.items:
        if not _measurable(f, base.evidence):
            continue
        verdict = MEASURES.get(f.detector, _default)(f, window, base, by_key.get(_match_key(f), []))
        f.baseline_value, f.change = verdict.baseline_value, verdict.change
        f.change_ratio = None if verdict.ratio is None else float(verdict.ratio)


# ---- onset ----------------------------------------------------------------------------------------

def change_point(times_ns: np.ndarray, start_ns: int, end_ns: int, bins: int = BINS) -> int | None:
    """The time (ns) at which the rate of the events rose, or None when no rise stands out.

    Counts per bin; for every split, the Poisson log likelihood of two rates (before, after)
    against one; the best split whose later rate is higher counts when 2 x log LR > MIN_LLR."""
    t = times_ns[(times_ns != NAT) & (times_ns >= start_ns) & (times_ns < end_ns)]
    if len(t) < MIN_EVENTS or end_ns <= start_ns:
        return None
    width = (end_ns - start_ns) / bins
    counts = np.bincount(np.minimum(((t - start_ns) / width).astype(np.int64), bins - 1), minlength=bins)
    total = counts.sum()
    before = np.cumsum(counts)[:-1].astype(float)
    after = total - before
    k = np.arange(1, bins, dtype=float)
    rate_a, rate_b = before / k, after / (bins - k)

    def ll(c: np.ndarray, length: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(c > 0, c * np.log(c / length), 0.0)

    llr = ll(before, k) + ll(after, bins - k) - total * math.log(total / bins)
    llr = np.where(rate_b > rate_a, llr, -np.inf)
    best = int(np.argmax(llr))
    if not np.isfinite(llr[best]) or 2 * llr[best] <= MIN_LLR:
        return None
    return int(start_ns + (best + 1) * width)


def event_times(f: Finding, ctx: Context) -> np.ndarray | None:
    """The times of a finding's events: its own, else its messages' creation times."""
    if f.times is not None and len(f.times):
        return np.asarray(f.times, dtype=np.int64)
    if f.messages is not None and len(f.messages):
        return ctx.created_ns[f.messages]
    return None


def set_onsets(detection: Detection) -> None:
    """``onset`` of every finding: the change point of its events, else its first_seen when
    that is past the window's first bin (lag crossing, a silence, a missing topic found)."""
    ctx = detection.context
    first_bin = ctx.start_ns + (ctx.now_ns - ctx.start_ns) // BINS
    for f in detection.items:
        times = event_times(f, ctx)
        at = change_point(times, ctx.start_ns, ctx.now_ns) if times is not None else None
        if at is None and times is None and f.first_seen is not None and f.first_seen.value > first_bin:
            at = f.first_seen.value
        f.onset = pd.Timestamp(at, tz="UTC") if at is not None else None


def _first_event(f: Finding, ctx: Context) -> int | None:
    times = event_times(f, ctx)
    if times is not None and (times != NAT).any():
        return int(times[times != NAT].min())
    return f.first_seen.value if f.first_seen is not None else None


def is_change(f: Finding) -> bool:
    """New, worse, or not judged (no baseline for it): what may explain the incident."""
    return f.change not in PRESENT_BEFORE


def incident_onset(detection: Detection) -> dict[str, Any]:
    """When the incident began: the earliest onset of what changed (warning or critical);
    ``under_way_at_window_start`` when such evidence is there from the window's first bin
    without a change point, with the earliest evidence and a suggested wider window start."""
    ctx = detection.context
    first_bin = ctx.start_ns + (ctx.now_ns - ctx.start_ns) // BINS
    changed = [f for f in detection.items if f.severity != "info" and is_change(f)]
    onsets = [f.onset.value for f in changed if f.onset is not None]
    early = [f for f in changed if f.onset is None and (_first_event(f, ctx) or first_bin + 1) <= first_bin]
    under_way = bool(early)
    firsts = [t for t in (_first_event(f, ctx) for f in changed) if t is not None]
    start = min(onsets) if onsets and not under_way else (min(firsts) if under_way and firsts else None)
    window = ctx.evidence.window
    return {
        "start": iso(pd.Timestamp(start, tz="UTC")) if start is not None else None,
        "under_way_at_window_start": under_way,
        "earliest_evidence": iso(pd.Timestamp(min(firsts), tz="UTC")) if under_way and firsts else None,
        "earliest_findings": [f.finding_id for f in early][:5],
        "suggested_since": iso(window.start - window.duration) if under_way else None,
    }


# ---- the baseline and the whole step -------------------------------------------------------------

REFERENCE_TABLES = ("identities",)
"""Snapshot tables that hold reference data (who the recipients are), as true of the baseline's
messages as of the window's; lock and topic snapshots describe the moment of capture only."""


def with_reference_data(base: Evidence, evidence: Evidence) -> Evidence:
    """The baseline, given the window's reference tables it lacks (a live collection cannot
    read identities back in time, but they change slowly)."""
    lacking = [t for t in REFERENCE_TABLES if evidence.has(t) and not base.has(t)]
    if not lacking:
        return base
    out = Evidence(base.window, base.profile, dict(base.tables), base.sources, base.missing,
                   stored=dict(base.stored), unread=dict(base.unread))
    for t in lacking:
        out.tables[t] = evidence.tables[t]
    return out


def pre_onset(evidence: Evidence, detection: Detection) -> Evidence | None:
    """The part of the window before the earliest change point of a warning or critical
    finding, when long enough to be a baseline (MIN_PRE_ONSET_S and MIN_PRE_ONSET_SHARE)."""
    set_onsets(detection)
    onsets = [f.onset for f in detection.items if f.severity != "info" and f.onset is not None]
    if not onsets:
        return None
    onset = min(onsets)
    before = (onset - evidence.window.start).total_seconds()
    if before < max(MIN_PRE_ONSET_S, MIN_PRE_ONSET_SHARE * evidence.window.duration.total_seconds()):
        return None
    return evidence.between(evidence.window.start, onset)


@dataclass
class ChangeAnalysis:
    """The baseline used and what it says about the window."""

    kind: str
    """preceding, explicit, pre-onset or none (Evidence.BASELINE_KINDS)."""
    window: dict[str, str] | None
    onset: dict[str, Any]
    baseline: Detection | None = None

    def used(self) -> dict[str, Any]:
        return {"kind": self.kind, "window": self.window}


def baseline_detection(evidence: Evidence, thresholds: Thresholds) -> Detection | None:
    """The detectors over the evidence's collected baseline (None without one), its messages
    let go once they have run when they can be read again (a lean bundle read,
    :meth:`Context.release_messages`). Run before the window's detectors, so that the two
    periods' messages are never in memory at once: a 10M-message window with its 10M-message
    baseline then needs one period's memory, not two."""
    if evidence.baseline is None:
        return None
    found = detect(with_reference_data(evidence.baseline, evidence), thresholds)
    found.context.release_messages()
    return found


def analyse_change(evidence: Evidence, detection: Detection, thresholds: Thresholds,
                   baseline: Detection | None = None) -> ChangeAnalysis:
    """Choose the baseline (collected, else pre-onset, else none), run the detectors over it
    (``baseline``: that run, made before by :func:`baseline_detection`), judge every finding
    of ``detection`` against it and find the onsets."""
    base, kind = evidence.baseline, evidence.baseline_kind if evidence.baseline is not None else "none"
    if base is None:
        base = pre_onset(evidence, detection)
        kind = "pre-onset" if base is not None else "none"
    if baseline is None and base is not None:
        baseline = detect(with_reference_data(base, evidence), thresholds)
    if baseline is not None:
        base = baseline.context.evidence
    detection.baseline = baseline
    localise(detection, baseline)
    judge(detection, baseline)
    set_onsets(detection)
    return_freed_memory()  # the localisers' and measures' intermediate frames
    return ChangeAnalysis(kind, base.window.to_dict() if base is not None else None, incident_onset(detection),
                          baseline)


def findings_with_change(detection: Detection, verdicts: tuple[str, ...]) -> pd.DataFrame:
    """The findings table rows whose verdict is one of ``verdicts`` (most severe first)."""
    frame = detection.findings
    return frame[frame["change"].isin(verdicts).to_numpy(dtype=bool)].reset_index(drop=True)
