"""The error catalog: platform codes, HTTP statuses, transport errors and Chat4All's own log
strings, with what each means, as data (``errors.yaml`` beside this file).

Each :class:`CatalogEntry` says which platform and code it covers, the documented meaning
(``title``), a category, whether a retry can help, the runbook step and action, and where
the meaning comes from. Where the runbook's appendix gives a code another meaning than the
platform documents (WhatsApp 131047, 131053, 131056, 132000, 133000), the entry keeps
both: the documented one as the entry's meaning, the runbook's in ``runbook_meaning``
(with the category and cause that reading would imply); :func:`conflicts` lists them.

The catalog also names the root causes (title, runbook step, action) and the platforms'
content limits, so that analysis code holds no such literals.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import pandas as pd
import yaml

from forensics import schema
from forensics.errors import ForensicsError

CATEGORIES = (
    "rate_limit", "auth", "permission", "invalid_recipient", "recipient_blocked", "content", "policy_window",
    "platform_outage", "platform_error", "infrastructure", "invalid_request", "template", "configuration",
    "policy", "billing",
)
"""Error categories; ``unknown`` is used for text the catalog does not know."""
RETRY = ("yes", "later", "maybe", "no")
PLATFORM_NAMES = {"WHATSAPP": "WhatsApp", "TELEGRAM": "Telegram", "INSTAGRAM": "Instagram", "MONGODB": "MongoDB",
                  "KAFKA": "Kafka", "CHAT4ALL": "Chat4All"}


class CatalogError(ForensicsError):
    """The error catalog file is malformed."""


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    platform: str
    code: str
    title: str
    category: str
    retry: str
    source: str
    """Where the documented meaning comes from (text of the ``sources`` key)."""
    runbook_step: str | None = None
    action: str | None = None
    cause: str | None = None
    subcode: str | None = None
    match: tuple[tuple[str, ...], ...] = ()
    """Alternatives; each a tuple of lowercase substrings that must all occur."""
    runbook_meaning: str | None = None
    runbook_category: str | None = None
    runbook_cause: str | None = None
    in_runbook: bool = False

    @property
    def retryable(self) -> bool:
        """Whether retrying (now, later or maybe) can help; ``retry`` says which."""
        return self.retry != "no"

    @property
    def conflict(self) -> str | None:
        """A one-line note where the runbook's appendix disagrees with the platform's documentation."""
        if not self.runbook_meaning:
            return None
        name = PLATFORM_NAMES.get(self.platform, self.platform)
        return (f"{name} {self.code}: the runbook's appendix says \"{self.runbook_meaning}\"; "
                f"{name}'s documentation says \"{self.title}\"")

    def matches(self, lowered: str) -> bool:
        """Whether lowercased text contains every substring of one of the ``match`` alternatives."""
        return any(all(part in lowered for part in alt) for alt in self.match)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "platform": self.platform, "code": self.code, "subcode": self.subcode,
                "title": self.title, "category": self.category, "retry": self.retry, "retryable": self.retryable,
                "cause": self.cause, "runbook_step": self.runbook_step, "action": self.action, "source": self.source,
                "runbook_meaning": self.runbook_meaning, "runbook_category": self.runbook_category,
                "runbook_cause": self.runbook_cause}


@dataclass(frozen=True)
class Cause:
    id: str
    title: str
    runbook_step: str | None
    action: str
    check: str = ""
    """The quickest check that confirms (or rules out) this cause: what separates it from a close runner-up."""


class Catalog:
    """The parsed catalog with its indexes: by id, by (platform, code), and the text-matched entries."""

    def __init__(self, entries: tuple[CatalogEntry, ...], causes: dict[str, Cause], limits: dict[str, dict[str, int | str]],
                 sources: dict[str, str], category_actions: dict[str, dict[str, str | None]]) -> None:
        self.entries = entries
        self.causes = causes
        self.limits = limits
        """Per channel: text_chars, file_bytes, file_kinds (``image`` when the platform's file
        limit is for images only; else any file) (runbook R3.2)."""
        self.sources = sources
        self.category_actions = category_actions
        self._by_id = {e.id: e for e in entries}
        by_code: dict[tuple[str, str], list[CatalogEntry]] = {}
        for e in entries:
            by_code.setdefault((e.platform, e.code), []).append(e)
        self._by_code = {k: tuple(v) for k, v in by_code.items()}
        self._texty = tuple(e for e in entries if e.match)

    def by_id(self, entry_id: str) -> CatalogEntry | None:
        return self._by_id.get(entry_id)

    def lookup(self, platform: str, code: str | int, text: str = "", subcode: str | int | None = None
               ) -> CatalogEntry | None:
        """The entry for ``platform``/``code``: one whose ``match`` occurs in ``text`` (Telegram
        descriptions), else one with the same ``subcode``, else the plain entry for the code."""
        candidates = self._by_code.get((platform, str(code)), ())
        if not candidates:
            return None
        lowered = text.lower()
        refined = [e for e in candidates if e.match and e.matches(lowered)]
        if refined:
            return refined[0]
        if subcode is not None:
            sub = [e for e in candidates if e.subcode == str(subcode)]
            if sub:
                return sub[0]
        plain = [e for e in candidates if not e.match and e.subcode is None]
        return plain[0] if plain else None

    def search_text(self, lowered: str) -> CatalogEntry | None:
        """The first entry (file order) with a ``match`` alternative contained in ``lowered``."""
        for entry in self._texty:
            if entry.matches(lowered):
                return entry
        return None

    def cause(self, cause_id: str) -> Cause:
        """The declared cause, or a placeholder named after the id."""
        return self.causes.get(cause_id) or Cause(cause_id, cause_id.replace("_", " "), None, "")

    def category_action(self, category: str) -> tuple[str | None, str | None]:
        """(runbook step, action) of an error category, ``unknown`` included."""
        d = self.category_actions.get(category) or {}
        return d.get("runbook_step"), d.get("action")

    def conflict_note(self, platform: str, code: str | int) -> str | None:
        """The runbook/documentation disagreement note for a code (refined entries share their code's note)."""
        for e in self._by_code.get((platform, str(code)), ()):
            if e.runbook_meaning:
                return e.conflict
        return None

    def conflicts(self) -> list[CatalogEntry]:
        """Entries whose code the runbook's appendix reads differently from the platform's documentation."""
        return [e for e in self.entries if e.runbook_meaning]

    def frame(self) -> pd.DataFrame:
        """The whole catalog as a table (for the report and notebooks)."""
        return pd.DataFrame([e.to_dict() for e in self.entries])


def _alternatives(raw: Any, where: str) -> tuple[tuple[str, ...], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise CatalogError(f"error catalog {where}.match: expected a list")
    out = []
    for alt in raw:
        parts = [alt] if isinstance(alt, str) else alt
        if not isinstance(parts, list) or not parts or not all(isinstance(p, str) and p for p in parts):
            raise CatalogError(f"error catalog {where}.match: each alternative is a string or a list of strings")
        out.append(tuple(p.lower() for p in parts))
    return tuple(out)


def _parse(data: Any) -> Catalog:
    if not isinstance(data, dict) or not isinstance(data.get("errors"), list):
        raise CatalogError("error catalog: expected a mapping with an 'errors' list")
    sources = {str(k): str(v) for k, v in (data.get("sources") or {}).items()}
    categories = data.get("categories") or {}
    entries = []
    seen = set()
    for i, raw in enumerate(data["errors"]):
        where = f"errors[{i}]"
        if not isinstance(raw, dict):
            raise CatalogError(f"error catalog {where}: expected a mapping")
        for key in ("id", "platform", "code", "title", "category", "retry", "source"):
            if key not in raw:
                raise CatalogError(f"error catalog {where}: missing key {key!r}")
        where = f"{where} ({raw['id']})"
        if raw["id"] in seen:
            raise CatalogError(f"error catalog {where}: duplicate id")
        seen.add(raw["id"])
        if raw["category"] not in CATEGORIES:
            raise CatalogError(f"error catalog {where}: unknown category {raw['category']!r}")
        if raw["retry"] not in RETRY:
            raise CatalogError(f"error catalog {where}: retry must be one of {', '.join(RETRY)}")
        if raw["source"] not in sources:
            raise CatalogError(f"error catalog {where}: unknown source {raw['source']!r}")
        default = categories.get(raw["category"]) or {}
        entries.append(CatalogEntry(
            id=str(raw["id"]), platform=str(raw["platform"]), code=str(raw["code"]), title=str(raw["title"]),
            category=raw["category"], retry=raw["retry"], source=sources[raw["source"]],
            runbook_step=raw.get("runbook_step", default.get("runbook_step")),
            action=raw.get("action", default.get("action")),
            cause=raw.get("cause"), subcode=str(raw["subcode"]) if raw.get("subcode") is not None else None,
            match=_alternatives(raw.get("match"), where),
            runbook_meaning=raw.get("runbook_meaning"), runbook_category=raw.get("runbook_category"),
            runbook_cause=raw.get("runbook_cause"), in_runbook=bool(raw.get("in_runbook", False)),
        ))
    causes = {str(k): Cause(str(k), str(v["title"]), v.get("runbook_step"), str(v.get("action", "")),
                            str(v.get("check", "")))
              for k, v in (data.get("causes") or {}).items()}
    for e in entries:
        for c in (e.cause, e.runbook_cause):
            if c is not None and c not in causes:
                raise CatalogError(f"error catalog {e.id}: cause {c!r} is not declared under causes")
    limits = {str(k): {str(a): b if isinstance(b, str) else int(b) for a, b in v.items()}
              for k, v in (data.get("limits") or {}).items()}
    actions = {str(k): {"runbook_step": (v or {}).get("runbook_step"), "action": (v or {}).get("action")}
               for k, v in categories.items()}
    return Catalog(tuple(entries), causes, limits, sources, actions)


@cache
def load_catalog() -> Catalog:
    """The catalog shipped with the package (parsed once)."""
    text = resources.files(__name__).joinpath("errors.yaml").read_text(encoding="utf-8")
    return _parse(yaml.safe_load(text))


def conflicts() -> list[CatalogEntry]:
    """Entries where the runbook's appendix and the platform's documentation disagree."""
    return load_catalog().conflicts()


def lookup(platform: str, code: str | int, text: str = "", subcode: str | int | None = None) -> CatalogEntry | None:
    """Shortcut for ``load_catalog().lookup(...)``."""
    return load_catalog().lookup(platform, code, text, subcode)


def check_platform_limits(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the runbook R3.2 limit columns to rows with ``channel``, ``content_type``,
    ``content_length`` and optionally ``mime_type`` and ``file_size`` (bytes).

    Adds ``text_limit_chars``, ``text_over_limit``, ``file_limit_bytes``,
    ``file_over_limit``; limits are null (and the flags NA) where the platform states none
    (INTERNAL, or a non-image file on Instagram).
    """
    out = frame.copy()
    channel = out["channel"].astype(schema.STR).str.upper()
    limits = load_catalog().limits
    text = channel.map({c: lim["text_chars"] for c, lim in limits.items()}).astype(schema.INT)
    mime = out["mime_type"] if "mime_type" in out else pd.Series(pd.NA, index=out.index, dtype=schema.STR)
    is_image = (out["content_type"].astype(schema.STR).str.upper().eq("IMAGE").fillna(False)
                | mime.astype(schema.STR).str.lower().str.startswith("image/").fillna(False))
    file_limit = pd.Series(pd.NA, index=out.index, dtype=schema.INT)
    for c, lim in limits.items():
        applies = channel.eq(c).fillna(False) & (is_image if lim.get("file_kinds") == "image" else True)
        file_limit[applies] = lim["file_bytes"]
    size = out["file_size"].astype(schema.INT) if "file_size" in out else pd.Series(pd.NA, index=out.index,
                                                                                        dtype=schema.INT)
    out["text_limit_chars"] = text
    out["text_over_limit"] = (out["content_length"].astype(schema.INT) > text).astype(schema.BOOL)
    out["file_limit_bytes"] = file_limit
    out["file_over_limit"] = (size > file_limit).astype(schema.BOOL)
    return out
