"""Corrupted datasets the hardening review tried: each is refused in one line or rejected by row.

A dataset that leaves no customer or no dated row is unusable, and says so in
`validate` as in every command that reads it; ids a database cannot store are
rejected by row; a customers file wider than the attribute cap is refused
before any per-column work; a file that is not UTF-8 names the line.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from test_contract import CUSTOMERS, ORDERS, run, write_dataset

from features.contract import (
    MAX_ATTRIBUTE_COLUMNS,
    MAX_ID_LENGTH,
    DataContractError,
    validate_tables,
)
from features.io import read_dataset


def assert_one_line_exit_2(directory: Path, *needles: str) -> None:
    result = run(["validate", "--data", str(directory)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_header_only_customers_is_unusable_in_one_line(tmp_path):
    directory = write_dataset(tmp_path / "data", customers="customer_id,signup_at\n")
    with pytest.raises(DataContractError, match=r"customers\.csv: no customer rows"):
        read_dataset(directory)
    assert_one_line_exit_2(directory, "customers.csv", "no customer rows")


def test_customers_with_every_row_rejected_names_the_first_problem(tmp_path):
    customers = "customer_id,signup_at\n ,2024-01-01\n,2024-01-02\n"
    directory = write_dataset(tmp_path / "data", customers=customers)
    with pytest.raises(DataContractError, match=r"none of its 2 customer rows.*row 2"):
        read_dataset(directory)
    assert_one_line_exit_2(directory, "customers.csv", "empty customer_id")


def test_history_with_every_row_rejected_is_unusable(tmp_path):
    """Customers without signup dates and no usable history leave nothing dated to score."""
    customers = "customer_id\nC1\nC2\n"
    orders = "order_id,customer_id,ordered_at,amount\nO1,C1,not-a-date,5\nO2,C9,2024-01-01,5\n"
    directory = write_dataset(tmp_path / "data", customers=customers, orders=orders,
                              events=None, subscriptions=None)
    with pytest.raises(DataContractError, match=r"orders\.csv: no usable history"):
        read_dataset(directory)
    assert_one_line_exit_2(directory, "no usable history")


def test_score_says_the_same_in_one_line(tmp_path, tmp_path_factory, trained_registry):
    directory = write_dataset(tmp_path / "data", customers="customer_id,signup_at\n")
    with trained_registry.active():
        result = run(["score", "--data", str(directory), "--out", str(tmp_path / "s.parquet")])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "no customer rows" in result.output, result.output


@pytest.mark.parametrize(("column", "value", "reason"), [
    ("customer_id", "C" * (MAX_ID_LENGTH + 1), f"longer than {MAX_ID_LENGTH} characters"),
    ("customer_id", "C\x001", "contains a NUL character"),
    ("order_id", "O" * (MAX_ID_LENGTH + 1), f"longer than {MAX_ID_LENGTH} characters"),
    ("order_id", "O\x001", "contains a NUL character"),
])
def test_ids_a_database_cannot_store_are_rejected_by_row(column, value, reason):
    customers = pd.DataFrame({"customer_id": ["C1", "C2"], "signup_at": ["2024-01-01"] * 2})
    orders = pd.DataFrame({"order_id": ["O1", "O2"], "customer_id": ["C1", "C2"],
                           "ordered_at": ["2024-01-02"] * 2, "amount": ["5", "6"]})
    table = customers if column == "customer_id" else orders
    table.loc[1, column] = value
    if column == "customer_id":
        orders.loc[1, "customer_id"] = value
    result = validate_tables({"customers": customers, "orders": orders},
                             first_rows={"customers": 2, "orders": 2})
    first = result.rejects.iloc[0]
    assert (first["row"], first["column"]) == (3, column), result.rejects
    assert reason in first["reason"]
    # the order of a rejected customer goes too: the rest is used
    used = len(result.dataset.customers) + len(result.dataset.orders)
    assert used == (2 if column == "customer_id" else 3), result.rejects


def test_an_id_at_the_limit_is_used(tmp_path):
    longest = "C" * MAX_ID_LENGTH
    customers = CUSTOMERS.replace("C1,", f"{longest},")
    orders = ORDERS.replace(",C1,", f",{longest},")
    result = read_dataset(write_dataset(tmp_path / "data", customers=customers, orders=orders,
                                        events=None, subscriptions=None))
    assert longest in set(result.dataset.customers["customer_id"])
    assert result.rejects.empty, result.rejects


def _wide_customers(attributes: int) -> str:
    header = ",".join(["customer_id", "signup_at", *(f"a{i}" for i in range(attributes))])
    values = ",".join(["C1", "2024-01-01", *("1" for _ in range(attributes))])
    return f"{header}\n{values}\n"


def test_customers_wider_than_the_attribute_cap_are_refused_in_one_line(tmp_path):
    over = MAX_ATTRIBUTE_COLUMNS + 1
    directory = write_dataset(tmp_path / "data", customers=_wide_customers(over),
                              orders="order_id,customer_id,ordered_at,amount\nO1,C1,2024-01-02,5\n",
                              events=None, subscriptions=None)
    with pytest.raises(DataContractError, match=f"{over:,} attribute columns; at most "
                                                f"{MAX_ATTRIBUTE_COLUMNS:,}"):
        read_dataset(directory)
    assert_one_line_exit_2(directory, "customers.csv", "attribute columns")


def test_customers_at_the_attribute_cap_are_used(tmp_path):
    directory = write_dataset(tmp_path / "data", customers=_wide_customers(MAX_ATTRIBUTE_COLUMNS),
                              orders="order_id,customer_id,ordered_at,amount\nO1,C1,2024-01-02,5\n",
                              events=None, subscriptions=None)
    dataset = read_dataset(directory).dataset
    assert len(dataset.attribute_columns) == MAX_ATTRIBUTE_COLUMNS
    assert dataset.customers["a0"].dtype == "float64"


def test_a_latin1_file_names_the_line_of_the_first_bad_byte(tmp_path):
    directory = write_dataset(tmp_path / "data")
    text = ("customer_id,signup_at,city\nC1,2024-01-01,Bern\nC2,2024-01-05,Basel\n"
            "C3,2024-02-01,Zürich\n")
    (directory / "customers.csv").write_bytes(text.encode("latin-1"))
    with pytest.raises(DataContractError, match=r"customers.csv: line 4, byte 16 \(0xfc\) is not "
                                                "UTF-8"):
        read_dataset(directory)
    assert_one_line_exit_2(directory, "line 4", "UTF-8")
