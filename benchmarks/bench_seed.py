"""Seeding speed: ``forensics seed`` of one scenario into the local stack, per target and in total.

Simulates the scenario once (timed apart), then seeds it into a fresh, uniquely prefixed
place (``Placement.from_prefix("bench-<id>-")``: Mongo database, topics and groups, PostgreSQL
schema, Redis keys, Jaeger services) and prints, per target, what was written, the seconds it
took (rendering + writing + indexes/flush), the rendering share (the simulator's renderer
timed separately, on the same evidence) and the throughput. Everything it wrote is removed
afterwards unless --keep, except the spans (Jaeger's API cannot delete; they are under the
bench-* services and age out of its in-memory store).

    eval "$(scripts/services env)"; .venv/bin/python benchmarks/bench_seed.py [--messages 100000]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

from forensics.config import connection
from forensics.simulate import render, simulate
from forensics.simulate.seed import TARGETS, Placement, seed_evidence
from forensics.timeutil import utcnow

UNIT = {"mongo": "documents", "kafka": "records", "jaeger": "spans", "postgres": "rows", "redis": "keys"}


def rendering_seconds(ev, profile: str) -> dict[str, float]:
    """The renderer's own time per target (what seeding spends before its first write)."""
    calls = {"mongo": lambda: render.mongo_documents(ev, profile), "kafka": lambda: render.kafka_records(ev, profile),
             "postgres": lambda: render.postgres_rows(ev, profile), "redis": lambda: render.redis_keys(ev)}
    out = {}
    for target, call in calls.items():
        t0 = time.perf_counter()
        call()
        out[target] = time.perf_counter() - t0
    return out


def objects(target: str, counts: dict[str, int]) -> int:
    if target == "jaeger":
        return counts["spans"]
    if target == "redis":
        return counts["keys"]
    return sum(v for k, v in counts.items() if not k.startswith("group "))


def cleanup(placement: Placement) -> None:
    import psycopg
    import pymongo
    import redis
    from confluent_kafka.admin import AdminClient
    from psycopg import sql

    pymongo.MongoClient(connection("mongo")).drop_database(placement.database)
    admin = AdminClient({"bootstrap.servers": connection("kafka")})
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(placement.topic_prefix)]
    if topics:
        for fut in admin.delete_topics(topics, operation_timeout=60).values():
            fut.result(timeout=60)
    groups = [g.group_id for g in admin.list_consumer_groups(request_timeout=10).result(timeout=10).valid
              if g.group_id.startswith(placement.topic_prefix)]
    if groups:
        for fut in admin.delete_consumer_groups(groups, request_timeout=10).values():
            fut.result(timeout=10)
    with psycopg.connect(connection("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(placement.pg_schema)))
    client = redis.Redis.from_url(connection("redis"))
    keys = list(client.scan_iter(match=placement.redis_prefix + "*", count=1000))
    for i in range(0, len(keys), 10_000):
        client.unlink(*keys[i:i + 10_000])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--scenario", default="whatsapp-rate-limit")
    ap.add_argument("--profile", default="runbook")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--keep", action="store_true", help="leave the seeded data in place")
    ap.add_argument("--baseline", default="none", help="baseline period seeded before the window (default none: the "
                    "window alone, as the README figure)")
    args = ap.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]

    t0 = time.perf_counter()
    ev = simulate(args.scenario, messages=args.messages, seed=args.seed, end=utcnow().floor("ms"),
                  profile=args.profile, baseline=args.baseline)
    simulated = time.perf_counter() - t0
    rendered = rendering_seconds(ev, args.profile)
    placement = Placement.from_prefix(f"bench-{uuid.uuid4().hex[:8]}-", args.profile)
    try:
        t0 = time.perf_counter()
        result = seed_evidence(ev, profile=args.profile, targets=targets, placement=placement,
                               progress=lambda message, *_: print(f"  {message}", file=sys.stderr, flush=True))
        total = time.perf_counter() - t0
    finally:
        if not args.keep:
            cleanup(placement)

    print(f"\nforensics seed: {args.scenario}, {args.messages:,} messages, profile {args.profile} "
          f"(simulated in {simulated:.1f} s, not counted below)\n")
    print(f"{'target':9s} {'objects':>10s} {'unit':10s} {'seconds':>8s} {'render s':>9s} {'per second':>11s}")
    for target in targets:
        n, s = objects(target, result.written[target]), result.seconds[target]
        r = f"{rendered[target]:.1f}" if target in rendered else "-"
        print(f"{target:9s} {n:>10,} {UNIT[target]:10s} {s:>8.1f} {r:>9s} {n / s:>11,.0f}")
    print(f"{'total':9s} {'':>10s} {'':10s} {total:>8.1f}")
    for note in result.notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
