"""MongoDB documents into Arrow: the fast path of :class:`forensics.sources.mongo.MongoSource`.

The server's raw BSON batches are read straight into Arrow (pymongoarrow with an explicit
schema picked from a sample of documents, nested ``metadata`` as a struct) and flattened into
the columns :mod:`forensics.sources.documents` normalises.
"""


from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from bson import ObjectId

from forensics.sources.documents import flatten_documents

with warnings.catch_warnings():
    # pymongoarrow 1.15 wheels are compiled against a pyarrow whose Cython object sizes
    # differ from 25.0.x (the version it pins): harmless "size changed" notices at import.
    warnings.filterwarnings("ignore", message=r".*size changed, may indicate binary incompatibility.*")
    from pymongoarrow.api import Schema
    from pymongoarrow.context import PyMongoArrowContext
    from pymongoarrow.types import ObjectIdType

# ---- Arrow loading --------------------------------------------------------------------

SAMPLE_SIZE = 256
"""Documents read as dicts to pick the Arrow type of every field (:func:`arrow_batches`)."""
BATCH_ROWS = 50_000
"""Documents per server batch, the unit a read is streamed in (the server also stops a batch at 16 MiB)."""
ID_CHUNK = 10_000
"""Ids per ``$in``: keeps each query document far below MongoDB's 16 MB limit."""

_PY_TO_ARROW = {"date": pa.timestamp("ms"), "string": pa.string(), "int": pa.int64(), "float": pa.float64(),
                "bool": pa.bool_(), "objectId": ObjectIdType(), "list": pa.list_(pa.string())}
_DEFAULT_KIND = {"created_at": "date", "updated_at": "date", "timestamp": "date", "uploaded_at": "date",
                 "retry_count": "int", "file_size": "int", "recipient_ids": "list"}


def value_kind(value: Any) -> str | None:
    """The kind of a decoded BSON value, as far as the Arrow schema cares."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, ObjectId):
        return "objectId"
    if hasattr(value, "isoformat"):
        return "date"
    if isinstance(value, list):
        return "list" if all(isinstance(v, str) for v in value) else "mixed"
    return "mixed"  # documents, binary, regex, ...: no Arrow column for them


def get_path(doc: Mapping, path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def arrow_kinds(sample: Sequence[Mapping], paths: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Pick an Arrow kind per path from sampled documents: (kinds, mixed paths).

    ``paths`` maps a field path to its canonical field (for the default kind of a path the
    sample never shows). Ints with floats read as floats. A path whose sample holds more
    than one kind cannot be one Arrow column: it is returned in ``mixed``.
    """
    kinds: dict[str, str] = {}
    mixed: list[str] = []
    for path, canonical in paths.items():
        seen = {k for k in (value_kind(get_path(d, path)) for d in sample) if k}
        if seen == {"int", "float"}:
            seen = {"float"}
        if len(seen) > 1 or seen == {"mixed"}:
            mixed.append(path)
        else:
            kinds[path] = seen.pop() if seen else _DEFAULT_KIND.get(canonical, "string")
    return kinds, mixed


def arrow_schema(kinds: Mapping[str, str]) -> Schema:
    """Dotted paths with kinds -> a pymongoarrow Schema with nested structs (``metadata.x``)."""
    tree: dict[str, Any] = {}
    for path, kind in kinds.items():
        node = tree
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):  # "metadata" itself and "metadata.x": the struct wins
                break
        else:
            node.setdefault(leaf, _PY_TO_ARROW[kind])

    def build(node):
        if isinstance(node, dict):
            return pa.struct([(k, build(v)) for k, v in node.items()])
        return node

    return Schema({k: build(v) for k, v in tree.items()})


def _hex_object_ids(column: pa.ChunkedArray) -> pa.Array:
    """ObjectId (12-byte) column -> 24-character lowercase hex strings, vectorised, built in place."""
    arr = column.combine_chunks()
    storage = arr.storage if isinstance(arr, pa.ExtensionArray) else arr
    n = len(storage)
    raw = np.frombuffer(storage.buffers()[1], dtype=np.uint8, count=12 * (storage.offset + n))[12 * storage.offset:]
    grid = raw.reshape(n, 12)
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    text = np.empty((n, 24), dtype=np.uint8)
    text[:, 0::2] = digits[grid >> 4]
    text[:, 1::2] = digits[grid & 15]
    offsets = np.arange(0, 24 * (n + 1), 24, dtype=np.int64)
    hexed = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text)).cast(pa.string())
    if storage.null_count:
        hexed = pc.if_else(storage.is_null(), pa.scalar(None, pa.string()), hexed)
    return hexed


def arrow_to_flat(table: pa.Table) -> pd.DataFrame:
    """A pymongoarrow table -> a flat frame of dotted paths: str, Int64, boolean, datetime64 columns."""
    while any(pa.types.is_struct(f.type) for f in table.schema):
        table = table.flatten()
    for i, f in enumerate(table.schema):
        if isinstance(f.type, ObjectIdType):
            table = table.set_column(i, f.name, _hex_object_ids(table.column(i)))
    mapping = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
    return table.to_pandas(types_mapper=mapping.get)




def document_batches(cursor: Iterable[dict]) -> Iterator[list[pd.DataFrame]]:
    """A cursor's documents as flat frames, :data:`BATCH_ROWS` at a time (the document path)."""
    docs: list[dict] = []
    for doc in cursor:
        docs.append(doc)
        if len(docs) == BATCH_ROWS:
            yield [flatten_documents(docs)]
            docs = []
    if docs:
        yield [flatten_documents(docs)]


def arrow_batches(coll, flt: dict, projection: dict, fields: Mapping[str, list[str]], key_fields: Sequence[str],
                  cursor: dict[str, Any], warnings_: list[str]) -> Iterator[list[pd.DataFrame]]:
    """The documents of ``coll`` matching ``flt`` as flat frames, one server batch (at most
    :data:`BATCH_ROWS` documents or 16 MiB) at a time, through pymongoarrow with a schema whose
    kinds come from a sample of the same query (``cursor``: sort, limit, max_time_ms).

    pymongoarrow cannot express a field holding several BSON types in one column, so: a path
    the sample shows with several kinds is read for the batch's rows as documents (_id + that
    path) and joined by _id; a row with none of its ``key_fields`` (id, time, status), e.g. a
    string date beyond the sample, is re-read as a document by _id. Other fields of a kind
    unseen in the sample read as null. _ids of several types: the document path, noted in
    ``warnings_``.
    """
    paths = {p: canonical for canonical, ps in fields.items() for p in ps}
    limit, max_time_ms = cursor["limit"], cursor["max_time_ms"]
    sample = list(coll.find(flt, projection, sort=cursor["sort"], limit=min(SAMPLE_SIZE, limit),
                            max_time_ms=max_time_ms))
    if not sample:
        return
    id_kinds = {value_kind(d.get("_id")) for d in sample}
    if len(id_kinds) != 1 or id_kinds & {"mixed", "list", None}:
        # Rows could not be re-read by _id: the document path for this query.
        warnings_.append(f"{coll.name}: _id of several types; read as documents")
        yield from document_batches(coll.find(flt, projection, batch_size=BATCH_ROWS, **cursor))
        return
    kinds, mixed = arrow_kinds(sample, paths)
    id_kind = kinds["_id"] = id_kinds.pop()
    schema = arrow_schema(kinds)

    def ids(values: Iterable) -> list:
        return [ObjectId(i) if id_kind == "objectId" else i for i in values]

    for batch in coll.find_raw_batches(flt, projection, batch_size=BATCH_ROWS, **cursor):
        context = PyMongoArrowContext(schema, codec_options=coll.codec_options, allow_invalid=True)
        context.process_bson_stream(batch)
        flat = arrow_to_flat(context.finish())
        if not len(flat):
            continue
        if mixed:
            extra = coll.find({"_id": {"$in": ids(flat["_id"])}}, {"_id": 1, **dict.fromkeys(mixed, 1)},
                              max_time_ms=max_time_ms)
            by_id = {str(d["_id"]): d for d in extra}
            for path in mixed:
                # As json_normalize in the document path: a sub-document is not a value of ``path``.
                values = (get_path(by_id.get(i, {}), path) for i in flat["_id"])
                flat[path] = pd.Series([None if isinstance(v, Mapping) else v for v in values],
                                       index=flat.index, dtype=object)
        unread = pd.Series(False, index=flat.index)
        for canonical in key_fields:
            cols = [flat[p] for p in fields.get(canonical, [canonical]) if p in flat.columns]
            unread |= pd.concat(cols, axis=1).isna().all(axis=1) if cols else True
        if not unread.any():
            yield [flat]
            continue
        oids = ids(flat.loc[unread, "_id"])
        docs: list[dict] = []
        for chunk in range(0, len(oids), ID_CHUNK):
            docs += coll.find({"_id": {"$in": oids[chunk:chunk + ID_CHUNK]}}, projection, max_time_ms=max_time_ms)
        yield [flat[~unread].reset_index(drop=True), flatten_documents(docs)]
