"""The review narrative: numbers in reader's units (forensics.units), the delivery SLA counting failures, the
course of an incident, delivery-impact severities and the causes a missing source leaves open."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from forensics import units
from forensics.analysis.pipeline import affected_messages, analyze, delivery_sla
from forensics.evidence import Evidence
from forensics.report import narrative
from forensics.simulate import simulate
from forensics.timeutil import Window


@pytest.mark.parametrize(("value", "expected"), [
    (0.927019050174403, "0.927"), (88.35939999999998, "88.4"), (4702, "4,702"), (4702.0, "4,702"),
    (1.23456, "1.23"), (0.0004, "0.0004"), (None, "unknown"), (float("nan"), "unknown"), (1250000.5, "1,250,000"),
])
def test_number_rounds_to_three_significant_digits(value, expected):
    assert units.number(value) == expected


@pytest.mark.parametrize(("part", "whole", "expected"), [
    (298, 1000, "29.8 %"), (1, 1, "100 %"), (0, 10, "0 %"), (1, 5000, "< 0.1 %"), (5, 100, "5 %"),
    (3, 0, "unknown"), (None, 3, "unknown"),
])
def test_percent_has_one_decimal_and_a_space(part, whole, expected):
    assert units.percent(part, whole) == expected


@pytest.mark.parametrize(("seconds", "expected"), [
    (1.23, "1.2 s"), (42.4, "42 s"), (252, "4.2 min"), (300, "5 min"), (7500, "2 h 5 min"), (7200, "2 h"),
    (None, "unknown"),
])
def test_duration_reads_like_a_person_says_it(seconds, expected):
    assert units.duration(seconds) == expected


@pytest.mark.parametrize(("n", "unit", "expected"), [
    (4702, "messages", "4,702 messages"), (1, "messages", "1 message"), (1, "FAILED messages", "1 FAILED message"),
    (1, "error spans (attempts)", "1 error span (attempt)"), (3, "error spans", "3 error spans"), (2, "DLQ records", "2 DLQ records"),
    (1, "DLQ records", "1 DLQ record"), (None, "messages", "an unknown number of messages"),
])
def test_count_names_its_unit(n, unit, expected):
    assert units.count(n, unit) == expected


def test_metric_text_uses_the_detectors_unit():
    assert narrative.metric_text("delivery_p95", 88.35939999999998) == "88 s"
    assert narrative.metric_text("failed_rate", 0.33707865168539325) == "33.7 %"
    assert narrative.metric_text("consumer_lag", 1250.0) == "1,250 records behind (lag)"
    assert narrative.metric_text("failed_rate", None) == ""


def test_every_registered_detector_says_what_it_counts():
    from forensics.analysis.detectors import DETECTORS

    assert set(DETECTORS) <= set(narrative.FINDING_UNITS)


@pytest.fixture(scope="module")
def rate_limit():
    ev = simulate("whatsapp-rate-limit", messages=3000, seed=1)
    return ev, analyze(ev)


def _window() -> Window:
    return Window(pd.Timestamp("2025-12-03T14:00Z"), pd.Timestamp("2025-12-03T15:00Z"))


def test_failed_messages_count_against_the_delivery_sla():
    """Half the messages FAILED, every delivered one was fast: P95 of the delivered looks fine,
    the SLA over every message is breached."""
    start = pd.Timestamp("2025-12-03T14:00Z")
    messages, events = [], []
    for i in range(200):
        created = start + pd.Timedelta(seconds=10 * i)
        status = "FAILED" if i % 2 else "DELIVERED"
        messages.append({"message_id": f"m{i}", "conversation_id": f"c{i % 20}", "channel": "WHATSAPP",
                         "status": status, "created_at": created, "updated_at": created + pd.Timedelta(seconds=1),
                         "recipient_id": f"r{i}"})
        events.append({"message_id": f"m{i}", "new_status": status, "timestamp": created + pd.Timedelta(seconds=1),
                       "channel": "WHATSAPP", "derived": False})
    ev = Evidence.from_records(_window(), messages=messages, status_events=events)
    sla = delivery_sla(analyze(ev).detection)
    assert sla.judged == 200 and sla.met == 100 and sla.failed == 100 and sla.late == 0
    assert sla.breached is True and sla.met_share == pytest.approx(0.5)
    assert "a FAILED or never-delivered message counts as missed" in sla.statement()
    assert sla.verdict() == "Breached: 50 % of 200 messages were DELIVERED within 5 s (missed: 100 FAILED)."


def test_review_of_an_incident_says_when_who_why_in_units(rate_limit):
    ev, an = rate_limit
    r = narrative.review(ev, an)
    assert r.when["start"] is not None and r.when["detected"] is not None
    assert r.when["start"] <= r.when["detected"]
    assert r.who["messages_affected"] == an.impact["messages_affected"]
    assert r.why["cause"] == "platform_rate_limit"
    assert r.why["evidence"]["unit"] == "FAILED messages"
    assert r.why["evidence"]["whole"] == an.impact["messages_failed"]
    kinds = [m.kind for m in r.key_moments]
    assert kinds[0] in ("onset", "first_failure_of_cause") and "peak" in kinds and "alert_would_fire" in kinds
    assert [m.at for m in r.key_moments] == sorted(m.at for m in r.key_moments)
    heads = [h for h, _ in r.sentences()]
    assert heads == ["What happened", "When", "Who", "Why", "What to do now", "How sure", "Delivery SLA"]


def test_the_report_has_one_onset_the_analysis_change_point(rate_limit):
    ev, an = rate_limit
    r = narrative.review(ev, an)
    start = an.onset["start"]
    assert start is not None and r.when["start"] == start  # the summary's "when" and summary.json's onset
    assert [m.at for m in r.key_moments if m.kind == "onset"] == [pd.Timestamp(start)]
    onset_events = an.timeline[an.timeline["kind"] == "incident_onset"]
    assert list(onset_events["timestamp"]) == [pd.Timestamp(start)]


def test_an_incident_under_way_at_window_open_gives_its_earliest_evidence_as_the_onset():
    ev = simulate("router-outage", messages=2000, seed=2, under_way=True, baseline=None)
    an = analyze(ev)
    r = narrative.review(ev, an)
    assert an.onset["under_way_at_window_start"] and r.when["under_way_at_window_start"]
    assert r.when["start"] == an.onset["start"] == an.onset["earliest_evidence"]
    assert r.when["text"].startswith("It was already under way when the window starts (earliest evidence at")
    assert "collect a wider window" in next(m.text for m in r.key_moments if m.kind == "onset")


def test_an_outage_running_to_the_window_end_is_still_going():
    ev = simulate("router-outage", messages=3000, seed=2)
    r = narrative.review(ev, analyze(ev))
    assert r.when["ongoing"] is True and r.when["end"] is None
    assert "still going at the end of the window" in r.when["text"]
    assert r.key_moments[-1].kind == "end"


def test_a_healthy_window_has_no_onset_and_says_so():
    ev = simulate("baseline", messages=3000, seed=1)
    r = narrative.review(ev, analyze(ev))
    assert r.when["start"] is None and not r.when["ongoing"]
    assert r.what_happened.startswith("No delivery incident stands out")
    assert not [m for m in r.key_moments if m.kind in ("onset", "peak")]


def test_chronic_findings_are_info_and_never_the_first_failure_of_the_cause(rate_limit):
    ev, an = rate_limit
    affected = affected_messages(an.detection)
    plain = narrative.delivery_severity(an.detection, affected, set())
    assert "critical" in plain.values()
    first = next(m for m in narrative.review(ev, an).key_moments if m.kind == "first_failure_of_cause")
    chronic = set(plain)  # everything present before the incident too
    marked = an.findings.assign(change=["unchanged", "better"] * (len(an.findings) // 2) + ["unchanged"] * (len(an.findings) % 2))
    assert narrative.chronic_ids(marked) == set(an.findings["finding_id"])
    assert set(narrative.delivery_severity(an.detection, affected, chronic).values()) == {"info"}
    review = narrative.review(ev, dataclasses.replace(an, findings=marked))
    assert first.kind and not [m for m in review.key_moments if m.kind == "first_failure_of_cause"]
    assert review.why["evidence"] is None


def test_log_line_counts_alone_never_make_a_finding_critical(rate_limit):
    """Severity follows the messages not delivered normally, not the raw count of lines."""
    _, an = rate_limit
    affected = affected_messages(an.detection)
    severity = narrative.delivery_severity(an.detection, affected, set())
    nameless = [f for f in an.detection.items if f.messages is None or not len(f.messages)]
    assert nameless and all(severity[f.finding_id] != "critical" for f in nameless)
    for f in an.detection.items:
        if severity[f.finding_id] == "critical":
            assert affected[f.messages].sum() >= narrative.CRITICAL_SHARE * an.detection.context.n_messages


def test_every_signal_a_rule_reads_names_its_evidence_tables():
    from forensics.analysis.rank import RULES

    used = {s for rule in RULES.values() for s in (*rule.support, *rule.against, *rule.requires, *rule.context)}
    unknown = {s for s in used if not s.startswith(("cause:", "runbook_cause:")) and s not in narrative.SIGNAL_TABLES}
    assert not unknown, f"signals without their evidence tables in narrative.SIGNAL_TABLES: {sorted(unknown)}"


def test_missing_sources_name_the_causes_they_leave_open():
    ev = simulate("router-outage", messages=2000, seed=1)
    ev = dataclasses.replace(ev, tables={k: v for k, v in ev.tables.items()
                                         if k not in ("log_events", "spans", "consumer_lag", "locks")})
    an = analyze(ev)
    left = narrative.open_causes(ev, an.ranked[0].cause)
    assert set(left) == {"log_events", "spans", "consumer_lag", "locks"}
    assert "conversation_lock_stuck" in left["locks"]["cannot_confirm"]
    assert "partition_problem" in left["consumer_lag"]["cannot_rule_out"]
    assert "connector_unreachable" in left["log_events"]["cannot_rule_out"]
    assert all(an.ranked[0].cause not in v for d in left.values() for v in d.values())
    full = simulate("router-outage", messages=2000, seed=1)
    assert narrative.open_causes(full) == {}
