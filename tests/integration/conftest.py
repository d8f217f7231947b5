"""Fixtures for integration tests against the real local stack (scripts/services).

Connection settings come from the FORENSICS_* environment variables
(`eval "$(scripts/services env)"`); when they are unset, `scripts/services env`
is run to get them. Every service is checked with a real protocol request once
per session. A service that does not answer makes the tests that need it
FAIL when CI=true, and SKIP otherwise, naming the log file to read.

Isolation helpers: `mongo_db` (fresh database, dropped after), `kafka_topic_prefix`
(unique prefix, its topics deleted after), `pg_schema` / `pg_database` (fresh
schema / database, dropped after), `redis_db` (unique key prefix, keys deleted after).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from ci import skip_or_fail as skip_or_fail_now
from stack_tools import SERVICES_SCRIPT

# service -> environment variable holding its address
SERVICE_ENV = {
    "mongo": "FORENSICS_MONGO_URI",
    "kafka": "FORENSICS_KAFKA_BOOTSTRAP",
    "jaeger": "FORENSICS_JAEGER_URL",
    "postgres": "FORENSICS_POSTGRES_DSN",
    "redis": "FORENSICS_REDIS_URL",
}
OTHER_ENV = ("FORENSICS_OTLP_ENDPOINT", "FORENSICS_STACK_DIR")


@pytest.fixture(scope="session")
def skip_or_fail():
    """Skip with the reason on a developer's machine; fail with it under CI=true (never a silent pass)."""
    return skip_or_fail_now


def unique_name(prefix: str = "t") -> str:
    """Short, unique, valid as a Mongo db / Postgres / Kafka / Redis name."""
    return f"{prefix}_{int(time.time())}_{uuid.uuid4().hex[:8]}"


def services_env() -> dict[str, str]:
    """Parse `scripts/services env` (export K=V lines)."""
    out = subprocess.run([sys.executable, str(SERVICES_SCRIPT), "env"], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL, check=True).stdout
    env = {}
    for line in out.splitlines():
        parts = shlex.split(line, comments=True)
        if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
            key, value = parts[1].split("=", 1)
            env[key] = value
    return env


def _check_mongo(uri: str) -> None:
    import pymongo

    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000)
    try:
        client.admin.command("ping")
        client.list_database_names()
    finally:
        client.close()


def _check_kafka(bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=5)
    if not md.brokers:
        raise RuntimeError("metadata lists no broker")


def _check_jaeger(url: str) -> None:
    with urllib.request.urlopen(url.rstrip("/") + "/api/services", timeout=5) as resp:  # noqa: S310
        json.loads(resp.read())


def _check_postgres(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, connect_timeout=5) as conn:
        conn.execute("SELECT 1").fetchone()


def _check_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.ping()
    finally:
        client.close()


CHECKS = {"mongo": _check_mongo, "kafka": _check_kafka, "jaeger": _check_jaeger,
          "postgres": _check_postgres, "redis": _check_redis}


@dataclass
class Stack:
    """Addresses of the backing services plus the outcome of their health checks."""

    env: dict[str, str]
    source: str  # "environment" or "scripts/services env"
    problems: dict[str, str] = field(default_factory=dict)
    _checked: set[str] = field(default_factory=set)

    @property
    def mongo_uri(self) -> str:
        return self.env["FORENSICS_MONGO_URI"]

    @property
    def kafka_bootstrap(self) -> str:
        return self.env["FORENSICS_KAFKA_BOOTSTRAP"]

    @property
    def jaeger_url(self) -> str:
        return self.env["FORENSICS_JAEGER_URL"].rstrip("/")

    @property
    def otlp_endpoint(self) -> str:
        return self.env.get("FORENSICS_OTLP_ENDPOINT", "http://127.0.0.1:4318").rstrip("/")

    @property
    def postgres_dsn(self) -> str:
        return self.env["FORENSICS_POSTGRES_DSN"]

    @property
    def redis_url(self) -> str:
        return self.env["FORENSICS_REDIS_URL"]

    @property
    def stack_dir(self) -> Path | None:
        raw = self.env.get("FORENSICS_STACK_DIR")
        return Path(raw) if raw else None

    def log_path(self, service: str) -> str:
        if self.stack_dir is None:
            return "(unknown: FORENSICS_STACK_DIR not set; see `scripts/services status`)"
        return str(self.stack_dir / service / f"{service}.log")

    def problem(self, service: str) -> str | None:
        """Check the service once; return why it is unusable, or None."""
        if service not in self._checked:
            self._checked.add(service)
            var = SERVICE_ENV[service]
            if var in self.problems:  # could not even get the address
                pass
            elif not self.env.get(var):
                self.problems[service] = f"{var} is not set"
            else:
                try:
                    CHECKS[service](self.env[var])
                except Exception as exc:  # noqa: BLE001
                    self.problems[service] = f"{type(exc).__name__}: {exc}"
        return self.problems.get(service)

    def require(self, *services: str) -> None:
        """Fail (CI=true) or skip the calling test unless every service answers."""
        missing = [(s, p) for s in services if (p := self.problem(s))]
        if not missing:
            return
        lines = [f"{s} is not available ({p}); log: {self.log_path(s)}" for s, p in missing]
        skip_or_fail_now("; ".join(lines) + ". Start the stack with `scripts/services up` "
                         f"(addresses from {self.source}).")


@pytest.fixture(scope="session")
def stack_env() -> Stack:
    """The stack's addresses; checks nothing by itself (see `stack` and `Stack.require`)."""
    env = {k: os.environ[k] for k in (*SERVICE_ENV.values(), *OTHER_ENV) if os.environ.get(k)}
    source = "environment"
    problems: dict[str, str] = {}
    if any(v not in env for v in SERVICE_ENV.values()):
        source = "scripts/services env" if not env else "FORENSICS_* environment + scripts/services env"
        try:
            for key, value in services_env().items():
                env.setdefault(key, value)
        except Exception as exc:  # noqa: BLE001
            for service, var in SERVICE_ENV.items():
                if var not in env:
                    problems[service] = f"{var} unset and `scripts/services env` failed: {exc}"
    return Stack(env=env, source=source, problems=problems)


@pytest.fixture(scope="session")
def stack(stack_env: Stack) -> Stack:
    """All five services, each answering a real request (else fail in CI / skip)."""
    stack_env.require(*SERVICE_ENV)
    return stack_env


# ---- MongoDB (SecantusDB) -------------------------------------------------
@pytest.fixture(scope="session")
def mongo_client(stack_env: Stack):
    """pymongo client on FORENSICS_MONGO_URI (tz_aware=True: dates come back as UTC-aware)."""
    stack_env.require("mongo")
    import pymongo

    client = pymongo.MongoClient(stack_env.mongo_uri, serverSelectionTimeoutMS=10000, tz_aware=True)
    yield client
    client.close()


@pytest.fixture
def mongo_db(mongo_client):
    """A fresh, uniquely named database, dropped after the test."""
    name = unique_name("t")
    db = mongo_client[name]
    yield db
    mongo_client.drop_database(name)


# ---- Kafka ----------------------------------------------------------------
@pytest.fixture(scope="session")
def kafka_bootstrap(stack_env: Stack) -> str:
    stack_env.require("kafka")
    return stack_env.kafka_bootstrap


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def kafka_topic_prefix(kafka_admin) -> str:
    """A unique topic-name prefix (e.g. 't-1712345678-ab12cd34-'); the topics and consumer
    groups that carry it are deleted after the test. Auto topic creation is off: create
    topics explicitly."""
    prefix = unique_name("t").replace("_", "-") + "-"
    yield prefix
    groups = [g.group_id for g in kafka_admin.list_consumer_groups(request_timeout=10).result(timeout=10).valid
              if g.group_id.startswith(prefix)]
    topics = [t for t in kafka_admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    futures = [*(kafka_admin.delete_consumer_groups(groups, request_timeout=10).values() if groups else ()),
               *(kafka_admin.delete_topics(topics, operation_timeout=30).values() if topics else ())]
    for future in futures:
        try:
            future.result(timeout=30)
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass


# ---- Jaeger ---------------------------------------------------------------
@pytest.fixture(scope="session")
def jaeger_url(stack_env: Stack) -> str:
    stack_env.require("jaeger")
    return stack_env.jaeger_url


@pytest.fixture(scope="session")
def otlp_endpoint(stack_env: Stack) -> str:
    """OTLP/HTTP base URL of the Jaeger collector (append /v1/traces)."""
    stack_env.require("jaeger")
    return stack_env.otlp_endpoint


# ---- PostgreSQL -----------------------------------------------------------
@pytest.fixture(scope="session")
def pg_dsn(stack_env: Stack) -> str:
    stack_env.require("postgres")
    return stack_env.postgres_dsn


@dataclass
class PgSchema:
    name: str
    dsn: str  # conninfo with search_path set to this schema (libpq key=value form)

    def connect(self, **kwargs):
        import psycopg

        return psycopg.connect(self.dsn, **kwargs)


@pytest.fixture
def pg_schema(pg_dsn: str) -> PgSchema:
    """A fresh schema in database chat4all; `.dsn` connects with search_path set to it."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = unique_name("t")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    yield PgSchema(name=name, dsn=make_conninfo(pg_dsn, options=f"-c search_path={name}"))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def pg_database(pg_dsn: str) -> str:
    """A fresh database; yields its conninfo. Dropped (WITH FORCE) after the test."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = unique_name("t")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_conninfo(pg_dsn, dbname=name)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---- Redis ----------------------------------------------------------------
@dataclass
class RedisNamespace:
    client: object  # redis.Redis (decode_responses=True)
    prefix: str

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)


@pytest.fixture(scope="session")
def redis_url(stack_env: Stack) -> str:
    stack_env.require("redis")
    return stack_env.redis_url


@pytest.fixture
def redis_db(redis_url: str) -> RedisNamespace:
    """A client plus a unique key prefix; keys under the prefix are deleted after (SCAN)."""
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ns = RedisNamespace(client=client, prefix=unique_name("t") + ":")
    yield ns
    keys = list(client.scan_iter(match=ns.prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
