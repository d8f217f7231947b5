"""Detectors: the runbook's checks as small registered functions over the evidence tables.

Each detector is one function ``fn(ctx) -> Iterable[Finding]`` registered with
``@detector("name")``. It reads canonical tables through a :class:`Context` (the
evidence, the thresholds, "now" = the end of the evidence window, and derived columns
computed once per run: each message's first DELIVERED time, DELIVERED count, error text
and its classification). Every detector vectorises (a million messages and four million
status events in seconds) and returns nothing on empty tables, so an absent source never
crashes a run; :func:`run_detectors` turns the findings into the canonical ``findings``
table.

Time is always relative to the evidence window's end, never to the wall clock: an
incident analysed a month later gives the same findings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from forensics import schema
from forensics.analysis.classify import classify_series
from forensics.catalog import PLATFORM_NAMES, load_catalog
from forensics.errors import ForensicsError, ParameterError
from forensics.evidence import Evidence
from forensics.profiles import Profile, load_profile
from forensics.scan import MessageStatus, lock_rows, message_status, repeated_status_events, status_rows

NS = 1_000_000_000
NAT = np.iinfo(np.int64).min
MAX_REF_VALUES = 50
"""Values listed per evidence reference; ``total`` says how many there were."""
ERROR_LEVELS = ("ERROR", "FATAL", "SEVERE", "WARN", "WARNING")


@dataclass(frozen=True)
class Thresholds:
    """Detector thresholds, defaults from the runbook's symptoms and recommended alerts."""

    stuck_pending_s: float = 30.0
    """A PENDING message older than this is stuck (Symptom 1)."""
    stuck_pending_alert_count: float = 100
    """Alert: more than this many messages stuck PENDING ..."""
    stuck_pending_alert_s: float = 120.0
    """... for longer than this (recommended alert 1)."""
    stuck_sent_s: float = 120.0
    """A SENT message without progress for this long is stuck (Symptom 2)."""
    failed_rate: float = 0.05
    """FAILED share of the messages created in a window (recommended alert 2)."""
    rate_window_s: float = 300.0
    """Window of the FAILED-rate and P95 checks."""
    min_window_messages: float = 20
    """Windows with fewer messages are not judged (a rate of 1 in 3 is noise)."""
    consumer_lag: float = 1000
    """Consumer lag that is a problem (runbook 1.2, recommended alert 3)."""
    consumer_lag_normal: float = 100
    """Consumer lag below this is normal (runbook 1.2)."""
    blip_s: float = 300.0
    """A disturbance that lasted at most this long and ended at least this long before the
    window's end, with no message FAILED or stuck, is a blip (ranking)."""
    partition_share: float = 0.8
    """Share of the peak lag (and of the stuck conversations) on one partition that confines a
    change to that partition."""
    connector_5xx_per_min: float = 10
    """5xx answers per minute per service (recommended alert 4)."""
    p95_latency_s: float = 5.0
    """P95 of created -> DELIVERED (recommended alert 5, SLA SC-002)."""
    out_of_order_tolerance_s: float = 1.0
    """Inversions up to this much are jitter of messages sent almost at once (reported as info)."""
    lock_ttl_s: float = 30.0
    """Conversation lock TTL (CONVERSATION_LOCK_TTL_SECONDS, R4.2)."""
    error_burst_per_min: float = 10
    """ERROR log lines per minute and service that can make a burst ..."""
    error_burst_factor: float = 5.0
    """... when also this many times the service's median per minute."""
    silence_s: float = 60.0
    """A service without logs or spans for this long ..."""
    silence_min_expected: float = 20
    """... while traffic it would have logged at least this many events for continued."""

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> Thresholds:
        """Defaults overridden by ``values``; an unknown name or a non-number is a ParameterError."""
        if values is None:
            return cls()
        if isinstance(values, Thresholds):
            return values
        if not isinstance(values, Mapping):
            raise ParameterError(f"thresholds: expected a dict of name -> number, got {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        out = {}
        for key, value in values.items():
            if key not in known:
                raise ParameterError(f"thresholds: unknown threshold {key!r}; known: {', '.join(sorted(known))}")
            if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value) or value < 0:
                raise ParameterError(f"thresholds[{key!r}]: expected a non-negative number, got {value!r}")
            out[key] = float(value)
        return cls(**out)

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


@dataclass
class Finding:
    """What one detector saw; ``messages`` are the affected rows of ``Context.messages``
    (positions) for blast radius, ``tags`` carry what ranking reads (cause, category, ...)."""

    detector: str
    key: str
    severity: str
    title: str
    detail: str = ""
    first_seen: pd.Timestamp | None = None
    last_seen: pd.Timestamp | None = None
    channel: str | None = None
    count: int | None = None
    metric: float | None = None
    threshold: float | None = None
    evidence: list[dict] = field(default_factory=list)
    messages: np.ndarray | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    times: np.ndarray | None = None
    """Times (int64 ns) of the events the finding counts, where they are not its messages'
    creation times (log lines, dead letters): the change point is found on them."""
    baseline_value: float | None = None
    """The same measure over the baseline (forensics.analysis.change); None without a baseline."""
    change: str | None = None
    """new, worse, unchanged or better against the baseline; None without a baseline."""
    change_ratio: float | None = None
    """Window rate / baseline rate (inf when the baseline had none)."""
    onset: pd.Timestamp | None = None
    """Change point of the signal: when its rate rose (None when it did not within the window)."""

    @property
    def finding_id(self) -> str:
        return f"{self.detector}:{self.key}" if self.key else self.detector

    def row(self) -> dict[str, Any]:
        return {"finding_id": self.finding_id, "detector": self.detector, "severity": self.severity,
                "title": self.title, "detail": self.detail, "first_seen": self.first_seen,
                "last_seen": self.last_seen, "channel": self.channel, "count": self.count,
                "metric": self.metric, "threshold": self.threshold,
                "evidence": json.dumps(self.evidence, default=str, ensure_ascii=False),
                "baseline_value": self.baseline_value, "change": self.change, "change_ratio": self.change_ratio,
                "onset": self.onset}


def ref(table: str, column: str, values: Iterable[Any] | pd.Series | np.ndarray, total: int | None = None
        ) -> dict[str, Any]:
    """An evidence reference: the first MAX_REF_VALUES distinct values of ``table.column``."""
    vals = pd.unique(pd.Series(list(values) if not isinstance(values, pd.Series | np.ndarray) else values)
                     .dropna().astype(str))
    return {"table": table, "column": column, "values": [str(v) for v in vals[:MAX_REF_VALUES]],
            "total": int(total if total is not None else len(vals))}


def _ts(ns: int | float | None) -> pd.Timestamp | None:
    if ns is None or ns == NAT or (isinstance(ns, float) and not np.isfinite(ns)):
        return None
    return pd.Timestamp(int(ns), tz="UTC")


def to_ns(series: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 ns, NaT as NAT."""
    if len(series) == 0:
        return np.empty(0, dtype=np.int64)
    return schema.to_utc(series).astype(schema.UTC_TS).array.asi8.copy()


def _value(v: Any) -> Any:
    """A scalar from a frame, with NA as None."""
    return None if v is None or (not isinstance(v, str) and pd.isna(v)) else v


def _fmt_s(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


class Context:
    """One detector run: the evidence, the thresholds, ``now`` and derived columns computed once."""

    def __init__(self, evidence: Evidence, thresholds: Thresholds | Mapping[str, Any] | None = None) -> None:
        self.evidence = evidence
        self.t = Thresholds.from_dict(thresholds)
        self.now: pd.Timestamp = evidence.window.end
        self.now_ns: int = int(self.now.value)
        self.start_ns: int = int(evidence.window.start.value)

    def table(self, name: str) -> pd.DataFrame:
        return self.evidence.table(name)

    @cached_property
    def profile(self) -> Profile:
        try:
            return load_profile(self.evidence.profile)
        except ForensicsError:
            return load_profile(None)

    @cached_property
    def service_channels(self) -> dict[str, str]:
        """Connector service name -> channel."""
        return {svc: ch for ch, svc in self.profile.services.connectors.items()}

    @cached_property
    def messages(self) -> pd.DataFrame:
        """The messages table; when it is absent but status events exist, one row per message
        derived from them (status = last new_status, created_at = first timestamp)."""
        m = self.table("messages")
        if len(m) or not self.evidence.has("status_events"):
            return m if _default_index(m) else m.reset_index(drop=True)
        ev = self.table("status_events")
        if not len(ev):
            return m.reset_index(drop=True)
        order = ev.sort_values("timestamp", kind="stable")
        g = order.groupby("message_id", sort=False)
        derived = pd.DataFrame({
            "message_id": g["message_id"].first(), "conversation_id": g["conversation_id"].first(),
            "channel": g["channel"].first(), "status": g["new_status"].last(), "created_at": g["timestamp"].first(),
            "updated_at": g["timestamp"].last(), "source": "derived", "source_object": "status_events",
        })
        return schema.conform("messages", derived.reset_index(drop=True))

    @cached_property
    def n_messages(self) -> int:
        return len(self.messages)

    @cached_property
    def created_ns(self) -> np.ndarray:
        return to_ns(self.messages["created_at"])

    @cached_property
    def updated_ns(self) -> np.ndarray:
        return to_ns(self.messages["updated_at"])

    @cached_property
    def status(self) -> np.ndarray:
        """Status per message as objects (None for null), sharing one object per distinct status."""
        codes, uniques = self.codes("status")
        return np.append(uniques, None).astype(object)[np.where(codes >= 0, codes, len(uniques))]

    @cached_property
    def _factorized(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {}

    def codes(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """``messages[column]`` factorised once per run: (codes with -1 for null, uniques as objects)."""
        if column not in self._factorized:
            codes, uniques = pd.factorize(self.messages[column], use_na_sentinel=True)
            self._factorized[column] = (codes, np.asarray(uniques, dtype=object))
        return self._factorized[column]

    def values(self, column: str, positions: np.ndarray) -> np.ndarray:
        """``messages[column]`` at ``positions`` as objects (None for null), without converting the column."""
        codes, uniques = self.codes(column)
        c = codes[positions]
        out = np.empty(len(c), dtype=object)
        ok = c >= 0
        out[ok] = uniques[c[ok]]
        return out

    def distinct(self, column: str, positions: np.ndarray) -> int:
        """Distinct non-null values of ``messages[column]`` at ``positions``."""
        c = self.codes(column)[0][positions]
        return int(len(np.unique(c[c >= 0])))

    @cached_property
    def channel(self) -> np.ndarray:
        """Channel per message as objects, ``UNKNOWN`` for null."""
        codes, uniques = self.codes("channel")
        names = np.append(uniques, "UNKNOWN").astype(object)
        return names[np.where(codes >= 0, codes, len(uniques))]

    @cached_property
    def _message_ids(self) -> pa.Array:
        return pa.array(self.messages["message_id"].array, type=pa.large_string())

    def positions(self, message_ids: pd.Series) -> np.ndarray:
        """Positions in ``messages`` of ``message_ids`` (-1 where unknown; a repeated id: its
        first position). Arrow's hash lookup, built per call: no index of every id kept."""
        if not len(message_ids) or not self.n_messages:
            return np.full(len(message_ids), -1, dtype=np.int64)
        wanted = pa.array(message_ids.astype(schema.STR).array, type=pa.large_string())
        pos = pc.index_in(wanted, value_set=self._message_ids)
        return pc.fill_null(pos, -1).to_numpy(zero_copy_only=False).astype(np.int64)

    @cached_property
    def history(self) -> MessageStatus:
        """Per message, what its status events say (first DELIVERED, DELIVERED count, last SENT,
        ...), computed by DuckDB wherever the status events are (:func:`forensics.scan.message_status`)."""
        return message_status(self.evidence, self.messages["message_id"])

    @cached_property
    def _delivered(self) -> tuple[np.ndarray, np.ndarray]:
        h = self.history
        first, count = h.first_delivered_at[:self.n_messages], h.delivered_count[:self.n_messages].copy()
        count[h.repeated] = 0
        return first, count

    @property
    def delivered_ns(self) -> np.ndarray:
        """First DELIVERED time per message (NAT: never delivered)."""
        return self._delivered[0]

    @property
    def delivered_count(self) -> np.ndarray:
        return self._delivered[1]

    @cached_property
    def failed(self) -> np.ndarray:
        return self.status == "FAILED"

    @cached_property
    def errors(self) -> pd.DataFrame:
        """For each FAILED message: its error text and classification (index = message position).

        The text is the most specific one found, in order: ``messages.error_message``, the
        FAILED transition's ``error_message``, the DLQ record's exception message, the
        ERROR/WARN log lines naming the message (the deployed code keeps reasons only in
        logs). "Most specific" = a catalog entry naming a cause beats a known entry beats
        an unknown text; ties go to the earlier source.
        """
        failed_pos = np.flatnonzero(self.failed)
        cols = ["position", "text", "origin"]
        if not len(failed_pos):
            out = pd.DataFrame({c: pd.Series(dtype=d) for c, d in (("position", "int64"), ("text", schema.STR),
                                                                     ("origin", schema.STR))})
            return pd.concat([out, classify_series(out["text"])], axis=1)
        m = self.messages
        parts = [pd.DataFrame({"position": failed_pos, "text": m["error_message"].iloc[failed_pos].to_numpy(),
                               "origin": "messages.error_message", "prio": 0})]
        is_failed = np.zeros(self.n_messages, dtype=bool)
        is_failed[failed_pos] = True

        def add(frame: pd.DataFrame, text_col: str, origin: str, prio: int) -> None:
            if not len(frame):
                return
            frame = frame[frame[text_col].notna()]
            pos = self.positions(frame["message_id"])
            keep = (pos >= 0) & is_failed[np.maximum(pos, 0)]
            if keep.any():
                parts.append(pd.DataFrame({"position": pos[keep], "text": frame[text_col].to_numpy()[keep],
                                           "origin": origin, "prio": prio}))

        add(status_rows(self.evidence, ("FAILED",), ("message_id", "error_message")), "error_message",
            "status_events.error_message", 1)
        add(self.table("dlq_records")[["message_id", "exception_message"]], "exception_message",
            "dlq_records.exception_message", 2)
        logs = self.table("log_events")
        if len(logs):
            mask = (logs["level"].isin(ERROR_LEVELS) & logs["message_id"].notna()).to_numpy(dtype=bool)
            add(logs.loc[mask, ["message_id", "message"]], "message", "log_events.message", 3)
        cand = pd.concat(parts, ignore_index=True)
        cand["text"] = cand["text"].astype(schema.STR)
        chan = self.values("channel", cand["position"].to_numpy())
        cls = classify_series(cand["text"], pd.Series(chan, dtype=schema.STR, index=cand.index))
        score = np.where(cls["cause"].notna(), 0, np.where(cls["entry_id"].notna(), 1, np.where(cand["text"].notna(),
                                                                                               2, 3)))
        cand = pd.concat([cand, cls], axis=1)
        cand["score"] = score
        cand = cand.sort_values(["position", "score", "prio"], kind="stable").drop_duplicates("position")
        cand = cand.drop(columns=["prio", "score"]).reset_index(drop=True)
        return cand[cols + list(cls.columns)]

    @cached_property
    def log_errors(self) -> pd.DataFrame:
        """ERROR/WARN log lines and lines with a stack trace, classified (same index as the log
        table); the stack trace's first line is classified with the message."""
        logs = self.table("log_events")
        if not len(logs):
            return logs.assign(**{c: pd.Series(dtype=d) for c, d in (("signature", schema.STR),)})
        keep = (logs["level"].isin(ERROR_LEVELS) | logs["stack_trace"].notna()).to_numpy(dtype=bool)
        sel = logs.loc[keep, ["timestamp", "service", "level", "message", "raw", "stack_trace", "message_id",
                              "source_ref"]]
        if not len(sel):
            return sel.assign(signature=pd.Series(dtype=schema.STR))
        text = sel["message"].fillna(sel["raw"])
        trace = sel["stack_trace"].notna()
        if trace.any():  # the exception's own line names it (MongoSocketReadTimeoutException, ...)
            first_line = sel.loc[trace, "stack_trace"].str.split("\n", n=1).str[0]
            text = text.where(~trace, text.fillna("") + " | " + first_line)
        chan = sel["service"].map(self.service_channels)
        cls = classify_series(text, chan.astype(schema.STR))
        return pd.concat([sel, cls.drop(columns=[c for c in cls.columns if c in sel.columns])], axis=1)


DetectorFn = Callable[[Context], Iterable[Finding]]
DETECTORS: dict[str, DetectorFn] = {}


def detector(name: str) -> Callable[[DetectorFn], DetectorFn]:
    """Register ``fn`` as detector ``name``."""

    def register(fn: DetectorFn) -> DetectorFn:
        if name in DETECTORS:
            raise ValueError(f"detector {name!r} registered twice")
        DETECTORS[name] = fn
        fn.detector_name = name  # type: ignore[attr-defined]
        return fn

    return register


@dataclass
class Detection:
    """The result of one run: findings as objects (with affected messages and tags) and as the table."""

    context: Context
    items: list[Finding]
    errors: dict[str, str] = field(default_factory=dict)
    """Detector name -> error, for a detector that raised (the others still ran)."""
    baseline: Detection | None = None
    """The same detectors over the baseline, when there is one (forensics.analysis.change)."""

    @cached_property
    def findings(self) -> pd.DataFrame:
        frame = schema.conform("findings", pd.DataFrame([f.row() for f in self.items],
                                                        columns=schema.table("findings").names))
        return schema.validate("findings", frame)


_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def detect(evidence: Evidence, thresholds: Thresholds | Mapping[str, Any] | None = None,
           only: Iterable[str] | None = None) -> Detection:
    """Run the registered detectors (or ``only`` these) over ``evidence``."""
    ctx = Context(evidence, thresholds)
    names = list(only) if only is not None else list(DETECTORS)
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        raise ParameterError(f"unknown detector(s) {', '.join(unknown)}; known: {', '.join(DETECTORS)}")
    items: list[Finding] = []
    for name in names:
        items.extend(DETECTORS[name](ctx))
    items.sort(key=lambda f: (_SEVERITY_ORDER.get(f.severity, 3),
                              f.first_seen.value if f.first_seen is not None else np.iinfo(np.int64).max,
                              f.finding_id))
    return Detection(ctx, items)


def run_detectors(evidence: Evidence, thresholds: Thresholds | Mapping[str, Any] | None = None) -> pd.DataFrame:
    """All registered detectors over ``evidence``: the canonical ``findings`` table."""
    return detect(evidence, thresholds).findings


# ---- helpers --------------------------------------------------------------------------------

def _default_index(frame: pd.DataFrame) -> bool:
    idx = frame.index
    return isinstance(idx, pd.RangeIndex) and idx.start == 0 and idx.step == 1


def _message_refs(ctx: Context, positions: np.ndarray) -> list[dict]:
    ids = ctx.messages["message_id"].iloc[positions[:MAX_REF_VALUES * 4]]
    return [ref("messages", "message_id", ids, total=len(positions))]


def _by_channel(ctx: Context, positions: np.ndarray) -> dict[str, np.ndarray]:
    """Positions split by channel (channel UNKNOWN for nulls), largest first."""
    if not len(positions):
        return {}
    ch = ctx.channel[positions]
    codes, uniques = pd.factorize(ch)
    groups = {str(u): positions[codes == i] for i, u in enumerate(uniques)}
    return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))


def _channel_or_none(channel: str) -> str | None:
    return None if channel in ("UNKNOWN", "ALL") else channel


def _windows(ns: np.ndarray, size_s: float) -> np.ndarray:
    size = int(size_s * NS) or NS
    return (ns // size) * size


def _runs(sorted_starts: np.ndarray, step_ns: int) -> list[tuple[int, int]]:
    """Consecutive runs of equally spaced window starts: [(first_start, last_start), ...]."""
    if not len(sorted_starts):
        return []
    breaks = np.flatnonzero(np.diff(sorted_starts) > step_ns)
    firsts = np.r_[0, breaks + 1]
    lasts = np.r_[breaks, len(sorted_starts) - 1]
    return [(int(sorted_starts[a]), int(sorted_starts[b])) for a, b in zip(firsts, lasts, strict=True)]


# ---- Symptom 1: stuck PENDING ---------------------------------------------------------------

@detector("stuck_pending")
def stuck_pending(ctx: Context) -> Iterable[Finding]:
    """Messages still PENDING more than ``stuck_pending_s`` after creation, per channel;
    critical when more than ``stuck_pending_alert_count`` have been for ``stuck_pending_alert_s``."""
    if not ctx.n_messages:
        return []
    t = ctx.t
    age_ns = ctx.now_ns - ctx.created_ns
    valid = ctx.created_ns != NAT
    stuck = np.flatnonzero((ctx.status == "PENDING") & valid & (age_ns > t.stuck_pending_s * NS))
    out = []
    for channel, pos in _by_channel(ctx, stuck).items():
        ages = age_ns[pos] / NS
        alert = int((ages > t.stuck_pending_alert_s).sum())
        critical = alert > t.stuck_pending_alert_count
        oldest = int(ctx.created_ns[pos].min())
        out.append(Finding(
            "stuck_pending", channel, "critical" if critical else "warning",
            f"{len(pos):,} {channel} messages stuck in PENDING for more than {t.stuck_pending_s:g} s",
            f"{len(pos):,} messages are still PENDING more than {t.stuck_pending_s:g} s after creation "
            f"(oldest {_fmt_s(ages.max())}); {alert:,} for more than {_fmt_s(t.stuck_pending_alert_s)} "
            f"(alert above {t.stuck_pending_alert_count:g}). Runbook Symptom 1: router not processing, "
            f"Kafka topic issues or MongoDB failures.",
            _ts(oldest + int(t.stuck_pending_s * NS)), ctx.now, _channel_or_none(channel), len(pos),
            float(alert), float(t.stuck_pending_alert_count), _message_refs(ctx, pos), pos,
            {"alert": critical, "share": len(pos) / ctx.n_messages}))
    return out


# ---- Symptom 2: stuck SENT ------------------------------------------------------------------

@detector("stuck_sent")
def stuck_sent(ctx: Context) -> Iterable[Finding]:
    """Messages SENT to the platform with no DELIVERED/READ/FAILED for ``stuck_sent_s``."""
    if not ctx.n_messages:
        return []
    sent = np.flatnonzero(ctx.status == "SENT")
    if not len(sent):
        return []
    since = ctx.updated_ns[sent]
    last = ctx.history.last_sent_at[sent]
    since = np.where(last != NAT, last, since)
    since = np.where(since == NAT, ctx.created_ns[sent], since)
    stuck = sent[(since != NAT) & (ctx.now_ns - since > ctx.t.stuck_sent_s * NS)]
    out = []
    for channel, pos in _by_channel(ctx, stuck).items():
        out.append(Finding(
            "stuck_sent", channel, "critical" if len(pos) > ctx.t.stuck_pending_alert_count else "warning",
            f"{len(pos):,} {channel} messages stuck in SENT for more than {_fmt_s(ctx.t.stuck_sent_s)}",
            f"{len(pos):,} messages reached SENT but got no DELIVERED/FAILED within {_fmt_s(ctx.t.stuck_sent_s)}. "
            "Runbook Symptom 2: no webhook callback from the platform (2.3), rate limiting or retries (2.4).",
            _ts(int(ctx.created_ns[pos].min()) + int(ctx.t.stuck_sent_s * NS)), ctx.now, _channel_or_none(channel),
            len(pos), float(len(pos)), float(ctx.t.stuck_pending_alert_count), _message_refs(ctx, pos), pos))
    return out


# ---- recommended alert 2: FAILED rate -------------------------------------------------------

@detector("failed_rate")
def failed_rate(ctx: Context) -> Iterable[Finding]:
    """Share of FAILED among the messages created in each ``rate_window_s`` window, over all
    channels and per channel; windows above ``failed_rate`` (with at least
    ``min_window_messages`` messages) are merged into one finding per channel."""
    if not ctx.n_messages:
        return []
    t = ctx.t
    valid = ctx.created_ns != NAT
    win = _windows(ctx.created_ns, t.rate_window_s)
    frame = pd.DataFrame({"window": win[valid], "channel": ctx.channel[valid],
                          "failed": ctx.failed[valid]})
    step = int(t.rate_window_s * NS)
    out = []
    overall = frame.groupby("window")["failed"].agg(["size", "sum"]).assign(channel="ALL")
    per = frame.groupby(["channel", "window"])["failed"].agg(["size", "sum"]).reset_index("channel")
    stats = pd.concat([overall, per])
    stats["rate"] = stats["sum"] / stats["size"]
    bad = stats[(stats["size"] >= t.min_window_messages) & (stats["rate"] > t.failed_rate)]
    for channel, rows in bad.groupby("channel", sort=False):
        starts = np.sort(rows.index.to_numpy())
        first, last = int(starts[0]), int(starts[-1]) + step
        in_windows = valid & (win >= first) & (win < last) & ctx.failed
        if channel != "ALL":
            in_windows &= (ctx.channel == channel)
        pos = np.flatnonzero(in_windows)
        worst = float(rows["rate"].max())
        runs = _runs(starts, step)
        out.append(Finding(
            "failed_rate", str(channel), "critical",
            f"FAILED rate up to {worst:.1%} on {'all channels' if channel == 'ALL' else channel} "
            f"(alert above {t.failed_rate:.0%} per {_fmt_s(t.rate_window_s)})",
            f"{len(rows)} window(s) of {_fmt_s(t.rate_window_s)} above {t.failed_rate:.0%} "
            f"({len(runs)} period(s)); {int(rows['sum'].sum()):,} FAILED of {int(rows['size'].sum()):,} messages "
            "in them. Runbook Symptom 3: group the errors (3.3).",
            _ts(first), _ts(last), _channel_or_none(str(channel)), len(pos), worst, t.failed_rate,
            _message_refs(ctx, pos), pos, {"windows": len(rows), "overall_rate": float(ctx.failed.mean())}))
    return out


# ---- recommended alert 3: consumer lag ------------------------------------------------------

@detector("consumer_lag")
def consumer_lag(ctx: Context) -> Iterable[Finding]:
    """Total lag per consumer group and topic over the samples: above ``consumer_lag`` is a
    problem (critical), between ``consumer_lag_normal`` and it elevated (warning). Says whether
    the lag was still growing or draining at the last sample, and how concentrated on
    partitions it was at its peak."""
    lag = ctx.table("consumer_lag")
    if not len(lag):
        return []
    t = ctx.t
    df = lag[["sampled_at", "group", "topic", "partition", "lag"]].copy()
    df["lag"] = df["lag"].fillna(0).astype("int64")
    total = df.groupby(["group", "topic", "sampled_at"], sort=True)["lag"].sum().reset_index()
    out = []
    for (group, topic), s in total.groupby(["group", "topic"], sort=False):
        s = s.sort_values("sampled_at")
        peak = int(s["lag"].max())
        if peak <= t.consumer_lag_normal:
            continue
        values = s["lag"].to_numpy()
        times = s["sampled_at"]
        above = values > t.consumer_lag
        critical = bool(above.any())
        limit = t.consumer_lag if critical else t.consumer_lag_normal
        crossing = times.iloc[int(np.argmax(values > limit))]
        last_above = times[values > limit].iloc[-1]
        final = int(values[-1])
        trend = ("growing" if final >= 0.8 * peak and final > values[0] else
                 "draining" if final < 0.5 * peak else "steady")
        at_peak = df[(df["group"] == group) & (df["topic"] == topic) &
                     (df["sampled_at"] == times.iloc[int(np.argmax(values))])]
        shares = np.sort(at_peak["lag"].to_numpy())[::-1] / max(peak, 1)
        n_parts = len(at_peak)
        top_share = float(shares[: max(1, n_parts // 5)].sum()) if n_parts else 0.0
        skewed = n_parts >= 3 and top_share > 0.8 and top_share > 2.0 * (max(1, n_parts // 5) / n_parts)
        hot = at_peak.sort_values("lag", ascending=False)["partition"].head(max(1, n_parts // 5)).tolist()
        out.append(Finding(
            "consumer_lag", f"{group}/{topic}", "critical" if critical else "warning",
            f"Consumer lag of {group} on {topic} peaked at {peak:,} ({trend})",
            f"Lag {'above' if critical else 'elevated above'} {limit:,.0f} from {crossing:%H:%M:%S} UTC, peak {peak:,}, "
            f"{final:,} at the last sample ({trend}); runbook: < {t.consumer_lag_normal:,.0f} normal, "
            f"> {t.consumer_lag:,.0f} a problem."
            + (f" {top_share:.0%} of the peak lag sits on partition(s) {', '.join(map(str, hot))}." if skewed else ""),
            crossing, last_above, None, int(above.sum()) if critical else int((values > limit).sum()), float(peak),
            float(limit), [ref("consumer_lag", "sampled_at", times[values > limit].astype(str)),
                           {"table": "consumer_lag", "column": "group/topic", "values": [f"{group}/{topic}"],
                            "total": 1}],
            None, {"group": group, "topic": topic, "trend": trend, "skewed": skewed, "hot_partitions": hot,
                   "final": final, "router": group == ctx.profile.kafka.router_group}))
    return out


# ---- localisation: a change confined to one partition (4.2) ---------------------------------

@detector("partition_confined")
def partition_confined(ctx: Context) -> Iterable[Finding]:
    """The router's lag on the message events topic held on one partition, and the stuck
    PENDING messages whose conversations hash there (Kafka's murmur2 partitioner on the
    conversation id, the topic's partition count from the lag samples or the profile).

    At the sample of peak total lag, a partition holding at least ``partition_share`` of it,
    and a backlog of at least ``min_window_messages`` records, confines the lag to that
    partition (the total may stay under the lag alert: one partition of ten); when the
    conversations of the stuck messages (at least ``min_window_messages`` / 4 of them) also
    hash to it in that share, the stall is the partition's (a poison record, a stuck
    consumer thread), not the router's as a whole: critical. A router that is down leaves
    every partition's lag growing and stuck conversations on all of them."""
    from forensics.sources.partitioner import partitions_for

    lag = ctx.table("consumer_lag")
    topic = ctx.profile.kafka.message_events
    group = ctx.profile.kafka.router_group
    if not len(lag):
        return []
    mine = lag[(lag["group"] == group) & (lag["topic"] == topic.name)]
    if not len(mine):
        return []
    total = mine.groupby("sampled_at")["lag"].sum()
    peak_at = total.idxmax()
    peak = float(total.max())
    at_peak = mine[mine["sampled_at"] == peak_at].groupby("partition")["lag"].sum()
    if len(at_peak) < 2 or float(at_peak.max()) < ctx.t.min_window_messages:
        return []
    hot = int(at_peak.idxmax())
    share = float(at_peak.max()) / peak
    if share < ctx.t.partition_share:
        return []
    n_parts = max(int(mine["partition"].max()) + 1, int(topic.partitions or 0))
    age_ns = ctx.now_ns - ctx.created_ns
    stuck = np.flatnonzero((ctx.status == "PENDING") & (ctx.created_ns != NAT) & (age_ns > ctx.t.stuck_pending_s * NS)
                           & (ctx.codes("conversation_id")[0] >= 0))
    convs = pd.unique(ctx.values("conversation_id", stuck)) if len(stuck) else np.empty(0, dtype=object)
    on_hot = partitions_for([str(c) for c in convs], n_parts) == hot if len(convs) else np.zeros(0, dtype=bool)
    stuck_share = float(on_hot.mean()) if len(convs) else 0.0
    enough = len(convs) >= ctx.t.min_window_messages / 4
    confined = enough and stuck_share >= ctx.t.partition_share
    hot_convs = set(convs[on_hot]) if len(convs) else set()
    affected = stuck[np.isin(ctx.values("conversation_id", stuck), list(hot_convs))] if confined else stuck[:0]
    others = at_peak.drop(hot)
    return [Finding(
        "partition_confined", f"{group}/{topic.name}:{hot}", "critical" if confined else "warning",
        f"Lag of {group} confined to partition {hot} of {topic.name}"
        + (f"; the {len(hot_convs):,} conversations stuck PENDING hash to it" if confined else ""),
        f"At the peak ({peak_at:%H:%M:%S} UTC) partition {hot} held {at_peak.max():,.0f} of {peak:,.0f} lag "
        f"({share:.0%}); the other {len(others)} partitions at most {others.max():,.0f}. "
        + (f"{stuck_share:.0%} of the {len(convs):,} conversations with messages stuck PENDING hash to partition "
           f"{hot} (murmur2 of the conversation id over {n_parts} partitions): the partition is stalled (a poison "
           "record the router cannot deserialize, a stuck consumer), not the router as a whole (runbook 4.2)."
           if confined else f"{stuck_share:.0%} of {len(convs):,} stuck conversations hash to it."),
        pd.Timestamp(peak_at), pd.Timestamp(peak_at), None, len(affected), share, ctx.t.partition_share,
        [ref("consumer_lag", "partition", [str(hot)]), _message_refs(ctx, affected)[0]] if confined
        else [ref("consumer_lag", "partition", [str(hot)])],
        affected, {"partition": hot, "group": group, "topic": topic.name, "lag_share": share,
                   "stuck_share": stuck_share, "conversations": len(hot_convs), "confined": confined})]


# ---- recommended alert 4: connector 5xx -----------------------------------------------------

@detector("connector_5xx")
def connector_5xx(ctx: Context) -> Iterable[Finding]:
    """5xx answers per minute and service from spans (http_status_code) and logs
    (http_status); per minute the larger of the two counts (the same call may show in both).
    Minutes above ``connector_5xx_per_min`` are merged into one finding per service."""
    frames = []
    spans = ctx.table("spans")
    if len(spans):
        s = spans[spans["http_status_code"].fillna(0) >= 500]
        frames.append(pd.DataFrame({"service": s["service"].fillna("unknown").to_numpy(),
                                    "minute": _windows(to_ns(s["start"]), 60), "src": "spans"}))
    logs = ctx.table("log_events")
    if len(logs):
        lg = logs[logs["http_status"].fillna(0) >= 500]
        frames.append(pd.DataFrame({"service": lg["service"].fillna("unknown").to_numpy(),
                                    "minute": _windows(to_ns(lg["timestamp"]), 60), "src": "logs"}))
    frames = [f for f in frames if len(f)]
    if not frames:
        return []
    both = pd.concat(frames, ignore_index=True)
    both = both[both["minute"] >= 0]
    per = both.groupby(["service", "minute", "src"]).size().groupby(["service", "minute"]).max()
    out = []
    limit = ctx.t.connector_5xx_per_min
    for service, counts in per.groupby(level="service"):
        counts = counts.droplevel("service")
        bad = counts[counts > limit]
        if bad.empty:
            continue
        starts = np.sort(bad.index.to_numpy())
        channel = ctx.service_channels.get(str(service))
        out.append(Finding(
            "connector_5xx", str(service), "critical" if channel else "warning",
            f"{service}: up to {int(bad.max()):,} 5xx answers per minute (alert above {limit:g})",
            f"{len(bad)} minute(s) above {limit:g} 5xx/min, {int(bad.sum()):,} 5xx in them, "
            f"{int(counts.sum()):,} 5xx in the window. Platform-side errors: check the platform's status (2.2) "
            "and retry once it recovers (R3.3).",
            _ts(starts[0]), _ts(starts[-1] + 60 * NS), channel, int(bad.sum()), float(bad.max()), limit,
            [{"table": "spans", "column": "http_status_code", "values": [">=500"], "total": int(bad.sum())},
             {"table": "log_events", "column": "service", "values": [str(service)], "total": 1}],
            None, {"service": str(service), "connector": channel is not None}))
    return out


# ---- recommended alert 5: delivery P95 ------------------------------------------------------

@detector("delivery_p95")
def delivery_p95(ctx: Context) -> Iterable[Finding]:
    """P95 of delivery latency (first DELIVERED status event - messages.created_at) per
    ``rate_window_s`` window, over all channels and per channel; windows above
    ``p95_latency_s`` are merged into one finding per channel."""
    if not ctx.n_messages:
        return []
    t = ctx.t
    ok = (ctx.delivered_ns != NAT) & (ctx.created_ns != NAT)
    if not ok.any():
        return []
    pos_all = np.flatnonzero(ok)
    lat = (ctx.delivered_ns[ok] - ctx.created_ns[ok]) / NS
    win = _windows(ctx.created_ns[ok], t.rate_window_s)
    frame = pd.DataFrame({"window": win, "channel": ctx.channel[ok], "lat": lat})
    overall = frame.groupby("window")["lat"].agg(n="size", p95=lambda x: x.quantile(0.95)).assign(channel="ALL")
    per = (frame.groupby(["channel", "window"])["lat"].quantile(0.95).rename("p95").to_frame()
           .join(frame.groupby(["channel", "window"]).size().rename("n")).reset_index("channel"))
    stats = pd.concat([overall, per])
    bad = stats[(stats["n"] >= t.min_window_messages) & (stats["p95"] > t.p95_latency_s)]
    step = int(t.rate_window_s * NS)
    out = []
    for channel, rows in bad.groupby("channel", sort=False):
        starts = np.sort(rows.index.to_numpy())
        first, last = int(starts[0]), int(starts[-1]) + step
        sel = (win >= first) & (win < last) & (lat > t.p95_latency_s)
        if channel != "ALL":
            sel &= frame["channel"].to_numpy() == channel
        pos = pos_all[sel]
        worst = float(rows["p95"].max())
        out.append(Finding(
            "delivery_p95", str(channel), "critical" if worst > 2 * t.p95_latency_s else "warning",
            f"Delivery P95 up to {_fmt_s(worst)} on {'all channels' if channel == 'ALL' else channel} "
            f"(SLA {t.p95_latency_s:g} s)",
            f"{len(rows)} window(s) of {_fmt_s(t.rate_window_s)} with P95(created -> DELIVERED) above "
            f"{t.p95_latency_s:g} s; {len(pos):,} messages took longer. SLA SC-002: 95 % delivered within 5 s.",
            _ts(first), _ts(last), _channel_or_none(str(channel)), len(pos), worst, t.p95_latency_s,
            _message_refs(ctx, pos), pos))
    return out


# ---- Symptom 4: out-of-order delivery -------------------------------------------------------

@detector("out_of_order")
def out_of_order(ctx: Context) -> Iterable[Finding]:
    """Messages delivered before an earlier-created message of the same conversation
    (SC-004: zero out-of-order within a conversation).

    Method: sort each conversation's delivered messages by creation; a message is late when
    its first DELIVERED precedes the latest delivery among the messages created before it
    (a running max per conversation). The message holding that max is the *holder*. Each
    inversion is one of three kinds, one finding per channel and kind:

    - ``reordered``: the holder was not retried and arrived more than
      ``out_of_order_tolerance_s`` late (what a rebalance or concurrent consumers do);
    - ``after_retry``: the holder had retries (retry_count > 0): its own failures delayed it;
    - ``jitter``: within the tolerance, messages sent almost at once (info).
    """
    if not ctx.n_messages:
        return []
    conv_codes = ctx.codes("conversation_id")[0]
    ok = (ctx.delivered_ns != NAT) & (ctx.created_ns != NAT) & (conv_codes >= 0)
    pos = np.flatnonzero(ok)
    if len(pos) < 2:
        return []
    conv = conv_codes[pos]
    order = np.lexsort((ctx.created_ns[pos], conv))
    conv, pos = conv[order], pos[order]
    delivered = ctx.delivered_ns[pos]
    n = len(pos)
    starts = np.r_[True, conv[1:] != conv[:-1]]
    block = np.cumsum(starts) - 1
    running = pd.Series(delivered).groupby(block).cummax().to_numpy()
    setter = pd.Series(np.where(delivered == running, np.arange(n), -1)).groupby(block).cummax().to_numpy()
    prev_max = np.r_[NAT, running[:-1]]
    prev_holder = np.r_[-1, setter[:-1]]
    late = (~starts) & (prev_max > delivered)
    if not late.any():
        return []
    idx = np.flatnonzero(late)
    late_pos, holder_pos = pos[idx], pos[prev_holder[idx]]
    inversion_s = (prev_max[idx] - delivered[idx]) / NS
    retries = ctx.messages["retry_count"].to_numpy(dtype=float, na_value=0.0)
    retried = retries[holder_pos] > 0
    kinds = {"reordered": ~retried & (inversion_s > ctx.t.out_of_order_tolerance_s),
             "after_retry": retried,
             "jitter": ~retried & (inversion_s <= ctx.t.out_of_order_tolerance_s)}
    texts = {"reordered": "Runbook Symptom 4: partition rebalancing or concurrent connector processing (4.2, 4.3).",
             "after_retry": "The earlier message was retried after platform errors and overtaken by the next one.",
             "jitter": f"Inversions within {ctx.t.out_of_order_tolerance_s:g} s: messages sent almost at once."}
    out = []
    for kind, mask in kinds.items():
        for channel, p in _by_channel(ctx, late_pos[mask]).items():
            convs = ctx.values("conversation_id", p)
            n_conv = len(pd.unique(convs))
            worst = float(inversion_s[mask].max())
            severity = ("critical" if n_conv >= 10 else "warning") if kind == "reordered" else "info"
            out.append(Finding(
                "out_of_order", f"{channel}:{kind}", severity,
                f"{len(p):,} {channel} messages delivered out of order in {n_conv:,} conversations"
                + {"reordered": "", "after_retry": " after retries", "jitter": " (within jitter)"}[kind],
                f"{len(p):,} messages were delivered before a message created earlier in the same conversation, up "
                f"to {_fmt_s(worst)} ahead (SC-004 allows none). {texts[kind]}",
                _ts(int(ctx.delivered_ns[p].min())), _ts(int(ctx.delivered_ns[p].max())), _channel_or_none(channel),
                len(p), float(n_conv), ctx.t.out_of_order_tolerance_s if kind != "after_retry" else 0.0,
                _message_refs(ctx, p) + [ref("messages", "conversation_id", convs, total=n_conv)], p,
                {"conversations": n_conv, "kind": kind, "max_inversion_s": worst}))
    return out


# ---- duplicates (SC-007) --------------------------------------------------------------------

@detector("duplicate_deliveries")
def duplicate_deliveries(ctx: Context) -> Iterable[Finding]:
    """More than one DELIVERED per message; DLQ records repeated (same topic/partition/offset,
    or the same message dead-lettered twice); status events repeated exactly."""
    out = []
    dup = np.flatnonzero(ctx.delivered_count > 1)
    if len(dup):
        extra = int((ctx.delivered_count[dup] - 1).sum())
        convs = ctx.values("conversation_id", dup)
        out.append(Finding(
            "duplicate_deliveries", "status_events", "critical" if len(dup) >= 10 else "warning",
            f"{len(dup):,} messages delivered more than once",
            f"{len(dup):,} messages have more than one DELIVERED status event ({extra:,} extra). SC-007: no "
            "duplicates. Concurrent processing or redelivery after a rebalance (4.2, 4.3).",
            _ts(int(ctx.delivered_ns[dup].min())), None, None, len(dup), float(extra), 0.0,
            _message_refs(ctx, dup) + [ref("messages", "conversation_id", convs, total=len(pd.unique(convs)))],
            dup, {"conversations": len(pd.unique(convs))}))
    rep = repeated_status_events(ctx.evidence)
    if len(rep):
        ids = rep["message_id"]
        pos = ctx.positions(ids)
        times = pd.to_datetime(rep["at"], utc=True)
        total = int(rep["repeats"].sum())
        out.append(Finding(
            "duplicate_deliveries", "status_events_repeated", "warning",
            f"{total:,} status events recorded twice",
            "Identical (message_id, new_status, timestamp) rows in the status history: a transition "
            "written twice (double processing) or a collection artefact.",
            times.min(), times.max(), None, total, float(total), 0.0, [ref("status_events", "message_id", ids)],
            np.unique(pos[pos >= 0])))
    dlq = ctx.table("dlq_records")
    if len(dlq):
        same_offset = dlq.duplicated(["topic", "partition", "offset"], keep="first")
        with_id = dlq[dlq["message_id"].notna()]
        same_msg = with_id.duplicated("message_id", keep="first")
        if same_offset.any() or same_msg.any():
            ids = with_id.loc[same_msg, "message_id"]
            pos = ctx.positions(ids)
            n = int(same_offset.sum()) + int(same_msg.sum())
            out.append(Finding(
                "duplicate_deliveries", "dlq", "warning",
                f"{n:,} duplicated dead letters",
                f"{int(same_offset.sum()):,} DLQ records repeat a topic/partition/offset and {int(same_msg.sum()):,} "
                "dead-letter a message already dead-lettered: the same failure was processed more than once.",
                dlq["timestamp"].min(), dlq["timestamp"].max(), None, n, float(n), 0.0,
                [ref("dlq_records", "message_id", ids)], np.unique(pos[pos >= 0])))
    return out


# ---- Kafka topics (1.2 / R1.2) --------------------------------------------------------------

def _inventory_missing(ctx: Context) -> tuple[list[str], str]:
    """Missing topics from the topic inventory, and where that came from: the ``topics`` table
    (latest sample per topic), else a source's description, else the simulator's scenario."""
    ev = ctx.evidence
    topics = ctx.table("topics")
    if len(topics):
        latest = topics.sort_values("sampled_at").drop_duplicates("topic", keep="last")
        return latest.loc[~latest["present"].astype(bool), "topic"].astype(str).tolist(), "topics inventory"
    for name, desc in (ev.sources or {}).items():
        if not isinstance(desc, dict):
            continue
        if desc.get("missing_topics"):
            return [str(t) for t in desc["missing_topics"]], f"{name} topic inventory"
        rows = desc.get("topics")
        if isinstance(rows, list):
            missing = [str(r.get("topic")) for r in rows if isinstance(r, dict) and r.get("present") is False]
            if missing:
                return missing, f"{name} topic inventory"
    if ev.scenario and ev.scenario.get("missing_topics"):
        return [str(t) for t in ev.scenario["missing_topics"]], "simulator scenario inventory"
    return [], ""


@detector("missing_topics")
def missing_topics(ctx: Context) -> Iterable[Finding]:
    """Expected topics (from the profile) that the topic inventory lacks, and producer /
    consumer errors in the logs that say a topic does not exist (UNKNOWN_TOPIC_OR_PARTITION)."""
    expected = [t.name for t in ctx.profile.kafka.expected_topics()]
    missing, origin = _inventory_missing(ctx)
    logs = ctx.log_errors
    topic_logs = logs[logs["signature"] == "kafka.unknown_topic_or_partition"] if len(logs) else logs
    named: dict[str, pd.DataFrame] = {}
    if len(topic_logs):
        text = topic_logs["message"].fillna(topic_logs["raw"]).fillna("")
        for name in sorted(expected, key=len, reverse=True):
            hit = text.str.contains(name, regex=False)
            hit &= ~text.index.isin([i for f in named.values() for i in f.index])
            if hit.any():
                named[name] = topic_logs[hit]
    out = []
    stuck = ctx.status == "PENDING"
    for name in dict.fromkeys(missing + list(named)):
        lines = named.get(name)
        topic = next((t for t in ctx.profile.kafka.expected_topics() if t.name == name), None)
        channel = topic.channel if topic else None
        affected = np.flatnonzero(stuck & ((ctx.channel == channel) if channel else True))
        first = lines["timestamp"].min() if lines is not None and len(lines) else None
        evidence = []
        if origin and name in missing:
            evidence.append({"table": "inventory", "column": "topic", "values": [name], "total": 1,
                             "origin": origin})
        if lines is not None and len(lines):
            evidence.append(ref("log_events", "source_ref", lines["source_ref"], total=len(lines)))
        out.append(Finding(
            "missing_topics", name, "critical",
            f"Kafka topic {name} is missing",
            (f"{origin}: {name} is not on the cluster" if name in missing else f"{name}: not in the inventory")
            + (f"; {len(lines):,} log lines report UNKNOWN_TOPIC_OR_PARTITION / topic not present for it"
               if lines is not None and len(lines) else "")
            + ". Runbook R1.2: create it from infrastructure/kafka/topics.json.",
            first if first is not None else ctx.evidence.window.start, ctx.now, channel,
            len(lines) if lines is not None else 0, None, None, evidence, affected,
            {"topic": name, "inventory": name in missing}))
    unnamed = topic_logs[~topic_logs.index.isin([i for f in named.values() for i in f.index])] if len(topic_logs) \
        else topic_logs
    if len(unnamed):
        out.append(Finding(
            "missing_topics", "logs", "critical",
            f"{len(unnamed):,} log lines report a missing Kafka topic",
            "Producer/consumer errors UNKNOWN_TOPIC_OR_PARTITION (topic not present in metadata) for a topic the "
            "profile does not name. Runbook R1.2.",
            unnamed["timestamp"].min(), unnamed["timestamp"].max(), None, len(unnamed), None, None,
            [ref("log_events", "source_ref", unnamed["source_ref"], total=len(unnamed))],
            np.flatnonzero(stuck), {"topic": None, "inventory": False}))
    topics = ctx.table("topics")
    if len(topics):
        latest = topics.sort_values("sampled_at").drop_duplicates("topic", keep="last")
        odd = latest[latest["present"].astype(bool) & (latest["partitions_match"] == False)]  # noqa: E712
        for _, r in odd.iterrows():
            out.append(Finding(
                "missing_topics", f"{r['topic']}:partitions", "warning",
                f"Kafka topic {r['topic']} has {r['partitions']} partitions, the profile expects "
                f"{r['expected_partitions']}",
                "A topic created by hand or by auto-creation with the broker default: per-conversation ordering "
                "and the consumers' assignment differ from the design (runbook 1.2, R1.2).",
                r["sampled_at"], r["sampled_at"], r["channel"] if pd.notna(r["channel"]) else None, 1,
                float(r["partitions"]) if pd.notna(r["partitions"]) else None,
                float(r["expected_partitions"]) if pd.notna(r["expected_partitions"]) else None,
                [ref("topics", "topic", [r["topic"]])], None, {"topic": r["topic"], "partitions_mismatch": True}))
    return out


# ---- Redis locks and processed keys (R4.2, R2.4) --------------------------------------------

@detector("stuck_locks")
def stuck_locks(ctx: Context) -> Iterable[Finding]:
    """Conversation locks without a TTL, or with a TTL longer than ``lock_ttl_s`` (they outlive
    any holder): the conversation's next messages wait on them (R4.2)."""
    lk = lock_rows(ctx.evidence, "conversation_lock")
    ttl = lk["ttl_s"]
    bad = lk[ttl.isna() | (ttl < 0) | (ttl > ctx.t.lock_ttl_s)]
    if not len(bad):
        return []
    convs = bad["conversation_id"].dropna()
    waiting = np.flatnonzero(ctx.messages["conversation_id"].isin(convs).to_numpy()
                             & np.isin(ctx.status, ("PENDING", "SENT")))
    no_ttl = int((bad["ttl_s"].isna() | (bad["ttl_s"] < 0)).sum())
    return [Finding(
        "stuck_locks", "", "critical" if len(waiting) else "warning",
        f"{len(bad):,} conversation locks stuck in Redis",
        f"{no_ttl:,} conversation locks have no expiry and {len(bad) - no_ttl:,} a TTL above "
        f"{ctx.t.lock_ttl_s:g} s; {len(waiting):,} PENDING/SENT messages belong to those conversations. "
        "R4.2: delete the stuck locks and set CONVERSATION_LOCK_TTL_SECONDS.",
        bad["sampled_at"].min(), bad["sampled_at"].max(), None, len(bad), float(len(bad)), ctx.t.lock_ttl_s,
        [ref("locks", "key", bad["key"], total=len(bad))] + (_message_refs(ctx, waiting) if len(waiting) else []),
        waiting, {"conversations": len(pd.unique(convs))})]


@detector("replay_blockers")
def replay_blockers(ctx: Context) -> Iterable[Finding]:
    """``processed`` keys of FAILED messages: a manual replay (R2.4, R3.3) of those messages
    is silently dropped by the router while the key lives (7 days)."""
    if not ctx.evidence.has("locks") or not ctx.n_messages:
        return []
    failed = np.flatnonzero(ctx.failed)
    if not len(failed):
        return []
    keys = lock_rows(ctx.evidence, "processed", ctx.messages["message_id"].iloc[failed])
    if not len(keys):
        return []
    pos = ctx.positions(keys["message_id"])
    p = np.unique(pos[pos >= 0])
    return [Finding(
        "replay_blockers", "", "warning" if len(p) >= 10 else "info",
        f"{len(p):,} FAILED messages have a router processed key: a replay would be dropped",
        f"{len(p):,} FAILED messages still have their processed key in Redis (TTL up to 7 days): republishing "
        "them (R2.4 / R3.3) is silently ignored by the router until the keys are deleted.",
        keys["sampled_at"].min(), None, None, len(p), float(len(p)), 0.0,
        [ref("locks", "key", keys["key"].head(MAX_REF_VALUES), total=len(keys))]
        + _message_refs(ctx, p), p)]


# ---- error groups (3.3) ---------------------------------------------------------------------

def _group_severity(count: int, total: int) -> str:
    share = count / max(total, 1)
    if share >= 0.02 and count >= 10:
        return "critical"
    if share >= 0.002 or count >= 10:
        return "warning"
    return "info"


@detector("error_groups")
def error_groups(ctx: Context) -> Iterable[Finding]:
    """FAILED messages grouped by classified error (runbook 3.3), one finding per group;
    unknown errors form groups by their normalised signature."""
    errs = ctx.errors
    if not len(errs):
        return []
    out = []
    g = errs.groupby("signature", dropna=False, sort=False)
    for sig, rows in sorted(g, key=lambda kv: -len(kv[1])):
        pos = rows["position"].to_numpy()
        first = rows.iloc[0]
        by_ch = pd.Series(ctx.channel[pos]).value_counts()
        channel = str(by_ch.index[0]) if by_ch.iloc[0] >= 0.9 * len(pos) else None
        updated = ctx.updated_ns[pos]
        created = ctx.created_ns[pos]
        sig_s = "no error recorded" if pd.isna(sig) else str(sig)
        title = first["title"] if pd.notna(first["title"]) else "no error message recorded"
        platform = PLATFORM_NAMES.get(first["platform"], first["platform"]) if pd.notna(first["platform"]) else ""
        code = f" {first['code']}" if pd.notna(first["code"]) else ""
        conflict = first["conflict"] if pd.notna(first["conflict"]) else None
        out.append(Finding(
            "error_groups", sig_s, _group_severity(len(pos), ctx.n_messages),
            f"{len(pos):,} FAILED: {platform}{code} {title}".replace("  ", " "),
            f"category {first['category'] if pd.notna(first['category']) else 'none'}; "
            f"channels {', '.join(f'{k} {v:,}' for k, v in by_ch.items())}; text from "
            f"{', '.join(sorted(rows['origin'].dropna().unique()))}."
            + (f" Note: {conflict}." if conflict else ""),
            _ts(int(created[created != NAT].min())) if (created != NAT).any() else None,
            _ts(int(updated.max())) if (updated != NAT).any() else None,
            channel, len(pos), len(pos) / max(ctx.n_messages, 1), None,
            _message_refs(ctx, pos) + [{"table": "catalog", "column": "id",
                                        "values": [str(first["entry_id"])] if pd.notna(first["entry_id"]) else [],
                                        "total": 1, "signature": sig_s}],
            pos, {"signature": sig_s, "category": first["category"] if pd.notna(first["category"]) else "unknown",
                  "cause": first["cause"] if pd.notna(first["cause"]) else None,
                  "runbook_cause": first["runbook_cause"] if pd.notna(first["runbook_cause"]) else None,
                  "share_of_failed": len(pos) / max(int(ctx.failed.sum()), 1),
                  "share": len(pos) / max(ctx.n_messages, 1)}))
    return out


@detector("log_errors")
def log_errors(ctx: Context) -> Iterable[Finding]:
    """ERROR/WARN log lines (and lines with a stack trace), DLQ exception messages and error
    spans grouped by source, service and classified error: the infrastructure errors that
    never reach a message document (MongoDB timeouts, missing topics, connection refused)
    show here. ``tags["messages"]`` counts the distinct messages the lines name, where most
    lines name one (a retried message logs several lines)."""
    parts = []

    def part(source, service, cls, ts, refs, message_ids):
        parts.append(pd.DataFrame({
            "source": source, "service": service, "signature": cls["signature"].to_numpy(), "ts": ts, "ref": refs,
            "title": cls["title"].to_numpy(), "category": cls["category"].to_numpy(), "cause": cls["cause"].to_numpy(),
            "message_id": message_ids}))

    logs = ctx.log_errors
    if len(logs):
        part("log_events", logs["service"].fillna("unknown").to_numpy(), logs, to_ns(logs["timestamp"]),
             logs["source_ref"].to_numpy(), logs["message_id"].to_numpy())
    dlq = ctx.table("dlq_records")
    if len(dlq):
        cls = classify_series(dlq["exception_message"].fillna(dlq["decode_error"]), dlq["channel"])
        part("dlq_records", dlq["topic"].to_numpy(), cls, to_ns(dlq["timestamp"]),
             (dlq["topic"].astype(str) + ":" + dlq["partition"].astype(str) + ":" + dlq["offset"].astype(str)).to_numpy(),
             dlq["message_id"].to_numpy())
    spans = ctx.table("spans")
    if len(spans):
        s = spans[spans["error"].fillna(False).astype(bool) & spans["status_message"].notna()]
        if len(s):
            cls = classify_series(s["status_message"], s["service"].map(ctx.service_channels).astype(schema.STR))
            part("spans", s["service"].fillna("unknown").to_numpy(), cls, to_ns(s["start"]),
                 (s["trace_id"] + ":" + s["span_id"]).to_numpy(), s["message_id"].to_numpy())
    parts = [p for p in parts if len(p)]
    if not parts:
        return []
    df = pd.concat(parts, ignore_index=True)
    df = df[df["signature"].notna()]
    volume = max(ctx.n_messages, 1)
    out = []
    for (source, service, sig), rows in df.groupby(["source", "service", "signature"], sort=False):
        n = len(rows)
        first = rows.iloc[0]
        ts = rows["ts"][rows["ts"] != NAT]
        ids = rows["message_id"].dropna().unique()
        messages = len(ids) if len(ids) and rows["message_id"].notna().mean() >= 0.5 else None
        pos = ctx.positions(pd.Series(ids, dtype=schema.STR)) if len(ids) else np.empty(0, dtype=np.int64)
        out.append(Finding(
            "log_errors", f"{source}:{service}:{sig}", _group_severity(messages or n, volume),
            f"{n:,} {source.replace('_', ' ')} errors in {service}: {first['title']}",
            f"category {first['category']}; signature {sig}"
            + (f"; {messages:,} distinct messages named." if messages is not None else "."),
            _ts(ts.min()) if len(ts) else None, _ts(ts.max()) if len(ts) else None,
            ctx.service_channels.get(str(service)), n, (messages or n) / volume, None,
            [ref(source, "source_ref", rows["ref"], total=n),
             {"table": "catalog", "column": "id", "values": [str(sig)], "total": 1}],
            pos[pos >= 0], {"signature": sig, "category": _value(first["category"]), "cause": _value(first["cause"]),
                   "source": source, "service": service, "messages": messages, "share": (messages or n) / volume},
            ts.to_numpy()))
    return out


# ---- error-log bursts -----------------------------------------------------------------------

@detector("error_log_burst")
def error_log_burst(ctx: Context) -> Iterable[Finding]:
    """Minutes in which a service logged more than ``error_burst_per_min`` ERROR lines and
    ``error_burst_factor`` times its median ERROR lines per minute over the window;
    consecutive minutes form one burst (up to 3 largest per service)."""
    logs = ctx.log_errors
    if not len(logs):
        return []
    errors = logs[logs["level"].isin(("ERROR", "FATAL", "SEVERE"))]
    if not len(errors):
        return []
    minute = _windows(to_ns(errors["timestamp"]), 60)
    df = pd.DataFrame({"service": errors["service"].fillna("unknown").to_numpy(), "minute": minute,
                       "signature": errors["signature"].to_numpy(), "ref": errors["source_ref"].to_numpy()})
    df = df[df["minute"] >= 0]
    n_minutes = max(1, int((ctx.now_ns - ctx.start_ns) // (60 * NS)))
    out = []
    for service, rows in df.groupby("service", sort=False):
        counts = rows.groupby("minute").size()
        padded = np.r_[counts.to_numpy(), np.zeros(max(0, n_minutes - len(counts)))]
        median = float(np.median(padded))
        limit = max(ctx.t.error_burst_per_min, ctx.t.error_burst_factor * median)
        bad = counts[counts > limit]
        if bad.empty:
            continue
        bursts = []
        for a, b in _runs(np.sort(bad.index.to_numpy()), 60 * NS):
            in_burst = rows[(rows["minute"] >= a) & (rows["minute"] <= b)]
            bursts.append((len(in_burst), a, b, in_burst))
        for size, a, b, in_burst in sorted(bursts, key=lambda x: -x[0])[:3]:
            top = in_burst["signature"].value_counts()
            sig = str(top.index[0]) if len(top) else None
            entry = load_catalog().by_id(sig) if sig else None
            out.append(Finding(
                "error_log_burst", f"{service}:{pd.Timestamp(a, tz='UTC'):%Y%m%dT%H%M}", "warning",
                f"{service}: burst of {size:,} ERROR log lines"
                + (f", mostly {entry.title if entry else sig}" if sig else ""),
                f"{size:,} ERROR lines in {(b - a) // (60 * NS) + 1} minute(s) against a median of {median:g} per "
                f"minute; top signatures: {', '.join(f'{k} ({v:,})' for k, v in top.head(3).items())}.",
                _ts(a), _ts(b + 60 * NS), ctx.service_channels.get(str(service)), size,
                float(in_burst.groupby("minute").size().max()), limit,
                [ref("log_events", "source_ref", in_burst["ref"], total=size),
                 {"table": "catalog", "column": "id", "values": [sig] if sig else [], "total": 1}],
                None, {"service": service, "signature": sig, "cause": entry.cause if entry else None,
                       "category": entry.category if entry else "unknown"}))
    return out


# ---- service silence (router down) ----------------------------------------------------------

@detector("service_silence")
def service_silence(ctx: Context) -> Iterable[Finding]:
    """A service whose logs and spans stop for more than ``silence_s`` while traffic it
    would have handled continues. Expected events in a gap = the service's events per
    message over the window x the messages created in the gap (connectors: of their
    channel); a gap is reported when at least ``silence_min_expected`` were expected. The
    largest gap per service is reported, including one that lasts until the window's end."""
    frames = []
    logs = ctx.table("log_events")
    if len(logs):
        frames.append(pd.DataFrame({"service": logs["service"].to_numpy(), "ts": to_ns(logs["timestamp"])}))
    spans = ctx.table("spans")
    if len(spans):
        frames.append(pd.DataFrame({"service": spans["service"].to_numpy(), "ts": to_ns(spans["start"])}))
    frames = [f for f in frames if len(f)]
    if not frames or not ctx.n_messages:
        return []
    act = pd.concat(frames, ignore_index=True)
    act = act[act["service"].notna() & (act["ts"] != NAT)]
    valid = ctx.created_ns != NAT
    created = ctx.created_ns[valid]
    channels = ctx.channel[valid]
    sorted_all = np.sort(created)
    by_channel = {ch: np.sort(created[channels == ch]) for ch in pd.unique(channels)}
    t = ctx.t
    out = []
    router = ctx.profile.services.router
    for service, rows in act.groupby("service", sort=False):
        channel = ctx.service_channels.get(str(service))
        traffic = by_channel.get(channel, np.empty(0, np.int64)) if channel else sorted_all
        if len(traffic) < t.silence_min_expected:
            continue
        ts = np.sort(rows["ts"].to_numpy())
        ts = ts[(ts >= ctx.start_ns) & (ts <= ctx.now_ns)]
        if len(ts) < 2:
            continue
        per_message = len(ts) / len(traffic)
        edges = np.r_[ts, ctx.now_ns]
        gaps = np.diff(edges)
        cand = np.flatnonzero(gaps > t.silence_s * NS)
        if not len(cand):
            continue
        a, b = edges[cand], edges[cand + 1]
        in_gap = np.searchsorted(traffic, b, side="left") - np.searchsorted(traffic, a, side="right")
        expected = in_gap * per_message
        best = int(np.argmax(expected))
        if expected[best] < t.silence_min_expected:
            continue
        start, end = int(a[best]), int(b[best])
        until_end = end == ctx.now_ns
        n_msgs = int(in_gap[best])
        affected = np.flatnonzero(valid & (ctx.created_ns > start) & (ctx.created_ns < end)
                                  & ((ctx.channel == channel) if channel else True))
        out.append(Finding(
            "service_silence", str(service), "critical",
            f"{service} went silent for {_fmt_s((end - start) / NS)}"
            + (" (until the end of the window)" if until_end else "") + " while traffic continued",
            f"No logs or spans from {service} between {pd.Timestamp(start, tz='UTC'):%H:%M:%S} and "
            f"{pd.Timestamp(end, tz='UTC'):%H:%M:%S} UTC while {n_msgs:,} messages it would handle were created "
            f"(about {expected[best]:,.0f} events expected at its usual {per_message:.2f} per message). "
            "A crashed or hung service (runbook 1.3 / R1.1 for the router).",
            _ts(start), _ts(end), channel, n_msgs, (end - start) / NS, t.silence_s,
            [{"table": "log_events", "column": "service", "values": [str(service)], "total": 1},
             {"table": "spans", "column": "service", "values": [str(service)], "total": 1}]
            + (_message_refs(ctx, affected) if len(affected) else []),
            affected, {"service": str(service), "router": service == router, "until_end": until_end,
                       "expected": float(expected[best])}))
    return out


# ---- dead letters (3.2) ---------------------------------------------------------------------

@detector("dead_letters")
def dead_letters(ctx: Context) -> Iterable[Finding]:
    """Records in the DLQ topics, per topic: how many, from when, and undecodable payloads."""
    dlq = ctx.table("dlq_records")
    if not len(dlq):
        return []
    out = []
    for topic, rows in dlq.groupby("topic", sort=False):
        pos = ctx.positions(rows["message_id"].dropna())
        pos = np.unique(pos[pos >= 0])
        bad = int(rows["decode_error"].notna().sum())
        n = len(rows)
        channel = next((t.channel for t in ctx.profile.kafka.dlq if t.name == topic), None)
        out.append(Finding(
            "dead_letters", str(topic), _group_severity(n, max(ctx.n_messages, 1)),
            f"{n:,} records in {topic}",
            f"{n:,} dead letters from {rows['timestamp'].min():%H:%M:%S} to {rows['timestamp'].max():%H:%M:%S} UTC"
            + (f"; {bad:,} payloads could not be decoded" if bad else "") + " (runbook 3.2).",
            rows["timestamp"].min(), rows["timestamp"].max(), channel, n, float(n), None,
            [ref("dlq_records", "offset", rows["partition"].astype(str) + ":" + rows["offset"].astype(str), total=n)]
            + (_message_refs(ctx, pos) if len(pos) else []),
            pos, {"topic": str(topic)}))
    return out


# ---- content over the platform's limits (R3.2) ----------------------------------------------

@detector("content_over_limit")
def content_over_limit(ctx: Context) -> Iterable[Finding]:
    """Messages whose text or file is over the platform's limit (catalog ``limits``), per
    channel, and how many of them FAILED."""
    if not ctx.n_messages:
        return []
    limits = load_catalog().limits
    codes, uniques = ctx.codes("channel")
    at = np.where(codes >= 0, codes, len(uniques))
    text_limit = np.array([limits.get(u, {}).get("text_chars", np.inf) for u in uniques] + [np.inf])[at]
    file_limit = np.array([limits.get(u, {}).get("file_bytes", np.inf) for u in uniques] + [np.inf])[at]
    length = ctx.messages["content_length"].to_numpy(dtype=float, na_value=np.nan)
    size = ctx.messages["file_size"].to_numpy(dtype=float, na_value=np.nan)
    over = (length > text_limit) | (size > file_limit)
    pos_all = np.flatnonzero(over)
    out = []
    for channel, pos in _by_channel(ctx, pos_all).items():
        failed = int(ctx.failed[pos].sum())
        lim = limits.get(channel, {})
        out.append(Finding(
            "content_over_limit", channel, "critical" if failed >= 10 else "warning" if failed else "info",
            f"{len(pos):,} {channel} messages over the platform's limits ({failed:,} FAILED)",
            f"Text over {lim.get('text_chars', '?')} characters or files over {lim.get('file_bytes', 0) / 2**20:,.0f} MB "
            f"(runbook R3.2); {failed:,} of them FAILED.",
            _ts(int(ctx.created_ns[pos].min())), _ts(int(ctx.created_ns[pos].max())), _channel_or_none(channel),
            len(pos), float(failed), None, _message_refs(ctx, pos), pos,
            {"failed": failed, "failed_share": failed / len(pos)}))
    return out


# ---- recipients (R3.1) ----------------------------------------------------------------------

@detector("recipient_identity")
def recipient_identity(ctx: Context) -> Iterable[Finding]:
    """FAILED messages whose recipient has a malformed platform id (identities.format_valid
    False: not E.164 for WhatsApp), an unverified identity, or no identity at all (only when
    the identities table was collected)."""
    ids = ctx.table("identities")
    if not len(ids) or not ctx.n_messages:
        return []
    failed = np.flatnonzero(ctx.failed)
    if not len(failed):
        return []
    key = ids.drop_duplicates(["platform", "platform_user_id"]).set_index(["platform", "platform_user_id"])
    look = pd.MultiIndex.from_arrays([ctx.values("channel", failed), ctx.values("recipient_id", failed)])
    at = key.index.get_indexer(look)
    found = at >= 0
    fmt = np.where(found, key["format_valid"].to_numpy(dtype=object, na_value=None)[np.maximum(at, 0)], None)
    ver = np.where(found, key["verified"].to_numpy(dtype=object, na_value=None)[np.maximum(at, 0)], None)
    kinds = {"malformed": found & (fmt == False), "unverified": found & (fmt != False) & (ver == False),  # noqa: E712
             "no_identity": ~found}
    out = []
    for kind, mask in kinds.items():
        pos = failed[mask]
        if not len(pos):
            continue
        share = len(pos) / len(failed)
        out.append(Finding(
            "recipient_identity", kind, "critical" if share >= 0.2 and len(pos) >= 10 else "warning",
            f"{len(pos):,} FAILED messages to recipients with {kind.replace('_', ' ')} identities",
            f"{len(pos):,} of {len(failed):,} FAILED messages ({share:.0%}) went to recipients whose external "
            f"identity is {kind.replace('_', ' ')} (E.164 for WhatsApp). Runbook R3.1.",
            _ts(int(ctx.created_ns[pos].min())), _ts(int(ctx.created_ns[pos].max())), None, len(pos), share, None,
            _message_refs(ctx, pos) + [ref("identities", "platform_user_id", ctx.values("recipient_id", pos))],
            pos, {"kind": kind, "share_of_failed": share}))
    return out
