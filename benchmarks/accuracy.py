"""Root-cause ranking accuracy: for every simulator scenario and both profiles, the rank and
confidence of the true cause. Prints a Markdown table (the README's accuracy table).

Usage: python benchmarks/accuracy.py [--messages 3000] [--seeds 1,2,3]
"""

from __future__ import annotations

import argparse

from forensics.analysis.pipeline import analyze
from forensics.simulate import SCENARIOS, simulate

PROFILES = ("runbook", "chat4all-v2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--seeds", default="1,2,3")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{args.messages:,} messages per incident, seeds {seeds}; cell = rank of the true cause "
          "(confidence), one per seed\n")
    print("| scenario | true cause | " + " | ".join(PROFILES) + " |")
    print("|---|---|" + "---|" * len(PROFILES))
    hits = total = 0
    for name, sc in SCENARIOS.items():
        cells = []
        for profile in PROFILES:
            runs = []
            for seed in seeds:
                ranked = analyze(simulate(name, messages=args.messages, seed=seed, profile=profile)).hypotheses
                rank = ranked.index[ranked["cause"] == sc.root_cause]
                pos = int(ranked.loc[rank[0], "rank"]) if len(rank) else None
                conf = float(ranked.loc[rank[0], "confidence"]) if len(rank) else 0.0
                hits += pos == 1
                total += 1
                runs.append(f"#{pos} ({conf:.2f})" if pos else "absent")
            cells.append(", ".join(runs))
        print(f"| {name} | {sc.root_cause} | " + " | ".join(cells) + " |")
    print(f"\ntrue cause ranked first in {hits} of {total} incidents ({hits / total:.0%})")


if __name__ == "__main__":
    main()
