"""Calibrated confidence: a rule's raw score mapped to the probability that its cause is the true one.

Method
------
Fitted on every hypothesis of simulated incidents, labelled 1 for the scenario's true cause
and 0 otherwise (``benchmarks/accuracy.py --fit SEEDS``); the seeds it is fitted on are held
apart from the seeds the accuracy is reported on. Two mappings:

- **isotonic** (the shipped one): the pool-adjacent-violators fit of the share of true causes
  as a non-decreasing step function of the score, each step's share shrunk towards the
  overall share by :data:`PRIOR` pseudo-hypotheses (a step of three hypotheses says little),
  then joined linearly between the steps' mean scores. It bends where the data bend: a
  sigmoid (Platt) must be over-confident somewhere in the middle when the middle scores are
  mostly wrong causes and the high ones almost all right.
- **Platt**: p = 1 / (1 + exp(-(a x score + b))), by maximum likelihood (Newton's method).

The fitted mapping ships as data (``forensics/rules/calibration.json``, with what it was
fitted on); without the file the raw score is the confidence. Both are monotonic, so they
never change the ranking, only what the numbers mean.

:func:`reliability` and :func:`brier` measure it: per decile of confidence, the mean
confidence against the share that was the true cause; Brier = mean squared error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

CALIBRATION_FILE = Path(__file__).parents[1] / "rules" / "calibration.json"


def platt(a: float, b: float) -> Callable[[float], float]:
    """The Platt mapping score -> probability."""

    def calibrated(score: float) -> float:
        return 1.0 / (1.0 + math.exp(-(a * score + b)))

    return calibrated


def _identity(score: float) -> float:
    return float(score)


def isotonic(scores: list[float], probabilities: list[float]) -> Callable[[float], float]:
    """The isotonic mapping: linear between the knots (score, probability), flat beyond them."""
    xs, ys = np.asarray(scores, dtype=float), np.asarray(probabilities, dtype=float)

    def calibrated(score: float) -> float:
        return float(np.interp(score, xs, ys))

    return calibrated


@cache
def load_calibration(path: Path = CALIBRATION_FILE) -> Callable[[float], float]:
    """The shipped mapping (identity when no calibration file exists)."""
    if not path.is_file():
        return _identity
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("method") == "isotonic":
        return isotonic(data["scores"], data["probabilities"])
    return platt(float(data["a"]), float(data["b"]))


PRIOR = 2.0
"""Pseudo-hypotheses at the overall share of true causes added to each isotonic step."""


def fit_isotonic(scores: np.ndarray, labels: np.ndarray, prior: float = PRIOR) -> tuple[list[float], list[float]]:
    """Knots (mean score of each step, its shrunk share of true causes) of the isotonic fit of
    ``labels`` (0/1) on ``scores`` by pool-adjacent-violators; non-decreasing."""
    order = np.argsort(np.asarray(scores, dtype=float), kind="stable")
    x, y = np.asarray(scores, dtype=float)[order], np.asarray(labels, dtype=float)[order]
    blocks: list[list[float]] = []  # [sum of labels, count, sum of scores]
    for xi, yi in zip(x, y, strict=True):
        blocks.append([yi, 1.0, xi])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            hi = blocks.pop()
            blocks[-1] = [a + b for a, b in zip(blocks[-1], hi, strict=True)]
    base = float(y.mean()) if len(y) else 0.5
    knots = [b[2] / b[1] for b in blocks]
    shares = np.maximum.accumulate([(b[0] + prior * base) / (b[1] + prior) for b in blocks])
    return [round(k, 6) for k in knots], [round(float(p), 6) for p in shares]


def fit_platt(scores: np.ndarray, labels: np.ndarray, iterations: int = 100) -> tuple[float, float]:
    """(a, b) maximising the likelihood of ``labels`` (0/1) under p = sigmoid(a x score + b);
    Newton's method with a small ridge term so separable data stays finite."""
    x = np.column_stack([np.asarray(scores, dtype=float), np.ones(len(scores))])
    y = np.asarray(labels, dtype=float)
    w = np.zeros(2)
    ridge = 1e-3 * np.eye(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + ridge @ w
        hess = (x * (p * (1 - p))[:, None]).T @ x + ridge
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return float(w[0]), float(w[1])


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """Per decile of predicted probability: count, mean prediction, observed share of true causes."""
    probs, labels = np.asarray(probs, dtype=float), np.asarray(labels, dtype=float)
    at = np.minimum((probs * bins).astype(int), bins - 1)
    out = []
    for k in range(bins):
        sel = at == k
        if sel.any():
            out.append({"bin": f"{k / bins:.1f}-{(k + 1) / bins:.1f}", "n": int(sel.sum()),
                        "predicted": float(probs[sel].mean()), "observed": float(labels[sel].mean())})
    return out


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared difference between predicted probability and outcome (0 best)."""
    return float(np.mean((np.asarray(probs, dtype=float) - np.asarray(labels, dtype=float)) ** 2))
