"""One HTTP JSON transport for the sources that speak HTTP (Jaeger's query API, Prometheus' API).

:class:`HttpJsonClient` bounds every request (connect and read timeouts from
:class:`~forensics.config.Limits`), records it in ``history`` (URL with credentials masked,
parameters, HTTP status, milliseconds) for the bundle's query log, retries connection resets
and the ``retry_status`` answers with exponential backoff, and turns the failures that leave
no answer into the source's "unavailable" error: a refusal at once (a down server fails fast),
a timeout at once (it already cost ``timeout_s``). Decoding the answer is the source's job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from forensics.config import DEFAULT_LIMITS, Limits
from forensics.credentials import host_of, mask_uri
from forensics.errors import SourceError, is_connection_refused


@dataclass(frozen=True)
class Hints:
    """What to check, per kind of failure, in the source's words."""

    refused: str
    timeout: str
    network: str


class HttpJsonClient:
    """GET requests against ``url`` (no trailing slash), bounded, logged and retried.

    ``unavailable(problem, hint, url=...)`` builds the source's error for "no answer".
    ``read_slack_s`` is added to ``limits.timeout_s`` for the HTTP read (a server told to stop
    after ``timeout_s`` needs a moment to say so).
    """

    def __init__(self, url: str, *, unavailable: Callable[..., SourceError], hints: Hints,
                 limits: Limits = DEFAULT_LIMITS, retries: int = 0, backoff_s: float = 0.25,
                 retry_status: frozenset[int] = frozenset(), read_slack_s: float = 0.0,
                 session: requests.Session | None = None) -> None:
        self.url = url.rstrip("/")
        self.unavailable, self.hints = unavailable, hints
        self.limits, self.retries, self.backoff_s = limits, retries, backoff_s
        self.retry_status, self.read_slack_s = retry_status, read_slack_s
        self.session = session or requests.Session()
        self.session.headers.setdefault("Accept", "application/json")
        self.history: list[dict[str, Any]] = []

    def get(self, path: str, params: Mapping[str, Any] | list | None = None
            ) -> tuple[requests.Response, dict[str, Any]]:
        """The answer to GET ``path`` (any HTTP status) and its history entry."""
        url = self.url + path
        where = mask_uri(url)
        host = host_of(self.url)
        for attempt in range(self.retries + 1):
            began = time.monotonic()
            entry: dict[str, Any] = {"url": where, "params": params, "status": None}
            self.history.append(entry)
            try:
                resp = self.session.get(url, params=params, timeout=(self.limits.connect_timeout_s,
                                                                     self.limits.timeout_s + self.read_slack_s))
            except requests.exceptions.Timeout as exc:
                raise self.unavailable(f"no answer from {host} within {self.limits.timeout_s:g} s ({path})",
                                       self.hints.timeout, url=where) from exc
            except requests.exceptions.ConnectionError as exc:
                if is_connection_refused(exc):
                    raise self.unavailable(f"connection refused by {host}", self.hints.refused, url=where) from exc
                if attempt < self.retries:
                    time.sleep(self.backoff_s * 2 ** attempt)
                    continue
                tries = f" after {attempt + 1} attempts" if self.retries else ""
                raise self.unavailable(f"connection to {host} failed{tries}: {exc.__class__.__name__}",
                                       self.hints.network, url=where) from exc
            finally:
                entry["elapsed_ms"] = round((time.monotonic() - began) * 1000, 1)
            entry["status"] = resp.status_code
            if resp.status_code in self.retry_status and attempt < self.retries:
                time.sleep(self.backoff_s * 2 ** attempt)
                continue
            return resp, entry
        raise AssertionError("unreachable")  # the loop returns or raises
