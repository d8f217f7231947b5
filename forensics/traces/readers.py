"""Trace documents and files of every shape -> the spans table.

:func:`parse_traces` finds the spans in decoded JSON of any shape Jaeger and OpenTelemetry
users hold, told by its content: v1 ``{"data": [...]}`` envelopes (UI downloads,
``/api/traces`` answers), single v1 traces, bare arrays of traces or spans, OTLP JSON
``{"resourceSpans": [...]}``, api/v3's ``{"result": {"resourceSpans": [...]}}``, and
traces or spans written as Jaeger's domain model or Thrift-style JSON;
:func:`read_trace_file` adds JSON Lines and gzip. Each shape has its reader
(:mod:`~forensics.traces.v1`, :mod:`~forensics.traces.otlp`, :mod:`~forensics.traces.model`),
which gives :class:`~forensics.traces.table.Block` s for :func:`~forensics.traces.table.spans_frame`.
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import json
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from forensics import schema
from forensics.errors import ForensicsError
from forensics.traces.model import is_model_span, is_thrift_span, v1_spans
from forensics.traces.native import native_block
from forensics.traces.otlp import otlp_block
from forensics.traces.table import Block, spans_frame
from forensics.traces.v1 import v1_block


class TraceFileError(ForensicsError):
    """A trace file or document of a shape no Jaeger tool produces."""


class _Parts:
    """The blocks of a document, in document order. Consecutive v1 parts (a JSON Lines file of
    traces, an array of envelopes) are kept back and made one block (many small blocks cost
    more than one), unless their spans must be coerced or anything fails: then block by block,
    as on their own, so that coercion and the error raised are those of each part alone."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.v1: list[tuple[list[Mapping], list[str]]] = []

    def add_v1(self, traces: list[Mapping], prefixes: list[str]) -> None:
        """Add traces of v1 shape (``{"spans": [...], ...}``); traces whose spans are written as
        Jaeger's domain model or Thrift-style JSON are read into v1 spans first."""
        self.v1.append(([_as_v1_trace(t) for t in traces], prefixes))

    def done(self) -> list[Block]:
        """The blocks so far, v1 parts kept back included (call before anything else can fail,
        so that the first failure in document order is the one raised)."""
        if len(self.v1) > 1:
            try:
                self.blocks.append(v1_block([t for ts, _ in self.v1 for t in ts], [p for _, ps in self.v1 for p in ps],
                                             as_is=True))
            except Exception:  # noqa: BLE001 - redone part by part, which raises the first failure
                self.blocks.extend(v1_block(ts, ps) for ts, ps in self.v1)
        elif self.v1:
            self.blocks.append(v1_block(*self.v1[0]))
        self.v1 = []
        return self.blocks


def _is_v1_trace(doc: Any) -> bool:
    return isinstance(doc, Mapping) and "spans" in doc and "resourceSpans" not in doc


def _is_span(doc: Any) -> bool:
    """A Jaeger span of any writing (v1, domain model, Thrift style), not an OTLP one."""
    return (isinstance(doc, Mapping) and ("spanID" in doc or "spanId" in doc)
            and "startTimeUnixNano" not in doc)


def _as_v1_trace(trace: Mapping) -> Mapping:
    """A trace whose spans are domain-model or Thrift-style JSON (told by its first span) with
    v1 spans instead; a v1 trace as it is."""
    spans = trace.get("spans")
    first = spans[0] if isinstance(spans, list) and spans else None
    if not (is_model_span(first) or is_thrift_span(first)):
        return trace
    return {"traceID": trace.get("traceID"), "spans": v1_spans(spans, trace), "warnings": trace.get("warnings")}


def _collect(doc: Any, parts: _Parts, where: str) -> None:
    """Find the spans in ``doc`` (any accepted shape) and add them to ``parts``."""
    if isinstance(doc, list):
        if doc and all(_is_span(d) for d in doc):
            parts.add_v1([{"spans": doc}], [where.rstrip(".")])  # a bare array of spans
        elif doc and all(_is_v1_trace(d) for d in doc):
            parts.add_v1(doc, [f"{where}[{i}].spans" for i in range(len(doc))])
        else:
            for i, item in enumerate(doc):
                _collect(item, parts, f"{where}[{i}].")
        return
    if not isinstance(doc, Mapping):
        parts.done()
        raise TraceFileError(f"{where.rstrip('. :') or 'document'}: expected a JSON object or array, got {type(doc).__name__}")
    if "resourceSpans" in doc:
        parts.done().append(otlp_block(doc.get("resourceSpans") or (), where))
    elif isinstance(doc.get("result"), Mapping) and "resourceSpans" in doc["result"]:
        parts.done().append(otlp_block(doc["result"].get("resourceSpans") or (), f"{where}result."))
    elif "data" in doc and (doc["data"] is None or isinstance(doc["data"], list | Mapping)):
        data = doc["data"] or []
        data = data if isinstance(data, list) else [data]
        for i, trace in enumerate(data):
            if not isinstance(trace, Mapping):
                parts.done()
                raise TraceFileError(f"{where}data[{i}]: expected a trace object, got {type(trace).__name__}")
        parts.add_v1(data, [f"{where}data[{i}].spans" for i in range(len(data))])
    elif "spans" in doc:
        parts.add_v1([doc], [f"{where}spans"])
    else:
        parts.done()
        keys = ", ".join(map(str, list(doc)[:6])) or "none"
        raise TraceFileError(f"{where.rstrip('. :') or 'document'}: not a Jaeger or OTLP trace document (keys: {keys}); "
                             "expected data, spans, resourceSpans or result.resourceSpans")


def _decode(raw: bytes) -> Any:
    """JSON by orjson (several times faster than the standard library on big downloads); what
    orjson refuses and JSON allows (a lone surrogate, an integer beyond 64 bits) by the standard
    library, whose error (``json.JSONDecodeError``, with the line) stands for both."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def parse_traces(doc: Any, source_object: str | None = None) -> pd.DataFrame:
    """Decoded JSON of any Jaeger/OTLP trace shape -> the canonical ``spans`` table.

    Accepts ``{"data": [trace, ...]}`` (v1 API answers and UI downloads), one v1 trace
    ``{"traceID", "spans", "processes"}``, a bare list of traces, spans or of such documents,
    ``{"resourceSpans": [...]}`` (OTLP JSON), ``{"result": {"resourceSpans": ...}}``
    (api/v3), and Jaeger domain-model or Thrift-style traces and spans
    (:mod:`~forensics.traces.model`). Parents follow Jaeger's rule
    (:mod:`~forensics.traces.parents`); a value that cannot be read is null and named in the
    span's ``warnings``. ``source_object`` names the file or endpoint; ``source_ref`` of each row is
    the JSON path of the span within it (``data[0].spans[3]``), so duplicates can be told apart.
    Times are nanoseconds internally; v1 microseconds and OTLP nanoseconds are both exact.
    """
    return _parse([(doc, "")], source_object)


def _without_lone_surrogates(obj: Any) -> Any:
    """``obj`` with every lone surrogate in its strings (JSON allows ``"\\ud800"``, UTF-8
    cannot hold it) replaced by U+FFFD."""
    if isinstance(obj, str):
        return schema.storable_text(obj)
    if isinstance(obj, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_without_lone_surrogates(v) for v in obj]
    return obj


def _parse(items: list[tuple[Any, str]], source_object: str | None) -> pd.DataFrame:
    """Decoded documents (each with its JSON-path prefix) -> the spans table; documents with
    a lone surrogate in a string are read again with it replaced (rare: only then the cost)."""
    try:
        return _parse_once(items, source_object)
    except UnicodeEncodeError:
        return _parse_once([(_without_lone_surrogates(doc), prefix) for doc, prefix in items], source_object)


def _parse_once(items: list[tuple[Any, str]], source_object: str | None) -> pd.DataFrame:
    parts = _Parts()
    for doc, prefix in items:
        _collect(doc, parts, prefix)
    return spans_frame(parts.done(), source_object)


def read_trace_file(path: str | Path) -> pd.DataFrame:
    """A trace file -> the spans table: any shape :func:`parse_traces` takes, JSON Lines of
    them (one document per line), gzip-compressed or not (told by its first bytes).

    Anything else raises :class:`TraceFileError` with one line naming the file and where:
    ``FILE: not JSON (Expecting value at line 3)``, ``FILE: line 7 of JSON Lines is not JSON``,
    ``FILE: data[0]: expected a trace object``.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()  # not mapped: a file truncated while mapped kills the process (SIGBUS)
    except OSError as exc:
        raise TraceFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise TraceFileError(f"{path}: not a readable gzip file ({exc})") from exc
    try:
        with _without_gc():
            block, _ = native_block(raw)  # v1 files, when the native reader is built
            if block is not None:
                return spans_frame([block], path.name)
            return _parse(_documents(raw, path), path.name)
    except TraceFileError as exc:
        raise TraceFileError(f"{path}: {exc}") from exc


@contextlib.contextmanager
def _without_gc() -> Iterator[None]:
    """The cyclic garbage collector paused: decoding a download makes millions of dicts and
    lists (none in a cycle), and each collection pass would walk them all again, which more
    than doubles the decoding time. Reference counting still frees everything."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _documents(raw: bytes, path: Path) -> list[tuple[Any, str]]:
    """The JSON documents of a file, each with its JSON-path prefix (``line 7: `` in JSON Lines)."""
    try:
        return [(_decode(raw), "")]
    except json.JSONDecodeError as whole:
        lines = raw.splitlines()
        if whole.msg != "Extra data" or len(lines) < 2:
            raise TraceFileError(f"not JSON ({whole.msg} at line {whole.lineno})") from whole
    items = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            items.append((_decode(line), f"line {n}: "))
        except json.JSONDecodeError as exc:
            _parse(items, path.name)  # a failure in an earlier line is the one to report
            raise TraceFileError(f"line {n} of JSON Lines is not JSON ({exc.msg})") from exc
    return items


TRACE_FILE_SUFFIXES = (".json", ".jsonl", ".ndjson", ".gz")
"""Files taken from a directory given to :func:`read_trace_files` (``x.json.gz`` ends in .gz)."""


def trace_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files and directories (searched recursively for :data:`TRACE_FILE_SUFFIXES`, in name
    order) -> the trace files, each once, in the order given. A path that does not exist, or
    a directory without trace files, raises :class:`TraceFileError`."""
    found: dict[Path, None] = {}
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(TRACE_FILE_SUFFIXES))
            if not inside:
                raise TraceFileError(f"{path}: no trace files in this directory (looked for "
                                     f"{', '.join(TRACE_FILE_SUFFIXES)}, recursively)")
            found.update(dict.fromkeys(inside))
        elif path.is_file():
            found[path] = None
        else:
            raise TraceFileError(f"{path}: no such file or directory")
    return list(found)


def read_trace_files(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Every trace file of ``paths`` (:func:`trace_files`) read by :func:`read_trace_file` into
    one spans table; ``source_object`` is each span's file as found (two directories may
    hold files of one name). The first file that cannot be read raises (nothing is silently
    left out)."""
    frames = [read_trace_file(p).assign(source_object=str(p)) for p in trace_files(paths)]
    frames = [f for f in frames if len(f)]
    return schema.conform("spans", pd.concat(frames, ignore_index=True)) if frames else schema.empty("spans")
