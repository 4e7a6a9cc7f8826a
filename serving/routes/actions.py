"""The actions resource: outreach actions that fired for a customer, and the CRM's answers.

Thin routes over the :class:`~serving.outreach.outbox.Outbox` the app holds
(``app.state.holder.outbox``), else one built from the settings' outbox URL;
tests override :func:`get_outbox`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.contract import MAX_ID_LENGTH
from serving.api_models import ID_PATTERN
from serving.outreach.outbox import (
    STATUSES,
    ActionNotFoundError,
    ActionStateError,
    Outbox,
)
from serving.routes.deps import AUTH_RESPONSES, SettingsDep, require_api_key
from serving.schemas import UtcDateTime

router = APIRouter(prefix="/v1", tags=["outreach"], dependencies=[Depends(require_api_key)],
                   responses={**AUTH_RESPONSES, 404: {"description": "Unknown action"}})


class ActionOut(BaseModel):
    """A triggered retention action and where its delivery stands (from an `ActionRow`)."""

    model_config = ConfigDict(from_attributes=True)

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

    @model_validator(mode="after")
    def _next_attempt_only_while_due(self) -> ActionOut:
        """The stored next_attempt_at means nothing once an action is settled."""
        if self.status not in ("pending", "delivering"):
            self.next_attempt_at = None
        return self


@lru_cache(maxsize=4)
def _outbox_for(url: str) -> Outbox:
    return Outbox(url)


async def get_outbox(request: Request, settings: SettingsDep) -> Outbox:
    """The app's outbox; one from CHURNLENS_OUTBOX_URL when outreach scoring is off."""
    outbox = getattr(getattr(request.app.state, "holder", None), "outbox", None)
    return outbox if outbox is not None else _outbox_for(settings.outbox_url)


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
    rows = outbox.list_actions(customer_id=customer_id, limit=limit)
    return [ActionOut.model_validate(row) for row in rows]


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
    return [ActionOut.model_validate(row) for row in rows]


@router.get("/actions/{action_id}", response_model=ActionOut, summary="One outreach action")
def get_action(action_id: ActionId, outbox: OutboxDep) -> ActionOut:
    try:
        return ActionOut.model_validate(outbox.get_action(action_id))
    except ActionNotFoundError as error:
        raise HTTPException(status_code=404, detail=str(error)) from None


@router.post(
    "/actions/{action_id}/acknowledge", response_model=ActionOut,
    summary="The CRM has handled the action; stops any further delivery (idempotent)",
    responses={409: {"description": "The action is held out as control and was never sent"}},
)
def acknowledge_action(action_id: ActionId, outbox: OutboxDep) -> ActionOut:
    try:
        return ActionOut.model_validate(outbox.acknowledge(action_id))
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
        return ActionOut.model_validate(outbox.retry(action_id))
    except ActionNotFoundError as error:
        raise HTTPException(status_code=404, detail=str(error)) from None
    except ActionStateError as error:
        raise HTTPException(status_code=409, detail=str(error)) from None
