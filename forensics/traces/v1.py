"""Jaeger v1 JSON spans (UI downloads, ``/api/traces`` answers) read column-wise by pyarrow.

v1 spans are read by pyarrow straight from the decoded dicts (fixed fields in C++), tag
and log field values in one Python pass, a thousand spans at a time (the Python pass then
finds the dicts in the CPU cache).
"""

from __future__ import annotations

import itertools
import operator
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forensics.traces.jsontext import TEXT_DICT, dumps, json_maps, json_values, last_of_each_key, sort_rank
from forensics.traces.parents import CHILD_OF, jaeger_parents, reference_types
from forensics.traces.table import EXCEPTION_KEYS, NAT_NS, Block, exception_message, iso_us, second_text
from forensics.traces.values import Unreadable, Warnings, duration_us, integer, time_us


def _log_time(when: Any) -> str | None:
    """A v1 log time (µs) as ISO text; null stays null. One that is not a whole number, or
    that no calendar holds (before year 1, after 9999), raises :class:`Unreadable`."""
    us = integer("log timestamp", when)
    if us is None:
        return None
    try:
        return iso_us(us * 1000)
    except (ValueError, OverflowError, OSError):
        raise Unreadable("log timestamp", when) from None


def _v1_logs(logs: list) -> tuple[str, str | None, list[str]]:
    """v1 span logs as a JSON array of {timestamp, field: value...}; plus an exception message
    found, and the warnings of log times that cannot be read (null in the array).
    An entry or field that is no object is left out; a key that is no text is written as JSON text."""
    out, exc, unread = [], None, Warnings()
    for log in logs:
        log = log if isinstance(log, Mapping) else {}
        # null: not given, or unreadable text (read by _v1_sanitised, which warned)
        entry: dict[str, Any] = {"timestamp": unread.read(_log_time, log.get("timestamp"))}
        fields = log.get("fields")
        for f in fields if isinstance(fields, list) else ():
            if isinstance(f, Mapping):
                key = f.get("key")
                entry[key if isinstance(key, str) else dumps(key)] = f.get("value")
        exc = exc or exception_message(entry)
        out.append(entry)
    return dumps(out), exc, unread


V1_LOG = pa.struct([("timestamp", pa.int64()), ("fields", pa.list_(pa.struct([("key", pa.string())])))])
"""What is read of a v1 log entry in C++; field values are read in Python."""
_LOGS_COLUMNWISE = 64
"""From this many spans with logs on, logs are written column-wise; fewer, one by one (faster then)."""
_LOG_TIME_END = 253_402_300_800_000_000
"""Log times (µs) from 0 up to here (year 10000) are written column-wise; others by :func:`_v1_logs`."""


def _v1_log_columns(logs: Sequence[list], read: pa.ListArray | None, values: np.ndarray | None
                    ) -> tuple[pa.Array, pa.Array, list[list[str]]]:
    """:func:`_v1_logs` for many spans' logs (non-empty lists) at once: JSON text, exception
    messages and each span's warnings of log times that cannot be read.

    Column-wise from ``read`` (the same logs as lists of :data:`V1_LOG`) and ``values`` (their
    fields' values, flat): each entry is written as a JSON object by :func:`json_maps`, as
    ``dumps`` writes the entry dict (keys sorted, the last of a repeated key kept, a
    ``timestamp`` field replacing the time). Without ``read``, and for logs of other shapes (an
    entry or field that is no object, a key that is no text, a time that is text or out of
    range), by :func:`_v1_logs`, which gives the same or raises.
    """
    if read is not None:
        entries = read.flatten()
        fields = entries.field("fields")
        field_keys = fields.flatten().field("key")
        time_us = pc.fill_null(entries.field("timestamp"), 0).to_numpy()
    if (read is None or values is None or entries.null_count or entries.field("timestamp").null_count
            or fields.flatten().null_count or field_keys.null_count
            or len(values) != len(field_keys) or not np.all((time_us >= 0) & (time_us < _LOG_TIME_END))):
        text, exc, unread = zip(*map(_v1_logs, logs), strict=True)
        return pa.array(text, pa.string()), pa.array(exc, pa.string()), list(unread)
    m = len(entries)
    # items: each entry's time first, then its fields in order (the order a dict is written in)
    seconds, second_at = np.unique(time_us // 1_000_000, return_inverse=True)
    times = pc.binary_join_element_wise(
        '"', pc.take(pa.array([second_text(int(x)) for x in seconds], pa.string()), pa.array(second_at)),
        pc.utf8_lpad(pc.cast(pa.array(time_us % 1_000_000), pa.string()), width=6, padding="0"), 'Z"', "")
    encoded = pa.concat_arrays([pa.array(["timestamp"] * m, pa.string()), field_keys]).dictionary_encode()
    names, key = encoded.dictionary, encoded.indices.to_numpy()
    owner = np.concatenate([np.arange(m), pc.list_parent_indices(fields).to_numpy()])
    kept = last_of_each_key(owner, sort_rank(names)[key])
    is_field = kept >= m
    field_text = json_values(values, kept[is_field] - m, key[kept[is_field]])
    texts = pc.replace_with_mask(pc.take(times, pa.array(np.where(is_field, 0, kept))), pa.array(is_field),
                                 field_text.dictionary.take(field_text.indices))
    entry_text = json_maps(names, key[kept], texts, owner[kept], m)
    # the exception message: per span its first entry with one, per entry the first of EXCEPTION_KEYS set
    priority = pc.fill_null(pc.index_in(names, pa.array(EXCEPTION_KEYS)), -1).to_numpy()[key[kept]]
    found = kept[priority >= 0]
    found_values = values[found - m]
    usable = np.fromiter((v not in (None, "") for v in found_values), dtype=bool, count=len(found))
    found, found_values, priority = found[usable], found_values[usable], priority[priority >= 0][usable]
    span = pc.list_parent_indices(read).to_numpy()[owner[found]]
    first = np.lexsort((priority, owner[found]))  # entries are numbered in span order
    first = first[np.diff(span[first], prepend=-1) != 0]
    exception = np.full(len(logs), None, dtype=object)
    exception[span[first]] = [str(v) for v in found_values[first]]
    text = pc.binary_join(pa.ListArray.from_arrays(read.offsets, entry_text), ",")
    return pc.binary_join_element_wise("[", text, "]", ""), pa.array(exception, pa.string()), []


def _v1_span_type(log: pa.StructType) -> pa.StructType:
    """What is read of a v1 span in C++, with ``log`` as what is read of its log entries."""
    return pa.struct([
        ("traceID", pa.string()), ("spanID", pa.string()), ("operationName", pa.string()),
        ("references", pa.list_(pa.struct([("refType", pa.string()), ("traceID", pa.string()),
                                            ("spanID", pa.string())]))),
        ("startTime", pa.int64()), ("duration", pa.int64()),
        ("tags", pa.list_(pa.struct([("key", TEXT_DICT)]))), ("logs", pa.list_(log)),
        ("processID", TEXT_DICT), ("process", pa.struct([("serviceName", pa.string())])),
        ("warnings", pa.list_(pa.string())),
    ])


_V1_SPAN = _v1_span_type(V1_LOG)
"""What is read of a v1 span in C++ (pyarrow converts the dicts); tag and log field values,
whose types vary, are read in Python."""
_V1_SPAN_BARE = _v1_span_type(pa.struct([("timestamp", pa.int64())]))
""":data:`_V1_SPAN` without log fields, for logs whose fields pyarrow cannot read (keys that are
no text): those logs are written one by one by :func:`_v1_logs`."""


_TAGS, _VALUE = operator.itemgetter("tags"), operator.itemgetter("value")


def _v1_sanitised(sp: Any) -> dict | None:
    """A v1 span of odd types (times as strings, numeric ids, ...) in the types of :data:`_V1_SPAN`.

    Times and durations given as text are read (decimal µs, RFC 3339, Go durations); a value
    that cannot be read becomes null and is named in the span's warnings.
    """
    if not isinstance(sp, Mapping):
        return None
    unread = Warnings()

    def text(v: Any) -> str | None:
        return None if v is None else str(v)

    def read(reader: Callable[[str, Any], int | None], field: str, v: Any) -> int | None:
        return unread.read(reader, field, None if v == "" else v)

    def dicts(v: Any) -> list:
        return [d for d in v if isinstance(d, Mapping)] if isinstance(v, list) else []

    process = sp.get("process")
    given = sp.get("warnings")
    return {
        "traceID": text(sp.get("traceID")), "spanID": text(sp.get("spanID")),
        "operationName": text(sp.get("operationName")),
        "references": [{"refType": text(r.get("refType")), "traceID": text(r.get("traceID")),
                        "spanID": text(r.get("spanID"))} for r in dicts(sp.get("references"))],
        "startTime": read(time_us, "startTime", sp.get("startTime")),
        "duration": read(duration_us, "duration", sp.get("duration")),
        "tags": [{"key": text(t.get("key")), "value": t.get("value")} for t in dicts(sp.get("tags"))],
        "logs": [{"timestamp": read(time_us, "log timestamp", lg.get("timestamp")), "fields": lg.get("fields")}
                 for lg in dicts(sp.get("logs"))],
        "processID": text(sp.get("processID")),
        "process": {"serviceName": text(process.get("serviceName"))} if isinstance(process, Mapping) else None,
        "warnings": ([str(w) for w in given if w is not None] if isinstance(given, list) else []) + unread or None,
    }


_START, _DURATION = operator.methodcaller("get", "startTime"), operator.methodcaller("get", "duration")


def _fraction_in_times(spans: list, logs: list) -> bool:
    """Whether a span's startTime or duration, or a log's timestamp, is a number with a
    fraction, which pyarrow would cut to a whole one without a word (1.5 -> 1): such spans are
    read as odd ones (:func:`_v1_sanitised`), the value null with a warning."""
    log_times = [log.get("timestamp") for lg in logs for log in lg if isinstance(log, Mapping)]
    try:
        types = {*map(type, map(_START, spans)), *map(type, map(_DURATION, spans)), *map(type, log_times)}
    except AttributeError:  # a span that is no object
        types = {float}
    if float not in types:
        return False  # the usual case, told in C
    times = [sp.get(k) for sp in spans if isinstance(sp, Mapping) for k in ("startTime", "duration")] + log_times
    return any(type(t) is float and not t.is_integer() for t in times)


_CHUNK = 1000
"""Spans read at a time: the Python passes over a chunk (tag values, logs) find its dicts still
in the CPU cache after pyarrow's pass, which saves about a third of the reading time."""
_TAGS_FIELD, _LOGS_FIELD = _V1_SPAN.get_field_index("tags"), _V1_SPAN.get_field_index("logs")


@dataclass(frozen=True)
class V1Read:
    """v1 spans as read column-wise, by :func:`_v1_read` from decoded spans or by the native
    reader (:mod:`~forensics.traces.native`) from the bytes of a document."""

    fields: dict[str, pa.Array]
    """The fixed fields of :data:`_V1_SPAN` (or :data:`_V1_SPAN_BARE`), by name, one row a span."""
    tag_values: np.ndarray
    """All tags' values, flat (any JSON type)."""
    logs: Sequence[list]
    """The logs lists of the spans that have logs, as given (the native reader decodes them only
    when they are read)."""
    log_values: np.ndarray | None
    """Their fields' values, flat; None when not read (:data:`_V1_SPAN_BARE`, or entries or fields
    that are no objects)."""


def log_values_of(logs: list) -> np.ndarray:
    """The values of the fields of these logs lists, flat (raises on entries or fields that are
    no objects)."""
    return np.fromiter((f.get("value") for lg in logs for log in lg for f in log.get("fields") or ()), dtype=object)


def _v1_read(spans: list, span_type: pa.StructType) -> V1Read:
    """v1 spans read chunk by chunk (:data:`_CHUNK`); raises what pyarrow raises on odd types."""
    arrays, logs = [], []
    values, filled = np.empty(0, dtype=object), 0  # written in place: a concatenation would read them all again
    log_values: list | None = [] if span_type == _V1_SPAN else None
    for i in range(0, len(spans), _CHUNK):
        part = spans[i:i + _CHUNK]
        arr = pa.array(part, type=span_type)
        arrays.append(arr)
        tag_offsets = arr.field(_TAGS_FIELD).offsets.to_numpy()
        count = int(tag_offsets[-1] - tag_offsets[0])
        if filled + count > len(values):  # room for all at the tags per span seen so far, and an eighth more
            expected = (filled + count) * len(spans) // (i + len(part)) * 9 // 8
            grown = max(expected, 2 * len(values), filled + count)
            values = np.concatenate([values, np.empty(grown - len(values), dtype=object)])
        try:
            values[filled:filled + count] = np.fromiter(
                map(_VALUE, itertools.chain.from_iterable(map(_TAGS, part))), dtype=object, count=count)
        except (KeyError, TypeError, ValueError):  # spans without tags, tags without values
            values[filled:filled + count] = np.fromiter(
                (t.get("value") if isinstance(t, Mapping) else None
                 for t in itertools.chain.from_iterable(sp.get("tags") or () if sp else () for sp in part)),
                dtype=object, count=count)
        filled += count
        part_logs = [part[j].get("logs") for j in np.flatnonzero(np.diff(arr.field(_LOGS_FIELD).offsets.to_numpy()))]
        if _fraction_in_times(part, part_logs):
            raise ValueError("a time with a fraction")
        logs.extend(part_logs)
        if part_logs and log_values is not None:
            try:
                log_values.append(log_values_of(part_logs))
            except (AttributeError, TypeError):  # entries or fields that are no objects: _v1_logs says what
                log_values = None
    arrays = arrays or [pa.array([], type=span_type)]
    spans = arrays[0] if len(arrays) == 1 else pa.concat_arrays(arrays)
    return V1Read(dict(zip(span_type.names, spans.flatten(), strict=True)), values[:filled], logs,
                  None if log_values is None else np.concatenate(log_values or [np.zeros(0, dtype=object)]))


class _Unread(Exception):
    """Spans pyarrow could not read as they are (raised with :func:`v1_block`'s ``as_is``)."""


_US_LIMIT = np.iinfo("int64").max // 1000
"""µs beyond which a time or duration has no int64 nanoseconds (years before 1677 or after 2262)."""


def _ns(us: pa.Array, field: str, unread: dict[int, list[str]]) -> np.ndarray:
    """µs (null: missing or unreadable) as int64 ns, null as :data:`NAT_NS`; a value beyond
    :data:`_US_LIMIT` is null too, with its warning added to ``unread`` (row -> warnings)."""
    values = pc.fill_null(us, NAT_NS).to_numpy()
    given = values != NAT_NS
    beyond = given & ((values > _US_LIMIT) | (values < -_US_LIMIT))
    for row in np.flatnonzero(beyond):
        unread.setdefault(int(row), []).append(str(Unreadable(field, int(values[row]))))
    return np.where(given & ~beyond, values * 1000, NAT_NS)


@dataclass(frozen=True)
class V1Traces:
    """What a block needs of each trace besides its spans."""

    ids: list[str | None]
    """Each trace's traceID (the id of its spans that name none)."""
    services: list[dict[str, str | None]]
    """Each trace's processes: process id -> service name."""
    warnings: list[Any]
    """Each trace's warnings as given (a list of texts, or None)."""
    counts: list[int]
    """Each trace's number of spans."""


def v1_block(traces: list[Mapping], prefixes: list[str], as_is: bool = False) -> Block:
    """v1 trace objects (``{"traceID", "spans", "processes"}``) -> one block, vectorised.

    ``prefixes[i]`` is the JSON path of trace i's span list, for ``source_ref``. Spans of odd
    types are read again with fewer fields, then coerced (:func:`_v1_sanitised`); with
    ``as_is``, :class:`_Unread` is raised instead.
    """
    spans: list = []
    counts = []
    for trace in traces:
        s = trace.get("spans") or []
        spans.extend(s)
        counts.append(len(s))
    odd = (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError)
    try:
        read = _v1_read(spans, _V1_SPAN)
    except odd:
        if as_is:
            raise _Unread from None
        try:
            read = _v1_read(spans, _V1_SPAN_BARE)
        except odd:
            read = _v1_read([_v1_sanitised(sp) for sp in spans], _V1_SPAN_BARE)
    def processes(trace: Mapping) -> Mapping:
        given = trace.get("processes")
        return given if isinstance(given, Mapping) else {}

    def service(process: Any) -> str | None:
        name = process.get("serviceName") if isinstance(process, Mapping) else None
        return None if name is None else str(name)  # as an embedded process' name is read

    def warnings(trace: Mapping) -> list | None:
        given = trace.get("warnings")
        return given if given is None or isinstance(given, list) else [given]

    info = V1Traces(
        ids=[None if t.get("traceID") is None else str(t.get("traceID")) for t in traces],
        services=[{str(pid): service(p) for pid, p in processes(t).items()} for t in traces],
        warnings=[warnings(t) for t in traces], counts=counts)
    return v1_read_block(read, info, prefixes)


def v1_read_block(read: V1Read, traces: V1Traces, prefixes: list[str]) -> Block:
    """v1 spans read column-wise (``read``) of ``traces`` -> one block: services, Jaeger's
    parents, follows-from links, logs as JSON text, warnings."""
    f, tag_values = read.fields, read.tag_values
    n = len(f["startTime"])
    trace_of = np.repeat(np.arange(len(traces.counts)), traces.counts)
    trace_ids = pa.array(traces.ids, pa.string())
    # service: an embedded process, else the trace's processes[processID] (ids are per trace),
    # looked up by trace and process id as one number
    pids = f["processID"].dictionary.to_pylist()
    pid_code = {pid: c for c, pid in enumerate(pids)}
    services: dict[int, str | None] = {}
    for t, names in enumerate(traces.services):
        for pid, name in names.items():
            if pid in pid_code:
                services[t * len(pids) + pid_code[pid]] = name
    span_proc = np.where(f["processID"].is_null().to_numpy(zero_copy_only=False), -1,
                         trace_of * len(pids) + pc.fill_null(f["processID"].indices, 0).to_numpy())
    table = sorted(services.items())
    keys = np.array([k for k, _ in table] + [np.iinfo("int64").max], dtype="int64")  # and one past every key
    at = np.searchsorted(keys, span_proc)
    service = pc.take(pa.array([name for _, name in table] + [None], pa.string()),
                      pa.array(np.where(keys[at] == span_proc, at, len(table))))
    service = pc.coalesce(f["process"].flatten()[0], service)
    trace_id = pc.coalesce(f["traceID"], pc.take(trace_ids, pa.array(trace_of, pa.int64())))
    # parent: Jaeger's rule (parents.py); references other than the parent's CHILD_OF become a
    # follows_from tag (the links Jaeger draws)
    refs = f["references"]
    ref_owner = pc.list_parent_indices(refs).to_numpy()
    ref_type, ref_trace, ref_span = refs.flatten().flatten()
    ref_type = reference_types(ref_type)
    parent, parent_type = jaeger_parents(ref_owner, ref_type, ref_trace, ref_span, trace_id)
    # tags: keys from C++, values (any JSON type) from the dicts
    tag_span = pc.list_parent_indices(f["tags"]).to_numpy()
    tag_keys = f["tags"].flatten().flatten()[0]
    follows = np.flatnonzero(~pc.fill_null(pc.equal(ref_type, CHILD_OF), False).to_numpy(zero_copy_only=False))
    if len(follows):
        links: dict[int, list] = defaultdict(list)
        for owner, span_id in zip(ref_owner[follows], pc.take(ref_span, pa.array(follows)).to_pylist(), strict=True):
            links[int(owner)].append(span_id)
        tag_keys = pa.concat_arrays([tag_keys, pa.array(["follows_from"] * len(links), TEXT_DICT)])
        tag_values = np.concatenate([tag_values, np.fromiter(links.values(), dtype=object, count=len(links))])
        tag_span = np.concatenate([tag_span, np.fromiter(links, dtype="int64", count=len(links))])
    # logs: of the spans that have them
    logs = exception = pa.nulls(n, pa.string())
    has_logs = pc.fill_null(pc.greater(pc.list_value_length(f["logs"]), 0), False)
    log_unread: list[list[str]] = []
    if pc.any(has_logs).as_py():
        columnwise = read.log_values is not None and len(read.logs) >= _LOGS_COLUMNWISE
        text, exc, log_unread = _v1_log_columns(read.logs, pc.filter(f["logs"], has_logs) if columnwise else None,
                                                read.log_values)
        logs, exception = pc.replace_with_mask(logs, has_logs, text), pc.replace_with_mask(exception, has_logs, exc)
    unread: dict[int, list[str]] = {}
    start, duration = _ns(f["startTime"], "startTime", unread), _ns(f["duration"], "duration", unread)
    if any(log_unread):
        for row, warned in zip(np.flatnonzero(has_logs.to_numpy(zero_copy_only=False)), log_unread, strict=True):
            if warned:
                unread.setdefault(int(row), []).extend(warned)
    warnings = pc.binary_join(f["warnings"], "; ")
    if unread:  # after the span's own, as when read from text (_v1_sanitised)
        rows = sorted(unread)
        given = pc.take(warnings, pa.array(rows)).to_pylist()
        mask = np.zeros(n, dtype=bool)
        mask[rows] = True
        warnings = pc.replace_with_mask(warnings, pa.array(mask), pa.array(
            ["; ".join([w] * bool(w) + unread[r]) for w, r in zip(given, rows, strict=True)], pa.string()))
    trace_warnings = [("; ".join(map(str, w)) if w else None) for w in traces.warnings]
    if any(trace_warnings):
        warnings = pc.coalesce(warnings, pc.take(pa.array(trace_warnings, pa.string()), pa.array(trace_of)))
    columns = {
        "trace_id": trace_id, "span_id": f["spanID"], "parent_span_id": parent, "parent_ref_type": parent_type,
        "service": service, "operation": f["operationName"],
        "kind": pa.nulls(n, pa.string()), "start": start,
        "duration": duration,
        "error": np.zeros(n, dtype=bool), "status_message": pa.nulls(n, pa.string()),
        "exception": exception, "logs": logs, "warnings": warnings,
    }
    return Block(columns, tag_keys, tag_values, tag_span, list(zip(prefixes, traces.counts, strict=True)))
