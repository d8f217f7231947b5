"""The questions MongoDB answers on the server, for :class:`forensics.sources.mongo.MongoSource`.

Whole-window questions (stuck messages, FAILED grouped by error, retry counts, status counts
per time bucket) run as filters and aggregation pipelines on the server, so only their
answer travels, whatever the window. Every pipeline is valid on a sharded cluster: ``$match``,
``$project``, ``$group``, ``$sort``, ``$limit`` and ``$dateTrunc`` only (no ``$out``, ``$merge``
or JavaScript), under ``maxTimeMS``, with ``allowDiskUse`` so a big ``$group`` spills rather
than fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import pandas as pd

from forensics import schema
from forensics.errors import ParameterError
from forensics.sources.mongo_query import (
    _keep,
    _sorted,
    _with_attrs,
    _within,
    all_of,
    date_bucket,
    first_date_of,
    first_of,
    mark_truncated,
    path_supplying,
    time_range,
    times_before,
)
from forensics.timeutil import Window, iso, parse_time


def _upper(value: object) -> str | None:
    """A group key the server returned (a status or channel as stored: any spelling, null or NaN)
    as the canonical upper-case text; null stays null."""
    return None if value is None or value != value else str(value).upper()


class ServerQuestions:
    """Mixed into :class:`~forensics.sources.mongo.MongoSource` (its collections, profile paths,
    filters, limits and query record)."""

    def _aggregate(self, kind: str, purpose: str, pipeline: list[dict], cap: int) -> pd.DataFrame:
        coll = self.collection(kind)
        pipeline = [*pipeline, {"$limit": cap + 1}]
        entry = self._record(purpose, coll.name, "aggregate", pipeline)
        with self._errors(coll.name):
            rows = list(coll.aggregate(pipeline, maxTimeMS=self._max_time_ms, allowDiskUse=True))
        entry["rows"], entry["truncated"] = min(len(rows), cap), len(rows) > cap
        frame = pd.DataFrame(rows[:cap])
        if len(rows) > cap:
            self.warnings.append(mark_truncated(frame, cap, purpose))
        return frame

    def count_messages(self, window: Window, *, at_most: int, channel: str | None = None) -> int:
        """How many messages were created in ``window`` (and channel), counted on the server and
        stopped at ``at_most + 1``: enough to tell a window above ``at_most`` from one below, in
        time bounded by ``at_most`` whatever the window (``count_documents`` with a limit, under
        ``maxTimeMS``). Counts what the server's filter on the stored creation times selects."""
        coll = self.collection("messages")
        flt = all_of(time_range(self._paths("messages", "created_at"), window.start, window.end),
                     self._channel_filter(channel))
        entry = self._record("messages in window, counted", coll.name, "count", flt, limit=at_most + 1)
        with self._errors(coll.name):
            entry["rows"] = coll.count_documents(flt, limit=at_most + 1, maxTimeMS=self._max_time_ms)
        return entry["rows"]

    def stuck_counts(self, window: Window, older_than: Mapping[str, str | pd.Timedelta], reference=None, *,
                     channel: str | None = None, limit: int | None = None) -> pd.DataFrame:
        """How many messages created in ``window`` are stuck in each status of ``older_than``
        (status -> age), per channel, counted on the server: :meth:`stuck_messages`' definition
        (still in the status, the latest of creation and update more than the age before
        ``reference``, default the window's end), one pipeline per status, times normalised on
        the server as :meth:`status_counts` does. Columns ``status``, ``channel``, ``count``,
        ``oldest`` (earliest creation, UTC)."""
        ref = parse_time(reference) if reference is not None else window.end
        f = self._paths
        created, updated = f("messages", "created_at"), f("messages", "updated_at")
        start, end = window.start.to_pydatetime(), window.end.to_pydatetime()
        parts = []
        for status, age in older_than.items():
            cutoff = (ref - pd.Timedelta(age)).to_pydatetime()
            pipeline = [
                {"$match": all_of(self._status_filter(status), times_before(updated + created, cutoff),
                                  self._channel_filter(channel), time_range(created, window.start, window.end))},
                {"$project": {"_id": 0, "status": first_of(f("messages", "status")),
                              "channel": first_of(f("messages", "channel")), "created": first_date_of(created),
                              "updated": first_date_of(updated)}},
                {"$match": {"created": {"$gte": start, "$lt": end}}},
                {"$project": {"status": 1, "channel": 1, "created": 1, "last": {"$max": ["$created", "$updated"]}}},
                {"$match": {"last": {"$lt": cutoff}}},
                {"$group": {"_id": {"status": "$status", "channel": "$channel"}, "count": {"$sum": 1},
                            "oldest": {"$min": "$created"}}},
            ]
            rows = self._aggregate("messages", f"stuck {status.upper()} messages, counted", pipeline,
                                   self._cap(limit))
            if len(rows):
                keys = pd.json_normalize(rows["_id"].tolist())
                parts.append(pd.DataFrame({
                    "status": keys["status"].map(_upper),
                    "channel": keys.get("channel", pd.Series(index=keys.index, dtype=object)).map(_upper),
                    "count": rows["count"], "oldest": schema.to_utc(rows["oldest"])})
                    .query("status == @status.upper()"))
        if not parts:
            return pd.DataFrame({"status": pd.Series(dtype=schema.STR), "channel": pd.Series(dtype=schema.STR),
                                 "count": pd.Series(dtype=schema.INT), "oldest": pd.Series(dtype=schema.UTC_TS)})
        # "whatsapp" and "WHATSAPP" are one channel: merge what the server kept apart by spelling.
        return (pd.concat(parts).groupby(["status", "channel"], dropna=False, sort=True)
                .agg(count=("count", "sum"), oldest=("oldest", "min")).reset_index()
                .astype({"status": schema.STR, "channel": schema.STR, "count": schema.INT}))

    def stuck_messages(self, status: str | Sequence[str] = "PENDING", older_than: str | pd.Timedelta = "30s",
                       reference=None, *, window: Window | None = None, channel: str | None = None,
                       limit: int | None = None) -> pd.DataFrame:
        """Messages still in ``status`` whose last activity is more than ``older_than`` before ``reference``.

        Symptom 1 (PENDING > 30 s) and symptom 2 (SENT, or DELIVERED, that never
        progressed). Last activity = the latest of the update and creation times, so a
        message is stuck when all of them are older than ``reference - older_than``
        (``reference`` defaults to now; for an incident use the window's end). Filtered on
        the server; ``attrs`` carry ``reference`` and ``cutoff``.
        """
        ref = parse_time(reference) if reference is not None else pd.Timestamp.now(tz="UTC")
        age = pd.Timedelta(older_than)
        if age < pd.Timedelta(0):
            raise ParameterError(f"older_than must not be negative, got {older_than!r}")
        cutoff = ref - age
        times = self._paths("messages", "updated_at") + self._paths("messages", "created_at")
        created = self._paths("messages", "created_at")
        flt = all_of(self._status_filter(status), times_before(times, cutoff), self._channel_filter(channel),
                     time_range(created, window.start, window.end) if window else None)
        # oldest first, so that a limit keeps the messages stuck longest (the drill-down's examples)
        frame = self._messages("stuck messages", flt, cap=self._cap(limit), sort=[(created[0], 1)])
        wanted = [status.upper()] if isinstance(status, str) else [s.upper() for s in status]
        last = frame[["created_at", "updated_at"]].max(axis=1)
        keep = frame["status"].isin(wanted).fillna(False) & (last < cutoff).fillna(False)
        if window is not None:
            keep &= _within(frame["created_at"], window)
        if channel is not None:
            keep &= frame["channel"].eq(channel.upper()).fillna(False)
        frame = _sorted(_keep(frame, keep), ["created_at", "message_id"])
        frame.attrs.update({"reference": iso(ref), "cutoff": iso(cutoff)})
        return frame

    def failed_by_error(self, window: Window | None = None, *, channel: str | None = None,
                        limit: int | None = None) -> pd.DataFrame:
        """FAILED messages grouped by error (runbook 3.3), on the server, most frequent first.

        The error is the first of the profile's error paths that holds one (top-level
        ``error_message`` or ``metadata.error_message``: both layouts). Columns:
        ``error_message``, ``count``, ``channels`` (comma-separated), ``error_fields`` (which
        paths held it), ``first_seen``, ``last_seen`` (creation times, UTC).
        """
        f = self._paths
        err, created = f("messages", "error_message"), f("messages", "created_at")
        match = all_of(self._status_filter("FAILED"), self._channel_filter(channel),
                       time_range(created, window.start, window.end) if window else None)
        pipeline = [
            {"$match": match},
            {"$project": {"_id": 0, "error": first_of(err), "field": path_supplying(err),
                          "channel": first_of(f("messages", "channel")), "created": first_date_of(created)}},
            {"$group": {"_id": "$error", "count": {"$sum": 1}, "channels": {"$addToSet": "$channel"},
                        "fields": {"$addToSet": "$field"}, "first_seen": {"$min": "$created"},
                        "last_seen": {"$max": "$created"}}},
            {"$sort": {"count": -1, "_id": 1}},
        ]
        rows = self._aggregate("messages", "failed messages by error", pipeline, self._cap(limit))
        columns = ["error_message", "count", "channels", "error_fields", "first_seen", "last_seen"]
        if rows.empty:
            return _with_attrs(pd.DataFrame({c: pd.Series(dtype=d) for c, d in zip(
                columns, [schema.STR, schema.INT, schema.STR, schema.STR, schema.UTC_TS, schema.UTC_TS],
                strict=True)}), rows)
        out = pd.DataFrame({
            "error_message": rows["_id"].map(lambda v: None if v is None else str(v)).astype(schema.STR),
            "count": rows["count"].astype(schema.INT),
            "channels": rows["channels"].map(lambda v: ",".join(sorted({str(c).upper() for c in v if c}))
                                             ).astype(schema.STR),
            "error_fields": rows["fields"].map(lambda v: ",".join(sorted(p for p in v if p))).astype(schema.STR),
            "first_seen": schema.to_utc(rows["first_seen"]),
            "last_seen": schema.to_utc(rows["last_seen"]),
        })
        return _with_attrs(out, rows)

    def retry_counts(self, window: Window | None = None, *, channel: str | None = None,
                     status: str | None = None, limit: int | None = None) -> pd.DataFrame:
        """How many messages have each retry count, per channel (runbook 2.4), counted on the server.

        Columns ``channel``, ``retry_count`` (null: none recorded), ``messages``.
        """
        f = self._paths
        created = f("messages", "created_at")
        match = all_of(self._status_filter(status), self._channel_filter(channel),
                       time_range(created, window.start, window.end) if window else None)
        pipeline = [
            {"$match": match},
            {"$group": {"_id": {"channel": first_of(f("messages", "channel")),
                                "retries": first_of(f("messages", "retry_count"))}, "messages": {"$sum": 1}}},
        ]
        rows = self._aggregate("messages", "retry counts", pipeline, self._cap(limit))
        if rows.empty:
            out = pd.DataFrame({"channel": pd.Series(dtype=schema.STR), "retry_count": pd.Series(dtype=schema.INT),
                                "messages": pd.Series(dtype=schema.INT)})
            return _with_attrs(out, rows)
        keys = pd.json_normalize(rows["_id"].tolist())
        out = pd.DataFrame({
            "channel": keys.get("channel", pd.Series(index=keys.index, dtype=object)).map(_upper).astype(schema.STR),
            "retry_count": pd.to_numeric(keys.get("retries", pd.Series(index=keys.index, dtype=object)).map(
                lambda v: v if isinstance(v, int | float | str) and not isinstance(v, bool) else None),
                errors="coerce").round().astype(schema.INT),
            "messages": rows["messages"].astype(schema.INT),
        })
        # "2" and 2 are one retry count: merge what the server kept apart by type.
        out = (out.groupby(["channel", "retry_count"], dropna=False, sort=True)["messages"].sum()
               .reset_index().astype({"channel": schema.STR, "retry_count": schema.INT, "messages": schema.INT}))
        return _with_attrs(out, rows)

    def status_counts(self, window: Window, *, bucket: str = "1min", of: Literal["messages", "transitions"] =
                      "messages", channel: str | None = None, limit: int | None = None) -> pd.DataFrame:
        """Counts per status per time bucket, bucketed on the server (``$dateTrunc``).

        ``of="messages"``: messages created in the window by current status, per creation
        bucket (the runbook's status distribution). ``of="transitions"``: history rows by
        new status per transition bucket (derived PENDINGs are not rows: not counted).
        Buckets are whole seconds up to days, aligned as ``$dateTrunc`` aligns them
        (from 2000-01-01T00:00Z). Columns ``bucket_start`` (UTC), ``status``, ``count``.
        """
        unit, size = date_bucket(bucket)
        if of == "messages":
            kind, times, statuses = "messages", self._paths("messages", "created_at"), self._paths("messages",
                                                                                                  "status")
            extra = self._channel_filter(channel)
        elif of == "transitions":
            if channel is not None:
                raise ParameterError("channel filters status counts of messages; history rows carry no channel")
            kind, times, statuses = "status_history", self._paths("status_history", "timestamp"), self._paths(
                "status_history", "new_status")
            extra = None
        else:
            raise ParameterError(f"of must be messages or transitions, got {of!r}")
        pipeline = [
            {"$match": all_of(time_range(times, window.start, window.end), extra)},
            {"$project": {"_id": 0, "status": first_of(statuses), "t": first_date_of(times)}},
            {"$match": {"t": {"$gte": window.start.to_pydatetime(), "$lt": window.end.to_pydatetime()}}},
            {"$group": {"_id": {"bucket": {"$dateTrunc": {"date": "$t", "unit": unit, "binSize": size}},
                                "status": "$status"}, "count": {"$sum": 1}}},
        ]
        rows = self._aggregate(kind, f"status counts of {of}", pipeline, self._cap(limit))
        if rows.empty:
            out = pd.DataFrame({"bucket_start": pd.Series(dtype=schema.UTC_TS), "status": pd.Series(dtype=schema.STR),
                                "count": pd.Series(dtype=schema.INT)})
            return _with_attrs(out, rows)
        keys = pd.json_normalize(rows["_id"].tolist())
        status = keys["status"].map(lambda v: None if v is None or v != v else str(v).strip().upper())
        out = pd.DataFrame({"bucket_start": schema.to_utc(keys["bucket"]),
                            "status": status.where(status.isin(schema.STATUSES) | status.isna(), "UNKNOWN"),
                            "count": rows["count"]})
        out = (out.groupby(["bucket_start", "status"], dropna=False, sort=True)["count"].sum().reset_index()
               .astype({"status": schema.STR, "count": schema.INT}))
        return _with_attrs(out, rows)

