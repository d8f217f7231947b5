"""The MongoDB source's pure parts: literal parameters, query building, Arrow typing, limits, truncation."""

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from bson import ObjectId
from pymongo.read_preferences import Secondary

from forensics import schema
from forensics.catalog import check_platform_limits
from forensics.config import Limits
from forensics.errors import ParameterError, SourceError
from forensics.sources import mongo, mongo_arrow, mongo_query
from forensics.sources.mongo import MongoSource
from forensics.sources.mongo_arrow import arrow_kinds, arrow_schema, arrow_to_flat
from forensics.sources.mongo_query import (
    any_path_in,
    as_date,
    date_bucket,
    literal_id,
    literal_ids,
    time_range,
    times_before,
)

MB = 1024 * 1024
T0 = pd.Timestamp("2025-12-03T14:00:00Z")
T1 = pd.Timestamp("2025-12-03T15:00:00Z")
CLOSED_PORT = "mongodb://forensics:s3cret-pw@127.0.0.1:9/?directConnection=true&authSource=admin"


# ---- literal ids: nothing a caller passes becomes an operator -------------------------------

@pytest.mark.parametrize("value", [{"$ne": None}, {"$gt": ""}, ["m1"], ("m1",), 5, 5.0, None, b"m1", True])
def test_an_id_that_is_not_a_string_is_refused(value):
    with pytest.raises(ParameterError, match="must be a string"):
        literal_id(value)


def test_an_empty_id_is_refused():
    with pytest.raises(ParameterError, match="empty"):
        literal_id("")


@pytest.mark.parametrize("value", ["$ne", "$where", "{'$ne': null}", "a.b", "/.*/", "m1\x00"])
def test_strings_that_look_like_operators_stay_strings(value):
    assert literal_id(value) == value
    flt = any_path_in(["message_id"], [value])
    assert flt == {"message_id": {"$in": [value]}}  # a $in operand is a value in the query language


@pytest.mark.parametrize("values", ["m1", b"m1", {"$in": ["m1"]}, 5, None])
def test_id_lists_must_be_lists(values):
    with pytest.raises(ParameterError):
        literal_ids(values)


def test_id_lists_refuse_any_non_string_member_and_deduplicate():
    with pytest.raises(ParameterError):
        literal_ids(["m1", {"$ne": None}])
    assert literal_ids(["m2", "m1", "m2"]) == ["m2", "m1"]
    assert literal_ids(pd.Series(["a", "b"])) == ["a", "b"]
    assert literal_ids(np.array(["a"])) == ["a"]


def test_several_profile_paths_become_an_or():
    assert any_path_in(["status", "state"], ["FAILED"]) == {
        "$or": [{"status": {"$in": ["FAILED"]}}, {"state": {"$in": ["FAILED"]}}]}


def _offline(**kw) -> MongoSource:
    return MongoSource(CLOSED_PORT, "runbook", Limits(connect_timeout_s=0.5), **kw)


def test_methods_refuse_operator_ids_before_any_query():
    src = _offline()
    for call in (lambda: src.message({"$ne": None}), lambda: src.messages([{"$gt": ""}]),
                 lambda: src.conversation(["c"]), lambda: src.message_history(None),
                 lambda: src.file_checks([1]), lambda: src.window_messages(
                     mongo_window(), channel={"$ne": None})):
        with pytest.raises(ParameterError):
            call()
    assert src.queries == []


def test_status_parameters_come_from_the_vocabulary():
    src = _offline()
    with pytest.raises(ParameterError, match="status must be one of"):
        src.stuck_messages({"$ne": "DELIVERED"})
    with pytest.raises(ParameterError, match="status must be one of"):
        src.stuck_messages("$ne")
    assert src._status_filter("failed") == {"$or": [{"status": {"$in": ["FAILED", "failed", "Failed"]}},
                                                    {"state": {"$in": ["FAILED", "failed", "Failed"]}}]}


def mongo_window():
    from forensics.timeutil import Window

    return Window(T0, T1)


# ---- time filters ------------------------------------------------------------------------------

def test_time_range_covers_dates_epoch_seconds_milliseconds_and_iso_strings():
    clauses = time_range(["timestamp"], T0, T1)["$or"]
    conds = [c["timestamp"] for c in clauses]
    assert {"$gte": T0.to_pydatetime(), "$lt": T1.to_pydatetime()} in conds
    assert {"$gte": T0.timestamp(), "$lt": T1.timestamp()} in conds
    assert {"$gte": T0.timestamp() * 1000, "$lt": T1.timestamp() * 1000} in conds
    assert {"$gte": "2025-12-03T14:00:00", "$lt": "2025-12-03T15:00:00"} in conds
    assert {"$gte": "2025-12-03 14:00:00", "$lt": "2025-12-03 15:00:00"} in conds
    assert len(conds) == 5


def test_time_range_over_two_paths_and_open_bounds_stay_type_bracketed():
    clauses = time_range(["timestamp", "created_at"], None, T1)["$or"]
    assert {c_path for c in clauses for c_path in c} == {"timestamp", "created_at"}
    conds = [c["timestamp"] for c in clauses if "timestamp" in c]
    assert {"$lt": T1.to_pydatetime()} in conds
    assert {"$gte": mongo_query._MS_FROM, "$lt": T1.timestamp() * 1000} in conds  # ms: above every epoch second
    assert {"$lt": T1.timestamp()} in conds
    assert {"$gte": "0000-01-01", "$lt": "2025-12-03T15:00:00"} in conds
    open_ended = [c["created_at"] for c in time_range(["created_at"])["$or"]]
    assert {"$type": "date"} in open_ended and {"$lt": mongo_query._MS_FROM} in open_ended


def test_sub_second_bounds_keep_their_milliseconds():
    conds = [c["t"] for c in time_range(["t"], T0 + pd.Timedelta("250ms"), None)["$or"]]
    assert {"$gte": "2025-12-03T14:00:00.250", "$lt": "9999-12-31"} in conds


def test_times_before_needs_every_present_path_old_and_one_present():
    flt = times_before(["updated_at", "timestamp"], T0)
    each, one = flt["$and"][:2], flt["$and"][2]
    assert each[0]["$or"][0] == {"updated_at": None} and each[1]["$or"][0] == {"timestamp": None}
    assert {"updated_at": {"$lt": T0.to_pydatetime()}} in each[0]["$or"]
    assert {"timestamp": {"$lt": T0.to_pydatetime()}} in one["$or"]


def test_date_expression_branches_on_the_stored_type():
    expr = as_date("created_at")["$switch"]["branches"]
    assert expr[0]["case"] == {"$eq": [{"$type": "$created_at"}, "date"]}
    assert expr[2]["then"] == {"$dateFromString": {"dateString": "$created_at", "onError": None}}


@pytest.mark.parametrize(("bucket", "expected"), [("1min", ("minute", 1)), ("90s", ("second", 90)),
                                                  ("5min", ("minute", 5)), ("1h", ("hour", 1)), ("2D", ("day", 2)),
                                                  ("36h", ("hour", 36))])
def test_bucket_widths_map_to_date_trunc_units(bucket, expected):
    assert date_bucket(bucket) == expected


@pytest.mark.parametrize("bucket", ["500ms", "1.5s", "0s", "-1min", "soon"])
def test_bucket_widths_must_be_whole_seconds(bucket):
    with pytest.raises(ParameterError):
        date_bucket(bucket)


# ---- platform limits ---------------------------------------------------------------------------

def test_platform_limits_of_the_runbook():
    frame = pd.DataFrame({
        "channel": ["WHATSAPP", "WHATSAPP", "TELEGRAM", "INSTAGRAM", "INSTAGRAM", "INSTAGRAM", "INTERNAL"],
        "content_type": ["TEXT", "VIDEO", "FILE", "TEXT", "IMAGE", "VIDEO", "TEXT"],
        "content_length": pd.array([4097, None, 10, 1001, None, None, 99999], dtype="Int64"),
        "mime_type": pd.array([None, "video/mp4", None, None, "image/png", "video/mp4", None], dtype="string"),
        "file_size": pd.array([None, 100 * MB + 1, 3 * 1024 * MB, None, 8 * MB + 1,
                               50 * MB, None], dtype="Int64"),
    })
    out = check_platform_limits(frame)
    assert out["text_over_limit"].tolist() == [True, pd.NA, False, True, pd.NA, pd.NA, pd.NA]
    assert out["file_over_limit"].tolist() == [pd.NA, True, True, pd.NA, True, pd.NA, pd.NA]
    assert out["file_limit_bytes"].tolist()[:5] == [100 * MB, 100 * MB, 2048 * MB, pd.NA,
                                                    8 * MB]
    assert pd.isna(out.loc[5, "file_limit_bytes"])  # Instagram's 8 MB is for images only
    assert out.loc[6, ["text_limit_chars", "file_limit_bytes"]].isna().all()  # INTERNAL: no platform


# ---- Arrow typing --------------------------------------------------------------------------------

def test_arrow_kinds_come_from_the_sample_and_mixed_paths_are_named():
    sample = [{"timestamp": dt.datetime(2025, 12, 3), "retry_count": 1, "metadata": {"retry_count": 2.5},
               "error_message": "x", "recipient_ids": ["a"]},
              {"timestamp": "2025-12-03T14:00:00Z", "retry_count": 2.0, "recipient_ids": ["b", "c"]}]
    paths = {"timestamp": "created_at", "retry_count": "retry_count", "metadata.retry_count": "retry_count",
             "error_message": "error_message", "recipient_ids": "recipient_ids", "updated_at": "updated_at",
             "content": "content"}
    kinds, mixed = arrow_kinds(sample, paths)
    assert mixed == ["timestamp"]
    assert kinds == {"retry_count": "float", "metadata.retry_count": "float", "error_message": "string",
                     "recipient_ids": "list", "updated_at": "date", "content": "string"}


def test_arrow_schema_nests_dotted_paths_as_structs():
    sch = arrow_schema({"_id": "objectId", "metadata.error_message": "string", "metadata.retry_count": "int",
                        "timestamp": "date"})
    assert sch.typemap["metadata"] == pa.struct([("error_message", pa.string()), ("retry_count", pa.int64())])
    assert sch.typemap["timestamp"] == pa.timestamp("ms")


def test_arrow_to_flat_gives_dotted_typed_columns_and_hex_object_ids():
    oids = [ObjectId(), None, ObjectId()]
    storage = pa.array([o.binary if o else None for o in oids], type=pa.binary(12))
    ids = pa.ExtensionArray.from_storage(mongo_arrow.ObjectIdType(), storage)
    table = pa.table({"_id": ids, "metadata": pa.array([{"error_message": "e", "retry_count": 2}, None,
                                                        {"error_message": None, "retry_count": None}]),
                      "timestamp": pa.array([1, None, 3], pa.timestamp("ms"))})
    flat = arrow_to_flat(table)
    assert list(flat.columns) == ["_id", "metadata.error_message", "metadata.retry_count", "timestamp"]
    assert flat["_id"].tolist()[0] == str(oids[0]) and pd.isna(flat["_id"][1]) and flat["_id"][2] == str(oids[2])
    assert str(flat["metadata.retry_count"].dtype) == "Int64"
    assert isinstance(flat["metadata.error_message"].dtype, pd.StringDtype)


# ---- truncation and connection handling ------------------------------------------------------------

def test_a_capped_result_says_so():
    frame = schema.empty("messages")
    note = mongo_query.mark_truncated(frame, 1000, "messages in window")
    assert frame.attrs["truncated"] is True and frame.attrs["truncated_at"] == 1000
    assert "truncated at 1,000" in note and frame.attrs["warnings"] == [note]


def test_chunked_results_are_cut_at_the_cap_and_marked():
    frame = pd.DataFrame({"a": range(5)})
    warnings_ = []
    out = mongo._capped(frame, 3, "history", warnings_)
    assert len(out) == 3 and out.attrs["truncated_at"] == 3 and "truncated at 3" in warnings_[0]
    assert mongo._capped(frame, 5, "history", []).attrs == {}


def test_the_cap_is_the_smaller_of_limit_and_limits():
    src = MongoSource(CLOSED_PORT, limits=Limits(max_rows=100))
    assert src._cap(None) == 100 and src._cap(10) == 10 and src._cap(10_000) == 100
    with pytest.raises(ParameterError):
        src._cap(0)


def test_uri_options_are_honoured_and_the_password_masked(monkeypatch):
    monkeypatch.setenv("FORENSICS_MONGO_URI", CLOSED_PORT.replace("directConnection=true",
                                                                  "readPreference=secondary"))
    src = MongoSource(limits=Limits(timeout_s=7, connect_timeout_s=2))
    assert isinstance(src.client.read_preference, Secondary)
    assert src.client.options.pool_options.metadata["application"]["name"] == "chat4all-forensics"
    assert src.client.options.server_selection_timeout == 2
    described = src.describe()
    assert described["read_preference"] == "secondary" and described["max_time_ms"] == 7000
    assert "s3cret-pw" not in str(described) and "***" in described["uri"]


def test_no_uri_names_the_variable(monkeypatch):
    monkeypatch.delenv("FORENSICS_MONGO_URI", raising=False)
    with pytest.raises(SourceError, match="FORENSICS_MONGO_URI"):
        MongoSource()


def test_an_invalid_uri_is_a_source_error_without_the_password():
    with pytest.raises(SourceError) as err:
        MongoSource("mongodb://user:s3cret-pw@host:notaport/")
    assert "s3cret-pw" not in str(err.value) and "invalid connection string" in str(err.value)


def test_an_unreachable_server_is_a_source_error_naming_what_to_check():
    src = _offline()
    with pytest.raises(SourceError) as err:
        src.message("m1")
    text = str(err.value)
    assert err.value.source == "mongodb" and "cannot reach" in text and "0.5s" in text
    assert "s3cret-pw" not in text and "forensics:***@127.0.0.1:9" in text
    assert "scripts/services status" in err.value.hint


def test_queries_are_recorded_as_json():
    src = _offline()
    entry = src._record("messages in window", "messages", "find", time_range(["timestamp"], T0, T1),
                        projection={"_id": 1})
    assert {"$gte": {"$date": "2025-12-03T14:00:00Z"}, "$lt": {"$date": "2025-12-03T15:00:00Z"}} in [
        c["timestamp"] for c in entry["filter"]["$or"]]
    assert entry["maxTimeMS"] == 30_000 and src.queries == [entry]


# ---- forensics message: the story of one message ------------------------------------------------

def test_message_story_shows_durations_errors_limits_identity_and_locks():
    from forensics.report.drilldown import message_story
    from forensics.sources.documents import messages_from_documents, status_events_from_documents

    msg = messages_from_documents([{
        "_id": "o1", "message_id": "m1", "conversation_id": "c1", "recipient_ids": ["+5511999999999"],
        "channel": "INSTAGRAM", "content": "x" * 1200, "content_type": "TEXT", "status": "SENT",
        "timestamp": T0.to_pydatetime(), "retry_count": 2, "error_message": "Connector returned error: status=429"}])
    events = status_events_from_documents([
        {"message_id": "m1", "old_status": "PENDING", "new_status": "SENT", "timestamp": T0 + pd.Timedelta("1.25s"),
         "updated_by": "router-service", "error_message": "retrying"}], msg)
    identities = schema.conform("identities", {"user_id": ["u1"], "platform": ["INSTAGRAM"],
                                               "platform_user_id": ["+5511999999999"], "verified": [True],
                                               "format_valid": [False], "source": ["postgres"]})
    text = "\n".join(message_story(msg.iloc[0], events, as_of=T0 + pd.Timedelta("2h"), identities=identities,
                                   locks="not checked (FORENSICS_REDIS_URL unset)"))
    assert "status SENT" in text and "retries 2   error (top-level): Connector returned error: status=429" in text
    assert "TEXT OVER LIMIT: 1,200 chars > 1,000 on INSTAGRAM" in text
    assert "2 transition(s), PENDING -> SENT in 1.250 s" in text
    assert "derived from the creation time" in text and "error: retrying" in text
    assert "still SENT 1 h 59 min 58 s after its last transition" in text
    assert "user u1, verified True, format valid False" in text and "redis keys: not checked" in text
