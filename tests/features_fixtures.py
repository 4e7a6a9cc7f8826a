"""A tiny hand-made dataset whose feature and label values are worked out by hand.

As of 2024-07-01 (T):

- A: signed up 2024-01-01; completed orders 2024-01-11 (100, discount 10, 2 items),
  2024-03-11 (50, 1 item), 2024-06-11 (60, 3 items); a return on 2024-05-01; a
  completed order after T (2024-07-05, 80). Logins on 2024-06-20 (twice) and
  2024-06-25, a page view with value 2.5 on 2024-04-01.
- B: signed up 2024-06-01, one completed order 2024-06-21 (40).
- C: signed up 2024-02-01, only returns (2024-03-01, 2024-04-01).
- D: no sign-up date, one login 2024-06-30 23:00 and nothing else.
- E: signs up after T (2024-08-01) and orders after T: not known at T.
- F: basic 2023-01-01..2023-06-01 (19), then pro 2023-06-01..2024-03-01 (49): ended.
- G: pro 2024-01-01..2024-05-01 (49), then basic from 2024-05-01 (19) ending
  2024-09-01, after T, so still active as far as T can tell.
- H: basic from 2024-02-01 (19), never ended.
"""

from __future__ import annotations

import pandas as pd

from features.contract import validate_tables
from features.dataset import Dataset

AS_OF = pd.Timestamp("2024-07-01")


def tiny_tables() -> dict[str, pd.DataFrame]:
    customers = pd.DataFrame({
        "customer_id": list("ABCDEFGH"),
        "signup_at": ["2024-01-01", "2024-06-01", "2024-02-01", "", "2024-08-01",
                      "2023-01-01", "2024-01-01", "2024-02-01"],
        "region": ["north", "south", "north", "east", "west", "south", "north", "east"],
        "age": ["30", "41", "25", "", "52", "38", "47", "29"],
    })
    orders = pd.DataFrame({
        "order_id": [f"o{i}" for i in range(1, 10)],
        "customer_id": ["A", "A", "A", "A", "A", "B", "C", "C", "E"],
        "ordered_at": ["2024-01-11", "2024-03-11", "2024-05-01", "2024-06-11", "2024-07-05",
                       "2024-06-21", "2024-03-01", "2024-04-01", "2024-08-02"],
        "amount": ["100", "50", "30", "60", "80", "40", "20", "25", "15"],
        "status": ["completed", "completed", "returned", "completed", "completed",
                   "completed", "returned", "returned", "completed"],
        "discount": ["10", "0", "0", "0", "0", "0", "0", "0", "0"],
        "items": ["2", "1", "1", "3", "1", "1", "1", "1", "1"],
    })
    events = pd.DataFrame({
        "customer_id": ["A", "A", "A", "A", "D"],
        "occurred_at": ["2024-06-20T09:00:00", "2024-06-20T10:00:00", "2024-06-25T12:00:00",
                        "2024-04-01T08:00:00", "2024-06-30T23:00:00"],
        "event_type": ["login", "login", "login", "page_view", "login"],
        "value": ["", "", "", "2.5", ""],
    })
    subscriptions = pd.DataFrame({
        "customer_id": ["F", "F", "G", "G", "H"],
        "started_at": ["2023-01-01", "2023-06-01", "2024-01-01", "2024-05-01", "2024-02-01"],
        "ended_at": ["2023-06-01", "2024-03-01", "2024-05-01", "2024-09-01", ""],
        "plan": ["basic", "pro", "pro", "basic", "basic"],
        "mrr": ["19", "49", "49", "19", "19"],
    })
    return {"customers": customers, "orders": orders, "events": events,
            "subscriptions": subscriptions}


def tiny_dataset(**drop: bool) -> Dataset:
    """The tiny dataset, validated like a file would be; ``orders=True`` etc. drops a table."""
    tables = {name: frame for name, frame in tiny_tables().items() if not drop.get(name)}
    result = validate_tables(tables)
    assert result.rejects.empty, result.rejects
    return result.dataset
