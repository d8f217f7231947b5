"""The evidence source family: one base class, options parsed once into a typed object.

Every source is a subclass of :class:`EvidenceSource` in its own module of
``forensics/sources/`` (named ``Source``, as ibis names its backends ``Backend``) and one line
in :data:`forensics.sources.registry.SOURCES`. A subclass declares

- ``name`` and the canonical ``tables`` it fills;
- ``connection``: the option that carries its connection string and, by the same name as in
  :data:`forensics.config.ENV`, the FORENSICS_* variable that is its default (None: no server);
- ``options``: its own :class:`Option` specs (kind, default, what it means). Sources with a
  connection also take the query bounds (``max_rows``, ``timeout_s``, ``connect_timeout_s``,
  or a :class:`~forensics.config.Limits` as ``limits``);

and implements :meth:`EvidenceSource.read`, or, when its window can be bigger than memory,
:meth:`EvidenceSource.stream`: the tables slice by slice as they are read, so collection
hands each slice to the bundle (:class:`~forensics.bundle.BundleWriter`) and memory holds one
slice however long the window (``read`` then gathers the slices). Options arrive as strings (``-o key=value``) or as
Python values (a notebook's ``source_options``) and are parsed once, by
:meth:`EvidenceSource.parse`: a key no selected source accepts is refused naming the accepted
keys, a bad value is one line naming the source and the key. :meth:`EvidenceSource.describe`
gives every source's description the same keys (``kind``, ``connection`` masked,
``parameters``, ``rows``, ``truncated``, ``notes``) plus its own details.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import pandas as pd

from forensics import schema
from forensics.config import DEFAULT_LIMITS, Limits
from forensics.config import connection as env_connection
from forensics.credentials import mask_secrets, mask_uri
from forensics.errors import ParameterError, SourceError
from forensics.profiles import Profile
from forensics.timeutil import Window

KINDS = {
    "text": "text",
    "int": "a whole number",
    "float": "a number",
    "list": "a comma-separated list",
    "mapping": 'NAME=VALUE pairs separated by commas, or a JSON object',
    "choice": "one of",
}


@dataclass(frozen=True)
class Option:
    """One option a source accepts: ``kind`` is text, int, float, list, mapping or choice."""

    key: str
    kind: str
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None

    def parse(self, source: str, value: Any) -> Any:
        """``value`` (a string from ``-o``, or a Python value) as this option's type; a
        ParameterError of one line names the source, the key and what was expected."""
        if value is None or value == "":
            return self.default
        try:
            parsed = _PARSERS[self.kind](value, self)
        except (TypeError, ValueError):
            expected = KINDS[self.kind] + (f" {', '.join(self.choices)}" if self.choices else "")
            raise ParameterError(f"{source} option {self.key}: expected {expected}, got {value!r}") from None
        if self.minimum is not None and parsed < self.minimum:
            raise ParameterError(f"{source} option {self.key}: must be at least {self.minimum:g}, got {value!r}")
        return parsed


def _int(value: Any, _opt: Option) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    return int(value)


def _float(value: Any, _opt: Option) -> float:
    if isinstance(value, bool):
        raise ValueError(value)
    return float(value)


def _list(value: Any, _opt: Option) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise ValueError(value)
    return [str(v) for v in value]


def _mapping(value: Any, _opt: Option) -> dict[str, str]:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            value = json.loads(text)
        else:
            pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ValueError(value)
            value = {k.strip(): v.strip() for k, v in pairs}
    if not isinstance(value, Mapping):
        raise ValueError(value)
    return {str(k): str(v) for k, v in value.items()}


def _choice(value: Any, opt: Option) -> str:
    if str(value) not in opt.choices:
        raise ValueError(value)
    return str(value)


_PARSERS: dict[str, Callable[[Any, Option], Any]] = {
    "text": lambda v, _o: str(v), "int": _int, "float": _float, "list": _list, "mapping": _mapping,
    "choice": _choice,
}

@dataclass
class CollectRequest:
    """What one collection asks of a source: the window, the naming profile, the raw options."""

    window: Window
    profile: Profile
    options: dict[str, Any] = field(default_factory=dict)
    """Source options: connection settings (FORENSICS_* defaults), limits, per-source keys."""
    progress: Callable[[str], None] | None = None


@dataclass
class SourceResult:
    """What a source read: canonical tables, its description, the queries behind each table."""

    tables: dict[str, pd.DataFrame]
    description: dict[str, Any]
    """What was asked of whom (:meth:`EvidenceSource.describe`)."""
    queries: dict[str, Any] = field(default_factory=dict)
    scenario: dict[str, Any] | None = None


Slices = Generator[tuple[str, pd.DataFrame], None, SourceResult]
"""What :meth:`EvidenceSource.stream` gives: ``(table, slice)`` pairs as they are read, then
(the generator's return value) the :class:`SourceResult` with its ``tables`` empty."""


def drain(items: Generator[Any, None, Any], put: Callable[[Any], None]) -> Any:
    """Hand every item of ``items`` to ``put``; the generator's return value after the last
    (a source's :class:`SourceResult` after its slices, a Kafka read's description after its batches)."""
    while True:
        try:
            item = next(items)
        except StopIteration as done:
            return done.value
        put(item)


def whole(result: SourceResult) -> Slices:
    """A result read whole as a stream: each of its tables one slice."""
    yield from result.tables.items()
    return replace(result, tables={})


def gather(slices: Slices) -> SourceResult:
    """The slices of a stream as whole tables (what :meth:`EvidenceSource.read` returns): each
    table's slices in order, conformed; a slice marked truncated marks its table."""
    parts: dict[str, list[pd.DataFrame]] = {}
    result = drain(slices, lambda piece: parts.setdefault(piece[0], []).append(piece[1]))
    return replace(result, tables={table: joined(table, frames) for table, frames in parts.items()})


def joined(table: str, frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Slices of ``table`` as one frame, with the ``attrs`` of the truncated ones (their
    warnings joined); empty slices left out, a single one as it is."""
    kept = [f for f in frames if len(f)]
    if len(kept) <= 1:
        return kept[0] if kept else frames[0] if frames else schema.empty(table)
    out = schema.conform(table, pd.concat(kept, ignore_index=True))
    out.attrs = {}
    for f in kept:
        if f.attrs.get("truncated"):
            out.attrs.update({k: v for k, v in f.attrs.items() if k != "warnings"})
            out.attrs.setdefault("warnings", []).extend(f.attrs.get("warnings", []))
    return out


LIMIT_OPTIONS = (
    Option("max_rows", "int", None, "result cap per query (Limits.max_rows)", minimum=1),
    Option("timeout_s", "float", None, "time limit per query, seconds (Limits.timeout_s)", minimum=0.001),
    Option("connect_timeout_s", "float", None, "time limit to connect, seconds", minimum=0.001),
)
"""The query bounds every source with a server takes (and ``limits``, a Limits object)."""
PERIOD = Option("period", "choice", "window", "what is collected: the incident window, or a normal period to "
                "compare it with (forensics.sources.registry.collect_baseline)", choices=("window", "baseline"))
"""Every source takes it; the simulator simulates normal traffic for a baseline."""


@dataclass(frozen=True)
class SourceOptions:
    """A source's options, parsed: the connection string (explicit, else its FORENSICS_*
    variable; never printed unmasked), the query bounds and every option with its default."""

    source: str
    connection: str | None
    limits: Limits
    values: Mapping[str, Any] = field(default_factory=dict)
    given: frozenset[str] = frozenset()
    """The keys the caller set (the others hold their defaults)."""

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def parameters(self) -> dict[str, Any]:
        """The options as recorded in a description: secrets masked, the connection left out
        (it is ``describe()["connection"]``)."""
        return mask_secrets(dict(self.values))


class EvidenceSource:
    """One evidence source: options in, canonical tables out (see the module docstring)."""

    name: ClassVar[str] = ""
    tables: ClassVar[tuple[str, ...]] = ()
    connection: ClassVar[str | None] = None
    """The option carrying the connection string (e.g. ``mongo_uri``); None for sources
    without a server."""
    env: ClassVar[str | None] = None
    """The :data:`forensics.config.ENV` key whose variable is the connection's default."""
    bounded: ClassVar[bool] = True
    """Whether the source takes the query bounds (a source that reads from a server does)."""
    options: ClassVar[tuple[Option, ...]] = ()

    def __init__(self, options: SourceOptions, profile: Profile,
                 progress: Callable[[str], None] | None = None) -> None:
        self.opts, self.profile, self.progress = options, profile, progress
        self.say = progress or (lambda _msg: None)

    # -- options ------------------------------------------------------------------------------

    @classmethod
    def option_specs(cls) -> tuple[Option, ...]:
        conn = (Option(cls.connection, "text", None, f"connection (default ${_env_var(cls.env)})"),) \
            if cls.connection else ()
        return conn + (LIMIT_OPTIONS if cls.bounded else ()) + (PERIOD,) + cls.options

    @classmethod
    def accepted(cls) -> tuple[str, ...]:
        """Every option key this source reads."""
        return tuple(o.key for o in cls.option_specs()) + (("limits",) if cls.bounded else ())

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> SourceOptions:
        """This source's options out of ``raw`` (the keys of other sources are ignored here;
        :func:`forensics.sources.registry.check_options` refuses keys no source takes)."""
        values = {o.key: o.parse(cls.name, raw.get(o.key)) for o in cls.option_specs()}
        limits = DEFAULT_LIMITS
        if cls.bounded:
            base = raw.get("limits")
            if base is not None and not isinstance(base, Limits):
                raise ParameterError(f"{cls.name} option limits: expected a forensics.config.Limits, got {base!r}")
            base = base or DEFAULT_LIMITS
            limits = Limits(max_rows=values.pop("max_rows") or base.max_rows,
                            timeout_s=values.pop("timeout_s") or base.timeout_s,
                            connect_timeout_s=values.pop("connect_timeout_s") or base.connect_timeout_s)
        conn = env_connection(cls.env, values.pop(cls.connection)) if cls.connection and cls.env else None
        given = frozenset(k for k in cls.accepted() if raw.get(k) not in (None, ""))
        return SourceOptions(cls.name, conn, limits, values, given)

    # -- reading ------------------------------------------------------------------------------

    @classmethod
    def collect(cls, request: CollectRequest) -> SourceResult:
        """Parse ``request.options`` and read ``request.window``: the registry's entry point."""
        return cls(cls.parse(request.options), request.profile, request.progress).read(request.window)

    def read(self, window: Window) -> SourceResult:
        """The canonical tables of ``window``, described: :meth:`stream`'s slices gathered. A
        source overrides this or :meth:`stream` (a big window: stream)."""
        if type(self).stream is EvidenceSource.stream:
            raise NotImplementedError(f"{type(self).__name__} implements neither read nor stream")
        return gather(self.stream(window))

    def stream(self, window: Window) -> Slices:
        """The canonical tables of ``window`` as ``(table, slice)`` pairs, several per table when
        the source reads in batches (cursor batches, pages, chunks of records or lines), then the
        :class:`SourceResult` (tables empty: the rows went by; description and queries as
        :meth:`read` gives them). Memory holds what one slice needs. By default :meth:`read`'s
        tables, each as one slice: for sources whose evidence is small (identities, keys, a
        snapshot)."""
        return (yield from whole(self.read(window)))

    def describe(self, tables: Mapping[str, pd.DataFrame | int], *, notes: Iterable[str] = (), truncated: bool = False,
                 connection: str | None = None, parameters: Mapping[str, Any] | None = None,
                 **details: Any) -> dict[str, Any]:
        """The description every source gives: ``kind``, ``connection`` (masked; ``connection``
        overrides what is shown, e.g. broker hosts), ``parameters`` (the options, unless the
        source records them otherwise, e.g. a count instead of personal ids), ``rows`` (all
        tables; a streamed table is given by its row count), ``truncated``, ``notes``, then the
        source's own ``details``."""
        shown = connection if connection is not None else (mask_uri(self.opts.connection)
                                                         if self.opts.connection else None)
        return {"kind": self.name, "connection": shown,
                "parameters": mask_secrets(dict(parameters)) if parameters is not None else self.opts.parameters(),
                "rows": sum(f if isinstance(f, int) else len(f) for f in tables.values()),
                "truncated": bool(truncated or any(f.attrs.get("truncated") for f in tables.values()
                                                   if not isinstance(f, int))),
                "notes": list(notes), **details}


@contextmanager
def connected(source: str, address: str | None, *, missing_hint: str, open: Callable[[str], Any],
              failure: Callable[[BaseException, str, bool], SourceError | None], ready: Callable[[Any], None] | None = None
              ) -> Iterator[Any]:
    """A client of ``source`` on ``address``, closed after: the one connection pattern of the
    sources with a driver (PostgreSQL, Redis). No address is a SourceError with ``missing_hint``;
    ``open(address)`` connects, ``ready(client)`` checks it (e.g. a PING); ``failure(exc, masked,
    opening)`` turns a driver error (while opening, or while in use) into the source's one-line
    SourceError, credentials masked (None: not the driver's, let it through)."""
    if not address:
        raise SourceError(source, "no connection string", missing_hint)
    masked = mask_uri(address) or ""
    try:
        client = open(address)
    except Exception as exc:
        error = failure(exc, masked, True)
        if error is None:
            raise
        raise error from None
    try:
        if ready is not None:
            ready(client)
        yield client
    except Exception as exc:
        error = failure(exc, masked, False)
        if error is None:
            raise
        raise error from None
    finally:
        client.close()


def _env_var(key: str | None) -> str:
    from forensics.config import ENV

    return ENV.get(key or "", "none")


def parse_option_args(pairs: Iterable[str] | None) -> dict[str, str]:
    """``-o KEY=VALUE`` arguments as a dict (the one place they are split); a pair without
    ``=`` is a ParameterError."""
    out: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ParameterError(f"-o {pair!r}: expected KEY=VALUE, e.g. -o timeout_s=60")
        out[key.strip()] = value
    return out
