"""HTTP routes for outreach actions: what fired for a customer, and the CRM's answers.

The app factory mounts ``router`` under ``/v1`` behind API-key auth. Routes are
thin: they call the :class:`~serving.outreach.outbox.Outbox` the app holds
(``app.state.outbox`` or ``app.state.holder.outbox``), else one built from the
settings; tests override :func:`get_outbox`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from features.contract import MAX_ID_LENGTH
from serving.api_models import ID_PATTERN
from serving.outreach.outbox import (
    STATUSES,
    ActionNotFoundError,
    ActionRow,
    ActionStateError,
    Outbox,
)
from serving.schemas import UtcDateTime

router = APIRouter(tags=["outreach"])


class ActionOut(BaseModel):
    """A triggered retention action and where its delivery stands."""

    id: str = Field(description="Stable id; also the webhook-id of every delivery attempt")
    customer_id: str
    rule: str = Field(examples=["success-call"])
    action: str = Field(examples=["success_call"])
    channel: str = Field(description="Webhook URL or file: sink the action is delivered to")
    status: str = Field(description=" | ".join(STATUSES))
    attempts: int
    why: list[str] = Field(description="The top reasons behind the score that triggered it")
    payload: dict[str, Any]
    as_of: UtcDateTime
    model_version: str
    next_attempt_at: UtcDateTime | None = Field(
        description="When pending: the next attempt; when delivering: the lease end"
    )
    last_error: str | None
    last_status_code: int | None
    created_at: UtcDateTime
    delivered_at: UtcDateTime | None
    acknowledged_at: UtcDateTime | None
    assignment: Literal["treated", "control"] = Field(
        default="treated", description="control: held out to measure the effect, never sent"
    )

    @classmethod
    def of(cls, row: ActionRow) -> ActionOut:
        return cls(
            id=row.id, customer_id=row.customer_id, rule=row.rule, action=row.action,
            channel=row.channel, status=row.status, attempts=row.attempts, why=row.why,
            payload=row.payload, as_of=row.as_of, model_version=row.model_version,
            next_attempt_at=(
                row.next_attempt_at if row.status in ("pending", "delivering") else None
            ),
            last_error=row.last_error, last_status_code=row.last_status_code,
            created_at=row.created_at, delivered_at=row.delivered_at,
            acknowledged_at=row.acknowledged_at,
            assignment=row.assignment,  # type: ignore[arg-type]
        )


@lru_cache(maxsize=4)
def _outbox_for(url: str) -> Outbox:
    return Outbox(url)


def get_outbox(request: Request) -> Outbox:
    """The app's outbox; falls back to one from CHURNLENS_OUTBOX_URL."""
    state = request.app.state
    outbox = getattr(state, "outbox", None)
    if outbox is None:
        outbox = getattr(getattr(state, "holder", None), "outbox", None)
    if outbox is None:
        from serving.outreach.settings import load_outreach_settings

        outbox = _outbox_for(load_outreach_settings().outbox_url)
    return outbox


OutboxDep = Annotated[Outbox, Depends(get_outbox)]
ActionId = Annotated[str, Path(min_length=1, max_length=40, pattern=ID_PATTERN,
                               description="Action id")]


@router.get(
    "/customers/{customer_id}/actions", response_model=list[ActionOut],
    summary="Outreach actions triggered for a customer, newest first",
)
def customer_actions(
    customer_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)],
    outbox: OutboxDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ActionOut]:
    return [ActionOut.of(row) for row in outbox.list_actions(customer_id=customer_id, limit=limit)]


@router.get("/actions", response_model=list[ActionOut], summary="Outreach actions, newest first")
def list_actions(
    outbox: OutboxDep,
    status: Annotated[str | None, Query(pattern="^(" + "|".join(STATUSES) + ")$")] = None,
    customer_id: Annotated[str | None, Query(max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]
    = None,
    rule: Annotated[str | None, Query(max_length=64, pattern=ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ActionOut]:
    rows = outbox.list_actions(customer_id=customer_id, status=status, rule=rule, limit=limit)
    return [ActionOut.of(row) for row in rows]


@router.get("/actions/{action_id}", response_model=ActionOut, summary="One outreach action")
def get_action(action_id: ActionId, outbox: OutboxDep) -> ActionOut:
    try:
        return ActionOut.of(outbox.get_action(action_id))
    except ActionNotFoundError as error:
        raise HTTPException(status_code=404, detail=str(error)) from None


@router.post(
    "/actions/{action_id}/acknowledge", response_model=ActionOut,
    summary="The CRM has handled the action; stops any further delivery (idempotent)",
    responses={409: {"description": "The action is held out as control and was never sent"}},
)
def acknowledge_action(action_id: ActionId, outbox: OutboxDep) -> ActionOut:
    try:
        return ActionOut.of(outbox.acknowledge(action_id))
    except ActionNotFoundError as error:
        raise HTTPException(status_code=404, detail=str(error)) from None
    except ActionStateError as error:
        raise HTTPException(status_code=409, detail=str(error)) from None


@router.post(
    "/actions/{action_id}/retry", response_model=ActionOut,
    summary="Requeue a failed or dead action with a fresh retry schedule",
    responses={409: {"description": "The action is neither failed nor dead"}},
)
def retry_action(action_id: ActionId, outbox: OutboxDep) -> ActionOut:
    try:
        return ActionOut.of(outbox.retry(action_id))
    except ActionNotFoundError as error:
        raise HTTPException(status_code=404, detail=str(error)) from None
    except ActionStateError as error:
        raise HTTPException(status_code=409, detail=str(error)) from None
