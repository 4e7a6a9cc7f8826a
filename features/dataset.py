"""The in-memory dataset every stage works on: four validated tables.

A `Dataset` is what `features.contract.read_dataset` returns after validation:
ids are strings, timestamps are timezone-naive UTC, optional columns are
present with their defaults. Code downstream trusts these types.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

ORDER_STATUSES = ("completed", "returned", "cancelled", "unclaimed")

#: table name -> (required columns, optional columns with their defaults)
TABLE_COLUMNS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "customers": (("customer_id",), {"signup_at": pd.NaT}),
    "orders": (
        ("order_id", "customer_id", "ordered_at", "amount"),
        {"status": "completed", "discount": 0.0, "items": float("nan")},
    ),
    "events": (("customer_id", "occurred_at", "event_type"), {"value": float("nan")}),
    "subscriptions": (
        ("customer_id", "started_at"),
        {"ended_at": pd.NaT, "plan": "default", "mrr": float("nan")},
    ),
}

#: the timestamp column of each activity table (the one `as_of` cuts on)
TIME_COLUMN = {"orders": "ordered_at", "events": "occurred_at", "subscriptions": "started_at"}
ACTIVITY_TABLES = ("orders", "events", "subscriptions")


@dataclass(frozen=True)
class Dataset:
    """Customers and their history.

    ``customers`` always exists; at least one of ``orders``, ``events`` and
    ``subscriptions`` does. Static attributes are the extra columns of
    ``customers``.
    """

    customers: pd.DataFrame
    orders: pd.DataFrame | None = None
    events: pd.DataFrame | None = None
    subscriptions: pd.DataFrame | None = None
    #: a database source's log of order status changes (``order_id``, ``customer_id``,
    #: ``status``, ``from_status``, ``changed_at``, ``change_id``; see
    #: `features.database`): ``orders`` hold the status as read, and features as of an
    #: earlier moment give each order the status it had then (`statuses_at`)
    order_status_changes: pd.DataFrame | None = None

    def table(self, name: str) -> pd.DataFrame | None:
        return getattr(self, name)

    @property
    def present_tables(self) -> list[str]:
        return [name for name in ("customers", *ACTIVITY_TABLES) if self.table(name) is not None]

    @property
    def attribute_columns(self) -> list[str]:
        """Static customer attributes: every customers column but id and signup date."""
        return [c for c in self.customers.columns if c not in ("customer_id", "signup_at")]

    def latest_timestamp(self) -> pd.Timestamp | None:
        """The latest timestamp anywhere in the history (NaT-safe)."""
        stamps: list[pd.Timestamp] = []
        for name in ACTIVITY_TABLES:
            frame = self.table(name)
            if frame is None or frame.empty:
                continue
            stamps.append(frame[TIME_COLUMN[name]].max())
            if name == "subscriptions":
                stamps.append(frame["ended_at"].max())
        stamps = [s for s in stamps if pd.notna(s)]
        return max(stamps) if stamps else None

    def default_as_of(self) -> pd.Timestamp:
        """The default ``--as-of``: the day after the latest timestamp in the dataset."""
        latest = self.latest_timestamp()
        if latest is None:
            raise ValueError("the dataset has no dated rows, so there is no default as-of date")
        return latest.normalize() + pd.Timedelta(days=1)

    def for_customers(self, customer_ids: pd.Index | list[str]) -> Dataset:
        """The same dataset restricted to some customers (a partition)."""
        ids = pd.Index(customer_ids)
        tables: dict[str, Any] = {
            name: (frame[frame["customer_id"].isin(ids)] if frame is not None else None)
            for name, frame in (
                (n, self.table(n)) for n in ("customers", *ACTIVITY_TABLES,
                                             "order_status_changes")
            )
        }
        return replace(self, **tables)

    def known_at(self, as_of: pd.Timestamp) -> Dataset:
        """The dataset as it stood at ``as_of``: each order with the status it had then and
        the status log cut to the changes before it (the same dataset when nothing changed
        at or after ``as_of``).

        A model trained as of T labels its snapshots with what was known at T, so a
        return recorded after T changes neither its labels nor its features.
        """
        changes = self.order_status_changes
        if changes is None or self.orders is None or changes.empty:
            return self
        later = changes["changed_at"] >= pd.Timestamp(as_of)
        if not later.any():
            return self
        return replace(self, orders=statuses_at(self.orders, changes, as_of=as_of),
                       order_status_changes=changes[~later])

    def count_rows(self) -> dict[str, int]:
        return {name: len(frame) for name in self.present_tables
                if (frame := self.table(name)) is not None}


def statuses_at(orders: pd.DataFrame, changes: pd.DataFrame, *,
                as_of: pd.Timestamp) -> pd.DataFrame:
    """``orders`` with the status each had at ``as_of``: changes logged at or after it undone.

    ``changes`` are rows of ``order_status_changes`` (``order_id``, ``status``,
    ``from_status``, ``changed_at``, ``change_id``). An order with a change before
    ``as_of`` has the status its latest such change set; an order changed only
    later has the status its first change left (``from_status``; ``completed``,
    the contract's default, where a database older than that column logged none).
    """
    if changes.empty or orders.empty:
        return orders
    ordered = changes.sort_values(["order_id", "changed_at", "change_id"], kind="stable")
    before = ordered[ordered["changed_at"] < as_of]
    set_before = before.groupby("order_id", sort=False)["status"].last()
    first_later = ordered[~ordered["order_id"].isin(set_before.index)].groupby(
        "order_id", sort=False)["from_status"].first()
    status_then = pd.concat([set_before, first_later.fillna("completed")])
    then = orders["order_id"].map(status_then)
    out = orders.copy()
    out["status"] = then.where(then.notna(), orders["status"]).astype(orders["status"].dtype)
    return out
