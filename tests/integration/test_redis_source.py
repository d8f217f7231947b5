"""Redis locks source against the real Redis of scripts/services (requirepass, own key prefix per test)."""

from __future__ import annotations

import threading

import pandas as pd
import pytest
import redis

from forensics import schema
from forensics.analysis.detectors import detect
from forensics.analysis.replay import replay_blockers
from forensics.config import Limits
from forensics.errors import SourceError
from forensics.evidence import Evidence
from forensics.profiles import load_profile
from forensics.sources.base import CollectRequest
from forensics.sources.redis import (
    KeyPattern,
    Source,
    key_patterns,
    read_locks,
)
from forensics.timeutil import Window

pytestmark = pytest.mark.integration

READ_COMMANDS = {"PING", "SCAN", "TYPE", "PTTL", "GETRANGE", "STRLEN", "HLEN", "LLEN", "SCARD", "ZCARD", "XLEN",
                 "HELLO", "CLIENT", "SELECT", "AUTH"}


def seed(ns) -> None:
    """Keys of every kind the deployed code and the runbook write, plus neighbours that must not match."""
    c, k = ns.client, ns.prefix
    c.set(k + "conversation:lock:c-ok", "whatsapp-connector-1", ex=20)
    c.set(k + "conversation:lock:c-forever", "whatsapp-connector-2")  # no TTL: stuck
    c.set(k + "conversation:lock:c-long", "whatsapp-connector-3", ex=3600)  # longer than lock_ttl_s: stuck
    c.set(k + "idempotency:message:m1", "accepted", ex=7 * 86400)
    c.set(k + "router:processed:m1", "processed", ex=7 * 86400)
    c.set(k + "router:processed:m2", "processed")
    c.hset(k + "ratelimit:user:u1", mapping={"tokens": "3", "refill": "1764770400"})
    c.set(k + "conversation:lockX", "not a lock")
    c.set(k + "unrelated:router:processed:m9", "not ours")


def by_key(frame, prefix):
    return {key[len(prefix):]: row for key, row in zip(frame["key"], frame.to_dict("records"), strict=True)}


def test_scan_reads_every_kind_with_ttls_and_values(redis_url, redis_db):
    seed(redis_db)
    frame = schema.validate("locks", read_locks(redis_url, profile="chat4all-v2", key_prefix=redis_db.prefix))
    rows = by_key(frame, redis_db.prefix)
    assert set(rows) == {"conversation:lock:c-ok", "conversation:lock:c-forever", "conversation:lock:c-long",
                         "idempotency:message:m1", "router:processed:m1", "router:processed:m2", "ratelimit:user:u1"}
    ok = rows["conversation:lock:c-ok"]
    assert (ok["kind"], ok["conversation_id"], ok["value"]) == ("conversation_lock", "c-ok", "whatsapp-connector-1")
    assert 0 < ok["ttl_s"] <= 20
    assert frame.loc[frame["key"] == redis_db.prefix + "conversation:lock:c-forever", "ttl_s"].isna().all()
    assert rows["router:processed:m1"]["message_id"] == "m1" and rows["router:processed:m1"]["kind"] == "processed"
    assert 6 * 86400 < rows["idempotency:message:m1"]["ttl_s"] <= 7 * 86400
    assert rows["ratelimit:user:u1"]["value"] == "<hash of 2 items>"
    assert set(frame["source"]) == {"redis"}
    assert rows["router:processed:m2"]["source_object"] == redis_db.prefix + "router:processed:{message_id}"
    assert list(frame["source_ref"]) == list(frame["key"])
    assert frame["sampled_at"].notna().all() and not frame.attrs["truncated"]


def stuck_conversations(locks: pd.DataFrame) -> list[str]:
    """Conversations of the locks the stuck_locks detector (the rule's one home) flags."""
    at = locks["sampled_at"].max()
    ev = Evidence(Window(at - pd.Timedelta(hours=1), at + pd.Timedelta(seconds=1)))
    ev.put("locks", locks)
    found = detect(ev, only=["stuck_locks"]).items
    keys = set(found[0].evidence[0]["values"]) if found else set()
    return sorted(locks.loc[locks["key"].isin(keys), "conversation_id"])


def test_stuck_locks_and_replay_blockers(redis_url, redis_db):
    seed(redis_db)
    frame = read_locks(redis_url, profile="runbook", key_prefix=redis_db.prefix)
    assert stuck_conversations(frame) == ["c-forever", "c-long"]
    blockers = replay_blockers(frame, ["m1", "m2", "m-not-processed"])
    assert sorted(blockers["message_id"]) == ["m1", "m2"] and set(blockers["kind"]) == {"processed"}


def test_direct_lookups_for_given_ids(redis_url, redis_db):
    seed(redis_db)
    frame = read_locks(redis_url, key_prefix=redis_db.prefix, message_ids=["m1", "m3", "*"],
                       conversation_ids=["c-forever"])
    assert sorted(by_key(frame, redis_db.prefix)) == ["conversation:lock:c-forever", "idempotency:message:m1",
                                                      "router:processed:m1"]
    assert frame.attrs["keys_matched"] == 7  # 3 message ids x 2 patterns + 1 conversation id
    empty = schema.validate("locks", read_locks(redis_url, key_prefix=redis_db.prefix, message_ids=[]))
    assert empty.empty


def test_values_are_truncated_on_the_server_side(redis_url, redis_db):
    redis_db.client.set(redis_db.prefix + "router:processed:big", "x" * 10_000)
    frame = read_locks(redis_url, key_prefix=redis_db.prefix, message_ids=["big"], value_chars=16)
    assert frame.loc[0, "value"] == "x" * 16 + "…"


def test_the_key_cap_stops_the_scan(redis_url, redis_db):
    for i in range(25):
        redis_db.client.set(redis_db.prefix + f"router:processed:m{i}", "processed", ex=600)
    frame = read_locks(redis_url, key_prefix=redis_db.prefix, kinds=["processed"], max_keys=10, scan_count=5)
    assert len(frame) == 10 and frame.attrs["truncated"]


def test_keys_that_are_not_utf8_are_read_back(redis_url, redis_db):
    raw = redis.Redis.from_url(redis_url)
    key = redis_db.prefix.encode() + b"router:processed:\xff\xfe"
    try:
        raw.set(key, b"\xc3(", ex=600)
        frame = read_locks(redis_url, key_prefix=redis_db.prefix)
    finally:
        raw.delete(key)  # the fixture's cleanup decodes keys as UTF-8
        raw.close()
    assert len(frame) == 1
    assert frame.loc[0, "message_id"] == "\\xff\\xfe" and frame.loc[0, "value"] == "\ufffd("
    assert frame.loc[0, "ttl_s"] > 0


def test_glob_characters_in_prefixes_and_patterns_are_literal(redis_url, redis_db):
    prefix = redis_db.prefix + "[a]*?:"
    redis_db.client.set(prefix + "router:processed:m1", "processed")
    redis_db.client.set(redis_db.prefix + "a-decoy:router:processed:m1", "processed")
    frame = read_locks(redis_url, key_prefix=prefix, kinds=["processed"])
    assert list(frame["key"]) == [prefix + "router:processed:m1"]
    assert KeyPattern("processed", "router:processed:{message_id}", "[a]*?:").glob == r"\[a\]\*\?:router:processed:*"


def test_only_read_commands_are_sent_and_never_keys(redis_url, redis_db):
    seed(redis_db)
    seen: list[str] = []
    ready = threading.Event()
    watcher = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=1.0)

    def watch():
        with watcher.monitor() as monitor:
            ready.set()
            while True:
                try:
                    seen.append(monitor.next_command()["command"])
                except (redis.TimeoutError, redis.ConnectionError):
                    return

    thread = threading.Thread(target=watch)
    thread.start()
    assert ready.wait(5)
    read_locks(redis_url, key_prefix=redis_db.prefix)
    read_locks(redis_url, key_prefix=redis_db.prefix, message_ids=["m1"], conversation_ids=["c-ok"])
    thread.join(10)
    watcher.close()
    ours = [c for c in seen if redis_db.prefix in c]
    assert ours, "MONITOR saw none of our commands"
    names = {c.split()[0].upper() for c in ours}
    assert names <= READ_COMMANDS, names - READ_COMMANDS
    assert "SCAN" in names and "KEYS" not in names


def test_errors_name_the_problem_and_never_the_password(redis_url):
    password = redis.connection.parse_url(redis_url)["password"]
    wrong = redis_url.replace(f":{password}@", f":{password}x@")
    with pytest.raises(SourceError, match="authentication failed") as err:
        read_locks(wrong)
    assert password not in str(err.value) and "***" in str(err.value)
    with pytest.raises(SourceError, match="authentication"):  # no password at all
        read_locks(redis_url.replace(f":{password}@", ""))
    port = str(redis.connection.parse_url(redis_url)["port"])
    with pytest.raises(SourceError, match="unreachable") as err:
        read_locks(redis_url.replace(f":{port}", ":1"), limits=Limits(connect_timeout_s=2))
    assert password not in str(err.value)
    with pytest.raises(SourceError, match="unknown key kind"):
        key_patterns("runbook", kinds=["locks"])


def test_collect_scans_the_profile_patterns(redis_url, redis_db):
    seed(redis_db)
    window = Window.parse("2025-12-03T14:00:00Z", "2025-12-03T15:00:00Z")
    options = {"redis_url": redis_url, "redis_key_prefix": redis_db.prefix}
    result = Source.collect(CollectRequest(window, load_profile("chat4all-v2"), options))
    frame = schema.validate("locks", result.tables["locks"])
    assert len(frame) == 7
    assert len(stuck_conversations(frame)) == 2 and result.description["truncated"] is False
    password = redis.connection.parse_url(redis_url)["password"]
    assert password not in str(result.description) and password not in str(result.queries)
    assert redis_db.prefix + "conversation:lock:*" in result.queries["locks"]["redis"]["match"]


def test_a_seeded_incident_reads_back_as_simulated(redis_url, redis_db):
    from forensics.simulate.seed import Placement, seed

    result = seed("router-outage", profile="chat4all-v2", messages=300, seed=4, targets=["redis"],
                  placement=Placement(redis_prefix=redis_db.prefix), connections={"redis": redis_url})
    simulated = result.evidence.table("locks")
    want = simulated[(simulated["ttl_s"].isna() | (simulated["ttl_s"] > 0)).to_numpy()]
    want = want.assign(key=redis_db.prefix + want["key"]).sort_values("key", ignore_index=True)
    got = schema.validate("locks", read_locks(redis_url, profile=result.profile)).sort_values("key", ignore_index=True)
    assert len(got) == len(want) > 0
    for column in ("key", "kind", "conversation_id", "message_id", "value"):
        pd.testing.assert_series_equal(got[column], want[column], check_names=False, obj=column)
    assert (got["ttl_s"].isna() == want["ttl_s"].isna()).all()
    drift = (want["ttl_s"] - got["ttl_s"]).dropna()
    assert drift.between(-0.01, 120).all()  # the time to live only ran down since the seed
    assert stuck_conversations(got) == stuck_conversations(want)
