"""What changed: verdicts against a baseline, change points, onset, localisation and the ranking on
the change, each rule on crafted tables."""

import math

import numpy as np
import pandas as pd
import pytest

from forensics.analysis.calibration import (
    brier,
    fit_isotonic,
    fit_platt,
    isotonic,
    load_calibration,
    platt,
    reliability,
)
from forensics.analysis.change import (
    BINS,
    change_point,
    count_verdict,
    incident_onset,
    is_change,
    judge,
    level_verdict,
    rate_test,
    set_onsets,
)
from forensics.analysis.detectors import NS, Finding, detect
from forensics.analysis.pipeline import analyze
from forensics.analysis.rank import CLOSE_MARGIN, Hypothesis, _sides, close_call, lost_anew
from forensics.evidence import Evidence
from forensics.sources.partitioner import partitions_for
from forensics.timeutil import Window

END = pd.Timestamp("2025-12-03T15:00:00Z")
WINDOW = Window(END - pd.Timedelta("1h"), END)
BEFORE = Window(WINDOW.start - pd.Timedelta("1h"), WINDOW.start)
REFUSED = "Callback failed: messageId={i}, error=Connection refused: localhost/127.0.0.1:8081"


def _messages(window: Window, n: int, prefix: str, status="DELIVERED", start_s: float = 0.0) -> dict:
    step = (window.duration.total_seconds() - start_s) / n
    return {"message_id": [f"{prefix}{i}" for i in range(n)], "conversation_id": [f"{prefix}c{i}" for i in range(n)],
            "recipient_id": [f"+5511990{i:06d}" for i in range(n)], "channel": ["WHATSAPP"] * n,
            "status": [status] * n,
            "created_at": [window.start + pd.Timedelta(seconds=start_s + i * step) for i in range(n)]}


def _log_lines(window: Window, n: int, text: str, *, level="ERROR", service="whatsapp-connector",
               start_s: float = 0.0) -> dict:
    step = (window.duration.total_seconds() - start_s) / max(n, 1)
    return {"timestamp": [window.start + pd.Timedelta(seconds=start_s + i * step) for i in range(n)],
            "service": [service] * n, "level": [level] * n, "message": [text.format(i=i) for i in range(n)],
            "source_ref": [f"l{i}" for i in range(n)]}


def _concat(*parts: dict) -> dict:
    return {k: sum((list(p[k]) for p in parts), []) for k in parts[0]}


def _evidence(window: Window, **tables) -> Evidence:
    return Evidence.from_records(window, source="test", **tables)


def _with_baseline(window_ev: Evidence, baseline_ev: Evidence, kind="preceding") -> Evidence:
    window_ev.baseline, window_ev.baseline_kind = baseline_ev, kind
    return window_ev


# ---- the test for two counts ---------------------------------------------------------------------------

@pytest.mark.parametrize("c1, c0, change", [
    (60, 0, "new"),          # none before, many now
    (80, 20, "worse"),       # four times the rate
    (22, 20, "unchanged"),   # the same rate
    (5, 60, "better"),       # a twelfth of the rate
    (2, 0, "unchanged"),     # a couple of sporadic events where the baseline had none: noise
    (1100, 1000, "unchanged"),  # significant on a big count, but only 10 % more: not an incident
])
def test_count_verdicts(c1, c0, change):
    assert count_verdict(c1, 1000, c0, 1000).change == change


def test_rate_test_weighs_exposure():
    ratio, p_up, _ = rate_test(40, 2000, 20, 1000)  # twice the count over twice the traffic
    assert ratio == pytest.approx(1.0) and p_up > 0.3
    ratio, p_up, _ = rate_test(40, 1000, 20, 1000)
    assert ratio == pytest.approx(2.0) and p_up < 0.01
    assert rate_test(10, 100, 0, 100)[0] == math.inf


def test_a_rate_under_its_threshold_before_is_new_above_it_worse():
    assert count_verdict(100, 1000, 20, 1000, over_before=False).change == "new"
    assert count_verdict(300, 1000, 100, 1000, over_before=True).change == "worse"


@pytest.mark.parametrize("window, baseline, change", [
    (5000, 40, "new"), (5000, 1200, "worse"), (1300, 1200, "unchanged"), (300, 1200, "better")])
def test_level_verdicts(window, baseline, change):
    assert level_verdict(window, baseline, normal=100).change == change


# ---- change point -------------------------------------------------------------------------------------

def _ns(ts) -> np.ndarray:
    return np.array([pd.Timestamp(t).value for t in ts], dtype=np.int64)


def test_steady_events_have_no_change_point():
    times = _ns(WINDOW.start + pd.Timedelta(seconds=s) for s in np.linspace(0, 3590, 300))
    assert change_point(times, WINDOW.start.value, WINDOW.end.value) is None


def test_events_starting_mid_window_have_their_change_point_there():
    steady = np.linspace(0, 3590, 60)
    burst = np.linspace(1800, 3590, 300)
    times = _ns(WINDOW.start + pd.Timedelta(seconds=s) for s in np.r_[steady, burst])
    at = change_point(times, WINDOW.start.value, WINDOW.end.value)
    assert at is not None and abs(at - (WINDOW.start.value + 1800 * NS)) <= 3600 * NS // BINS


def test_a_drop_is_not_an_onset():
    times = _ns(WINDOW.start + pd.Timedelta(seconds=s) for s in np.linspace(0, 1700, 300))
    assert change_point(times, WINDOW.start.value, WINDOW.end.value) is None


# ---- verdicts of findings against a baseline ------------------------------------------------------------

def test_chronic_callback_refusals_are_unchanged_and_new_errors_new():
    window = _evidence(WINDOW, messages=_messages(WINDOW, 600, "w"),
                       log_events=_concat(_log_lines(WINDOW, 300, REFUSED),
                                          _log_lines(WINDOW, 80, "Connection refused to MongoDB: MongoSocketOpenException",
                                                     service="router-service", start_s=1800)))
    base = _evidence(BEFORE, messages=_messages(BEFORE, 600, "b"), log_events=_log_lines(BEFORE, 290, REFUSED))
    detection = detect(window)
    judge(detection, detect(base))
    by_service = {f.tags.get("service"): f for f in detection.items if f.detector == "log_errors"}
    refused = by_service["whatsapp-connector"]
    assert refused.change == "unchanged" and refused.baseline_value == 290
    assert refused.change_ratio == pytest.approx(300 / 290, rel=1e-3)
    assert by_service["router-service"].change == "new" and by_service["router-service"].baseline_value == 0


def test_a_finding_whose_table_the_baseline_lacks_gets_no_verdict():
    window = _evidence(WINDOW, messages=_messages(WINDOW, 100, "w"), log_events=_log_lines(WINDOW, 50, REFUSED))
    base = _evidence(BEFORE, messages=_messages(BEFORE, 100, "b"))  # no logs collected before
    detection = detect(window)
    judge(detection, detect(base))
    (f,) = [f for f in detection.items if f.detector == "log_errors"]
    assert f.change is None and f.baseline_value is None


def test_a_state_absent_from_the_baseline_is_new():
    lag = {"sampled_at": [], "group": [], "topic": [], "partition": [], "lag": []}
    for i in range(6):
        for p in range(10):
            lag["sampled_at"].append(WINDOW.end - pd.Timedelta(minutes=6 - i))
            lag["group"].append("router-service-group")
            lag["topic"].append("message-events")
            lag["partition"].append(p)
            lag["lag"].append(300 * i if p == 3 else 1)
    detection = detect(_evidence(WINDOW, consumer_lag=lag))
    judge(detection, detect(_evidence(BEFORE, consumer_lag={k: v[:10] for k, v in lag.items()} | {
        "sampled_at": [BEFORE.end - pd.Timedelta(minutes=1)] * 10})))
    (f,) = [f for f in detection.items if f.detector == "partition_confined"]
    assert f.change == "new"
    (lag_finding,) = [f for f in detection.items if f.detector == "consumer_lag"]
    assert lag_finding.change == "new" and lag_finding.baseline_value == 9  # partition 3 at 0, nine at 1


# ---- onset -----------------------------------------------------------------------------------------------

def _mongo_errors(window: Window, start_s: float) -> Evidence:
    return _evidence(window, messages=_messages(window, 600, "w"),
                     log_events=_log_lines(window, 200, "Write failed: MongoSocketReadTimeoutException {i}",
                                           service="router-service", start_s=start_s))


def test_onset_of_an_incident_inside_the_window():
    detection = detect(_mongo_errors(WINDOW, 1800))
    set_onsets(detection)
    onset = incident_onset(detection)
    assert not onset["under_way_at_window_start"] and onset["suggested_since"] is None
    assert abs(pd.Timestamp(onset["start"]) - (WINDOW.start + pd.Timedelta("30min"))) <= pd.Timedelta("1min")


def test_the_incident_start_is_on_the_timeline():
    a = analyze(_mongo_errors(WINDOW, 1800))
    (row,) = a.timeline[a.timeline["kind"] == "incident_onset"].itertuples()
    assert abs(row.timestamp - (WINDOW.start + pd.Timedelta("30min"))) <= pd.Timedelta("1min")


def test_an_incident_under_way_at_window_open_says_so_and_suggests_a_wider_window():
    detection = detect(_mongo_errors(WINDOW, 0))
    set_onsets(detection)
    onset = incident_onset(detection)
    assert onset["under_way_at_window_start"] and onset["earliest_findings"]
    assert pd.Timestamp(onset["earliest_evidence"]) == WINDOW.start
    assert pd.Timestamp(onset["suggested_since"]) == WINDOW.start - WINDOW.duration


def test_without_a_baseline_the_part_before_the_onset_is_used():
    a = analyze(_mongo_errors(WINDOW, 1800))
    assert a.baseline_used["kind"] == "pre-onset"
    assert pd.Timestamp(a.baseline_used["window"]["end"]) > WINDOW.start + pd.Timedelta("25min")
    assert "new" in set(a.findings["change"].dropna())


def test_without_a_baseline_or_an_onset_nothing_is_judged():
    a = analyze(_evidence(WINDOW, messages=_messages(WINDOW, 100, "w"), log_events=_log_lines(WINDOW, 60, REFUSED)))
    assert a.baseline_used == {"kind": "none", "window": None}
    assert a.findings["change"].isna().all()


# ---- ranking on the change ------------------------------------------------------------------------------

def _noisy_healthy(window: Window, prefix: str) -> Evidence:
    return _evidence(window, messages=_messages(window, 600, prefix), log_events=_log_lines(window, 600, REFUSED))


def test_chronic_callback_refusals_do_not_make_a_cause_with_a_baseline():
    alone = analyze(_noisy_healthy(WINDOW, "w"))
    assert alone.top.cause == "webhook_unreachable"  # judged in isolation, the noise looks like a cause
    a = analyze(_with_baseline(_noisy_healthy(WINDOW, "w"), _noisy_healthy(BEFORE, "b")))
    assert a.top.cause == "healthy", a.hypotheses[["cause", "confidence"]].head(3)
    assert a.chronic["finding_id"].str.contains("chat4all.callback_failed|callback", regex=True).any()
    assert a.what_changed.empty
    healthy_for = a.top.evidence_for
    assert any("present before the incident too" in i["statement"] for i in healthy_for)
    summary = a.summary()
    assert summary["baseline"]["kind"] == "preceding" and summary["what_changed"] == []
    assert summary["chronic"] and all(d["change"] == "unchanged" for d in summary["findings_detail"]
                                      if d["finding_id"] in summary["chronic"])


def test_a_new_cause_over_chronic_noise_ranks_first_and_the_noise_is_never_its_evidence():
    window = _evidence(WINDOW, messages=_messages(WINDOW, 600, "w"),
                       log_events=_concat(_log_lines(WINDOW, 600, REFUSED),
                                          _log_lines(WINDOW, 200, "Write failed: MongoSocketReadTimeoutException {i}",
                                                     service="router-service", start_s=1800)))
    a = analyze(_with_baseline(window, _noisy_healthy(BEFORE, "b")))
    assert a.top.cause == "mongodb_write_failure"
    chronic = set(a.chronic["finding_id"])
    assert chronic and not chronic & {i.get("finding_id") for i in a.top.evidence_for}
    assert all(h["margin"] >= 0 for h in a.summary()["hypotheses"])
    assert a.summary()["hypotheses"][0]["margin"] == pytest.approx(a.ranked[0].confidence - a.ranked[1].confidence,
                                                                    abs=1e-3)


def _poison_pill(window: Window, hot: int = 3) -> Evidence:
    """A record the router cannot read arrives half-way: from then on that partition's lag
    grows and the messages of conversations hashing to it stay PENDING."""
    convs = [f"conv-{i}" for i in range(400)]
    parts = partitions_for(convs, 10)
    stuck = [c for c, p in zip(convs, parts, strict=True) if p == hot][:30]
    m = _messages(window, 600, "w")
    at = list(range(300, 600, 10))[:len(stuck)]  # created after the poison record
    for i, c in zip(at, stuck, strict=True):
        m["conversation_id"][i], m["status"][i] = c, "PENDING"
    lag = {"sampled_at": [], "group": [], "topic": [], "partition": [], "lag": []}
    for i in range(12):
        for p in range(10):
            lag["sampled_at"].append(window.start + pd.Timedelta(minutes=5 * i))
            lag["group"].append("router-service-group")
            lag["topic"].append("message-events")
            lag["partition"].append(p)
            lag["lag"].append(60 * max(0, i - 5) if p == hot else i % 2)
    return _evidence(window, messages=m, consumer_lag=lag)


def test_lag_and_stuck_conversations_on_one_partition_point_at_the_partition_not_the_router():
    detection = detect(_poison_pill(WINDOW))
    (f,) = [f for f in detection.items if f.detector == "partition_confined"]
    assert f.severity == "critical" and f.tags["partition"] == 3 and f.tags["stuck_share"] == 1.0
    a = analyze(_poison_pill(WINDOW))
    causes = a.hypotheses["cause"].tolist()
    assert causes[0] == "partition_problem"
    assert "router_down" not in causes[:1]


def test_a_router_that_is_down_lags_on_every_partition_and_is_not_confined():
    ev = _poison_pill(WINDOW)
    lag = ev.tables["consumer_lag"].copy()
    lag["lag"] = (lag["sampled_at"].rank(method="dense") * 40).astype("Int64")
    ev.put("consumer_lag", lag)
    assert [f for f in detect(ev).items if f.detector == "partition_confined"] == []


def _lag_spike(window: Window, at_min: int, minutes: int = 1) -> Evidence:
    """The router's lag jumps to 5,000 at ``at_min`` for ``minutes`` sample(s), 0 otherwise."""
    samples = [window.start + pd.Timedelta(minutes=i) for i in range(60)]
    lag = [5000 if at_min <= i < at_min + minutes else 0 for i in range(60)]
    return _evidence(window, messages=_messages(window, 600, "w"), status_events=[], log_events=[], spans=[],
                     dlq_records=[], consumer_lag={"sampled_at": samples, "group": ["router-service-group"] * 60,
                                   "topic": ["message-events"] * 60, "partition": [0] * 60, "lag": lag})


def test_a_lag_blip_that_drained_long_before_the_end_with_nothing_lost_is_healthy():
    a = analyze(_with_baseline(_lag_spike(WINDOW, 20), _lag_spike(BEFORE, 99)))
    assert a.top.cause == "healthy", a.hypotheses[["cause", "confidence"]].head(3)
    assert "a blip" in " ".join(i["statement"] for i in a.top.evidence_against)


@pytest.mark.parametrize("at_min, minutes", [(57, 3), (20, 30)])
def test_a_lag_that_has_just_begun_or_lasted_is_not_a_blip(at_min, minutes):
    a = analyze(_with_baseline(_lag_spike(WINDOW, at_min, minutes), _lag_spike(BEFORE, 99)))
    assert a.top.cause == "router_down", a.hypotheses[["cause", "confidence"]].head(3)


def _errors(window: Window, prefix: str, code: str, n: int) -> Evidence:
    return _evidence(window, messages=_messages(window, 1000, prefix), status_events=[], spans=[], dlq_records=[],
                     consumer_lag=[], log_events=_log_lines(window, n, f"WhatsApp API error (#{code}) {{i}}"))


BACKGROUND = {"131016": 60, "131026": 80, "190": 40, "130429": 70}
"""A mixed background of platform errors (code -> lines an hour), each naming a different cause."""
TOO_LONG = "100"


def _background(window: Window, prefix: str, counts: dict[str, int]) -> Evidence:
    lines = [_log_lines(window, n, f"WhatsApp API error (#{code}) "
                        + ("text too long " if code == TOO_LONG else "") + "{i}")
             for code, n in counts.items() if n]
    return _evidence(window, messages=_messages(window, 1000, prefix), status_events=[], spans=[], dlq_records=[],
                     consumer_lag=[], log_events=_concat(*lines))


def test_a_mixed_background_that_shifts_a_little_between_causes_is_the_usual_noise():
    shifted = {"131016": 72, "131026": 66, "190": 49, "130429": 63, TOO_LONG: 4}  # each within its noise
    a = analyze(_with_baseline(_background(WINDOW, "w", shifted), _background(BEFORE, "b", BACKGROUND)))
    assert a.top.cause == "healthy", a.hypotheses[["cause", "confidence"]].head(3)


def test_a_few_dozen_new_rejections_stand_out_where_the_backgrounds_volume_hides_them():
    # 270 + 30 against 250 lines: the total volume alone does not rise significantly
    window = {**BACKGROUND, TOO_LONG: 30}
    a = analyze(_with_baseline(_background(WINDOW, "w", window), _background(BEFORE, "b", BACKGROUND)))
    assert a.top.cause == "content_over_limit", a.hypotheses[["cause", "confidence"]].head(3)
    assert rate_test(sum(window.values()), 1000, sum(BACKGROUND.values()), 1000)[1] > 0.01
    chronic = set(a.chronic["finding_id"])
    assert not chronic & {i.get("finding_id") for i in a.top.evidence_for}


def test_one_cause_rising_inside_the_background_counts_only_its_rise():
    window = {**BACKGROUND, "131016": 160}  # the outage's code: 60 an hour before, 160 now
    a = analyze(_with_baseline(_background(WINDOW, "w", window), _background(BEFORE, "b", BACKGROUND)))
    assert a.top.cause == "platform_outage", a.hypotheses[["cause", "confidence"]].head(3)
    assert "only 100 error log lines above the baseline's rate" in a.top.evidence_for[0]["statement"]


def _retried(window: Window, prefix: str, messages: int, tries: int = 6) -> Evidence:
    """``messages`` messages rate-limited, each retried ``tries`` times: one error span per try
    (spans name no message), one log line per message naming it."""
    lines = _log_lines(window, messages, "WhatsApp API error (#130429) {i}")
    lines["message_id"] = [f"{prefix}{i}" for i in range(messages)]
    n = messages * tries
    step = window.duration.total_seconds() / max(n, 1)
    spans = {"trace_id": [f"{prefix}t{i // tries}" for i in range(n)], "span_id": [f"{prefix}s{i}" for i in range(n)],
             "service": ["whatsapp-connector"] * n, "operation": ["send"] * n,
             "start": [window.start + pd.Timedelta(seconds=i * step) for i in range(n)],
             "duration_ms": [5.0] * n, "error": [True] * n,
             "status_message": ["WhatsApp API error (#130429) rate limit hit"] * n}
    return _evidence(window, messages=_messages(window, 1000, prefix), status_events=[], dlq_records=[],
                     consumer_lag=[], log_events=lines, spans=spans)


def test_a_cause_rises_by_its_messages_not_by_the_rows_each_retry_leaves():
    # 180 error spans against 120 is a clear rise of rows; 30 messages against 20 is within the noise
    assert rate_test(180, 1000, 120, 1000, exact=True)[1] < 0.001
    assert rate_test(30, 1000, 20, 1000, exact=True)[1] > 0.05
    a = analyze(_with_baseline(_retried(WINDOW, "w", 30), _retried(BEFORE, "b", 20)))
    assert a.top.cause == "healthy", a.hypotheses[["cause", "confidence"]].head(3)
    rising = analyze(_with_baseline(_retried(WINDOW, "w", 60), _retried(BEFORE, "b", 20)))
    assert rising.top.cause == "platform_rate_limit", rising.hypotheses[["cause", "confidence"]].head(3)


def test_holm_keeps_the_familys_false_rises_under_alpha():
    from forensics.analysis.significance import holm

    assert holm({"a": 0.004, "b": 0.03, "c": 0.5}) == pytest.approx({"a": 0.012, "b": 0.06, "c": 0.5})
    assert holm({"a": 0.02, "b": 0.001}) == pytest.approx({"a": 0.02, "b": 0.002})
    assert holm({}) == {}


def test_tarones_rule_leaves_out_causes_too_sparse_to_ever_be_significant():
    from forensics.analysis.significance import holm

    p = {"rise": 0.004, "twice": 0.25, "once": 0.5, "chronic": 0.6}
    least = {"rise": 1e-6, "twice": 0.25, "once": 0.5, "chronic": 1e-9}
    # alone in a family of four the rise is not significant at 1 %; the two sparse causes could
    # never be, so the family is the rise and the chronic cause
    assert holm(p)["rise"] == pytest.approx(0.016)
    adjusted = holm(p, least)
    assert adjusted["rise"] == pytest.approx(0.008) and adjusted["once"] == adjusted["twice"] == 1.0
    assert adjusted["chronic"] == pytest.approx(0.6)


def test_the_baseline_borrows_the_windows_identities_but_not_its_locks():
    identities = {"platform": ["WHATSAPP"], "platform_user_id": ["+5511990000001"], "format_valid": [True]}
    locks = {"key": ["conversation:lock:c1"], "kind": ["conversation_lock"], "sampled_at": [WINDOW.end]}
    window = _evidence(WINDOW, messages=_messages(WINDOW, 10, "w"), identities=identities, locks=locks)
    a = analyze(_with_baseline(window, _evidence(BEFORE, messages=_messages(BEFORE, 10, "b"))))
    base = a.detection.baseline.context.evidence
    assert base.has("identities") and not base.has("locks")
    assert window.baseline.has("identities") is False  # the collected baseline itself is left as it was


def test_a_poison_record_is_a_partition_problem_in_the_catalog():
    from forensics.analysis.classify import classify_series

    texts = pd.Series(["org.apache.kafka.common.errors.RecordDeserializationException: Error deserializing "
                       "key/value for partition chat-events-3 at offset 1234",
                       "Consumer exception | java.lang.IllegalStateException: This error handler cannot process "
                       "'SerializationException's directly; please consider configuring an 'ErrorHandlingDeserializer'"])
    assert classify_series(texts)["cause"].tolist() == ["partition_problem", "partition_problem"]


# ---- evidence for and against, close calls ---------------------------------------------------------------

def test_a_finding_is_listed_once_and_on_one_side_only():
    item = {"finding_id": "consumer_lag:g/t", "statement": "lag", "strength": 1.0}
    ev_for, ev_against = _sides([{**item, "weight": 0.2}, {**item, "weight": 0.2}, {"statement": "note"}],
                                [{**item, "weight": -0.5}])
    assert [i.get("finding_id") for i in ev_for] == [None]
    assert [i["finding_id"] for i in ev_against] == ["consumer_lag:g/t"]


def test_a_close_call_names_both_causes_and_the_separating_check():
    a = Hypothesis("router_down", "Router down", 0.52, margin=0.04)
    b = Hypothesis("partition_problem", "Partition", 0.48, margin=0.3)
    call = close_call([a, b])
    assert call["causes"] == ["router_down", "partition_problem"] and call["margin"] == 0.04
    assert "partition" in call["separating_check"].lower() and "consumer" in call["separating_check"].lower()
    assert close_call([Hypothesis("router_down", "Router down", 0.9, margin=CLOSE_MARGIN), b]) is None


def test_findings_carry_baseline_value_change_and_onset_columns():
    a = analyze(_with_baseline(_noisy_healthy(WINDOW, "w"), _noisy_healthy(BEFORE, "b")))
    assert {"baseline_value", "change", "change_ratio", "onset"} <= set(a.findings.columns)
    assert "margin" in a.hypotheses.columns


# ---- calibration ----------------------------------------------------------------------------------------

def test_platt_fit_recovers_a_known_mapping_and_scores_it():
    rng = np.random.default_rng(1)
    scores = rng.uniform(0, 1, 4000)
    truth = platt(6.0, -3.0)
    labels = rng.uniform(0, 1, 4000) < np.array([truth(s) for s in scores])
    a, b = fit_platt(scores, labels)
    assert a == pytest.approx(6.0, rel=0.15) and b == pytest.approx(-3.0, rel=0.15)
    probs = np.array([platt(a, b)(s) for s in scores])
    assert brier(probs, labels) < brier(np.full(4000, 0.5), labels)
    bins = reliability(probs, labels)
    assert sum(r["n"] for r in bins) == 4000
    assert all(abs(r["predicted"] - r["observed"]) < 0.1 for r in bins if r["n"] > 200)


def test_isotonic_fit_bends_where_a_sigmoid_cannot_and_stays_monotonic():
    # Scores up to 0.45 are almost never the true cause, scores above 0.6 almost always: the
    # middle band a sigmoid must blur. The isotonic map keeps it low, is non-decreasing, and
    # scores better than the sigmoid fitted to the same hypotheses.
    rng = np.random.default_rng(2)
    scores = np.r_[rng.uniform(0, 0.45, 3000), rng.uniform(0.6, 1.0, 600)]
    labels = np.r_[rng.uniform(0, 1, 3000) < 0.02, rng.uniform(0, 1, 600) < 0.97]
    knots, shares = fit_isotonic(scores, labels)
    assert knots == sorted(knots) and shares == sorted(shares) and 0 < shares[0] and shares[-1] < 1
    mapped = isotonic(knots, shares)
    assert mapped(0.35) < 0.1 and mapped(0.9) > 0.9 and mapped(-1) == shares[0] and mapped(2) == shares[-1]
    iso = np.array([mapped(s) for s in scores])
    a, b = fit_platt(scores, labels)
    sig = np.array([platt(a, b)(s) for s in scores])
    assert brier(iso, labels) < brier(sig, labels)
    assert all(abs(r["predicted"] - r["observed"]) < 0.05 for r in reliability(iso, labels) if r["n"] > 200)


def test_the_shipped_calibration_loads_as_data(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text('{"method": "isotonic", "scores": [0.1, 0.9], "probabilities": [0.02, 0.98]}')
    assert load_calibration(path)(0.5) == pytest.approx(0.5)
    path.write_text('{"method": "platt", "a": 6.0, "b": -3.0}')
    load_calibration.cache_clear()
    assert load_calibration(path)(0.5) == pytest.approx(0.5)
    load_calibration.cache_clear()


def test_a_detection_error_in_findings_keeps_working_without_baseline_columns_set():
    f = Finding("x", "", "info", "t")
    assert f.row()["change"] is None and f.row()["baseline_value"] is None


# ---- harmless windows: judged on what was lost, like with like ----------------------------------------

WA_ERROR = 'Connector returned error: status=400, body={{"error":{{"message":"(#{code}) x","code":{code}}}}}'


def _blip_with_failures(window: Window, prefix: str, codes: list[str], blip_at: int | None) -> Evidence:
    """600 messages, the first ``len(codes)`` FAILED with those WhatsApp codes, and the router's
    lag spiking for one minute at ``blip_at`` (none: 0 throughout)."""
    ev = _lag_spike(window, blip_at if blip_at is not None else 99)
    n, k = 600, len(codes)
    m = _messages(window, n, prefix)
    m["status"] = ["FAILED"] * k + ["DELIVERED"] * (n - k)
    m["error_message"] = [WA_ERROR.format(code=c) for c in codes] + [None] * (n - k)
    ev.put("messages", pd.DataFrame(m).pipe(lambda f: Evidence.from_records(window, source="test", messages=f)
                                              .table("messages")))
    return ev


def test_a_new_code_among_as_many_failed_messages_as_before_leaves_a_blip_harmless():
    # Background failures of mixed codes: one code absent from the baseline shows "new" on its own
    # test (8 against 0), but as many messages FAILED as before; nothing was lost, the lag was a blip.
    window = _blip_with_failures(WINDOW, "w", ["131049"] * 8 + ["131026"] * 8, blip_at=20)
    before = _blip_with_failures(BEFORE, "b", ["131026"] * 16, blip_at=None)
    a = analyze(_with_baseline(window, before))
    verdicts = a.findings.set_index("finding_id")["change"]
    assert verdicts.filter(like="131049").eq("new").any()
    assert not lost_anew(a.detection, [f for f in a.detection.items if is_change(f)])
    assert a.top.cause == "healthy", a.hypotheses[["cause", "confidence"]].head(3)


def test_more_failed_messages_than_before_are_a_loss_so_no_blip():
    window = _blip_with_failures(WINDOW, "w", ["131049"] * 60, blip_at=20)
    before = _blip_with_failures(BEFORE, "b", ["131026"] * 16, blip_at=None)
    a = analyze(_with_baseline(window, before))
    assert lost_anew(a.detection, [f for f in a.detection.items if is_change(f)])
    assert a.top.cause != "healthy"


def _latencies(window: Window, prefix: str, slow: int, n: int = 600) -> Evidence:
    """n messages over the window, delivered 1 s after creation, but ``slow`` of those in the
    window's 13th minute, delivered after 20 s."""
    m = _messages(window, n, prefix)
    slow_at = [i for i, t in enumerate(m["created_at"]) if 12 * 60 <= (t - window.start).total_seconds()][:slow]
    delay = [20.0 if i in slow_at else 1.0 for i in range(n)]
    events = {"message_id": m["message_id"], "new_status": ["DELIVERED"] * n, "derived": [False] * n,
              "timestamp": [t + pd.Timedelta(seconds=d) for t, d in zip(m["created_at"], delay, strict=True)]}
    return _evidence(window, messages=m, status_events=events)


@pytest.mark.parametrize("slow_before", [3, 0])
def test_a_p95_breach_of_a_few_slow_messages_is_the_usual_picture(slow_before):
    # Three slow messages of fifty break one five-minute window's P95; as many slow messages
    # before, or three where the baseline had none, is the same picture, however well the
    # baseline's whole-period P95 kept the SLA.
    change = "unchanged"
    a = analyze(_with_baseline(_latencies(WINDOW, "w", 3), _latencies(BEFORE, "b", slow_before)))
    p95 = a.findings[a.findings["detector"] == "delivery_p95"]
    assert len(p95) and set(p95["change"]) == {change}
    assert (p95["baseline_value"] < 5).all()  # the baseline's P95 is what is shown


def test_many_more_slow_messages_than_before_are_a_new_breach():
    a = analyze(_with_baseline(_latencies(WINDOW, "w", 40), _latencies(BEFORE, "b", 3)))
    assert set(a.findings.loc[a.findings["detector"] == "delivery_p95", "change"]) == {"new"}


def _locked(window: Window, prefix: str, ttl: list[float | None]) -> Evidence:
    """600 delivered messages, the last three of conversation ``<prefix>c-held`` PENDING, and the
    Redis conversation locks at the period's end with TTLs ``ttl`` (the first on that conversation)."""
    m = _messages(window, 600, prefix)
    m["conversation_id"][-3:] = [f"{prefix}c-held"] * 3
    m["status"][-3:] = ["PENDING"] * 3
    convs = [f"{prefix}c-held"] + [f"{prefix}c{i}" for i in range(1, len(ttl))]
    return _evidence(window, messages=m, locks={
        "key": [f"conversation:lock:{c}" for c in convs], "kind": ["conversation_lock"] * len(ttl),
        "conversation_id": convs, "ttl_s": ttl, "sampled_at": [window.end] * len(ttl)})


def test_one_lock_without_expiry_holding_messages_is_new_against_the_normal_lock_picture_and_ranks_first():
    # The normal picture: conversation locks that expire within lock_ttl_s. One lock without a TTL
    # holding one conversation's messages is a fault in full, however few conversations it holds.
    a = analyze(_with_baseline(_locked(WINDOW, "w", [None, 12.0, 3.0]), _locked(BEFORE, "b", [25.0, 12.0])))
    lock = a.findings[a.findings["detector"] == "stuck_locks"]
    assert list(lock["change"]) == ["new"] and list(lock["baseline_value"]) == [0.0]
    assert a.top.cause == "conversation_lock_stuck", a.hypotheses[["cause", "confidence"]].head(3)


def test_a_lock_without_expiry_there_before_too_is_chronic_not_the_cause():
    a = analyze(_with_baseline(_locked(WINDOW, "w", [None]), _locked(BEFORE, "w", [None])))
    assert list(a.findings.loc[a.findings["detector"] == "stuck_locks", "change"]) == ["unchanged"]
    assert a.top.cause != "conversation_lock_stuck"
