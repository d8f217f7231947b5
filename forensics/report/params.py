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

from forensics.analysis.detectors import Thresholds
from forensics.credentials import mask_secrets
from forensics.errors import ForensicsError, ParameterError
from forensics.profiles import load_profile
from forensics.schema import CHANNELS
from forensics.sources.registry import SOURCES, check_options
from forensics.timeutil import Window, iso, parse_time, utcnow


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
class EvidenceParams:
    """Where a notebook's evidence comes from: an evidence bundle, or live sources over a window."""

    bundle: Path | None
    """Evidence bundle (directory or .tar.gz); None = live sources."""
    since: pd.Timestamp | None
    until: pd.Timestamp | None
    channel: str | None
    """One of schema.CHANNELS, or None for all channels."""
    profile: str = "runbook"
    """Naming profile for live sources; a bundle keeps the profile it was collected with."""
    sources: tuple[str, ...] = ()
    """Live sources to collect from (forensics.sources.registry.SOURCES) when there is no bundle."""
    source_options: dict[str, Any] = field(default_factory=dict)
    """Options of the live sources (connection strings, timeouts, ...), as ``forensics collect -o``."""
    baseline: str = "preceding"
    """Live sources: the baseline period to collect too (forensics.sources.registry.baseline_window);
    a bundle uses the baseline it holds."""

    def window(self, default: Window) -> Window:
        """The analysis window: the override where given, else the evidence window."""
        if self.since is None and self.until is None:
            return default
        try:
            return Window(self.since if self.since is not None else default.start,
                          self.until if self.until is not None else default.end)
        except ForensicsError as exc:
            raise ParameterError(f"since/until: {exc}") from None

    def live_window(self) -> Window:
        """The window live sources are asked about: since .. until (default now)."""
        if self.since is None:
            raise ParameterError("since: live sources need a window start (ISO 8601 or relative, e.g. 2h)")
        try:
            return Window(self.since, self.until if self.until is not None else utcnow())
        except ForensicsError as exc:
            raise ParameterError(f"since/until: {exc}") from None

    def to_dict(self, *, masked: bool = False) -> dict[str, Any]:
        """The parameters as papermill passes them (strings, dicts, bools); ``masked`` hides the
        passwords in connection strings and names the bundle without the path of the machine that
        read it (for what a report writes down)."""
        options = mask_secrets(self.source_options) if masked else dict(self.source_options)
        bundle = "" if self.bundle is None else self.bundle.name if masked else str(self.bundle)
        return {"bundle": bundle, "sources": ",".join(self.sources),
                "source_options": options, "since": iso(self.since) or "", "until": iso(self.until) or "",
                "channel": self.channel or "", "profile": self.profile, "baseline": self.baseline}


@dataclass(frozen=True)
class ReportParams(EvidenceParams):
    """Validated parameters of the RCA report notebook."""

    thresholds: dict[str, float] = field(default_factory=dict)
    redact: bool = True
    title: str = ""

    def to_dict(self, *, masked: bool = False) -> dict[str, Any]:
        return {**super().to_dict(masked=masked), "thresholds": dict(self.thresholds), "redact": self.redact,
                "title": self.title}


@dataclass(frozen=True)
class InvestigationParams(EvidenceParams):
    """Validated parameters of the investigation notebook: the evidence plus what to drill into."""

    message_id: str = ""
    conversation_id: str = ""

    def to_dict(self, *, masked: bool = False) -> dict[str, Any]:
        return {**super().to_dict(masked=masked), "message_id": self.message_id,
                "conversation_id": self.conversation_id}


def _time(name: str, value: Any) -> pd.Timestamp | None:
    expect(name, value, str, 'an ISO 8601 time ("2025-12-03T14:00:00Z"), a relative time ("2h") or ""')
    if not value.strip():
        return None
    try:
        return parse_time(value)
    except ForensicsError as exc:
        raise ParameterError(f"{name}: {exc}") from None


def _sources(value: Any) -> tuple[str, ...]:
    expect("sources", value, str, 'a comma-separated list of live sources ("mongo,kafka,jaeger") or ""')
    names = tuple(dict.fromkeys(s.strip() for s in value.split(",") if s.strip()))
    unknown = [s for s in names if s not in SOURCES]
    if unknown:
        raise ParameterError(f"sources: unknown {', '.join(map(repr, unknown))}; expected any of "
                             f"{', '.join(sorted(SOURCES))}")
    return names


def validate_evidence_params(*, bundle: Any = "", sources: Any = "", source_options: Any = None, since: Any = "",
                             until: Any = "", channel: Any = "", profile: Any = "runbook",
                             baseline: Any = "preceding") -> EvidenceParams:
    """Check where a notebook's evidence comes from; ParameterError (one line) on the first bad value."""
    expect("bundle", bundle, (str, Path), 'a bundle path (str), or "" for live sources')
    names = _sources(sources)
    options = {} if source_options is None else expect(
        "source_options", source_options, dict, 'a dict of live source options ({"mongo_uri": "mongodb://..."})')
    start, end = _time("since", since), _time("until", until)
    if start is not None and end is not None and end <= start:
        raise ParameterError(f"since/until: until {until!r} is not after since {since!r}")
    expect("channel", channel, str, f'one of {", ".join(CHANNELS)}, or "" for all')
    chan = channel.strip().upper() or None
    if chan is not None and chan not in CHANNELS:
        raise ParameterError(f'channel: expected one of {", ".join(CHANNELS)}, or "" for all, '
                             f"got {_given(channel)}")
    expect("profile", profile, str, "a profile name (runbook, chat4all-v2) or a YAML path")
    try:
        load_profile(profile)
    except ForensicsError as exc:
        raise ParameterError(f"profile: {exc}") from None
    path = Path(bundle) if str(bundle).strip() else None
    if path is not None and names:
        raise ParameterError(f"bundle/sources: give an evidence bundle or live sources, not both "
                             f"(bundle {str(bundle)!r}, sources {sources!r})")
    if path is not None and not path.exists():
        raise ParameterError(f"bundle: {path} does not exist")
    if names:
        try:
            check_options(names, options)
        except ParameterError as exc:
            raise ParameterError(f"source_options: {exc}") from None
    if names and start is None:
        raise ParameterError(f"since: live sources ({', '.join(names)}) need a window start: "
                             'ISO 8601 ("2025-12-03T14:00:00Z") or relative ("2h")')
    expect("baseline", baseline, str, 'preceding, none, or START/END ("4h/2h")')
    spec = baseline.strip() or "preceding"
    if spec.lower() not in ("preceding", "none") and "/" not in spec:
        raise ParameterError(f'baseline: expected preceding, none, or START/END ("4h/2h"), got {_given(baseline)}')
    return EvidenceParams(path, start, end, chan, profile, names, dict(options), spec)


def validate_report_params(*, bundle: Any = "", sources: Any = "", source_options: Any = None, since: Any = "",
                           until: Any = "", channel: Any = "", thresholds: Any = None, profile: Any = "runbook",
                           redact: Any = True, title: Any = "", baseline: Any = "preceding") -> ReportParams:
    """Check the RCA report notebook's parameters; ParameterError (one line) on the first bad one."""
    where = validate_evidence_params(bundle=bundle, sources=sources, source_options=source_options, since=since,
                                     until=until, channel=channel, profile=profile, baseline=baseline)
    limits = validate_thresholds(thresholds)
    expect("redact", redact, bool, "True or False")
    expect("title", title, str, "a report title (str)")
    return ReportParams(**vars(where), thresholds=limits, redact=redact, title=title.strip())


def validate_investigation_params(*, bundle: Any = "", sources: Any = "", source_options: Any = None,
                                  since: Any = "", until: Any = "", channel: Any = "", profile: Any = "runbook",
                                  message_id: Any = "", conversation_id: Any = "") -> InvestigationParams:
    """Check the investigation notebook's parameters; ParameterError (one line) on the first bad one."""
    where = validate_evidence_params(bundle=bundle, sources=sources, source_options=source_options, since=since,
                                     until=until, channel=channel, profile=profile)
    expect("message_id", message_id, str, 'a message id (str), or "" for the first FAILED message')
    expect("conversation_id", conversation_id, str, 'a conversation id (str), or "" for the message\'s')
    return InvestigationParams(**vars(where), message_id=message_id.strip(), conversation_id=conversation_id.strip())
