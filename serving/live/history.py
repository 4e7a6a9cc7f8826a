"""Read the history of some customers from the database of record.

The same queries as a whole read (`features.db_source`: contract columns only,
bookkeeping columns left out) restricted to the given customers by the
``customer_id`` indexes, then the data contract, as for any source. Read as of
an earlier moment, orders get the status they had then (``order_status_changes``
logged at or after it are undone): an order returned later was completed then.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, bindparam, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from features.contract import validate_tables
from features.database import CONTRACT_TABLES
from features.dataset import Dataset, statuses_at
from features.db_source import find_sources, source_query
from serving.ingest.store import DatabaseUnavailableError
from serving.redact import database_problem

#: customers per IN (...) list
_CHUNK = 1000
#: the order status log, read only for a moment in the past
_CHANGES = "order_status_changes"


class HistoryReader:
    """Reads customers' history by id; the queries are built once (they inspect the tables)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._queries: dict[str, Any] | None = None

    def _statements(self) -> dict[str, Any]:
        if self._queries is None:
            sources = find_sources(self.engine, None)
            queries = {name: f"SELECT * FROM ({source_query(self.engine, source, origin='live')})"
                             " AS churnlens_rows" for name, source in sources.items()}
            found = inspect(self.engine)
            if "orders" in sources and found.has_table("order_status_changes"):
                logged = {c["name"] for c in found.get_columns("order_status_changes")}
                before = "from_status" if "from_status" in logged else "NULL AS from_status"
                queries[_CHANGES] = ("SELECT order_id, status, " + before + ", changed_at, "
                                     "change_id FROM order_status_changes")
            self._queries = {name: text(f"{query} WHERE customer_id IN :ids").bindparams(
                bindparam("ids", expanding=True)) for name, query in queries.items()}
        return self._queries

    def read(self, customer_ids: Sequence[str], *,
             as_of: pd.Timestamp | None = None) -> Dataset | None:
        """The validated history of ``customer_ids`` (None when none of them is a customer);
        with ``as_of``, orders carry the status they had at that moment."""
        ids = sorted({str(c) for c in customer_ids})
        if not ids:
            return None
        try:
            statements = self._statements()
            wanted = [*CONTRACT_TABLES, *([_CHANGES] if as_of is not None else [])]
            with self.engine.connect() as connection:
                raw = {name: _read(connection, statements[name], ids)
                       for name in wanted if name in statements}
        except SQLAlchemyError as error:
            raise DatabaseUnavailableError(database_problem(error)) from error
        changes = raw.pop(_CHANGES, None)
        if "customers" not in raw or raw["customers"].empty:
            return None
        if not any(name in raw for name in CONTRACT_TABLES[1:]):
            return None
        if changes is not None and as_of is not None:
            changes["changed_at"] = pd.to_datetime(changes["changed_at"])
            raw["orders"] = statuses_at(raw["orders"], changes, as_of=as_of)
        return validate_tables(raw).dataset


def _read(connection: Connection, statement: Any, ids: list[str]) -> pd.DataFrame:
    parts = [pd.read_sql_query(statement, connection, params={"ids": ids[i : i + _CHUNK]})
             for i in range(0, len(ids), _CHUNK)]
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
