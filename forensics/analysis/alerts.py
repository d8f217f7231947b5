"""Alert replay: when each alert rule fired, or would have fired, judged from the evidence itself.

Two replays answer "would the runbook's alerts (or the platform's own rules) have paged,
and when?" for one incident window, and :func:`detection` puts them side by side with the
incident start to give a time to detect.

From metrics (:func:`replay`)
    Rule files in Prometheus format are evaluated over the canonical ``metrics`` table
    (Prometheus range queries, actuator snapshots, the simulator) the way Prometheus 2.x
    evaluates them: at every evaluation step (1 min by default) the expression gives a set
    of series; a series that satisfies the condition becomes *pending*, and *firing* once
    it has held for the rule's ``for:``; it resolves at the first evaluation it is absent
    (``keep_firing_for:`` honoured). Recording rules run first, in file order, and their
    series can be used by later rules. The PromQL understood is the subset rule files
    need (:data:`FUNCTIONS`, :data:`AGGREGATIONS`, arithmetic, comparison with and
    without ``bool``, ``and``/``or``/``unless``, ``on``/``ignoring``); ``offset``, ``@``,
    subqueries and ``group_left``/``group_right`` are reported as unsupported, never
    guessed. Semantics follow Prometheus 2.42 (Debian's): instant selectors look back
    5 minutes for the last sample, range selectors ``x[r]`` take the samples in the
    closed interval ``[t - r, t]``, ``rate``/``increase`` extrapolate like Prometheus'
    ``extrapolatedRate``, ``histogram_quantile`` interpolates like ``bucketQuantile``.
    One difference: an absent sample and a NaN value are the same here (both compare false).
    A rule whose metric is neither in the evidence nor in the live server's series list
    is flagged "can never fire: metric X does not exist".

From canonical tables (:func:`replay_evidence`)
    When no metrics were collected, the runbook's alerts are replayed from what the
    evidence holds: each rule's ``evidence`` annotation names a derivation in
    :data:`EVIDENCE_SERIES` (PENDING count from messages/status events, FAILED share from
    status events, lag from consumer_lag, 5xx from spans and logs, P95 from status
    events) that yields the series the rule's left-hand side would have had; the rule's
    own threshold, range and ``for:`` are applied to it with the same state machine.

Everything runs on numpy arrays over the evaluation steps (one array per series), so a
day at one-minute steps with a few hundred series takes well under a second.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forensics import schema
from forensics.analysis.detectors import Thresholds, to_ns
from forensics.errors import ForensicsError, ParameterError
from forensics.evidence import Evidence
from forensics.rules import Rule as Rule
from forensics.rules import RuleFileError, load_rules, parse_duration, renames
from forensics.scan import message_status
from forensics.scan import transitions as scan_transitions
from forensics.timeutil import Window

NS = 1_000_000_000
DEFAULT_STEP_S = 60.0
LOOKBACK_S = 300.0
"""Prometheus' default lookback for instant selectors (--query.lookback-delta)."""
DEFAULT_RANGE_S = 300.0
"""Range an evidence derivation uses when its rule has no range selector."""
STUCK_AFTER_S = Thresholds().stuck_pending_s
"""A PENDING message older than this is stuck (runbook Symptom 1), as the stuck_pending detector says."""
MAX_EPISODES_LISTED = 20

Key = tuple[tuple[str, str], ...]
"""A series' labels, sorted by name (``__name__`` included while the series has one)."""


class PromQLError(ForensicsError):
    """An expression that is not valid PromQL, or that fails to evaluate (e.g. many-to-many matching)."""

    def __init__(self, problem: str, expr: str | None = None, pos: int | None = None) -> None:
        self.problem, self.expr, self.pos = problem, expr, pos
        where = f" at character {pos + 1} of {expr!r}" if expr is not None and pos is not None else (
            f" in {expr!r}" if expr is not None else "")
        super().__init__(f"PromQL: {problem}{where}")


class UnsupportedPromQL(PromQLError):
    """Valid PromQL outside the subset the replay evaluates (offset, subqueries, topk, ...)."""


# ==== PromQL: lexer and parser ==================================================================

_TOKEN = re.compile(r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<duration>(?:\d+(?:ms|s|m|h|d|w|y))+)(?![\w.])
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
  | (?P<ident>[a-zA-Z_][a-zA-Z0-9_:]*|:[a-zA-Z_][a-zA-Z0-9_:]*)
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=(){}\[\],@:])
""", re.X)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b", "f": "\f",
            "v": "\v"}

COMPARISONS = ("==", "!=", ">", "<", ">=", "<=")
_FLIP = {">": "<", "<": ">", ">=": "<=", "<=": ">=", "==": "==", "!=": "!="}
_PRECEDENCE = {"or": 1, "and": 2, "unless": 2, "==": 3, "!=": 3, ">": 3, "<": 3, ">=": 3, "<=": 3,
               "+": 4, "-": 4, "*": 5, "/": 5, "%": 5, "atan2": 5}
_KEYWORDS = {"by", "without", "on", "ignoring", "bool", "offset", "group_left", "group_right", "and", "or",
             "unless", "atan2"}
AGGREGATIONS = ("sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "quantile")
_UNSUPPORTED_AGGREGATIONS = ("topk", "bottomk", "count_values", "limitk", "limit_ratio")
RANGE_FUNCTIONS = ("rate", "increase", "delta", "irate", "idelta", "avg_over_time", "min_over_time",
                   "max_over_time", "sum_over_time", "count_over_time", "last_over_time")
INSTANT_FUNCTIONS = ("histogram_quantile", "abs", "ceil", "floor", "exp", "ln", "log2", "log10", "sqrt",
                     "clamp", "clamp_min", "clamp_max", "absent", "scalar", "vector", "time")
FUNCTIONS = RANGE_FUNCTIONS + INSTANT_FUNCTIONS


@dataclass
class Num:
    value: float


@dataclass
class Str:
    value: str


@dataclass
class Selector:
    name: str | None
    matchers: list[tuple[str, str, str]]
    range_ns: int | None = None
    span: tuple[int, int] | None = None
    """Where the metric name sits in the expression text (for renaming)."""


@dataclass
class Call:
    func: str
    args: list[Any]


@dataclass
class Agg:
    op: str
    arg: Any
    grouping: str | None = None
    """"by", "without" or None (aggregate everything)."""
    labels: tuple[str, ...] = ()
    param: Any = None


@dataclass
class Neg:
    arg: Any


@dataclass
class Binary:
    op: str
    lhs: Any
    rhs: Any
    bool_mod: bool = False
    matching: str | None = None
    """"on", "ignoring" or None."""
    labels: tuple[str, ...] = ()


@dataclass
class _Tok:
    kind: str
    text: str
    pos: int


def _unquote(text: str) -> str:
    if text[0] == "`":
        return text[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), text[1:-1])


def _lex(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise PromQLError(f"unexpected character {text[pos]!r}", text, pos)
        if m.lastgroup != "space":
            toks.append(_Tok(m.lastgroup or "", m.group(), pos))
        pos = m.end()
    toks.append(_Tok("end", "", len(text)))
    return toks


class _Parser:
    """Recursive descent over PromQL's grammar, precedence climbing for binary operators."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _lex(text)
        self.i = 0

    def fail(self, problem: str, tok: _Tok | None = None, cls: type[PromQLError] = PromQLError) -> PromQLError:
        return cls(problem, self.text, (tok or self.peek()).pos)

    def peek(self, k: int = 0) -> _Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def advance(self) -> _Tok:
        tok = self.toks[self.i]
        self.i = min(self.i + 1, len(self.toks) - 1)
        return tok

    def at(self, kind: str, text: str | None = None, k: int = 0) -> bool:
        tok = self.peek(k)
        return tok.kind == kind and (text is None or tok.text.lower() == text)

    def expect(self, kind: str, text: str | None = None) -> _Tok:
        if not self.at(kind, text):
            tok = self.peek()
            got = "the end" if tok.kind == "end" else repr(tok.text)
            raise self.fail(f"expected {text or kind}, got {got}")
        return self.advance()

    def parse(self) -> Any:
        node = self.expr(1)
        if not self.at("end"):
            raise self.fail(f"unexpected {self.peek().text!r}")
        return node

    def _binary_op(self) -> str | None:
        tok = self.peek()
        if tok.kind == "op" and tok.text in _PRECEDENCE:
            return tok.text
        if tok.kind == "ident" and tok.text.lower() in ("and", "or", "unless", "atan2"):
            return tok.text.lower()
        return None

    def expr(self, min_prec: int) -> Any:
        lhs = self.unary()
        while (op := self._binary_op()) is not None and _PRECEDENCE[op] >= min_prec:
            optok = self.advance()
            if op == "atan2":
                raise self.fail("operator atan2", optok, UnsupportedPromQL)
            bool_mod = False
            if self.at("ident", "bool"):
                if op not in COMPARISONS:
                    raise self.fail("bool modifier is only allowed on comparison operators")
                self.advance()
                bool_mod = True
            matching, labels = None, ()
            if self.at("ident", "on") or self.at("ident", "ignoring"):
                matching = self.advance().text.lower()
                labels = self.label_list()
            if self.at("ident", "group_left") or self.at("ident", "group_right"):
                raise self.fail(f"{self.peek().text} (many-to-one matching)", cls=UnsupportedPromQL)
            rhs = self.expr(_PRECEDENCE[op] + 1)
            lhs = Binary(op, lhs, rhs, bool_mod, matching, labels)
        return lhs

    def unary(self) -> Any:
        if self.at("op", "-") or self.at("op", "+"):
            sign = self.advance().text
            arg = self.power()
            if sign == "+":
                return arg
            return Num(-arg.value) if isinstance(arg, Num) else Neg(arg)
        return self.power()

    def power(self) -> Any:
        base = self.postfix()
        if self.at("op", "^"):
            self.advance()
            return Binary("^", base, self.unary())  # right-associative
        return base

    def postfix(self) -> Any:
        node = self.primary()
        if self.at("op", "["):
            tok = self.advance()
            dur = self.expect("duration")
            if self.at("op", ":"):
                raise self.fail("subquery (expr[range:step])", tok, UnsupportedPromQL)
            self.expect("op", "]")
            if not isinstance(node, Selector) or node.range_ns is not None:
                raise self.fail("a range [..] can only follow a series selector", tok)
            node.range_ns = int(round(parse_duration(dur.text) * NS))
            if node.range_ns <= 0:
                raise self.fail("a range must be positive", dur)
        if self.at("ident", "offset"):
            raise self.fail("offset modifier", cls=UnsupportedPromQL)
        if self.at("op", "@"):
            raise self.fail("@ modifier", cls=UnsupportedPromQL)
        return node

    def label_list(self) -> tuple[str, ...]:
        self.expect("op", "(")
        labels: list[str] = []
        while not self.at("op", ")"):
            labels.append(self.expect("ident").text)
            if not self.at("op", ")"):
                self.expect("op", ",")
        self.advance()
        return tuple(labels)

    def matchers(self) -> list[tuple[str, str, str]]:
        self.expect("op", "{")
        out: list[tuple[str, str, str]] = []
        while not self.at("op", "}"):
            label = self.expect("ident").text
            op = self.peek()
            if op.kind != "op" or op.text not in ("=", "!=", "=~", "!~"):
                raise self.fail("expected a label matcher operator (=, !=, =~, !~)")
            self.advance()
            value = _unquote(self.expect("string").text)
            if op.text in ("=~", "!~"):
                try:
                    re.compile(value)
                except re.error as exc:
                    raise self.fail(f"invalid regular expression {value!r}: {exc}", op) from None
            out.append((label, op.text, value))
            if not self.at("op", "}"):
                self.expect("op", ",")
        self.advance()
        return out

    def primary(self) -> Any:
        tok = self.peek()
        if tok.kind == "number":
            self.advance()
            return Num(float(int(tok.text, 16)) if tok.text.lower().startswith("0x") else float(tok.text))
        if tok.kind == "string":
            self.advance()
            return Str(_unquote(tok.text))
        if tok.kind == "op" and tok.text == "(":
            self.advance()
            node = self.expr(1)
            self.expect("op", ")")
            return node
        if tok.kind == "op" and tok.text == "{":
            return Selector(None, self.matchers())
        if tok.kind == "ident":
            low = tok.text.lower()
            nxt = self.peek(1)
            if low in ("inf", "nan"):
                self.advance()
                return Num(float(low))
            call_like = nxt.kind == "op" and nxt.text == "("
            if low in AGGREGATIONS + _UNSUPPORTED_AGGREGATIONS and (
                    call_like or (nxt.kind == "ident" and nxt.text.lower() in ("by", "without"))):
                return self.aggregation()
            if call_like:
                return self.call()
            if low in _KEYWORDS:
                raise self.fail(f"unexpected keyword {tok.text!r}")
            self.advance()
            matchers = self.matchers() if self.at("op", "{") else []
            return Selector(tok.text, matchers, span=(tok.pos, tok.pos + len(tok.text)))
        if tok.kind == "end":
            raise self.fail("unexpected end of expression")
        raise self.fail(f"unexpected {tok.text!r}")

    def aggregation(self) -> Agg:
        tok = self.advance()
        op = tok.text.lower()
        if op in _UNSUPPORTED_AGGREGATIONS:
            raise self.fail(f"aggregation {op}", tok, UnsupportedPromQL)
        grouping, labels = None, ()
        if self.at("ident", "by") or self.at("ident", "without"):
            grouping = self.advance().text.lower()
            labels = self.label_list()
        self.expect("op", "(")
        param = None
        if op == "quantile":
            param = self.expr(1)
            self.expect("op", ",")
        arg = self.expr(1)
        self.expect("op", ")")
        if grouping is None and (self.at("ident", "by") or self.at("ident", "without")):
            grouping = self.advance().text.lower()
            labels = self.label_list()
        return Agg(op, arg, grouping, labels, param)

    def call(self) -> Call:
        tok = self.advance()
        name = tok.text
        if name not in FUNCTIONS:
            raise self.fail(f"function {name}()", tok, UnsupportedPromQL)
        self.expect("op", "(")
        args: list[Any] = []
        while not self.at("op", ")"):
            args.append(self.expr(1))
            if not self.at("op", ")"):
                self.expect("op", ",")
        self.advance()
        arity = {"histogram_quantile": 2, "clamp": 3, "clamp_min": 2, "clamp_max": 2, "vector": 1, "time": 0}
        want = arity.get(name, 1)
        if len(args) != want:
            raise self.fail(f"{name}() takes {want} argument(s), got {len(args)}", tok)
        if name in RANGE_FUNCTIONS and not (isinstance(args[0], Selector) and args[0].range_ns):
            raise self.fail(f"{name}() needs a range vector such as metric[5m]", tok)
        return Call(name, args)


def parse_promql(expr: str) -> Any:
    """The expression's syntax tree; PromQLError (syntax) or UnsupportedPromQL (outside the subset)."""
    return _Parser(str(expr)).parse()


def walk(node: Any) -> Iterator[Any]:
    """Every node of a syntax tree, parents first."""
    yield node
    children: list[Any] = []
    if isinstance(node, Call):
        children = node.args
    elif isinstance(node, Agg):
        children = [node.param, node.arg]
    elif isinstance(node, Neg):
        children = [node.arg]
    elif isinstance(node, Binary):
        children = [node.lhs, node.rhs]
    for child in children:
        if child is not None:
            yield from walk(child)


def _selector_name(sel: Selector) -> str | None:
    if sel.name:
        return sel.name
    return next((v for label, op, v in sel.matchers if label == "__name__" and op == "="), None)


def referenced_metrics(expr: str | Any) -> list[str]:
    """Metric names an expression selects, in order of appearance."""
    node = parse_promql(expr) if isinstance(expr, str) else expr
    names: list[str] = []
    for n in walk(node):
        if isinstance(n, Selector) and (name := _selector_name(n)) and name not in names:
            names.append(name)
    return names


# ==== series store ==============================================================================

@dataclass
class _Series:
    key: Key
    labels: dict[str, str]
    t: np.ndarray
    v: np.ndarray


def _key(labels: dict[str, str]) -> Key:
    return tuple(sorted((str(k), str(v)) for k, v in labels.items() if v is not None and v != ""))


def _labels_json(key: Key) -> str:
    return json.dumps({k: v for k, v in key if k != "__name__"}, sort_keys=True, separators=(",", ":"))


def _parse_labels(text: Any) -> dict[str, str]:
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
            self.add(name, _parse_labels(labels_text), t[keep], v[keep])

    def add(self, name: str, labels: dict[str, str], t: np.ndarray, v: np.ndarray) -> None:
        full = {**{k: v for k, v in labels.items() if k != "__name__"}, "__name__": name}
        self.by_name.setdefault(name, []).append(_Series(_key(full), full, np.asarray(t, np.int64),
                                                         np.asarray(v, np.float64)))

    def names(self) -> set[str]:
        return set(self.by_name)

    def select(self, sel: Selector) -> list[_Series]:
        name = _selector_name(sel)
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
_CMP: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "==": np.equal, "!=": np.not_equal, ">": np.greater, "<": np.less, ">=": np.greater_equal, "<=": np.less_equal,
}


class _Evaluator:
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
                labels = _key({k: v for k, op, v in args[0].matchers if op == "=" and k != "__name__"})
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
            return _CMP[op](lhs, rhs).astype(float) if cmp else _ARITH[op](lhs, rhs)
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
                    cond = _CMP[op](lv, rv)
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
                cond = _CMP[op](a, b) & ~np.isnan(vals)
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
        groups.setdefault(_key(labels), []).append((bound, vals))
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

def _step_ns(step: Any) -> int:
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


def evaluation_steps(window: Window, step: Any = DEFAULT_STEP_S) -> np.ndarray:
    """Evaluation times (int64 ns): multiples of ``step`` within [window.start, window.end]."""
    s = _step_ns(step)
    first = -(-int(window.start.value) // s) * s
    last = int(window.end.value) // s * s
    return np.arange(first, last + 1, s, dtype=np.int64) if last >= first else np.array([], dtype=np.int64)


def _window_of(metrics: pd.DataFrame) -> Window:
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
    win = window or _window_of(metrics)
    steps = evaluation_steps(win, step)
    value = _Evaluator(SeriesStore(metrics), steps, expr, lookback_s).eval(node)
    vec = value if isinstance(value, Vector) else Vector({(): value})
    return _vector_frame(vec, steps, expr)


def condition_values(expr: str, metrics: pd.DataFrame, window: Window | None = None, step: Any = DEFAULT_STEP_S
                     ) -> tuple[pd.DataFrame, str | None, float]:
    """The value side of an alert condition over time (``lhs`` of ``lhs > 5``), its comparison
    and threshold: what a metric panel draws against the threshold line."""
    lhs, op, threshold = _split_condition(parse_promql(expr))
    win = window or _window_of(metrics)
    steps = evaluation_steps(win, step)
    value = _Evaluator(SeriesStore(metrics), steps, expr, LOOKBACK_S).eval(lhs)
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


# ==== alert state machine =======================================================================

@dataclass
class Episode:
    """One stretch during which one series of a rule was pending and then (maybe) firing."""

    labels: dict[str, str]
    active_at: pd.Timestamp
    fired_at: pd.Timestamp | None
    resolved_at: pd.Timestamp | None
    value_at_fire: float | None


def _episodes(cond: np.ndarray, values: np.ndarray, steps: np.ndarray, for_ns: int, keep_ns: int,
              labels: dict[str, str]) -> list[Episode]:
    """Prometheus' alerting-rule state machine over one series' condition at every step.

    A new true step makes the alert pending (active_at); it fires at the first step at which
    it has been active for ``for_ns``; it resolves at the first step the condition is false
    (or, with keep_firing_for, once it has been false that long). A pending alert whose
    condition goes away is dropped: only firing episodes are returned.
    """
    out: list[Episode] = []
    state, active, fired, keep_since = None, 0, 0, None

    def ts(j: int) -> pd.Timestamp:
        return pd.Timestamp(int(steps[j]), unit="ns", tz="UTC")

    for j in range(len(steps)):
        if cond[j]:
            keep_since = None
            if state is None:
                state, active = "pending", j
            if state == "pending" and steps[j] - steps[active] >= for_ns:
                state, fired = "firing", j
            continue
        if state == "firing":
            if keep_ns > 0:
                keep_since = j if keep_since is None else keep_since
                if steps[j] - steps[keep_since] < keep_ns:
                    continue
            out.append(Episode(labels, ts(active), ts(fired), ts(j), float(values[fired])))
        state, keep_since = None, None
    if state == "firing":
        out.append(Episode(labels, ts(active), ts(fired), None, float(values[fired])))
    return out


@dataclass
class RuleReplay:
    """The outcome of replaying one rule from one source over the window."""

    rule: Rule
    source: str
    """"metrics" or "evidence"."""
    episodes: list[Episode] = field(default_factory=list)
    op: str | None = None
    threshold: float = float("nan")
    peak_value: float | None = None
    peak_at: pd.Timestamp | None = None
    series: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def first(self) -> Episode | None:
        fired = [e for e in self.episodes if e.fired_at is not None]
        return min(fired, key=lambda e: e.fired_at) if fired else None

    def row(self) -> dict[str, Any]:
        first = self.first
        episodes = sorted(self.episodes, key=lambda e: e.fired_at)
        listed = [{"labels": e.labels, "active_at": _iso(e.active_at), "fired_at": _iso(e.fired_at),
                   "resolved_at": _iso(e.resolved_at)} for e in episodes[:MAX_EPISODES_LISTED]]
        notes = list(self.notes)
        if first is not None and first.resolved_at is None:
            notes.append("still firing at the end of the window")
        return {
            "rule": self.rule.name, "group": self.rule.group, "source": self.source, "expr": self.rule.expr,
            "for_s": self.rule.for_s, "op": self.op, "threshold": self.threshold,
            "would_fire_at": first.fired_at if first else pd.NaT,
            "resolved_at": first.resolved_at if first and first.resolved_at is not None else pd.NaT,
            "value_at_fire": first.value_at_fire if first else np.nan,
            "peak_value": self.peak_value if self.peak_value is not None else np.nan,
            "peak_at": self.peak_at if self.peak_at is not None else pd.NaT,
            "labels": json.dumps(first.labels, sort_keys=True) if first else None,
            "firing_series": len({json.dumps(e.labels, sort_keys=True) for e in self.episodes}),
            "episodes": json.dumps(listed), "note": "; ".join(notes) or None,
        }


def _iso(ts: pd.Timestamp | None) -> str | None:
    return None if ts is None or pd.isna(ts) else ts.isoformat().replace("+00:00", "Z")


RESULT_COLUMNS: dict[str, str] = {
    "rule": schema.STR, "group": schema.STR, "source": schema.STR, "expr": schema.STR, "for_s": schema.FLOAT,
    "op": schema.STR, "threshold": schema.FLOAT, "would_fire_at": schema.UTC_TS, "resolved_at": schema.UTC_TS,
    "value_at_fire": schema.FLOAT, "peak_value": schema.FLOAT, "peak_at": schema.UTC_TS, "labels": schema.STR,
    "firing_series": schema.INT, "episodes": schema.STR, "note": schema.STR,
}
"""Columns of :func:`replay` / :func:`replay_evidence`; :func:`detection` adds fired_at and time_to_detect_s."""


def _result_frame(replays: list[RuleReplay], columns: dict[str, str] = RESULT_COLUMNS) -> pd.DataFrame:
    rows = pd.DataFrame([r.row() for r in replays], columns=list(RESULT_COLUMNS))
    out = {}
    for name, dtype in columns.items():
        s = rows[name] if name in rows else pd.Series([None] * len(rows))
        out[name] = schema.to_utc(s) if dtype == schema.UTC_TS else s.astype(dtype)
    return pd.DataFrame(out)


def _split_condition(node: Any) -> tuple[Any, str | None, float]:
    """``lhs > 5`` -> (lhs, ">", 5.0): the value side, the comparison and the threshold;
    expressions of another shape are returned whole (condition = "has a result")."""
    if isinstance(node, Binary) and node.op in COMPARISONS and not node.bool_mod and node.matching is None:
        if isinstance(node.rhs, Num) and not isinstance(node.lhs, Num):
            return node.lhs, node.op, node.rhs.value
        if isinstance(node.lhs, Num) and not isinstance(node.rhs, Num):
            return node.rhs, _FLIP[node.op], node.lhs.value
    return node, None, float("nan")


def _judge(replay: RuleReplay, vec: Vector, steps: np.ndarray) -> RuleReplay:
    """Apply the rule's comparison and state machine to the value series ``vec``."""
    rule = replay.rule
    for_ns, keep_ns = int(rule.for_s * NS), int(rule.keep_firing_for_s * NS)
    want_low = replay.op in ("<", "<=")
    best: tuple[float, int] | None = None
    for key, vals in vec.series.items():
        ok = ~np.isnan(vals)
        if not ok.any():
            continue
        replay.series += 1
        cond = ok & (_CMP[replay.op](np.where(ok, vals, 0.0), replay.threshold) if replay.op else ok)
        idx = np.flatnonzero(ok)
        j = int(idx[np.argmin(vals[idx])] if want_low else idx[np.argmax(vals[idx])])
        if best is None or (vals[j] < best[0] if want_low else vals[j] > best[0]):
            best = (float(vals[j]), j)
        labels = {k: v for k, v in key if k != "__name__"}
        replay.episodes.extend(_episodes(cond, vals, steps, for_ns, keep_ns, labels))
    if best is not None:
        replay.peak_value = best[0]
        replay.peak_at = pd.Timestamp(int(steps[best[1]]), unit="ns", tz="UTC")
    return replay


# ==== replay from metrics =======================================================================

def _as_rules(rules: Iterable[Rule | str | Path] | Rule | str | Path | None) -> list[Rule]:
    if rules is None:
        return load_rules()
    if isinstance(rules, Rule):
        return [rules]
    if isinstance(rules, str | Path):
        return load_rules(rules)
    out: list[Rule] = []
    for item in rules:
        out.extend([item] if isinstance(item, Rule) else load_rules(item))
    return out


def _missing_metric_note(missing: list[str], available: set[str], checked: str, fatal: bool) -> str:
    parts = []
    for name in missing:
        close = difflib.get_close_matches(name, sorted(available), n=1, cutoff=0.6)
        parts.append(f"metric {name} does not exist" + (f" (closest: {close[0]})" if close else ""))
    head = "can never fire: " if fatal else ""
    return f"{head}{'; '.join(parts)} ({checked})"


def replay(rules: Iterable[Rule | str | Path] | Rule | str | Path | None, metrics: pd.DataFrame,
           window: Window | None = None, *, step: Any = DEFAULT_STEP_S, known_metrics: Iterable[str] | None = None,
           lookback_s: float = LOOKBACK_S) -> pd.DataFrame:
    """Replay rule files over a ``metrics`` table: one row per alerting rule (:data:`RESULT_COLUMNS`).

    rules: Rule objects, rule-file paths, shipped file names, or None for the runbook's
    alerts. window: evaluation window (default: the metrics' time span). step: evaluation
    interval ("1m", seconds or a Timedelta). known_metrics: metric names a live Prometheus
    has (its series list); a metric in neither the table nor this list makes the rule
    "can never fire". A rule whose expression is outside the supported subset, or fails to
    evaluate, gets a note and no firing time.
    """
    return _result_frame(_replay_metrics(_as_rules(rules), metrics, window, step, known_metrics, lookback_s))


def _replay_metrics(rules: list[Rule], metrics: pd.DataFrame, window: Window | None, step: Any,
                    known_metrics: Iterable[str] | None, lookback_s: float) -> list[RuleReplay]:
    win = window or _window_of(metrics)
    steps = evaluation_steps(win, step)
    store = SeriesStore(metrics)
    known = set(known_metrics or ())
    checked = ("neither in the evidence's metrics nor in Prometheus' series list" if known
               else "not in the evidence's metrics")
    out: list[RuleReplay] = []
    for rule in rules:
        replay_ = RuleReplay(rule, "metrics")
        try:
            node = parse_promql(rule.expr)
            available = store.names() | known
            names = referenced_metrics(node)
            # A metric only under absent() is expected to be missing; one beside "or" may be.
            absent_only = {n for c in walk(node) if isinstance(c, Call) and c.func == "absent"
                           for n in referenced_metrics(c)}
            has_or = any(isinstance(c, Binary) and c.op in ("or", "unless") for c in walk(node))
            missing = [n for n in names if n not in available and n not in absent_only]
            if missing:
                replay_.notes.append(_missing_metric_note(missing, available, checked, fatal=not has_or))
                if not has_or and rule.kind == "alert":
                    _, replay_.op, replay_.threshold = _split_condition(node)
                    out.append(replay_)
                    continue
            ev = _Evaluator(store, steps, rule.expr, lookback_s)
            if rule.kind == "record":
                value = ev.eval(node)
                vec = value if isinstance(value, Vector) else Vector({(): value})
                for key, vals in vec.series.items():
                    ok = ~np.isnan(vals)
                    store.add(rule.name, {**dict(key), **rule.labels}, steps[ok], vals[ok])
                continue
            lhs, replay_.op, replay_.threshold = _split_condition(node)
            value = ev.eval(lhs)
            vec = value if isinstance(value, Vector) else Vector({(): value})
            _judge(replay_, vec, steps)
            if not replay_.series:
                replay_.notes.append("no result at any step" + (" (its series have no samples in the window)"
                                                                if not missing else ""))
        except UnsupportedPromQL as exc:
            replay_.notes.append(f"not evaluated: unsupported PromQL: {exc.problem}")
        except PromQLError as exc:
            replay_.notes.append(f"not evaluated: {exc}")
        if rule.kind == "alert":
            out.append(replay_)
    return out


# ==== replay from canonical tables ==============================================================

EvidenceFn = Callable[[Evidence, np.ndarray, int], tuple[Vector, str]]
EVIDENCE_SERIES: dict[str, EvidenceFn] = {}
"""Derivation name (a rule's ``evidence`` annotation) -> fn(evidence, steps, range_ns) ->
(value series, note on how they were derived)."""


def evidence_series(name: str) -> Callable[[EvidenceFn], EvidenceFn]:
    def register(fn: EvidenceFn) -> EvidenceFn:
        EVIDENCE_SERIES[name] = fn
        return fn
    return register


def _ns(values: pd.Series) -> np.ndarray:
    return to_ns(values)


_NAT = np.iinfo(np.int64).min
_NEVER = np.iinfo(np.int64).max


@dataclass
class _MessageIndex:
    """Per message code (:func:`forensics.scan.message_status`): creation and first exit from PENDING."""

    created: np.ndarray
    """Creation ns: messages.created_at, else the message's first status event; NAT when unknown."""
    left: np.ndarray
    """First status event to another status, else messages.updated_at when the document is not
    PENDING; _NEVER when it never left."""
    transitions: dict[str, pd.DataFrame]
    """Status -> its status events (code, channel, at), fetched on first use."""


_FINISHED = ("DELIVERED", "FAILED")
_INDEX_CACHE: list[tuple[weakref.ref, weakref.ref, _MessageIndex]] = []
"""The index of the last (evidence, messages) pair, dropped with the messages frame."""


def _message_index(ev: Evidence) -> _MessageIndex:
    """Built once per evidence and messages frame: every derivation reads it."""
    m = ev.table("messages")
    if _INDEX_CACHE and _INDEX_CACHE[0][0]() is ev and _INDEX_CACHE[0][1]() is m:
        return _INDEX_CACHE[0][2]
    h = message_status(ev, m["message_id"])
    n = len(m)
    created = h.first_at.copy()
    left = np.where(h.left_pending_at == _NAT, _NEVER, h.left_pending_at)
    if n:
        made = _ns(m["created_at"])
        created[:n] = np.where(made != _NAT, made, created[:n])  # messages.created_at wins
        gone = (m["status"].notna() & (m["status"] != "PENDING")).to_numpy(dtype=bool, na_value=False)
        upd = _ns(m["updated_at"])
        fill = gone & (upd != _NAT) & (left[:n] == _NEVER)
        left[:n][fill] = upd[fill]
        created[h.repeated] = _NAT  # the first document of an id counts
        left[h.repeated] = _NEVER
    index = _MessageIndex(created, left, {})
    _INDEX_CACHE[:] = [(weakref.ref(ev), weakref.ref(m), index)]
    weakref.finalize(m, _INDEX_CACHE.clear)
    return index


def transitions(ev: Evidence, status: str) -> pd.DataFrame:
    """Every status event to ``status``: code (message), channel, at (ns), sorted by time."""
    index = _message_index(ev)
    if status not in index.transitions:
        wanted = _FINISHED if status in _FINISHED else (status,)  # one scan answers both
        rows = scan_transitions(ev, ev.table("messages")["message_id"], wanted)
        for s in wanted:
            index.transitions[s] = rows.loc[rows["status"] == s, ["code", "channel", "at"]].reset_index(drop=True)
    return index.transitions[status]


def delivery_observations(ev: Evidence) -> pd.DataFrame:
    """One row per DELIVERED event: channel, at (ns) and latency_s = at - the message's creation.

    What a delivery-time histogram observes: every DELIVERED event (duplicates included),
    at the time of the event.
    """
    d = transitions(ev, "DELIVERED").copy()
    start = _message_index(ev).created[d["code"].to_numpy()]
    d["latency_s"] = np.where(start != _NAT, (d["at"].to_numpy() - start) / NS, np.nan)
    return d[np.isfinite(d["latency_s"]) & (d["latency_s"] >= 0)].reset_index(drop=True)


def stuck_intervals(ev: Evidence, stuck_after_s: float = STUCK_AFTER_S) -> tuple[np.ndarray, np.ndarray]:
    """Per message, the time it counts as stuck in PENDING: [created + stuck_after_s, left PENDING).

    Left PENDING = its first status event to another status; without one, messages.updated_at
    when the document's status is not PENDING, else never. Returns (starts, ends) in ns,
    each sorted, for the messages that were stuck at all.
    """
    idx = _message_index(ev)
    known = idx.created != _NAT
    start = idx.created[known] + int(stuck_after_s * NS)
    end = idx.left[known]
    stuck = end > start
    return np.sort(start[stuck]), np.sort(end[stuck])


def stuck_counts(starts: np.ndarray, ends: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Messages stuck at each instant of ``at``: started before it (strictly), not yet ended."""
    return (np.searchsorted(starts, at, side="left") - np.searchsorted(ends, at, side="right")).astype(float)


def http_errors(ev: Evidence, min_status: int = 500) -> dict[str, pd.DataFrame]:
    """HTTP answers with status >= ``min_status`` seen in spans and in logs: per origin a frame
    of service, status, at (ns). The same call can show in both, so counts take the larger."""
    out: dict[str, pd.DataFrame] = {}
    spans = ev.table("spans")
    if len(spans):
        s = spans[spans["http_status_code"].fillna(0) >= min_status]
        out["spans"] = pd.DataFrame({"service": s["service"].fillna("unknown").astype(str).to_numpy(),
                                     "status": s["http_status_code"].astype("int64").astype(str).to_numpy(),
                                     "at": _ns(s["start"])})
    logs = ev.table("log_events")
    if len(logs):
        lg = logs[logs["http_status"].fillna(0) >= min_status]
        out["logs"] = pd.DataFrame({"service": lg["service"].fillna("unknown").astype(str).to_numpy(),
                                    "status": lg["http_status"].astype("int64").astype(str).to_numpy(),
                                    "at": _ns(lg["timestamp"])})
    return {k: v[v["at"] != _NAT] for k, v in out.items() if len(v)}


def http_error_counts(errors: dict[str, pd.DataFrame], lo: np.ndarray, hi: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
    """Per (service, status): errors in (lo[k], hi[k]] for every k, the larger of spans' and logs' counts."""
    counts: dict[tuple[str, str], np.ndarray] = {}
    for frame in errors.values():
        for (service, status), g in frame.groupby(["service", "status"], sort=True):
            at = np.sort(g["at"].to_numpy())
            c = (np.searchsorted(at, hi, side="right") - np.searchsorted(at, lo, side="right")).astype(float)
            key = (str(service), str(status))
            counts[key] = np.maximum(counts[key], c) if key in counts else c
    return counts


def _count_in(at: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return (np.searchsorted(at, hi, side="right") - np.searchsorted(at, lo, side="right")).astype(float)


@evidence_series("stuck_pending")
def _stuck_pending(ev: Evidence, steps: np.ndarray, range_ns: int) -> tuple[Vector, str]:
    """Messages stuck in PENDING (older than 30 s) at each step, from messages and status events."""
    if not (_message_index(ev).created != _NAT).any():
        return Vector(), "no messages or status events"
    starts, ends = stuck_intervals(ev)
    return (Vector({(): stuck_counts(starts, ends, steps)}),
            f"PENDING for more than {STUCK_AFTER_S:g} s at each step, from messages/status_events")


@evidence_series("failed_rate")
def _failed_rate(ev: Evidence, steps: np.ndarray, range_ns: int) -> tuple[Vector, str]:
    """FAILED / (FAILED + DELIVERED) among the status events of the rule's range before each step."""
    failed, delivered = transitions(ev, "FAILED")["at"].to_numpy(), transitions(ev, "DELIVERED")["at"].to_numpy()
    if not len(failed) and not len(delivered):
        return Vector(), "no DELIVERED or FAILED status events"
    f = _count_in(failed, steps - range_ns, steps)
    d = _count_in(delivered, steps - range_ns, steps)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(f + d > 0, f / (f + d), np.nan)
    return (Vector({(): share}),
            f"FAILED share of the messages that finished in the {range_ns / NS / 60:g} min before each step, "
            "from status_events")


@evidence_series("consumer_lag")
def _consumer_lag(ev: Evidence, steps: np.ndarray, range_ns: int) -> tuple[Vector, str]:
    """Total lag per consumer group and topic, the last sample at most 5 min before each step."""
    lag = ev.table("consumer_lag")
    if not len(lag):
        return Vector(), "no consumer_lag samples"
    df = pd.DataFrame({"group": lag["group"].astype(str).to_numpy(), "topic": lag["topic"].astype(str).to_numpy(),
                       "at": _ns(lag["sampled_at"]), "lag": lag["lag"].fillna(0).astype("float64").to_numpy()})
    total = df.groupby(["group", "topic", "at"], sort=True)["lag"].sum().reset_index()
    out: dict[Key, np.ndarray] = {}
    lookback = int(LOOKBACK_S * NS)
    for (group, topic), g in total.groupby(["group", "topic"], sort=True):
        t, v = g["at"].to_numpy(), g["lag"].to_numpy()
        idx = np.searchsorted(t, steps, side="right") - 1
        j = np.maximum(idx, 0)
        vals = np.where((idx >= 0) & (steps - t[j] <= lookback), v[j], np.nan)
        if not np.isnan(vals).all():
            out[_key({"group": str(group), "topic": str(topic)})] = vals
    samples = total["at"].nunique()
    return Vector(out), (f"summed over partitions per group and topic from {samples} consumer_lag sample time(s)"
                         + ("; a single snapshot shows lag only near the moment it was taken" if samples < 2 else ""))


@evidence_series("connector_5xx")
def _connector_5xx(ev: Evidence, steps: np.ndarray, range_ns: int) -> tuple[Vector, str]:
    """HTTP 5xx answers per service in the rule's range before each step, from spans and logs."""
    errors = http_errors(ev, 500)
    if not errors:
        has = [t for t in ("spans", "log_events") if ev.has(t)]
        return Vector(), ("no 5xx in " + " or ".join(has)) if has else "no spans or logs"
    counts = http_error_counts(errors, steps - range_ns, steps)
    per_service: dict[Key, np.ndarray] = {}
    for (service, _status), c in counts.items():
        key = _key({"service": service})
        per_service[key] = per_service.get(key, 0) + c
    return (Vector(per_service),
            f"from {' and '.join(sorted(errors))} (the larger count per service and status); spans and logs may be "
            "sampled, so counts are a lower bound")


@evidence_series("delivery_p95")
def _delivery_p95(ev: Evidence, steps: np.ndarray, range_ns: int) -> tuple[Vector, str]:
    """Exact 95th percentile of delivery latency among the DELIVERED events of the rule's range."""
    obs = delivery_observations(ev)
    if not len(obs):
        return Vector(), "no DELIVERED status events with a known creation time"
    at, lat = obs["at"].to_numpy(), obs["latency_s"].to_numpy()
    lo = np.searchsorted(at, steps - range_ns, side="right")
    hi = np.searchsorted(at, steps, side="right")
    vals = np.full(len(steps), np.nan)
    for k in np.flatnonzero(hi > lo):
        vals[k] = np.quantile(lat[lo[k]:hi[k]], 0.95)
    return (Vector({(): vals}),
            f"exact P95 of created -> DELIVERED over the {range_ns / NS / 60:g} min before each step "
            "(a histogram interpolates between buckets)")


def replay_evidence(rules: Iterable[Rule | str | Path] | Rule | str | Path | None, evidence: Evidence, *,
                    step: Any = DEFAULT_STEP_S) -> pd.DataFrame:
    """Replay the alerting rules that carry an ``evidence`` annotation from the canonical tables
    (one row per such rule, :data:`RESULT_COLUMNS`, source "evidence")."""
    return _result_frame(_replay_evidence(_as_rules(rules), evidence, step))


def _replay_evidence(rules: list[Rule], evidence: Evidence, step: Any) -> list[RuleReplay]:
    steps = evaluation_steps(evidence.window, step)
    out = []
    for rule in rules:
        if rule.kind != "alert" or not rule.evidence:
            continue
        replay_ = RuleReplay(rule, "evidence")
        out.append(replay_)
        fn = EVIDENCE_SERIES.get(rule.evidence)
        if fn is None:
            replay_.notes.append(f"not evaluated: unknown evidence derivation {rule.evidence!r}; known: "
                                 f"{', '.join(EVIDENCE_SERIES)}")
            continue
        try:
            node = parse_promql(rule.expr)
        except PromQLError as exc:
            replay_.notes.append(f"not evaluated: {exc}")
            continue
        _, replay_.op, replay_.threshold = _split_condition(node)
        ranges = [n.range_ns for n in walk(node) if isinstance(n, Selector) and n.range_ns]
        vec, how = fn(evidence, steps, int(ranges[0]) if ranges else int(DEFAULT_RANGE_S * NS))
        replay_.notes.append(how)
        _judge(replay_, vec, steps)
    return out


# ==== profiles, collected rules, detection ======================================================

def translate(rules: Iterable[Rule], profile: Any, from_profile: Any = "runbook") -> list[Rule]:
    """Rules written in ``from_profile``'s metric names, renamed to ``profile``'s (forensics/rules/metrics.yaml).

    Only selector names are renamed; a role the target profile does not export keeps its
    old name, so the replay will say the metric does not exist there.
    """
    mapping = renames(profile, from_profile)
    out = []
    for rule in rules:
        try:
            node = parse_promql(rule.expr)
        except PromQLError:
            out.append(rule)
            continue
        spans = sorted((n.span for n in walk(node) if isinstance(n, Selector) and n.span and n.name in mapping),
                       reverse=True)
        expr = rule.expr
        for a, b in spans:
            expr = expr[:a] + mapping[expr[a:b]] + expr[b:]
        out.append(replace(rule, expr=expr) if expr != rule.expr else rule)
    return out


def collected_rules(evidence: Evidence) -> list[Rule]:
    """The rules a live Prometheus had loaded (``/api/v1/rules``, kept by the prometheus source)."""
    desc = evidence.sources.get("prometheus") or {}
    origin = f"prometheus {desc.get('url', '')} /api/v1/rules".strip()
    out = []
    for r in desc.get("rules") or []:
        if not isinstance(r, dict) or not r.get("name") or not r.get("query"):
            continue
        out.append(Rule(name=str(r["name"]), expr=str(r["query"]),
                        kind="alert" if r.get("type") == "alerting" else "record",
                        for_s=float(r.get("duration") or 0), keep_firing_for_s=float(r.get("keepFiringFor") or 0),
                        labels={str(k): str(v) for k, v in (r.get("labels") or {}).items()},
                        annotations={str(k): str(v) for k, v in (r.get("annotations") or {}).items()},
                        group=str(r.get("group") or ""), origin=origin))
    return out


def incident_start(evidence: Evidence, findings: pd.DataFrame | None = None) -> tuple[pd.Timestamp | None, str]:
    """When the incident began, and on what basis: the scenario's start when the evidence is
    simulated, else the earliest finding, else unknown."""
    started = (evidence.scenario or {}).get("started_at")
    if started:
        return pd.Timestamp(started).tz_convert("UTC"), "scenario started_at"
    if findings is not None and len(findings) and findings["first_seen"].notna().any():
        return schema.to_utc(findings["first_seen"]).min(), "first finding"
    return None, "unknown"


def fired_alerts(metrics: pd.DataFrame) -> dict[str, pd.Timestamp]:
    """Alert name -> the first time Prometheus had it firing, from its ``ALERTS`` series."""
    if not len(metrics):
        return {}
    a = metrics[(metrics["metric"] == "ALERTS") & metrics["value"].fillna(0).gt(0)]
    out: dict[str, pd.Timestamp] = {}
    for labels, ts in zip(a["labels"], schema.to_utc(a["timestamp"]), strict=True):
        lab = _parse_labels(labels)
        name = lab.get("alertname")
        if name and lab.get("alertstate") == "firing" and (name not in out or ts < out[name]):
            out[name] = ts
    return out


DETECTION_COLUMNS: dict[str, str] = {**RESULT_COLUMNS, "fired_at": schema.UTC_TS, "time_to_detect_s": schema.FLOAT}


def detection(evidence: Evidence, rules: Iterable[Rule | str | Path] | Rule | str | Path | None = None, *,
              step: Any = DEFAULT_STEP_S, findings: pd.DataFrame | None = None,
              known_metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """When each alert fired or would have fired, and the time to detect: the report's "Detection".

    rules: default the runbook's recommended alerts renamed for the evidence's profile plus
    the rules the prometheus source collected from the live server. Each alerting rule is
    replayed from the ``metrics`` table when the evidence has one (source "metrics"), and
    from the canonical tables when it carries an ``evidence`` annotation (source
    "evidence"). ``fired_at`` is when Prometheus really had the alert firing (its ALERTS
    series, when collected); ``time_to_detect_s`` = would_fire_at - incident start
    (``attrs["incident_start"]``, basis in ``attrs["incident_start_basis"]``: the scenario's
    start, else the first of ``findings``). Rows are ordered by would_fire_at, never-firing
    rules last.
    """
    if rules is None:
        chosen = translate(load_rules(), evidence.profile) + collected_rules(evidence)
    else:
        chosen = _as_rules(rules)
    metrics = evidence.table("metrics")
    desc = evidence.sources.get("prometheus") or {}
    known = list(known_metrics) if known_metrics is not None else list(desc.get("metric_names") or [])
    replays: list[RuleReplay] = []
    if len(metrics) or known:
        replays += _replay_metrics(chosen, metrics, evidence.window, step, known, LOOKBACK_S)
    else:
        for rule in chosen:
            if rule.kind == "alert" and not rule.evidence:
                replays.append(RuleReplay(rule, "metrics", notes=["not evaluated: the evidence holds no metrics"]))
    replays += _replay_evidence(chosen, evidence, step)
    frame = _result_frame(replays)
    fired = fired_alerts(metrics)
    frame["fired_at"] = schema.to_utc(pd.Series([fired.get(r) for r in frame["rule"]], dtype=object))
    start, basis = incident_start(evidence, findings)
    ttd = (frame["would_fire_at"] - start).dt.total_seconds() if start is not None else np.nan
    frame["time_to_detect_s"] = pd.Series(ttd, index=frame.index, dtype="float64")
    frame = frame.sort_values(["would_fire_at", "rule", "source"], na_position="last", kind="stable")
    frame = frame.reset_index(drop=True)[list(DETECTION_COLUMNS)]
    frame.attrs.update({"incident_start": start, "incident_start_basis": basis, "step_s": _step_ns(step) / NS})
    return frame


def describe_detection(frame: pd.DataFrame) -> list[str]:
    """One sentence per replayed rule, e.g. "DeliveryLatencyP95 (from evidence) would have fired
    at 14:31 UTC, 4.2 min after the incident began, 11.0 min before the first page"."""
    start = frame.attrs.get("incident_start")
    pages = frame["fired_at"].dropna()
    first_page = pages.min() if len(pages) else None
    out = []
    for row in frame.itertuples(index=False):
        head = f"{row.rule} (from {row.source})"
        if pd.isna(row.would_fire_at):
            note = row.note if isinstance(row.note, str) else ""
            out.append(f"{head} would not have fired" + (f": {note}" if note else ""))
            continue
        text = f"{head} would have fired at {row.would_fire_at:%H:%M} UTC"
        if start is not None:
            ttd = row.time_to_detect_s
            text += f", {_minutes(abs(ttd))} {'after' if ttd >= 0 else 'before'} the incident began"
        if first_page is not None:
            gap = (first_page - row.would_fire_at).total_seconds()
            text += f", {_minutes(abs(gap))} {'before' if gap >= 0 else 'after'} the first page"
        out.append(text)
    return out


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if abs(seconds) >= 60 else f"{seconds:.0f} s"
