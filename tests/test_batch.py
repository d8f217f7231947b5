"""Batch mode: many incidents in one run, each report in its own directory, an index of them,
and a failed bundle recorded without stopping the others."""

import json
from pathlib import Path

import pytest

from forensics.bundle import write_bundle
from forensics.cli import main
from forensics.report.batch import Incident, find_bundles, incident_names, render_index
from forensics.simulate import simulate


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """A directory of two good bundles (one an archive) and a tampered one, plus a missing path,
    through `forensics batch`."""
    root = tmp_path_factory.mktemp("batch")
    incoming = root / "incoming"
    write_bundle(simulate("whatsapp-rate-limit", messages=600, seed=5), incoming / "rate-limit")
    write_bundle(simulate("token-expired", messages=600, seed=5), incoming / "token.tar.gz", archive=True)
    tampered = write_bundle(simulate("baseline", messages=200, seed=5), incoming / "tampered")
    (tampered / "messages.parquet").write_bytes(b"not parquet")
    (incoming / "notes.txt").write_text("not a bundle")
    out = root / "out"
    code = main(["batch", str(incoming), str(root / "missing"), "--out", str(out), "--formats", "html", "-q"])
    index = json.loads((out / "index.json").read_text(encoding="utf-8"))
    return code, out, index, {i["name"]: i for i in index["incidents"]}


def test_every_bundle_is_an_incident_in_the_order_found(batch):
    _, _, index, _ = batch
    assert [i["name"] for i in index["incidents"]] == ["rate-limit", "tampered", "token", "missing"]
    assert index["batch"] | {"generated_at": None, "seconds": None} == {
        "generated_at": None, "seconds": None, "toolkit_version": index["batch"]["toolkit_version"],
        "incidents": 4, "ok": 2, "failed": 2}


def test_each_report_in_its_own_directory_with_its_summary(batch):
    _, out, _, by_name = batch
    for name, cause in (("rate-limit", "platform_rate_limit"), ("token", "credential_expiry")):
        entry = by_name[name]
        assert entry["status"] == "ok" and entry["error"] is None
        assert entry["cause"] == entry["scenario_root_cause"] == cause
        assert 0 < entry["confidence"] <= 1 and entry["title"] and entry["runbook_step"]
        assert entry["window_start"] == "2025-12-03T14:00:00.000Z" and entry["window_end"]
        assert entry["impact"]["messages_total"] == 600 and entry["impact"]["messages_affected"] > 0
        assert set(entry["files"]) == {"html", "json", "ipynb"}  # json is always written: the index reads it
        assert all((out / path).is_file() for path in entry["files"].values())
        assert entry["files"]["html"] == f"{name}/report.html"


def test_a_failed_bundle_is_recorded_and_the_batch_goes_on(batch):
    code, out, _, by_name = batch
    assert code == 1
    assert by_name["tampered"]["status"] == "failed"
    assert "verification failed" in by_name["tampered"]["error"]
    assert "messages.parquet: altered" in by_name["tampered"]["error"]
    assert by_name["missing"]["error"].endswith("missing: does not exist")
    assert not (out / "tampered").exists() and not list(out.glob(".*partial*"))


def test_index_html_links_each_report_and_escapes(batch):
    _, out, _, _ = batch
    page = (out / "index.html").read_text(encoding="utf-8")
    assert '<a href="./rate-limit/report.html">rate-limit</a>' in page and '<a href="./token/report.html">' in page
    assert "Rate limited by the messaging platform" in page and "2 reported, 2 failed" in page
    assert page.count('<tr class="failed">') == 2
    hostile = Incident("x", "b", status="failed", error="<script>alert(1)</script>")
    shown = render_index([hostile], {"incidents": 1, "ok": 0, "failed": 1, "toolkit_version": "t",
                                     "generated_at": "g", "seconds": 0})
    assert "<script>" not in shown and "&lt;script&gt;alert(1)&lt;/script&gt;" in shown


def test_bundles_are_found_in_directories_and_named_uniquely(tmp_path):
    for d in ("a/bundle", "b/bundle"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "manifest.json").write_text("{}")
    (tmp_path / "b" / "c.tar.gz").write_bytes(b"")
    found = find_bundles([tmp_path / "a", tmp_path / "b", tmp_path / "a" / "bundle", Path("/no/such")])
    assert found == [tmp_path / "a/bundle", tmp_path / "b/bundle", tmp_path / "b/c.tar.gz", tmp_path / "a/bundle",
                     Path("/no/such")]
    assert incident_names(found) == ["bundle", "bundle-2", "c", "bundle-3", "such"]
    assert incident_names([Path("index.html")]) == ["index.html-2"]
