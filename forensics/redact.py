"""Redaction of personal data in exports (HTML, Markdown, JSON reports).

Reports leave the incident room; phone numbers, handles, e-mail addresses, display names
and message text must not. Redaction is on by default for every export and off for
interactive use (a notebook run by hand shows the evidence as it is).

What is masked
- Whole columns that are personal data by definition (:data:`PERSONAL_COLUMNS`: message
  content, display names, recipient ids, raw payloads) become one mask per cell.
- In any other text: e-mail addresses (``[email]``), ``@handles`` (``[handle]``), phone
  numbers (``[phone]``: E.164 ``+5511999990000`` and loose runs of 8 or more digits that may
  be split by spaces, dots, dashes or parentheses), and the known personal strings of the
  incident (message contents, display names; ``[content]``) wherever they are quoted, e.g.
  inside an error message or a log line.

Also masked: a number labelled as a phone although it touches ``:`` or ``-`` (``tel:+5511...``,
``recipient:+5511...``, ``to=+5511...``, ``msisdn:5511...``).

What is kept, although it is digits: ISO dates and times, UUIDs (also all-digit ones) and hex
ids (a digit run touching a letter, ``:`` or ``-`` is part of an id, e.g. ``partition:offset``), decimals
(``1234.5678``) and numbers shorter than 8 digits (error codes like ``131047``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

PERSONAL_COLUMNS: dict[str, str] = {
    "content": "[content]",
    "display_name": "[name]",
    "recipient_id": "[recipient]",
    "platform_user_id": "[recipient]",
    "payload": "[payload]",
}
"""Column name -> the mask every non-null cell of that column becomes."""

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_HANDLE = re.compile(r"(?<![\w@.])@[A-Za-z0-9_](?:[A-Za-z0-9_.]*[A-Za-z0-9_])?")
# A phone candidate: digits with at most two separator characters between consecutive digits,
# not touching a word character, ':' or '-' (which would make it part of an id or a time).
_PHONE = re.compile(r"(?<![\w:.+-])\+?\(?\d(?:[ ().-]{0,2}\d)+\)?(?![\w:-])")
# A phone number after a scheme or a label that a digit run of an id never follows: E.164 with its
# "+" after ":", "=" or "-" (tel:+55..., recipient:+55..., to=+55...), or digits after tel:/phone:/msisdn:.
_LABELLED_PHONE = re.compile(r"(?:(?<=[:=-])\+\d(?:[ .-]?\d){6,14}|(?i:(?<=tel:)|(?<=phone:)|(?<=msisdn:)|(?<=recipient:))"
                             r"\d(?:[ .-]?\d){7,14})(?!\w)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_UUID = re.compile(r"\d{8}-\d{4}-\d{4}-\d{4}-\d{12}")
_DECIMAL = re.compile(r"\d+\.\d+")
_MIN_PHONE_DIGITS = 8
_MIN_E164_DIGITS = 7
_MIN_KNOWN_LENGTH = 6
"""Known personal strings shorter than this are masked only as whole cells (a short text like
"ok" would otherwise mask ordinary words)."""
_MAX_KNOWN_LENGTH = 200
"""Longer personal strings are masked as whole cells only (keeps the pattern's nesting shallow)."""
_MAX_KNOWN = 20_000


def _phone(match: re.Match) -> str:
    text = match.group(0)
    digits = sum(ch.isdigit() for ch in text)
    if _DATE.fullmatch(text) or _DECIMAL.fullmatch(text) or _UUID.fullmatch(text):
        return text
    if digits >= _MIN_PHONE_DIGITS or (text.startswith("+") and digits >= _MIN_E164_DIGITS):
        return "[phone]"
    return text


def _trie_pattern(words: Iterable[str]) -> str:
    """One regex for many literal strings, shaped as a prefix trie so that matching costs
    about the length of the text, not the number of strings (Python's ``re`` would try each
    alternative of a flat ``a|b|c`` at every position). Unbranched runs stay plain literals."""
    trie: dict = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:
        branches = []
        for ch, child in sorted(node.items()):
            if not ch:
                continue
            run = ch
            while len(child) == 1 and "" not in child:
                ((nxt, child),) = child.items()
                run += nxt
            branches.append(re.escape(run) + build(child))
        if not branches:
            return ""
        alternation = branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"
        return f"(?:{alternation})?" if "" in node else alternation

    return build(trie)


class Redactor:
    """Masks personal data in text, DataFrames and JSON-like values.

    ``known`` are the incident's personal strings (message contents, display names); they are
    masked as whole cells and, when at least 6 characters long, wherever quoted in text.
    ``enabled=False`` gives a pass-through redactor (interactive use, ``--no-redact``).
    """

    def __init__(self, known: Iterable[str] = (), *, enabled: bool = True) -> None:
        self.enabled = enabled
        values = {str(v) for v in known if isinstance(v, str) and v.strip()}
        self._known = values
        quotable = [v for v in values if _MIN_KNOWN_LENGTH <= len(v) <= _MAX_KNOWN_LENGTH][:_MAX_KNOWN]
        self._quoted = re.compile(_trie_pattern(quotable)) if quotable else None

    @classmethod
    def for_evidence(cls, evidence, *, enabled: bool = True) -> Redactor:
        """A redactor that knows the personal strings in ``evidence`` (contents, display names)."""
        if not enabled:
            return cls(enabled=False)
        known: list[str] = []
        for table, column in (("messages", "content"), ("identities", "display_name")):
            if evidence.has(table):
                values = evidence.table(table)[column].dropna()
                # the most frequent first, so the cap keeps what is quoted most often
                known.extend(values.value_counts().index[:_MAX_KNOWN].tolist())
        return cls(known)

    def text(self, value: Any) -> Any:
        """``value`` with personal data masked; non-strings are returned unchanged."""
        if not self.enabled or not isinstance(value, str) or not value:
            return value
        if value in self._known:
            return "[content]"
        if self._quoted is not None:
            value = self._quoted.sub("[content]", value)
        value = _EMAIL.sub("[email]", value)
        value = _HANDLE.sub("[handle]", value)
        value = _LABELLED_PHONE.sub("[phone]", value)
        return _PHONE.sub(_phone, value)

    def frame(self, df: pd.DataFrame, columns: Mapping[str, str] | Iterable[str] | None = None) -> pd.DataFrame:
        """A copy of ``df`` with personal columns masked whole and every other text cell redacted.

        ``columns`` names the columns to mask whole (a mapping gives each its mask); default
        :data:`PERSONAL_COLUMNS`. Nulls stay null so that counts of missing values survive.
        """
        if not self.enabled:
            return df
        if columns is None:
            whole = PERSONAL_COLUMNS
        elif isinstance(columns, Mapping):
            whole = dict(columns)
        else:
            whole = {c: PERSONAL_COLUMNS.get(c, "[redacted]") for c in columns}
        out = df.copy()
        for name in out.columns:
            s = out[name]
            if name in whole:
                out[name] = s.where(s.isna(), whole[name])
            elif pd.api.types.is_string_dtype(s.dtype) or s.dtype == object:
                out[name] = s.map(self.text, na_action="ignore").astype(s.dtype)
        return out

    def value(self, obj: Any) -> Any:
        """Redact every string inside a JSON-like value (dicts, lists); keys are kept."""
        if not self.enabled:
            return obj
        if isinstance(obj, Mapping):
            return {k: (PERSONAL_COLUMNS[k] if k in PERSONAL_COLUMNS and isinstance(v, str) else self.value(v))
                    for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.value(v) for v in obj]
        return self.text(obj)


_PATTERNS_ONLY = Redactor()


def redact_text(s: Any, known: Iterable[str] = ()) -> Any:
    """``s`` with phone numbers, e-mails, handles and the ``known`` personal strings masked."""
    return (Redactor(known) if known else _PATTERNS_ONLY).text(s)


def redact_frame(df: pd.DataFrame, columns: Mapping[str, str] | Iterable[str] | None = None,
                 known: Iterable[str] = ()) -> pd.DataFrame:
    """A copy of ``df`` with personal columns masked whole and all other text cells redacted
    (see :meth:`Redactor.frame`)."""
    return (Redactor(known) if known else _PATTERNS_ONLY).frame(df, columns)
