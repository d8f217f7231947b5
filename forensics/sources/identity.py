"""Is a recipient's platform id of the form its platform accepts?

A malformed recipient id is a root cause of its own (runbook R3.1, "Recipient not found":
"Verify phone number format (E.164 for WhatsApp: +5511999999999)"). The forms:

- WhatsApp: E.164, ``+`` then a non-zero digit and 7 to 14 more digits (``^\\+[1-9]\\d{7,14}$``,
  ASCII digits only).
- Telegram: ``@handle`` of 5 to 32 characters from ``[A-Za-z0-9_]``, or a numeric chat id
  (negative for groups and channels).
- Instagram: a handle of 1 to 30 letters, digits, ``.`` and ``_``, not starting or ending
  with ``.`` (with or without a leading ``@``: the deployed code documents ``@username``),
  or a numeric Instagram-scoped id (IGSID).

Other channels (INTERNAL) have no external form: their validity is unknown (null), not false.
"""

from __future__ import annotations

import re

import pandas as pd

from forensics.schema import BOOL

FORMS: dict[str, tuple[str, str]] = {
    "WHATSAPP": (r"\+[1-9][0-9]{7,14}", "E.164 (+ and 8 to 15 digits, e.g. +5511999999999)"),
    "TELEGRAM": (r"@[A-Za-z0-9_]{5,32}|-?[0-9]+", "@handle of 5-32 letters, digits, _ or a numeric chat id"),
    "INSTAGRAM": (r"@?(?:[A-Za-z0-9_]|[A-Za-z0-9_][A-Za-z0-9._]{0,28}[A-Za-z0-9_])|[0-9]+",
                  "handle of 1-30 letters, digits, . and _ (not starting/ending with .) or a numeric IGSID"),
}
"""Platform -> (whole-value pattern, the form in words for reports). Patterns are plain enough
for both Python's ``re`` and RE2 (pyarrow): ASCII digits, no look-around."""

_COMPILED = {platform: re.compile(pattern) for platform, (pattern, _) in FORMS.items()}


def is_valid(platform: str | None, platform_user_id: str | None) -> bool | None:
    """Whether ``platform_user_id`` has ``platform``'s form; None when the platform has none we know."""
    pattern = _COMPILED.get(str(platform or "").upper())
    if pattern is None or platform_user_id is None:
        return None
    return pattern.fullmatch(str(platform_user_id)) is not None


def format_valid(platforms: pd.Series, platform_user_ids: pd.Series) -> pd.Series:
    """Vectorised :func:`is_valid` over aligned Series; nullable boolean, null for unknown platforms."""
    platforms = platforms.astype("string").str.upper()
    ids = platform_user_ids.astype("string")
    out = pd.Series(pd.NA, index=ids.index, dtype=BOOL)
    for platform, (pattern, _) in FORMS.items():
        mine = (platforms == platform).fillna(False) & ids.notna()
        if mine.any():
            # grouped: pandas anchors the pattern as ^...$, which would split a bare alternation
            out[mine] = ids[mine].str.fullmatch(f"(?:{pattern})").astype(BOOL)
    return out


def problem(platform: str | None, platform_user_id: str | None) -> str | None:
    """Why an id does not have its platform's form, in words for a report; None when it does
    (or when the platform's form is unknown)."""
    if is_valid(platform, platform_user_id) is not False:
        return None
    value = str(platform_user_id)
    platform = str(platform).upper()
    form = FORMS[platform][1]
    if platform == "WHATSAPP":
        digits = re.sub(r"\D", "", value)
        if value != value.strip():
            return f"has surrounding whitespace; expected {form}"
        if not value.startswith("+") and re.fullmatch(r"[1-9]\d{7,14}", digits or "-"):
            return f"missing the leading +; expected {form}"
        if re.fullmatch(r"\+?[\d\s().-]+", value) and re.fullmatch(r"[1-9]\d{7,14}", digits or "-"):
            return f"contains spaces or punctuation; expected {form}"
    if platform == "TELEGRAM" and re.fullmatch(r"[A-Za-z0-9_]{5,32}", value):
        return f"handle without the leading @; expected {form}"
    return f"not {form}"


__all__ = ["FORMS", "is_valid", "format_valid", "problem"]
