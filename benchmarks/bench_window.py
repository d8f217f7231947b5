"""Issue 14 figure: ``forensics report`` on a bundle whose window spans 100 years needs the memory
of its evidence, not of its window.

Three reports of the same evidence, each in its own subprocess (peak RSS = the larger of the
CLI process and the notebook kernel it starts): the bundle as written (1 h window), the same
bundle with its manifest window rewritten to 1990-2089 (re-hashed, as a received bundle would
be), and the first one reported with ``--until 2099-01-01``. Before the window was clamped,
the century bundle ended in MemoryError and ``--until 2099`` grew the kernel to 20 GB.
Usage: python benchmarks/bench_window.py [--messages 100000] [--scenario whatsapp-rate-limit]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

STEP = r"""
import json, resource, sys, time
from forensics.cli import main
t0 = time.perf_counter()
code = main(sys.argv[1:])
wall = time.perf_counter() - t0
peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"code": code, "wall_s": round(wall, 2), "peak_rss_mb": round(peak / 1024)}))
"""


def forensics(*argv: str) -> dict:
    out = subprocess.run([sys.executable, "-c", STEP, *argv], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def with_window(bundle: Path, target: Path, start: str, end: str) -> Path:
    """A copy of ``bundle`` whose manifest claims another window, re-hashed so that it verifies."""
    shutil.copytree(bundle, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["window"] = {"start": start, "end": end}
    text = json.dumps(manifest, indent=2) + "\n"
    (target / "manifest.json").write_text(text)
    (target / "manifest.sha256").write_text(hashlib.sha256(text.encode()).hexdigest() + "  manifest.json\n")
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--scenario", default="whatsapp-rate-limit")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}; load average: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-window-") as tmp:
        bundle = Path(tmp) / "bundle"
        forensics("simulate", "--scenario", args.scenario, "--messages", str(args.messages), "--out", str(bundle),
                  "-q")
        century = with_window(bundle, Path(tmp) / "century", "1990-01-01T00:00:00Z", "2089-12-31T00:00:00Z")
        cases = [("bundle as written (1 h window)", bundle, ()),
                 ("manifest window 1990-2089 (100 years)", century, ()),
                 ("--until 2099-01-01", bundle, ("--until", "2099-01-01T00:00:00Z"))]
        rows = []
        for label, path, extra in cases:
            out = Path(tmp) / f"report-{len(rows)}"
            result = forensics("report", str(path), "--out", str(out), "--formats", "json", "-q", *extra)
            summary = json.loads((out / "summary.json").read_text())
            rows.append((label, result, summary))
    print(f"\n{args.messages:,} messages, scenario {args.scenario}")
    print(f"{'case':40s} {'exit':>4s} {'wall s':>7s} {'peak RSS MB':>12s}  analysed window / top cause")
    for label, r, s in rows:
        top = (s.get("hypotheses") or [{}])[0]
        print(f"{label:40s} {r['code']:4d} {r['wall_s']:7.2f} {r['peak_rss_mb']:12d}  "
              f"{s['window']['start']} .. {s['window']['end']} / {top.get('cause')} ({top.get('confidence')})")
        if s.get("window_note"):
            print(f"{'':40s} note: {s['window_note']}")


if __name__ == "__main__":
    main()
