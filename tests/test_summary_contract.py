"""summary.json is a contract: what the toolkit writes validates against the JSON Schema it
ships (forensics/contracts/summary.schema.json, `forensics schema summary`), for incidents of
several kinds, with partial evidence and with none; every finding a hypothesis cites is listed."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from jsonschema import Draft202012Validator

from forensics.analysis.pipeline import analyze
from forensics.cli import main
from forensics.contracts import SUMMARY_SCHEMA_VERSION, contract, contract_text
from forensics.evidence import Evidence
from forensics.report.params import validate_report_params
from forensics.report.rca import RcaReport
from forensics.simulate import simulate
from forensics.timeutil import Window

VALIDATOR = Draft202012Validator(contract("summary"))


def summary_of(evidence: Evidence, redact: bool = True) -> dict:
    """summary.json as build_report writes it (RcaReport.summary_json through JSON)."""
    rca = RcaReport.build(evidence, analyze(evidence), validate_report_params(bundle="", redact=redact))
    return json.loads(json.dumps(rca.summary_json(), default=str))


def assert_valid(summary: dict) -> None:
    errors = sorted(VALIDATOR.iter_errors(summary), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:10])


def test_the_shipped_schema_is_a_valid_draft_2020_12_schema():
    Draft202012Validator.check_schema(contract("summary"))
    assert contract("summary")["properties"]["schema_version"]["pattern"].startswith("^" + SUMMARY_SCHEMA_VERSION[0])


@pytest.mark.parametrize("scenario, profile", [("whatsapp-rate-limit", "runbook"), ("router-outage", "chat4all-v2"),
                                               ("baseline", "runbook")])
def test_summaries_of_simulated_incidents_follow_the_schema(scenario, profile):
    summary = summary_of(simulate(scenario, messages=1500, seed=5, profile=profile))
    assert_valid(summary)
    assert summary["schema_version"] == SUMMARY_SCHEMA_VERSION
    top = summary["hypotheses"][0]
    assert top["cause"] == summary["scenario"]["root_cause"]
    assert [h["rank"] for h in summary["hypotheses"]] == list(range(1, len(summary["hypotheses"]) + 1))
    listed = {f["finding_id"] for f in summary["findings_detail"]}
    cited = {e["finding_id"] for h in summary["hypotheses"] for e in h["evidence_for"] + h["evidence_against"]
             if e["finding_id"]}
    assert cited <= listed, f"cited but not listed: {sorted(cited - listed)}"
    assert sum(summary["findings"].values()) == len(summary["findings_detail"])


def test_the_top_hypothesis_carries_its_evidence_radius_and_action():
    # the window alone: the same traffic this seed always gave (no sporadic Telegram 429 in it)
    summary = summary_of(simulate("whatsapp-rate-limit", messages=1500, seed=5, baseline=None), redact=False)
    top = summary["hypotheses"][0]
    assert top["evidence_for"] and any(e["finding_id"] for e in top["evidence_for"])
    assert top["first_seen"] is not None and top["runbook_step"] and top["recommended_action"]
    radius = top["blast_radius"]
    assert 0 < radius["messages"] <= summary["impact"]["messages_total"]
    assert radius["channels"] == ["WHATSAPP"] and radius["conversations"] > 0 and radius["customers"] > 0
    assert summary["detection"]["first_finding_at"] is not None
    assert summary["detection"]["alerts"] and all(a["rule"] for a in summary["detection"]["alerts"])
    assert summary["report"]["redacted"] is False


def test_partial_and_empty_evidence_still_follow_the_schema():
    ev = simulate("token-expired", messages=800, seed=3)
    partial = Evidence(window=ev.window, profile=ev.profile, tables={"messages": ev.table("messages")},
                       missing={"kafka": "connection refused", "jaeger": "timed out"})
    summary = summary_of(partial)
    assert_valid(summary)
    assert {"kafka", "jaeger", "status_events"} <= set(summary["missing_sources"])
    empty = summary_of(Evidence(Window(pd.Timestamp("2026-01-01", tz="UTC"), pd.Timestamp("2026-01-01 01:00", tz="UTC")),
                                missing={"mongo": "connection refused"}))
    assert_valid(empty)
    assert empty["hypotheses"][0]["cause"] == "unknown" and empty["findings_detail"] == []


def test_a_summary_that_breaks_the_contract_is_refused():
    summary = summary_of(simulate("whatsapp-rate-limit", messages=800, seed=5))
    broken = json.loads(json.dumps(summary))
    del broken["hypotheses"][0]["blast_radius"]
    assert not VALIDATOR.is_valid(broken)
    broken = {**summary, "surprise": 1}
    assert not VALIDATOR.is_valid(broken)


def test_schema_command_prints_the_shipped_schema(capsys):
    assert main(["schema", "summary"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(contract_text("summary"))
    assert main(["schema", "nope"]) == 2
    assert "unknown schema 'nope'" in capsys.readouterr().err
