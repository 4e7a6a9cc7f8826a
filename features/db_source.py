"""Read the four contract tables from a database, as `features.io` reads them from files.

The tables are found by their names, or through a small YAML mapping
(``--tables FILE``) onto an existing schema::

    customers: crm_clients                 # a table name (schema.table works too)
    orders:
      from: SELECT * FROM sales WHERE channel = 'web'   # or a SELECT
      columns: {order_id: sale_no, ordered_at: sold_on, amount: total}

Only the contract's columns are read from the history tables (bookkeeping
columns such as ``events.event_key`` are not), every column of customers is
(extra columns are static attributes). The raw rows then go through the same
`features.contract.validate_tables` as files, so the checks and the rejects
accounting are the same; a reject's row number is its position in the result.

PostgreSQL is read with the ADBC driver (Arrow columns straight from the wire,
binary COPY under the hood: see bench/db_read_bench.py for the measurement
against ``pandas.read_sql``, psycopg ``COPY … TO STDOUT`` and connectorx);
other databases (SQLite) through SQLAlchemy and ``pandas.read_sql``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import pandas as pd
import pyarrow as pa
import yaml
from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from features.contract import (
    DataContractError,
    ValidationResult,
    require_history,
    validate_tables,
)
from features.database import CONTRACT_TABLES, database_engine
from features.dataset import TABLE_COLUMNS

_QUERY = re.compile(r"^\s*(select|with)\b", re.IGNORECASE)


class TableMapError(DataContractError):
    """The ``--tables`` mapping is malformed or names a table or column that is not there."""


@dataclass(frozen=True)
class TableSource:
    """Where one contract table comes from: a table or a SELECT, and renamed columns."""

    name: str
    relation: str
    columns: dict[str, str] = field(default_factory=dict)

    @property
    def is_query(self) -> bool:
        return bool(_QUERY.match(self.relation))

    def label(self) -> str:
        """How rejects and messages name this source."""
        if self.is_query:
            return f"{self.name} (query)"
        return self.relation if self.relation == self.name else f"{self.name} ({self.relation})"


def read_table_map(path: Path | str) -> dict[str, TableSource]:
    """Parse a ``--tables`` YAML file; structural problems name the file and the entry."""
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise TableMapError(f"{path}: cannot be read: {error.strerror or error}") from error
    except yaml.YAMLError as error:
        first = str(error).strip().splitlines()[0]
        raise TableMapError(f"{path}: not valid YAML: {first}") from error
    if not isinstance(loaded, dict):
        raise TableMapError(f"{path}: expected a mapping of contract table to table name, "
                            "SELECT or {from, columns}")
    sources: dict[str, TableSource] = {}
    for name, entry in loaded.items():
        if name not in CONTRACT_TABLES:
            raise TableMapError(f"{path}: {name!r} is not a contract table (expected one of "
                                f"{', '.join(CONTRACT_TABLES)})")
        if isinstance(entry, str):
            entry = {"from": entry}
        if not isinstance(entry, dict) or set(entry) - {"from", "columns"}:
            raise TableMapError(f"{path}: {name}: expected a table name, a SELECT, or "
                                "{from: …, columns: {contract column: source column}}")
        relation = entry.get("from", name)
        columns = entry.get("columns") or {}
        if not isinstance(relation, str) or not relation.strip():
            raise TableMapError(f"{path}: {name}.from: expected a table name or a SELECT")
        if not isinstance(columns, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in columns.items()):
            raise TableMapError(f"{path}: {name}.columns: expected contract column: source "
                                "column pairs")
        known = _contract_columns(name)
        for column in columns:
            if name != "customers" and column not in known:
                raise TableMapError(f"{path}: {name}.columns: {column!r} is not a column of "
                                    f"the contract's {name} (expected one of {', '.join(known)})")
        sources[name] = TableSource(name, relation.strip(), dict(columns))
    return sources


def _contract_columns(name: str) -> list[str]:
    required, optional = TABLE_COLUMNS[name]
    return [*required, *optional]


def _quote(engine: Engine, relation: str) -> str:
    preparer = engine.dialect.identifier_preparer
    return ".".join(preparer.quote(part) for part in relation.split("."))


def _source_columns(engine: Engine, source: TableSource, *, origin: str) -> list[str]:
    """The columns the source offers; a missing table or a failing SELECT is one line."""
    if source.is_query:
        try:
            with engine.connect() as connection:
                result = connection.execute(
                    text(f"SELECT * FROM ({source.relation}) AS churnlens_source LIMIT 0"))
                return list(result.keys())
        except SQLAlchemyError as error:
            first = str(getattr(error, "orig", error)).strip().splitlines()[0]
            raise TableMapError(f"{origin}: {source.name}: the SELECT fails: {first}") from None
    schema, _, table = source.relation.rpartition(".")
    found = inspect(engine)
    if not found.has_table(table, schema=schema or None):
        raise TableMapError(f"{origin}: {source.name}: table {source.relation!r} does not exist "
                            "in the database")
    return [column["name"] for column in found.get_columns(table, schema=schema or None)]


def source_query(engine: Engine, source: TableSource, *, origin: str) -> str:
    """The SELECT that reads one contract table with contract column names."""
    offered = _source_columns(engine, source, origin=origin)
    for contract_column, column in source.columns.items():
        if column not in offered:
            raise TableMapError(
                f"{origin}: {source.name}.{contract_column}: column {column!r} is not in "
                f"{source.label()} (its columns: {', '.join(offered) or 'none'})")
    preparer = engine.dialect.identifier_preparer
    renamed = {column: contract for contract, column in source.columns.items()}
    if source.name == "customers":
        picks = [(column, renamed.get(column, column)) for column in offered]
    else:
        picks = []
        for contract_column in _contract_columns(source.name):
            column = source.columns.get(contract_column, contract_column)
            if column in offered:
                picks.append((column, contract_column))
    select_list = ", ".join(
        preparer.quote(column) if column == name
        else f"{preparer.quote(column)} AS {preparer.quote(name)}"
        for column, name in picks) or "*"
    relation = (f"({source.relation}) AS churnlens_source" if source.is_query
                else _quote(engine, source.relation))
    return f"SELECT {select_list} FROM {relation}"


def find_sources(engine: Engine, mapping: dict[str, TableSource] | None) -> dict[str, TableSource]:
    """The mapped tables, and the others where a table of the contract's name exists."""
    mapping = dict(mapping or {})
    present = set(inspect(engine).get_table_names())
    for name in CONTRACT_TABLES:
        if name not in mapping and name in present:
            mapping[name] = TableSource(name, name)
    return {name: mapping[name] for name in CONTRACT_TABLES if name in mapping}


def _adbc_uri(url: str) -> str:
    """The libpq URI of a SQLAlchemy PostgreSQL URL (``+psycopg`` dropped, options kept)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


#: bytes per Arrow batch the ADBC driver builds (its default is 16 MB): a large table then
#: arrives in a few chunks, so the frame is made of it with less concatenation (1M rows:
#: to_pandas 0.01 s from one chunk vs 0.14 s from three); end to end within noise of the
#: default at 10M events (bench/db_read_bench.py: 11.8 vs 12.0 s, medians of 3)
ADBC_BATCH_BYTES = 128 * 1024 * 1024


def read_arrow(engine: Engine, query: str) -> pa.Table:
    """Run ``query`` and return its rows as Arrow (ADBC on PostgreSQL)."""
    if engine.dialect.name == "postgresql":
        import adbc_driver_postgresql.dbapi as adbc
        from adbc_driver_postgresql import StatementOptions

        with adbc.connect(_adbc_uri(engine.url.render_as_string(hide_password=False))) as conn, \
                conn.cursor() as cursor:
            cursor.adbc_statement.set_options(
                **{StatementOptions.BATCH_SIZE_HINT_BYTES.value: str(ADBC_BATCH_BYTES)})
            cursor.execute(query)
            return cursor.fetch_arrow_table()
    with engine.connect() as connection:
        frame = pd.read_sql_query(text(query), connection)
    return pa.Table.from_pandas(frame, preserve_index=False)


def read_query(engine: Engine, query: str) -> pd.DataFrame:
    """Rows of ``query`` as a frame (strings Arrow-backed, as CSV files are read)."""
    if engine.dialect.name != "postgresql":
        with engine.connect() as connection:
            return pd.read_sql_query(text(query), connection)
    return read_arrow(engine, query).to_pandas()


def _reader(engine: Engine, query: str, *, label: str) -> pd.DataFrame:
    try:
        return read_query(engine, query)
    except (SQLAlchemyError, OSError, RuntimeError) as error:
        first = str(getattr(error, "orig", error)).strip().splitlines()[0]
        raise DataContractError(f"{label}: cannot be read: {first}") from None
    except Exception as error:  # ADBC's errors do not share a base with SQLAlchemy's
        if type(error).__module__.startswith("adbc_driver"):
            first = str(error).strip().splitlines()[0]
            raise DataContractError(f"{label}: cannot be read: {first}") from None
        raise


def read_database(url: str, *, tables: Path | str | None = None) -> ValidationResult:
    """Read and validate the contract tables of the database at ``url``.

    ``tables`` is a YAML mapping onto an existing schema (see the module's
    docstring). As with a directory, one raw table is in memory at a time.
    """
    origin = str(tables) if tables is not None else _masked(url)
    mapping = read_table_map(tables) if tables is not None else None
    engine = database_engine(url)
    try:
        try:
            sources = find_sources(engine, mapping)
            queries = {name: source_query(engine, source, origin=origin)
                       for name, source in sources.items()}
        except SQLAlchemyError as error:
            first = str(getattr(error, "orig", error)).strip().splitlines()[0]
            raise DataContractError(f"{_masked(url)}: cannot be read: {first}") from None
        if "customers" not in sources:
            raise DataContractError(f"{origin}: missing required table 'customers' (no table "
                                    "of that name; map one with --tables)")
        raw = {name: partial(_reader, engine, query, label=sources[name].label())
               for name, query in queries.items()}
        result = require_history(validate_tables(
            raw, sources={name: source.label() for name, source in sources.items()}))
        changes = read_status_log(engine, sources.get("orders"))
        if changes is None:
            return result
        return replace(result, dataset=replace(result.dataset, order_status_changes=changes))
    finally:
        engine.dispose()


#: the columns of the order status log, as `features.dataset.statuses_at` reads them
STATUS_LOG_COLUMNS = ("order_id", "customer_id", "status", "from_status", "changed_at",
                      "change_id")


def read_status_log(engine: Engine, orders: TableSource | None) -> pd.DataFrame | None:
    """The database's log of order status changes, when its orders are churnlens's own.

    Features as of T then see each order's status at T (`features.history.History.at`).
    A mapped orders table (``--tables``) has no log: its statuses are as read.
    """
    if orders is None or orders.is_query or orders.relation != "orders" or orders.columns:
        return None
    found = inspect(engine)
    if not found.has_table("order_status_changes"):
        return None
    logged = {column["name"] for column in found.get_columns("order_status_changes")}
    picks = ", ".join(column if column in logged else f"NULL AS {column}"
                      for column in STATUS_LOG_COLUMNS)
    log = _reader(engine, f"SELECT {picks} FROM order_status_changes",
                  label="order_status_changes")
    out = pd.DataFrame({
        "order_id": log["order_id"].astype(str).to_numpy(dtype=object),
        "customer_id": log["customer_id"].astype(str).to_numpy(dtype=object),
        "status": log["status"].astype(str).to_numpy(dtype=object),
        "from_status": log["from_status"].astype(object).where(log["from_status"].notna(),
                                                                None).to_numpy(dtype=object),
        "changed_at": pd.to_datetime(log["changed_at"]).astype("datetime64[ns]"),
        "change_id": pd.to_numeric(log["change_id"]).astype("int64"),
    })
    return out


def _masked(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)
