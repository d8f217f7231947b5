"""Collection: run evidence sources over one incident window into one :class:`Evidence`.

Sources are one family (:mod:`forensics.sources.base`): the registry maps a source name to
its lazily imported :class:`~forensics.sources.base.EvidenceSource` subclass. Options are
checked for every source before anything is read (:func:`check_options`). A source that fails
(unreachable, authentication, timeout) is recorded in ``Evidence.missing`` with the
reason and the custody log, and collection of the other sources goes on.

A baseline (:func:`baseline_window`, :func:`collect_baseline`) is the same collection over
a normal period, by default the one of the same length right before the window, kept in
``Evidence.baseline`` so the analysis can tell what changed from what was always there.

Every source streams its tables slice by slice (:meth:`EvidenceSource.stream`) into a
``put(table, frame)``: :func:`collect` joins them in memory (small windows, notebooks),
:func:`collect_bundle` appends each to a :class:`~forensics.bundle.BundleWriter` as it is
read, so ``forensics collect`` holds one slice whatever the window.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from forensics import schema
from forensics.bundle import BASELINE_DIR, BundleWriter, custody_entry
from forensics.credentials import SecretFingerprint, mask_frame_secrets
from forensics.errors import ForensicsError, ParameterError
from forensics.evidence import (
    Evidence,
    keep_secrets_raw,
    masked_secrets,
    period_table,
    rows_between,
    secret_fingerprint,
)
from forensics.profiles import Profile, load_profile
from forensics.sources.base import EvidenceSource, SourceOptions, drain, joined
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


Put = Callable[[str, pd.DataFrame], None]
"""Where collected slices go: ``put(table, frame)`` (a list per table, or a bundle's table file)."""


def collect(sources: list[str], window: Window, profile: str | Profile | None = None,
            options: dict[str, Any] | None = None, progress: Callable[[str], None] | None = None,
            *, keep_secrets: bool = False) -> tuple[Evidence, dict[str, Any], list[dict]]:
    """Run ``sources`` over ``window`` into memory. Returns the evidence, per-table queries and
    custody entries (:func:`collect_slices`, every table's slices joined: for a window that fits
    in memory; a bigger one goes straight into a bundle with :func:`collect_bundle`)."""
    parts: dict[str, list[pd.DataFrame]] = {}
    ev, queries, custody = collect_slices(lambda t, f: parts.setdefault(t, []).append(f), sources, window,
                                          profile, options, progress, keep_secrets=keep_secrets)
    for table, frames in parts.items():
        ev.put(table, joined(table, frames))
    return ev, queries, custody


def collect_slices(put: Put, sources: list[str], window: Window, profile: str | Profile | None = None,
                   options: dict[str, Any] | None = None, progress: Callable[[str], None] | None = None,
                   *, keep_secrets: bool = False) -> tuple[Evidence, dict[str, Any], list[dict]]:
    """Run ``sources`` over ``window``, handing every slice each source streams
    (:meth:`~forensics.sources.base.EvidenceSource.stream`) to ``put`` as it is read. Returns
    the evidence's description (window, sources, missing, secrets; no tables), per-table
    queries and custody entries.

    A source that raises a ForensicsError or an OSError is recorded as missing with its
    reason (slices it gave before failing stay where ``put`` took them, and the reason says
    how many rows); any other exception is a bug and propagates. Secrets in the collected
    text (bot tokens, token/key parameters, Authorization headers, URI passwords) are masked
    in each slice with a keyed fingerprint unless ``keep_secrets`` (a sealed internal bundle;
    ``Evidence.secrets`` records the choice).
    """
    prof = load_profile(profile)
    parsed = check_options(sources, options or {})
    ev = Evidence(window=window, profile=prof.name if prof.path is None else prof.path)
    fingerprint = None if keep_secrets else secret_fingerprint()
    queries: dict[str, Any] = {}
    custody: list[dict] = []
    cells = 0
    for name, opts in parsed.items():
        if progress:
            progress(f"collecting from {name}")
        intake = _Intake(put, fingerprint)
        try:
            result = drain(source_class(name)(opts, prof, progress).stream(window), intake)
        except (ForensicsError, OSError) as exc:
            # the reason without the source's name in front: it is said once, by whoever shows it
            reason = str(exc).removeprefix(f"{name}: ")
            if any(intake.rows.values()):
                reason += " (after " + ", ".join(f"{n:,} {t} rows" for t, n in intake.rows.items()) + ", kept)"
            ev.missing[name] = reason
            ev.sources[name] = {"status": "failed", "error": reason}
            custody.append(custody_entry("collect-failed", {"source": name, "error": reason}))
            if progress:
                progress(f"{name}: FAILED: {reason}")
            continue
        finally:
            cells += intake.cells
        queries.update(result.queries)
        ev.sources[name] = {"status": "ok", **result.description}
        if result.scenario:
            ev.scenario = result.scenario
        custody.append(custody_entry("collected", {"source": name, "window": window.to_dict(),
                                                   "rows": intake.rows}))
    if keep_secrets:
        ev = keep_secrets_raw(ev, "kept raw at collection (--keep-secrets): a sealed internal bundle")
    else:
        ev.secrets = masked_secrets(fingerprint, cells)
        if progress:
            progress(f"secrets masked in {cells:,} cells (keyed fingerprint {fingerprint.key_id})")
    return ev, queries, custody


@dataclass
class _Intake:
    """One source's slices on their way to ``put``: secrets masked (unless no ``fingerprint``), rows counted."""

    put: Put
    fingerprint: SecretFingerprint | None
    rows: dict[str, int] = field(default_factory=dict)
    cells: int = 0

    def __call__(self, piece: tuple[str, pd.DataFrame]) -> None:
        table, frame = piece
        if self.fingerprint is not None:
            frame, masked = mask_frame_secrets(frame, self.fingerprint)
            self.cells += masked
        self.rows[table] = self.rows.get(table, 0) + len(frame)
        self.put(table, frame)


def collect_bundle(writer: BundleWriter, sources: list[str], window: Window, profile: str | Profile | None = None,
                   options: dict[str, Any] | None = None, progress: Callable[[str], None] | None = None, *,
                   baseline: str | None = "preceding", keep_secrets: bool = False,
                   custody: list[dict] | None = None) -> Evidence:
    """Collect ``sources`` over ``window`` and the ``baseline`` period (:func:`baseline_window`;
    None: no baseline asked for) straight into ``writer``, each slice appended as it is read,
    so memory holds one slice whatever the window; closes the writer (``custody`` entries
    first in its log). Returns the evidence's description. No source giving any table is a
    ForensicsError (and the writer drops the partial bundle)."""
    ev, queries, log = collect_slices(writer.append, sources, window, profile, options, progress,
                                      keep_secrets=keep_secrets)
    if not writer.tables():
        writer.abort()
        raise ForensicsError("no source returned evidence: " + "; ".join(f"{k}: {v}" for k, v in ev.missing.items()))
    base_queries: dict[str, Any] = {}
    if baseline is not None:
        base_queries, base_log = collect_baseline_slices(
            lambda table, frame: writer.append(table, frame, prefix=BASELINE_DIR), ev, sources, baseline, options,
            progress, keep_secrets=keep_secrets)
        log += base_log
    writer.close(ev, queries=queries, baseline_queries=base_queries, custody=[*(custody or []), *log])
    return ev


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
    """Collect the same ``sources`` over the baseline period ``spec`` into ``evidence.baseline``
    (in memory, :func:`collect_baseline_slices`); returns its per-table queries and custody entries."""
    parts: dict[str, list[pd.DataFrame]] = {}
    queries, custody = collect_baseline_slices(lambda t, f: parts.setdefault(t, []).append(f), evidence, sources,
                                               spec, options, progress)
    if evidence.baseline is not None:
        for table, frames in parts.items():
            evidence.baseline.put(table, joined(table, frames))
    return queries, custody


def collect_baseline_slices(put: Put, evidence: Evidence, sources: list[str], spec: str | None,
                            options: dict[str, Any] | None = None, progress: Callable[[str], None] | None = None,
                            *, keep_secrets: bool = False) -> tuple[dict[str, Any], list[dict]]:
    """Collect the same ``sources`` over the baseline period ``spec`` (:func:`baseline_window`),
    each slice handed to ``put``, and describe it in ``evidence.baseline`` (no tables); returns
    its per-table queries and custody entries. Sources are told ``period="baseline"`` (the
    simulator then simulates normal traffic). Only rows timed inside the baseline period are
    kept (:func:`~forensics.evidence.rows_between`): a snapshot taken now (consumer lag, locks,
    topics) is not evidence of the past, and a table left with none is recorded as missing."""
    kind, window = baseline_window(spec, evidence.window)
    evidence.baseline_kind = kind
    if window is None:
        return {}, [custody_entry("baseline", {"kind": "none"})]
    if progress:
        progress(f"collecting the {kind} baseline {window}")
    kept: dict[str, int] = {}
    read: dict[str, int] = {}

    def inside(table: str, frame: pd.DataFrame) -> None:
        read[table] = read.get(table, 0) + len(frame)
        rows = rows_between(table, frame, window.start, window.end)
        if rows is not None and len(rows):
            kept[table] = kept.get(table, 0) + len(rows)
            put(table, rows)

    base, queries, custody = collect_slices(inside, sources, window, evidence.profile,
                                            {**(options or {}), "period": "baseline"}, progress,
                                            keep_secrets=keep_secrets)
    evidence.baseline = Evidence(window, evidence.profile, sources=base.sources, missing=dict(base.missing),
                                 secrets=base.secrets)
    for table, count in read.items():
        if kept.get(table):
            continue
        if count:  # what a source samples at collection time (lag, locks, topics) says nothing about the past
            evidence.baseline.missing[table] = "sampled at collection time, not during the baseline period"
        elif period_table(table):
            put(table, schema.empty(table))  # read, and empty: the table is there with no rows
    return queries, [custody_entry("baseline", {"kind": kind, "window": window.to_dict()}), *custody]
