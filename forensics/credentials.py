"""Keep credentials out of everything the toolkit prints, logs, writes into manifests, bundles or reports.

One set of patterns (:data:`SECRET_PATTERNS`) says what a secret looks like inside text:

- a password in a URI's userinfo: ``mongodb://user:PASSWORD@host``, ``redis://:PASSWORD@host``;
- a Telegram bot token in a URL or path: ``/botTOKEN/sendMessage`` (``123456:AbC...``);
- ``password=``, ``token=``, ``access_token=``, ``secret=``, ``api_key=`` pairs (libpq DSNs,
  query strings, log lines) and ``?key=`` / ``&key=`` query parameters;
- an ``Authorization`` (or ``Proxy-Authorization``, ``X-Api-Key``) header value, scheme kept:
  ``Authorization: Bearer ***``.

:func:`mask_text` replaces each secret by ``***``, or, given a ``fingerprint`` function, by
``***#<fingerprint>`` so that equal secrets still correlate across rows and bundles (bundles
use a keyed fingerprint: :class:`SecretFingerprint`). Text already masked is left alone.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

MASK = "***"
_SECRET_KEYS = re.compile(r"pass(word)?|secret|token|api[_-]?key|credential|auth", re.IGNORECASE)
_NOT_MASKED = r"(?!\*\*\*)"
SECRET_PATTERNS: tuple[re.Pattern, ...] = (
    # user:password@ inside any URI-looking string (mongodb://, postgresql://, redis://, http://)
    re.compile(rf"(?P<key>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:){_NOT_MASKED}(?P<val>[^@\s]+)(?=@)"),
    # Telegram bot tokens in URLs and paths: /bot123456789:AAE.../sendMessage
    re.compile(rf"(?P<key>\bbot){_NOT_MASKED}(?P<val>\d{{5,}}:[A-Za-z0-9_-]{{20,}})"),
    # key=value pairs in DSNs, query strings and log lines
    re.compile(rf"(?P<key>\b(?:password|passwd|pwd|secret|client_secret|token|access_token|refresh_token|"
               rf"api_key|apikey|auth_token)=){_NOT_MASKED}(?P<val>[^&\s;,\"'#]+)", re.IGNORECASE),
    # ?key=... / &key=... query parameters (a bare key= elsewhere is often a Kafka record key)
    re.compile(rf"(?P<key>[?&](?:key|sig|signature)=){_NOT_MASKED}(?P<val>[^&\s;,\"'#]+)", re.IGNORECASE),
    # Authorization headers (header lines, JSON, Python reprs), the scheme kept
    re.compile(rf"(?P<key>\b(?:authorization|x-api-key)[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token|bot|digest)\s+)?+)"
               rf"{_NOT_MASKED}(?P<val>[^\s\"',;]+)", re.IGNORECASE),
)
SECRET_HINT = re.compile(r"://[^/\s]*:[^/\s]*@|bot\d{5,}:|password|passwd|pwd=|secret|token|api[-_]?key|key=|"
                         r"sig(?:nature)?=|authorization", re.IGNORECASE)
"""A cheap test that text may hold a secret (every pattern above implies it); RE2-compatible, so
pyarrow can run it over whole columns before the exact patterns run on the few hits."""


def mask_text(text: str, fingerprint: Callable[[str], str] | None = None) -> str:
    """``text`` with every secret of :data:`SECRET_PATTERNS` replaced by ``***`` (or
    ``***#<fingerprint(secret)>``); already masked secrets are kept as they are."""

    def masked(m: re.Match) -> str:
        return m["key"] + (f"{MASK}#{fingerprint(m['val'])}" if fingerprint else MASK)

    for pattern in SECRET_PATTERNS:
        text = pattern.sub(masked, text)
    return text


NOT_SECRET_COLUMNS = frozenset({
    "message_id", "conversation_id", "sender_id", "recipient_id", "user_id", "platform_user_id", "file_id",
    "platform_message_id", "trace_id", "span_id", "parent_span_id", "channel", "platform", "status", "old_status",
    "new_status", "content_type", "error_field", "updated_by", "kind", "http_method", "service", "level", "logger",
    "thread", "group", "topic", "original_topic", "event_type", "role", "cleanup_policy", "metric", "source",
    "exception_class", "source_ref"})
"""Identifier and enumeration columns of the canonical tables (ids, names of statuses, channels,
services, topics): never searched for secrets. Every other text column is, so a new free-text
column is masked without a change here."""


def mask_frame_secrets(frame: pd.DataFrame, fingerprint: Callable[[str], str] | None = None
                       ) -> tuple[pd.DataFrame, int]:
    """``frame`` with the secrets in its text cells masked (:func:`mask_text`), and how many
    cells changed. Each text column (all but :data:`NOT_SECRET_COLUMNS`) is first searched for
    :data:`SECRET_HINT` by pyarrow (RE2, no Python per cell); only the cells that may hold a
    secret go through the exact patterns. The frame is returned as it is when nothing changed."""
    out, changed = None, 0
    for name in frame.columns:
        column = frame[name]
        if name in NOT_SECRET_COLUMNS or not (isinstance(column.dtype, pd.StringDtype) or column.dtype == object):
            continue
        try:  # Arrow-backed strings are handed over as they are
            texts = pa.chunked_array(pa.array(column, from_pandas=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # not all strings: only the strings are text
            texts = pa.chunked_array([pa.array([v if isinstance(v, str) else None for v in column],
                                               type=pa.large_string())])
        if not pa.types.is_string(texts.type) and not pa.types.is_large_string(texts.type):
            continue
        hits = np.flatnonzero(pc.fill_null(pc.match_substring_regex(texts, SECRET_HINT.pattern, ignore_case=True),
                                           False).to_numpy())
        found = texts.take(pa.array(hits, type=pa.int64())).to_pylist()
        masked = {int(i): mask_text(v, fingerprint) for i, v in zip(hits, found, strict=True)}
        masked = {i: text for (i, text), v in zip(masked.items(), found, strict=True) if text != v}
        if not masked:
            continue
        if out is None:
            out = frame.copy()
        replaced = column.copy()
        replaced.iloc[list(masked)] = list(masked.values())
        out[name] = replaced
        changed += len(masked)
    return (frame if out is None else out), changed


def mask_uri(uri: str | None) -> str | None:
    """``mongodb://u:pw@h/db?authSource=admin`` -> ``mongodb://u:***@h/db?authSource=admin``.

    Also masks ``password=`` style pairs (libpq key/value DSNs, query strings), a
    password-only userinfo (``redis://:pw@host``) and the other secrets of :func:`mask_text`.
    """
    return None if uri is None else mask_text(str(uri))


def mask_secrets(value: Any) -> Any:
    """Recursively mask secrets in a JSON-like structure: values of secret-named keys and URIs."""
    if isinstance(value, Mapping):
        return {k: (MASK if _SECRET_KEYS.search(str(k)) and isinstance(v, str | bytes) and v else mask_secrets(v))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_secrets(v) for v in value]
    if isinstance(value, str):
        return mask_uri(value)
    return value


def host_of(uri: str) -> str:
    """Host and port of a URI, for messages that must name a server without its credentials."""
    try:
        parts = urlsplit(uri)
        return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else mask_uri(uri) or ""
    except ValueError:  # a port that is not a number
        return mask_uri(uri) or ""


FINGERPRINT_KEY_ENV = "FORENSICS_FINGERPRINT_KEY"
FINGERPRINT_HEX = 12
"""Hex digits of a secret's fingerprint kept in a bundle (48 bits: enough to correlate, too few
to confirm a guessed secret without the key anyway)."""


class SecretFingerprint:
    """A keyed fingerprint of secrets (HMAC-SHA256, first :data:`FINGERPRINT_HEX` hex digits).

    Equal secrets get equal fingerprints under one key, so a masked bundle still shows that
    two requests used the same token; without the key nobody can test a guess against a
    fingerprint. The key is ``FORENSICS_FINGERPRINT_KEY`` when set (share it between the
    machines whose bundles must correlate), else a random key created once in the cache
    directory (mode 0600). ``key_id`` names the key in a manifest without revealing it.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        self.key_id = hmac.new(key, b"chat4all-forensics key id", hashlib.sha256).hexdigest()[:FINGERPRINT_HEX]

    @classmethod
    def default(cls, key_file: Path) -> SecretFingerprint:
        """The fingerprint under FORENSICS_FINGERPRINT_KEY, else under ``key_file`` (created
        with a random key, mode 0600, when missing)."""
        env = os.environ.get(FINGERPRINT_KEY_ENV)
        if env:
            return cls(env.encode())
        path = key_file
        if not path.is_file():
            _create_key(path)
        return cls(path.read_bytes())

    def __call__(self, secret: str) -> str:
        return hmac.new(self._key, secret.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:FINGERPRINT_HEX]


def _create_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_hex(32).encode())


__all__ = ["MASK", "SECRET_PATTERNS", "SecretFingerprint", "host_of", "mask_frame_secrets", "mask_secrets",
           "mask_text", "mask_uri"]
