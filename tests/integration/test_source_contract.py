"""The contract every evidence source keeps, run over every registered source (as ibis runs one
suite over its backends), the simulator and a bundle read back: a new source added to
``forensics.sources.registry.SOURCES`` is covered here without a line of new test code.

- options are validated: a key no source takes, or a number that is not one, is one line
  naming the source and the key;
- an unreachable server is one SourceError line with a hint, its password masked;
- over a seeded incident (the local stack, isolated under a unique prefix; its metrics
  backfilled into a Prometheus of the test's own, as ``forensics seed --targets ...,prometheus``
  does, since Prometheus is opt-in in the stack and one TSDB cannot be isolated by a prefix):
  every table is schema-valid and one the source declares, the description has the family's
  keys, every table read has its queries recorded, event rows lie inside the window, and no
  credential of the connection string appears in the description or the queries;
- streamed (``EvidenceSource.stream``, what ``forensics collect`` writes slice by slice): every
  slice is schema-valid and declared, the slices keep the same contract, and the bundle
  written as they arrive holds every row streamed, with each table's query.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import pytest
from ci import skip_or_fail
from conftest import unique_name
from stack_tools import free_ports, install_problem, private_services

from forensics import schema
from forensics.bundle import BundleWriter, read_bundle, read_manifest, write_bundle
from forensics.config import ENV
from forensics.errors import ParameterError, SourceError
from forensics.profiles import load_profile
from forensics.simulate import render
from forensics.simulate.seed import OPTIONAL_TARGETS, TARGETS, Placement, seed
from forensics.sources.base import CollectRequest, EvidenceSource, drain, joined
from forensics.sources.registry import SOURCES, check_options, collect_bundle, source_class

pytestmark = pytest.mark.integration

DESCRIPTION_KEYS = {"kind", "connection", "parameters", "rows", "truncated", "notes"}
EVENT_TABLES = ("status_events", "dlq_records", "spans", "log_events", "metrics")
"""Tables of things that happened at a time: their rows must lie inside the window asked for."""
METRIC_STEP_S = 60
"""Metric samples are aligned to this step (the simulator's and the replay's default)."""
SECRET = "contract-s3cret"
FAST = {"timeout_s": "3", "connect_timeout_s": "2"}
FILE_INPUTS = {"logs": "logs"}
"""Sources that read files instead of a server: the option that names them (the seeded
incident's files are written for it)."""


def server_sources() -> list[str]:
    return sorted(n for n in SOURCES if source_class(n).connection)


# ---- options ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SOURCES))
def test_numbers_that_are_not_numbers_are_one_line_naming_source_and_key(name):
    cls = source_class(name)
    numeric = [o for o in cls.option_specs() if o.kind in ("int", "float")]
    assert numeric or not cls.bounded, f"{name} takes the query bounds, so it has numeric options"
    for option in numeric:
        with pytest.raises(ParameterError) as err:
            check_options([name], {option.key: "not-a-number"})
        assert str(err.value) == (f"{name} option {option.key}: expected "
                                  f"{'a whole number' if option.kind == 'int' else 'a number'}, got 'not-a-number'")


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_an_unknown_key_is_refused_naming_the_accepted_ones(name):
    with pytest.raises(ParameterError) as err:
        check_options([name], {"no_such_option": "1"})
    assert "no_such_option" in str(err.value) and "\n" not in str(err.value)
    assert all(key in str(err.value) for key in source_class(name).accepted())


# ---- unreachable ------------------------------------------------------------------------------

def unreachable(value: str) -> str:
    """The connection string ``value`` pointed at a closed port, with a password to be masked."""
    parts = urlsplit(value if "://" in value else f"kafka://{value}")
    if parts.scheme == "kafka":
        return "127.0.0.1:9"
    return urlunsplit(parts._replace(netloc=f"forensics:{SECRET}@127.0.0.1:9"))


@pytest.mark.parametrize("name", server_sources())
def test_an_unreachable_server_is_one_source_error_line_with_a_hint(name, stack_env):
    cls = source_class(name)
    live = stack_env.env.get(ENV[cls.env]) or "http://localhost:1"
    options = {cls.connection: unreachable(live), **FAST}
    window = _any_window()
    with pytest.raises(SourceError) as err:
        cls.collect(CollectRequest(window, _profile(), options))
    text = str(err.value)
    assert "\n" not in text and err.value.hint, text
    assert SECRET not in text


# ---- over a seeded incident -------------------------------------------------------------------

def _any_window():
    from forensics.timeutil import Window

    return Window.parse("2025-12-03T14:00:00Z", "2025-12-03T15:00:00Z")


def _profile():
    from forensics.profiles import load_profile

    return load_profile("runbook")


class Seeded:
    def __init__(self, result, logs: Path, env: dict[str, str], unavailable: dict[str, str]) -> None:
        self.result, self.logs, self.env = result, logs, env
        self.unavailable = unavailable
        """Source -> why the stack could not hold its part of the incident (skip, or FAIL under CI)."""

    def options(self, cls: type[EvidenceSource]) -> dict[str, str]:
        if cls.name in self.unavailable:
            skip_or_fail(self.unavailable[cls.name])
        options: dict[str, str] = {}
        if cls.connection:
            options[cls.connection] = self.env[ENV[cls.env]]
        if cls.name in FILE_INPUTS:
            options[FILE_INPUTS[cls.name]] = str(self.logs)
        return options


@pytest.fixture(scope="module")
def seeded(stack, tmp_path_factory):
    """One incident seeded into every store of the stack under a unique prefix, its metrics into a
    Prometheus of our own (reached with a user and password it ignores, for the masking check);
    its log lines as files. Everything under the prefix is removed after."""
    prefix = unique_name("c").replace("_", "-") + "-"
    placement = Placement.from_prefix(prefix, "runbook")
    private = tmp_path_factory.mktemp("contract-prometheus")
    problem = install_problem("prometheus")
    result = seed("whatsapp-rate-limit", profile="runbook", messages=400, seed=5, placement=placement,
                  connections={"mongo": stack.mongo_uri, "kafka": stack.kafka_bootstrap, "jaeger": stack.otlp_endpoint,
                               "postgres": stack.postgres_dsn, "redis": stack.redis_url,
                               "prometheus": str(private / "prometheus" / "data")},
                  targets=TARGETS + (() if problem else OPTIONAL_TARGETS))
    logs = tmp_path_factory.mktemp("contract-logs")
    for service, lines in render.log_lines(result.evidence).items():
        (logs / f"{placement.service_prefix}{service}.log").write_text("\n".join(lines) + "\n")
    port = free_ports(1)[0]
    env = {**stack.env, "FORENSICS_PROMETHEUS_URL": f"http://contract:{SECRET}@127.0.0.1:{port}"}
    try:
        if problem:
            yield Seeded(result, logs, env, {"prometheus": problem})
        else:
            with private_services("prometheus", private, {"FORENSICS_PROMETHEUS_PORT": str(port)}):
                yield Seeded(result, logs, env, {})
    finally:
        _remove(stack, placement, prefix)


def _remove(stack, placement: Placement, prefix: str) -> None:
    import psycopg
    import pymongo
    import redis
    from confluent_kafka.admin import AdminClient

    pymongo.MongoClient(stack.mongo_uri).drop_database(placement.database)
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    for future in (admin.delete_topics(topics, operation_timeout=30) if topics else {}).values():
        future.result(timeout=30)
    groups = [g.group_id for g in admin.list_consumer_groups(request_timeout=10).result(timeout=10).valid
              if g.group_id.startswith(prefix)]
    for future in (admin.delete_consumer_groups(groups, request_timeout=10) if groups else {}).values():
        future.result(timeout=10)
    with psycopg.connect(stack.postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{placement.pg_schema}" CASCADE')
    client = redis.Redis.from_url(stack.redis_url)
    keys = list(client.scan_iter(match=placement.redis_prefix + "*", count=1000))
    if keys:
        client.delete(*keys)


def _secrets(options: dict[str, str]) -> list[str]:
    """The passwords inside the options' connection strings."""
    found = []
    for value in options.values():
        parts = urlsplit(str(value))
        if "://" in str(value) and parts.password:
            found.append(parts.password)
    return found


def rows_outside(table: str, frame: pd.DataFrame, window) -> int:
    """Rows of an event table outside ``window``. A trace is kept whole when one of its spans
    starts inside the window; a metric sample may sit on the step boundary just before it; the
    initial PENDING derived from a message's creation (``derived``) is where the message began."""
    times = frame[schema.table(table).time_column]
    inside = times.isna() | ((times >= window.start) & (times <= window.end))
    if table == "status_events":
        inside = inside | frame["derived"].fillna(False).astype(bool)
    if table == "spans":
        inside = inside | frame["trace_id"].isin(frame.loc[inside & times.notna(), "trace_id"])
    if table == "metrics":
        inside = inside | ((times >= window.start.floor(f"{METRIC_STEP_S}s")) & (times <= window.end))
    return int((~inside).sum())


def check_contract(name: str, tables: dict[str, pd.DataFrame], description: dict, queries: dict, window,
                   declared: tuple[str, ...], secrets: list[str]) -> None:
    assert sum(len(f) for f in tables.values()), f"{name} read nothing from the seeded incident"
    assert set(tables) <= set(declared), f"{name} returned undeclared tables {set(tables) - set(declared)}"
    for table, frame in tables.items():
        schema.validate(table, frame)
        if len(frame):
            assert queries.get(table), f"{name}: no query recorded for {table}"
        if table in EVENT_TABLES and len(frame):
            outside = rows_outside(table, frame, window)
            assert outside == 0, f"{name}: {outside} {table} rows outside {window}"
    assert DESCRIPTION_KEYS <= set(description), f"{name}: description lacks {DESCRIPTION_KEYS - set(description)}"
    assert description["kind"] == name and isinstance(description["notes"], list)
    assert description["rows"] == sum(len(f) for f in tables.values())
    text = json.dumps(description, default=str) + json.dumps(queries, default=str)
    for secret in secrets:
        assert secret not in text, f"{name}: a credential of the connection string is in its description"


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_reads_the_seeded_incident_by_the_contract_and_its_bundle_reads_back(name, seeded, tmp_path):
    from forensics.sources.registry import collect

    cls = source_class(name)
    options = seeded.options(cls)
    window, secrets = seeded.result.window, _secrets(options)
    ev, queries, custody = collect([name], window, seeded.result.profile, options)
    assert not ev.missing, ev.missing
    check_contract(name, dict(ev.tables), ev.sources[name], queries, window, cls.tables, secrets)

    back = read_bundle(write_bundle(ev, tmp_path / "bundle", queries=queries, custody=custody), verify=True)
    assert {t: len(f) for t, f in back.tables.items()} == {t: len(f) for t, f in ev.tables.items()}
    check_contract(name, dict(back.tables), back.sources[name], queries, window, cls.tables, secrets)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_streams_slices_by_the_contract_into_a_bundle_as_they_arrive(name, seeded, tmp_path):
    cls = source_class(name)
    options = seeded.options(cls)
    window, secrets, profile = seeded.result.window, _secrets(options), seeded.result.profile
    slices: list[tuple[str, pd.DataFrame]] = []
    result = drain(cls(cls.parse(options), load_profile(profile)).stream(window), slices.append)
    assert slices and not result.tables, f"{name}: the rows go by as slices, not in the result"
    for table, frame in slices:
        assert table in cls.tables, f"{name} streamed an undeclared table {table}"
        schema.validate(table, frame)
    tables = {t: joined(t, [f for s, f in slices if s == t]) for t in dict.fromkeys(t for t, _ in slices)}
    check_contract(name, tables, result.description, result.queries, window, cls.tables, secrets)

    with BundleWriter(tmp_path / "streamed") as writer:
        ev = collect_bundle(writer, [name], window, profile, options, baseline="none")
    assert not ev.missing, ev.missing
    back = read_bundle(tmp_path / "streamed", verify=True)
    # every row streamed is in the bundle (a second read of a live store may differ: lag, TTLs, spans)
    manifest = read_manifest(tmp_path / "streamed")
    collected = next(e for e in manifest["custody"] if e["action"] == "collected")["detail"]["rows"]
    assert {t: len(f) for t, f in back.tables.items()} == collected
    assert sum(collected.values()) == back.sources[name]["rows"]
    queries = {t: entry["query"] for t, entry in manifest["tables"].items()}
    check_contract(name, dict(back.tables), back.sources[name], queries, window, cls.tables, secrets)
