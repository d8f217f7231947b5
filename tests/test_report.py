"""The RCA report as a reader and an attacker meet it: sections present, untrusted text
escaped in every format, personal data redacted by default, nothing half-written."""

import hashlib
import json
import socket

import nbformat
import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs
from test_summary_contract import assert_valid

from forensics import schema
from forensics.bundle import write_bundle
from forensics.errors import ForensicsError, ParameterError, VerificationError
from forensics.evidence import Evidence
from forensics.redact import Redactor, redact_frame, redact_text
from forensics.report import drilldown, runner
from forensics.report.params import validate_report_params
from forensics.timeutil import Window

SCRIPT = "<script>alert(1)</script>"
NOSQL = '{"$gt": ""}'
NOT_UTF8 = b"caf\xe9 \xff\xfe order".decode("utf-8", errors="replace")
PHONE = "+5511987654321"
HANDLE = "@jane_doe"
PERSONAL_TEXT = f"call me at {PHONE} or {HANDLE}"
CONTENTS = [SCRIPT, NOSQL, NOT_UTF8, PERSONAL_TEXT]
T0 = pd.Timestamp("2025-12-03T14:00:00Z")


def hostile_evidence(n: int = 600) -> Evidence:
    """WhatsApp messages that start failing after 20 minutes; contents and error strings are hostile."""
    rng = np.random.default_rng(5)
    created = T0 + pd.to_timedelta(np.sort(rng.uniform(0, 3500, n)), unit="s")
    ids = [f"{i:08x}-0000-4000-8000-{i:012x}" for i in range(n)]
    failing = (created > T0 + pd.Timedelta("20min")) & (rng.random(n) < 0.7)
    status = np.where(failing, "FAILED", "DELIVERED")
    # no platform code in it: the catalog cannot classify it, so the text itself reaches the report
    error = np.where(failing, f"Delivery error {SCRIPT} {NOSQL} {NOT_UTF8} to {PHONE}", None)
    messages = schema.conform("messages", {
        "message_id": ids, "conversation_id": [f"conv-{i % 40}" for i in range(n)], "sender_id": "user-1",
        "recipient_id": [f"+55119876{i % 40:05d}" for i in range(n)], "recipient_count": 1, "channel": "WHATSAPP",
        "content_type": "TEXT", "content": [CONTENTS[i % len(CONTENTS)] for i in range(n)], "status": status,
        "created_at": created, "updated_at": created + pd.Timedelta("2s"), "retry_count": 0,
        "error_message": error, "source": "mongodb", "source_object": "messages", "source_ref": ids})
    sent = created + pd.to_timedelta(0.3 + rng.exponential(0.2, n), unit="s")
    done = sent + pd.to_timedelta(rng.exponential(1.0, n), unit="s")
    events = pd.concat([
        pd.DataFrame({"message_id": ids, "old_status": None, "new_status": "PENDING", "timestamp": created,
                      "derived": True}),
        pd.DataFrame({"message_id": ids, "old_status": "PENDING", "new_status": "SENT", "timestamp": sent,
                      "derived": False}),
        pd.DataFrame({"message_id": ids, "old_status": "SENT", "new_status": status, "timestamp": done,
                      "error_message": error, "derived": False}),
    ], ignore_index=True).assign(channel="WHATSAPP", source="mongodb", source_object="message_status_history")
    logs = schema.conform("log_events", {
        "timestamp": created[failing], "service": "whatsapp-connector", "level": "ERROR",
        "message": [f"Connector returned error: status=429, body={SCRIPT} for {HANDLE}"] * int(failing.sum()),
        "http_status": 429, "source": "logs", "source_object": "whatsapp-connector.log"})
    ev = Evidence(window=Window(T0, T0 + pd.Timedelta("1h")), missing={"jaeger": "not configured"},
                  sources={"mongodb": {"status": "ok"}, "logs": {"status": "ok"}})
    ev.put("messages", messages)
    ev.put("status_events", schema.conform("status_events", events))
    ev.put("log_events", logs)
    return ev


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return write_bundle(hostile_evidence(), tmp_path_factory.mktemp("hostile") / "bundle")


@pytest.fixture(scope="module")
def unredacted(bundle, tmp_path_factory):
    return runner.build_report(bundle, tmp_path_factory.mktemp("plain") / "report", redact=False)


@pytest.fixture(scope="module")
def redacted(bundle, tmp_path_factory):
    return runner.build_report(bundle, tmp_path_factory.mktemp("redacted") / "report")


def _page(path) -> str:
    """report.html without the inlined plotly.js (minified code is not evidence)."""
    text = path.read_text(encoding="utf-8")
    assert text.count(get_plotlyjs()) == 1
    return text.replace(get_plotlyjs(), "")


def test_build_report_writes_every_format_and_the_audit_notebook(unredacted):
    assert set(unredacted) == {"html", "md", "json", "ipynb"}
    assert all(p.is_file() and p.stat().st_size for p in unredacted.values())
    assert unredacted["html"].stat().st_size < 10_000_000
    assert not list(unredacted["html"].parent.parent.glob(".*partial*"))
    assert_valid(json.loads(unredacted["json"].read_text()))


def test_rebuilding_replaces_the_whole_earlier_report(bundle, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    for name in ("report.html", "report.md", "report.ipynb", "summary.json"):
        (out / name).write_text("stale")
    written = runner.build_report(bundle, out, formats=("json",))
    assert sorted(p.name for p in out.iterdir()) == ["report.ipynb", "summary.json"]
    assert json.loads(written["json"].read_text())["hypotheses"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_html_is_self_contained_and_has_no_code(unredacted):
    page = _page(unredacted["html"])
    for section in ("Summary", "Key moments", "Impact", "Root cause", "Detection", "Evidence and data gaps",
                    "Figures", "Appendix A: every finding", "Appendix B: every event", "Appendix C: error groups"):
        assert f">{section}<" in page, section
    assert "validate_report_params" not in page and "import " not in page  # no code cells
    assert "In&nbsp;[" not in page and "jp-InputPrompt" not in page
    assert "cdn" not in page.lower() and 'src="http' not in page  # offline: no CDN, no remote script
    assert page.count("Plotly.newPlot") >= 5
    assert "chat4all-forensics" in page and "2025-12-03 14:00:00 UTC" in page


def test_untrusted_text_is_escaped_in_html(unredacted):
    page = _page(unredacted["html"])
    # the analysis normalises numbers in error signatures (alert(1) -> alert(<n>)): check the tag itself
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(" in page
    assert '{"$gt":' in page  # shown literally (quotes need no escaping in text)
    assert "\ufffd" in page  # undecodable bytes arrive as replacement characters, the export survives
    raw = unredacted["html"].read_bytes()
    raw.decode("utf-8")


def test_untrusted_text_is_escaped_in_markdown_and_json(unredacted):
    md = unredacted["md"].read_text(encoding="utf-8")
    assert "<script>alert" not in md and "&lt;script&gt;alert(" in md
    for heading in ("## Summary", "## Key moments", "## Impact", "## Root cause", "## Trigger", "## Detection",
                    "## Resolution", "## Action items", "## Lessons learned", "## Appendix A: every finding"):
        assert heading in md
    summary = json.loads(unredacted["json"].read_text(encoding="utf-8"))
    assert summary["hypotheses"] and summary["report"]["redacted"] is False
    confidences = [h["confidence"] for h in summary["hypotheses"]]
    assert confidences == sorted(confidences, reverse=True)
    review = summary["review"]
    assert {"what_happened", "when", "who", "why", "what_to_do", "confidence", "sla", "key_moments",
            "window_note"} <= set(review)
    assert review["sla"]["statement"].startswith("Delivery SLA: 95 % of the messages created are DELIVERED")
    assert review["sla"]["breached"] is summary["impact"]["sla_breach"]
    assert review["who"]["messages_affected"] == summary["impact"]["messages_affected"]
    assert md.index("## Summary") < md.index("## Impact") and review["what_happened"] in md.replace("\\", "")


def test_redacted_exports_hold_no_phone_handle_or_content(redacted):
    texts = {kind: (_page(p) if kind == "html" else p.read_text(encoding="utf-8")) for kind, p in redacted.items()}
    for kind, text in texts.items():
        for secret in (PHONE, PHONE[1:], HANDLE, "jane_doe", "call me at", "+55119876"):
            assert secret not in text, f"{secret!r} in {kind}"
    assert "Personal data</dt><dd>redacted" in texts["html"]
    assert json.loads(texts["json"])["report"]["redacted"] is True


def test_failing_notebook_gives_one_line_and_writes_nothing(bundle, tmp_path):
    broken = tmp_path / "broken"
    write_bundle(hostile_evidence(50), broken)
    # not Parquet, but hashed in a consistent manifest: it verifies, and fails in the notebook
    (broken / "messages.parquet").write_bytes(b"not parquet")
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["files"]["messages.parquet"] = hashlib.sha256(b"not parquet").hexdigest()
    text = json.dumps(manifest) + "\n"
    (broken / "manifest.json").write_text(text)
    (broken / "manifest.sha256").write_text(hashlib.sha256(text.encode()).hexdigest() + "  manifest.json\n")
    out = tmp_path / "report"
    with pytest.raises(ForensicsError) as err:
        runner.build_report(broken, out)
    assert "\n" not in str(err.value)
    assert "BundleError" in str(err.value) and "messages.parquet" in str(err.value)
    assert not out.exists() and not list(tmp_path.glob(".report*"))


def test_a_bundle_that_does_not_verify_stops_before_the_kernel(tmp_path):
    tampered = write_bundle(hostile_evidence(50), tmp_path / "tampered")
    (tampered / "messages.parquet").write_bytes(b"tampered")
    with pytest.raises(VerificationError, match="messages.parquet: altered") as err:
        runner.build_report(tampered, tmp_path / "report")
    assert err.value.exit_code == 1 and not (tmp_path / "report").exists()


@pytest.mark.parametrize("parameters, name", [
    ({"thresholds": "abc"}, "thresholds"),
    ({"channel": 3}, "channel"),
    ({"since": "last tuesday"}, "since"),
    ({"colour": "red"}, "colour"),
])
def test_bad_parameters_fail_before_the_kernel_starts(bundle, tmp_path, parameters, name):
    with pytest.raises(ParameterError) as err:
        runner.build_report(bundle, tmp_path / "r", parameters=parameters)
    assert name in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("setting, says", [
    ({"FORENSICS_CHROMIUM": "/nonexistent/chromium"}, "FORENSICS_CHROMIUM=/nonexistent/chromium is not an executable"),
    ({"PATH": "/nonexistent"}, "which is not installed (Debian: apt-get install chromium"),
])
def test_pdf_without_chromium_fails_in_one_line_before_anything_runs(bundle, tmp_path, monkeypatch, setting, says):
    monkeypatch.delenv("FORENSICS_CHROMIUM", raising=False)
    for key, value in setting.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ParameterError) as err:
        runner.build_report(bundle, tmp_path / "r", formats=("html", "pdf"))
    assert says in str(err.value) and "\n" not in str(err.value) and str(err.value).startswith("formats: pdf")
    assert not (tmp_path / "r").exists() and not list(tmp_path.glob(".r*"))


def test_markdown_report_straight_from_an_analysis():
    from forensics.analysis.pipeline import analyze

    evidence = hostile_evidence(300)
    md = runner.markdown_report(evidence, analyze(evidence))
    assert md.startswith("# ") and "## Root cause" in md and PHONE not in md and SCRIPT not in md


def test_window_and_channel_scope_the_evidence():
    evidence = hostile_evidence(300)
    late = Window(T0 + pd.Timedelta("30min"), T0 + pd.Timedelta("1h"))
    scoped = drilldown.scope(evidence, late, None)
    assert scoped.window == late
    assert (scoped.table("messages")["created_at"] >= late.start).all()
    assert len(drilldown.scope(evidence, evidence.window, "TELEGRAM").table("messages")) == 0
    assert drilldown.scope(evidence, evidence.window, None) is evidence


# ---- redaction -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("call +55 11 98765-4321 now", "call [phone] now"),
    (PHONE, "[phone]"),
    ("tel (11) 3456-7890", "tel [phone]"),
    ("chat 123456789 blocked", "chat [phone] blocked"),
    ("mail jane.doe@example.com", "mail [email]"),
    ("ping @jane_doe.", "ping [handle]."),
    ("at 2025-12-03T14:00:00.000Z", "at 2025-12-03T14:00:00.000Z"),
    ("on 2025-12-03 only", "on 2025-12-03 only"),
    ("id 12345678-1234-4abc-8def-123456789012", "id 12345678-1234-4abc-8def-123456789012"),
    ("ids 00000001-0000-4000-8000-000000000001, 2", "ids 00000001-0000-4000-8000-000000000001, 2"),
    ("offset 3:12345678", "offset 3:12345678"),
    ("(#131047) code", "(#131047) code"),
    ("took 1234.5678 s", "took 1234.5678 s"),
])
def test_redact_text(text, expected):
    assert redact_text(text) == expected


def test_known_content_is_masked_where_quoted():
    r = Redactor(["meet me at the station", "ok"])
    assert r.text("error: 'meet me at the station' too long") == "error: '[content]' too long"
    assert r.text("ok") == "[content]" and r.text("token ok") == "token ok"
    assert Redactor(["x"], enabled=False).text(PHONE) == PHONE


def test_redact_frame_masks_personal_columns_and_keeps_nulls():
    df = pd.DataFrame({"content": pd.array(["hello", None], dtype="string"),
                       "error_message": pd.array([f"to {PHONE}", None], dtype="string"), "n": [1, 2]})
    out = redact_frame(df)
    assert out["content"].tolist()[0] == "[content]" and pd.isna(out["content"].iloc[1])
    assert out["error_message"].iloc[0] == "to [phone]" and out["error_message"].dtype == df["error_message"].dtype
    assert out["n"].tolist() == [1, 2] and df["content"].iloc[0] == "hello"


# ---- parameters ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, name", [
    ({"bundle": 5}, "bundle"),
    ({"since": 1733234400}, "since"),
    ({"until": "garbage"}, "until"),
    ({"channel": "SMS"}, "channel"),
    ({"thresholds": "abc"}, "thresholds"),
    ({"thresholds": {"failed_rate": "high"}}, "failed_rate"),
    ({"profile": "nope"}, "profile"),
    ({"redact": "yes"}, "redact"),
    ({"title": None}, "title"),
    ({"bundle": "/no/such/bundle"}, "bundle"),
    ({"sources": "mongo,mysql", "since": "2h"}, "sources"),
    ({"sources": ["mongo"], "since": "2h"}, "sources"),
    ({"sources": "mongo"}, "since"),
    ({"bundle": ".", "sources": "mongo", "since": "2h"}, "bundle/sources"),
    ({"sources": "mongo", "since": "2h", "source_options": "mongo_uri=x"}, "source_options"),
])
def test_each_bad_parameter_is_named_on_one_line(kwargs, name):
    with pytest.raises(ParameterError) as err:
        validate_report_params(**kwargs)
    assert name in str(err.value) and "\n" not in str(err.value)


def test_parameters_round_trip_through_papermill_values(bundle):
    params = validate_report_params(bundle=str(bundle), since="2025-12-03T14:10:00Z", channel="whatsapp",
                                    thresholds={"failed_rate": 0.1}, redact=False)
    assert params.channel == "WHATSAPP" and params.thresholds == {"failed_rate": 0.1}
    assert validate_report_params(**params.to_dict()) == params
    assert params.window(Window(T0, T0 + pd.Timedelta("1h"))).start == T0 + pd.Timedelta("10min")


def test_committed_notebook_has_no_outputs_and_parameters_first():
    nb = nbformat.read(runner.find_notebook(runner.REPORT_NOTEBOOK), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert "validate_report_params" in code[1].source
    assert all(not c.outputs and c.execution_count is None for c in code)


# ---- live sources --------------------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_live_sources_give_a_report_that_names_them(tmp_path, monkeypatch):
    port = _closed_port()
    # one connection from the environment, one from the parameters: neither password is written down
    monkeypatch.setenv("FORENSICS_KAFKA_BOOTSTRAP", f"127.0.0.1:{port}")
    options = {"mongo_uri": f"mongodb://chat4all:pw-in-params@127.0.0.1:{port}/?serverSelectionTimeoutMS=500",
               "connect_timeout_s": 0.5, "timeout_s": 2}
    written = runner.build_report(None, tmp_path / "live", parameters={
        "sources": "mongo,kafka", "since": "2h", "source_options": options})
    summary = json.loads(written["json"].read_text())
    assert {"mongo", "kafka"} <= set(summary["missing_sources"])
    assert_valid(summary)
    assert summary["report"]["parameters"]["sources"] == "mongo,kafka"
    page = _page(written["html"])
    assert "Source mongo was not read: mongodb: cannot reach" in page and "Source kafka was not read" in page
    assert "the evidence is partial: kafka, mongo could not be read" in page
    assert "<dt>Live sources</dt><dd>mongo, kafka</dd>" in page
    assert "| Live sources | mongo, kafka |" in written["md"].read_text()
    for path in written.values():
        assert "pw-in-params" not in path.read_text(encoding="utf-8"), path.name


def test_cli_report_needs_a_bundle_or_sources(tmp_path, capsys):
    from forensics.cli import main

    assert main(["report", "--out", str(tmp_path / "r")]) == 2
    assert "give a bundle, or --sources and --since" in capsys.readouterr().err
    assert main(["report", "--sources", "mongo", "--out", str(tmp_path / "r")]) == 2
    assert "since: live sources (mongo) need a window start" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_live_report_without_sources_or_window_fails_before_the_kernel_starts(tmp_path):
    with pytest.raises(ParameterError, match="bundle: expected an evidence bundle path, or parameters with sources"):
        runner.build_report(None, tmp_path / "r")
    with pytest.raises(ParameterError, match="since: live sources"):
        runner.build_report(None, tmp_path / "r", parameters={"sources": "mongo"})
    assert not (tmp_path / "r").exists()


# ---- drilling in (investigation notebooks) --------------------------------------------------

def test_pick_message_prefers_the_given_then_failed_then_stuck_then_first():
    evidence = hostile_evidence(100)
    messages = evidence.table("messages")
    failed = messages[messages["status"] == "FAILED"].sort_values("created_at")
    assert drilldown.pick_message(messages)["message_id"].item() == failed["message_id"].iloc[0]
    given = messages["message_id"].iloc[7]
    assert drilldown.pick_message(messages, given)["message_id"].item() == given
    healthy = messages[messages["status"] != "FAILED"]
    stuck = healthy.assign(status=healthy["status"].where(healthy.index != healthy.index[-1], "SENT"))
    assert drilldown.pick_message(stuck)["message_id"].item() == healthy["message_id"].iloc[-1]
    assert drilldown.pick_message(healthy)["message_id"].item() == healthy.sort_values("created_at")["message_id"].iloc[0]
    assert drilldown.pick_message(messages.iloc[:0]).empty
    with pytest.raises(ParameterError, match="message_id: 'nope' is not among the 100 messages"):
        drilldown.pick_message(messages, "nope")


def test_about_keeps_rows_naming_the_message_or_conversation_in_time_order():
    logs = pd.DataFrame({"timestamp": [T0 + pd.Timedelta(seconds=s) for s in (3, 1, 2, 0)],
                         "message_id": pd.array(["m1", None, "m2", "m2"], dtype="string"),
                         "conversation_id": pd.array([None, "c1", "c1", None], dtype="string")})
    assert drilldown.about(logs, "m1", "c1")["timestamp"].tolist() == [T0 + pd.Timedelta(seconds=s) for s in (1, 2, 3)]
    assert drilldown.about(logs, None, None).empty
    assert len(drilldown.about(logs.drop(columns="conversation_id"), "m2", "c1")) == 2


def test_describe_evidence_names_the_missing_sources():
    lines = drilldown.describe_evidence(hostile_evidence(50))
    assert lines[0] == "window 2025-12-03T14:00:00.000Z 2025-12-03T15:00:00.000Z"
    assert lines[1].startswith("tables: messages 50, status_events 150") and lines[-1] == "missing: jaeger: not configured"
