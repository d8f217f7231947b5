"""Issue 18, live: ``forensics collect`` of a big window from the local MongoDB, with flat memory.

Seeds ``--messages`` messages spread over 24 hours (about 3.2 status-history rows each, runbook
layout; :func:`bench_mongo_load.seed`) into a database of its own on FORENSICS_MONGO_URI
(unless it holds exactly that already), then collects windows covering a growing share of
them, each in a fresh child process so that its peak resident memory (ru_maxrss) is its own:

  stream   ``forensics collect --sources mongo`` as shipped: every server batch appended to the
           bundle as it is read (forensics.sources.registry.collect_bundle)
  whole    the same sources read into memory first, then written (collect + write_bundle:
           how collection worked before), for comparison
  pushdown what a live report of a window above ``pushdown_messages`` asks instead of rows:
           the bounded count, then the whole-window figures as aggregation pipelines
           (forensics.report.pushdown.figures_from_server); rows are the figures' sizes

and prints rows, wall time, peak memory and the load average around each run. Flat memory
means the stream's peak does not grow with the window. ``--server-pid`` (a local server) adds
the server's own peak resident memory during each run, sampled from /proc every 0.2 s, and its
resident memory when the run began. ``--drop`` drops the database after.

    eval "$(scripts/services env)"
    .venv/bin/python benchmarks/bench_collect.py [--messages 1000000] [--hours 6,12,24] [--ways stream,whole]
        [--uri URI] [--server-pid PID]
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

sys.path.insert(0, str(Path(__file__).parent))

from bench_mongo_load import seed  # noqa: E402

START = "2025-12-03T00:00:00Z"  # the seed's first message (bench_mongo_load.T0_MS)

CHILD = r"""
import json, resource, sys, time
way, out, database, since, until = sys.argv[1:6]
options = {"mongo_database": database, "timeout_s": "3600", "max_rows": "20000000",
           "connect_timeout_s": "600"}  # SecantusDB answers no heartbeat during a long scan
t0 = time.perf_counter()
if way == "stream":
    from forensics.cli import main
    argv = ["collect", "--sources", "mongo", "--since", since, "--until", until, "--baseline", "none",
            "--out", out, "-q"] + [a for k, v in options.items() for a in ("-o", f"{k}={v}")]
    assert main(argv) == 0
elif way == "whole":
    from forensics.bundle import write_bundle
    from forensics.sources.registry import collect
    from forensics.timeutil import Window
    ev, queries, custody = collect(["mongo"], Window.parse(since, until), "runbook", options)
    write_bundle(ev, out, queries=queries, custody=custody)
else:  # pushdown: what a live report of a big window asks the server instead of reading the rows
    import os
    from forensics.config import Limits
    from forensics.report.pushdown import figures_from_server
    from forensics.sources.mongo import PUSHDOWN_MESSAGES, MongoSource
    from forensics.timeutil import Window
    window = Window.parse(since, until)
    with MongoSource(os.environ["FORENSICS_MONGO_URI"], "runbook", Limits(max_rows=20_000_000, timeout_s=3600, connect_timeout_s=600),
                     database=database) as src:
        counted = src.count_messages(window, at_most=PUSHDOWN_MESSAGES)
        figures = figures_from_server(src, window)
    rows = {"counted": counted, "messages": figures.messages, "stuck": int(figures.stuck["count"].sum()),
            "failed_groups": len(figures.failed_by_error), "pipelines": figures.pipelines}
wall = time.perf_counter() - t0
if way != "pushdown":
    manifest = json.load(open(f"{out}/manifest.json"))
    rows = {t: e["rows"] for t, e in manifest["tables"].items()}
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"way": way, "wall_s": round(wall, 1), "peak_mb": round(peak / 1024), "rows": rows}))
"""


def window(hours: float) -> tuple[str, str]:
    import pandas as pd

    start = pd.Timestamp(START)
    return START, (start + pd.Timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def seeded(uri: str, database: str, messages: int) -> bool:
    import pymongo

    info = pymongo.MongoClient(uri, serverSelectionTimeoutMS=10_000)[database]["bench_info"].find_one()
    return bool(info) and info.get("messages") == messages


def resident_mb(pid: int) -> int:
    """A process's resident memory now (VmRSS), MB."""
    with open(f"/proc/{pid}/status") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return round(kb / 1024)


class ServerMemory:
    """The highest resident memory of the server process while a run lasts, sampled every 0.2 s
    (its VmHWM would be the peak since it started, not the run's)."""

    def __init__(self, pid: int | None) -> None:
        self.pid, self.peak, self.start = pid, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, resident_mb(self.pid))

    def __enter__(self) -> ServerMemory:
        if self.pid:
            self.start = self.peak = resident_mb(self.pid)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.pid:
            self._thread.join()


def run(way: str, out: Path, uri: str, database: str, hours: float, server_pid: int | None) -> dict:
    since, until = window(hours)
    load = os.getloadavg()[0]
    with ServerMemory(server_pid) as server:
        done = subprocess.run([sys.executable, "-c", CHILD, way, str(out), database, since, until],
                              capture_output=True, text=True, env={**os.environ, "FORENSICS_MONGO_URI": uri})
    if done.returncode:
        raise SystemExit(f"{way} over {hours} h failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(hours=hours, load=f"{load:.1f}-{os.getloadavg()[0]:.1f}")
    if server_pid:
        result.update(server_start_mb=server.start, server_peak_mb=server.peak)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uri", default=os.environ.get("FORENSICS_MONGO_URI"))
    ap.add_argument("--database", default="bench_collect")
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--hours", default="6,12,24", help="windows from the seed's start, hours (24 = every message)")
    ap.add_argument("--ways", default="stream,whole")
    ap.add_argument("--server-pid", type=int, default=None, help="a local server's pid: its peak memory per run")
    ap.add_argument("--drop", action="store_true", help="drop the database afterwards")
    args = ap.parse_args()
    if not args.uri:
        raise SystemExit('FORENSICS_MONGO_URI is not set: eval "$(scripts/services env)"')
    if not seeded(args.uri, args.database, args.messages):
        print(f"seeding {args.messages:,} messages into {args.database}", file=sys.stderr, flush=True)
        print(json.dumps(seed(args.uri, args.database, args.messages, lambda s: print(s, file=sys.stderr))))
    try:
        with tempfile.TemporaryDirectory(prefix="bench-collect-") as tmp:
            for hours in (float(h) for h in args.hours.split(",")):
                for way in args.ways.split(","):
                    out = Path(tmp) / f"{way}-{hours:g}h"
                    print(json.dumps(run(way, out, args.uri, args.database, hours, args.server_pid)), flush=True)
    finally:
        if args.drop:
            import pymongo

            pymongo.MongoClient(args.uri).drop_database(args.database)
    return 0


if __name__ == "__main__":
    sys.exit(main())
