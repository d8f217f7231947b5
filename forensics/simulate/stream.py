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

The slices are simulated in parallel worker processes (``workers``; default one per core, at
most two) and appended strictly in slice order, so the bundle is the same whatever the
number of workers. A worker hands its slice over as Arrow IPC files in a temporary
directory (``TMPDIR``), which the parent memory-maps: pickling a slice's frames costs about
five times as much CPU. At most ``workers + 1`` slices are in flight (being simulated, waiting
on disk, or being appended), so every worker keeps simulating while the parent appends, and
memory stays that of ``workers`` simulating slices plus the one being appended.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from forensics import schema
from forensics.bundle import BASELINE_DIR, BundleWriter, custody_entry
from forensics.errors import ScenarioError
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
                    slice_messages: int = SLICE_MESSAGES, workers: int | None = None,
                    detail_sample: int = telemetry.DETAIL_SAMPLE, failure_sample: int = telemetry.FAILURE_SAMPLE,
                    progress: Callable[[str], None] | None = None, **variants: Any) -> Path:
    """Simulate ``scenario`` with ``messages`` messages into a bundle at ``path``, one slice at a
    time (parameters as :func:`forensics.simulate.simulate`, ``variants`` = its baseline, noise,
    under_way, collected; ``slice_messages`` caps a slice). Each slice's baseline period goes
    under ``baseline/`` the same way. Secrets are masked in each slice as :func:`write_bundle`
    masks them, unless ``keep_secrets`` (a sealed internal bundle; the manifest says which).
    ``workers``: processes simulating slices at once (default :func:`default_workers`); one
    slice, or ``workers=1``, is simulated in this process; the workers are started by "spawn", so
    a script calling this with several slices keeps its top level under
    ``if __name__ == "__main__":`` (as for any spawned process). Returns the bundle's path."""
    say = progress or (lambda text: None)
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ScenarioError(f"workers must be at least 1, got {workers}")
    sizes = slice_sizes(messages, slice_messages)
    parts = len(sizes)
    requests = [_SliceRequest(scenario, n, seed, end, profile, (k, parts), _share(detail_sample, k, parts),
                              _share(failure_sample, k, parts), keep_secrets, variants)
                for k, n in enumerate(sizes)]
    merged: dict[tuple[str, str], list[pd.DataFrame]] = {}
    first: Evidence | None = None
    with BundleWriter(path, overwrite=overwrite, archive=archive) as writer:
        for k, ev in enumerate(_simulated_slices(requests, workers, say)):
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


def default_workers() -> int:
    """Slices simulated at once by default: one per core, at most two (each slice holds about
    2.2 GB at its peak; two keep a 10M-message incident under 8 GB)."""
    return max(1, min(2, os.cpu_count() or 1))


@dataclass(frozen=True)
class _SliceRequest:
    """What a worker needs to simulate one slice (plain values: it is pickled to the worker)."""

    scenario: str
    messages: int
    seed: int
    end: pd.Timestamp | str | None
    profile: str | None
    part: tuple[int, int]
    detail_sample: int
    failure_sample: int
    keep_secrets: bool
    variants: dict[str, Any]

    def simulate(self) -> Evidence:
        """The slice's evidence, its secrets masked (or kept raw) as :func:`write_bundle` does."""
        ev = simulate(self.scenario, messages=self.messages, seed=self.seed, end=self.end, profile=self.profile,
                      part=self.part, detail_sample=self.detail_sample, failure_sample=self.failure_sample,
                      **self.variants)
        return (keep_secrets_raw(ev, "kept raw when written (--keep-secrets): a sealed internal bundle")
                if self.keep_secrets else mask_evidence_secrets(ev))


def _simulated_slices(requests: list[_SliceRequest], workers: int, say: Callable[[str], None]) -> Iterator[Evidence]:
    """Each slice's evidence, in slice order: simulated here when there is one slice or one
    worker, else by ``workers`` processes with at most ``workers + 1`` slices not yet consumed."""
    parts = len(requests)
    if parts == 1 or workers == 1:
        for k, request in enumerate(requests):
            say(f"simulating slice {k + 1}/{parts} ({request.messages:,} messages)")
            yield request.simulate()
        return
    # spawn, not fork: the parent already runs pyarrow's and DuckDB's threads
    with (tempfile.TemporaryDirectory(prefix="forensics-slices-") as tmp,
          ProcessPoolExecutor(min(workers, parts), mp_context=multiprocessing.get_context("spawn")) as pool):
        pending: dict[int, Future] = {}

        def submit(k: int) -> None:
            if k < parts:
                say(f"simulating slice {k + 1}/{parts} ({requests[k].messages:,} messages)")
                pending[k] = pool.submit(_slice_to_files, requests[k], os.path.join(tmp, str(k)))

        ahead = workers + 1  # every worker busy while this process appends a slice
        for k in range(ahead):
            submit(k)
        for k in range(parts):
            description, files = pending.pop(k).result()
            say(f"writing slice {k + 1}/{parts}")
            yield _slice_from_files(description, files)
            for file in files.values():  # its frames stay readable: they are memory-mapped
                os.unlink(file)
            submit(k + ahead)


def _slice_to_files(request: _SliceRequest, directory: str) -> tuple[Evidence, dict[tuple[str, str], str]]:
    """(In a worker.) Simulate one slice and write its tables as Arrow IPC files under
    ``directory``; returns the evidence without its tables and (prefix, table) -> file, in
    the evidence's table order."""
    ev = request.simulate()
    os.makedirs(directory, exist_ok=True)
    files: dict[tuple[str, str], str] = {}
    for prefix, period in (("", ev), (BASELINE_DIR, ev.baseline)):
        for name, frame in (period.tables.items() if period is not None else ()):
            files[prefix, name] = file = os.path.join(directory, f"{prefix.strip('/') or 'window'}.{name}.arrow")
            table = pa.Table.from_pandas(frame, preserve_index=False)
            with pa.OSFile(file, "wb") as sink, pa.ipc.new_file(sink, table.schema) as ipc:
                ipc.write_table(table)
    hollow = replace(ev, tables={}, baseline=replace(ev.baseline, tables={}) if ev.baseline is not None else None)
    return hollow, files


def _slice_from_files(description: Evidence, files: dict[tuple[str, str], str]) -> Evidence:
    """The slice's evidence again, its tables memory-mapped from the worker's files."""
    for (prefix, name), file in files.items():
        with pa.memory_map(file) as source:
            frame = pa.ipc.open_file(source).read_all().to_pandas()
        (description.baseline if prefix else description).tables[name] = frame
    return description


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
