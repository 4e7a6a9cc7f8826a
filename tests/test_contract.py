"""The data contract: every kind of bad input is named by file, row and column.

Row numbers are the ones a user sees: in a CSV file the first data row is row 2
(its line number, after the header); in a Parquet file the first row is row 1.
Every table accounts for rows read = rows used + rows rejected.
"""

from __future__ import annotations

import io
import weakref
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import churnlens
from features.contract import (
    MAX_ATTRIBUTE_COLUMNS,
    MAX_ID_LENGTH,
    DataContractError,
    ValidationResult,
    validate_tables,
)
from features.io import read_dataset

CUSTOMERS = """customer_id,signup_at,region,age
C1,2024-01-01,north,34
C2,2024-01-05T09:30:00,south,41
C3,2024-02-01 12:00:00,north,
"""
ORDERS = """order_id,customer_id,ordered_at,amount,status,discount,items
O1,C1,2024-01-02 10:00:00,20.5,completed,0,1
O2,C1,2024-02-02 10:00:00,35.0,returned,5,2
O3,C2,2024-01-06 10:00:00,12.0,,,
O4,C3,2024-03-01 10:00:00,99.9,unclaimed,0,3
"""
EVENTS = """customer_id,occurred_at,event_type,value
C1,2024-01-02 09:00:00,session,5.5
C2,2024-01-06 09:00:00,product_view,
C3,2024-03-01 09:00:00,support_ticket,
"""
SUBSCRIPTIONS = """customer_id,started_at,ended_at,plan,mrr
C1,2024-01-01,2024-03-01,basic,19
C1,2024-03-01,,pro,49
"""


def write_dataset(directory: Path, **overrides: str | None) -> Path:
    """A small valid dataset as CSV files; ``name=None`` leaves a table out."""
    tables = {"customers": CUSTOMERS, "orders": ORDERS, "events": EVENTS,
              "subscriptions": SUBSCRIPTIONS} | overrides
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in tables.items():
        if text is not None:
            (directory / f"{name}.csv").write_text(text)
    return directory


def replace_line(text: str, line_number: int, new_line: str) -> str:
    """Replace a 1-based line of a CSV text (line 1 is the header)."""
    lines = text.splitlines()
    lines[line_number - 1] = new_line
    return "\n".join(lines) + "\n"


def only_reject(result: ValidationResult) -> dict:
    assert len(result.rejects) == 1, f"expected one reject, got:\n{result.rejects}"
    return result.rejects.iloc[0].to_dict()


def assert_accounting(result: ValidationResult) -> None:
    used, rejected = result.rows_used, result.rows_rejected
    for name, read in result.rows_read.items():
        assert read == used[name] + rejected[name], (
            f"{name}: read {read} != used {used[name]} + rejected {rejected[name]}")


# --- whole-table errors ---------------------------------------------------------------


def test_missing_required_column_names_the_file_and_the_column(tmp_path):
    orders = ORDERS.replace("amount", "total")
    with pytest.raises(DataContractError, match=r"orders\.csv: missing required column 'amount'"):
        read_dataset(write_dataset(tmp_path, orders=orders))


def test_semicolon_separated_file_gets_a_hint(tmp_path):
    events = EVENTS.replace(",", ";")
    with pytest.raises(DataContractError, match=r"events\.csv: .*other than commas"):
        read_dataset(write_dataset(tmp_path, events=events))


def test_byte_order_mark_and_windows_line_ends_are_accepted(tmp_path):
    directory = write_dataset(tmp_path)
    text = (directory / "customers.csv").read_text().replace("\n", "\r\n")
    (directory / "customers.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    result = read_dataset(directory)
    assert result.rejects.empty
    assert result.dataset.customers["customer_id"].tolist() == ["C1", "C2", "C3"]


def test_missing_customers_table_is_named(tmp_path):
    with pytest.raises(DataContractError, match="customers"):
        read_dataset(write_dataset(tmp_path, customers=None))


def test_a_dataset_without_any_history_table_is_refused(tmp_path):
    directory = write_dataset(tmp_path, orders=None, events=None, subscriptions=None)
    with pytest.raises(DataContractError, match="orders, events, subscriptions"):
        read_dataset(directory)


def test_both_csv_and_parquet_for_one_table_is_refused(tmp_path):
    directory = write_dataset(tmp_path)
    pd.read_csv(directory / "events.csv").to_parquet(directory / "events.parquet")
    with pytest.raises(DataContractError, match=r"events\.csv.*events\.parquet|events\.parquet.*"
                                                r"events\.csv"):
        read_dataset(directory)


def test_an_unreadable_file_is_named(tmp_path):
    directory = write_dataset(tmp_path, orders=None)
    (directory / "orders.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(DataContractError, match=r"orders\.parquet: cannot be read"):
        read_dataset(directory)


def test_a_missing_directory_is_named(tmp_path):
    with pytest.raises(DataContractError, match="does not exist"):
        read_dataset(tmp_path / "nowhere")


# --- row rejects: one test per kind of bad value ---------------------------------------


def test_unparseable_timestamp_is_rejected_with_csv_line_number(tmp_path):
    orders = replace_line(ORDERS, 3, "O2,C1,last tuesday,35.0,returned,5,2")
    result = read_dataset(write_dataset(tmp_path, orders=orders))
    reject = only_reject(result)
    assert reject["file"] == "orders.csv"
    assert reject["row"] == 3, "line 3 of the file is the second data row"
    assert reject["column"] == "ordered_at"
    assert reject["value"] == "last tuesday"
    assert "unparseable timestamp" in reject["reason"]
    assert "O2" not in set(result.dataset.orders["order_id"])


def test_first_data_row_of_a_csv_is_row_2(tmp_path):
    orders = replace_line(ORDERS, 2, "O1,C1,2024-01-02 10:00:00,twenty,completed,0,1")
    reject = only_reject(read_dataset(write_dataset(tmp_path, orders=orders)))
    assert (reject["row"], reject["column"]) == (2, "amount")


def test_non_numeric_amount_is_rejected(tmp_path):
    orders = replace_line(ORDERS, 4, "O3,C2,2024-01-06 10:00:00,12 EUR,,,")
    reject = only_reject(read_dataset(write_dataset(tmp_path, orders=orders)))
    assert reject == {"file": "orders.csv", "row": 4, "column": "amount", "value": "12 EUR",
                      "reason": "non-numeric amount"}


def test_negative_amount_and_non_numeric_event_value_are_rejected(tmp_path):
    orders = replace_line(ORDERS, 5, "O4,C3,2024-03-01 10:00:00,-99.9,unclaimed,0,3")
    events = replace_line(EVENTS, 2, "C1,2024-01-02 09:00:00,session,long")
    result = read_dataset(write_dataset(tmp_path, orders=orders, events=events))
    found = set(result.rejects[["file", "row", "column"]].itertuples(index=False, name=None))
    assert found == {("orders.csv", 5, "amount"), ("events.csv", 2, "value")}
    assert_accounting(result)


def test_unknown_status_is_rejected_and_blank_status_means_completed(tmp_path):
    orders = replace_line(ORDERS, 2, "O1,C1,2024-01-02 10:00:00,20.5,lost in transit,0,1")
    result = read_dataset(write_dataset(tmp_path, orders=orders))
    reject = only_reject(result)
    assert (reject["file"], reject["row"], reject["column"]) == ("orders.csv", 2, "status")
    assert "unknown status" in reject["reason"] and "unclaimed" in reject["reason"]
    blank = result.dataset.orders.set_index("order_id").loc["O3"]
    assert blank["status"] == "completed" and blank["discount"] == 0.0


def test_duplicate_customer_ids_are_rejected_pointing_at_the_first(tmp_path):
    customers = CUSTOMERS + "C2,2024-04-01,east,50\n"
    result = read_dataset(write_dataset(tmp_path, customers=customers))
    reject = only_reject(result)
    assert (reject["file"], reject["row"], reject["column"]) == ("customers.csv", 5, "customer_id")
    assert reject["reason"] == "duplicate customer_id (first seen at row 3)"
    kept = result.dataset.customers.set_index("customer_id").loc["C2"]
    assert kept["region"] == "south", "the first occurrence is the one used"


def test_duplicate_order_ids_are_rejected(tmp_path):
    orders = ORDERS + "O1,C2,2024-05-01 10:00:00,10,completed,0,1\n"
    reject = only_reject(read_dataset(write_dataset(tmp_path, orders=orders)))
    assert (reject["file"], reject["row"], reject["column"]) == ("orders.csv", 6, "order_id")
    assert reject["reason"] == "duplicate order_id (first seen at row 2)"


def test_history_of_unknown_customers_is_rejected(tmp_path):
    orders = ORDERS + "O5,C99,2024-05-01 10:00:00,10,completed,0,1\n"
    events = EVENTS + "C98,2024-05-01 10:00:00,session,3\n"
    subscriptions = SUBSCRIPTIONS + "C97,2024-05-01,,basic,19\n"
    result = read_dataset(write_dataset(tmp_path, orders=orders, events=events,
                                        subscriptions=subscriptions))
    found = {(r.file, r.row, r.column, r.value) for r in result.rejects.itertuples()}
    assert found == {("orders.csv", 6, "customer_id", "C99"),
                     ("events.csv", 5, "customer_id", "C98"),
                     ("subscriptions.csv", 4, "customer_id", "C97")}
    assert result.rejects["reason"].str.contains("unknown customer_id").all()


def test_history_of_a_customer_whose_row_was_rejected_says_so(tmp_path):
    customers = replace_line(CUSTOMERS, 4, "C3,someday,north,")
    result = read_dataset(write_dataset(tmp_path, customers=customers))
    found = {(r.file, r.row, r.column, r.reason) for r in result.rejects.itertuples()}
    assert found == {
        ("customers.csv", 4, "signup_at", "unparseable timestamp in signup_at (expected ISO 8601)"),
        ("orders.csv", 5, "customer_id", "customer_id whose row in customers was rejected"),
        ("events.csv", 4, "customer_id", "customer_id whose row in customers was rejected"),
    }
    assert_accounting(result)


@pytest.mark.parametrize(("table", "line", "new_line", "column"), [
    ("customers", 3, ",2024-01-05,south,41", "customer_id"),
    ("orders", 2, ",C1,2024-01-02 10:00:00,20.5,completed,0,1", "order_id"),
    ("orders", 2, "O1,,2024-01-02 10:00:00,20.5,completed,0,1", "customer_id"),
    ("orders", 2, "O1,C1,,20.5,completed,0,1", "ordered_at"),
    ("orders", 2, "O1,C1,2024-01-02 10:00:00,  ,completed,0,1", "amount"),
    ("events", 3, "C2,,product_view,", "occurred_at"),
    ("events", 3, "C2,2024-01-06 09:00:00,,", "event_type"),
    ("subscriptions", 2, "C1,,2024-03-01,basic,19", "started_at"),
])
def test_empty_required_values_are_rejected(tmp_path, table, line, new_line, column):
    text = {"customers": CUSTOMERS, "orders": ORDERS, "events": EVENTS,
            "subscriptions": SUBSCRIPTIONS}[table]
    result = read_dataset(write_dataset(tmp_path, **{table: replace_line(text, line, new_line)}))
    rejects = result.rejects
    own = rejects[rejects["file"] == f"{table}.csv"]
    assert own[["row", "column"]].values.tolist() == [[line, column]], rejects
    assert own["reason"].iloc[0] == f"empty {column}"
    assert_accounting(result)


def test_subscription_ending_before_it_starts_is_rejected(tmp_path):
    subscriptions = replace_line(SUBSCRIPTIONS, 2, "C1,2024-03-01,2024-01-01,basic,19")
    reject = only_reject(read_dataset(write_dataset(tmp_path, subscriptions=subscriptions)))
    assert (reject["file"], reject["row"], reject["column"]) == ("subscriptions.csv", 2, "ended_at")


def test_timestamps_outside_the_supported_range_are_rejected_not_crashing(tmp_path):
    events = replace_line(EVENTS, 4, "C3,3024-03-01 09:00:00,support_ticket,")
    reject = only_reject(read_dataset(write_dataset(tmp_path, events=events)))
    assert (reject["row"], reject["column"]) == (4, "occurred_at")
    assert "outside the years" in reject["reason"]


# --- accepted forms -----------------------------------------------------------------------


def test_timestamps_with_time_zones_become_naive_utc(tmp_path):
    orders = replace_line(ORDERS, 2, "O1,C1,2024-01-02T10:00:00+02:00,20.5,completed,0,1")
    orders = replace_line(orders, 3, "O2,C1,2024-02-02T10:00:00Z,35.0,returned,5,2")
    result = read_dataset(write_dataset(tmp_path, orders=orders))
    assert result.rejects.empty
    ordered_at = result.dataset.orders.set_index("order_id")["ordered_at"]
    assert ordered_at.dtype == "datetime64[ns]"
    assert ordered_at["O1"] == pd.Timestamp("2024-01-02 08:00:00")
    assert ordered_at["O2"] == pd.Timestamp("2024-02-02 10:00:00")
    assert ordered_at["O3"] == pd.Timestamp("2024-01-06 10:00:00"), "naive means UTC"


def test_valid_dataset_is_typed_as_the_dataset_promises(tmp_path):
    result = read_dataset(write_dataset(tmp_path))
    assert result.rejects.empty
    dataset = result.dataset
    assert dataset.customers["customer_id"].tolist() == ["C1", "C2", "C3"]
    assert dataset.customers["age"].dtype == "float64", "numeric attributes are numbers"
    assert pd.isna(dataset.customers["age"].iloc[2])
    assert dataset.customers["region"].tolist() == ["north", "south", "north"]
    assert dataset.orders["amount"].dtype == "float64"
    assert dataset.subscriptions["ended_at"].isna().tolist() == [False, True]
    assert dataset.events["value"].isna().tolist() == [False, True, True]
    assert dataset.latest_timestamp() == pd.Timestamp("2024-03-01 10:00:00")
    assert result.rows_read == {"customers": 3, "orders": 4, "events": 3, "subscriptions": 2}


def test_ground_truth_and_other_files_are_ignored(tmp_path):
    directory = write_dataset(tmp_path)
    (directory / "ground_truth.csv").write_text("customer_id,churned_at\nC1,not a date\n")
    (directory / "notes.txt").write_text("hello")
    result = read_dataset(directory)
    assert result.rejects.empty and "ground_truth" not in result.rows_read


def test_parquet_input_is_validated_with_1_based_row_numbers(tmp_path):
    directory = write_dataset(tmp_path / "csv")
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    for name in ("customers", "events", "subscriptions"):
        pd.read_csv(directory / f"{name}.csv", dtype=str).to_parquet(parquet / f"{name}.parquet")
    orders = pd.DataFrame({
        "order_id": [1, 2, 3],  # integer ids are still ids
        "customer_id": ["C1", "C2", "C404"],
        "ordered_at": pd.to_datetime(["2024-01-02 12:00", "2024-01-03 00:00", "2024-01-04 00:00"]
                                     ).tz_localize("Europe/Berlin"),
        "amount": [10.0, float("nan"), 5.0],
    })
    orders.to_parquet(parquet / "orders.parquet")
    result = read_dataset(parquet)
    found = {(r.file, r.row, r.column) for r in result.rejects.itertuples()}
    assert found == {("orders.parquet", 2, "amount"), ("orders.parquet", 3, "customer_id")}
    used = result.dataset.orders
    assert used["order_id"].tolist() == ["1"]
    assert used["ordered_at"].iloc[0] == pd.Timestamp("2024-01-02 11:00:00"), "Berlin to UTC"
    assert used["status"].tolist() == ["completed"], "optional columns get their defaults"
    assert_accounting(result)


def test_in_memory_tables_validate_with_table_names_as_sources():
    raw = {"customers": pd.DataFrame({"customer_id": ["A", "B"]}),
           "events": pd.DataFrame({"customer_id": ["A", "B", "A"],
                                   "occurred_at": ["2024-01-01", "soon", "2024-01-02"],
                                   "event_type": ["session"] * 3})}
    result = validate_tables(raw)
    reject = only_reject(result)
    assert (reject["file"], reject["row"], reject["column"]) == ("events", 2, "occurred_at")
    assert result.rows_used == {"customers": 2, "events": 2}


def test_tables_are_read_one_at_a_time_customers_first():
    """A reader per table is called once, in turn, after the previous raw frame is gone."""
    texts = {"customers": CUSTOMERS, "orders": ORDERS, "events": EVENTS,
             "subscriptions": SUBSCRIPTIONS}
    alive: dict[str, weakref.ref] = {}
    calls: list[tuple[str, list[str]]] = []

    def reader(name: str):
        def read() -> pd.DataFrame:
            calls.append((name, [n for n, ref in alive.items() if ref() is not None]))
            frame = pd.read_csv(io.StringIO(texts[name]), dtype=str, keep_default_na=False)
            alive[name] = weakref.ref(frame)
            return frame
        return read

    result = validate_tables({name: reader(name) for name in reversed(texts)})
    assert calls == [("customers", []), ("orders", []), ("events", []), ("subscriptions", [])]
    assert result.rejects.empty
    assert list(result.rows_read) == ["subscriptions", "events", "orders", "customers"]
    assert result.rows_read == {"customers": 3, "orders": 4, "events": 3, "subscriptions": 2}


def test_parquet_text_is_stripped_and_checked_like_csv(tmp_path):
    directory = write_dataset(tmp_path / "csv")
    for name in ("customers", "events", "subscriptions"):
        pd.read_csv(directory / f"{name}.csv", dtype=str).to_parquet(tmp_path / f"{name}.parquet")
    orders = pd.read_csv(io.StringIO(ORDERS), dtype=str, keep_default_na=False)
    orders["order_id"] = [" O1", "O2 ", "  ", "O4"]
    orders["customer_id"] = ["C1", "\tC1", "C2", "C3\u00a0"]
    orders["status"] = ["completed", " Returned", "", "UNCLAIMED"]
    orders.to_parquet(tmp_path / "orders.parquet")
    result = read_dataset(tmp_path)
    reject = only_reject(result)
    assert (reject["row"], reject["column"], reject["reason"]) == (3, "order_id", "empty order_id")
    used = result.dataset.orders
    assert used["order_id"].tolist() == ["O1", "O2", "O4"]
    assert used["customer_id"].tolist() == ["C1", "C1", "C3"]
    assert used["status"].tolist() == ["completed", "returned", "unclaimed"]


@pytest.mark.parametrize(("text_at", "dtype"), [(None, "float64"), (3, "object"),
                                                (1500, "object")])
def test_an_attribute_is_text_wherever_its_first_non_number_is(text_at, dtype):
    ages = [str(20 + i % 50) for i in range(2000)]
    if text_at is not None:
        ages[text_at] = "unknown"
    customers = pd.DataFrame({"customer_id": [f"C{i}" for i in range(2000)], "age": ages})
    events = pd.DataFrame({"customer_id": ["C1"], "occurred_at": ["2024-01-01"],
                           "event_type": ["session"]})
    age = validate_tables({"customers": customers, "events": events}).dataset.customers["age"]
    assert age.dtype == dtype
    assert age.iloc[0] == (20.0 if text_at is None else "20")


# --- accounting -------------------------------------------------------------------------


def test_a_row_with_several_problems_is_rejected_once(tmp_path):
    orders = replace_line(ORDERS, 3, "O1,C404,whenever,lots,weird,0,1")
    result = read_dataset(write_dataset(tmp_path, orders=orders))
    reject = only_reject(result)
    assert reject["row"] == 3
    assert result.rows_rejected["orders"] == 1
    assert_accounting(result)


BAD_CELLS = {"order_id": ["", "O1"], "customer_id": ["", "C404"],
             "ordered_at": ["", "31/12/2024", "2024-02-30"], "amount": ["", "x", "-1", "inf"],
             "status": ["refunded", ""], "discount": ["?", ""], "items": ["many", ""]}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 19), st.sampled_from(sorted(BAD_CELLS)),
                          st.integers(0, 3)), max_size=12))
def test_rows_read_always_equal_rows_used_plus_rows_rejected(corruptions):
    orders = pd.DataFrame({
        "order_id": [f"O{i}" for i in range(20)],
        "customer_id": ["C1", "C2", "C3", "C1"] * 5,
        "ordered_at": [f"2024-01-{i + 1:02d} 10:00:00" for i in range(20)],
        "amount": [str(10 + i) for i in range(20)],
        "status": ["completed", "returned"] * 10,
        "discount": ["0"] * 20,
        "items": ["1"] * 20,
    })
    for row, column, pick in corruptions:
        options = BAD_CELLS[column]
        orders.loc[row, column] = options[pick % len(options)]
    customers = pd.read_csv(io.StringIO(CUSTOMERS), dtype=str)
    result = validate_tables({"customers": customers, "orders": orders},
                             first_rows={"orders": 2})
    assert_accounting(result)
    rejected_rows = set(result.rejects["row"])
    assert rejected_rows <= set(range(2, 22))
    used_ids = set(result.dataset.orders["order_id"])
    assert len(used_ids) == len(result.dataset.orders), "used order ids are unique"
    assert not result.dataset.orders["ordered_at"].isna().any()
    assert not result.dataset.orders["amount"].isna().any()


# --- the validate command -----------------------------------------------------------------


def run(args: list[str]):
    return CliRunner().invoke(churnlens.build_app(), args)


def test_validate_prints_the_summary_and_writes_the_rejects(tmp_path):
    orders = replace_line(ORDERS, 3, "O2,C1,last tuesday,35.0,returned,5,2")
    directory = write_dataset(tmp_path / "data", orders=orders)
    rejects = tmp_path / "out" / "bad_rows.csv"
    result = run(["validate", "--data", str(directory), "--rejects", str(rejects)])
    assert result.exit_code == 0, result.output
    for word in ("customers", "orders", "events", "subscriptions", "2024-01-01", "2024-03-01"):
        assert word in result.output
    assert "orders.csv row 3, column ordered_at" in result.output
    written = pd.read_csv(rejects)
    assert written[["file", "row", "column"]].values.tolist() == [["orders.csv", 3, "ordered_at"]]


def test_validate_strict_exits_1_when_rows_are_rejected(tmp_path):
    orders = ORDERS + "O1,C2,2024-05-01 10:00:00,10,completed,0,1\n"
    directory = write_dataset(tmp_path / "data", orders=orders)
    result = run(["validate", "--data", str(directory), "--rejects",
                  str(tmp_path / "rejects.csv"), "--strict"])
    assert result.exit_code == 1, result.output
    clean = run(["validate", "--data", str(write_dataset(tmp_path / "clean")), "--strict",
                 "--rejects", str(tmp_path / "clean_rejects.csv")])
    assert clean.exit_code == 0, clean.output
    assert "every row is usable" in clean.output
    assert not (tmp_path / "clean_rejects.csv").exists()


def test_validate_exits_2_with_a_one_line_error_for_a_missing_column(tmp_path):
    directory = write_dataset(tmp_path / "data", events=EVENTS.replace("event_type", "kind"))
    result = run(["validate", "--data", str(directory)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "events.csv" in lines[0] and "'event_type'" in lines[0]
    assert "Traceback" not in result.output


# --- writing tables -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["plain", "comma, inside", 'a "quote"', "two\nlines"])
def test_written_csv_reads_back_to_the_same_values(tmp_path, text):
    from features.io import write_table

    frame = pd.DataFrame({
        "customer_id": ["C1", text, None],
        "ordered_at": pd.to_datetime(["2024-01-02 10:00:00", None, "2024-03-04 05:06:07"]),
        "amount": [1.5, float("nan"), 3.0],
        "flag": [True, False, True],
    })
    path = write_table(frame, tmp_path / "out" / "table.csv")
    assert (path.stat().st_mode & 0o044) == 0o044, "written files are readable by others"
    back = pd.read_csv(path, parse_dates=["ordered_at"], keep_default_na=False,
                       na_values=[""])
    assert back["customer_id"].tolist()[:2] == ["C1", text]
    assert pd.isna(back["customer_id"].iloc[2])
    pd.testing.assert_series_equal(back["ordered_at"], frame["ordered_at"], check_dtype=False)
    assert back["amount"].tolist()[::2] == [1.5, 3.0] and pd.isna(back["amount"].iloc[1])
    assert back["flag"].tolist() == [True, False, True]
    assert not list(path.parent.glob(".*.tmp")), "no temporary files left behind"


# -- corrupted datasets: refused in one line, or rejected by row ---------------------------
# A dataset that leaves no customer or no dated row is unusable, and says so in `validate`
# as in every command that reads it; ids a database cannot store are rejected by row; a
# customers file wider than the attribute cap is refused before any per-column work; a
# file that is not UTF-8 names the line.

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
