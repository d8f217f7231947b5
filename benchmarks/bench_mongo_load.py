"""Status-history loading from MongoDB: the Arrow fast path against the naive dict load.

    .venv/bin/python benchmarks/bench_mongo_load.py [--uri URI] [--database bench_mongo_load]
        [--messages 1000000] [--server-pid PID] [--only arrow,naive,...] [--reseed]

Seeds ``--messages`` messages and about 3.2 history rows per message (runbook layout; a
tenth of the FAILED messages keep their error under ``metadata``) into the server at
``--uri`` (default FORENSICS_MONGO_URI), unless the database already holds exactly that,
then loads the whole ``message_status_history`` collection each way in a fresh child
process, so that its peak resident memory (``ru_maxrss``) is the load's own:

  cursor-raw      find_raw_batches({}): no filter, no projection, no decoding (server floor)
  cursor-query    find_raw_batches(window filter, projection): what the fast path asks for
  naive           pd.DataFrame(list(coll.find())) + pd.json_normalize(docs)
  naive+canon     naive, then forensics.sources.documents.status_events_from_documents
  documents       MongoSource(arrow=False).status_rows(window): canonical frame via dicts
  arrow           MongoSource(arrow=True).status_rows(window): canonical frame via pymongoarrow
  arrow-naive-q   naive's query (no filter, no projection) decoded the fast way into the canonical
                  frame: the client-side difference on identical server work

Each row has the child's own CPU seconds; ``--server-pid`` (a local server) adds the
server's, read from /proc. A load whose wall time equals the raw cursor's over the same
query, with little client CPU, waits on the server. The canonical
frames of ``documents`` and ``arrow`` are hashed (sorted by source_ref) to show they are equal.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

WINDOW = ("2025-12-03T00:00:00Z", "2025-12-05T00:00:00Z")  # every row of the seed
T0_MS = 1_764_720_000_000  # 2025-12-03T00:00:00Z
BATCH = 25_000  # messages per insert round
CHANNELS = np.array(["WHATSAPP", "TELEGRAM", "INSTAGRAM"])
# final status -> the transitions that reach it (runbook flow), and its share of messages
PATHS = {"READ": (["PENDING", "SENT", "DELIVERED", "READ"], 0.40), "DELIVERED": (["PENDING", "SENT", "DELIVERED"], 0.40),
         "FAILED": (["PENDING", "SENT", "FAILED"], 0.10), "SENT": (["PENDING", "SENT"], 0.05),
         "PENDING": (["PENDING"], 0.05)}
ERRORS = ["Connector returned error: status=429, body=rate limited",
          "Connector returned error: status=401, body=token expired",
          "Error calling connector: Read timed out"]
MEASURES = ("cursor-raw", "cursor-query", "naive", "naive+canon", "documents", "arrow", "arrow-naive-q")


def _client(uri: str):
    import pymongo

    return pymongo.MongoClient(uri, appname="bench_mongo_load", serverSelectionTimeoutMS=10_000)


def seed(uri: str, database: str, messages: int, progress=print) -> dict:
    """Insert ``messages`` messages and their history in batches; returns counts and seconds."""
    import datetime as dt

    client = _client(uri)
    db = client[database]
    client.drop_database(database)
    rng = np.random.default_rng(7)
    finals = np.array(list(PATHS))
    shares = np.array([share for _, share in PATHS.values()])
    t = time.monotonic()
    n_hist = 0
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    for start in range(0, messages, BATCH):
        n = min(BATCH, messages - start)
        idx = np.arange(start, start + n)
        created = T0_MS + (idx * (86_400_000 // max(messages, 1))) + rng.integers(0, 500, n)
        final = finals[rng.choice(len(finals), n, p=shares)]
        channel = CHANNELS[rng.integers(0, 3, n)]
        err = rng.integers(0, len(ERRORS), n)
        nested = rng.random(n) < 0.1
        steps = rng.integers(200, 3000, (n, 4)).cumsum(axis=1)
        msgs, hist = [], []
        for j in range(n):
            mid = f"{idx[j]:08x}-0000-4000-8000-{idx[j] * 7919 % 16**12:012x}"
            conv = f"conv-{idx[j] % 50_000:05d}"
            c_ms = int(created[j])
            path = PATHS[final[j]][0]
            updated = c_ms + int(steps[j, len(path) - 2]) if len(path) > 1 else c_ms
            doc = {"message_id": mid, "conversation_id": conv, "sender_id": f"user-{idx[j] % 9973}",
                   "recipient_ids": [f"+55119{idx[j] % 10**8:08d}"], "channel": channel[j], "content": "hello there",
                   "content_type": "TEXT", "status": final[j], "timestamp": epoch + dt.timedelta(milliseconds=c_ms),
                   "updated_at": epoch + dt.timedelta(milliseconds=updated), "retry_count": 0}
            if final[j] == "FAILED":
                doc["retry_count"] = 3
                if nested[j]:
                    doc["metadata"] = {"error_message": ERRORS[err[j]], "retry_count": 3}
                else:
                    doc["error_message"] = ERRORS[err[j]]
            msgs.append(doc)
            old = None
            for k, status in enumerate(path):
                at = c_ms + (int(steps[j, k - 1]) if k else 0)
                row = {"message_id": mid, "conversation_id": conv, "old_status": old, "new_status": status,
                       "timestamp": epoch + dt.timedelta(milliseconds=at), "updated_by":
                       "message-service" if k == 0 else "router-service"}
                if status == "FAILED":
                    row["error_message"] = ERRORS[err[j]]
                hist.append(row)
                old = status
        db.messages.insert_many(msgs, ordered=False)
        db.message_status_history.insert_many(hist, ordered=False)
        n_hist += len(hist)
        if (start // BATCH) % 8 == 0:
            progress(f"  seeded {start + n:,} messages, {n_hist:,} history rows, {time.monotonic() - t:,.0f} s")
    db.messages.create_index("message_id")
    db.message_status_history.create_index("message_id")
    seconds = time.monotonic() - t
    db.bench_info.insert_one({"messages": messages, "history": n_hist, "seed_s": seconds})
    client.close()
    return {"messages": messages, "history": n_hist, "seed_s": seconds}


def _server_cpu(pid: int | None) -> float | None:
    if not pid:
        return None
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(name: str, uri: str, database: str) -> dict:
    """Run one load in this (child) process; returns seconds, rows, peak RSS and a frame hash."""
    import pandas as pd

    from forensics.config import Limits
    from forensics.schema import empty
    from forensics.sources.documents import status_events_from_documents
    from forensics.sources.mongo import MongoSource, time_range
    from forensics.timeutil import Window

    window = Window.parse(*WINDOW)
    limits = Limits(max_rows=100_000_000, timeout_s=24 * 3600.0, connect_timeout_s=10.0)
    coll = _client(uri)[database].message_status_history
    digest = None
    cpu0 = _own_cpu()
    t = time.monotonic()
    if name == "cursor-raw":
        rows = sum(len(b) for b in coll.find_raw_batches({}))  # bytes
    elif name == "cursor-query":
        with MongoSource(uri, "runbook", limits, database=database) as src:
            flt = time_range(src._paths("status_history", "timestamp"), window.start, window.end)
            projection = src._projection("status_history")
        rows = sum(len(b) for b in coll.find_raw_batches(flt, projection))
    elif name in ("naive", "naive+canon"):
        docs = list(coll.find())
        frame = pd.DataFrame(docs)
        flat = pd.json_normalize(docs)
        rows = len(flat)
        if name == "naive+canon":
            del frame, docs
            rows = len(status_events_from_documents(flat, empty("messages"), "runbook"))
    elif name == "arrow-naive-q":
        from pymongoarrow.api import find_arrow_all

        from forensics.profiles import load_profile
        from forensics.sources import mongo_arrow as mongo

        fields = load_profile("runbook").mongo.history_fields
        sample = list(coll.find({}, limit=mongo.SAMPLE_SIZE))
        kinds, _ = mongo.arrow_kinds(sample, {p: c for c, ps in fields.items() for p in ps})
        kinds["_id"] = "objectId"
        table = find_arrow_all(coll, {}, schema=mongo.arrow_schema(kinds), allow_invalid=True, projection=None)
        rows = len(status_events_from_documents(mongo.arrow_to_flat(table), empty("messages"), "runbook"))
    else:
        with MongoSource(uri, "runbook", limits, database=database, arrow=name == "arrow") as src:
            frame = src.status_rows(window)
        rows = len(frame)
    seconds = time.monotonic() - t
    client_cpu = _own_cpu() - cpu0
    if name in ("documents", "arrow"):
        ordered = frame.sort_values("source_ref", kind="stable").reset_index(drop=True)
        digest = int(pd.util.hash_pandas_object(ordered, index=False).sum() % 2**61)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"measure": name, "seconds": seconds, "rows_or_bytes": rows, "peak_rss_mb": peak,
            "client_cpu_s": client_cpu, "digest": digest}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default=os.environ.get("FORENSICS_MONGO_URI"))
    parser.add_argument("--database", default="bench_mongo_load")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--server-pid", type=int, default=None, help="local server pid: report its CPU seconds")
    parser.add_argument("--only", default=",".join(MEASURES), help="comma-separated measures")
    parser.add_argument("--reseed", action="store_true", help="seed even when the database holds the data")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if not args.uri:
        parser.error("no --uri and FORENSICS_MONGO_URI unset (eval \"$(scripts/services env)\")")
    if args.measure:
        print(json.dumps(measure(args.measure, args.uri, args.database)))
        return 0

    client = _client(args.uri)
    info = client[args.database].bench_info.find_one() or {}
    client.close()
    if args.reseed or info.get("messages") != args.messages:
        print(f"seeding {args.messages:,} messages into {args.database} ...", file=sys.stderr)
        info = seed(args.uri, args.database, args.messages, progress=lambda m: print(m, file=sys.stderr))
    print(f"data: {info['messages']:,} messages, {info['history']:,} history rows "
          f"(seeded in {info['seed_s']:,.0f} s, {info['history'] / info['seed_s'] + info['messages'] / info['seed_s']:,.0f}"
          " documents/s)")
    baseline = subprocess.run([sys.executable, "-c", "import resource, pandas, pyarrow, pymongo, "
                               "forensics.sources.mongo; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
                              capture_output=True, text=True, check=True)
    print(f"child process after imports: {int(baseline.stdout) / 1024:,.0f} MB peak RSS")
    results = []
    for name in [m.strip() for m in args.only.split(",") if m.strip()]:
        before = _server_cpu(args.server_pid)
        out = subprocess.run([sys.executable, __file__, "--measure", name, "--uri", args.uri,
                              "--database", args.database], capture_output=True, text=True)
        if out.returncode:
            print(f"{name}: failed: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        after = _server_cpu(args.server_pid)
        r["server_cpu_s"] = None if before is None else after - before
        r["load"] = os.getloadavg()[0]
        results.append(r)
        print(f"  {name}: {r['seconds']:.1f} s", file=sys.stderr)
    print()
    print("| load | wall s | rows/s | peak RSS MB | client CPU s | server CPU s | load avg | rows (bytes for cursors) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        is_rows = not r["measure"].startswith("cursor")
        rate = f"{info['history'] / r['seconds']:,.0f}"
        cpu = "-" if r["server_cpu_s"] is None else f"{r['server_cpu_s']:.1f}"
        print(f"| {r['measure']} | {r['seconds']:.1f} | {rate} | {r['peak_rss_mb']:,.0f} | {r['client_cpu_s']:.1f} | "
              f"{cpu} | {r['load']:.1f} | "
              f"{r['rows_or_bytes']:,}{'' if is_rows else ' B'} |")
    digests = {r["measure"]: r["digest"] for r in results if r["digest"] is not None}
    if len(digests) == 2:
        print(f"\ncanonical frames of documents and arrow identical: {len(set(digests.values())) == 1}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
