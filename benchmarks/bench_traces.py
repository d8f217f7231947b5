"""Trace parsing and critical-path speed.

    .venv/bin/python benchmarks/bench_traces.py [--spans 100000] [--cp-spans 10000]

1. Parse a v1 trace set of ``--spans`` spans (1000-span traces of Chat4All-like spans:
   8 tags, a log on one span in ten) into the canonical spans table with
   :func:`forensics.traces.parse_traces`; target >= 300k spans/s. The same set is also
   written as a UI download (``{"data": [...]}``, 87 MB for 100k spans) and read back with
   :func:`read_trace_file`, JSON parsing included, by each reader
   (``FORENSICS_TRACE_READER``): the native one (native/trace_reader, from the bytes to
   Arrow columns, two threads for a big file) and the Python one (orjson, then pyarrow);
   target >= 200k spans/s in median wall time of ``--runs`` runs (best and CPU shown too). The JSON parsing alone (orjson, and the standard
   library's json for comparison) is timed too, and orjson's decoding with the freeing of
   its objects: the floor of a reader that decodes the download into Python objects (its
   spans/s is the ceiling of such a reader, the Python one).
2. The naive way for comparison: ``pd.json_normalize`` per span, then one concat; run on
   a sample (it is two orders of magnitude slower) and reported as spans/s.
3. Critical path of one ``--cp-spans``-span trace, twice: a random tree (overlapping
   siblings, some children outliving their parent) and a chain as deep as the trace is
   long (the walk's worst case); target < 1 s. Flags, tree and paths of the 100k set too.

Times are the best of three (``read_trace_file``: best and median of ``--runs``), wall
clock and CPU (``process_time``): on a shared machine the CPU figure is the steadier one;
the load average is printed first and after the file reads.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import orjson
import pandas as pd

from forensics.traces import critical_path, parse_traces, read_trace_file, span_flags, span_tree
from forensics.traces.native import READER_ENV, native_module

SERVICES = ["api-gateway", "message-service", "router-service", "user-service", "file-service",
            "whatsapp-connector", "telegram-connector", "instagram-connector"]
T0 = 1_765_000_000_000_000


def _trace(rng: random.Random, n: int, trace_no: int) -> dict:
    """One v1 trace of n spans: a random tree whose children mostly sit inside their parent."""
    tid = f"{trace_no + 1:032x}"
    spans = []
    start = [T0 + trace_no * 10_000_000]
    dur = [5_000_000]
    for i in range(n):
        if i:
            p = rng.randrange(max(0, i - 50), i)
            s = start[p] + rng.randrange(0, max(1, dur[p] // 2))
            d = max(1, int(dur[p] * rng.uniform(0.05, 0.6)))
            if rng.random() < 0.01:
                d = dur[p]  # runs past its parent's end: clock skew / async child
            start.append(s)
            dur.append(d)
        svc = i % len(SERVICES)
        span = {
            "traceID": tid, "spanID": f"{trace_no * n + i + 1:016x}", "operationName": f"op-{i % 17}",
            "references": [{"refType": "CHILD_OF", "traceID": tid, "spanID": f"{trace_no * n + p + 1:016x}"}]
            if i else [],
            "startTime": start[i], "duration": dur[i], "processID": f"p{svc}", "warnings": None,
            "tags": [
                {"key": "span.kind", "type": "string", "value": "server" if i % 2 else "client"},
                {"key": "http.method", "type": "string", "value": "POST"},
                {"key": "http.route", "type": "string", "value": "/api/v1/messages"},
                {"key": "http.status_code", "type": "int64", "value": 200 if i % 13 else 503},
                {"key": "otel.scope.name", "type": "string", "value": "io.opentelemetry.spring-webmvc-6.0"},
                {"key": "thread.name", "type": "string", "value": f"http-nio-8080-exec-{i % 10}"},
                {"key": "net.peer.port", "type": "int64", "value": 40000 + i % 1000},
                {"key": "error", "type": "bool", "value": i % 13 == 0},
            ],
            "logs": [{"timestamp": start[i] + 10, "fields": [
                {"key": "event", "type": "string", "value": "exception"},
                {"key": "exception.message", "type": "string", "value": "Connector returned error: status=503"}]}]
            if i % 10 == 0 else [],
        }
        spans.append(span)
    processes = {f"p{k}": {"serviceName": s, "tags": []} for k, s in enumerate(SERVICES)}
    return {"traceID": tid, "spans": spans, "processes": processes, "warnings": None}


def trace_set(n_spans: int, per_trace: int = 1000, seed: int = 7) -> dict:
    rng = random.Random(seed)
    return {"data": [_trace(rng, per_trace, t) for t in range(max(1, n_spans // per_trace))]}


def naive_parse(doc: dict) -> pd.DataFrame:
    """What one would write first: json_normalize per span, then concat."""
    frames = []
    for trace in doc["data"]:
        for span in trace["spans"]:
            row = pd.json_normalize(span)
            for tag in span["tags"]:
                row[f"tag.{tag['key']}"] = tag["value"]
            row["service"] = trace["processes"][span["processID"]]["serviceName"]
            frames.append(row)
    return pd.concat(frames, ignore_index=True)


def _runs(fn, *args, repeat: int = 3) -> tuple[list[float], list[float], object]:
    """Wall and CPU times of ``repeat`` runs, and the last result."""
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn(*args)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return walls, cpus, out


def _time(fn, *args, repeat: int = 3):
    """Best wall time and best CPU time of ``repeat`` runs (the CPU figure is steadier on a
    shared machine), and the last result."""
    walls, cpus, out = _runs(fn, *args, repeat=repeat)
    return min(walls), min(cpus), out


READ_TARGET = 200_000
"""spans/s of read_trace_file on the UI download, JSON parsing included: the median wall time counts."""


def _read_with(reader: str, path: Path, runs: int, n: int, size_mb: float) -> float:
    """read_trace_file of ``path`` by one reader: best and median of ``runs``, wall and CPU (CPU
    summed over threads); returns the median wall spans/s."""
    os.environ[READER_ENV] = reader
    walls, cpus, _ = _runs(read_trace_file, path, repeat=runs)
    best, med, best_cpu, med_cpu = min(walls), statistics.median(walls), min(cpus), statistics.median(cpus)
    print(f"read_trace_file {reader:<6} {n:>7} spans  median {med:.3f} s = {n / med:>9,.0f} spans/s wall  "
          f"(best {best:.3f} s: {n / best:,.0f}/s; CPU median {med_cpu:.3f} s: {n / med_cpu:,.0f}/s, best "
          f"{best_cpu:.3f} s: {n / best_cpu:,.0f}/s; {size_mb:.0f} MB UI download, JSON parsing included; "
          f"{runs} runs)")
    return n / med


def _scan_threads(raw: bytes, n: int, runs: int) -> None:
    """The native reader's scan of the bytes into columns (its share of read_trace_file) with one
    thread and with two, runs alternating: median wall and CPU."""
    module = native_module()
    times: dict[str, list[tuple[float, float]]] = {"one thread": [], "two threads": []}
    for _ in range(runs):
        for label, split_from in (("one thread", len(raw) + 1), ("two threads", 0)):
            t, c = time.perf_counter(), time.process_time()
            module.read_v1(raw, split_from)
            times[label].append((time.perf_counter() - t, time.process_time() - c))
    for label, runs_ in times.items():
        wall, cpu = statistics.median(w for w, _ in runs_), statistics.median(c for _, c in runs_)
        print(f"  native scan, {label:<11} {n:>7} spans  median {wall:.3f} s wall, {cpu:.3f} s CPU "
              "(bytes to columns and their Python objects; no table)")


def _without_gc(decode):
    """``decode`` with the garbage collector paused, as read_trace_file runs it."""
    def run(raw: bytes):
        gc.disable()
        try:
            return decode(raw)
        finally:
            gc.enable()
    return run


def _decoded_and_freed(raw: bytes) -> None:
    """orjson's decoding of ``raw`` and the freeing of what it made: what any reader that decodes
    the whole download into Python objects pays before it reads a span."""
    doc = orjson.loads(raw)
    del doc


def _chain(n: int) -> dict:
    """The worst case for the walk: one trace that is a chain n deep, every span inside its parent."""
    tid = "c" * 32
    return {"data": [{"traceID": tid, "processes": {"p1": {"serviceName": "router-service"}}, "spans": [
        {"traceID": tid, "spanID": f"{i + 1:016x}", "operationName": f"op-{i}", "processID": "p1",
         "startTime": T0 + i, "duration": 2 * (n - i),
         "references": [{"refType": "CHILD_OF", "spanID": f"{i:016x}"}] if i else []} for i in range(n)]}]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=100_000)
    ap.add_argument("--cp-spans", type=int, default=10_000)
    ap.add_argument("--naive-sample", type=int, default=2_000)
    ap.add_argument("--runs", type=int, default=9, help="runs of read_trace_file per reader (best and median)")
    args = ap.parse_args()

    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores; "
          "wall and CPU seconds, best of 3")
    doc = trace_set(args.spans)
    n = sum(len(t["spans"]) for t in doc["data"])
    secs, cpu, spans = _time(parse_traces, doc)
    print(f"parse_traces        {n:>8} spans  {secs:7.3f} s  {n / secs:>10,.0f} spans/s  "
          f"(CPU {cpu:.3f} s: {n / cpu:,.0f} spans/s; target >= 300,000)")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "traces.json"
        path.write_text(json.dumps(doc))
        size_mb = path.stat().st_size / 1e6
        given = os.environ.get(READER_ENV)
        native = native_module() is not None  # the default reader when built
        if native:
            rate = _read_with("native", path, args.runs, n, size_mb)
        else:
            print("read_trace_file native: not built (scripts/setup-venv.sh builds native/trace_reader with cargo)")
        python_rate = _read_with("python", path, max(3, args.runs // 2), n, size_mb)
        rate = rate if native else python_rate
        print(f"  read_trace_file median wall {rate:,.0f} spans/s against the target of {READ_TARGET:,}: "
              f"{'reached' if rate >= READ_TARGET else 'NOT reached'} (load average now "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())})")
        if given is None:
            del os.environ[READER_ENV]
        else:
            os.environ[READER_ENV] = given
        raw = path.read_bytes()
        osecs, ocpu, _ = _time(_without_gc(orjson.loads), raw)
        _, freed_cpu, _ = _time(_without_gc(_decoded_and_freed), raw)
        if native:
            _scan_threads(raw, n, args.runs)
        jsecs, _, _ = _time(_without_gc(json.loads), raw, repeat=1)
    print(f"  of which JSON     {size_mb:>6.0f} MB     {osecs:7.3f} s  orjson ({size_mb / osecs:,.0f} MB/s; CPU {ocpu:.3f} s); "
          f"the standard library's json {jsecs:.3f} s")
    print(f"  decode + free     {size_mb:>6.0f} MB              CPU {freed_cpu:.3f} s: orjson's objects made and freed, "
          f"no parsing: at most {n / freed_cpu:,.0f} spans/s for a reader that decodes to Python objects "
          "(the Python reader)")

    sample = {"data": [dict(doc["data"][0], spans=doc["data"][0]["spans"][:args.naive_sample])]}
    m = len(sample["data"][0]["spans"])
    nsecs, _, _ = _time(naive_parse, sample, repeat=1)
    print(f"naive json_normalize {m:>7} spans  {nsecs:7.3f} s  {m / nsecs:>10,.0f} spans/s  "
          f"(x{(n / secs) / (m / nsecs):,.0f} slower; {n / (m / nsecs):,.0f} s for {n} spans)")

    fl_secs, _, _ = _time(span_flags, spans, repeat=1)
    tr_secs, _, _ = _time(span_tree, spans, repeat=1)
    cp_all, _, cp = _time(critical_path, spans, repeat=1)
    print(f"span_flags          {n:>8} spans  {fl_secs:7.3f} s")
    print(f"span_tree           {n:>8} spans  {tr_secs:7.3f} s")
    print(f"critical_path       {n:>8} spans  {cp_all:7.3f} s  ({spans['trace_id'].nunique()} traces, "
          f"{len(cp)} sections)")

    for label, big in (("random tree", parse_traces({"data": [_trace(random.Random(11), args.cp_spans, 1)]})),
                       ("chain", parse_traces(_chain(args.cp_spans)))):
        one, _, sections = _time(critical_path, big)
        print(f"critical_path, 1 trace ({label}) {len(big):>6} spans  {one:7.3f} s  "
              f"({len(sections)} sections; target < 1 s)")


if __name__ == "__main__":
    main()
