"""Jaeger as an evidence source: a client for the query API and the :class:`Source`.

The client speaks both query APIs and finds out which one a server has, probing
``/api/v3/services`` (OTLP JSON, Jaeger v2) then ``/api/services`` (v1 JSON; releases
after v2.20 remove its search). Every answer becomes the canonical ``spans`` table
through :func:`forensics.traces.parse_traces`, so a live Jaeger and a downloaded file
give the same frame; with the ``files`` option the source reads trace files (any shape
:func:`forensics.traces.read_trace_file` reads) instead of the query API.

Failures are distinct :class:`~forensics.errors.SourceError` subclasses, each naming
what to check: :class:`JaegerUnavailable` (connection refused, timeout),
:class:`BadQuery` (HTTP 400, with the server's reason), :class:`NoTracesFound`,
:class:`NotJSON` (an HTML page, e.g. a login proxy or the UI, where JSON was expected)
and :class:`JaegerServerError` (5xx after bounded retries). Connection resets and 5xx
answers are retried with exponential backoff; refusals and timeouts are not (a down
server should fail fast, a timeout already cost ``Limits.timeout_s``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pandas as pd
import requests

from forensics import schema
from forensics.config import DEFAULT_LIMITS, Limits, connection
from forensics.credentials import mask_uri
from forensics.errors import SourceError
from forensics.sources.base import EvidenceSource, Option, Slices, SourceResult, whole
from forensics.sources.http import Hints, HttpJsonClient
from forensics.timeutil import Window
from forensics.traces import TraceFileError, parse_traces, tag_values
from forensics.traces.readers import read_trace_files, trace_files

DEFAULT_LOOKBACK = pd.Timedelta(days=2)
"""Search window when none is given (the v1 API's own default)."""
RETRY_STATUS = frozenset({500, 502, 503, 504})
HINTS = Hints(refused="is Jaeger running? scripts/services status; FORENSICS_JAEGER_URL (query port, default 16686)",
              timeout="is the Jaeger query service up and not overloaded?", network="network path to Jaeger")
STATUS_TAGS = frozenset({"error", "otel.status_code", "otel.status_description"})
"""Tags Jaeger v2 derives from the OTLP span status: its storage cannot search them, so they
are matched here, after the search."""


class JaegerError(SourceError):
    """A Jaeger query failed; ``status`` is the HTTP status when there was an answer."""

    def __init__(self, problem: str, hint: str = "", *, status: int | None = None, url: str | None = None) -> None:
        self.status, self.url = status, url
        super().__init__("jaeger", problem, hint)


class JaegerUnavailable(JaegerError):
    """No answer: connection refused, reset, or timed out."""


class BadQuery(JaegerError):
    """HTTP 400: the server rejected the query parameters; the message is the server's reason."""


class NoTracesFound(JaegerError):
    """The trace ids asked for are not stored (expired from memory storage, or never sampled)."""


class NotJSON(JaegerError):
    """An HTML page or other non-JSON body where the query API answers JSON."""


class JaegerServerError(JaegerError):
    """HTTP 5xx after the retries, or a status the API does not document."""


@dataclass(frozen=True)
class Operation:
    name: str
    span_kind: str | None


def _go_duration(value: str | float | timedelta | pd.Timedelta | None) -> str | None:
    """A duration as Go's time.ParseDuration text: strings pass through, numbers are milliseconds."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, timedelta | pd.Timedelta):
        return f"{int(pd.Timedelta(value) / pd.Timedelta(microseconds=1))}us"
    return f"{round(float(value) * 1000)}us"


def _timestamp(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _rfc3339(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond:06d}{ts.nanosecond:03d}Z"


def _error_text(doc: Any, body: bytes) -> str:
    """The server's reason from a v1 ``errors`` list, a v3 ``error`` object, or the raw text."""
    if isinstance(doc, dict):
        errors = doc.get("errors")
        if isinstance(errors, list) and errors:
            return "; ".join(str(e.get("msg") if isinstance(e, dict) else e) for e in errors)
        err = doc.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return body.decode("utf-8", "replace").strip()[:300] or "(empty body)"


class JaegerClient:
    """The Jaeger query API (v1 or api/v3), answers as canonical ``spans`` DataFrames.

    ``url`` defaults to ``FORENSICS_JAEGER_URL``; ``api`` ("v1" or "v3") skips detection.
    Every request is bounded by ``limits`` (connect and read timeouts) and retried at most
    ``retries`` times on 5xx answers and connection resets, waiting ``backoff_s``, then
    twice that, and so on. ``history`` records each request (URL, parameters, status, ms)
    for the evidence bundle's query log.
    """

    def __init__(self, url: str | None = None, *, api: str | None = None, limits: Limits = DEFAULT_LIMITS,
                 retries: int = 2, backoff_s: float = 0.25, session: requests.Session | None = None) -> None:
        resolved = connection("jaeger", url)
        if not resolved:
            raise JaegerError("no Jaeger query URL given", "-o jaeger_url=URL or FORENSICS_JAEGER_URL, e.g. "
                              "http://127.0.0.1:16686; or trace files: -o files=PATH[,PATH...]")
        if api not in (None, "v1", "v3"):
            raise ValueError(f"api must be 'v1', 'v3' or None (detect), not {api!r}")
        self.url = resolved.rstrip("/")
        self.limits = limits
        self.http = HttpJsonClient(self.url, unavailable=JaegerUnavailable, hints=HINTS, limits=limits,
                                   retries=retries, backoff_s=backoff_s, retry_status=RETRY_STATUS, session=session)
        self.history = self.http.history
        self._api = api

    def __repr__(self) -> str:
        return f"JaegerClient({mask_uri(self.url)!r}, api={self._api!r})"

    # -- transport --------------------------------------------------------------------------

    def _get(self, path: str, params: dict | list | None = None, *, traces: bool = False) -> Any:
        """GET ``path`` and decode JSON, mapping every failure to a JaegerError subclass.

        ``traces``: a JSON 404 means "no such trace(s)" (NoTracesFound) rather than a
        missing endpoint.
        """
        resp, entry = self.http.get(path, params)
        return self._decode(resp, path, entry["url"], traces)

    def _decode(self, resp: requests.Response, path: str, where: str, traces: bool) -> Any:
        ctype = resp.headers.get("Content-Type", "")
        body = resp.content
        if "html" in ctype.lower() or body.lstrip()[:1] == b"<":
            raise NotJSON(f"{path} answered an HTML page (HTTP {resp.status_code}, Content-Type "
                          f"{ctype or 'none'}) where JSON was expected",
                          "the URL must be the Jaeger query API itself (port 16686), not the UI behind a "
                          "proxy or login page, nor a path prefix the server does not serve",
                          status=resp.status_code, url=where)
        try:
            doc = json.loads(body) if body.strip() else None
        except ValueError:
            doc = None
        status = resp.status_code
        if status == 200:
            if doc is None:
                raise NotJSON(f"{path} answered HTTP 200 with a body that is not JSON "
                              f"(Content-Type {ctype or 'none'}): {body[:80]!r}",
                              "the URL must be the Jaeger query API", status=status, url=where)
            return doc
        reason = _error_text(doc, body)
        if status == 400:
            raise BadQuery(f"query rejected: {reason}", "query parameters", status=status, url=where)
        if status == 404 and traces and doc is not None:
            raise NoTracesFound(f"no traces found ({reason})", "trace id, and whether the trace is still "
                                "stored (memory storage forgets on restart)", status=status, url=where)
        if status == 404:
            raise JaegerError(f"{path} does not exist on this server (HTTP 404: {reason})",
                              "Jaeger version: api/v3 needs v1.35+/v2, v1 search ends after v2.20",
                              status=status, url=where)
        raise JaegerServerError(f"HTTP {status} from {path}: {reason}", "Jaeger's own log and its storage backend",
                                status=status, url=where)

    # -- API detection -----------------------------------------------------------------------

    @property
    def api(self) -> str:
        """"v3" or "v1": given, else detected on first use (api/v3 preferred)."""
        if self._api is None:
            self._api = self.detect_api()
        return self._api

    def detect_api(self) -> str:
        """Probe ``/api/v3/services`` then ``/api/services``; the first that answers JSON of its shape wins.

        A refused connection is reported at once (both probes would fail the same way).
        """
        try:
            doc = self._get("/api/v3/services")
            if isinstance(doc, dict) and ("services" in doc or not doc):
                return "v3"
        except JaegerUnavailable:
            raise
        except JaegerError:
            pass  # no api/v3 here (404, an HTML page from an old UI, ...): try v1
        doc = self._get("/api/services")
        if isinstance(doc, dict) and "data" in doc:
            return "v1"
        raise JaegerError(f"{mask_uri(self.url)} answers JSON but neither /api/v3/services nor /api/services "
                          "has the Jaeger shape", "the URL must be the Jaeger query service")

    # -- queries -----------------------------------------------------------------------------

    def services(self) -> list[str]:
        """Service names Jaeger has spans for, sorted."""
        if self.api == "v3":
            return sorted(self._get("/api/v3/services").get("services") or [])
        return sorted(self._get("/api/services").get("data") or [])

    def operations(self, service: str, span_kind: str | None = None) -> list[Operation]:
        """Operations of ``service`` (optionally only of one span kind: server, client, ...)."""
        if self.api == "v3":
            params = {"service": service, **({"span_kind": span_kind} if span_kind else {})}
            items = self._get("/api/v3/operations", params).get("operations") or []
        else:
            params = {"service": service, **({"spanKind": span_kind} if span_kind else {})}
            items = self._get("/api/operations", params).get("data") or []
        ops = {Operation(i.get("name"), i.get("spanKind") or None) for i in items if isinstance(i, dict)}
        return sorted(ops, key=lambda o: (o.name or "", o.span_kind or ""))

    def search(self, service: str, *, operation: str | None = None, tags: dict[str, Any] | None = None,
               start: Any = None, end: Any = None, min_duration: str | float | timedelta | None = None,
               max_duration: str | float | timedelta | None = None, limit: int = 20) -> pd.DataFrame:
        """Traces with a span of ``service`` in [start, end], as a spans frame (all spans of each trace).

        ``tags``: span tags that must all match on one span (values compared as text);
        ``min_duration``/``max_duration``: Go duration text ("1.5s") or milliseconds;
        ``limit``: at most this many traces (the servers' search depth). ``start``/``end``
        take anything ``pd.Timestamp`` does (naive = UTC); default the last two days.
        An empty result is an empty frame, not an error. Tags are matched again here after
        the search: api/v3 honours ``query.attributes`` only from Jaeger v2.19, and Jaeger
        v2 storage cannot search the status tags (:data:`STATUS_TAGS`: ``error=true``), so
        those are not sent at all. Either way the traces returned are correct, but the
        server's ``limit`` applies before this filter: there may be fewer than ``limit``.
        """
        end_ts = _timestamp(end) if end is not None else pd.Timestamp.now(tz="UTC")
        start_ts = _timestamp(start) if start is not None else end_ts - DEFAULT_LOOKBACK
        if end_ts <= start_ts:
            raise BadQuery(f"search window end {end_ts} is not after its start {start_ts}", "start/end")
        text_tags = {str(k): ("true" if v is True else "false" if v is False else str(v))
                     for k, v in (tags or {}).items()}
        server_tags = {k: v for k, v in text_tags.items() if k not in STATUS_TAGS}
        if self.api == "v3":
            path = "/api/v3/traces"
            params: dict[str, Any] = {
                "query.service_name": service, "query.start_time_min": _rfc3339(start_ts),
                "query.start_time_max": _rfc3339(end_ts), "query.num_traces": int(limit),
            }
            if operation:
                params["query.operation_name"] = operation
            if server_tags:
                params["query.attributes"] = json.dumps(server_tags)
            if min_duration is not None:
                params["query.duration_min"] = _go_duration(min_duration)
            if max_duration is not None:
                params["query.duration_max"] = _go_duration(max_duration)
        else:
            path = "/api/traces"
            params = {"service": service, "start": int(start_ts.value // 1000), "end": int(end_ts.value // 1000),
                      "limit": int(limit)}
            if operation:
                params["operation"] = operation
            if server_tags:
                params["tags"] = json.dumps(server_tags)
            if min_duration is not None:
                params["minDuration"] = _go_duration(min_duration)
            if max_duration is not None:
                params["maxDuration"] = _go_duration(max_duration)
        try:
            doc = self._get(path, params, traces=True)
        except NoTracesFound:
            return schema.empty("spans")
        spans = parse_traces(doc, source_object=f"{mask_uri(self.url)}{path}?service={service}")
        if text_tags and len(spans):
            spans = _traces_with_tagged_span(spans, service, text_tags)
        return spans

    def trace(self, trace_id: str) -> pd.DataFrame:
        """All spans of one trace. NoTracesFound when the server does not have it."""
        tid = _trace_id(trace_id)
        path = f"/api/v3/traces/{tid}" if self.api == "v3" else f"/api/traces/{tid}"
        spans = parse_traces(self._get(path, traces=True), source_object=f"{mask_uri(self.url)}{path}")
        if spans.empty:
            raise NoTracesFound(f"trace {tid} not found", "trace id, and whether the trace is still stored",
                                status=200, url=mask_uri(self.url + path))
        return spans

    def traces(self, trace_ids: Iterable[str]) -> pd.DataFrame:
        """Spans of several traces in one frame; ids the server lacks are listed in
        ``frame.attrs["missing_trace_ids"]``. NoTracesFound only when none is found.

        v1 fetches them in one request (``traceID=a&traceID=b``); api/v3 has no multi-get
        before v2.20, so each id is one request there.
        """
        ids = list(dict.fromkeys(_trace_id(t) for t in trace_ids))
        if not ids:
            return schema.empty("spans")
        if self.api == "v3":
            frames = []
            for tid in ids:
                try:
                    frames.append(self.trace(tid))
                except NoTracesFound:
                    pass
            spans = pd.concat(frames, ignore_index=True) if frames else schema.empty("spans")
        else:
            doc = self._get("/api/traces", [("traceID", t) for t in ids], traces=True)
            spans = parse_traces(doc, source_object=f"{mask_uri(self.url)}/api/traces?traceID=...")
        missing = sorted(set(ids) - set(spans["trace_id"].dropna()))
        if len(missing) == len(ids):
            raise NoTracesFound(f"none of the {len(ids)} trace(s) found: {', '.join(missing[:5])}"
                                + (" ..." if len(missing) > 5 else ""),
                                "trace ids, and whether the traces are still stored")
        spans.attrs["missing_trace_ids"] = missing
        return spans


def _trace_id(value: str) -> str:
    text = str(value).strip().lower()
    if not text or len(text) > 32 or any(c not in "0123456789abcdef" for c in text):
        raise BadQuery(f"{value!r} is not a trace id (1 to 32 hex characters)", "trace id")
    return text.rjust(32, "0")


def _traces_with_tagged_span(spans: pd.DataFrame, service: str, tags: dict[str, str]) -> pd.DataFrame:
    """Keep the traces in which one span of ``service`` carries every tag of ``tags``."""
    ok = spans["service"] == service
    for key, value in tags.items():
        ok &= (tag_values(spans, key) == value).fillna(False)
    keep = spans.loc[ok.fillna(False).astype(bool), "trace_id"].unique()
    return spans[spans["trace_id"].isin(keep)].reset_index(drop=True)


class Source(EvidenceSource):
    """Spans of every trace touching the profile's services within the window.

    Options: ``files`` (trace files or directories, comma-separated: read them instead of
    the query API, :meth:`read_files`), ``jaeger_url`` (default FORENSICS_JAEGER_URL),
    ``jaeger_api`` (v1/v3, default detect), ``services`` (default the profile's),
    ``traces_per_service`` (default 200) and the query bounds. A service that reaches the
    per-service limit is named in the notes: the window holds more traces than were read.
    Services Jaeger has never seen are noted too.
    """

    name = "jaeger"
    tables = ("spans",)
    connection, env = "jaeger_url", "jaeger"
    options = (
        Option("jaeger_api", "choice", None, "query API (default: detect)", choices=("v1", "v3")),
        Option("services", "list", None, "services to search (default: the profile's)"),
        Option("traces_per_service", "int", 200, "traces read per service at most", minimum=1),
        Option("files", "list", None, "trace files or directories to read instead of the query API"),
    )

    def stream(self, window: Window) -> Slices:
        """The spans of each service's search as a slice of its own (its traces not seen in an
        earlier service's), so memory holds one search's traces."""
        if self.opts["files"]:
            return (yield from whole(self.read_files(window, self.opts["files"])))
        opts, limits = self.opts, self.opts.limits
        client = JaegerClient(opts.connection, api=opts["jaeger_api"], limits=limits)
        per_service = opts["traces_per_service"]
        wanted = list(opts["services"] or self.profile.services.all())
        known = set(client.services())
        notes: list[str] = []
        seen: set[str] = set()
        counts: dict[str, int] = {}
        rows, truncated = 0, False
        for service in wanted:
            if service not in known:
                notes.append(f"{service}: Jaeger has no spans of this service")
                continue
            if truncated:
                continue
            self.say(f"jaeger: searching {service}")
            spans = client.search(service, start=window.start, end=window.end, limit=per_service)
            found = spans["trace_id"].nunique()
            counts[service] = int(found)
            if found >= per_service:
                notes.append(f"{service}: limit reached ({per_service} traces); the window holds more, "
                             "raise traces_per_service or narrow the window")
            fresh = spans[~spans["trace_id"].isin(seen)]
            seen.update(fresh["trace_id"].unique())
            if rows + len(fresh) > limits.max_rows:
                truncated = True
                notes.append(f"spans truncated at {limits.max_rows} rows")
                fresh = fresh.iloc[:limits.max_rows - rows]
            rows += len(fresh)
            yield "spans", schema.conform("spans", fresh.reset_index(drop=True))
        if not counts:
            yield "spans", schema.empty("spans")
        description = self.describe({"spans": rows}, notes=notes, truncated=truncated, connection=mask_uri(client.url),
                                    api=client.api, services=wanted, traces=counts)
        return SourceResult(tables={}, description=description, queries={"spans": client.history})

    def read_files(self, window: Window, paths: list[str]) -> SourceResult:
        """Spans from trace files instead of the query API: every file of ``paths`` (files, or
        directories searched recursively) in any shape :func:`~forensics.traces.read_trace_file`
        reads, keeping the traces with a span starting in the window (whole traces, as a search
        returns them). Spans repeated across files (one trace downloaded twice) are kept once.
        A file that cannot be read fails the source with its one-line reason."""
        limits = self.opts.limits
        try:
            files = trace_files(paths)
            self.say(f"jaeger: reading {len(files)} trace file(s)")
            spans = read_trace_files(files)
        except TraceFileError as exc:
            raise SourceError("jaeger", str(exc), "the files given with -o files=") from exc
        notes: list[str] = []
        repeated = spans.duplicated(["trace_id", "span_id", "start", "duration_ms", "operation", "service"])
        if repeated.any():
            notes.append(f"{int(repeated.sum())} span(s) repeated across files kept once")
            spans = spans[~repeated]
        inside = spans["start"].ge(window.start) & spans["start"].lt(window.end)
        keep = spans["trace_id"].isin(spans.loc[inside.fillna(False).astype(bool), "trace_id"])
        outside = spans.loc[~keep, "trace_id"].nunique()
        if outside:
            notes.append(f"{outside} trace(s) with no span starting in the window left out")
        spans = spans[keep].reset_index(drop=True)
        truncated = len(spans) > limits.max_rows
        if truncated:
            notes.append(f"spans truncated at {limits.max_rows} rows")
            spans = spans.iloc[:limits.max_rows]
        tables = {"spans": schema.conform("spans", spans)}
        description = self.describe(tables, notes=notes, truncated=truncated, connection=", ".join(map(str, files)),
                                    files=[str(f) for f in files], traces=int(spans["trace_id"].nunique()))
        return SourceResult(tables=tables, description=description,
                            queries={"spans": [{"file": str(f)} for f in files]})
