"""The live demo's example: a customer whose return visibly sets outreach going.

`churnlens demo` prints an ingest that sends a customer's latest order back as
returned. For the printed promise ("the score moves, and the rescoring writes
the action that now matches") to hold, the customer is chosen by scoring every
customer as the live server will (as of the end of today, the serving rules,
explanations on, since rules select on reasons) twice: as they are, and with
their latest completed order returned. Chosen: the one whose return changes
their risk tier (into ``high`` first, then the largest rise in probability)
and makes a rule recommend an action where none did before, so the action is
new to the outbox and the customer is not in that rule's control group.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import pandas as pd

from features.dataset import Dataset
from serving.live.fresh import live_as_of
from serving.schemas import ScoreRecord
from serving.scorer import Scorer


@dataclass(frozen=True)
class LiveExample:
    """A customer's latest completed order, and their score before and after its return."""

    #: the order as the ingestion route takes it (``status`` is set by the caller)
    order: dict[str, Any]
    before: ScoreRecord
    after: ScoreRecord

    @property
    def customer_id(self) -> str:
        return str(self.order["customer_id"])

    @property
    def fires(self) -> bool:
        """The return changes the tier and makes a rule recommend an action it did not."""
        return (self.before.recommended_action is None
                and self.after.recommended_action is not None
                and self.after.risk_tier != self.before.risk_tier)


def latest_completed_orders(dataset: Dataset, *, now: datetime) -> pd.DataFrame:
    """Each customer's latest completed order placed before ``now`` (ingestion refuses rows
    ahead of the server's clock)."""
    orders = dataset.orders
    if orders is None:
        return pd.DataFrame(columns=["order_id", "customer_id"])
    done = orders[(orders["status"] == "completed") & (orders["ordered_at"] < pd.Timestamp(now))]
    return done.sort_values(["ordered_at", "order_id"]).groupby("customer_id").tail(1)


def pick_live_example(dataset: Dataset, scorer: Scorer, *, now: datetime) -> LiveExample | None:
    """The customer whose return shows live outreach best (see the module's docstring).

    Falls back to a return that makes a rule fire without a tier change, then to the
    largest rise in probability; None when nobody has a completed order.
    """
    latest = latest_completed_orders(dataset, now=now)
    if latest.empty:
        return None
    as_of = live_as_of(now)
    ids = latest["customer_id"].astype(str).tolist()
    assert dataset.orders is not None
    returned = dataset.orders.copy()
    # every candidate's return at once: features are per customer, so each customer's
    # "after" is their own return alone
    returned.loc[latest.index, "status"] = "returned"
    before = {r.customer_id: r for r in scorer.score_dataset(dataset, as_of=as_of,
                                                             customer_ids=ids)}
    after = {r.customer_id: r for r in scorer.score_dataset(
        replace(dataset, orders=returned, order_status_changes=None), as_of=as_of,
        customer_ids=ids)}
    examples = [LiveExample(_ingestable(row), before[c], after[c])
                for c, row in zip(ids, latest.to_dict("records"), strict=True)
                if c in before and c in after
                and before[c].churn_probability is not None
                and after[c].churn_probability is not None]
    if not examples:
        return None

    def rank(example: LiveExample) -> tuple[bool, bool, bool, float, str]:
        rise = float(example.after.churn_probability or 0.0) - float(
            example.before.churn_probability or 0.0)
        new_action = (example.before.recommended_action is None
                      and example.after.recommended_action is not None)
        return (example.fires, new_action, example.after.risk_tier == "high", rise,
                example.customer_id)

    return max(examples, key=rank)


def _ingestable(row: dict[Any, Any]) -> dict[str, Any]:
    order: dict[str, Any] = {
        "order_id": str(row["order_id"]), "customer_id": str(row["customer_id"]),
        "ordered_at": pd.Timestamp(row["ordered_at"]).isoformat(),
        "amount": float(row["amount"]), "discount": float(row["discount"])}
    if pd.notna(row.get("items")):
        order["items"] = float(row["items"])
    return order
