"""DLQ read throughput: forensics' reader against Debian's kcat on the same topic.

Produces N dead-letter records (small camelCase JSON payloads with Spring's kafka_dlt-*
headers, binary numbers as Spring writes them) into a fresh topic on the local broker,
then times, each once and each in its own process:
- kcat dumping the topic (``kcat -C -b ... -t ... -e -q -o beginning > /dev/null``);
- ``forensics.sources.kafka.read_dlq`` reading the same records into a dlq_records DataFrame,
  with the native reader (native/kafka_reader) and with confluent-kafka alone
  (FORENSICS_KAFKA_READER=python).
Reports wall time of the whole process (Python start and imports included), the time of the
read_dlq call itself, records/s and peak memory (the child's ru_maxrss), and the ratio to
kcat (target: within 1.5x). The topic is deleted afterwards unless --keep; --topic reads an
existing (kept) topic instead of producing one.

    eval "$(scripts/services env)"; .venv/bin/python benchmarks/bench_dlq.py [--records 1000000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid

import pandas as pd

PAYLOAD_CHANNELS = ("WHATSAPP", "TELEGRAM", "INSTAGRAM")


def produce(bootstrap: str, topic: str, partitions: int, records: int) -> float:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=60)
    prod = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 50,
                     "batch.num.messages": 10000, "queue.buffering.max.messages": 1_000_000})
    started = time.monotonic()
    now = time.time()
    base_ms = int(now * 1000)
    fqcn = b"org.springframework.kafka.listener.ListenerExecutionFailedException"
    for i in range(records):
        mid = str(uuid.UUID(int=i))
        value = json.dumps({"eventType": "MESSAGE_FAILED", "messageId": mid, "conversationId": f"conv-{i % 5000}",
                            "channel": PAYLOAD_CHANNELS[i % 3], "status": "FAILED",
                            "timestamp": now + i / 1000}).encode()
        headers = [("kafka_dlt-original-topic", b"whatsapp-outbound"),
                   ("kafka_dlt-original-partition", (i % 5).to_bytes(4, "big")),
                   ("kafka_dlt-original-offset", (i // 5).to_bytes(8, "big")),
                   ("kafka_dlt-original-timestamp", (base_ms + i).to_bytes(8, "big")),
                   ("kafka_dlt-exception-fqcn", fqcn),
                   ("kafka_dlt-exception-message", f"Connector returned error: status={500 + i % 4}".encode())]
        while True:
            try:
                prod.produce(topic, value, key=mid.encode(), headers=headers)
                break
            except BufferError:
                prod.poll(0.05)
    if prod.flush(120):
        raise SystemExit("producer could not deliver every record")
    return time.monotonic() - started


def timed(cmd: list[str], stdout=subprocess.DEVNULL) -> tuple[float, float, subprocess.Popen]:
    """Run ``cmd``; return (wall seconds, peak RSS MiB of that process, the process)."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=stdout, stdin=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{cmd[0]} failed with exit code {proc.returncode}")
    return wall, usage.ru_maxrss / 1024, proc


def read_child(bootstrap: str, topic: str, partitions: int, start: str, end: str) -> None:
    """In the child process: read the topic with the toolkit's DLQ reader, print counts as JSON."""
    from forensics.config import Limits
    from forensics.profiles import Topic, load_profile
    from forensics.sources.kafka import read_dlq
    from forensics.timeutil import Window

    profile = load_profile("runbook")
    profile = dataclasses.replace(profile, kafka=dataclasses.replace(
        profile.kafka, dlq=[Topic(topic, partitions, "WHATSAPP", "whatsapp-outbound")]))
    started = time.monotonic()
    read = read_dlq(profile, Window(pd.Timestamp(start), pd.Timestamp(end)), bootstrap=bootstrap,
                    limits=Limits(max_rows=10_000_000, timeout_s=900))
    seconds = time.monotonic() - started
    frame = read.frame
    print(json.dumps({"rows": len(frame), "seconds": seconds, "truncated": read.truncated, "reader": read.reader,
                      "decode_errors": int(frame["decode_error"].notna().sum()),
                      "with_message_id": int(frame["message_id"].notna().sum()),
                      "with_original_offset": int(frame["original_offset"].notna().sum())}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=5)
    ap.add_argument("--bootstrap", default=os.environ.get("FORENSICS_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    ap.add_argument("--keep", action="store_true", help="keep the topic afterwards")
    ap.add_argument("--topic", help="read this existing topic (made by an earlier --keep run) instead of producing one")
    ap.add_argument("--repeat", type=int, default=1, help="time each reader this many times, report the best")
    ap.add_argument("--read-child", nargs=3, metavar=("TOPIC", "START", "END"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.read_child:
        read_child(args.bootstrap, args.read_child[0], args.partitions, *args.read_child[1:])
        return
    kcat = shutil.which("kcat")
    if not kcat:
        raise SystemExit("kcat is not installed: apt-get install -y kcat")

    if args.topic:
        topic, start, end = args.topic, pd.Timestamp("2000-01-01", tz="UTC"), pd.Timestamp.now(tz="UTC")
        from confluent_kafka.admin import AdminClient

        meta = AdminClient({"bootstrap.servers": args.bootstrap}).list_topics(topic, timeout=30).topics[topic]
        args.partitions = len(meta.partitions)
    else:
        topic = f"bench-dlq-{uuid.uuid4().hex[:8]}"
        start = pd.Timestamp.now(tz="UTC") - pd.Timedelta("1min")
        print(f"producing {args.records} records into {topic} ({args.partitions} partitions) on {args.bootstrap}",
              file=sys.stderr)
        produce_s = produce(args.bootstrap, topic, args.partitions, args.records)
        end = pd.Timestamp.now(tz="UTC") + pd.Timedelta("1min")
        print(f"produced in {produce_s:.1f} s", file=sys.stderr)
    reader_cmd = [sys.executable, __file__, "--bootstrap", args.bootstrap, "--partitions", str(args.partitions),
                  "--read-child", topic, start.isoformat(), end.isoformat()]

    def best(cmd: list[str], env: dict[str, str] | None = None, stdout=subprocess.DEVNULL):
        runs = []
        for _ in range(args.repeat):
            if env:
                os.environ.update(env)
            try:
                wall, mib, proc = timed(cmd, stdout=stdout)
            finally:
                for k in env or ():
                    os.environ.pop(k, None)
            runs.append((wall, mib, json.loads(proc.stdout.read()) if stdout is subprocess.PIPE else None))
        medians.append(statistics.median(r[2]["seconds"] if r[2] else r[0] for r in runs))
        return min(runs, key=lambda r: r[0])

    medians: list[float] = []

    try:
        kcat_s, kcat_mib, _ = best([kcat, "-C", "-b", args.bootstrap, "-t", topic, "-e", "-q", "-o", "beginning"])
        read_s, read_mib, child = best(reader_cmd, {"FORENSICS_KAFKA_READER": "native"}, subprocess.PIPE)
        py_s, py_mib, py_child = best(reader_cmd, {"FORENSICS_KAFKA_READER": "python"}, subprocess.PIPE)
    finally:
        if not args.keep and not args.topic:
            from confluent_kafka.admin import AdminClient

            admin = AdminClient({"bootstrap.servers": args.bootstrap})
            admin.delete_topics([topic])[topic].result(timeout=60)

    records = child["rows"]
    for c in (child, py_child):
        if (args.topic is None and c["rows"] != args.records) or c["truncated"] or c["decode_errors"]:
            raise SystemExit(f"reader result is wrong: {c}")
    if child["reader"] != "native":
        raise SystemExit("the native reader did not run: build it with scripts/setup-venv.sh")
    rows = [("kcat -C -e -q (to /dev/null)", kcat_s, kcat_mib, None),
            ("read_dlq, native reader", read_s, read_mib, child["seconds"]),
            ("read_dlq, confluent-kafka only", py_s, py_mib, py_child["seconds"])]
    print(f"\nDLQ read, {records:,} records, {args.partitions} partitions, topic {topic}, best of {args.repeat}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'reader':32} {'process s':>9} {'vs kcat':>8} {'read_dlq s':>10} {'vs kcat':>8} {'records/s':>11} "
          f"{'peak RSS MiB':>12} {'median s':>8}")
    for (name, wall, mib, inner), median in zip(rows, medians, strict=True):
        inner_txt = "" if inner is None else f"{inner:10.2f} {inner / kcat_s:7.2f}x"
        print(f"{name:32} {wall:9.2f} {wall / kcat_s:7.2f}x {inner_txt:>19} {records / (inner or wall):11,.0f} "
              f"{mib:12.0f} {median:8.2f}")
    print("process s: the whole child process (Python start, imports, read, exit); read_dlq s: the call alone. "
          "median s: the median over the repeats of read_dlq s (kcat: wall). target: within 1.5x of kcat")


if __name__ == "__main__":
    main()
