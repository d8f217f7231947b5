"""The simulated world around an incident: the baseline period, the deployed code's chronic
noise, harmless blips, and the incidents that need a baseline to be told apart (poison pill,
stuck lock, webhooks that stop, incidents under way, partial evidence)."""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
import pytest

from forensics import schema
from forensics.errors import ScenarioError
from forensics.profiles import load_profile
from forensics.simulate import SCENARIOS, simulate
from forensics.simulate.seed import with_baseline
from forensics.sources.partitioner import partitions_for

PROFILES = ("runbook", "chat4all-v2")
N = 2000


@cache
def sim(name: str, profile: str = "runbook", seed: int = 7, **options):
    """Cached simulation; tests must not modify what it returns."""
    return simulate(name, messages=N, seed=seed, profile=profile, **options)


def started(ev) -> pd.Timestamp:
    return pd.Timestamp(ev.scenario["started_at"])


def router_lag(ev, by: str = "sampled_at") -> pd.Series:
    lag = ev.table("consumer_lag")
    prof = load_profile(ev.profile)
    mine = lag[(lag["group"] == prof.kafka.router_group) & (lag["topic"] == prof.kafka.message_events.name)]
    return mine.groupby(by)["lag"].sum() if by == "sampled_at" else mine.groupby(by)["lag"].max()


def lines(ev, text: str, level: str | None = None) -> pd.DataFrame:
    logs = ev.table("log_events")
    hit = logs["message"].str.contains(text, regex=False, na=False)
    if level:
        hit &= logs["level"] == level
    return logs[hit]


def per_hour(ev, frame: pd.DataFrame) -> float:
    return len(frame) / ((ev.window.end - ev.window.start) / pd.Timedelta("1h"))


# -- the baseline period --------------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_a_baseline_of_the_window_length_precedes_it_with_the_same_rate(profile):
    ev = sim("router-outage", profile)
    base = ev.baseline
    assert ev.baseline_kind == "preceding" and base.baseline is None
    assert base.window.end == ev.window.start and base.window.end - base.window.start == pd.Timedelta("1h")
    assert len(ev.table("messages")) == N and abs(len(base.table("messages")) - N) < 0.1 * N
    assert not set(ev.table("messages")["message_id"]) & set(base.table("messages")["message_id"])
    for part in (ev, base):
        w = part.window
        created = part.table("messages")["created_at"]
        assert ((created >= w.start) & (created < w.end)).all()
        events = part.table("status_events")
        assert set(events["message_id"]) == set(part.table("messages")["message_id"])
        for table in ("dlq_records", "spans", "log_events"):
            times = part.table(table)[schema.TABLES[table].time_column]
            assert ((times >= w.start) & (times <= w.end)).all(), table
        for name, frame in part.tables.items():
            schema.validate(name, frame)
    # Snapshots are a picture at capture time: the window's at its end; the baseline's Kafka topics and
    # Redis keys as a capture at the baseline's end would have seen them; identities in the window's only.
    assert {"topics", "identities", "locks"} <= set(ev.tables) and "identities" not in base.tables
    for name in ("topics", "locks"):
        assert (ev.table(name)["sampled_at"] == ev.window.end).all()
        assert (base.table(name)["sampled_at"] == base.window.end).all()
    live = base.table("locks")
    assert (live.loc[live["kind"] == "conversation_lock", "ttl_s"] <= 30).all()  # the normal picture: all expire
    assert base.scenario is None and base.sources["simulator"]["part"] == "baseline"
    # The incident is in the window only: the baseline's router keeps up.
    assert started(ev) >= ev.window.start
    assert router_lag(base).max() < 100 < router_lag(ev).max()


def test_the_baseline_runs_on_into_the_window_without_a_gap_in_traffic():
    ev = sim("baseline")
    both = pd.concat([ev.baseline.table("messages"), ev.table("messages")])
    per_minute = both.set_index("created_at").resample("1min").size()
    assert per_minute.loc[ev.window.start - pd.Timedelta("5min"):ev.window.start + pd.Timedelta("5min")].min() > 0
    # conversations that started in the baseline go on in the window
    assert set(ev.baseline.table("messages")["conversation_id"]) & set(ev.table("messages")["conversation_id"])


def test_baseline_length_none_and_errors():
    ev = sim("baseline", baseline="30m")
    assert ev.baseline.window.end - ev.baseline.window.start == pd.Timedelta("30min")
    assert abs(len(ev.baseline.table("messages")) - N / 2) < 0.1 * N
    alone = sim("baseline", baseline=None)
    assert alone.baseline is None and alone.baseline_kind == "none" and len(alone.table("messages")) == N
    assert sim("baseline", baseline="none").baseline is None
    for bad in ("soon", -5, "-1h", 10**8, True):
        with pytest.raises(ScenarioError):
            simulate("baseline", messages=10, baseline=bad)


def test_the_window_alone_is_what_it_was_before_baselines():
    alone = simulate("whatsapp-outage", messages=N, seed=3, baseline=None, noise=False)
    again = simulate("whatsapp-outage", messages=N, seed=3, baseline=None, noise=False)
    with_baseline = sim("whatsapp-outage", seed=3, noise=False)
    for name, frame in alone.tables.items():
        assert frame.equals(again.tables[name])
    assert len(with_baseline.table("messages")) == len(alone.table("messages"))
    assert alone.scenario["variant"] == {"noise": False, "under_way": False, "baseline_s": 0, "collected": None}


def test_same_seed_same_baseline():
    a, b = simulate("poison-pill", messages=800, seed=4), simulate("poison-pill", messages=800, seed=4)
    for name, frame in a.baseline.tables.items():
        assert frame.equals(b.baseline.tables[name])


# -- chronic noise --------------------------------------------------------------------------

def test_noise_is_on_by_default_for_the_deployed_code_only():
    assert sim("baseline", "chat4all-v2").scenario["variant"]["noise"] is True
    assert sim("baseline", "runbook").scenario["variant"]["noise"] is False
    assert sim("baseline", "runbook", noise=True).scenario["variant"]["noise"] is True


@pytest.mark.parametrize("profile", PROFILES)
def test_chronic_noise_is_the_same_in_baseline_and_window(profile):
    ev = sim("token-expired", profile, noise=True)
    quiet = sim("token-expired", profile, noise=False)
    for part in (ev.baseline, ev):
        refused = lines(part, "Callback failed", "ERROR")
        refused = refused[refused["message"].str.contains("error=Connection refused: localhost/127.0.0.1:8081")]
        assert per_hour(part, refused) > 0.3 * N
        assert set(refused["service"]) == {load_profile(profile).services.connector(c)
                                           for c in ("WHATSAPP", "TELEGRAM", "INSTAGRAM")}
        dups = lines(part, "Duplicate message detected in Redis: ", "WARN")
        assert 0 < len(dups) < 0.02 * N and (dups["service"] == load_profile(profile).services.router).all()
        assert len(lines(part, "Duplicate message detected, skipping processing: ")) == len(dups)
    assert lines(quiet, "Connection refused: localhost").empty and lines(quiet, "Duplicate message").empty
    # Background failures: mixed codes, a low rate, about the same before and during.
    base_m = ev.baseline.table("messages")
    before = base_m[base_m["channel"] != "INTERNAL"]
    rate = (before["status"] == "FAILED").mean()
    assert 0.003 < rate < 0.04
    codes = before.loc[before["status"] == "FAILED", "error_message"].str.extract(r'"(?:code|error_code)":(\d+)')[0]
    assert codes.nunique() >= 5 and codes.value_counts(normalize=True).iloc[0] < 0.5
    m = ev.table("messages")
    untouched = m[(m["channel"] != ev.scenario["channel"]) & (m["channel"] != "INTERNAL")]
    assert abs((untouched["status"] == "FAILED").mean() - rate) < 0.02


def test_healthy_with_noise_has_no_incident_in_either_period():
    ev = sim("baseline", "chat4all-v2")
    for part in (ev.baseline, ev):
        m = part.table("messages")
        assert (m["status"] == "PENDING").mean() < 0.01
        assert router_lag(part).max() < 100


# -- harmless blips -------------------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_a_broker_restart_blips_and_drains_within_a_minute(profile):
    ev = sim("broker-restart", profile, seed=3)
    assert SCENARIOS["broker-restart"].root_cause == "healthy"
    down, back = (pd.Timestamp(x) for x in ev.scenario["broker_down"])
    assert pd.Timedelta("30s") <= back - down <= pd.Timedelta("45s")
    warns = lines(ev, "could not be established. Node may not be available.", "WARN")
    assert len(warns) and warns["timestamp"].between(down, back).all()
    assert len(lines(ev, "Discovered group coordinator"))
    # Messages created while the broker was away wait for it, then go through.
    m = ev.table("messages")
    during = m[m["created_at"].between(down, back)]
    assert len(during) and (during["status"] != "PENDING").all()
    assert (m["status"] == "PENDING").sum() <= 2
    lag = router_lag(ev)
    assert lag[lag.index >= back + pd.Timedelta("60s")].max() < 20


@pytest.mark.parametrize("profile", PROFILES)
def test_a_rebalance_that_drains_leaves_nothing_behind(profile):
    ev = sim("rebalance-drained", profile, seed=2)
    assert SCENARIOS["rebalance-drained"].root_cause == "healthy"
    resume = pd.Timestamp(ev.scenario["rebalance"]["end"])
    assert len(lines(ev, "partitions revoked")) and len(lines(ev, "partitions assigned"))
    assert lines(ev, "Offset commit failed").empty and lines(ev, "Conversation lock busy").empty
    events = ev.table("status_events")
    assert not events[(events["old_status"] == "DELIVERED") & (events["new_status"] == "DELIVERED")].shape[0]
    locks = ev.table("locks")
    assert locks.loc[locks["kind"] == "conversation_lock", "ttl_s"].notna().all()
    lag = router_lag(ev)
    assert lag[lag.index >= resume + pd.Timedelta("60s")].max() < 20
    assert (ev.table("messages")["status"] == "PENDING").sum() <= 2


# -- incidents that hide in the noise -------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_a_poison_pill_stalls_one_partition_and_only_its_conversations(profile):
    ev = sim("poison-pill", profile)
    prof = load_profile(profile)
    p, topic = ev.scenario["partition"], prof.kafka.message_events.name
    assert ev.scenario["topic"] == topic and SCENARIOS["poison-pill"].root_cause == "partition_problem"
    peak = router_lag(ev, by="partition")
    assert peak[p] >= 30 and peak.drop(p).max() <= 1
    stuck = ev.table("messages")
    stuck = stuck[(stuck["status"] == "PENDING") & (stuck["created_at"] >= started(ev))]
    assert len(stuck) > 10
    hashed = partitions_for(stuck["conversation_id"].astype(str).str.encode("utf-8").to_numpy(), prof.kafka.message_events.partitions)
    assert (hashed == p).all()
    loop = lines(ev, "Consumer exception", "ERROR")
    assert len(loop) > 100 and loop["timestamp"].min() >= started(ev)
    assert loop["stack_trace"].str.contains(
        f"RecordDeserializationException: Error deserializing key/value for partition {topic}-{p} at offset "
        f"{ev.scenario['poison_offset']}").all()
    assert not ev.baseline.table("messages")["status"].eq("PENDING").any()


@pytest.mark.parametrize("profile", PROFILES)
def test_a_killed_router_pod_leaves_locks_without_ttl_and_their_conversations_stuck(profile):
    ev = sim("stuck-lock", profile)
    locks = ev.table("locks")
    left = locks[locks["key"].isin(ev.scenario["stuck_locks"])]
    assert len(left) == len(ev.scenario["stuck_locks"]) >= 1 and left["ttl_s"].isna().all()
    before = ev.baseline.table("locks")  # the normal picture before the pod was killed
    assert len(before) and not before["key"].isin(ev.scenario["stuck_locks"]).any()
    assert set(with_baseline(ev).table("locks")["key"]) == set(locks["key"])  # the stores hold the window's end
    m = ev.table("messages")
    pending = m[(m["status"] == "PENDING") & (m["created_at"] >= started(ev) - pd.Timedelta("1min"))]
    assert len(pending) and set(pending["conversation_id"]) <= set(left["conversation_id"])
    busy = lines(ev, "Conversation lock busy", "WARN")
    assert set(busy["message_id"]) == set(pending["message_id"])
    assert len(lines(ev, "Started RouterServiceApplication"))
    restart = pd.Timestamp(ev.scenario["restart"][1])
    lag = router_lag(ev)
    assert lag[lag.index >= restart + pd.Timedelta("60s")].max() < 20


def test_webhooks_that_stop_leave_one_channel_sent_in_the_runbook_flow():
    ev = sim("webhooks-stopped", "runbook")
    ch, T = ev.scenario["channel"], started(ev)
    m = ev.table("messages")
    later = m[m["created_at"] >= T + pd.Timedelta("1min")]
    assert (later.loc[later["channel"] == ch, "status"] == "SENT").mean() > 0.9
    assert (later.loc[later["channel"] != ch, "status"] == "SENT").mean() < 0.05
    assert (m.loc[m["created_at"] < T - pd.Timedelta("1min"), "status"] == "SENT").mean() < 0.05
    hooks = ev.table("spans")
    hooks = hooks[hooks["tags"].str.contains('"webhook":true', regex=False, na=False)
                  & hooks["service"].eq(ev.scenario["connector"])]
    assert len(hooks) and (hooks["start"] < T).all()


def test_webhooks_that_stop_fail_one_connectors_callbacks_in_the_deployed_flow():
    ev = sim("webhooks-stopped", "chat4all-v2")
    T, connector = started(ev), ev.scenario["connector"]
    failed = lines(ev, "Callback failed", "ERROR")
    failed = failed[~failed["logger"].str.contains("WebhookController")]  # not the platforms' failure reports
    assert len(failed) > 20 and (failed["service"] == connector).all() and (failed["timestamp"] >= T).all()
    assert failed["message"].str.contains("error=Failed to resolve").all()
    ok = lines(ev, "Callback sent successfully", "INFO")
    assert (ok["service"] != connector).any() and (ok.loc[ok["service"] == connector, "timestamp"] < T).all()
    assert lines(ev.baseline, "error=Failed to resolve").empty


@pytest.mark.parametrize("profile", PROFILES)
def test_an_incident_under_way_began_before_the_window(profile):
    ev = sim("router-outage", profile, under_way=True)
    T = started(ev)
    assert ev.scenario["under_way"] and ev.scenario["variant"]["under_way"]
    assert ev.window.start - pd.Timedelta("20min") <= T < ev.window.start - pd.Timedelta("5min")
    lag = router_lag(ev)
    assert lag.iloc[0] > 100  # the backlog is there when the window opens
    assert router_lag(ev.baseline).iloc[-1] > 100 and router_lag(ev.baseline).iloc[0] < 100
    alone = sim("router-outage", profile, under_way=True, baseline=None)
    assert alone.baseline is None and router_lag(alone).iloc[0] > 100
    with pytest.raises(ScenarioError, match="no trigger"):
        simulate("baseline", messages=10, under_way=True)


def test_partial_evidence_holds_only_what_was_collected():
    ev = sim("mongo-write-timeouts", "chat4all-v2", collected=("mongo", "logs"))
    assert set(ev.tables) == {"messages", "status_events", "log_events"}
    assert set(ev.baseline.tables) == {"messages", "status_events", "log_events"}
    assert set(ev.missing) == {"kafka", "jaeger", "postgres", "redis", "prometheus"} == set(ev.baseline.missing)
    assert ev.scenario["variant"]["collected"] == ["logs", "mongo"]
    with pytest.raises(ScenarioError, match="unknown source"):
        simulate("baseline", messages=10, collected=("mongo", "splunk"))


def test_every_scenario_and_variant_is_schema_valid():
    for name in SCENARIOS:
        for options in ({"noise": True}, {"under_way": True, "baseline": "15m"}):
            if options.get("under_way") and not SCENARIOS[name].has_trigger:
                continue
            ev = simulate(name, messages=400, seed=11, profile="chat4all-v2", **options)
            for part in (ev, ev.baseline):
                for table, frame in part.tables.items():
                    schema.validate(table, frame)
                    assert np.isfinite(len(frame))
