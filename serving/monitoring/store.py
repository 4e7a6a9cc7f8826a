"""The latest monitoring figures, kept in the outbox database for `churnlens serve` to export.

`churnlens monitor` runs on a schedule in its own process; the API server is
another process that may run on another machine. Both already share the
outbox database, so the monitor writes its gauges there (one table,
``monitoring_gauges``, replaced whole by each run) and the server's
``/metrics`` reads them at scrape time (`serving.monitoring.prometheus`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import Column, DateTime, Float, MetaData, String, Table, delete, select
from sqlalchemy.engine import Engine

TABLE = "monitoring_gauges"


def _table(metadata: MetaData) -> Table:
    return Table(
        TABLE, metadata,
        Column("metric", String(64), primary_key=True),
        Column("model_version", String(64), primary_key=True),
        Column("value", Float, nullable=False),
        Column("as_of", DateTime, nullable=False),
        Column("measured_at", DateTime, nullable=False),
    )


def save_gauges(engine: Engine, gauges: Mapping[tuple[str, str], float], *,
                as_of: datetime, measured_at: datetime, schema: str | None = None) -> int:
    """Replace the stored gauges with this run's ((metric, model version) → value)."""
    metadata = MetaData(schema=schema)
    table = _table(metadata)
    metadata.create_all(engine, checkfirst=True)
    rows = [{"metric": metric, "model_version": version, "value": float(value),
             "as_of": as_of, "measured_at": measured_at}
            for (metric, version), value in gauges.items()]
    with engine.begin() as connection:
        connection.execute(delete(table))
        if rows:
            connection.execute(table.insert(), rows)
    return len(rows)


def load_gauges(engine: Engine, *, schema: str | None = None) -> list[dict[str, object]]:
    """The stored gauges (empty when no monitoring run has written any yet)."""
    from sqlalchemy import inspect

    if not inspect(engine).has_table(TABLE, schema=schema):
        return []
    table = _table(MetaData(schema=schema))
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(
            select(table).order_by(table.c.metric, table.c.model_version))]
