"""The ingestion resource: customers and their history written to the database of record.

Thin on purpose: the body is parsed here (422 naming the row and field), the
rows are validated and written in one transaction by `serving.ingest.store`,
and the answer says what changed. A database that cannot be reached answers
503 with the reason; nothing is acknowledged that was not committed.
"""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field

from serving.api_models import ErrorDetail
from serving.ingest.processes import IngestProcesses
from serving.ingest.rows import (
    CustomerRows,
    EventRows,
    OrderRows,
    SubscriptionRows,
    raw_table,
)
from serving.ingest.store import (
    DatabaseUnavailableError,
    IngestRejectedError,
    IngestResult,
    LiveStore,
)
from serving.routes.deps import AUTH_RESPONSES, SettingsDep, require_api_key
from serving.schemas import UtcDateTime
from serving.settings import Settings

router = APIRouter(prefix="/v1", tags=["ingest"], dependencies=[Depends(require_api_key)],
                   responses={
                       **AUTH_RESPONSES,
                       404: {"model": ErrorDetail,
                             "description": "The server has no database source (CHURNLENS_DATA "
                             "is a directory or unset)"},
                       400: {"model": ErrorDetail,
                             "description": "Body is not decodable (not UTF-8)"},
                       413: {"model": ErrorDetail, "description": "Request body too large"},
                       503: {"model": ErrorDetail,
                             "description": "The database cannot be reached; nothing was written"},
                   })


class IngestResponse(BaseModel):
    """What the request wrote; every row was committed when this answers."""

    table: str = Field(examples=["orders"])
    received: int = Field(description="Rows in the request")
    inserted: int = Field(description="Rows the database did not hold")
    updated: int = Field(description="Rows that changed a stored row (e.g. an order's status)")
    unchanged: int = Field(description="Rows already stored as sent (a retried request)")
    customers_changed: list[str] = Field(
        description="Customers whose history changed: their next score reflects it")
    committed_at: UtcDateTime


async def live_store(request: Request) -> LiveStore:
    """The database of record, or 404 when the server reads a directory (async: a sync
    dependency would cost each request a hop through the thread pool)."""
    store = getattr(request.app.state, "live_store", None)
    if store is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            "ingestion needs a database source: set CHURNLENS_DATA to a database "
                            "URL (sqlite:///live.db or postgresql+psycopg://…), filled with "
                            "`churnlens load`")
    return store


StoreDep = Annotated[LiveStore, Depends(live_store)]


def _ingest(request: Request, table: str, rows: list[BaseModel], store: LiveStore,
            settings: Settings) -> IngestResponse:
    if len(rows) > settings.ingest_max_rows:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{
            "loc": ["body"], "type": "too_long", "input": len(rows),
            "msg": f"too many rows in one request: {len(rows):,} > {settings.ingest_max_rows:,} "
                   "(CHURNLENS_INGEST_MAX_ROWS); split the batch"}])
    tolerance = timedelta(seconds=settings.ingest_future_tolerance_seconds)
    processes: IngestProcesses | None = getattr(request.app.state, "ingest_processes", None)
    try:
        if processes is not None:  # validated and written by an ingest process
            result = processes.ingest(table, raw_table(table, rows), now=store.clock(),
                                      future_tolerance=tolerance)
        else:
            result = store.ingest(table, raw_table(table, rows), future_tolerance=tolerance)
    except IngestRejectedError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, error.errors) from None
    except DatabaseUnavailableError as error:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"the database is unavailable, nothing was written: {error}",
                            headers={"Retry-After": "5"}) from None
    _after_commit(request, result)
    return IngestResponse(
        table=result.table, received=result.received, inserted=result.inserted,
        updated=result.updated, unchanged=result.unchanged,
        customers_changed=list(result.changed_customers), committed_at=result.committed_at,
    )


def _after_commit(request: Request, result: IngestResult) -> None:
    """Tell this process's live scoring that customers changed (others poll the stamps)."""
    listener = getattr(request.app.state, "on_ingest", None)
    if listener is not None and result.changed_customers:
        listener(result)


_DESCRIPTION = ("A JSON list of rows in the shape of the `{table}` list of `POST /v1/scores`. "
                "All or nothing, in one transaction: a row the data contract refuses answers "
                "422 naming the row and field, and nothing is written. Idempotent: {key}. Rows "
                "stamped more than CHURNLENS_INGEST_FUTURE_TOLERANCE_SECONDS after the server's "
                "clock are refused. Needs a key with the `ingest` scope.")


def _ingest_route(table: str, rows_type: object, *, summary: str, key: str) -> None:
    """``POST /v1/{table}``: its body a list of the table's rows, written by `_ingest`."""

    def ingest(request: Request, rows: Annotated[rows_type, Body()],  # type: ignore[valid-type]
               store: StoreDep, settings: SettingsDep) -> IngestResponse:
        return _ingest(request, table, rows, store, settings)

    router.post(f"/{table}", response_model=IngestResponse, summary=summary,
                name=f"ingest_{table}", description=_DESCRIPTION.format(table=table, key=key),
                )(ingest)


_ingest_route("customers", CustomerRows, summary="Add or update customers",
              key="a customer is keyed by `customer_id`; values sent replace stored ones, values "
              "left out are kept")
_ingest_route("orders", OrderRows, summary="Add orders or change their status",
              key="an order is keyed by `order_id`; a repeated order with a new `status` "
              "(completed → returned) is an update, recorded with its time")
_ingest_route("events", EventRows, summary="Add events",
              key="an event is keyed by its `event_id` when sent, else by a hash of its fields, "
              "so a retried request never duplicates it")
_ingest_route("subscriptions", SubscriptionRows, summary="Add subscriptions or end them",
              key="a subscription is keyed by `subscription_id` when sent, else by customer, "
              "start and plan; a later `ended_at` or `mrr` updates it")
