"""The data contract (docs/data.md): validate raw tables into a `Dataset`.

Rows that cannot be used are not dropped silently: each becomes a reject with
the file, row, column, offending value and reason, and every table accounts
for rows read = rows used + rows rejected. Problems that make a whole table
unusable (a missing required column, no customers table) raise
`DataContractError` with a one-line message naming the file and column.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.attributes import type_attributes
from features.dataset import ACTIVITY_TABLES, ORDER_STATUSES, TABLE_COLUMNS, Dataset
from features.text import arrow_text, clean_text, is_blank, stripped

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


#: the longest customer or order id accepted anywhere (files, API, outbox columns)
MAX_ID_LENGTH = 128
#: the most attribute columns ``customers`` may have (each becomes a model input)
MAX_ATTRIBUTE_COLUMNS = 1000

#: a raw table, or a function that reads it when it is its turn (one table in memory at a time)
RawTable = pd.DataFrame | Callable[[], pd.DataFrame]


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
        self.frame = frame  # the raw table, read by position: its own index does not matter
        self.first_row = first_row
        self.bad = pd.Series(False, index=pd.RangeIndex(len(frame)))
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
        text = clean_text(series)
        parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
        parsed = parsed.dt.tz_localize(None)
    out_of_range = parsed.notna() & ((parsed < _EARLIEST) | (parsed >= _LATEST))
    if out_of_range.any():  # else `where` would only copy
        parsed = parsed.where(~out_of_range)
    return parsed.astype("datetime64[ns]"), out_of_range


def _parse_numbers(series: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series):
        return series.astype("float64")
    text = clean_text(series)
    return pd.to_numeric(text, errors="coerce").astype("float64")


def _as_ids(series: pd.Series) -> pd.Series:
    """Ids are strings; integer-typed ids from Parquet keep their digits."""
    if pd.api.types.is_float_dtype(series.dtype):
        whole = series.dropna()
        if (whole == whole.round()).all():
            series = series.astype("Int64")
    return stripped(series)


def _check_attribute_count(columns: pd.Index, *, source: str) -> None:
    """Refuse a customers table wider than MAX_ATTRIBUTE_COLUMNS before any per-column work."""
    attributes = len(columns) - sum(c in ("customer_id", "signup_at") for c in columns)
    if attributes > MAX_ATTRIBUTE_COLUMNS:
        raise DataContractError(
            f"{source}: {attributes:,} attribute columns; at most {MAX_ATTRIBUTE_COLUMNS:,} "
            "are supported (keep the attributes the model should learn from)"
        )


def _reject_unstorable_ids(rejects: _Rejects, ids: pd.Series, column: str) -> None:
    """Ids longer than MAX_ID_LENGTH, or holding a NUL, cannot be stored or looked up."""
    arrow = arrow_text(ids)
    if arrow is not None:  # the common case: one pass over the Arrow buffers, no copy
        longest = pc.max(pc.binary_length(arrow)).as_py() or 0
        if longest <= MAX_ID_LENGTH and not pc.any(pc.match_substring(arrow, "\x00")).as_py():
            return
    text = ids.astype("string")
    rejects.add((text.str.len() > MAX_ID_LENGTH).fillna(False), column,
                f"{column} longer than {MAX_ID_LENGTH} characters")
    rejects.add(text.str.contains("\x00", regex=False).fillna(False), column,
                f"{column} contains a NUL character")


def _order_status(series: pd.Series) -> pd.Series:
    """Status stripped and lower-cased, blank meaning completed (not yet checked)."""
    arrow = arrow_text(series)
    if arrow is not None and arrow.null_count == 0:
        statuses = pa.array(ORDER_STATUSES, type=arrow.type)
        if pc.all(pc.is_in(arrow, value_set=statuses)).as_py() is not False:
            return series  # already in the normal form: nothing to strip, lower or fill
    status = series.astype("string").str.strip().str.lower()
    return status.fillna("").replace("", "completed")


def _may_repeat(ids: pd.Series, bad: pd.Series) -> bool:
    """Whether ids of rows not yet rejected repeat.

    ``is_unique`` is several times faster than the ``duplicated`` search that
    names each duplicate, so that search runs only when there is one to find.
    """
    kept = ids[~bad.to_numpy(dtype=bool)] if bad.any() else ids
    return not kept.dropna().is_unique


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
    # no copy: assigning a column replaces it in `frame` and never writes into `raw`
    # (pandas 3 copies on write; pandas 2 without it copies in reset_index)
    frame = raw.reset_index(drop=True)
    rejects = _Rejects(source, raw, first_row)

    if name == "customers":
        _check_attribute_count(raw.columns, source=source)
    id_columns = [c for c in ("customer_id", "order_id") if c in frame.columns]
    for column in id_columns:
        rejects.add(is_blank(frame[column]), column, f"empty {column}")
        frame[column] = _as_ids(frame[column])
        _reject_unstorable_ids(rejects, frame[column], column)

    for column in TIMESTAMP_COLUMNS.get(name, ()):
        if column not in frame.columns:
            continue
        blank = is_blank(frame[column])
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
        blank = is_blank(frame[column])
        parsed = _parse_numbers(frame[column])
        if REQUIRED_VALUES.get(column, False):
            rejects.add(blank, column, f"empty {column}")
        rejects.add(parsed.isna() & ~blank, column, f"non-numeric {column}")
        rejects.add(np.isinf(parsed), column, f"infinite {column}")
        rejects.add(parsed < 0, column, f"negative {column}")
        frame[column] = parsed

    if name == "orders" and "status" in frame.columns:
        status = _order_status(frame["status"])
        rejects.add(~status.isin(ORDER_STATUSES), "status",
                    f"unknown status (expected one of {', '.join(ORDER_STATUSES)})")
        frame["status"] = status.astype("str")
    if name == "events":
        rejects.add(is_blank(frame["event_type"]), "event_type", "empty event_type")
        frame["event_type"] = stripped(frame["event_type"])
    if name == "subscriptions" and "ended_at" in frame.columns:
        rejects.add(frame["ended_at"] < frame["started_at"], "ended_at",
                    "ended_at is before started_at")

    key = {"customers": "customer_id", "orders": "order_id"}.get(name)
    if key is not None and _may_repeat(frame[key], rejects.bad):
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
        plan = clean_text(frame["plan"])
        frame["plan"] = plan.fillna("default").astype(object)
    if name == "customers":
        frame["signup_at"] = frame["signup_at"].astype("datetime64[ns]")
        attributes = type_attributes(
            frame, frame.columns.drop(["customer_id", "signup_at"]).tolist())
        frame = pd.DataFrame({column: attributes.get(column, frame[column])
                              for column in frame.columns}, index=frame.index)

    # every row usable: `frame` already has a fresh 0..n-1 index, so no filtered copy
    used = frame.loc[~rejects.bad].reset_index(drop=True) if rejects.bad.any() else frame
    return used, rejects.frame_or_empty()


def _load(table: RawTable) -> pd.DataFrame:
    """The raw frame itself, or read now by calling its reader."""
    return table() if callable(table) else table


def _validate_loaded(
    name: str, table: RawTable, *, source: str, first_row: int,
    known_customers: pd.Index, rejected_customers: pd.Index,
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Read a table if need be and validate it; the raw frame is released on return."""
    raw = _load(table)
    used, rejects = validate_table(name, raw, source=source, first_row=first_row,
                                   known_customers=known_customers,
                                   rejected_customers=rejected_customers)
    return used, rejects, len(raw)


def _validate_customers(table: RawTable, *, source: str, first_row: int
                        ) -> tuple[pd.DataFrame, pd.DataFrame, int, pd.Index, pd.Index]:
    """Validate customers; also return the known ids and those only on rejected rows.

    History for the latter gets its own reason ("whose row in customers was
    rejected") rather than "unknown customer_id".
    """
    raw = _load(table)
    used, rejects = validate_table("customers", raw, source=source, first_row=first_row)
    known = pd.Index(used["customer_id"])
    if len(used) == len(raw):  # no row rejected, so no id can be missing from `known`
        return used, rejects, len(raw), known, known[:0]
    listed = _as_ids(raw["customer_id"]).dropna()
    return used, rejects, len(raw), known, pd.Index(listed).difference(known)


def _no_customers(source: str, rows: int, rejects: pd.DataFrame) -> str:
    """One line saying why a dataset without a usable customer cannot be used."""
    if rows == 0:
        return (f"{source}: no customer rows (only a header?); every history row needs its "
                "customer listed here, so nothing can be scored")
    first = rejects.iloc[0]
    return (f"{source}: none of its {rows:,} customer rows is usable (first: row {first['row']}, "
            f"column {first['column']}: {first['reason']}), so nothing can be scored")


def require_history(result: ValidationResult) -> ValidationResult:
    """A dataset with no dated row (no usable history) cannot be scored or trained on."""
    if result.dataset.latest_timestamp() is not None:
        return result
    tables = [result.source_of(name) for name in ACTIVITY_TABLES if name in result.rows_read]
    rows = sum(result.rows_read.get(name, 0) for name in ACTIVITY_TABLES)
    raise DataContractError(
        f"{', '.join(tables)}: no usable history ({rows:,} rows read, all rejected), so there "
        "is nothing to score or train on; run `churnlens validate` to see why"
    )


def validate_tables(
    raw: Mapping[str, RawTable], *, sources: dict[str, str] | None = None,
    first_rows: dict[str, int] | None = None,
) -> ValidationResult:
    """Validate raw tables (customers first, so history can be checked against it).

    A value may be a function that reads its table: it is called once, when the
    table's turn comes, and the raw frame is dropped after validation, so only
    one raw table is in memory at a time. Keys other than the four table names
    (e.g. ``ground_truth``) are ignored, as the loaders ignore other files.
    """
    names = [name for name in raw if name in TABLE_COLUMNS]
    sources = {name: (sources or {}).get(name, name) for name in names}
    first_rows = first_rows or {}
    if "customers" not in names:
        raise DataContractError("missing required table 'customers' (customers.csv or .parquet)")
    if not any(name in names for name in ACTIVITY_TABLES):
        raise DataContractError(
            "the dataset needs at least one of orders, events, subscriptions; found none"
        )
    tables: dict[str, pd.DataFrame] = {}
    rejects: list[pd.DataFrame] = []
    rows_read: dict[str, int] = {}
    customers = _validate_customers(raw["customers"], source=sources["customers"],
                                    first_row=first_rows.get("customers", 1))
    tables["customers"], bad, rows_read["customers"], known, rejected_customers = customers
    if tables["customers"].empty:
        raise DataContractError(_no_customers(sources["customers"], rows_read["customers"], bad))
    rejects.append(bad)
    for name in ACTIVITY_TABLES:
        if name in names:
            tables[name], bad, rows_read[name] = _validate_loaded(
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
        rows_read={name: rows_read[name] for name in names},
        sources=sources,
    )
