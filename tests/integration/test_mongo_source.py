"""The MongoDB source against the real SecantusDB of the local stack, in both profiles' layouts.

Each test seeds a fresh database (``mongo_db``) with documents in the layout of the
profile under test (runbook: ``timestamp``, top-level ``error_message``/``retry_count``;
chat4all-v2: ``created_at``, ``metadata.*``) and checks that what the source reports
equals what was seeded.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import pytest

from forensics import schema
from forensics.config import Limits
from forensics.errors import ParameterError, SourceError, SourceTimeout
from forensics.sources import mongo_arrow
from forensics.sources.mongo import MongoSource
from forensics.sources.registry import collect
from forensics.timeutil import Window

pytestmark = pytest.mark.integration

T0 = dt.datetime(2025, 12, 3, 14, 0, tzinfo=dt.UTC)
WINDOW = Window(pd.Timestamp("2025-12-03T14:00:00Z"), pd.Timestamp("2025-12-03T15:00:00Z"))
REF = pd.Timestamp("2025-12-03T14:30:00Z")
MB = 1024 * 1024


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


class Layout:
    """Documents as the platform variant of ``profile`` writes them."""

    def __init__(self, profile: str) -> None:
        self.profile = profile
        self.v2 = profile == "chat4all-v2"

    def message(self, mid, status, created, *, conv="c1", channel="WHATSAPP", error=None, retries=None,
                updated=None, other_layout=False, **extra) -> dict:
        v2 = self.v2 != other_layout
        doc = {"message_id": mid, "conversation_id": conv, "sender_id": "u1", "recipient_ids": ["+5511999999999"],
               "channel": channel, "content": "hello", "content_type": "TEXT", "status": status,
               ("created_at" if v2 else "timestamp"): created, **extra}
        if updated is not None:
            doc["updated_at"] = updated
        detail = {k: v for k, v in (("error_message", error), ("retry_count", retries)) if v is not None}
        if v2 and detail:
            doc["metadata"] = detail
        else:
            doc.update(detail)
        return doc

    def history(self, mid, old, new, t, *, error=None) -> dict:
        doc = {"message_id": mid, "conversation_id": "c1", "old_status": old, "new_status": new,
               "timestamp": t, "updated_by": "router-service"}
        if self.v2:
            doc["created_at"] = t
        if error:
            doc["error_message"] = error
        return doc


@pytest.fixture(params=["runbook", "chat4all-v2"])
def layout(request) -> Layout:
    return Layout(request.param)


@pytest.fixture
def source(stack_env, mongo_db, layout):
    src = MongoSource(stack_env.mongo_uri, layout.profile, database=mongo_db.name)
    yield src
    src.close()


RATE = "Connector returned error: status=429, body=rate limited"
TOKEN = "Connector returned error: status=401, body=token expired"


def seed_incident(db, lay: Layout) -> None:
    """12 messages, 3 channels; FAILED by two errors in both layouts; stuck PENDING and SENT."""
    m = lay.message
    db.messages.insert_many([
        m("d1", "DELIVERED", at(10), channel="WHATSAPP", updated=at(11), retries=0),
        m("d2", "DELIVERED", at(20), channel="TELEGRAM", updated=at(22), retries=1),
        m("d3", "READ", at(30), channel="INSTAGRAM", conv="c2", updated=at(40)),
        m("f1", "FAILED", at(60), channel="WHATSAPP", error=RATE, retries=3, updated=at(65)),
        m("f2", "FAILED", at(120), channel="WHATSAPP", error=RATE, retries=3, updated=at(125), other_layout=True),
        m("f3", "FAILED", at(180), channel="TELEGRAM", error=RATE, retries=2, updated=at(185)),
        m("f4", "FAILED", at(240), channel="INSTAGRAM", error=TOKEN, retries=0, updated=at(241)),
        m("p1", "PENDING", at(300), channel="WHATSAPP"),  # stuck at REF (30 s)
        m("p2", "PENDING", REF.to_pydatetime() - dt.timedelta(seconds=10), channel="TELEGRAM"),  # recent
        m("s1", "SENT", at(400), channel="WHATSAPP", updated=at(401)),  # never progressed
        m("s2", "SENT", at(500), channel="TELEGRAM", updated=REF.to_pydatetime()),  # just moved
        # created before the window, updated in it: belongs to the window
        m("old", "DELIVERED", at(-7200), channel="WHATSAPP", updated=at(900)),
        # entirely before the window
        m("gone", "DELIVERED", at(-9000), channel="WHATSAPP", updated=at(-8990)),
    ])
    h = lay.history
    db.message_status_history.insert_many([
        h("d1", "PENDING", "DELIVERED", at(11)), h("d2", "PENDING", "DELIVERED", at(22)),
        h("d3", "PENDING", "DELIVERED", at(35)), h("d3", "DELIVERED", "READ", at(40)),
        h("f1", "PENDING", "FAILED", at(65), error=RATE), h("f2", "PENDING", "FAILED", at(125)),
        h("f3", "PENDING", "FAILED", at(185)), h("f4", "PENDING", "FAILED", at(241)),
        h("s1", "PENDING", "SENT", at(401)), h("s2", "PENDING", "SENT", REF.to_pydatetime()),
        h("old", "PENDING", "DELIVERED", at(900)), h("gone", "PENDING", "DELIVERED", at(-8990)),
    ])
    db.conversations.insert_one({"conversation_id": "c1"})
    db.files.insert_one({"file_id": "none", "message_id": "none"})


# ---- messages -------------------------------------------------------------------------------

def test_messages_by_id_in_both_layouts(source, mongo_db, layout):
    seed_incident(mongo_db, layout)
    m = source.messages(["f1", "f2", "d1", "unknown"]).set_index("message_id")
    assert sorted(m.index) == ["d1", "f1", "f2"]
    assert m.loc["f1", "error_message"] == RATE and m.loc["f1", "retry_count"] == 3
    assert m.loc["f1", "error_field"] == ("metadata" if layout.v2 else "top-level")
    assert m.loc["f2", "error_field"] == ("top-level" if layout.v2 else "metadata")  # the other layout
    assert m.loc["d1", "created_at"] == pd.Timestamp(at(10))
    schema.validate("messages", m.reset_index())
    assert source.message("unknown").empty


def test_ids_are_matched_literally(source, mongo_db, layout):
    mongo_db.messages.insert_many([layout.message("$ne", "FAILED", at(1)), layout.message("m1", "SENT", at(2)),
                                   layout.message("{'$ne': null}", "SENT", at(3))])
    assert source.message("$ne")["message_id"].tolist() == ["$ne"]
    assert source.message("{'$ne': null}")["message_id"].tolist() == ["{'$ne': null}"]
    assert source.messages(["$gt", "$exists"]).empty
    sent = len(source.queries)
    for bad in ({"$ne": None}, {"$gt": ""}, ["m1"], 1, None):
        with pytest.raises(ParameterError):
            source.message(bad)
        with pytest.raises(ParameterError):
            source.conversation(bad)
    assert len(source.queries) == sent  # refused before anything reached the server


def test_conversation_in_order_whatever_the_time_storage(source, mongo_db, layout):
    m = layout.message
    mongo_db.messages.insert_many([
        m("c-3", "SENT", "2025-12-03T14:00:03Z"), m("c-1", "SENT", at(1)), m("c-4", "SENT", 1764770404.0),
        m("c-2", "SENT", 1764770402000), m("x", "SENT", at(0), conv="other"),
    ])
    conv = source.conversation("c1")
    assert conv["message_id"].tolist() == ["c-1", "c-2", "c-3", "c-4"]
    assert conv["created_at"].tolist() == [pd.Timestamp(at(s)) for s in (1, 2, 3, 4)]


def test_window_evidence_counts_equal_the_seed(source, mongo_db, layout):
    seed_incident(mongo_db, layout)
    messages, events = source.window_evidence(WINDOW)
    schema.validate("messages", messages)
    schema.validate("status_events", events)
    assert sorted(messages["message_id"]) == sorted(["d1", "d2", "d3", "f1", "f2", "f3", "f4", "p1", "p2", "s1",
                                                     "s2", "old"])
    read = events[~events["derived"]]
    assert len(read) == 11  # every history row but the one before the window
    assert set(events.loc[events["derived"], "message_id"]) == set(messages["message_id"])
    assert events["channel"].notna().all()
    d3 = events[events["message_id"] == "d3"]
    assert d3["new_status"].tolist() == ["PENDING", "DELIVERED", "READ"]
    assert (d3["timestamp"].diff().dropna() == [pd.Timedelta("5s"), pd.Timedelta("5s")]).all()


@pytest.mark.parametrize("arrow", [True, False])
def test_window_slices_stream_in_server_batches_and_gather_to_the_whole_window(stack_env, mongo_db, layout,
                                                                               monkeypatch, arrow):
    """Batches of 2 documents: many slices of each table, none holding more than a batch's
    messages, and together exactly the whole-window read (the "old" message, known only from a
    history row in the window, added once; every derived PENDING where no PENDING row is)."""
    seed_incident(mongo_db, layout)
    # created before the window and updated after it: known only from its history rows in the window
    mongo_db.messages.insert_one(layout.message("late", "DELIVERED", at(-7200), channel="TELEGRAM",
                                                updated=REF.to_pydatetime() + dt.timedelta(hours=2)))
    mongo_db.message_status_history.insert_many([layout.history("late", "PENDING", "SENT", at(600)),
                                                 layout.history("late", "SENT", "DELIVERED", at(700))])
    with MongoSource(stack_env.mongo_uri, layout.profile, database=mongo_db.name, arrow=arrow) as src:
        whole = src.window_evidence(WINDOW)
    assert (whole[0]["message_id"] == "late").sum() == 1
    late = whole[1][whole[1]["message_id"] == "late"]
    assert late["new_status"].tolist() == ["PENDING", "SENT", "DELIVERED"] and late["derived"].tolist()[0]
    assert (late["channel"] == "TELEGRAM").all()
    monkeypatch.setattr(mongo_arrow, "BATCH_ROWS", 2)
    with MongoSource(stack_env.mongo_uri, layout.profile, database=mongo_db.name, arrow=arrow) as src:
        slices = list(src.window_slices(WINDOW))
        queries = src.queries_by_purpose()
    messages = [f for t, f in slices if t == "messages"]
    assert len(messages) >= 6 and max(len(f) for f in messages) <= 2
    streamed = [pd.concat([f for t, f in slices if t == name], ignore_index=True)
                for name in ("messages", "status_events")]
    _same(schema.conform("messages", streamed[0]), whole[0], ["message_id"])
    _same(schema.conform("status_events", streamed[1]), whole[1], ["message_id", "timestamp", "derived"])
    # lookups by id are recorded once each, by count: the record does not grow with the window
    assert all(len(queries.get(p, [])) <= 1 for p in ("messages by id", "files"))
    assert len(queries["messages in window"]) == len(queries["status events in window"]) == 1


def test_window_messages_filtered_by_channel_and_status(source, mongo_db, layout):
    seed_incident(mongo_db, layout)
    wa_failed = source.window_messages(WINDOW, channel="WHATSAPP", status="FAILED")
    assert sorted(wa_failed["message_id"]) == ["f1", "f2"]
    hist = source.window_history(WINDOW, channel="whatsapp", status="FAILED")
    assert sorted(hist["new_status"]) == ["FAILED", "FAILED", "PENDING", "PENDING"]


def test_message_history_derives_the_initial_pending(source, mongo_db, layout):
    seed_incident(mongo_db, layout)
    h = source.message_history("f1")
    assert h["new_status"].tolist() == ["PENDING", "FAILED"]
    assert h["derived"].tolist() == [True, False]
    assert h["error_message"].tolist()[1] == RATE and h["channel"].eq("WHATSAPP").all()
    assert source.conversation_history("c2")["new_status"].tolist() == ["PENDING", "DELIVERED", "READ"]


# ---- server-side questions ---------------------------------------------------------------------

def test_stuck_messages(source, mongo_db, layout):
    seed_incident(mongo_db, layout)
    assert source.stuck_messages("PENDING", "30s", REF)["message_id"].tolist() == ["p1"]
    assert source.stuck_messages("PENDING", "5s", REF)["message_id"].tolist() == ["p1", "p2"]
    stuck_sent = source.stuck_messages("SENT", "60s", REF)
    assert stuck_sent["message_id"].tolist() == ["s1"]
    assert stuck_sent.attrs["cutoff"] == "2025-12-03T14:29:00.000Z"
    assert source.stuck_messages(["SENT", "PENDING"], "30s", REF, channel="TELEGRAM").empty
    assert source.stuck_messages("DELIVERED", "1h", REF, window=WINDOW)["message_id"].tolist() == []


def test_stuck_messages_and_the_window_counted_on_the_server(source, mongo_db, layout):
    seed_incident(mongo_db, layout)
    stuck = source.stuck_counts(WINDOW, {"PENDING": "30s", "SENT": "60s"}, REF)
    assert stuck[["status", "channel", "count"]].values.tolist() == [["PENDING", "WHATSAPP", 1], ["SENT", "WHATSAPP", 1]]
    assert stuck["oldest"].tolist() == [pd.Timestamp(at(300)), pd.Timestamp(at(400))]
    assert source.stuck_counts(WINDOW, {"PENDING": "5s"}, REF)["count"].sum() == 2  # p2 too
    assert source.stuck_messages("PENDING", "5s", REF, limit=1)["message_id"].tolist() == ["p1"]  # oldest first
    assert source.count_messages(WINDOW, at_most=100) == 11  # created in the window
    assert source.count_messages(WINDOW, at_most=4) == 5  # stops one past at_most


def test_failed_grouped_by_error_across_both_layouts(source, mongo_db, layout):
    seed_incident(mongo_db, layout)
    groups = source.failed_by_error(WINDOW)
    assert groups["error_message"].tolist() == [RATE, TOKEN]
    assert groups["count"].tolist() == [3, 1]
    assert groups["channels"].tolist() == ["TELEGRAM,WHATSAPP", "INSTAGRAM"]
    assert groups.loc[0, "error_fields"] == "error_message,metadata.error_message"
    assert groups.loc[0, "first_seen"] == pd.Timestamp(at(60)) and groups.loc[0, "last_seen"] == pd.Timestamp(at(180))
    only_wa = source.failed_by_error(WINDOW, channel="WHATSAPP")
    assert only_wa["count"].tolist() == [2]


def test_retry_counts(source, mongo_db, layout):
    seed_incident(mongo_db, layout)
    r = source.retry_counts(WINDOW, status="FAILED").set_index(["channel", "retry_count"])["messages"]
    assert r.to_dict() == {("INSTAGRAM", 0): 1, ("TELEGRAM", 2): 1, ("WHATSAPP", 3): 2}
    everything = source.retry_counts()
    assert everything["messages"].sum() == 13


def test_status_counts_bucketed_on_the_server(source, mongo_db, layout):
    seed_incident(mongo_db, layout)
    counts = source.status_counts(WINDOW, bucket="5min")
    assert counts["count"].sum() == 11  # created in the window ("old" was created before it)
    first = counts[counts["bucket_start"] == pd.Timestamp("2025-12-03T14:00:00Z")].set_index("status")["count"]
    assert first.to_dict() == {"DELIVERED": 2, "FAILED": 4, "READ": 1}
    transitions = source.status_counts(WINDOW, bucket="1h", of="transitions").set_index("status")["count"]
    assert transitions.to_dict() == {"DELIVERED": 4, "FAILED": 4, "READ": 1, "SENT": 2}


def test_file_checks_against_platform_limits(source, mongo_db, layout):
    m = layout.message
    size_field = "file_size" if layout.v2 else "size_bytes"
    mongo_db.messages.insert_many([
        m("img", "FAILED", at(1), channel="INSTAGRAM", content_type="IMAGE", file_id="f-img"),
        m("doc", "DELIVERED", at(2), channel="WHATSAPP", content_type="FILE", file_id="f-doc"),
        m("long", "FAILED", at(3), channel="INSTAGRAM", content="x" * 1001),
        m("expired", "FAILED", at(4), channel="TELEGRAM", content_type="FILE", file_id="f-gone"),
    ])
    mongo_db.files.insert_many([
        {"file_id": "f-img", "message_id": "img", "filename": "a.jpg", size_field: 9 * MB, "mime_type": "image/jpeg"},
        {"file_id": "f-doc", "message_id": "doc", "filename": "b.pdf", size_field: MB, "mime_type": "application/pdf"},
    ])
    checks = source.file_checks(["img", "doc", "long", "expired"])
    assert checks["message_id"].tolist() == ["doc", "expired", "img", "long"]
    assert checks["file_over_limit"].tolist() == [False, pd.NA, True, pd.NA]
    assert checks["file_size"].tolist() == [MB, pd.NA, 9 * MB, pd.NA]
    assert checks["file_limit_bytes"].tolist() == [100 * MB, 2048 * MB, 8 * MB, pd.NA]
    assert checks["text_over_limit"].tolist() == [False, False, False, True]
    assert checks["file_missing"].tolist() == [False, True, False, False]
    assert checks["file_id"].tolist() == ["f-doc", "f-gone", "f-img", pd.NA]
    filled = source.with_file_sizes(source.messages(["img", "doc"])).set_index("message_id")["file_size"]
    assert filled.to_dict() == {"img": 9 * MB, "doc": MB}


def test_a_capped_result_is_marked(source, mongo_db, layout):
    seed_incident(mongo_db, layout)
    capped = source.window_messages(WINDOW, limit=3)
    assert len(capped) == 3 and capped.attrs["truncated"] is True and capped.attrs["truncated_at"] == 3
    assert any("truncated at 3" in w for w in capped.attrs["warnings"])
    assert any("truncated at 3" in w for w in source.warnings)
    groups = source.failed_by_error(WINDOW, limit=1)
    assert len(groups) == 1 and groups.attrs["truncated_at"] == 1
    assert source.queries[-1]["truncated"] is True


# ---- the fast path equals the document path -----------------------------------------------------

def odd_documents(lay: Layout, n_plain: int) -> tuple[list[dict], list[dict]]:
    """Plain documents first, then odd ones (strings for dates, epoch floats and ms, missing
    fields, both error layouts, a state field, retry counts as text)."""
    m = lay.message
    plain = [m(f"m{i:04d}", "DELIVERED", at(i), retries=i % 3) for i in range(n_plain)]
    odd = [
        m("iso", "FAILED", "2025-12-03T14:10:00.250Z", error=RATE, retries=2),
        m("iso-space", "FAILED", "2025-12-03 14:10:01", error=TOKEN, other_layout=True),
        m("epoch-s", "SENT", 1764771002.5),
        m("epoch-ms", "SENT", 1764771003000, updated="2025-12-03T14:10:04Z"),
        {"message_id": "bare", "timestamp": at(5), "created_at": at(5)},
        {"message_id": "state", "state": "pending", "created_at": at(6), "timestamp": at(6),
         "error_message": "top", "metadata": {"error_message": "nested", "retry_count": 4}},
        {"message_id": "odd-retry", "status": "FAILED", "created_at": at(7), "timestamp": at(7), "retry_count": "2"},
        {"message_id": "meta-text", "status": "FAILED", "created_at": at(8), "timestamp": at(8), "metadata": "n/a"},
        {"message_id": "no-time", "status": "PENDING"},
    ]
    h = lay.history
    history = [h(f"m{i:04d}", "PENDING", "DELIVERED", at(i + 1)) for i in range(n_plain)] + [
        h("iso", "PENDING", "FAILED", "2025-12-03T14:10:02Z", error=RATE),
        h("epoch-s", "PENDING", "SENT", 1764771004.25),
        h("epoch-ms", "PENDING", "SENT", 1764771004000),
        {"message_id": "state", "status": "FAILED", "timestamp": at(9)},
        {"message_id": "bad-time", "new_status": "FAILED", "timestamp": "not a time"},
    ]
    return plain + odd, history


def _same(a: pd.DataFrame, b: pd.DataFrame, key: list[str]) -> None:
    a = a.sort_values(key, kind="stable").reset_index(drop=True)
    b = b.sort_values(key, kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("sample_size", [256, 3])
def test_arrow_and_documents_give_equal_frames_on_odd_documents(stack_env, mongo_db, layout, monkeypatch,
                                                                sample_size):
    # 256: the odd documents are in the sample (mixed paths read per field);
    # 3: they are not (rows with an unreadable key field are re-read as documents).
    monkeypatch.setattr(mongo_arrow, "SAMPLE_SIZE", sample_size)
    messages, history = odd_documents(layout, 20)
    mongo_db.messages.insert_many(messages)
    mongo_db.message_status_history.insert_many(history)
    frames = {}
    for arrow in (True, False):
        with MongoSource(stack_env.mongo_uri, layout.profile, database=mongo_db.name, arrow=arrow) as src:
            msgs, events = src.window_evidence(WINDOW)
            everything = src.messages([d["message_id"] for d in messages])
            frames[arrow] = (msgs, events, everything)
    assert frames[False][2].set_index("message_id").loc["odd-retry", "retry_count"] == 2
    keys = (["message_id"], ["message_id", "timestamp", "new_status"], ["message_id"])
    for fast, slow, key in zip(frames[True], frames[False], keys, strict=True):
        if sample_size == 3 and "retry_count" in slow:
            # The documented limit of the fast path: a non-key field holding a BSON type the
            # sample did not show ("2" where ints were sampled) reads as null.
            odd = slow["message_id"] == "odd-retry"
            assert fast.loc[fast["message_id"] == "odd-retry", "retry_count"].isna().all()
            slow.loc[odd, "retry_count"] = pd.NA
        _same(fast, slow, key)
    everything = frames[True][2].set_index("message_id")
    assert everything.loc["iso", "created_at"] == pd.Timestamp("2025-12-03T14:10:00.250Z")
    assert everything.loc["epoch-s", "created_at"] == pd.Timestamp("2025-12-03T14:10:02.500Z")
    assert everything.loc["epoch-ms", "updated_at"] == pd.Timestamp("2025-12-03T14:10:04Z")
    assert everything.loc["state", "status"] == "PENDING"
    assert sample_size == 3 or everything.loc["odd-retry", "retry_count"] == 2
    assert pd.isna(everything.loc["no-time", "created_at"])
    expected_error = "nested" if layout.v2 else "top"
    assert everything.loc["state", "error_message"] == expected_error
    assert "bad-time" not in set(frames[True][1]["message_id"])


# ---- errors -------------------------------------------------------------------------------------

def test_a_missing_collection_names_the_profile(stack_env, mongo_db, layout):
    mongo_db.messages.insert_one(layout.message("m", "SENT", at(1)))
    with MongoSource(stack_env.mongo_uri, layout.profile, database=mongo_db.name) as src:
        with pytest.raises(SourceError) as err:
            src.message_history("m")
    assert "message_status_history not found" in str(err.value) and "mongo.collections" in err.value.hint


def test_a_query_over_max_time_ms_is_a_source_error(stack_env, mongo_db, layout):
    mongo_db.messages.insert_many([layout.message(f"m{i}", "FAILED", at(i), error=RATE) for i in range(500)])
    with MongoSource(stack_env.mongo_uri, layout.profile, Limits(timeout_s=0.001), database=mongo_db.name) as src:
        with pytest.raises(SourceTimeout) as err:
            src.failed_by_error()
        with pytest.raises(SourceTimeout):
            src.count_messages(WINDOW, at_most=10)
    assert "exceeded maxTimeMS=1" in str(err.value) and "index" in err.value.hint


def test_fields_of_the_wrong_type_are_a_source_error(stack_env, mongo_db, layout):
    mongo_db.messages.insert_many([{"message_id": {"oid": i}, "status": "SENT", "timestamp": at(i),
                                    "created_at": at(i)} for i in range(12)])
    with MongoSource(stack_env.mongo_uri, layout.profile, database=mongo_db.name) as src:
        with pytest.raises(SourceError) as err:
            src.window_messages(WINDOW)
    assert "gave no readable row" in str(err.value) and "field paths" in err.value.hint


def _with_password(uri: str, password: str, skip_or_fail) -> str:
    parts = urlsplit(uri)
    if not parts.username:
        skip_or_fail("the stack's MongoDB runs without authentication (scripts/services runs it with a password)")
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def test_authentication_failure_is_a_source_error_with_the_uri_masked(stack_env, mongo_db, skip_or_fail):
    uri = _with_password(stack_env.mongo_uri, "wrong-pw-123", skip_or_fail)
    with MongoSource(uri, database=mongo_db.name, limits=Limits(connect_timeout_s=3)) as src:
        with pytest.raises(SourceError) as err:
            src.message("m1")
    assert "authentication failed" in str(err.value) and "wrong-pw-123" not in str(err.value)
    assert "authSource" in err.value.hint


# ---- collect, bundles and the message command ----------------------------------------------------

def test_collect_registry_entry(stack_env, mongo_db, layout, tmp_path):
    seed_incident(mongo_db, layout)
    options = {"mongo_uri": stack_env.mongo_uri, "mongo_database": mongo_db.name}
    ev, queries, custody = collect(["mongo"], WINDOW, layout.profile, options)
    assert ev.missing == {} and len(ev.table("messages")) == 12
    assert ev.sources["mongo"]["status"] == "ok" and ev.sources["mongo"]["database"] == mongo_db.name
    window_query = queries["messages"][0]
    assert window_query["collection"] == "messages" and window_query["maxTimeMS"] == 30_000
    assert {"$gte": {"$date": "2025-12-03T14:00:00Z"}, "$lt": {"$date": "2025-12-03T15:00:00Z"}} in [
        next(iter(c.values())) for c in window_query["filter"]["$or"]]
    password = urlsplit(stack_env.mongo_uri).password
    if password:
        assert password not in str(ev.sources) and password not in str(queries)


def test_collect_reports_an_unreachable_server_as_missing(mongo_db):
    options = {"mongo_uri": "mongodb://u:pw-xyz@127.0.0.1:9/?directConnection=true", "connect_timeout_s": 0.5}
    ev, _, custody = collect(["mongo"], WINDOW, "runbook", options)
    assert "cannot reach" in ev.missing["mongo"] and "pw-xyz" not in ev.missing["mongo"]


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "forensics.cli", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def test_message_command_live_and_from_a_bundle(stack_env, mongo_db, layout, tmp_path):
    from forensics.bundle import write_bundle

    seed_incident(mongo_db, layout)
    env = {"FORENSICS_MONGO_URI": stack_env.mongo_uri}
    r = _cli("message", "f1", "--database", mongo_db.name, "--profile", layout.profile, env=env)
    assert r.returncode == 0, r.stderr
    assert "status history: 2 transition(s), PENDING -> FAILED in 5.000 s" in r.stdout
    assert RATE in r.stdout and "retries 3" in r.stdout
    missing = _cli("message", "nope", "--database", mongo_db.name, "--profile", layout.profile, env=env)
    assert missing.returncode == 1 and "not found" in missing.stderr

    ev, queries, custody = collect(["mongo"], WINDOW, layout.profile,
                                   {"mongo_uri": stack_env.mongo_uri, "mongo_database": mongo_db.name})
    ev.put("identities", schema.conform("identities", {
        "user_id": ["u1"], "platform": ["WHATSAPP"], "platform_user_id": ["+5511999999999"], "verified": [False],
        "format_valid": [True], "source": ["postgres"]}))
    ev.put("locks", schema.conform("locks", {
        "key": ["router:processed:s1"], "kind": ["processed"], "message_id": ["s1"], "ttl_s": [600.0],
        "sampled_at": [pd.Timestamp(REF)], "source": ["redis"]}))
    bundle = write_bundle(ev, tmp_path / "b", queries=queries, custody=custody)
    r = _cli("message", "s1", "--bundle", str(bundle))
    assert r.returncode == 0, r.stderr
    assert "PENDING -> SENT in 1.000 s" in r.stdout and "still SENT" in r.stdout
    assert "recipient +5511999999999 on WHATSAPP: user u1, verified False" in r.stdout
    assert "redis processed: router:processed:s1 ttl 600 s  (a manual replay is dropped while it exists)" in r.stdout
    assert _cli("message", "nope", "--bundle", str(bundle)).returncode == 1


# ---- round trip: simulated incident -> rendered documents -> the source -> the same tables -------

def test_a_simulated_incident_reads_back_as_simulated(stack_env, mongo_db, layout):
    from forensics.simulate import simulate
    from forensics.simulate.render import mongo_documents

    ev = simulate("whatsapp-rate-limit", messages=1500, seed=3, profile=layout.profile)
    for collection, docs in mongo_documents(ev, layout.profile).items():
        if docs:
            mongo_db[collection].insert_many(docs)
    with MongoSource(stack_env.mongo_uri, layout.profile, database=mongo_db.name) as src:
        messages, events = src.window_evidence(ev.window)
        messages = src.with_file_sizes(messages)
        groups = src.failed_by_error(ev.window)
        counts = src.status_counts(ev.window, bucket="10min")
    sim_m, sim_e = ev.table("messages"), ev.table("status_events")
    cols = ["message_id", "conversation_id", "status", "channel", "content_type", "content_length",
            "recipient_id", "error_message", "error_field", "retry_count", "created_at", "updated_at", "file_id",
            "file_size", "platform_message_id"]
    _same(messages[cols], sim_m[cols], ["message_id"])
    ecols = ["message_id", "timestamp", "new_status", "old_status", "derived", "channel", "updated_by",
             "error_message", "conversation_id"]
    _same(events[ecols], sim_e[ecols], ["message_id", "timestamp", "new_status"])
    failed = sim_m[sim_m["status"] == "FAILED"]
    expected = failed.groupby("error_message").size()
    assert groups.set_index("error_message")["count"].to_dict() == expected.to_dict()
    assert counts["count"].sum() == len(sim_m)
    by_status = counts.groupby("status")["count"].sum()
    assert by_status.to_dict() == sim_m["status"].value_counts().to_dict()
