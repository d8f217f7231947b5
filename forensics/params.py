"""Validation of notebook and report parameters.

A notebook's first cell holds its parameters (tagged ``parameters`` for papermill); the
next cell hands them to a validator here. A bad value stops the run with one
:class:`~forensics.errors.ParameterError` line naming the parameter, what was expected and
what was given, before any evidence is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from forensics.detectors import Thresholds
from forensics.errors import ForensicsError, ParameterError
from forensics.profiles import load_profile
from forensics.schema import CHANNELS
from forensics.timeutil import Window, iso, parse_time


def _given(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def expect(name: str, value: Any, kind: type | tuple[type, ...], expected: str) -> Any:
    """``value`` if it is an instance of ``kind``, else a ParameterError naming ``name``."""
    # bool is an int subclass: a flag given where a number is expected is a mistake, and back
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise ParameterError(f"{name}: expected {expected}, got {_given(value)}")
    return value


def validate_thresholds(thresholds: Any) -> dict[str, float]:
    """The threshold overrides as floats; the detectors' own check names a bad one (unknown
    name, not a number) in one ParameterError line."""
    if thresholds is None:
        return {}
    Thresholds.from_dict(thresholds)
    return {key: float(value) for key, value in thresholds.items()}


@dataclass(frozen=True)
class ReportParams:
    """Validated parameters of the RCA report notebook."""

    bundle: Path | None
    """Evidence bundle (directory or .tar.gz); None = live sources (not yet supported)."""
    since: pd.Timestamp | None
    until: pd.Timestamp | None
    channel: str | None
    """One of schema.CHANNELS, or None for all channels."""
    thresholds: dict[str, float] = field(default_factory=dict)
    profile: str = "runbook"
    """Naming profile for live sources; a bundle keeps the profile it was collected with."""
    redact: bool = True
    title: str = ""

    def window(self, default: Window) -> Window:
        """The analysis window: the override where given, else the evidence window."""
        if self.since is None and self.until is None:
            return default
        try:
            return Window(self.since if self.since is not None else default.start,
                          self.until if self.until is not None else default.end)
        except ForensicsError as exc:
            raise ParameterError(f"since/until: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The parameters as papermill passes them (strings, dict, bool)."""
        return {"bundle": str(self.bundle) if self.bundle else "", "since": iso(self.since) or "",
                "until": iso(self.until) or "", "channel": self.channel or "", "thresholds": dict(self.thresholds),
                "profile": self.profile, "redact": self.redact, "title": self.title}


def _time(name: str, value: Any) -> pd.Timestamp | None:
    expect(name, value, str, 'an ISO 8601 time ("2025-12-03T14:00:00Z"), a relative time ("2h") or ""')
    if not value.strip():
        return None
    try:
        return parse_time(value)
    except ForensicsError as exc:
        raise ParameterError(f"{name}: {exc}") from None


def validate_report_params(*, bundle: Any = "", since: Any = "", until: Any = "", channel: Any = "",
                           thresholds: Any = None, profile: Any = "runbook", redact: Any = True,
                           title: Any = "") -> ReportParams:
    """Check the RCA report notebook's parameters; ParameterError (one line) on the first bad one."""
    expect("bundle", bundle, (str, Path), 'a bundle path (str), or "" for live sources')
    start, end = _time("since", since), _time("until", until)
    if start is not None and end is not None and end <= start:
        raise ParameterError(f"since/until: until {until!r} is not after since {since!r}")
    expect("channel", channel, str, f'one of {", ".join(CHANNELS)}, or "" for all')
    chan = channel.strip().upper() or None
    if chan is not None and chan not in CHANNELS:
        raise ParameterError(f'channel: expected one of {", ".join(CHANNELS)}, or "" for all, '
                             f"got {_given(channel)}")
    limits = validate_thresholds(thresholds)
    expect("profile", profile, str, "a profile name (runbook, chat4all-v2) or a YAML path")
    try:
        load_profile(profile)
    except ForensicsError as exc:
        raise ParameterError(f"profile: {exc}") from None
    expect("redact", redact, bool, "True or False")
    expect("title", title, str, "a report title (str)")
    path = Path(bundle) if str(bundle).strip() else None
    if path is not None and not path.exists():
        raise ParameterError(f"bundle: {path} does not exist")
    return ReportParams(path, start, end, chan, limits, profile, redact, title.strip())
