"""The native trace reader (native/trace_reader) against the Python reader: the same spans
table, field for field, for every trace file under tests/, hostile variants of v1 documents
and randomly broken ones; the same one-line error for a file neither can read.

Under CI=true the native reader must be built (scripts/setup-venv.sh builds it with cargo):
a missing build fails these tests there instead of skipping them.
"""

import copy
import gzip
import json
import random
import sys
from pathlib import Path

import pandas as pd
import pytest
from ci import skip_or_fail

from forensics.errors import ForensicsError
from forensics.traces import read_trace_file
from forensics.traces.native import READER_ENV, native_block, native_module
from forensics.traces.table import spans_frame

TESTS = Path(__file__).parent
TRACE_FILES = sorted(p for p in TESTS.rglob("*") if p.is_file() and "traces" in p.parts
                     and p.name.endswith((".json", ".jsonl", ".ndjson", ".gz")))


@pytest.fixture(autouse=True)
def _native_built(monkeypatch):
    monkeypatch.setenv(READER_ENV, "auto")  # built or not, whatever the environment asks for
    if native_module() is None:
        skip_or_fail("the native trace reader is not built (scripts/setup-venv.sh builds native/trace_reader with cargo)")


def _read(path: Path, reader: str, monkeypatch) -> pd.DataFrame | str:
    """The spans table by one reader, or the one-line error it gives."""
    monkeypatch.setenv(READER_ENV, reader)
    try:
        return read_trace_file(path)
    except ForensicsError as exc:
        return f"{type(exc).__name__}: {exc}"


def _same(path: Path, monkeypatch) -> pd.DataFrame | str:
    native, python = _read(path, "native", monkeypatch), _read(path, "python", monkeypatch)
    if isinstance(python, str) or isinstance(native, str):
        assert native == python
    else:
        pd.testing.assert_frame_equal(native, python)
    return native


def _natively_read(raw: bytes, monkeypatch) -> bool:
    monkeypatch.setenv(READER_ENV, "native")
    block, _reason = native_block(raw)
    return block is not None


def test_every_trace_file_under_tests_gives_the_same_table(monkeypatch):
    assert len(TRACE_FILES) >= 8
    for path in TRACE_FILES:
        out = _same(path, monkeypatch)
        assert not isinstance(out, str) and len(out), path
    for name in ("ui_download.json", "bare_spans.json", "traces.jsonl"):  # read natively, not handed back
        assert _natively_read((TESTS / "fixtures" / "traces" / name).read_bytes(), monkeypatch), name
    assert _natively_read(gzip.decompress((TESTS / "fixtures" / "traces" / "ui_download.json.gz").read_bytes()),
                          monkeypatch)


def _span(i: int, **over) -> dict:
    tid = "4bf92f3577b34da6a3ce929d0e0e4736"
    span = {
        "traceID": tid, "spanID": f"{i + 1:016x}", "flags": 1, "operationName": f"op-{i}",
        "references": [{"refType": "CHILD_OF", "traceID": tid, "spanID": f"{i:016x}"}] if i else [],
        "startTime": 1796637600123456 + i * 1000, "duration": 90000 - i, "processID": f"p{i % 2 + 1}",
        "warnings": None,
        "tags": [{"key": "span.kind", "type": "string", "value": "server" if i % 2 else "client"},
                 {"key": "http.status_code", "type": "int64", "value": 200 + i},
                 {"key": "error", "type": "bool", "value": i == 2},
                 {"key": "retry", "type": "float64", "value": 0.5 * i}],
        "logs": [{"timestamp": 1796637600123456 + i * 1000 + 5,
                  "fields": [{"key": "event", "value": "exception"},
                             {"key": "exception.message", "value": f"boom {i}"}]}] if i % 2 else [],
    }
    span.update(over)
    return span


def _doc(spans: list[dict], **trace) -> dict:
    return {"data": [{"traceID": "4bf92f3577b34da6a3ce929d0e0e4736", "spans": spans,
                      "processes": {"p1": {"serviceName": "api-gateway", "tags": []},
                                    "p2": {"serviceName": "message-service"}}, "warnings": None, **trace}]}


# v1 documents the native reader reads itself (checked), each equal to the Python reader's table
READ_NATIVELY = {
    "plain": _doc([_span(i) for i in range(4)]),
    "escapes and unicode": _doc([_span(0, operationName="POST /ap\\u0069 \"quoted\" \t tab é 😀 \u2028",
                                       tags=[{"key": "k\u00e9\\n", "value": "line\nbreak \\ \"q\" 😀 \U0001f600"},
                                             {"key": "ctl", "value": "\u0001\u001f"}])]),
    "escapes and unicode (UTF-8)": None,  # filled below
    "tag values of every type under one key": _doc([
        _span(i, tags=[{"key": "mixed", "value": v}, {"key": "http.route", "value": v},
                       {"key": "message_id", "value": v}, {"key": "error", "value": v},
                       {"key": "http.status_code", "value": v}])
        for i, v in enumerate(["x", 7, -3, 2.5, 1e300, -0.0, True, False, None, [1, "a", None], {"b": {"c": [True]}},
                               2**63 + 5, -(2**63), 10**18, "", "true", "ERROR", "503", 0.1])]),
    "missing and null fields": _doc([
        _span(0, traceID=None, spanID=None, operationName=None, references=None, tags=None, logs=None,
              processID=None, startTime=None, duration=None),
        {"spanID": "00000000000000aa"}, {},
        _span(3, tags=[{"key": None, "value": 1}, {"value": "no key"}, {"key": "no value"}]),
        _span(4, references=[{"refType": "FOLLOWS_FROM", "spanID": "0000000000000001"}, {}, {"refType": None}]),
    ]),
    "embedded process and span warnings": _doc([
        _span(0, process={"serviceName": "embedded", "tags": [1]}, warnings=["clock skew", None, "w2"]),
        _span(1, process=None, warnings=[]), _span(2, process={}, processID="nope"),
    ], warnings=["trace warning", "second"]),
    "processes of odd shapes": _doc([_span(i, processID=f"p{i}") for i in range(5)],
                                    processes={"p0": None, "p1": "text", "p2": {}, "p3": {"serviceName": None},
                                               "p4": {"serviceName": "s4", "serviceName2": 1}}),
    "no processes, no traceID": {"data": [{"spans": [_span(0, traceID=None)]}, {"spans": None}, {}]},
    "one v1 trace": {"traceID": "ab", "spans": [_span(0), _span(1)], "processes": {"p1": {"serviceName": "x"}}},
    "many traces": {"data": [{"traceID": f"{t:032x}", "spans": [_span(i, traceID=f"{t:032x}") for i in range(3)],
                              "processes": {"p1": {"serviceName": f"svc{t}"}}} for t in range(40)]},
    "logs of every shape pyarrow reads": _doc([
        _span(0, logs=[{"timestamp": None, "fields": [{"key": "message", "value": {"nested": [1, 2]}}]},
                       {"fields": None}, {"timestamp": 5}, {"timestamp": 1796637600123456,
                                                            "fields": [{"key": "error.object", "value": 3},
                                                                       {"key": "error.object", "value": "last"}]}]),
        _span(1, logs=[{"timestamp": 1796637600123456, "fields": []}] * 70),
    ] + [_span(i) for i in range(2, 140)]),
    "empty": {"data": []},
    "log times no calendar holds": _doc([_span(0, logs=[{"timestamp": 2**62, "fields": []}, {"timestamp": -(2**62)}]),
                                         _span(1)]),
    "whitespace everywhere": None,  # filled below: the plain document pretty-printed
    "numbers near the limits": _doc([_span(0, startTime=2**62, duration=-1), _span(1, startTime=0, duration=0),
                                     _span(2, startTime=-(2**63) + 1)]),
    "unknown keys of any kind": _doc([_span(0, extra={"a": [1, {"b": None}]}, flags=1.5, other="\\u00e9")],
                                     extra=[1, 2, {"x": "y"}]),
    "ids of odd text": _doc([_span(0, spanID="ABC", traceID="  4bf9 "), _span(1, spanID="AAAAAAAAAAE=")]),
    "a bare array of spans, processes embedded": [_span(i, process={"serviceName": f"s{i}"}) for i in range(3)]
    + [{"spanID": None, "spans": []}],
    "a bare array of traces": [{"spans": None}] + [{"traceID": f"{t:032x}", "spans": [_span(i) for i in range(2)],
                                                   "processes": {"p1": {"serviceName": "x"}}, "spanID": 5}
                                                  for t in range(3)],
    "JSON Lines with a form feed line": json.dumps(_doc([_span(0)])) + "\n\x0c\n" + json.dumps(_doc([_span(1)])),
    "JSON Lines of every v1 shape": "\r\n".join(json.dumps(d) for d in (
        _doc([_span(0)]), {"traceID": "ab", "spans": [_span(1)]}, [_span(2, process={"serviceName": "p"})],
        [{"spans": [_span(3)]}], {"data": []})) + "\n\n \t\n" + json.dumps(_doc([_span(4)])) + "\r"
    + json.dumps(_doc([_span(5)])) + "\n",
}


def _text(doc: dict | list | str | None, name: str) -> str:
    if isinstance(doc, str):
        return doc
    if name == "whitespace everywhere":
        return json.dumps(READ_NATIVELY["plain"], indent="\t", separators=(" ,\r\n", " : "))
    if name == "escapes and unicode (UTF-8)":
        return json.dumps(READ_NATIVELY["escapes and unicode"], ensure_ascii=False)
    return json.dumps(doc)


@pytest.mark.parametrize("name", sorted(READ_NATIVELY))
def test_v1_documents_read_natively_give_the_python_readers_table(name, tmp_path, monkeypatch):
    path = tmp_path / "trace.json"
    path.write_text(_text(READ_NATIVELY[name], name), encoding="utf-8")
    assert _natively_read(path.read_bytes(), monkeypatch)
    out = _same(path, monkeypatch)
    assert not isinstance(out, str)


# documents the native reader hands to the Python reader (or both fail with the same line)
HANDED_BACK = {
    "a lone surrogate": '{"data":[{"spans":[{"spanID":"1","operationName":"a\\ud800b","startTime":1}]}]}',
    "a time as text": json.dumps(_doc([_span(0, startTime="1796637600123456"), _span(1, duration="1.5ms")])),
    "an unreadable duration": json.dumps(_doc([_span(0, duration="invalid")])),
    "an id as a number": json.dumps(_doc([_span(0, spanID=12345)])),
    "a float time": json.dumps(_doc([_span(0, startTime=1796637600123456.0)])),
    "an integer beyond 64 bits": json.dumps(_doc([_span(0, tags=[{"key": "big", "value": 2**70}])])),
    "a repeated key": json.dumps(_doc([_span(0)])).replace('"duration": 90000', '"duration": 1, "duration": 2'),
    "a typed tag": json.dumps(_doc([_span(0, tags=[{"key": "k", "vType": "INT64", "vInt64": 5}])])),
    "a domain-model span": json.dumps(_doc([_span(0, spanId="AAAAAAAAAAE=")])),
    "a tag that is not an object": json.dumps(_doc([_span(0, tags=["x"])])),
    "a log field that is not an object": json.dumps(_doc([_span(0, logs=[{"timestamp": 1, "fields": [3]}])])),
    "data that is an object": json.dumps({"data": {"spans": [_span(0)]}}),
    "data null": '{"data": null}',
    "a mixed array": json.dumps([_span(0), {"spans": [_span(1)]}]),
    "an array of traces and spans": json.dumps([{"spans": [_span(1)]}, _span(0)]),
    "an empty array": "[]",
    "an array of arrays": json.dumps([[_span(0)], [_span(1)]]),
    "JSON Lines with an OTLP line": json.dumps(_doc([_span(0)])) + "\n" + '{"resourceSpans": []}\n',
    "JSON Lines with a broken line": json.dumps(_doc([_span(0)])) + "\n{\"data\": [\n",
    "two documents on one line": json.dumps(_doc([_span(0)])) + " " + json.dumps(_doc([_span(1)])),
    "JSON Lines, two documents on a line": (json.dumps(_doc([_span(0)])) + " {}\n") * 2,
    "OTLP": '{"resourceSpans": []}',
    "truncated": json.dumps(_doc([_span(0)]))[:-7],
    "trailing comma": '{"data": [],}',
    "not JSON": "hello",
    "an empty file": "",
    "only whitespace": " \n",
    "a number": "5",
    "a byte order mark": "\ufeff" + json.dumps(_doc([_span(0)])),
    "NaN": json.dumps(_doc([_span(0, tags=[{"key": "n", "value": float("nan")}])])),
    "a leading zero": '{"data": [{"spans": [{"spanID": "1", "startTime": 01}]}]}',
    "a raw control character": '{"data": [{"spans": [{"spanID": "a\tb"}]}]}',
    "no spans at all": '{"traceID": "ab"}',
    "a trace that is a string": '{"data": ["x"]}',
    "deep nesting": '{"data": [{"spans": [{"spanID": "1", "tags": [{"key": "d", "value": ' + "[" * 600 + "]" * 600
                    + "}]}]}]}",
}


@pytest.mark.parametrize("name", sorted(HANDED_BACK))
def test_documents_the_native_reader_declines_read_as_the_python_reader_reads_them(name, tmp_path, monkeypatch):
    path = tmp_path / "trace.json"
    path.write_text(HANDED_BACK[name], encoding="utf-8")
    assert not _natively_read(path.read_bytes(), monkeypatch)
    _same(path, monkeypatch)


def test_randomly_altered_spans_give_the_same_table_or_the_same_error(tmp_path, monkeypatch):
    """Any field of a span (or of its tags, references, logs, process) given a value of any
    type, the document written in any v1 shape (envelope, one trace, bare array of traces or
    of spans, JSON Lines): either reader's table, or error, is the other's."""
    pool = [None, True, False, 0, -1, 7, 2**63 - 1, 2**64 - 1, 1.5, -0.0, 1e20, "", "x", "123", "1.5ms", "null",
            "2017-01-26T16:46:31.639875-05:00", [], [None], ["a", 1], {}, {"key": "k"}, {"serviceName": 3},
            [{"key": "k", "value": 1}], [{"timestamp": 1, "fields": [{"key": "k", "value": [1]}]}]]
    rng = random.Random(1505)
    base = _doc([_span(i) for i in range(5)])
    path = tmp_path / "trace.json"
    natively = 0
    for _ in range(150):
        doc = copy.deepcopy(base)
        for _change in range(rng.randint(1, 3)):
            span = rng.choice(doc["data"][0]["spans"])
            tags = span.get("tags") if isinstance(span.get("tags"), list) else []
            tags = [t for t in tags if isinstance(t, dict)]
            targets = [t for t in (span, span, *tags[:1], doc["data"][0], doc["data"][0].get("processes"))
                       if isinstance(t, dict)]
            target = rng.choice(targets)
            key = rng.choice(sorted((set(target) | {"process", "serviceName", "value"}) - {"spans"}))
            target[key] = copy.deepcopy(rng.choice(pool))
        traces = doc["data"]
        path.write_text(rng.choice([
            json.dumps(doc), json.dumps(traces), json.dumps(traces[0]),
            json.dumps(traces[0]["spans"] if isinstance(traces[0].get("spans"), list) else doc),
            "\n".join(json.dumps({"data": [dict(traces[0], spans=[sp])]}) for sp in traces[0]["spans"])]))
        natively += _natively_read(path.read_bytes(), monkeypatch)
        _same(path, monkeypatch)
    assert 20 < natively < 150  # both sides of the line were crossed


def test_reader_choice(monkeypatch, tmp_path):
    monkeypatch.setenv(READER_ENV, "fast")
    with pytest.raises(ForensicsError, match="auto, native, python"):
        native_module()
    monkeypatch.setenv(READER_ENV, "python")
    assert native_module() is None
    raw = (TESTS / "fixtures" / "traces" / "ui_download.json").read_bytes()
    assert native_block(raw) == (None, "the native trace reader is not in use")
    monkeypatch.setitem(sys.modules, "forensics_trace_native", None)  # import fails
    monkeypatch.setenv(READER_ENV, "auto")
    assert native_module() is None
    path = tmp_path / "t.json"
    path.write_bytes(raw)
    assert len(read_trace_file(path)) == 5  # the Python reader, without a word
    monkeypatch.setenv(READER_ENV, "native")
    with pytest.raises(ForensicsError, match="not installed"):
        read_trace_file(path)


# Two threads (native/trace_reader/src/lib.rs, "two threads"): a big document is read by a
# second thread from an item near its middle; its part is used only where the first thread
# lands on that item. Here both ways are forced on small documents (split_from) and compared
# column for column: the table is made from these columns alone.
def _columns(raw: bytes, split_from: int) -> tuple[dict | None, str | None, bool]:
    out, reason = native_module().read_v1(raw, split_from)
    halves = out.pop("halves") if out is not None else False
    return out, reason, halves


def _split_as_one_pass(raw: bytes) -> bool:
    """The columns (or the reason declined) read by two threads equal one thread's; whether the
    second thread's part was used."""
    one, one_reason, _ = _columns(raw, 2**62)
    two, two_reason, halves = _columns(raw, 0)
    assert (two, two_reason) == (one, one_reason)
    return halves


def _traces(count: int, spans: int) -> list[dict]:
    return [{"traceID": f"{t + 1:032x}", "spans": [_span(i, traceID=f"{t + 1:032x}", spanID=f"{t * spans + i + 1:016x}")
                                                    for i in range(spans)],
             "processes": {"p1": {"serviceName": f"svc{t % 3}"}, "p2": {"serviceName": "message-service"}},
             "warnings": None} for t in range(count)]


SPLIT = {  # v1 documents the second thread reads half of (checked)
    "a UI download of many traces": {"data": _traces(60, 7)},
    "a UI download of one huge trace": {"data": _traces(1, 500)},
    "an API answer with keys after data": {"data": _traces(9, 30), "total": 0, "errors": None},
    "one v1 trace, huge": _traces(1, 300)[0],
    "text that looks like JSON (its quotes escaped)": _doc([_span(i, operationName='{"spans": [{"spanID": "1"}]}' * 9)
                                                            for i in range(60)]),
    "a bare array of traces": _traces(1, 200) + _traces(1, 3),
}


@pytest.mark.parametrize("name", sorted(SPLIT))
def test_two_threads_give_one_threads_columns_and_table(name, tmp_path, monkeypatch):
    raw = json.dumps(SPLIT[name]).encode()
    assert _split_as_one_pass(raw)
    monkeypatch.setenv(READER_ENV, "native")
    one, two = (spans_frame([native_block(raw, split_from)[0]], "trace.json") for split_from in (2**62, 0))
    pd.testing.assert_frame_equal(two, one)
    path = tmp_path / "trace.json"
    path.write_bytes(raw)
    pd.testing.assert_frame_equal(_same(path, monkeypatch), one)  # and the Python reader's


MISLEADING = {  # where the second thread's guess is no item of the array it takes it for
    "a trace-like object in a tag value": _doc([_span(i) for i in range(3)] + [_span(
        3, tags=[{"key": "payload", "value": {"traceID": "x", "spans": [_span(9)]}}])]),
    "span-like references": _doc([_span(i, references=[{"spanID": f"{i:016x}", "refType": "CHILD_OF"}] * 40)
                                  for i in range(4)]),
    "a span-like tag value last": _doc([_span(0), _span(1, tags=[{"key": "k", "value": _span(5)}] * 30)]),
    "broken after the middle": json.dumps({"data": _traces(20, 4)})[:-40] + "}" * 3,
    "a repeated key after the middle": json.dumps({"data": _traces(20, 4)})[:-300].rstrip(",") + ', "spanID": "1", '
                                       '"spanID": "2"}]}]}',
    "too deep after the middle": '{"data": [' + ", ".join(json.dumps(t) for t in _traces(6, 3)) + ', {"spans": ['
                                 '{"spanID": "1", "tags": [{"key": "d", "value": ' + "[" * 600 + "]" * 600 + "}]}]}]}",
    "not v1 after the middle": json.dumps({"data": _traces(6, 3) + [{"spans": [{"spanId": "AAAAAAAAAAE="}]}]}),
    "JSON Lines": "\n".join(json.dumps({"data": [t]}) for t in _traces(8, 5)),
}


@pytest.mark.parametrize("name", sorted(MISLEADING))
def test_two_threads_misled_still_give_one_threads_columns(name):
    doc = MISLEADING[name]
    assert not _split_as_one_pass((doc if isinstance(doc, str) else json.dumps(doc)).encode())


def test_two_threads_on_every_document_here():
    """Every document of the tests above (read or declined), and a split at every middle."""
    docs = [*READ_NATIVELY.items(), *HANDED_BACK.items()]
    for name, doc in docs:
        _split_as_one_pass(_text(doc, name).encode("utf-8", "surrogatepass"))
    raw = json.dumps({"data": _traces(4, 3)}).encode()
    for cut in range(0, len(raw), 97):  # the middle moved over the whole document by padding its start
        assert _split_as_one_pass(b" " * cut + raw) in (True, False)
