"""Attribute columns typed all at once give exactly what the one-column rule gives.

`features.attributes.type_attributes` joins a customers file's text columns into
one Arrow pass (the hardening review found ~3 ms of pandas work per column); the
rule itself stays `attribute_column`. Hypothesis draws columns of numbers, words,
blanks, padded cells and the values where Arrow and pandas could disagree
(``inf``, ``nan``, negative zeros, huge exponents, non-ASCII digits, long digit
strings), and the two must agree cell for cell and dtype for dtype.
"""

from __future__ import annotations

import string

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.attributes import attribute_column, type_attributes
from features.contract import validate_table

ODD = ["inf", "-inf", "Infinity", "nan", "NaN", "-0", "-0.0", "+0", "0", "1e400", "1e-400",
       "١٢", "12345678901234567890123", "0.1000000000000000055511151231257827", "1_000",
       "0x1A", "1,5", ".5", "5.", "+.5", "1e5", "1E+05", "-", ".", "e5", "1e", " ", "\t7\n",
       "\u00a012\u00a0", "yes", "true"]

KINDS = ["numbers with one odd cell"] * 3 + ["anything", "blank"]
cells = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(repr),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    st.sampled_from(ODD),
    st.just(""),
    st.text(alphabet=string.digits + ".+-eE ", max_size=6),
    st.text(max_size=5),
)


def _column(values: list[str], *, kind: str) -> list[str]:
    """Columns as real files have them: numbers with one cell to test, anything, or blank."""
    if kind == "numbers with one odd cell":
        return [values[0] if i == len(values) // 2 else str(i % 97) for i in range(len(values))]
    if kind == "blank":
        return ["" for _ in values]
    return values


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), rows=st.integers(1, 30), width=st.integers(1, 6))
def test_all_at_once_equals_one_column_at_a_time(data, rows, width):
    frame = pd.DataFrame({
        f"a{j}": pd.Series(
            _column(data.draw(st.lists(cells, min_size=rows, max_size=rows)),
                    kind=data.draw(st.sampled_from(KINDS))),
            dtype="str",
        )
        for j in range(width)
    })
    _assert_same(frame)


def _assert_same(frame: pd.DataFrame) -> None:
    typed = type_attributes(frame, list(frame.columns))
    for column in frame.columns:
        expected = attribute_column(frame[column])
        where = f"column {column} ({frame[column].tolist()!r})"
        pd.testing.assert_series_equal(typed[column], expected, check_names=False, obj=where)
        if expected.dtype == "float64":  # equal values, and zeros of the same sign
            signs = np.signbit(typed[column].to_numpy(dtype=float))
            assert (signs == np.signbit(expected.to_numpy())).all(), where


def test_each_odd_value_inside_a_numeric_column():
    """Every value where Arrow and pandas could part ways, alone in a column of numbers,
    beside a decimal (pandas parses the whole column as floats then) and at the top."""
    columns = {}
    for i, odd in enumerate(ODD):
        columns[f"ints_{i}"] = ["1", "2", odd, "4"]
        columns[f"floats_{i}"] = ["1.5", "2", odd, "4"]
        columns[f"first_{i}"] = [odd, "2", "3", "4"]
    _assert_same(pd.DataFrame({c: pd.Series(v, dtype="str") for c, v in columns.items()}))


def test_typed_parquet_columns_and_text_columns_mix_in_file_order():
    frame = pd.DataFrame({
        "customer_id": ["C1", "C2", "C3"],
        "age": [31, 42, 57],                                      # typed (Parquet) integer
        "vip": [True, False, True],                               # typed boolean
        "channel": pd.Series([" web", "ads ", ""], dtype="str"),  # text, padded, a blank
        "score": pd.Series(["1.5", " 2", ""], dtype="str"),       # numbers in text
        "signup_at": ["2024-01-01"] * 3,
    })
    used, rejects = validate_table("customers", frame, source="customers.parquet")
    assert rejects.empty
    assert list(used.columns) == list(frame.columns), "columns keep the file's order"
    assert used["age"].dtype == "float64" and used["score"].dtype == "float64"
    assert used["score"].isna().tolist() == [False, False, True]
    assert used["vip"].dtype == object and used["channel"].dtype == object
    assert used["channel"].tolist()[:2] == ["web", "ads"] and pd.isna(used["channel"][2])


def test_a_header_only_wide_file_types_nothing_and_fails_as_before():
    frame = pd.DataFrame({"customer_id": pd.Series([], dtype="str"),
                          **{f"a{j}": pd.Series([], dtype="str") for j in range(3)}})
    used, _ = validate_table("customers", frame, source="customers.csv", first_row=2)
    assert used.empty and [used[f"a{j}"].dtype for j in range(3)] == [object] * 3
