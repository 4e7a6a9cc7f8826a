"""Every score the outbox keeps: one per (customer, model version, as_of), for monitoring.

`ScoreHistory` writes scores (a re-score of the same date replaces it), prunes
them by the retention setting, and reads them back: the whole history for
monitoring to check predictions against outcomes, the latest score of one
customer for the API.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, func, select

from features.database import upsert
from serving.outreach.outbox_store import OutboxStore
from serving.outreach.rules import to_naive_utc
from serving.schemas import ScoreRecord

if TYPE_CHECKING:
    import pandas as pd


class ScoreHistory(OutboxStore):
    """The ``scores`` table: written with the actions they trigger (`Outbox.record_scores`)."""

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


def score_row_of(record: ScoreRecord, first_action: dict[str, str],
                 now: datetime) -> dict[str, Any]:
    """The ``scores`` row of a record; its recommended action is its first triggered one."""
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
