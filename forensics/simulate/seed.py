"""Seed the live stack with a simulated incident, the way Chat4All would have left it.

``seed("whatsapp-rate-limit", messages=20_000)`` simulates the scenario
(:func:`forensics.simulate.simulate`) with its window ending now, renders what each store
would hold (:mod:`forensics.simulate.render`) and writes it:

- MongoDB: the profile's collections with the documents in the profile's field layout (BSON
  dates) and the indexes Chat4All creates; bulk ``insert_many`` in big unordered batches.
- Kafka: the profile's topics with its partition counts (a topic the scenario lost is not
  created), records keyed as Chat4All keys them (conversation id: message events and
  outbound; message id: status-updates and dead letters) on the partition Kafka's default
  partitioner picks (murmur2, :mod:`forensics.sources.partitioner`, computed here and checked against
  the renderer's), CreateTime timestamps from the scenario, Spring's ``kafka_dlt-*`` headers on
  dead letters; consumer groups whose committed offsets reproduce the scenario's last lag
  sample (committed = high watermark - lag, per partition). The runbook's per-channel outbound
  topics are rendered here (:func:`_outbound_records`): the simulator's renderer has none.
- Jaeger: the sampled spans over OTLP/HTTP through the OpenTelemetry SDK, one
  TracerProvider per service, with the simulated trace and span ids, times, status and
  attributes.
- PostgreSQL: ``users`` and ``external_identities`` as the profile's platform defines them
  (``users.user_id`` in the runbook's data model, ``users.id`` in the deployed code), by COPY.
- Redis: the keys with the time to live they had left at the window end, less the time
  since (a key whose time has run out is not written), pipelined.

Service logs are not seeded: the stack has no log store.

A target that already holds data (a non-empty collection, a topic with records, a non-empty
table, a key matching one of the profile's patterns, or the topic the scenario lost) is
refused unless ``force``: then what the seed owns is dropped and recreated (the profile's
collections, topics and consumer groups, the two tables, keys matching the patterns) and
nothing else. Jaeger is only added to: its query API cannot delete.

Isolation (tests, incidents side by side): a :class:`Placement` names the Mongo database,
a prefix of topics and consumer groups, a PostgreSQL schema, a prefix of Redis keys and of
service names. :func:`placed_profile` is the profile under which the forensics readers find
the seeded data.

Seeding writes on purpose: it plays the platform. It is the one place in the toolkit that
commits consumer-group offsets; the forensics readers never do.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
import psycopg
import pymongo
import pymongo.errors
import redis
import requests
from confluent_kafka import KafkaException

from forensics.config import ENV, connection
from forensics.credentials import mask_uri
from forensics.errors import ForensicsError, ParameterError, SourceError
from forensics.evidence import SNAPSHOT_TABLES, Evidence
from forensics.profiles import Profile, load_profile
from forensics.simulate.seed_targets import TARGET_CLASSES, Progress, Target
from forensics.timeutil import Window, parse_time, utcnow

TARGETS = ("redis", "postgres", "kafka", "mongo", "jaeger")
"""Every store the seed writes, in the order it writes them: the quick ones first, Redis first of
all, so that its short TTLs (30 s conversation locks) lose the least to the time seeding takes."""
OPTIONAL_TARGETS = ("prometheus",)
"""Stores seeded only when asked (``--targets ...,prometheus``): Prometheus is opt-in in the stack."""
CONNECTION = {"mongo": "mongo", "kafka": "kafka", "jaeger": "otlp", "postgres": "postgres", "redis": "redis",
              "prometheus": "prometheus_data"}
"""Target -> :func:`forensics.config.connection` source (FORENSICS_* variable)."""
_PREFIX = re.compile(r"^[A-Za-z0-9_.-]*$")


class TargetNotEmpty(ForensicsError):
    """A target already holds data and ``force`` was not given; ``conflicts`` lists what was found."""

    def __init__(self, conflicts: Sequence[str]) -> None:
        self.conflicts = list(conflicts)
        super().__init__("the target already holds data (" + "; ".join(self.conflicts)
                         + "): use --force to drop and recreate what the seed owns, or --target-prefix")



# ---- where the data goes ------------------------------------------------------------------

@dataclass(frozen=True)
class Placement:
    """Where a seed writes, beyond the profile's own names (defaults: exactly the profile's).

    database: Mongo database (None: the profile's). topic_prefix: prefix of every topic and
    consumer group. pg_schema: PostgreSQL schema of the two tables (None: the connection's
    search_path). redis_prefix: prefix of every key. service_prefix: prefix of the service
    names spans are reported under.
    """

    database: str | None = None
    topic_prefix: str = ""
    pg_schema: str | None = None
    redis_prefix: str = ""
    service_prefix: str = ""

    @classmethod
    def from_prefix(cls, prefix: str, profile: Profile | str | None = None) -> Placement:
        """One prefix for every store (the CLI's ``--target-prefix``): ``demo-`` gives the Mongo
        database ``demo-chat4all``, topics ``demo-message-events``, schema ``demo``, keys
        ``demo-conversation:lock:...`` and services ``demo-router-service``."""
        if not prefix:
            return cls()
        if not _PREFIX.match(prefix):
            raise ParameterError(f"target prefix {prefix!r}: use letters, digits, '.', '_' and '-' only")
        prof = load_profile(profile)
        schema = re.sub(r"[^a-z0-9_]+", "_", prefix.lower()).strip("_") or None
        return cls(database=f"{prefix}{prof.mongo.database}", topic_prefix=prefix, pg_schema=schema,
                   redis_prefix=prefix, service_prefix=prefix)


def placed_profile(profile: Profile | str | None, placement: Placement) -> Profile:
    """``profile`` with the placement's names: what the forensics readers need to read a seed back
    (Mongo database, prefixed topics and groups, schema-qualified tables, prefixed key patterns
    and services)."""
    prof = load_profile(profile)
    tp, rp, sp = placement.topic_prefix, placement.redis_prefix, placement.service_prefix

    def topic(t):
        return replace(t, name=tp + t.name, original=tp + t.original if t.original else None) if t else None

    def group(g):
        return {k: group(v) for k, v in g.items()} if isinstance(g, dict) else tp + g

    def table(name: str) -> str:
        return f"{placement.pg_schema}.{name}" if placement.pg_schema else name

    kafka = replace(prof.kafka, message_events=topic(prof.kafka.message_events),
                    outbound=[topic(t) for t in prof.kafka.outbound], status_updates=topic(prof.kafka.status_updates),
                    dlq=[topic(t) for t in prof.kafka.dlq], consumer_groups=group(prof.kafka.consumer_groups))
    redis = replace(prof.redis, **{k: rp + getattr(prof.redis, k)
                                   for k in ("conversation_lock", "idempotency", "processed", "ratelimit")})
    sv = prof.services
    services = replace(sv, api_gateway=sp + sv.api_gateway, message_service=sp + sv.message_service,
                       router=sp + sv.router, user_service=sp + sv.user_service, file_service=sp + sv.file_service,
                       connectors={k: sp + v for k, v in sv.connectors.items()})
    return replace(prof, mongo=replace(prof.mongo, database=placement.database or prof.mongo.database), kafka=kafka,
                   postgres=replace(prof.postgres, users_table=table(prof.postgres.users_table),
                                    identities_table=table(prof.postgres.identities_table)),
                   redis=redis, services=services)


@dataclass
class SeedResult:
    """What a seed wrote: per target, object -> count; per step, seconds."""

    evidence: Evidence
    profile: Profile
    """The placed profile (:func:`placed_profile`): read the seed back with it."""
    written: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def window(self) -> Window:
        return self.evidence.window


# ---- entry points -------------------------------------------------------------------------

def seed(scenario: str, *, profile: Profile | str | None = "runbook", messages: int = 5000, seed: int = 7,
         end: pd.Timestamp | str | None = None, force: bool = False, targets: Iterable[str] = TARGETS,
         placement: Placement | None = None, connections: dict[str, str] | None = None,
         progress: Progress | None = None, baseline: str | float | pd.Timedelta | None = "window",
         noise: bool | None = None) -> SeedResult:
    """Simulate ``scenario`` and load it into the live stack; return what was written.

    end: window end (ISO 8601, relative like ``2h``, or a Timestamp; default now, to the
    millisecond). baseline: the normal period laid down right before the window (default
    the window's length; None or "none": the window only), so that a collection with a
    preceding baseline finds one; ``result.evidence.baseline`` is its evidence. noise: the
    deployed code's chronic noise (default: the profile's, see
    :func:`forensics.simulate.noise_default`). targets: a subset of :data:`TARGETS`. connections: target -> connection
    string; a target without one uses its FORENSICS_* variable (FORENSICS_OTLP_ENDPOINT for
    jaeger). Raises TargetNotEmpty (nothing written) when a target holds data and ``force``
    is False, SourceError when a store cannot be reached or refuses a write.
    """
    from forensics.simulate import simulate

    report = progress or (lambda *a, **k: None)
    targets = list(targets)
    _addresses(targets, connections)  # refuse a missing connection before simulating
    end_ts = utcnow().floor("ms") if end is None else parse_time(end)
    t0 = time.perf_counter()
    report(f"simulating {scenario} with {messages:,} messages (seed {seed})")
    ev = simulate(scenario, messages=messages, seed=seed, end=end_ts, profile=profile, baseline=baseline, noise=noise)
    simulated = time.perf_counter() - t0
    result = seed_evidence(ev, profile=profile, force=force, targets=targets, placement=placement,
                           connections=connections, progress=progress)
    result.seconds = {"simulate": round(simulated, 3), **result.seconds}
    return result


def seed_evidence(ev: Evidence, *, profile: Profile | str | None = None, force: bool = False,
                  targets: Iterable[str] = TARGETS, placement: Placement | None = None,
                  connections: dict[str, str] | None = None, progress: Progress | None = None) -> SeedResult:
    """Load simulated evidence ``ev`` into the live stack (see :func:`seed`), its baseline
    period (``ev.baseline``) too: the stores then hold both periods, as they would.

    Every target is opened and checked before anything is written, so a refusal or an
    unreachable store leaves all targets as they were.
    """
    report = progress or (lambda *a, **k: None)
    prof = load_profile(profile if profile is not None else ev.profile)
    placement = placement or Placement()
    if ev.scenario is None:
        raise ParameterError("seed needs simulated evidence (Evidence.scenario is empty)")
    addresses = _addresses(targets, connections)
    wanted = list(addresses)
    result = SeedResult(evidence=ev, profile=placed_profile(prof, placement))
    whole = with_baseline(ev)
    opened: list[Target] = []
    try:
        for name in wanted:
            report(f"{name}: connecting to {mask_uri(addresses[name])}")
            opened.append(_guard(name, addresses[name], lambda n=name: TARGET_CLASSES[n](
                addresses[n], prof, placement, whole, report)))
        conflicts = [c for target in opened for c in _guard(target.name, target.address, target.conflicts)]
        if conflicts and not force:
            raise TargetNotEmpty(conflicts)
        for target in opened:
            t0 = time.perf_counter()
            if force:
                _guard(target.name, target.address, target.clear)
            result.written[target.name] = _guard(target.name, target.address, target.write)
            result.notes += target.notes
            result.seconds[target.name] = round(time.perf_counter() - t0, 3)
            report(f"{target.name}: done in {result.seconds[target.name]:.1f} s "
                   + ", ".join(f"{k} {v:,}" for k, v in result.written[target.name].items()))
    finally:
        for target in opened:
            target.close()
    return result


def with_baseline(ev: Evidence) -> Evidence:
    """``ev`` and its baseline as one evidence over both periods (baseline rows first): what the
    stores hold once both have happened. ``ev`` itself when it has no baseline. A snapshot
    (Redis keys, topics) is the window's alone: the stores hold the state at its end."""
    if ev.baseline is None:
        return ev
    whole = Evidence(window=Window(ev.baseline.window.start, ev.window.end), profile=ev.profile,
                     sources=ev.sources, missing=ev.missing, scenario=ev.scenario)
    for name, frame in ev.tables.items():
        before = None if name in SNAPSHOT_TABLES else ev.baseline.tables.get(name)
        whole.tables[name] = frame if before is None else pd.concat([before, frame], ignore_index=True)
    return whole


def _addresses(targets: Iterable[str], connections: dict[str, str] | None) -> dict[str, str]:
    """Target -> connection string, in TARGETS order (Redis first); a ParameterError names each
    unknown target and each target without a connection."""
    asked = list(targets)
    known = TARGETS + OPTIONAL_TARGETS
    unknown = [t for t in asked if t not in known]
    if unknown:
        raise ParameterError(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(known)}")
    conns = connections or {}
    addresses = {t: connection(CONNECTION[t], conns.get(t)) for t in known if t in asked}
    unset = [t for t, a in addresses.items() if not a]
    if unset:
        raise ParameterError("no connection for " + ", ".join(f"{t} (set {ENV[CONNECTION[t]]})" for t in unset))
    return addresses


def _guard(name: str, address: str, call: Callable[[], Any]) -> Any:
    """Run ``call``; a client library's error becomes a SourceError with credentials masked."""
    try:
        return call()
    except CLIENT_ERRORS as exc:
        text = mask_uri(f"{type(exc).__name__}: {exc}".splitlines()[0])
        raise SourceError(name, f"{mask_uri(address)}: {text}", f"is the {name} service up, and does the "
                          f"FORENSICS_* connection string name it with a user allowed to write?") from None


CLIENT_ERRORS = (pymongo.errors.PyMongoError, KafkaException, psycopg.Error, redis.RedisError,
                 requests.RequestException, OSError)
"""What the store clients raise: turned into a SourceError naming the store, credentials masked."""
