"""The outbox's actions: one per (customer, rule, cooldown window), and their delivery state.

`ActionQueue` keeps the ``actions`` table: which candidates are fresh (outside
the cooldown), the listings the API, the CLI and the report read, the changes an
operator or the CRM makes (acknowledge, retry), the relay's claims and their
outcomes, and the history effect measurement reads (treated and control).
A row's states: ``pending → delivering → delivered`` (or ``failed`` on a 4xx,
``dead`` after the last retry; ``acknowledged`` once the CRM confirms it), and
``held_out`` for a control customer, never claimed.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import and_, bindparam, func, select, update

from features.database import upsert
from serving.outreach.outbox_store import OutboxStore, chunked, utcnow
from serving.outreach.rules import TriggeredAction
from serving.schemas import utc_text

if TYPE_CHECKING:
    import pandas as pd


Status = Literal[
    "pending", "delivering", "delivered", "failed", "dead", "acknowledged", "held_out"
]
STATUSES: tuple[str, ...] = Status.__args__  # type: ignore[attr-defined]
RETRYABLE: tuple[str, ...] = ("failed", "dead")


class ActionNotFoundError(KeyError):
    """No action has this id."""

    def __str__(self) -> str:
        return f"no action with id {self.args[0]!r}"


class ActionStateError(ValueError):
    """The action is in a state that does not allow the requested change."""


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


class ActionQueue(OutboxStore):
    """The ``actions`` table: written with the scores that trigger them
    (`Outbox.record_scores`), claimed and settled by relays, changed by operators."""

    def _outside_cooldown(
        self, connection: Any, candidates: list[TriggeredAction]
    ) -> list[TriggeredAction]:
        """Candidates with no action for the same customer and rule within the cooldown."""
        if not candidates:
            return []
        table = self.actions
        previous: dict[tuple[str, str], list[datetime]] = {}
        customers = sorted({item.customer_id for item in candidates})
        for chunk in chunked(customers):
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


def action_row_of(item: TriggeredAction, now: datetime) -> dict[str, Any]:
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
