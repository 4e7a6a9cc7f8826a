"""The model resource: which model answers requests."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from serving.api_models import ModelInfo
from serving.routes.deps import AUTH_RESPONSES, HolderDep, StateDep, require_api_key

router = APIRouter(prefix="/v1", tags=["model"], dependencies=[Depends(require_api_key)],
                   responses=AUTH_RESPONSES)


@router.get("/model", response_model=ModelInfo, summary="The model answering requests now")
def model_info(state: StateDep, holder: HolderDep) -> ModelInfo:
    return ModelInfo.of(state.loaded, model_uri=holder.model_uri, loaded_at=state.loaded_at)
