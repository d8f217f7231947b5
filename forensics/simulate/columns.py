"""Column building blocks for the simulator: ids, strings and times without a per-row loop.

Ids are numpy ``S`` arrays; strings are assembled with Arrow compute (``concat``, ``fill``,
``where``) and land in the canonical ``string`` dtype without a million Python objects.
``text`` turns them into object arrays where a bounded table (spans, logs) needs Python
strings. Times are int64 nanoseconds since the epoch; ``NAT`` (int64 min) is NaT.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from forensics import schema
from forensics.timeutil import NAT as NAT  # the simulator's modules read it here
from forensics.timeutil import NS

MS = 1_000_000

_HEX = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), dtype=np.uint16)
_UUID_POS = np.array([0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 19, 20, 21, 22,
                      24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35])
_B64URL = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", dtype=np.uint8)
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_CHUNK = 1 << 16


def hex_ids(rng: np.random.Generator, n: int, nbytes: int) -> np.ndarray:
    """``n`` random lowercase hex strings of ``2 * nbytes`` characters, as an ``S`` array."""
    raw = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    return np.ascontiguousarray(_HEX[raw]).view(f"S{2 * nbytes}").ravel()


def uuids(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random version-4 UUID strings (8-4-4-4-12), as an ``S36`` array."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    chars = np.ascontiguousarray(_HEX[raw]).view(np.uint8).reshape(n, 32)
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    out[:, _UUID_POS] = chars
    return out.view("S36").ravel()


def token_ids(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """``n`` random base64url tokens (fbtrace ids, wamid tails), as an ``S`` array."""
    raw = rng.integers(0, 64, size=(n, length), dtype=np.uint8)
    return np.ascontiguousarray(_B64URL[raw]).view(f"S{length}").ravel()


def to_arrow(values) -> pa.Array | pa.ChunkedArray:
    """S / U / object / int numpy array, list or Arrow array -> Arrow large_string (None = null).

    pandas stores ``large_string``: building that type here lets a Series wrap the buffers
    without a copy. Chunked arrays stay chunked (their chunks may be shared, see ``const``).
    """
    if isinstance(values, pd.Series):
        values = arrow(values)
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        out = values
    else:
        arr = np.asarray(values)
        if arr.dtype.kind == "S":
            out = _fixed_width(arr)
        elif arr.dtype.kind in "iu":
            out = pa.array(arr.astype(np.int64))
        else:
            out = pa.array(arr, type=pa.large_string(), from_pandas=True)
    return out if out.type == pa.large_string() else out.cast(pa.large_string())


def _fixed_width(arr: np.ndarray) -> pa.Array:
    """An ``S`` array as Arrow strings. Ids fill their width exactly, so the bytes can be used
    as they are, with offsets every ``itemsize`` bytes; padded values take the slow path."""
    width = arr.dtype.itemsize
    raw = np.ascontiguousarray(arr).view(np.uint8)
    if width == 0 or not raw.all():
        return pa.array(arr, type=pa.binary())
    offsets = np.arange(0, (len(arr) + 1) * width, width, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(len(arr), pa.py_buffer(offsets), pa.py_buffer(raw))


def const(value: str | None, n: int) -> pa.ChunkedArray:
    """``n`` copies of one value as chunks that all share one small buffer (no n-sized copy)."""
    size = min(n, _CHUNK)
    chunk = pa.array([value] * size, type=pa.large_string())
    full, rest = divmod(n, size) if size else (0, 0)
    return pa.chunked_array([chunk] * full + ([chunk.slice(0, rest)] if rest else []), type=pa.large_string())


def chunked(*parts) -> pa.ChunkedArray:
    """Parts (arrays, chunked arrays, Series) one after the other, without copying them."""
    chunks = []
    for p in parts:
        a = to_arrow(p)
        chunks.extend(a.chunks if isinstance(a, pa.ChunkedArray) else [a])
    return pa.chunked_array(chunks, type=pa.large_string())


def text(values) -> np.ndarray:
    """Any of S / U / object array, list or Arrow array -> object array of Python str (None kept)."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return _single(to_arrow(values)).to_numpy(zero_copy_only=False)
    arr = np.asarray(values)
    if arr.dtype.kind == "S":
        out = np.empty(len(arr), dtype=object)
        out[:] = [v.decode() for v in arr]
        return out
    return arr.astype(object)


def concat(*parts) -> pa.Array:
    """Element-wise string concatenation of ``str`` scalars and equal-length arrays, in Arrow.

    A null in any array part makes the result null. At least one part must be an array.
    """
    args = [pa.scalar(p, pa.large_string()) if isinstance(p, str) else _single(to_arrow(p)) for p in parts]
    return pc.binary_join_element_wise(*args, pa.scalar("", pa.large_string()))


def _single(a: pa.Array | pa.ChunkedArray) -> pa.Array:
    return a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a


def fill(template: str, n: int | None = None, **values) -> pa.Array:
    """``template`` with ``{name}`` placeholders filled element-wise from ``values`` (arrays or str).

    Only ``{lowercase_name}`` is a placeholder, so JSON braces in templates need no escaping.
    ``n`` gives the length when no value is an array.
    """
    parts: list = []
    pos = 0
    for m in _PLACEHOLDER.finditer(template):
        if m.group(1) not in values:
            continue
        parts.append(template[pos:m.start()])
        parts.append(values[m.group(1)])
        pos = m.end()
    parts.append(template[pos:])
    if all(isinstance(p, str) for p in parts):
        return pa.array(["".join(parts)] * (n or 1), type=pa.large_string())
    return concat(*[p for p in parts if not isinstance(p, str) or p])


def json_str(values) -> np.ndarray:
    """JSON string literals (with quotes) of each value; None becomes ``null``."""
    enc = json.encoder.encode_basestring
    return np.array([("null" if v is None else enc(v)) for v in text(values)], dtype=object)


def int_text(values: np.ndarray) -> pa.Array:
    """Integers as decimal text."""
    return to_arrow(np.asarray(values).astype(np.int64))


def where(mask: np.ndarray, a, b=None) -> pa.Array:
    """Element-wise ``a if mask else b`` for string arrays/scalars (b None = null)."""
    a = pa.scalar(a, pa.large_string()) if isinstance(a, str) else _single(to_arrow(a))
    b = pa.scalar(b, pa.large_string()) if b is None or isinstance(b, str) else _single(to_arrow(b))
    return pc.if_else(pa.array(np.asarray(mask, dtype=bool)), a, b)


def str_series(values, mask: np.ndarray | None = None) -> pd.Series:
    """A canonical ``string`` Series from an S/U/object array, pyarrow array or list; ``mask`` True = null."""
    arr = to_arrow(values)
    if mask is not None and mask.any():
        arr = pc.if_else(pa.array(mask), pa.scalar(None, pa.large_string()), _single(arr))
    return pd.Series(pd.arrays.ArrowStringArray(arr))


def vocab_series(vocab, codes: np.ndarray) -> pd.Series:
    """Decode integer ``codes`` into ``vocab`` strings (code -1 = null) as a ``string`` Series."""
    codes = np.asarray(codes)
    dictionary = pa.array(list(vocab), type=pa.large_string())
    idx = pa.array(codes.astype(np.int32), mask=codes < 0)
    return str_series(dictionary.take(idx))


def arrow(series: pd.Series) -> pa.ChunkedArray:
    """The Arrow data behind a ``string`` Series, as stored (no copy)."""
    return series.array.__arrow_array__()


def take(values, idx: np.ndarray) -> pa.Array:
    """Rows ``idx`` (Arrow take, no Python objects)."""
    return _single(to_arrow(values)).take(pa.array(np.asarray(idx, dtype=np.int64)))


def ts_series(ns: np.ndarray) -> pd.Series:
    """int64 ns since the epoch (NAT = NaT) -> ``datetime64[ns, UTC]`` Series."""
    return pd.Series(np.asarray(ns, dtype=np.int64).view("M8[ns]")).dt.tz_localize("UTC").astype(schema.UTC_TS)


def int_series(values: np.ndarray, mask: np.ndarray | None = None) -> pd.Series:
    """Nullable ``Int64`` Series; ``mask`` True = null."""
    values = np.asarray(values, dtype=np.int64)
    return pd.Series(pd.arrays.IntegerArray(values, np.zeros(len(values), bool) if mask is None else mask))


def bool_series(values: np.ndarray) -> pd.Series:
    values = np.asarray(values, dtype=bool)
    return pd.Series(pd.arrays.BooleanArray(values, np.zeros(len(values), bool)))


def iso_ms(ns: np.ndarray) -> np.ndarray:
    """``yyyy-MM-dd'T'HH:mm:ss.SSS`` text (no zone) of int64 ns times, as an object array."""
    return np.asarray(ns, dtype=np.int64).view("M8[ns]").astype("M8[ms]").astype("U23").astype(object)


def lognormal_s(rng: np.random.Generator, median_s: float, sigma: float, n: int) -> np.ndarray:
    """Durations in ns with the given median (seconds) and log-sigma."""
    return (median_s * NS * rng.lognormal(0.0, sigma, n)).astype(np.int64)


def object_ids(rng: np.random.Generator, ns: np.ndarray) -> np.ndarray:
    """MongoDB ObjectId hex strings (4-byte seconds, 5 random bytes, 3-byte counter) as ``S24``."""
    n = len(ns)
    raw = np.empty((n, 12), dtype=np.uint8)
    secs = (np.asarray(ns, dtype=np.int64) // NS).astype(">u4")
    raw[:, :4] = secs.view(np.uint8).reshape(n, 4)
    raw[:, 4:9] = rng.integers(0, 256, size=(1, 5), dtype=np.uint8)
    counter = (int(rng.integers(0, 2**23)) + np.arange(n, dtype=np.int64)).astype(">u4")
    raw[:, 9:] = counter.view(np.uint8).reshape(n, 4)[:, 1:]
    return np.ascontiguousarray(_HEX[raw]).view("S24").ravel()


def rank_within(group: np.ndarray, key: np.ndarray) -> np.ndarray:
    """0-based rank of each element by ``key`` within its ``group`` (stable)."""
    order = np.lexsort((key, group))
    g = group[order]
    starts = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    sizes = np.diff(np.r_[starts, len(g)])
    rank = np.empty(len(group), dtype=np.int64)
    rank[order] = np.arange(len(g)) - np.repeat(starts, sizes)
    return rank
