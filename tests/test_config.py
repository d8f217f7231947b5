import pytest

from forensics.config import DEFAULT_LIMITS, int_option, limits_from_options
from forensics.errors import ParameterError


def test_int_option_default_value_and_a_clear_error():
    assert int_option({}, "redis_max_keys", 7) == 7
    assert int_option({"redis_max_keys": "12"}, "redis_max_keys", 7) == 12
    with pytest.raises(ParameterError, match="redis_max_keys must be a whole number, got 'many'"):
        int_option({"redis_max_keys": "many"}, "redis_max_keys", 7)


def test_limits_from_options_overrides_and_names_the_source():
    limits = limits_from_options({"timeout_s": "2.5"}, "postgres")
    assert limits.timeout_s == 2.5 and limits.max_rows == DEFAULT_LIMITS.max_rows
    with pytest.raises(ParameterError, match="postgres limits"):
        limits_from_options({"max_rows": "lots"}, "postgres")
