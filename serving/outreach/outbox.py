"""The outbox: scores and the actions they trigger, written in one transaction, delivered later.

The transactional outbox pattern: scoring writes its actions to a table in the
same transaction as the scores, and a relay delivers them afterwards, so an
action is never lost between "scored" and "sent". Tables:

- ``scores``: every score written, one per (customer, model version, as_of),
  so that monitoring can later check each prediction against what happened;
  `Outbox.prune_scores` drops those older than the retention setting;
- ``actions``: one row per (customer, rule, cooldown window), with its delivery
  state ``pending → delivering → delivered`` (or ``failed`` on a 4xx, ``dead``
  after the last retry; ``acknowledged`` once the CRM confirms it handled it).
  A customer a rule holds out as control gets a row too, ``assignment =
  "control"`` and status ``held_out``: recorded so its outcome can be compared,
  never claimed by a relay.

SQLite (the default, a file) and PostgreSQL are supported through SQLAlchemy.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

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
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool

from features.contract import MAX_ID_LENGTH
from features.database import upsert
from serving.outreach.rules import TriggeredAction, to_naive_utc
from serving.redact import masked_url
from serving.schemas import ScoreRecord, utc_text

if TYPE_CHECKING:
    import pandas as pd

Status = Literal[
    "pending", "delivering", "delivered", "failed", "dead", "acknowledged", "held_out"
]
STATUSES: tuple[str, ...] = Status.__args__  # type: ignore[attr-defined]
RETRYABLE: tuple[str, ...] = ("failed", "dead")
_CHUNK = 500


class ActionNotFoundError(KeyError):
    """No action has this id."""

    def __str__(self) -> str:
        return f"no action with id {self.args[0]!r}"


class ActionStateError(ValueError):
    """The action is in a state that does not allow the requested change."""


class OutboxSchemaError(RuntimeError):
    """The outbox database holds tables of an older layout this version cannot write."""


@dataclass(frozen=True)
class ActionRow:
    """One action as stored in the outbox."""

    id: str
    customer_id: str
    rule: str
    action: str
    channel: str
    payload: dict[str, Any]
    why: list[str]
    period: int
    as_of: datetime
    model_version: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    last_status_code: int | None
    webhook_id: str
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    acknowledged_at: datetime | None
    assignment: str = "treated"

    def envelope(self) -> dict[str, Any]:
        """The webhook body, per Standard Webhooks: ``type``, ``timestamp``, ``data``.

        Built from stored fields only, so a redelivery sends the same bytes.
        """
        return {
            "type": f"outreach.{self.action}",
            "timestamp": utc_text(self.created_at),
            "data": {
                "action_id": self.id,
                "action": self.action,
                "rule": self.rule,
                "customer_id": self.customer_id,
                **self.payload,
            },
        }


@dataclass(frozen=True)
class RecordResult:
    """What :meth:`Outbox.record_scores` wrote."""

    scores: int
    actions_created: int
    actions_skipped: int


@dataclass(frozen=True)
class Outcome:
    """The result of one delivery attempt, as the relay reports it to the outbox."""

    action_id: str
    claim_token: str
    status: Literal["delivered", "pending", "failed", "dead"]
    error: str | None = None
    status_code: int | None = None
    next_attempt_at: datetime | None = None


def action_id_for(customer_id: str, rule: str, period: int) -> str:
    """The stable id of the action for (customer, rule, cooldown window); also its webhook-id."""
    digest = hashlib.sha256(f"{customer_id}\x1f{rule}\x1f{period}".encode()).hexdigest()
    return f"act_{digest[:26]}"


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


class Outbox:
    """Scores and triggered actions in a SQL database (any SQLAlchemy URL).

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

    # -- writing scores and actions ---------------------------------------------------

    def record_scores(
        self,
        records: Sequence[ScoreRecord],
        triggered: Iterable[TriggeredAction] = (),
    ) -> RecordResult:
        """Write scores and the actions they triggered in one transaction.

        Idempotent: an action already in the outbox for the same (customer, rule,
        cooldown window), or one for the same customer and rule less than
        ``cooldown_days`` away, is skipped, so re-scoring never duplicates outreach.
        """
        now = utcnow()
        candidates = list(triggered)
        first_action: dict[str, str] = {}
        for item in candidates:
            if not item.control:  # a held-out customer is recommended nothing by its rule
                first_action.setdefault(item.customer_id, item.action)
        score_rows = [_score_row(record, first_action, now) for record in records]
        engine = self.engine
        if self._clv_required and any(row["clv"] is None for row in score_rows):
            raise OutboxSchemaError(
                f"the outbox at {engine.url.render_as_string(hide_password=True)} was created "
                "by an earlier churnlens that needs a CLV in every score, and this model has "
                "none (no revenue to learn from); point CHURNLENS_OUTBOX_URL at a new database "
                "(or drop its scores and actions tables)")
        with engine.begin() as connection:
            for chunk in _chunks(score_rows):
                self._upsert_scores(connection, chunk)
            fresh = self._outside_cooldown(connection, candidates)
            rows = [_action_row(item, now) for item in fresh]
            for chunk in _chunks(rows):
                self._insert_actions(connection, chunk)
        return RecordResult(
            scores=len(score_rows),
            actions_created=len(rows),
            actions_skipped=len(candidates) - len(rows),
        )

    def _upsert_scores(self, connection: Any, rows: list[dict[str, Any]]) -> None:
        """One row per (customer, model version, as_of): a re-score of the same date replaces it."""
        table = self.scores
        keys = ("customer_id", "model_version", "as_of")
        if self.dialect in ("sqlite", "postgresql"):
            insert = upsert(connection, table)
            changed = {name: insert.excluded[name] for name in rows[0] if name not in keys}
            statement = insert.on_conflict_do_update(index_elements=list(keys), set_=changed)
            connection.execute(statement, rows)
            return
        for row in rows:  # portable fallback for other databases
            match = and_(*(table.c[key] == row[key] for key in keys))
            if connection.execute(select(func.count()).where(match)).scalar():
                connection.execute(table.update().where(match).values(**row))
            else:
                connection.execute(table.insert(), row)

    def prune_scores(self, *, older_than: datetime) -> int:
        """Delete scores with as_of before ``older_than`` (the retention setting); count them."""
        with self.engine.begin() as connection:
            result = connection.execute(
                delete(self.scores).where(self.scores.c.as_of < to_naive_utc(older_than))
            )
        return int(result.rowcount)

    def score_history(
        self, *, since: datetime | None = None, until: datetime | None = None,
    ) -> pd.DataFrame:
        """Every stored score (no reasons), oldest first: what monitoring checks against outcomes.

        ``since``/``until`` bound ``as_of`` (inclusive, exclusive).
        """
        import pandas as pd

        table = self.scores
        columns = ["customer_id", "model_version", "as_of", "churn_probability", "risk_tier",
                   "clv", "value_segment", "value_at_risk", "lifecycle_stage", "scored_at"]
        query = select(*(table.c[name] for name in columns)).order_by(
            table.c.as_of, table.c.model_version, table.c.customer_id)
        if since is not None:
            query = query.where(table.c.as_of >= to_naive_utc(since))
        if until is not None:
            query = query.where(table.c.as_of < to_naive_utc(until))
        with self.engine.connect() as connection:
            rows = [tuple(row) for row in connection.execute(query)]
        frame = pd.DataFrame(rows, columns=columns)
        frame["as_of"] = pd.to_datetime(frame["as_of"])
        frame["scored_at"] = pd.to_datetime(frame["scored_at"])
        for name in ("churn_probability", "clv", "value_at_risk"):
            frame[name] = pd.to_numeric(frame[name]).astype("float64")
        frame["model_version"] = frame["model_version"].astype(str)
        return frame

    def action_history(self, *, rule: str | None = None) -> pd.DataFrame:
        """Every action with its assignment (treated or control): what effect measurement reads."""
        import pandas as pd

        table = self.actions
        columns = ["id", "customer_id", "rule", "action", "period", "as_of", "model_version",
                   "status", "assignment"]
        query = select(*(table.c[name] for name in columns)).order_by(table.c.as_of, table.c.id)
        if rule is not None:
            query = query.where(table.c.rule == rule)
        with self.engine.connect() as connection:
            rows = [tuple(row) for row in connection.execute(query)]
        frame = pd.DataFrame(rows, columns=columns)
        frame["as_of"] = pd.to_datetime(frame["as_of"])
        frame["model_version"] = frame["model_version"].astype(str)
        return frame

    def _outside_cooldown(
        self, connection: Any, candidates: list[TriggeredAction]
    ) -> list[TriggeredAction]:
        """Candidates with no action for the same customer and rule within the cooldown."""
        if not candidates:
            return []
        table = self.actions
        previous: dict[tuple[str, str], list[datetime]] = {}
        customers = sorted({item.customer_id for item in candidates})
        for chunk in _chunks(customers):
            query = select(table.c.customer_id, table.c.rule, table.c.as_of).where(
                table.c.customer_id.in_(chunk)
            )
            for customer_id, rule, as_of in connection.execute(query):
                previous.setdefault((customer_id, rule), []).append(as_of)
        fresh: list[TriggeredAction] = []
        for item in candidates:
            window = timedelta(days=item.cooldown_days)
            earlier = previous.setdefault((item.customer_id, item.rule), [])
            if any(abs(item.as_of - moment) < window for moment in earlier):
                continue
            earlier.append(item.as_of)
            fresh.append(item)
        return fresh

    def _insert_actions(self, connection: Any, rows: list[dict[str, Any]]) -> None:
        if self.dialect in ("sqlite", "postgresql"):
            statement = upsert(connection, self.actions).on_conflict_do_nothing()
            connection.execute(statement, rows)
            return
        existing = set(connection.execute(
            select(self.actions.c.id).where(self.actions.c.id.in_([r["id"] for r in rows]))
        ).scalars())
        fresh = [row for row in rows if row["id"] not in existing]
        if fresh:
            connection.execute(self.actions.insert(), fresh)

    # -- reading ----------------------------------------------------------------------

    def list_actions(
        self,
        *,
        customer_id: str | None = None,
        status: str | None = None,
        rule: str | None = None,
        limit: int = 100,
    ) -> list[ActionRow]:
        """Actions, newest first, optionally for one customer, status or rule."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        table = self.actions
        query = select(table).order_by(table.c.created_at.desc(), table.c.id).limit(limit)
        if customer_id is not None:
            query = query.where(table.c.customer_id == customer_id)
        if status is not None:
            query = query.where(table.c.status == status)
        if rule is not None:
            query = query.where(table.c.rule == rule)
        with self.engine.connect() as connection:
            return [_to_action(row) for row in connection.execute(query).mappings()]

    def get_action(self, action_id: str) -> ActionRow:
        """One action by id; :class:`ActionNotFoundError` when there is none."""
        with self.engine.connect() as connection:
            row = connection.execute(
                select(self.actions).where(self.actions.c.id == action_id)
            ).mappings().first()
        if row is None:
            raise ActionNotFoundError(action_id)
        return _to_action(row)

    def dead_letters(self, *, limit: int = 100) -> list[ActionRow]:
        """Actions that will not be delivered without help: dead and failed ones."""
        table = self.actions
        query = (
            select(table).where(table.c.status.in_(RETRYABLE))
            .order_by(table.c.updated_at.desc()).limit(limit)
        )
        with self.engine.connect() as connection:
            return [_to_action(row) for row in connection.execute(query).mappings()]

    def status_counts(self) -> dict[str, int]:
        """Number of actions in each status (every status present, zeros included)."""
        table = self.actions
        query = select(table.c.status, func.count()).group_by(table.c.status)
        counts = dict.fromkeys(STATUSES, 0)
        with self.engine.connect() as connection:
            counts.update({status: int(n) for status, n in connection.execute(query)})
        return counts

    def action_summary(self) -> pd.DataFrame:
        """Actions counted by rule, action and status (for the retention report)."""
        import pandas as pd

        table = self.actions
        query = (
            select(table.c.rule, table.c.action, table.c.status, func.count().label("count"))
            .group_by(table.c.rule, table.c.action, table.c.status)
            .order_by(table.c.rule, table.c.action, table.c.status)
        )
        with self.engine.connect() as connection:
            rows = [tuple(row) for row in connection.execute(query)]
        frame = pd.DataFrame(rows, columns=["rule", "action", "status", "count"])
        return frame.astype({"count": "int64"})

    def latest_score(self, customer_id: str) -> dict[str, Any] | None:
        """The most recent stored score of a customer (any model version)."""
        table = self.scores
        query = (
            select(table).where(table.c.customer_id == customer_id)
            .order_by(table.c.as_of.desc(), table.c.scored_at.desc()).limit(1)
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return dict(row) if row is not None else None

    # -- operator and CRM changes -----------------------------------------------------

    def acknowledge(self, action_id: str) -> ActionRow:
        """The CRM has handled the action: mark it acknowledged and stop any further delivery."""
        now = utcnow()
        with self.engine.begin() as connection:
            result = connection.execute(
                update(self.actions).where(self.actions.c.id == action_id)
                .where(self.actions.c.status.not_in(("acknowledged", "held_out")))
                .values(status="acknowledged", acknowledged_at=now, updated_at=now,
                        claim_token=None)
            )
        if result.rowcount == 0:
            current = self.get_action(action_id)  # raises when it does not exist
            if current.status == "held_out":
                raise ActionStateError(
                    f"action {action_id} is held out as control: it was never sent, so there "
                    "is nothing to acknowledge"
                )
        return self.get_action(action_id)

    def retry(self, action_id: str) -> ActionRow:
        """Put a failed or dead action back in the queue with a fresh retry schedule."""
        now = utcnow()
        with self.engine.begin() as connection:
            result = connection.execute(
                update(self.actions).where(self.actions.c.id == action_id)
                .where(self.actions.c.status.in_(RETRYABLE))
                .values(status="pending", attempts=0, next_attempt_at=now, updated_at=now,
                        claim_token=None)
            )
        if result.rowcount == 0:
            current = self.get_action(action_id)
            raise ActionStateError(
                f"action {action_id} is {current.status}; only failed or dead actions "
                "can be retried"
            )
        return self.get_action(action_id)

    def retry_all_dead(self) -> int:
        """Put every dead letter (dead or failed, as `dead_letters` lists them) back in the queue.

        Returns how many were requeued.
        """
        now = utcnow()
        with self.engine.begin() as connection:
            result = connection.execute(
                update(self.actions).where(self.actions.c.status.in_(RETRYABLE))
                .values(status="pending", attempts=0, next_attempt_at=now, updated_at=now,
                        claim_token=None)
            )
        return int(result.rowcount)

    # -- relay side -------------------------------------------------------------------

    def claim_due(
        self,
        *,
        limit: int,
        lease_seconds: float,
        files_only: bool = False,
        now: datetime | None = None,
    ) -> tuple[str, list[ActionRow]]:
        """Reserve up to ``limit`` due actions for one relay; returns (claim token, actions).

        Due: pending with ``next_attempt_at`` passed, or delivering with an expired
        lease (its relay died). PostgreSQL claims with ``FOR UPDATE SKIP LOCKED`` so
        concurrent relays never take the same row; SQLite serialises writers, so the
        single UPDATE is atomic there. Each claim counts as an attempt, so an action
        that crashes its relay still reaches the dead-letter state.
        """
        now = now or utcnow()
        token = uuid.uuid4().hex
        table = self.actions
        due = and_(
            table.c.status.in_(("pending", "delivering")), table.c.next_attempt_at <= now
        )
        if files_only:
            due = and_(due, table.c.channel.like("file:%"))
        chosen = (
            select(table.c.id).where(due).order_by(table.c.next_attempt_at).limit(limit)
            .with_for_update(skip_locked=True)
        )
        with self.engine.begin() as connection:
            # Select, then update by id: PostgreSQL may re-run an `IN (SELECT … LIMIT …
            # FOR UPDATE SKIP LOCKED)` subquery per row and claim far more than `limit`.
            # The selected rows stay locked (SQLite: BEGIN IMMEDIATE) until commit.
            ids = list(connection.execute(chosen).scalars())
            if not ids:
                return token, []
            connection.execute(
                update(table).where(table.c.id.in_(ids))
                .values(
                    status="delivering",
                    claim_token=token,
                    attempts=table.c.attempts + 1,
                    next_attempt_at=now + timedelta(seconds=lease_seconds),
                    updated_at=now,
                ),
            )
            rows = connection.execute(
                select(table).where(table.c.claim_token == token)
                .where(table.c.status == "delivering")
            ).mappings().all()
        return token, [_to_action(row) for row in rows]

    def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        """Store the results of delivery attempts (one transaction for a batch)."""
        if not outcomes:
            return
        now = utcnow()
        table = self.actions
        delivered = [o for o in outcomes if o.status == "delivered"]
        others = [o for o in outcomes if o.status != "delivered"]
        with self.engine.begin() as connection:
            if delivered:
                # any relay's 2xx settles it, even if its lease had passed meanwhile
                connection.execute(
                    update(table).where(table.c.id == bindparam("b_id"))
                    .where(table.c.status == "delivering")
                    .values(status="delivered", delivered_at=now, updated_at=now,
                            claim_token=None, last_error=None,
                            last_status_code=bindparam("b_code")),
                    [{"b_id": o.action_id, "b_code": o.status_code} for o in delivered],
                )
            if others:
                connection.execute(
                    update(table).where(table.c.id == bindparam("b_id"))
                    .where(table.c.claim_token == bindparam("b_token"))
                    .where(table.c.status == "delivering")
                    .values(status=bindparam("b_status"), updated_at=now, claim_token=None,
                            last_error=bindparam("b_error"),
                            last_status_code=bindparam("b_code"),
                            next_attempt_at=bindparam("b_next")),
                    [
                        {"b_id": o.action_id, "b_token": o.claim_token, "b_status": o.status,
                         "b_error": (o.error or "")[:2000], "b_code": o.status_code,
                         "b_next": o.next_attempt_at or now}
                        for o in others
                    ],
                )

    def waiting_webhooks(self) -> int:
        """Pending webhook (non-file) actions; they wait when no signing secret is set."""
        table = self.actions
        query = select(func.count()).where(
            table.c.status == "pending", ~table.c.channel.like("file:%")
        )
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

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


def _score_row(record: ScoreRecord, first_action: dict[str, str], now: datetime) -> dict[str, Any]:
    return {
        "customer_id": record.customer_id,
        "model_version": record.model_version,
        "as_of": to_naive_utc(record.as_of),
        "churn_probability": record.churn_probability,
        "risk_tier": record.risk_tier,
        "clv": record.clv,
        "value_segment": record.value_segment,
        "value_at_risk": record.value_at_risk,
        "reasons": [reason.model_dump(mode="json") for reason in record.reasons],
        "recommended_action": record.recommended_action or first_action.get(record.customer_id),
        "scored_at": now,
        "lifecycle_stage": getattr(record, "lifecycle_stage", None),
    }


def _action_row(item: TriggeredAction, now: datetime) -> dict[str, Any]:
    action_id = action_id_for(item.customer_id, item.rule, item.period)
    return {
        "id": action_id,
        "customer_id": item.customer_id,
        "rule": item.rule,
        "action": item.action,
        "channel": item.channel,
        "payload": item.payload,
        "why": list(item.why),
        "period": item.period,
        "cooldown_days": item.cooldown_days,
        "as_of": item.as_of,
        "model_version": item.model_version,
        "status": "held_out" if item.control else "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "claim_token": None,
        "last_error": None,
        "last_status_code": None,
        "webhook_id": action_id,
        "created_at": now,
        "updated_at": now,
        "delivered_at": None,
        "acknowledged_at": None,
        "assignment": "control" if item.control else "treated",
    }


def _to_action(row: Any) -> ActionRow:
    return ActionRow(
        id=row["id"], customer_id=row["customer_id"], rule=row["rule"], action=row["action"],
        channel=row["channel"], payload=row["payload"] or {}, why=row["why"] or [],
        period=row["period"], as_of=row["as_of"], model_version=row["model_version"],
        status=row["status"], attempts=row["attempts"], next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"], last_status_code=row["last_status_code"],
        webhook_id=row["webhook_id"], created_at=row["created_at"],
        updated_at=row["updated_at"], delivered_at=row["delivered_at"],
        acknowledged_at=row["acknowledged_at"], assignment=row["assignment"],
    )


def _chunks(items: list[Any], size: int = _CHUNK) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


__all__ = [
    "STATUSES", "ActionNotFoundError", "ActionRow", "ActionStateError", "Outbox",
    "OutboxSchemaError", "Outcome",
    "RecordResult", "action_id_for", "utcnow",
]
