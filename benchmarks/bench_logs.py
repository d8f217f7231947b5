"""Log parser throughput and peak memory on a generated file of service logs.

    .venv/bin/python benchmarks/bench_logs.py [--lines 1000000] [--gzip] [--keep DIR]

The file mixes what the parser meets in practice: logback JSON (router, connectors), Spring
Boot console lines with stack traces, ``docker compose logs`` prefixes with ``--timestamps``,
and a little binary garbage. Parsing runs in a fresh child process so that its peak resident
memory (``ru_maxrss``) is the parser's, not the generator's.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path


def _lines(n: int):
    """Yield ``n`` log lines (stack traces count as lines) in a fixed, reproducible mix."""
    base = 1_764_770_400.0  # 2025-12-03T14:00:00Z
    emitted = 0
    i = 0
    while emitted < n:
        t = base + i * 0.01
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"
        mid = str(uuid.UUID(int=i * 7919 + 1))
        cid = str(uuid.UUID(int=i % 997 + 10**30))
        kind = i % 20
        if kind < 12:
            record = {"timestamp": stamp + "+0000", "version": "1", "level": "INFO" if kind else "ERROR",
                      "logger": "com.chat4all.router.handler.RoutingHandler", "thread": "ntainer#0-0-C-1",
                      "message": f"Routing message: messageId={mid}, conversationId={cid}, channel=WHATSAPP",
                      "level_value": 20000, "app_name": "router-service"}
            out = [json.dumps(record)]
        elif kind < 16:
            out = [f"{stamp}Z  WARN 1 --- [whatsapp-connector] [nio-8091-exec-3] c.c.w.WhatsAppClient"
                   f"                     : Connector returned error: status=429 TOO_MANY_REQUESTS, "
                   f"X-RateLimit-Remaining: 0 Retry-After: 30 messageId={mid}"]
        elif kind < 18:
            out = [f"telegram-connector-1  | {stamp}123456Z {stamp}Z ERROR 1 --- [telegram-connector] [main] "
                   f"c.c.t.TelegramClient : Error calling connector: timeout for message {mid}",
                   f"telegram-connector-1  | {stamp}123457Z java.util.concurrent.TimeoutException: read timeout",
                   f"telegram-connector-1  | {stamp}123458Z \tat reactor.core.publisher.Mono.block(Mono.java:1738)",
                   f"telegram-connector-1  | {stamp}123459Z \t... 42 more"]
        elif kind < 19:
            out = [f"ERROR - Failed to consume from Kafka: Connection refused (conversation {cid})"]
        else:
            out = ["\x00\x17\x7f binary \udcff garbage " + mid[:8]]
        for line in out:
            if emitted < n:
                yield line
                emitted += 1
        i += 1


def generate(path: Path, n: int, compress: bool) -> None:
    opener = gzip.open if compress else open
    with opener(path, "wb") as fh:
        batch = []
        for line in _lines(n):
            batch.append(line.encode("utf-8", "surrogateescape") + b"\n")
            if len(batch) == 10_000:
                fh.write(b"".join(batch))
                batch.clear()
        fh.write(b"".join(batch))


def _rss_kib() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def measure(path: str) -> dict:
    from forensics.sources.logs import read_logs

    baseline = _rss_kib()
    start = time.perf_counter()
    frame = read_logs([path], profile="chat4all-v2")
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rows": len(frame), "seconds": round(elapsed, 2), "baseline_rss_mib": round(baseline / 1024, 1),
            "peak_rss_mib": round(peak / 1024, 1), "frame_mib": round(frame.memory_usage(deep=True).sum() / 2**20, 1),
            "unparsed_rows": int(frame["parse_error"].notna().sum()),
            "rows_with_message_id": int(frame["message_id"].notna().sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--gzip", action="store_true", help="write and read a .gz file")
    parser.add_argument("--keep", default=None, help="directory to keep the generated file in")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-logs-"))
    path = workdir / ("router-service.log.gz" if args.gzip else "router-service.log")
    try:
        generate(path, args.lines, args.gzip)
        size = path.stat().st_size
        out = subprocess.run([sys.executable, __file__, "--measure", str(path)], check=True,
                             capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        result.update(lines=args.lines, file_mib=round(size / 2**20, 1),
                      lines_per_second=round(args.lines / result["seconds"]))
        print(json.dumps(result, indent=2))
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
            os.rmdir(workdir)


if __name__ == "__main__":
    main()
