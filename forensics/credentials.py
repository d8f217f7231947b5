"""Keep credentials out of everything the toolkit prints, logs, writes into manifests or reports."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

MASK = "***"
_SECRET_KEYS = re.compile(r"pass(word)?|secret|token|api[_-]?key|credential|auth", re.IGNORECASE)
# user:password@ inside any URI-looking string (mongodb://, postgresql://, redis://, http://)
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]+)@")
# key=value pairs in DSNs and query strings: password=..., ?authToken=...
_KV = re.compile(r"(?P<key>\b(?:password|passwd|pwd|secret|token|access_token|api_key|apikey)=)(?P<val>[^&\s;]+)",
                 re.IGNORECASE)


def mask_uri(uri: str | None) -> str | None:
    """``mongodb://u:pw@h/db?authSource=admin`` -> ``mongodb://u:***@h/db?authSource=admin``.

    Also masks ``password=`` style pairs (libpq key/value DSNs, query strings) and a
    password-only userinfo (``redis://:pw@host``).
    """
    if uri is None:
        return None
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", str(uri))
    return _KV.sub(lambda m: f"{m['key']}{MASK}", text)


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
    parts = urlsplit(uri)
    return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else mask_uri(uri) or ""


__all__ = ["MASK", "mask_uri", "mask_secrets", "host_of"]
