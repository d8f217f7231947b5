"""Message and history documents in every layout Chat4All variants write."""

import datetime as dt

import pandas as pd

from forensics import schema
from forensics.sources.documents import messages_from_documents, status_events_from_documents

T0 = pd.Timestamp("2025-12-03T14:00:00Z")


def _docs():
    return [
        {"_id": "oid1", "message_id": "m1", "conversation_id": "c1", "recipient_ids": ["+5511999999999"],
         "channel": "WHATSAPP", "status": "FAILED", "timestamp": dt.datetime(2025, 12, 3, 14),
         "metadata": {"error_message": "Connector returned error: status=429", "retry_count": 3}},
        {"message_id": "m2", "state": "pending", "created_at": "2025-12-03T14:00:01Z",
         "retry_count": "2", "error_message": "top-level reason"},
        {"message_id": "m3", "status": "DELIVERED", "created_at": 1764770402.5, "content": {"nested": True}},
        {"message_id": "m4", "status": "SENT", "created_at": 1764770403000, "retry_count": "many"},
        {"no_message_id": True},
    ]


def test_both_error_layouts_are_read_and_reported():
    m = messages_from_documents(_docs()).set_index("message_id")
    assert m.loc["m1", "error_message"].startswith("Connector returned error")
    assert m.loc["m1", "error_field"] == "metadata" and m.loc["m1", "retry_count"] == 3
    assert m.loc["m2", "error_message"] == "top-level reason"
    assert m.loc["m2", "error_field"] == "top-level" and m.loc["m2", "retry_count"] == 2


def test_state_field_and_lowercase_status():
    m = messages_from_documents(_docs()).set_index("message_id")
    assert m.loc["m2", "status"] == "PENDING"


def test_every_timestamp_form_is_coerced():
    m = messages_from_documents(_docs()).set_index("message_id")
    assert m.loc["m1", "created_at"] == T0
    assert m.loc["m2", "created_at"] == T0 + pd.Timedelta("1s")
    assert m.loc["m3", "created_at"] == T0 + pd.Timedelta("2.5s")
    assert m.loc["m4", "created_at"] == T0 + pd.Timedelta("3s")


def test_missing_and_mistyped_fields_become_nulls():
    m = messages_from_documents(_docs()).set_index("message_id")
    assert pd.isna(m.loc["m4", "retry_count"])  # "many"
    assert pd.isna(m.loc["m3", "channel"])
    assert pd.isna(m.loc["m3", "content"])  # an object where text belongs: null, the document stays referenced
    schema.validate("messages", m.reset_index())


def test_documents_without_message_id_are_not_messages():
    assert len(messages_from_documents(_docs())) == 4


def test_provenance_points_at_the_document():
    m = messages_from_documents(_docs()).set_index("message_id")
    assert m.loc["m1", "source"] == "mongodb" and m.loc["m1", "source_object"] == "messages"
    assert m.loc["m1", "source_ref"] == "oid1"


def test_deployed_profile_prefers_metadata_fields():
    docs = [{"message_id": "m", "created_at": T0, "timestamp": T0 + pd.Timedelta("5s"),
             "error_message": "top", "metadata": {"error_message": "nested"}}]
    runbook = messages_from_documents(docs, "runbook").iloc[0]
    deployed = messages_from_documents(docs, "chat4all-v2").iloc[0]
    assert runbook["error_message"] == "top" and runbook["created_at"] == T0 + pd.Timedelta("5s")
    assert deployed["error_message"] == "nested" and deployed["created_at"] == T0


def test_initial_pending_is_derived_when_history_lacks_it():
    m = messages_from_documents(_docs())
    history = [
        {"_id": "h1", "message_id": "m1", "old_status": "PENDING", "new_status": "FAILED",
         "timestamp": 1764770405000, "updated_by": "router-service"},
        {"_id": "h2", "message_id": "m3", "old_status": None, "new_status": "PENDING", "timestamp": T0},
        {"_id": "h3", "message_id": "m3", "old_status": "PENDING", "new_status": "DELIVERED", "timestamp": "bad"},
    ]
    e = status_events_from_documents(history, m)
    schema.validate("status_events", e)
    m1 = e[e.message_id == "m1"]
    assert list(m1.new_status) == ["PENDING", "FAILED"]
    assert list(m1.derived) == [True, False]
    assert m1.iloc[0]["timestamp"] == T0 and m1.iloc[0]["channel"] == "WHATSAPP"
    # m3 has its own PENDING row: none derived; the row with an unreadable time is not a transition
    m3 = e[e.message_id == "m3"]
    assert list(m3.derived) == [False] and list(m3.new_status) == ["PENDING"]
    # m2 and m4 have no history at all: one derived PENDING each
    assert set(e[e.derived].message_id) == {"m1", "m2", "m4"}


def test_empty_inputs_give_empty_valid_tables():
    m = messages_from_documents([])
    schema.validate("messages", m)
    schema.validate("status_events", status_events_from_documents([], m))
