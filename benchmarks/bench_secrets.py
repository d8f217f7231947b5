"""Issue 14 figure: the cost of masking secrets in a bundle's evidence (what ``write_bundle`` and
``collect`` do by default), on a simulated 1M-message incident.

Usage: python benchmarks/bench_secrets.py [--messages 1000000] [--scenario whatsapp-rate-limit]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

from forensics.evidence import mask_evidence_secrets
from forensics.simulate import simulate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--scenario", default="whatsapp-rate-limit")
    args = ap.parse_args()
    ev = simulate(args.scenario, messages=args.messages, seed=7)
    rows = sum(len(f) for f in ev.tables.values())
    cpu, wall = time.process_time(), time.perf_counter()
    masked = mask_evidence_secrets(ev)
    print(f"cores: {os.cpu_count()}; load average: {os.getloadavg()[0]:.2f}")
    print(f"{args.messages:,} messages, {rows:,} rows: masked in {time.perf_counter() - wall:.1f} s wall, "
          f"{time.process_time() - cpu:.1f} s CPU; {masked.secrets['cells']:,} cells changed; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB (simulation included)")


if __name__ == "__main__":
    main()
