"""Naming profiles: every collection, field path, topic, consumer group, key pattern and
service name the toolkit uses comes from here, never from a literal in analysis code.

Two profiles ship with the package: ``runbook`` (the default: the runbook's names) and
``chat4all-v2`` (the deployed code's names). A YAML file of the same shape selects a
custom one: ``load_profile("/path/to/site.yaml")``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from forensics.errors import ProfileError
from forensics.schema import PLATFORMS

DEFAULT_PROFILE = "runbook"
CHANNELS = PLATFORMS
"""Channels a profile names a connector for (:data:`forensics.schema.PLATFORMS`)."""


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    channel: str | None = None
    original: str | None = None
    """For a DLQ topic: the topic whose failed records it receives."""


@dataclass(frozen=True)
class MongoNames:
    database: str
    collections: dict[str, str]
    message_fields: dict[str, list[str]]
    history_fields: dict[str, list[str]]
    file_fields: dict[str, list[str]]


@dataclass(frozen=True)
class KafkaNames:
    message_events: Topic
    outbound: list[Topic]
    status_updates: Topic | None
    dlq: list[Topic]
    consumer_groups: dict[str, Any]
    event_case: str

    def expected_topics(self) -> list[Topic]:
        """Every topic the platform needs, in the order the runbook lists them."""
        topics = [self.message_events, *self.outbound]
        if self.status_updates:
            topics.append(self.status_updates)
        return topics + list(self.dlq)

    def outbound_for(self, channel: str) -> Topic | None:
        return next((t for t in self.outbound if t.channel == channel), None)

    def dlq_for(self, channel: str) -> Topic:
        """The DLQ topic a failed message of ``channel`` lands in."""
        for t in self.dlq:
            if t.channel in (channel, None):
                return t
        raise ProfileError(f"profile has no DLQ topic for channel {channel}")

    @property
    def router_group(self) -> str:
        return self.consumer_groups["router"]


@dataclass(frozen=True)
class PostgresNames:
    users_table: str
    users_id_column: str
    identities_table: str


@dataclass(frozen=True)
class RedisNames:
    conversation_lock: str
    idempotency: str
    processed: str
    ratelimit: str
    lock_ttl_s: float
    processed_ttl_s: float


@dataclass(frozen=True)
class ServiceNames:
    api_gateway: str
    message_service: str
    router: str
    user_service: str
    file_service: str
    connectors: dict[str, str]

    def connector(self, channel: str) -> str:
        return self.connectors.get(channel, f"{channel.lower()}-connector")

    def all(self) -> list[str]:
        return [self.api_gateway, self.message_service, self.router, self.user_service, self.file_service,
                *self.connectors.values()]


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    mongo: MongoNames
    kafka: KafkaNames
    postgres: PostgresNames
    redis: RedisNames
    services: ServiceNames
    path: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path}


def available_profiles() -> list[str]:
    """Names of the profiles shipped with the package."""
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))


def load_profile(name_or_path: str | Path | Profile | None = None) -> Profile:
    """Load a shipped profile by name (``runbook``, ``chat4all-v2``) or a YAML file by path."""
    if isinstance(name_or_path, Profile):
        return name_or_path
    ref = str(name_or_path or DEFAULT_PROFILE)
    if ref in available_profiles():
        text = resources.files(__name__).joinpath(f"{ref}.yaml").read_text(encoding="utf-8")
        return _parse(yaml.safe_load(text), ref, None)
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ProfileError(f"profile file {ref} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ProfileError(f"profile file {ref} is not valid YAML: {exc}") from exc
        return _parse(data, ref, str(path))
    raise ProfileError(f"unknown profile {ref!r}; known: {', '.join(available_profiles())}, or a path to a YAML file")


def _need(data: Any, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(data, dict) or key not in data:
        raise ProfileError(f"profile {where}: missing key {key!r}")
    value = data[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ProfileError(f"profile {where}.{key}: expected {names}, got {type(value).__name__}")
    return value


def _fields(data: dict, key: str, where: str) -> dict[str, list[str]]:
    raw = _need(data, key, where, dict)
    out = {}
    for canon, paths in raw.items():
        paths = [paths] if isinstance(paths, str) else paths
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths) or not paths:
            raise ProfileError(f"profile {where}.{key}.{canon}: expected a field path or a list of them")
        out[str(canon)] = paths
    return out


def _topic(data: Any, where: str) -> Topic:
    if not isinstance(data, dict):
        raise ProfileError(f"profile {where}: expected a mapping with name and partitions")
    name = _need(data, "name", where, str)
    partitions = _need(data, "partitions", where, int)
    if partitions < 1:
        raise ProfileError(f"profile {where}.partitions: must be at least 1")
    return Topic(name, partitions, data.get("channel"), data.get("original"))


def _parse(data: Any, ref: str, path: str | None) -> Profile:
    if not isinstance(data, dict):
        raise ProfileError(f"profile {ref}: expected a YAML mapping at the top level")
    mongo = _need(data, "mongo", "", dict)
    kafka = _need(data, "kafka", "", dict)
    pg = _need(data, "postgres", "", dict)
    rd = _need(data, "redis", "", dict)
    sv = _need(data, "services", "", dict)
    collections = _need(mongo, "collections", "mongo", dict)
    for needed in ("messages", "status_history", "conversations", "files"):
        _need(collections, needed, "mongo.collections", str)
    su = kafka.get("status_updates")
    event_case = _need(kafka, "event_case", "kafka", str)
    if event_case not in ("snake_case", "camelCase"):
        raise ProfileError("profile kafka.event_case: expected snake_case or camelCase")
    return Profile(
        name=_need(data, "name", "", str),
        description=str(data.get("description", "")),
        mongo=MongoNames(
            database=_need(mongo, "database", "mongo", str),
            collections=dict(collections),
            message_fields=_fields(mongo, "message_fields", "mongo"),
            history_fields=_fields(mongo, "history_fields", "mongo"),
            file_fields=_fields(mongo, "file_fields", "mongo"),
        ),
        kafka=KafkaNames(
            message_events=_topic(_need(kafka, "message_events", "kafka", dict), "kafka.message_events"),
            outbound=[_topic(t, f"kafka.outbound[{i}]") for i, t in enumerate(_need(kafka, "outbound", "kafka", list))],
            status_updates=_topic(su, "kafka.status_updates") if su else None,
            dlq=[_topic(t, f"kafka.dlq[{i}]") for i, t in enumerate(_need(kafka, "dlq", "kafka", list))],
            consumer_groups=dict(_need(kafka, "consumer_groups", "kafka", dict)),
            event_case=event_case,
        ),
        postgres=PostgresNames(
            users_table=_need(pg, "users_table", "postgres", str),
            users_id_column=_need(pg, "users_id_column", "postgres", str),
            identities_table=_need(pg, "identities_table", "postgres", str),
        ),
        redis=RedisNames(
            conversation_lock=_need(rd, "conversation_lock", "redis", str),
            idempotency=_need(rd, "idempotency", "redis", str),
            processed=_need(rd, "processed", "redis", str),
            ratelimit=_need(rd, "ratelimit", "redis", str),
            lock_ttl_s=float(_need(rd, "lock_ttl_s", "redis", (int, float))),
            processed_ttl_s=float(_need(rd, "processed_ttl_s", "redis", (int, float))),
        ),
        services=ServiceNames(
            api_gateway=_need(sv, "api_gateway", "services", str),
            message_service=_need(sv, "message_service", "services", str),
            router=_need(sv, "router", "services", str),
            user_service=_need(sv, "user_service", "services", str),
            file_service=_need(sv, "file_service", "services", str),
            connectors=dict(_need(sv, "connectors", "services", dict)),
        ),
        path=path,
    )
