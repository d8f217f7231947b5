"""Parent links, data-quality flags and the span tree."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from forensics import schema
from forensics.traces.table import NAT_NS, as_ns, string_series


def _keys(frame: pd.DataFrame, column: str) -> pd.Index:
    """``trace_id/<column>`` per row, for hash lookups of (trace, span) pairs.

    A null id never matches (Jaeger's rule: a span with no id is nobody's parent, a null
    parent id names nobody): its key is unique to its row and column, ``\\0column\\0row``.
    """
    joined = pc.binary_join_element_wise(pa.array(frame["trace_id"].array), pa.array(frame[column].array),
                                         pa.scalar("/", pa.large_string()))
    if joined.null_count:
        alone = pc.binary_join_element_wise(f"\0{column}\0", pc.cast(pa.array(np.arange(len(frame))), pa.string()),
                                            "")
        joined = pc.coalesce(joined, pc.cast(alone, joined.type))
    return pd.Index(string_series(joined))


@dataclass(frozen=True)
class Structure:
    """Parent links of a spans frame with one row per (trace_id, span_id): positions, not ids."""

    frame: pd.DataFrame
    """The spans, first occurrence of each (trace_id, span_id), index reset."""
    rows: np.ndarray
    """Position in ``frame`` of each row of the spans given (a duplicate: its first copy's)."""
    parent: np.ndarray
    """Row position of the parent, -1 for a root or an orphan (parent not in the trace)."""
    root: np.ndarray
    """Row position of the root of the span's tree, -1 when the span hangs under a cycle."""
    depth: np.ndarray
    """0 for roots, -1 under a cycle."""
    start: np.ndarray
    end: np.ndarray
    """Start and end, int64 ns, :data:`~forensics.traces.table.NAT_NS` when not known."""


def structure_of(spans: pd.DataFrame) -> Structure:
    all_keys = _keys(spans, "span_id")
    first = ~all_keys.duplicated(keep="first")
    frame = spans.loc[first].reset_index(drop=True)
    keys = all_keys[first]
    parent = keys.get_indexer(_keys(frame, "parent_span_id")).astype("int64")
    n = len(frame)
    pos = np.arange(n)
    # Pointer jumping: after k rounds every span knows its 2^k-th ancestor and the distance;
    # roots point at themselves, so log2(n) rounds reach the root of every acyclic chain.
    jump = np.where(parent >= 0, parent, pos)
    dist = (parent >= 0).astype("int64")
    for _ in range(max(1, int(np.ceil(np.log2(max(n, 2)))) + 1)):
        dist = dist + dist[jump]
        jump = jump[jump]
    reached = parent[jump] < 0 if n else np.zeros(0, bool)
    root = np.where(reached, jump, -1)
    depth = np.where(reached, dist, -1)
    return Structure(frame, keys.get_indexer(all_keys), parent, root, depth, as_ns(frame["start"]),
                     as_ns(frame["end"]))


def _cycle_members(st: Structure) -> np.ndarray:
    """Positions on a reference cycle (each is its own ancestor); spans merely below one are not."""
    on_cycle = np.zeros(len(st.parent), bool)
    state: dict[int, int] = {}
    for s in np.flatnonzero(st.root < 0):
        path, node = [], int(s)
        while node >= 0 and node not in state:
            state[node] = 1
            path.append(node)
            node = int(st.parent[node])
        if node >= 0 and state.get(node) == 1 and node in path:
            on_cycle[path[path.index(node):]] = True
        for p in path:
            state[p] = 2
    return on_cycle


def span_flags(spans: pd.DataFrame) -> pd.DataFrame:
    """Data-quality flags, one row per row of ``spans`` (same order and index).

    Columns: trace_id, span_id and the boolean flags
    - ``orphan``: the span names a parent that is not in the trace (not sampled, not
      flushed yet, or lost);
    - ``clock_skew``: the span starts before its parent or ends after it (host clocks
      disagree, or an asynchronous child outlives its caller); ``skew_ms`` is the larger
      overhang in milliseconds;
    - ``duplicate_span_id``: another row of the same trace has this span id (every copy is flagged);
    - ``cycle``: the span lies on a reference cycle (A's parent is B, B's parent is A), so
      the trace has no single root there.
    """
    st = structure_of(spans)
    pos = st.rows
    parent = st.parent[pos]
    has_parent_ref = spans["parent_span_id"].notna().to_numpy()
    start, end = as_ns(spans["start"]), as_ns(spans["end"])
    timed = (parent >= 0) & (start != NAT_NS) & (end != NAT_NS)  # times not known: no skew to tell
    timed[timed] &= (st.start[parent[timed]] != NAT_NS) & (st.end[parent[timed]] != NAT_NS)
    pstart = np.where(timed, st.start[parent], 0)
    pend = np.where(timed, st.end[parent], 0)
    before = np.where(timed, pstart - start, 0)
    after = np.where(timed, end - pend, 0)
    skew = timed & ((before > 0) | (after > 0))
    on_cycle = _cycle_members(st)[pos]
    return pd.DataFrame({
        "trace_id": spans["trace_id"].to_numpy(),
        "span_id": spans["span_id"].to_numpy(),
        "orphan": has_parent_ref & (parent < 0) & ~on_cycle,
        "clock_skew": skew,
        "skew_ms": np.where(skew, np.maximum(before, after) / 1e6, 0.0),
        "duplicate_span_id": _keys(spans, "span_id").duplicated(keep=False),
        "cycle": on_cycle,
    }, index=spans.index).astype({"trace_id": schema.STR, "span_id": schema.STR, "orphan": schema.BOOL,
                                  "clock_skew": schema.BOOL, "duplicate_span_id": schema.BOOL,
                                  "cycle": schema.BOOL})


def _self_ns(st: Structure) -> np.ndarray:
    """Span duration minus the union of its children's intervals clipped to the span (ns, float);
    NaN for a span whose times are not known, whose children of unknown times do not count."""
    n = len(st.parent)
    known = (st.start != NAT_NS) & (st.end != NAT_NS)
    child = np.flatnonzero((st.parent >= 0) & known)
    child = child[known[st.parent[child]]]
    par = st.parent[child]
    cs = np.maximum(st.start[child], st.start[par])
    ce = np.minimum(st.end[child], st.end[par])
    keep = ce > cs
    par, cs, ce = par[keep], cs[keep], ce[keep]
    order = np.lexsort((cs, par))
    par, cs, ce = par[order], cs[order], ce[order]
    # Union length per parent: each interval adds what reaches past the furthest end so far.
    reach = pd.Series(ce).groupby(par).cummax().to_numpy()
    prev = np.empty_like(reach)
    if len(reach):
        prev[0] = np.iinfo("int64").min
        prev[1:] = reach[:-1]
        prev[np.r_[True, par[1:] != par[:-1]]] = np.iinfo("int64").min
    covered = np.clip(ce - np.maximum(cs, prev), 0, None)
    total = np.bincount(par, weights=covered, minlength=n) if len(par) else np.zeros(n)
    return np.where(known, np.clip((st.end - st.start) - total, 0, None), np.nan)


def span_tree(spans: pd.DataFrame) -> pd.DataFrame:
    """Each trace's tree: one row per span (first copy of a duplicated id), in depth-first order.

    Columns: trace_id, span_id, parent_span_id, root_span_id (the root of the span's tree;
    an orphan is the root of its own), depth (0 = root; <NA> under a cycle), children,
    service, operation, start, end, duration_ms, self_ms (duration minus the union of its
    children's time, clipped to the span), error.
    """
    st = structure_of(spans)
    f = st.frame
    children = np.bincount(st.parent[st.parent >= 0], minlength=len(f))
    root_ids = f["span_id"].to_numpy()[np.where(st.root >= 0, st.root, 0)] if len(f) else np.array([])
    out = pd.DataFrame({
        "trace_id": f["trace_id"],
        "span_id": f["span_id"],
        "parent_span_id": f["parent_span_id"],
        "root_span_id": pd.Series(root_ids, dtype=schema.STR).where(st.root >= 0),
        "depth": pd.Series(st.depth).where(st.depth >= 0).astype(schema.INT),
        "children": pd.array(children, dtype=schema.INT),
        "service": f["service"],
        "operation": f["operation"],
        "start": f["start"],
        "end": f["end"],
        "duration_ms": f["duration_ms"],
        "self_ms": _self_ns(st) / 1e6,
        "error": f["error"],
    })
    order = _depth_first(st)
    return out.iloc[order].reset_index(drop=True)


def _depth_first(st: Structure) -> np.ndarray:
    """Row positions in depth-first order, children by start time; spans under cycles last."""
    kids: dict[int, list[int]] = defaultdict(list)
    by_start = np.argsort(st.start, kind="stable")
    for c in by_start:
        if st.parent[c] >= 0:
            kids[int(st.parent[c])].append(int(c))
    trace_ids = st.frame["trace_id"].to_numpy()
    roots = [int(r) for r in by_start if st.parent[r] < 0]
    roots.sort(key=lambda r: (trace_ids[r], st.start[r]))
    out: list[int] = []
    stack = roots[::-1]
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(reversed(kids.get(node, ())))
    seen = np.zeros(len(st.parent), bool)
    seen[out] = True
    return np.concatenate([np.array(out, dtype="int64"), np.flatnonzero(~seen)])


# ---------------------------------------------------------------------------------------------
# critical path
