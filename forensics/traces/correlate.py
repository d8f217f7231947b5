"""Spans matched to the canonical ``messages`` table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forensics import schema
from forensics.profiles import Profile, load_profile
from forensics.traces.table import NAT_NS, as_ns


@dataclass(frozen=True)
class TimeWindowRule:
    """Where a message without a message-id tag should show in the traces.

    A span is a candidate for a message when its service is one of ``services`` (``None``:
    the connector of the message's channel, from the profile), its HTTP route (or, without
    one, its operation) matches ``route`` (a regex) and it starts within
    [anchor - before_s, anchor + after_s], ``anchor`` being a column of the messages table.
    """

    name: str
    services: tuple[str, ...] | None
    route: str
    anchor: str = "created_at"
    before_s: float = 1.0
    after_s: float = 2.0


def default_rules(profile: str | Profile | None = None) -> list[TimeWindowRule]:
    """The API hop (gateway/message-service POST on a messages route around creation) and
    the connector hop (the channel's connector around the last update)."""
    p = load_profile(profile)
    return [
        # the request reaches the gateway a few ms before message-service stamps created_at
        TimeWindowRule("api", (p.services.api_gateway, p.services.message_service), r"^/api(?:/v\d+)?/messages/?$",
                       "created_at", 1.0, 0.1),
        # the last connector call ends shortly before the final status is written
        TimeWindowRule("connector", None, r"(?i)/messages|send|webhook", "updated_at", 5.0, 0.5),
    ]


TIME_WINDOW_CONFIDENCE = 0.8
"""Confidence of a time-window match with a single candidate trace; divided by the candidate count."""


@dataclass
class Correlation:
    """Spans matched to messages, and messages with no trace."""

    matches: pd.DataFrame
    """message_id, trace_id, span_id, service, operation, method ("tag" or "time_window"),
    rule, confidence (0..1), candidates (traces that fit), delta_ms (span start - anchor)."""
    untraced: pd.DataFrame
    """message_id, channel, status, created_at: messages with no matching span (sampling
    gaps, or spans outside the collected window)."""


def correlate_messages(spans: pd.DataFrame, messages: pd.DataFrame, profile: str | Profile | None = None,
                       rules: list[TimeWindowRule] | None = None, max_candidates: int = 5) -> Correlation:
    """Join spans to messages: by message-id tag where one exists, else by service, time and route.

    - ``tag``: the span carries the message id (:data:`MESSAGE_ID_TAGS`); confidence 1.0.
    - ``time_window``: for a message with no tagged span, each :class:`TimeWindowRule`
      collects the traces with a fitting span; each is a match with confidence
      ``TIME_WINDOW_CONFIDENCE / candidates`` (two candidate traces: 0.4 each), the span
      nearest the anchor standing for its trace. Only the ``max_candidates`` nearest
      traces are listed; ``candidates`` still counts them all.
    """
    rules = default_rules(profile) if rules is None else rules
    prof = load_profile(profile)
    cols = ["message_id", "trace_id", "span_id", "service", "operation", "method", "rule", "confidence",
            "candidates", "delta_ms"]
    tagged = spans[spans["message_id"].notna() & spans["message_id"].isin(messages["message_id"])]
    tag_matches = (tagged.sort_values("start", kind="stable").drop_duplicates(["message_id", "trace_id"])
                   .assign(method="tag", rule=None, confidence=1.0, delta_ms=np.nan))
    tag_matches["candidates"] = tag_matches.groupby("message_id")["trace_id"].transform("size")
    parts = [tag_matches[cols]]
    rest = messages[~messages["message_id"].isin(tagged["message_id"])]
    for rule in rules:
        parts.append(_time_window_matches(spans, rest, rule, prof, max_candidates)[cols])
    matches = pd.concat([p for p in parts if len(p)] or [parts[0]], ignore_index=True)
    matches = matches.astype({"message_id": schema.STR, "trace_id": schema.STR, "span_id": schema.STR,
                              "service": schema.STR, "operation": schema.STR, "method": schema.STR,
                              "rule": schema.STR, "confidence": "float64", "candidates": schema.INT,
                              "delta_ms": "float64"})
    untraced = messages[~messages["message_id"].isin(matches["message_id"])]
    return Correlation(matches.reset_index(drop=True),
                       untraced[["message_id", "channel", "status", "created_at"]].reset_index(drop=True))


def _time_window_matches(spans: pd.DataFrame, messages: pd.DataFrame, rule: TimeWindowRule,
                         profile: Profile, max_candidates: int) -> pd.DataFrame:
    """Candidate traces per message for one rule, vectorised per service with searchsorted."""
    route_text = spans["http_route"].fillna(spans["operation"]).fillna("")
    eligible = spans[route_text.str.contains(rule.route, regex=True)]
    if rule.services is None:
        wanted = messages["channel"].map(lambda c: profile.services.connector(c) if isinstance(c, str) else None)
    else:
        wanted = pd.Series([rule.services] * len(messages), index=messages.index)
    anchor = as_ns(messages[rule.anchor]) if rule.anchor in messages else np.full(len(messages), NAT_NS)
    pieces = []
    for service, group in eligible.groupby("service"):
        has = wanted.map(lambda w, s=service: w == s if isinstance(w, str) else (w is not None and s in w))
        m_idx = np.flatnonzero(has.to_numpy(dtype=bool) & (anchor != NAT_NS))
        if not len(m_idx):
            continue
        g = group.sort_values("start", kind="stable")
        starts = as_ns(g["start"])
        lo = np.searchsorted(starts, anchor[m_idx] - int(rule.before_s * 1e9), side="left")
        hi = np.searchsorted(starts, anchor[m_idx] + int(rule.after_s * 1e9), side="right")
        counts = hi - lo
        msg_rows = np.repeat(m_idx, counts)
        span_rows = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi, strict=True)]) if counts.sum() else \
            np.zeros(0, dtype="int64")
        pieces.append(pd.DataFrame({
            "message_id": messages["message_id"].to_numpy()[msg_rows],
            "trace_id": g["trace_id"].to_numpy()[span_rows],
            "span_id": g["span_id"].to_numpy()[span_rows],
            "service": g["service"].to_numpy()[span_rows],
            "operation": g["operation"].to_numpy()[span_rows],
            "delta_ms": (starts[span_rows] - anchor[msg_rows]) / 1e6,
        }))
    if not pieces:
        return pd.DataFrame(columns=["message_id", "trace_id", "span_id", "service", "operation", "method", "rule",
                                     "confidence", "candidates", "delta_ms"])
    cand = pd.concat(pieces, ignore_index=True)
    cand["abs_delta"] = cand["delta_ms"].abs()
    cand = cand.sort_values(["message_id", "abs_delta"], kind="stable").drop_duplicates(["message_id", "trace_id"])
    cand["candidates"] = cand.groupby("message_id")["trace_id"].transform("size")
    cand["confidence"] = TIME_WINDOW_CONFIDENCE / cand["candidates"]
    cand["method"] = "time_window"
    cand["rule"] = rule.name
    cand = cand[cand.groupby("message_id").cumcount() < max_candidates]
    return cand.drop(columns="abs_delta")
