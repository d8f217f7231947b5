import datetime as dt

import pandas as pd
import pytest

from forensics.errors import WindowError
from forensics.timeutil import Window, coerce_timestamps, iso, parse_time

T = pd.Timestamp("2025-12-03T14:00:00Z")


def test_coerce_mixed_representations_to_utc():
    values = [dt.datetime(2025, 12, 3, 14), "2025-12-03T14:00:00Z", "2025-12-03T15:00:00+01:00",
              1764770400, 1764770400.0, 1764770400000, "1764770400000", "2025-12-03T14:00:00.000+0000"]
    out = coerce_timestamps(pd.Series(values, dtype=object))
    assert str(out.dtype) == "datetime64[ns, UTC]"
    assert (out == T).all(), out


def test_coerce_keeps_subsecond_epoch_seconds():
    out = coerce_timestamps(pd.Series([1764770400.25]))
    assert out[0] == T + pd.Timedelta("250ms")


def test_unreadable_values_become_nat_not_errors():
    out = coerce_timestamps(pd.Series([None, "garbage", {"$date": 1}, float("nan"), True], dtype=object))
    assert out.isna().all()


def test_aware_datetimes_are_converted_not_relabelled():
    aware = dt.datetime(2025, 12, 3, 11, tzinfo=dt.timezone(dt.timedelta(hours=-3)))
    assert coerce_timestamps(pd.Series([aware], dtype=object))[0] == T


def test_relative_and_iso_times():
    now = pd.Timestamp("2025-12-03T16:00:00Z")
    assert parse_time("2h", now=now) == T
    assert parse_time("120m", now=now) == T
    assert parse_time("2025-12-03T14:00:00Z") == T
    assert parse_time("now", now=now) == now


def test_inverted_window_is_refused():
    with pytest.raises(WindowError, match="not after its start"):
        Window.parse("2025-12-03T15:00:00Z", "2025-12-03T14:00:00Z")


def test_unparseable_time_names_the_value():
    with pytest.raises(WindowError, match="yesterday-ish"):
        parse_time("yesterday-ish")


def test_iso_format():
    assert iso(T) == "2025-12-03T14:00:00.000Z"
