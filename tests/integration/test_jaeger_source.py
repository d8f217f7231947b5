"""The Jaeger source against the real Jaeger v2 of ``scripts/services up``.

Spans of a small Chat4All-like trace set are sent with the OpenTelemetry SDK over OTLP
HTTP, then read back through both query APIs. Every run tags its spans with a fresh
``test.run`` id and a run-unique operation, so runs and other engineers' spans in the
same (memory) storage do not disturb each other. ``jaeger_url`` and ``otlp_endpoint``
come from tests/integration/conftest.py (skip, or fail under CI, when Jaeger is down).
"""

from __future__ import annotations

import gzip
import random
import socket
import time
import uuid

import pandas as pd
import pytest
import requests

from forensics import schema, traces
from forensics.profiles import load_profile
from forensics.sources import jaeger
from forensics.sources.base import CollectRequest
from forensics.sources.jaeger import BadQuery, JaegerClient, JaegerUnavailable, NotJSON, NoTracesFound
from forensics.timeutil import Window

pytestmark = pytest.mark.integration

MS = 1_000_000  # ns


def _short_trace_ids():
    """An id generator giving 64-bit trace ids (high half zero), which v1 prints as 16 hex."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class ShortTraceIds(RandomIdGenerator):
        def generate_trace_id(self) -> int:
            return random.getrandbits(64) or 1

    return ShortTraceIds()


@pytest.fixture(scope="module")
def sent(jaeger_url, otlp_endpoint):
    """Send the trace set; wait until every trace is queryable. Returns ids and names."""
    from opentelemetry import trace as otel
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind, Status, StatusCode

    otlp = otlp_endpoint
    run = uuid.uuid4().hex[:12]
    providers: dict[str, TracerProvider] = {}

    def tracer(service: str, **kw):
        if service not in providers:
            p = TracerProvider(resource=Resource.create({"service.name": service}), **kw)
            p.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{otlp}/v1/traces")))
            providers[service] = p
        return providers[service].get_tracer("chat4all.test")

    def span(service, name, start_ms, end_ms, parent=None, kind=SpanKind.INTERNAL, attrs=None, error=None):
        s = tracer(service).start_span(name, context=otel.set_span_in_context(parent) if parent else None,
                                       kind=kind, start_time=t0 + start_ms * MS,
                                       attributes={"test.run": run, **(attrs or {})})
        if error:
            s.add_event("exception", {"exception.message": error}, timestamp=t0 + (end_ms - 1) * MS)
            s.set_status(Status(StatusCode.ERROR, error))
        return s

    t0 = time.time_ns() - 5_000 * MS
    message_id = str(uuid.uuid4())
    # A: the API hop, message id tagged on the message-service span
    a = span("api-gateway", "POST /api/v1/messages", 0, 120, kind=SpanKind.SERVER,
             attrs={"http.request.method": "POST", "http.route": "/api/v1/messages",
                    "http.response.status_code": 202})
    a1 = span("message-service", "MessageService.create", 10, 100, a, attrs={"message_id": message_id})
    a2 = span("message-service", "chat-events send", 60, 70, a1, kind=SpanKind.PRODUCER)
    for s, end in ((a2, 70), (a1, 100), (a, 120)):
        s.end(end_time=t0 + end * MS)
    # B: router -> whatsapp connector, the connector fails
    b = span("router-service", "chat-events process", 200, 500, kind=SpanKind.CONSUMER)
    b1 = span("router-service", "POST", 220, 480, b, kind=SpanKind.CLIENT,
              attrs={"http.request.method": "POST", "http.response.status_code": 503})
    b2 = span("whatsapp-connector", "POST /whatsapp/send", 230, 470, b1, kind=SpanKind.SERVER,
              attrs={"http.request.method": "POST", "http.route": "/whatsapp/send",
                     "http.response.status_code": 503},
              error="Connector returned error: status=503, body=rate limited")
    for s, end in ((b2, 470), (b1, 480), (b, 500)):
        s.end(end_time=t0 + end * MS)
    # C: a one-span trace with a 64-bit trace id
    tracer("telegram-connector", id_generator=_short_trace_ids())
    c = span("telegram-connector", "POST /telegram/send", 600, 605, kind=SpanKind.SERVER,
             attrs={"http.route": "/telegram/send"})
    c.end(end_time=t0 + 605 * MS)
    # D: three small user-service traces under a run-unique operation, for the limit
    op = f"GET /api/v1/users/{{id}} run {run}"
    d_ids = []
    for k in range(3):
        d = span("user-service", op, 700 + 10 * k, 705 + 10 * k, kind=SpanKind.SERVER)
        d.end(end_time=t0 + (705 + 10 * k) * MS)
        d_ids.append(format(d.get_span_context().trace_id, "032x"))
    for p in providers.values():
        p.force_flush()
        p.shutdown()
    ids = {"A": format(a.get_span_context().trace_id, "032x"), "B": format(b.get_span_context().trace_id, "032x"),
           "C": format(c.get_span_context().trace_id, "032x")}
    client = JaegerClient(jaeger_url, api="v1")
    deadline = time.monotonic() + 30
    expected = {"A": 3, "B": 3, "C": 1}
    while True:
        try:
            got = client.traces([*ids.values(), *d_ids])
            counts = got.groupby("trace_id").size()
            if not got.attrs["missing_trace_ids"] and all(counts.get(ids[k], 0) == n for k, n in expected.items()):
                break
        except NoTracesFound:
            pass
        if time.monotonic() > deadline:
            pytest.fail("spans sent over OTLP did not become queryable within 30 s")
        time.sleep(0.3)
    return {"run": run, "ids": ids, "d_ids": d_ids, "user_op": op, "message_id": message_id,
            "start": pd.Timestamp(t0 - 60_000 * MS, tz="UTC"), "end": pd.Timestamp.now(tz="UTC") + pd.Timedelta("1min")}


@pytest.fixture(params=["v1", "v3"])
def client(request, jaeger_url) -> JaegerClient:
    return JaegerClient(jaeger_url, api=request.param)


def _comparable(spans: pd.DataFrame) -> pd.DataFrame:
    """v1 has microseconds, api/v3 nanoseconds; provenance differs by design."""
    out = spans.drop(columns=["source_object", "source_ref"]).sort_values("span_id").reset_index(drop=True)
    for c in ("start", "end"):
        out[c] = out[c].dt.floor("us")
    out["duration_ms"] = out["duration_ms"].round(3)
    return out


def test_detects_api_v3_on_jaeger_v2(jaeger_url):
    assert JaegerClient(jaeger_url).api == "v3"


def test_services_lists_the_services_that_sent_spans(client, sent):
    assert {"api-gateway", "message-service", "router-service", "whatsapp-connector",
            "telegram-connector", "user-service"} <= set(client.services())


def test_operations_carry_span_kind(client, sent):
    ops = client.operations("api-gateway")
    assert jaeger.Operation("POST /api/v1/messages", "server") in ops
    server_only = client.operations("message-service", span_kind="producer")
    assert [o.name for o in server_only] == ["chat-events send"]


def test_fetch_by_id_gives_the_canonical_table(client, sent):
    spans = client.trace(sent["ids"]["A"])
    schema.validate("spans", spans)
    assert len(spans) == 3
    by_op = spans.set_index("operation")
    assert by_op.loc["POST /api/v1/messages", "parent_span_id"] is pd.NA
    assert by_op.loc["MessageService.create", "parent_span_id"] == by_op.loc["POST /api/v1/messages", "span_id"]
    assert by_op.loc["MessageService.create", "message_id"] == sent["message_id"]
    assert by_op.loc["POST /api/v1/messages", "http_route"] == "/api/v1/messages"
    assert by_op.loc["POST /api/v1/messages", "http_status_code"] == 202
    assert by_op.loc["chat-events send", "kind"] == "producer"
    assert by_op.loc["MessageService.create", "duration_ms"] == pytest.approx(90.0)


def test_v1_and_v3_give_the_same_frame(jaeger_url, sent):
    v1 = JaegerClient(jaeger_url, api="v1").trace(sent["ids"]["B"])
    v3 = JaegerClient(jaeger_url, api="v3").trace(sent["ids"]["B"])
    pd.testing.assert_frame_equal(_comparable(v1), _comparable(v3))


def test_error_span_keeps_its_status_message_and_event(client, sent):
    errors = traces.error_spans(client.trace(sent["ids"]["B"]))
    assert list(errors["service"]) == ["whatsapp-connector"]
    assert errors.loc[0, "status_message"] == "Connector returned error: status=503, body=rate limited"
    assert "exception.message" in errors.loc[0, "logs"]
    assert errors.loc[0, "http_status_code"] == 503


def test_64_bit_trace_id_is_left_padded_and_fetchable_by_its_short_form(client, sent):
    tid = sent["ids"]["C"]
    assert tid.startswith("0" * 16)
    spans = client.trace(tid[16:])
    assert list(spans["trace_id"]) == [tid]


def test_fetch_many_ids_lists_the_missing_ones(client, sent):
    unknown = uuid.uuid4().hex
    spans = client.traces([sent["ids"]["A"], sent["ids"]["B"], unknown])
    assert set(spans["trace_id"]) == {sent["ids"]["A"], sent["ids"]["B"]}
    assert spans.attrs["missing_trace_ids"] == [unknown]


def test_search_by_tags(client, sent):
    found = client.search("whatsapp-connector", tags={"test.run": sent["run"], "error": True},
                          start=sent["start"], end=sent["end"], limit=50)
    assert set(found["trace_id"]) == {sent["ids"]["B"]}
    assert set(found["service"]) == {"router-service", "whatsapp-connector"}
    none = client.search("whatsapp-connector", tags={"test.run": "no-such-run"}, start=sent["start"],
                         end=sent["end"], limit=50)
    assert none.empty


def test_search_by_duration(client, sent):
    tagged = {"test.run": sent["run"]}
    slow = client.search("router-service", tags=tagged, min_duration="250ms", start=sent["start"],
                         end=sent["end"], limit=50)
    assert set(slow["trace_id"]) == {sent["ids"]["B"]}
    fast = client.search("router-service", tags=tagged, max_duration=50.0, start=sent["start"],
                         end=sent["end"], limit=50)
    assert fast.empty


def test_search_limit_caps_the_trace_count(client, sent):
    two = client.search("user-service", operation=sent["user_op"], start=sent["start"], end=sent["end"], limit=2)
    assert two["trace_id"].nunique() == 2
    assert set(two["trace_id"]) <= set(sent["d_ids"])
    every = client.search("user-service", operation=sent["user_op"], start=sent["start"], end=sent["end"], limit=10)
    assert set(every["trace_id"]) == set(sent["d_ids"])


def test_unknown_trace_id_is_no_traces_found(client, sent):
    with pytest.raises(NoTracesFound) as err:
        client.trace(uuid.uuid4().hex)
    assert err.value.source == "jaeger"
    with pytest.raises(NoTracesFound):
        client.traces([uuid.uuid4().hex])


def test_bad_query_carries_the_servers_reason(client, sent):
    with pytest.raises(BadQuery) as err:
        client.search("router-service", min_duration="banana", start=sent["start"], end=sent["end"])
    assert err.value.status == 400
    assert "banana" in str(err.value) or "duration" in str(err.value).lower()


def test_closed_port_is_server_down():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(JaegerUnavailable) as err:
        JaegerClient(f"http://127.0.0.1:{port}").services()
    assert "refused" in str(err.value)
    assert time.monotonic() - started < 5  # a refusal is not retried


def test_html_page_where_json_was_expected(jaeger_url):
    # Jaeger's UI handler answers any path it does not route with its HTML page
    with pytest.raises(NotJSON) as err:
        JaegerClient(jaeger_url + "/search").services()
    assert "HTML" in str(err.value) and "text/html" in str(err.value)


def test_collect_reads_the_window_and_notes_the_limit(jaeger_url, sent):
    request = CollectRequest(Window(sent["start"], sent["end"]), load_profile("chat4all-v2"),
                             {"jaeger_url": jaeger_url, "traces_per_service": 1,
                              "services": ["api-gateway", "router-service", "user-service", "nobody-service"]})
    result = jaeger.Source.collect(request)
    spans = schema.validate("spans", result.tables["spans"])
    assert not spans.duplicated(["trace_id", "span_id"]).any()
    assert spans["trace_id"].nunique() >= 3
    notes = " ".join(result.description["notes"])
    assert "user-service: limit reached (1 traces)" in notes
    assert "nobody-service: Jaeger has no spans" in notes
    assert result.description["api"] == "v3"
    assert result.queries["spans"] and all(q["status"] == 200 for q in result.queries["spans"])


def test_derived_views_on_a_stored_trace(client, sent):
    spans = client.trace(sent["ids"]["B"])
    assert not traces.span_flags(spans)[["orphan", "clock_skew", "duplicate_span_id", "cycle"]].any().any()
    path = traces.critical_path(spans)
    assert path["section_ms"].sum() == pytest.approx(300.0, abs=0.01)
    assert path.groupby("service")["section_ms"].sum()["whatsapp-connector"] == pytest.approx(240.0, abs=0.01)
    edges = traces.dependency_edges(spans)
    assert edges[["parent", "child", "call_count", "error_count"]].values.tolist() == [
        ["router-service", "whatsapp-connector", 1, 1]]


class _ResettingProxy:
    """A TCP proxy in front of the real Jaeger that resets the first ``resets`` connections
    (RST, as a restarting load balancer does) and forwards the later ones unchanged."""

    def __init__(self, target_url: str, resets: int) -> None:
        import threading

        host, port = target_url.split("//")[1].split("/")[0].split(":")
        self.target, self.resets = (host, int(port)), resets
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import select
        import struct
        import threading

        def pipe(a: socket.socket, b: socket.socket) -> None:
            with a, b:
                while True:
                    ready, _, _ = select.select([a, b], [], [], 5)
                    if not ready:
                        return
                    for s in ready:
                        data = s.recv(65536)
                        if not data:
                            return
                        (b if s is a else a).sendall(data)

        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            if self.resets > 0:
                self.resets -= 1
                conn.recv(65536)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                continue
            threading.Thread(target=pipe, args=(conn, socket.create_connection(self.target)), daemon=True).start()

    def close(self) -> None:
        self.server.close()


def test_connection_resets_are_retried_with_backoff(jaeger_url, sent):
    proxy = _ResettingProxy(jaeger_url, resets=2)
    try:
        client = JaegerClient(proxy.url, api="v1", retries=2, backoff_s=0.05)
        assert "api-gateway" in client.services()
        assert [h["status"] for h in client.history] == [None, None, 200]
    finally:
        proxy.close()


def test_retries_are_bounded(jaeger_url):
    proxy = _ResettingProxy(jaeger_url, resets=10)
    try:
        with pytest.raises(JaegerUnavailable, match="failed after 2 attempts"):
            JaegerClient(proxy.url, api="v1", retries=1, backoff_s=0.05).services()
    finally:
        proxy.close()


def test_downloaded_answers_read_as_files_give_the_live_spans(jaeger_url, sent, tmp_path):
    # what a user saves: the v1 answer (the UI download's shape) and the api/v3 answer, one
    # gzip-compressed; read back through -o files= they give what the live query gives
    tid = sent["ids"]["B"]
    (tmp_path / "v1.json").write_bytes(requests.get(f"{jaeger_url}/api/traces/{tid}", timeout=10).content)
    v3 = requests.get(f"{jaeger_url}/api/v3/traces/{tid}", timeout=10).content
    (tmp_path / "v3.json.gz").write_bytes(gzip.compress(v3))
    live = JaegerClient(jaeger_url, api="v1").trace(tid)
    for name in ("v1.json", "v3.json.gz"):
        request = CollectRequest(Window(sent["start"], sent["end"]), load_profile("chat4all-v2"),
                                 {"files": str(tmp_path / name)})
        from_file = jaeger.Source.collect(request).tables["spans"]
        assert set(from_file["source_object"]) == {str(tmp_path / name)}
        pd.testing.assert_frame_equal(_comparable(from_file), _comparable(live))
