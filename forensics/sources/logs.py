"""Service logs into ``log_events``: logback JSON lines, Spring Boot console text, ``docker logs``.

Reads files, directories (every file below, sorted), gzip files (told by their magic bytes,
whatever their name) and standard input (``-``). The router and connector logs are where the
deployed platform keeps its failure reasons ("Connector returned error: status=429 ...",
"Message delivery failed after retries: messageId=..."), so these rows join the messages on
``message_id``.

Method, per chunk of about ``chunk_bytes`` (a file is never read whole into memory):

1. Split bytes at ``\\n`` and decode UTF-8 with replacement characters, so a binary or
   half-written line is kept, never lost. Blank lines carry nothing and give no row (they
   still count for line numbers).
2. Peel what docker adds: a ``docker compose logs`` prefix (``router-service-1  | ``), a
   ``docker logs --timestamps`` RFC 3339 prefix, or a json-file driver wrapper
   (``{"log": ..., "time": ...}``). Docker's time is used when the line has none of its own.
3. Classify the rest: logback/logstash JSON, a Spring Boot console line, a generic
   ``[timestamp] LEVEL ... message`` line, or a stack-trace continuation (``\\tat ...``,
   ``Caused by:``, ``java.lang.X: ...``), which belongs to the previous line of the same
   container. Anything else is kept with ``parse_error`` set and its text as the message.
4. Extract message and conversation ids, HTTP statuses and rate-limit values with
   vectorised regular expressions (pyarrow's RE2 through ``Series.str``).

A record whose stack trace crosses a chunk boundary is carried into the next chunk, so chunks
never split a record. Times without an offset (Spring Boot 2's ``2025-12-03 14:00:00.123``) are
taken as UTC, as containers run. Lines without a timestamp pass the window filter: a forensic
read does not drop what it cannot place in time.

Provenance: ``source="logs"``, ``source_object`` = file path (or ``stdin``), ``source_ref`` =
number of the record's first line.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from forensics import schema
from forensics.errors import SourceError
from forensics.profiles import Profile, load_profile
from forensics.sources.base import EvidenceSource, Option, Slices, SourceResult
from forensics.timeutil import Window, coerce_timestamps

SOURCE = "logs"
STDIN = "-"
CHUNK_BYTES = 4 << 20
"""Bytes read per chunk; a chunk's lines are parsed together."""
MAX_LINE_BYTES = 64 << 20
"""A "line" with no newline for this long is cut here rather than held in memory without end."""

_A = pd.ArrowDtype(pa.string())

# Patterns are RE2 (pyarrow): no look-around, named groups for Series.str.extract.
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_TS = r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?"
_LEVELS = r"TRACE|DEBUG|INFO|WARN|WARNING|ERROR|FATAL|SEVERE"
_COMPOSE_START = r"^[A-Za-z0-9][\w.-]*\s+\| "
_COMPOSE = r"^(?P<container>[A-Za-z0-9][\w.-]*)\s+\| ?(?P<rest>.*)$"
_DOCKER_TS_START = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d) "
_DOCKER_TS = r"^(?P<dts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)) (?P<body>.*)$"
_STARTS_WITH_LEVEL = rf"^\s*(?:{_LEVELS})\b"
# Spring Boot 2/3 console: TS LEVEL [sleuth] PID --- [app] [thread] [correlation] logger : message
_SPRING = (
    rf"^(?P<ts>{_TS})\s+(?P<level>{_LEVELS})\s+(?:\[(?P<app2>[^,\]]*)[^\]]*\]\s+)?(?:\d+\s+)?---\s+"
    r"(?:\[(?P<app>[^\]]*)\]\s+)?\[(?P<thread>[^\]]*)\]\s+(?:\[[^\]]*\]\s+)?"
    r"(?P<logger>[^\s\[]\S*)\s+:\s?(?P<msg>.*)$"
)
# logback's default pattern, log4j-ish lines and the runbook's "ERROR - ..." lines
_GENERIC = (
    rf"^(?:(?P<ts>{_TS})\s+)?(?:\[(?P<thread>[^\]]*)\]\s+)?(?P<level>{_LEVELS})\b[\s:|-]*"
    r"(?:(?P<logger>[A-Za-z_$][\w$]*(?:\.[\w$]+)+)\s+[-:]\s+)?(?P<msg>.*)$"
)
_CONTINUATION = (
    r"^(?:\s+\S|Caused by:|Suppressed:|\.\.\. \d+ (?:more|common frames omitted)|Exception in thread "
    r"|(?:[A-Za-z_$][\w$]*\.)+[A-Za-z_$][\w$]*(?:Exception|Error|Throwable)(?:\$[\w$]+)?(?::|$))"
)
_MESSAGE_ID = rf"(?i)message[_ -]?id\W{{0,4}}(?P<v>{_UUID})"
_TWO_UUIDS = rf"(?P<a>{_UUID})(?:.*?(?P<b>{_UUID}))?"
_CONVERSATION_UUID = rf"(?i)conversation(?:[_ -]?id)?\W{{0,4}}(?:lock:)?(?P<v>{_UUID})"
_CONVERSATION_KEYED = r"(?i)conversation[_-]?id\W{0,4}(?P<v>[A-Za-z0-9][\w-]*)"
_HTTP_STATUS = (
    r"(?i)(?:\bstatus(?:[_ ]?code)?\W{0,4}|\bHTTP(?:/\d(?:\.\d)?)?\s+|\berror_code\W{0,4})(?P<v>[1-5]\d\d)\b"
)
_HTTP_STATUS_SPRING = r"\b(?P<v>[1-5]\d\d) [A-Z][A-Za-z ]+ from (?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) "
_NUMBER = r"(?P<v>\d+(?:\.\d+)?)"
_RATE_LIMIT = {
    "X-RateLimit-Limit": rf"(?i)x-ratelimit-limit\W{{0,4}}{_NUMBER}",
    "X-RateLimit-Remaining": rf"(?i)x-ratelimit-remaining\W{{0,4}}{_NUMBER}",
    "X-RateLimit-Reset": rf"(?i)x-ratelimit-reset\W{{0,4}}{_NUMBER}",
    "Retry-After": r"(?i)retry-after\W{0,4}(?P<v>\d+(?:\.\d+)?|[a-z]{3}, \d\d [a-z]{3} \d{4} \d\d:\d\d:\d\d GMT)",
    "retry_after": rf"(?i)retry[_ ]after\W{{0,4}}{_NUMBER}",
}

_LEVEL_NAMES = {"WARNING": "WARN", "FATAL": "ERROR", "SEVERE": "ERROR", "CRITICAL": "ERROR"}
_JSON_FIELDS = {
    "ts": ("timestamp", "@timestamp", "time", "ts"),
    "level": ("level", "severity", "log.level"),
    "logger": ("logger", "logger_name", "loggerName"),
    "thread": ("thread", "thread_name", "threadName"),
    "message": ("message", "msg"),
    "stack_trace": ("stack_trace", "stackTrace", "exception", "throwable"),
    "app": ("app_name", "appName", "application", "service", "service.name", "springAppName"),
    "message_id": ("messageId", "message_id"),
    "conversation_id": ("conversationId", "conversation_id"),
}
_FIELDS = ("ts", "level", "logger", "thread", "message", "stack_trace", "app", "message_id", "conversation_id",
           "parse_error")


def read_logs(paths: str | Path | Iterable[str | Path], *, window: Window | None = None,
              services: Iterable[str] | None = None, profile: Profile | str | None = None,
              stdin: IO | None = None, chunk_bytes: int = CHUNK_BYTES) -> pd.DataFrame:
    """Read log files, directories, gzip files or ``-`` (standard input) into ``log_events``.

    ``window`` keeps rows inside [start, end) and rows without a timestamp; ``services``
    keeps rows of those services only. A file's service, when its lines name none, comes
    from its name (``router-service.log``, ``chat4all-router-service-1.log.gz``) matched
    against the profile's service names. ``stdin`` replaces ``sys.stdin`` for ``-``.
    """
    known = tuple(load_profile(profile).services.all())
    frames = [read_log_stream(fh, source_object, window=window, services=services, service=service,
                              known_services=known, chunk_bytes=chunk_bytes)
              for fh, source_object, service in _open_all(_expand(paths), stdin, known)]
    if not frames:
        return schema.empty("log_events")
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def iter_logs(paths: str | Path | Iterable[str | Path], *, window: Window | None = None,
              services: Iterable[str] | None = None, profile: Profile | str | None = None,
              stdin: IO | None = None, chunk_bytes: int = CHUNK_BYTES) -> Iterator[pd.DataFrame]:
    """:func:`read_logs` chunk by chunk: the ``log_events`` rows of about ``chunk_bytes`` of
    lines at a time, file after file, so memory holds a chunk whatever the files' size (a
    record carried across a chunk boundary comes out with the next chunk)."""
    known = tuple(load_profile(profile).services.all())
    for fh, source_object, service in _open_all(_expand(paths), stdin, known):
        for frame in iter_log_chunks(fh, source_object, window=window, services=services, service=service,
                                     known_services=known, chunk_bytes=chunk_bytes):
            yield frame.drop(columns="_line")


def read_log_stream(fh: IO, source_object: str = "stdin", *, window: Window | None = None,
                    services: Iterable[str] | None = None, service: str | None = None,
                    known_services: Iterable[str] = (), chunk_bytes: int = CHUNK_BYTES) -> pd.DataFrame:
    """Parse one open stream (binary or text) into ``log_events``, in line order.

    ``service`` is the service of lines that name none themselves.
    """
    frames = list(iter_log_chunks(fh, source_object, window=window, services=services, service=service,
                                  known_services=known_services, chunk_bytes=chunk_bytes))
    if not frames:
        return schema.empty("log_events")
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if not frame["_line"].is_monotonic_increasing:
        # a record carried across a chunk boundary comes out one chunk late
        frame = frame.sort_values("_line", kind="stable", ignore_index=True)
    return frame.drop(columns="_line")


def iter_log_chunks(fh: IO, source_object: str = "stdin", *, window: Window | None = None,
                    services: Iterable[str] | None = None, service: str | None = None,
                    known_services: Iterable[str] = (), chunk_bytes: int = CHUNK_BYTES) -> Iterator[pd.DataFrame]:
    """Yield ``log_events`` rows chunk by chunk (plus an int ``_line`` column), for streaming consumers."""
    known = tuple(known_services)
    wanted = set(services) if services else None
    carry_nums = np.empty(0, dtype="int64")
    carry_text = pa.array([], pa.string())
    for lines, first in _read_blocks(fh, chunk_bytes):
        text = pa.array(lines, pa.string())
        nums = np.arange(first, first + len(lines), dtype="int64")
        nonblank = pc.match_substring_regex(text, r"\S").to_numpy(zero_copy_only=False)
        text = pa.concat_arrays([carry_text, text.filter(pa.array(nonblank))])
        nums = np.concatenate([carry_nums, nums[nonblank]])
        frame, carry = _parse(nums, text, source_object, service, known, final=False,
                              max_carry=max(1000, len(lines)))
        carry_nums, carry_text = nums[carry], text.filter(pa.array(carry))
        yield _filter(frame, window, wanted)
    if len(carry_nums):
        frame, _ = _parse(carry_nums, carry_text, source_object, service, known, final=True, max_carry=0)
        yield _filter(frame, window, wanted)


def _filter(frame: pd.DataFrame, window: Window | None, services: set[str] | None) -> pd.DataFrame:
    keep = np.ones(len(frame), dtype=bool)
    if window is not None:
        ts = frame["timestamp"]
        keep &= (ts.isna() | ((ts >= window.start) & (ts < window.end))).to_numpy()
    if services is not None:
        keep &= frame["service"].isin(services).fillna(False).to_numpy(dtype=bool)
    return frame if keep.all() else frame[keep]


# ---- reading ---------------------------------------------------------------

def _expand(paths: str | Path | Iterable[str | Path]) -> list[str]:
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    out: list[str] = []
    for item in items:
        text = str(item)
        if text == STDIN:
            out.append(STDIN)
            continue
        p = Path(text)
        if p.is_dir():
            out.extend(str(f) for f in sorted(p.rglob("*"))
                       if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts))
        elif p.is_file():
            out.append(text)
        else:
            raise SourceError(SOURCE, f"{text}: no such file or directory",
                              "give log files, directories, .gz files or - for standard input")
    return out


def _open_all(paths: list[str], stdin: IO | None, known: tuple[str, ...]) -> Iterator[tuple[IO, str, str | None]]:
    for path in paths:
        if path == STDIN:
            yield (stdin if stdin is not None else sys.stdin.buffer), "stdin", None
            continue
        try:
            with open(path, "rb") as probe:
                gz = probe.read(2) == b"\x1f\x8b"
            with (gzip.open(path, "rb") if gz else open(path, "rb")) as fh:
                yield fh, path, service_from_path(path, known)
        except OSError as exc:
            raise SourceError(SOURCE, f"cannot read {path}: {exc.strerror or exc}", "file permissions") from exc


def service_from_path(path: str | Path, known_services: Iterable[str] = ()) -> str | None:
    """The service a log file belongs to, from its name or else its directory's name.

    ``chat4all-router-service-1.log.gz`` -> ``router-service`` when that is a known service.
    """
    known = tuple(known_services)
    p = Path(path)
    name = p.name
    for suffix in (".gz", ".1", ".log", ".json", ".txt", ".out"):
        name = name.removesuffix(suffix)
    for candidate in (name, p.parent.name):
        resolved = service_name(candidate, known)
        if resolved in known:
            return resolved
    return service_name(name, known) or None


def service_name(name: str | None, known_services: Iterable[str] = ()) -> str | None:
    """Normalise a container or file name to a service: drop a compose replica suffix
    (``-1``) and a project prefix (``chat4all-``) when what is left is a known service."""
    if not name:
        return None
    base = name.strip()
    stripped = base.rstrip("0123456789")
    if stripped != base and stripped[-1:] in ("-", "_"):
        base = stripped[:-1]
    for svc in known_services:
        if base == svc or base.endswith(("-" + svc, "_" + svc)):
            return svc
    return base


def _read_blocks(fh: IO, chunk_bytes: int) -> Iterator[tuple[list[str], int]]:
    """Yield (lines, number of the first line) for blocks of about ``chunk_bytes`` ending at a newline."""
    rest = b""
    line_no = 1
    while True:
        data = fh.read(chunk_bytes)
        if isinstance(data, str):  # a text-mode stream
            data = data.encode("utf-8", "surrogateescape")
        if not data:
            break
        data = rest + data
        cut = data.rfind(b"\n")
        if cut < 0 and len(data) < MAX_LINE_BYTES:
            rest = data
            continue
        if cut < 0:
            cut = len(data)
        block, rest = data[:cut], data[cut + 1:]
        lines = block.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
        yield lines, line_no
        line_no += len(lines)
    if rest:
        yield rest.decode("utf-8", "replace").replace("\r\n", "\n").split("\n"), line_no


# ---- parsing ---------------------------------------------------------------

def _extract(values: pd.Series, pattern: str) -> pd.DataFrame:
    """``str.extract`` with nulls (not RE2's empty strings) for groups that took no part."""
    found = values.str.extract(pattern)
    return found.mask(found.eq("").fillna(False)) if len(found) else found


def _objects(values: pd.Series) -> np.ndarray:
    """Arrow strings -> object array with None for missing (the assembly format)."""
    return _arrow(values).to_numpy(zero_copy_only=False).copy()


def _parse(nums: np.ndarray, text: pa.Array, source_object: str, default_service: str | None,
           known: tuple[str, ...], *, final: bool, max_carry: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Parse one chunk. Returns its rows and a mask of the lines to carry into the next chunk.

    Work stays in Arrow arrays; Python objects are made only for the fields of a row and for
    the subsets that need Python (JSON, stack traces, unrecognised lines), which keeps the
    working memory of a chunk to a few times its size.
    """
    n = len(text)
    raw = pd.Series(text, dtype=_A)
    fields = {name: np.full(n, None, dtype=object) for name in _FIELDS}
    docker_ts = np.full(n, None, dtype=object)
    container = np.full(n, None, dtype=object)
    body = raw

    # docker's json-file driver: {"log":"<line>\n","stream":"stdout","time":"<RFC 3339>"}
    wrapped = _mask(raw.str.startswith('{"log":'))
    if wrapped.any():
        unwrapped = _objects(raw[wrapped])
        for j, line in enumerate(unwrapped):
            try:
                obj = json.loads(line)
                unwrapped[j] = str(obj["log"]).rstrip("\n")
                docker_ts[np.flatnonzero(wrapped)[j]] = obj.get("time")
            except (ValueError, KeyError, TypeError):
                pass
        body = _replace(body, wrapped, pd.Series(unwrapped, dtype=_A))

    prefixed = _mask(body.str.contains(_COMPOSE_START))
    if prefixed.any():
        prefix = _extract(body[prefixed], _COMPOSE)
        container[prefixed] = _objects(prefix["container"])
        body = _replace(body, prefixed, prefix["rest"])

    stamped = _mask(body.str.contains(_DOCKER_TS_START))
    if stamped.any():
        found = _extract(body[stamped], _DOCKER_TS)
        # "TS  INFO ..." is a Spring Boot line, not a docker prefix
        docker = ~_mask(found["body"].str.contains(_STARTS_WITH_LEVEL))
        where = np.flatnonzero(stamped)[docker]
        docker_ts[where] = _objects(found["dts"][docker])
        body = _replace(body, _positions(where, n), found["body"][docker])

    kind = np.zeros(n, dtype="int8")  # 0 unrecognised, 1 JSON, 2 Spring, 3 generic, 4 continuation
    is_json = _mask(body.str.startswith("{"))
    kind[is_json] = 1
    if is_json.any():
        for field, values in _parse_json_lines(_objects(body[is_json])).items():
            fields[field][is_json] = values

    rest = ~is_json
    for pattern, code in ((_SPRING, 2), (_GENERIC, 3)):
        if not rest.any():
            break
        found = _extract(body[rest], pattern)
        matched = found["level"].notna().to_numpy()
        where = np.flatnonzero(rest)[matched]
        kind[where] = code
        found = found[matched]
        for field, group in (("ts", "ts"), ("level", "level"), ("logger", "logger"), ("thread", "thread"),
                             ("message", "msg")):
            values = found[group].str.strip()
            fields[field][where] = _objects(values.mask(values.eq("").fillna(False)))
        if code == 2:
            fields["app"][where] = _objects(found["app"].where(found["app"].notna(), found["app2"]))
        rest[where] = False
    if rest.any():
        kind[np.flatnonzero(rest)[_mask(body[rest].str.contains(_CONTINUATION))]] = 4

    # Continuation lines belong to the previous record of the same container.
    idx = np.arange(n)
    is_cont = kind == 4
    keys = pd.Series(container).fillna("")
    starts = pd.Series(np.where(is_cont, np.nan, idx))
    owner = (starts.ffill() if keys.nunique() <= 1 else starts.groupby(keys).ffill()).to_numpy()
    orphan = is_cont & np.isnan(owner)
    for mask, problem in ((kind == 0, "unrecognised line format (not logback JSON, Spring Boot or LEVEL text)"),
                          (orphan, "stack trace line without a preceding log line")):
        if mask.any():
            fields["message"][mask] = _objects(body[mask])
            fields["parse_error"][mask] = problem

    carry = np.zeros(n, dtype=bool)
    if not final and n:
        last = pd.Series(np.where(~is_cont, idx, -1)).groupby(keys).max()
        last = last[last >= 0].to_numpy()
        # Carry the tail from the earliest open record, which keeps rows in line order; when
        # a quiet container makes that tail long, carry only each container's open record.
        tail = idx >= last.min() if len(last) else np.zeros(n, dtype=bool)
        carry = tail if tail.sum() <= max_carry // 4 else np.isin(idx, last) | (is_cont & np.isin(owner, last))
        if carry.sum() > max_carry:  # one enormous record: emit it split rather than hold it
            carry[:] = False

    attached = is_cont & ~orphan & ~carry
    raw_patch: dict[int, str] = {}
    if attached.any():
        traces: dict[int, list[str]] = {}
        lines: dict[int, list[str]] = {}
        for pos, trace_line, raw_line in zip(owner[attached].astype("int64").tolist(), _objects(body[attached]),
                                             _objects(raw[attached]), strict=True):
            traces.setdefault(pos, []).append(trace_line)
            lines.setdefault(pos, []).append(raw_line)
        stack = fields["stack_trace"]
        first_lines = dict(zip(traces, _objects(raw.iloc[list(traces)]), strict=True))
        for pos, trace in traces.items():
            joined = "\n".join(trace)
            stack[pos] = joined if stack[pos] is None else f"{stack[pos]}\n{joined}"
            raw_patch[pos] = "\n".join([first_lines[pos], *lines[pos]])

    rows = (~is_cont | orphan) & ~carry
    raw_rows = raw[rows].reset_index(drop=True)
    if raw_patch:
        at = np.searchsorted(np.flatnonzero(rows), list(raw_patch))
        raw_rows = _replace(raw_rows, _positions(at, len(raw_rows)), pd.Series(list(raw_patch.values()), dtype=_A))
    frame = _assemble(rows, fields, docker_ts, container, raw_rows, nums, source_object, default_service, known)
    return frame, carry


def _mask(flags: pd.Series) -> np.ndarray:
    return flags.to_numpy(dtype=bool, na_value=False)


def _positions(where: np.ndarray, n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[where] = True
    return mask


def _replace(values: pd.Series, mask: np.ndarray, replacement: pd.Series) -> pd.Series:
    """``values`` with the rows under ``mask`` replaced, in order, by ``replacement``."""
    if not mask.any():
        return values
    replaced = pc.replace_with_mask(_arrow(values), pa.array(mask), _arrow(replacement))
    return pd.Series(replaced, dtype=_A, index=values.index)


def _arrow(values: pd.Series) -> pa.Array:
    array = pa.array(values)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _parse_json_lines(lines: np.ndarray) -> dict[str, list]:
    """Logback/logstash JSON lines -> field lists (aliases of other encoders accepted)."""
    objs: list[dict | None] = []
    errors: list[str | None] = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError as exc:
            objs.append(None)
            errors.append(f"invalid JSON: {exc}"[:200])
            continue
        if isinstance(obj, dict) and any(k in obj for k in _JSON_FIELDS["message"] + _JSON_FIELDS["level"]):
            objs.append(obj)
            errors.append(None)
        else:
            objs.append(None)
            errors.append("JSON without log fields (message, level)")
    out: dict[str, list] = {"parse_error": errors}
    for field, keys in _JSON_FIELDS.items():
        values = [o.get(keys[0]) if o is not None else None for o in objs]
        for key in keys[1:]:
            if None in values or "" in values:
                values = [o.get(key) if (v is None or v == "") and o is not None else v
                          for v, o in zip(values, objs, strict=True)]
        # epoch numbers stay numbers (logback's JsonEncoder writes milliseconds); the rest becomes text
        keep_numbers = field == "ts"
        out[field] = [v if v is None or v.__class__ is str or (keep_numbers and v.__class__ in _NUMBERS)
                      else _text(v) for v in values]
    out["message"] = [m if o is not None else line for m, o, line in zip(out["message"], objs, lines, strict=True)]
    return out


_NUMBERS = (int, float)


def _timestamps(values: np.ndarray) -> pd.Series:
    """Timestamp strings (logback ``+0000``, ISO 8601, ``,`` decimals, naive = UTC) or epoch numbers."""
    out = pd.Series(pd.NaT, index=range(len(values)), dtype=schema.UTC_TS)
    numeric = np.array([v.__class__ in _NUMBERS for v in values], dtype=bool)
    if numeric.any():
        out[numeric] = coerce_timestamps(pd.Series(values[numeric], dtype="float64")).to_numpy()
    text = pd.Series(np.where(numeric, None, values), dtype=_A).str.replace(",", ".", regex=False)
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    return parsed.where(parsed.notna(), out).astype(schema.UTC_TS)


def _levels(values: np.ndarray) -> pd.Series:
    s = pd.Series(values, dtype=_A).str.strip().str.upper()
    return s.replace(_LEVEL_NAMES) if s.isin(list(_LEVEL_NAMES)).any() else s


def _first_match(text: pd.Series, *patterns: str) -> pd.Series:
    """The ``v`` group of the first pattern that matches, per row."""
    out = pd.Series(pd.NA, index=text.index, dtype=_A)
    for pattern in patterns:
        todo = out.isna().to_numpy()
        if not todo.any():
            break
        found = _extract(text[todo], pattern)["v"]
        out[todo] = found
    return out


def _message_ids(text: pd.Series, conversation: pd.Series) -> pd.Series:
    """Keyed ids first (messageId=, message_id:, "messageId":"..."); else, when the line talks
    about a message, its first UUID that is not the conversation id."""
    out = _first_match(text, _MESSAGE_ID)
    todo = (out.isna() & text.str.contains("message", case=False, regex=False)).to_numpy(dtype=bool, na_value=False)
    if todo.any():
        two = _extract(text[todo], _TWO_UUIDS)
        conv = conversation[todo]
        same = (two["a"].str.lower() == conv.str.lower()).fillna(False)
        out[todo] = two["a"].where(~same, two["b"])
    return out


def _rate_limits(text: pd.Series) -> pd.Series:
    """Rate-limit values mentioned in each row as a compact JSON object of header name -> value
    text, as the header carried it (``{"X-RateLimit-Remaining":"0","Retry-After":"30"}``)."""
    out = pd.Series(pd.NA, index=text.index, dtype=_A)
    mentions = _mask(text.str.contains(r"(?i)ratelimit|retry"))
    if not mentions.any():
        return out
    subset = text[mentions]
    found = {name: _arrow(_extract(subset, pattern)["v"]).to_pylist() for name, pattern in _RATE_LIMIT.items()}
    values = []
    for row in zip(*found.values(), strict=True):
        pairs = {name: v for name, v in zip(found, row, strict=True) if v is not None}
        values.append(json.dumps(pairs, separators=(",", ":")) if pairs else None)
    out[mentions] = pd.Series(values, dtype=_A, index=subset.index)
    return out


def _assemble(rows: np.ndarray, fields: dict[str, np.ndarray], docker_ts: np.ndarray, container: np.ndarray,
              raw: pd.Series, nums: np.ndarray, source_object: str, default_service: str | None,
              known: tuple[str, ...]) -> pd.DataFrame:
    f = {name: values[rows] for name, values in fields.items()}
    n = int(rows.sum())
    if n == 0:
        return schema.empty("log_events").assign(_line=pd.Series(dtype="int64"))
    own_ts = _timestamps(f["ts"])
    bad_ts = own_ts.isna().to_numpy() & np.array([v is not None for v in f["ts"]], dtype=bool)
    timestamp = own_ts.where(own_ts.notna(), _timestamps(docker_ts[rows]))
    errors = f["parse_error"]
    if bad_ts.any():
        errors[bad_ts] = [f"unreadable timestamp {v!r}" if e is None else e
                          for v, e in zip(f["ts"][bad_ts], errors[bad_ts], strict=True)]

    names = {c: service_name(c, known) for c in set(container[rows]) if c is not None}
    from_container = np.array([names.get(c) if c is not None else None for c in container[rows]], dtype=object)
    service = np.where(pd.isna(f["app"]), from_container, f["app"])
    service = np.where(pd.isna(service), default_service, service)

    message = pd.Series(f["message"], dtype=_A)
    stack = pd.Series(f["stack_trace"], dtype=_A)
    text = message.fillna("") + ("\n" + stack).fillna("")
    conversation = pd.Series(f["conversation_id"], dtype=_A)
    conversation = conversation.where(conversation.notna(),
                                      _first_match(text, _CONVERSATION_UUID, _CONVERSATION_KEYED))
    message_id = pd.Series(f["message_id"], dtype=_A)
    message_id = message_id.where(message_id.notna(), _message_ids(text, conversation))
    status = _first_match(text, _HTTP_STATUS, _HTTP_STATUS_SPRING)

    frame = pd.DataFrame({
        "timestamp": timestamp,
        "service": pd.Series(service, dtype=_A),
        "level": _levels(f["level"]),
        "logger": pd.Series(f["logger"], dtype=_A),
        "thread": pd.Series(f["thread"], dtype=_A),
        "message": message,
        "stack_trace": stack,
        "message_id": message_id,
        "conversation_id": conversation,
        "http_status": pd.to_numeric(status, errors="coerce"),
        "rate_limit": _rate_limits(text),
        "raw": raw,
        "parse_error": pd.Series(errors, dtype=_A),
        "source": SOURCE,
        "source_object": source_object,
        "source_ref": pd.Series(nums[rows]).astype(str),
        "_line": nums[rows],
    })
    return _settle(schema.conform("log_events", frame)).assign(_line=nums[rows])


def _settle(frame: pd.DataFrame) -> pd.DataFrame:
    """Copy the string columns of a finished chunk out of Arrow's default pool into the system
    allocator. The rows we keep would otherwise sit between the pool's freed scratch memory of
    every chunk and pin it: at 1M lines this cuts peak memory by about a quarter."""
    pool = pa.system_memory_pool()
    for name in frame.columns:
        if isinstance(frame[name].dtype, pd.StringDtype) and len(frame):
            array = pa.array(frame[name])
            chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
            frame[name] = pd.Series(pd.arrays.ArrowStringArray(pa.concat_arrays(chunks, memory_pool=pool)),
                                    index=frame.index)
    return frame


# ---- collection ------------------------------------------------------------

class Source(EvidenceSource):
    """Logs named by ``logs`` (paths, or one comma-separated string; ``-`` = stdin) within the
    window; ``log_services`` keeps only those services."""

    name = "logs"
    tables = ("log_events",)
    bounded = False
    options = (
        Option("logs", "list", None, "log files, directories, .gz files or - for standard input"),
        Option("log_services", "list", None, "services to keep (default: all)"),
    )

    def stream(self, window: Window) -> Slices:
        paths = self.opts["logs"]
        if not paths:
            raise SourceError(SOURCE, "no log files given",
                              "pass -o logs=PATH[,PATH...]: files, directories, .gz files or - for standard input")
        services = self.opts["log_services"] or None
        self.say(f"logs: reading {', '.join(paths)}")
        rows = unparsed = 0
        for frame in iter_logs(paths, window=window, services=services, profile=self.profile):
            rows += len(frame)
            unparsed += int(frame["parse_error"].notna().sum())
            yield "log_events", frame
        if not rows:
            yield "log_events", schema.empty("log_events")
        parameters = {"paths": paths, "window": window.to_dict(), "services": services}
        description = self.describe({"log_events": rows}, parameters=parameters, unparsed_rows=unparsed)
        return SourceResult(tables={}, description=description, queries={"log_events": {"logs": parameters}})
