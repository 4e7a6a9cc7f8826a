"""Fill a churnlens database from a validated dataset: ``churnlens load``.

Rows go first to a temporary staging table (``COPY … FROM STDIN`` on
PostgreSQL, ``executemany`` on SQLite), then into the contract tables with
``INSERT … ON CONFLICT DO NOTHING`` on each table's key, all in one
transaction. A second load of the same files therefore adds nothing, and a
failed load leaves the database as it was. Customers with new rows are
stamped in ``customer_changes`` so a running server scores them afresh by id and
rescores them for outreach. A first load (into an empty database) is history
arriving in bulk, not behaviour as it happens: its customers are marked
rescored in ``rescore_claims``, so a server starting on it does not rescore the
whole base for outreach (``churnlens score --outreach`` acts on a base).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    DateTime,
    MetaData,
    Select,
    String,
    Table,
    and_,
    exists,
    false,
    func,
    inspect,
    literal,
    or_,
    select,
    text,
    true,
)

from features.contract import ValidationResult
from features.database import (
    BOOKKEEPING_COLUMNS,
    KEY_COLUMN,
    MUTABLE_COLUMNS,
    ContractSchema,
    add_missing,
    contract_schema,
    database_engine,
    keyed_rows,
    reflect_schema,
    upsert,
)
from features.dataset import Dataset

#: rows per COPY block / executemany batch (bounded memory for large tables)
_BATCH = 250_000
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S"


class LoadError(ValueError):
    """The database cannot take the dataset as it is; the message names the table."""


@dataclass
class LoadReport:
    """What a load read, used, rejected and added, per table."""

    validation: ValidationResult
    added: dict[str, int] = field(default_factory=dict)
    #: stored rows a changed file row updated (an order's new status, a subscription's end)
    updated: dict[str, int] = field(default_factory=dict)

    def already_present(self, table: str) -> int:
        """Rows that were stored already and changed nothing."""
        return (self.validation.rows_used.get(table, 0) - self.added.get(table, 0)
                - self.updated.get(table, 0))


def attribute_kinds(customers: pd.DataFrame) -> dict[str, str]:
    """Each static attribute column as ``number`` or ``text``, as the contract typed it."""
    kinds = {}
    for column in customers.columns:
        if column in ("customer_id", "signup_at"):
            continue
        numeric = pd.api.types.is_numeric_dtype(customers[column].dtype)
        kinds[str(column)] = "number" if numeric and not pd.api.types.is_bool_dtype(
            customers[column].dtype) else "text"
    return kinds


def table_rows(dataset: Dataset, name: str, *, now: datetime) -> pd.DataFrame | None:
    """The rows of one contract table as its database table holds them (keys included)."""
    frame = dataset.table(name)
    if frame is None:
        return None
    rows = keyed_rows(name, frame)
    if "updated_at" in BOOKKEEPING_COLUMNS.get(name, ()):
        rows["updated_at"] = pd.Timestamp(now)
    return rows


def _arrow(rows: pd.DataFrame) -> pa.Table:
    """Rows as Arrow, timestamps in microseconds (what both databases store)."""
    table = pa.Table.from_pandas(rows, preserve_index=False)
    columns = [column.cast(pa.timestamp("us")) if pa.types.is_timestamp(column.type) else column
               for column in table.columns]
    return pa.table(columns, names=table.column_names)


def _csv_blocks(table: pa.Table) -> Iterator[bytes]:
    """CSV for ``COPY … (FORMAT csv)``: strings quoted, NULL as an unquoted empty cell."""
    options = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
    for batch in table.to_batches(max_chunksize=_BATCH):
        buffer = io.BytesIO()
        pa_csv.write_csv(batch, buffer, write_options=options)
        yield buffer.getvalue()


def _sqlite_rows(table: pa.Table) -> Iterator[list[tuple]]:
    """Batches of row tuples, timestamps as SQLAlchemy's SQLite text (``… HH:MM:SS.ffffff``)."""
    import pyarrow.compute as pc

    for batch in table.to_batches(max_chunksize=_BATCH):
        columns = []
        for column in batch.columns:
            if pa.types.is_timestamp(column.type):
                column = pc.strftime(column, format=_SQLITE_TIME)
            columns.append(column.to_pylist())
        yield list(zip(*columns, strict=True))


def _copy(connection: Connection, table: Table, rows: pd.DataFrame) -> None:
    """Bulk-write ``rows`` into ``table``: COPY on PostgreSQL, executemany elsewhere."""
    arrow = _arrow(rows)
    names = ", ".join(f'"{name}"' for name in rows.columns)
    if connection.dialect.name == "postgresql":
        driver = connection.connection.driver_connection
        assert driver is not None, "an open connection has its driver's connection"
        cursor = driver.cursor()
        with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN (FORMAT csv)') as copy:
            for block in _csv_blocks(arrow):
                copy.write(block)
    else:
        marks = ", ".join("?" for _ in rows.columns)
        statement = f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})'
        for batch in _sqlite_rows(arrow):
            connection.exec_driver_sql(statement, batch)


def _stage(connection: Connection, target: Table, rows: pd.DataFrame) -> Table:
    """A temporary table shaped like ``rows`` (the target's types), filled with them."""
    stage = Table(f"churnlens_stage_{target.name}", MetaData(),
                  *[Column(name, target.c[name].type) for name in rows.columns],
                  prefixes=["TEMPORARY"])
    stage.drop(connection, checkfirst=True)
    stage.create(connection)
    _copy(connection, stage, rows)
    return stage


def _differs(target: Table, stage: Table, name: str) -> ColumnElement[bool]:
    """A staged row changes its stored row: a mutable column differs (an ``ended_at``
    left empty keeps the stored end, as an ingest does)."""
    moved = [target.c[c].is_distinct_from(stage.c[c]) for c in MUTABLE_COLUMNS[name]
             if c != "ended_at" and c in stage.c]
    if "ended_at" in MUTABLE_COLUMNS[name] and "ended_at" in stage.c:
        moved.append(and_(stage.c.ended_at.is_not(None),
                          target.c.ended_at.is_distinct_from(stage.c.ended_at)))
    return or_(*moved) if moved else false()


def _stamp(connection: Connection, schema: ContractSchema, customers: Select, *,
           now: datetime) -> None:
    """Stamp ``customers`` (a SELECT of customer ids) as changed ``now``."""
    # WHERE true: SQLite needs one to tell INSERT … SELECT from its ON CONFLICT clause
    changed = select(customers.subquery().c.customer_id, literal(now, DateTime)).where(
        true()).distinct()
    stamp = upsert(connection, schema.customer_changes).from_select(
        ["customer_id", "changed_at"], changed)
    connection.execute(stamp.on_conflict_do_update(
        index_elements=["customer_id"], set_={"changed_at": stamp.excluded.changed_at}))


def _mark_rescored(connection: Connection, schema: ContractSchema) -> None:
    """Every stamped customer's change as rescored already (a first load: see the module)."""
    changes, claims = schema.customer_changes, schema.rescore_claims
    connection.execute(claims.insert().from_select(
        ["customer_id", "claimed_stamp", "done_stamp", "claimed_by"],
        select(changes.c.customer_id, changes.c.changed_at, changes.c.changed_at,
               literal("churnlens load", String)).where(true())))


def _insert_new(connection: Connection, schema: ContractSchema, name: str,
                rows: pd.DataFrame, *, now: datetime) -> tuple[int, int]:
    """Stage ``rows``, stamp the customers they change, update changed rows, insert new ones;
    (rows added, rows updated).

    A row whose key is stored already updates the stored row when one of its
    mutable columns differs (an order completed → returned; a subscription that
    ended), and an order's new status is logged in ``order_status_changes``, as
    an ingest would. An empty table (a first load, or --replace) takes the rows
    straight, with no staging and with its secondary indexes built after the
    copy, when its keys are unique (the contract rejects repeated order and
    customer ids; a given ``event_id`` may still repeat, and is then staged).
    """
    target = schema.table(name)
    key = KEY_COLUMN[name]
    empty = not connection.execute(select(exists().select_from(target))).scalar_one()
    if empty and rows[key].is_unique:
        # secondary indexes built once after the copy (a sort) rather than row by row
        for index in target.indexes:
            index.drop(connection)
        _copy(connection, target, rows)
        for index in target.indexes:
            index.create(connection)
        _stamp(connection, schema, select(target.c.customer_id), now=now)
        return len(rows), 0
    stage = _stage(connection, target, rows)
    same_key = target.c[key] == stage.c[key]
    updated = 0
    if name == "customers":
        _stamp(connection, schema, select(stage.c.customer_id).where(~exists().where(same_key)),
               now=now)
    else:
        differs = _differs(target, stage, name)
        _stamp(connection, schema, select(stage.c.customer_id).where(
            or_(~exists().where(same_key), exists().where(same_key, differs))), now=now)
        if name == "orders":
            connection.execute(schema.order_status_changes.insert().from_select(
                ["order_id", "customer_id", "status", "from_status", "changed_at"],
                select(stage.c.order_id, stage.c.customer_id, stage.c.status, target.c.status,
                       literal(now, DateTime)).where(same_key, target.c.status != stage.c.status)))
        moved: dict[str, Any] = {c: stage.c[c] for c in MUTABLE_COLUMNS[name]
                                 if c in stage.c and c != "ended_at"}
        if "ended_at" in MUTABLE_COLUMNS[name] and "ended_at" in stage.c:
            moved["ended_at"] = func.coalesce(stage.c.ended_at, target.c.ended_at)
        if moved:
            if "updated_at" in target.c:
                moved["updated_at"] = literal(now, DateTime)
            updated = connection.execute(
                target.update().where(same_key, differs).values(moved),
                execution_options={"preserve_rowcount": True}).rowcount
    columns = list(rows.columns)
    insert = upsert(connection, target).from_select(
        columns, select(*[stage.c[c] for c in columns]).where(true()))
    added = connection.execute(insert.on_conflict_do_nothing(index_elements=[key]),
                               execution_options={"preserve_rowcount": True}).rowcount
    stage.drop(connection)
    return int(added), int(updated)


def _check_existing(connection: Connection, schema: ContractSchema) -> None:
    """Tables already there must be churnlens tables; new tables and columns are added."""
    found = inspect(connection)
    for table in schema.metadata.sorted_tables:
        key = KEY_COLUMN.get(table.name)
        if key is None or not found.has_table(table.name):
            continue
        if key not in {column["name"] for column in found.get_columns(table.name)}:
            raise LoadError(f"{table.name}: the existing table has no {key} column, so it was "
                            "not made by `churnlens load`; load into another database or "
                            "schema, or pass --replace to drop it")
    add_missing(connection, schema)


def load_dataset(validation: ValidationResult, url: str, *, now: datetime,
                 replace: bool = False) -> LoadReport:
    """Write a validated dataset into the database at ``url``; one transaction.

    ``now`` (naive UTC) stamps ``updated_at`` and ``customer_changes``. With
    ``replace`` the churnlens tables are dropped first, so the database holds
    exactly this dataset afterwards.
    """
    dataset = validation.dataset
    schema = contract_schema(attributes=attribute_kinds(dataset.customers))
    engine = database_engine(url)
    report = LoadReport(validation)
    try:
        with engine.begin() as connection:
            if replace:
                reflect_schema(connection).metadata.drop_all(connection, checkfirst=True)
            else:
                _check_existing(connection, schema)
            schema.metadata.create_all(connection, checkfirst=True)
            first = not connection.execute(
                select(exists().select_from(schema.customer_changes))).scalar_one()
            for name in ("customers", "orders", "events", "subscriptions"):
                rows = table_rows(dataset, name, now=now)
                if rows is not None:
                    report.added[name], report.updated[name] = _insert_new(
                        connection, schema, name, rows, now=now)
            if first:
                _mark_rescored(connection, schema)
        with engine.begin() as connection:
            # fresh planner statistics: after a bulk load the tables' are empty or stale,
            # and the by-id reads would be planned for tables of a few rows
            for table in schema.metadata.sorted_tables:
                connection.execute(text(f'ANALYZE "{table.name}"'))
    finally:
        engine.dispose()
    return report
