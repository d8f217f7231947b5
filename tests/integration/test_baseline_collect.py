"""The live path of a baseline, end to end: an incident seeded into the real stack with the normal
hour before it (``forensics seed --baseline``), collected with ``forensics collect --baseline
preceding`` over the printed window, and analysed: the bundle holds both periods, chronic
conditions are judged unchanged, and the scenario's cause ranks first."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from forensics.analysis.pipeline import analyze
from forensics.bundle import read_bundle, verify_bundle
from forensics.simulate.seed import Placement, seed
from forensics.timeutil import iso

pytestmark = pytest.mark.integration

SOURCES = "mongo,kafka,redis"


@pytest.fixture
def seeded_with_baseline(stack, mongo_db, kafka_topic_prefix, pg_schema, redis_db, tmp_path):
    """A poison pill in the deployed code's layout (chronic noise on), the hour before it
    seeded too, and the placed profile as a YAML file."""
    placement = Placement(database=mongo_db.name, topic_prefix=kafka_topic_prefix, pg_schema=pg_schema.name,
                          redis_prefix=redis_db.prefix, service_prefix=kafka_topic_prefix)
    connections = {"mongo": stack.mongo_uri, "kafka": stack.kafka_bootstrap, "redis": stack.redis_url}
    result = seed("poison-pill", profile="chat4all-v2", messages=1500, seed=5, placement=placement,
                  connections=connections, targets=["mongo", "kafka", "redis"], baseline="1h")
    profile = tmp_path / "placed-profile.yaml"
    profile.write_text(yaml.safe_dump({k: v for k, v in dataclasses.asdict(result.profile).items() if k != "path"}))
    return result, profile


def test_collect_with_a_preceding_baseline_finds_the_change(seeded_with_baseline, stack, tmp_path):
    result, profile = seeded_with_baseline
    window, truth = result.window, result.evidence.scenario
    env = {**os.environ, "FORENSICS_MONGO_URI": stack.mongo_uri, "FORENSICS_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
           "FORENSICS_REDIS_URL": stack.redis_url}
    bundle = tmp_path / "bundle"
    proc = subprocess.run(
        [sys.executable, "-m", "forensics.cli", "collect", "--sources", SOURCES, "--since", iso(window.start),
         "--until", iso(window.end), "--baseline", "preceding", "--profile", str(profile), "--out", str(bundle),
         "--quiet"], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert verify_bundle(bundle).ok
    ev = read_bundle(bundle)
    assert ev.baseline is not None and ev.baseline_kind == "preceding"
    assert ev.baseline.window.end == window.start and ev.baseline.window.start == window.start - pd.Timedelta("1h")
    # the seeded baseline hour is what the baseline collection found
    seeded_before = set(result.evidence.baseline.table("messages")["message_id"])
    assert seeded_before <= set(ev.baseline.table("messages")["message_id"])
    assert (ev.baseline.table("messages")["status"] == "PENDING").sum() <= 3
    # what a source samples at collection time says nothing about the past
    assert not ev.baseline.has("consumer_lag") and "consumer_lag" in ev.baseline.missing
    assert not ev.baseline.has("locks")

    a = analyze(ev)
    top = a.ranked[0]
    assert top.cause == truth["root_cause"] == "partition_problem", a.hypotheses[["cause", "confidence"]].head()
    findings = a.findings
    assert {"baseline_value", "change"} <= set(findings.columns)
    assert findings["change"].notna().any()  # every finding is judged against the baseline
    # localisation: the stuck messages are new and their conversations hash to the stalled partition
    stuck = findings[findings["detector"] == "stuck_pending"]
    assert len(stuck) and set(stuck["change"]) == {"new"}
    confined = findings[findings["detector"] == "partition_confined"]
    assert len(confined) == 1 and confined["finding_id"].iloc[0].endswith(f":{truth['partition']}")
    assert confined["severity"].iloc[0] == "critical"
    summary = a.summary()
    assert summary["baseline"]["kind"] == "preceding" and set(stuck["finding_id"]) <= set(summary["what_changed"])
