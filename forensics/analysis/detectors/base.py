"""What every detector shares: :class:`Thresholds`, :class:`Finding`, the per-run :class:`Context`
(derived columns computed once), the registry (``@detector``, :data:`DETECTORS`), :func:`detect`
and small helpers. The detectors themselves live in one module per family next to this one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from functools import cached_property
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from forensics import schema
from forensics.analysis.classify import classify_codes, classify_series
from forensics.errors import ForensicsError, ParameterError
from forensics.evidence import Evidence
from forensics.messages import MessageIndex, message_index, release
from forensics.profiles import Profile, load_profile
from forensics.scan import return_freed_memory, status_rows
from forensics.series import STUCK_PENDING_S
from forensics.timeutil import NAT, NS
from forensics.timeutil import to_ns as to_ns  # the family modules read it here

MAX_REF_VALUES = 50
"""Values listed per evidence reference; ``total`` says how many there were."""
ERROR_LEVELS = ("ERROR", "FATAL", "SEVERE", "WARN", "WARNING")


@dataclass(frozen=True)
class Thresholds:
    """Detector thresholds, defaults from the runbook's symptoms and recommended alerts."""

    stuck_pending_s: float = STUCK_PENDING_S
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


def _value(v: Any) -> Any:
    """A scalar from a frame, with NA as None."""
    return None if v is None or (not isinstance(v, str) and pd.isna(v)) else v


def _without_members(counted: Any) -> Any:
    """A localisation count (or list of them) without the closures that find its messages (each
    holds per-message arrays): a released period's counts are compared with, never drilled into."""
    if isinstance(counted, list):
        return [_without_members(c) for c in counted]
    return replace(counted, members=None, times=None) if is_dataclass(counted) and hasattr(counted, "members") \
        else counted


class _FromIndex:
    """A :class:`Context` attribute that is its message index's attribute of the same name
    (:class:`forensics.messages.MessageIndex`, where each is documented)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, ctx: Context | None, owner: type | None = None) -> Any:
        return self if ctx is None else getattr(ctx.index, self.name)


class Context:
    """One detector run: the evidence, the thresholds, ``now`` and derived columns computed once."""

    def __init__(self, evidence: Evidence, thresholds: Thresholds | Mapping[str, Any] | None = None) -> None:
        self.evidence = evidence
        self.t = Thresholds.from_dict(thresholds)
        self.now: pd.Timestamp = evidence.window.end
        self.now_ns: int = int(self.now.value)
        self.start_ns: int = int(evidence.window.start.value)
        self.counted: dict[Any, Any] = {}
        """What each counting function of the localisation detectors found for this run, kept on
        the run itself (a cache keyed by the run elsewhere would keep its results, and through
        them the run, alive: about 45 MB an incident across a benchmark of hundreds)."""

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
    def index(self) -> MessageIndex:
        """The evidence's per-message index (:mod:`forensics.messages`), shared with alert replay."""
        return message_index(self.evidence)

    def release_messages(self) -> None:
        """Let this run's messages go once its detectors have run, keeping what comparing
        another period with it reads (:func:`forensics.messages.release`): a baseline's
        messages then cost memory only while its own detectors run."""
        self.__dict__["index"] = release(self.index)
        self.counted = {count: _without_members(c) for count, c in self.counted.items()}
        return_freed_memory()

    # The index's arrays and lookups under the names the detectors read (positions of ``messages``).
    messages = _FromIndex()
    n_messages = _FromIndex()
    created_ns = _FromIndex()
    updated_ns = _FromIndex()
    delivered_ns = _FromIndex()
    delivered_count = _FromIndex()
    history = _FromIndex()
    status = _FromIndex()
    channel = _FromIndex()
    failed = _FromIndex()
    codes = _FromIndex()
    values = _FromIndex()
    distinct = _FromIndex()
    positions = _FromIndex()

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
        parts = [pd.DataFrame({"position": failed_pos, "text": schema.take_text(m["error_message"], failed_pos).array,
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
                parts.append(pd.DataFrame({"position": pos[keep], "text": frame[text_col].astype(schema.STR).array[keep],
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
        position = cand["position"].to_numpy()
        codes, table = classify_codes(cand["text"], pd.Series(self.values("channel", position), dtype=schema.STR))
        by_pair = np.where(table["cause"].notna(), 0, np.where(table["entry_id"].notna(), 1, 2))
        score = np.where(cand["text"].notna().to_numpy(dtype=bool), by_pair[codes], 3)
        order = np.lexsort((cand["prio"].to_numpy(), score, position))  # stable: ties keep the sources' order
        best = order[np.r_[True, position[order][1:] != position[order][:-1]]]  # each position's first
        chosen = cand[cols].iloc[best].reset_index(drop=True)
        return pd.concat([chosen, table.take(codes[best]).reset_index(drop=True)], axis=1)

    @cached_property
    def log_errors(self) -> pd.DataFrame:
        """ERROR/WARN log lines and lines with a stack trace, classified (same index as the log
        table); the stack trace's first line is classified with the message. ``message`` is the
        line's message, else its raw line; the raw lines and stack traces themselves are not
        kept (the log table has them)."""
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
        sel = sel.assign(message=sel["message"].fillna(sel["raw"])).drop(columns=["raw", "stack_trace"])
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
    return_freed_memory()  # what the detectors' intermediate frames held, for the next step
    items.sort(key=lambda f: (_SEVERITY_ORDER.get(f.severity, 3),
                              f.first_seen.value if f.first_seen is not None else np.iinfo(np.int64).max,
                              f.finding_id))
    return Detection(ctx, items)


def run_detectors(evidence: Evidence, thresholds: Thresholds | Mapping[str, Any] | None = None) -> pd.DataFrame:
    """All registered detectors over ``evidence``: the canonical ``findings`` table."""
    return detect(evidence, thresholds).findings


# ---- helpers --------------------------------------------------------------------------------

def _message_refs(ctx: Context, positions: np.ndarray) -> list[dict]:
    ids = schema.take_text(ctx.messages["message_id"], positions[:MAX_REF_VALUES * 4])
    return [ref("messages", "message_id", ids, total=len(positions))]


_US = pa.scalar("\x1f", pa.large_string())
"""The separator of a (platform, platform id) key: the unit separator, in no id."""


def identity_rows(identities: pd.DataFrame, platform: pd.Series | np.ndarray, user_id: pd.Series | np.ndarray
                  ) -> np.ndarray:
    """Per (platform, platform id) pair asked, the row of ``identities`` that is its first
    identity (-1: none; a pair with a null never matches), by Arrow's hash lookup of
    "platform<US>id": no index of every identity (3.7M rows at 10M messages) per question."""
    def key(a: pd.Series | np.ndarray, b: pd.Series | np.ndarray) -> pa.ChunkedArray:
        return pc.binary_join_element_wise(schema.arrow_text(pd.Series(a, dtype=schema.STR)),
                                           schema.arrow_text(pd.Series(b, dtype=schema.STR)), _US)

    known = key(identities["platform"], identities["platform_user_id"]).combine_chunks()
    found = pc.index_in(key(platform, user_id), value_set=known, skip_nulls=True)
    return pc.fill_null(found, -1).to_numpy().astype(np.int64)


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


def _group_severity(count: int, total: int) -> str:
    share = count / max(total, 1)
    if share >= 0.02 and count >= 10:
        return "critical"
    if share >= 0.002 or count >= 10:
        return "warning"
    return "info"
