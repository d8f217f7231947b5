"""The command line as a user meets it: exit codes, one-line errors, nothing half-written."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

FORENSICS = [sys.executable, "-m", "forensics.cli"]


def run(*args, cwd=None):
    return subprocess.run([*FORENSICS, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_scenarios_lists_names_first_then_descriptions():
    r = run("scenarios")
    assert r.returncode == 0, r.stderr
    names, _, described = r.stdout.partition("\n\n")
    names = names.splitlines()
    assert {"baseline", "router-outage", "whatsapp-rate-limit", "token-expired", "recipient-not-on-whatsapp",
            "content-too-long", "partition-rebalance", "telegram-bot-blocked", "mongo-write-timeouts",
            "missing-topic"} <= set(names)
    assert all(" " not in n for n in names)
    assert all(any(line.startswith(n) for line in described.splitlines()) for n in names)


def test_simulate_then_verify_then_tamper(tmp_path):
    bundle = tmp_path / "b"
    r = run("simulate", "--scenario", "token-expired", "--messages", 800, "--out", bundle, "-q")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["scenario"]["root_cause"] == "credential_expiry"
    assert manifest["tables"]["messages"]["rows"] == 800
    assert run("verify", bundle).returncode == 0
    (bundle / "spans.parquet").write_bytes(b"tampered")
    r = run("verify", bundle)
    assert r.returncode == 1 and "spans.parquet: altered" in r.stderr


def test_simulate_archive_form_verifies(tmp_path):
    bundle = tmp_path / "b.tar.gz"
    assert run("simulate", "--scenario", "baseline", "--messages", 300, "--out", bundle, "--archive", "-q"
               ).returncode == 0
    r = run("verify", bundle)
    assert r.returncode == 0 and r.stdout.startswith("OK")


@pytest.mark.parametrize("args, message", [
    (["simulate", "--scenario", "no-such-thing", "--out", "{tmp}/x"], "unknown scenario"),
    (["simulate", "--scenario", "baseline", "--profile", "nope", "--out", "{tmp}/x"], "unknown profile"),
    (["collect", "--sources", "simulator", "--since", "2025-12-03T15:00:00Z", "--until", "2025-12-03T14:00:00Z",
      "--out", "{tmp}/x"], "not after its start"),
    (["collect", "--sources", "simulator", "--since", "last tuesday", "--out", "{tmp}/x"], "cannot parse time"),
    (["verify", "{tmp}/missing"], "does not exist"),
    (["collect", "--sources", "simulator", "--since", "2h", "--baseline", "yesterday", "--out", "{tmp}/x"],
     "baseline: expected preceding, none or START/END"),
    (["collect", "--sources", "simulator", "--since", "2h", "--baseline", "3h/1h", "--out", "{tmp}/x"],
     "overlaps the incident window"),
])
def test_bad_input_gives_one_line_error_and_nonzero_exit(tmp_path, args, message):
    r = run(*[a.format(tmp=tmp_path) for a in args])
    assert r.returncode != 0
    assert message in r.stderr
    assert len([line for line in r.stderr.splitlines() if line.strip()]) == 1, r.stderr
    assert not (tmp_path / "x").exists()


def test_collect_from_simulator_records_custody_and_the_preceding_baseline(tmp_path):
    bundle = tmp_path / "c"
    r = run("collect", "--sources", "simulator", "--scenario", "router-outage", "--messages", 500,
            "--since", "2025-12-03T14:00:00Z", "--until", "2025-12-03T15:00:00Z", "--out", bundle, "-q")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [e["action"] for e in manifest["custody"]] == ["collected", "baseline", "collected", "written"]
    assert manifest["window"]["end"] == "2025-12-03T15:00:00.000Z"
    assert manifest["sources"]["simulator"]["status"] == "ok"
    assert manifest["baseline"]["kind"] == "preceding"
    assert manifest["baseline"]["window"] == {"start": "2025-12-03T13:00:00.000Z", "end": "2025-12-03T14:00:00.000Z"}
    assert manifest["baseline"]["sources"]["simulator"]["parameters"]["scenario"] == "baseline"
    assert (bundle / "baseline" / "messages.parquet").is_file()


@pytest.mark.parametrize("spec, kind, window", [
    ("none", "none", None),
    ("2025-12-03T10:00:00Z/2025-12-03T11:00:00Z", "explicit",
     {"start": "2025-12-03T10:00:00.000Z", "end": "2025-12-03T11:00:00.000Z"}),
])
def test_collect_baseline_none_or_explicit(tmp_path, spec, kind, window):
    bundle = tmp_path / "c"
    r = run("collect", "--sources", "simulator", "--scenario", "baseline", "--messages", 200, "--baseline", spec,
            "--since", "2025-12-03T14:00:00Z", "--until", "2025-12-03T15:00:00Z", "--out", bundle, "-q")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert (manifest.get("baseline") or {}).get("window") == window
    assert [e["detail"]["kind"] for e in manifest["custody"] if e["action"] == "baseline"] == [kind]


def test_collect_records_a_failed_source_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("FORENSICS_MONGO_URI", "mongodb://u:secretpw@127.0.0.1:1/chat4all?serverSelectionTimeoutMS=300")
    bundle = tmp_path / "c"
    r = run("collect", "--sources", "simulator,mongo", "--scenario", "baseline", "--messages", 200,
            "--since", "1h", "--out", bundle, "-q")
    assert r.returncode == 0, r.stderr
    assert "mongo" in r.stderr and "secretpw" not in r.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["sources"]["mongo"]["status"] == "failed"
    assert "mongo" in manifest["missing_sources"] and "secretpw" not in json.dumps(manifest)


def test_existing_bundle_is_refused_without_force(tmp_path):
    bundle = tmp_path / "b"
    assert run("simulate", "--scenario", "baseline", "--messages", 100, "--out", bundle, "-q").returncode == 0
    r = run("simulate", "--scenario", "baseline", "--messages", 100, "--out", bundle, "-q")
    assert r.returncode == 2 and "already exists" in r.stderr
    assert run("simulate", "--scenario", "baseline", "--messages", 100, "--out", bundle, "--force", "-q"
               ).returncode == 0


def test_demo_prints_where_the_report_is(tmp_path):
    r = run("demo", "--messages", 1500, "--out", tmp_path / "demo", "-q")
    assert r.returncode == 0, r.stderr
    html = Path(next(line.split(": ", 1)[1] for line in r.stdout.splitlines() if line.startswith("html:")))
    assert html.is_file() and html.stat().st_size > 10_000
    summary = json.loads((html.parent / "summary.json").read_text())
    assert summary["hypotheses"][0]["cause"] == "platform_rate_limit"
