"""Tests on counts: whether a count rose against a baseline, and whether a share of counts
stands out against what was expected of it.

Both are the conditional binomial test of two Poisson counts: given ``c1 + c0`` events,
``c1`` is binomial with p = e1 / (e0 + e1) when both happen at one rate per unit of
exposure. Its tail is taken from the signed root of the likelihood ratio statistic (normal
tail), which holds from a few counts to millions. :mod:`forensics.analysis.change` judges
every finding against its baseline with it; the localisation detectors
(:mod:`forensics.analysis.detectors.localisation`) test where a change is confined with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHA = 0.01
"""Significance of a rise or fall between window and baseline."""
MIN_RATIO = 1.5
"""Smallest rate ratio that counts as worse (1 / it as better)."""
CHANGED = ("new", "worse")
"""Verdicts that make a finding part of what changed."""
TAIL_TERMS = 2_000
"""Terms of the binomial tail summed one by one; beyond them the rest is bounded by a geometric
series (the terms past the mode fall ever faster), so the tail is never understated."""
EXACT_UP_TO = 100_000
"""Events up to which an ``exact`` test sums the binomial tail (beyond, the normal tail is as good)."""


@dataclass(frozen=True)
class Verdict:
    baseline_value: float | None
    change: str | None
    ratio: float | None = None
    p_value: float | None = None


# ---- the test for two counts ------------------------------------------------------------------

def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0 else x * math.log(x / y)


def binomial_tail(k: float, n: float, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exactly (counts rounded to integers): the sum of the
    probabilities from k to n, in logs."""
    k, n = int(round(k)), int(round(n))
    if k <= 0:
        return 1.0
    if k > n or p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    first = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p)
             + (n - k) * math.log1p(-p))
    i = np.arange(k, min(n, k + TAIL_TERMS), dtype=float)
    steps = np.log((n - i) / (i + 1)) + math.log(p / (1 - p))
    logs = first + np.concatenate([[0.0], np.cumsum(steps)])
    top = float(logs.max())
    total = math.exp(top) * float(np.exp(logs - top).sum())
    if k + TAIL_TERMS < n:  # the terms left fall faster than a geometric series of the last ratio
        ratio = math.exp(float(steps[-1]))
        total += math.exp(float(logs[-1])) * ratio / (1 - ratio) if ratio < 1 else 1.0
    return min(1.0, total)


def rate_test(c1: float, e1: float, c0: float, e0: float, *, exact: bool = False) -> tuple[float, float, float]:
    """Two Poisson counts ``c1`` (window, exposure ``e1``) and ``c0`` (baseline, ``e0``):
    (rate ratio, p of a rise, p of a fall). Conditional binomial test through the signed
    root of the likelihood ratio statistic, whose normal tail is accurate from a few counts on;
    ``exact``: the binomial tails themselves (for a handful of events, where the normal tail
    is too generous: 4 against 0 on equal exposure is p = 0.06, not 0.009), up to EXACT_UP_TO events."""
    n = c1 + c0
    if n == 0 or e1 <= 0 or e0 <= 0:
        return 1.0, 1.0, 1.0
    share = e1 / (e0 + e1)
    ratio = (c1 / e1) / (c0 / e0) if c0 else math.inf
    if exact and n <= EXACT_UP_TO:
        return ratio, binomial_tail(c1, n, share), binomial_tail(c0, n, 1 - share)
    expected1, expected0 = n * share, n * (1 - share)
    g = 2 * (_xlogy(c1, expected1) + _xlogy(c0, expected0))
    z = math.copysign(math.sqrt(max(g, 0.0)), c1 - expected1)
    p_up = 0.5 * math.erfc(z / math.sqrt(2))
    return ratio, p_up, 1.0 - p_up


def count_verdict(c1: float, e1: float, c0: float, e0: float, *, over_before: bool | None = None,
                  value: float | None = None, exact: bool = False) -> Verdict:
    """The verdict on a count: a significant rise of at least MIN_RATIO is ``new`` when the
    baseline had none (or, for a rate with a threshold, was under it: ``over_before``
    False) and ``worse`` otherwise; the mirror is ``better``; anything else, a few sporadic
    events where the baseline had none included, is ``unchanged``. ``value``: the baseline
    value to report (default the baseline's count); ``exact``: see :func:`rate_test`."""
    ratio, p_up, p_down = rate_test(c1, e1, c0, e0, exact=exact)
    shown = float(c0) if value is None else value
    rose = p_up < ALPHA and ratio >= MIN_RATIO
    if rose and (c0 == 0 or over_before is False):
        return Verdict(shown, "new", ratio, p_up)
    if rose:
        return Verdict(shown, "worse", ratio, p_up)
    if p_down < ALPHA and ratio <= 1 / MIN_RATIO:
        return Verdict(shown, "better", ratio, p_down)
    return Verdict(shown, "unchanged", ratio, min(p_up, p_down))


def level_verdict(window: float, baseline: float, normal: float) -> Verdict:
    """A level (lag, latency): ``new`` when the baseline stayed at or under ``normal``, else
    a ratio of MIN_RATIO either way."""
    ratio = window / baseline if baseline else math.inf
    if baseline <= normal:
        change = "new"
    elif ratio >= MIN_RATIO:
        change = "worse"
    elif ratio <= 1 / MIN_RATIO:
        change = "better"
    else:
        change = "unchanged"
    return Verdict(float(baseline), change, ratio)


def holm(p_values: dict[str, float], least: dict[str, float] | None = None, alpha: float = ALPHA
         ) -> dict[str, float]:
    """Holm's step-down adjustment of a family of p-values (name -> p): the smallest is
    multiplied by the family's size, the next by one less, each at least its predecessor's,
    capped at 1. Rejecting where the adjusted p is under ``alpha`` keeps the chance of any
    false rise in the whole family under it, however many members it has: among many error
    causes of a mixed background, each tested alone, some cause always looks "new".

    ``least`` (name -> the smallest p its counts could give at all: a count test on 3 events
    can never reach 0.01) applies Tarone's rule for discrete tests: members that could not
    reach significance even alone in a family of K are left out of it (adjusted p 1), K being
    the smallest size for which at most K members remain; a sporadic code seen twice does not
    dilute a real rise."""
    members = set(p_values)
    if least is not None:
        for k in range(1, len(p_values) + 1):
            testable = {name for name in p_values if least.get(name, 0.0) < alpha / k}
            if len(testable) <= k:
                members = testable
                break
    order = sorted(members, key=p_values.__getitem__)
    m, running = len(order), 0.0
    out = dict.fromkeys(p_values, 1.0)
    for i, name in enumerate(order):
        running = max(running, min(1.0, (m - i) * p_values[name]))
        out[name] = running
    return out


def share_test(inside: float, total: float, expected_share: float) -> tuple[float, float]:
    """``inside`` of ``total`` events fell in a set expected to hold ``expected_share`` (0..1)
    of them: (ratio of the odds inside to outside against the expected, p of so many or more
    inside). The same conditional test, exact, the set's expected share standing for its exposure."""
    if total <= 0 or not 0 < expected_share < 1:
        return 1.0, 1.0
    ratio, p_up, _ = rate_test(inside, expected_share, total - inside, 1.0 - expected_share, exact=True)
    return ratio, p_up
