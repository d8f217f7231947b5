"""The report read as a person in a review meeting reads it.

One golden report per kind of incident (tests/golden/<kind>.md: the summary, the key moments
and the data gaps of its report.md, exactly), and checks any reader would make: the summary
comes first and answers what, when, who, why, what to do and how sure; every count says
what it counts; numbers are rounded for reading; the delivery SLA counts FAILED messages;
every missing table says what it leaves unknown and which causes it leaves open.

A golden file that no longer matches fails with the diff. When the change is intended
(the wording, or the simulator's numbers, moved on), rewrite them and read the diff before
committing: ``FORENSICS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_report_reading.py``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from pathlib import Path

import pytest

from forensics.analysis.pipeline import analyze
from forensics.report.runner import markdown_report
from forensics.simulate import simulate

GOLDEN = Path(__file__).parent / "golden"
MISSING = ("log_events", "spans", "consumer_lag", "locks")
"""Tables left out of the partial-evidence incident (its logs, traces, lag and Redis keys)."""
KINDS = {
    "healthy": ("baseline", None),
    "errors-that-recover": ("whatsapp-rate-limit", None),
    "outage-still-going": ("router-outage", None),
    "partial-evidence": ("token-expired", MISSING),
}
"""Kind of incident -> (simulator scenario, tables missing from its evidence)."""
BODY_ROWS = 55
"""Table rows before the appendix at most: the header, key moments, impact, the candidates, and
the ten most severe of what changed and of what was there before (116 rows was the complaint)."""
SUMMARY_HEADS = ("What happened", "When", "Who", "Why", "What to do now", "How sure", "Delivery SLA")
UNIT_WORDS = ("messages", "message", "FAILED", "conversations", "customers", "delivered", "never", "error",
              "DLQ", "findings", "evidence", "of", "in", "min", "s", "%", "stuck", "created", "tables")
"""Words that may follow a count in the summary: a unit, or "of"/"in" leading to one."""


def _report(kind: str) -> str:
    scenario, missing = KINDS[kind]
    evidence = simulate(scenario, messages=2000, seed=3)
    if missing:
        evidence = dataclasses.replace(
            evidence, tables={k: v for k, v in evidence.tables.items() if k not in missing},
            missing={"logs": "no log files were given", "jaeger": "unreachable: connection refused"})
    return markdown_report(evidence, analyze(evidence))


@pytest.fixture(scope="module", params=list(KINDS))
def report(request) -> tuple[str, str]:
    return request.param, _report(request.param)


def section(md: str, title: str) -> str:
    """The text of ``## title`` up to the next ``## ``."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", md, flags=re.S | re.M)
    assert match, f"no section {title!r}"
    return match.group(1).strip()


def golden_part(md: str) -> str:
    return "\n\n".join(f"## {t}\n\n{section(md, t)}" for t in ("Summary", "Key moments", "Evidence and data gaps")) \
        + "\n"


def test_golden_summary_moments_and_gaps(report):
    kind, md = report
    path = GOLDEN / f"{kind}.md"
    got = golden_part(md)
    if os.environ.get("FORENSICS_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(got, encoding="utf-8")
    want = path.read_text(encoding="utf-8")
    diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), f"golden/{kind}.md", "now"))
    assert got == want, f"the report of {kind!r} changed (FORENSICS_UPDATE_GOLDEN=1 rewrites it):\n{diff}"


def test_the_summary_comes_first_and_answers_the_reviewers_questions(report):
    _, md = report
    assert md.index("## Summary") < min(md.index(f"## {s}") for s in ("Impact", "Root cause", "Detection"))
    heads = re.findall(r"^\*\*(.+?)\.\*\* ", section(md, "Summary"), flags=re.M)
    assert tuple(heads) == SUMMARY_HEADS
    assert "Delivery SLA: 95 % of the messages created are DELIVERED within 5 s; a FAILED or never-delivered " \
           "message counts as missed." in md


def test_every_count_in_the_summary_says_what_it_counts(report):
    _, md = report
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC|\d\d:\d\d:\d\d UTC|runbook R\d\.\d|R\d\.\d", "",
                  section(md, "Summary"))
    text = re.sub(r"WhatsApp \d+|Telegram \d+|Instagram \d+", "", text)
    loose = [m.group(0) for m in re.finditer(r"\b(\d[\d,]*(?:\.\d+)?) +(\S+)", text)
             if m.group(2).strip("(),.;:*\\") not in UNIT_WORDS]
    assert not loose, f"counts without a unit: {loose}"
    for wrong in ("messages in spans", "log events errors", "spans errors", "dlq records errors",
                  "of the classified errors"):
        assert wrong not in md


def test_numbers_are_rounded_for_a_reader(report):
    _, md = report
    body = md.split("## Appendix B")[0]  # the event table quotes evidence ids verbatim
    long = re.findall(r"(?<![\w.:-])\d+\.\d{4,}(?![\w-])", body)
    assert not long, f"unrounded numbers: {long[:5]}"
    assert not re.findall(r"\d%", section(md, "Summary")), "percentages are written '29.8 %'"


def test_a_failed_message_counts_against_the_sla():
    md = _report("partial-evidence")  # credentials expired: messages FAILED fast, none delivered late
    sla = re.search(r"\*\*Delivery SLA\.\*\* (.+)", md).group(1)
    assert sla.startswith("Breached: ") and "FAILED" in sla


def test_each_missing_table_says_what_it_leaves_unknown_and_which_causes_stay_open():
    gaps = section(_report("partial-evidence"), "Evidence and data gaps")
    for table in MISSING:
        line = next((g for g in gaps.splitlines() if g.startswith(f"- Without {table.replace('_', chr(92) + '_')} ")),
                    None)
        assert line and "the report cannot tell" in line, table
    assert re.search(r"Without locks .*Cannot be confirmed without it: .*conversation lock", gaps)
    assert re.search(r"Without consumer\\_lag .*Cannot be ruled out without it: .*partition", gaps)
    assert "Source logs was not read: no log files were given." in gaps
    how_sure = re.search(r"\*\*How sure\.\*\* (.+)", _report("partial-evidence")).group(1)
    assert "missing: " in how_sure and "the evidence is partial" in how_sure


def test_when_says_whether_the_incident_was_still_going(report):
    kind, md = report
    when = re.search(r"\*\*When\.\*\* (.+)", md).group(1)
    moments = section(md, "Key moments")
    if kind == "healthy":
        assert when.startswith("No 5 min window had more than 5 %") and "Onset" not in moments
    elif kind in ("outage-still-going", "partial-evidence"):  # the token stays expired to the end
        assert "still going at the end of the window" in when and "the incident is still going" in moments
    else:
        assert re.search(r"It started at .*, was detected at .* and ended by", when)
        assert "Onset" in moments and "Peak" in moments and "Recovery" in moments


def test_the_body_stays_short_and_the_appendix_holds_every_finding_and_event():
    scenario, _ = KINDS["errors-that-recover"]
    evidence = simulate(scenario, messages=2000, seed=3)
    analysis = analyze(evidence)
    md = markdown_report(evidence, analysis)
    body, appendix = md.split("## Appendix A")
    rows = [line for line in body.splitlines() if line.startswith("| ") and not line.startswith("| |")]
    assert len(rows) <= BODY_ROWS, f"{len(rows)} table rows before the appendix"
    assert len(re.findall(r"^\| (critical|warning|info) \|", section(md, "Appendix A: every finding"),
                          flags=re.M)) == len(analysis.findings)
    events = section(md, "Appendix B: every event")
    assert len([line for line in events.splitlines() if re.match(r"^\| \d\d:\d\d:\d\d \|", line)]) \
        == len(analysis.timeline)


def test_a_clamped_window_is_said_under_the_summary():
    evidence = simulate("whatsapp-rate-limit", messages=1000, seed=3)
    evidence.window_note = "Asked for 12:00-15:00 UTC; the evidence covers 14:00-15:00 UTC, so the report uses that."
    md = markdown_report(evidence, analyze(evidence))
    summary = section(md, "Summary")
    assert "> **Window.** Asked for 12:00-15:00 UTC; the evidence covers 14:00-15:00 UTC" in summary
    assert summary.index("**Delivery SLA.**") < summary.index("> **Window.**")
