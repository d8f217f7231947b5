
import numpy as np
import pandas as pd
import pytest

from forensics.analysis.classify import COLUMNS, classify, classify_series, normalise
from forensics.catalog import CATEGORIES, conflicts, load_catalog

GRAPH_RATE = ('{"error":{"message":"(#130429) Rate limit hit","type":"OAuthException","code":130429,'
              '"error_data":{"messaging_product":"whatsapp","details":"Cloud API message throughput has been '
              'reached."},"fbtrace_id":"AbCdEf123456789xyzAbCdEf12"}}')
TG_BLOCKED = '{"ok":false,"error_code":403,"description":"Forbidden: bot was blocked by the user"}'
TG_RATE = ('{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 35",'
           '"parameters":{"retry_after":35}}')
IG_TOKEN = ('{"error":{"message":"Error validating access token: Session has expired on Wednesday, 03-Dec-25 '
            '04:00:00 PST.","type":"OAuthException","code":190,"error_subcode":463,"fbtrace_id":"A1b2C3"}}')


# ---- catalog ---------------------------------------------------------------------------------

def test_catalog_entries_are_complete_and_use_known_categories():
    cat = load_catalog()
    assert len(cat.entries) > 80
    for e in cat.entries:
        assert e.category in CATEGORIES, e.id
        assert e.title and e.source, e.id
        assert e.retry in ("yes", "later", "maybe", "no")
    platforms = {e.platform for e in cat.entries}
    assert {"WHATSAPP", "TELEGRAM", "INSTAGRAM", "HTTP", "TRANSPORT", "KAFKA", "MONGODB", "CHAT4ALL"} <= platforms


@pytest.mark.parametrize("code,runbook,documented", [
    ("131047", "Rate limit exceeded (re-engagement window)", "policy_window"),
    ("131053", "Re-engagement message not sent within 24h window", "content"),
    ("131056", "Recipient cannot be sender", "rate_limit"),
    ("132000", "Message too long", "template"),
    ("133000", "Recipient's phone number not on WhatsApp", "configuration"),
])
def test_catalog_keeps_both_meanings_where_runbook_and_docs_disagree(code, runbook, documented):
    entry = next(e for e in conflicts() if e.code == code)
    assert entry.platform == "WHATSAPP"
    assert entry.runbook_meaning == runbook
    assert entry.category == documented
    assert entry.runbook_category and entry.runbook_category != entry.category
    assert "runbook" in entry.conflict and "documentation" in entry.conflict
    assert "WhatsApp Cloud API" in entry.source


def test_conflicts_are_exactly_the_documented_disagreements():
    assert sorted(e.code for e in conflicts()) == ["131047", "131053", "131056", "132000", "133000"]


def test_every_cause_in_the_catalog_has_a_runbook_title_and_action():
    cat = load_catalog()
    for cause in ("router_down", "missing_topic", "mongodb_write_failure", "platform_rate_limit",
                  "credential_expiry", "invalid_recipient", "bot_blocked", "content_over_limit",
                  "platform_outage", "partition_rebalance", "healthy"):
        c = cat.cause(cause)
        assert c.title and c.action
    assert cat.cause("router_down").runbook_step == "R1.1"
    assert cat.cause("platform_rate_limit").runbook_step == "R2.1"


# ---- body formats ------------------------------------------------------------------------------

def test_whatsapp_graph_body_nested_in_connector_error():
    c = classify(f"Connector returned error: status=429, body={GRAPH_RATE}")
    assert (c.platform, c.code, c.category, c.cause) == ("WHATSAPP", "130429", "rate_limit", "platform_rate_limit")
    assert c.http_status == 429 and c.retryable is True and c.runbook_step == "R2.1"
    assert c.signature == "whatsapp.130429" and c.entry is not None
    assert "throughput" in c.detail


def test_raw_graph_body_without_wrapper():
    assert classify(GRAPH_RATE).signature == "whatsapp.130429"


def test_telegram_description_refines_403_to_recipient_blocked_not_auth():
    c = classify(f"Telegram API client error: {TG_BLOCKED}")
    assert (c.platform, c.code, c.category, c.cause) == ("TELEGRAM", "403", "recipient_blocked", "bot_blocked")
    assert c.retryable is False


def test_telegram_rate_limit_and_other_descriptions():
    assert classify(TG_RATE).category == "rate_limit"
    assert classify('{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}').category == \
        "invalid_recipient"
    assert classify('{"ok":false,"error_code":400,"description":"Bad Request: message is too long"}').cause == \
        "content_over_limit"
    assert classify('{"ok":false,"error_code":401,"description":"Unauthorized"}').category == "auth"


def test_instagram_subcode_with_channel_hint():
    c = classify(f"Connector returned error: status=401, body={IG_TOKEN}", channel="INSTAGRAM")
    assert (c.platform, c.signature, c.category) == ("INSTAGRAM", "instagram.190.463", "auth")


def test_graph_code_shared_by_platforms_follows_the_channel():
    body = '{"error":{"message":"(#100) Invalid parameter","code":100}}'
    assert classify(body, channel="INSTAGRAM").platform == "INSTAGRAM"
    assert classify(body, channel="WHATSAPP").platform == "WHATSAPP"
    assert classify('{"error":{"message":"x","code":613}}').platform == "INSTAGRAM"


def test_details_refine_invalid_parameter_into_content_over_limit():
    body = ('{"error":{"message":"(#100) Invalid parameter","code":100,"error_data":{"messaging_product":'
            '"whatsapp","details":"Param text[\'body\'] must be at most 4096 characters long."}}}')
    c = classify(f"Connector returned error: status=400, body={body}")
    assert c.category == "content" and c.cause == "content_over_limit"


def test_whatsapp_webhook_status_errors():
    c = classify('WhatsApp delivery failed: {"errors":[{"code":131026,"title":"Message undeliverable"}]}')
    assert c.signature == "whatsapp.131026" and c.cause == "invalid_recipient"
    hook = ('{"entry":[{"changes":[{"value":{"statuses":[{"status":"failed","errors":[{"code":131047,'
            '"title":"Re-engagement message"}]}]}}]}]}')
    c = classify(hook)
    assert c.code == "131047" and c.category == "policy_window"


def test_conflicting_code_carries_the_conflict_note():
    c = classify('{"error":{"message":"(#132000) Number of parameters does not match","code":132000}}')
    assert c.category == "template"
    assert c.conflict and "Message too long" in c.conflict
    assert c.entry.runbook_cause == "content_over_limit"


def test_json_inside_a_json_string_is_classified_recursively():
    inner = TG_BLOCKED.replace('"', '\\"')
    c = classify('{"exception":"HttpClientErrorException","body":"' + inner + '"}')
    assert c.signature == "telegram.403.bot_blocked"


def test_graph_code_in_plain_text():
    assert classify("(#131047) Re-engagement message").code == "131047"


@pytest.mark.parametrize("text,signature,cause", [
    ("ERROR - MongoDB write failed: timeout", "chat4all.mongodb_write_failed", "mongodb_write_failure"),
    ("com.mongodb.MongoTimeoutException: Timed out after 30000 ms while waiting for a server", "mongodb.server_selection_timeout",
     "mongodb_write_failure"),
    ("org.apache.kafka.common.errors.UnknownTopicOrPartitionException: This server does not host this topic-partition.",
     "kafka.unknown_topic_or_partition", "missing_topic"),
    ("Error while fetching metadata with correlation id 7 : {message-events=UNKNOWN_TOPIC_OR_PARTITION}",
     "kafka.unknown_topic_or_partition", "missing_topic"),
    ("Topic whatsapp-outbound not present in metadata after 60000 ms.", "kafka.unknown_topic_or_partition",
     "missing_topic"),
    ("Error calling connector: I/O error on POST request for \"http://whatsapp-connector:8091/api\": Connection refused",
     "transport.connection_refused", "connector_unreachable"),
    ("ERROR - Failed to consume from Kafka: Connection refused", "kafka.consume_failed", "router_down"),
    ("Attempt to heartbeat failed since group is rebalancing", "kafka.rebalance_in_progress", "partition_rebalance"),
    ("Connector returned error: status=503, body=<html>Service Unavailable</html>", "http.503", "platform_outage"),
    ("Connector returned error: status=599, body=", "http.5xx", "platform_outage"),
])
def test_log_lines_and_exceptions(text, signature, cause):
    c = classify(text)
    assert c.signature == signature
    assert c.cause == cause


# ---- unknown errors and hostile text -------------------------------------------------------------

def test_unknown_signature_strips_ids_numbers_timestamps_and_quoted_values():
    a = classify("Weird failure for 3f2c1a9e-1111-4222-8333-444455556666 at 2025-12-03T14:00:00Z after 123 ms "
                 "(trace deadbeef1234, user 'alice')")
    b = classify("Weird failure for 0a0b0c0d-9999-4888-8777-666655554444 at 2025-12-04T09:30:12.5+01:00 after 9 ms "
                 "(trace cafebabe9876, user 'bob')")
    assert a.category == "unknown" and a.entry is None and a.retryable is None
    assert a.signature == b.signature
    assert a.signature.startswith("unknown:")
    for leaked in ("3f2c1a9e", "123", "deadbeef", "alice", "2025"):
        assert leaked not in a.signature
    assert normalise('{"field": "value", "n": 3}') == '{"field": <q>, "n": <n>}'


@pytest.mark.parametrize("text", ['{"$gt": ""}', "<script>alert(1)</script>", "'; DROP TABLE messages; --",
                                  "{{7*7}} ${7*7} | `rm -rf /` \x00 fim", "{" * 5000, "[" * 5000 + "{", "",
                                  "\u202egpj.exe", '{"error": {"code": {"$ne": 1}}}',
                                  '{"error":{"code":true}}', "status=abc body={not json"])
def test_hostile_strings_classify_as_unknown_without_error(text):
    c = classify(text)
    assert c.category == "unknown"
    assert c.entry is None


def test_classify_accepts_none_and_nan():
    assert classify(None).category == "unknown"
    assert classify(float("nan")).category == "unknown"


# ---- classify_series -----------------------------------------------------------------------------

def test_classify_series_keeps_index_and_nulls():
    s = pd.Series([f"Telegram API client error: {TG_BLOCKED}", None, "ERROR - MongoDB write failed: timeout"],
                  index=[10, 20, 30], dtype="string")
    out = classify_series(s)
    assert list(out.columns) == list(COLUMNS)
    assert list(out.index) == [10, 20, 30]
    assert out.loc[10, "category"] == "recipient_blocked"
    assert out.loc[20].isna().all()
    assert out.loc[30, "cause"] == "mongodb_write_failure"


def test_classify_series_uses_the_channel_column():
    body = '{"error":{"message":"(#100) Invalid parameter","code":100}}'
    out = classify_series(pd.Series([body, body]), pd.Series(["WHATSAPP", "INSTAGRAM"]))
    assert list(out["platform"]) == ["WHATSAPP", "INSTAGRAM"]


def test_classify_series_empty():
    out = classify_series(pd.Series([], dtype="string"))
    assert out.empty and list(out.columns) == list(COLUMNS)


def test_classify_series_groups_texts_that_differ_only_by_ids():
    ids = [f"{i:08x}-0000-4000-8000-{i:012x}" for i in range(5000)]
    s = pd.Series([f"Message delivery failed after retries: messageId={i}, channel=WHATSAPP" for i in ids])
    out = classify_series(s)
    assert out["signature"].nunique() == 1


def test_classify_series_on_a_million_rows_with_few_distinct_errors():
    rng = np.random.default_rng(1)
    texts = np.array([f"Connector returned error: status=429, body={GRAPH_RATE}", f"Telegram API client error: "
                      f"{TG_BLOCKED}", "ERROR - MongoDB write failed: timeout", None], dtype=object)
    s = pd.Series(texts[rng.integers(0, 4, 1_000_000)], dtype="string")
    out = classify_series(s)
    assert len(out) == 1_000_000
    assert set(out["signature"].dropna()) == {"whatsapp.130429", "telegram.403.bot_blocked",
                                              "chat4all.mongodb_write_failed"}


def test_a_text_seen_again_is_not_matched_again():
    text = 'Connector returned error: status=400, body={"error":{"message":"(#131026) Message undeliverable","code":131026}}'
    first = classify(text, "WHATSAPP")
    assert classify(text, "WHATSAPP") is first  # the window, its baseline and the logs repeat their texts
    assert classify(text, "INSTAGRAM") is not first and classify(None).category == "unknown"
