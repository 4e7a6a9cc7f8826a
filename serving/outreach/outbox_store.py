"""The outbox's database: its two tables, the engine, and the layout check.

`OutboxStore` is what `serving.outreach.outbox.Outbox` stands on: the tables of
scores and actions (created on first use, no I/O at construction), an engine
tuned per database (SQLite: WAL and ``BEGIN IMMEDIATE`` so read-then-write
transactions never fail on a lock upgrade; PostgreSQL: pre-ping), and the
refusal of an outbox an earlier churnlens created. Score history and actions
build on it in `serving.outreach.score_history` and `serving.outreach.actions`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool

from features.contract import MAX_ID_LENGTH
from serving.redact import masked_url

_CHUNK = 500


class OutboxSchemaError(RuntimeError):
    """The outbox database holds tables of an older layout this version cannot write."""


def utcnow() -> datetime:
    """Naive UTC now, the form every outbox timestamp takes."""
    return datetime.now(UTC).replace(tzinfo=None)


def _tables(metadata: MetaData) -> tuple[Table, Table]:
    scores = Table(
        "scores", metadata,
        Column("customer_id", String(MAX_ID_LENGTH), primary_key=True),
        Column("model_version", String(64), primary_key=True),
        Column("as_of", DateTime, primary_key=True),
        Column("churn_probability", Float),
        Column("risk_tier", String(16), nullable=False),
        Column("clv", Float),  # null when the model has no revenue to learn from
        Column("value_segment", String(8)),
        Column("value_at_risk", Float),
        Column("reasons", JSON, nullable=False),
        Column("recommended_action", String(32)),
        Column("scored_at", DateTime, nullable=False),
        Column("lifecycle_stage", String(16)),
        Index("ix_scores_as_of", "as_of"),
    )
    actions = Table(
        "actions", metadata,
        Column("id", String(40), primary_key=True),
        Column("customer_id", String(MAX_ID_LENGTH), nullable=False),
        Column("rule", String(64), nullable=False),
        Column("action", String(32), nullable=False),
        Column("channel", Text, nullable=False),
        Column("payload", JSON, nullable=False),
        Column("why", JSON, nullable=False),
        Column("period", Integer, nullable=False),
        Column("cooldown_days", Integer, nullable=False),
        Column("as_of", DateTime, nullable=False),
        Column("model_version", String(64), nullable=False),
        Column("status", String(16), nullable=False),
        Column("attempts", Integer, nullable=False, default=0),
        # when pending: the next attempt is due; when delivering: the claim's lease ends
        Column("next_attempt_at", DateTime, nullable=False),
        Column("claim_token", String(40)),
        Column("last_error", Text),
        Column("last_status_code", Integer),
        Column("webhook_id", String(40), nullable=False),
        Column("created_at", DateTime, nullable=False),
        Column("updated_at", DateTime, nullable=False),
        Column("delivered_at", DateTime),
        Column("acknowledged_at", DateTime),
        # treated: delivered to its channel; control: held out to measure the effect
        Column("assignment", String(8), nullable=False, default="treated"),
        UniqueConstraint("customer_id", "rule", "period", name="uq_actions_customer_rule_period"),
        Index("ix_actions_due", "status", "next_attempt_at"),
        Index("ix_actions_customer", "customer_id", "created_at"),
    )
    return scores, actions


class OutboxStore:
    """The outbox's tables in a SQL database (any SQLAlchemy URL).

    Construction does no I/O; the engine and the tables are created on first use.
    ``schema`` places the tables in a PostgreSQL schema (tests use one per run).
    """

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        self.url = url
        self.schema = schema
        self._engine: Engine | None = None
        #: an outbox created before scores could have a null CLV (events-only models)
        self._clv_required = False
        self._lock = threading.Lock()
        metadata = MetaData(schema=schema)
        self.scores, self.actions = _tables(metadata)
        self._metadata = metadata

    def __repr__(self) -> str:
        return f"Outbox({masked_url(self.url)!r})"

    # -- connection -------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The engine, created (with the tables) on first use."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    engine = _make_engine(self.url)
                    try:
                        self._metadata.create_all(engine, checkfirst=True)
                    except DBAPIError:
                        # another process created them between the check and the CREATE
                        self._metadata.create_all(engine, checkfirst=True)
                    self._check_layout(engine)
                    self._engine = engine
        return self._engine

    def _check_layout(self, engine: Engine) -> None:
        """Refuse an outbox from before score history and control groups, saying what to do."""
        found = inspect(engine)
        self._clv_required = any(c["name"] == "clv" and not c["nullable"]
                                 for c in found.get_columns("scores", schema=self.schema))
        keys = found.get_pk_constraint("scores", schema=self.schema)["constrained_columns"]
        columns = {c["name"] for c in found.get_columns("actions", schema=self.schema)}
        if "as_of" not in keys or "assignment" not in columns:
            engine.dispose()
            raise OutboxSchemaError(
                f"the outbox at {engine.url.render_as_string(hide_password=True)} was created "
                "by an earlier churnlens (one score per customer, no control groups); point "
                "CHURNLENS_OUTBOX_URL at a new database (or drop its scores and actions tables)"
            )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        """Release the connection pool."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def drop_tables(self) -> None:
        """Drop both tables (tests and ``churnlens outreach`` maintenance)."""
        self._metadata.drop_all(self.engine, checkfirst=True)


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        in_memory = url in ("sqlite://", "sqlite:///:memory:")
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            **({"poolclass": StaticPool} if in_memory else {}),
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # SQLAlchemy emits BEGIN itself (below): IMMEDIATE takes the write lock up
            # front, so a read-then-write transaction never fails on lock upgrade.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


def chunked(items: list[Any], size: int = _CHUNK) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
