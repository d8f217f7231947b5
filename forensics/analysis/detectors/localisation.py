"""Localisation: where a change is confined (one channel, one connector, one recipient set, one
service), as findings the ranking weighs (runbook 2.1-2.4: which channel, which connector).

Method
------
For one dimension the window's failures are counted per level (a channel, a connector, a
customer, ...): ``k`` failures over ``e`` units of exposure. What counts, per detector:

- ``channel_scope``: messages not delivered normally (FAILED, stuck PENDING or SENT, DELIVERED
  after ``p95_latency_s``) per channel; exposure: the messages created.
- ``recipient_scope``: the same messages per recipient set, three attributes the platform's
  facts make meaningful: the recipient's identity class (platform id not of its platform's
  form, identity unverified or unknown in PostgreSQL, or valid), the customer (``sender_id``,
  the Chat4All user sending) and the recipients themselves (a few recipients). These are
  judged within each channel (a channel's failures are expected over its own traffic), so a
  channel-wide outage is never read as a recipient set.
- ``connector_scope``: error evidence of each connector service (ERROR/WARN log lines and
  error spans; a message named by several lines counts once); exposure: its channel's messages.
- ``service_scope``: the same error evidence over every service; exposure: the service's log
  lines and spans.

Expected counts. Without a baseline, failures are expected in proportion to exposure:
``mu = n x e / E``. With one, each level keeps its background (its rate in the baseline x its
exposure now: what was always there, the chronic callback refusals included), and the failures
beyond the background are expected in proportion to exposure, as a change that hits every
message alike would spread them: ``mu = c + lambda x e`` with ``lambda = max(0, n - C) / E``.

Test. Each level's ``k`` of the ``n`` failures against its expected share ``mu / n``
(:func:`forensics.analysis.significance.share_test`, the conditional test of two Poisson
counts), at ``ALPHA`` divided by the number of levels (Bonferroni: a thousand recipients are
tested at once), with an odds ratio of at least ``MIN_RATIO``. The levels that pass are the set.

- **confined**: a set passes and, against a baseline, its failures rose while the rest's did not;
- **concentrated**: a set passes, but the rest rose too;
- **spread**: no level passes although the test would have seen one (all ``n`` failures in the
  largest level would have passed) and, against a baseline, the failures rose;
- no finding (too few to tell): no level passes and the test could not have seen one; nothing
  rose against the baseline; or the set's own failures did not rise (a chronic concentration).

The registered detectors see the window alone (as every detector, in
:func:`~forensics.analysis.detectors.detect`, and over the baseline period too); once the change
analysis has chosen the baseline, :func:`localise` judges them again against it and replaces
their findings (:mod:`forensics.analysis.change`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from forensics import schema, units
from forensics.analysis.detectors.base import (
    NAT,
    NS,
    Context,
    Detection,
    Finding,
    _message_refs,
    _ts,
    detector,
    identity_rows,
    ref,
    to_ns,
)
from forensics.analysis.detectors.delivery import pending_stuck, sent_stuck
from forensics.analysis.significance import ALPHA, CHANGED, MIN_RATIO, count_verdict, share_test

CONFINED, CONCENTRATED, SPREAD = "confined", "concentrated", "spread"
SCOPES = (CONFINED, CONCENTRATED, SPREAD)
"""Verdicts of a localisation finding (``tags["scope"]``)."""
MAX_NAMED = 5
"""Levels of a set named in a finding's title; the evidence lists them all (capped)."""


@dataclass
class Counts:
    """One dimension's failures per level: ``k`` failures over ``e`` exposure, per level and
    stratum (the failures beyond the background are expected over the exposure of their
    stratum; one stratum ``""`` for the whole)."""

    dimension: str
    """channel, connector, recipients or service."""
    attribute: str
    """What the levels are: channel, connector, identity, customer, recipient, service."""
    cells: pd.DataFrame
    """level, stratum, k, e: one row per level and stratum with exposure."""
    failures: str
    """What ``k`` counts, in words (plural)."""
    exposure: str
    """What ``e`` counts, in words (plural)."""
    background_by: str = "level"
    """level: the background is each level's own baseline rate; stratum: its stratum's (for
    levels too many to carry a rate each, such as recipients)."""
    reference: str | None = None
    """A level that is the norm, never a place a change is confined to (valid identities)."""
    members: Callable[[list[str]], np.ndarray] | None = None
    """Positions in ``Context.messages`` of the failures of the given levels."""
    times: Callable[[list[str]], np.ndarray] | None = None
    """Times (ns) of the failures of the given levels, where they are not message creations."""


@dataclass
class Scope:
    """Where one dimension's failures are, against the baseline when there is one."""

    scope: str
    levels: list[str]
    inside: int
    total: int
    failure_share: float
    traffic_share: float
    expected_share: float
    p_value: float
    ratio: float
    baseline_share: float | None = None
    """The set's share of the baseline's failures; None without a baseline."""
    change: str | None = None
    change_ratio: float | None = None
    baseline_value: float | None = None


def _cells(level: np.ndarray, names: np.ndarray, failing: np.ndarray, stratum: np.ndarray | None = None,
           strata: np.ndarray | None = None, weight: np.ndarray | None = None) -> pd.DataFrame:
    """Failures and exposure per (level, stratum) from per-unit codes (-1: none)."""
    s = np.zeros(len(level), dtype=np.int64) if stratum is None else stratum
    ok = (level >= 0) & (s >= 0)
    n_s = 1 if strata is None else max(len(strata), 1)
    code = level[ok].astype(np.int64) * n_s + s[ok]
    w = np.ones(int(ok.sum())) if weight is None else weight[ok]
    size = len(names) * n_s
    e = np.bincount(code, weights=w, minlength=size)
    k = np.bincount(code, weights=failing[ok].astype(float), minlength=size)
    keep = np.flatnonzero(e > 0)
    return pd.DataFrame({"level": np.asarray(names, dtype=object)[keep // n_s].astype(str),
                         "stratum": (np.asarray(strata, dtype=object)[keep % n_s].astype(str)
                                     if strata is not None else ""),
                         "k": k[keep], "e": e[keep]})


def _expected(cells: pd.DataFrame, base: pd.DataFrame | None, background_by: str) -> np.ndarray:
    """Expected failures per cell (see the module docstring)."""
    e = cells["e"].to_numpy(dtype=float)
    c = np.zeros(len(cells))
    if base is not None and len(base):
        by = "level" if background_by == "level" else "stratum"
        rates = base.groupby(by)[["k", "e"]].sum()
        overall = float(base["k"].sum()) / max(float(base["e"].sum()), 1e-12)
        rate = (rates["k"] / rates["e"]).reindex(cells[by]).fillna(overall).to_numpy(dtype=float)
        c = rate * e
    mu = c.copy()
    for _, idx in cells.groupby("stratum").indices.items():
        n_h, c_h, e_h = float(cells["k"].to_numpy()[idx].sum()), float(c[idx].sum()), float(e[idx].sum())
        if e_h > 0:
            mu[idx] += max(0.0, n_h - c_h) * e[idx] / e_h
    return mu


def _baseline_counts(base: pd.DataFrame, levels: list[str], strata: list[str]) -> tuple[float, float]:
    """The baseline's failures and exposure of ``levels`` (of their strata, when the baseline
    did not see those levels at all)."""
    mine = base[base["level"].isin(levels)]
    if mine["e"].sum() > 0:
        return float(mine["k"].sum()), float(mine["e"].sum())
    theirs = base[base["stratum"].isin(strata)]
    return float(theirs["k"].sum()), float(theirs["e"].sum())


def locate(counts: Counts, base: Counts | None) -> Scope | None:
    """Where ``counts``' failures are, against ``base`` (the same counts over the baseline)
    when given: a :class:`Scope`, or None when too few to tell (see the module docstring)."""
    cells = counts.cells
    n = float(cells["k"].sum())
    if n <= 0 or cells["level"].nunique() < 2:
        return None
    b = base.cells if base is not None and len(base.cells) and base.cells["e"].sum() > 0 else None
    mu = _expected(cells, b, counts.background_by)
    per = pd.DataFrame({"level": cells["level"], "k": cells["k"], "e": cells["e"], "mu": mu}) \
        .groupby("level", sort=False).sum()
    levels = len(per)
    alpha = ALPHA / levels
    shares = (per["mu"] / per["mu"].sum()).to_numpy()
    k_all = per["k"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        odds = (k_all / shares) / ((n - k_all) / (1 - shares))
    ratio, p_up = np.ones(levels), np.ones(levels)
    for i in np.flatnonzero((k_all >= 2) & ~(odds < MIN_RATIO)):  # the others cannot pass
        ratio[i], p_up[i] = share_test(k_all[i], n, shares[i])
    passed = (p_up < alpha) & (ratio >= MIN_RATIO) & (per.index != counts.reference)
    total_e = float(per["e"].sum())
    if b is not None:
        rose = count_verdict(n, total_e, float(b["k"].sum()), float(b["e"].sum()), exact=True)
        if rose.change not in CHANGED:  # nothing changed here: there is no change to place
            return None
    if not passed.any():
        biggest = float(shares.max())
        if biggest >= 1 or share_test(n, n, biggest)[1] >= alpha:  # could not have seen one level
            return None
        top = int(np.argmax(per["k"].to_numpy()))
        return Scope(SPREAD, [], int(n), int(n), float(per["k"].iloc[top] / n), float(per["e"].iloc[top] / total_e),
                     float(shares[top]), float(p_up[top]), float(ratio[top]),
                     change=rose.change if b is not None else None,
                     change_ratio=rose.ratio if b is not None else None,
                     baseline_value=rose.baseline_value if b is not None else None)
    order = np.argsort(-(per["k"].to_numpy() - per["mu"].to_numpy()))
    chosen = [per.index[i] for i in order if passed[i]]
    inside = per.loc[chosen]
    k_in, e_in = float(inside["k"].sum()), float(inside["e"].sum())
    share = float(inside["mu"].sum() / per["mu"].sum())
    in_ratio, in_p = share_test(k_in, n, share) if share < 1 else (math.inf, 0.0)
    scope = Scope(CONFINED, [str(x) for x in chosen], int(k_in), int(n), k_in / n, e_in / total_e, share,
                  float(in_p), float(in_ratio))
    if b is None:
        return scope
    strata = cells.loc[cells["level"].isin(chosen), "stratum"].unique().tolist()
    b_in, f_in = _baseline_counts(b, chosen, strata)
    own = count_verdict(k_in, e_in, b_in, f_in, exact=True)
    if own.change not in CHANGED:
        return None
    rest = cells[~cells["level"].isin(chosen)]
    b_rest = b[~b["level"].isin(chosen)]
    others = count_verdict(float(rest["k"].sum()), float(rest["e"].sum()), float(b_rest["k"].sum()),
                           float(b_rest["e"].sum()), exact=True)
    scope.scope = CONCENTRATED if others.change in CHANGED else CONFINED
    scope.baseline_share = b_in / float(b["k"].sum()) if b["k"].sum() > 0 else 0.0
    scope.change, scope.change_ratio, scope.baseline_value = own.change, own.ratio, b_in
    return scope


# ---- what is counted, per dimension ---------------------------------------------------------------

def undelivered(ctx: Context) -> np.ndarray:
    """Per message: not delivered normally: FAILED, stuck PENDING or SENT, or DELIVERED more than
    ``p95_latency_s`` after its creation (the impact's "affected" messages)."""
    delivered = (ctx.delivered_ns != NAT) & (ctx.created_ns != NAT)
    late = delivered & ((ctx.delivered_ns - ctx.created_ns) > ctx.t.p95_latency_s * NS)
    return ctx.failed | pending_stuck(ctx) | sent_stuck(ctx) | late


def _message_counts(ctx: Context, attribute: str, level: np.ndarray, names: np.ndarray, by_channel: bool,
                    failing: np.ndarray) -> Counts:
    valid = ctx.created_ns != NAT
    level = np.where(valid, level, -1).astype(np.int32)  # kept by ``members``: 4 bytes a message, not 8
    codes, uniques = ctx.codes("channel")
    cells = _cells(level, names, failing, codes if by_channel else None, uniques if by_channel else None)

    def members(levels: list[str]) -> np.ndarray:
        wanted = np.flatnonzero(np.isin(np.asarray(names, dtype=object).astype(str), levels))
        return np.flatnonzero(failing & np.isin(level, wanted))

    return Counts("channel" if attribute == "channel" else "recipients", attribute, cells,
                  "messages not delivered normally", "messages", "stratum" if attribute == "recipient" else "level",
                  "valid" if attribute == "identity" else None, members)


def channel_counts(ctx: Context) -> Counts | None:
    if not ctx.n_messages:
        return None
    codes, uniques = ctx.codes("channel")
    return _message_counts(ctx, "channel", codes, uniques, False, undelivered(ctx))


IDENTITY_CLASSES = np.array(["valid", "malformed", "unverified", "no identity"], dtype=object)
"""A recipient's identity class: its platform id has its platform's form (E.164 for WhatsApp)
or not; its external identity is unverified, or unknown (only when identities were collected)."""


def identity_class(ctx: Context) -> np.ndarray:
    """Per message: the code of its recipient's class in IDENTITY_CLASSES (-1: no external recipient).
    Judged once per distinct (channel, recipient)."""
    from forensics.sources.identity import format_valid

    ch_codes, channels = ctx.codes("channel")
    rc_codes, recipients = ctx.codes("recipient_id")
    n_ch = len(channels) + 1
    pair, inverse = np.unique(rc_codes.astype(np.int64) * n_ch + (ch_codes + 1), return_inverse=True)
    rc, ch = pair // n_ch, pair % n_ch - 1
    channel = pd.Series(np.where(ch >= 0, np.append(channels, None)[ch], None), dtype=schema.STR)
    rid = pd.Series(np.where(rc >= 0, np.append(recipients, None)[rc], None), dtype=schema.STR)
    valid = format_valid(channel, rid)
    cls = np.where(valid.isna().to_numpy(), -1, np.where(valid.fillna(True).to_numpy(dtype=bool), 0, 1))
    idents = ctx.table("identities")
    if len(idents):
        at = identity_rows(idents, channel, rid)
        verified = idents["verified"].to_numpy(dtype=object, na_value=None)[np.maximum(at, 0)]
        cls = np.where((cls == 0) & (at < 0), 3, np.where((cls == 0) & (verified == False), 2, cls))  # noqa: E712
    return cls[inverse.reshape(-1)]


def recipient_counts(ctx: Context) -> list[Counts]:
    """Failures per identity class, per customer and per recipient, each within its channel."""
    if not ctx.n_messages:
        return []
    failing = undelivered(ctx)
    out = [_message_counts(ctx, "identity", identity_class(ctx), IDENTITY_CLASSES, True, failing)]
    for attribute, column in (("customer", "sender_id"), ("recipient", "recipient_id")):
        codes, uniques = ctx.codes(column)
        if len(uniques) >= 2:
            out.append(_message_counts(ctx, attribute, codes, uniques, True, failing))
    return out


def _error_rows(ctx: Context) -> pd.DataFrame:
    """Every service's evidence rows: service, error (ERROR/WARN line or error span), message id, at (ns)."""
    parts = []
    logs = ctx.table("log_events")
    if len(logs):
        errors = np.zeros(len(logs), dtype=bool)
        errors[logs.index.get_indexer(ctx.log_errors.index)] = True
        parts.append(pd.DataFrame({"service": logs["service"].to_numpy(dtype=object), "error": errors,
                                   "message_id": logs["message_id"].to_numpy(dtype=object),
                                   "at": to_ns(logs["timestamp"])}))
    spans = ctx.table("spans")
    if len(spans):
        parts.append(pd.DataFrame({"service": spans["service"].to_numpy(dtype=object),
                                   "error": spans["error"].fillna(False).to_numpy(dtype=bool),
                                   "message_id": spans["message_id"].to_numpy(dtype=object),
                                   "at": to_ns(spans["start"])}))
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        {"service": [], "error": [], "message_id": [], "at": []})
    return rows[rows["service"].notna() & (rows["at"] != NAT) & (rows["at"] >= ctx.start_ns)
                & (rows["at"] <= ctx.now_ns)].reset_index(drop=True)


def _service_counts(ctx: Context, dimension: str, exposure: dict[str, float] | None) -> Counts | None:
    """Error evidence per service (a message named by several error rows of a service counts
    once); exposure: ``exposure[service]``, or each service's rows."""
    rows = _error_rows(ctx)
    if exposure is not None:
        rows = rows[rows["service"].isin(list(exposure))]
    if not len(rows):
        return None
    errors = rows[rows["error"]]
    named = errors[errors["message_id"].notna()].drop_duplicates(["service", "message_id"])
    k = pd.concat([named, errors[errors["message_id"].isna()]]).groupby("service").size()
    e = pd.Series(exposure) if exposure is not None else rows.groupby("service").size().astype(float)
    cells = pd.DataFrame({"level": e.index.astype(str), "stratum": "", "k": k.reindex(e.index).fillna(0.0)
                          .to_numpy(dtype=float), "e": e.to_numpy(dtype=float)})

    def members(levels: list[str]) -> np.ndarray:
        ids = errors.loc[errors["service"].isin(levels), "message_id"].dropna().unique()
        pos = ctx.positions(pd.Series(ids, dtype=schema.STR)) if len(ids) else np.empty(0, dtype=np.int64)
        return np.unique(pos[pos >= 0])

    def times(levels: list[str]) -> np.ndarray:
        return errors.loc[errors["service"].isin(levels), "at"].to_numpy(dtype=np.int64)

    return Counts(dimension, dimension, cells[cells["e"] > 0].reset_index(drop=True),
                  "error rows (ERROR/WARN log lines and error spans; a message once per service)",
                  "messages of the connector's channel" if exposure is not None else "log lines and spans",
                  members=members, times=times)


def connector_counts(ctx: Context) -> Counts | None:
    connectors = ctx.profile.services.connectors
    if not ctx.n_messages or len(connectors) < 2:
        return None
    per_channel = pd.Series(ctx.channel).value_counts()
    exposure = {svc: float(per_channel.get(ch, 0)) for ch, svc in connectors.items() if per_channel.get(ch, 0)}
    return _service_counts(ctx, "connector", exposure) if len(exposure) >= 2 else None


def service_counts(ctx: Context) -> Counts | None:
    return _service_counts(ctx, "service", None)


# ---- findings -------------------------------------------------------------------------------------

WHAT = {"channel": "channel", "connector": "connector", "identity": "recipient identity class",
        "customer": "customer", "recipient": "recipient", "service": "service"}


def _names(levels: list[str], attribute: str) -> str:
    if attribute == "recipient":
        return units.count(len(levels), "recipients")
    shown = ", ".join(levels[:MAX_NAMED]) + (f" and {len(levels) - MAX_NAMED:,} more" if len(levels) > MAX_NAMED
                                             else "")
    return ("customer " if attribute == "customer" else "") + shown


def scope_finding(detector_name: str, ctx: Context, counts: Counts, scope: Scope, against: bool) -> Finding:
    """One dimension's :class:`Scope` as a finding: count = failures inside the set (all for
    spread), metric = their share of the failures, threshold = the share expected of the set."""
    what = WHAT[counts.attribute]
    n = scope.total
    basis = "against the baseline" if against else "against the traffic of the window (no baseline)"
    if scope.scope == SPREAD:
        title = f"Failures spread over every {what}: no {what} holds more than its share"
        detail = (f"{units.count(n, counts.failures)}; the largest {what} holds {units.percent(scope.failure_share)} "
                  f"of them for {units.percent(scope.traffic_share)} of the {counts.exposure} "
                  f"({basis}): the change is not one {what}'s.")
        levels = sorted(counts.cells["level"].unique().tolist())
    else:
        where = _names(scope.levels, counts.attribute)
        title = (f"Failures {scope.scope} to {where}: {units.percent(scope.failure_share)} of them, "
                 f"{units.percent(scope.traffic_share)} of the {counts.exposure}")
        detail = (f"{units.count(scope.inside, counts.failures)} of {n:,} in {where} "
                  f"({units.percent(scope.failure_share)}) where {units.percent(scope.expected_share)} were expected "
                  f"{basis}; {units.percent(scope.traffic_share)} of the {counts.exposure} (p = {scope.p_value:.1e})."
                  + (f" Before the incident the same set held {units.percent(scope.baseline_share)} of the failures."
                     if scope.baseline_share is not None else "")
                  + (" The rest rose too: concentrated there, not only there." if scope.scope == CONCENTRATED else ""))
        levels = scope.levels
    members = counts.members(scope.levels if scope.scope != SPREAD else levels) if counts.members else None
    times = counts.times(scope.levels if scope.scope != SPREAD else levels) if counts.times else None
    firsts = (ctx.created_ns[members] if members is not None and len(members) else
              times if times is not None and len(times) else np.empty(0, dtype=np.int64))
    firsts = firsts[firsts != NAT]
    channel = levels[0] if counts.attribute == "channel" and scope.scope != SPREAD and len(levels) == 1 else None
    if counts.attribute == "connector" and scope.scope != SPREAD and len(levels) == 1:
        channel = ctx.service_channels.get(levels[0])
    evidence = [{"table": "analysis", "column": counts.attribute, "values": [str(v) for v in levels[:50]],
                 "total": len(levels)}]
    if members is not None and len(members):
        evidence.append(_message_refs(ctx, members)[0])
    if counts.attribute == "recipient" and scope.scope != SPREAD:
        evidence.append(ref("messages", "recipient_id", levels))
    finding = Finding(
        detector_name, f"{counts.dimension}:{counts.attribute}" if counts.dimension == "recipients" else "",
        "info" if scope.scope == SPREAD else "warning", title, detail,
        _ts(int(firsts.min())) if len(firsts) else None, _ts(int(firsts.max())) if len(firsts) else None,
        channel, scope.inside, scope.failure_share, scope.expected_share, evidence,
        members if members is not None else None,
        {"scope": scope.scope, "dimension": counts.dimension, "attribute": counts.attribute, "levels": levels,
         "failure_share": scope.failure_share, "traffic_share": scope.traffic_share,
         "expected_share": scope.expected_share, "p_value": scope.p_value, "baseline_share": scope.baseline_share,
         "failures": n, "unit": counts.failures, "against_baseline": against},
        times if times is not None and len(times) else None)
    finding.baseline_value, finding.change, finding.change_ratio = scope.baseline_value, scope.change, \
        scope.change_ratio
    return finding


def counted(ctx: Context, count: Callable[[Context], Any]) -> Any:
    """``count(ctx)``, computed once per context (kept in ``ctx.counted``): the window's counts
    serve both its runs (alone, then against the baseline), the baseline's its own run and the
    comparison."""
    if count not in ctx.counted:
        ctx.counted[count] = count(ctx)
    return ctx.counted[count]


def _scopes(name: str, ctx: Context, base: Context | None, count: Callable[[Context], Counts | None]
            ) -> list[Finding]:
    now = counted(ctx, count)
    if now is None:
        return []
    scope = locate(now, counted(base, count) if base is not None else None)
    return [scope_finding(name, ctx, now, scope, base is not None)] if scope is not None else []


@detector("channel_scope")
def channel_scope(ctx: Context, base: Context | None = None) -> Iterable[Finding]:
    """Whether the messages not delivered normally are confined to one channel, or spread over
    all (see the module docstring): confined supports that channel's connector and platform, and
    counts against causes of the whole platform."""
    return _scopes("channel_scope", ctx, base, channel_counts)


@detector("connector_scope")
def connector_scope(ctx: Context, base: Context | None = None) -> Iterable[Finding]:
    """Whether the connectors' error evidence is confined to one connector service."""
    return _scopes("connector_scope", ctx, base, connector_counts)


@detector("service_scope")
def service_scope(ctx: Context, base: Context | None = None) -> Iterable[Finding]:
    """Which services' logs and spans hold the new errors: confined to one service (or a few), or
    spread over them."""
    return _scopes("service_scope", ctx, base, service_counts)


@detector("recipient_scope")
def recipient_scope(ctx: Context, base: Context | None = None) -> Iterable[Finding]:
    """Whether the messages not delivered normally are confined to one recipient set within
    their channels: an identity class, a customer, or a few recipients. Only a confined set is
    reported: a set that holds more than its share while the rest rose too is not the incident's
    place, and spread over recipients is what most incidents look like."""
    now = counted(ctx, recipient_counts)
    before = {c.attribute: c for c in counted(base, recipient_counts)} if base is not None else {}
    out = []
    for counts in now:
        scope = locate(counts, before.get(counts.attribute) if base is not None else None)
        if scope is not None and scope.scope == CONFINED and scope.inside >= 2:
            out.append(scope_finding("recipient_scope", ctx, counts, scope, base is not None))
    return out


LOCALISERS = ("channel_scope", "connector_scope", "service_scope", "recipient_scope")
"""The localisation detectors: :func:`localise` runs them again against the baseline."""


def localise(detection: Detection, baseline: Detection | None) -> None:
    """Judge the window's localisation findings again against ``baseline`` (its context),
    replacing the window-only ones; without a baseline they stay as they are."""
    if baseline is None:
        return
    from forensics.analysis.detectors.base import DETECTORS

    ctx, base = detection.context, baseline.context
    kept = [f for f in detection.items if f.detector not in LOCALISERS]
    fresh = [f for name in LOCALISERS for f in DETECTORS[name](ctx, base)]
    detection.items[:] = kept + fresh
    detection.__dict__.pop("findings", None)
