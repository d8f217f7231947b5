"""Connection settings and query bounds.

Connection strings come from arguments, else from the environment (what
``scripts/services env`` prints for the local stack, or what an on-call engineer exports
for a real deployment). They are never printed unmasked (:mod:`forensics.credentials`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV = {
    "mongo": "FORENSICS_MONGO_URI",
    "kafka": "FORENSICS_KAFKA_BOOTSTRAP",
    "jaeger": "FORENSICS_JAEGER_URL",
    "postgres": "FORENSICS_POSTGRES_DSN",
    "redis": "FORENSICS_REDIS_URL",
    "prometheus": "FORENSICS_PROMETHEUS_URL",
    "prometheus_data": "FORENSICS_PROMETHEUS_DATA",
    "otlp": "FORENSICS_OTLP_ENDPOINT",
}


def connection(source: str, explicit: str | None = None) -> str | None:
    """The connection string for ``source``: the explicit one, else its FORENSICS_* variable."""
    if explicit:
        return explicit
    var = ENV.get(source)
    return os.environ.get(var) if var else None


LIVE_SOURCES = ("mongo", "kafka", "jaeger", "postgres", "redis", "prometheus")
"""Sources read over a connection named by a FORENSICS_* variable."""


def configured_sources() -> dict[str, str]:
    """Live source -> its connection string (masked), for each source whose FORENSICS_* variable is set."""
    from forensics.credentials import mask_uri

    return {name: mask_uri(connection(name)) or "" for name in LIVE_SOURCES if connection(name)}


def cache_dir() -> Path:
    """Where the toolkit keeps what outlives a checkout (``CHAT4ALL_FORENSICS_CACHE``, default
    ``~/.cache/chat4all-forensics``), as ``scripts/services`` does."""
    env = os.environ.get("CHAT4ALL_FORENSICS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "chat4all-forensics"


@dataclass(frozen=True)
class Limits:
    """Bounds on every query against a production system."""

    max_rows: int = 5_000_000
    """Result cap per query (a 1M-message window has 3-4M history rows); a capped result says
    "truncated at N"."""
    timeout_s: float = 30.0
    """Server-side time limit per query (maxTimeMS, statement_timeout, HTTP timeout)."""
    connect_timeout_s: float = 5.0


DEFAULT_LIMITS = Limits()

