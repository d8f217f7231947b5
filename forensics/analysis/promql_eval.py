"""PromQL evaluation over the canonical ``metrics`` table, the way Prometheus 2.42 evaluates it.

At every evaluation step (1 min by default) an expression gives a set of series, held as one
numpy array per series over the steps (:class:`Vector`). Instant selectors look back 5 minutes
for the last sample, range selectors ``x[r]`` take the samples in the closed interval
``[t - r, t]``, ``rate``/``increase`` extrapolate like Prometheus' ``extrapolatedRate``,
``histogram_quantile`` interpolates like ``bucketQuantile``. An absent sample and a NaN value
are the same here (both compare false).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from forensics import schema
from forensics.analysis.detectors import NS, to_ns
from forensics.analysis.promql import (
    COMPARISONS,
    RANGE_FUNCTIONS,
    Agg,
    Binary,
    Call,
    Neg,
    Num,
    PromQLError,
    Selector,
    Str,
    UnsupportedPromQL,
    parse_promql,
    selector_name,
    split_condition,
)
from forensics.errors import ParameterError
from forensics.rules import RuleFileError, parse_duration
from forensics.timeutil import Window

DEFAULT_STEP_S = 60.0
MAX_STEPS = 2880
"""Evaluation steps of one replay at most (two days at the default step): a longer window
replays at a multiple of the step, so the work follows the evidence, not the window's length."""
LOOKBACK_S = 300.0
"""Prometheus' default lookback for instant selectors (--query.lookback-delta)."""

Key = tuple[tuple[str, str], ...]
"""A series' labels, sorted by name (``__name__`` included while the series has one)."""


# ==== series store ==============================================================================

@dataclass
class _Series:
    key: Key
    labels: dict[str, str]
    t: np.ndarray
    v: np.ndarray


def series_key(labels: dict[str, str]) -> Key:
    return tuple(sorted((str(k), str(v)) for k, v in labels.items() if v is not None and v != ""))


def _labels_json(key: Key) -> str:
    return json.dumps({k: v for k, v in key if k != "__name__"}, sort_keys=True, separators=(",", ":"))


def parse_labels(text: Any) -> dict[str, str]:
    if text is None or (isinstance(text, float) and math.isnan(text)) or text is pd.NA or text == "":
        return {}
    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


class SeriesStore:
    """The ``metrics`` table as sorted (timestamp, value) arrays per series, by metric name."""

    def __init__(self, metrics: pd.DataFrame | None = None) -> None:
        self.by_name: dict[str, list[_Series]] = {}
        if metrics is None or not len(metrics):
            return
        df = metrics[["metric", "labels", "timestamp", "value"]]
        df = df[df["metric"].notna() & df["timestamp"].notna()]
        ident = df["metric"].astype(str) + "\x00" + df["labels"].fillna("{}").astype(str)
        codes, uniques = pd.factorize(ident)
        ts = to_ns(df["timestamp"])
        vals = pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        order = np.lexsort((ts, codes))
        codes, ts, vals = codes[order], ts[order], vals[order]
        bounds = np.flatnonzero(np.diff(codes)) + 1
        starts, ends = np.r_[0, bounds], np.r_[bounds, len(codes)]
        for a, b in zip(starts, ends, strict=True):
            if a == b:
                continue
            name, labels_text = uniques[codes[a]].split("\x00", 1)
            t, v = ts[a:b], vals[a:b]
            keep = np.r_[t[1:] != t[:-1], True]  # duplicate timestamps: the last row wins
            self.add(name, parse_labels(labels_text), t[keep], v[keep])

    def add(self, name: str, labels: dict[str, str], t: np.ndarray, v: np.ndarray) -> None:
        full = {**{k: v for k, v in labels.items() if k != "__name__"}, "__name__": name}
        self.by_name.setdefault(name, []).append(_Series(series_key(full), full, np.asarray(t, np.int64),
                                                         np.asarray(v, np.float64)))

    def names(self) -> set[str]:
        return set(self.by_name)

    def select(self, sel: Selector) -> list[_Series]:
        name = selector_name(sel)
        pool = self.by_name.get(name, []) if name else [s for group in self.by_name.values() for s in group]
        out = []
        for s in pool:
            if all(_matches(s.labels.get(label, ""), op, value) for label, op, value in sel.matchers):
                out.append(s)
        return out


def _matches(actual: str, op: str, value: str) -> bool:
    if op == "=":
        return actual == value
    if op == "!=":
        return actual != value
    hit = re.fullmatch(value, actual) is not None
    return hit if op == "=~" else not hit


# ==== evaluation ================================================================================

@dataclass
class Vector:
    """An instant vector at every evaluation step: series labels -> values (NaN = no sample)."""

    series: dict[Key, np.ndarray] = field(default_factory=dict)


def _put(out: dict[Key, np.ndarray], key: Key, vals: np.ndarray, expr: str | None) -> None:
    old = out.get(key)
    if old is None:
        out[key] = vals
        return
    both = ~np.isnan(old) & ~np.isnan(vals)
    if both.any():
        raise PromQLError(f"vector cannot contain metrics with the same labelset {dict(key)}", expr)
    out[key] = np.where(np.isnan(old), vals, old)


def _drop_name(key: Key) -> Key:
    return tuple(kv for kv in key if kv[0] != "__name__")


def _project(key: Key, grouping: str | None, labels: tuple[str, ...]) -> Key:
    if grouping == "by":
        return tuple(kv for kv in key if kv[0] in labels)
    if grouping == "without":
        return tuple(kv for kv in key if kv[0] not in labels and kv[0] != "__name__")
    return ()


def _signature(key: Key, matching: str | None, labels: tuple[str, ...]) -> Key:
    base = _drop_name(key)
    if matching == "on":
        return tuple(kv for kv in base if kv[0] in labels)
    if matching == "ignoring":
        return tuple(kv for kv in base if kv[0] not in labels)
    return base


_ARITH: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "%": np.fmod, "^": np.power,
}
CMP: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "==": np.equal, "!=": np.not_equal, ">": np.greater, "<": np.less, ">=": np.greater_equal, "<=": np.less_equal,
}


class Evaluator:
    """Evaluates a syntax tree at every step of ``steps`` (int64 ns) over a SeriesStore."""

    def __init__(self, store: SeriesStore, steps: np.ndarray, expr: str = "", lookback_s: float = LOOKBACK_S) -> None:
        self.store, self.steps, self.expr = store, np.asarray(steps, np.int64), expr
        self.lookback = int(lookback_s * NS)
        self.n = len(self.steps)

    def eval(self, node: Any) -> Any:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return self._eval(node)

    def _eval(self, node: Any) -> Any:
        if isinstance(node, Num):
            return np.full(self.n, node.value)
        if isinstance(node, Str):
            raise PromQLError("a string is not a valid expression result here", self.expr)
        if isinstance(node, Selector):
            if node.range_ns is not None:
                raise PromQLError("a range vector (metric[5m]) needs a function such as rate()", self.expr)
            return self._instant(node)
        if isinstance(node, Neg):
            inner = self._eval(node.arg)
            if isinstance(inner, Vector):
                return Vector({_drop_name(k): -v for k, v in inner.series.items()})
            return -inner
        if isinstance(node, Agg):
            return self._aggregate(node)
        if isinstance(node, Call):
            return self._call(node)
        if isinstance(node, Binary):
            return self._binary(node)
        raise PromQLError(f"cannot evaluate {type(node).__name__}", self.expr)

    # -- selectors ---------------------------------------------------------------------------

    def _instant(self, sel: Selector) -> Vector:
        out: dict[Key, np.ndarray] = {}
        for s in self.store.select(sel):
            idx = np.searchsorted(s.t, self.steps, side="right") - 1
            j = np.maximum(idx, 0)
            ok = (idx >= 0) & (self.steps - s.t[j] <= self.lookback)
            vals = np.where(ok, s.v[j], np.nan)
            if not np.isnan(vals).all():
                out[s.key] = vals
        return Vector(out)

    def _range(self, func: str, sel: Selector) -> Vector:
        r = int(sel.range_ns or 0)
        out: dict[Key, np.ndarray] = {}
        for s in self.store.select(sel):
            lo = np.searchsorted(s.t, self.steps - r, side="left")  # closed range [t - r, t] (Prometheus 2.x)
            hi = np.searchsorted(s.t, self.steps, side="right")
            vals = _range_function(func, s.t, s.v, lo, hi, self.steps, r)
            if not np.isnan(vals).all():
                out[_drop_name(s.key)] = vals
        return Vector(out)

    # -- functions ---------------------------------------------------------------------------

    def _scalar_arg(self, node: Any, what: str) -> np.ndarray:
        value = self._eval(node)
        if isinstance(value, Vector):
            raise PromQLError(f"{what} must be a scalar", self.expr)
        return value

    def _vector_arg(self, node: Any, what: str) -> Vector:
        value = self._eval(node)
        if not isinstance(value, Vector):
            raise PromQLError(f"{what} must be an instant vector", self.expr)
        return value

    def _call(self, node: Call) -> Any:
        f, args = node.func, node.args
        if f in RANGE_FUNCTIONS:
            return self._range(f, args[0])
        if f == "time":
            return self.steps / NS
        if f == "vector":
            return Vector({(): self._scalar_arg(args[0], "vector()'s argument")})
        if f == "histogram_quantile":
            q = self._scalar_arg(args[0], "histogram_quantile()'s quantile")
            return _histogram_quantile(q, self._vector_arg(args[1], "histogram_quantile()'s buckets"))
        if f == "absent":
            vec = self._vector_arg(args[0], "absent()'s argument")
            present = np.zeros(self.n, dtype=bool)
            for vals in vec.series.values():
                present |= ~np.isnan(vals)
            labels: Key = ()
            if isinstance(args[0], Selector):
                labels = series_key({k: v for k, op, v in args[0].matchers if op == "=" and k != "__name__"})
            return Vector({labels: np.where(present, np.nan, 1.0)})
        if f == "scalar":
            vec = self._vector_arg(args[0], "scalar()'s argument")
            if not vec.series:
                return np.full(self.n, np.nan)
            stack = np.vstack(list(vec.series.values()))
            single = (~np.isnan(stack)).sum(axis=0) == 1
            return np.where(single, np.nanmax(np.where(np.isnan(stack), -np.inf, stack), axis=0), np.nan)
        vec = self._vector_arg(args[0], f"{f}()'s argument")
        if f in ("clamp", "clamp_min", "clamp_max"):
            lo = self._scalar_arg(args[1], f"{f}()'s bound") if f in ("clamp", "clamp_min") else -np.inf
            hi = (self._scalar_arg(args[2], "clamp()'s max") if f == "clamp" else
                  self._scalar_arg(args[1], "clamp_max()'s bound") if f == "clamp_max" else np.inf)
            return Vector({_drop_name(k): np.minimum(np.maximum(v, lo), hi) for k, v in vec.series.items()})
        fn = {"abs": np.abs, "ceil": np.ceil, "floor": np.floor, "exp": np.exp, "ln": np.log, "log2": np.log2,
              "log10": np.log10, "sqrt": np.sqrt}[f]
        return Vector({_drop_name(k): fn(v) for k, v in vec.series.items()})

    # -- aggregation -------------------------------------------------------------------------

    def _aggregate(self, node: Agg) -> Vector:
        vec = self._vector_arg(node.arg, f"{node.op}()'s argument")
        groups: dict[Key, list[np.ndarray]] = {}
        for key, vals in vec.series.items():
            groups.setdefault(_project(key, node.grouping, node.labels), []).append(vals)
        phi = None
        if node.op == "quantile":
            q = self._scalar_arg(node.param, "quantile()'s parameter")
            phi = float(q[0]) if len(q) else float("nan")
        out: dict[Key, np.ndarray] = {}
        for key, arrays in groups.items():
            stack = np.vstack(arrays)
            present = ~np.isnan(stack)
            count = present.sum(axis=0)
            anyp = count > 0
            if node.op == "sum":
                vals = np.nansum(stack, axis=0)
            elif node.op == "count":
                vals = count.astype(float)
            elif node.op == "group":
                vals = np.ones(self.n)
            elif node.op == "avg":
                vals = np.nansum(stack, axis=0) / np.maximum(count, 1)
            elif node.op == "max":
                vals = np.max(np.where(present, stack, -np.inf), axis=0)
            elif node.op == "min":
                vals = np.min(np.where(present, stack, np.inf), axis=0)
            elif node.op in ("stddev", "stdvar"):
                mean = np.nansum(stack, axis=0) / np.maximum(count, 1)
                var = np.nansum((stack - mean) ** 2, axis=0) / np.maximum(count, 1)
                vals = np.sqrt(var) if node.op == "stddev" else var
            else:  # quantile
                vals = np.full(self.n, np.nan)
                if phi is not None and not math.isnan(phi):
                    if phi < 0 or phi > 1:
                        vals = np.full(self.n, -np.inf if phi < 0 else np.inf)
                    else:
                        cols = np.flatnonzero(anyp)
                        vals[cols] = np.nanquantile(stack[:, cols], phi, axis=0) if len(cols) else vals[cols]
            out[key] = np.where(anyp, vals, np.nan)
        return Vector(out)

    # -- binary operators --------------------------------------------------------------------

    def _binary(self, node: Binary) -> Any:
        op = node.op
        if op in ("and", "or", "unless"):
            return self._set_op(node)
        lhs, rhs = self._eval(node.lhs), self._eval(node.rhs)
        cmp = op in COMPARISONS
        if not isinstance(lhs, Vector) and not isinstance(rhs, Vector):
            if cmp and not node.bool_mod:
                raise PromQLError("comparisons between scalars must use the bool modifier", self.expr)
            return CMP[op](lhs, rhs).astype(float) if cmp else _ARITH[op](lhs, rhs)
        out: dict[Key, np.ndarray] = {}
        if isinstance(lhs, Vector) and isinstance(rhs, Vector):
            right: dict[Key, np.ndarray] = {}
            for key, vals in rhs.series.items():
                _put(right, _signature(key, node.matching, node.labels), vals, self.expr)
            seen: dict[Key, np.ndarray] = {}
            for key, lv in lhs.series.items():
                sig = _signature(key, node.matching, node.labels)
                rv = right.get(sig)
                if rv is None:
                    continue
                _put(seen, sig, lv, self.expr)  # raises on many-to-one without group_left
                if cmp:
                    ok = ~np.isnan(lv) & ~np.isnan(rv)
                    cond = CMP[op](lv, rv)
                    vals = np.where(ok, cond.astype(float), np.nan) if node.bool_mod else np.where(ok & cond, lv, np.nan)
                else:
                    vals = _ARITH[op](lv, rv)
                rkey = key
                if not cmp or node.bool_mod:
                    rkey = _drop_name(rkey)
                if node.matching == "on":
                    rkey = tuple(kv for kv in rkey if kv[0] in node.labels)
                elif node.matching == "ignoring":
                    rkey = tuple(kv for kv in rkey if kv[0] not in node.labels)
                _put(out, rkey, vals, self.expr)
            return Vector(out)
        vec, scalar, vec_left = (lhs, rhs, True) if isinstance(lhs, Vector) else (rhs, lhs, False)
        for key, vals in vec.series.items():
            a, b = (vals, scalar) if vec_left else (scalar, vals)
            if cmp:
                cond = CMP[op](a, b) & ~np.isnan(vals)
                if node.bool_mod:
                    _put(out, _drop_name(key), np.where(np.isnan(vals), np.nan, cond.astype(float)), self.expr)
                else:
                    _put(out, key, np.where(cond, vals, np.nan), self.expr)
            else:
                _put(out, _drop_name(key), _ARITH[op](a, b), self.expr)
        return Vector(out)

    def _set_op(self, node: Binary) -> Vector:
        lhs = self._vector_arg(node.lhs, f"the left side of {node.op}")
        rhs = self._vector_arg(node.rhs, f"the right side of {node.op}")

        def presence(vec: Vector) -> dict[Key, np.ndarray]:
            out: dict[Key, np.ndarray] = {}
            for key, vals in vec.series.items():
                sig = _signature(key, node.matching, node.labels)
                out[sig] = out.get(sig, np.zeros(self.n, dtype=bool)) | ~np.isnan(vals)
            return out

        right = presence(rhs)
        none = np.zeros(self.n, dtype=bool)
        out: dict[Key, np.ndarray] = {}
        if node.op in ("and", "unless"):
            for key, vals in lhs.series.items():
                there = right.get(_signature(key, node.matching, node.labels), none)
                keep = there if node.op == "and" else ~there
                out[key] = np.where(keep, vals, np.nan)
            return Vector(out)
        left = presence(lhs)
        out.update(lhs.series)
        for key, vals in rhs.series.items():
            there = left.get(_signature(key, node.matching, node.labels), none)
            _put(out, key, np.where(there, np.nan, vals), self.expr)
        return Vector(out)


def _range_function(func: str, t: np.ndarray, v: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                    steps: np.ndarray, range_ns: int) -> np.ndarray:
    """One range function of one series at every step; samples of step k are t[lo[k]:hi[k]]."""
    n = hi - lo
    last = np.maximum(hi - 1, 0)
    first = np.minimum(lo, len(t) - 1)
    if func in ("rate", "increase", "delta"):
        counter = func != "delta"
        result = v[last] - v[first]
        if counter:
            drops = np.where(v[1:] < v[:-1], v[:-1], 0.0)
            resets = np.r_[0.0, np.cumsum(drops)]
            result = result + resets[last] - resets[first]
        sampled = (t[last] - t[first]) / NS
        start_gap = (t[first] - (steps - range_ns)) / NS
        end_gap = (steps - t[last]) / NS
        avg = sampled / np.maximum(n - 1, 1)
        if counter:
            to_zero = sampled * (v[first] / result)
            start_gap = np.where((result > 0) & (v[first] >= 0) & (to_zero < start_gap), to_zero, start_gap)
        limit = avg * 1.1
        span = (sampled + np.where(start_gap < limit, start_gap, avg / 2)
                + np.where(end_gap < limit, end_gap, avg / 2))
        result = result * (span / sampled)
        if func == "rate":
            result = result / (range_ns / NS)
        return np.where((n >= 2) & (sampled > 0), result, np.nan)
    if func in ("irate", "idelta"):
        prev = np.maximum(hi - 2, 0)
        diff = v[last] - v[prev]
        if func == "irate":
            diff = np.where(v[last] < v[prev], v[last], diff)
            diff = diff / ((t[last] - t[prev]) / NS)
        return np.where(n >= 2, diff, np.nan)
    if func == "last_over_time":
        return np.where(n >= 1, v[last], np.nan)
    if func in ("sum_over_time", "count_over_time", "avg_over_time"):
        cs = np.r_[0.0, np.cumsum(v)]
        total = cs[hi] - cs[lo]
        vals = {"sum_over_time": total, "count_over_time": n.astype(float),
                "avg_over_time": total / np.maximum(n, 1)}[func]
        return np.where(n >= 1, vals, np.nan)
    reduce = np.max if func == "max_over_time" else np.min
    out = np.full(len(steps), np.nan)
    for k in np.flatnonzero(n >= 1):
        out[k] = reduce(v[lo[k]:hi[k]])
    return out


def _bucket_quantile(q: float, les: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Prometheus' bucketQuantile for every column of ``counts`` (buckets x steps, cumulative,
    sorted by upper bound ``les``, already made monotonic)."""
    k = counts.shape[1]
    if math.isnan(q):
        return np.full(k, np.nan)
    if q < 0 or q > 1:
        return np.full(k, -np.inf if q < 0 else np.inf)
    nb = len(les)
    if nb < 2 or not np.isposinf(les[-1]):
        return np.full(k, np.nan)
    observations = counts[-1]
    rank = q * observations
    hit = counts[:-1] >= rank
    b = np.where(hit.any(axis=0), hit.argmax(axis=0), nb - 1)
    cols = np.arange(k)
    prev = np.maximum(b - 1, 0)
    start = np.where(b > 0, les[prev], 0.0)
    prev_count = np.where(b > 0, counts[prev, cols], 0.0)
    end = les[np.minimum(b, nb - 1)]
    with np.errstate(divide="ignore", invalid="ignore"):
        val = start + (end - start) * ((rank - prev_count) / (counts[np.minimum(b, nb - 1), cols] - prev_count))
    val = np.where(b == nb - 1, les[nb - 2], val)
    val = np.where((b == 0) & (les[0] <= 0), les[0], val)
    return np.where((observations > 0) & ~np.isnan(observations), val, np.nan)


def _histogram_quantile(q: np.ndarray, vec: Vector) -> Vector:
    qs = np.unique(q[~np.isnan(q)]) if len(q) else q
    if len(qs) > 1:
        raise UnsupportedPromQL("histogram_quantile() with a quantile that changes over time")
    phi = float(qs[0]) if len(qs) else float("nan")
    groups: dict[Key, list[tuple[float, np.ndarray]]] = {}
    for key, vals in vec.series.items():
        labels = dict(key)
        le = labels.pop("le", None)
        labels.pop("__name__", None)
        if le is None:
            continue
        try:
            bound = float(le)
        except ValueError:
            continue
        groups.setdefault(series_key(labels), []).append((bound, vals))
    out: dict[Key, np.ndarray] = {}
    for key, buckets in groups.items():
        buckets.sort(key=lambda b: b[0])
        les = np.array([b[0] for b in buckets])
        counts = np.vstack([b[1] for b in buckets])
        uniq, first = np.unique(les, return_index=True)
        if len(uniq) < len(les):  # coalesce buckets with the same upper bound
            counts = np.add.reduceat(np.nan_to_num(counts), first, axis=0)
            les = uniq
        present = ~np.isnan(counts)
        res = np.full(counts.shape[1], np.nan)
        full = present.all(axis=0)
        if full.any():
            res[full] = _bucket_quantile(phi, les, np.maximum.accumulate(counts[:, full], axis=0))
        for j in np.flatnonzero(~full & present.any(axis=0)):
            m = present[:, j]
            res[j] = _bucket_quantile(phi, les[m], np.maximum.accumulate(counts[m, j])[:, None])[0]
        out[key] = res
    return Vector(out)


# ==== evaluation steps and results ===============================================================

def step_ns(step: Any) -> int:
    if isinstance(step, pd.Timedelta):
        seconds = step.total_seconds()
    else:
        try:
            seconds = parse_duration(step, "step")
        except RuleFileError as exc:
            raise ParameterError(str(exc)) from None
    if seconds <= 0:
        raise ParameterError(f"step must be positive, got {step!r}")
    return int(round(seconds * NS))


def replay_step_ns(window: Window, step: Any = DEFAULT_STEP_S) -> int:
    """The step a replay over ``window`` uses (ns): ``step``, or the smallest multiple of it
    that cuts the window into at most :data:`MAX_STEPS` steps."""
    s = step_ns(step)
    return s * max(1, -(-int(window.duration.value) // (s * MAX_STEPS)))


def evaluation_steps(window: Window, step: Any = DEFAULT_STEP_S) -> np.ndarray:
    """Evaluation times (int64 ns): multiples of the step within [window.start, window.end]
    (``step`` grown by :func:`replay_step_ns` when the window is long)."""
    s = replay_step_ns(window, step)
    first = -(-int(window.start.value) // s) * s
    last = int(window.end.value) // s * s
    return np.arange(first, last + 1, s, dtype=np.int64) if last >= first else np.array([], dtype=np.int64)


def window_of(metrics: pd.DataFrame) -> Window:
    if not len(metrics):
        raise ParameterError("no window given and the metrics table is empty")
    ts = schema.to_utc(metrics["timestamp"])
    return Window(ts.min(), ts.max() + pd.Timedelta(seconds=1))


def evaluate(expr: str, metrics: pd.DataFrame, window: Window | None = None, step: Any = DEFAULT_STEP_S,
             *, lookback_s: float = LOOKBACK_S) -> pd.DataFrame:
    """Evaluate a PromQL expression at every step, like a Prometheus range query; the result
    in the canonical ``metrics`` shape (metric = the series name, or the expression when the
    result has none; source "replay")."""
    node = parse_promql(expr)
    win = window or window_of(metrics)
    steps = evaluation_steps(win, step)
    value = Evaluator(SeriesStore(metrics), steps, expr, lookback_s).eval(node)
    vec = value if isinstance(value, Vector) else Vector({(): value})
    return _vector_frame(vec, steps, expr)


def condition_values(expr: str, metrics: pd.DataFrame, window: Window | None = None, step: Any = DEFAULT_STEP_S
                     ) -> tuple[pd.DataFrame, str | None, float]:
    """The value side of an alert condition over time (``lhs`` of ``lhs > 5``), its comparison
    and threshold: what a metric panel draws against the threshold line."""
    lhs, op, threshold = split_condition(parse_promql(expr))
    win = window or window_of(metrics)
    steps = evaluation_steps(win, step)
    value = Evaluator(SeriesStore(metrics), steps, expr, LOOKBACK_S).eval(lhs)
    vec = value if isinstance(value, Vector) else Vector({(): value})
    return _vector_frame(vec, steps, expr), op, threshold


def _vector_frame(vec: Vector, steps: np.ndarray, expr: str) -> pd.DataFrame:
    parts = []
    for key, vals in vec.series.items():
        ok = ~np.isnan(vals)
        if not ok.any():
            continue
        name = dict(key).get("__name__", expr)
        parts.append(pd.DataFrame({"metric": name, "labels": _labels_json(key),
                                   "timestamp": pd.to_datetime(steps[ok], utc=True), "value": vals[ok]}))
    if not parts:
        return schema.empty("metrics")
    df = pd.concat(parts, ignore_index=True).sort_values(["metric", "labels", "timestamp"], kind="stable")
    return schema.conform("metrics", df.assign(source="replay", source_object=expr))


