"""Evidence series: what the platform's metrics would have shown, derived from the canonical tables.

Per-message creation and first exit from PENDING (one index per pair of ``messages`` and
``status_events`` frames), status transitions, delivery observations, stuck-PENDING
intervals and HTTP 5xx errors from spans and logs, as int64-ns numpy arrays. Alert replay
(:mod:`forensics.analysis.alerts`) and the simulator's metrics (:mod:`forensics.simulate.metrics`)
both read them.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import pandas as pd

from forensics.analysis.detectors import NAT, NS, Thresholds, to_ns
from forensics.evidence import Evidence
from forensics.scan import message_status
from forensics.scan import transitions as scan_transitions

STUCK_AFTER_S = Thresholds().stuck_pending_s
"""A PENDING message older than this is stuck (runbook Symptom 1), as the stuck_pending detector says."""


def _ns(values: pd.Series) -> np.ndarray:
    return to_ns(values)


NEVER = np.iinfo(np.int64).max


@dataclass
class MessageIndex:
    """Per message code (:func:`forensics.scan.message_status`): creation and first exit from PENDING."""

    created: np.ndarray
    """Creation ns: messages.created_at, else the message's first status event; NAT when unknown."""
    left: np.ndarray
    """First status event to another status, else messages.updated_at when the document is not
    PENDING; NEVER when it never left."""
    transitions: dict[str, pd.DataFrame]
    """Status -> its status events (code, channel, at), fetched on first use."""


_FINISHED = ("DELIVERED", "FAILED")
_INDEX_CACHE: list[tuple[weakref.ref, weakref.ref, MessageIndex]] = []
"""The index of the last (evidence, messages) pair, dropped with the messages frame."""


def message_index(ev: Evidence) -> MessageIndex:
    """Built once per evidence and messages frame: every derivation reads it. The status
    history is asked through DuckDB (:mod:`forensics.scan`), wherever it is."""
    m = ev.table("messages")
    if _INDEX_CACHE and _INDEX_CACHE[0][0]() is ev and _INDEX_CACHE[0][1]() is m:
        return _INDEX_CACHE[0][2]
    h = message_status(ev, m["message_id"])
    n = len(m)
    created = h.first_at.copy()
    left = np.where(h.left_pending_at == NAT, NEVER, h.left_pending_at)
    if n:
        made = _ns(m["created_at"])
        created[:n] = np.where(made != NAT, made, created[:n])  # messages.created_at wins
        gone = (m["status"].notna() & (m["status"] != "PENDING")).to_numpy(dtype=bool, na_value=False)
        upd = _ns(m["updated_at"])
        fill = gone & (upd != NAT) & (left[:n] == NEVER)
        left[:n][fill] = upd[fill]
        created[h.repeated] = NAT  # the first document of an id counts
        left[h.repeated] = NEVER
    index = MessageIndex(created, left, {})
    _INDEX_CACHE[:] = [(weakref.ref(ev), weakref.ref(m), index)]
    weakref.finalize(m, _INDEX_CACHE.clear)
    return index


def transitions(ev: Evidence, status: str) -> pd.DataFrame:
    """Every status event to ``status``: code (message), channel, at (ns), sorted by time."""
    index = message_index(ev)
    if status not in index.transitions:
        wanted = _FINISHED if status in _FINISHED else (status,)  # one scan answers both
        rows = scan_transitions(ev, ev.table("messages")["message_id"], wanted)
        for s in wanted:
            index.transitions[s] = rows.loc[rows["status"] == s, ["code", "channel", "at"]].reset_index(drop=True)
    return index.transitions[status]


def delivery_observations(ev: Evidence) -> pd.DataFrame:
    """One row per DELIVERED event: channel, at (ns) and latency_s = at - the message's creation.

    What a delivery-time histogram observes: every DELIVERED event (duplicates included),
    at the time of the event.
    """
    d = transitions(ev, "DELIVERED").copy()
    start = message_index(ev).created[d["code"].to_numpy()]
    d["latency_s"] = np.where(start != NAT, (d["at"].to_numpy() - start) / NS, np.nan)
    return d[np.isfinite(d["latency_s"]) & (d["latency_s"] >= 0)].reset_index(drop=True)


def stuck_intervals(ev: Evidence, stuck_after_s: float = STUCK_AFTER_S) -> tuple[np.ndarray, np.ndarray]:
    """Per message, the time it counts as stuck in PENDING: [created + stuck_after_s, left PENDING).

    Left PENDING = its first status event to another status; without one, messages.updated_at
    when the document's status is not PENDING, else never. Returns (starts, ends) in ns,
    each sorted, for the messages that were stuck at all.
    """
    idx = message_index(ev)
    known = idx.created != NAT
    start = idx.created[known] + int(stuck_after_s * NS)
    end = idx.left[known]
    stuck = end > start
    return np.sort(start[stuck]), np.sort(end[stuck])


def stuck_counts(starts: np.ndarray, ends: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Messages stuck at each instant of ``at``: started before it (strictly), not yet ended."""
    return (np.searchsorted(starts, at, side="left") - np.searchsorted(ends, at, side="right")).astype(float)


def http_errors(ev: Evidence, min_status: int = 500) -> dict[str, pd.DataFrame]:
    """HTTP answers with status >= ``min_status`` seen in spans and in logs: per origin a frame
    of service, status, at (ns). The same call can show in both, so counts take the larger."""
    out: dict[str, pd.DataFrame] = {}
    spans = ev.table("spans")
    if len(spans):
        s = spans[spans["http_status_code"].fillna(0) >= min_status]
        out["spans"] = pd.DataFrame({"service": s["service"].fillna("unknown").astype(str).to_numpy(),
                                     "status": s["http_status_code"].astype("int64").astype(str).to_numpy(),
                                     "at": _ns(s["start"])})
    logs = ev.table("log_events")
    if len(logs):
        lg = logs[logs["http_status"].fillna(0) >= min_status]
        out["logs"] = pd.DataFrame({"service": lg["service"].fillna("unknown").astype(str).to_numpy(),
                                    "status": lg["http_status"].astype("int64").astype(str).to_numpy(),
                                    "at": _ns(lg["timestamp"])})
    return {k: v[v["at"] != NAT] for k, v in out.items() if len(v)}


def http_error_counts(errors: dict[str, pd.DataFrame], lo: np.ndarray, hi: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
    """Per (service, status): errors in (lo[k], hi[k]] for every k, the larger of spans' and logs' counts."""
    counts: dict[tuple[str, str], np.ndarray] = {}
    for frame in errors.values():
        for (service, status), g in frame.groupby(["service", "status"], sort=True):
            at = np.sort(g["at"].to_numpy())
            c = (np.searchsorted(at, hi, side="right") - np.searchsorted(at, lo, side="right")).astype(float)
            key = (str(service), str(status))
            counts[key] = np.maximum(counts[key], c) if key in counts else c
    return counts


def count_in(at: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return (np.searchsorted(at, hi, side="right") - np.searchsorted(at, lo, side="right")).astype(float)


