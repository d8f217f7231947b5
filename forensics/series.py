"""Evidence series: what the platform's metrics would have shown, derived from the canonical tables.

Status transitions, delivery observations, stuck-PENDING intervals and HTTP errors from spans
and logs, as int64-ns numpy arrays over the per-message index (:mod:`forensics.messages`).
Alert replay (:mod:`forensics.analysis.alerts`) and the simulator's metrics
(:mod:`forensics.simulate.metrics`) both read them, so a rule replayed from the evidence and
the same rule over the simulated metrics agree. This module sits below both (it imports
neither the analysis nor the simulator).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from forensics.messages import message_index
from forensics.scan import transitions as scan_transitions
from forensics.timeutil import NAT, NS, to_ns

if TYPE_CHECKING:  # annotations only
    from forensics.evidence import Evidence

STUCK_PENDING_S = 30.0
"""A PENDING message older than this is stuck: runbook Symptom 1, what the platform's
stuck-PENDING gauge counts; the default of the detectors' ``Thresholds.stuck_pending_s``."""

_FINISHED = ("DELIVERED", "FAILED")
_HTTP_ANSWERS = (("spans", "spans", "http_status_code", "start"), ("logs", "log_events", "http_status", "timestamp"))
"""Where HTTP answers show: origin, table, status column, time column."""


def transitions(ev: Evidence, status: str) -> pd.DataFrame:
    """Every status event to ``status``: code (message), channel, at (ns), sorted by time."""
    index = message_index(ev)
    if status not in index.transitions:
        wanted = _FINISHED if status in _FINISHED else (status,)  # one scan answers both
        rows = scan_transitions(ev, index.messages["message_id"], wanted)
        for s in wanted:  # kept with the index: the channel as a category (1 byte a row, not ~16)
            index.transitions[s] = rows.loc[rows["status"] == s, ["code", "channel", "at"]].reset_index(drop=True) \
                .astype({"channel": "category"})
    return index.transitions[status]


def delivery_observations(ev: Evidence) -> pd.DataFrame:
    """One row per DELIVERED event: channel, at (ns) and latency_s = at - the message's creation.

    What a delivery-time histogram observes: every DELIVERED event (duplicates included),
    at the time of the event.
    """
    d = transitions(ev, "DELIVERED")
    start = message_index(ev).created_by_code[d["code"].to_numpy()]
    latency = np.where(start != NAT, (d["at"].to_numpy() - start) / NS, np.nan)
    keep = np.isfinite(latency) & (latency >= 0)
    out = d[keep].reset_index(drop=True)  # the one copy (10M deliveries: 0.4 GB), not two
    out["latency_s"] = latency[keep]
    return out


def stuck_intervals(ev: Evidence, stuck_after_s: float = STUCK_PENDING_S) -> tuple[np.ndarray, np.ndarray]:
    """Per message, the time it counts as stuck in PENDING: [created + stuck_after_s, left PENDING).

    Left PENDING = its first status event to another status; without one, messages.updated_at
    when the document's status is not PENDING, else never. Returns (starts, ends) in ns,
    each sorted, for the messages that were stuck at all.
    """
    idx = message_index(ev)
    known = idx.created_by_code != NAT
    start = idx.created_by_code[known] + int(stuck_after_s * NS)
    end = idx.left_pending_by_code[known]
    stuck = end > start
    return np.sort(start[stuck]), np.sort(end[stuck])


def stuck_counts(starts: np.ndarray, ends: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Messages stuck at each instant of ``at``: started before it (strictly), not yet ended."""
    return (np.searchsorted(starts, at, side="left") - np.searchsorted(ends, at, side="right")).astype(float)


def http_errors(ev: Evidence, min_status: int = 500) -> dict[str, pd.DataFrame]:
    """HTTP answers with status >= ``min_status`` seen in spans and in logs: per origin a frame
    of service, status, at (ns). The same call can show in both, so counts take the larger."""
    out: dict[str, pd.DataFrame] = {}
    for origin, table, status, at in _HTTP_ANSWERS:
        frame = ev.table(table)
        if len(frame):
            f = frame[frame[status].fillna(0) >= min_status]
            out[origin] = pd.DataFrame({"service": f["service"].fillna("unknown").astype(str).to_numpy(),
                                        "status": f[status].astype("int64").astype(str).to_numpy(),
                                        "at": to_ns(f[at])})
    return {k: v[v["at"] != NAT] for k, v in out.items() if len(v)}


def http_error_counts(errors: dict[str, pd.DataFrame], lo: np.ndarray, hi: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
    """Per (service, status): errors in (lo[k], hi[k]] for every k, the larger of spans' and logs' counts."""
    counts: dict[tuple[str, str], np.ndarray] = {}
    for frame in errors.values():
        for (service, status), g in frame.groupby(["service", "status"], sort=True):
            c = count_in(np.sort(g["at"].to_numpy()), lo, hi)
            key = (str(service), str(status))
            counts[key] = np.maximum(counts[key], c) if key in counts else c
    return counts


def count_in(at: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """How many of the sorted instants ``at`` fall in (lo[k], hi[k]] for every k."""
    return (np.searchsorted(at, hi, side="right") - np.searchsorted(at, lo, side="right")).astype(float)


