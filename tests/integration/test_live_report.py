"""The RCA report collected live: a simulated incident seeded into the real stack
(scripts/services) in isolated places, read back by the report notebook from MongoDB, Kafka,
Jaeger, PostgreSQL and Redis, ranks the scenario's cause first."""

import dataclasses
import json

import pytest
import yaml

from forensics.report.runner import build_report
from forensics.simulate.seed import Placement, seed
from forensics.timeutil import iso

SOURCES = "mongo,kafka,jaeger,postgres,redis"


@pytest.fixture
def seeded(stack, mongo_db, kafka_topic_prefix, pg_schema, redis_db, tmp_path):
    """The whatsapp-rate-limit incident in the stack, and the placed profile as a YAML file."""
    placement = Placement(database=mongo_db.name, topic_prefix=kafka_topic_prefix, pg_schema=pg_schema.name,
                          redis_prefix=redis_db.prefix, service_prefix=kafka_topic_prefix)
    connections = {"mongo": stack.mongo_uri, "kafka": stack.kafka_bootstrap, "jaeger": stack.otlp_endpoint,
                   "postgres": stack.postgres_dsn, "redis": stack.redis_url}
    result = seed("whatsapp-rate-limit", profile="runbook", messages=600, seed=9, placement=placement,
                  connections=connections)
    profile = tmp_path / "placed-profile.yaml"
    profile.write_text(yaml.safe_dump({k: v for k, v in dataclasses.asdict(result.profile).items() if k != "path"}))
    yield result, profile


def test_live_report_of_a_seeded_incident(seeded, stack, tmp_path):
    result, profile = seeded
    options = {"mongo_uri": stack.mongo_uri, "bootstrap": stack.kafka_bootstrap, "jaeger_url": stack.jaeger_url,
               "postgres_dsn": stack.postgres_dsn, "redis_url": stack.redis_url}
    written = build_report(None, tmp_path / "report", parameters={
        "sources": SOURCES, "since": iso(result.window.start), "until": iso(result.window.end),
        "profile": str(profile), "source_options": options})
    summary = json.loads(written["json"].read_text())
    assert not {s for s in SOURCES.split(",") if s in summary["missing_sources"]}, summary["missing_sources"]
    # the window's messages, and (a live collection takes messages created or updated in the window)
    # the baseline period's messages that were still being delivered when the window opened
    spill = result.evidence.baseline.table("messages")["updated_at"] >= result.window.start
    assert summary["impact"]["messages_total"] == 600 + int(spill.sum())
    assert summary["hypotheses"][0]["cause"] == result.evidence.scenario["root_cause"] == "platform_rate_limit"
    page = written["html"].read_text(encoding="utf-8")
    assert f"<dt>Live sources</dt><dd>{SOURCES.replace(',', ', ')}</dd>" in page
    secrets = [v.split("@")[0].rsplit(":", 1)[-1] for v in (stack.mongo_uri, stack.postgres_dsn, stack.redis_url)]
    for path in written.values():
        text = path.read_text(encoding="utf-8")
        assert not [s for s in secrets if len(s) >= 8 and s in text], f"a password is written in {path.name}"
