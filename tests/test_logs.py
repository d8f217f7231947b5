"""Service logs into log_events: each line format, docker prefixes, stack traces, garbage, gzip, stdin."""

from __future__ import annotations

import gzip
import io
import json

import pandas as pd
import pytest

from forensics import schema
from forensics.errors import SourceError
from forensics.profiles import load_profile
from forensics.sources.base import CollectRequest
from forensics.sources.logs import Source, read_log_stream, read_logs, service_from_path, service_name
from forensics.timeutil import Window

MID = "0b4f4a2e-1c1e-4d6e-9a51-2b8a9d1e0c11"
MID2 = "9a1b4a2e-1c1e-4d6e-9a51-2b8a9d1e0c22"
CID = "c0ffee00-1c1e-4d6e-9a51-2b8a9d1e0c33"
SERVICES = load_profile("chat4all-v2").services.all()


def parse(text: str | bytes, **kwargs) -> pd.DataFrame:
    data = text.encode() if isinstance(text, str) else text
    kwargs.setdefault("known_services", SERVICES)
    frame = read_log_stream(io.BytesIO(data), "test.log", **kwargs)
    return schema.validate("log_events", frame)


def values(column: pd.Series) -> list:
    return [None if pd.isna(v) else v for v in column]


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text).tz_convert("UTC")


# ---- logback JSON -----------------------------------------------------------

def test_logstash_json_line_of_the_deployed_services():
    line = json.dumps({
        "timestamp": "2025-12-03T11:00:00.123-0300", "version": "1",
        "message": f"Message delivery failed after retries: messageId={MID}, channel=WHATSAPP",
        "logger": "com.chat4all.router.handler.RoutingHandler", "thread": "ntainer#0-0-C-1", "level": "ERROR",
        "level_value": 40000, "stack_trace": "java.lang.IllegalStateException: boom\n\tat a.b.C.d(C.java:1)",
        "app_name": "router-service", "trace_id": "abc",
    })
    row = parse(line + "\n").iloc[0]
    assert row["timestamp"] == ts("2025-12-03T14:00:00.123Z")
    assert (row["level"], row["service"], row["thread"]) == ("ERROR", "router-service", "ntainer#0-0-C-1")
    assert row["logger"] == "com.chat4all.router.handler.RoutingHandler"
    assert row["message"].startswith("Message delivery failed after retries")
    assert row["stack_trace"].startswith("java.lang.IllegalStateException: boom")
    assert row["message_id"] == MID
    assert pd.isna(row["parse_error"])
    assert (row["source"], row["source_object"], row["source_ref"], row["raw"]) == ("logs", "test.log", "1", line)


def test_json_aliases_epoch_millisecond_timestamps_and_mdc_ids():
    line = json.dumps({"timestamp": 1764770400123, "level": "warn", "loggerName": "x.Y", "threadName": "main",
                       "message": "retrying", "messageId": MID, "conversationId": CID})
    row = parse(line).iloc[0]
    assert row["timestamp"] == ts("2025-12-03T14:00:00.123Z")
    assert (row["level"], row["logger"], row["thread"]) == ("WARN", "x.Y", "main")
    assert (row["message_id"], row["conversation_id"]) == (MID, CID)


def test_json_that_is_not_a_log_record_is_kept_with_a_parse_error():
    frame = parse('{"foo": 1}\n{"message": "half a line\n[1, 2]\n')
    assert list(frame["parse_error"].str.split(":").str[0]) == [
        "JSON without log fields (message, level)", "invalid JSON", "unrecognised line format (not logback JSON, "
        "Spring Boot or LEVEL text)"]
    assert list(frame["raw"]) == ['{"foo": 1}', '{"message": "half a line', "[1, 2]"]
    assert frame["message"].notna().all()


# ---- plain text -------------------------------------------------------------

def test_spring_boot_3_console_line_with_application_name():
    line = ("2025-12-03T14:00:01.500Z ERROR 1 --- [router-service] [ntainer#0-0-C-1] "
            "c.c.r.connector.ConnectorClient          : Connector returned error: status=429 TOO_MANY_REQUESTS, "
            "body={\"error\":{\"code\":131047}}")
    row = parse(line).iloc[0]
    assert row["timestamp"] == ts("2025-12-03T14:00:01.500Z")
    assert (row["level"], row["service"], row["thread"]) == ("ERROR", "router-service", "ntainer#0-0-C-1")
    assert row["logger"] == "c.c.r.connector.ConnectorClient"
    assert row["message"].startswith("Connector returned error: status=429")
    assert row["http_status"] == 429
    assert pd.isna(row["parse_error"])


def test_spring_boot_2_console_line_naive_time_is_utc_and_service_from_the_file():
    line = "2025-12-03 14:00:02.250  WARN 7 --- [           main] c.c.t.TelegramClient : Telegram API client error"
    row = parse(line, service="telegram-connector").iloc[0]
    assert row["timestamp"] == ts("2025-12-03T14:00:02.250Z")
    assert (row["level"], row["thread"], row["service"]) == ("WARN", "main", "telegram-connector")
    assert row["message"] == "Telegram API client error"


def test_level_first_lines_of_the_runbook_have_no_timestamp_but_are_parsed():
    frame = parse("ERROR - MongoDB write failed: timeout\nWARN  - Message routing failed for conversation: "
                  "invalid channel\n2025-12-03 14:00:00,123 [main] INFO  c.c.App - started\n")
    assert list(frame["level"]) == ["ERROR", "WARN", "INFO"]
    assert list(frame["message"]) == ["MongoDB write failed: timeout",
                                      "Message routing failed for conversation: invalid channel", "started"]
    assert frame["timestamp"].isna().tolist() == [True, True, False]
    assert frame["parse_error"].isna().all()
    assert frame.loc[2, "timestamp"] == ts("2025-12-03T14:00:00.123Z")


def test_unreadable_timestamp_keeps_the_row_and_says_why():
    row = parse("2025-13-45T99:00:00.000Z ERROR 1 --- [main] a.B : boom").iloc[0]
    assert pd.isna(row["timestamp"]) and row["level"] == "ERROR" and row["message"] == "boom"
    assert row["parse_error"].startswith("unreadable timestamp")


# ---- docker -----------------------------------------------------------------

def test_docker_compose_prefixes_and_timestamps():
    text = (
        f"chat4all-router-service-1  | 2025-12-03T14:00:03.123456789Z "
        f'{{"timestamp":"2025-12-03T14:00:03.120+0000","level":"WARN","message":"Duplicate message detected in '
        f'Redis: {MID}"}}\n'
        "whatsapp-connector-2        | 2025-12-03T14:00:04.5Z plain stdout without a level\n"
        "2025-12-03T14:00:05.000000001Z 2025-12-03T14:00:04.999Z  INFO 1 --- [main] a.B : own time wins\n"
    )
    frame = parse(text)
    assert values(frame["service"]) == ["router-service", "whatsapp-connector", None]
    # the line's own time, else docker's
    assert list(frame["timestamp"]) == [ts("2025-12-03T14:00:03.120Z"), ts("2025-12-03T14:00:04.500Z"),
                                        ts("2025-12-03T14:00:04.999Z")]
    assert frame.loc[0, "message_id"] == MID and frame.loc[0, "level"] == "WARN"
    assert frame.loc[1, "message"] == "plain stdout without a level"
    assert frame.loc[1, "parse_error"].startswith("unrecognised line format")
    assert frame.loc[2, "message"] == "own time wins"


def test_a_spring_boot_line_is_not_mistaken_for_a_docker_timestamp():
    row = parse("2025-12-03T14:00:01.500Z  INFO 1 --- [main] a.B : hello").iloc[0]
    assert row["level"] == "INFO" and row["message"] == "hello" and pd.isna(row["parse_error"])


def test_docker_json_file_driver_lines_are_unwrapped():
    inner = json.dumps({"timestamp": "2025-12-03T14:00:00.000+0000", "level": "INFO", "message": "hi"})
    text = (json.dumps({"log": inner + "\n", "stream": "stdout", "time": "2025-12-03T14:00:00.5Z"}) + "\n"
            + json.dumps({"log": "\tat a.B.c(B.java:1)\n", "stream": "stdout", "time": "2025-12-03T14:00:00.6Z"}))
    frame = parse(text)
    assert len(frame) == 1
    assert frame.loc[0, "message"] == "hi" and frame.loc[0, "stack_trace"] == "\tat a.B.c(B.java:1)"


def test_service_names_from_containers_and_files():
    assert service_name("chat4all-router-service-1", SERVICES) == "router-service"
    assert service_name("router-service_2", SERVICES) == "router-service"
    assert service_name("something-else-3", SERVICES) == "something-else"
    assert service_from_path("/var/log/chat4all-whatsapp-connector.log.gz", SERVICES) == "whatsapp-connector"
    assert service_from_path("/logs/router-service/0123abcd-json.log", SERVICES) == "router-service"
    assert service_from_path("/logs/misc.log", SERVICES) == "misc"


# ---- stack traces -----------------------------------------------------------

SPRING_ERROR = ("2025-12-03T14:00:01.000Z ERROR 1 --- [router-service] [exec-1] c.c.r.c.ConnectorClient : "
                "Error calling connector: 429 Too Many Requests from POST http://whatsapp-connector:8091/v1/messages")
TRACE = [
    "org.springframework.web.reactive.function.client.WebClientResponseException$TooManyRequests: "
    "429 Too Many Requests from POST http://whatsapp-connector:8091/v1/messages",
    "\tat org.springframework.web.reactive.function.client.WebClientResponseException.create(X.java:336)",
    "Caused by: java.io.IOException: reset",
    "\t... 12 more",
]


def test_stack_trace_lines_belong_to_the_previous_line():
    text = "\n".join([SPRING_ERROR, *TRACE, "2025-12-03T14:00:02.000Z  INFO 1 --- [main] a.B : next"]) + "\n"
    frame = parse(text)
    assert len(frame) == 2
    first = frame.iloc[0]
    assert first["stack_trace"] == "\n".join(TRACE)
    assert first["raw"] == "\n".join([SPRING_ERROR, *TRACE])
    assert first["http_status"] == 429
    assert list(frame["source_ref"]) == ["1", "6"]


def test_stack_trace_lines_follow_their_own_container_in_compose_output():
    text = "\n".join([
        f"router-service-1      | {SPRING_ERROR}",
        "whatsapp-connector-1  | 2025-12-03T14:00:01.100Z  INFO 1 --- [main] a.B : unrelated",
        f"router-service-1      | {TRACE[0]}",
        f"router-service-1      | {TRACE[1]}",
    ])
    frame = parse(text)
    assert len(frame) == 2
    assert frame.loc[0, "stack_trace"] == "\n".join(TRACE[:2])
    assert pd.isna(frame.loc[1, "stack_trace"])


def test_a_stack_trace_line_with_nothing_before_it_is_kept_raw():
    row = parse("\tat a.B.c(B.java:1)\n").iloc[0]
    assert row["parse_error"] == "stack trace line without a preceding log line"
    assert row["raw"] == "\tat a.B.c(B.java:1)"


@pytest.mark.parametrize("chunk_bytes", [64, 700])
def test_chunk_boundaries_never_split_a_record(chunk_bytes):
    lines = []
    for i in range(16):
        container = ("router-service-1      | ", "whatsapp-connector-1  | ")[i % 2]
        lines.append(f"{container}2025-12-03T14:00:{i:02d}.000Z ERROR 1 --- [main] a.B : failure {i} messageId={MID}")
        lines.extend(container + t for t in TRACE[: i % 4])
        if i % 5 == 0:
            lines.append("garbage \x00 line")
    text = "\n".join(lines) + "\n"
    whole = parse(text)
    chunked = parse(text, chunk_bytes=chunk_bytes)
    pd.testing.assert_frame_equal(chunked, whole)
    assert len(whole) == 20
    assert whole["source_ref"].astype(int).is_monotonic_increasing


def test_a_quiet_container_keeps_its_open_record_across_many_chunks():
    quiet = f"router-service-1      | {SPRING_ERROR}"
    busy = [f"whatsapp-connector-1  | 2025-12-03T14:00:02.000Z  INFO 1 --- [main] a.B : tick {i}" for i in range(300)]
    late = f"router-service-1      | {TRACE[1]}"
    text = "\n".join([quiet, *busy, late]) + "\n"
    chunked = parse(text, chunk_bytes=4000)
    pd.testing.assert_frame_equal(chunked, parse(text))
    assert chunked.loc[0, "stack_trace"] == TRACE[1] and len(chunked) == 301


# ---- bytes that are not text ------------------------------------------------

def test_invalid_utf8_and_binary_lines_are_kept_with_replacement_characters():
    data = b"\xff\xfe\x00binary\x01\n" + "caf\u00e9 ok\n".encode() + b"\x80\x81 ERROR - also \xc3\n"
    frame = parse(data)
    assert len(frame) == 3
    assert frame.loc[0, "raw"] == "\ufffd\ufffd\x00binary\x01"
    assert frame.loc[0, "parse_error"].startswith("unrecognised line format")
    assert frame.loc[1, "raw"] == "caf\u00e9 ok"
    assert frame.loc[2, "raw"] == "\ufffd\ufffd ERROR - also \ufffd"


def test_blank_lines_give_no_row_but_count_and_crlf_is_a_line_end():
    frame = parse("ERROR - one\r\n\r\n   \r\nERROR - two\r\n")
    assert list(frame["message"]) == ["one", "two"]
    assert list(frame["source_ref"]) == ["1", "4"]


# ---- what is extracted ------------------------------------------------------

@pytest.mark.parametrize(("message", "expected"), [
    (f"Connector delivery succeeded: messageId={MID}", MID),
    (f"processing message_id: {MID}", MID),
    (f'payload {{"messageId":"{MID}","x":1}}', MID),
    (f"Duplicate message detected in Redis: {MID}", MID),
    (f"conversationId={CID} message {MID} failed", MID),  # the conversation's UUID is not the message's
    (f"Marked message as processed in deduplication cache: {MID.upper()}", MID.upper()),
    (f"lock {MID} held", None),  # a UUID in a line that is not about a message
])
def test_message_ids(message, expected):
    row = parse(f"INFO - {message}").iloc[0]
    assert (None if pd.isna(row["message_id"]) else row["message_id"]) == expected


@pytest.mark.parametrize(("message", "expected"), [
    (f"conversationId={CID}", CID),
    (f'"conversation_id":"{CID}"', CID),
    (f"acquired conversation:lock:{CID}", CID),
    ("routing failed for conversationId=conv-77, channel=X", "conv-77"),
    ("Message routing failed for conversation: invalid channel", None),
])
def test_conversation_ids(message, expected):
    row = parse(f"INFO - {message}").iloc[0]
    assert (None if pd.isna(row["conversation_id"]) else row["conversation_id"]) == expected


@pytest.mark.parametrize(("message", "expected"), [
    ("Connector returned error: status=429 TOO_MANY_REQUESTS, body=", 429),
    ("upstream answered HTTP 503", 503),
    ("HTTP/1.1 502 Bad Gateway", 502),
    ('Telegram API client error: {"ok":false,"error_code":403,"description":"Forbidden"}', 403),
    ('{"status": 401}', 401),
    ("WebClientResponseException: 500 Internal Server Error from POST http://x/v1/messages ", 500),
    ("status=DELIVERED for 12345 messages", None),
    ("took 429 ms", None),
])
def test_http_statuses(message, expected):
    row = parse(f"ERROR - {message}").iloc[0]
    assert (None if pd.isna(row["http_status"]) else int(row["http_status"])) == expected


def test_rate_limit_headers_and_retry_after_as_json_of_header_texts():
    frame = parse(
        "WARN - rate limited X-RateLimit-Limit: 80, X-RateLimit-Remaining: 0, X-RateLimit-Reset: 1764770460\n"
        'WARN - headers [X-RateLimit-Remaining:"5", Retry-After:"30"]\n'
        'WARN - Telegram API client error: {"ok":false,"error_code":429,"parameters":{"retry_after":35}}\n'
        "WARN - Retry-After: Wed, 03 Dec 2025 14:05:00 GMT\n"
        "WARN - will retry the message\n"
    )
    got = [None if pd.isna(v) else json.loads(v) for v in frame["rate_limit"]]
    assert got == [
        {"X-RateLimit-Limit": "80", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1764770460"},
        {"X-RateLimit-Remaining": "5", "Retry-After": "30"},
        {"retry_after": "35"},
        {"Retry-After": "Wed, 03 Dec 2025 14:05:00 GMT"},
        None,
    ]


# ---- files, gzip, directories, stdin ----------------------------------------

def _lines(n: int, service: str = "router-service") -> str:
    return "".join(json.dumps({"timestamp": f"2025-12-03T14:00:{i:02d}.000+0000", "level": "INFO",
                               "message": f"m{i}", "app_name": service}) + "\n" for i in range(n))


def test_gzip_is_told_by_its_magic_bytes(tmp_path):
    (tmp_path / "a.log.gz").write_bytes(gzip.compress(b"ERROR - one\nERROR - two\n"))
    (tmp_path / "b.log").write_bytes(gzip.compress(b"ERROR - three\n"))  # gzip under a plain name
    frame = read_logs([tmp_path / "a.log.gz", tmp_path / "b.log"])
    assert list(frame["message"]) == ["one", "two", "three"]
    assert list(frame["source_object"]) == [str(tmp_path / "a.log.gz")] * 2 + [str(tmp_path / "b.log")]


def test_directory_service_from_file_names_hidden_files_skipped(tmp_path):
    (tmp_path / "chat4all-whatsapp-connector.log").write_text("ERROR - send failed\n")
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "router-service-1.log").write_text("WARN - slow\n")
    (tmp_path / ".hidden.log").write_text("ERROR - not read\n")
    frame = schema.validate("log_events", read_logs(tmp_path, profile="chat4all-v2"))
    assert sorted(zip(frame["service"], frame["message"], strict=True)) == [
        ("router-service", "slow"), ("whatsapp-connector", "send failed")]


def test_stdin_as_a_binary_or_text_file_object():
    frame = read_logs("-", stdin=io.BytesIO(b"ERROR - from a pipe\n"))
    assert list(frame["source_object"]) == ["stdin"] and frame.loc[0, "message"] == "from a pipe"
    frame = read_logs(["-"], stdin=io.StringIO("WARN - text mode\n"))
    assert frame.loc[0, "level"] == "WARN"


def test_missing_path_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        read_logs([tmp_path / "nope.log"])


def test_window_keeps_rows_inside_and_rows_without_time(tmp_path):
    path = tmp_path / "router-service.log"
    path.write_text(_lines(10) + "ERROR - no time\n")
    window = Window(ts("2025-12-03T14:00:03Z"), ts("2025-12-03T14:00:06Z"))
    frame = read_logs(path, window=window)
    assert list(frame["message"]) == ["m3", "m4", "m5", "no time"]


def test_service_filter(tmp_path):
    (tmp_path / "one.log").write_text(_lines(2, "router-service") + _lines(3, "whatsapp-connector"))
    frame = read_logs(tmp_path, services=["whatsapp-connector"])
    assert len(frame) == 3 and set(frame["service"]) == {"whatsapp-connector"}


def test_empty_input_gives_an_empty_table(tmp_path):
    (tmp_path / "empty.log").write_bytes(b"")
    frame = read_logs(tmp_path / "empty.log")
    schema.validate("log_events", frame)
    assert frame.empty


def test_collect_reads_the_paths_option(tmp_path):
    (tmp_path / "router-service.log").write_text(_lines(3))
    (tmp_path / "whatsapp-connector.log").write_text("ERROR - X-RateLimit-Remaining: 0\n")
    window = Window(ts("2025-12-03T13:00:00Z"), ts("2025-12-03T15:00:00Z"))
    paths = f"{tmp_path / 'router-service.log'},{tmp_path / 'whatsapp-connector.log'}"
    result = Source.collect(CollectRequest(window, load_profile("runbook"), {"logs": paths}))
    frame = schema.validate("log_events", result.tables["log_events"])
    assert len(frame) == 4
    assert result.description["rows"] == 4
    assert result.queries["log_events"]["logs"]["paths"] == paths.split(",")
    with pytest.raises(SourceError, match="no log files"):
        Source.collect(CollectRequest(window, load_profile("runbook"), {}))


# ---- round trip through the simulator's rendered lines ----------------------

PARSED = ["timestamp", "service", "level", "logger", "thread", "message", "stack_trace", "message_id", "http_status",
          "rate_limit"]


def _check_conversations(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """The simulator knows each line's conversation; a parser knows it only where the line says it."""
    said = pd.Series([bool(c) and c in r for c, r in zip(want["conversation_id"].fillna(""), want["raw"],
                                                          strict=True)])
    assert said.any()
    assert got.loc[said, "conversation_id"].tolist() == want.loc[said, "conversation_id"].tolist()
    assert got.loc[~said, "conversation_id"].isna().all()


@pytest.mark.parametrize("scenario", ["whatsapp-rate-limit", "router-outage"])
def test_simulated_service_log_files_read_back_as_simulated(tmp_path, scenario):
    from forensics.simulate import simulate
    from forensics.simulate.render import log_lines

    ev = simulate(scenario, messages=300, seed=5, profile="chat4all-v2")
    for service, lines in log_lines(ev).items():
        (tmp_path / f"chat4all-{service}.log").write_text("\n".join(lines) + "\n")
    key = ["service", "source_ref"]
    want = ev.table("log_events").sort_values(key, ignore_index=True)
    got = schema.validate("log_events", read_logs(tmp_path, profile="chat4all-v2")).sort_values(key, ignore_index=True)
    assert len(got) == len(want) and got["parse_error"].isna().all()
    for column in [*PARSED, "raw", "source_ref"]:
        pd.testing.assert_series_equal(got[column], want[column], check_names=False, obj=column)
    _check_conversations(got, want)


def test_simulated_logs_through_docker_compose_logs_read_back_as_simulated():
    """All services interleaved in time order as ``docker compose logs --timestamps`` prints them."""
    from forensics.simulate import simulate
    from forensics.simulate.render import log_lines

    ev = simulate("whatsapp-rate-limit", messages=200, seed=6, profile="chat4all-v2")
    lines = log_lines(ev)
    want = ev.table("log_events")
    want = want.assign(_line=want["source_ref"].astype(int)).sort_values(["timestamp", "service", "_line"],
                                                                         ignore_index=True, kind="stable")
    width = max(len(s) for s in lines) + 4  # "-1" and at least one space before the bar
    printed = [f"{s + '-1':<{width}}| {t.strftime('%Y-%m-%dT%H:%M:%S.%f')}123Z {raw}"
               for s, t, raw in zip(want["service"], want["timestamp"], want["raw"], strict=True)]
    got = parse("\n".join(printed) + "\n")
    assert len(got) == len(want) and got["parse_error"].isna().all()
    for column in PARSED:
        pd.testing.assert_series_equal(got[column], want[column], check_names=False, obj=column)
    assert got["raw"].tolist() == printed
    _check_conversations(got, want)
