import json
import tarfile

import pandas as pd
import pytest

from forensics.bundle import append_custody, read_bundle, read_manifest, verify_bundle, write_bundle
from forensics.errors import BundleError
from forensics.evidence import Evidence
from forensics.sources.documents import messages_from_documents, status_events_from_documents
from forensics.timeutil import Window


@pytest.fixture
def evidence():
    docs = [{"message_id": f"m{i}", "conversation_id": f"c{i % 3}", "channel": "WHATSAPP",
             "status": "FAILED" if i % 4 == 0 else "DELIVERED", "created_at": 1764770400 + i,
             "content": "<script>alert(1)</script>" if i == 1 else f"hello {i}",
             "metadata": {"error_message": "x" if i % 4 == 0 else None}} for i in range(40)]
    m = messages_from_documents(docs)
    e = status_events_from_documents([], m)
    return Evidence(Window.parse("2025-12-03T13:00:00Z", "2025-12-03T15:00:00Z"), "runbook",
                    {"messages": m, "status_events": e},
                    sources={"mongodb": {"uri": "mongodb://forensics:hunter2@db:27017/chat4all"}},
                    missing={"kafka": "unreachable"})


def test_round_trip_is_exact(evidence, tmp_path):
    path = write_bundle(evidence, tmp_path / "b")
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "manifest.sha256", "messages.parquet",
                                                        "status_events.parquet"]
    back = read_bundle(path)
    for name, frame in evidence.tables.items():
        pd.testing.assert_frame_equal(back.tables[name], frame)
    assert back.window == evidence.window and back.missing == {"kafka": "unreachable"}


def test_manifest_contents_and_no_secrets(evidence, tmp_path):
    path = write_bundle(evidence, tmp_path / "b", queries={"messages": {"filter": {"status": "FAILED"}}})
    text = (path / "manifest.json").read_text()
    assert "hunter2" not in text
    m = json.loads(text)
    assert m["tables"]["messages"]["rows"] == 40
    assert m["tables"]["messages"]["query"] == {"filter": {"status": "FAILED"}}
    assert set(m["files"]) == {"messages.parquet", "status_events.parquet"}
    assert m["custody"][-1]["action"] == "written" and "@" in m["custody"][-1]["actor"]
    assert m["window"] == {"start": "2025-12-03T13:00:00.000Z", "end": "2025-12-03T15:00:00.000Z"}


@pytest.mark.parametrize("tamper, expected", [
    (lambda p: (p / "messages.parquet").write_bytes((p / "messages.parquet").read_bytes()[:-10] + b"0" * 10),
     "messages.parquet: altered"),
    (lambda p: (p / "status_events.parquet").unlink(), "status_events.parquet: missing"),
    (lambda p: (p / "notes.txt").write_text("added later"), "notes.txt: added"),
    (lambda p: (p / "manifest.json").write_text((p / "manifest.json").read_text().replace('"rows": 40', '"rows": 41')),
     "manifest.json: altered"),
])
def test_tampering_is_detected_and_named(evidence, tmp_path, tamper, expected):
    path = write_bundle(evidence, tmp_path / "b")
    tamper(path)
    result = verify_bundle(path)
    assert not result.ok and any(expected in p for p in result.problems), result.problems
    with pytest.raises(BundleError, match="verification failed"):
        read_bundle(path)


def test_archive_form_round_trips_and_verifies(evidence, tmp_path):
    path = write_bundle(evidence, tmp_path / "b.tar.gz", archive=True)
    assert path.is_file() and tarfile.is_tarfile(path)
    assert verify_bundle(path).ok
    pd.testing.assert_frame_equal(read_bundle(path).tables["messages"], evidence.tables["messages"])


def test_corrupt_archive_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tarball")
    assert "not a readable bundle archive" in str(verify_bundle(bad))
    with pytest.raises(BundleError):
        read_bundle(bad)


def test_existing_bundle_is_not_overwritten_by_accident(evidence, tmp_path):
    write_bundle(evidence, tmp_path / "b")
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(evidence, tmp_path / "b")


def test_failed_write_leaves_nothing_that_looks_complete(evidence, tmp_path):
    evidence.tables["messages"] = evidence.tables["messages"].assign(retry_count=1.5)  # wrong dtype
    with pytest.raises(Exception, match="retry_count"):
        write_bundle(evidence, tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


def test_custody_log_is_append_only_and_keeps_the_bundle_valid(evidence, tmp_path):
    path = write_bundle(evidence, tmp_path / "b")
    before = read_manifest(path)["custody"]
    append_custody(path, "shared-with-review", {"to": "post-incident review"})
    after = read_manifest(path)["custody"]
    assert after[:-1] == before and after[-1]["action"] == "shared-with-review"
    assert verify_bundle(path).ok


def _with_baseline(evidence: Evidence) -> Evidence:
    first = pd.Timestamp("2025-12-03T14:00:00Z")  # the first message's creation
    before = evidence.between(first, first + pd.Timedelta("20s"))
    evidence.baseline = Evidence(Window(evidence.window.start - evidence.window.duration, evidence.window.start),
                                 evidence.profile, dict(before.tables), sources={"mongodb": {"status": "ok"}})
    evidence.baseline_kind = "preceding"
    return evidence


@pytest.mark.parametrize("archive", [False, True])
def test_baseline_round_trips_under_its_own_folder_and_is_hashed(evidence, tmp_path, archive):
    ev = _with_baseline(evidence)
    path = write_bundle(ev, tmp_path / ("b.tar.gz" if archive else "b"), archive=archive)
    m = read_manifest(path)
    assert m["baseline"]["kind"] == "preceding"
    assert m["baseline"]["window"] == ev.baseline.window.to_dict()
    assert m["baseline"]["tables"]["messages"]["file"] == "baseline/messages.parquet"
    assert m["baseline"]["tables"]["messages"]["rows"] == len(ev.baseline.tables["messages"]) == 20
    assert {"baseline/messages.parquet", "baseline/status_events.parquet"} <= set(m["files"])
    assert verify_bundle(path).ok
    back = read_bundle(path)
    assert back.baseline_kind == "preceding" and back.baseline.window == ev.baseline.window
    for name, frame in ev.baseline.tables.items():
        pd.testing.assert_frame_equal(back.baseline.tables[name], frame)
    pd.testing.assert_frame_equal(back.tables["messages"], ev.tables["messages"])


def test_altered_baseline_file_is_named(evidence, tmp_path):
    path = write_bundle(_with_baseline(evidence), tmp_path / "b")
    (path / "baseline" / "messages.parquet").write_bytes(b"not parquet")
    result = verify_bundle(path)
    assert not result.ok and "baseline/messages.parquet: altered" in str(result)


def test_bundle_without_baseline_reads_as_none(evidence, tmp_path):
    back = read_bundle(write_bundle(evidence, tmp_path / "b"))
    assert back.baseline is None and back.baseline_kind == "none"
    assert "baseline" not in read_manifest(tmp_path / "b")


def test_between_cuts_timed_tables_and_leaves_out_snapshots(evidence):
    start = pd.Timestamp("2025-12-03T14:00:00Z")
    part = evidence.between(start + pd.Timedelta("10s"), start + pd.Timedelta("15s"))
    assert part.window == Window(start + pd.Timedelta("10s"), start + pd.Timedelta("15s"))
    assert part.tables["messages"]["message_id"].tolist() == [f"m{i}" for i in range(10, 15)]
    assert part.baseline is None and part.scenario is None
