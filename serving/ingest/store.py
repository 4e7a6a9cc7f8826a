"""One ingestion request, one transaction: validate, upsert by key, stamp changed customers.

The tables are those of `features.database` (what ``churnlens load`` creates).
A request's rows are checked against the data contract inside the transaction
that writes them (history must name a customer the database holds), so either
every row is written or none is. Writes are upserts on each table's key, and
only rows that add or change something count:

- customers: by ``customer_id``; values sent replace stored ones, values left
  out (or null) keep them;
- orders: by ``order_id``; a new ``status`` (or amount, discount, items) is an
  update stamped ``updated_at`` and logged in ``order_status_changes``;
- events: by ``event_key`` (``event_id`` if sent, else a hash of the fields),
  never changed once written;
- subscriptions: by ``subscription_key`` (``subscription_id`` if sent, else a
  hash of customer, start and plan); ``ended_at`` and ``mrr`` may change.

Every customer whose history changed gets a new stamp in ``customer_changes``,
strictly later than its previous one (the stamp is the customer's version:
servers compare it to know whether their prepared features are stale).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    Engine,
    Select,
    Table,
    and_,
    any_,
    bindparam,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from features.database import (
    KEY_COLUMN,
    MUTABLE_COLUMNS,
    ContractSchema,
    add_missing,
    database_engine,
    keyed_rows,
    reflect_schema,
    upsert,
)
from serving.ingest.validate import row_error, validate_rows
from serving.redact import database_problem, masked_url

#: rows per IN (...) list and per executemany batch
_CHUNK = 500
#: how often a transaction that lost a deadlock or a lock wait is tried again
_ATTEMPTS = 4


class DatabaseUnavailableError(ConnectionError):
    """The database cannot be reached or refused the work; the message says why."""


class IngestRejectedError(ValueError):
    """Rows broke the data contract; nothing was written. ``errors`` name row and field."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} problem(s), first: {errors[0]['msg']}")
        self.errors = errors

    def __reduce__(self) -> tuple[type[IngestRejectedError], tuple[list[dict[str, Any]]]]:
        return type(self), (self.errors,)  # from an ingest process, errors and all


@dataclass(frozen=True)
class IngestResult:
    """What one request wrote: rows new, changed and already there, and whose history moved."""

    table: str
    received: int
    inserted: int
    updated: int
    unchanged: int
    #: the server's clock when the transaction began (the change stamp it wrote)
    committed_at: datetime
    changed_customers: tuple[str, ...] = ()


def utcnow() -> datetime:
    """Naive UTC now: the form every timestamp in the database takes."""
    return datetime.now(UTC).replace(tzinfo=None)


def _plain(value: Any) -> Any:
    """A value as the database driver takes it: Python scalars, missing as None."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _same(stored: Any, sent: Any) -> bool:
    if isinstance(stored, float) and isinstance(sent, float | int):
        return math.isclose(stored, float(sent), rel_tol=1e-12, abs_tol=0.0)
    return bool(stored == sent)


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _where_in(connection: Connection, column: Any, values: Sequence[Any]
              ) -> Iterator[ColumnElement[bool]]:
    """``column IN values`` as conditions, one statement each.

    On PostgreSQL one ``= ANY(array)``, whatever the count: the statement's text
    is the same for every request, so SQLAlchemy compiles it and the driver
    converts it once (an IN list's text differs with its length, and converting
    it again was ~8% of an ingest's CPU). Elsewhere IN lists of ``_CHUNK``.
    """
    if not values:
        return
    if connection.dialect.name == "postgresql":
        yield column == any_(bindparam(f"{column.name}_in", list(values),
                                       type_=postgresql.ARRAY(column.type)))
        return
    for chunk in _chunks(values):
        yield column.in_(chunk)


def _unnested(target: Table, columns: Sequence[str]) -> Any:
    """``unnest(:c1, :c2, …) AS sent(c1, c2, …)``: rows sent as one array per column
    (PostgreSQL), bound as ``{column}_values``."""
    return func.unnest(*[bindparam(f"{name}_values", type_=postgresql.ARRAY(target.c[name].type))
                         for name in columns]).table_valued(*columns).render_derived(name="sent")


def _retryable(error: DBAPIError) -> bool:
    """A deadlock, a serialization failure or a busy SQLite file: worth one more try."""
    code = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    if code in ("40P01", "40001", "55P03"):
        return True
    return "database is locked" in str(error.orig)


def _unavailable(error: DBAPIError) -> bool:
    """The connection failed (server down, network, restart), not the statement."""
    if error.connection_invalidated:
        return True
    code = getattr(error.orig, "sqlstate", None) or ""
    return isinstance(error, OperationalError) and (not code or code.startswith(("08", "57")))


class LiveStore:
    """The database of record as the API writes and reads it; one per process.

    Construction does no I/O: the engine and the table layout are taken on first use.
    ``clock`` gives naive UTC now (tests inject one).
    """

    def __init__(self, url: str, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.url = url
        self.clock = clock
        self._engine: Engine | None = None
        self._lookup_engine: Engine | None = None
        self._schema: ContractSchema | None = None
        self._lock = threading.Lock()
        #: the one-customer stamp lookup of a score by id, built once
        self._stamp_query: Select[Any] | None = None

    def __repr__(self) -> str:
        return f"LiveStore({masked_url(self.url)!r})"

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = database_engine(self.url)
        return self._engine

    @property
    def lookup_engine(self) -> Engine:
        """The engine of the one-row lookup every score by id makes (`stamps`): no pre-ping,
        so it costs one round trip, not two. After a database restart the first lookup on a
        dead connection fails (503) and the pool is refilled."""
        if self._lookup_engine is None:
            with self._lock:
                if self._lookup_engine is None:
                    self._lookup_engine = database_engine(self.url, pre_ping=False)
        return self._lookup_engine

    def schema(self) -> ContractSchema:
        """The tables as the database holds them (attribute columns included).

        On first use, bookkeeping a database made by an older churnlens lacks
        (tables, columns) is added, in a transaction of its own.
        """
        if self._schema is None:
            with self.engine.begin() as own:
                schema = reflect_schema(own)
                add_missing(own, schema)
            self._schema = schema
        return self._schema

    def close(self) -> None:
        for engine in (self._engine, self._lookup_engine):
            if engine is not None:
                engine.dispose()
        self._engine = self._lookup_engine = None

    # -- writing -----------------------------------------------------------------------

    def ingest(self, table: str, raw: pd.DataFrame, *,
               future_tolerance: timedelta = timedelta(minutes=5),
               now: datetime | None = None) -> IngestResult:
        """Validate ``raw`` (one table's request rows) and write it in one transaction.

        ``now`` is the server's clock for this request (default: ``clock()`` when the
        transaction begins); an ingest process is given the API process's.
        Raises `IngestRejectedError` (nothing written) or `DatabaseUnavailableError`.
        A transaction that loses a deadlock to a concurrent ingest is tried again.
        """
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                schema = self.schema()
                with self.engine.begin() as connection:
                    return self._ingest(connection, schema, table, raw, future_tolerance,
                                        now or self.clock())
            except DBAPIError as error:
                if _retryable(error) and attempt < _ATTEMPTS:
                    continue
                if _unavailable(error) or _retryable(error):
                    raise DatabaseUnavailableError(database_problem(error)) from error
                raise
            except SQLAlchemyError as error:
                raise DatabaseUnavailableError(database_problem(error)) from error
        raise AssertionError("unreachable")  # pragma: no cover

    def _ingest(self, connection: Connection, schema: ContractSchema, table: str,
                raw: pd.DataFrame, future_tolerance: timedelta, now: datetime) -> IngestResult:
        known = None
        if table != "customers":
            referenced = sorted({str(c).strip() for c in raw["customer_id"].dropna()})
            known = pd.Index(self._existing_customers(connection, schema, referenced))
        used, errors = validate_rows(table, raw, known_customers=known, now=now,
                                     future_tolerance=future_tolerance)
        if table == "customers" and not errors:
            errors = _unknown_attributes(used, schema)
        if errors:
            raise IngestRejectedError(errors)
        rows = _table_rows(table, used)
        if table == "customers":
            inserted, updated, changed = self._write_customers(connection, schema, rows)
        else:
            inserted, updated, changed = self._write_history(connection, schema, table, rows,
                                                             now=now)
        self._stamp(connection, schema, sorted(changed), now=now)
        return IngestResult(table=table, received=len(raw), inserted=inserted, updated=updated,
                            unchanged=len(raw) - inserted - updated,
                            changed_customers=tuple(sorted(changed)), committed_at=now)

    @staticmethod
    def _existing_customers(connection: Connection, schema: ContractSchema,
                            ids: Sequence[str]) -> list[str]:
        column = schema.customers.c.customer_id
        found: list[str] = []
        for condition in _where_in(connection, column, ids):
            found += connection.execute(select(column).where(condition)).scalars()
        return found

    @staticmethod
    def _stored(connection: Connection, target: Table, key: str,
                keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        stored: dict[str, dict[str, Any]] = {}
        for condition in _where_in(connection, target.c[key], keys):
            query = select(target).where(condition)
            if connection.dialect.name == "postgresql":
                query = query.with_for_update()  # the row's writers queue behind this one
            for row in connection.execute(query).mappings():
                stored[row[key]] = dict(row)
        return stored

    def _write_customers(self, connection: Connection, schema: ContractSchema,
                         rows: list[dict[str, Any]]) -> tuple[int, int, set[str]]:
        target = schema.customers
        stored = self._stored(connection, target, "customer_id", [r["customer_id"] for r in rows])
        inserted = updated = 0
        changed: set[str] = set()
        for row in rows:
            before = stored.get(row["customer_id"])
            given = {k: v for k, v in row.items() if v is not None}
            if before is None:
                inserted += 1
            elif all(_same(before.get(k), v) for k, v in given.items()):
                continue
            else:
                updated += 1
            statement = upsert(connection, target).values(**given)
            updates = {k: statement.excluded[k] for k in given if k != "customer_id"}
            statement = (statement.on_conflict_do_update(index_elements=["customer_id"],
                                                         set_=updates)
                         if updates else statement.on_conflict_do_nothing())
            connection.execute(statement)
            changed.add(row["customer_id"])
        return inserted, updated, changed

    def _write_history(self, connection: Connection, schema: ContractSchema, table: str,
                       rows: list[dict[str, Any]], *, now: datetime
                       ) -> tuple[int, int, set[str]]:
        target = schema.table(table)
        key = KEY_COLUMN[table]
        unique = list({row[key]: row for row in reversed(rows)}.values())[::-1]
        stored = self._stored(connection, target, key, [r[key] for r in unique])
        fresh = [row for row in unique if row[key] not in stored]
        inserted_keys = _insert_new(connection, target, key, fresh)
        changed = {row["customer_id"] for row in fresh if row[key] in inserted_keys}
        lost = [row[key] for row in fresh if row[key] not in inserted_keys]
        if lost:  # a concurrent request wrote them first: what we send is an update now
            stored.update(self._stored(connection, target, key, lost))
        updated = 0
        changes: list[dict[str, Any]] = []
        for row in unique:
            before = stored.get(row[key])
            if before is None or row[key] in inserted_keys:
                continue
            moved = {c: row[c] for c in MUTABLE_COLUMNS[table]
                     if c in row and not _same(before.get(c), row[c])
                     and not (c == "ended_at" and row[c] is None)}
            if not moved:
                continue
            updated += 1
            if "updated_at" in target.c:
                moved["updated_at"] = now
            connection.execute(target.update().where(target.c[key] == row[key]).values(**moved))
            changed.update({row["customer_id"], before["customer_id"]})
            if table == "orders" and "status" in moved:
                changes.append({"order_id": row[key], "customer_id": row["customer_id"],
                                "status": row["status"], "from_status": before["status"],
                                "changed_at": now})
        if changes:
            connection.execute(schema.order_status_changes.insert(), changes)
        return len(inserted_keys), updated, changed

    @staticmethod
    def _stamp(connection: Connection, schema: ContractSchema, customers: list[str], *,
               now: datetime) -> None:
        """A new stamp per changed customer, later than its last one even if clocks tie."""
        if not customers:
            return
        table = schema.customer_changes
        if connection.dialect.name == "postgresql":  # one statement, rows locked in id order
            sent = func.unnest(bindparam("customer_id_values", customers,
                                         type_=postgresql.ARRAY(table.c.customer_id.type))
                               ).table_valued("customer_id").render_derived(name="sent")
            stamped = postgresql.insert(table).from_select(
                ["customer_id", "changed_at"],
                select(sent.c.customer_id, bindparam("now", now, type_=table.c.changed_at.type)))
            connection.execute(stamped.on_conflict_do_update(
                index_elements=["customer_id"],
                set_={"changed_at": func.greatest(stamped.excluded.changed_at,
                                                  table.c.changed_at + text(
                                                      "interval '1 microsecond'"))}))
            return
        previous: dict[str, datetime] = {}
        for condition in _where_in(connection, table.c.customer_id, customers):
            query = select(table.c.customer_id, table.c.changed_at).where(condition)
            previous.update({c: t for c, t in connection.execute(query)})
        rows = []
        for customer_id in customers:
            last = previous.get(customer_id)
            stamp = now if last is None or now > last else last + timedelta(microseconds=1)
            rows.append({"customer_id": customer_id, "changed_at": stamp})
        for chunk in _chunks(rows):
            statement = upsert(connection, table)
            connection.execute(statement.on_conflict_do_update(
                index_elements=["customer_id"],
                set_={"changed_at": statement.excluded.changed_at}), list(chunk))

    # -- reading -----------------------------------------------------------------------

    def stamps(self, customer_ids: Iterable[str]) -> dict[str, datetime]:
        """Each customer's last change stamp (customers never changed are absent)."""
        ids = sorted(set(customer_ids))
        if not ids:
            return {}
        found: dict[str, datetime] = {}
        try:
            table = self.schema().customer_changes
            if len(ids) == 1:  # a score by id: one statement, built and compiled once
                query = self._stamp_query
                if query is None:
                    query = self._stamp_query = select(
                        table.c.customer_id, table.c.changed_at).where(
                        table.c.customer_id == bindparam("customer_id"))
                with self.lookup_engine.connect() as connection:
                    return {c: t for c, t in connection.execute(query, {"customer_id": ids[0]})}
            with self.engine.connect() as connection:
                for condition in _where_in(connection, table.c.customer_id, ids):
                    several = select(table.c.customer_id, table.c.changed_at).where(condition)
                    found.update({c: t for c, t in connection.execute(several)})
        except SQLAlchemyError as error:
            raise DatabaseUnavailableError(database_problem(error)) from error
        return found

    # -- claiming changes for background rescoring ---------------------------------------

    def claim_changes(self, since: datetime, *, worker: str, lease: timedelta,
                      limit: int) -> dict[str, datetime]:
        """Claim up to ``limit`` customers changed at or after ``since`` whose latest stamp no
        worker has rescored or holds; {customer: the stamp claimed}.

        One conditional upsert on ``rescore_claims``: a row is taken only while it is
        free (no lease, or one that ran out: its worker died) and behind the
        customer's stamp. On PostgreSQL two workers claiming the same customer queue
        on its row and the second then sees the first's lease, so each change is
        claimed once; on SQLite writers take turns. Customers in id order, so two
        workers lock rows in the same order.
        """
        now = self.clock()
        schema = self.schema()
        changes, claims = schema.customer_changes, schema.rescore_claims
        behind = or_(claims.c.done_stamp.is_(None), claims.c.done_stamp < changes.c.changed_at)
        free = or_(claims.c.lease_until.is_(None), claims.c.lease_until < now)
        candidates = (
            select(changes.c.customer_id, changes.c.changed_at, literal(worker),
                   literal(now + lease, DateTime))
            .where(changes.c.changed_at >= since,
                   ~exists().where(claims.c.customer_id == changes.c.customer_id,
                                   not_(and_(behind, free))))
            .order_by(changes.c.customer_id).limit(limit))
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self.engine.begin() as connection:
                    statement = upsert(connection, claims).from_select(
                        ["customer_id", "claimed_stamp", "claimed_by", "lease_until"],
                        candidates)
                    statement = statement.on_conflict_do_update(
                        index_elements=["customer_id"],
                        set_={"claimed_stamp": statement.excluded.claimed_stamp,
                              "claimed_by": statement.excluded.claimed_by,
                              "lease_until": statement.excluded.lease_until},
                        where=and_(or_(claims.c.done_stamp.is_(None),
                                       claims.c.done_stamp < statement.excluded.claimed_stamp),
                                   free))
                    claimed = connection.execute(statement.returning(
                        claims.c.customer_id, claims.c.claimed_stamp))
                    return dict(sorted((c, t) for c, t in claimed))
            except DBAPIError as error:
                if _retryable(error) and attempt < _ATTEMPTS:
                    continue
                raise DatabaseUnavailableError(database_problem(error)) from error
            except SQLAlchemyError as error:
                raise DatabaseUnavailableError(database_problem(error)) from error
        raise AssertionError("unreachable")  # pragma: no cover

    def finish_claims(self, claimed: dict[str, datetime], *, worker: str,
                      done: bool = True) -> None:
        """Release this worker's claims: rescored (``done``) or given back to be tried again."""
        if not claimed:
            return
        claims = self.schema().rescore_claims
        values: dict[str, Any] = {"lease_until": None}
        if done:
            values["done_stamp"] = claims.c.claimed_stamp
        try:
            with self.engine.begin() as connection:
                for condition in _where_in(connection, claims.c.customer_id, sorted(claimed)):
                    connection.execute(claims.update().where(
                        condition, claims.c.claimed_by == worker).values(values))
        except SQLAlchemyError as error:
            raise DatabaseUnavailableError(database_problem(error)) from error

    def latest_change(self) -> datetime | None:
        """The latest change stamp of any customer (None: nothing was ever written)."""
        try:
            table = self.schema().customer_changes
            with self.engine.connect() as connection:
                return connection.execute(select(func.max(table.c.changed_at))).scalar()
        except SQLAlchemyError as error:
            raise DatabaseUnavailableError(database_problem(error)) from error

    def changed_since(self, since: datetime | None) -> dict[str, datetime | None]:
        """Customers stamped at or after ``since`` (None: all), with their stamps."""
        try:
            table = self.schema().customer_changes
            with self.engine.connect() as connection:
                query = select(table.c.customer_id, table.c.changed_at)
                if since is not None:
                    query = query.where(table.c.changed_at >= since)
                return {c: t for c, t in connection.execute(query)}
        except SQLAlchemyError as error:
            raise DatabaseUnavailableError(database_problem(error)) from error


def _insert_new(connection: Connection, target: Table, key: str,
                rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert rows whose key the table does not hold; the keys inserted (a row a
    concurrent request wrote first is left alone and not among them).

    On PostgreSQL one statement whatever the count, each column sent as an array
    (``INSERT … SELECT FROM unnest(…)``); elsewhere multi-row inserts of ``_CHUNK``.
    """
    if not rows:
        return set()
    if connection.dialect.name == "postgresql":
        columns = list(rows[0])
        sent = _unnested(target, columns)
        statement = (postgresql.insert(target)
                     .from_select(columns, select(*[sent.c[name] for name in columns]))
                     .on_conflict_do_nothing(index_elements=[key]).returning(target.c[key]))
        arrays = {f"{name}_values": [row[name] for row in rows] for name in columns}
        return set(connection.execute(statement, arrays).scalars())
    inserted: set[str] = set()
    for chunk in _chunks(rows):
        statement = (upsert(connection, target).on_conflict_do_nothing(index_elements=[key])
                     .returning(target.c[key]))
        inserted.update(connection.execute(statement, list(chunk)).scalars())
    return inserted


def _table_rows(table: str, used: pd.DataFrame) -> list[dict[str, Any]]:
    """Validated rows as the database table holds them: keys computed, Python values."""
    frame = keyed_rows(table, used)
    columns = list(frame.columns)
    return [{c: _plain(v) for c, v in zip(columns, values, strict=True)}
            for values in frame.itertuples(index=False, name=None)]


def _unknown_attributes(used: pd.DataFrame, schema: ContractSchema) -> list[dict[str, Any]]:
    """Attributes the customers table has no column for (the model could not use them)."""
    known = set(schema.attribute_columns)
    errors = []
    for column in used.columns:
        if column in ("customer_id", "signup_at") or column in known:
            continue
        sent = used[column].notna()
        if not sent.any():
            continue
        row = int(np.flatnonzero(sent.to_numpy())[0])
        listed = ", ".join(sorted(known)) or "none"
        errors.append(row_error(row, "attributes", f"unknown attribute {column!r}: the "
                                f"customers table has no such column (its attributes: {listed})",
                                column))
    return errors
