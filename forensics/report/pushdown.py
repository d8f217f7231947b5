"""Whole-window figures of a live report, computed where the data is.

The figures that need every row of a window (messages by status per time bucket, stuck
PENDING/SENT per channel, FAILED grouped by error) are asked of MongoDB as aggregation
pipelines (:mod:`forensics.sources.mongo_server`: valid on a sharded cluster, read-only,
under ``maxTimeMS`` and a row cap) when the window is big, and only their answers travel;
the few rows the report shows as examples (the messages stuck longest) are fetched on
demand, at most :data:`DRILL_ROWS`.

Whether a window is big is asked first (:func:`live_plan`), by a count on the server that
stops one past the mongo source's ``pushdown_messages`` option (default
:data:`~forensics.sources.mongo.PUSHDOWN_MESSAGES`), so deciding costs the same whatever the window. Above it the
figures come from the server (:func:`server_figures`) and the evidence the detectors read is
streamed into a bundle on disk (:func:`forensics.report.drilldown.load_evidence`); at or
below it the report keeps the full path, fastest for a small window: its rows are collected
and analysed in memory. :func:`figures_from_rows` computes the same figures from collected
rows with the same definitions; the integration test holds the two equal on one seeded
window.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from forensics import schema
from forensics.analysis.detectors.base import Thresholds
from forensics.errors import ForensicsError, SourceError, SourceTimeout
from forensics.report.params import EvidenceParams
from forensics.sources.mongo import PUSHDOWN_MESSAGES, MongoSource
from forensics.sources.registry import source_class
from forensics.timeutil import Window

DRILL_ROWS = 20
"""Examples fetched on demand: the messages stuck longest, at most this many."""
BUCKETS = ("1min", "5min", "15min", "1h", "6h", "1D")
MAX_BUCKETS = 120
FAILED_COLUMNS = ["error_message", "count", "channels", "first_seen", "last_seen"]
EXAMPLE_COLUMNS = ["message_id", "status", "channel", "created_at", "updated_at"]


def bucket_for(window: Window) -> str:
    """The narrowest of :data:`BUCKETS` that cuts ``window`` into at most :data:`MAX_BUCKETS`."""
    return next((b for b in BUCKETS if window.duration / pd.Timedelta(b) <= MAX_BUCKETS), BUCKETS[-1])


def stuck_ages(thresholds: Mapping[str, float] | None = None) -> dict[str, pd.Timedelta]:
    """Status -> the age past which a message still in it is stuck (the detectors' thresholds)."""
    t = Thresholds.from_dict(thresholds)
    return {"PENDING": pd.Timedelta(seconds=t.stuck_pending_s), "SENT": pd.Timedelta(seconds=t.stuck_sent_s)}


@dataclass(frozen=True)
class LivePlan:
    """How a live report reads its window: ``messages`` created in it as counted on the server
    (stopped one past ``threshold``; None when MongoDB was not asked or did not answer)."""

    window: Window
    threshold: int
    messages: int | None = None
    too_slow: bool = False
    """The count exceeded ``maxTimeMS``: no figure, but a window that big is streamed to disk."""

    @property
    def pushdown(self) -> bool:
        """Whether the window is big: its figures from the server, its evidence streamed to disk."""
        return self.messages is not None and self.messages > self.threshold

    @property
    def to_disk(self) -> bool:
        """Whether the live evidence goes into a bundle on disk rather than memory."""
        return self.pushdown or self.too_slow


@dataclass(frozen=True)
class WindowFigures:
    """What a window's rows say in aggregate, and where it was computed: ``computed_on`` is
    ``server`` (``pipelines`` MongoDB aggregations) or ``rows`` (the collected messages).

    ``status_counts``: messages created per ``bucket`` by current status (``bucket_start``,
    ``status``, ``count``); ``stuck``: per status and channel (``count``, ``oldest`` creation);
    ``failed_by_error``: :data:`FAILED_COLUMNS`, most frequent first; ``examples``: the
    messages stuck longest, at most :data:`DRILL_ROWS` (:data:`EXAMPLE_COLUMNS`).
    """

    computed_on: str
    window: Window
    bucket: str
    status_counts: pd.DataFrame
    stuck: pd.DataFrame
    failed_by_error: pd.DataFrame
    examples: pd.DataFrame
    pipelines: int = 0
    threshold: int | None = None
    """The push-down threshold the window was above (None: computed without deciding)."""

    @property
    def messages(self) -> int:
        return int(self.status_counts["count"].sum())

    def note(self) -> str:
        """One paragraph: what was computed where, for the report."""
        if self.computed_on == "rows":
            return f"Computed from the {self.messages:,} collected messages created in the window."
        why = (f" because the window holds more than {self.threshold:,} messages (counted on the server first, "
               "mongo option pushdown_messages)") if self.threshold is not None else ""
        return (f"Computed on the MongoDB server{why}: {self.pipelines} aggregation pipelines over every one of the "
                f"{self.messages:,} messages created in the window, of which only the answers were read. The "
                f"examples are the at most {DRILL_ROWS} messages stuck longest, fetched on demand. The detectors "
                "and the ranking read the evidence streamed into a bundle on disk, so memory stays that of one "
                "batch while collecting.")

    def summary(self) -> dict[str, Any]:
        """What summary.json records: where, how, and the totals."""
        return {"computed_on": self.computed_on, "pipelines": self.pipelines, "threshold": self.threshold,
                "messages": self.messages, "bucket": self.bucket,
                "stuck_messages": int(self.stuck["count"].sum()),
                "failed_messages": int(self.failed_by_error["count"].sum()),
                "failed_errors": len(self.failed_by_error), "note": self.note()}


# --------------------------------------------------------------------------- deciding

def live_plan(params: EvidenceParams) -> LivePlan | None:
    """The plan of a live report (None for a bundle): its window, fixed once, and whether it
    is big, asked of MongoDB with a bounded count when ``mongo`` is among the sources. A
    server that does not answer leaves the full path (the collection then records why); a
    count that exceeds ``maxTimeMS`` streams the evidence to disk, with no server figures."""
    if params.bundle is not None:
        return None
    window = params.live_window()
    if "mongo" not in params.sources:
        return LivePlan(window, PUSHDOWN_MESSAGES)
    opts = source_class("mongo").parse(params.source_options)
    threshold = opts["pushdown_messages"]
    try:
        with MongoSource.from_options(opts, params.profile) as src:
            return LivePlan(window, threshold, src.count_messages(window, at_most=threshold, channel=params.channel))
    except SourceTimeout:
        return LivePlan(window, threshold, too_slow=True)
    except ForensicsError:
        return LivePlan(window, threshold)


# --------------------------------------------------------------------------- on the server

def server_figures(params: EvidenceParams, plan: LivePlan | None) -> WindowFigures | None:
    """The window's figures computed on the server when ``plan`` says the window is big; else
    None, as when a pipeline fails (beyond ``maxTimeMS``, the server gone): the report then
    goes on without them, from the evidence streamed to disk."""
    if plan is None or not plan.pushdown:
        return None
    opts = source_class("mongo").parse(params.source_options)
    thresholds = getattr(params, "thresholds", None)
    try:
        with MongoSource.from_options(opts, params.profile) as src:
            figures = figures_from_server(src, plan.window, thresholds, channel=params.channel)
    except SourceError as exc:
        print(f"whole-window figures not computed on the server: {exc}", file=sys.stderr)
        return None
    return replace(figures, threshold=plan.threshold)


def figures_from_server(source: MongoSource, window: Window, thresholds: Mapping[str, float] | None = None, *,
                        channel: str | None = None, bucket: str | None = None) -> WindowFigures:
    """The figures of ``window`` asked of ``source`` (a :class:`~forensics.sources.mongo.MongoSource`):
    three kinds of aggregation pipeline, and the examples by a bounded, sorted find."""
    bucket = bucket or bucket_for(window)
    ages = stuck_ages(thresholds)
    asked = len(source.queries)
    counts = source.status_counts(window, bucket=bucket, channel=channel)
    stuck = source.stuck_counts(window, ages, window.end, channel=channel)
    failed = source.failed_by_error(window, channel=channel)[FAILED_COLUMNS]
    examples = pd.concat([source.stuck_messages(status, age, window.end, window=window, channel=channel,
                                                limit=DRILL_ROWS)[EXAMPLE_COLUMNS] for status, age in ages.items()])
    pipelines = sum(q["operation"] == "aggregate" for q in source.queries[asked:])
    return WindowFigures("server", window, bucket, _counts(counts), stuck, _failed(failed), _examples(examples),
                         pipelines)


# --------------------------------------------------------------------------- from rows

def figures_from_rows(messages: pd.DataFrame, window: Window, thresholds: Mapping[str, float] | None = None, *,
                      channel: str | None = None, bucket: str | None = None) -> WindowFigures:
    """The same figures computed from collected ``messages`` rows (canonical schema), with the
    server's definitions: messages created in ``window``; stuck when still in the status and
    the latest of creation and update is older than the age at the window's end."""
    bucket = bucket or bucket_for(window)
    created = messages["created_at"]
    inside = ((created >= window.start) & (created < window.end)).fillna(False)
    if channel is not None:
        inside &= messages["channel"].eq(channel).fillna(False)
    m = messages[inside.to_numpy(dtype=bool)]
    counts = (m.assign(bucket_start=m["created_at"].dt.floor(bucket))
              .groupby(["bucket_start", "status"], dropna=False, sort=True).size().rename("count").reset_index())
    last = m[["created_at", "updated_at"]].max(axis=1)
    stuck_parts, examples = [], []
    for status, age in stuck_ages(thresholds).items():
        rows = m[(m["status"].eq(status) & (last < window.end - age)).fillna(False).to_numpy(dtype=bool)]
        stuck_parts.append(rows.groupby("channel", dropna=False, sort=True)
                           .agg(count=("message_id", "size"), oldest=("created_at", "min"))
                           .reset_index().assign(status=status))
        examples.append(rows[EXAMPLE_COLUMNS])
    stuck = (pd.concat(stuck_parts)[["status", "channel", "count", "oldest"]]
             .sort_values(["status", "channel"], kind="stable").reset_index(drop=True))
    failed = (m[m["status"].eq("FAILED").fillna(False).to_numpy(dtype=bool)]
              .groupby("error_message", dropna=False, sort=False)
              .agg(count=("message_id", "size"), channels=("channel", _joined), first_seen=("created_at", "min"),
                   last_seen=("created_at", "max")).reset_index())
    return WindowFigures("rows", window, bucket, _counts(counts), stuck.astype({"count": schema.INT}),
                         _failed(failed), _examples(pd.concat(examples)))


def _joined(channels: pd.Series) -> str:
    return ",".join(sorted({str(c).upper() for c in channels.dropna()}))


# --------------------------------------------------------------------------- one shape either way

def _ns(times: pd.Series) -> pd.Series:
    return times.astype("datetime64[ns, UTC]")


def _counts(counts: pd.DataFrame) -> pd.DataFrame:
    out = counts[["bucket_start", "status", "count"]].astype({"status": schema.STR, "count": schema.INT})
    return out.assign(bucket_start=_ns(out["bucket_start"])).sort_values(
        ["bucket_start", "status"], kind="stable").reset_index(drop=True)


def _failed(failed: pd.DataFrame) -> pd.DataFrame:
    out = failed[FAILED_COLUMNS].astype({"error_message": schema.STR, "count": schema.INT, "channels": schema.STR})
    out = out.assign(first_seen=_ns(out["first_seen"]), last_seen=_ns(out["last_seen"]))
    return out.sort_values(["count", "error_message"], ascending=[False, True], kind="stable",
                           na_position="first").reset_index(drop=True)


def _examples(rows: pd.DataFrame) -> pd.DataFrame:
    out = rows.sort_values(["created_at", "message_id"], kind="stable").head(DRILL_ROWS).reset_index(drop=True)
    return out.assign(created_at=_ns(out["created_at"]), updated_at=_ns(out["updated_at"]))
