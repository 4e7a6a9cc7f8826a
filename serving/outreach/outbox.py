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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from serving.outreach.actions import (
    STATUSES,
    ActionNotFoundError,
    ActionQueue,
    ActionRow,
    ActionStateError,
    Outcome,
    action_id_for,
    action_row_of,
)
from serving.outreach.outbox_store import OutboxSchemaError, chunked, utcnow
from serving.outreach.rules import TriggeredAction
from serving.outreach.score_history import ScoreHistory, score_row_of
from serving.schemas import ScoreRecord


@dataclass(frozen=True)
class RecordResult:
    """What :meth:`Outbox.record_scores` wrote."""

    scores: int
    actions_created: int
    actions_skipped: int


class Outbox(ScoreHistory, ActionQueue):
    """Scores and triggered actions in a SQL database (any SQLAlchemy URL).

    Construction does no I/O; the engine and the tables are created on first use.
    ``schema`` places the tables in a PostgreSQL schema (tests use one per run).
    The tables and the engine are `OutboxStore`'s, the scores `ScoreHistory`'s,
    the actions and their delivery `ActionQueue`'s; here they are written together.
    """

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
        score_rows = [score_row_of(record, first_action, now) for record in records]
        engine = self.engine
        if self._clv_required and any(row["clv"] is None for row in score_rows):
            raise OutboxSchemaError(
                f"the outbox at {engine.url.render_as_string(hide_password=True)} was created "
                "by an earlier churnlens that needs a CLV in every score, and this model has "
                "none (no revenue to learn from); point CHURNLENS_OUTBOX_URL at a new database "
                "(or drop its scores and actions tables)")
        with engine.begin() as connection:
            for chunk in chunked(score_rows):
                self._upsert_scores(connection, chunk)
            fresh = self._outside_cooldown(connection, candidates)
            rows = [action_row_of(item, now) for item in fresh]
            for chunk in chunked(rows):
                self._insert_actions(connection, chunk)
        return RecordResult(
            scores=len(score_rows),
            actions_created=len(rows),
            actions_skipped=len(candidates) - len(rows),
        )


__all__ = [
    "STATUSES", "ActionNotFoundError", "ActionRow", "ActionStateError", "Outbox",
    "OutboxSchemaError", "Outcome",
    "RecordResult", "action_id_for", "utcnow",
]
