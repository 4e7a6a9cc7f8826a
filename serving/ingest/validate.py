"""The data contract applied to the rows of one ingestion request.

The same checks as a dataset directory (`features.contract.validate_table`):
ids, timestamps, numbers, statuses, duplicates in the request, history of a
customer the database does not know. Added for live data: a row stamped more
than a tolerance after the server's clock is refused, since the model would
otherwise see the future. Every problem is returned with the row's position
in the request and the field, as FastAPI names a body error.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from features.contract import DataContractError, validate_table
from features.dataset import TIME_COLUMN

#: the columns that date a row (``ended_at`` may lie ahead: a cancellation takes effect later)
DATING_COLUMNS = {"customers": ("signup_at",), **{t: (c,) for t, c in TIME_COLUMN.items()}}


def row_error(row: int | None, field: str | None, message: str, value: Any,
              kind: str = "data_contract") -> dict[str, Any]:
    """One problem in the shape of a FastAPI validation error: where, what, the input."""
    loc: list[Any] = ["body"]
    if row is not None:
        loc.append(row)
    if field is not None:
        loc.append(field)
    return {"loc": loc, "msg": message, "type": kind, "input": value}


def validate_rows(
    table: str, raw: pd.DataFrame, *, known_customers: pd.Index | None, now: datetime,
    future_tolerance: timedelta,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Typed rows ready to write and the problems found (write nothing unless it is empty).

    ``known_customers`` are the ids of the request's history rows that the
    database holds (None for the customers table itself).
    """
    try:
        used, rejects = validate_table(table, raw, source=table, first_row=0,
                                       known_customers=known_customers)
    except DataContractError as error:
        return raw.iloc[:0], [row_error(None, None, str(error), None)]
    rejected: list[Any] = list(rejects.itertuples(index=False))
    errors = [row_error(int(r.row), str(r.column), str(r.reason), r.value) for r in rejected]
    if errors:
        return used, errors
    latest = pd.Timestamp(now) + pd.Timedelta(future_tolerance)
    for column in DATING_COLUMNS[table]:
        ahead = used[column].notna() & (used[column] > latest)
        late = used.loc[ahead, column]
        for position, stamp in zip(late.index.tolist(), late.tolist(), strict=True):
            errors.append(row_error(
                int(position), column,
                f"{column} {stamp.isoformat()} is in the future (more than "
                f"{_duration(future_tolerance)} after the server's clock, "
                f"{pd.Timestamp(now).isoformat()} UTC); send rows once they have happened",
                stamp.isoformat(), kind="in_future"))
    return used, errors


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    return f"{seconds // 60} min" if seconds % 60 == 0 and seconds >= 60 else f"{seconds} s"
