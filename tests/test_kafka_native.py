"""The native Kafka reader's Python side that needs no broker: choosing the reader, dealing
ranges to consumers, the librdkafka settings handed over. Reading itself is tested against
the real broker in tests/integration/test_kafka_source.py, through both readers."""

import sys

import pytest

from forensics.errors import SourceError
from forensics.sources import kafka_native


def test_an_unknown_reader_choice_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(kafka_native.READER_ENV, "fast")
    with pytest.raises(SourceError, match="auto, native, python"):
        kafka_native.native_module()


def test_python_choice_never_uses_the_extension(monkeypatch):
    monkeypatch.setenv(kafka_native.READER_ENV, "python")
    assert kafka_native.native_module() is None


def test_a_missing_extension_falls_back_unless_native_is_required(monkeypatch):
    monkeypatch.setitem(sys.modules, "forensics_kafka_native", None)  # import fails
    monkeypatch.setenv(kafka_native.READER_ENV, "auto")
    assert kafka_native.native_module() is None
    monkeypatch.setenv(kafka_native.READER_ENV, "native")
    with pytest.raises(SourceError, match="not installed"):
        kafka_native.native_module()


def test_ranges_are_cut_so_that_every_reader_gets_as_many_records():
    todo = [("t", p, 1000, 1000 + n) for p, n in enumerate([100, 10, 60, 50, 5])]
    shares = kafka_native._split(todo, 2)
    assert [sum(e - s for _t, _p, s, e in share) for share in shares] == [113, 112]
    # partition 2 is cut at an offset: its first part in one share, the rest in the other
    assert ("t", 2, 1000, 1003) in shares[0] and ("t", 2, 1003, 1060) in shares[1]
    pieces = sorted(r for share in shares for r in share)
    for p, n in enumerate([100, 10, 60, 50, 5]):  # every offset exactly once
        mine = [(s, e) for _t, q, s, e in pieces if q == p]
        assert mine[0][0] == 1000 and mine[-1][1] == 1000 + n
        assert all(a[1] == b[0] for a, b in zip(mine, mine[1:], strict=False))
    assert kafka_native._split(todo[:1], 4) == [[("t", 0, 1000, 1025)], [("t", 0, 1025, 1050)],
                                                 [("t", 0, 1050, 1075)], [("t", 0, 1075, 1100)]]
    assert kafka_native._split([("t", 0, 5, 7)], 4) == [[("t", 0, 5, 6)], [("t", 0, 6, 7)]]
    assert kafka_native._split([], 2) == []


def test_reader_count_follows_cores_partitions_and_the_override(monkeypatch):
    monkeypatch.delenv("FORENSICS_KAFKA_READERS", raising=False)
    monkeypatch.setattr(kafka_native.os, "cpu_count", lambda: 16)
    assert kafka_native.reader_count(100) == 4
    assert kafka_native.reader_count(3) == 3
    assert kafka_native.reader_count(0) == 1
    monkeypatch.setenv("FORENSICS_KAFKA_READERS", "2")
    assert kafka_native.reader_count(100) == 2
    monkeypatch.setenv("FORENSICS_KAFKA_READERS", "two")
    with pytest.raises(SourceError, match="whole number"):
        kafka_native.reader_count(5)


def test_settings_reach_librdkafka_as_strings_without_python_objects():
    from forensics.sources.kafka import consumer_config

    items = dict(kafka_native._librdkafka_config(consumer_config("127.0.0.1:9092")))
    assert items["enable.auto.commit"] == "false" and items["enable.partition.eof"] == "true"
    assert items["group.id"].startswith("chat4all-forensics-readonly-")
    assert "logger" not in items
    assert all(isinstance(v, str) for v in items.values())


def test_the_librdkafka_confluent_kafka_loaded_is_found():
    path = kafka_native.librdkafka_path()
    assert path is not None and "librdkafka" in path
