import numpy as np
import pandas as pd
import pytest

from forensics import schema
from forensics.errors import SchemaError


def test_every_table_declares_units_and_utc_timestamps():
    for t in schema.TABLES.values():
        for c in t.columns:
            if c.dtype == schema.UTC_TS:
                assert c.unit == "UTC", f"{t.name}.{c.name} should declare UTC"
        if t.evidence:
            assert {"source", "source_object", "source_ref"} <= set(t.names)


@pytest.mark.parametrize("name", list(schema.TABLES))
def test_empty_tables_validate(name):
    schema.validate(name, schema.empty(name))


def test_conform_fills_missing_columns_with_nulls_and_casts():
    df = schema.conform("messages", {"message_id": ["m1"], "source": ["mongodb"], "retry_count": [2.0],
                                     "created_at": ["2025-12-03T14:00:00+01:00"], "junk": [1]})
    schema.validate("messages", df)
    assert "junk" not in df.columns
    assert df.loc[0, "retry_count"] == 2
    assert df.loc[0, "created_at"] == pd.Timestamp("2025-12-03T13:00:00Z")
    assert pd.isna(df.loc[0, "content"])


def test_validate_names_table_column_and_problem_for_wrong_dtype():
    df = schema.empty("messages")
    df["retry_count"] = df["retry_count"].astype("float64")
    with pytest.raises(SchemaError) as err:
        schema.validate("messages", df)
    assert err.value.table == "messages" and err.value.column == "retry_count"
    assert "float64" in str(err.value) and "Int64" in str(err.value)


def test_validate_rejects_naive_timestamps():
    df = schema.conform("status_events", {"message_id": ["m"], "new_status": ["SENT"], "derived": [False],
                                          "source": ["mongodb"], "timestamp": ["2025-12-03T14:00:00Z"]})
    df["timestamp"] = df["timestamp"].dt.tz_localize(None)
    with pytest.raises(SchemaError, match=r"status_events\.timestamp"):
        schema.validate("status_events", df)


def test_validate_rejects_missing_column_and_extra_column():
    df = schema.empty("spans").drop(columns=["trace_id"])
    with pytest.raises(SchemaError, match="missing column"):
        schema.validate("spans", df)
    df = schema.empty("spans").assign(extra=pd.Series(dtype="float64"))
    with pytest.raises(SchemaError, match="unexpected column"):
        schema.validate("spans", df)


def test_validate_rejects_null_in_non_nullable_column():
    df = schema.conform("messages", {"message_id": ["m1", None], "source": ["mongodb", "mongodb"]})
    with pytest.raises(SchemaError, match=r"messages\.message_id: null value at row 1"):
        schema.validate("messages", df)


def test_validate_rejects_status_outside_vocabulary():
    df = schema.conform("messages", {"message_id": ["m1"], "source": ["mongodb"], "status": ["QUEUED"]})
    with pytest.raises(SchemaError, match="QUEUED"):
        schema.validate("messages", df)


def test_unknown_table_is_a_schema_error():
    with pytest.raises(SchemaError, match="unknown table"):
        schema.table("nope")


def test_describe_lists_every_column():
    d = schema.describe()
    assert len(d) == sum(len(t.columns) for t in schema.TABLES.values())


def test_take_text_gives_iloc_of_a_chunked_text_column_in_any_order():
    import pyarrow as pa

    chunks = [pa.array(["a", "b", None], pa.large_string()), pa.array(["d", "e"], pa.large_string()),
              pa.array(["f"], pa.large_string())]
    values = pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array(chunks)))
    for positions in ([4, 0, 5, 2, 1, 1], [], [3], list(range(6))[::-1]):
        pos = np.array(positions, dtype=np.int64)
        pd.testing.assert_series_equal(schema.take_text(values, pos), values.iloc[pos].reset_index(drop=True))
    plain = pd.Series(["x", None, "z"], dtype=schema.STR)
    pd.testing.assert_series_equal(schema.take_text(plain, np.array([2, 0])), plain.iloc[[2, 0]].reset_index(drop=True))
