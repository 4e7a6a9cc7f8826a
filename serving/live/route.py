"""The live half of ``GET /v1/customers/{id}/score``: errors as HTTP answers, work off the loop."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from fastapi import HTTPException, status
from fastapi.concurrency import run_in_threadpool

from serving.ingest.store import DatabaseUnavailableError
from serving.live.fresh import LiveScores
from serving.schemas import ScoreRecord

if TYPE_CHECKING:
    from serving.model_holder import ServingState


async def score_live(live: LiveScores, state: ServingState, customer_id: str, *, explain: bool,
                     top_k: int, as_of: datetime | None) -> ScoreRecord:
    """Score by id on the database of record; 404 unknown, 503 when the database is down."""
    try:
        record = await run_in_threadpool(live.score, state, customer_id,
                                         explain="all" if explain else "none", top_k=top_k,
                                         as_of=as_of)
    except DatabaseUnavailableError as error:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"the database is unavailable: {error}",
                            headers={"Retry-After": "5"}) from None
    if record is None:
        moment = "now" if as_of is None else as_of.isoformat()
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"unknown customer_id {customer_id!r}: no customer with history "
                            f"before {moment} in the database")
    return record
