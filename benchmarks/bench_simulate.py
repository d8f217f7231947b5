"""Simulator at scale: 1M messages for router-outage and whatsapp-rate-limit.

Each run is its own subprocess, so its peak memory is that process's ``ru_maxrss`` (read
by the parent from ``os.wait4``; interpreter and imports included). Reports wall time and
CPU time of ``simulate`` (CPU time is what a busy machine does not inflate), the stages
as the progress callback saw them, rows per table, and the peak RSS.

Usage: python benchmarks/bench_simulate.py [--messages 1000000] [--profile runbook]
       [--scenario router-outage --scenario whatsapp-rate-limit] [--baseline none|window|30m]
Target: well under 30 s and under 2.5 GB peak for 1M messages (3-4M status events) without a
baseline; a baseline as long as the window simulates twice the messages.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time
from forensics.simulate import simulate
scenario, messages, profile, baseline = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
stages = {}
t0, c0 = time.perf_counter(), time.process_time()
ev = simulate(scenario, messages=messages, seed=7, profile=profile, baseline=baseline,
              progress=lambda stage, f: stages.setdefault(stage, round(time.perf_counter() - t0, 2)))
print(json.dumps({"simulate_s": round(time.perf_counter() - t0, 2), "simulate_cpu_s": round(time.process_time() - c0, 2),
                  "stages_s": stages, "rows": ev.row_counts(),
                  "baseline_rows": ev.baseline.row_counts() if ev.baseline is not None else {}}))
"""


def run(scenario: str, messages: int, profile: str, baseline: str = "none") -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, scenario, str(messages), profile, baseline], stdout=subprocess.PIPE,
                            text=True)
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{scenario}: child exited with {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(scenario=scenario, messages=messages, profile=profile, baseline=baseline,
                  process_wall_s=round(time.perf_counter() - t0, 2), peak_rss_mb=round(usage.ru_maxrss / 1024))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--profile", default="runbook")
    p.add_argument("--scenario", action="append", dest="scenarios")
    p.add_argument("--baseline", default="none", help="baseline period: none (default), window or a duration")
    args = p.parse_args(argv)
    for scenario in args.scenarios or ["router-outage", "whatsapp-rate-limit"]:
        r = run(scenario, args.messages, args.profile, args.baseline)
        print(f"{r['scenario']:22s} {r['messages']:>9,} messages  simulate {r['simulate_s']:6.2f} s wall "
              f"({r['simulate_cpu_s']:.2f} s CPU)  peak RSS {r['peak_rss_mb']:,} MB  "
              f"status_events {r['rows']['status_events']:,}"
              + (f" (+{r['baseline_rows']['status_events']:,} in the baseline)" if r["baseline_rows"] else ""))
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
