"""Alert-triggered RCA: ``forensics watch`` is an Alertmanager webhook receiver.

Alertmanager POSTs a notification (webhook payload version 4) for a group of alerts each
time the group fires, changes, repeats or resolves. For a firing group this receiver opens
an **incident**: it collects the window from ``lookback`` before the earliest alert's
``startsAt`` up to now from the configured live sources, writes the evidence bundle and
the RCA report under ``out/<incident>/`` (``bundle/``, ``report/``), and lists every
incident in ``out/index.json`` and ``out/index.html`` (the batch index, with the alert
columns added). It never blocks Alertmanager: a notification is answered at once (202
when an investigation starts, 200 when it joins an incident or is ignored) and the
investigation runs on a bounded pool in the background (``max_concurrent``; the others
wait as ``queued``).

Grouping: notifications of one alert group (Alertmanager's ``groupKey``) belong to one
incident until the group resolves; a group firing again after that is a new incident, and
so is the next notification of a group whose investigation failed (Alertmanager's repeat
is the retry).
A body that is not a version-4 notification is answered 400 (413 when too large) and the
receiver goes on. The index is written atomically after every change; an index left by an
earlier run is read back at start (investigations it had not finished are marked failed).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd

from forensics.errors import ForensicsError, ParameterError
from forensics.report.batch import INDEX_JSON, Incident, incident_error, write_index
from forensics.report.runner import FORMATS
from forensics.timeutil import Window, iso, utcnow

PAYLOAD_VERSION = "4"
MAX_BODY_BYTES = 1 << 20
"""Largest notification accepted (Alertmanager truncates big groups well below this)."""
DEFAULT_LOOKBACK = pd.Timedelta("1h")
"""How far before the alert's start the collected window begins."""
FINAL = ("ok", "failed")
WATCH_COLUMNS = (("alerts", lambda i: ", ".join(i.alerts)), ("alert started", lambda i: i.alert_started_at),
                 ("notifications", lambda i: i.notifications), ("resolved", lambda i: i.resolved_at))
"""Columns the watch index adds to the batch index (header, value of an AlertIncident)."""


class PayloadError(ForensicsError):
    """A webhook body that is not an Alertmanager notification of payload version 4."""


@dataclass(frozen=True)
class Alert:
    """One alert of a notification."""

    name: str
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: pd.Timestamp
    fingerprint: str


@dataclass(frozen=True)
class Notification:
    """One Alertmanager webhook notification (payload version 4)."""

    group_key: str
    status: str
    receiver: str
    alerts: tuple[Alert, ...]
    group_labels: dict[str, str]
    external_url: str

    @property
    def firing(self) -> list[Alert]:
        return [a for a in self.alerts if a.status == "firing"]

    @classmethod
    def parse(cls, body: bytes) -> Notification:
        """The notification in ``body``; PayloadError naming the first thing that is wrong."""
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PayloadError(f"body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise PayloadError("body is not a JSON object")
        if str(data.get("version")) != PAYLOAD_VERSION:
            raise PayloadError(f"version: expected {PAYLOAD_VERSION!r} (Alertmanager webhook payload), "
                               f"got {data.get('version')!r}")
        group_key = _text(data, "groupKey")
        status = _status(data, "notification")
        raw = data.get("alerts")
        if not isinstance(raw, list) or not raw:
            raise PayloadError("alerts: expected a non-empty list")
        alerts = tuple(_alert(a, n) for n, a in enumerate(raw))
        return cls(group_key, status, str(data.get("receiver") or ""), alerts,
                   _labels(data.get("groupLabels") or {}, "groupLabels"), str(data.get("externalURL") or ""))


def _text(data: dict, key: str, where: str = "") -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PayloadError(f"{where}{key}: expected a non-empty string, got {value!r:.60}")
    return value


def _status(data: dict, what: str, where: str = "") -> str:
    status = data.get("status")
    if status not in ("firing", "resolved"):
        raise PayloadError(f"{where}status: expected firing or resolved for the {what}, got {status!r:.60}")
    return status


def _labels(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise PayloadError(f"{where}: expected an object of strings")
    return dict(value)


def _alert(raw: Any, n: int) -> Alert:
    where = f"alerts[{n}]."
    if not isinstance(raw, dict):
        raise PayloadError(f"alerts[{n}]: expected an object")
    labels = _labels(raw.get("labels"), where + "labels")
    if not labels.get("alertname"):
        raise PayloadError(f"{where}labels.alertname: missing")
    started = _text(raw, "startsAt", where)
    try:
        starts_at = pd.Timestamp(started)
    except (ValueError, TypeError):
        raise PayloadError(f"{where}startsAt: not an RFC 3339 time: {started!r:.60}") from None
    if starts_at is pd.NaT or starts_at.tzinfo is None:
        raise PayloadError(f"{where}startsAt: not an RFC 3339 time with a zone: {started!r:.60}")
    return Alert(labels["alertname"], _status(raw, "alert", where), labels,
                 _labels(raw.get("annotations") or {}, where + "annotations"), starts_at.tz_convert("UTC"),
                 str(raw.get("fingerprint") or ""))


@dataclass
class AlertIncident(Incident):
    """An incident opened by an alert group: the batch index entry plus the alerts."""

    group_key: str = ""
    alerts: list[str] = field(default_factory=list)
    """Names of the alerts of the group that fired."""
    alert_started_at: str | None = None
    """The earliest startsAt of the firing alerts."""
    window_since: str | None = None
    """Start of the collected window: alert_started_at less the lookback."""
    notifications: int = 0
    first_notified_at: str | None = None
    last_notified_at: str | None = None
    resolved_at: str | None = None


def incident_name(alert: str, group_key: str, when: pd.Timestamp) -> str:
    """``<UTC time>-<alert name>-<hash of the group key>``, safe as a directory name."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", alert).strip("-.")[:40] or "alert"
    return f"{when:%Y%m%dT%H%M%SZ}-{slug}-{hashlib.sha256(group_key.encode()).hexdigest()[:8]}"


class Watcher:
    """Turns notifications into incidents and investigates them on a bounded pool.

    ``sources``, ``profile`` and ``options`` are those of ``forensics collect``;
    ``lookback`` is how far before the alert's start the window begins; ``alert_names``,
    when given, are the only alerts that open an incident. ``investigate`` replaces the
    collect-bundle-report pipeline (it receives the incident and its window).
    """

    def __init__(self, out: str | Path, sources: Iterable[str], *, profile: str = "runbook",
                 options: dict[str, Any] | None = None, lookback: pd.Timedelta = DEFAULT_LOOKBACK,
                 max_concurrent: int = 2, formats: Iterable[str] = FORMATS, redact: bool = True,
                 alert_names: Iterable[str] = (), progress: Callable[[str], None] | None = None,
                 investigate: Callable[[AlertIncident, Window], None] | None = None) -> None:
        if max_concurrent < 1:
            raise ParameterError(f"max_concurrent: expected at least 1, got {max_concurrent}")
        if lookback <= pd.Timedelta(0):
            raise ParameterError(f"lookback: expected a positive duration, got {lookback}")
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.sources = list(sources)
        if not self.sources and investigate is None:
            raise ParameterError("sources: none configured; give --sources or set the FORENSICS_* variables")
        self.profile, self.options, self.lookback = profile, dict(options or {}), lookback
        self.formats = tuple(dict.fromkeys([*formats, "json"]))
        self.redact = redact
        self.alert_names = set(alert_names)
        self.say = progress or (lambda _msg: None)
        self.investigate = investigate or self.collect_and_report
        self.started = time.monotonic()
        self._lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="investigation")
        self.incidents: list[AlertIncident] = self._earlier_incidents()
        self._write_index()

    # -- notifications
    def receive(self, notification: Notification) -> tuple[int, dict[str, Any]]:
        """Handle one notification; returns the HTTP status and answer. Never waits for an investigation."""
        now = iso(utcnow())
        with self._lock:
            current = self._open_incident(notification.group_key)
            if current is not None:
                current.notifications += 1
                current.last_notified_at = now
                if notification.status == "resolved":
                    current.resolved_at = now
                current.alerts = sorted(set(current.alerts) | {a.name for a in notification.firing})
                self._write_index()
                return 200, {"action": "resolved" if current.resolved_at else "grouped", "incident": current.name}
            firing = [a for a in notification.firing if not self.alert_names or a.name in self.alert_names]
            if notification.status == "resolved" or not firing:
                return 200, {"action": "ignored", "reason": "no firing alert to investigate" if not firing
                             else "resolved group without an open incident"}
            started = min(a.starts_at for a in firing)
            incident = AlertIncident(
                name=self._unique(incident_name(firing[0].name, notification.group_key, utcnow())), bundle="",
                status="queued", group_key=notification.group_key, alerts=sorted({a.name for a in firing}),
                alert_started_at=iso(started), window_since=iso(started - self.lookback), notifications=1,
                first_notified_at=now, last_notified_at=now)
            incident.bundle = str(self.out / incident.name / "bundle")
            self.incidents.append(incident)
            self._write_index()
        self.say(f"{incident.name}: {', '.join(incident.alerts)} firing since {incident.alert_started_at}; "
                 "investigation queued")
        self._pool.submit(self._run, incident)
        return 202, {"action": "investigating", "incident": incident.name}

    def _open_incident(self, group_key: str) -> AlertIncident | None:
        """The latest incident of the group, while the group has not resolved and its
        investigation has not failed (a failed one is tried again by the next notification)."""
        mine = [i for i in self.incidents if i.group_key == group_key]
        return mine[-1] if mine and mine[-1].resolved_at is None and mine[-1].status != "failed" else None

    def _unique(self, name: str) -> str:
        taken = {i.name for i in self.incidents}
        n, candidate = 1, name
        while candidate in taken or (self.out / candidate).exists():
            n += 1
            candidate = f"{name}-{n}"
        return candidate

    # -- investigations
    def _run(self, incident: AlertIncident) -> None:
        t0 = time.monotonic()
        try:
            window = Window(pd.Timestamp(incident.window_since), utcnow())
            self.investigate(incident, window)
            self.update(incident, status="ok")
            self.say(f"{incident.name}: report written ({incident.title or 'no cause'})")
        except Exception as exc:  # noqa: BLE001 - one investigation's failure must not stop the receiver
            self.update(incident, status="failed", error=incident_error(exc))
            self.say(f"{incident.name}: FAILED: {incident.error}")
        finally:
            self.update(incident, seconds=round(time.monotonic() - t0, 2))

    def collect_and_report(self, incident: AlertIncident, window: Window) -> None:
        """Collect ``window`` from the live sources into the incident's bundle, then its report."""
        from forensics.bundle import BundleWriter, custody_entry
        from forensics.report.runner import build_report
        from forensics.sources.registry import collect_bundle

        home = self.out / incident.name

        def say(message: str, fraction: float | None = None) -> None:
            self.say(f"{incident.name}: {message}" + (f" ({fraction:.0%})" if fraction is not None else ""))

        self.update(incident, status="collecting")
        alert = custody_entry("alert", {"group_key": incident.group_key, "alerts": incident.alerts,
                                        "alert_started_at": incident.alert_started_at,
                                        "lookback_s": self.lookback.total_seconds()})
        with BundleWriter(home / "bundle", overwrite=True, progress=say) as writer:
            collect_bundle(writer, self.sources, window, self.profile, self.options, say, baseline=None,
                           custody=[alert])
        self.update(incident, status="reporting")
        written = build_report(home / "bundle", home / "report", formats=self.formats, redact=self.redact,
                               progress=say)
        summary = json.loads(written["json"].read_text(encoding="utf-8"))
        with self._lock:
            incident.read_summary(summary)
            incident.files = {kind: path.relative_to(self.out).as_posix() for kind, path in written.items()}

    def update(self, incident: AlertIncident, **changes: Any) -> None:
        """Change an incident and rewrite the index."""
        with self._lock:
            for key, value in changes.items():
                setattr(incident, key, value)
            self._write_index()

    def close(self) -> None:
        """Stop: queued investigations are dropped (the next start marks them failed), running
        ones are waited for."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- the index
    def _write_index(self) -> None:
        with self._lock:
            meta = {"running": sum(i.status not in FINAL for i in self.incidents),
                    "notifications": sum(i.notifications for i in self.incidents)}
            write_index(self.out, self.incidents, time.monotonic() - self.started, kind="watch", extra=meta,
                        title="Alert-triggered incidents", columns=WATCH_COLUMNS)

    def _earlier_incidents(self) -> list[AlertIncident]:
        """Incidents of an index left by an earlier run; unfinished ones are marked failed."""
        path = self.out / INDEX_JSON
        if not path.is_file():
            return []
        try:
            rows = json.loads(path.read_text(encoding="utf-8")).get("incidents") or []
        except ValueError as exc:
            raise ForensicsError(f"{path} is not an index this command wrote ({exc}); choose another --out") from None
        names = {f.name for f in fields(AlertIncident)}
        out = []
        for row in rows:
            incident = AlertIncident(**{k: v for k, v in row.items() if k in names})
            if incident.status not in FINAL:
                incident.status, incident.error = "failed", "interrupted: the watcher stopped before it finished"
            out.append(incident)
        return out


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ParameterError(f"--listen: expected HOST:PORT, e.g. 127.0.0.1:19096, got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - an empty host means every interface


class WebhookHandler(BaseHTTPRequestHandler):
    """POST / (or /alerts): a notification. GET /, /index.html, /index.json, /healthz, and the
    incidents' report files under the output directory."""

    server: WatchServer
    server_version = "forensics-watch"
    CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json", ".md": "text/markdown",
                     ".ipynb": "application/json"}

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        if self.path.split("?")[0].rstrip("/") not in ("", "/alerts"):
            return self._answer(404, {"error": f"no receiver at {self.path}; POST to / or /alerts"})
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._answer(411, {"error": "Content-Length required"})
        if length > MAX_BODY_BYTES:
            return self._answer(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
        try:
            notification = Notification.parse(self.rfile.read(length))
        except PayloadError as exc:
            self.server.watcher.say(f"refused a notification: {exc}")
            return self._answer(400, {"error": str(exc)})
        return self._answer(*self.server.watcher.receive(notification))

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        path = self.path.split("?")[0]
        if path == "/healthz":
            return self._answer(200, {"status": "ok", "incidents": len(self.server.watcher.incidents)})
        out = self.server.watcher.out.resolve()
        wanted = (out / ("index.html" if path in ("", "/") else path.lstrip("/"))).resolve()
        if not wanted.is_relative_to(out) or not wanted.is_file():
            return self._answer(404, {"error": "not found"})
        body = wanted.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", self.CONTENT_TYPES.get(wanted.suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server API
        self.server.watcher.say(f"{self.address_string()} {format % args}")


class WatchServer(ThreadingHTTPServer):
    """The webhook receiver's HTTP server (one thread per request; investigations on the watcher's pool)."""

    daemon_threads = True

    def __init__(self, listen: tuple[str, int], watcher: Watcher) -> None:
        self.watcher = watcher
        super().__init__(listen, WebhookHandler)
