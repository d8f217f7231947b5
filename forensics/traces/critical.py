"""The critical path of a trace: the chain of work that set its end, as the Jaeger UI finds it.

Method (the Jaeger UI's, ``packages/jaeger-ui/src/components/TracePage/CriticalPath``), per
tree of the trace (each root, in order of start):

1. Prune non-blocking children, with their subtrees: a child whose parent link is a
   FOLLOWS_FROM reference (the parent did not wait for it), and a CONSUMER span under a
   PRODUCER span (a Kafka hop: the producer returns once the record is written; the
   consumer's work is another stretch of time). The UI's ``createCPSpanMap`` /
   ``getChildOfSpans``.
2. Clip children to their (already clipped) parent, top down: a child that starts before
   its parent or ends after it (clock skew, or an asynchronous child) is cut to the
   parent's span; a child wholly outside it (starting at or after the parent's end, or
   ending at or before its start) is dropped with its subtree. The UI's
   ``sanitizeOverFlowingChildren``.
3. Walk back from the end of the root. At a span with no cursor, take the child that
   finishes last (its *last finishing child*); with a cursor ``t``, the child that
   finishes last strictly before ``t``. The time from that child's end to ``t`` (the
   span's own end without a cursor) is a section of the path owned by the span; then
   descend into the child, without a cursor.
4. A span with no such child owns everything from its own start to ``t`` (or its end);
   the walk returns to its parent with the cursor at this span's start, so the next child
   taken is one that finished before this span began. The walk ends back at the root.
   Empty sections (start = end) are left out.

Ties between children ending at the same time go to the first child in the UI's order:
by start time, then by document order (the order of the spans in the file or answer).
So, as in the UI, of two back-to-back calls (one ending exactly when the next starts) the
first falls off the path and its time goes to the parent: it does not end strictly before
the second started.

Spans whose parent is missing (orphans) root trees of their own and get a path each, as
in the UI; spans under a reference cycle have no root and no path; spans whose start or
duration is not known (unreadable in the file) are left out with their subtrees.
Duplicated span ids: the first copy counts. Iterative (no recursion limit); O(n log n)
per trace.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

import numpy as np
import pandas as pd

from forensics import schema
from forensics.traces.parents import FOLLOWS_FROM
from forensics.traces.structure import structure_of
from forensics.traces.table import NAT_NS


def _critical_sections(kids: dict[int, list[int]], parent: np.ndarray, start: np.ndarray, end: np.ndarray,
                       root: int) -> list[tuple[int, int, int]]:
    """Critical-path sections (span position, section start ns, section end ns) of one tree.

    ``kids[p]``: the blocking children of p in the UI's order (start, then document order).
    See the module docstring for the method.
    """
    # 2. clip top down (a parent is clipped before its children are looked at)
    cs: dict[int, int] = {root: int(start[root])}
    ce: dict[int, int] = {root: int(end[root])}
    rank: dict[int, int] = {}
    queue = [root]
    for node in queue:
        ps, pe = cs[node], ce[node]
        for r, c in enumerate(kids.get(node, ())):
            s, e = int(start[c]), int(end[c])
            if (s >= pe) if s >= ps else (e <= ps):
                continue
            cs[c], ce[c], rank[c] = max(s, ps), min(e, pe), r
            queue.append(c)
    # children by clipped end; of equal ends the first in the UI's order comes last, where
    # the walk looks first
    ordered: dict[int, list[int]] = {}
    ends: dict[int, list[int]] = {}
    for node in queue:
        live = sorted((c for c in kids.get(node, ()) if c in cs), key=lambda c: (ce[c], -rank[c]))
        if live:
            ordered[node], ends[node] = live, [ce[c] for c in live]
    # 3./4. the walk back from the root's end
    sections: list[tuple[int, int, int]] = []
    node, cursor = root, None
    while True:
        limit = ce[node] if cursor is None else cursor
        child = None
        if node in ordered:
            i = len(ordered[node]) - 1 if cursor is None else bisect.bisect_left(ends[node], cursor) - 1
            child = ordered[node][i] if i >= 0 else None
        if child is not None:
            if ce[child] != limit:
                sections.append((node, ce[child], limit))
            node, cursor = child, None
            continue
        if cs[node] != limit:
            sections.append((node, cs[node], limit))
        if node == root:
            return sections
        node, cursor = int(parent[node]), cs[node]


def _blocking_children(parent: np.ndarray, start: np.ndarray, end: np.ndarray, ref_type: np.ndarray,
                       kind: np.ndarray) -> dict[int, list[int]]:
    """Each span's blocking children (step 1) with known times, by start then document order."""
    child = np.flatnonzero((parent >= 0) & (start != NAT_NS) & (end != NAT_NS))
    par = parent[child]
    blocking = (ref_type[child] != FOLLOWS_FROM) & ~((kind[par] == "producer") & (kind[child] == "consumer"))
    child = child[blocking]
    kids: dict[int, list[int]] = defaultdict(list)
    for c in child[np.lexsort((child, start[child]))]:
        kids[int(parent[c])].append(int(c))
    return kids


def critical_path(spans: pd.DataFrame, trace_id: str | None = None) -> pd.DataFrame:
    """The critical path of each trace (or of ``trace_id``): the chain of work that set its end.

    The Jaeger UI's method, described in this module's docstring (pruning of non-blocking
    FOLLOWS_FROM and producer -> consumer children, clipping, the walk back from the end
    with ties to the first child).

    Returns one row per section, ordered by trace, root and time: trace_id, root_span_id,
    span_id, service, operation, section_start, section_end (UTC), section_ms.
    """
    if trace_id is not None:
        spans = spans[spans["trace_id"] == trace_id.lower().rjust(32, "0")]
    st = structure_of(spans)
    f = st.frame
    ref_type = f["parent_ref_type"].to_numpy(dtype=object, na_value=None)
    kind = f["kind"].str.lower().to_numpy(dtype=object, na_value=None)
    rows_span, rows_root, rows_s, rows_e = [], [], [], []
    trace_codes, _ = pd.factorize(f["trace_id"])
    order = np.argsort(trace_codes, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(trace_codes[order]) != 0, True])
    for a, b in zip(bounds[:-1], bounds[1:], strict=False):
        idx = order[a:b]
        local = np.full(len(st.parent), -1, dtype="int64")
        local[idx] = np.arange(len(idx))
        parent = np.where(st.parent[idx] >= 0, local[st.parent[idx]], -1)
        start, end = st.start[idx], st.end[idx]
        kids = _blocking_children(parent, start, end, ref_type[idx], kind[idx])
        roots = [r for r in np.flatnonzero(parent < 0)
                 if st.root[idx[r]] >= 0 and start[r] != NAT_NS and end[r] != NAT_NS]
        roots.sort(key=lambda r: start[r])
        for r in roots:
            for node, s, e in _critical_sections(kids, parent, start, end, int(r)):
                rows_span.append(idx[node])
                rows_root.append(idx[r])
                rows_s.append(s)
                rows_e.append(e)
    span_pos = np.array(rows_span, dtype="int64")
    s_ns, e_ns = np.array(rows_s, dtype="int64"), np.array(rows_e, dtype="int64")
    out = pd.DataFrame({
        "trace_id": f["trace_id"].to_numpy()[span_pos],
        "root_span_id": f["span_id"].to_numpy()[np.array(rows_root, dtype="int64")],
        "span_id": f["span_id"].to_numpy()[span_pos],
        "service": f["service"].to_numpy()[span_pos],
        "operation": f["operation"].to_numpy()[span_pos],
        "section_start": pd.Series(s_ns.view("datetime64[ns]")).dt.tz_localize("UTC"),
        "section_end": pd.Series(e_ns.view("datetime64[ns]")).dt.tz_localize("UTC"),
        "section_ms": (e_ns - s_ns) / 1e6,
    }).astype({c: schema.STR for c in ("trace_id", "root_span_id", "span_id", "service", "operation")})
    return out.sort_values(["trace_id", "root_span_id", "section_start"], kind="stable").reset_index(drop=True)
