"""DLQ read throughput: forensics' reader against Debian's kcat on the same topic.

Produces N dead-letter records (small camelCase JSON payloads with Spring's kafka_dlt-*
headers, binary numbers as Spring writes them) into a fresh topic on the local broker,
then times, each once and each in its own process:
- kcat dumping the topic (``kcat -C -b ... -t ... -e -q -o beginning > /dev/null``);
- ``forensics.sources.kafka.read_dlq`` reading the same records into a dlq_records DataFrame.
Reports wall time, records/s and peak memory (the child's ru_maxrss), and the ratio to
kcat (target: within 1.5x). The topic is deleted afterwards unless --keep.

    eval "$(scripts/services env)"; .venv/bin/python benchmarks/bench_dlq.py [--records 1000000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
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
    print(json.dumps({"rows": len(frame), "seconds": seconds, "truncated": read.truncated,
                      "decode_errors": int(frame["decode_error"].notna().sum()),
                      "with_message_id": int(frame["message_id"].notna().sum()),
                      "with_original_offset": int(frame["original_offset"].notna().sum())}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=5)
    ap.add_argument("--bootstrap", default=os.environ.get("FORENSICS_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    ap.add_argument("--keep", action="store_true", help="keep the topic afterwards")
    ap.add_argument("--read-child", nargs=3, metavar=("TOPIC", "START", "END"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.read_child:
        read_child(args.bootstrap, args.read_child[0], args.partitions, *args.read_child[1:])
        return
    kcat = shutil.which("kcat")
    if not kcat:
        raise SystemExit("kcat is not installed: apt-get install -y kcat")

    topic = f"bench-dlq-{uuid.uuid4().hex[:8]}"
    start = pd.Timestamp.now(tz="UTC") - pd.Timedelta("1min")
    print(f"producing {args.records} records into {topic} ({args.partitions} partitions) on {args.bootstrap}",
          file=sys.stderr)
    produce_s = produce(args.bootstrap, topic, args.partitions, args.records)
    end = pd.Timestamp.now(tz="UTC") + pd.Timedelta("1min")
    print(f"produced in {produce_s:.1f} s", file=sys.stderr)
    try:
        kcat_s, kcat_mib, _ = timed([kcat, "-C", "-b", args.bootstrap, "-t", topic, "-e", "-q", "-o", "beginning"])
        reader_cmd = [sys.executable, __file__, "--bootstrap", args.bootstrap, "--partitions", str(args.partitions),
                      "--read-child", topic, start.isoformat(), end.isoformat()]
        read_s, read_mib, proc = timed(reader_cmd, stdout=subprocess.PIPE)
        child = json.loads(proc.stdout.read())
    finally:
        if not args.keep:
            from confluent_kafka.admin import AdminClient

            admin = AdminClient({"bootstrap.servers": args.bootstrap})
            admin.delete_topics([topic])[topic].result(timeout=60)

    if child["rows"] != args.records or child["truncated"] or child["decode_errors"]:
        raise SystemExit(f"reader result is wrong: {child}")
    rows = [("kcat -C -e -q (to /dev/null)", kcat_s, kcat_mib, None),
            ("forensics read_dlq -> DataFrame", read_s, read_mib, child["seconds"])]
    print(f"\nDLQ read, {args.records:,} records, {args.partitions} partitions, topic {topic}")
    print(f"{'reader':34} {'wall s':>8} {'records/s':>12} {'peak RSS MiB':>13} {'vs kcat':>8} {'in-process s':>13}")
    for name, wall, mib, inner in rows:
        print(f"{name:34} {wall:8.2f} {args.records / wall:12,.0f} {mib:13.0f} {wall / kcat_s:7.2f}x "
              f"{'' if inner is None else f'{inner:.2f}':>13}")
    print(f"target: within 1.5x of kcat; reader rows with message_id {child['with_message_id']:,}, "
          f"with original_offset {child['with_original_offset']:,}")


if __name__ == "__main__":
    main()
