"""The database of record: the four contract tables and their bookkeeping, defined once.

`churnlens load` creates these tables and fills them from files; the ingestion
routes write to the same tables; every batch command and the server read them
back through `features.db_source`. Keys make writes idempotent:

- ``customers``: ``customer_id``; any extra column is a static attribute
  (``Float`` when numeric, else ``Text``), added when the table is created;
- ``orders``: ``order_id``; ``updated_at`` is when the row was last written
  (a status change rewrites it, and appends to ``order_status_changes``);
- ``events``: ``event_key``: the row's optional ``event_id``, else a hash of
  its fields (`event_keys`), so a replayed row never duplicates;
- ``subscriptions``: ``subscription_key``: optional ``subscription_id``, else a
  hash of customer and start (`subscription_keys`); ``ended_at``, ``plan``
  and ``mrr`` may change later;
- ``customer_changes``: one row per customer with the time its history last
  changed, so a server can refresh only the customers changed since it looked;
- ``rescore_claims``: which change stamp of a customer a server worker claimed
  for background rescoring, and which it finished, so each change is rescored
  once across workers.

Timestamps are naive UTC (``timestamp without time zone``), as the data
contract reads them. Tables follow the connection's schema (on PostgreSQL the
``search_path``, e.g. ``?options=-csearch_path%3Dlive`` in the URL).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    Index,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.dialects import postgresql, sqlite

from features.contract import MAX_ID_LENGTH

#: the contract tables, in the order they are written (customers first)
CONTRACT_TABLES = ("customers", "orders", "events", "subscriptions")
#: tables that keep the bookkeeping of writes (never read as contract tables)
BOOKKEEPING_TABLES = ("order_status_changes", "customer_changes", "rescore_claims")
#: the key column of each contract table
KEY_COLUMN = {"customers": "customer_id", "orders": "order_id", "events": "event_key",
              "subscriptions": "subscription_key"}
#: columns of the contract tables that are bookkeeping, not contract data
BOOKKEEPING_COLUMNS = {"orders": ("updated_at",), "events": ("event_key", "event_id"),
                       "subscriptions": ("subscription_key", "subscription_id", "updated_at")}
#: the columns a later write of a known key may change, per history table (an ingest or a
#: reload of changed files); the key and the customer never change
MUTABLE_COLUMNS = {"orders": ("ordered_at", "amount", "status", "discount", "items"),
                   "events": (),
                   "subscriptions": ("ended_at", "mrr")}


def _id() -> String:
    return String(MAX_ID_LENGTH)


@dataclass(frozen=True)
class ContractSchema:
    """The SQLAlchemy tables of a churnlens database (one `MetaData`)."""

    metadata: MetaData
    customers: Table
    orders: Table
    events: Table
    subscriptions: Table
    order_status_changes: Table
    customer_changes: Table
    rescore_claims: Table

    def table(self, name: str) -> Table:
        return getattr(self, name)

    @property
    def attribute_columns(self) -> list[str]:
        """The customers table's static attribute columns."""
        return [c.name for c in self.customers.columns if c.name not in ("customer_id",
                                                                          "signup_at")]


def _history_table(metadata: MetaData, name: str, key: Column, time: str,
                   *columns: Column) -> Table:
    """A history table: its key, the customer, the row's time (both indexed), the rest."""
    return Table(
        name, metadata, key,
        Column("customer_id", _id(), nullable=False),
        Column(time, DateTime, nullable=False),
        *columns,
        Index(f"ix_{name}_customer_id", "customer_id"),
        Index(f"ix_{name}_{time}", time),
    )


def contract_schema(*, attributes: Mapping[str, str] | None = None) -> ContractSchema:
    """The tables, with ``attributes`` (name -> ``"number"`` or ``"text"``) on customers."""
    metadata = MetaData()
    extra = [Column(name, Float(53) if kind == "number" else Text)
             for name, kind in (attributes or {}).items()]
    customers = Table(
        "customers", metadata,
        Column("customer_id", _id(), primary_key=True),
        Column("signup_at", DateTime),
        *extra,
    )
    orders = _history_table(
        metadata, "orders", Column("order_id", _id(), primary_key=True), "ordered_at",
        Column("amount", Float(53), nullable=False),
        Column("status", String(16), nullable=False, server_default="completed"),
        Column("discount", Float(53)),
        Column("items", Float(53)),
        Column("updated_at", DateTime),
    )
    events = _history_table(
        metadata, "events", Column("event_key", String(MAX_ID_LENGTH), primary_key=True),
        "occurred_at",
        Column("event_id", _id()),
        Column("event_type", Text, nullable=False),
        Column("value", Float(53)),
    )
    subscriptions = _history_table(
        metadata, "subscriptions",
        Column("subscription_key", String(MAX_ID_LENGTH), primary_key=True), "started_at",
        Column("subscription_id", _id()),
        Column("ended_at", DateTime),
        Column("plan", Text),
        Column("mrr", Float(53)),
        Column("updated_at", DateTime),
    )
    order_status_changes = Table(
        "order_status_changes", metadata,
        Column("change_id", BigInteger().with_variant(sqlite.INTEGER(), "sqlite"),
               primary_key=True, autoincrement=True),
        Column("order_id", _id(), nullable=False),
        Column("customer_id", _id(), nullable=False),
        Column("status", String(16), nullable=False),
        Column("changed_at", DateTime, nullable=False),
        # the status before the change (None in databases older than this column)
        Column("from_status", String(16)),
        Index("ix_order_status_changes_order_id", "order_id"),
        Index("ix_order_status_changes_customer_id", "customer_id"),
    )
    customer_changes = Table(
        "customer_changes", metadata,
        Column("customer_id", _id(), primary_key=True),
        Column("changed_at", DateTime, nullable=False),
        Index("ix_customer_changes_changed_at", "changed_at"),
    )
    rescore_claims = Table(
        "rescore_claims", metadata,
        Column("customer_id", _id(), primary_key=True),
        # the customer_changes stamp claimed, and the last one whose rescoring finished
        Column("claimed_stamp", DateTime, nullable=False),
        Column("done_stamp", DateTime),
        Column("claimed_by", String(128), nullable=False),
        # a claim not finished by then is free again (its worker died)
        Column("lease_until", DateTime),
    )
    return ContractSchema(metadata, customers, orders, events, subscriptions,
                          order_status_changes, customer_changes, rescore_claims)


def add_missing(connection: Connection, schema: ContractSchema) -> None:
    """Create the tables ``schema`` has and the database lacks, and their missing columns.

    A database made by an older churnlens gains the newer bookkeeping this way
    (columns are added nullable; nothing is rewritten).
    """
    found = inspect(connection)
    for table in schema.metadata.sorted_tables:
        if not found.has_table(table.name):
            table.create(connection)
            continue
        present = {column["name"] for column in found.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                kind = column.type.compile(dialect=connection.dialect)
                connection.exec_driver_sql(
                    f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}')


def reflect_schema(bind: Engine | Connection) -> ContractSchema:
    """The schema of an existing database, with the attribute columns its customers table has."""
    found = inspect(bind)
    attributes: dict[str, str] = {}
    if found.has_table("customers"):
        for column in found.get_columns("customers"):
            if column["name"] in ("customer_id", "signup_at"):
                continue
            number = isinstance(column["type"], Float) or column["type"].python_type is float
            attributes[column["name"]] = "number" if number else "text"
    return contract_schema(attributes=attributes)


def database_engine(url: str, *, pre_ping: bool = True) -> Engine:
    """An engine for a churnlens database; SQLite waits for a writer rather than failing.

    ``pre_ping`` tests each pooled connection before use (a round trip), so work
    after a database restart finds a live connection; without it the first use
    of a dead connection fails and the pool is refilled.
    """
    engine = create_engine(url, pool_pre_ping=pre_ping)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # pragma: no cover - driver
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout = 30000")
            cursor.close()
    return engine


def upsert(bind: Engine | Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """``INSERT`` with ``on_conflict_do_nothing``/``on_conflict_do_update`` for the dialect."""
    dialect = bind.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"{dialect}: churnlens databases are SQLite or PostgreSQL")


#: the two hex digits of each byte value, for `_hex_keys`
_HEX_PAIRS = np.array([f"{byte:02x}".encode() for byte in range(256)], dtype="S2")


def _hex_keys(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``f"{first:016x}{second:016x}"`` for each pair of unsigned 64-bit hashes, without a
    Python call per row: each hash's big-endian bytes looked up as hex digit pairs."""
    pairs = np.column_stack([first, second]).astype(">u8").view(np.uint8)
    digits = np.ascontiguousarray(_HEX_PAIRS[pairs])  # (n, 16) two-digit pairs
    return digits.view("S32").ravel().astype(str).astype(object)


def _hash_keys(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """128-bit hex keys of the given columns, the n-th repeat of a row suffixed ``#n``.

    Two 64-bit hashes (pandas' SipHash, fixed keys) side by side; repeats of
    identical rows (two page views in the same second) stay distinct rows, and
    a replay of the same rows gets the same keys. Stored keys and idempotent
    replays depend on these exact bytes (tests/test_database_source.py pins some).
    """
    if frame.empty:
        return pd.Series([], dtype=object, index=frame.index)
    values = frame[columns]
    first = pd.util.hash_pandas_object(values, index=False, hash_key="churnlens-key-01")
    second = pd.util.hash_pandas_object(values, index=False, hash_key="churnlens-key-02")
    keys = pd.Series(_hex_keys(first.to_numpy(), second.to_numpy()), index=frame.index,
                     dtype=object)
    if keys.is_unique:  # the common case: no repeated row, nothing to suffix
        return keys
    repeat = keys.groupby(keys, sort=False).cumcount()
    return keys.where(repeat == 0, keys + "#" + repeat.astype(str))


def _given_or_hashed(frame: pd.DataFrame, id_column: str, columns: list[str]) -> pd.Series:
    """The given id (stripped) where a row has one, else the row's hash key.

    Repeats are counted over every row, given id or not, so a row's key does not
    depend on which other rows carry ids; when every row has one, no hash is used.
    """
    if id_column not in frame.columns:
        return _hash_keys(frame, columns)
    given = frame[id_column].astype(object)
    stripped = given.astype(str).str.strip()
    present = given.notna() & (stripped != "")
    if present.all():
        return stripped.astype(object)
    return stripped.where(present, _hash_keys(frame, columns)).astype(object)


def event_keys(events: pd.DataFrame) -> pd.Series:
    """The key of each validated event row: its ``event_id`` if given, else a field hash.

    The hash covers customer_id, occurred_at, event_type and value, so sending
    the same event twice writes it once.
    """
    return _given_or_hashed(events, "event_id",
                            ["customer_id", "occurred_at", "event_type", "value"])


def subscription_keys(subscriptions: pd.DataFrame) -> pd.Series:
    """The key of each validated subscription row: ``subscription_id``, else a hash of
    customer_id and started_at (``ended_at``, ``plan`` and ``mrr`` may change later)."""
    return _given_or_hashed(subscriptions, "subscription_id", ["customer_id", "started_at"])


def keyed_rows(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Validated rows of a contract table as its database table holds them: the contract's
    columns of that table with the key computed (events, subscriptions) and a given
    ``event_id``/``subscription_id`` kept; customers as they are."""
    if name == "customers":
        return frame
    if name == "orders":
        return frame[["order_id", "customer_id", "ordered_at", "amount", "status", "discount",
                      "items"]].copy()
    given_id, keys, columns = (
        ("event_id", event_keys, ["customer_id", "occurred_at", "event_type", "value"])
        if name == "events" else
        ("subscription_id", subscription_keys, ["customer_id", "started_at", "ended_at", "plan",
                                                "mrr"]))
    rows = frame[columns].copy()
    rows.insert(0, KEY_COLUMN[name], keys(frame).to_numpy())
    if given_id in frame.columns:
        rows.insert(1, given_id, frame[given_id].astype(object).to_numpy())
    return rows
