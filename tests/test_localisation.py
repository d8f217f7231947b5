"""Localisation detectors on crafted tables: confined, spread, too few to tell, with and without a
baseline; and the ranking weighing them."""

import json

import numpy as np
import pandas as pd
import pytest
from jsonschema import Draft202012Validator

from forensics.analysis.detectors import detect
from forensics.analysis.detectors.localisation import CONCENTRATED, CONFINED, SPREAD, Counts, localise, locate
from forensics.analysis.pipeline import analyze
from forensics.analysis.rank import hypotheses, signals
from forensics.analysis.significance import binomial_tail, share_test
from forensics.contracts import contract
from forensics.evidence import Evidence
from forensics.report import runner
from forensics.report.params import validate_report_params
from forensics.report.rca import RcaReport
from forensics.simulate import simulate
from forensics.timeutil import Window

END = pd.Timestamp("2025-12-03T15:00:00Z")
WINDOW = Window(END - pd.Timedelta("1h"), END)
BEFORE = Window(END - pd.Timedelta("2h"), END - pd.Timedelta("1h"))


def _messages(window: Window, counts: dict[str, tuple[int, int]], prefix: str, recipients: dict | None = None
              ) -> dict:
    """``counts``: channel -> (messages, FAILED); FAILED ones first; ``recipients``: channel ->
    recipient id of its FAILED messages (else one recipient per message)."""
    rows = {k: [] for k in ("message_id", "conversation_id", "recipient_id", "sender_id", "channel", "status",
                            "created_at", "updated_at")}
    for channel, (n, failed) in counts.items():
        for i in range(n):
            at = window.start + pd.Timedelta(seconds=60 + i * (window.duration.total_seconds() - 600) / n)
            bad = i < failed
            rid = (recipients or {}).get(channel) if bad and (recipients or {}).get(channel) else (
                f"+5511{i:09d}" if channel == "WHATSAPP" else f"@user_{channel.lower()}_{i}")
            rows["message_id"].append(f"{prefix}-{channel}-{i}")
            rows["conversation_id"].append(f"{prefix}-c-{channel}-{i}")
            rows["recipient_id"].append(rid)
            rows["sender_id"].append(f"customer-{i % 4}")
            rows["channel"].append(channel)
            rows["status"].append("FAILED" if bad else "READ")
            rows["created_at"].append(at)
            rows["updated_at"].append(at + pd.Timedelta(seconds=1))
    return rows


def _evidence(window: Window, counts: dict[str, tuple[int, int]], prefix: str = "w", **tables) -> Evidence:
    return Evidence.from_records(window, None, source="test",
                                 messages=_messages(window, counts, prefix, tables.pop("recipients", None)), **tables)


def _scopes(detection, name: str):
    return [f for f in detection.items if f.detector == name]


def _window_only(counts, **tables):
    return _scopes(detect(_evidence(WINDOW, counts, **tables), only=["channel_scope"]), "channel_scope")


def _against(now, before, name="channel_scope", **tables):
    detection = detect(_evidence(WINDOW, now, **tables))
    localise(detection, detect(_evidence(BEFORE, before, "b", **tables)))
    return _scopes(detection, name)


# ---- the tests on counts ----------------------------------------------------------------------------

def test_the_binomial_tail_is_exact_for_a_handful_of_events():
    assert binomial_tail(4, 4, 0.5) == pytest.approx(0.0625)
    assert binomial_tail(3, 10, 0.2) == pytest.approx(1 - sum([0.107374, 0.268435, 0.301990]), abs=1e-5)
    assert binomial_tail(0, 10, 0.3) == 1.0 and binomial_tail(11, 10, 0.3) == 0.0


def test_the_share_test_weighs_the_expected_share():
    ratio, p = share_test(90, 100, 0.5)
    assert ratio > 5 and p < 1e-15
    assert share_test(52, 100, 0.5)[1] > 0.3
    assert share_test(3, 3, 0.5)[1] == pytest.approx(0.125)  # all of three in half the traffic: could be chance


# ---- channel ------------------------------------------------------------------------------------------

def test_failures_on_one_channel_only_are_confined_to_it():
    (f,) = _window_only({"WHATSAPP": (300, 60), "TELEGRAM": (300, 0), "INSTAGRAM": (200, 1)})
    assert f.tags["scope"] == CONFINED and f.tags["levels"] == ["WHATSAPP"] and f.channel == "WHATSAPP"
    assert f.count == 60 and f.metric == pytest.approx(60 / 61) and f.threshold == pytest.approx(300 / 800)
    assert "confined to WHATSAPP" in f.title and len(f.messages) == 60


def test_failures_in_proportion_to_traffic_are_spread():
    (f,) = _window_only({"WHATSAPP": (400, 40), "TELEGRAM": (200, 20), "INSTAGRAM": (200, 21)})
    assert f.tags["scope"] == SPREAD and f.severity == "info" and f.channel is None
    assert "spread over every channel" in f.title


@pytest.mark.parametrize("failed", [{"WHATSAPP": (300, 3), "TELEGRAM": (300, 0)},    # 3 of 3: p = 1/8
                                    {"WHATSAPP": (300, 0), "TELEGRAM": (300, 0)}])   # none at all
def test_too_few_failures_tell_nothing(failed):
    assert _window_only(failed) == []


def test_against_the_baseline_a_chronic_concentration_is_not_a_change():
    steady = {"WHATSAPP": (300, 30), "TELEGRAM": (300, 0)}
    assert _against(steady, steady) == []


def test_against_the_baseline_only_the_new_failures_are_placed():
    """WhatsApp always fails 10 %; now Telegram fails too: confined to Telegram, although WhatsApp
    still holds failures well beyond its share of the traffic."""
    (f,) = _against({"WHATSAPP": (300, 30), "TELEGRAM": (300, 40), "INSTAGRAM": (300, 0)},
                    {"WHATSAPP": (300, 30), "TELEGRAM": (300, 0), "INSTAGRAM": (300, 0)})
    assert f.tags["scope"] == CONFINED and f.tags["levels"] == ["TELEGRAM"]
    assert f.change == "new" and f.baseline_value == 0 and f.tags["against_baseline"]


def test_against_the_baseline_a_channel_that_holds_most_while_the_rest_rose_is_concentrated():
    (f,) = _against({"WHATSAPP": (300, 120), "TELEGRAM": (300, 30)},
                    {"WHATSAPP": (300, 2), "TELEGRAM": (300, 2)})
    assert f.tags["scope"] == CONCENTRATED and f.tags["levels"] == ["WHATSAPP"] and f.change == "worse"


def test_against_the_baseline_a_rise_everywhere_is_spread():
    (f,) = _against({"WHATSAPP": (300, 45), "TELEGRAM": (300, 40)}, {"WHATSAPP": (300, 2), "TELEGRAM": (300, 3)})
    assert f.tags["scope"] == SPREAD and f.change == "worse"


# ---- recipients ---------------------------------------------------------------------------------------

def test_failures_of_a_few_recipients_are_a_recipient_set():
    """One WhatsApp recipient holds every FAILED message; the channel's other recipients are fine."""
    ev = _evidence(WINDOW, {"WHATSAPP": (400, 30), "TELEGRAM": (300, 0)}, recipients={"WHATSAPP": "+5511900000001"})
    found = {f.tags["attribute"]: f for f in _scopes(detect(ev, only=["recipient_scope"]), "recipient_scope")}
    assert found["recipient"].tags["levels"] == ["+5511900000001"] and found["recipient"].count == 30
    assert "1 recipient" in found["recipient"].title
    assert "identity" not in found  # a valid number: not an identity class


def test_failures_of_malformed_recipients_are_an_identity_class():
    ev = _evidence(WINDOW, {"WHATSAPP": (400, 30)}, recipients={"WHATSAPP": "5511 9000-0001"})
    found = {f.tags["attribute"]: f for f in _scopes(detect(ev, only=["recipient_scope"]), "recipient_scope")}
    assert found["identity"].tags["levels"] == ["malformed"]


def test_a_channel_wide_outage_is_not_a_recipient_set():
    ev = _evidence(WINDOW, {"WHATSAPP": (400, 400), "TELEGRAM": (300, 0)})
    assert _scopes(detect(ev, only=["recipient_scope"]), "recipient_scope") == []


# ---- connectors and services ----------------------------------------------------------------------------

def _logs(window: Window, lines: dict[str, tuple[int, int]], prefix: str) -> dict:
    """``lines``: service -> (lines, ERROR lines), spread over the window."""
    out = {k: [] for k in ("timestamp", "service", "level", "message", "message_id")}
    for service, (n, errors) in lines.items():
        for i in range(n):
            out["timestamp"].append(window.start + pd.Timedelta(seconds=30 + i * 3000 / n))
            out["service"].append(service)
            out["level"].append("ERROR" if i < errors else "INFO")
            out["message"].append("Error calling connector: Connection refused" if i < errors else "sent")
            out["message_id"].append(f"{prefix}-{service}-{i}")
    return out


TRAFFIC = {"WHATSAPP": (300, 0), "TELEGRAM": (300, 0), "INSTAGRAM": (300, 0)}


def test_errors_of_one_connector_are_confined_to_it():
    ev = _evidence(WINDOW, TRAFFIC, log_events=_logs(WINDOW, {"whatsapp-connector": (300, 5),
                                                              "telegram-connector": (300, 60),
                                                              "instagram-connector": (300, 4)}, "w"))
    (f,) = _scopes(detect(ev, only=["connector_scope"]), "connector_scope")
    assert f.tags["scope"] == CONFINED and f.tags["levels"] == ["telegram-connector"] and f.channel == "TELEGRAM"


def test_errors_of_every_connector_alike_are_spread():
    ev = _evidence(WINDOW, TRAFFIC, log_events=_logs(WINDOW, {"whatsapp-connector": (300, 30),
                                                              "telegram-connector": (300, 28),
                                                              "instagram-connector": (300, 33)}, "w"))
    (f,) = _scopes(detect(ev, only=["connector_scope"]), "connector_scope")
    assert f.tags["scope"] == SPREAD


def test_new_errors_of_one_service_against_its_usual_errors():
    """The router always logs errors at the same rate; the message service begins to: only it is the change."""
    usual = {"router-service": (600, 60), "api-gateway": (600, 0)}
    now = _evidence(WINDOW, TRAFFIC, log_events=_logs(WINDOW, {**usual, "message-service": (600, 80)}, "w"))
    before = _evidence(BEFORE, TRAFFIC, "b", log_events=_logs(BEFORE, {**usual, "message-service": (600, 0)}, "b"))
    detection = detect(now)
    localise(detection, detect(before))
    (f,) = _scopes(detection, "service_scope")
    assert f.tags["scope"] == CONFINED and f.tags["levels"] == ["message-service"] and f.change == "new"
    assert f.times is not None and len(f.times) == 80


def test_too_few_error_lines_tell_nothing():
    ev = _evidence(WINDOW, TRAFFIC, log_events=_logs(WINDOW, {"whatsapp-connector": (300, 2),
                                                              "telegram-connector": (300, 0)}, "w"))
    assert _scopes(detect(ev, only=["connector_scope", "service_scope"]), "connector_scope") == []


def test_locate_needs_two_levels():
    one = Counts("channel", "channel", pd.DataFrame({"level": ["WHATSAPP"], "stratum": [""], "k": [50.0],
                                                     "e": [100.0]}), "messages", "messages")
    assert locate(one, None) is None


# ---- the ranking weighs it ------------------------------------------------------------------------------

def _credential_failures(window: Window, prefix: str, per_channel: dict[str, int]) -> Evidence:
    counts = {ch: (300, n) for ch, n in per_channel.items()}
    ev = _evidence(window, counts, prefix)
    m = ev.tables["messages"].copy()
    m["error_message"] = np.where(m["status"] == "FAILED",
                                  'Connector returned error: status=401, body={"error":{"message":"Error validating '
                                  'access token: Session has expired","type":"OAuthException","code":190,'
                                  '"error_subcode":463}}', None)
    ev.put("messages", m.astype({"error_message": "string"}))
    return ev


def _ranked(per_channel: dict[str, int]):
    detection = detect(_credential_failures(WINDOW, "w", per_channel))
    baseline = detect(_credential_failures(BEFORE, "b", {ch: 0 for ch in per_channel}))
    detection.baseline = baseline
    localise(detection, baseline)
    return {h.cause: h for h in hypotheses(detection)}, signals(detection)


def test_the_ranking_uses_where_the_failures_are():
    """The same expired-token failures: on one channel they are that connector's token (the
    localisation supports it); spread over every channel the same errors count less for one
    connector's credential, and the statement says why."""
    one, sig_one = _ranked({"WHATSAPP": 60, "TELEGRAM": 0, "INSTAGRAM": 0})
    every, sig_every = _ranked({"WHATSAPP": 20, "TELEGRAM": 20, "INSTAGRAM": 20})
    assert "one_channel" in sig_one and "all_channels" not in sig_one
    assert "all_channels" in sig_every and "one_channel" not in sig_every
    assert one["credential_expiry"].score > every["credential_expiry"].score
    assert any(i.get("finding_id") == "channel_scope" for i in one["credential_expiry"].evidence_for)
    assert any(i.get("finding_id") == "channel_scope" for i in every["credential_expiry"].evidence_against)


def test_a_simulated_incident_says_where_in_the_summary_and_the_report():
    """A WhatsApp broadcast hits the rate limit (the simulator, with the hour before as baseline):
    the failures are confined to WhatsApp, which supports the top cause; summary.json carries it
    within its contract (summary.json as build_report writes it), report.md has the Where lines."""
    ev = simulate("whatsapp-rate-limit", messages=800, seed=3)
    a = analyze(ev)
    assert a.top.cause == "platform_rate_limit"
    (channel,) = [w for w in a.top.where if w["dimension"] == "channel"]
    assert channel["scope"] == CONFINED and channel["levels"] == ["WHATSAPP"] and channel["bearing"] == "for"
    rca = RcaReport.build(ev, a, validate_report_params(bundle="", redact=True))
    summary = json.loads(json.dumps(rca.summary_json(), default=str))
    assert not list(Draft202012Validator(contract("summary")).iter_errors(summary))
    detail = {f["finding_id"]: f for f in summary["findings_detail"]}
    assert detail["channel_scope"]["localisation"]["levels"] == ["WHATSAPP"]
    assert summary["hypotheses"][0]["where"][0]["bearing"] in ("for", "against", "neutral")
    md = runner.markdown_report(ev, a)
    assert "Where: Failures confined to WHATSAPP" in md and "(supports this cause)" in md


def test_errors_of_every_service_alike_are_spread_and_a_few_lines_tell_nothing():
    alike = {"router-service": (600, 60), "message-service": (600, 58), "api-gateway": (600, 62)}
    (f,) = _scopes(detect(_evidence(WINDOW, TRAFFIC, log_events=_logs(WINDOW, alike, "w")), only=["service_scope"]),
                   "service_scope")
    assert f.tags["scope"] == SPREAD and f.tags["dimension"] == "service"
    few = {"router-service": (600, 2), "message-service": (600, 0), "api-gateway": (600, 0)}
    assert _scopes(detect(_evidence(WINDOW, TRAFFIC, log_events=_logs(WINDOW, few, "w")), only=["service_scope"]),
                   "service_scope") == []
