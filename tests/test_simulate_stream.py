import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from forensics.bundle import read_bundle, verify_bundle, write_bundle
from forensics.errors import ScenarioError
from forensics.simulate import simulate
from forensics.simulate.stream import simulate_bundle, slice_sizes


def test_slice_sizes_are_near_equal_and_capped():
    assert slice_sizes(10, 4) == [4, 3, 3]
    assert slice_sizes(8, 4) == [4, 4]
    assert slice_sizes(3, 4) == [3]
    assert sum(slice_sizes(10_000_001)) == 10_000_001 and max(slice_sizes(10_000_001)) <= 250_000


def test_one_slice_is_exactly_simulate(tmp_path):
    streamed = read_bundle(simulate_bundle("token-expired", tmp_path / "a", messages=2000, seed=5))
    whole = simulate("token-expired", messages=2000, seed=5)
    write_bundle(whole, tmp_path / "b")
    back = read_bundle(tmp_path / "b")
    assert streamed.tables.keys() == back.tables.keys()
    for name, frame in back.tables.items():
        pd.testing.assert_frame_equal(streamed.tables[name], frame)


@pytest.fixture(scope="module")
def sliced(tmp_path_factory):
    path = simulate_bundle("router-outage", tmp_path_factory.mktemp("s") / "b", messages=6000, seed=2,
                           slice_messages=2000)
    return path, read_bundle(path)


def test_slices_are_one_incident(sliced):
    path, ev = sliced
    assert verify_bundle(path).ok
    m = ev.tables["messages"]
    assert len(m) == 6000 and m["message_id"].is_unique
    assert pq.ParquetFile(path / "messages.parquet").metadata.num_row_groups == 3
    whole = simulate("router-outage", messages=2000, seed=2)
    # every slice shares the incident's trigger: nothing moves past PENDING after it
    assert ev.scenario["started_at"] == whole.scenario["started_at"] and ev.scenario["messages"] == 6000
    assert ev.sources["simulator"]["slices"] == 3 and ev.sources["simulator"]["messages"] == 6000
    started = pd.Timestamp(ev.scenario["started_at"])
    after = m[m["created_at"] > started + pd.Timedelta(seconds=5)]
    assert len(after) and (after["status"] == "PENDING").all()


def test_platform_wide_tables_are_merged_once(sliced):
    path, ev = sliced
    lag = ev.tables["consumer_lag"]
    assert not lag.duplicated(["sampled_at", "group", "topic", "partition"]).any()
    assert (lag["lag"] == lag["end_offset"] - lag["committed_offset"]).all()
    # the router group's lag at the end counts every slice's unconsumed events
    last = lag[lag["sampled_at"] == lag["sampled_at"].max()]
    slice_lag = simulate("router-outage", messages=2000, seed=2, part=(0, 3)).tables["consumer_lag"]
    assert last["lag"].sum() > slice_lag[slice_lag["sampled_at"] == slice_lag["sampled_at"].max()]["lag"].sum()
    metrics = ev.tables["metrics"]
    assert (metrics.loc[metrics["metric"] == "up", "value"] == 1).all()
    assert not metrics.duplicated(["metric", "labels", "timestamp"]).any()
    assert ev.tables["topics"]["topic"].is_unique
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["tables"]["messages"]["row_groups"] == 3


def test_a_bad_part_is_refused():
    with pytest.raises(ScenarioError, match="part"):
        simulate("baseline", messages=100, part=(3, 3))


def test_no_workers_is_refused(tmp_path):
    with pytest.raises(ScenarioError, match="workers"):
        simulate_bundle("baseline", tmp_path / "b", messages=100, workers=0)
    assert not (tmp_path / "b").exists()


VARIANTS = {
    "default": [],
    "no-baseline-noise-under-way": ["--baseline", "none", "--noise", "--under-way"],
    "partial-evidence-keep-secrets": ["--collected", "mongo,logs", "--keep-secrets", "--baseline", "30m", "--workers", "2"],
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_forensics_simulate_writes_what_simulate_and_write_bundle_wrote(variant, tmp_path):
    """The CLI streams through simulate_bundle; for a small window its bundle holds exactly the
    tables (window and baseline), description and secret treatment of the whole-incident path."""
    from forensics.cli import main

    args = VARIANTS[variant]
    assert main(["simulate", "--scenario", "telegram-bot-blocked", "--messages", "1500", "--seed", "3",
                 "--profile", "chat4all-v2", "--out", str(tmp_path / "cli"), "-q", *args]) == 0
    keep = "--keep-secrets" in args
    whole = simulate("telegram-bot-blocked", messages=1500, seed=3, profile="chat4all-v2",
                     baseline=args[args.index("--baseline") + 1] if "--baseline" in args else "window",
                     noise=True if "--noise" in args else None, under_way="--under-way" in args,
                     collected=["mongo", "logs"] if "--collected" in args else None)
    write_bundle(whole, tmp_path / "old", keep_secrets=keep)
    streamed, old = read_bundle(tmp_path / "cli"), read_bundle(tmp_path / "old")
    for a, b in ((streamed, old), (streamed.baseline, old.baseline)):
        assert (a is None) == (b is None)
        if a is None:
            continue
        assert a.tables.keys() == b.tables.keys() and a.window == b.window and a.missing == b.missing
        for name, frame in b.tables.items():
            pd.testing.assert_frame_equal(a.tables[name], frame, obj=f"{variant}: {name}")
    assert streamed.scenario == old.scenario
    assert streamed.secrets == old.secrets and streamed.secrets["masked"] is not keep
    sim = streamed.sources["simulator"]
    assert {k: v for k, v in sim.items() if k != "slices"} == old.sources["simulator"] and sim["slices"] == 1


def test_parallel_workers_write_the_same_bundle_as_one(tmp_path):
    """Slices simulated by two worker processes are appended in slice order: the same rows in
    the same order, table by table (window and baseline), as simulating them one after another."""
    said = []
    paths = {w: simulate_bundle("router-outage", tmp_path / f"w{w}", messages=4500, seed=4, slice_messages=1500,
                                workers=w, progress=said.append if w == 2 else None) for w in (1, 2)}
    serial, parallel = read_bundle(paths[1]), read_bundle(paths[2])
    for a, b in ((serial, parallel), (serial.baseline, parallel.baseline)):
        assert a.tables.keys() == b.tables.keys()
        for name, frame in a.tables.items():
            pd.testing.assert_frame_equal(b.tables[name], frame, obj=name)
    manifests = [json.loads((paths[w] / "manifest.json").read_text()) for w in (1, 2)]
    for part in (lambda m: m["tables"], lambda m: m["baseline"]["tables"]):
        rows = [{name: (t["rows"], t["row_groups"]) for name, t in part(m).items()} for m in manifests]
        assert rows[0] == rows[1] and rows[0]["messages"][1] == 3
    assert manifests[1]["tables"]["messages"]["rows"] == 4500
    assert manifests[0]["sources"] == manifests[1]["sources"] and manifests[0]["scenario"] == manifests[1]["scenario"]
    assert [line for line in said if line.startswith("writing slice")] == [f"writing slice {k}/3" for k in (1, 2, 3)]
    assert sum(line.startswith("simulating slice") for line in said) == 3
