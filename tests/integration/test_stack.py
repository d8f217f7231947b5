"""The local backing stack (scripts/services): every service answers real client
requests, `up` is idempotent, `down` stops exactly what was started."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from stack_tools import SERVICES_SCRIPT, free_ports, run_services

pytestmark = pytest.mark.integration


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310
        assert resp.status == 200
        return json.loads(resp.read())


# ---- each service answers --------------------------------------------------
def test_mongo_insert_find(mongo_db):
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    docs = [{"message_id": f"m{i}", "conversation_id": "c1", "status": s, "created_at": now}
            for i, s in enumerate(["PENDING", "DELIVERED", "FAILED"])]
    mongo_db.messages.insert_many(docs)
    mongo_db.messages.create_index("message_id", unique=True)
    got = list(mongo_db.messages.find({"conversation_id": "c1"}, {"_id": 0}).sort("message_id", 1))
    assert [d["status"] for d in got] == ["PENDING", "DELIVERED", "FAILED"]
    assert got[0]["created_at"] == now
    counts = {d["_id"]: d["n"] for d in mongo_db.messages.aggregate(
        [{"$group": {"_id": "$status", "n": {"$sum": 1}}}])}
    assert counts == {"PENDING": 1, "DELIVERED": 1, "FAILED": 1}
    assert mongo_db.name in mongo_db.client.list_database_names()


def test_kafka_create_produce_consume(kafka_bootstrap, kafka_admin, kafka_topic_prefix):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
    from confluent_kafka.admin import NewTopic

    topic = kafka_topic_prefix + "chat-events"
    futures = kafka_admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    futures[topic].result(timeout=30)

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 0})
    sent = [(f"conv-{i % 4}", json.dumps({"messageId": f"m{i}", "eventType": "MESSAGE_CREATED"}))
            for i in range(12)]
    for key, value in sent:
        producer.produce(topic, key=key, value=value, headers=[("__TypeId__", b"ChatEvent")])
    assert producer.flush(30) == 0

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": kafka_topic_prefix + "g",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(3)])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < len(sent) and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append(msg)
        assert sorted((m.key().decode(), m.value().decode()) for m in got) == sorted(sent)
        assert all(dict(m.headers())["__TypeId__"] == b"ChatEvent" for m in got)
        # one key always lands on one partition (default murmur2 partitioner)
        by_key: dict[str, set[int]] = {}
        for m in got:
            by_key.setdefault(m.key().decode(), set()).add(m.partition())
        assert all(len(parts) == 1 for parts in by_key.values())
        total = 0
        for p in range(3):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            assert low == 0
            total += high
        assert total == len(sent)
    finally:
        consumer.close()


def test_kafka_auto_topic_creation_is_off(kafka_bootstrap, kafka_admin, kafka_topic_prefix):
    from confluent_kafka import Producer

    topic = kafka_topic_prefix + "never-created"
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.timeout.ms": 3000})
    producer.produce(topic, value=b"x")
    producer.flush(10)
    assert topic not in kafka_admin.list_topics(timeout=10).topics


def test_jaeger_query_api_answers(jaeger_url):
    services = _get_json(jaeger_url + "/api/services")
    assert "data" in services
    v3 = _get_json(jaeger_url + "/api/v3/services")
    assert isinstance(v3, dict)


def test_jaeger_otlp_span_round_trip(jaeger_url, otlp_endpoint):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    service = f"forensics-test-{uuid.uuid4().hex[:8]}"
    message_id = str(uuid.uuid4())
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(
        OTLPSpanExporter(endpoint=otlp_endpoint + "/v1/traces", timeout=10)))
    tracer = provider.get_tracer("chat4all-forensics-tests")
    with tracer.start_as_current_span("POST /webhooks/whatsapp") as span:
        span.set_attribute("message_id", message_id)
        span.set_attribute("webhook", True)
        trace_id = format(span.get_span_context().trace_id, "032x")
    assert provider.force_flush(10_000)
    provider.shutdown()

    query = urllib.parse.urlencode({"service": service, "lookback": "1h", "limit": 20})
    deadline = time.monotonic() + 20
    traces: list = []
    while time.monotonic() < deadline:
        traces = _get_json(f"{jaeger_url}/api/traces?{query}")["data"] or []
        if traces:
            break
        time.sleep(0.5)
    assert len(traces) == 1, f"span of {service} not found in Jaeger"
    trace = traces[0]
    assert trace["traceID"] == trace_id
    (span_json,) = trace["spans"]
    assert span_json["operationName"] == "POST /webhooks/whatsapp"
    tags = {t["key"]: t["value"] for t in span_json["tags"]}
    assert tags["message_id"] == message_id
    assert service in _get_json(jaeger_url + "/api/services")["data"]


def test_postgres_create_insert_select(pg_schema):
    with pg_schema.connect() as conn:
        conn.execute("CREATE TABLE users (user_id text PRIMARY KEY, created_at timestamptz)")
        conn.execute("INSERT INTO users VALUES (%s, now()), (%s, now())", ("+5511999999999", "u2"))
        rows = conn.execute("SELECT user_id FROM users ORDER BY user_id").fetchall()
        assert rows == [("+5511999999999",), ("u2",)]
        schema = conn.execute("SELECT current_schema()").fetchone()[0]
        assert schema == pg_schema.name
        assert conn.execute("SHOW TimeZone").fetchone()[0] == "UTC"


def test_postgres_fresh_database(pg_database):
    import psycopg

    with psycopg.connect(pg_database) as conn:
        conn.execute("CREATE TABLE audit_logs (id serial PRIMARY KEY, action text)")
        conn.execute("INSERT INTO audit_logs (action) VALUES ('x')")
        assert conn.execute("SELECT count(*) FROM audit_logs").fetchone()[0] == 1


def test_redis_set_get_ttl(redis_db):
    r = redis_db.client
    key = redis_db.key("router", "processed", "m1")
    assert r.set(key, "1", ex=30)
    assert r.get(key) == "1"
    assert 0 < r.ttl(key) <= 30
    r.set(redis_db.key("conversation", "lock", "c1"), "owner", px=200)
    time.sleep(0.4)
    assert r.get(redis_db.key("conversation", "lock", "c1")) is None
    assert sorted(r.scan_iter(match=redis_db.prefix + "*")) == [key]


# ---- scripts/services behaviour --------------------------------------------
def _status(env: dict | None = None) -> dict[str, dict]:
    proc = run_services("status", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return {s["service"]: s for s in json.loads(proc.stdout)["services"]}


def test_env_output_evals_in_a_shell(stack_env):
    script = f'eval "$({shlex.quote(sys.executable)} {shlex.quote(str(SERVICES_SCRIPT))} env)" && ' \
             'printf "%s\\n" "$FORENSICS_KAFKA_BOOTSTRAP" "$FORENSICS_OTLP_ENDPOINT" "$FORENSICS_REDIS_URL"'
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORENSICS_")}
    if stack_env.stack_dir:
        env["FORENSICS_STACK_DIR"] = str(stack_env.stack_dir)
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.splitlines()
    assert out[0].startswith("127.0.0.1:")
    assert out[1].startswith("http://127.0.0.1:")
    assert out[2].startswith("redis://:") and "@127.0.0.1:" in out[2]


def test_second_up_while_running_is_harmless(stack, skip_or_fail):
    if stack.stack_dir is None:
        skip_or_fail("FORENSICS_STACK_DIR unknown: stack not managed by scripts/services")
    env = dict(os.environ, FORENSICS_STACK_DIR=str(stack.stack_dir))
    before = _status(env)
    if not all(s["pid"] for s in before.values()):
        skip_or_fail(f"the stack under test was not started by scripts/services in {stack.stack_dir}")
    proc = run_services("up", env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in before:
        assert f"{name}: already running" in proc.stderr
    after = _status(env)
    assert {n: s["pid"] for n, s in after.items()} == {n: s["pid"] for n, s in before.items()}


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _descendants(root: int) -> list[int]:
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parent[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
    tree, grew = {root}, True
    while grew:
        new = {pid for pid, ppid in parent.items() if ppid in tree} - tree
        tree |= new
        grew = bool(new)
    return sorted(tree - {root})


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def separate_stack():
    """Env for a second, throwaway instance of the cheap services (redis, postgres) in its
    own stack dir on free ports; purged afterwards. The main stack is not touched."""
    run_dir = tempfile.mkdtemp(prefix="forensics-stack-test-")
    os.chmod(run_dir, 0o755)  # reachable by the postgres OS user when we are root
    redis_port, pg_port = free_ports(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORENSICS_")}
    env.update(FORENSICS_STACK_DIR=run_dir, FORENSICS_REDIS_PORT=str(redis_port),
               FORENSICS_POSTGRES_PORT=str(pg_port), CI=os.environ.get("CI", ""))
    yield env
    run_services("purge", "--only", "redis,postgres", env=env, timeout=120)
    shutil.rmtree(run_dir, ignore_errors=True)


@pytest.mark.slow
def test_up_down_separate_instance(separate_stack):
    import psycopg
    import redis

    env = separate_stack
    only = ("--only", "redis,postgres")
    ports = {"redis": int(env["FORENSICS_REDIS_PORT"]), "postgres": int(env["FORENSICS_POSTGRES_PORT"])}

    proc = run_services("up", *only, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    status = _status(env)
    pids = {name: status[name]["pid"] for name in ports}
    assert all(pids.values()), status
    assert status["kafka"]["pid"] is None  # not part of --only
    for name, port in ports.items():
        assert status[name]["ports"] == {f"FORENSICS_{name.upper()}_PORT": port}
        assert _listening(port)

    urls = {}
    for line in run_services("env", env=env).stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            urls[key] = value.strip("'")
    assert urls["FORENSICS_REDIS_URL"].endswith(f":{ports['redis']}/0")
    assert redis.Redis.from_url(urls["FORENSICS_REDIS_URL"]).ping()
    with psycopg.connect(urls["FORENSICS_POSTGRES_DSN"], connect_timeout=5) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == "chat4all"
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=ports["redis"], password="wrong").ping()

    # second `up`: harmless, same processes
    again = run_services("up", *only, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "redis: already running" in again.stderr
    assert "postgres: already running" in again.stderr
    assert {n: _status(env)[n]["pid"] for n in ports} == pids

    children = {name: _descendants(pid) for name, pid in pids.items()}
    assert children["postgres"]  # the postmaster's background workers

    down = run_services("down", *only, env=env, timeout=120)
    assert down.returncode == 0, down.stderr
    for name, pid in pids.items():
        assert not _alive(pid), f"{name} pid {pid} still running after down"
        assert not [p for p in children[name] if _alive(p)], f"{name} children left"
        assert not _listening(ports[name]), f"{name} port {ports[name]} still open"
        assert not (Path(env["FORENSICS_STACK_DIR"]) / name / "state.json").exists()
        with socket.socket() as s:  # the port can be bound again
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", ports[name]))
    assert all(s["pid"] is None for s in _status(env).values())
    assert run_services("status", "--quiet", *only, env=env).returncode == 3

    again = run_services("down", *only, env=env, timeout=60)
    assert again.returncode == 0 and "not running" in again.stderr


def test_up_fails_clearly_when_port_is_taken(separate_stack):
    env = separate_stack
    port = int(env["FORENSICS_REDIS_PORT"])
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", port))
        blocker.listen(1)
        proc = run_services("up", "--only", "redis", env=env, timeout=120)
    assert proc.returncode != 0
    assert "redis" in proc.stderr and str(port) in proc.stderr and "already in use" in proc.stderr
    assert _status(env)["redis"]["pid"] is None
