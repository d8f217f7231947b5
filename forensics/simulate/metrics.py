"""Prometheus metrics of a simulated incident: what the platform's exporters would have scraped.

``scenario_metrics(ev, profile)`` derives, from the simulated evidence itself, the series
the profile's services export (names from :mod:`forensics.rules`' ``metrics.yaml``),
sampled every minute on the minute like a scrape, in the canonical ``metrics`` table:

- delivery-time histogram (``_bucket`` per upper bound, ``_sum``, ``_count``) per channel:
  one observation per DELIVERED status event, latency = event time - message creation;
- delivered and FAILED counters per channel (every channel of the window, zeros included,
  so the series exist from the start like a counter registered at boot);
- the stuck-PENDING gauge (messages PENDING for more than 30 s), when the profile has one;
- consumer lag per group, topic and partition at the consumer_lag sample times;
- HTTP client calls answered >= 400 per service and status, from spans and logs (per
  minute the larger of the two counts; spans and logs may be samples, so these counters
  are lower bounds);
- ``up`` = 1 for every service of the profile.

The derivations are the evidence series of :mod:`forensics.series`, the ones alert replay
(:mod:`forensics.analysis.alerts`) reads from the canonical tables, so a rule replayed over
these metrics and the same rule replayed from the evidence agree (up to histogram
interpolation for quantiles).

``to_openmetrics(frame)`` writes any metrics frame as OpenMetrics text with timestamps,
ending ``# EOF``: the input of ``promtool tsdb create-blocks-from openmetrics``
(:func:`forensics.sources.prometheus.backfill`).
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd

from forensics import schema
from forensics.errors import ParameterError
from forensics.evidence import Evidence
from forensics.profiles import Profile, load_profile
from forensics.rules import metric_names
from forensics.series import (
    delivery_observations,
    http_error_counts,
    http_errors,
    stuck_counts,
    stuck_intervals,
    transitions,
)
from forensics.timeutil import NS, to_ns

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, math.inf)
"""Upper bounds (seconds) of the simulated delivery-time histogram; 5 s (the SLA) is one of them."""
SAMPLE_INTERVAL_S = 60

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else f"{bound:g}"


def _labels(**labels: object) -> str:
    return json.dumps({k: str(v) for k, v in labels.items()}, sort_keys=True, separators=(",", ":"))


def _cumulative(at: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """How many of the (sorted) instants ``at`` fall at or before each grid time."""
    return np.searchsorted(at, grid, side="right").astype(float)


def _channels(ev: Evidence) -> list[str]:
    seen: set[str] = set()
    for name, col in (("messages", "channel"), ("status_events", "channel")):
        frame = ev.table(name)
        if len(frame):
            seen.update(frame[col].dropna().astype(str).unique())
    return sorted(seen)


def scenario_metrics(ev: Evidence, profile: str | Profile | None = None, *,
                     interval_s: int = SAMPLE_INTERVAL_S) -> pd.DataFrame:
    """The metrics the platform would have exported during the simulated incident ``ev``.

    profile: naming profile (default the evidence's); interval_s: scrape interval, samples
    on multiples of it from the window start to its end. Returns a canonical ``metrics``
    frame (source "prometheus", source_object = metric name, source_ref "simulator:<scenario>").
    """
    if isinstance(interval_s, bool) or not isinstance(interval_s, int | np.integer) or interval_s <= 0:
        raise ParameterError(f"interval_s must be a positive whole number of seconds, got {interval_s!r}")
    prof = load_profile(profile if profile is not None else ev.profile)
    names = metric_names(prof)
    step = int(interval_s) * NS
    first = int(ev.window.start.value) // step * step
    grid = np.arange(first, int(ev.window.end.value) + 1, step, dtype=np.int64)
    channel_label = names.channel_label
    channels = _channels(ev)
    series: list[tuple[str, str, np.ndarray, np.ndarray]] = []  # metric, labels, times, values

    def add(metric: str | None, labels: str, values: np.ndarray, times: np.ndarray = grid) -> None:
        if metric:
            series.append((metric, labels, times, values))

    hist = names.name("delivery_seconds")
    if hist:
        obs = delivery_observations(ev)
        for channel in channels:
            mine = obs[obs["channel"] == channel]
            at, lat = mine["at"].to_numpy(), mine["latency_s"].to_numpy()
            for bound in BUCKETS:
                add(f"{hist}_bucket", _labels(**{channel_label: channel, "le": _le(bound)}),
                    _cumulative(np.sort(at[lat <= bound]), grid))
            sums = np.r_[0.0, np.cumsum(lat)]
            add(f"{hist}_sum", _labels(**{channel_label: channel}), sums[np.searchsorted(at, grid, side="right")])
            add(f"{hist}_count", _labels(**{channel_label: channel}), _cumulative(at, grid))
    family = {f"{hist}_bucket", f"{hist}_sum", f"{hist}_count"} if hist else set()
    for role, status in (("delivered_total", "DELIVERED"), ("failed_total", "FAILED")):
        name = names.name(role)
        if not name or name in family:
            continue
        events = transitions(ev, status)
        for channel in channels:
            add(name, _labels(**{channel_label: channel}),
                _cumulative(events.loc[events["channel"] == channel, "at"].to_numpy(), grid))

    if names.name("stuck_pending"):
        starts, ends = stuck_intervals(ev)
        add(names.name("stuck_pending"), _labels(), stuck_counts(starts, ends, grid))

    lag_name = names.name("consumer_lag")
    lag = ev.table("consumer_lag")
    if lag_name and len(lag):
        at = to_ns(lag["sampled_at"])
        df = pd.DataFrame({"group": lag["group"].astype(str).to_numpy(), "topic": lag["topic"].astype(str).to_numpy(),
                           "partition": lag["partition"].astype("Int64").astype(str).to_numpy(), "at": at,
                           "lag": lag["lag"].astype("float64").to_numpy()}).dropna(subset=["lag"])
        for (group, topic, part), g in df.sort_values("at").groupby(["group", "topic", "partition"], sort=True):
            add(lag_name, _labels(**{names.group_label: group, "topic": topic, "partition": part}),
                g["lag"].to_numpy(), g["at"].to_numpy())

    http_name = names.name("http_client_requests")
    errors = http_errors(ev, 400)
    if http_name and errors:
        per_minute = http_error_counts(errors, grid - step, grid)
        for (service, status), counts in sorted(per_minute.items()):
            outcome = "SERVER_ERROR" if status.startswith("5") else "CLIENT_ERROR"
            add(http_name, _labels(service=service, status=status, outcome=outcome), np.cumsum(counts))

    if names.name("up"):
        for service in prof.services.all():
            add(names.name("up"), _labels(job=service), np.ones(len(grid)))

    if not series:
        return schema.empty("metrics")
    lengths = [len(t) for _, _, t, _ in series]
    scenario = (ev.scenario or {}).get("name") or "simulated"
    metric = np.repeat([s[0] for s in series], lengths)
    frame = pd.DataFrame({
        "metric": metric,
        "labels": np.repeat([s[1] for s in series], lengths),
        "timestamp": pd.to_datetime(np.concatenate([s[2] for s in series]), utc=True),
        "value": np.concatenate([np.asarray(s[3], dtype="float64") for s in series]),
        "source": "prometheus", "source_object": metric, "source_ref": f"simulator:{scenario}",
    })
    return schema.conform("metrics", frame)


# ---- OpenMetrics -------------------------------------------------------------------------------

def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_text(labels_json: str | None) -> str:
    try:
        labels = json.loads(labels_json) if labels_json else {}
    except ValueError as exc:
        raise ParameterError(f"labels {labels_json!r} are not a JSON object: {exc}") from None
    if not isinstance(labels, dict):
        raise ParameterError(f"labels {labels_json!r} are not a JSON object")
    for name in labels:
        if not _LABEL_NAME.fullmatch(str(name)) or str(name).startswith("__"):
            raise ParameterError(f"{name!r} is not a valid Prometheus label name")
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items())) + "}"


def _value_text(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def to_openmetrics(metrics: pd.DataFrame) -> str:
    """A metrics frame as OpenMetrics text: samples with timestamps (seconds, millisecond
    precision: Prometheus keeps ms), grouped by metric family (``# TYPE`` for histograms and
    ``*_total`` counters), each series in time order, ending ``# EOF``.

    Rows without a value are skipped; an invalid metric or label name is a ParameterError.
    """
    df = metrics[["metric", "labels", "timestamp", "value"]]
    df = df[df["value"].notna() & df["timestamp"].notna()]
    if not len(df):
        return "# EOF\n"
    names = pd.Series(df["metric"].astype(str).unique())
    bad = names[~names.str.fullmatch(_METRIC_NAME.pattern)]
    if len(bad):
        raise ParameterError(f"{bad.iloc[0]!r} is not a valid Prometheus metric name")
    with_le = set(df.loc[df["metric"].astype(str).str.endswith("_bucket") & df["labels"].fillna("").str.contains(
        '"le":', regex=False), "metric"].astype(str))
    histograms = {m[: -len("_bucket")] for m in with_le}

    def family(name: str) -> tuple[str, str | None]:
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[: -len(suffix)] in histograms:
                return name[: -len(suffix)], "histogram"
        if name.endswith("_total") and len(name) > len("_total"):
            return name[: -len("_total")], "counter"
        return name, None

    fams = {m: family(m) for m in names}
    ms = to_ns(df["timestamp"]) // 1_000_000
    work = pd.DataFrame({"family": df["metric"].map(lambda m: fams[m][0]).to_numpy(),
                         "metric": df["metric"].astype(str).to_numpy(), "labels": df["labels"].fillna("").to_numpy(),
                         "ms": ms, "value": df["value"].astype("float64").to_numpy()})
    work = work.sort_values(["family", "metric", "labels", "ms"], kind="stable")
    label_text = {lab: _label_text(lab) for lab in work["labels"].unique()}
    stamps = [f"{m // 1000}.{m % 1000:03d}" for m in work["ms"].to_numpy()]
    lines_by_row = [f"{metric}{label_text[lab]} {_value_text(v)} {ts}" for metric, lab, v, ts in
                    zip(work["metric"], work["labels"], work["value"], stamps, strict=True)]
    out: list[str] = []
    current = None
    for fam, line in zip(work["family"], lines_by_row, strict=True):
        if fam != current:
            current = fam
            kind = next(k for f, k in fams.values() if f == fam)
            if kind:
                out.append(f"# TYPE {fam} {kind}")
        out.append(line)
    out.append("# EOF")
    return "\n".join(out) + "\n"
