"""The rows an ingestion request carries, and the keys that make a retry harmless.

Each route takes a JSON list of rows in the shape of one table of the
``POST /v1/scores`` body (`serving.api_models`); an event may carry its own
``event_id`` and a subscription its ``subscription_id``. Without one, the key
is a hash of the row's fields (`features.database.event_keys`), so sending the
same request twice stores each row once.
"""

from __future__ import annotations

from typing import Annotated, Any

import pandas as pd
from pydantic import BaseModel, Field

from features.dataset import TABLE_COLUMNS
from serving.api_models import CustomerIn, EventIn, Identifier, OrderIn, SubscriptionIn


class IngestEventIn(EventIn):
    event_id: Identifier | None = Field(
        default=None, description="The event's own id; without it the key is a hash of the "
        "event's fields, so a retried request never stores an event twice")


class IngestSubscriptionIn(SubscriptionIn):
    subscription_id: Identifier | None = Field(
        default=None, description="The subscription's own id; without it the key is a hash "
        "of customer, start and plan (a later ended_at or mrr updates the same subscription)")


#: the row model of each ingestion route
ROW_MODELS: dict[str, type[BaseModel]] = {
    "customers": CustomerIn, "orders": OrderIn, "events": IngestEventIn,
    "subscriptions": IngestSubscriptionIn,
}

CustomerRows = Annotated[list[CustomerIn], Field(min_length=1)]
OrderRows = Annotated[list[OrderIn], Field(min_length=1)]
EventRows = Annotated[list[IngestEventIn], Field(min_length=1)]
SubscriptionRows = Annotated[list[IngestSubscriptionIn], Field(min_length=1)]


def raw_table(table: str, rows: list[BaseModel]) -> pd.DataFrame:
    """Request rows as a raw table with the contract's columns (attributes flattened)."""
    required, optional = TABLE_COLUMNS[table]
    records: list[dict[str, Any]] = []
    for item in rows:
        record = item.model_dump(exclude={"attributes"})
        if table == "customers":
            record.update(item.attributes)  # type: ignore[attr-defined]
        records.append(record)
    columns = list(dict.fromkeys([*required, *optional, *(k for r in records for k in r)]))
    return pd.DataFrame(records, columns=columns)
