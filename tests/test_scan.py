"""The big tables answered by DuckDB: the same answers from a bundle's Parquet left on disk and
from frames in memory."""

import numpy as np
import pandas as pd
import pytest

from forensics import scan, schema
from forensics.analysis.pipeline import analyze
from forensics.bundle import read_bundle, write_bundle
from forensics.evidence import DEFERRED_TABLES, STORED_TABLES, Evidence, clamp_window
from forensics.messages import message_index, release
from forensics.report.drilldown import scope
from forensics.simulate import simulate
from forensics.timeutil import Window

T0 = pd.Timestamp("2025-12-03T14:00:00Z")


@pytest.fixture(scope="module")
def incident(tmp_path_factory):
    ev = simulate("partition-rebalance", messages=4000, seed=4)
    path = write_bundle(ev, tmp_path_factory.mktemp("scan") / "b")
    return ev, path


def test_stored_tables_stay_on_disk_and_give_the_same_analysis(incident):
    ev, path = incident
    on_disk = read_bundle(path, lean=True)
    left = {*STORED_TABLES, *DEFERRED_TABLES}
    assert set(on_disk.stored) == left and not set(on_disk.tables) & left
    assert set(on_disk.baseline.stored) == left
    assert on_disk.row_counts() == ev.row_counts()
    assert on_disk.unread["messages"] == ("content", "sender_id", "platform_message_id", "file_id", "content_type",
                                          "error_field", "recipient_count")
    assert on_disk.table("messages")["content"].isna().all() and on_disk.table("dlq_records")["payload"].isna().all()
    a, b = analyze(ev), analyze(on_disk)
    pd.testing.assert_frame_equal(a.findings, b.findings)
    pd.testing.assert_frame_equal(a.hypotheses, b.hypotheses)
    pd.testing.assert_frame_equal(a.alerts, b.alerts)
    assert a.impact == b.impact
    assert set(on_disk.stored) == set(STORED_TABLES)  # the analysis never read them whole
    assert b.findings["change"].notna().any()  # judged against the baseline ...
    released = b.change.baseline.context.evidence
    assert set(released.stored) == left and "messages" not in released.tables  # ... whose messages were let go
    assert type(b.change.baseline.context.index).__name__ == "ReleasedIndex"


def test_a_released_period_reads_its_messages_back_when_asked(incident):
    """What a released index does not keep is built again from the file: the same answers."""
    _, path = incident
    base = read_bundle(path, lean=True).baseline
    first = message_index(base)
    status, n = first.status.copy(), first.n_messages
    assert "messages" in base.tables and "messages" not in base.stored
    kept = release(first)
    assert "messages" in base.stored and "messages" not in base.tables
    assert kept.n_messages == n and len(kept.created_ns) == n
    np.testing.assert_array_equal(kept.status, status)  # not kept: read back
    assert "messages" in base.tables
    memory_only = simulate("partition-rebalance", messages=300, seed=4)
    index = message_index(memory_only)
    assert release(index) is index and memory_only.has("messages")  # nothing to read it back from


def test_a_lean_read_keeps_text_that_repeats_once_with_the_same_values(incident):
    _, path = incident
    whole, lean = read_bundle(path).table("messages"), read_bundle(path, lean=True).table("messages")
    for column in ("message_id", "source", "source_object", "source_ref", "status", "channel", "error_message"):
        pd.testing.assert_series_equal(lean[column], whole[column])
    data = {c: {chunk.buffers()[2].address for chunk in lean[c].array._pa_array.chunks} for c in lean.columns
            if str(lean[c].dtype) == "string"}
    assert data["source_ref"] == data["message_id"]  # a document's source_ref is its id: kept once
    assert len(data["source"]) == len(data["source_object"]) == 1  # one value throughout: one chunk
    lean, whole = read_bundle(path, lean=True), read_bundle(path)
    for name, frame in lean.tables.items():  # every other column as read whole
        kept = [c for c in frame.columns if c not in lean.unread.get(name, ())]
        pd.testing.assert_frame_equal(frame[kept], whole.table(name)[kept])


def test_a_repeated_text_column_is_slices_of_one_chunk():
    column = schema.repeated_text("mongodb", 3 * schema.NULL_CHUNK_ROWS + 5)
    chunks = column.array._pa_array.chunks
    assert len(column) == 3 * schema.NULL_CHUNK_ROWS + 5 and str(column.dtype) == "string"
    assert column.eq("mongodb").all() and len({c.buffers()[2].address for c in chunks}) == 1
    assert schema.repeated_text(None, 7).isna().all() and len(schema.repeated_text("x", 0)) == 0


def test_a_window_that_fits_keeps_its_evidence_so_the_figures_reuse_the_analysis(incident):
    _, path = incident
    ev = clamp_window(read_bundle(path, lean=True))
    assert ev.baseline is not None and clamp_window(ev) is ev
    analysis = analyze(ev)
    assert analysis.evidence is ev  # the status history asked once per window, not again by the figures
    assert message_index(ev) is analysis.detection.context.index


def test_a_lean_archive_reads_its_stored_tables_whole(incident, tmp_path):
    ev, _ = incident
    packed = write_bundle(ev, tmp_path / "b.tar.gz", archive=True)
    lean = read_bundle(packed, lean=True)
    assert not lean.stored and len(lean.table("status_events")) == len(ev.table("status_events"))
    for part in (lean, lean.baseline):  # the unpacked files are gone: nothing may be let go to them
        assert not part.release("messages") and "messages" in part.tables


def test_a_stored_table_is_scoped_like_a_frame_and_read_whole_on_demand(incident):
    ev, path = incident
    window = Window(ev.window.start + pd.Timedelta("20min"), ev.window.end)
    mem = scope(ev, window, "WHATSAPP")
    disk = scope(read_bundle(path, lean=True), window, "WHATSAPP")
    assert disk.row_counts() == mem.row_counts()
    assert analyze(disk).impact == analyze(mem).impact
    whole = disk.table("status_events")
    assert "status_events" not in disk.stored
    key = ["message_id", "timestamp", "new_status"]
    pd.testing.assert_frame_equal(whole.sort_values(key).reset_index(drop=True),
                                  mem.table("status_events").sort_values(key).reset_index(drop=True))


def test_message_status_per_position_with_orphans_and_repeated_ids():
    messages = pd.DataFrame({"message_id": pd.array(["a", "b", "a", "c"], dtype="string")})
    ts = [T0 + pd.Timedelta(seconds=s) for s in range(7)]
    events = pd.DataFrame({
        "message_id": pd.array(["a", "a", "a", "b", "z", "z", "a"], dtype="string"),
        "new_status": pd.array(["PENDING", "DELIVERED", "DELIVERED", "SENT", "PENDING", "FAILED", "READ"],
                               dtype="string"),
        "timestamp": pd.Series(ts, dtype="datetime64[ns, UTC]"), "channel": pd.array([None] * 7, dtype="string")})
    ev = Evidence(Window(T0, T0 + pd.Timedelta("1h")), tables={"messages": messages, "status_events": events})
    h = scan.message_status(ev, messages["message_id"])
    ns = [t.value for t in ts]
    assert h.delivered_count.tolist() == [2, 0, 0, 0, 0]
    assert h.first_delivered_at[0] == ns[1] and h.first_delivered_at[1] == scan.NAT
    assert h.left_pending_at.tolist()[:2] == [ns[1], ns[3]] and h.last_sent_at[1] == ns[3]
    assert h.first_at[2] == scan.NAT and h.first_at[3] == scan.NAT  # repeated id, no history
    assert h.orphan_ids.tolist() == ["z"] and h.first_at[4] == ns[4] and h.left_pending_at[4] == ns[5]
    assert h.repeated.tolist() == [2]
    t = scan.transitions(ev, messages["message_id"], ("DELIVERED", "FAILED"))
    assert t["code"].tolist() == [0, 0, 4] and t["status"].tolist() == ["DELIVERED", "DELIVERED", "FAILED"]
    assert np.array_equal(t["at"].to_numpy(), [ns[1], ns[2], ns[5]])


def test_status_steps_and_repeats_on_disk(incident):
    ev, path = incident
    disk = read_bundle(path, lean=True)
    pd.testing.assert_frame_equal(scan.status_steps(disk, 6), scan.status_steps(ev, 6))
    rep = scan.repeated_status_events(disk)
    assert (rep["repeats"] >= 1).all()
    pd.testing.assert_frame_equal(rep, scan.repeated_status_events(ev))


def test_repeated_status_events_are_exact_keys_counted_once_each():
    """Rows repeated exactly, counted once per key, and nothing else, whatever their hashes."""
    at = [T0 + pd.Timedelta(seconds=k) for k in range(4)]
    rows = [("a", "SENT", at[0])] * 3 + [("a", "SENT", at[1]), ("a", "DELIVERED", at[1]), ("b", "FAILED", at[2]),
                                          ("b", "FAILED", at[2]), ("c", "SENT", at[3]), ("c", "SENT", at[3]),
                                          ("d", "SENT", at[3])]
    ev = Evidence.from_records(Window(T0, T0 + pd.Timedelta(minutes=5)), status_events=[
        {"event_id": str(i), "message_id": m, "new_status": s, "timestamp": t, "derived": False}
        for i, (m, s, t) in enumerate(rows)])
    rep = scan.repeated_status_events(ev)
    got = sorted((r.message_id, r.new_status if pd.notna(r.new_status) else None, r.repeats)
                 for r in rep.itertuples())
    assert got == [("a", "SENT", 2), ("b", "FAILED", 1), ("c", "SENT", 1)]


def test_many_distinct_values_are_kept_in_arrow_with_the_same_answers():
    """Conversation and recipient ids (millions at scale) are not kept as Python objects."""
    from forensics.messages import MANY_VALUES

    n = MANY_VALUES + MANY_VALUES // 6 + 100
    conv = pd.array([f"c{i}" if i % 7 else None for i in range(n)], dtype=schema.STR)
    ev = Evidence.from_records(Window(T0, T0 + pd.Timedelta(hours=1)), messages=pd.DataFrame({
        "message_id": [f"m{i}" for i in range(n)], "conversation_id": conv, "channel": "WHATSAPP",
        "status": "SENT", "created_at": T0}))
    index = message_index(ev)
    codes, uniques = index.codes("conversation_id")
    assert not isinstance(uniques, np.ndarray) and len(uniques) == n - len(range(0, n, 7))
    pos = np.array([0, 1, 8, n - 1])
    assert index.values("conversation_id", pos).tolist() == [None, "c1", "c8", f"c{n - 1}" if (n - 1) % 7 else None]
    assert index.is_value("conversation_id", "c8").sum() == 1 and index.is_value("conversation_id", "nope").sum() == 0
    assert index.distinct("conversation_id", np.arange(14)) == 12
    assert isinstance(index.codes("channel")[1], np.ndarray)  # few values: objects, as before
