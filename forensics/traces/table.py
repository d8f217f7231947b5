"""The canonical ``spans`` table (:data:`forensics.schema.SPANS`) from spans read column-wise.

Each reader turns a part of a document (a v1 envelope, a v1 trace, an OTLP document) into a
:class:`Block`: its spans column-wise, with all tags in flat arrays. :func:`spans_frame`
then finishes every block at once: tags into columns and JSON text (column-wise, each
distinct value written once), logs too, ids normalised with pyarrow kernels (trace ids 32
lowercase hex, left padded; base64 ids decoded), times from int64 nanoseconds. No per-span
DataFrame or json_normalize anywhere.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from forensics import schema
from forensics.traces.jsontext import json_maps, json_values, last_of_each_key, sort_rank

NAT_NS = np.iinfo("int64").min
"""int64 nanoseconds standing for a missing time (pandas' NaT)."""

MESSAGE_ID_TAGS = ("message_id", "messageId", "message.id", "chat4all.message_id", "app.message_id")
"""Span attributes that carry a Chat4All message id (messaging.message.id is Kafka's own id, not ours)."""

# Known tags -> the column they fill; everything else goes to the JSON ``tags`` map.
# Without http.route, a URL tag (url.path, http.target, http.url) fills http_route instead;
# with it, the URL stays in the map. Several keys may feed one column (http.method /
# http.request.method).
_TAG_COLUMN = {
    "span.kind": "kind",
    "error": "error",
    "otel.status_code": "error",
    "otel.status_description": "status_message",
    "http.method": "http_method",
    "http.request.method": "http_method",
    "http.status_code": "http_status_code",
    "http.response.status_code": "http_status_code",
    "http.route": "http_route",
    **dict.fromkeys(MESSAGE_ID_TAGS, "message_id"),
}
_ROUTE_FALLBACKS = ("http.url", "url.full", "http.target", "url.path")
"""Fill http_route when http.route is absent; later ones win (url.path is the closest to a route)."""
EXCEPTION_KEYS = ("exception.message", "error.message", "message", "error.object")


class Block:
    """Spans of one document part, column-wise, before ids, tags and times are finished.

    String columns are pyarrow arrays, the others numpy arrays (times int64 ns, NaT as
    :data:`NAT_NS`); tags stay flat: ``tag_keys[j]``/``tag_values[j]`` belong to span ``tag_span[j]``
    (keys dictionary-encoded, :data:`TEXT_DICT`).
    """

    STRINGS = ("trace_id", "span_id", "parent_span_id", "parent_ref_type", "service", "operation", "kind", "status_message",
               "exception", "logs", "warnings")

    def __init__(self, columns: dict[str, Any], tag_keys: pa.Array, tag_values: np.ndarray, tag_span: np.ndarray,
                 paths: list[tuple[str, int]]) -> None:
        self.columns, self.paths = columns, paths
        self.tag_keys, self.tag_values, self.tag_span = tag_keys, tag_values, tag_span

    def __len__(self) -> int:
        return len(self.columns["start"])


@functools.lru_cache(maxsize=4096)
def second_text(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def iso_us(ns: int) -> str:
    """Log/event time as ISO text at microseconds (v1's precision, so both APIs give the same text)."""
    return f"{second_text(ns // 1_000_000_000)}{ns % 1_000_000_000 // 1000:06d}Z"


def exception_message(entry: Mapping) -> str | None:
    return next((str(entry[k]) for k in EXCEPTION_KEYS if entry.get(k) not in (None, "")), None)


_HEX = re.compile(r"^[0-9a-f]+$")


def _hex_id(value: str, width: int) -> str | None:
    """One id that is not plain hex (OTLP JSON exports in base64) as lowercase hex, left padded."""
    text = value.strip()
    if _HEX.match(text.lower()) and len(text) <= width:
        return text.lower().rjust(width, "0")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return text.lower() or None
    return raw.hex().rjust(width, "0") if raw else None


_HEX_DIGITS = "0123456789abcdef"


def normalise_ids(values: Iterable[str | None], width: int, zero_is_null: bool = False) -> pa.Array:
    """Span or trace ids as lowercase hex of ``width`` characters (32 for traces, 16 for spans).

    Hex ids are lower-cased and left-padded with zeros (Jaeger prints a 64-bit trace id as
    16 characters); base64 ids (some OTLP JSON exports) are decoded; with ``zero_is_null``
    (parent ids) an all-zero id, OTLP's "no parent", becomes null.
    """
    arr = values if isinstance(values, pa.Array) else pa.array(values, type=pa.string())
    if pc.all(pc.and_(pc.equal(pc.binary_length(arr), width), pc.equal(pc.ascii_trim(arr, _HEX_DIGITS), ""))).as_py():
        out = arr  # the usual case: all normal already
    else:
        out = _normal_ids(arr, width)
    if zero_is_null:
        out = pc.if_else(pc.equal(out, "0" * width), pa.scalar(None, pa.string()), out)
    return out


def _normal_ids(arr: pa.Array, width: int) -> pa.Array:
    """:func:`normalise_ids` for ids not all lowercase hex of ``width`` characters already."""
    lower = pc.utf8_lower(arr)
    length = pc.utf8_length(lower)
    plain = pc.and_(pc.equal(pc.ascii_trim(lower, _HEX_DIGITS), ""),  # all hex: nothing left after a trim
                    pc.and_(pc.greater(length, 0), pc.less_equal(length, width)))
    out = pc.utf8_lpad(lower, width=width, padding="0")
    odd = pc.and_(pc.invert(plain), pc.is_valid(arr))
    if pc.any(odd).as_py():
        odd_values = pc.filter(arr, odd).to_pylist()
        fixed = {v: _hex_id(v, width) for v in set(odd_values)}
        out = pc.replace_with_mask(out, odd, pa.array([fixed[v] for v in odd_values], type=pa.string()))
    return out


def string_series(values: list | tuple | np.ndarray | pa.Array | pa.ChunkedArray) -> pd.Series:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = pa.array(values, type=pa.string(), from_pandas=True)
    return pd.Series(pd.arrays.ArrowStringArray(values), dtype=schema.STR)


def _tag_columns(keys: pa.DictionaryArray, values: np.ndarray, span_of: np.ndarray, n: int) -> dict[str, Any]:
    """All spans' tags (flat; tag j belongs to span ``span_of[j]``) -> known columns and the JSON
    map of the rest.

    Known columns come back as text (pyarrow strings, null where the span lacks the tag),
    ``http_status_code`` as an Int64 series and ``error`` as a bool array. When a span repeats
    a key, the last value wins, as in a dict.
    """
    found: dict[str, np.ndarray] = {}  # column -> the values found, by span

    def column(name: str) -> np.ndarray:
        if name not in found:
            found[name] = np.full(n, None, dtype=object)
        return found[name]

    error, tags = np.zeros(n, dtype=bool), pa.nulls(n, pa.string())
    if len(keys):
        key_names = keys.dictionary
        key_idx = pc.fill_null(keys.indices, len(key_names)).to_numpy()  # a missing key: len(key_names)
        # tag positions grouped by key, in written order within a key: one stable (radix) sort
        by_key = np.argsort(key_idx.astype(np.uint16) if len(key_names) < 2**16 else key_idx, kind="stable")
        bounds = np.r_[0, np.cumsum(np.bincount(key_idx, minlength=len(key_names) + 1))]
        wanted = [*_ROUTE_FALLBACKS, *_TAG_COLUMN]
        code = {k: c for k, c in zip(wanted, pc.index_in(pa.array(wanted), key_names).to_pylist(), strict=True)
                if c is not None}

        def at(*names: str) -> np.ndarray:
            """Positions of the tags with any of these keys, in written order."""
            parts = [by_key[bounds[code[k]]:bounds[code[k] + 1]] for k in set(names) if k in code]
            return np.sort(np.concatenate(parts)) if len(parts) > 1 else parts[0] if parts else np.zeros(0, "int64")

        route_from = np.full(n, -1, dtype="int64")  # the fallback tag a span's route came from
        for key in _ROUTE_FALLBACKS:  # fallbacks first, so that http.route (below) overwrites them
            pos = at(key)
            if len(pos):
                column("http_route")[span_of[pos]] = values[pos]
                route_from[span_of[pos]] = pos
        for name in sorted(set(_TAG_COLUMN.values())):
            pos = at(*(k for k, c in _TAG_COLUMN.items() if c == name))
            if not len(pos):
                continue
            if name == "error":
                error[span_of[pos][_error_hits(values[pos])]] = True
            elif name == "message_id":
                column(name)[span_of[pos]] = [None if v is None else str(v) for v in values[pos]]
            else:
                column(name)[span_of[pos]] = values[pos]
                if name == "http_route":
                    route_from[span_of[pos]] = -1
        # the rest, still grouped by key; a URL that became the route (no http.route) is not
        # repeated in the map
        is_rest = np.ones(len(key_names) + 1, dtype=bool)
        is_rest[[c for k, c in code.items() if k in _TAG_COLUMN] + [len(key_names)]] = False
        is_rest = is_rest[key_idx]
        is_rest[route_from[route_from >= 0]] = False
        rest = by_key[is_rest[by_key]]
        if len(rest):
            tags = _tag_map(key_names, key_idx, values, span_of, rest, n)
    out: dict[str, Any] = {"error": error, "tags": tags}
    for name in set(_TAG_COLUMN.values()) - {"error", "http_status_code"}:
        out[name] = as_text(found[name]) if name in found else pa.nulls(n, pa.string())
    codes = found.get("http_status_code", np.full(n, None, dtype=object))
    out["http_status_code"] = _whole_numbers(pd.to_numeric(pd.Series(codes, dtype=object), errors="coerce"))
    return out


def _whole_numbers(numbers: pd.Series) -> pd.Series:
    """Numbers as Int64; one that is not a whole number within int64 (a status code of 2.5 or
    1e300) is null, as text that is no number is."""
    values = numbers.to_numpy()
    if values.dtype.kind == "u":
        bad = values > np.iinfo("int64").max
    elif values.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~(np.isfinite(values) & (values == np.floor(values)) & (np.abs(values) < 2.0**63))
    else:
        return numbers.astype(schema.INT)
    return pd.Series(pd.arrays.IntegerArray(np.where(bad, 0, values).astype("int64"), bad)).astype(schema.INT)


def _tag_map(key_names: pa.Array, key_idx: np.ndarray, values: np.ndarray, span_of: np.ndarray, rest: np.ndarray,
             n: int) -> pa.Array:
    """The tags at positions ``rest`` (grouped by key) as a JSON object per span, keys sorted."""
    kept = last_of_each_key(span_of[rest], sort_rank(key_names)[key_idx[rest]])
    in_key_order = np.zeros(len(rest), dtype=bool)
    in_key_order[kept] = True
    text_at = (np.cumsum(in_key_order) - 1)[kept]  # where entry j's value is among the kept ones in key order
    rest_kept = rest[in_key_order]
    return json_maps(key_names, key_idx[rest[kept]], json_values(values, rest_kept, key_idx[rest_kept]),
                      span_of[rest[kept]], n, text_at)


def _error_hits(values: np.ndarray) -> np.ndarray:
    """Which error-tag values say error: True, "true", or "ERROR" (otel.status_code). Typed by
    pyarrow when the values share a type, else read one by one."""
    try:
        arr = pa.array(values)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        arr = None
    if arr is not None and pa.types.is_boolean(arr.type):
        return pc.fill_null(arr, False).to_numpy(zero_copy_only=False)
    if arr is not None and (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        hit = pc.is_in(pc.cast(arr, pa.string()), pa.array(["true", "ERROR"]))
        return pc.fill_null(hit, False).to_numpy(zero_copy_only=False)
    if arr is not None and (pa.types.is_integer(arr.type) or pa.types.is_null(arr.type)):
        return np.zeros(len(values), dtype=bool)  # (pyarrow types a mix of ints and bools as double, not int)
    return np.fromiter((v is True or v == "true" or v == "ERROR" for v in values), dtype=bool, count=len(values))


def _json_paths(paths: list[tuple[str, int]]) -> pa.Array:
    """``prefix[i]`` for every span: its JSON path within the document (``data[0].spans[3]``)."""
    counts = np.array([n for _, n in paths], dtype="int64")
    total = int(counts.sum())
    if not total:
        return pa.array([], type=pa.string())
    block = np.repeat(np.arange(len(paths)), counts)
    index = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    prefix = pc.take(pa.array([p for p, _ in paths], type=pa.string()), pa.array(block))
    indexes = pc.binary_join_element_wise("[", pc.cast(pa.array(np.arange(counts.max())), pa.string()), "]", "")
    return pc.binary_join_element_wise(prefix, pc.take(indexes, pa.array(index)), "")


def as_ns(series: pd.Series) -> np.ndarray:
    """Times as int64 nanoseconds since the epoch, NaT as :data:`NAT_NS`."""
    return series.to_numpy(dtype="datetime64[ns]", na_value=np.datetime64("NaT")).view("int64")


def as_text(values: np.ndarray) -> pa.Array:
    """Values as text: a route or method that came as a number or list is shown, not lost."""
    try:
        return pa.array(values, type=pa.string(), from_pandas=True)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return pa.array([v if v is None or isinstance(v, str) else str(v) for v in values], type=pa.string())


END_BEYOND = "end: start + duration is beyond the calendar's end"
"""The warning of a span whose end cannot be held as a time (null instead of a wrapped value)."""


def spans_frame(blocks: list[Block], source_object: str | None) -> pd.DataFrame:
    """The collected blocks as one spans table: tags, ids, times and numbers finished vectorised."""
    blocks = [b for b in blocks if len(b)]
    if not blocks:
        return schema.empty("spans")
    n = sum(len(b) for b in blocks)
    first = np.cumsum([0] + [len(b) for b in blocks[:-1]])

    def joined(parts: list) -> Any:
        if len(parts) == 1:  # the usual single document part: no copy
            return parts[0]
        return np.concatenate(parts) if isinstance(parts[0], np.ndarray) else pa.concat_arrays(parts)

    def cat(name: str) -> Any:
        return joined([b.columns[name] for b in blocks])

    t = _tag_columns(joined([b.tag_keys for b in blocks]), joined([b.tag_values for b in blocks]),
                     joined([b.tag_span + o for b, o in zip(blocks, first, strict=True)]), n)
    start_ns, dur_ns = cat("start"), cat("duration")
    missing = (start_ns == NAT_NS) | (dur_ns == NAT_NS)  # not given, or unreadable (then warned)
    with np.errstate(over="ignore"):
        end_ns = start_ns + dur_ns  # int64 wraps silently past the calendar's end (year 2262)
    wrapped = ~missing & (((dur_ns > 0) & (end_ns < start_ns)) | ((dur_ns < 0) & (end_ns > start_ns)))
    end_ns = np.where(missing | wrapped, NAT_NS, end_ns)
    warnings = cat("warnings")
    if wrapped.any():  # rare: the few rows get the words, the column is rebuilt once
        texts = warnings.to_pylist() if hasattr(warnings, "to_pylist") else list(warnings)
        for i in np.flatnonzero(wrapped):
            texts[i] = "; ".join(filter(None, [texts[i], END_BEYOND]))
        warnings = pa.array(texts, pa.string())
    error = cat("error") | t["error"]
    # status message: OTLP status, else otel.status_description, else an error span's exception
    message = pc.coalesce(cat("status_message"), t["status_message"])
    message = pc.if_else(pa.array(error), pc.coalesce(message, cat("exception")), message)
    parent = normalise_ids(cat("parent_span_id"), 16, zero_is_null=True)
    frame = pd.DataFrame({
        "trace_id": string_series(normalise_ids(cat("trace_id"), 32)),
        "span_id": string_series(normalise_ids(cat("span_id"), 16)),
        "parent_span_id": string_series(parent),
        "parent_ref_type": string_series(pc.if_else(pc.is_null(parent), pa.scalar(None, pa.string()),
                                                    cat("parent_ref_type"))),
        "service": string_series(cat("service")),
        "operation": string_series(cat("operation")),
        "kind": string_series(pc.utf8_lower(pc.coalesce(cat("kind"), t["kind"]))),
        "start": pd.Series(start_ns.view("datetime64[ns]")).dt.tz_localize("UTC"),
        "duration_ms": np.where(dur_ns == NAT_NS, np.nan, dur_ns / 1e6),
        "end": pd.Series(end_ns.view("datetime64[ns]")).dt.tz_localize("UTC"),
        "error": pd.array(error, dtype=schema.BOOL),
        "status_message": string_series(message),
        "http_method": string_series(t["http_method"]),
        "http_route": string_series(t["http_route"]),
        "http_status_code": t["http_status_code"],
        "message_id": string_series(t["message_id"]),
        "tags": string_series(t["tags"]),
        "logs": string_series(cat("logs")),
        "warnings": string_series(warnings),
        "source": string_series(pa.repeat(pa.scalar("jaeger", pa.string()), n)),
        "source_object": string_series(pa.repeat(pa.scalar(source_object, pa.string()), n)),
        "source_ref": string_series(_json_paths([p for b in blocks for p in b.paths])),
    })
    return schema.conform("spans", frame)


def tag_values(spans: pd.DataFrame, key: str) -> pd.Series:
    """The value of tag ``key`` on each span as text (<NA> where absent), wherever the parser put it.

    Known tags live in columns (``http.status_code`` -> http_status_code, ``error`` ->
    error as "true"/"false"), the others in the JSON ``tags`` map.
    """
    column = _TAG_COLUMN.get(key)
    if column is not None:
        values = spans[column]
        if column == "error":
            return values.map({True: "true", False: "false"}).astype(schema.STR)
        return values.astype(schema.STR)
    has = spans["tags"].str.contains(json.dumps(key), regex=False).fillna(False).astype(bool)
    out = pd.Series(pd.NA, index=spans.index, dtype=schema.STR)
    if has.any():
        def one(text: str) -> str | None:
            value = json.loads(text).get(key)
            if value is None:
                return None
            return ("true" if value else "false") if isinstance(value, bool) else str(value)
        out[has] = spans.loc[has, "tags"].map(one)
    return out
