"""Whole-window questions over the big evidence tables, answered by DuckDB where the rows are.

A day of a busy platform is tens of millions of messages and three times as many status
events: more than one machine's memory as pandas frames. The analysis therefore never holds
``status_events`` or ``locks`` whole. It asks this module, which runs SQL on DuckDB over the
table wherever it is: a bundle's Parquet file left on disk (:class:`StoredTable`, read
column by column and row group by row group, spilling to disk past ``memory_limit``) or an
in-memory DataFrame (live sources, crafted evidence, tests), registered without a copy. Both
run the same query, so a small window and a day-long one take the same path, and what comes
back is small: one row per message (:func:`message_status`), the few rows of a status
(:func:`status_rows`), counts (:func:`status_steps`), the keys of one kind (:func:`lock_rows`).

Why DuckDB (and not Polars' streaming engine): one dependency that reads Parquet, pandas
and Arrow without copies, spills joins, aggregates and window functions to disk under a
memory limit (Polars' streaming engine does not stream every window function and sort we
need), and the same SQL runs on a laptop, over a bundle on object storage or in the
DuckDB of a cluster (see the README's "Beyond one machine").

Times come back as int64 ns (``epoch_ns``): exact from Parquet; DuckDB reads a tz-aware
pandas column at microsecond precision, which every source's timestamps (ms; spans µs) fit.

Settings: ``FORENSICS_DUCKDB_MEMORY`` (default ``2GB``; ``1GB`` after the detectors) caps DuckDB's
memory; spill files go to ``~/.cache/chat4all-forensics/duckdb`` (``CHAT4ALL_FORENSICS_CACHE`` moves it).
"""

from __future__ import annotations

import ctypes
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from forensics import schema
from forensics.timeutil import NAT

if TYPE_CHECKING:  # annotations only: evidence asks this module about its stored tables
    from forensics.evidence import Evidence, StoredTable
    from forensics.timeutil import Window

MEMORY_LIMIT = "2GB"
"""DuckDB's working memory per question (``FORENSICS_DUCKDB_MEMORY``): above it joins,
aggregates, window functions and sorts spill to disk."""
LATE_MEMORY_LIMIT = "1GB"
"""The same for the questions asked after the detectors, when the analysis' results are held
too (the status transitions alert replay and the figures read, the status flow): at 2 GB the
status-flow question added 1.2 GB at a 10M-message report's end and the transitions' sort
2.5 GB at alert replay; at 1 GB the status flow adds nothing, for 7 s more CPU. (The detectors'
questions at 1 GB cost 30 s more CPU at 10M and lowered nothing.)"""


def spill_directory() -> Path:
    root = Path(os.environ.get("CHAT4ALL_FORENSICS_CACHE") or Path.home() / ".cache" / "chat4all-forensics")
    return root / "duckdb"


def _open(memory_limit: str = MEMORY_LIMIT) -> duckdb.DuckDBPyConnection:
    spill = spill_directory()
    spill.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(config={"memory_limit": os.environ.get("FORENSICS_DUCKDB_MEMORY") or memory_limit,
                                  "temp_directory": str(spill), "preserve_insertion_order": False})


def connect(evidence: Evidence, *names: str, memory_limit: str = MEMORY_LIMIT) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection in which each table of ``names`` is a view of the evidence's table:
    its stored Parquet file (scoped to its window and channel), its DataFrame, or an empty
    table of the right shape when it was not collected."""
    con = _open(memory_limit)
    for name in names:
        stored = evidence.stored.get(name)
        if stored is not None:
            _stored_relation(con, stored).create_view(name)
        else:
            con.register(name, evidence.tables.get(name, schema.empty(name)))
    return con


def _stored_relation(con: duckdb.DuckDBPyConnection, stored: StoredTable) -> duckdb.DuckDBPyRelation:
    rel = con.read_parquet(str(stored.path))
    table = schema.table(stored.name)
    col = duckdb.ColumnExpression
    if stored.window is not None and table.time_column:
        t = col(table.time_column)
        start = duckdb.ConstantExpression(stored.window.start.to_pydatetime())
        end = duckdb.ConstantExpression(stored.window.end.to_pydatetime())
        rel = rel.filter(t.isnull() | ((t >= start) & (t < end)))
    if stored.channel is not None and "channel" in table.names:
        rel = rel.filter(col("channel").isnull() | (col("channel") == duckdb.ConstantExpression(stored.channel)))
    return rel


def fetch(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pd.DataFrame:
    """The result of ``sql`` as a DataFrame through Arrow: strings stay Arrow strings (no
    Python object per value, which at tens of millions of rows would cost gigabytes)."""
    return con.sql(sql, params=params or None).to_arrow_table().to_pandas()


def query(evidence: Evidence, sql: str, tables: tuple[str, ...], params: list | None = None,
          memory_limit: str = MEMORY_LIMIT) -> pd.DataFrame:
    """``sql`` (table names as in the schema) over the evidence's ``tables``, as a DataFrame."""
    with connect(evidence, *tables, memory_limit=memory_limit) as con:
        return fetch(con, sql, params)


def count(evidence: Evidence, name: str) -> int:
    """Rows of table ``name`` (after the evidence's scope)."""
    return int(query(evidence, f"SELECT count(*) AS n FROM {name}", (name,))["n"].iloc[0])  # noqa: S608 (schema name)


def materialise(stored: StoredTable) -> pd.DataFrame:
    """A stored table read whole into its canonical frame (drill-down; small windows; a
    deferred table as the lean bundle read reads it, then cut to its scope)."""
    if stored.lean is not None:
        frame = schema.validate(stored.name, schema.conform(stored.name, _in_scope(stored, read_lean(
            stored.name, stored.path, stored.lean))))
        return_freed_memory()  # the file's decoded pages and Arrow's intermediate copies: 1.5 GB at 10M
        return frame
    with _open() as con:
        frame = _stored_relation(con, stored).to_arrow_table().to_pandas()
    return schema.validate(stored.name, schema.conform(stored.name, frame))


def read_lean(name: str, file: Path, unread: tuple[str, ...]) -> pd.DataFrame:
    """Table ``name`` read for the analysis: the ``unread`` columns left on disk, and a text
    column that repeats what the table already holds kept once: one value on every row (the
    Parquet statistics say so without reading it: ``source``, ``source_object``) as slices of
    one chunk, and a ``source_ref`` equal to the table's key (a document's id) as the key's
    own array. The same values, with about a quarter less memory for the messages table."""
    meta = pq.ParquetFile(file).metadata
    stored = meta.schema.to_arrow_schema().names
    names = [c for c in stored if c not in unread]
    declared = schema.table(name)
    text = [c for c in names if c in declared.names and declared.column(c).dtype == schema.STR]
    constant = {c: v for c in text if (v := _one_value(meta, stored.index(c))) is not None}
    frame = pd.read_parquet(file, columns=[c for c in names if c not in constant])
    for c, value in constant.items():
        frame[c] = schema.repeated_text(value, len(frame))
    key = declared.key[0] if len(declared.key) == 1 else None
    if key in frame.columns and "source_ref" in frame.columns and _same_text(frame[key], frame["source_ref"]):
        frame["source_ref"] = frame[key]
    return frame


def _one_value(meta: pq.FileMetaData, column: int) -> str | None:
    """The value of a text column that holds it on every row and no null, from the row groups'
    statistics (exact min == max; a truncated statistic never has min == max); else None."""
    values = set()
    for g in range(meta.num_row_groups):
        chunk = meta.row_group(g).column(column)
        stats = chunk.statistics
        if stats is None or not stats.has_min_max or not stats.has_null_count or stats.null_count:
            return None
        if stats.min != stats.max or stats.num_values != meta.row_group(g).num_rows:
            return None
        values.add(stats.min)
    return values.pop() if len(values) == 1 and isinstance(next(iter(values)), str) else None


def _same_text(a: pd.Series, b: pd.Series) -> bool:
    """Whether two text columns hold the same values, nulls at the same rows."""
    if a.isna().any() or b.isna().any():
        return bool(a.isna().equals(b.isna()) and (a.dropna() == b.dropna()).all())
    return bool(pc.all(pc.equal(a.array._pa_array, b.array._pa_array)).as_py())


def return_freed_memory() -> None:
    """Hand the heap that freed tables leave to the system (glibc keeps it for reuse, in
    fragments the next period's messages do not fit: 0.4 GB of 1.2 GB after a 1M-message
    baseline's detectors); nothing where the C library has no ``malloc_trim``."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rows_in_scope(name: str, frame: pd.DataFrame, window: Window | None, channel: str | None) -> pd.DataFrame:
    """The rows of table ``name`` timed in ``window`` (None: any time) and of ``channel`` (None:
    any), rows of an unknown time or channel kept, as :func:`_stored_relation` cuts a stored
    table; ``frame`` itself when every row is in scope."""
    table = schema.table(name)
    keep = np.ones(len(frame), dtype=bool)
    if window is not None and table.time_column:
        t = schema.to_utc(frame[table.time_column]).astype(schema.UTC_TS).array.asi8
        keep &= (t == NAT) | ((t >= window.start.value) & (t < window.end.value))
    if channel is not None and "channel" in table.names:
        keep &= (frame["channel"].isna() | frame["channel"].eq(channel)).to_numpy(dtype=bool)
    return frame if keep.all() else frame[keep].reset_index(drop=True)


def _in_scope(stored: StoredTable, frame: pd.DataFrame) -> pd.DataFrame:
    return rows_in_scope(stored.name, frame, stored.window, stored.channel)


def stored_columns(stored: StoredTable, columns: list[str]) -> pd.DataFrame:
    """``columns`` of a deferred stored table's rows in its scope, read from its file alone
    (the time extent of a lean read's messages: one column, not the table)."""
    table = schema.table(stored.name)
    extra = [c for c in (table.time_column, "channel") if c and c in table.names and c not in columns]
    frame = pq.read_table(stored.path, columns=[*columns, *extra]).to_pandas()
    for c in frame.columns:
        declared = table.column(c).dtype
        frame[c] = schema.to_utc(frame[c]) if declared == schema.UTC_TS else frame[c].astype(declared)
    return _in_scope(stored, frame)[columns]


@dataclass
class MessageStatus:
    """What the status history says about each message: arrays indexed by message code, ns
    (NAT when none). Codes ``0..n-1`` are the positions of the messages table (a repeated id
    counts at its first position); codes ``n..`` are the orphans: ids with status events but
    no document, in id order."""

    first_at: np.ndarray
    """Earliest status event."""
    left_pending_at: np.ndarray
    """Earliest status event to another status than PENDING."""
    first_delivered_at: np.ndarray
    delivered_count: np.ndarray
    last_sent_at: np.ndarray
    orphan_ids: np.ndarray
    """Message ids of codes n.. (objects)."""
    repeated: np.ndarray
    """Positions of the messages table whose id appeared at an earlier position."""


_PER_MESSAGE = """  -- NAT (int64 min) for "none", so that only int64 columns come back
    WITH per AS (
        SELECT message_id,
               coalesce(min(epoch_ns(timestamp)), -9223372036854775807 - 1) AS first_at,
               coalesce(min(epoch_ns(timestamp)) FILTER (WHERE new_status IS NOT NULL AND new_status <> 'PENDING'),
                        -9223372036854775807 - 1) AS left_pending_at,
               coalesce(min(epoch_ns(timestamp)) FILTER (WHERE new_status = 'DELIVERED'), -9223372036854775807 - 1) AS first_delivered_at,
               count(*) FILTER (WHERE new_status = 'DELIVERED') AS delivered_count,
               coalesce(max(epoch_ns(timestamp)) FILTER (WHERE new_status = 'SENT'), -9223372036854775807 - 1) AS last_sent_at
        FROM status_events WHERE message_id IS NOT NULL GROUP BY message_id),
    first AS (SELECT message_id, min(pos) AS pos FROM ids WHERE message_id IS NOT NULL GROUP BY message_id)
    SELECT coalesce(first.pos, -1) AS pos, CASE WHEN first.pos IS NULL THEN per.message_id END AS orphan,
           first_at, left_pending_at, first_delivered_at, delivered_count, last_sent_at
    FROM per LEFT JOIN first USING (message_id)"""
_REPEATED = """
    WITH dup AS (SELECT message_id, min(pos) AS first FROM ids GROUP BY message_id HAVING count(*) > 1)
    SELECT pos FROM ids JOIN dup ON ids.message_id IS NOT DISTINCT FROM dup.message_id WHERE pos > dup.first"""
BATCH_ROWS = 1_000_000
"""Rows of a per-message result fetched at a time (scattered into the arrays, never held whole)."""
_COLUMNS = ("first_at", "left_pending_at", "first_delivered_at", "delivered_count", "last_sent_at")
_STATUS_CACHE: list[tuple[weakref.ref, tuple, MessageStatus]] = []
CACHED_STATUS = 2
"""Results of :func:`message_status` kept, most recent first: the window's and its baseline's
(the change analysis asks about the part before the onset between the window's questions)."""


def _ids(message_ids: pd.Series) -> pa.Table:
    """The messages' ids with their positions, as Arrow (DuckDB scans it without a copy)."""
    return pa.table({"message_id": schema.arrow_text(message_ids), "pos": np.arange(len(message_ids), dtype=np.int64)})


def message_status(evidence: Evidence, message_ids: pd.Series) -> MessageStatus:
    """What the status history says about each message of ``message_ids`` (the messages
    table's ``message_id`` column): one GROUP BY message over the status events, joined to
    the messages' positions inside DuckDB, so that only integers come back (and the orphans'
    ids). The last results are kept (:data:`CACHED_STATUS`) for the same evidence and ids
    (detectors, the change analysis and alert replay all ask)."""
    key = (evidence.stored.get("status_events") or id(evidence.tables.get("status_events")), id(message_ids.array))
    for ref, known, result in _STATUS_CACHE:
        if ref() is evidence and known == key:
            return result
    n = len(message_ids)
    out = {c: np.full(n, 0 if c == "delivered_count" else NAT, dtype=np.int64) for c in _COLUMNS}
    orphans = []
    with connect(evidence, "status_events") as con:
        con.register("ids", _ids(message_ids))
        for batch in con.sql(_PER_MESSAGE).fetch_record_batch(BATCH_ROWS):  # one batch at a time
            pos = batch.column("pos").to_numpy()
            known = pos >= 0
            for c in _COLUMNS:
                out[c][pos[known]] = batch.column(c).to_numpy()[known]
            if not known.all():
                orphans.append(batch.filter(pa.array(~known)))
        repeated = con.sql(_REPEATED).to_arrow_table()["pos"].to_numpy()
    orphan = pa.Table.from_batches(orphans) if orphans else None
    if orphan is not None:  # orphans take codes n.. in id order
        orphan = orphan.take(pc.sort_indices(orphan["orphan"]))
        for c in _COLUMNS:
            out[c] = np.concatenate([out[c], orphan[c].to_numpy()])
    orphan_ids = (orphan["orphan"].to_numpy() if orphan is not None else np.empty(0)).astype(object)
    result = MessageStatus(**out, orphan_ids=orphan_ids, repeated=np.sort(repeated.astype(np.int64)))
    _STATUS_CACHE[:] = [(weakref.ref(evidence), key, result), *_STATUS_CACHE[:CACHED_STATUS - 1]]
    return result


def forget_status(evidence: Evidence) -> None:
    """Drop the kept :func:`message_status` results of ``evidence`` (its messages were let go)."""
    _STATUS_CACHE[:] = [entry for entry in _STATUS_CACHE if entry[0]() is not evidence]


def transitions(evidence: Evidence, message_ids: pd.Series, statuses: tuple[str, ...]) -> pd.DataFrame:
    """Every status event to one of ``statuses``: code (as :func:`message_status` numbers the
    messages of ``message_ids``), status, channel (``UNKNOWN`` when null), at (ns), in time order."""
    orphans = message_status(evidence, message_ids).orphan_ids
    marks = ", ".join("?" for _ in statuses)
    with connect(evidence, "status_events", memory_limit=LATE_MEMORY_LIMIT) as con:  # asked by alert replay
        con.register("ids", _ids(message_ids))
        con.register("orphans", pa.table({"message_id": pa.array(orphans, type=pa.large_string()),
                                          "code": len(message_ids) + np.arange(len(orphans), dtype=np.int64)}))
        return fetch(con, f"""
            WITH first AS (SELECT message_id, min(pos) AS code FROM ids WHERE message_id IS NOT NULL GROUP BY message_id),
            codes AS (SELECT * FROM first UNION ALL SELECT * FROM orphans)
            SELECT codes.code, new_status AS status, coalesce(channel, 'UNKNOWN') AS channel,
                   epoch_ns(timestamp) AS "at"
            FROM status_events JOIN codes USING (message_id)
            WHERE new_status IN ({marks}) AND timestamp IS NOT NULL ORDER BY "at", codes.code""",  # noqa: S608
                     list(statuses))


def status_rows(evidence: Evidence, statuses: tuple[str, ...], columns: tuple[str, ...]) -> pd.DataFrame:
    """The ``columns`` of the status events to one of ``statuses`` (timestamps as ns in ``at``
    when ``timestamp`` is asked for), in time order."""
    cols = ", ".join(f"epoch_ns({c}) AS \"at\"" if c == "timestamp" else c for c in columns)
    marks = ", ".join("?" for _ in statuses)
    sql = f"SELECT {cols} FROM status_events WHERE new_status IN ({marks}) ORDER BY timestamp, message_id"  # noqa: S608
    return query(evidence, sql, ("status_events",), list(statuses))


def repeated_status_events(evidence: Evidence) -> pd.DataFrame:
    """(message_id, new_status, timestamp) recorded more than once: message_id, new_status,
    at (ns) and the repeats beyond the first (``repeats``) per key. Grouped first by a 64-bit
    hash of the key (integers, not every row's 36-character id: a third less time, and a hash
    table of integers), then exactly, over the few rows whose hash repeats (equal keys have
    equal hashes; a collision only adds a candidate the exact grouping drops)."""
    return query(evidence, """
        WITH twice AS (SELECT hash(message_id, new_status, timestamp) AS h FROM status_events
                       WHERE message_id IS NOT NULL GROUP BY h HAVING count(*) > 1)
        SELECT message_id, new_status, epoch_ns(timestamp) AS "at", count(*) - 1 AS repeats FROM status_events
        WHERE message_id IS NOT NULL AND hash(message_id, new_status, timestamp) IN (SELECT h FROM twice)
        GROUP BY ALL HAVING count(*) > 1 ORDER BY "at", message_id, new_status""",
                 ("status_events",))


def status_steps(evidence: Evidence, max_steps: int) -> pd.DataFrame:
    """Transitions between successive status events of each message (time order), numbered by
    step (folded at ``max_steps``): src_step, src, dst_step, dst, size (messages)."""
    return query(evidence, """
        WITH seq AS (
            SELECT new_status AS status,
                   least(row_number() OVER w - 1, ?) AS step,
                   lead(new_status) OVER w AS next_status,
                   least(row_number() OVER w, ?) AS next_step
            FROM status_events WHERE message_id IS NOT NULL AND new_status IS NOT NULL
            WINDOW w AS (PARTITION BY message_id ORDER BY timestamp, new_status))
        SELECT step AS src_step, status AS src, next_step AS dst_step, next_status AS dst, count(*) AS size
        FROM seq WHERE next_status IS NOT NULL AND step < next_step GROUP BY ALL ORDER BY ALL""",
                 ("status_events",), [max_steps, max_steps], memory_limit=LATE_MEMORY_LIMIT)


def lock_rows(evidence: Evidence, kind: str, message_ids: pd.Series | None = None) -> pd.DataFrame:
    """The Redis keys of one ``kind`` (all columns), only those naming one of ``message_ids`` when given."""
    with connect(evidence, "locks") as con:
        sql = "SELECT * FROM locks WHERE kind = ?"
        if message_ids is not None:
            con.register("wanted", pd.DataFrame({"message_id": message_ids.dropna().unique()}))
            sql += " AND message_id IN (SELECT message_id FROM wanted)"
        return schema.conform("locks", fetch(con, sql + " ORDER BY sampled_at, key", [kind]))
