"""The data contract (DESIGN §2): validate raw tables into a `Dataset`.

Rows that cannot be used are not dropped silently: each becomes a reject with
the file, row, column, offending value and reason, and every table accounts
for rows read = rows used + rows rejected. Problems that make a whole table
unusable (a missing required column, no customers table) raise
`DataContractError` with a one-line message naming the file and column.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.dataset import ACTIVITY_TABLES, ORDER_STATUSES, TABLE_COLUMNS, Dataset

REJECT_COLUMNS = ["file", "row", "column", "value", "reason"]

TIMESTAMP_COLUMNS = {
    "customers": ("signup_at",),
    "orders": ("ordered_at",),
    "events": ("occurred_at",),
    "subscriptions": ("started_at", "ended_at"),
}
NUMERIC_COLUMNS = {
    "orders": ("amount", "discount", "items"),
    "events": ("value",),
    "subscriptions": ("mrr",),
}
#: timestamp and numeric columns that must hold a value on every row
REQUIRED_VALUES = {"signup_at": False, "ordered_at": True, "occurred_at": True,
                   "started_at": True, "ended_at": False, "amount": True}


class DataContractError(ValueError):
    """A table cannot be used at all; the message names the file and column."""


@dataclass
class ValidationResult:
    """A validated dataset plus the accounting of what was read and rejected."""

    dataset: Dataset
    rejects: pd.DataFrame
    rows_read: dict[str, int] = field(default_factory=dict)

    @property
    def rows_used(self) -> dict[str, int]:
        return self.dataset.count_rows()

    @property
    def rows_rejected(self) -> dict[str, int]:
        counts = self.rejects.drop_duplicates(["file", "row"])["file"].value_counts()
        return {name: int(counts.get(self.source_of(name), 0)) for name in self.rows_read}

    def source_of(self, table: str) -> str:
        return self.sources.get(table, table)

    sources: dict[str, str] = field(default_factory=dict)


class _Rejects:
    """Collects rejected rows of one table; a row is rejected for its first problem only."""

    def __init__(self, source: str, frame: pd.DataFrame, first_row: int) -> None:
        self.source = source
        self.frame = frame
        self.first_row = first_row
        self.bad = pd.Series(False, index=frame.index)
        self.records: list[pd.DataFrame] = []

    def add(self, mask: pd.Series, column: str, reason: str | pd.Series) -> None:
        new = mask & ~self.bad
        if not new.any():
            return
        positions = np.flatnonzero(new.to_numpy())
        if column in self.frame:
            raw_values = self.frame[column].iloc[positions]
            values = raw_values.astype(str).where(raw_values.notna(), "").to_numpy()
        else:
            values = np.full(len(positions), "", dtype=object)
        reasons = reason[new] if isinstance(reason, pd.Series) else reason
        self.records.append(
            pd.DataFrame(
                {
                    "file": self.source,
                    "row": positions + self.first_row,
                    "column": column,
                    "value": values,
                    "reason": np.asarray(reasons, dtype=object)
                    if isinstance(reasons, pd.Series)
                    else reasons,
                }
            )
        )
        self.bad |= new

    def frame_or_empty(self) -> pd.DataFrame:
        if not self.records:
            return pd.DataFrame(columns=REJECT_COLUMNS)
        return pd.concat(self.records, ignore_index=True)


def _is_blank(series: pd.Series) -> pd.Series:
    """Missing, or text that is only spaces; typed (non-text) columns can only be missing."""
    if not (pd.api.types.is_object_dtype(series.dtype)
            or pd.api.types.is_string_dtype(series.dtype)):
        return series.isna()
    return series.isna() | (series.astype("string").str.strip() == "").fillna(False)


def _is_in(ids: pd.Series, known: pd.Index) -> pd.Series:
    """``ids.isin(known)`` through Arrow's hash kernel (pandas' is ~10x slower on strings)."""
    if len(known) == 0:
        return pd.Series(False, index=ids.index)
    found = pc.is_in(pa.array(ids.array, type=pa.large_string()),
                     value_set=pa.array(known.array, type=pa.large_string()))
    return pd.Series(found.to_numpy(zero_copy_only=False), index=ids.index, dtype=bool)


#: the range a nanosecond timestamp can hold; every table uses one unit so that
#: frames read from CSV, Parquet and the generator compare and concatenate alike
_EARLIEST = pd.Timestamp("1678-01-01")
_LATEST = pd.Timestamp("2262-01-01")


def _parse_timestamps(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """ISO 8601 (or typed datetimes) to naive UTC ``datetime64[ns]``.

    Returns the parsed values (NaT where unusable) and a mask of values that
    parsed but lie outside the nanosecond range.
    """
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        parsed = series.dt.tz_convert("UTC").dt.tz_localize(None)
    elif pd.api.types.is_datetime64_dtype(series.dtype):
        parsed = series
    else:
        text = series.astype("string").str.strip().replace("", pd.NA)
        parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
        parsed = parsed.dt.tz_localize(None)
    out_of_range = parsed.notna() & ((parsed < _EARLIEST) | (parsed >= _LATEST))
    parsed = parsed.where(~out_of_range)
    return parsed.astype("datetime64[ns]"), out_of_range


def _parse_numbers(series: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series):
        return series.astype("float64")
    text = series.astype("string").str.strip().replace("", pd.NA)
    return pd.to_numeric(text, errors="coerce").astype("float64")


def _attribute(series: pd.Series) -> pd.Series:
    """A static attribute: numeric when every non-blank value is a number, else text.

    CSV cells arrive as strings; without this an ``age`` column would be
    treated as a category of strings. Blank cells become missing values.
    """
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series):
        return series.astype("float64")
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.astype(object)
    text = series.astype("string").str.strip().replace("", pd.NA)
    numbers = pd.to_numeric(text, errors="coerce")
    if text.notna().any() and numbers[text.notna()].notna().all():
        return numbers.astype("float64")
    return text.astype(object).where(text.notna(), np.nan)


def _as_ids(series: pd.Series) -> pd.Series:
    """Ids are strings; integer-typed ids from Parquet keep their digits."""
    if pd.api.types.is_float_dtype(series.dtype):
        whole = series.dropna()
        if (whole == whole.round()).all():
            series = series.astype("Int64")
    return series.astype("string").str.strip().astype("str")


def validate_table(
    name: str, raw: pd.DataFrame, *, source: str, first_row: int = 1,
    known_customers: pd.Index | None = None, rejected_customers: pd.Index | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate one raw table; return (usable rows with typed columns, rejects).

    ``first_row`` is the row number of the first data row in ``source`` as a
    user would count it (2 for a CSV file with a header line).
    """
    required, optional = TABLE_COLUMNS[name]
    missing = [c for c in required if c not in raw.columns]
    if missing:
        found = ", ".join(map(str, raw.columns)) or "none"
        hint = ""
        if len(raw.columns) == 1 and any(sep in str(raw.columns[0]) for sep in ";\t|"):
            hint = "; the file looks delimited by something other than commas"
        raise DataContractError(
            f"{source}: missing required column {missing[0]!r} (found columns: {found}){hint}"
        )
    frame = raw.reset_index(drop=True).copy()
    rejects = _Rejects(source, raw.reset_index(drop=True), first_row)

    id_columns = [c for c in ("customer_id", "order_id") if c in frame.columns]
    for column in id_columns:
        rejects.add(_is_blank(frame[column]), column, f"empty {column}")
        frame[column] = _as_ids(frame[column])

    for column in TIMESTAMP_COLUMNS.get(name, ()):
        if column not in frame.columns:
            continue
        blank = _is_blank(frame[column])
        parsed, out_of_range = _parse_timestamps(frame[column])
        if REQUIRED_VALUES[column]:
            rejects.add(blank, column, f"empty {column}")
        rejects.add(out_of_range, column,
                    f"timestamp in {column} outside the years 1678-2261")
        rejects.add(parsed.isna() & ~blank, column,
                    f"unparseable timestamp in {column} (expected ISO 8601)")
        frame[column] = parsed

    for column in NUMERIC_COLUMNS.get(name, ()):
        if column not in frame.columns:
            continue
        blank = _is_blank(frame[column])
        parsed = _parse_numbers(frame[column])
        if REQUIRED_VALUES.get(column, False):
            rejects.add(blank, column, f"empty {column}")
        rejects.add(parsed.isna() & ~blank, column, f"non-numeric {column}")
        rejects.add(np.isinf(parsed), column, f"infinite {column}")
        rejects.add(parsed < 0, column, f"negative {column}")
        frame[column] = parsed

    if name == "orders" and "status" in frame.columns:
        status = frame["status"].astype("string").str.strip().str.lower()
        status = status.fillna("").replace("", "completed")
        rejects.add(~status.isin(ORDER_STATUSES), "status",
                    f"unknown status (expected one of {', '.join(ORDER_STATUSES)})")
        frame["status"] = status.astype("str")
    if name == "events":
        rejects.add(_is_blank(frame["event_type"]), "event_type", "empty event_type")
        frame["event_type"] = frame["event_type"].astype("string").str.strip().astype("str")
    if name == "subscriptions" and "ended_at" in frame.columns:
        rejects.add(frame["ended_at"] < frame["started_at"], "ended_at",
                    "ended_at is before started_at")

    key = {"customers": "customer_id", "orders": "order_id"}.get(name)
    if key is not None:
        ok_rows = frame[key].where(~rejects.bad)
        duplicated = ok_rows.duplicated(keep="first") & ok_rows.notna()
        if duplicated.any():
            firsts = ok_rows[~duplicated & ok_rows.notna()]
            first_row_of = pd.Series(firsts.index + first_row, index=firsts.to_numpy())
            seen_at = ok_rows.map(first_row_of).astype("Int64").astype(str)
            rejects.add(duplicated, key, f"duplicate {key} (first seen at row " + seen_at + ")")

    if name != "customers" and known_customers is not None:
        if rejected_customers is not None and len(rejected_customers):
            rejects.add(_is_in(frame["customer_id"], rejected_customers), "customer_id",
                        "customer_id whose row in customers was rejected")
        rejects.add(~_is_in(frame["customer_id"], known_customers), "customer_id",
                    "unknown customer_id (not in customers)")

    for column, default in optional.items():
        if column not in frame.columns:
            frame[column] = default
    if name == "orders":
        frame["discount"] = frame["discount"].fillna(0.0)
    if name == "subscriptions":
        plan = frame["plan"].astype("string").str.strip().replace("", pd.NA)
        frame["plan"] = plan.fillna("default").astype(object)
    if name == "customers":
        frame["signup_at"] = frame["signup_at"].astype("datetime64[ns]")
        for column in frame.columns.drop(["customer_id", "signup_at"]):
            frame[column] = _attribute(frame[column])

    used = frame.loc[~rejects.bad].reset_index(drop=True)
    return used, rejects.frame_or_empty()


def validate_tables(
    raw: dict[str, pd.DataFrame], *, sources: dict[str, str] | None = None,
    first_rows: dict[str, int] | None = None,
) -> ValidationResult:
    """Validate raw tables (customers first, so history can be checked against it).

    Keys other than the four table names (e.g. ``ground_truth``) are ignored,
    as the loaders ignore other files.
    """
    raw = {name: frame for name, frame in raw.items() if name in TABLE_COLUMNS}
    sources = {name: (sources or {}).get(name, name) for name in raw}
    first_rows = first_rows or {}
    if "customers" not in raw:
        raise DataContractError("missing required table 'customers' (customers.csv or .parquet)")
    if not any(name in raw for name in ACTIVITY_TABLES):
        raise DataContractError(
            "the dataset needs at least one of orders, events, subscriptions; found none"
        )
    tables: dict[str, pd.DataFrame] = {}
    rejects: list[pd.DataFrame] = []
    customers, bad = validate_table("customers", raw["customers"], source=sources["customers"],
                                    first_row=first_rows.get("customers", 1))
    tables["customers"] = customers
    rejects.append(bad)
    known = pd.Index(customers["customer_id"])
    listed = _as_ids(raw["customers"]["customer_id"]).dropna()
    rejected_customers = pd.Index(listed).difference(known)
    for name in ACTIVITY_TABLES:
        if name in raw:
            tables[name], bad = validate_table(
                name, raw[name], source=sources[name], first_row=first_rows.get(name, 1),
                known_customers=known, rejected_customers=rejected_customers,
            )
            rejects.append(bad)
    nonempty = [r for r in rejects if not r.empty]
    all_rejects = (pd.concat(nonempty, ignore_index=True) if nonempty
                   else pd.DataFrame(columns=REJECT_COLUMNS))
    return ValidationResult(
        dataset=Dataset(**tables),
        rejects=all_rejects,
        rows_read={name: len(frame) for name, frame in raw.items()},
        sources=sources,
    )
