"""Read the history of some customers from the database of record.

The same queries as a whole read (`features.db_source`: contract columns only,
bookkeeping columns left out) restricted to the given customers by the
``customer_id`` indexes, then the data contract, as for any source.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.exc import SQLAlchemyError

from features.contract import validate_tables
from features.database import CONTRACT_TABLES
from features.dataset import Dataset
from features.db_source import find_sources, source_query
from serving.ingest.store import DatabaseUnavailableError
from serving.redact import database_problem

#: customers per IN (...) list
_CHUNK = 1000


class HistoryReader:
    """Reads customers' history by id; the queries are built once (they inspect the tables)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._queries: dict[str, Any] | None = None

    def _statements(self) -> dict[str, Any]:
        if self._queries is None:
            sources = find_sources(self.engine, None)
            self._queries = {
                name: text(f"SELECT * FROM ({source_query(self.engine, source, origin='live')}) "
                           "AS churnlens_rows WHERE customer_id IN :ids"
                           ).bindparams(bindparam("ids", expanding=True))
                for name, source in sources.items()}
        return self._queries

    def read(self, customer_ids: Sequence[str]) -> Dataset | None:
        """The validated history of ``customer_ids`` (None when none of them is a customer)."""
        ids = sorted({str(c) for c in customer_ids})
        if not ids:
            return None
        try:
            statements = self._statements()
            with self.engine.connect() as connection:
                raw = {name: _read(connection, statements[name], ids)
                       for name in CONTRACT_TABLES if name in statements}
        except SQLAlchemyError as error:
            raise DatabaseUnavailableError(database_problem(error)) from error
        if "customers" not in raw or raw["customers"].empty:
            return None
        if not any(name in raw for name in CONTRACT_TABLES[1:]):
            return None
        return validate_tables(raw).dataset


def _read(connection: Connection, statement: Any, ids: list[str]) -> pd.DataFrame:
    parts = [pd.read_sql_query(statement, connection, params={"ids": ids[i : i + _CHUNK]})
             for i in range(0, len(ids), _CHUNK)]
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
