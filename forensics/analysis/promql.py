"""PromQL, the subset alert rule files need: syntax tree, lexer and parser.

:func:`parse_promql` gives the tree (:class:`Num`, :class:`Str`, :class:`Selector`,
:class:`Call`, :class:`Agg`, :class:`Neg`, :class:`Binary`); a syntax error is a
:class:`PromQLError`, valid PromQL outside the subset (``offset``, ``@``, subqueries,
``topk``, ``group_left``, ...) an :class:`UnsupportedPromQL`. Evaluation is
:mod:`forensics.analysis.promql_eval`; replaying rules is :mod:`forensics.analysis.alerts`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from forensics.analysis.detectors import NS
from forensics.errors import ForensicsError
from forensics.rules import parse_duration


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


def selector_name(sel: Selector) -> str | None:
    if sel.name:
        return sel.name
    return next((v for label, op, v in sel.matchers if label == "__name__" and op == "="), None)


def referenced_metrics(expr: str | Any) -> list[str]:
    """Metric names an expression selects, in order of appearance."""
    node = parse_promql(expr) if isinstance(expr, str) else expr
    names: list[str] = []
    for n in walk(node):
        if isinstance(n, Selector) and (name := selector_name(n)) and name not in names:
            names.append(name)
    return names


def split_condition(node: Any) -> tuple[Any, str | None, float]:
    """``lhs > 5`` -> (lhs, ">", 5.0): the value side, the comparison and the threshold;
    expressions of another shape are returned whole (condition = "has a result")."""
    if isinstance(node, Binary) and node.op in COMPARISONS and not node.bool_mod and node.matching is None:
        if isinstance(node.rhs, Num) and not isinstance(node.lhs, Num):
            return node.lhs, node.op, node.rhs.value
        if isinstance(node.lhs, Num) and not isinstance(node.rhs, Num):
            return node.rhs, _FLIP[node.op], node.lhs.value
    return node, None, float("nan")

