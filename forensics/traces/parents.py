"""Jaeger's parent rule: which of a span's references names its parent.

Jaeger (``model.Span.ParentSpanID``, and the query service's parent-reference adjuster
that the UI relies on) takes the first CHILD_OF reference that points into the span's own
trace; without one, the first FOLLOWS_FROM reference into its own trace. A reference into
another trace is never the parent (the span is then a root of its trace, not an orphan),
and a reference without a span id never matches anything. A reference that names no trace
is taken as one into the span's own trace (hand-written files, Thrift ``parentSpanId``).

Reference types are read as Jaeger's JSON writers spell them: ``CHILD_OF``,
``child_of``, ``child-of`` (and FOLLOWS_FROM alike); others are kept as links only.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forensics.traces.table import normalise_ids

CHILD_OF, FOLLOWS_FROM = "CHILD_OF", "FOLLOWS_FROM"


def reference_types(ref_type: pa.Array) -> pa.Array:
    """Reference types in Jaeger's spelling (``child-of`` -> ``CHILD_OF``); null stays null."""
    return pc.replace_substring(pc.utf8_upper(ref_type), "-", "_")


def jaeger_parents(owner: np.ndarray, ref_type: pa.Array, ref_trace: pa.Array, ref_span: pa.Array,
                   span_trace: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Each span's parent span id and the type of the reference it came from, by Jaeger's rule.

    ``owner[j]``, ``ref_type[j]`` (:func:`reference_types` spelling), ``ref_trace[j]`` and
    ``ref_span[j]`` describe reference j (ids as written: they are compared after
    normalisation); ``span_trace[i]`` is span i's trace id. Returns two string arrays of
    ``len(span_trace)``: parent span id (null for a root) and ``CHILD_OF``/``FOLLOWS_FROM``.
    """
    n = len(span_trace)
    parent = np.full(n, -1, dtype="int64")
    kind = np.zeros(n, dtype="int8")  # 0 none, 1 CHILD_OF, 2 FOLLOWS_FROM
    if len(owner):
        own_trace = normalise_ids(pc.take(span_trace, pa.array(owner)), 32)
        same = pc.or_kleene(pc.is_null(ref_trace), pc.equal(normalise_ids(ref_trace, 32), own_trace))
        usable = pc.and_(pc.fill_null(same, False), pc.is_valid(ref_span))
        for code, name in ((2, FOLLOWS_FROM), (1, CHILD_OF)):  # CHILD_OF last: it wins
            hit = np.flatnonzero(pc.fill_null(pc.and_(usable, pc.equal(ref_type, name)), False).to_numpy(
                zero_copy_only=False))
            owners, first = np.unique(owner[hit], return_index=True)  # first reference of each span
            parent[owners] = hit[first]
            kind[owners] = code
    span_id = pc.take(ref_span, pa.array(parent, mask=parent < 0))
    names = pa.array([None, CHILD_OF, FOLLOWS_FROM], pa.string())
    return span_id, pc.take(names, pa.array(kind))
