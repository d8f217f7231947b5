"""Issue 18 figures: windows bigger than memory. Simulate-and-bundle, then report, incidents of
1M, 5M and 10M messages; wall time and peak memory of each step, and the slope of peak memory
against the window.

Each step runs in its own subprocess so that its peak memory is its own. ``peak_mb`` is the
largest ru_maxrss of the step's process and of its children (the papermill kernel, the
simulator's workers; ``self_mb`` / ``child_mb`` apart); ``tree_mb`` is the peak of the
proportional set size (PSS, /proc/PID/smaps_rollup) summed over the step's whole process tree,
sampled every 0.2 s: the step's memory when its processes run side by side. ``cpu_s`` is
the CPU time of the step and its children (every thread: DuckDB's too), the figure that does
not grow with the machine's load the way wall time does.
Usage: python benchmarks/bench_scale.py [--messages 1000000,5000000,10000000]
       [--scenario whatsapp-rate-limit] [--steps simulate,report] [--bundles DIR]
``--bundles DIR`` keeps the bundles in DIR (and reuses them when ``simulate`` is not among
the steps). Targets on 2 cores: 10M messages simulated, bundled and reported in <= 10 min with
peak memory <= 8 GB; peak memory growing far slower than the window; the 1M report no slower
than before (14-28 s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

STEP = r"""
import json, resource, sys, time
step, path, scenario, messages = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t0 = time.perf_counter()
if step == "simulate":
    from forensics.simulate.stream import simulate_bundle
    simulate_bundle(scenario, path, messages=messages, seed=7, overwrite=True)
    extra = {}
elif step == "report":
    from pathlib import Path
    from forensics.report.runner import build_report
    out = build_report(path, Path(path).with_name(Path(path).name + "-report"))
    summary = json.loads(out["json"].read_text())
    extra = {"top_cause": summary["hypotheses"][0]["cause"]}
wall = time.perf_counter() - t0
own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
cpu = sum(u.ru_utime + u.ru_stime for u in (own, children))
print(json.dumps({"step": step, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                  "peak_mb": round(max(own.ru_maxrss, children.ru_maxrss) / 1024),
                  "self_mb": round(own.ru_maxrss / 1024), "child_mb": round(children.ru_maxrss / 1024), **extra}))
"""


def run_step(step: str, path: Path, scenario: str, messages: int) -> dict:
    load = os.getloadavg()[0]
    with subprocess.Popen([sys.executable, "-c", STEP, step, str(path), scenario, str(messages)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        tree = TreeMemory(proc.pid)
        tree.start()
        stdout, stderr = proc.communicate()
        tree.stop.set()
        tree.join()
    if proc.returncode:
        raise SystemExit(f"{step} of {messages:,} messages failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["tree_mb"] = round(tree.peak_kb / 1024)
    result["load"] = f"{load:.1f}-{os.getloadavg()[0]:.1f}"
    return result


class TreeMemory(threading.Thread):
    """Samples, every 0.2 s, the PSS summed over process ``root`` and all its descendants
    (Linux /proc); ``peak_kb`` is the largest sum seen. PSS splits shared pages between the
    processes sharing them, so the libraries every worker maps are not counted twice."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root, self.peak_kb, self.stop = root, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.peak_kb = max(self.peak_kb, sum(_pss_kb(pid) for pid in self.tree()))

    def tree(self) -> set[int]:
        parents = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # the process ended
            parents[int(stat.parent.name)] = int(fields[1])
        found, grew = {self.root}, True
        while grew:
            more = {pid for pid, ppid in parents.items() if ppid in found} - found
            found |= more
            grew = bool(more)
        return found


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass  # the process ended
    return 0


def slope(points: list[tuple[int, int]]) -> float:
    """Least-squares MB of peak memory per million messages."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den * 1e6 if den else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", default="1000000,5000000,10000000")
    ap.add_argument("--scenario", default="whatsapp-rate-limit")
    ap.add_argument("--steps", default="simulate,report")
    ap.add_argument("--bundles", default=None, help="keep (and reuse) the bundles in this directory")
    args = ap.parse_args()
    sizes = [int(v) for v in args.messages.split(",")]
    steps = args.steps.split(",")
    print(f"cores: {os.cpu_count()}; load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        where = Path(args.bundles or tmp)
        where.mkdir(parents=True, exist_ok=True)
        rows = []
        for n in sizes:
            bundle = where / f"{args.scenario}-{n}"
            for step in steps:
                r = run_step(step, bundle, args.scenario, n)
                if step == "simulate":
                    r["bundle_mb"] = round(sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()) / 1e6)
                rows.append({"messages": n, **r})
                print(json.dumps(rows[-1]), flush=True)
    print(f"\nscenario {args.scenario}")
    print(f"{'messages':>11s} {'step':9s} {'wall s':>8s} {'cpu s':>7s} {'peak MB':>8s} {'tree MB':>8s}  {'load':9s} "
          "detail")
    shown = ("messages", "step", "wall_s", "cpu_s", "peak_mb", "tree_mb", "load")
    for r in rows:
        detail = {k: v for k, v in r.items() if k not in shown}
        print(f"{r['messages']:11,d} {r['step']:9s} {r['wall_s']:8.1f} {r['cpu_s']:7.1f} {r['peak_mb']:8d} "
              f"{r['tree_mb']:8d}  {r['load']:9s} {detail or ''}")
    for step in steps:
        for figure in ("peak_mb", "tree_mb"):
            points = [(r["messages"], r[figure]) for r in rows if r["step"] == step]
            if len(points) > 1:
                print(f"{step}: {figure} slope {slope(points):.0f} MB per million messages")
    by = {}
    for r in rows:
        by.setdefault(r["messages"], 0.0)
        by[r["messages"]] += r["wall_s"]
    for n, total in by.items():
        print(f"{n:,} messages: {' + '.join(steps)} {total:.0f} s")


if __name__ == "__main__":
    main()
