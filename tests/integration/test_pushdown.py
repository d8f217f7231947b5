"""The live report's whole-window figures computed on the server (MongoDB aggregation
pipelines) equal the full path's (the collected rows), on one simulated incident seeded into
the real MongoDB-wire server of the local stack (scripts/services)."""

import dataclasses
import json

import pandas as pd
import pytest
import yaml

from forensics.report.params import validate_report_params
from forensics.report.pushdown import (
    DRILL_ROWS,
    LivePlan,
    figures_from_rows,
    figures_from_server,
    live_plan,
    server_figures,
)
from forensics.report.runner import build_report
from forensics.simulate.seed import Placement, seed
from forensics.sources.mongo import MongoSource
from forensics.sources.registry import collect
from forensics.timeutil import iso

pytestmark = pytest.mark.integration

STUCK = {"stuck_pending_s": 5.0, "stuck_sent_s": 5.0}  # ages that leave some of the incident's messages stuck


@pytest.fixture(scope="module")
def seeded(stack, tmp_path_factory):
    """webhooks-stopped (600 messages, some FAILED, many stuck in SENT; and the preceding hour) in a
    database of its own."""
    import pymongo
    from conftest import unique_name

    database = unique_name("pushdown")
    result = seed("webhooks-stopped", profile="runbook", messages=600, seed=9, targets=["mongo"],
                  placement=Placement(database=database), connections={"mongo": stack.mongo_uri})
    profile = tmp_path_factory.mktemp("pushdown") / "placed-profile.yaml"
    profile.write_text(yaml.safe_dump({k: v for k, v in dataclasses.asdict(result.profile).items() if k != "path"}))
    yield result, profile
    pymongo.MongoClient(stack.mongo_uri).drop_database(database)


@pytest.mark.parametrize("scope", ["all channels", "the channel with most stuck"])
def test_figures_on_the_server_equal_the_full_paths(seeded, stack, scope):
    result, _ = seeded
    window = result.window
    sent = result.evidence.table("messages").query("status == 'SENT'")
    channel = None if scope == "all channels" else sent["channel"].value_counts().index[0]
    with MongoSource(stack.mongo_uri, result.profile) as source:
        server = figures_from_server(source, window, STUCK, channel=channel)
        asked = list(source.queries)
    evidence, _, _ = collect(["mongo"], window, result.profile, {"mongo_uri": stack.mongo_uri})
    full = figures_from_rows(evidence.table("messages"), window, STUCK, channel=channel)
    assert (server.computed_on, full.computed_on) == ("server", "rows")
    assert server.pipelines == 4  # status counts, stuck PENDING, stuck SENT, FAILED by error
    assert all(q.get("maxTimeMS") for q in asked)
    seeded_here = result.evidence.table("messages")
    if channel is not None:
        seeded_here = seeded_here[seeded_here["channel"].eq(channel)]
    assert server.messages == full.messages == len(seeded_here)
    for name in ("status_counts", "stuck", "failed_by_error", "examples"):
        pd.testing.assert_frame_equal(getattr(server, name), getattr(full, name), check_dtype=False, obj=name)
    # equal, and not because both are empty
    assert server.failed_by_error["count"].sum() == (seeded_here["status"] == "FAILED").sum()
    assert channel is not None or len(server.failed_by_error) > 0
    assert server.stuck["count"].sum() > DRILL_ROWS and len(server.examples) == DRILL_ROWS


def test_a_big_live_window_is_reported_with_its_figures_from_the_server(seeded, stack, tmp_path):
    result, profile = seeded
    parameters = {"sources": "mongo", "since": iso(result.window.start), "until": iso(result.window.end),
                  "profile": str(profile), "source_options": {"mongo_uri": stack.mongo_uri}}
    small = build_report(None, tmp_path / "small", formats=("html", "json"), parameters=parameters)
    big = build_report(None, tmp_path / "big", formats=("html", "json"), parameters={
        **parameters, "source_options": {"mongo_uri": stack.mongo_uri, "pushdown_messages": 100}})
    page = big["html"].read_text(encoding="utf-8")
    assert "Whole-window figures, computed on the server" in page
    assert "because the window holds more than 100 messages" in page
    assert "computed on the server" not in small["html"].read_text(encoding="utf-8")  # today's path
    # the big window's evidence, streamed to disk and read back, is what the small path held in memory
    summaries = [json.loads(w["json"].read_text()) for w in (small, big)]
    assert "computed_on_server" not in summaries[0]["report"]
    on_server = summaries[1]["report"]["computed_on_server"]
    assert (on_server["computed_on"], on_server["pipelines"], on_server["threshold"]) == ("server", 4, 100)
    assert on_server["messages"] == len(result.evidence.table("messages"))
    assert summaries[0]["impact"] == summaries[1]["impact"]
    assert summaries[0]["hypotheses"][0]["cause"] == summaries[1]["hypotheses"][0]["cause"]


@pytest.mark.parametrize(("options", "expected"), [
    ({}, (600, False, False)),  # below the default threshold: today's path
    ({"pushdown_messages": 100}, (101, True, True)),  # counted one past the threshold, no further
    ({"timeout_s": 0.001}, (None, False, True)),  # a count beyond maxTimeMS: to disk, no server figures
])
def test_the_live_plan_counts_the_window_on_the_server(seeded, stack, options, expected):
    result, profile = seeded
    params = validate_report_params(sources="mongo", since=iso(result.window.start), until=iso(result.window.end),
                                    profile=str(profile), source_options={"mongo_uri": stack.mongo_uri, **options})
    plan = live_plan(params)
    assert plan.window == result.window
    assert (plan.messages, plan.pushdown, plan.to_disk) == expected


def test_figures_the_server_cannot_give_in_time_are_left_out(seeded, stack):
    result, profile = seeded
    params = validate_report_params(sources="mongo", since=iso(result.window.start), until=iso(result.window.end),
                                    profile=str(profile), source_options={"mongo_uri": stack.mongo_uri,
                                                                          "timeout_s": 0.001})
    assert server_figures(params, LivePlan(result.window, 100, messages=600)) is None
