"""The one rule for a test that cannot run here: skip on a developer's machine, fail under CI=true.

CI runs every test (README, Development): a missing server, tool or browser there is a failure
with its reason, never a silent pass.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the calling test with ``reason``; fail it with ``reason`` when CI=true."""
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)
