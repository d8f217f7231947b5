"""JSON text written column-wise with pyarrow, as ``json.dumps`` writes it (tags, logs)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TEXT_DICT = pa.dictionary(pa.int32(), pa.string())
"""Text that repeats (tag keys, tag values), dictionary-encoded."""

# sorted keys: the same span read from v1 (sorted tags) and api/v3 (attributes as sent) gives the same text
dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str).encode


_TYPED_GROUP = 32
"""Values of one key are typed by pyarrow as a group from this many on; fewer, one by one."""


def _needs_escape(text: pa.Array) -> np.ndarray:
    """Positions of the strings of ``text`` (a string array) that JSON escapes a character of:
    a control character, a quote or a backslash (json.dumps with ensure_ascii=False)."""
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int32)[text.offset:text.offset + len(text) + 1]
    data = text.buffers()[2]
    if data is None or offsets[-1] == offsets[0]:
        return np.zeros(0, dtype="int64")
    raw = np.frombuffer(data, dtype=np.uint8)[offsets[0]:offsets[-1]]
    at = np.flatnonzero((raw < 0x20) | (raw == ord('"')) | (raw == ord("\\"))) + offsets[0]
    return np.unique(np.searchsorted(offsets, at, side="right") - 1)


def quoted(raw: pa.Array) -> pa.Array:
    """Strings as JSON text: quoted in pyarrow, json.dumps only for the few that need escaping."""
    quoted = pc.binary_join_element_wise('"', raw, '"', "")
    escape = _needs_escape(raw)
    if len(escape):
        mask = np.zeros(len(raw), dtype=bool)
        mask[escape] = True
        quoted = pc.replace_with_mask(quoted, pa.array(mask), pa.array([dumps(v) for v in raw.take(escape).to_pylist()],
                                                                        type=pa.string()))
    return quoted


def _typed_json(values: np.ndarray) -> tuple[pa.Array, np.ndarray] | None:
    """JSON text of values of one type, typed by pyarrow in C: strings, integers, booleans (None
    as null), as distinct texts and the index of each value's text; None for anything else
    (floats, lists, maps, a mix), which needs json.dumps."""
    try:  # text: dictionary-encoded while converted, so that only distinct strings are quoted
        arr = pa.array(values, type=TEXT_DICT) if type(values[0]) is str else pa.array(values)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = pc.cast(arr, pa.string()).dictionary_encode()
    elif pa.types.is_integer(arr.type) or pa.types.is_boolean(arr.type):
        arr = arr.dictionary_encode()
    elif pa.types.is_null(arr.type):
        return pa.array(["null"]), np.zeros(len(values), dtype="int64")
    if not pa.types.is_dictionary(arr.type):
        return None
    words = arr.dictionary
    if pa.types.is_string(words.type):
        text = quoted(words)
    elif pa.types.is_boolean(words.type):
        text = pc.if_else(words, "true", "false")
    else:
        text = pc.cast(words, pa.string())
    return pa.concat_arrays([text, pa.array(["null"])]), pc.fill_null(arr.indices, len(words)).to_numpy()


def _each_json(values: np.ndarray) -> pa.Array:
    """JSON text of values of any types, one by one (strings still quoted in pyarrow)."""
    types = np.fromiter(map(type, values), dtype=object, count=len(values))
    is_str = np.equal(types, str)
    out = np.empty(len(values), dtype=object)
    others = np.flatnonzero(~is_str)
    if len(others):
        is_int = np.equal(types[others], int)  # exactly int: bool is a subclass
        ints = others[is_int]
        out[ints] = list(map(str, values[ints]))
        rest = others[~is_int]
        out[rest] = [dumps(v) for v in values[rest]]
    text = pa.array(out, type=pa.string(), from_pandas=True)
    strs = np.flatnonzero(is_str)
    if len(strs):
        text = pc.replace_with_mask(text, pa.array(is_str), quoted(pa.array(values[strs], type=pa.string())))
    return text


def json_values(values: np.ndarray, at: np.ndarray, group: np.ndarray) -> pa.DictionaryArray:
    """Each of ``values[at]`` as JSON text, as json.dumps writes it, dictionary-encoded (tag values
    repeat).

    ``group`` (the tag key) gathers values that usually share a type: a large group of strings,
    integers or booleans is typed by pyarrow and only its distinct values are written; the
    rest are written value by value.
    """
    if not len(at):
        return pa.DictionaryArray.from_arrays(pa.array([], pa.int64()), pa.array([], pa.string()))
    runs = np.flatnonzero(np.diff(group)) + 1
    if len(runs) + 1 == np.count_nonzero(np.bincount(group)):  # already grouped
        order, starts = np.arange(len(group)), np.r_[0, runs]
    else:
        order = np.argsort(group, kind="stable")
        starts = np.r_[0, np.flatnonzero(np.diff(group[order])) + 1]
    sizes = np.diff(np.r_[starts, len(order)])
    done = np.zeros(len(at), dtype=bool)
    words, index = [], np.empty(len(at), dtype="int64")
    distinct = 0
    for g in np.flatnonzero(sizes >= _TYPED_GROUP):
        members = order[starts[g]:starts[g] + sizes[g]]
        typed = _typed_json(values[at[members]])
        if typed is not None:
            words.append(typed[0])
            index[members] = typed[1] + distinct
            distinct += len(typed[0])
            done[members] = True
    left = np.flatnonzero(~done)
    if len(left):
        words.append(_each_json(values[at[left]]))
        index[left] = np.arange(len(left)) + distinct
    return pa.DictionaryArray.from_arrays(pa.array(index), pa.concat_arrays(words))


def sort_rank(names: pa.Array) -> np.ndarray:
    """Each of these distinct strings' place in sorted order (UTF-8 byte order is code point order,
    Python's order)."""
    rank = np.empty(len(names), dtype="int64")
    rank[pc.sort_indices(names).to_numpy()] = np.arange(len(names))
    return rank


def last_of_each_key(owner: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Positions of the entries (in written order) of JSON objects to be made, ordered by owner
    and key rank, keeping the last of a repeated key as a dict does."""
    # one stable sort on owner and rank together: entries come nearly in order (by owner), which
    # the sort (timsort) finds in runs; equal keys keep their written order
    order = np.argsort(owner.astype("int64") * (int(rank.max(initial=0)) + 1) + rank, kind="stable")
    o, r = owner[order], rank[order]
    return order[(np.diff(o, append=-1) != 0) | (np.diff(r, append=-1) != 0)]


def json_maps(names: pa.Array, key: np.ndarray, text: pa.Array | pa.DictionaryArray, owner: np.ndarray, n: int,
               text_at: np.ndarray | None = None) -> pa.Array:
    """JSON objects ``{"name": text, ...}``, one per owner 0..n-1, null for an owner without entries.

    Entry j is ``names[key[j]]`` with JSON value text ``text[text_at[j]]`` (``text[j]`` without
    ``text_at``), entries grouped by owner (``owner`` ascending) in the order they are to be
    written. Each distinct value text is joined to its key once (``{"k":v`` or ``,"k":v``);
    these pieces and the closing ``}`` are put in order by one take and joined per owner by
    one list join.
    """
    m = len(key)
    at = np.arange(m) if text_at is None else text_at
    if isinstance(text, pa.DictionaryArray):
        at, text = text.indices.to_numpy()[at], text.dictionary
    key_of = np.full(len(text), -1, dtype="int64")  # each text's key: one, as values are typed per key
    key_of[at] = key
    if not np.array_equal(key_of[at], key):
        key_of, text, at = key.copy(), text.take(pa.array(at)), np.arange(m)  # shared texts: one per entry
    names_json = pc.binary_join_element_wise(quoted(names), ":", "").take(pa.array(np.maximum(key_of, 0)))
    pool = pa.concat_arrays([pc.binary_join_element_wise("{", names_json, text, ""),
                             pc.binary_join_element_wise(",", names_json, text, ""), pa.array(["}"])])
    first, last = np.diff(owner, prepend=-1) != 0, np.diff(owner, append=-1) != 0
    slot = np.arange(m) + np.cumsum(first) - 1  # entry j: one piece per entry before it, one "}" per owner
    pieces = np.empty(m + int(first.sum()), dtype="int64")
    pieces[slot] = np.where(first, at, at + len(text))
    pieces[slot[last] + 1] = 2 * len(text)
    per_owner = np.bincount(owner, minlength=n)
    offsets = np.r_[0, np.cumsum(np.where(per_owner > 0, per_owner + 1, 0))].astype("int32")
    lists = pa.ListArray.from_arrays(pa.array(offsets), pc.take(pool, pa.array(pieces)), mask=pa.array(per_owner == 0))
    return pc.binary_join(lists, "")
