"""Collection: run evidence sources over one incident window into one :class:`Evidence`.

Sources are one family (:mod:`forensics.sources.base`): the registry maps a source name to
its lazily imported :class:`~forensics.sources.base.EvidenceSource` subclass. Options are
checked for every source before anything is read (:func:`check_options`). A source that fails
(unreachable, authentication, timeout) is recorded in ``Evidence.missing`` with the
reason and the custody log, and collection of the other sources goes on.

A baseline (:func:`baseline_window`, :func:`collect_baseline`) is the same collection over
a normal period, by default the one of the same length right before the window, kept in
``Evidence.baseline`` so the analysis can tell what changed from what was always there.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pandas as pd

from forensics.bundle import custody_entry
from forensics.errors import ForensicsError, ParameterError
from forensics.evidence import Evidence, keep_secrets_raw, mask_evidence_secrets
from forensics.profiles import Profile, load_profile
from forensics.sources.base import EvidenceSource, SourceOptions
from forensics.timeutil import Window

SOURCES: dict[str, str] = {
    "simulator": "forensics.sources.simulator:Source",
    "mongo": "forensics.sources.mongo:Source",
    "postgres": "forensics.sources.postgres:Source",
    "redis": "forensics.sources.redis:Source",
    "logs": "forensics.sources.logs:Source",
    "kafka": "forensics.sources.kafka:Source",
    "jaeger": "forensics.sources.jaeger:Source",
    "prometheus": "forensics.sources.prometheus:Source",
}
"""Source name -> ``module:class`` of its :class:`~forensics.sources.base.EvidenceSource`,
imported only when used, so a missing optional driver never breaks the sources that do not
need it."""


def register_source(name: str, target: str) -> None:
    """Add a source: ``target`` is ``"package.module:Class"`` of an EvidenceSource subclass."""
    SOURCES[name] = target


def source_class(name: str) -> type[EvidenceSource]:
    """The EvidenceSource subclass registered as ``name``; a ParameterError for an unknown name."""
    try:
        target = SOURCES[name]
    except KeyError:
        raise ParameterError(f"unknown source {name!r}; known: {', '.join(sorted(SOURCES))}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def check_options(sources: Iterable[str], options: Mapping[str, Any]) -> dict[str, SourceOptions]:
    """Every source's options, parsed before anything is read: a key none of ``sources``
    accepts, or a value of the wrong kind, is one ParameterError naming what is accepted."""
    classes = {name: source_class(name) for name in sources}
    accepted = sorted({key for cls in classes.values() for key in cls.accepted()})
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ParameterError(f"unknown source option(s) {', '.join(unknown)} for {', '.join(classes)}; "
                             f"accepted: {', '.join(accepted) or 'none'}")
    return {name: cls.parse(options) for name, cls in classes.items()}


def collect(sources: list[str], window: Window, profile: str | Profile | None = None,
            options: dict[str, Any] | None = None, progress: Callable[[str], None] | None = None,
            *, keep_secrets: bool = False) -> tuple[Evidence, dict[str, Any], list[dict]]:
    """Run ``sources`` over ``window``. Returns the evidence, per-table queries and custody entries.

    A source that raises a ForensicsError or an OSError is recorded as missing with its
    reason; any other exception is a bug and propagates. Secrets in the collected text (bot
    tokens, token/key parameters, Authorization headers, URI passwords) are masked with a
    keyed fingerprint (:func:`forensics.evidence.mask_evidence_secrets`) unless
    ``keep_secrets`` (a sealed internal bundle; ``Evidence.secrets`` records the choice).
    """
    prof = load_profile(profile)
    parsed = check_options(sources, options or {})
    ev = Evidence(window=window, profile=prof.name if prof.path is None else prof.path)
    queries: dict[str, Any] = {}
    custody: list[dict] = []
    for name, opts in parsed.items():
        if progress:
            progress(f"collecting from {name}")
        try:
            result = source_class(name)(opts, prof, progress).read(window)
        except (ForensicsError, OSError) as exc:
            # the reason without the source's name in front: it is said once, by whoever shows it
            reason = str(exc).removeprefix(f"{name}: ")
            ev.missing[name] = reason
            ev.sources[name] = {"status": "failed", "error": reason}
            custody.append(custody_entry("collect-failed", {"source": name, "error": reason}))
            if progress:
                progress(f"{name}: FAILED: {reason}")
            continue
        for table, frame in result.tables.items():
            if ev.has(table) and len(frame):
                # Two sources may fill one table (Prometheus and actuator metrics): keep both.
                frame = pd.concat([ev.tables[table], frame], ignore_index=True) if len(ev.tables[table]) else frame
            ev.put(table, frame)
        queries.update(result.queries)
        ev.sources[name] = {"status": "ok", **result.description}
        if result.scenario:
            ev.scenario = result.scenario
        custody.append(custody_entry("collected", {"source": name, "window": window.to_dict(),
                                                   "rows": {t: len(f) for t, f in result.tables.items()}}))
    if keep_secrets:
        ev = keep_secrets_raw(ev, "kept raw at collection (--keep-secrets): a sealed internal bundle")
    else:
        ev = mask_evidence_secrets(ev)
        if progress:
            progress(f"secrets masked in {ev.secrets['cells']:,} cells (keyed fingerprint {ev.secrets['key_id']})")
    return ev, queries, custody


def baseline_window(spec: str | None, window: Window, now: pd.Timestamp | None = None) -> tuple[str, Window | None]:
    """``--baseline``: ``preceding`` (default: the window's length right before it), ``none``,
    or ``START/END`` (ISO 8601 or relative, e.g. ``4h/2h``), as (kind, window or None).
    A range that overlaps the window is a ParameterError."""
    text = (spec or "preceding").strip()
    if text.lower() == "none":
        return "none", None
    if text.lower() == "preceding":
        return "preceding", Window(window.start - window.duration, window.start)
    start, sep, end = text.partition("/")
    if not sep or not start.strip() or not end.strip():
        raise ParameterError(f"baseline: expected preceding, none or START/END, got {text!r}")
    try:
        chosen = Window.parse(start.strip(), end.strip(), now=now)
    except ForensicsError as exc:
        raise ParameterError(f"baseline: {exc}") from None
    if chosen.end > window.start and chosen.start < window.end:
        raise ParameterError(f"baseline: {chosen} overlaps the incident window {window}")
    return "explicit", chosen


def collect_baseline(evidence: Evidence, sources: list[str], spec: str | None, options: dict[str, Any] | None = None,
                     progress: Callable[[str], None] | None = None) -> tuple[dict[str, Any], list[dict]]:
    """Collect the same ``sources`` over the baseline period ``spec`` (:func:`baseline_window`)
    into ``evidence.baseline``; returns its per-table queries and custody entries. Sources are
    told ``period="baseline"`` (the simulator then simulates normal traffic). Only rows timed
    inside the baseline period are kept: a snapshot taken now (consumer lag, locks, topics)
    is not evidence of the past, and a table left with none is recorded as missing."""
    kind, window = baseline_window(spec, evidence.window)
    evidence.baseline_kind = kind
    if window is None:
        return {}, [custody_entry("baseline", {"kind": "none"})]
    if progress:
        progress(f"collecting the {kind} baseline {window}")
    base, queries, custody = collect(sources, window, evidence.profile, {**(options or {}), "period": "baseline"},
                                     progress)
    # what a source samples at collection time (lag, locks, topics) says nothing about the past
    evidence.baseline = base.between(window.start, window.end)
    for name, frame in base.tables.items():
        if len(frame) and not len(evidence.baseline.tables.get(name, frame.head(0))):
            evidence.baseline.tables.pop(name, None)
            evidence.baseline.missing[name] = "sampled at collection time, not during the baseline period"
    return queries, [custody_entry("baseline", {"kind": kind, "window": window.to_dict()}), *custody]
