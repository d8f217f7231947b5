"""Calibrated confidence: a rule's raw score mapped to the probability that its cause is the true one.

Method
------
Platt scaling: p = 1 / (1 + exp(-(a x score + b))), fitted by maximum likelihood (Newton's
method on the two parameters) to every hypothesis of simulated incidents, labelled 1 for
the scenario's true cause and 0 otherwise (``benchmarks/accuracy.py --fit``). The seeds it
is fitted on are held apart from the seeds the accuracy is reported on. The fitted
parameters ship as data (``forensics/rules/calibration.json``, with what they were fitted
on); without the file the raw score is the confidence. The mapping is monotonic, so it
never changes the ranking, only what the numbers mean.

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


@cache
def load_calibration(path: Path = CALIBRATION_FILE) -> Callable[[float], float]:
    """The shipped mapping (identity when no calibration file exists)."""
    if not path.is_file():
        return _identity
    data = json.loads(path.read_text(encoding="utf-8"))
    return platt(float(data["a"]), float(data["b"]))


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
