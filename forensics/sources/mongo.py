"""MongoDB, the message store, as an evidence source: read-only, bounded, every name from the profile.

:class:`MongoSource` answers the runbook's MongoDB questions (symptoms 1-3, R3.2, the
monitoring aggregates) with canonical frames or small aggregate tables:

- messages: one by id, many by ids, a conversation in order, a window;
- status histories (``message_status_history`` joined to messages, the initial PENDING
  derived by :mod:`forensics.sources.documents`) of a message, a conversation or a window;
- stuck messages, FAILED messages grouped by error, retry counts and status counts over
  time, all computed on the server (filters and aggregation pipelines);
- file metadata checked against the platforms' limits (runbook R3.2).

Rules every query follows
- A projection, ``maxTimeMS`` from :class:`~forensics.config.Limits` and a result cap. A
  capped result is marked, never passed off as whole: ``frame.attrs["truncated"] = True``,
  ``frame.attrs["truncated_at"] = N`` and a "truncated at N" line in
  ``frame.attrs["warnings"]`` (and in :attr:`MongoSource.warnings`).
- Ids and parameters are matched literally. An id must be a ``str``; it only ever appears
  as the operand of ``$eq``/``$in`` (query language), where a value such as ``"$ne"`` is
  a plain string, so no caller value can become a query operator.
- Names (database, collections, field paths) come from the profile; where the profile
  lists several paths for one field (``timestamp`` or ``created_at``, top-level or
  ``metadata.error_message``) the server filter accepts any of them and the exact
  predicate is applied again to the normalised rows.
- Times may be BSON dates, epoch seconds, epoch milliseconds or ISO strings
  (:func:`time_range`); the server filter covers all four.

Loading: the fast path reads the server's raw BSON batches straight into Arrow
(pymongoarrow with an explicit schema, nested ``metadata`` as a struct) and normalises
the typed columns vectorised; ``arrow=False`` reads per-document dicts. Both produce the
same canonical frames (tests pin it on odd documents).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pymongo
from bson import errors as bson_errors
from pymongo import errors as mongo_errors

from forensics import schema
from forensics.catalog import check_platform_limits
from forensics.config import DEFAULT_LIMITS, Limits, connection
from forensics.credentials import mask_uri
from forensics.errors import ParameterError, SourceError, SourceTimeout
from forensics.profiles import Profile, load_profile
from forensics.sources.base import EvidenceSource, Option, Slices, SourceOptions, SourceResult, joined
from forensics.sources.documents import (
    files_from_documents,
    messages_from_documents,
    status_events_from_documents,
    with_derived_pending,
)
from forensics.sources.mongo_arrow import BATCH_ROWS, ID_CHUNK, arrow_batches, document_batches
from forensics.sources.mongo_query import (
    _capped,
    _keep,
    _sorted,
    _within,
    all_of,
    any_path_in,
    literal_id,
    literal_ids,
    mark_truncated,
    query_json,
    spellings,
    time_range,
)
from forensics.sources.mongo_server import ServerQuestions
from forensics.timeutil import Window

SOURCE = "mongodb"
APPNAME = "chat4all-forensics"
UNREADABLE_MIN = 10
"""Documents that must come back unreadable before a query counts as a profile/type mismatch."""
KEY_FIELDS = {"messages": ("message_id", "created_at"), "status_history": ("message_id", "new_status", "timestamp")}
"""Fields without which a row is no evidence: a row read through Arrow without any is re-read as a document."""
# ---- the source -------------------------------------------------------------------------

TableName = Literal["messages", "status_events"]


PUSHDOWN_MESSAGES = 250_000
"""Above this many messages created in the window, a live report asks the server for the
whole-window figures instead of computing them from the rows (forensics.report.pushdown)."""


class MongoSource(ServerQuestions):
    """Read-only access to a Chat4All MongoDB through the profile's names.

    ``uri`` defaults to FORENSICS_MONGO_URI; options in it (``readPreference=secondary``,
    ``authSource``, TLS, ...) are honoured as given. ``database`` defaults to the profile's.
    Every method raises :class:`~forensics.errors.SourceError` naming what to check, with
    the URI masked, when the server is unreachable, refuses the credentials, lacks a
    collection or exceeds ``maxTimeMS``.
    """

    @classmethod
    def from_options(cls, opts: SourceOptions, profile: Profile | str | None) -> MongoSource:
        """The source as the ``mongo`` evidence source's parsed options (``-o``) describe it:
        connection, limits, database and load path."""
        return cls(opts.connection, profile, opts.limits, database=opts["mongo_database"],
                   arrow=opts["mongo_load"] == "arrow")

    def __init__(self, uri: str | None = None, profile: Profile | str | None = None,
                 limits: Limits | None = None, *, database: str | None = None, arrow: bool = True) -> None:
        self.profile = load_profile(profile)
        self.limits = limits or DEFAULT_LIMITS
        self.uri = connection("mongo", uri)
        if not self.uri:
            raise SourceError(SOURCE, "no connection string",
                              "set FORENSICS_MONGO_URI (for the local stack: eval \"$(scripts/services env)\") "
                              "or pass -o mongo_uri=mongodb://...")
        self.masked_uri = mask_uri(self.uri)
        self.database_name = database or self.profile.mongo.database
        self.arrow = arrow
        self.queries: list[dict[str, Any]] = []
        """Every query sent, as JSON (filter or pipeline, projection, limits, rows), tagged by purpose."""
        self.warnings: list[str] = []
        self._lookups: dict[tuple[str, str], int] = {}
        self._collections: set[str] | None = None
        try:
            self.client: pymongo.MongoClient = pymongo.MongoClient(
                self.uri, appname=APPNAME, tz_aware=False, connect=False,
                serverSelectionTimeoutMS=int(self.limits.connect_timeout_s * 1000),
                connectTimeoutMS=int(self.limits.connect_timeout_s * 1000))
        except (mongo_errors.ConfigurationError, mongo_errors.InvalidURI, ValueError, TypeError) as exc:
            raise SourceError(SOURCE, f"invalid connection string {self.masked_uri}: {mask_uri(str(exc))}",
                              "the URI's form: mongodb://user:password@host:port/?authSource=admin") from None
        self.db = self.client[self.database_name]

    def __enter__(self) -> MongoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def describe(self) -> dict[str, Any]:
        """What this source reads from, credentials masked."""
        return {"kind": SOURCE, "uri": self.masked_uri, "database": self.database_name,
                "profile": self.profile.name, "appname": APPNAME,
                "read_preference": self.client.read_preference.mongos_mode, "load": "arrow" if self.arrow else "documents",
                "max_time_ms": self._max_time_ms, "max_rows": self.limits.max_rows}

    # -- plumbing --------------------------------------------------------------------------

    @property
    def _max_time_ms(self) -> int:
        return max(1, int(self.limits.timeout_s * 1000))

    def _cap(self, limit: int | None) -> int:
        cap = self.limits.max_rows if limit is None else min(int(limit), self.limits.max_rows)
        if cap < 1:
            raise ParameterError(f"limit must be at least 1, got {limit}")
        return cap

    @contextlib.contextmanager
    def _errors(self, collection: str) -> Iterator[None]:
        """Driver errors -> one SourceError naming the problem and what to check."""
        where = f"{self.database_name}.{collection} on {self.masked_uri}"
        try:
            yield
        except mongo_errors.ExecutionTimeout:
            raise SourceTimeout(SOURCE, f"query on {where} exceeded maxTimeMS={self._max_time_ms}",
                              "narrow the window or filter, make sure the filtered fields are indexed, "
                              "or raise Limits.timeout_s (-o timeout_s=...)") from None
        except mongo_errors.OperationFailure as exc:
            raise self._operation_failure(exc, where) from None
        except mongo_errors.ServerSelectionTimeoutError as exc:
            raise SourceError(SOURCE, f"cannot reach {self.masked_uri} within "
                              f"{self.limits.connect_timeout_s:g}s: {_first_line(exc)}",
                              "that the server runs and listens there (scripts/services status), host and port "
                              "in FORENSICS_MONGO_URI, directConnection/replicaSet options, firewall or VPN") from None
        except (mongo_errors.ConnectionFailure, mongo_errors.NetworkTimeout) as exc:
            raise SourceError(SOURCE, f"connection to {self.masked_uri} failed during a query on {collection}: "
                              f"{_first_line(exc)}", "server health and network; retry") from None
        except mongo_errors.InvalidOperation as exc:
            raise SourceError(SOURCE, f"{where}: {mask_uri(str(exc))}", "the source was closed") from None
        except bson_errors.BSONError as exc:
            raise SourceError(SOURCE, f"undecodable document in {where}: {mask_uri(str(exc))}",
                              "the documents' encoding (dates out of range, invalid UTF-8)") from None
        except mongo_errors.PyMongoError as exc:
            raise SourceError(SOURCE, f"query on {where} failed: {_first_line(exc)}", "the server log") from None

    def _operation_failure(self, exc: mongo_errors.OperationFailure, where: str) -> SourceError:
        code, text = exc.code, mask_uri(str(exc.details.get("errmsg") if exc.details else exc))
        if code == 18 or "authentication failed" in text.lower():
            return SourceError(SOURCE, f"authentication failed for {self.masked_uri}",
                               "user, password and authSource in FORENSICS_MONGO_URI "
                               "(scripts/services env prints the local stack's)")
        if code == 13 or code == 8000:
            return SourceError(SOURCE, f"not authorised to read {where}: {text}",
                               f"the user needs the read role on database {self.database_name}")
        if code in (14, 241, 16006, 16020, 28651, 34471, 40515, 4848979):
            return SourceError(SOURCE, f"a field of an unexpected type in {where}: {text}",
                               "the profile's field paths (mongo.*_fields) and the types the documents store")
        return SourceError(SOURCE, f"query on {where} failed (code {code}): {text}", "the server log")

    def collection(self, key: str) -> pymongo.collection.Collection:
        """The profile's collection ``key`` (messages, status_history, conversations, files); it must exist."""
        name = self.profile.mongo.collections[key]
        if self._collections is None:
            with self._errors(name):
                self._collections = set(self.db.list_collection_names())
        if name not in self._collections:
            have = ", ".join(sorted(self._collections)) or "no collections"
            raise SourceError(SOURCE, f"collection {self.database_name}.{name} not found on {self.masked_uri} "
                              f"(database has: {have})",
                              f"the database name and the profile {self.profile.name!r} "
                              f"(mongo.collections.{key}); another profile: --profile chat4all-v2 or a YAML file")
        return self.db[name]

    def _record(self, purpose: str, collection: str, operation: str, query: Any, **extra) -> dict[str, Any]:
        entry = {"purpose": purpose, "database": self.database_name, "collection": collection,
                 "operation": operation, "pipeline" if operation == "aggregate" else "filter": query_json(query),
                 **{k: query_json(v) for k, v in extra.items()}, "maxTimeMS": self._max_time_ms}
        self.queries.append(entry)
        return entry

    def _fields(self, kind: str) -> dict[str, list[str]]:
        return {"messages": self.profile.mongo.message_fields, "status_history": self.profile.mongo.history_fields,
                "files": self.profile.mongo.file_fields}[kind]

    def _paths(self, kind: str, field: str) -> list[str]:
        return self._fields(kind).get(field, [field])

    def _projection(self, kind: str) -> dict[str, int]:
        paths = sorted({p for ps in self._fields(kind).values() for p in ps})
        # MongoDB refuses a projection naming both "metadata" and "metadata.x".
        keep = [p for p in paths if not any(p.startswith(q + ".") for q in paths)]
        return {"_id": 1, **dict.fromkeys(keep, 1)}

    # -- reading -----------------------------------------------------------------------------

    def _read(self, kind: str, purpose: str, flt: dict, *, cap: int, sort: list | None = None
              ) -> tuple[list[pd.DataFrame], bool]:
        """Documents of collection ``kind`` matching ``flt`` as flat frames (dotted paths), and
        truncated: :meth:`_chunks` gathered."""
        parts: list[pd.DataFrame] = []
        truncated = False
        for chunk, cut in self._chunks(kind, purpose, flt, cap=cap, sort=sort):
            parts += chunk
            truncated |= cut
        return parts or [pd.DataFrame()], truncated

    def _chunks(self, kind: str, purpose: str, flt: dict, *, cap: int, sort: list | None = None
                ) -> Iterator[tuple[list[pd.DataFrame], bool]]:
        """Documents of collection ``kind`` matching ``flt``, one server batch at a time (at most
        :data:`BATCH_ROWS` documents or 16 MiB), as flat frames (dotted paths) and whether the
        result was cut at ``cap`` there (the last chunk). One cursor, read-only, under
        ``maxTimeMS``; memory holds one batch.

        Fast path: pymongoarrow with a schema whose kinds come from a sample of the same query.
        pymongoarrow cannot express a field holding several BSON types in one column, so:
        a path the sample shows with several kinds is read for the batch's rows as documents
        (_id + that path) and joined by _id; a row whose key field (id, time, status) came back
        null, e.g. a string date beyond the sample, is re-read as a document by _id. Other
        fields of a kind unseen in the sample read as null.
        """
        coll = self.collection(kind)
        projection = self._projection(kind)
        entry = self._record(purpose, coll.name, "find", flt, projection=projection, sort=sort, limit=cap + 1)
        entry["rows"], entry["truncated"] = 0, False
        with self._errors(coll.name):
            cursor = {"sort": sort, "limit": cap + 1, "max_time_ms": self._max_time_ms}
            batches = (arrow_batches(coll, flt, projection, self._fields(kind), KEY_FIELDS.get(kind, ()), cursor,
                                     self.warnings) if self.arrow
                       else document_batches(coll.find(flt, projection, batch_size=BATCH_ROWS, **cursor)))
            for parts in batches:
                cut = entry["rows"] + sum(len(p) for p in parts) > cap  # the cursor's limit is cap + 1
                if cut:
                    parts = _first_rows(parts, cap - entry["rows"])
                entry["rows"] += sum(len(p) for p in parts)
                entry["truncated"] = cut
                yield parts, cut
                if cut:
                    return

    def _messages(self, purpose: str, flt: dict, *, cap: int, sort: list | None = None) -> pd.DataFrame:
        parts, truncated = self._read("messages", purpose, flt, cap=cap, sort=sort)
        frame = joined("messages", [messages_from_documents(p, self.profile) for p in parts if len(p)])
        self._check_readable("messages", frame, sum(len(p) for p in parts))
        if truncated:
            self.warnings.append(mark_truncated(frame, cap, purpose))
        return frame

    def _history(self, purpose: str, flt: dict, messages: pd.DataFrame, *, cap: int) -> pd.DataFrame:
        parts, truncated = self._read("status_history", purpose, flt, cap=cap)
        empty = schema.empty("messages")
        read = joined("status_events", [status_events_from_documents(p, empty, self.profile)
                                         for p in parts if len(p)])
        self._check_readable("status_history", read, sum(len(p) for p in parts))
        frame = with_derived_pending(read, messages)
        if truncated:
            self.warnings.append(mark_truncated(frame, cap, purpose))
        return frame

    def _check_readable(self, kind: str, frame: pd.DataFrame, documents: int) -> None:
        """Documents came back but none gave a row: the profile's paths or the stored types are wrong.

        From UNREADABLE_MIN documents on that is an error (a wrong profile shows on any real
        query); below it, a warning (a few odd documents must not hide a message's story).
        """
        if not documents or not frame.empty:
            return
        need = ("message_id", "new_status", "timestamp") if kind == "status_history" else ("message_id",)
        paths = "; ".join(f"{f} at {' or '.join(self._paths(kind, f))}" for f in need)
        problem = (f"{documents} documents of {self.database_name}.{self.profile.mongo.collections[kind]} "
                   f"gave no readable row ({paths})")
        if documents < UNREADABLE_MIN:
            self.warnings.append(problem)
            return
        raise SourceError(SOURCE, problem, f"the field paths of profile {self.profile.name!r} and the types "
                          "the documents store (strings for ids, dates or epoch numbers for times)")

    # -- messages ----------------------------------------------------------------------------

    def _id_filter(self, kind: str, ids: list[str]) -> dict:
        return any_path_in(self._paths(kind, "message_id"), ids)

    def messages(self, message_ids: Sequence[str], *, limit: int | None = None) -> pd.DataFrame:
        """The ``messages`` rows of ``message_ids`` (each a str, matched literally)."""
        ids = literal_ids(message_ids)
        cap = self._cap(limit)
        frames = [self._messages("messages by id", self._id_filter("messages", ids[i:i + ID_CHUNK]), cap=cap)
                  for i in range(0, len(ids), ID_CHUNK)]
        return _capped(joined("messages", frames), cap, "messages by id", self.warnings)

    def message(self, message_id: str) -> pd.DataFrame:
        """The ``messages`` row of one message (empty when unknown; several if the id is duplicated)."""
        return self.messages([literal_id(message_id)])

    def conversation(self, conversation_id: str, *, limit: int | None = None) -> pd.DataFrame:
        """A conversation's messages in order of creation (runbook 4.1), oldest first."""
        cid = literal_id(conversation_id, "conversation id")
        created = self._paths("messages", "created_at")
        flt = any_path_in(self._paths("messages", "conversation_id"), [cid])
        frame = self._messages("conversation", flt, cap=self._cap(limit), sort=[(created[0], 1)])
        return _sorted(frame, ["created_at", "message_id"])

    def window_messages(self, window: Window, *, channel: str | None = None, status: str | None = None,
                        limit: int | None = None) -> pd.DataFrame:
        """Messages created or updated within ``window``, optionally of one channel and current status."""
        f = self._paths
        flt = all_of({"$or": time_range(f("messages", "created_at"), window.start, window.end)["$or"]
                      + time_range(f("messages", "updated_at"), window.start, window.end)["$or"]},
                     self._channel_filter(channel), self._status_filter(status))
        frame = self._messages("messages in window", flt, cap=self._cap(limit))
        keep = (_within(frame["created_at"], window) | _within(frame["updated_at"], window))
        if channel is not None:
            keep &= frame["channel"].eq(channel.upper()).fillna(False)
        if status is not None:
            keep &= frame["status"].eq(status.upper()).fillna(False)
        return _keep(frame, keep)

    def _channel_filter(self, channel: str | None) -> dict | None:
        if channel is None:
            return None
        return any_path_in(self._paths("messages", "channel"), spellings(literal_id(channel, "channel")))

    def _status_filter(self, status: str | Sequence[str] | None, kind: str = "messages", field: str = "status"
                       ) -> dict | None:
        if status is None:
            return None
        wanted = [status] if isinstance(status, str) else list(status)
        for s in wanted:
            if not isinstance(s, str) or s.upper() not in schema.STATUSES:
                raise ParameterError(f"status must be one of {', '.join(schema.STATUSES)}, got {s!r}")
        return any_path_in(self._paths(kind, field), [v for s in wanted for v in spellings(s.upper())])

    # -- status histories -------------------------------------------------------------------

    def history_of(self, messages: pd.DataFrame, *, limit: int | None = None,
                   purpose: str = "history of messages") -> pd.DataFrame:
        """Status events of the messages in a ``messages`` frame (history read by message id)."""
        cap = self._cap(limit)
        ids = messages["message_id"].dropna().unique().tolist()
        frames = []
        for i in range(0, len(ids), ID_CHUNK):
            frames.append(self._history(purpose, self._id_filter("status_history", ids[i:i + ID_CHUNK]),
                                        messages[messages["message_id"].isin(ids[i:i + ID_CHUNK])], cap=cap))
        frame = joined("status_events", frames) if frames else with_derived_pending(schema.empty("status_events"),
                                                                                    messages)
        return _capped(frame, cap, purpose, self.warnings)

    def message_history(self, message_id: str) -> pd.DataFrame:
        """One message's status events, the initial PENDING derived when history lacks it."""
        return self.history_of(self.message(message_id), purpose="history of a message")

    def conversation_history(self, conversation_id: str, *, limit: int | None = None) -> pd.DataFrame:
        """Status events of every message of a conversation."""
        cap = self._cap(limit)
        return self.history_of(self.conversation(conversation_id, limit=cap), limit=cap,
                               purpose="history of a conversation")

    def window_history(self, window: Window, *, channel: str | None = None, status: str | None = None,
                       limit: int | None = None) -> pd.DataFrame:
        """Status events of the messages created or updated in ``window`` (of ``channel``, now in ``status``)."""
        cap = self._cap(limit)
        messages = self.window_messages(window, channel=channel, status=status, limit=cap)
        return self.history_of(messages, limit=cap, purpose="history of messages in window")

    def status_rows(self, window: Window, *, limit: int | None = None) -> pd.DataFrame:
        """History rows timed within ``window`` as ``status_events`` rows, as read: no derived
        PENDING, channel null (history documents carry none; :meth:`window_evidence` joins them)."""
        flt = time_range(self._paths("status_history", "timestamp"), window.start, window.end)
        read = self._history("status events in window", flt, schema.empty("messages"), cap=self._cap(limit))
        return _keep(read, _within(read["timestamp"], window))

    def window_evidence(self, window: Window, *, limit: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The window's ``messages`` and ``status_events`` tables, as ``collect`` stores them
        (:meth:`window_slices` gathered, events in message and time order)."""
        parts: dict[str, list[pd.DataFrame]] = {"messages": [], "status_events": []}
        for table, frame in self.window_slices(window, limit=limit):
            parts[table].append(frame)
        messages = joined("messages", parts["messages"])
        events = joined("status_events", parts["status_events"])
        events = _sorted(events, ["message_id", "timestamp", "derived"]) if len(events) else with_derived_pending(
            events, messages)
        return messages, events

    def window_slices(self, window: Window, *, limit: int | None = None) -> Iterator[tuple[str, pd.DataFrame]]:
        """The window's ``messages`` and ``status_events`` as ``(table, slice)`` pairs, one server
        batch at a time:

        0. the ids of the messages with a PENDING history row timed in the window (one query;
           the platform never writes one, so usually none);
        1. messages created or updated in the window, with file sizes (when the files
           collection has them) and their derived initial PENDING unless step 0 found one;
        2. history rows timed in the window, channel and conversation filled from the step-1
           messages; a message of theirs outside step 1 (its times fall outside the window) is
           read by id and added once, with its derived PENDING.

        What is kept across batches is a few columns of ids (message id, channel, conversation
        of the window's messages, as Arrow arrays: about 60 bytes a message, against some 3 KB a
        message when the tables are held), so memory grows far slower than the window; the rows
        go by. ``limit`` caps each query, as ``max_rows`` does. Lookups by id are recorded as one
        query per purpose (the ids themselves would make the record as big as the window).
        """
        cap = self._cap(limit)
        f = self._paths
        times = time_range(f("status_history", "timestamp"), window.start, window.end)
        pending = self._pending(times, window, cap)
        inside = {"$or": time_range(f("messages", "created_at"), window.start, window.end)["$or"]
                  + time_range(f("messages", "updated_at"), window.start, window.end)["$or"]}
        seen: list[pa.Table] = []
        for parts, cut in self._chunks("messages", "messages in window", inside, cap=cap):
            frame = self._frame("messages", parts)
            frame = _keep(frame, _within(frame["created_at"], window) | _within(frame["updated_at"], window))
            if cut:
                self.warnings.append(mark_truncated(frame, cap, "messages in window"))
            frame = self._sized(frame)
            seen.append(_known(frame))
            yield "messages", frame
            yield "status_events", with_derived_pending(schema.empty("status_events"), frame,
                                                        _among(frame["message_id"], pending))
        known = pa.concat_tables(seen).combine_chunks() if seen else _KNOWN_SCHEMA.empty_table()
        del seen
        others = _KNOWN_SCHEMA.empty_table()  # the messages read by id, outside the window
        for parts, cut in self._chunks("status_history", "status events in window", times, cap=cap):
            read = self._frame("status_history", parts)
            read = _keep(read, _within(read["timestamp"], window))
            if cut:
                self.warnings.append(mark_truncated(read, cap, "status events in window"))
            ids = pa.array(read["message_id"].dropna().unique(), pa.string())
            mine = [_rows_of(known, ids), _rows_of(others, ids)]
            strangers = ids.filter(pc.invert(pc.is_in(ids, value_set=pa.concat_arrays(
                [t["message_id"].combine_chunks() for t in mine]))))
            new = schema.empty("messages")
            if len(strangers):
                with self._summarised("messages", "messages by id", len(strangers)):
                    new = self.messages(strangers.to_pylist())
                new = new[~(_within(new["created_at"], window) | _within(new["updated_at"], window))]
                new = new.drop_duplicates("message_id").reset_index(drop=True)
                if len(new):
                    others = pa.concat_tables([others, _known(new)])
                    yield "messages", self._sized(new)
            fill = joined("messages", [schema.conform("messages", t.to_pandas()) for t in mine] + [new])
            have = set(fill["message_id"]) - set(new["message_id"]) | _among(new["message_id"], pending)
            yield "status_events", with_derived_pending(read, fill, have)
        for (kind, purpose), count in self._lookups.items():
            self._record(purpose, self.profile.mongo.collections[kind], "find",
                         {"$in": f"{count:,} ids of the window's rows, {ID_CHUNK:,} per query"})
        self._lookups.clear()

    @contextlib.contextmanager
    def _summarised(self, kind: str, purpose: str, ids: int) -> Iterator[None]:
        """Queries by id sent inside are recorded as one per purpose, with the number of ids
        (:meth:`window_slices` records them at its end)."""
        mark = len(self.queries)
        yield
        del self.queries[mark:]
        self._lookups[(kind, purpose)] = self._lookups.get((kind, purpose), 0) + ids

    def _frame(self, kind: str, parts: list[pd.DataFrame]) -> pd.DataFrame:
        """One batch of ``kind`` documents as its canonical table (messages, or status events as read)."""
        if kind == "messages":
            frame = joined("messages", [messages_from_documents(p, self.profile) for p in parts if len(p)])
        else:
            empty = schema.empty("messages")
            frame = joined("status_events", [status_events_from_documents(p, empty, self.profile)
                                              for p in parts if len(p)])
        self._check_readable(kind, frame, sum(len(p) for p in parts))
        return frame

    def _pending(self, times: dict, window: Window, cap: int) -> pa.Array:
        """The ids of the messages with a PENDING history row timed in ``window`` (``times``: its filter)."""
        flt = all_of(self._status_filter("PENDING", "status_history", "new_status"), times)
        found = [pa.array([], pa.string())]
        for parts, _cut in self._chunks("status_history", "PENDING rows in window", flt, cap=cap):
            rows = self._frame("status_history", parts)
            rows = rows.loc[_within(rows["timestamp"], window) & rows["new_status"].eq("PENDING"), "message_id"]
            found.append(pa.array(rows.dropna().unique(), pa.string()))
        return pc.unique(pa.concat_arrays(found))

    def _sized(self, messages: pd.DataFrame) -> pd.DataFrame:
        """``messages`` with file sizes from the files collection; as they are when it cannot be
        read (files expire after 24 h: their absence must not cost the messages), noted once."""
        try:
            with self._summarised("files", "files", int(messages["file_id"].notna().sum())):
                return self.with_file_sizes(messages)
        except SourceError as exc:
            note = f"file sizes not read: {exc}"
            if note not in self.warnings:
                self.warnings.append(note)
            return messages

    def files(self, message_ids: Sequence[str] | None = None, file_ids: Sequence[str] | None = None,
              *, limit: int | None = None) -> pd.DataFrame:
        """Files-collection rows of these messages or file ids: file_id, message_id, filename,
        file_size (bytes), mime_type, source_ref. Files vanish 24 h after upload (TTL)."""
        mids, fids = literal_ids(message_ids or []), literal_ids(file_ids or [], "file id")
        cap = self._cap(limit)
        frames = []
        for key, ids in (("message_id", mids), ("file_id", fids)):
            for i in range(0, len(ids), ID_CHUNK):
                flt = any_path_in(self._paths("files", key), ids[i:i + ID_CHUNK])
                parts, truncated = self._read("files", "files", flt, cap=cap)
                frames += [files_from_documents(p, self.profile) for p in parts if len(p)]
        frame = (pd.concat(frames, ignore_index=True).drop_duplicates("source_ref").reset_index(drop=True)
                 if frames else files_from_documents([], self.profile))
        return _capped(frame, cap, "files", self.warnings)

    def file_checks(self, message_ids: Sequence[str]) -> pd.DataFrame:
        """Messages' text and attached files against the platform limits (runbook R3.2).

        One row per message and attached file (a message without a file: one row with a
        null file). A file belongs to a message when its document names the message or the
        message names the file. ``file_missing`` is True when the message names a file the
        files collection no longer has (TTL expiry after 24 h, or never uploaded). Limit
        columns as :func:`check_platform_limits`.
        """
        messages = self.messages(message_ids)
        named = messages.dropna(subset=["file_id"])
        found = self.files(message_ids=messages["message_id"].tolist(), file_ids=named["file_id"].tolist())
        owner = named.drop_duplicates("file_id").set_index("file_id")["message_id"]
        found["message_id"] = found["message_id"].fillna(found["file_id"].map(owner))
        pairs = pd.concat([found[["message_id", "file_id", "source_ref"]],
                           named[["message_id", "file_id"]].assign(source_ref=pd.NA)], ignore_index=True)
        pairs = pairs.sort_values("source_ref", na_position="last").drop_duplicates(["message_id", "file_id"])
        info = found.drop(columns=["message_id"]).drop_duplicates("source_ref")
        pairs = pairs.merge(info, on=["file_id", "source_ref"], how="left")
        base = messages[["message_id", "channel", "content_type", "content_length"]]
        out = base.merge(pairs[pairs["message_id"].isin(base["message_id"])], on="message_id", how="left")
        out = out.astype({"file_id": schema.STR, "filename": schema.STR, "mime_type": schema.STR,
                          "file_size": schema.INT})
        out["file_missing"] = (out["file_id"].notna() & out["source_ref"].isna()).astype(schema.BOOL)
        out = check_platform_limits(out)
        cols = ["message_id", "channel", "content_type", "content_length", "text_limit_chars", "text_over_limit",
                "file_id", "filename", "mime_type", "file_size", "file_limit_bytes", "file_over_limit",
                "file_missing"]
        return out[cols].sort_values(["message_id", "file_id"], kind="stable").reset_index(drop=True)

    def with_file_sizes(self, messages: pd.DataFrame) -> pd.DataFrame:
        """``messages`` with ``file_size`` filled from the files collection (when it exists)."""
        ids = messages["file_id"].dropna().unique().tolist()
        if not ids:
            return messages
        files_ = self.files(file_ids=ids).dropna(subset=["file_id"]).drop_duplicates("file_id")
        out = messages.copy()
        out["file_size"] = out["file_size"].fillna(out["file_id"].map(files_.set_index("file_id")["file_size"])
                                                   ).astype(schema.INT)
        return out

    def queries_by_purpose(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for q in self.queries:
            out.setdefault(q["purpose"], []).append(q)
        return out


# ---- frame helpers ------------------------------------------------------------------------

def _first_line(exc: Exception) -> str:
    return mask_uri(str(exc).split(", Timeout:")[0].splitlines()[0])[:300]


def _first_rows(parts: list[pd.DataFrame], n: int) -> list[pd.DataFrame]:
    """The first ``n`` rows of the frames ``parts``, in order."""
    out = []
    for part in parts:
        if n <= 0:
            break
        out.append(part.iloc[:n].reset_index(drop=True))
        n -= len(out[-1])
    return out


_KNOWN = ("message_id", "channel", "conversation_id")
"""What :meth:`MongoSource.window_slices` keeps of each message of the window, to fill its status events."""
_KNOWN_SCHEMA = pa.schema([(c, pa.string()) for c in _KNOWN])


def _known(messages: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(messages[list(_KNOWN)], preserve_index=False).cast(_KNOWN_SCHEMA)


def _rows_of(known: pa.Table, ids: pa.Array) -> pa.Table:
    """The rows of ``known`` whose message id is one of ``ids``."""
    return known.filter(pc.is_in(known["message_id"], value_set=ids))


def _among(ids: pd.Series, found: pa.Array) -> set[str]:
    """Those of ``ids`` in ``found``."""
    values = pa.array(ids.dropna(), pa.string())
    return set(values.filter(pc.is_in(values, value_set=found)).to_pylist())


# ---- the registry entry ---------------------------------------------------------------------

class Source(EvidenceSource):
    """``messages`` and ``status_events`` of the window (:meth:`MongoSource.window_evidence`),
    file sizes filled from the files collection where it still has them. Options: ``mongo_uri``
    (default FORENSICS_MONGO_URI), ``mongo_database`` (default the profile's), ``mongo_load``
    (arrow or documents) and the query bounds."""

    name = "mongo"
    tables = ("messages", "status_events")
    connection, env = "mongo_uri", "mongo"
    options = (
        Option("mongo_database", "text", None, "database (default: the profile's)"),
        Option("mongo_load", "choice", "arrow", "how documents are loaded", choices=("arrow", "documents")),
        Option("pushdown_messages", "int", PUSHDOWN_MESSAGES, "live report: above this many messages created in the window, "
               "status counts, stuck and FAILED groups are computed on the server (forensics.report.pushdown)",
               minimum=0),
    )

    def stream(self, window: Window) -> Slices:
        opts = self.opts
        with MongoSource.from_options(opts, self.profile) as src:
            self.say(f"mongodb: messages and status history of {window} from {src.masked_uri}, "
                     f"{BATCH_ROWS:,} documents a batch")
            rows = {"messages": 0, "status_events": 0}
            for table, frame in src.window_slices(window):
                rows[table] += len(frame)
                yield table, frame
            self.say(f"mongodb: {rows['messages']:,} messages, {rows['status_events']:,} status events")
            by_purpose = src.queries_by_purpose()
            queries = {
                "messages": [q for p in ("messages in window", "messages by id", "files")
                             for q in by_purpose.get(p, [])],
                "status_events": [q for p in ("status events in window", "PENDING rows in window")
                                  for q in by_purpose.get(p, [])],
            }
            details = {k: v for k, v in src.describe().items() if k not in ("kind", "uri")}
            description = self.describe(
                rows, notes=src.warnings, connection=src.masked_uri, window=window.to_dict(),
                truncated=any(q.get("truncated") for q in src.queries),
                method="messages: created or updated in the window, and those of its status events; "
                       "status_events: history rows timed in the window, the initial PENDING derived "
                       "from the message's creation time; read one server batch at a time", **details)
        return SourceResult(tables={}, description=description, queries=queries)
