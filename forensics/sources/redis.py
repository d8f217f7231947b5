"""Redis keys that steer delivery into ``locks``: conversation locks, idempotency, processed, rate limits.

Key patterns come from the profile (``conversation:lock:{conversation_id}`` in the runbook,
``idempotency:message:{message_id}`` and ``router:processed:{message_id}`` in the deployed
code, ``ratelimit:user:{user_id}``). Two ways in:

- direct lookups for given message or conversation ids (one key per id and pattern);
- a SCAN of every pattern with MATCH and COUNT, never KEYS (which blocks the server), capped
  at ``max_keys`` keys and the query time limit.

Each key is read with TYPE and PTTL (neither touches the key's idle time) and its value with
GETRANGE (strings, truncated server-side) or a length (other types). PTTL -1 means no expiry
(``ttl_s`` null); -2 means the key vanished between SCAN and read, and it is left out.
Only read commands are sent.

What the rows mean for an incident is the detectors' job (``stuck_locks``, ``replay_blockers``
in :mod:`forensics.analysis.detectors.state`) and the DLQ triage's
(:func:`forensics.analysis.replay.replay_blockers`); this module only reads.

Provenance: ``source="redis"``, ``source_object`` = the key pattern, ``source_ref`` = the key.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
import redis as redis_client

from forensics import schema
from forensics.config import DEFAULT_LIMITS, Limits, connection
from forensics.credentials import mask_uri
from forensics.errors import SourceError
from forensics.profiles import Profile, load_profile
from forensics.sources.base import EvidenceSource, Option, SourceResult, connected
from forensics.timeutil import Window, utcnow

SOURCE = "redis"
KINDS = ("conversation_lock", "idempotency", "processed", "ratelimit")
"""Profile attribute (``profile.redis.<kind>``) = the ``kind`` column of ``locks``."""
DEFAULT_MAX_KEYS = 100_000
SCAN_COUNT = 1000
VALUE_CHARS = 256
_BATCH = 500
_LENGTH = {"hash": "HLEN", "list": "LLEN", "set": "SCARD", "zset": "ZCARD", "stream": "XLEN"}
_HINT_URL = "set FORENSICS_REDIS_URL (or -o redis_url=...), e.g. redis://:PASSWORD@host:6379/0"


@dataclass(frozen=True)
class KeyPattern:
    """One profile key pattern: how to SCAN for it, build it from an id and read an id back."""

    kind: str
    pattern: str
    prefix: str = ""

    @property
    def fields(self) -> list[str]:
        return re.findall(r"\{(\w+)\}", self.pattern)

    @property
    def glob(self) -> str:
        """SCAN MATCH glob: literal text escaped, each ``{field}`` a ``*``."""
        return _glob_escape(self.prefix) + "*".join(_glob_escape(p) for p in re.split(r"\{\w+\}", self.pattern))

    def key(self, **values: str) -> str:
        return self.prefix + self.pattern.format(**values)

    def parse(self, key: str) -> dict[str, str] | None:
        """The ids in ``key``, or None when the key is not of this pattern."""
        regex = re.escape(self.prefix) + "".join(
            f"(?P<{p[1:-1]}>.+?)" if re.fullmatch(r"\{\w+\}", p) else re.escape(p)
            for p in re.split(r"(\{\w+\})", self.pattern) if p)
        m = re.fullmatch(regex, key, flags=re.DOTALL)
        return m.groupdict() if m else None


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def key_patterns(profile: Profile | str | None = None, key_prefix: str = "",
                 kinds: Iterable[str] = KINDS) -> list[KeyPattern]:
    """The profile's key patterns for ``kinds``; ``key_prefix`` (a namespace) goes before each."""
    prof = load_profile(profile)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise SourceError(SOURCE, f"unknown key kind(s) {', '.join(sorted(unknown))}", f"one of {', '.join(KINDS)}")
    return [KeyPattern(kind, getattr(prof.redis, kind), key_prefix) for kind in kinds]


# ---- reading -----------------------------------------------------------------

def read_locks(url: str | None = None, *, profile: Profile | str | None = None,
               message_ids: Iterable[str] | None = None, conversation_ids: Iterable[str] | None = None,
               kinds: Iterable[str] = KINDS, key_prefix: str = "", max_keys: int = DEFAULT_MAX_KEYS,
               scan_count: int = SCAN_COUNT, value_chars: int = VALUE_CHARS,
               limits: Limits = DEFAULT_LIMITS) -> pd.DataFrame:
    """Delivery-steering keys as the ``locks`` table.

    With ``message_ids`` and/or ``conversation_ids``: direct lookups of the keys of those ids
    (patterns with a ``{message_id}`` / ``{conversation_id}`` field). Without: SCAN every
    pattern of ``kinds``, at most ``max_keys`` keys in all. ``frame.attrs`` holds
    ``truncated`` (the cap or the time limit stopped the SCAN) and ``keys_matched`` (keys SCAN
    matched, or keys looked up).
    """
    patterns = key_patterns(profile, key_prefix, kinds)
    direct = message_ids is not None or conversation_ids is not None
    with _client(url, limits) as client:
        if direct:
            ids = {"message_id": _ids(message_ids), "conversation_id": _ids(conversation_ids)}
            candidates = [(p, key, key.encode()) for p in patterns if p.fields in (["message_id"], ["conversation_id"])
                          for key in (p.key(**{p.fields[0]: v}) for v in ids[p.fields[0]])]
            truncated = False
        else:
            candidates, truncated = _scan(client, patterns, max_keys, scan_count, limits.timeout_s)
        rows = _read(client, candidates, value_chars)
    frame = _frame(rows)
    frame.attrs.update(truncated=truncated, keys_matched=len(candidates))
    return frame


def _ids(values: Iterable[str] | None) -> list[str]:
    if values is None:
        return []
    return sorted({str(v) for v in values if not pd.isna(v)})


@contextmanager
def _client(url: str | None, limits: Limits) -> Iterator[redis_client.Redis]:
    def open_client(address: str) -> redis_client.Redis:
        return redis_client.Redis.from_url(address, socket_timeout=limits.timeout_s,
                                           socket_connect_timeout=limits.connect_timeout_s, decode_responses=False)

    with connected(SOURCE, connection(SOURCE, url), missing_hint=_HINT_URL, open=open_client, failure=_failure,
                   ready=lambda client: client.ping()) as client:
        yield client


def _failure(exc: BaseException, masked: str, opening: bool) -> SourceError | None:
    """A redis-py error as the source's one line (None: not a Redis error)."""
    if opening:
        return SourceError(SOURCE, f"invalid URL {masked}: {exc}", _HINT_URL) if isinstance(exc, ValueError) else None
    if isinstance(exc, redis_client.AuthenticationError):
        return SourceError(SOURCE, f"authentication failed for {masked}: {exc}",
                           "the password in FORENSICS_REDIS_URL (redis://:PASSWORD@host:port/db)")
    if isinstance(exc, redis_client.exceptions.NoPermissionError):
        return SourceError(SOURCE, f"permission denied on {masked}: {exc}",
                           "the ACL user needs SCAN, TYPE, PTTL, GETRANGE, STRLEN and the length commands")
    if isinstance(exc, redis_client.TimeoutError):
        return SourceError(SOURCE, f"timed out talking to {masked}: {exc}", "host and port, firewalls; Limits.timeout_s")
    if isinstance(exc, redis_client.ConnectionError):
        return SourceError(SOURCE, f"unreachable: {masked}: {exc}",
                           "is Redis running at that host and port? (scripts/services status)")
    if isinstance(exc, redis_client.ResponseError):
        text = str(exc)
        if "NOAUTH" in text or "Authentication required" in text:
            return SourceError(SOURCE, f"authentication required by {masked}: {text}",
                               "a password in FORENSICS_REDIS_URL (redis://:PASSWORD@host:port/db)")
        return SourceError(SOURCE, f"command failed on {masked}: {text}", "")
    return None


def _scan(client: redis_client.Redis, patterns: list[KeyPattern], max_keys: int, count: int,
          timeout_s: float) -> tuple[list[tuple[KeyPattern, str, bytes]], bool]:
    """SCAN each pattern (MATCH glob, COUNT hint) until ``max_keys`` keys or ``timeout_s`` in all.
    Keys are kept as bytes for reading back and as text (bytes that are not UTF-8 escaped)."""
    found: list[tuple[KeyPattern, str, bytes]] = []
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    for pattern in patterns:
        cursor = 0
        while True:
            cursor, keys = client.scan(cursor=cursor, match=pattern.glob, count=count)
            for raw in keys:
                key = _text(raw, "backslashreplace")
                if key not in seen and pattern.parse(key) is not None:
                    seen.add(key)
                    found.append((pattern, key, raw))
                    if len(found) >= max_keys:
                        return found, True
            if cursor == 0:
                break
            if time.monotonic() > deadline:
                return found, True
    return found, False


def _read(client: redis_client.Redis, candidates: list[tuple[KeyPattern, str, bytes]], value_chars: int
          ) -> list[dict]:
    rows = []
    for start in range(0, len(candidates), _BATCH):
        batch = candidates[start:start + _BATCH]
        sampled_at = utcnow()
        pipe = client.pipeline(transaction=False)
        for _, _, raw in batch:
            pipe.type(raw)
            pipe.pttl(raw)
        meta = pipe.execute()
        present = [(p, key, raw, _text(meta[2 * i]), meta[2 * i + 1]) for i, (p, key, raw) in enumerate(batch)
                   if _text(meta[2 * i]) != "none" and meta[2 * i + 1] != -2]
        pipe = client.pipeline(transaction=False)
        for _, _, raw, kind, _ in present:
            if kind == "string":
                pipe.getrange(raw, 0, value_chars - 1)
                pipe.strlen(raw)
            elif kind in _LENGTH:
                pipe.execute_command(_LENGTH[kind], raw)
        values = iter(pipe.execute())
        for pattern, key, _, kind, pttl in present:
            if kind == "string":
                head, length = _text(next(values)), next(values)
                value = head + ("…" if length > value_chars else "")
            elif kind in _LENGTH:
                value = f"<{kind} of {next(values)} items>"
            else:
                value = f"<{kind}>"
            ids = pattern.parse(key) or {}
            rows.append({"key": key, "kind": pattern.kind, "conversation_id": ids.get("conversation_id"),
                         "message_id": ids.get("message_id"), "ttl_s": None if pttl < 0 else pttl / 1000.0,
                         "value": value, "sampled_at": sampled_at, "source_object": pattern.prefix + pattern.pattern,
                         "source_ref": key})
    return rows


def _text(value: Any, errors: str = "replace") -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors)
    return str(value)


def _frame(rows: list[dict]) -> pd.DataFrame:
    if not rows:
        return schema.empty("locks")
    frame = pd.DataFrame(rows)
    frame["ttl_s"] = pd.to_numeric(frame["ttl_s"], errors="coerce")
    frame["source"] = SOURCE
    return schema.conform("locks", frame)


# ---- collection --------------------------------------------------------------

class Source(EvidenceSource):
    """SCAN the profile's key patterns; connection from ``redis_url`` or FORENSICS_REDIS_URL,
    namespace from ``redis_key_prefix``, cap from ``redis_max_keys``."""

    name = "redis"
    tables = ("locks",)
    connection, env = "redis_url", "redis"
    options = (
        Option("redis_key_prefix", "text", "", "namespace before every key pattern"),
        Option("redis_max_keys", "int", DEFAULT_MAX_KEYS, "keys read at most", minimum=1),
    )

    def read(self, window: Window) -> SourceResult:
        url, prefix, max_keys = self.opts.connection, self.opts["redis_key_prefix"], self.opts["redis_max_keys"]
        limits = self.opts.limits
        self.say(f"redis: scanning {mask_uri(url) if url else '(no URL)'}")
        frame = read_locks(url, profile=self.profile, key_prefix=prefix, max_keys=max_keys, limits=limits)
        patterns = [p.glob for p in key_patterns(self.profile, prefix)]
        parameters = {"match": patterns, "count": SCAN_COUNT, "max_keys": max_keys, "value_chars": VALUE_CHARS}
        tables = {"locks": frame}
        notes = [f"SCAN stopped at {len(frame)} keys (cap {max_keys} or time limit {limits.timeout_s:g} s)"] \
            if frame.attrs.get("truncated") else []
        description = self.describe(tables, notes=notes, parameters=parameters)
        return SourceResult(tables=tables, description=description,
                            queries={"locks": {"redis": {"commands": "SCAN MATCH/COUNT, TYPE, PTTL, GETRANGE, STRLEN",
                                                         **parameters}}})
