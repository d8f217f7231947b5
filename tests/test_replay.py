"""Replay safety of dead letters: one named case per verdict, and the precedence between them."""

import pandas as pd
import pytest

from forensics import schema
from forensics.analysis.replay import (
    COLUMNS,
    VERDICTS,
    error_classes,
    evidence_replay_safety,
    payload_samples,
    replay_safety,
    verdict_counts,
)
from forensics.redact import Redactor
from forensics.simulate import simulate

T0 = pd.Timestamp("2025-12-03T14:00:00Z")
RATE_LIMIT = 'Connector returned error: status=429, body={"error":{"message":"(#130429) Rate limit hit","code":130429}}'
NOT_ON_WHATSAPP = ('Connector returned error: status=400, body={"error":{"message":"(#131026) Message undeliverable",'
                   '"code":131026}}')

# name -> (message status in MongoDB or None when absent, error text, processed key TTL in seconds:
#          None = no key, "no expiry" = a key without TTL, decode error)
CASES = {
    "safe": ("FAILED", RATE_LIMIT, None, None),
    "blocked": ("FAILED", RATE_LIMIT, 7200.0, None),
    "blocked_forever": ("FAILED", RATE_LIMIT, "no expiry", None),
    "delivered": ("DELIVERED", RATE_LIMIT, None, None),
    "still_sent": ("SENT", RATE_LIMIT, None, None),
    "not_on_whatsapp": ("FAILED", NOT_ON_WHATSAPP, None, None),
    "not_on_whatsapp_and_blocked": ("FAILED", NOT_ON_WHATSAPP, 60.0, None),
    "unknown": (None, RATE_LIMIT, None, None),
    "garbled": ("FAILED", RATE_LIMIT, None, "Unexpected character ('x' (code 120))"),
}
EXPECTED = {"safe": "safe", "blocked": "blocked", "blocked_forever": "blocked", "delivered": "not_failed",
            "still_sent": "not_failed", "not_on_whatsapp": "not_retryable",
            "not_on_whatsapp_and_blocked": "not_retryable", "unknown": "unknown_message", "garbled": "undecodable"}


def _id(name: str) -> str:
    return f"msg-{name}"


def tables(cases: dict = CASES, extra_dlq: list[str] = ()):
    """(dlq_records, messages, locks) for ``cases``; ``extra_dlq`` adds earlier dead letters of those cases."""
    names = list(extra_dlq) + list(cases)
    n = len(names)
    dlq = schema.conform("dlq_records", {
        "topic": "whatsapp-outbound-dlq", "partition": 0, "offset": range(n),
        "timestamp": [T0 + pd.Timedelta(seconds=i) for i in range(n)],
        "original_topic": "whatsapp-outbound",
        "exception_class": "org.springframework.kafka.listener.ListenerExecutionFailedException",
        "exception_message": [cases[c][1] for c in names], "message_id": [_id(c) for c in names],
        "conversation_id": "conv-1", "channel": "WHATSAPP",
        "payload": [f'{{"message_id":"{_id(c)}","content":"<b>hi</b>"}}' for c in names], "payload_bytes": 40,
        "decode_error": [cases[c][3] for c in names],
        "source": "kafka", "source_object": "whatsapp-outbound-dlq", "source_ref": [f"0:{i}" for i in range(n)]})
    known = [c for c in cases if cases[c][0] is not None]
    messages = schema.conform("messages", {
        "message_id": [_id(c) for c in known], "status": [cases[c][0] for c in known], "channel": "WHATSAPP",
        "created_at": T0, "source": "mongodb", "source_object": "messages", "source_ref": [_id(c) for c in known]})
    keyed = [c for c in cases if cases[c][2] is not None]
    locks = schema.conform("locks", {
        "key": [f"router:processed:{_id(c)}" for c in keyed] + ["idempotency:message:msg-safe"],
        "kind": ["processed"] * len(keyed) + ["idempotency"],
        "message_id": [_id(c) for c in keyed] + [_id("safe")],
        "ttl_s": [None if cases[c][2] == "no expiry" else cases[c][2] for c in keyed] + [86400.0],
        "sampled_at": T0 + pd.Timedelta("1h"), "source": "redis", "source_object": "router:processed:{message_id}",
        "source_ref": [f"router:processed:{_id(c)}" for c in keyed] + ["idempotency:message:msg-safe"]})
    return dlq, messages, locks


@pytest.fixture(scope="module")
def judged() -> pd.DataFrame:
    out = replay_safety(*tables())
    return out.set_index(out["message_id"].str.removeprefix("msg-"))


@pytest.mark.parametrize("case", list(CASES))
def test_each_case_gets_its_verdict(judged, case):
    row = judged.loc[case]
    assert row["verdict"] == EXPECTED[case]
    assert bool(row["safe_to_replay"]) == (EXPECTED[case] == "safe")


def test_result_has_the_declared_columns_one_row_per_record():
    dlq, messages, locks = tables()
    out = replay_safety(dlq, messages, locks)
    assert list(out.columns) == list(COLUMNS) and len(out) == len(dlq)
    assert out["offset"].tolist() == dlq["offset"].tolist()  # input order
    assert out["exception"].unique().tolist() == ["ListenerExecutionFailedException"]


def test_a_processed_key_names_the_key_and_its_remaining_life(judged):
    assert judged.loc["blocked", "processed_key"] == "router:processed:msg-blocked"
    assert judged.loc["blocked", "processed_key_ttl_s"] == 7200.0
    assert "router:processed:msg-blocked (expires in 2.0 h)" in judged.loc["blocked", "reason"]
    assert "(no expiry)" in judged.loc["blocked_forever", "reason"]


def test_an_idempotency_key_does_not_block_a_replay(judged):
    assert pd.isna(judged.loc["safe", "processed_key"]) and judged.loc["safe", "verdict"] == "safe"


def test_every_reason_that_applies_is_listed_the_first_decides(judged):
    reason = judged.loc["not_on_whatsapp_and_blocked", "reason"]
    assert reason.startswith("not_retryable: error invalid_recipient") and "blocked: router:processed:" in reason
    assert judged.loc["not_on_whatsapp", "runbook_step"] == "R3.1"
    assert judged.loc["delivered", "reason"] == "not_failed: MongoDB status DELIVERED"


def test_failed_in_mongo_is_the_join_on_message_id(judged):
    assert {k: None if pd.isna(v) else bool(v) for k, v in judged["failed_in_mongo"].items()} == {
        "safe": True, "blocked": True, "blocked_forever": True, "delivered": False, "still_sent": False,
        "not_on_whatsapp": True, "not_on_whatsapp_and_blocked": True, "unknown": None, "garbled": True}


def test_only_the_latest_dead_letter_of_a_message_is_replayed():
    out = replay_safety(*tables(extra_dlq=["safe", "safe", "blocked"]))
    safe = out[out["message_id"] == "msg-safe"]
    assert safe["verdict"].tolist() == ["duplicate", "duplicate", "safe"]
    assert out.loc[out["message_id"] == "msg-blocked", "verdict"].tolist() == ["blocked", "blocked"]
    assert out["safe_to_replay"].sum() == 1


@pytest.mark.parametrize("missing", ["messages", "locks"])
def test_without_mongo_or_redis_evidence_nothing_is_called_safe(missing):
    dlq, messages, locks = tables()
    out = replay_safety(dlq, None if missing == "messages" else messages, None if missing == "locks" else locks)
    assert not out["safe_to_replay"].any()
    name = "MongoDB" if missing == "messages" else "Redis"
    assert f"unverified: {name} not collected" in out.loc[out["message_id"] == "msg-safe", "reason"].item()
    if missing == "messages":
        assert out["failed_in_mongo"].isna().all() and "unknown_message" not in set(out["verdict"])


def test_empty_dlq_gives_an_empty_frame_of_the_columns():
    dlq, messages, locks = tables()
    out = replay_safety(dlq.iloc[:0], messages, locks)
    assert out.empty and list(out.columns) == list(COLUMNS)
    assert verdict_counts(out).empty


def test_verdict_counts_in_precedence_order():
    counts = verdict_counts(replay_safety(*tables(extra_dlq=["safe"])))
    assert counts["verdict"].tolist() == [v for v in VERDICTS if v in set(counts["verdict"])]
    assert counts.set_index("verdict").loc["safe", ["records", "messages"]].tolist() == [1, 1]
    assert counts.set_index("verdict").loc["duplicate", "records"] == 1


def test_payload_samples_per_topic_and_error_class_are_cut():
    dlq, messages, locks = tables()
    samples = payload_samples(dlq, replay_safety(dlq, messages, locks), per_group=1, max_chars=20)
    assert len(samples) == 2  # rate_limit and invalid_recipient, one each
    assert samples["payload"].str.len().max() <= 20
    assert samples["where"].iloc[0] == "whatsapp-outbound-dlq 0:0"


def test_a_simulated_rate_limit_incident():
    ev = simulate("whatsapp-rate-limit", messages=1500, seed=11)
    out = replay_safety(ev.table("dlq_records"), ev.table("messages"), ev.table("locks"))
    assert len(out) == len(ev.table("dlq_records")) > 0
    assert out["failed_in_mongo"].all()  # the simulator dead-letters only messages that FAILED
    assert set(out["verdict"]) <= {"safe", "blocked", "not_retryable"} and out["safe_to_replay"].any()
    assert (out["verdict"] == "blocked").sum() == out["processed_key"].notna().sum() - (
        (out["verdict"] == "not_retryable") & out["processed_key"].notna()).sum()


def test_error_classes_group_by_topic_and_catalog_reading():
    classes = error_classes(replay_safety(*tables(extra_dlq=["safe"])))
    top = classes.iloc[0]
    assert (top["error_category"], top["records"], top["messages"]) == ("rate_limit", 8, 7)
    assert classes["records"].sum() == len(CASES) + 1
    assert error_classes(replay_safety(*tables()).iloc[:0]).columns.tolist() == classes.columns.tolist()


def test_evidence_without_redis_is_unverified_not_safe():
    ev = simulate("whatsapp-rate-limit", messages=600, seed=11)
    del ev.tables["locks"]
    assert set(evidence_replay_safety(ev)["verdict"]) <= {"unverified", "not_retryable"}


def test_payloads_are_redacted_before_they_are_cut():
    dlq, messages, locks = tables()
    dlq["payload"] = '{"recipient_ids":["+5511987654321"],"content":"meet me at the station at noon"}'
    samples = payload_samples(dlq, replay_safety(dlq, messages, locks), max_chars=60,
                              redactor=Redactor(["meet me at the station at noon"]))
    assert samples["payload"].iloc[0] == '{"recipient_ids":["[phone]"],"content":"[content]"}'
