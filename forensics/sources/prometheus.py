"""Prometheus as an evidence source: the HTTP API, the :class:`Source`, actuator snapshots, backfill.

:class:`PrometheusClient` reads the query API (``/api/v1/query``, ``query_range``,
``series``, ``label/__name__/values``, ``rules``, ``alerts``, ``status/buildinfo``), never
writes, and bounds every request: a range query's step is chosen from the window so a
series has at most ``max_points`` (1100) points, results are capped at ``max_series``
series, and the server is given the same ``timeout`` as the HTTP client. Answers become the
canonical ``metrics`` table (metric, labels as sorted JSON without ``__name__``,
timestamp, value; source "prometheus", source_object = the query).

Failures are distinct :class:`~forensics.errors.SourceError` subclasses, each naming
what to check: :class:`PrometheusUnavailable` (refused, timed out), :class:`BadPromQL`
(HTTP 400 ``bad_data``, with the server's reason), :class:`PrometheusQueryError` (422
execution errors, 503 query timeouts, other 5xx), :class:`NoSeries` (nothing to collect
in the window) and :class:`BackfillError`.

:func:`health_snapshot` reads Spring actuators (``/actuator/health``,
``/actuator/prometheus``) into metrics rows (source "actuator"); :func:`backfill` loads
OpenMetrics text (:func:`forensics.simulate.metrics.to_openmetrics`) into a Prometheus
data directory with ``promtool tsdb create-blocks-from openmetrics``.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import requests

from forensics import schema
from forensics.config import DEFAULT_LIMITS, Limits, connection
from forensics.credentials import mask_uri
from forensics.errors import ParameterError, SourceError
from forensics.rules import metric_names
from forensics.sources.base import EvidenceSource, Option, SourceResult
from forensics.sources.http import Hints, HttpJsonClient
from forensics.timeutil import Window

MAX_POINTS = 1100
"""Points per series a range query may return (Prometheus itself refuses more than 11 000)."""
MAX_SERIES = 500
"""Series kept per query; more are dropped and the result says so."""
MIN_STEP_S = 15.0
"""Smallest automatic step: a common scrape interval (finer steps only repeat samples)."""
NICE_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
HINTS = Hints(refused="is Prometheus running? scripts/services up --only prometheus; FORENSICS_PROMETHEUS_URL",
              timeout="is Prometheus up and not overloaded? narrow the window", network="network path to Prometheus")
MAX_METRIC_NAMES = 5000
"""Metric names of the server kept in the source description (for "metric does not exist")."""


class PrometheusError(SourceError):
    """A Prometheus request failed; ``status``/``error_type`` are the server's when it answered."""

    def __init__(self, problem: str, hint: str = "", *, status: int | None = None, error_type: str | None = None,
                 url: str | None = None) -> None:
        self.status, self.error_type, self.url = status, error_type, url
        super().__init__("prometheus", problem, hint)


class PrometheusUnavailable(PrometheusError):
    """No answer: connection refused or reset, or no answer within the timeout."""


class BadPromQL(PrometheusError):
    """HTTP 400 (``bad_data``): the server rejected the expression or a parameter; the message is its reason."""


class PrometheusQueryError(PrometheusError):
    """The query was valid but failed: 422 execution error, 503 timeout or cancellation, other 5xx."""


class NoSeries(PrometheusError):
    """Nothing to read: none of the requested metrics has samples in the window."""


class BackfillError(PrometheusError):
    """promtool could not turn the OpenMetrics text into blocks."""


def _timestamp(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _seconds(ts: pd.Timestamp) -> str:
    return f"{ts.value / 1e9:.3f}"


def _labels_json(labels: Mapping[str, Any]) -> str:
    return json.dumps({str(k): str(v) for k, v in labels.items() if k != "__name__"}, sort_keys=True,
                      separators=(",", ":"))


def _float(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def choose_step(start: Any, end: Any, *, max_points: int = MAX_POINTS, min_step_s: float = MIN_STEP_S) -> float:
    """The smallest "nice" step (15 s, 30 s, 1 min, ...) that keeps a range query over
    [start, end] within ``max_points`` points per series."""
    span = (_timestamp(end) - _timestamp(start)).total_seconds()
    need = max(span / max(max_points - 1, 1), min_step_s)
    return float(next((s for s in NICE_STEPS_S if s >= need), math.ceil(need)))


class PrometheusClient:
    """The Prometheus HTTP API, read-only and bounded; answers as canonical ``metrics`` frames.

    ``url`` defaults to ``FORENSICS_PROMETHEUS_URL``. ``limits.timeout_s`` is sent as the
    query ``timeout`` and bounds the HTTP read (plus a few seconds for the answer to
    travel); ``limits.max_rows`` caps the rows of one result. ``history`` records every
    request (path, parameters, HTTP status, ms, warnings) for the bundle's query log.
    """

    def __init__(self, url: str | None = None, *, limits: Limits = DEFAULT_LIMITS, max_series: int = MAX_SERIES,
                 max_points: int = MAX_POINTS, session: requests.Session | None = None) -> None:
        resolved = connection("prometheus", url)
        if not resolved:
            raise PrometheusError("no Prometheus URL given", "--prometheus-url or FORENSICS_PROMETHEUS_URL, e.g. "
                                  "http://127.0.0.1:9090")
        for label, value in (("max_series", max_series), ("max_points", max_points)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"{label} must be a positive integer, got {value!r}")
        self.url = resolved.rstrip("/")
        self.limits, self.max_series, self.max_points = limits, max_series, max_points
        self.http = HttpJsonClient(self.url, unavailable=PrometheusUnavailable, hints=HINTS, limits=limits,
                                   read_slack_s=5.0, session=session)
        self.history = self.http.history

    def __repr__(self) -> str:
        return f"PrometheusClient({mask_uri(self.url)!r})"

    # -- transport ----------------------------------------------------------------------------

    def _get(self, path: str, params: Mapping[str, Any] | list[tuple[str, Any]] | None = None) -> Any:
        """GET ``path`` and return the answer's ``data``, mapping every failure to a PrometheusError."""
        resp, entry = self.http.get(path, params)
        return self._decode(resp, path, entry["url"], entry)

    def _decode(self, resp: requests.Response, path: str, where: str, entry: dict[str, Any]) -> Any:
        status = resp.status_code
        try:
            doc = resp.json()
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or "status" not in doc:
            ctype = resp.headers.get("Content-Type", "none")
            kind = "HTTP 404: no such path" if status == 404 else f"HTTP {status}, Content-Type {ctype}"
            raise PrometheusError(f"{path} did not answer the Prometheus API's JSON ({kind}): "
                                  f"{resp.text[:120]!r}", "the URL must be Prometheus itself (port 9090), not "
                                  "Grafana or a login proxy", status=status, url=where)
        if doc.get("warnings"):
            entry["warnings"] = list(doc["warnings"])
        if doc.get("status") == "success":
            return doc.get("data")
        error_type, reason = doc.get("errorType") or "", str(doc.get("error") or "(no reason given)")
        if status == 400 or error_type == "bad_data":
            raise BadPromQL(f"query rejected ({error_type or status}): {reason}", "the PromQL expression and "
                            "the start/end/step parameters", status=status, error_type=error_type, url=where)
        if error_type in ("timeout", "canceled"):
            raise PrometheusQueryError(f"query {error_type} after {self.limits.timeout_s:g} s: {reason}",
                                       "narrow the window or the selector, or raise the timeout",
                                       status=status, error_type=error_type, url=where)
        raise PrometheusQueryError(f"query failed (HTTP {status}, {error_type or 'error'}): {reason}",
                                   "Prometheus' own log; too many samples? narrow the window", status=status,
                                   error_type=error_type, url=where)

    # -- result parsing -----------------------------------------------------------------------

    def _frame(self, data: Any, expr: str, ref: str) -> pd.DataFrame:
        """A query answer (matrix, vector or scalar) as a canonical metrics frame, capped."""
        kind = (data or {}).get("resultType")
        result = (data or {}).get("result")
        if kind == "scalar" or kind == "string":
            result = [{"metric": {}, "value": result}]
            kind = "vector"
        items = [r for r in (result or []) if isinstance(r, dict)]
        items.sort(key=lambda r: (str((r.get("metric") or {}).get("__name__", "")), _labels_json(r.get("metric") or {})))
        notes = []
        if len(items) > self.max_series:
            notes.append(f"{expr}: {len(items)} series, kept the first {self.max_series} (max_series)")
            items = items[: self.max_series]
        metrics, labels, stamps, values = [], [], [], []
        for item in items:
            metric = item.get("metric") or {}
            name = str(metric.get("__name__") or expr)
            lab = _labels_json(metric)
            points = item.get("values") if kind == "matrix" else [item.get("value")]
            for point in points or []:
                if not isinstance(point, list | tuple) or len(point) != 2:
                    continue
                metrics.append(name)
                labels.append(lab)
                stamps.append(int(round(float(point[0]) * 1000)) * 1_000_000)
                values.append(_float(point[1]))
        truncated = len(metrics) > self.limits.max_rows
        if truncated:
            notes.append(f"{expr}: truncated at {self.limits.max_rows} rows (max_rows)")
            metrics, labels, stamps, values = (x[: self.limits.max_rows] for x in (metrics, labels, stamps, values))
        frame = schema.conform("metrics", pd.DataFrame({
            "metric": metrics, "labels": labels, "timestamp": pd.to_datetime(stamps, utc=True), "value": values,
            "source": "prometheus", "source_object": expr, "source_ref": ref}))
        frame.attrs.update(notes=notes, truncated=truncated)
        return frame

    # -- API ----------------------------------------------------------------------------------

    def buildinfo(self) -> dict[str, Any]:
        """Server version, revision, Go version (``/api/v1/status/buildinfo``)."""
        return dict(self._get("/api/v1/status/buildinfo") or {})

    def query(self, expr: str, at: Any = None) -> pd.DataFrame:
        """An instant query at ``at`` (default now). A range-vector expression (``x[5m]``)
        returns its raw samples."""
        params: dict[str, Any] = {"query": expr, "timeout": f"{self.limits.timeout_s:g}s"}
        if at is not None:
            params["time"] = _seconds(_timestamp(at))
        return self._frame(self._get("/api/v1/query", params), expr, "instant")

    def query_range(self, expr: str, start: Any, end: Any, step: float | None = None) -> pd.DataFrame:
        """A range query over [start, end]; ``step`` in seconds, default :func:`choose_step`.

        An explicit step that would give more than ``max_points`` points per series is a
        ParameterError. An empty result is an empty frame (ask :meth:`metric_names` whether
        the metric exists at all).
        """
        s, e = _timestamp(start), _timestamp(end)
        if e <= s:
            raise BadPromQL(f"range end {e} is not after its start {s}", "start/end")
        if step is None:
            step = choose_step(s, e, max_points=self.max_points)
        step = float(step)
        if not step > 0:
            raise ParameterError(f"step must be positive, got {step!r}")
        points = int((e - s).total_seconds() // step) + 1
        if points > self.max_points:
            need = choose_step(s, e, max_points=self.max_points, min_step_s=1)
            raise ParameterError(f"step {step:g} s gives {points} points per series over {e - s}, more than "
                                 f"{self.max_points}; use a step of at least {need:g} s")
        params = {"query": expr, "start": _seconds(s), "end": _seconds(e), "step": f"{step:g}",
                  "timeout": f"{self.limits.timeout_s:g}s"}
        return self._frame(self._get("/api/v1/query_range", params), expr, f"step={step:g}s")

    def series(self, match: str | Iterable[str], start: Any = None, end: Any = None) -> list[dict[str, str]]:
        """Label sets of the series matching selector(s) ``match`` in [start, end]."""
        matches = [match] if isinstance(match, str) else list(match)
        params: list[tuple[str, Any]] = [("match[]", m) for m in matches]
        if start is not None:
            params.append(("start", _seconds(_timestamp(start))))
        if end is not None:
            params.append(("end", _seconds(_timestamp(end))))
        return [dict(s) for s in (self._get("/api/v1/series", params) or [])]

    def metric_names(self, start: Any = None, end: Any = None) -> list[str]:
        """Names of the metrics with series in [start, end] (default: all the server holds)."""
        params = {}
        if start is not None:
            params["start"] = _seconds(_timestamp(start))
        if end is not None:
            params["end"] = _seconds(_timestamp(end))
        return sorted(str(n) for n in (self._get("/api/v1/label/__name__/values", params) or []))

    def rules(self) -> list[dict[str, Any]]:
        """Loaded alerting and recording rules, one dict per rule with its group and file."""
        data = self._get("/api/v1/rules") or {}
        out = []
        for group in data.get("groups") or []:
            for rule in group.get("rules") or []:
                out.append({"group": group.get("name"), "file": group.get("file"),
                            **{k: rule.get(k) for k in ("name", "type", "query", "duration", "keepFiringFor",
                                                         "labels", "annotations", "health", "lastError")}})
        return out

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts pending or firing now (``/api/v1/alerts``): labels, state, activeAt, value."""
        return list((self._get("/api/v1/alerts") or {}).get("alerts") or [])


class Source(EvidenceSource):
    """The profile's metrics (forensics/rules/metrics.yaml) over the window, plus Prometheus'
    own ``ALERTS`` series, the loaded rules and the server's metric names.

    Options: ``prometheus_url`` (default FORENSICS_PROMETHEUS_URL), ``metrics`` (series
    names, default the profile's), ``step`` (seconds, default chosen from the window),
    ``max_series``, the query bounds, and ``actuator_urls`` (service -> actuator base URL: a
    :func:`health_snapshot` is added to the same table). Metrics the server does not have
    in the window are named in the notes; NoSeries when it has none of them.
    """

    name = "prometheus"
    tables = ("metrics",)
    connection, env = "prometheus_url", "prometheus"
    options = (
        Option("metrics", "list", None, "series names (default: the profile's)"),
        Option("step", "float", None, "range query step, seconds (default: chosen from the window)", minimum=0.001),
        Option("max_series", "int", MAX_SERIES, "series kept per query", minimum=1),
        Option("actuator_urls", "mapping", None, "service=actuator base URL, added as a health snapshot"),
    )

    def read(self, window: Window) -> SourceResult:
        opts, limits = self.opts, self.opts.limits
        client = PrometheusClient(opts.connection, limits=limits, max_series=opts["max_series"])
        start, end = window.start, window.end
        info = client.buildinfo()
        wanted = list(dict.fromkeys(opts["metrics"] or metric_names(self.profile).series()))
        known = client.metric_names(start, end)
        step = opts["step"] or choose_step(start, end, max_points=client.max_points)
        notes: list[str] = []
        counts: dict[str, int] = {}
        truncated = False
        absent = [name for name in wanted if name not in known]
        if absent:
            notes.append(f"no series in the window for: {', '.join(absent)}")
        rows: list[pd.DataFrame] = []
        for name in [n for n in wanted if n in known] + (["ALERTS"] if "ALERTS" in known else []):
            self.say(f"prometheus: {name}")
            frame = client.query_range(name, start, end, step)
            notes.extend(frame.attrs.get("notes") or [])
            counts[name] = int(frame["labels"].nunique())
            truncated = truncated or bool(frame.attrs.get("truncated"))
            if len(frame):
                rows.append(frame)
        if not any(counts.get(n) for n in wanted):
            raise NoSeries(f"none of the metrics asked for has samples between {start} and {end} "
                           f"({', '.join(wanted[:8])}{' ...' if len(wanted) > 8 else ''})",
                           "is this the platform's Prometheus, does it keep data that old (retention), and are "
                           "the names the profile's (forensics/rules/metrics.yaml)?")
        if opts["actuator_urls"]:
            snapshot = health_snapshot(opts["actuator_urls"], limits=limits)
            notes.extend(f"actuator {svc}: {why}" for svc, why in snapshot.attrs.get("errors", {}).items())
            rows.append(snapshot)
        metrics = pd.concat(rows, ignore_index=True) if rows else schema.empty("metrics")
        try:
            rules = client.rules()
        except PrometheusError as exc:
            rules = []
            notes.append(f"rules not read: {exc}")
        tables = {"metrics": schema.conform("metrics", metrics)}
        description = self.describe(tables, notes=notes, connection=mask_uri(client.url),
                                    truncated=truncated, version=info.get("version"),
                                    step_s=step, metrics=wanted, series=counts, rules=rules,
                                    metric_names=known[:MAX_METRIC_NAMES])
        return SourceResult(tables=tables, description=description, queries={"metrics": client.history})


# ---- actuator snapshots ---------------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+(\S+)(?:\s+(-?\d+(?:\.\d+)?))?\s*$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"n": "\n", "\\": "\\", '"': '"'}


def parse_exposition(text: str, at: Any, *, extra_labels: Mapping[str, str] | None = None, source: str = "actuator",
                     source_object: str = "") -> pd.DataFrame:
    """Prometheus text exposition (``/actuator/prometheus``, ``/metrics``) as metrics rows.

    Samples without a timestamp get ``at`` (when they were read); text-format timestamps
    are milliseconds. ``extra_labels`` (e.g. service) are added to every series.
    ``source_ref`` is the line number; unparseable lines are counted in
    ``attrs["unparsed_lines"]``.
    """
    ts_default = _timestamp(at)
    rows: list[tuple[str, str, pd.Timestamp, float, str]] = []
    unparsed = 0
    extra = dict(extra_labels or {})
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            unparsed += 1
            continue
        name, block, value, stamp = m.groups()
        labels = {k: re.sub(r"\\(.)", lambda e: _UNESCAPE.get(e.group(1), e.group(1)), v)
                  for k, v in _LABEL.findall(block[1:-1])} if block else {}
        labels.update(extra)
        ts = pd.Timestamp(int(float(stamp)), unit="ms", tz="UTC") if stamp else ts_default
        rows.append((name, _labels_json(labels), ts, _float(value), str(n)))
    frame = pd.DataFrame(rows, columns=["metric", "labels", "timestamp", "value", "source_ref"])
    frame = schema.conform("metrics", frame.assign(source=source, source_object=source_object))
    frame.attrs["unparsed_lines"] = unparsed
    return frame


def health_snapshot(urls: Mapping[str, str], *, health_path: str = "/actuator/health",
                    metrics_path: str = "/actuator/prometheus", limits: Limits = DEFAULT_LIMITS,
                    session: requests.Session | None = None) -> pd.DataFrame:
    """Health and metrics of each service (service -> actuator base URL), read now, as metrics rows.

    Per service: ``actuator_health_status`` rows (value 1 when UP, else 0; labels service,
    status, and component for each health component) and every sample of the Prometheus
    endpoint with a ``service`` label. A service that does not answer gets a
    ``actuator_health_status`` row with status UNREACHABLE; its reason is in
    ``attrs["errors"][service]``. Source "actuator", source_object "<service> <masked url>".
    """
    http = session or requests.Session()
    timeout = (limits.connect_timeout_s, limits.timeout_s)
    frames: list[pd.DataFrame] = []
    errors: dict[str, str] = {}
    for service, base in urls.items():
        base = str(base).rstrip("/")
        where = f"{service} {mask_uri(base)}"
        now = pd.Timestamp.now(tz="UTC")
        health: list[tuple[str, str]] = []  # (component, status)
        try:
            resp = http.get(base + health_path, timeout=timeout)
            try:
                doc = resp.json()
            except ValueError:
                doc = None
            if isinstance(doc, dict) and doc.get("status"):
                health.append(("", str(doc["status"])))
                for comp, detail in (doc.get("components") or {}).items():
                    if isinstance(detail, dict) and detail.get("status"):
                        health.append((str(comp), str(detail["status"])))
            else:
                health.append(("", "UP" if resp.ok else f"HTTP {resp.status_code}"))
        except requests.exceptions.RequestException as exc:
            errors[service] = f"{health_path}: {exc.__class__.__name__}: {exc}"
            health.append(("", "UNREACHABLE"))
        frames.append(schema.conform("metrics", pd.DataFrame({
            "metric": "actuator_health_status",
            "labels": [_labels_json({"service": service, "status": st, **({"component": c} if c else {})})
                       for c, st in health],
            "timestamp": now, "value": [1.0 if st == "UP" else 0.0 for _, st in health],
            "source": "actuator", "source_object": where, "source_ref": health_path})))
        if service in errors:
            continue
        try:
            resp = http.get(base + metrics_path, timeout=timeout, headers={"Accept": "text/plain"})
        except requests.exceptions.RequestException as exc:
            errors[service] = f"{metrics_path}: {exc.__class__.__name__}: {exc}"
            continue
        if not resp.ok:
            errors[service] = f"{metrics_path}: HTTP {resp.status_code}"
            continue
        frames.append(parse_exposition(resp.text, pd.Timestamp.now(tz="UTC"), extra_labels={"service": service},
                                       source_object=f"{where}{metrics_path}"))
    frame = pd.concat(frames, ignore_index=True) if frames else schema.empty("metrics")
    frame.attrs["errors"] = errors
    return frame


# ---- backfill -----------------------------------------------------------------------------------

def backfill(openmetrics_text: str, data_dir: str | Path, *, promtool: str | None = None,
             timeout_s: float = 600) -> list[str]:
    """Write OpenMetrics text (with timestamps) as TSDB blocks into a Prometheus data directory.

    Runs ``promtool tsdb create-blocks-from openmetrics FILE DATA_DIR``; returns the new
    block directories. A server started on ``data_dir`` afterwards loads them; a running
    2.42 server finds them at its periodic block reload (within about a minute, measured),
    or at once on restart (``scripts/services down/up --only prometheus``). Old samples stay
    only while ``--storage.tsdb.retention.time`` reaches back to them (scripts/services
    runs Prometheus with 3650d).
    """
    exe = promtool or shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(exe).exists():
        raise BackfillError(f"promtool not found ({exe})", "Debian's prometheus package: apt-get install prometheus")
    text = openmetrics_text if openmetrics_text.rstrip().endswith("# EOF") else openmetrics_text.rstrip("\n") + "\n# EOF\n"
    target = Path(data_dir)
    target.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in target.iterdir() if p.is_dir()}
    with tempfile.TemporaryDirectory(prefix="forensics-backfill-") as tmp:
        source = Path(tmp) / "metrics.om"
        source.write_text(text, encoding="utf-8")
        try:
            proc = subprocess.run([exe, "tsdb", "create-blocks-from", "openmetrics", str(source), str(target)],
                                  capture_output=True, text=True, timeout=timeout_s, check=False,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise BackfillError(f"promtool did not finish within {timeout_s:g} s", "a smaller file") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise BackfillError(f"promtool create-blocks-from openmetrics failed (exit {proc.returncode}): "
                            f"{' | '.join(detail)}", "OpenMetrics text with timestamps, ending # EOF")
    return sorted(p.name for p in target.iterdir() if p.is_dir() and p.name not in before)


class ActuatorSource(EvidenceSource):
    """Actuator health and metrics of the services in ``actuator_urls`` (service -> base URL),
    read now, as a ``metrics`` table (source "actuator"): for incidents without a Prometheus.
    Register it with ``register_source("actuator", "forensics.sources.prometheus:ActuatorSource")``.
    Every service unreachable is a SourceError."""

    name = "actuator"
    tables = ("metrics",)
    options = (Option("actuator_urls", "mapping", None, "service=actuator base URL"),)

    def read(self, window: Window) -> SourceResult:
        urls = self.opts["actuator_urls"] or {}
        if not urls:
            raise SourceError("actuator", "no actuator URLs given", "options actuator_urls: {service: base URL}")
        frame = health_snapshot(urls, limits=self.opts.limits)
        errors = frame.attrs.get("errors", {})
        if len(errors) == len(urls) and not (frame["metric"] != "actuator_health_status").any():
            raise SourceError("actuator", "no service answered: " + "; ".join(f"{k}: {v}" for k, v in errors.items()),
                              "the services' management port and /actuator exposure (health, prometheus)")
        tables = {"metrics": frame}
        description = self.describe(tables, notes=[f"{svc}: {why}" for svc, why in errors.items()],
                                    services={k: mask_uri(v) for k, v in urls.items()})
        return SourceResult(tables=tables, description=description, queries={"metrics": {"actuator": list(urls)}})
