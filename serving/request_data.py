"""Histories sent in a request body, checked by the data contract like a dataset directory.

The API's by-history scoring receives the four tables as JSON lists
(`serving.api_models.ScoreRequest`). This module turns them into the raw tables
a dataset directory would hold, runs the contract over them, and reports every
refused row as a FastAPI-style validation error naming the table, row and
field, so the route only maps `RequestRowsError` to a 422 answer.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from features.contract import DataContractError, validate_tables
from features.dataset import TABLE_COLUMNS, Dataset
from serving.api_models import ScoreRequest

TABLES = ("customers", "orders", "events", "subscriptions")


class RequestRowsError(ValueError):
    """A request whose rows cannot be used; ``errors`` name each problem's location."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(str(error["msg"]) for error in errors))
        self.errors = errors


def request_tables(body: ScoreRequest) -> dict[str, pd.DataFrame]:
    """The request's lists as raw tables with the dataset's columns (docs/data.md)."""
    tables: dict[str, pd.DataFrame] = {}
    for name in TABLES:
        required, optional = TABLE_COLUMNS[name]
        rows: list[dict[str, Any]] = []
        for item in getattr(body, name):
            row = item.model_dump(exclude={"attributes"})
            if name == "customers":
                row.update(item.attributes)
            rows.append(row)
        columns = list(dict.fromkeys([*required, *optional,
                                      *(key for row in rows for key in row)]))
        tables[name] = pd.DataFrame(rows, columns=columns)
    return tables


def contract_errors(rejects: pd.DataFrame) -> list[dict[str, Any]]:
    """Rejected rows as FastAPI-style validation errors naming table, row and field."""
    rows: list[Any] = list(rejects.itertuples(index=False))
    return [
        {"loc": ["body", row.file, int(row.row), row.column], "msg": row.reason,
         "type": "data_contract", "input": row.value}
        for row in rows
    ]


def request_dataset(body: ScoreRequest, *, max_customers: int) -> Dataset:
    """The request's histories as a validated dataset; every refused row raises.

    Unlike a file, a request is all or nothing: one rejected row refuses it, so
    the client never gets scores computed from part of what it sent.
    """
    if len(body.customers) > max_customers:
        raise RequestRowsError([{
            "loc": ["body", "customers"], "type": "too_long", "input": len(body.customers),
            "msg": f"too many customers in one request: {len(body.customers):,} > "
                   f"{max_customers:,} (CHURNLENS_MAX_BATCH_SIZE); split the batch",
        }])
    if not (body.orders or body.events or body.subscriptions):
        raise RequestRowsError([{
            "loc": ["body"], "type": "missing", "input": None,
            "msg": "send at least one row of orders, events or subscriptions",
        }])
    try:
        validated = validate_tables(request_tables(body), first_rows=dict.fromkeys(TABLES, 0))
    except DataContractError as error:
        raise RequestRowsError([{"loc": ["body"], "msg": str(error), "type": "data_contract",
                                 "input": None}]) from None
    if not validated.rejects.empty:
        raise RequestRowsError(contract_errors(validated.rejects))
    return validated.dataset


def require_history(ids: list[str], known: pd.Index, *, as_of: pd.Timestamp) -> None:
    """Refuse the request if a listed customer has no signup or history before ``as_of``."""
    present = set(known)
    unknown = [i for i, customer_id in enumerate(ids) if customer_id not in present]
    if unknown:
        raise RequestRowsError([
            {"loc": ["body", "customers", i, "customer_id"], "type": "no_history",
             "input": ids[i], "msg": f"no signup or history before as_of {as_of.isoformat()}"}
            for i in unknown
        ])
