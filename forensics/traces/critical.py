"""The critical path of a trace."""

from __future__ import annotations

import bisect
from collections import defaultdict

import numpy as np
import pandas as pd

from forensics import schema
from forensics.traces.structure import structure_of


def _critical_sections(parent: np.ndarray, start: np.ndarray, end: np.ndarray, root: int
                       ) -> list[tuple[int, int, int]]:
    """Critical-path sections (span position, section start ns, section end ns) of one tree.

    See :func:`critical_path` for the method. Works on positions within one trace.
    """
    # 1. Clip children to their (already clipped) parent, top down; drop children that lie
    #    wholly outside it, and with them their subtrees.
    kids: dict[int, list[int]] = defaultdict(list)
    for c in np.flatnonzero(parent >= 0):
        kids[int(parent[c])].append(int(c))
    cs: dict[int, int] = {root: int(start[root])}
    ce: dict[int, int] = {root: int(end[root])}
    queue = [root]
    for node in queue:
        ps, pe = cs[node], ce[node]
        for c in kids.get(node, ()):
            s, e = int(start[c]), int(end[c])
            if (s >= pe) if s >= ps else (e <= ps):
                continue
            cs[c], ce[c] = max(s, ps), min(e, pe)
            queue.append(c)
    # 2. Children of each span sorted by clipped end (ties: the earlier start wins).
    ends: dict[int, list[int]] = {}
    order: dict[int, list[int]] = {}
    for node in queue:
        live = sorted((c for c in kids.get(node, ()) if c in cs), key=lambda c: (ce[c], -cs[c]))
        if live:
            order[node] = live
            ends[node] = [ce[c] for c in live]
    # 3. Walk back from the root's end.
    sections: list[tuple[int, int, int]] = []
    node, cursor = root, None
    while True:
        limit = ce[node] if cursor is None else cursor
        child = None
        if node in order:
            live, live_ends = order[node], ends[node]
            i = bisect.bisect_right(live_ends, limit) - 1
            # a child ending at the cursor counts (back-to-back siblings); the child we
            # returned from, or a zero-length one at the cursor, does not
            while i >= 0 and cs[live[i]] >= limit and cursor is not None:
                i -= 1
            child = live[i] if i >= 0 else None
        if child is not None:
            if ce[child] < limit:
                sections.append((node, ce[child], limit))
            node, cursor = child, None
            continue
        if cs[node] < limit:
            sections.append((node, cs[node], limit))
        if node == root:
            break
        node, cursor = int(parent[node]), cs[node]
    return sections


def critical_path(spans: pd.DataFrame, trace_id: str | None = None) -> pd.DataFrame:
    """The critical path of each trace (or of ``trace_id``): the chain of work that set its end.

    Method (Jaeger UI's, ``TracePage/CriticalPath``), per tree of the trace:

    1. Clip children to their parent, top down: a child that starts before its parent or
       ends after it (clock skew, or an asynchronous child) is cut to the parent's span; a
       child wholly outside its parent is dropped with its subtree. A parent can only wait
       on work inside its own span.
    2. Walk back from the end of the root. At a span with cursor ``t`` (its end at first),
       take the last-finishing child that ends at or before ``t``. The time between that
       child's end and ``t`` belongs to the span itself (a section of the path); then
       descend into the child and repeat from its end.
    3. A span with no such child owns everything from its own start to ``t``; the walk
       then returns to the parent with the cursor moved to this span's start, so the next
       child taken is one that had finished before this span began.
    4. Overlapping siblings: of children running at the same time only the one that
       finished last is on the path; a sibling that ends after the cursor (it overlaps the
       child already walked) is skipped, its time is not blocking.

    One deliberate difference from the UI: it takes children ending strictly before the
    cursor, so a child that ends exactly when the next one starts (back-to-back sequential
    calls) falls off the path and its time goes to the parent. Here a child ending at the
    cursor counts; the child just returned from is excluded by its start.

    Spans whose parent is missing (orphans) root trees of their own and get a path each;
    spans under a reference cycle have no root and no path. Duplicated span ids: the first
    copy counts. Iterative (no recursion limit); O(n log n) per trace.

    Returns one row per section, ordered by trace, root and time: trace_id, root_span_id,
    span_id, service, operation, section_start, section_end (UTC), section_ms.
    """
    if trace_id is not None:
        spans = spans[spans["trace_id"] == trace_id.lower().rjust(32, "0")]
    st = structure_of(spans)
    rows_span, rows_root, rows_s, rows_e = [], [], [], []
    trace_codes, _ = pd.factorize(st.frame["trace_id"])
    order = np.argsort(trace_codes, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(trace_codes[order]) != 0, True])
    for a, b in zip(bounds[:-1], bounds[1:], strict=False):
        idx = order[a:b]
        local = np.full(len(st.parent), -1, dtype="int64")
        local[idx] = np.arange(len(idx))
        parent = np.where(st.parent[idx] >= 0, local[st.parent[idx]], -1)
        start, end = st.start[idx], st.end[idx]
        roots = [r for r in np.flatnonzero(parent < 0) if st.root[idx[r]] >= 0]
        roots.sort(key=lambda r: start[r])
        for r in roots:
            for node, s, e in _critical_sections(parent, start, end, int(r)):
                rows_span.append(idx[node])
                rows_root.append(idx[r])
                rows_s.append(s)
                rows_e.append(e)
    f = st.frame
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
