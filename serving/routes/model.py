"""The model resource: which model answers requests."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from fastapi import APIRouter, Depends

from serving.api_models import ModelInfo
from serving.routes.deps import AUTH_RESPONSES, HolderDep, StateDep, require_api_key

router = APIRouter(prefix="/v1", tags=["model"], dependencies=[Depends(require_api_key)],
                   responses=AUTH_RESPONSES)


def _timestamp(value: object) -> datetime | None:
    """The bundle's training time (naive = UTC), if it is a readable ISO 8601 timestamp."""
    if not value:
        return None
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _finite(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@router.get("/model", response_model=ModelInfo, summary="The model answering requests now")
def model_info(state: StateDep, holder: HolderDep) -> ModelInfo:
    loaded = state.loaded
    event_types = getattr(loaded.bundle, "event_types", None)
    return ModelInfo(
        name=loaded.name, version=str(loaded.version), alias=loaded.alias,
        model_uri=holder.model_uri, run_id=loaded.run_id, trained_at=_timestamp(loaded.trained_at),
        loaded_at=state.loaded_at,
        metrics={str(k): _finite(v) for k, v in (loaded.metrics or {}).items()},
        event_types=list(event_types) if event_types is not None else None,
        churn_definition=getattr(loaded.bundle, "churn_definition", None),
        lifecycle=getattr(loaded.bundle, "lifecycle", None),
    )
