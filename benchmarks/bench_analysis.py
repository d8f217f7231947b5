"""Analysis at scale: simulate a 1M-message incident into a bundle, then analyze it.

The analysis runs in its own subprocess that reads the bundle back, so its peak memory
(ru_maxrss) is the evidence plus the analysis, not the simulator's. Reports wall and CPU
time of ``analyze`` (a busy machine inflates wall time, not CPU time), wall time of each
detector, rows per table, peak RSS, and the ranking.

Usage: python benchmarks/bench_analysis.py [--messages 1000000] [--scenario whatsapp-rate-limit]
       [--profile runbook] [--bundle DIR (reuse)]
Target: the whole detector run well under ~15 s for 1M messages / ~4M status events.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SIMULATE = r"""
import json, resource, sys, time
from forensics.simulate import simulate
from forensics.bundle import write_bundle
path, scenario, messages, profile = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
t0 = time.perf_counter()
ev = simulate(scenario, messages=messages, seed=7, profile=profile, baseline=None)  # the window alone
write_bundle(ev, path, overwrite=True)
print(json.dumps({"simulate_and_write_s": round(time.perf_counter() - t0, 2),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""

ANALYZE = r"""
import json, resource, sys, time
from forensics.bundle import read_bundle
from forensics.analysis.pipeline import analyze
from forensics.analysis import detectors

def rss():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

t0 = time.perf_counter()
ev = read_bundle(sys.argv[1])
read_s = time.perf_counter() - t0
rss_read = rss()
per = {}
for name, fn in list(detectors.DETECTORS.items()):  # time each detector inside the real run
    def timed(ctx, fn=fn, name=name):
        t = time.perf_counter()
        out = list(fn(ctx))
        per[name] = round(time.perf_counter() - t, 3)
        return out
    detectors.DETECTORS[name] = timed
t1, c1 = time.perf_counter(), time.process_time()
a = analyze(ev)
analyze_s, analyze_cpu_s = time.perf_counter() - t1, time.process_time() - c1
print(json.dumps({
    "rows": {k: len(v) for k, v in ev.tables.items()}, "read_bundle_s": round(read_s, 2),
    "analyze_s": round(analyze_s, 2), "analyze_cpu_s": round(analyze_cpu_s, 2), "detectors_s": round(sum(per.values()), 2),
    "per_detector_s": dict(sorted(per.items(), key=lambda kv: -kv[1])),
    "rss_after_read_mb": rss_read, "peak_rss_mb": rss(),
    "findings": len(a.findings), "timeline_rows": len(a.timeline), "error_groups": len(a.error_groups),
    "ranking": [(h.cause, round(h.confidence, 3)) for h in a.ranked[:4]],
    "truth": (ev.scenario or {}).get("root_cause")}))
"""


def run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--scenario", default="whatsapp-rate-limit")
    p.add_argument("--profile", default="runbook")
    p.add_argument("--bundle", default=None, help="reuse (or create) this bundle directory")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(args.bundle) if args.bundle else Path(tmp) / "bundle"
        if not (bundle / "manifest.json").exists():
            print(f"simulating {args.scenario} ({args.messages:,} messages, {args.profile}) into {bundle} ...",
                  file=sys.stderr)
            print("simulate:", json.dumps(run(SIMULATE, str(bundle), args.scenario, str(args.messages),
                                              args.profile)))
        result = run(ANALYZE, str(bundle))
        print("analyze:", json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
