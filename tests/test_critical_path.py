"""Critical path, one named case per situation: the Jaeger UI's nine CriticalPath/testCases
(``packages/jaeger-ui/src/components/TracePage/CriticalPath/testCases/test1..9``, rewritten
here as our own fixtures), then cases of our own, the Kafka producer/consumer hops first.

Each case is a small trace drawn in microseconds; the expected path is a list of
(span, section start, section end), in time order (the UI lists the same sections from the
end back).
"""

from __future__ import annotations

import pandas as pd
import pytest

from forensics.traces import critical_path, parse_traces

T0 = 1_765_000_000_000_000  # µs since epoch


def _id(name: str) -> str:
    return name.encode().hex().rjust(16, "0")[-16:]


def trace(*spans: tuple, trace_id: str = "7" * 32):
    """Spans as (name, parent name or None, start µs, end µs[, reference type[, span kind]])
    -> a spans frame via the v1 parser, in the order given (document order)."""
    def span(name, parent, start, end, ref="CHILD_OF", kind=None):
        return {"traceID": trace_id, "spanID": _id(name), "operationName": name, "processID": "p1",
                "startTime": T0 + start, "duration": end - start,
                "references": [{"refType": ref, "traceID": trace_id, "spanID": _id(parent)}] if parent else [],
                "tags": [{"key": "span.kind", "type": "string", "value": kind}] if kind else []}
    return parse_traces({"traceID": trace_id, "processes": {"p1": {"serviceName": "svc"}},
                         "spans": [span(*s) for s in spans]})


def path(spans, trace_id: str | None = None) -> list[tuple[str, int, int]]:
    cp = critical_path(spans, trace_id)
    names = dict(zip(spans["span_id"], spans["operation"], strict=True))
    return [(names[s], (a.value // 1000) - T0, (b.value // 1000) - T0)
            for s, a, b in zip(cp["span_id"], cp["section_start"], cp["section_end"], strict=True)]


# ---- the Jaeger UI's test cases ----------------------------------------------------------

def test_ui_case_1_sequential_children_listed_out_of_order():
    spans = trace(("E", "C", 50, 60), ("C", None, 1, 101), ("D", "C", 20, 40))
    assert path(spans) == [("C", 1, 20), ("D", 20, 40), ("C", 40, 50), ("E", 50, 60), ("C", 60, 101)]


def test_ui_case_2_overlapping_siblings_the_last_finishing_one_wins():
    spans = trace(("X", None, 1, 101), ("A", "X", 10, 50), ("C", "X", 20, 60))
    assert path(spans) == [("X", 1, 20), ("C", 20, 60), ("X", 60, 101)]


def test_ui_case_3_child_starting_after_its_parent_ended_is_dropped():
    spans = trace(("A", None, 100, 140, "CHILD_OF", "producer"), ("B", "A", 200, 500, "CHILD_OF", "client"))
    assert path(spans) == [("A", 100, 140)]


def test_ui_case_4_child_after_its_parent_is_dropped_with_its_subtree():
    spans = trace(("A", None, 1, 31), ("B", "A", 40, 80), ("C", "B", 50, 60))
    assert path(spans) == [("A", 1, 31)]


def test_ui_case_5_follows_from_child_is_not_blocking():
    spans = trace(("A", None, 1, 31), ("B", "A", 10, 20, "FOLLOWS_FROM"), ("C", "B", 12, 14))
    assert path(spans) == [("A", 1, 31)]


def test_ui_case_6_grandchild_starting_before_its_clipped_parent():
    spans = trace(("A", None, 1, 30), ("B", "A", 15, 35), ("C", "B", 10, 25))
    assert path(spans) == [("A", 1, 15), ("C", 15, 25), ("B", 25, 30)]


def test_ui_case_7_chain_overflowing_the_root():
    spans = trace(("A", None, 1, 30), ("B", "A", 15, 35), ("C", "B", 20, 40))
    assert path(spans) == [("A", 1, 15), ("B", 15, 20), ("C", 20, 30)]


def test_ui_case_8_child_longer_than_parent_on_both_sides():
    spans = trace(("A", None, 10, 30), ("B", "A", 5, 35))
    assert path(spans) == [("B", 10, 30)]


def test_ui_case_9_child_ending_before_its_parent_started_is_dropped():
    spans = trace(("A", None, 10, 30), ("B", "A", 1, 5))
    assert path(spans) == [("A", 10, 30)]


# ---- Kafka hops: producer -> consumer is not blocking ------------------------------------

def test_kafka_consumer_under_the_producer_is_pruned():
    # message-service publishes (producer span); the router's consumer span is its child and
    # runs on long after: the API request did not wait for it
    spans = trace(("POST /messages", None, 0, 100, "CHILD_OF", "server"),
                  ("chat-events send", "POST /messages", 20, 30, "CHILD_OF", "producer"),
                  ("chat-events process", "chat-events send", 25, 400, "CHILD_OF", "consumer"),
                  ("route", "chat-events process", 30, 390, "CHILD_OF", "internal"))
    assert path(spans) == [("POST /messages", 0, 20), ("chat-events send", 20, 30), ("POST /messages", 30, 100)]


def test_kafka_consumer_linked_by_follows_from_is_pruned():
    spans = trace(("send", None, 0, 50, "CHILD_OF", "producer"),
                  ("process", "send", 10, 40, "FOLLOWS_FROM", "consumer"))
    assert path(spans) == [("send", 0, 50)]


def test_consumer_under_a_non_producer_still_blocks():
    # a consumer span inside the router's own work (a poll loop) holds the router up
    spans = trace(("poll", None, 0, 100, "CHILD_OF", "internal"),
                  ("process", "poll", 10, 60, "CHILD_OF", "consumer"))
    assert path(spans) == [("poll", 0, 10), ("process", 10, 60), ("poll", 60, 100)]


def test_producer_child_of_a_consumer_blocks_the_consumer():
    # the router consumes, then publishes to the connector topic before committing
    spans = trace(("process", None, 0, 100, "CHILD_OF", "consumer"),
                  ("send whatsapp", "process", 40, 70, "CHILD_OF", "producer"))
    assert path(spans) == [("process", 0, 40), ("send whatsapp", 40, 70), ("process", 70, 100)]


def test_consumer_trace_of_its_own_gets_its_path():
    # when the consumer starts a trace of its own (no propagated context) it is a root
    a = trace(("send", None, 0, 10, "CHILD_OF", "producer"), trace_id="1" * 32)
    b = trace(("process", None, 20, 80, "CHILD_OF", "consumer"), ("deliver", "process", 30, 70), trace_id="2" * 32)
    assert path(pd.concat([a, b], ignore_index=True)) == [
        ("send", 0, 10), ("process", 20, 30), ("deliver", 30, 70), ("process", 70, 80)]


# ---- our own cases -----------------------------------------------------------------------

def test_single_span():
    assert path(trace(("X", None, 0, 100))) == [("X", 0, 100)]


def test_sequential_children():
    spans = trace(("X", None, 0, 100), ("A", "X", 10, 40), ("B", "X", 50, 90))
    assert path(spans) == [("X", 0, 10), ("A", 10, 40), ("X", 40, 50), ("B", 50, 90), ("X", 90, 100)]


def test_back_to_back_children_the_first_falls_off_as_in_the_ui():
    # the UI takes children ending strictly before the cursor: A ends when B starts, so A's
    # time goes to X
    spans = trace(("X", None, 0, 100), ("A", "X", 10, 50), ("B", "X", 50, 90))
    assert path(spans) == [("X", 0, 50), ("B", 50, 90), ("X", 90, 100)]


@pytest.mark.parametrize("first", ["A", "B"])
def test_identical_siblings_the_first_in_document_order_wins(first):
    twins = [("A", "X", 10, 80), ("B", "X", 10, 80)]
    spans = trace(("X", None, 0, 100), *(twins if first == "A" else twins[::-1]))
    assert path(spans) == [("X", 0, 10), (first, 10, 80), ("X", 80, 100)]


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


def test_span_of_unreadable_duration_is_left_out_with_its_subtree():
    spans = trace(("X", None, 0, 100), ("A", "X", 10, 50), ("A1", "A", 20, 40))
    spans.loc[spans["operation"] == "A", ["duration_ms", "end"]] = [float("nan"), pd.NaT]
    assert path(spans) == [("X", 0, 100)]


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
