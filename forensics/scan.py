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

Settings: ``FORENSICS_DUCKDB_MEMORY`` (default ``2GB``) caps DuckDB's memory; spill files go
to ``~/.cache/chat4all-forensics/duckdb`` (``CHAT4ALL_FORENSICS_CACHE`` moves it).
"""

from __future__ import annotations

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

from forensics import schema
from forensics.timeutil import NAT

if TYPE_CHECKING:  # annotations only: evidence asks this module about its stored tables
    from forensics.evidence import Evidence, StoredTable

MEMORY_LIMIT = "2GB"


def spill_directory() -> Path:
    root = Path(os.environ.get("CHAT4ALL_FORENSICS_CACHE") or Path.home() / ".cache" / "chat4all-forensics")
    return root / "duckdb"


def _open() -> duckdb.DuckDBPyConnection:
    spill = spill_directory()
    spill.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(config={"memory_limit": os.environ.get("FORENSICS_DUCKDB_MEMORY") or MEMORY_LIMIT,
                                  "temp_directory": str(spill), "preserve_insertion_order": False})


def connect(evidence: Evidence, *names: str) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection in which each table of ``names`` is a view of the evidence's table:
    its stored Parquet file (scoped to its window and channel), its DataFrame, or an empty
    table of the right shape when it was not collected."""
    con = _open()
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


def query(evidence: Evidence, sql: str, tables: tuple[str, ...], params: list | None = None) -> pd.DataFrame:
    """``sql`` (table names as in the schema) over the evidence's ``tables``, as a DataFrame."""
    with connect(evidence, *tables) as con:
        return fetch(con, sql, params)


def count(evidence: Evidence, name: str) -> int:
    """Rows of table ``name`` (after the evidence's scope)."""
    return int(query(evidence, f"SELECT count(*) AS n FROM {name}", (name,))["n"].iloc[0])  # noqa: S608 (schema name)


def materialise(stored: StoredTable) -> pd.DataFrame:
    """A stored table read whole into its canonical frame (drill-down; small windows)."""
    with _open() as con:
        frame = _stored_relation(con, stored).to_arrow_table().to_pandas()
    return schema.validate(stored.name, schema.conform(stored.name, frame))


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
    return pa.table({"message_id": pa.array(message_ids.astype(schema.STR).array, type=pa.large_string()),
                     "pos": np.arange(len(message_ids), dtype=np.int64)})


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


def transitions(evidence: Evidence, message_ids: pd.Series, statuses: tuple[str, ...]) -> pd.DataFrame:
    """Every status event to one of ``statuses``: code (as :func:`message_status` numbers the
    messages of ``message_ids``), status, channel (``UNKNOWN`` when null), at (ns), in time order."""
    orphans = message_status(evidence, message_ids).orphan_ids
    marks = ", ".join("?" for _ in statuses)
    with connect(evidence, "status_events") as con:
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
    at (ns) and the repeats beyond the first (``repeats``) per key."""
    return query(evidence, """
        SELECT message_id, new_status, epoch_ns(timestamp) AS "at", count(*) - 1 AS repeats FROM status_events
        WHERE message_id IS NOT NULL GROUP BY ALL HAVING count(*) > 1 ORDER BY "at", message_id, new_status""",
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
                 ("status_events",), [max_steps, max_steps])


def lock_rows(evidence: Evidence, kind: str, message_ids: pd.Series | None = None) -> pd.DataFrame:
    """The Redis keys of one ``kind`` (all columns), only those naming one of ``message_ids`` when given."""
    with connect(evidence, "locks") as con:
        sql = "SELECT * FROM locks WHERE kind = ?"
        if message_ids is not None:
            con.register("wanted", pd.DataFrame({"message_id": message_ids.dropna().unique()}))
            sql += " AND message_id IN (SELECT message_id FROM wanted)"
        return schema.conform("locks", fetch(con, sql + " ORDER BY sampled_at, key", [kind]))
