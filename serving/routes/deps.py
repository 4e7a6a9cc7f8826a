"""Dependencies shared by the routers: settings, API key check, the serving state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.auth import CHALLENGE, check_authorization, refusal, required_scope
from serving.metrics import ServiceMetrics
from serving.model_holder import ModelHolder, ModelNotReadyError, ServingState
from serving.settings import Settings, get_settings


async def app_settings(request: Request) -> Settings:
    """The app's settings (a test override of `get_settings` wins).

    Async on purpose, like the other dependencies here: FastAPI runs sync
    dependencies in a thread pool, a hop per dependency per request.
    """
    override = request.app.dependency_overrides.get(get_settings)
    return override() if override is not None else request.app.state.settings


SettingsDep = Annotated[Settings, Depends(app_settings)]

UNAUTHORIZED = {"WWW-Authenticate": CHALLENGE}
AUTH_RESPONSES: dict[int | str, dict] = {
    401: {"description": "Missing or malformed `Authorization: Bearer <key>` header"},
    403: {"description": "The API key is not one of CHURNLENS_API_KEYS, or lacks the "
          "scope of this route (score: reading, ingest: writing history)"},
    503: {"description": "No model is loaded yet (see /readyz)"},
}


#: declares the scheme in the OpenAPI schema; the header itself is checked below
bearer_scheme = HTTPBearer(auto_error=False, scheme_name="apiKey",
                           description="An API key from `churnlens apikey new`")


async def require_api_key(
    request: Request, settings: SettingsDep,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
) -> None:
    """Let a request through only with a key of its scope (or when anonymous use is allowed).

    `serving.middleware.ApiKeyMiddleware` checks the same before the body is read;
    this dependency declares the scheme and guards any route outside its prefix.
    """
    if not settings.api_keys and settings.allow_anonymous:
        return
    needed = required_scope(request.method, request.scope["path"])
    refused = refusal(check_authorization(request.headers.get("authorization"),
                                          settings.api_keys, scope=needed), needed)
    if refused is None:
        return
    code, message = refused
    raise HTTPException(code, message,
                        headers=UNAUTHORIZED if code == status.HTTP_401_UNAUTHORIZED else None)


async def get_holder(request: Request) -> ModelHolder:
    return request.app.state.holder


async def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


HolderDep = Annotated[ModelHolder, Depends(get_holder)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]


async def current_state(holder: HolderDep) -> ServingState:
    """The model state this request uses from start to finish (hot swap safety)."""
    try:
        return holder.current()
    except ModelNotReadyError as error:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"model not ready: {error}",
                            headers={"Retry-After": "5"}) from None


StateDep = Annotated[ServingState, Depends(current_state)]
