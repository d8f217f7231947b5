"""Issue 2 and 6 figures: simulate and write a 1M-message bundle, verify and load it back, build
its RCA report (HTML size), and the demo end to end.

Each step runs in its own subprocess so that peak memory (ru_maxrss) is the step's own.
Usage: python benchmarks/bench_bundle.py [--messages 1000000] [--scenario whatsapp-rate-limit]
Targets: simulate + write <= 60 s and <= 3 GB on 2 cores; demo <= 30 s incl. kernel start;
report of a 1M-message bundle <= 60 s with HTML <= 10 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

STEP = r"""
import json, resource, sys, time
step, path, scenario, messages = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t0 = time.perf_counter()
if step == "write":
    from forensics.simulate import simulate
    from forensics.bundle import write_bundle
    ev = simulate(scenario, messages=messages, seed=7, baseline=None)  # the window alone, as measured before
    t1 = time.perf_counter()
    write_bundle(ev, path)
    rows = sum(len(f) for f in ev.tables.values())
    extra = {"simulate_s": round(t1 - t0, 2), "write_s": round(time.perf_counter() - t1, 2), "rows": rows}
elif step == "read":
    from forensics.bundle import read_bundle
    ev = read_bundle(path)  # verifies every sha256 first
    extra = {"rows": sum(len(f) for f in ev.tables.values())}
elif step == "report":
    from pathlib import Path
    from forensics.report.runner import build_report
    out = build_report(path, Path(path).with_name("report"))
    extra = {"html_mb": round(out["html"].stat().st_size / 1e6, 2)}
elif step == "demo":
    from forensics.cli import main
    assert main(["demo", "--out", path, "-q"]) == 0
    extra = {}
elif step == "verify":
    from forensics.bundle import verify_bundle
    assert verify_bundle(path).ok
    extra = {}
wall = time.perf_counter() - t0
# the report's notebook runs in a kernel subprocess: count the larger of the two
peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"step": step, "wall_s": round(wall, 2), "peak_rss_mb": round(peak / 1024), **extra}))
"""


def run_step(step: str, path: Path, scenario: str, messages: int) -> dict:
    out = subprocess.run([sys.executable, "-c", STEP, step, str(path), scenario, str(messages)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--scenario", default="whatsapp-rate-limit")
    ap.add_argument("--skip-demo", action="store_true")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}; load average: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-bundle-") as tmp:
        bundle = Path(tmp) / "bundle"
        results = [run_step("write", bundle, args.scenario, args.messages)]
        size = sum(p.stat().st_size for p in bundle.iterdir())
        results.append(run_step("verify", bundle, args.scenario, args.messages))
        results.append(run_step("read", bundle, args.scenario, args.messages))
        results.append(run_step("report", bundle, args.scenario, args.messages))
        if not args.skip_demo:
            demo = run_step("demo", Path(tmp) / "demo", args.scenario, args.messages)
            results.append({**demo, "step": "demo (5k messages, kernel start included)"})
    print(f"\n{args.messages:,} messages, scenario {args.scenario}; bundle size {size / 1e6:.0f} MB")
    print(f"{'step':45s} {'wall s':>8s} {'peak RSS MB':>12s}  detail")
    for r in results:
        detail = {k: v for k, v in r.items() if k not in ("step", "wall_s", "peak_rss_mb")}
        print(f"{r['step']:45s} {r['wall_s']:8.2f} {r['peak_rss_mb']:12d}  {detail or ''}")


if __name__ == "__main__":
    main()
