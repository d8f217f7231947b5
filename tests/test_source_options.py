"""Source options: parsed once per source into a typed object, refused in one line when wrong."""

import pytest

from forensics.config import DEFAULT_LIMITS, Limits
from forensics.errors import ParameterError
from forensics.sources.base import parse_option_args
from forensics.sources.registry import SOURCES, check_options, source_class


def test_an_int_option_has_its_default_a_string_is_parsed_and_a_bad_value_is_one_line():
    redis = source_class("redis")
    assert redis.parse({})["redis_max_keys"] == redis.parse({"redis_max_keys": None})["redis_max_keys"] > 0
    assert redis.parse({"redis_max_keys": "12"})["redis_max_keys"] == 12
    with pytest.raises(ParameterError, match=r"^redis option redis_max_keys: expected a whole number, got 'many'$"):
        redis.parse({"redis_max_keys": "many"})
    with pytest.raises(ParameterError, match="redis option redis_max_keys: must be at least 1"):
        redis.parse({"redis_max_keys": "0"})


def test_limits_come_from_the_bound_options_over_a_limits_object():
    opts = source_class("postgres").parse({"timeout_s": "2.5", "limits": Limits(max_rows=10)})
    assert opts.limits == Limits(max_rows=10, timeout_s=2.5, connect_timeout_s=DEFAULT_LIMITS.connect_timeout_s)
    with pytest.raises(ParameterError, match="^postgres option max_rows: expected a whole number, got 'lots'$"):
        source_class("postgres").parse({"max_rows": "lots"})


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_with_a_server_honours_timeout_s(name):
    cls = source_class(name)
    if cls.bounded:
        assert cls.parse({"timeout_s": "7"}).limits.timeout_s == 7.0
    else:
        assert "timeout_s" not in cls.accepted()


def test_the_connection_option_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("FORENSICS_REDIS_URL", "redis://env-host:6379/0")
    redis = source_class("redis")
    assert redis.parse({}).connection == "redis://env-host:6379/0"
    assert redis.parse({"redis_url": "redis://other:1/0"}).connection == "redis://other:1/0"


def test_an_option_no_selected_source_takes_is_refused_naming_the_accepted_ones():
    with pytest.raises(ParameterError) as err:
        check_options(["redis", "logs"], {"redis_url": "redis://h:1/0", "mongo_uri": "mongodb://h"})
    text = str(err.value)
    assert text.startswith("unknown source option(s) mongo_uri for redis, logs; accepted: ")
    assert "redis_url" in text and "logs" in text and "\n" not in text
    parsed = check_options(["redis", "logs"], {"redis_url": "redis://h:1/0", "logs": "a.log,b.log"})
    assert parsed["logs"]["logs"] == ["a.log", "b.log"] and parsed["redis"].connection == "redis://h:1/0"


def test_list_and_mapping_options_take_strings_or_python_values():
    prom = source_class("prometheus")
    assert prom.parse({"metrics": "a,b"})["metrics"] == prom.parse({"metrics": ["a", "b"]})["metrics"] == ["a", "b"]
    urls = {"router": "http://r:8080"}
    assert prom.parse({"actuator_urls": "router=http://r:8080"})["actuator_urls"] == urls
    assert prom.parse({"actuator_urls": '{"router": "http://r:8080"}'})["actuator_urls"] == urls
    with pytest.raises(ParameterError, match="prometheus option actuator_urls"):
        prom.parse({"actuator_urls": "router"})
    with pytest.raises(ParameterError, match="mongo option mongo_load: expected one of arrow, documents"):
        source_class("mongo").parse({"mongo_load": "csv"})


def test_o_arguments_are_split_in_one_place():
    assert parse_option_args(["a=1", "b=x=y", " c =3"]) == {"a": "1", "b": "x=y", "c": "3"}
    assert parse_option_args(None) == {}
    with pytest.raises(ParameterError, match="expected KEY=VALUE"):
        parse_option_args(["timeout_s"])


def test_an_unknown_source_name_is_a_parameter_error():
    with pytest.raises(ParameterError, match="unknown source 'mysql'; known: "):
        source_class("mysql")
