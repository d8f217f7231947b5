"""MongoDB documents (in any Chat4All variant's layout) into the canonical tables.

The same code serves the live MongoDB source (documents or Arrow tables from the server)
and files of exported documents. Input is a *flat* frame whose columns are dotted field
paths (``metadata.error_message``), as ``pandas.json_normalize`` or an Arrow
``flatten()`` produce; each canonical field is taken from the first path of the profile
that has a value. This is what makes the loaders tolerant:

- ``retry_count``/``error_message`` top-level or under ``metadata`` (``error_field`` says which);
- ``state`` as well as ``status``; statuses in any case;
- times as BSON dates, ISO strings, epoch seconds or epoch milliseconds;
- missing fields become nulls, wrong types become nulls, never a crash.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from forensics import schema
from forensics.profiles import Profile, load_profile
from forensics.timeutil import coerce_timestamps

KNOWN_STATUSES = set(schema.STATUSES)


def flatten_documents(docs: Iterable[Mapping] | pd.DataFrame) -> pd.DataFrame:
    """Documents -> a frame with one column per dotted path (lists kept as values)."""
    if isinstance(docs, pd.DataFrame):
        return docs
    docs = list(docs)
    if not docs:
        return pd.DataFrame()
    return pd.json_normalize(docs, sep=".")


def _coalesce(flat: pd.DataFrame, paths: list[str]) -> tuple[pd.Series, pd.Series]:
    """First non-null value across ``paths``; also which path supplied it (or None).

    Columns of one typed dtype (an Arrow load gives str, Int64, datetime64 columns) are
    coalesced without leaving their dtype, so the conversions below stay vectorised;
    anything else (dict documents, mixed types) goes through object values.
    """
    n = len(flat)
    present = [p for p in paths if p in flat.columns]
    cols = [flat[p] for p in present]
    if cols and all(c.dtype != object and c.dtype == cols[0].dtype for c in cols):
        value = cols[0]
        origin = np.where(value.notna().to_numpy(), present[0], None).astype(object)
        for path, col in zip(present[1:], cols[1:], strict=True):
            take = value.isna() & col.notna()
            if take.any():
                value = value.where(~take, col)
                origin[take.to_numpy()] = path
        return value, pd.Series(origin, index=flat.index, dtype=object)
    value = pd.Series([None] * n, index=flat.index, dtype=object)
    origin = pd.Series([None] * n, index=flat.index, dtype=object)
    for path, col in zip(present, cols, strict=True):
        take = value.isna() & col.notna()
        if take.any():
            value[take] = col[take].astype(object)
            origin[take] = path
    return value, origin


def _text(values: pd.Series) -> pd.Series:
    """Anything to nullable strings; lists take their first element; dicts/bytes become text."""
    if isinstance(values.dtype, pd.StringDtype):
        return values.astype(schema.STR)

    def one(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return None
        if isinstance(v, list | tuple | np.ndarray):
            return one(v[0]) if len(v) else None
        if isinstance(v, bytes):
            return v.decode("utf-8", errors="replace")
        return str(v)

    return values.map(one).astype(schema.STR)


def _int(values: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        as_float = values.astype("float64")
        return as_float.where(np.isfinite(as_float)).round().astype(schema.INT)
    return pd.to_numeric(values.map(lambda v: v if isinstance(v, int | float | str) else None),
                         errors="coerce").round().astype(schema.INT)


def _status(values: pd.Series) -> pd.Series:
    s = _text(values).str.strip().str.upper()
    return s.where(s.isin(KNOWN_STATUSES) | s.isna(), "UNKNOWN")


def _length(values: pd.Series) -> pd.Series:
    return values.map(lambda v: len(v) if isinstance(v, list | tuple | np.ndarray) else None).astype(schema.INT)


def messages_from_documents(docs, profile: Profile | str | None = None, *, source_object: str | None = None
                            ) -> pd.DataFrame:
    """Message documents (dicts or a flat frame of dotted paths) -> the ``messages`` table."""
    profile = load_profile(profile)
    flat = flatten_documents(docs)
    if flat.empty:
        return schema.empty("messages")
    f = profile.mongo.message_fields

    def get(name):
        return _coalesce(flat, f.get(name, [name]))

    error, error_origin = get("error_message")
    recipients, _ = _coalesce(flat, f.get("recipient_ids", ["recipient_ids"]))
    content = _text(get("content")[0])
    out = {
        "message_id": _text(get("message_id")[0]),
        "conversation_id": _text(get("conversation_id")[0]),
        "sender_id": _text(get("sender_id")[0]),
        "recipient_id": _text(recipients),
        "recipient_count": _length(recipients),
        "channel": _text(get("channel")[0]).str.upper(),
        "content_type": _text(get("content_type")[0]).str.upper(),
        "content": content,
        "content_length": content.str.len().astype(schema.INT),
        "file_id": _text(get("file_id")[0]),
        "status": _status(get("status")[0]),
        "created_at": coerce_timestamps(get("created_at")[0]),
        "updated_at": coerce_timestamps(get("updated_at")[0]),
        "retry_count": _int(get("retry_count")[0]),
        "error_message": _text(error),
        "error_field": error_origin.map(
            {p: "metadata" if p.startswith("metadata.") else "top-level" for p in f.get("error_message", ["error_message"])}
        ).astype(schema.STR),
        "platform_message_id": _text(get("platform_message_id")[0]),
        "source": "mongodb",
        "source_object": source_object or profile.mongo.collections["messages"],
    }
    ids = flat["_id"] if "_id" in flat.columns else out["message_id"]
    out["source_ref"] = _text(ids)
    frame = schema.conform("messages", out)
    return frame[frame["message_id"].notna()].reset_index(drop=True)


def status_events_from_documents(history, messages: pd.DataFrame, profile: Profile | str | None = None, *,
                                 source_object: str | None = None) -> pd.DataFrame:
    """History documents + the messages table -> the ``status_events`` table.

    The deployed platform writes no history row for the initial PENDING; for every
    message without a PENDING row one is derived from ``messages.created_at``
    (``derived=True``, source_object = the messages collection).
    """
    profile = load_profile(profile)
    flat = flatten_documents(history)
    frames = []
    if not flat.empty:
        f = profile.mongo.history_fields

        def get(name):
            return _coalesce(flat, f.get(name, [name]))[0]

        ids = flat["_id"] if "_id" in flat.columns else get("message_id")
        read = schema.conform("status_events", {
            "message_id": _text(get("message_id")),
            "conversation_id": _text(get("conversation_id")),
            "old_status": _status(get("old_status")),
            "new_status": _status(get("new_status")),
            "timestamp": coerce_timestamps(get("timestamp")),
            "updated_by": _text(get("updated_by")),
            "error_message": _text(get("error_message")),
            "derived": False,
            "source": "mongodb",
            "source_object": source_object or profile.mongo.collections["status_history"],
            "source_ref": _text(ids),
        })
        # A transition we cannot place in time or attribute is not a transition.
        read = read[read["message_id"].notna() & read["new_status"].notna() & read["timestamp"].notna()]
        frames.append(read)
    history_frame = frames[0] if frames else schema.empty("status_events")
    return with_derived_pending(history_frame, messages)


def with_derived_pending(events: pd.DataFrame, messages: pd.DataFrame, pending: Iterable[str] | None = None
                         ) -> pd.DataFrame:
    """Add the initial PENDING for messages that have no PENDING row; fill channel from messages.
    ``pending``: the ids that have their PENDING already (default: those with a PENDING row in
    ``events``; a caller reading a window in slices knows more than one slice shows)."""
    have_pending = (events.loc[events["new_status"] == "PENDING", "message_id"].unique() if pending is None
                    else list(pending))
    need = messages[~messages["message_id"].isin(have_pending) & messages["created_at"].notna()].reset_index(drop=True)
    derived = schema.conform("status_events", {
        "message_id": need["message_id"],
        "conversation_id": need["conversation_id"],
        "channel": need["channel"],
        "old_status": pd.Series([None] * len(need), dtype=schema.STR),
        "new_status": "PENDING",
        "timestamp": need["created_at"],
        "updated_by": pd.Series([None] * len(need), dtype=schema.STR),
        "error_message": pd.Series([None] * len(need), dtype=schema.STR),
        "derived": True,
        "source": "mongodb",
        "source_object": need["source_object"],
        "source_ref": need["source_ref"],
    })
    combined = pd.concat([derived, events], ignore_index=True) if len(events) else derived
    channel = combined["message_id"].map(messages.set_index("message_id")["channel"]
                                         if messages["message_id"].is_unique else
                                         messages.drop_duplicates("message_id").set_index("message_id")["channel"])
    combined["channel"] = combined["channel"].fillna(channel.astype(schema.STR))
    conv = combined["message_id"].map(messages.drop_duplicates("message_id").set_index("message_id")["conversation_id"])
    combined["conversation_id"] = combined["conversation_id"].fillna(conv.astype(schema.STR))
    combined = combined.sort_values(["message_id", "timestamp", "derived"], ascending=[True, True, False],
                                    kind="stable").reset_index(drop=True)
    return schema.conform("status_events", combined)


def files_from_documents(docs, profile: Profile | str | None = None) -> pd.DataFrame:
    """File documents (dicts or a flat frame) -> file_id, message_id, filename, file_size (bytes),
    mime_type, source_ref. Not an evidence table of its own: it fills ``messages.file_size``
    and the platform-limit checks."""
    profile = load_profile(profile)
    flat = flatten_documents(docs)
    f = profile.mongo.file_fields

    def get(name):
        return _coalesce(flat, f.get(name, [name]))[0]

    if flat.empty:
        return pd.DataFrame({c: pd.Series(dtype=schema.INT if c == "file_size" else schema.STR)
                             for c in ("file_id", "message_id", "filename", "file_size", "mime_type", "source_ref")})
    return pd.DataFrame({
        "file_id": _text(get("file_id")),
        "message_id": _text(get("message_id")),
        "filename": _text(get("filename")),
        "file_size": _int(get("file_size")),
        "mime_type": _text(get("mime_type")),
        "source_ref": _text(flat["_id"] if "_id" in flat.columns else get("file_id")),
    }).reset_index(drop=True)
