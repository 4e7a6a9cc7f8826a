"""The scores resource: score a customer by id, or customers sent with their history."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Annotated

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.concurrency import run_in_threadpool

from features.contract import MAX_ID_LENGTH
from serving.api_models import ID_PATTERN, ErrorDetail, ScoreRequest, ScoreResponse, Timestamp
from serving.live.route import score_live
from serving.request_data import RequestRowsError, request_dataset, require_history
from serving.routes.deps import (
    AUTH_RESPONSES,
    MetricsDep,
    SettingsDep,
    StateDep,
    require_api_key,
)
from serving.schemas import MAX_TOP_K, ScoreRecord

router = APIRouter(prefix="/v1", tags=["scores"], dependencies=[Depends(require_api_key)],
                   responses=AUTH_RESPONSES)


@router.get(
    "/customers/{customer_id}/score", response_model=ScoreRecord,
    summary="Score one customer of the configured dataset",
    description="Reads the customer's history from CHURNLENS_DATA. From a directory: as of the "
    "dataset's default date (the day after its latest timestamp). From a database: as of now, "
    "reflecting every row committed before the request (`as_of` for an earlier moment).",
    responses={404: {"model": ErrorDetail, "description": "Unknown customer, or no dataset"},
               503: {"model": ErrorDetail, "description": "No model yet, or the database "
                     "cannot be reached"}},
)
async def score_customer(
    request: Request,
    customer_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN,
                                     examples=["c-1001"])],
    state: StateDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    explain: Annotated[bool, Query(description="Include the top reasons")] = True,
    top_k: Annotated[int | None, Query(ge=1, le=MAX_TOP_K, description="Number of reasons "
                                       "(default CHURNLENS_TOP_K)")] = None,
    as_of: Annotated[Timestamp | None, Query(description="Score as of this moment (only rows "
                                             "before it count); database sources only")] = None,
) -> ScoreRecord:
    live = getattr(request.app.state, "live_scores", None)
    if live is not None:
        fresh = await score_live(live, state, customer_id, explain=explain,
                                 top_k=top_k or settings.top_k, as_of=as_of)
        metrics.observe_scores([fresh])
        return fresh
    if as_of is not None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{
            "loc": ["query", "as_of"], "type": "unsupported", "input": as_of.isoformat(),
            "msg": "as_of needs a database source (CHURNLENS_DATA=sqlite:///… or "
                   "postgresql+psycopg://…); a directory is scored as of its default date"}])
    if state.prepared is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            "no dataset is configured for scoring by id (CHURNLENS_DATA); "
                            "POST /v1/scores with the customer's history instead")
    score = partial(state.score_by_id, customer_id, explain=explain,
                    top_k=top_k or settings.top_k)
    if state.scorer.outbox is None:
        # about a millisecond of CPU on a prepared row: cheaper on the event loop than a hop
        record = score()
    else:
        # writing to the outbox waits on the database: keep the event loop free meanwhile
        record = await run_in_threadpool(score)
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"unknown customer_id {customer_id!r}: no history before "
                            f"{state.as_of:%Y-%m-%d} in the configured dataset")
    metrics.observe_scores([record])
    return record


def _unprocessable(error: RequestRowsError) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, error.errors)


@router.post(
    "/scores", response_model=ScoreResponse,
    summary="Score customers sent with their history",
    description="Features are computed from the history in the body with exactly the code "
    "used in training, as of `as_of` (default: now, UTC). At most CHURNLENS_MAX_BATCH_SIZE "
    "customers per request; a larger batch answers 422, a body over CHURNLENS_MAX_BODY_BYTES "
    "answers 413.",
    responses={413: {"model": ErrorDetail, "description": "Request body too large"},
               400: {"model": ErrorDetail, "description": "Body is not decodable (not UTF-8)"}},
)
def score_customers(
    body: ScoreRequest, state: StateDep, settings: SettingsDep, metrics: MetricsDep
) -> ScoreResponse:
    as_of = pd.Timestamp(body.as_of or datetime.now(UTC).replace(tzinfo=None))
    ids = [customer.customer_id.strip() for customer in body.customers]
    try:
        dataset = request_dataset(body, max_customers=settings.max_batch_size)
        features = state.scorer.features(dataset, as_of=as_of)
        require_history(ids, features.index, as_of=as_of)
    except RequestRowsError as error:
        raise _unprocessable(error) from None
    records = state.scorer.score_features(features, as_of=as_of,
                                          explain="all" if body.explain else "none",
                                          top_k=body.top_k)
    by_id = {record.customer_id: record for record in records}
    ordered = [by_id[customer_id] for customer_id in ids]
    metrics.observe_scores(ordered)
    return ScoreResponse(model_version=state.version, as_of=as_of.to_pydatetime(),
                         scores=ordered)
