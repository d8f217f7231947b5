"""Span parsing from every file shape, flags, derived views and correlation with messages."""

from __future__ import annotations

import base64
import json
import re

import pandas as pd
import pytest

from forensics import schema, traces
from forensics.traces import TraceFileError, parse_traces, read_trace_file

T0 = 1_765_000_000_000_000  # µs since epoch
TRACE = "83a9efd15c1c98a977e0711cc93ee28b"
ROOT, CHILD, LEAF = "e127af99e3b3e074", "909541b92cf05311", "00000000000000aa"


def v1_trace(trace_id: str = TRACE) -> dict:
    """A v1 trace as the query API answers it: gateway -> message-service (error) -> producer."""
    return {
        "traceID": trace_id,
        "spans": [
            {"traceID": trace_id, "spanID": ROOT, "operationName": "POST /api/v1/messages", "references": [],
             "startTime": T0, "duration": 120_000, "processID": "p1", "warnings": None,
             "tags": [{"key": "span.kind", "type": "string", "value": "server"},
                      {"key": "http.method", "type": "string", "value": "POST"},
                      {"key": "http.route", "type": "string", "value": "/api/v1/messages"},
                      {"key": "http.url", "type": "string", "value": "http://gw/api/v1/messages?x=1"},
                      {"key": "http.status_code", "type": "int64", "value": 202}]},
            {"traceID": trace_id, "spanID": CHILD.upper(), "operationName": "MessageService.create",
             "references": [{"refType": "FOLLOWS_FROM", "traceID": trace_id, "spanID": "1111111111111111"},
                            {"refType": "CHILD_OF", "traceID": trace_id, "spanID": ROOT}],
             "startTime": T0 + 10_000, "duration": 90_000, "processID": "p2", "warnings": ["clock skew adjusted"],
             "tags": [{"key": "error", "type": "bool", "value": True},
                      {"key": "span.kind", "type": "string", "value": "internal"},
                      {"key": "message_id", "type": "string", "value": "m-1"},
                      {"key": "retries", "type": "int64", "value": "9007199254740993"}],
             "logs": [{"timestamp": T0 + 20_000, "fields": [
                 {"key": "event", "type": "string", "value": "exception"},
                 {"key": "exception.message", "type": "string", "value": "Mongo timeout"}]}]},
            {"traceID": trace_id, "spanID": LEAF, "operationName": "chat-events send",
             "references": [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": CHILD}],
             "startTime": T0 + 60_000, "duration": 10_000, "processID": "p2",
             "tags": [{"key": "span.kind", "type": "string", "value": "producer"},
                      {"key": "otel.status_code", "type": "string", "value": "ERROR"},
                      {"key": "otel.status_description", "type": "string", "value": "topic missing"}]},
        ],
        "processes": {"p1": {"serviceName": "api-gateway", "tags": []},
                      "p2": {"serviceName": "message-service", "tags": []}},
        "warnings": None,
    }


def otlp_doc(b64: bool = False) -> dict:
    """The same trace as OTLP JSON (ids hex, or base64 as some exporters write them)."""
    def tid(h: str) -> str:
        return base64.b64encode(bytes.fromhex(h)).decode() if b64 else h

    def attr(key, value):
        kind = {str: "stringValue", int: "intValue", bool: "boolValue"}[type(value)]
        return {"key": key, "value": {kind: str(value) if kind == "intValue" else value}}

    ns = T0 * 1000
    return {"resourceSpans": [
        {"resource": {"attributes": [attr("service.name", "api-gateway")]},
         "scopeSpans": [{"scope": {"name": "gw"}, "spans": [
             {"traceId": tid(TRACE), "spanId": tid(ROOT), "parentSpanId": "", "name": "POST /api/v1/messages",
              "kind": 2, "startTimeUnixNano": str(ns), "endTimeUnixNano": str(ns + 120_000_000),
              "attributes": [attr("http.request.method", "POST"), attr("http.route", "/api/v1/messages"),
                             attr("http.response.status_code", 202)], "status": {}}]}]},
        {"resource": {"attributes": [attr("service.name", "message-service")]},
         "scopeSpans": [{"scope": {"name": "ms"}, "spans": [
             {"traceId": tid(TRACE), "spanId": tid(CHILD), "parentSpanId": tid(ROOT), "name": "MessageService.create",
              "kind": "SPAN_KIND_INTERNAL", "startTimeUnixNano": str(ns + 10_000_000),
              "endTimeUnixNano": str(ns + 100_000_000), "attributes": [attr("message_id", "m-1")],
              "events": [{"timeUnixNano": str(ns + 20_000_000), "name": "exception",
                          "attributes": [attr("exception.message", "Mongo timeout")]}],
              "status": {"code": "STATUS_CODE_ERROR"}},
             {"traceId": tid(TRACE), "spanId": tid(LEAF), "parentSpanId": tid(CHILD), "name": "chat-events send",
              "kind": 4, "startTimeUnixNano": str(ns + 60_000_000), "endTimeUnixNano": str(ns + 70_000_000),
              "status": {"code": 2, "message": "topic missing"}}]}]},
    ]}


# ---- parsing -----------------------------------------------------------------------------

def test_v1_envelope_gives_the_canonical_table():
    spans = parse_traces({"data": [v1_trace()], "total": 0, "errors": None}, source_object="download.json")
    schema.validate("spans", spans)
    root, child, leaf = (spans.iloc[i] for i in range(3))
    assert list(spans["span_id"]) == [ROOT, CHILD, LEAF]  # lower-cased
    assert pd.isna(root["parent_span_id"]) and child["parent_span_id"] == ROOT  # first CHILD_OF, not FOLLOWS_FROM
    assert list(spans["service"]) == ["api-gateway", "message-service", "message-service"]
    assert (root["kind"], leaf["kind"]) == ("server", "producer")
    assert root["start"] == pd.Timestamp(T0 * 1000, tz="UTC") and root["duration_ms"] == 120.0
    assert root["end"] - root["start"] == pd.Timedelta(milliseconds=120)
    assert (root["http_method"], root["http_route"], root["http_status_code"]) == ("POST", "/api/v1/messages", 202)
    assert json.loads(root["tags"]) == {"http.url": "http://gw/api/v1/messages?x=1"}
    # error tag, exception log as the message when no status description
    assert bool(child["error"]) and child["status_message"] == "Mongo timeout" and child["message_id"] == "m-1"
    assert json.loads(child["tags"]) == {"retries": "9007199254740993", "follows_from": ["1111111111111111"]}
    assert json.loads(child["logs"])[0]["exception.message"] == "Mongo timeout"
    assert child["warnings"] == "clock skew adjusted"
    assert bool(leaf["error"]) and leaf["status_message"] == "topic missing"
    assert not bool(root["error"])
    assert list(spans["source_ref"]) == ["data[0].spans[0]", "data[0].spans[1]", "data[0].spans[2]"]
    assert set(spans["source_object"]) == {"download.json"} and set(spans["source"]) == {"jaeger"}


def test_short_trace_ids_are_left_padded():
    spans = parse_traces(v1_trace("A977E0711CC93EE2"))
    assert set(spans["trace_id"]) == {"0000000000000000a977e0711cc93ee2"}


@pytest.mark.parametrize("shape", ["envelope", "single_trace", "bare_array", "array_of_envelopes"])
def test_every_v1_file_shape_gives_the_same_spans(shape):
    doc = {"envelope": {"data": [v1_trace()]}, "single_trace": v1_trace(), "bare_array": [v1_trace()],
           "array_of_envelopes": [{"data": [v1_trace()]}]}[shape]
    expected = parse_traces({"data": [v1_trace()]})
    got = parse_traces(doc)
    pd.testing.assert_frame_equal(got.drop(columns="source_ref"), expected.drop(columns="source_ref"))


@pytest.mark.parametrize("wrap", ["resourceSpans", "api_v3_result", "base64_ids"])
def test_otlp_json_matches_the_v1_view_of_the_same_trace(wrap):
    doc = otlp_doc(b64=wrap == "base64_ids")
    if wrap == "api_v3_result":
        doc = {"result": doc}
    otlp = parse_traces(doc).set_index("span_id")
    v1 = parse_traces(v1_trace()).set_index("span_id")
    cols = ["trace_id", "parent_span_id", "service", "operation", "kind", "start", "duration_ms", "end", "error",
            "status_message", "http_method", "http_route", "http_status_code", "message_id"]
    pd.testing.assert_frame_equal(otlp.loc[v1.index, cols], v1[cols])
    assert otlp.loc[CHILD, "kind"] == "internal"
    assert json.loads(otlp.loc[ROOT, "tags"]) == {"otel.scope.name": "gw"}
    if wrap == "api_v3_result":
        assert otlp.loc[ROOT, "source_ref"] == "result.resourceSpans[0].scopeSpans[0].spans[0]"


def test_all_zero_parent_id_means_root():
    doc = otlp_doc()
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["parentSpanId"] = "0" * 16
    assert parse_traces(doc)["parent_span_id"].isna().sum() == 1


def test_json_lines_file(tmp_path):
    path = tmp_path / "traces.jsonl"
    other = v1_trace("1" * 32)
    path.write_text(json.dumps({"data": [v1_trace()]}) + "\n\n" + json.dumps(other) + "\n" + json.dumps(otlp_doc()))
    spans = read_trace_file(path)
    assert len(spans) == 9 and spans["trace_id"].nunique() == 2
    assert spans["source_ref"].iloc[3] == "line 3: spans[0]"
    assert set(spans["source_object"]) == {"traces.jsonl"}


def test_json_file_of_each_shape(tmp_path):
    for i, doc in enumerate(({"data": [v1_trace()]}, otlp_doc(), {"result": otlp_doc()}, [v1_trace()])):
        path = tmp_path / f"t{i}.json"
        path.write_text(json.dumps(doc))
        assert len(read_trace_file(path)) == 3


def test_bare_array_of_spans():
    spans = parse_traces(v1_trace()["spans"])
    assert len(spans) == 3 and spans["service"].isna().all()


@pytest.mark.parametrize("doc, message", [
    ({"foo": 1}, "not a Jaeger or OTLP trace document (keys: foo)"),
    ("text", "expected a JSON object or array"),
    ({"data": ["x"]}, "data[0]: expected a trace object"),
])
def test_unknown_shapes_are_refused_with_what_was_seen(doc, message):
    with pytest.raises(TraceFileError, match=re.escape(message)):
        parse_traces(doc)


def test_json_lines_with_a_bad_line_names_it(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(v1_trace()) + "\n{oops\n")
    with pytest.raises(TraceFileError, match="line 2"):
        read_trace_file(path)


def test_empty_document_gives_an_empty_valid_table():
    schema.validate("spans", parse_traces({"data": []}))
    schema.validate("spans", parse_traces({"data": None, "errors": [{"code": 404, "msg": "trace not found"}]}))


def test_tag_values_reads_columns_and_the_json_map():
    spans = parse_traces(v1_trace())
    assert list(traces.tag_values(spans, "http.status_code").fillna("-")) == ["202", "-", "-"]
    assert list(traces.tag_values(spans, "error")) == ["false", "true", "true"]
    assert list(traces.tag_values(spans, "retries").fillna("-")) == ["-", "9007199254740993", "-"]


def _mixed_trace(n: int = 300) -> dict:
    """A v1 trace whose tags and logs take every value type JSON has, in many spans: enough for
    the column-wise paths (typed tag groups, logs, chunks) to be taken."""
    odd = ['say "hi"\nbye', "back\\slash", "ünï çödé", "", "\x01", 7, -2**63, 2**64, 0.5, 1e16, True, False, None,
           [1, "a"], {"b": 1, "a": [None]}]
    spans = []
    for i in range(n):
        tags = [{"key": "span.kind", "type": "string", "value": "server" if i % 2 else "CLIENT"},
                {"key": "thread.name", "type": "string", "value": f"exec-{i % 7}" if i % 50 else 'say "hi"\nbye'},
                {"key": "net.peer.port", "type": "int64", "value": [40000 + i % 3, 2**63 - 1, -2**63][i % 3]},
                {"key": "retries", "type": "int64", "value": i if i % 40 else str(i)},  # int64 as text now and then
                {"key": "flag", "type": "bool", "value": [True, False, None][i % 3]},
                {"key": "odd", "type": "string", "value": odd[i % len(odd)]},
                {"key": "error", "type": "bool", "value": [True, "true", "ERROR", 1, None][i % 5]}]
        if i % 9 == 0:
            tags += [{"key": "http.url", "value": f"http://x/{i}"}, {"key": "thread.name", "value": "again"}]
        if i % 4 == 0:
            tags.append({"key": "http.route", "value": ["/a", 5, None][i % 3]})
        logs = [{"timestamp": T0 + i, "fields": [
            {"key": "event", "value": "exception"},
            {"key": ["exception.message", "message", "error.object"][i % 3], "value": odd[i % len(odd)]},
            {"key": "timestamp", "value": "replaced"} if i % 11 == 0 else {"key": "event", "value": "again"}]},
            {"timestamp": T0 + i + 1, "fields": [{"key": "error.message", "value": f"second {i}"}]}] if i % 3 else []
        spans.append({"traceID": TRACE, "spanID": f"{i + 1:016x}", "operationName": f"op-{i % 5}", "processID": "p1",
                      "references": [{"refType": "CHILD_OF", "spanID": f"{i:016x}"}] if i else [],
                      "startTime": T0 + i, "duration": 1000, "tags": tags, "logs": logs})
    return {"traceID": TRACE, "spans": spans, "processes": {"p1": {"serviceName": "api-gateway"}}}


def test_column_wise_reading_gives_what_value_by_value_reading_gives(monkeypatch):
    doc = {"data": [_mixed_trace(), v1_trace("2" * 32), _mixed_trace(40)]}
    fast = parse_traces(doc)
    # the general paths: small chunks, every tag value and every log written one by one
    monkeypatch.setattr(traces.v1, "_CHUNK", 7)
    monkeypatch.setattr(traces.jsontext, "_TYPED_GROUP", 10**9)
    monkeypatch.setattr(traces.v1, "_LOGS_COLUMNWISE", 10**9)
    pd.testing.assert_frame_equal(fast, parse_traces(doc))
    assert fast["logs"].notna().sum() == 200 + 1 + 26
    assert json.loads(fast.loc[50, "tags"])["thread.name"] == 'say "hi"\nbye'
    assert json.loads(fast.loc[1, "tags"])["net.peer.port"] == 2**63 - 1


def test_parts_of_a_file_are_read_as_on_their_own(tmp_path):
    """A JSON Lines part whose spans must be coerced (a time as text) leaves the other parts as
    they are: their warnings lists holding a null stay null, as the coerced part's do not."""
    clean = v1_trace()
    clean["spans"][0]["warnings"] = [None, "w"]
    coerced = v1_trace("3" * 32)
    coerced["spans"][0]["startTime"] = str(T0)
    coerced["spans"][0]["warnings"] = [None, "w"]
    path = tmp_path / "parts.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in (clean, coerced, clean)))
    got = read_trace_file(path)
    alone = pd.concat([parse_traces(d) for d in (clean, coerced, clean)], ignore_index=True)
    cols = [c for c in got.columns if c not in ("source_ref", "source_object")]
    pd.testing.assert_frame_equal(got[cols], alone[cols])
    assert got["warnings"].iloc[[0, 6]].isna().all() and got["warnings"].iloc[3] == "w"


# ---- flags -------------------------------------------------------------------------------

def _spans(*rows, trace_id="7" * 32) -> pd.DataFrame:
    """(span, parent, start µs, end µs, service) rows -> spans frame."""
    return parse_traces({"traceID": trace_id, "spans": [
        {"traceID": trace_id, "spanID": s, "operationName": f"op-{s}", "processID": svc,
         "startTime": T0 + a, "duration": b - a,
         "references": [{"refType": "CHILD_OF", "spanID": p}] if p else []}
        for s, p, a, b, svc in rows], "processes": {"gw": {"serviceName": "api-gateway"},
                                                    "ms": {"serviceName": "message-service"},
                                                    "rs": {"serviceName": "router-service"}}})


def test_flags_orphan_skew_duplicate_cycle():
    spans = _spans(("a1", None, 0, 100, "gw"), ("b1", "a1", -5, 50, "ms"), ("c1", "ffff", 10, 20, "ms"),
                   ("d1", "a1", 10, 20, "ms"), ("d1", "a1", 30, 40, "ms"),
                   ("e1", "f1", 0, 1, "rs"), ("f1", "e1", 0, 1, "rs"), ("a2", "e1", 0, 1, "rs"),
                   ("b2", "b2", 0, 1, "rs"))
    spans.index = range(100, 100 + len(spans))
    flags = traces.span_flags(spans)
    assert flags.index.equals(spans.index) and flags["span_id"].equals(spans["span_id"])
    #                                   a1     b1     c1     d1     d1     e1     f1     a2     b2
    assert list(flags["orphan"]) == [False, False, True, False, False, False, False, False, False]
    assert list(flags["clock_skew"]) == [False, True, False, False, False, False, False, False, False]
    assert list(flags["duplicate_span_id"]) == [False, False, False, True, True, False, False, False, False]
    # e1 <-> f1 and b2 -> b2 are cycles; a2 hangs below one but is not on it
    assert list(flags["cycle"]) == [False, False, False, False, False, True, True, False, True]
    assert flags.loc[101, "skew_ms"] == pytest.approx(0.005)
    assert flags[["orphan", "clock_skew", "duplicate_span_id", "cycle"]].dtypes.eq("boolean").all()


def test_flags_of_a_clean_trace_are_all_false():
    flags = traces.span_flags(parse_traces(v1_trace()))
    assert not flags[["orphan", "clock_skew", "duplicate_span_id", "cycle"]].any().any()


# ---- derived views -----------------------------------------------------------------------

def test_span_tree_depth_root_children_and_self_time():
    spans = _spans(("a1", None, 0, 100, "gw"), ("b1", "a1", 10, 50, "ms"), ("c1", "a1", 30, 70, "ms"),
                   ("d1", "c1", 40, 60, "rs"), ("e1", "lost", 200, 210, "rs"))
    tree = traces.span_tree(spans)
    assert [s.lstrip("0") for s in tree["span_id"]] == ["a1", "b1", "c1", "d1", "e1"]  # depth first, by start
    assert list(tree["depth"]) == [0, 1, 1, 2, 0]
    assert list(tree["children"]) == [2, 0, 1, 0, 0]
    assert [r.lstrip("0") for r in tree["root_span_id"]] == ["a1", "a1", "a1", "a1", "e1"]
    # a1: 100 - union(10..50, 30..70) = 40; c1: 40 - 20 = 20
    assert list(tree["self_ms"]) == pytest.approx([0.04, 0.04, 0.02, 0.02, 0.01])


def test_self_time_by_service_does_not_double_count_overlap():
    spans = _spans(("a1", None, 0, 100, "gw"), ("b1", "a1", 10, 50, "ms"), ("c1", "a1", 30, 70, "ms"))
    st = traces.self_time_by_service(spans).set_index("service")
    assert st.loc["api-gateway", "self_ms"] == pytest.approx(0.04)
    assert st.loc["message-service", "self_ms"] == pytest.approx(0.08)
    assert st["self_share"].sum() == pytest.approx(1.0)


def test_error_spans_with_messages():
    err = traces.error_spans(parse_traces(v1_trace()))
    assert list(err["operation"]) == ["MessageService.create", "chat-events send"]
    assert list(err["status_message"]) == ["Mongo timeout", "topic missing"]


def test_latency_percentiles_per_service_and_operation():
    rows = [(f"s{i}", None, 0, 1000 * (i + 1), "gw") for i in range(100)]
    lat = traces.latency_percentiles(_spans(*rows))
    assert len(lat) == 100 and set(lat["spans"]) == {1} and set(lat["errors"]) == {0}
    per_service = traces.latency_percentiles(_spans(*rows), by=("service",)).iloc[0]
    assert per_service["spans"] == 100
    assert per_service["p50_ms"] == pytest.approx(50.5) and per_service["p99_ms"] == pytest.approx(99.01)
    assert per_service["max_ms"] == 100.0


def test_dependency_edges_count_calls_across_services():
    spans = _spans(("a1", None, 0, 100, "gw"), ("b1", "a1", 10, 50, "ms"), ("c1", "a1", 30, 70, "ms"),
                   ("d1", "c1", 40, 60, "ms"), ("e1", "c1", 40, 60, "rs"))
    edges = traces.dependency_edges(spans)
    assert edges[["parent", "child", "call_count", "error_count"]].values.tolist() == [
        ["api-gateway", "message-service", 2, 0], ["message-service", "router-service", 1, 0]]


def test_waterfall_offsets_and_critical_time():
    w = traces.waterfall(parse_traces(v1_trace()), TRACE)
    assert list(w["offset_ms"]) == [0.0, 10.0, 60.0]
    assert list(w["depth"]) == [0, 1, 2]
    assert w["critical_ms"].sum() == pytest.approx(120.0)


# ---- correlation -------------------------------------------------------------------------

def _messages(*rows) -> pd.DataFrame:
    return schema.conform("messages", pd.DataFrame(
        [{"message_id": m, "channel": ch, "status": st, "created_at": pd.Timestamp(T0 * 1000 + c * 1_000_000, tz="UTC"),
          "updated_at": pd.Timestamp(T0 * 1000 + u * 1_000_000, tz="UTC"), "source": "mongodb"}
         for m, ch, st, c, u in rows]))


def _api_span(span, trace_id, start_ms, message_id=None, route="/api/v1/messages", service="api-gateway"):
    tags = [{"key": "http.route", "value": route}]
    if message_id:
        tags.append({"key": "message_id", "value": message_id})
    return {"traceID": trace_id, "spanID": span, "operationName": f"POST {route}", "processID": service,
            "startTime": T0 + start_ms * 1000, "duration": 5000, "references": [], "tags": tags}


def _trace_set(*spans) -> pd.DataFrame:
    procs = {s: {"serviceName": s} for s in ("api-gateway", "whatsapp-connector", "user-service")}
    return parse_traces({"data": [{"traceID": sp["traceID"], "spans": [sp], "processes": procs} for sp in spans]})


def test_correlation_by_tag_then_time_window_then_untraced():
    spans = _trace_set(
        _api_span("a1", "1" * 32, 0, message_id="m-tagged"),
        _api_span("b1", "2" * 32, 10_000),                       # alone near m-one
        _api_span("c1", "3" * 32, 20_000), _api_span("c2", "4" * 32, 19_800),  # two near m-two
        _api_span("d1", "5" * 32, 10_000, route="/api/v1/users", service="user-service"),
        {**_api_span("e1", "6" * 32, 44_000, route="/whatsapp/send"), "processID": "whatsapp-connector"},
    )
    msgs = _messages(("m-tagged", "WHATSAPP", "DELIVERED", 0, 0), ("m-one", "TELEGRAM", "PENDING", 10_000, 10_000),
                     ("m-two", "TELEGRAM", "PENDING", 20_000, 20_000),
                     ("m-conn", "WHATSAPP", "DELIVERED", 40_000, 45_000),
                     ("m-none", "TELEGRAM", "PENDING", 90_000, 90_000))
    corr = traces.correlate_messages(spans, msgs, profile="chat4all-v2")
    m = corr.matches.set_index(["message_id", "trace_id"])
    assert m.loc[("m-tagged", "1" * 32), "method"] == "tag" and m.loc[("m-tagged", "1" * 32), "confidence"] == 1.0
    assert m.loc[("m-one", "2" * 32), "method"] == "time_window"
    assert m.loc[("m-one", "2" * 32), "confidence"] == pytest.approx(traces.TIME_WINDOW_CONFIDENCE)
    assert list(m.loc["m-two", "confidence"]) == pytest.approx([traces.TIME_WINDOW_CONFIDENCE / 2] * 2)
    assert list(m.loc["m-two", "candidates"]) == [2, 2]
    assert m.loc[("m-conn", "6" * 32), "rule"] == "connector"
    assert m.loc[("m-conn", "6" * 32), "delta_ms"] == pytest.approx(-1000.0)
    assert "5" * 32 not in set(corr.matches["trace_id"])  # user-service is no message route
    assert list(corr.untraced["message_id"]) == ["m-none"]
    assert "m-tagged" not in set(corr.matches.loc[corr.matches["method"] == "time_window", "message_id"])


def test_correlation_of_nothing():
    corr = traces.correlate_messages(schema.empty("spans"), _messages(("m", "WHATSAPP", "PENDING", 0, 0)))
    assert corr.matches.empty and list(corr.untraced["message_id"]) == ["m"]


def test_odd_value_types_are_coerced_not_fatal():
    odd = v1_trace()
    odd["spans"][0] = {**odd["spans"][0], "startTime": str(T0), "duration": 120_000.0}
    odd["spans"][2] = {**odd["spans"][2], "logs": None, "references": [{"refType": "CHILD_OF", "spanID": CHILD}, "x"]}
    got = parse_traces(odd)
    pd.testing.assert_frame_equal(got, parse_traces(v1_trace()))


def test_tags_json_escapes_and_keeps_the_last_of_a_repeated_key():
    trace = v1_trace()
    trace["spans"][0]["tags"] += [{"key": "note", "type": "string", "value": 'say "hi"\nbye'},
                                  {"key": "k", "value": 1}, {"key": "k", "value": 2},
                                  {"key": "flag", "value": False}, {"key": "ratio", "value": 0.5},
                                  {"key": "ünï", "value": "çödé"}]
    tags = json.loads(parse_traces(trace).loc[0, "tags"])
    assert tags == {"http.url": "http://gw/api/v1/messages?x=1", "note": 'say "hi"\nbye', "k": 2, "flag": False,
                    "ratio": 0.5, "ünï": "çödé"}
    assert list(tags) == sorted(tags)


# ---- on simulated traffic ------------------------------------------------------------------

@pytest.fixture(scope="module")
def simulated():
    from forensics.simulate import simulate

    return simulate("whatsapp-rate-limit", messages=2000, seed=5, profile="chat4all-v2", message_id_tag_fraction=1.0)


def test_time_window_matches_agree_with_the_message_id_tags(simulated):
    spans, messages = simulated.tables["spans"], simulated.tables["messages"]
    truth = spans.dropna(subset=["message_id"]).drop_duplicates(["message_id", "trace_id"])
    assert set(traces.correlate_messages(spans, messages, "chat4all-v2").matches["method"]) == {"tag"}
    blind = spans.assign(message_id=pd.Series(pd.NA, index=spans.index, dtype="string"))
    matches = traces.correlate_messages(blind, messages, "chat4all-v2").matches
    assert set(matches["method"]) == {"time_window"}
    nearest = matches.assign(gap=matches["delta_ms"].abs()).sort_values("gap").drop_duplicates(["message_id", "rule"])
    hits = nearest.merge(truth[["message_id", "trace_id"]], how="left", indicator=True)
    accuracy = (hits["_merge"] == "both").groupby(hits["rule"]).mean()
    assert accuracy["api"] > 0.95 and accuracy["connector"] > 0.6
    assert matches["confidence"].between(0, traces.TIME_WINDOW_CONFIDENCE).all()


def test_messages_outside_the_trace_sample_are_listed_untraced():
    from forensics.simulate import simulate

    ev = simulate("baseline", messages=400, seed=2, profile="runbook", detail_sample=100)
    corr = traces.correlate_messages(ev.tables["spans"], ev.tables["messages"], "runbook")
    assert 200 <= len(corr.untraced) < 400
    assert not set(corr.untraced["message_id"]) & set(corr.matches["message_id"])


def test_critical_path_covers_each_simulated_root_exactly(simulated):
    spans = simulated.tables["spans"]
    flags = traces.span_flags(spans)
    assert not flags[["duplicate_span_id", "cycle"]].any().any()
    cp = traces.critical_path(spans)
    roots = spans[spans["parent_span_id"].isna()].set_index("span_id")["duration_ms"]
    per_root = cp.groupby("root_span_id")["section_ms"].sum()
    assert per_root.round(3).equals(roots.loc[per_root.index].round(3).rename("section_ms"))


# ---- the message investigation notebook ----------------------------------------------------

@pytest.mark.slow
def test_message_investigation_notebook_runs_on_a_simulated_bundle(tmp_path):
    from forensics.bundle import write_bundle
    from forensics.errors import ParameterError
    from forensics.report.resources import find_notebook
    from forensics.report.runner import run_notebook
    from forensics.simulate import simulate

    bundle = write_bundle(simulate("whatsapp-rate-limit", messages=1500, seed=11), tmp_path / "bundle")
    notebook = find_notebook("message_investigation")
    executed = run_notebook(notebook, tmp_path / "out.ipynb", {"bundle": str(bundle), "message_id": ""}, cwd=tmp_path)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any(o.get("data", {}).get("application/vnd.plotly.v1+json") for o in outputs)  # a waterfall
    assert any("runbook: R" in o.get("text", "") for o in outputs)
    with pytest.raises(ParameterError, match="message_id: 'nope' is not among"):
        run_notebook(notebook, tmp_path / "bad.ipynb", {"bundle": str(bundle), "message_id": "nope"}, cwd=tmp_path)


def test_a_url_without_route_becomes_the_route_and_leaves_the_map():
    trace = v1_trace()
    trace["spans"][2]["tags"] += [{"key": "http.url", "type": "string", "value": "http://router:8080/send"},
                                  {"key": "peer", "type": "string", "value": "x"}]
    leaf = parse_traces(trace).iloc[2]
    assert leaf["http_route"] == "http://router:8080/send"
    assert json.loads(leaf["tags"]) == {"peer": "x"}


def test_simulator_spans_round_trip_through_a_jaeger_ui_download(tmp_path):
    from forensics.simulate import render, simulate

    ev = simulate("whatsapp-rate-limit", messages=1500, seed=4)
    path = tmp_path / "jaeger-download.json"
    path.write_text(json.dumps(render.jaeger_v1(ev)))
    got = read_trace_file(path)
    schema.validate("spans", got)
    want = ev.tables["spans"]
    cols = ["parent_span_id", "service", "operation", "kind", "start", "duration_ms", "end", "error", "status_message",
            "http_method", "http_route", "http_status_code", "message_id", "tags"]
    a = want.set_index(["trace_id", "span_id"]).sort_index()[cols]
    b = got.set_index(["trace_id", "span_id"]).sort_index()[cols]
    pd.testing.assert_frame_equal(a.drop(columns="tags"), b.drop(columns="tags"))
    tag_maps = [[(json.loads(t) if isinstance(t, str) else None) or None for t in f["tags"]] for f in (a, b)]
    assert tag_maps[0] == tag_maps[1]
    assert got["logs"].notna().sum() == want["logs"].notna().sum()


def test_latency_percentiles_of_no_spans_is_an_empty_table():
    from forensics import schema as _schema
    from forensics import traces as _traces

    out = _traces.latency_percentiles(_schema.empty("spans"))
    assert out.empty and list(out.columns)[:3] == ["service", "operation", "spans"]


def test_a_lone_surrogate_in_a_span_becomes_a_replacement_character(tmp_path):
    # JSON allows "\ud800"; UTF-8 (and Arrow) cannot hold it: read, not a crash
    text = ('{"data": [{"traceID": "abc", "processes": {"p1": {"serviceName": "router\\ud800"}}, "spans": ['
            '{"traceID": "abc", "spanID": "01", "operationName": "op \\udfff", "startTime": 1700000000000000,'
            ' "duration": 5, "processID": "p1", "tags": [{"key": "k", "type": "string", "value": "v\\ud83d"}]}]}]}')
    path = tmp_path / "t.json"
    path.write_text(text)
    for spans in (parse_traces(json.loads(text)), read_trace_file(path)):
        row = spans.iloc[0]
        assert row["service"] == "router\ufffd" and row["operation"] == "op \ufffd"
        assert "v\ufffd" in row["tags"]
