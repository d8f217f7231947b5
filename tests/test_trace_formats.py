"""Trace files of every shape Jaeger and OpenTelemetry users hold, read as Jaeger reads them.

tests/fixtures/traces/ holds one Chat4All-like trace (gateway -> message-service ->
producer -> router consumer, plus a FOLLOWS_FROM audit span) written in each shape; the
other fixtures here are modelled on Jaeger's own (model/converter/json/fixtures,
internal/storage/integration/fixtures, model/converter/thrift/jaeger/fixtures,
cmd/anonymizer/app/uiconv/fixtures) and written as our own.
"""

from __future__ import annotations

import base64
import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from forensics import schema
from forensics.cli import main
from forensics.sources.registry import collect
from forensics.timeutil import Window
from forensics.traces import TraceFileError, critical_path, parse_traces, read_trace_file, span_flags
from forensics.traces.readers import read_trace_files

FIXTURES = Path(__file__).parent / "fixtures" / "traces"
SHAPES = sorted(p.name for p in FIXTURES.iterdir())
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CORE = ["trace_id", "span_id", "parent_span_id", "parent_ref_type", "service", "operation", "kind", "start",
        "duration_ms", "end"]


def _b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


def _core(spans: pd.DataFrame) -> pd.DataFrame:
    return spans[CORE].sort_values("span_id").reset_index(drop=True)


# ---- every shape gives the same spans ----------------------------------------------------

def test_every_shape_is_a_fixture():
    assert SHAPES == ["api_v3.json", "bare_spans.json", "domain_model.json", "otlp.json", "thrift_batches.json",
                      "traces.jsonl", "ui_download.json", "ui_download.json.gz"]


@pytest.mark.parametrize("name", SHAPES)
def test_each_shape_gives_the_spans_of_the_ui_download(name):
    got = read_trace_file(FIXTURES / name)
    schema.validate("spans", got)
    pd.testing.assert_frame_equal(_core(got), _core(read_trace_file(FIXTURES / "ui_download.json")))


def test_the_fixture_trace_as_jaeger_shows_it():
    spans = read_trace_file(FIXTURES / "ui_download.json").set_index("operation")
    assert spans.loc["audit", "parent_span_id"] == spans.loc["MessageService.create", "span_id"]
    assert spans.loc["audit", "parent_ref_type"] == "FOLLOWS_FROM"
    assert pd.isna(spans.loc["POST /api/v1/messages", "parent_ref_type"])
    assert spans.loc["chat-events send", "start"] == pd.Timestamp("2026-12-07T10:00:00.183456Z")
    assert not span_flags(spans.reset_index())[["orphan", "cycle", "duplicate_span_id"]].any().any()
    # the consumer hop is not blocking: the request's path stays in the gateway and message-service
    assert set(critical_path(spans.reset_index())["service"]) == {"api-gateway", "message-service"}


# ---- Jaeger's domain model ---------------------------------------------------------------

def _domain_trace() -> dict:
    """After Jaeger's model/converter/json/fixtures/domain_01.json and the storage integration
    fixtures: base64 ids, RFC 3339 times with an offset and nanoseconds, duration text, typed
    tags and log fields, a reference into another trace."""
    tid = "0" * 31 + "1"
    return {"spans": [
        {"traceId": _b64(tid), "spanId": _b64("0" * 15 + "2"), "operationName": "root",
         "startTime": "2017-01-26T16:46:31.639875139-05:00", "duration": "5000ns",
         "tags": [{"key": "peer.service", "vType": "STRING", "vStr": "service-y"},
                  {"key": "peer.ipv4", "vType": "INT64", "vInt64": 23456},
                  {"key": "error", "vType": "BOOL", "vBool": True},
                  {"key": "temperature", "vType": "FLOAT64", "vFloat64": 72.5},
                  {"key": "blob", "vType": "BINARY", "vBinary": "AAAwOQ=="}],
         "logs": [{"timestamp": "2017-01-26T16:46:31.639875139-05:00",
                   "fields": [{"key": "event", "vStr": "some-event"}, {"key": "count", "vType": "INT64"}]}],
         "process": {"serviceName": "service-x"}},
        {"traceId": _b64(tid), "spanId": _b64("0" * 15 + "4"), "operationName": "reference-test",
         "references": [{"refType": "CHILD_OF", "traceId": _b64("0" * 30 + "ff"), "spanId": _b64("0" * 14 + "ff")},
                        {"traceId": _b64(tid), "spanId": _b64("0" * 15 + "2")},
                        {"refType": "FOLLOWS_FROM", "traceId": _b64(tid), "spanId": _b64("0" * 15 + "2")}],
         "startTime": "2017-01-26T21:46:31.639875Z", "duration": "0.000004s", "processId": "p2",
         "warnings": ["some span warning"]},
    ], "processMap": [{"processId": "p2", "process": {"serviceName": "service-y"}}]}


def test_domain_model_ids_times_and_durations():
    spans = parse_traces(_domain_trace()).set_index("operation")
    assert list(spans["trace_id"]) == ["0" * 31 + "1"] * 2
    assert spans.loc["root", "span_id"] == "0" * 15 + "2"
    # RFC 3339 with an offset, below µs cut as Jaeger's v1 conversion does
    assert spans.loc["root", "start"] == pd.Timestamp("2017-01-26T21:46:31.639875Z")
    assert spans.loc["root", "duration_ms"] == 0.005 and spans.loc["reference-test", "duration_ms"] == 0.004
    assert list(spans["service"]) == ["service-x", "service-y"]
    assert spans.loc["reference-test", "warnings"] == "some span warning"


def test_domain_model_typed_values_are_read_as_the_v1_view_writes_them():
    root = parse_traces(_domain_trace()).iloc[0]
    assert bool(root["error"]) is True
    assert json.loads(root["tags"]) == {"blob": "00003039", "peer.ipv4": 23456, "peer.service": "service-y",
                                        "temperature": 72.5}
    # a field without its value is the protobuf default, as jsonpb leaves defaults out
    assert json.loads(root["logs"]) == [{"timestamp": "2017-01-26T21:46:31.639875Z", "event": "some-event",
                                         "count": 0}]


def test_domain_model_reference_into_another_trace_is_not_the_parent():
    # the first CHILD_OF points into trace ff: Jaeger skips it and takes the next one
    # (without refType: CHILD_OF, the protobuf default)
    spans = parse_traces(_domain_trace()).set_index("operation")
    assert spans.loc["reference-test", "parent_span_id"] == "0" * 15 + "2"
    assert spans.loc["reference-test", "parent_ref_type"] == "CHILD_OF"


def test_older_domain_model_json_with_vnum_and_integer_nanoseconds():
    # after model/converter/thrift/jaeger/fixtures/model_01.json: "child-of", vNum, duration in ns
    span = {"traceID": "52969a8955571a3f", "spanID": "647d98", "operationName": "get",
            "references": [{"refType": "child-of", "traceID": "52969a8955571a3f", "spanID": "68c4e3"}],
            "startTime": "2017-01-26T16:46:31.639875-05:00", "duration": 22938000,
            "tags": [{"key": "peer.port", "vType": "int64", "vNum": 53931},
                     {"key": "someBool", "vType": "bool", "vNum": 1},
                     {"key": "someDouble", "vType": "float64", "vNum": 4638770948061370778}],
            "process": {"serviceName": "api"}}
    got = parse_traces([span]).iloc[0]
    assert got["trace_id"] == "0" * 16 + "52969a8955571a3f" and got["parent_span_id"] == "000000000068c4e3"
    assert got["duration_ms"] == 22.938 and got["service"] == "api"
    assert json.loads(got["tags"]) == {"peer.port": 53931, "someBool": True, "someDouble": 129.8}


# ---- Thrift style ------------------------------------------------------------------------

def test_thrift_batch_ids_parent_and_typed_tags():
    # after model/converter/thrift/jaeger/fixtures/thrift_batch_01.json
    batch = {"process": {"serviceName": "api", "tags": []}, "spans": [
        {"traceIdLow": 5951113872249657919, "traceIdHigh": -1, "spanId": -2, "parentSpanId": 6866147,
         "operationName": "get", "startTime": 1485467191639875, "duration": 22938,
         "tags": [{"key": "peer.port", "vType": "LONG", "vLong": 53931},
                  {"key": "someDouble", "vType": "DOUBLE", "vDouble": 129.8},
                  {"key": "haproxy.sa", "vType": "BOOL", "vBool": True},
                  {"key": "peer.service", "vType": "BINARY", "vBinary": "AAAAAAAAMDk="}],
         "logs": [{"timestamp": 1485467191639875, "fields": [{"key": "event", "vType": "STRING", "vStr": "nothing"}]}]},
    ]}
    got = parse_traces(batch).iloc[0]
    assert got["trace_id"] == "ffffffffffffffff" + f"{5951113872249657919:016x}"  # signed halves, two's complement
    assert got["span_id"] == "fffffffffffffffe" and got["parent_span_id"] == f"{6866147:016x}"
    assert got["parent_ref_type"] == "CHILD_OF" and got["service"] == "api" and got["duration_ms"] == 22.938
    assert json.loads(got["tags"]) == {"haproxy.sa": True, "peer.port": 53931, "peer.service": "0000000000003039",
                                       "someDouble": 129.8}
    assert json.loads(got["logs"])[0]["event"] == "nothing"


# ---- values that cannot be read ----------------------------------------------------------

def test_unreadable_duration_is_null_with_a_warning_never_zero():
    # cmd/anonymizer/app/uiconv/fixtures/trace_invalid_json.json
    spans = parse_traces([
        {"traceID": "2be38093ead7a083", "spanID": "7606ddfe69932d34", "operationName": "a", "startTime": 1605223981761425,
         "duration": 267037, "process": {"serviceName": "s"}},
        {"traceID": "2be38093ead7a083", "spanID": "7bd66f09ba90ea3d", "operationName": "b", "startTime": 1605223981965074,
         "duration": "invalid", "process": {"serviceName": "s"}},
    ]).set_index("operation")
    assert spans.loc["a", "duration_ms"] == 267.037 and pd.isna(spans.loc["a", "warnings"])
    assert pd.isna(spans.loc["b", "duration_ms"]) and pd.isna(spans.loc["b", "end"])
    assert spans.loc["b", "warnings"] == "duration: cannot read 'invalid'"
    assert spans.loc["b", "start"] == pd.Timestamp("2020-11-12T23:33:01.965074Z")


@pytest.mark.parametrize(("doc", "column", "warning"), [
    ({"spans": [{"traceId": "AAAAAAAAAAAAAAAAAAAAAQ==", "spanId": "AAAAAAAAAAI=", "startTime": "yesterday",
                 "duration": "5000ns"}]}, "start", "startTime: cannot read 'yesterday'"),
    ({"spans": [{"traceId": "AAAAAAAAAAAAAAAAAAAAAQ==", "spanId": "AAAAAAAAAAI=",
                 "startTime": "2017-01-26T16:46:31Z", "duration": "5 parsecs"}]}, "duration_ms",
     "duration: cannot read '5 parsecs'"),
    ({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "01", "spanId": "02", "startTimeUnixNano": "1",
                                                    "endTimeUnixNano": "soon"}]}]}]}, "duration_ms",
     "endTimeUnixNano: cannot read 'soon'"),
    ({"spans": [{"traceID": "01", "spanID": "02", "startTime": "12:00", "duration": 5}]}, "start",
     "startTime: cannot read '12:00'"),
])
def test_unreadable_values_of_each_shape_are_null_and_named(doc, column, warning):
    got = parse_traces(doc)
    assert len(got) == 1 and pd.isna(got.loc[0, column]) and got.loc[0, "warnings"] == warning
    schema.validate("spans", got)


def test_unreadable_otlp_integer_and_event_time_are_null_with_warnings():
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "01", "spanId": "02", "startTimeUnixNano": "1", "endTimeUnixNano": "5",
        "attributes": [{"key": "retries", "value": {"intValue": "many"}}],
        "events": [{"name": "exception", "timeUnixNano": "later"}]}]}]}]}
    got = parse_traces(doc).iloc[0]
    assert json.loads(got["tags"]) == {"retries": None}
    assert json.loads(got["logs"]) == [{"event": "exception", "timestamp": None}]
    assert got["warnings"] == "retries: cannot read 'many'; event timeUnixNano: cannot read 'later'"


def test_unreadable_log_time_is_null_in_the_log_with_a_warning():
    got = parse_traces([{"traceID": "1", "spanID": "2", "startTime": 1, "duration": 1,
                         "logs": [{"timestamp": "noon", "fields": [{"key": "event", "value": "x"}]}]}]).iloc[0]
    assert json.loads(got["logs"]) == [{"event": "x", "timestamp": None}]
    assert got["warnings"] == "log timestamp: cannot read 'noon'"


def _v1(span: dict) -> dict:
    return {"traceID": "0af7651916cd43dd8448eb211c80319c", "spanID": "b7ad6b7169203331", "operationName": "op",
            "startTime": 1796637600123456, "duration": 5000, "processID": "p1", **span}


def _ui(span: dict) -> str:
    return json.dumps({"data": [{"traceID": "0af7651916cd43dd8448eb211c80319c", "spans": [_v1(span)],
                                 "processes": {"p1": {"serviceName": "api"}}}]})


def _model(span: dict) -> str:
    return json.dumps({"spans": [{"traceId": "CvdlGRbNQ92ESOshHIAxnA==", "spanId": "t61rcWkgMzE=",
                                  "startTime": "2026-12-07T10:00:00.123456Z", "duration": "5000000ns", **span}]})


def _thrift(span: dict) -> str:
    return json.dumps([{"process": {"serviceName": "api"}, "spans": [
        {"traceIdLow": 1, "traceIdHigh": 2, "spanId": 3, "parentSpanId": 0, "startTime": 1796637600123456,
         "duration": 5000, **span}]}])


def _otlp(span: dict) -> str:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
         "startTimeUnixNano": "1796637600123456000", "endTimeUnixNano": "1796637600128456000", **span}]}]}]})


_BEYOND = 2**62  # µs: no calendar holds it
UNREADABLE_TIMES = {  # file text, the column left null ("logs": the log's time), the warning
    "UI download: a start with a fraction": (_ui({"startTime": 1.5}), "start", "startTime: cannot read 1.5"),
    "UI download: a duration with a fraction": (_ui({"duration": 2.5}), "duration_ms", "duration: cannot read 2.5"),
    "UI download: a start beyond int64 ns": (_ui({"startTime": _BEYOND}), "start",
                                             f"startTime: cannot read {_BEYOND}"),
    "UI download: a log time no calendar holds": (_ui({"logs": [{"timestamp": _BEYOND, "fields": []}]}), "logs",
                                                   f"log timestamp: cannot read {_BEYOND}"),
    "UI download: a log time with a fraction": (_ui({"logs": [{"timestamp": 2.5, "fields": []}]}), "logs",
                                                 "log timestamp: cannot read 2.5"),
    "UI download: a log time of text": (_ui({"logs": [{"timestamp": "noon"}]}), "logs",
                                        "log timestamp: cannot read 'noon'"),
    "bare spans: a duration as a boolean": (json.dumps([_v1({"duration": True})]), "duration_ms",
                                            "duration: cannot read True"),
    "JSON Lines: a start of text": (_ui({}) + "\n" + _ui({"startTime": "soon"}), "start",
                                    "startTime: cannot read 'soon'"),
    "domain model: a start": (_model({"startTime": "2026-13-45T10:00:00Z"}), "start",
                              "startTime: cannot read '2026-13-45T10:00:00Z'"),
    "domain model: a duration": (_model({"duration": "invalid"}), "duration_ms", "duration: cannot read 'invalid'"),
    "domain model: a log time": (_model({"logs": [{"timestamp": "10:00", "fields": []}]}), "logs",
                                 "log timestamp: cannot read '10:00'"),
    "domain model: a log time no calendar holds": (_model({"logs": [{"timestamp": str(_BEYOND)}]}), "logs",
                                                    f"log timestamp: cannot read {_BEYOND}"),
    "Thrift style: a start": (_thrift({"startTime": "soon"}), "start", "startTime: cannot read 'soon'"),
    "Thrift style: a duration": (_thrift({"duration": 1.5}), "duration_ms", "duration: cannot read 1.5"),
    "Thrift style: a log time": (_thrift({"logs": [{"timestamp": [], "fields": []}]}), "logs",
                                 "log timestamp: cannot read []"),
    "OTLP: a start": (_otlp({"startTimeUnixNano": "1.5e18x"}), "start", "startTimeUnixNano: cannot read '1.5e18x'"),
    "OTLP: a duration beyond int64": (_otlp({"startTimeUnixNano": str(-(2**63) + 2),
                                             "endTimeUnixNano": str(2**63 - 1)}), "duration_ms",
                                      f"duration: cannot read {2**64 - 3}"),
    "OTLP: an event time": (_otlp({"events": [{"name": "e", "timeUnixNano": True}]}), "logs",
                            "event timeUnixNano: cannot read True"),
}


def test_an_end_past_the_calendar_is_null_with_a_warning_not_a_wrapped_time(tmp_path):
    last_us = (2**63 - 1) // 1000 - 500_000  # half a second before the last time int64 ns holds
    path = tmp_path / "trace.json"
    path.write_text(_ui({"startTime": last_us, "duration": 1_000_000}))
    got = read_trace_file(path).iloc[-1]
    assert pd.notna(got["start"]) and got["duration_ms"] == 1000.0
    assert pd.isna(got["end"]) and got["warnings"] == "end: start + duration is beyond the calendar's end"


@pytest.mark.parametrize("name", sorted(UNREADABLE_TIMES))
def test_unreadable_times_of_every_format_are_null_with_a_warning(name, tmp_path):
    """Item 1 of issue 15, format by format: never a silent 0, a truncated number or a dropped
    value (read from a file: the native reader first, which reads some of these itself)."""
    text, column, warning = UNREADABLE_TIMES[name]
    path = tmp_path / "trace.json"
    path.write_text(text)
    got = read_trace_file(path).iloc[-1]
    assert got["warnings"] == warning
    if column == "logs":
        assert json.loads(got["logs"])[0]["timestamp"] is None
    else:
        assert pd.isna(got[column]) and pd.isna(got["end"])
        if not name.startswith("OTLP"):  # (OTLP's duration is made of its start)
            assert pd.notna(got["start" if column == "duration_ms" else "duration_ms"])


# ---- Jaeger's parent rule ----------------------------------------------------------------

def _refs(*refs: tuple[str, str, str]) -> pd.DataFrame:
    """Span "c" with references (type, trace, span) beside spans "a" and "b" of trace 1."""
    def span(sid: str, references: list) -> dict:
        return {"traceID": "1", "spanID": sid, "operationName": sid, "startTime": 1, "duration": 1,
                "references": references, "process": {"serviceName": "s"}}
    return parse_traces([span("a", []), span("b", []),
                         span("c", [{"refType": t, "traceID": tr, "spanID": s} for t, tr, s in refs])])


@pytest.mark.parametrize(("refs", "parent", "ref_type"), [
    ((("FOLLOWS_FROM", "1", "a"),), "a", "FOLLOWS_FROM"),  # the only reference: Jaeger falls back to it
    ((("FOLLOWS_FROM", "1", "a"), ("CHILD_OF", "1", "b")), "b", "CHILD_OF"),  # CHILD_OF first, wherever it is
    ((("CHILD_OF", "1", "a"), ("CHILD_OF", "1", "b")), "a", "CHILD_OF"),  # the first of them
    ((("CHILD_OF", "2", "a"), ("FOLLOWS_FROM", "1", "b")), "b", "FOLLOWS_FROM"),  # not into another trace
    ((("CHILD_OF", "0000000000000001", "a"),), "a", "CHILD_OF"),  # the same trace id, written short
    ((("CHILD_OF", "2", "a"),), None, None),  # only another trace: a root
])
def test_parent_is_jaegers_first_child_of_else_follows_from_in_the_same_trace(refs, parent, ref_type):
    c = _refs(*refs).set_index("operation").loc["c"]
    assert (c["parent_span_id"] if pd.notna(c["parent_span_id"]) else None) == (parent and parent.rjust(16, "0"))
    assert (c["parent_ref_type"] if pd.notna(c["parent_ref_type"]) else None) == ref_type


def test_a_child_of_into_another_trace_makes_no_false_orphan():
    spans = _refs(("CHILD_OF", "2", "a"))
    assert not span_flags(spans)["orphan"].any()


def test_null_ids_never_match():
    spans = parse_traces({"traceID": "1", "processes": {"p": {"serviceName": "s"}}, "spans": [
        {"spanID": None, "operationName": "x", "startTime": 1, "duration": 5, "processID": "p",
         "references": [{"refType": "CHILD_OF", "traceID": "1", "spanID": None}]},
        {"spanID": None, "operationName": "y", "startTime": 1, "duration": 5, "processID": "p", "references": []},
    ]})
    assert spans["span_id"].isna().all() and spans["parent_span_id"].isna().all()
    flags = span_flags(spans)
    assert not flags[["orphan", "cycle", "duplicate_span_id"]].any().any()  # not its own parent, not a copy
    assert len(critical_path(spans)) == 2  # two roots, one path each


# ---- errors: one line naming the file and where ------------------------------------------

@pytest.mark.parametrize(("content", "expected"), [
    (b'{"data": [', "not JSON (Expecting value at line 1)"),
    (b'{"data": []}\n{"data": [}\n', "line 2 of JSON Lines is not JSON"),
    (b'{"data": []}\n{"hello": 1}\n', "line 2: not a Jaeger or OTLP trace document (keys: hello)"),
    (b'{"data": [3]}', "data[0]: expected a trace object, got int"),
    (b"\x1f\x8b\x08\x00broken", "not a readable gzip file"),
    (gzip.compress(b'{"x": 1}'), "not a Jaeger or OTLP trace document (keys: x)"),
])
def test_a_bad_file_is_one_line_naming_the_file_and_line(tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(TraceFileError) as err:
        read_trace_file(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message


# ---- trace files as a collect source -----------------------------------------------------

def _tree(tmp_path: Path) -> Path:
    """ui_download.json, the OTLP file in a subdirectory, and a later trace of its own."""
    root = tmp_path / "downloads"
    (root / "otlp").mkdir(parents=True)
    shutil.copy(FIXTURES / "ui_download.json", root / "ui_download.json")
    shutil.copy(FIXTURES / "otlp.json", root / "otlp" / "export.json")
    (root / "otlp" / "notes.txt").write_text("not a trace file")
    later = json.loads((FIXTURES / "ui_download.json").read_text())
    for span in later["data"][0]["spans"]:
        span["traceID"] = "f" * 32
        span["startTime"] += 86_400_000_000  # a day later
    later["data"][0]["traceID"] = "f" * 32
    (root / "later.json").write_text(json.dumps(later))
    return root


WINDOW = Window(pd.Timestamp("2026-12-07T09:00Z"), pd.Timestamp("2026-12-07T11:00Z"))


def test_read_trace_files_walks_directories_and_names_each_file(tmp_path):
    root = _tree(tmp_path)
    spans = read_trace_files([root])
    assert len(spans) == 15
    assert sorted(set(spans["source_object"])) == [str(root / "later.json"), str(root / "otlp" / "export.json"),
                                                   str(root / "ui_download.json")]


@pytest.mark.parametrize(("make", "expected"), [
    (lambda root: root / "nowhere.json", "no such file or directory"),
    (lambda root: root, "no trace files in this directory"),
])
def test_a_path_with_no_trace_files_fails_the_source_in_one_line(tmp_path, make, expected):
    (tmp_path / "notes.txt").write_text("not a trace file")
    ev, _, _ = collect(["jaeger"], WINDOW, options={"files": str(make(tmp_path))})
    assert not ev.has("spans") and expected in ev.missing["jaeger"] and "\n" not in ev.missing["jaeger"]


def test_jaeger_source_reads_files_with_the_window_applied(tmp_path):
    root = _tree(tmp_path)
    ev, queries, _ = collect(["jaeger"], WINDOW, options={"files": f"{root},{root / 'ui_download.json'}"})
    spans = ev.table("spans")
    assert set(spans["trace_id"]) == {TRACE} and len(spans) == 5  # the same trace twice: kept once
    notes = ev.sources["jaeger"]["notes"]
    assert "5 span(s) repeated across files kept once" in notes
    assert "1 trace(s) with no span starting in the window left out" in notes
    assert len(queries["spans"]) == 3


def test_collect_command_with_trace_files(tmp_path, capsys):
    root = _tree(tmp_path)
    out = tmp_path / "bundle"
    code = main(["collect", "--sources", "jaeger", "-o", f"files={root}", "--since", "2026-12-07T09:00Z",
                 "--until", "2026-12-07T11:00Z", "--out", str(out), "--quiet"])
    assert code == 0 and (out / "manifest.json").exists()


def test_collect_command_with_a_bad_trace_file_says_which_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [')
    code = main(["collect", "--sources", "jaeger", "-o", f"files={bad}", "--since", "1h", "--out",
                 str(tmp_path / "b"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1
    assert f"jaeger: {bad}: not JSON (Expecting value at line 1" in err[0] and "jaeger: jaeger:" not in err[0]
