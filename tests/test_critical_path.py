"""Critical path, one named case per situation (after Jaeger UI's CriticalPath/testCases).

Each case is a small trace drawn in microseconds; the expected path is a list of
(span, section start, section end), in time order.
"""

from __future__ import annotations

import pandas as pd
import pytest

from forensics.traces import critical_path, parse_traces

T0 = 1_765_000_000_000_000  # µs since epoch


def _id(name: str) -> str:
    return name.encode().hex().rjust(16, "0")[-16:]


def trace(*spans: tuple, trace_id: str = "7" * 32):
    """Spans as (name, parent name or None, start µs, end µs) -> a spans frame via the v1 parser."""
    return parse_traces({"traceID": trace_id, "processes": {"p1": {"serviceName": "svc"}}, "spans": [
        {"traceID": trace_id, "spanID": _id(name), "operationName": name, "processID": "p1",
         "startTime": T0 + start, "duration": end - start,
         "references": [{"refType": "CHILD_OF", "spanID": _id(parent)}] if parent else []}
        for name, parent, start, end in spans]})


def path(spans, trace_id: str | None = None) -> list[tuple[str, int, int]]:
    cp = critical_path(spans, trace_id)
    names = dict(zip(spans["span_id"], spans["operation"], strict=True))
    return [(names[s], (a.value // 1000) - T0, (b.value // 1000) - T0)
            for s, a, b in zip(cp["span_id"], cp["section_start"], cp["section_end"], strict=True)]


def test_single_span():
    assert path(trace(("X", None, 0, 100))) == [("X", 0, 100)]


def test_sequential_children():
    spans = trace(("X", None, 0, 100), ("A", "X", 10, 40), ("B", "X", 50, 90))
    assert path(spans) == [("X", 0, 10), ("A", 10, 40), ("X", 40, 50), ("B", 50, 90), ("X", 90, 100)]


def test_sequential_children_touching_stay_on_the_path():
    # The UI takes children ending strictly before the cursor and would hand A's time to X.
    spans = trace(("X", None, 0, 100), ("A", "X", 10, 50), ("B", "X", 50, 90))
    assert path(spans) == [("X", 0, 10), ("A", 10, 50), ("B", 50, 90), ("X", 90, 100)]


def test_overlapping_siblings():
    # Jaeger UI test2: C finishes last; A overlaps C's start so it is not blocking.
    spans = trace(("X", None, 1, 101), ("A", "X", 10, 50), ("C", "X", 20, 60))
    assert path(spans) == [("X", 1, 20), ("C", 20, 60), ("X", 60, 101)]


def test_overlapping_siblings_the_earlier_one_counts_once_it_ended_before():
    spans = trace(("X", None, 0, 100), ("A", "X", 5, 30), ("B", "X", 10, 20), ("C", "X", 40, 90))
    assert path(spans) == [("X", 0, 5), ("A", 5, 30), ("X", 30, 40), ("C", 40, 90), ("X", 90, 100)]


def test_child_outliving_parent_is_clipped():
    # clock skew or an async child: only the part inside the parent can hold the parent up
    spans = trace(("X", None, 0, 100), ("A", "X", 50, 150))
    assert path(spans) == [("X", 0, 50), ("A", 50, 100)]


def test_child_starting_before_parent_is_clipped():
    spans = trace(("X", None, 100, 200), ("A", "X", 50, 150))
    assert path(spans) == [("A", 100, 150), ("X", 150, 200)]


def test_child_wholly_outside_parent_is_dropped_with_its_subtree():
    spans = trace(("X", None, 0, 100), ("A", "X", 120, 150), ("A1", "A", 125, 130))
    assert path(spans) == [("X", 0, 100)]


def test_nested_overlap():
    spans = trace(("X", None, 0, 100), ("A", "X", 10, 90), ("A1", "A", 20, 60), ("A2", "A", 40, 85),
                  ("A2a", "A2", 50, 70))
    assert path(spans) == [("X", 0, 10), ("A", 10, 40), ("A2", 40, 50), ("A2a", 50, 70), ("A2", 70, 85),
                           ("A", 85, 90), ("X", 90, 100)]


def test_grandchild_clipped_to_its_clipped_parent():
    # A is cut to end at 100, so A1 (90..130) is cut to 90..100 as well
    spans = trace(("X", None, 0, 100), ("A", "X", 50, 150), ("A1", "A", 90, 130))
    assert path(spans) == [("X", 0, 50), ("A", 50, 90), ("A1", 90, 100)]


def test_orphan_root_gets_a_path_of_its_own():
    spans = trace(("X", None, 0, 100), ("Y", "lost", 200, 250), ("Y1", "Y", 210, 240))
    cp = critical_path(spans)
    assert path(spans) == [("X", 0, 100), ("Y", 200, 210), ("Y1", 210, 240), ("Y", 240, 250)]
    assert set(cp["root_span_id"]) == {_id("X"), _id("Y")}


def test_zero_length_child_does_not_loop():
    spans = trace(("X", None, 0, 100), ("Z", "X", 50, 50))
    assert sum(b - a for _, a, b in path(spans)) == 100
    assert {name for name, _, _ in path(spans)} == {"X"}


def test_children_ending_together_the_earlier_start_wins():
    spans = trace(("X", None, 0, 100), ("A", "X", 10, 80), ("B", "X", 30, 80))
    assert path(spans) == [("X", 0, 10), ("A", 10, 80), ("X", 80, 100)]


def test_spans_on_a_reference_cycle_have_no_path():
    spans = trace(("X", None, 0, 100), ("P", "Q", 10, 20), ("Q", "P", 10, 20))
    assert path(spans) == [("X", 0, 100)]


def test_duplicate_span_id_first_copy_counts():
    spans = trace(("X", None, 0, 100), ("A", "X", 10, 30), ("A", "X", 60, 90))
    assert path(spans) == [("X", 0, 10), ("A", 10, 30), ("X", 30, 100)]


def test_several_traces_and_one_trace_by_its_short_id():
    a = trace(("X", None, 0, 100), trace_id="1" * 32)
    b = trace(("Y", None, 0, 50), ("Y1", "Y", 10, 20), trace_id="0" * 16 + "2" * 16)
    both = pd.concat([a, b], ignore_index=True)
    assert [s for s, _, _ in path(both)] == ["Y", "Y1", "Y", "X"]  # ordered by trace id
    assert path(both, "2" * 16) == [("Y", 0, 10), ("Y1", 10, 20), ("Y", 20, 50)]


def test_sections_cover_the_root_exactly_once():
    spans = trace(("X", None, 0, 1000), *[(f"C{i}", "X", 10 * i, 10 * i + 35) for i in range(1, 90)])
    p = path(spans)
    assert sum(b - a for _, a, b in p) == 1000
    assert all(p[i][2] == p[i + 1][1] for i in range(len(p) - 1))


@pytest.mark.parametrize("depth", [5_000])
def test_deep_chain_needs_no_recursion(depth):
    spans = trace(*[(f"s{i}", f"s{i - 1}" if i else None, i, 2 * depth - i) for i in range(depth)])
    p = path(spans)
    assert len(p) == 2 * depth - 1
    assert p[len(p) // 2][0] == f"s{depth - 1}"
