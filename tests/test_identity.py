"""Recipient id forms: E.164 for WhatsApp, Telegram @handle or chat id, Instagram handle or IGSID."""

from __future__ import annotations

import pandas as pd
import pytest

from forensics import schema
from forensics.sources.identity import format_valid, is_valid, problem

VALID = [
    ("WHATSAPP", "+5511999999999"),
    ("WHATSAPP", "+14155550123"),
    ("WHATSAPP", "+12345678"),  # 8 digits: the shortest E.164 we accept
    ("WHATSAPP", "+123456789012345"),  # 15 digits: the longest
    ("TELEGRAM", "@chat4all_bot"),
    ("TELEGRAM", "@abcde"),
    ("TELEGRAM", "@" + "a" * 32),
    ("TELEGRAM", "123456789"),
    ("TELEGRAM", "-1001234567890"),  # supergroup / channel chat id
    ("INSTAGRAM", "a"),
    ("INSTAGRAM", "john.doe_99"),
    ("INSTAGRAM", "@john.doe"),
    ("INSTAGRAM", "_" * 30),
    ("INSTAGRAM", "17841400000000000"),  # IGSID
    ("whatsapp", "+5511999999999"),  # platform case does not matter
]
INVALID = [
    ("WHATSAPP", "5511999999999"),
    ("WHATSAPP", "+05511999999999"),
    ("WHATSAPP", "+1234567"),  # 7 digits
    ("WHATSAPP", "+1234567890123456"),  # 16 digits
    ("WHATSAPP", "+55 11 99999-9999"),
    ("WHATSAPP", " +5511999999999"),
    ("WHATSAPP", "+5511999999999\n"),
    ("WHATSAPP", "+55119999٩9999"),  # a non-ASCII digit
    ("WHATSAPP", "'; DROP TABLE users; --"),
    ("TELEGRAM", "@abcd"),  # 4 characters
    ("TELEGRAM", "@" + "a" * 33),
    ("TELEGRAM", "@chat-4all"),
    ("TELEGRAM", "chat4all_bot"),  # handle without @
    ("TELEGRAM", ""),
    ("INSTAGRAM", ".john"),
    ("INSTAGRAM", "john."),
    ("INSTAGRAM", "a" * 31),
    ("INSTAGRAM", "john doe"),
    ("INSTAGRAM", "jöhn"),
    ("INSTAGRAM", ""),
]


@pytest.mark.parametrize(("platform", "value"), VALID)
def test_valid_forms(platform, value):
    assert is_valid(platform, value) is True


@pytest.mark.parametrize(("platform", "value"), INVALID)
def test_invalid_forms(platform, value):
    assert is_valid(platform, value) is False
    assert problem(platform, value)


def test_unknown_platform_or_missing_id_is_unknown_not_invalid():
    assert is_valid("INTERNAL", "anything") is None
    assert is_valid(None, "+5511999999999") is None
    assert is_valid("WHATSAPP", None) is None
    assert problem("INTERNAL", "anything") is None


def test_vectorised_format_valid_agrees_with_is_valid():
    cases = VALID + INVALID + [("INTERNAL", "x"), ("WHATSAPP", None)]
    platforms = pd.Series([p for p, _ in cases], dtype="string")
    ids = pd.Series([v for _, v in cases], dtype="string")
    got = format_valid(platforms, ids)
    assert schema.same_dtype(got.dtype, schema.BOOL)
    expected = [is_valid(p, v) for p, v in cases]
    assert [None if pd.isna(g) else bool(g) for g in got] == expected


def test_format_valid_keeps_the_index():
    got = format_valid(pd.Series(["WHATSAPP"], index=[7]), pd.Series(["+5511999999999"], index=[7]))
    assert list(got.index) == [7] and bool(got.loc[7])


def test_problem_names_the_usual_whatsapp_mistakes():
    assert "missing the leading +" in problem("WHATSAPP", "5511999999999")
    assert "spaces or punctuation" in problem("WHATSAPP", "+55 (11) 99999-9999")
    assert "whitespace" in problem("WHATSAPP", "+5511999999999 ")
    assert "without the leading @" in problem("TELEGRAM", "chat4all_bot")
    assert problem("WHATSAPP", "+5511999999999") is None
