"""The per-message index: one row per message of an evidence window, as numpy arrays.

Every whole-window derivation reads it: the detectors (through their run's
:class:`~forensics.analysis.detectors.Context`), alert replay and the simulator's metrics
(through :mod:`forensics.series`). It is built once per evidence (:func:`message_index`) and
each array on first use, so a run that needs only creation times pays for creation times.

Positions ``0..n-1`` are the rows of :attr:`MessageIndex.messages` (the ``messages`` table, or
one row per message derived from the status events when that table is empty). Arrays "by
code" extend them with the orphans (``n..``: ids with status events but no document,
:class:`forensics.scan.MessageStatus`). Times are int64 ns (:data:`~forensics.timeutil.NAT`:
none); text columns are factorised once into small integer codes (:meth:`MessageIndex.codes`),
never one Python object per row. The status history is asked through DuckDB
(:mod:`forensics.scan`), wherever it is.
"""

from __future__ import annotations

import weakref
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from forensics import schema
from forensics.scan import MessageStatus, forget_status, message_status
from forensics.timeutil import NAT, to_ns

if TYPE_CHECKING:  # annotations only
    from forensics.evidence import Evidence

NEVER = np.iinfo(np.int64).max
"""The int64 ns of "never" (a message that never left PENDING)."""
MANY_VALUES = 2**16
"""Distinct values of a column from which :meth:`MessageIndex.codes` keeps them in Arrow."""


class MessageIndex:
    """What every derivation needs per message, each array computed once on first use."""

    def __init__(self, evidence: Evidence) -> None:
        self._evidence = weakref.ref(evidence)  # the index is cached per evidence: no cycle through it
        self.messages = _messages(evidence)
        """The messages table (default index), or one row per message derived from the status
        events when it is empty (status = last new_status, created_at = first event)."""
        self.n_messages = len(self.messages)
        """Messages (positions 0..n_messages-1)."""
        self.transitions: dict[str, pd.DataFrame] = {}
        """Status -> its status events (code, channel, at), filled by :func:`forensics.series.transitions`."""
        self._factorized: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def evidence(self) -> Evidence:
        ev = self._evidence()
        if ev is None:
            raise ReferenceError("the evidence of this message index is gone")
        return ev

    # ---- times per position ---------------------------------------------------------------
    @cached_property
    def created_ns(self) -> np.ndarray:
        """messages.created_at per position (NAT: unknown)."""
        return to_ns(self.messages["created_at"])

    @cached_property
    def updated_ns(self) -> np.ndarray:
        """messages.updated_at per position (NAT: unknown)."""
        return to_ns(self.messages["updated_at"])

    @cached_property
    def history(self) -> MessageStatus:
        """Per code, what the status events say (first event, first exit from PENDING, first
        DELIVERED, DELIVERED count, last SENT), by DuckDB (:func:`forensics.scan.message_status`)."""
        return message_status(self.evidence, self.messages["message_id"])

    @cached_property
    def _delivered(self) -> tuple[np.ndarray, np.ndarray]:
        h = self.history
        first, count = h.first_delivered_at[:self.n_messages], h.delivered_count[:self.n_messages].copy()
        count[h.repeated] = 0
        return first, count

    @property
    def delivered_ns(self) -> np.ndarray:
        """First DELIVERED time per position (NAT: never delivered)."""
        return self._delivered[0]

    @property
    def delivered_count(self) -> np.ndarray:
        """DELIVERED events per position (0 for a repeated id: its first position counts)."""
        return self._delivered[1]

    # ---- times per code (positions, then orphans) -----------------------------------------
    @cached_property
    def _pending(self) -> tuple[np.ndarray, np.ndarray]:
        h, n = self.history, self.n_messages
        created = h.first_at.copy()
        left = np.where(h.left_pending_at == NAT, NEVER, h.left_pending_at)
        if n:
            made = self.created_ns
            created[:n] = np.where(made != NAT, made, created[:n])  # messages.created_at wins
            codes, uniques = self.codes("status")
            gone = (codes >= 0) & (codes != _code_of(uniques, "PENDING"))
            upd = self.updated_ns
            fill = gone & (upd != NAT) & (left[:n] == NEVER)
            left[:n][fill] = upd[fill]
            created[h.repeated] = NAT  # the first document of an id counts
            left[h.repeated] = NEVER
        return created, left

    @property
    def created_by_code(self) -> np.ndarray:
        """Creation per code: messages.created_at, else the message's first status event; NAT
        when unknown and for a repeated id."""
        return self._pending[0]

    @property
    def left_pending_by_code(self) -> np.ndarray:
        """First status event to another status than PENDING per code, else messages.updated_at
        when the document is not PENDING; :data:`NEVER` when it never left."""
        return self._pending[1]

    # ---- text columns as codes ------------------------------------------------------------
    def codes(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """``messages[column]`` factorised once: (codes per position, -1 for null, in the smallest
        signed integer type that holds them; the distinct values as objects, or, when there are
        :data:`MANY_VALUES` or more (conversation and recipient ids), as the Arrow-backed array
        factorising gave: millions of ids as Python objects cost 90 bytes each, kept)."""
        if column not in self._factorized:
            codes, uniques = pd.factorize(self.messages[column], use_na_sentinel=True)
            small = np.int8 if len(uniques) < 2**7 else np.int16 if len(uniques) < 2**15 else np.int32
            array = uniques.array if isinstance(uniques, pd.Index) else uniques
            kept = array if len(array) >= MANY_VALUES and isinstance(array, pd.api.extensions.ExtensionArray) \
                else np.asarray(array, dtype=object)
            self._factorized[column] = (codes.astype(small), kept)
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

    def is_value(self, column: str, value: str) -> np.ndarray:
        """Per position: ``messages[column] == value`` (False for null), from the codes."""
        codes, uniques = self.codes(column)
        return codes == _code_of(uniques, value)

    @cached_property
    def status(self) -> np.ndarray:
        """Status per position as objects (None for null), one shared object per distinct status."""
        codes, uniques = self.codes("status")
        return np.append(uniques, None).astype(object)[np.where(codes >= 0, codes, len(uniques))]

    @cached_property
    def channel(self) -> np.ndarray:
        """Channel per position as objects, ``UNKNOWN`` for null."""
        codes, uniques = self.codes("channel")
        names = np.append(uniques, "UNKNOWN").astype(object)
        return names[np.where(codes >= 0, codes, len(uniques))]

    @cached_property
    def failed(self) -> np.ndarray:
        """Per position: the document's status is FAILED."""
        return self.is_value("status", "FAILED")

    # ---- ids --------------------------------------------------------------------------------
    @cached_property
    def _message_ids(self) -> pa.ChunkedArray:
        return schema.arrow_text(self.messages["message_id"])  # the column's own buffers

    def positions(self, message_ids: pd.Series) -> np.ndarray:
        """Positions in ``messages`` of ``message_ids`` (-1 where unknown; a repeated id: its
        first position). Arrow's hash lookups, built per call over the ids asked for (a few
        thousand), never over every message's (millions): no index of every id kept."""
        if not len(message_ids) or not self.n_messages:
            return np.full(len(message_ids), -1, dtype=np.int64)
        wanted = schema.arrow_text(message_ids)
        asked = pc.unique(wanted.drop_null())
        if not len(asked):
            return np.full(len(message_ids), -1, dtype=np.int64)
        hit = pc.index_in(self._message_ids, value_set=asked)  # per message: which asked id it is
        found = pc.is_valid(hit)
        which = pc.filter(hit, found).to_numpy(zero_copy_only=False)
        seen, at = np.unique(which, return_index=True)  # each asked id's first hit, in message order
        first = np.full(len(asked), -1, dtype=np.int64)
        first[seen] = np.flatnonzero(found.to_numpy(zero_copy_only=False))[at]
        slot = pc.fill_null(pc.index_in(wanted, value_set=asked), -1).to_numpy(zero_copy_only=False)
        return np.where(slot >= 0, first[np.maximum(slot, 0)], -1).astype(np.int64)


_INDEXES: dict[int, tuple[weakref.ref, tuple, MessageIndex]] = {}
"""id(evidence) -> (the evidence, the identity of its messages and status events, its index);
an entry goes with its evidence."""


def message_index(evidence: Evidence) -> MessageIndex:
    """The index of ``evidence``, built once and shared by every reader of the same evidence
    (rebuilt when its messages or status events table is replaced)."""
    if "messages" in evidence.stored:  # deferred (a lean bundle read): the index reads it now
        evidence.table("messages")
    key = (id(evidence.tables.get("messages")), id(evidence.tables.get("status_events")),
           evidence.stored.get("status_events"))
    hit = _INDEXES.get(id(evidence))
    if hit is not None and hit[0]() is evidence and hit[1] == key:
        return hit[2]
    index = MessageIndex(evidence)
    if hit is None or hit[0]() is not evidence:
        weakref.finalize(evidence, _INDEXES.pop, id(evidence), None)
    _INDEXES[id(evidence)] = (weakref.ref(evidence), key, index)
    return index


KEPT_ON_RELEASE = ("n_messages", "failed", "channel", "delivered_ns", "created_ns")
"""What a period's index keeps when its messages are let go (:func:`release`): what comparing
another period with it reads (:mod:`forensics.analysis.change`, the ranking)."""


class ReleasedIndex:
    """The index of evidence whose messages table was let go (:func:`release`): the arrays of
    :data:`KEPT_ON_RELEASE`; anything else asked builds the index again, reading the table
    back from its file (correct, and as costly as the first time)."""

    def __init__(self, index: MessageIndex, evidence: Evidence) -> None:
        self.__dict__.update({name: getattr(index, name) for name in KEPT_ON_RELEASE})
        self._evidence = evidence

    def __getattr__(self, name: str):
        return getattr(message_index(self._evidence), name)


def release(index: MessageIndex) -> MessageIndex | ReleasedIndex:
    """Let the messages of ``index``'s evidence go when they can be read again from their file
    (a lean bundle read's deferred table): the table, the index and the status history's
    answers about it are freed, the arrays of :data:`KEPT_ON_RELEASE` kept. A baseline's
    detectors then cost memory only while they run, before the window's messages are read.
    Evidence held only in memory keeps everything (``index`` itself comes back)."""
    evidence = index.evidence
    if "messages" not in evidence.read_from:
        return index
    kept = ReleasedIndex(index, evidence)
    evidence.release("messages")
    _INDEXES.pop(id(evidence), None)
    forget_status(evidence)
    return kept


def _messages(evidence: Evidence) -> pd.DataFrame:
    m = evidence.table("messages")
    if len(m) or not evidence.has("status_events"):
        return m if _default_index(m) else m.reset_index(drop=True)
    ev = evidence.table("status_events")
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


def _default_index(frame: pd.DataFrame) -> bool:
    idx = frame.index
    return isinstance(idx, pd.RangeIndex) and idx.start == 0 and idx.step == 1


def _code_of(uniques: np.ndarray, value: str) -> int:
    """The code of ``value`` among ``uniques``; -2 (matches no code) when absent."""
    hits = np.flatnonzero(np.asarray(uniques == value, dtype=bool))
    return int(hits[0]) if len(hits) else -2
