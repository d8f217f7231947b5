"""Contracts: JSON Schemas of what the toolkit writes for automation (``forensics schema NAME``).

``summary`` is ``summary.json`` (:mod:`forensics.report` writes it); its ``schema_version``
is ``SUMMARY_SCHEMA_VERSION``: a MINOR step only adds optional keys, anything else is MAJOR.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from forensics.errors import ForensicsError

SUMMARY_SCHEMA_VERSION = "1.1"


def contract_names() -> list[str]:
    """The shipped schemas, by name (``summary`` for summary.schema.json)."""
    return sorted(p.name.removesuffix(".schema.json") for p in resources.files(__name__).iterdir()
                  if p.name.endswith(".schema.json"))


def contract_text(name: str) -> str:
    """The JSON Schema ``name`` as shipped."""
    if name not in contract_names():
        raise ForensicsError(f"unknown schema {name!r}; known: {', '.join(contract_names())}")
    return resources.files(__name__).joinpath(f"{name}.schema.json").read_text(encoding="utf-8")


def contract(name: str) -> dict[str, Any]:
    """The JSON Schema ``name`` as a dict."""
    return json.loads(contract_text(name))
