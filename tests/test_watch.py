"""`forensics watch`: Alertmanager notifications (payload version 4) parsed strictly; the
receiver answers at once over real HTTP, groups repeated notifications of one alert group
into one incident, bounds concurrent investigations, refuses bad bodies with 4xx and goes
on; one investigation runs the real collect -> bundle -> report pipeline (simulator source).
The end-to-end run against a real Alertmanager is tests/integration/test_watch_alertmanager.py."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from forensics.bundle import verify_bundle
from forensics.errors import ParameterError
from forensics.report.watch import Notification, PayloadError, Watcher, WatchServer, incident_name, parse_listen

STARTS_AT = "2026-01-15T13:40:00.123456789Z"


def payload(group: str = "HighFailedRate", status: str = "firing", **changes) -> dict:
    """A notification as Alertmanager 0.25 sends it (one alert of the group)."""
    body = {
        "receiver": "forensics", "status": status, "version": "4",
        "groupKey": f'{{}}:{{alertname="{group}"}}', "truncatedAlerts": 0,
        "groupLabels": {"alertname": group}, "commonLabels": {"alertname": group, "severity": "critical"},
        "commonAnnotations": {"summary": "More than 5 % FAILED"}, "externalURL": "http://am:9093",
        "alerts": [{"status": status, "labels": {"alertname": group, "severity": "critical"},
                    "annotations": {"summary": "More than 5 % FAILED"}, "startsAt": STARTS_AT,
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom:9090/graph",
                    "fingerprint": "c6eadffa33fcdf37"}],
    }
    body.update(changes)
    return body


def test_a_version_4_notification_is_read():
    n = Notification.parse(json.dumps(payload()).encode())
    assert n.group_key == '{}:{alertname="HighFailedRate"}' and n.status == "firing" and n.receiver == "forensics"
    (alert,) = n.firing
    assert alert.name == "HighFailedRate" and alert.labels["severity"] == "critical"
    assert alert.starts_at == pd.Timestamp("2026-01-15T13:40:00.123456789Z")


@pytest.mark.parametrize("body, named", [
    (b"{not json", "not JSON"),
    (b"[]", "not a JSON object"),
    (json.dumps(payload(version="3")).encode(), "version: expected '4'"),
    (json.dumps(payload(groupKey="")).encode(), "groupKey"),
    (json.dumps(payload(status="pending")).encode(), "status: expected firing or resolved"),
    (json.dumps(payload(alerts=[])).encode(), "alerts: expected a non-empty list"),
    (json.dumps(payload(alerts=["x"])).encode(), "alerts[0]: expected an object"),
    (json.dumps(payload(alerts=[{**payload()["alerts"][0], "labels": {"severity": "critical"}}])).encode(),
     "alerts[0].labels.alertname"),
    (json.dumps(payload(alerts=[{**payload()["alerts"][0], "startsAt": "yesterday"}])).encode(),
     "alerts[0].startsAt"),
    (json.dumps(payload(alerts=[{**payload()["alerts"][0], "startsAt": "2026-01-15T13:40:00"}])).encode(),
     "with a zone"),
    (json.dumps(payload(alerts=[{**payload()["alerts"][0], "labels": {"alertname": 3}}])).encode(),
     "alerts[0].labels: expected an object of strings"),
])
def test_a_bad_body_is_refused_naming_what_is_wrong(body, named):
    with pytest.raises(PayloadError, match=named.replace("[", r"\[").replace("]", r"\]")):
        Notification.parse(body)


def test_listen_address_and_incident_names():
    assert parse_listen("127.0.0.1:19096") == ("127.0.0.1", 19096)
    assert parse_listen("[::1]:80") == ("::1", 80)
    for bad in ("19096", "host:", "host:99999", "host:http"):
        with pytest.raises(ParameterError, match="--listen"):
            parse_listen(bad)
    name = incident_name("High/Failed Rate", "{}:{a}", pd.Timestamp("2026-01-15T13:40:00Z"))
    assert name.startswith("20260115T134000Z-High-Failed-Rate-") and "/" not in name


class Receiver:
    """A watcher behind its real HTTP server on a free loopback port."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.server = WatchServer(("127.0.0.1", 0), watcher)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.server.server_port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def post(self, body: dict | bytes) -> tuple[int, dict]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, answer = self.request("POST", "/", data, {"Content-Type": "application/json"})
        return status, json.loads(answer)

    def index(self) -> dict:
        status, body = self.request("GET", "/index.json")
        assert status == 200
        return json.loads(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.watcher.close()


def _wait(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_receiver_answers_first_groups_repeats_bounds_investigations_and_survives_bad_bodies(tmp_path):
    release = threading.Event()
    started: list[str] = []

    def investigate(incident, window):
        started.append(incident.name)
        assert window.start == pd.Timestamp("2026-01-15T13:10:00.123Z")  # startsAt less the lookback (ms)
        release.wait(60)
        incident.title = f"investigated {incident.alerts[0]}"

    receiver = Receiver(Watcher(tmp_path / "out", [], lookback=pd.Timedelta("30min"), max_concurrent=1,
                                investigate=investigate))
    try:
        assert receiver.post(b"{not json")[0] == 400
        status, answer = receiver.post(payload(version="3"))
        assert status == 400 and "version" in answer["error"]
        status, _ = receiver.request("POST", "/", b"x", {"Content-Length": str(2 << 20)})  # refused unread
        assert status == 413
        assert receiver.request("POST", "/elsewhere", b"{}")[0] == 404

        status, first = receiver.post(payload())  # answered while the investigation cannot finish
        assert status == 202 and first["action"] == "investigating"
        status, again = receiver.post(payload())
        assert status == 200 and again == {"action": "grouped", "incident": first["incident"]}
        status, other = receiver.post(payload("HighConsumerLag"))
        assert status == 202 and other["incident"] != first["incident"]
        _wait(lambda: started, "the first investigation")
        index = receiver.index()
        by_name = {i["name"]: i for i in index["incidents"]}
        assert len(by_name) == 2 and by_name[first["incident"]]["notifications"] == 2
        assert by_name[other["incident"]]["status"] == "queued", "max_concurrent=1 must hold the second back"
        assert started == [first["incident"]] and index["watch"]["running"] == 2

        release.set()
        _wait(lambda: all(i["status"] == "ok" for i in receiver.index()["incidents"]), "both investigations")
        assert receiver.post(payload(status="resolved"))[1] == {"action": "resolved", "incident": first["incident"]}
        status, refired = receiver.post(payload())
        assert status == 202 and refired["incident"] != first["incident"]
        assert receiver.post(payload("Unrelated", status="resolved"))[1]["action"] == "ignored"

        page = receiver.request("GET", "/")[1].decode()
        assert "Alert-triggered incidents: 3 incidents" in page and "investigated HighConsumerLag" in page
        assert "<th>alerts</th>" in page and "HighFailedRate" in page
        assert receiver.request("GET", "/../../../etc/passwd")[0] == 404
        assert receiver.request("GET", "/healthz")[0] == 200
    finally:
        release.set()
        receiver.close()
    earlier = Watcher(tmp_path / "out", [], investigate=investigate)  # a restart keeps the list
    listed = json.loads((tmp_path / "out" / "index.json").read_text())["incidents"]
    assert [i.name for i in earlier.incidents] == [i["name"] for i in listed] and len(listed) == 3
    earlier.close()


def test_a_failed_investigation_is_tried_again_by_the_next_notification(tmp_path):
    attempts = []

    def investigate(incident, window):
        attempts.append(incident.name)
        if len(attempts) == 1:
            raise OSError("mongo: connection refused")

    watcher = Watcher(tmp_path, [], investigate=investigate)
    try:
        first = watcher.receive(Notification.parse(json.dumps(payload()).encode()))[1]["incident"]
        _wait(lambda: watcher.incidents[0].status == "failed", "the failed attempt")
        assert watcher.incidents[0].error == "OSError: mongo: connection refused"
        status, again = watcher.receive(Notification.parse(json.dumps(payload()).encode()))
        assert status == 202 and again["incident"] != first
        _wait(lambda: watcher.incidents[1].status == "ok", "the second attempt")
        assert watcher.receive(Notification.parse(json.dumps(payload()).encode()))[1]["action"] == "grouped"
    finally:
        watcher.close()


def test_alert_names_filter_what_opens_an_incident(tmp_path):
    watcher = Watcher(tmp_path, [], alert_names=["HighConsumerLag"], investigate=lambda i, w: None)
    try:
        assert watcher.receive(Notification.parse(json.dumps(payload()).encode()))[1]["action"] == "ignored"
        assert watcher.receive(Notification.parse(json.dumps(payload("HighConsumerLag")).encode()))[0] == 202
    finally:
        watcher.close()
    with pytest.raises(ParameterError, match="max_concurrent"):
        Watcher(tmp_path, ["mongo"], max_concurrent=0)
    with pytest.raises(ParameterError, match="sources: none configured"):
        Watcher(tmp_path, [])


@pytest.mark.slow
def test_alerts_are_investigated_at_once_into_verified_bundles_and_reports(tmp_path):
    """The real pipeline, two groups at once (two report kernels in one process); the simulator
    stands in for the live sources (the same collect call)."""
    watcher = Watcher(tmp_path, ["simulator"], options={"scenario": "whatsapp-rate-limit", "messages": 1200},
                      lookback=pd.Timedelta("1h"), max_concurrent=2)
    try:
        answers = [watcher.receive(Notification.parse(json.dumps(payload(group)).encode()))
                   for group in ("HighFailedRate", "DeliveryLatencyP95")]
        assert [status for status, _ in answers] == [202, 202]
        _wait(lambda: all(i.status in ("ok", "failed") for i in watcher.incidents), "the investigations", timeout=300)
    finally:
        watcher.close()
    assert [i.status for i in watcher.incidents] == ["ok", "ok"], [i.error for i in watcher.incidents]
    for (_, answer), incident in zip(answers, watcher.incidents, strict=True):
        home = tmp_path / answer["incident"]
        assert verify_bundle(home / "bundle").ok
        custody = json.loads((home / "bundle" / "manifest.json").read_text())["custody"][0]
        assert custody["action"] == "alert" and custody["detail"]["alerts"] == incident.alerts
        assert incident.cause == "platform_rate_limit"
        assert (tmp_path / incident.files["html"]).is_file()
    index = json.loads((tmp_path / "index.json").read_text())
    assert [i["cause"] for i in index["incidents"]] == ["platform_rate_limit"] * 2
    assert Path(index["incidents"][0]["bundle"]) == tmp_path / answers[0][1]["incident"] / "bundle"
