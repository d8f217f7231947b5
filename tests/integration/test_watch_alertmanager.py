"""Automatic RCA on alerts, end to end with real servers: a simulated incident, still under
way, is seeded into the stack (MongoDB, Kafka, PostgreSQL, Redis, in isolated places) and
its metrics into a Prometheus of our own that evaluates the runbook's alert rules; its
alerts go to Debian's Alertmanager (both started by scripts/services in a private stack
dir), whose webhook calls `forensics watch`. The watcher must open one incident for the
firing group, however often Alertmanager repeats it, collect the window from the live
sources and write a verified bundle and a report that names the seeded cause."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml
from stack_tools import REPO, free_ports, private_services, require_installed

from forensics.bundle import read_bundle, verify_bundle
from forensics.simulate.seed import Placement, seed

pytestmark = pytest.mark.integration

SOURCES = "mongo,kafka,postgres,redis,prometheus"
ALERT = "HighFailedRate"


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback test servers
        return json.loads(resp.read())


def _wait(condition, what: str, timeout: float, watcher: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if watcher.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what}: {'watcher exited' if watcher.poll() is not None else 'timed out'}\n"
                        f"--- forensics watch ---\n{log.read_text()[-3000:]}")
        time.sleep(1)


def _index(out: Path) -> dict:
    try:
        return json.loads((out / "index.json").read_text())
    except (FileNotFoundError, ValueError):
        return {"incidents": []}


@pytest.fixture
def alerting(stack, mongo_db, kafka_topic_prefix, pg_schema, redis_db, tmp_path):
    """The incident seeded (its window ends 20 min from now: at this moment it is under way),
    then Prometheus and Alertmanager up in a private stack dir, the webhook aimed at a port
    for the watcher. Yields (environment for the watcher, watcher port, seed result, profile file)."""
    prometheus_port, alertmanager_port, watch_port = free_ports(3)
    private = tmp_path / "alerting-stack"
    rules = tmp_path / "rules.yml"
    runbook = yaml.safe_load((REPO / "forensics" / "rules" / "runbook_alerts.yaml").read_text())
    for group in runbook["groups"]:
        group["interval"] = "5s"  # the platform's rules, evaluated often enough for a test
    rules.write_text(yaml.safe_dump(runbook))
    settings = {"FORENSICS_PROMETHEUS_PORT": str(prometheus_port), "FORENSICS_PROMETHEUS_RULES": str(rules),
                "FORENSICS_ALERTMANAGER_PORT": str(alertmanager_port),
                "FORENSICS_ALERTMANAGER_WEBHOOK": f"http://127.0.0.1:{watch_port}/",
                "FORENSICS_ALERTMANAGER_REPEAT": "10s"}
    require_installed("prometheus,alertmanager")

    placement = Placement(database=mongo_db.name, topic_prefix=kafka_topic_prefix, pg_schema=pg_schema.name,
                          redis_prefix=redis_db.prefix, service_prefix=kafka_topic_prefix)
    end = pd.Timestamp.now(tz="UTC").floor("ms") + pd.Timedelta("20min")
    result = seed("whatsapp-rate-limit", profile="runbook", messages=600, seed=9, end=end, placement=placement,
                  targets=["mongo", "kafka", "postgres", "redis", "prometheus"],
                  connections={"mongo": stack.mongo_uri, "kafka": stack.kafka_bootstrap,
                               "postgres": stack.postgres_dsn, "redis": stack.redis_url,
                               "prometheus": str(private / "prometheus" / "data")})
    profile = tmp_path / "placed-profile.yaml"
    profile.write_text(yaml.safe_dump({k: v for k, v in dataclasses.asdict(result.profile).items() if k != "path"}))
    watch_env = {**os.environ, "FORENSICS_MONGO_URI": stack.mongo_uri, "FORENSICS_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
                 "FORENSICS_POSTGRES_DSN": stack.postgres_dsn, "FORENSICS_REDIS_URL": stack.redis_url,
                 "FORENSICS_PROMETHEUS_URL": f"http://127.0.0.1:{prometheus_port}"}
    with private_services("prometheus,alertmanager", private, settings):
        yield watch_env, watch_port, f"http://127.0.0.1:{alertmanager_port}", result, profile


def test_a_firing_alert_from_alertmanager_becomes_one_incident_with_its_report(alerting, tmp_path):
    env, port, alertmanager_url, seeded, profile = alerting
    out, log = tmp_path / "incidents", tmp_path / "watch.log"
    with open(log, "w") as sink:
        watcher = subprocess.Popen(
            [sys.executable, "-m", "forensics.cli", "watch", "--listen", f"127.0.0.1:{port}", "--out", str(out),
             "--sources", SOURCES, "--profile", str(profile), "--alerts", ALERT, "--lookback", "1h",
             "--max-concurrent", "1"], env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=sink,
            stderr=subprocess.STDOUT)
    try:
        done = _wait(lambda: [i for i in _index(out)["incidents"] if i["status"] in ("ok", "failed")],
                     "an investigation to finish", 420, watcher, log)
        # Alertmanager repeats the still-firing group every 10 s: it must join the same incident
        _wait(lambda: _index(out)["incidents"][0]["notifications"] >= 3, "repeated notifications", 120, watcher, log)
        bad = urllib.request.Request(f"http://127.0.0.1:{port}/", data=b'{"version": "3"}', method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=10)  # noqa: S310 - loopback test server
        assert refused.value.code == 400
        assert _get(f"http://127.0.0.1:{port}/healthz")["status"] == "ok"
        firing = [a for a in _get(f"{alertmanager_url}/api/v2/alerts") if a["labels"]["alertname"] == ALERT]
        assert firing and firing[0]["status"]["state"] == "active"
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=120)
    assert watcher.returncode == 0, log.read_text()[-3000:]

    incidents = _index(out)["incidents"]
    assert len(incidents) == 1, f"one alert group, one incident: {[i['name'] for i in incidents]}"
    incident = done[0]
    assert incident["status"] == "ok", incident["error"]
    assert incident["alerts"] == [ALERT] and incident["group_key"].endswith(f'{{alertname="{ALERT}"}}')
    started = pd.Timestamp(incident["alert_started_at"])
    assert seeded.window.start < started < seeded.window.end
    bundle = out / incident["name"] / "bundle"
    assert verify_bundle(bundle).ok
    evidence = read_bundle(bundle)
    assert evidence.window.start == pd.Timestamp(incident["window_since"]) == started - pd.Timedelta("1h")
    assert not {s for s in SOURCES.split(",") if s in evidence.missing}, evidence.missing
    assert evidence.has("metrics") and evidence.has("messages") and evidence.has("identities")
    summary = json.loads((out / incident["files"]["json"]).read_text())
    assert summary["hypotheses"][0]["cause"] == seeded.evidence.scenario["root_cause"] == incident["cause"]
    assert any(a["rule"] == ALERT and a["source"] == "metrics" and a["would_fire_at"]
               for a in summary["detection"]["alerts"]), "the report's replay must find the alert that opened it"
    page = (out / "index.html").read_text()
    assert incident["name"] in page and ALERT in page
