"""A simulated incident of any size written straight into a bundle, slice by slice.

``simulate`` holds one incident in memory (about 2.4 GB per million messages). For a bigger
window, :func:`simulate_bundle` simulates the incident in independent slices of at most
:data:`SLICE_MESSAGES` messages (``simulate(..., part=(k, parts))``: disjoint conversations,
the same trigger, affected channel and bursts, each slice its own traffic draws) and appends
each slice's tables to the bundle's Parquet files as row groups
(:class:`forensics.bundle.BundleWriter`), so peak memory is that of one slice whatever the
window. What is not per message is merged once: the Kafka topic inventory is slice 0's,
consumer lag and the Prometheus samples are summed over the slices (lag, counters, histogram
buckets and the stuck gauge add up; ``up`` does not), and the span/log samples are split
between the slices so that their totals stay those of ``simulate``.

An incident of at most :data:`SLICE_MESSAGES` messages is one slice: the same frames as
``simulate`` gives.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from forensics import schema
from forensics.bundle import BASELINE_DIR, BundleWriter, custody_entry
from forensics.evidence import Evidence, keep_secrets_raw, mask_evidence_secrets
from forensics.profiles import load_profile
from forensics.rules import metric_names
from forensics.simulate import simulate, telemetry

SLICE_MESSAGES = 250_000
"""Messages per slice: about 0.6 GB of simulator memory each."""

_SUMMED = {"consumer_lag": (["sampled_at", "group", "topic", "partition"], ["committed_offset", "end_offset", "lag"]),
           "metrics": (["metric", "labels", "timestamp"], ["value"])}
"""Tables that describe the whole platform, merged over the slices: key columns, summed columns."""


def slice_sizes(messages: int, slice_messages: int = SLICE_MESSAGES) -> list[int]:
    """``messages`` split into as few near-equal slices of at most ``slice_messages`` as possible."""
    parts = max(1, math.ceil(messages / slice_messages))
    base, extra = divmod(messages, parts)
    return [base + (k < extra) for k in range(parts)]


def simulate_bundle(scenario: str, path: str | Path, messages: int = 5000, seed: int = 7,
                    end: pd.Timestamp | str | None = None, profile: str | None = "runbook", *,
                    overwrite: bool = False, archive: bool = False, keep_secrets: bool = False,
                    slice_messages: int = SLICE_MESSAGES,
                    detail_sample: int = telemetry.DETAIL_SAMPLE, failure_sample: int = telemetry.FAILURE_SAMPLE,
                    progress: Callable[[str], None] | None = None, **variants: Any) -> Path:
    """Simulate ``scenario`` with ``messages`` messages into a bundle at ``path``, one slice at a
    time (parameters as :func:`forensics.simulate.simulate`, ``variants`` = its baseline, noise,
    under_way, collected; ``slice_messages`` caps a slice). Each slice's baseline period goes
    under ``baseline/`` the same way. Secrets are masked in each slice as :func:`write_bundle`
    masks them, unless ``keep_secrets`` (a sealed internal bundle; the manifest says which).
    Returns the bundle's path."""
    say = progress or (lambda text: None)
    sizes = slice_sizes(messages, slice_messages)
    parts = len(sizes)
    merged: dict[tuple[str, str], list[pd.DataFrame]] = {}
    first: Evidence | None = None
    with BundleWriter(path, overwrite=overwrite, archive=archive) as writer:
        for k, n in enumerate(sizes):
            say(f"simulating slice {k + 1}/{parts} ({n:,} messages)")
            ev = simulate(scenario, messages=n, seed=seed, end=end, profile=profile, part=(k, parts),
                          detail_sample=_share(detail_sample, k, parts), failure_sample=_share(failure_sample, k, parts),
                          **variants)
            ev = (keep_secrets_raw(ev, "kept raw when written (--keep-secrets): a sealed internal bundle")
                  if keep_secrets else mask_evidence_secrets(ev))  # as write_bundle does
            for prefix, period in (("", ev), (BASELINE_DIR, ev.baseline)):
                for name, frame in (period.tables.items() if period is not None else ()):
                    if name in _SUMMED:
                        merged.setdefault((prefix, name), []).append(frame)
                    elif name != "topics" or k == 0:
                        writer.append(name, frame, prefix=prefix)
            first = _summed_sources(first, ev)
            del ev
        assert first is not None
        up = metric_names(load_profile(first.profile)).name("up")
        for (prefix, name), frames in merged.items():
            writer.append(name, _merge(name, frames, keep_max={up} if name == "metrics" and up else set()),
                          prefix=prefix)
        say(f"writing bundle {path}")
        return writer.close(first, custody=[custody_entry("simulated", {
            "scenario": scenario, "messages": messages, "seed": seed, "slices": parts})])


def _share(total: int, k: int, parts: int) -> int:
    return total // parts + (k < total % parts)


def _summed_sources(acc: Evidence | None, ev: Evidence) -> Evidence:
    """The bundle's description: slice 0's, with the message and sample counts of every slice."""
    if acc is None:
        acc = Evidence(window=ev.window, profile=ev.profile, sources=ev.sources, missing=ev.missing,
                       scenario=ev.scenario, baseline_kind=ev.baseline_kind, secrets=ev.secrets)
        if ev.baseline is not None:  # its description; its tables are in the writer
            acc.baseline = Evidence(window=ev.baseline.window, profile=ev.profile, sources=ev.baseline.sources,
                                    missing=ev.baseline.missing)
        acc.sources["simulator"]["slices"] = 1
        return acc
    sim, mine = acc.sources["simulator"], ev.sources["simulator"]
    if (acc.secrets or {}).get("masked"):
        acc.secrets = {**acc.secrets, "cells": acc.secrets["cells"] + ev.secrets["cells"]}
    sim["messages"] += mine["messages"]
    sim["slices"] += 1
    for key in ("detail_sample", "failure_sample", "detail_messages", "failure_messages"):
        sim["sampling"][key] += mine["sampling"][key]
    sim["sampling"]["detail_fraction"] = round(sim["sampling"]["detail_messages"] / sim["messages"], 6)
    acc.scenario["messages"] = sim["messages"]
    return acc


def _merge(name: str, frames: list[pd.DataFrame], keep_max: set[str]) -> pd.DataFrame:
    """The slices' rows of a platform-wide table, summed per key (the largest value for the
    metrics in ``keep_max``); provenance columns from the first slice."""
    key, values = _SUMMED[name]
    rows = pd.concat(frames, ignore_index=True)
    if len(frames) == 1 or not len(rows):
        return rows
    grouped = rows.groupby(key, sort=False, dropna=False)
    out = grouped.first()
    out[values] = grouped[values].sum(min_count=1)
    if keep_max:
        top = grouped[values].max()
        take = out.index.get_level_values("metric").isin(list(keep_max))
        out.loc[take, values] = top.loc[take, values]
    return schema.conform(name, out.reset_index())
