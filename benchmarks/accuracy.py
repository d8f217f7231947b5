"""Root-cause ranking accuracy and calibration on simulated incidents.

For every simulator scenario, with and without the deployed code's chronic noise, both
profiles and every seed: the rank of the true cause, its confidence and the top-1 margin;
then how well the confidence is calibrated (reliability by decile, Brier score) over every
hypothesis of every incident (label 1 = the scenario's true cause). Each incident carries
the normal period before its window as its baseline, as `forensics collect` records it.

``--fit SEEDS`` first fits the calibration (forensics/analysis/calibration.py; ``--method``
isotonic, the shipped one, or platt) on those seeds, which must be held apart from the
evaluation seeds, and writes it to forensics/rules/calibration.json; the evaluation then uses it.

Usage: python benchmarks/accuracy.py [--messages 2000] [--seeds 1,2,3,4,5] [--fit 101,102,103,104]
       [--method isotonic] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime

import numpy as np

from forensics.analysis.calibration import (
    CALIBRATION_FILE,
    brier,
    fit_isotonic,
    fit_platt,
    load_calibration,
    reliability,
)
from forensics.analysis.pipeline import analyze
from forensics.simulate import SCENARIOS, simulate

PROFILES = ("runbook", "chat4all-v2")
NOISE = {"quiet": False, "noise": True}
HARMLESS = ("baseline", "broker-restart", "rebalance-drained")
"""Scenarios whose true answer is healthy: healthy must rank first in every one of them."""


def ranking(job: tuple[str, str, str, int, int]) -> tuple[str, str, str, int, list[tuple[str, float, float, float]]]:
    """One incident: (scenario, variant, profile, seed, [(cause, score, confidence, margin)] most likely first)."""
    name, variant, profile, seed, messages = job
    a = analyze(simulate(name, messages=messages, seed=seed, profile=profile, noise=NOISE[variant]))
    return name, variant, profile, seed, [(h.cause, h.score, h.confidence, h.margin) for h in a.ranked]


def incidents(messages: int, seeds: list[int], jobs: int, scenarios: list[str] | None = None
              ) -> Iterator[tuple[str, str, str, int, list]]:
    """Every scenario (or those named) x variant x profile x seed, ranked (``jobs`` processes)."""
    work = [(name, variant, profile, seed, messages) for name in scenarios or SCENARIOS for variant in NOISE
            for profile in PROFILES for seed in seeds]
    if jobs <= 1:
        yield from map(ranking, work)
        return
    with ProcessPoolExecutor(jobs) as pool:
        yield from pool.map(ranking, work)


def fit(messages: int, seeds: list[int], jobs: int, method: str) -> dict:
    """The calibration fitted on every hypothesis of the incidents of ``seeds``; written as data."""
    scores, labels = [], []
    for name, _variant, _profile, _seed, ranked in incidents(messages, seeds, jobs):
        truth = SCENARIOS[name].root_cause
        for cause, score, _confidence, _margin in ranked:
            scores.append(score)
            labels.append(cause == truth)
    if method == "isotonic":
        knots, shares = fit_isotonic(np.array(scores), np.array(labels))
        mapping = {"scores": knots, "probabilities": shares}
    else:
        a_, b_ = fit_platt(np.array(scores), np.array(labels))
        mapping = {"a": round(a_, 6), "b": round(b_, 6)}
    data = {"method": method, **mapping,
            "fitted_on": {"seeds": seeds, "messages": messages, "scenarios": len(SCENARIOS),
                          "variants": list(NOISE), "profiles": list(PROFILES), "hypotheses": len(scores),
                          "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}}
    CALIBRATION_FILE.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    load_calibration.cache_clear()
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--fit", default="", help="seeds to fit the calibration on (held apart from --seeds)")
    ap.add_argument("--method", choices=("isotonic", "platt"), default="isotonic", help="calibration to fit")
    ap.add_argument("--jobs", type=int, default=1, help="incidents analysed in parallel (processes)")
    ap.add_argument("--scenarios", default="", help="only these scenarios (comma-separated; e.g. the harmless ones: "
                    + ",".join(HARMLESS) + ")")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    only = [s for s in args.scenarios.split(",") if s]
    if unknown := set(only) - set(SCENARIOS):
        ap.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    if args.fit:
        fit_seeds = [int(s) for s in args.fit.split(",")]
        if set(fit_seeds) & set(seeds):
            ap.error("--fit seeds must be held apart from --seeds")
        data = fit(args.messages, fit_seeds, args.jobs, args.method)
        shape = (f"{len(data['scores'])} steps" if args.method == "isotonic" else f"a={data['a']}, b={data['b']}")
        print(f"{args.method} calibration fitted on seeds {fit_seeds}: {shape} "
              f"({data['fitted_on']['hypotheses']:,} hypotheses)\n")
    started = time.perf_counter()
    print(f"{args.messages:,} messages per incident, seeds {seeds}, each with the preceding hour as baseline; "
          "cell = true cause first / incidents, mean confidence of the true cause, mean top-1 margin\n")
    print("| scenario | true cause | variant | " + " | ".join(PROFILES) + " |")
    print("|---|---|---|" + "---|" * len(PROFILES))
    rows: dict[tuple[str, str, str], list[tuple[bool, float, float]]] = {}
    probs, labels, margins, misses = [], [], [], []
    for name, variant, profile, seed, ranked in incidents(args.messages, seeds, args.jobs, only):
        truth = SCENARIOS[name].root_cause
        top_cause, _, top_confidence, top_margin = ranked[0]
        mine = next((confidence for cause, _, confidence, _ in ranked if cause == truth), 0.0)
        rows.setdefault((name, variant, profile), []).append((top_cause == truth, mine, top_margin))
        margins.append(top_margin)
        if top_cause != truth:
            misses.append(f"{name}/{variant}/{profile}/seed {seed}: {top_cause} ({top_confidence:.2f}) over "
                          f"{truth} ({mine:.2f})")
        for cause, _, confidence, _ in ranked:
            probs.append(confidence)
            labels.append(cause == truth)
    hits = total = harmless_hits = harmless_total = 0
    for name, sc in SCENARIOS.items():
        if only and name not in only:
            continue
        for variant in NOISE:
            cells = []
            for profile in PROFILES:
                runs = rows[(name, variant, profile)]
                first = sum(r[0] for r in runs)
                hits += first
                total += len(runs)
                if name in HARMLESS:
                    harmless_hits += first
                    harmless_total += len(runs)
                cells.append(f"{first}/{len(runs)}, {np.mean([r[1] for r in runs]):.2f}, "
                             f"margin {np.mean([r[2] for r in runs]):.2f}")
            print(f"| {name} | {sc.root_cause} | {variant} | " + " | ".join(cells) + " |")
    print(f"\ntrue cause ranked first in {hits} of {total} incidents ({hits / total:.1%}); healthy first in "
          f"{harmless_hits} of {harmless_total} harmless windows (healthy, with noise, blips)")
    print(f"top-1 margin: median {np.median(margins):.2f}, 10th percentile {np.percentile(margins, 10):.2f}")
    print(f"Brier score over {len(probs):,} hypotheses: {brier(np.array(probs), np.array(labels)):.4f}\n")
    print("| confidence | hypotheses | mean confidence | share that was the true cause |")
    print("|---|---|---|---|")
    for r in reliability(np.array(probs), np.array(labels)):
        print(f"| {r['bin']} | {r['n']:,} | {r['predicted']:.2f} | {r['observed']:.2f} |")
    if misses:
        print("\nmissed:\n" + "\n".join(f"- {m}" for m in misses))
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
