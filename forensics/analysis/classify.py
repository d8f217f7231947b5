"""Classify error text (stored ``error_message``, DLQ exception messages, log lines, raw
platform bodies) against the error catalog (:mod:`forensics.catalog`).

Method, in order of trust:

1. JSON bodies anywhere in the text are decoded (bounded: at most a few candidates, a
   size cap, a depth cap) and read by their envelope: Graph API ``{"error":{"code":..}}``
   (WhatsApp, Instagram), WhatsApp callback ``{"errors":[{"code":..}]}`` or
   ``entry[].changes[].value.statuses[].errors[]``, Telegram
   ``{"ok":false,"error_code":..,"description":..}``. The description / message / details
   refine the code (Telegram 403 "bot was blocked by the user" is ``recipient_blocked``,
   not ``auth``). JSON nested in a string field is classified recursively.
2. A Graph API code written in text, ``(#131047)``.
3. The catalog's text patterns (MongoDB timeouts, Kafka UNKNOWN_TOPIC_OR_PARTITION,
   connection refused, Chat4All's own log strings), in catalog order.
4. The HTTP status in Chat4All's strings (``status=429``) or in the text.
5. Otherwise unknown, with a normalised signature (UUIDs, hex ids, timestamps, numbers
   and quoted values replaced by placeholders) so that the same error with different ids
   groups together; unknown errors are listed, never dropped.

The text is only ever data: it is searched for fixed substrings and fixed patterns,
decoded with ``json``, never evaluated and never turned into a pattern.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from forensics import schema
from forensics.catalog import PLATFORM_NAMES, CatalogEntry, load_catalog

UNKNOWN = "unknown"
MAX_TEXT = 20_000
"""Characters of one text that are examined; the rest is ignored."""
_MAX_JSON_TRIES = 4
_MAX_DEPTH = 4
_CHANNEL_PLATFORMS = ("WHATSAPP", "TELEGRAM", "INSTAGRAM")
_GRAPH_PLATFORMS = ("WHATSAPP", "INSTAGRAM")

_HTTP_STATUS = re.compile(
    r"(?:\bstatus(?:[ _-]?code)?\s*[=:]\s*|\bHTTP(?:/\d(?:\.\d)?)?\s+|\berror_code\s*[=:]\s*)([1-5]\d\d)\b", re.I)
_HTTP_PHRASE = re.compile(r"\b([45]\d\d)\s+(?:too many requests|unauthorized|forbidden|bad request|not found|"
                          r"internal server error|bad gateway|service unavailable|gateway timeout)\b", re.I)
_GRAPH_CODE = re.compile(r"\(#(\d{1,7})\)")

_NORMALISERS = (
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<uuid>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?", re.I), "<ts>"),
    (re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"), "<email>"),
    (re.compile(r"\b(?:0x)?(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.I), "<hex>"),
    (re.compile(r"\b(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Z])(?=[A-Za-z0-9_-]*[a-z])[A-Za-z0-9_-]{16,}\b"), "<id>"),
    (re.compile(r'"(?:[^"\\]|\\.)*"(\s*:)?|\'(?:[^\'\\]|\\.)*\''), lambda m: m.group(0) if m.group(1) else "<q>"),
    (re.compile(r"[+-]?\d+(?:[.,]\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
)
_SIGNATURE_CHARS = 160


@dataclass(frozen=True)
class Classification:
    """What one error text means. ``category`` is ``unknown`` when the catalog does not know it."""

    platform: str | None
    code: str | None
    category: str
    title: str
    retryable: bool | None
    """Whether a retry can help (None: unknown)."""
    runbook_step: str | None
    signature: str
    """Grouping key: the catalog entry id, or ``unknown:<normalised text>``."""
    entry: CatalogEntry | None
    conflict: str | None
    """Where the runbook's appendix reads the code differently from the platform's documentation."""
    cause: str | None = None
    http_status: int | None = None
    detail: str | None = None
    """The platform's own description of this occurrence (message / description / details), if any."""

    @property
    def known(self) -> bool:
        return self.entry is not None

    @property
    def action(self) -> str | None:
        if self.entry is not None:
            return self.entry.action
        return load_catalog().category_action(UNKNOWN)[1]

    def to_dict(self) -> dict[str, Any]:
        return {"platform": self.platform, "code": self.code, "category": self.category, "title": self.title,
                "retryable": self.retryable, "runbook_step": self.runbook_step, "signature": self.signature,
                "entry_id": self.entry.id if self.entry else None, "conflict": self.conflict, "cause": self.cause,
                "runbook_cause": self.entry.runbook_cause if self.entry else None,
                "http_status": self.http_status, "detail": self.detail}


def normalise(text: str) -> str:
    """``text`` with ids, numbers, timestamps and quoted values replaced by placeholders."""
    out = text[:MAX_TEXT]
    for pattern, placeholder in _NORMALISERS:
        out = pattern.sub(placeholder, out)
    return out.strip()[:_SIGNATURE_CHARS]


def _known(entry: CatalogEntry, http_status: int | None = None, detail: str | None = None) -> Classification:
    cat = load_catalog()
    return Classification(
        platform=entry.platform, code=entry.code, category=entry.category, title=entry.title,
        retryable=entry.retryable, runbook_step=entry.runbook_step, signature=entry.id, entry=entry,
        conflict=cat.conflict_note(entry.platform, entry.code), cause=entry.cause, http_status=http_status,
        detail=detail[:300] if detail else None)


def _unknown(text: str, platform: str | None, http_status: int | None) -> Classification:
    sig = normalise(text)
    return Classification(platform=platform, code=None, category=UNKNOWN, title=sig or "(empty)", retryable=None,
                          runbook_step=None, signature=f"{UNKNOWN}:{sig}", entry=None, conflict=None,
                          http_status=http_status)


def _platform_hint(lowered: str) -> str | None:
    for platform in _CHANNEL_PLATFORMS:
        if platform.lower() in lowered:
            return platform
    return None


def _text_of(*values: Any) -> str:
    return " ".join(v for v in values if isinstance(v, str))


def _graph_entry(code: Any, subcode: Any, refine: str, hint: str | None, whatsapp: bool) -> CatalogEntry | None:
    """The entry of a Graph API code: the hinted platform first, then the one platform that has it."""
    cat = load_catalog()
    order = [p for p in ((hint,) if hint in _GRAPH_PLATFORMS else ()) + (("WHATSAPP",) if whatsapp else ())
             + _GRAPH_PLATFORMS]
    for platform in dict.fromkeys(order):
        entry = cat.lookup(platform, code, refine, subcode)
        if entry is not None:
            return entry
    return None


def _from_error_object(err: dict, hint: str | None, whatsapp: bool) -> tuple[CatalogEntry | None, str]:
    code = err.get("code")
    if isinstance(code, bool) or not isinstance(code, int | str):
        return None, ""
    data = err.get("error_data") if isinstance(err.get("error_data"), dict) else {}
    detail = _text_of(err.get("title"), err.get("message"), data.get("details"), err.get("error_user_msg"),
                      err.get("error_user_title"))
    whatsapp = whatsapp or data.get("messaging_product") == "whatsapp"
    return _graph_entry(code, err.get("error_subcode"), detail, hint, whatsapp), detail


def _from_json(obj: Any, hint: str | None, depth: int = 0) -> tuple[CatalogEntry | None, str]:
    """Read a decoded body by its envelope; recurse into nested objects and JSON-in-strings."""
    if depth > _MAX_DEPTH:
        return None, ""
    if isinstance(obj, list):
        for item in obj[:20]:
            found = _from_json(item, hint, depth + 1)
            if found[0] is not None:
                return found
        return None, ""
    if not isinstance(obj, dict):
        return None, ""
    if obj.get("ok") is False and "error_code" in obj:
        code, description = obj.get("error_code"), obj.get("description")
        detail = description if isinstance(description, str) else ""
        return load_catalog().lookup("TELEGRAM", code, detail), detail
    if isinstance(obj.get("error"), dict):
        entry, detail = _from_error_object(obj["error"], hint, False)
        if entry is not None:
            return entry, detail
    if isinstance(obj.get("errors"), list):  # WhatsApp webhook status errors
        for err in obj["errors"][:20]:
            if isinstance(err, dict):
                entry, detail = _from_error_object(err, hint, hint in (None, "WHATSAPP"))
                if entry is not None:
                    return entry, detail
    for value in list(obj.values())[:50]:
        if isinstance(value, dict | list):
            found = _from_json(value, hint, depth + 1)
        elif isinstance(value, str) and "{" in value:
            found = _from_text_json(value, hint, depth + 1)
        else:
            continue
        if found[0] is not None:
            return found
    return None, ""


def _from_text_json(text: str, hint: str | None, depth: int = 0) -> tuple[CatalogEntry | None, str]:
    """Decode the first few JSON objects embedded in ``text`` and read them."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    for _ in range(_MAX_JSON_TRIES):
        if start < 0:
            break
        try:
            obj, _end = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            start = text.find("{", start + 1)
            continue
        found = _from_json(obj, hint, depth)
        if found[0] is not None:
            return found
        start = text.find("{", start + 1)
    return None, ""


def _http_status(text: str) -> int | None:
    m = _HTTP_STATUS.search(text) or _HTTP_PHRASE.search(text)
    return int(m.group(1)) if m else None


def _http_entry(status: int) -> CatalogEntry | None:
    cat = load_catalog()
    return cat.lookup("HTTP", status) or (cat.lookup("HTTP", f"{status // 100}xx") if status >= 400 else None)


def classify(text: str | None, channel: str | None = None) -> Classification:
    """Classify one error text; ``channel`` (WHATSAPP, TELEGRAM, INSTAGRAM) disambiguates
    Graph API codes that WhatsApp and Instagram share. Never raises on odd input."""
    if text is None or (isinstance(text, float) and np.isnan(text)) or text is pd.NA:
        return _unknown("", None, None)
    return _classify_text(str(text)[:MAX_TEXT], channel if isinstance(channel, str) else None)


CLASSIFIED = 1 << 16
"""Distinct (text, channel) classifications remembered: the window, its baseline and the log
lines repeat the same few thousand error texts, each matched against the catalog once."""


@lru_cache(maxsize=CLASSIFIED)
def _classify_text(text: str, channel: str | None) -> Classification:
    """:func:`classify` of a text (the catalog is loaded once and never changes; results are frozen)."""
    lowered = text.lower()
    hint = channel.upper() if isinstance(channel, str) and channel.upper() in _CHANNEL_PLATFORMS else None
    hint = hint or _platform_hint(lowered)
    status = _http_status(text)
    cat = load_catalog()

    if "{" in text:
        entry, detail = _from_text_json(text, hint)
        if entry is not None:
            return _known(entry, status, detail)
    m = _GRAPH_CODE.search(text)
    if m:
        entry = _graph_entry(m.group(1), None, text, hint, False)
        if entry is not None:
            return _known(entry, status)
    if hint == "TELEGRAM" and status is not None:
        entry = cat.lookup("TELEGRAM", status, text)
        if entry is not None:
            return _known(entry, status)
    entry = cat.search_text(lowered)
    if entry is not None:
        return _known(entry, status)
    if status is not None:
        entry = _http_entry(status)
        if entry is not None:
            return _known(entry, status)
    return _unknown(text, hint, status)


COLUMNS = {
    "platform": schema.STR, "code": schema.STR, "category": schema.STR, "title": schema.STR,
    "retryable": schema.BOOL, "runbook_step": schema.STR, "signature": schema.STR, "entry_id": schema.STR,
    "conflict": schema.STR, "cause": schema.STR, "runbook_cause": schema.STR, "http_status": schema.INT,
    "detail": schema.STR,
}
"""Columns of :func:`classify_series`' result."""
_ID_MASKS = (
    (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "00000000-0000-0000-0000-000000000000"),
    (r'"fbtrace_id"\s*:\s*"[^"]*"', '"fbtrace_id":"x"'),
    (r"\b[0-9a-f]{24,}\b", "0"),
)
"""Ids that never change what an error means (UUIDs, Graph API trace ids, long hex ids): masked
before classifying many distinct texts. Plain string patterns, so Arrow runs them (RE2)."""
_MASK_FROM = 2_000
"""Above this many distinct texts, ids are masked first so texts that differ only by ids classify once."""


def classify_series(texts: pd.Series, channel: pd.Series | str | None = None) -> pd.DataFrame:
    """Classify a column of error texts: one row per input row (same index), columns :data:`COLUMNS`.

    Each distinct (text, channel) pair is classified once, so a million rows with a few
    distinct errors cost a few classifications plus a factorisation. Null texts give
    all-null rows.
    """
    index = texts.index
    if not len(texts):
        return pd.DataFrame({c: pd.Series(dtype=d) for c, d in COLUMNS.items()}, index=index)
    codes, table = classify_codes(texts, channel)
    out = table.take(codes).reset_index(drop=True)
    out.index = index
    return out


def classify_codes(texts: pd.Series, channel: pd.Series | str | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """What :func:`classify_series` gives, before it is spread over the rows: per row, the
    position of its classification in a table with one row per distinct (text, channel) pair
    (an all-null row for null texts). A caller that keeps a few of many rows takes only those."""
    n = len(texts)
    t = texts.astype(schema.STR)
    t_codes, t_uniques = pd.factorize(t, use_na_sentinel=True)
    if len(t_uniques) > _MASK_FROM:
        masked = pd.Series(t_uniques, dtype=schema.STR)
        for pattern, placeholder in _ID_MASKS:
            masked = masked.str.replace(pattern, placeholder, regex=True)
        remap, t_uniques = pd.factorize(masked)
        t_codes = np.where(t_codes >= 0, remap[np.maximum(t_codes, 0)], -1)
    t_uniques = np.asarray(t_uniques, dtype=object)
    if isinstance(channel, pd.Series):
        c_codes, c_uniques = pd.factorize(channel.astype(schema.STR), use_na_sentinel=True)
        c_uniques = list(c_uniques) + [None]
        c_codes = np.where(c_codes < 0, len(c_uniques) - 1, c_codes)
    else:
        c_uniques, c_codes = [channel], np.zeros(n, dtype=np.int64)
    pair = np.where(t_codes >= 0, t_codes.astype(np.int64) * len(c_uniques) + c_codes, -1)
    p_codes, p_uniques = pd.factorize(pair)
    rows = []
    for key in p_uniques:
        if key < 0:
            rows.append(None)
            continue
        result = classify(t_uniques[key // len(c_uniques)], c_uniques[key % len(c_uniques)]).to_dict()
        rows.append(result)
    table = pd.DataFrame([r or {} for r in rows], columns=list(COLUMNS))
    return p_codes, table.astype({c: d for c, d in COLUMNS.items()})


def describe(c: Classification) -> str:
    """One line: platform code: title [category]."""
    platform = PLATFORM_NAMES.get(c.platform or "", c.platform or "")
    code = f" {c.code}" if c.code else ""
    return f"{platform}{code}: {c.title} [{c.category}]".strip()
