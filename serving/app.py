"""The FastAPI application: built by `create_app()`, never at import time.

Run it with ``churnlens serve`` (uvicorn with ``factory=True``). The lifespan
reads the dataset for scoring by id, loads and warms the model in the
background (``/readyz`` answers 503 until then) and follows the registry
alias, swapping in a new champion without dropping requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline

from features.database import is_database_url
from serving.metrics import ServiceMetrics
from serving.middleware import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    MetricsMiddleware,
    validation_error_response,
)
from serving.model_holder import ModelHolder
from serving.redact import masked_url
from serving.settings import Settings, get_settings

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Churn risk, customer lifetime value, the reasons why and a recommended action,
for CRM systems. Authenticate with `Authorization: Bearer <key>`
(`churnlens apikey new`); `/healthz`, `/readyz` and `/metrics` are open.
"""


def _optional_module(name: str) -> Any | None:
    """Import a module built by another part of churnlens, or None if it is not there."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and name.startswith(error.name):
            return None
        raise


def _outreach(settings: Settings) -> tuple[Any, Any]:
    """Rules and outbox when the outreach package is installed and enabled."""
    if not settings.outreach_enabled:
        return None, None
    rules_module = _optional_module("serving.outreach.rules")
    outbox_module = _optional_module("serving.outreach.outbox")
    rules = rules_module.load_rules(settings.rules) if rules_module is not None else None
    outbox = outbox_module.Outbox(settings.outbox_url) if outbox_module is not None else None
    return rules, outbox


def _read_dataset(settings: Settings) -> Any:
    """The dataset for scoring by id (read once; it is read-only while serving).

    A database is not read here: `serving.live` prepares it and keeps it fresh.
    """
    if settings.data is None or is_database_url(settings.data):
        return None
    from features.io import read_dataset

    result = read_dataset(settings.data)
    if not result.rejects.empty:
        logger.warning("CHURNLENS_DATA=%s: %d rows rejected by the data contract",
                       masked_url(settings.data), len(result.rejects))
    return result.dataset


def _start_live(app: FastAPI, holder: ModelHolder, settings: Settings) -> Any:
    """On a database source: keep the day's features fresh and rescore changed customers."""
    live = getattr(app.state, "live_scores", None)
    if live is None:
        return None
    from serving.live.rescore import LiveLoop, Rescorer

    rescorer = Rescorer(live, top_k=settings.top_k) if holder.outbox is not None else None
    loop = LiveLoop(holder, live, rescorer, poll_seconds=settings.live_poll_seconds)
    app.state.rescorer = rescorer
    app.state.on_ingest = loop.wake()
    loop.start()
    return loop


def _live_store(settings: Settings) -> Any:
    """The database of record when CHURNLENS_DATA is a database URL (no I/O until used)."""
    if settings.data is None or not is_database_url(settings.data):
        return None
    from serving.ingest.store import LiveStore

    return LiveStore(str(settings.data))


async def _load_and_follow(holder: ModelHolder, settings: Settings) -> None:
    """Background start-up: dataset, then model, then follow the alias."""
    try:
        holder.dataset = await asyncio.to_thread(_read_dataset, settings)
    except Exception as error:
        holder.last_error = f"reading CHURNLENS_DATA={masked_url(settings.data)} failed: {error}"
        logger.error("%s", holder.last_error)
        return
    await holder.follow(poll_seconds=settings.model_poll_seconds)


def _start_relay(app: FastAPI, settings: Settings) -> Any:
    """Start the outbox relay in this process when asked (CHURNLENS_RELAY_ENABLED)."""
    if not settings.relay_enabled:
        return None
    relay = _optional_module("serving.outreach.relay")
    if relay is None or not hasattr(relay, "start_relay"):
        logger.warning("CHURNLENS_RELAY_ENABLED is set but the outreach relay is not available")
        return None
    return relay.start_relay(settings)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.dependency_overrides.get(get_settings, get_settings)()
    holder: ModelHolder = app.state.holder
    holder.rules, holder.outbox = _outreach(settings)
    task = asyncio.create_task(_load_and_follow(holder, settings), name="churnlens-model")
    relay = _start_relay(app, settings)
    live = _start_live(app, holder, settings)
    try:
        yield
    finally:
        if live is not None:
            await live.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if relay is not None and hasattr(relay, "stop"):
            await asyncio.to_thread(relay.stop)
        if app.state.live_store is not None:
            app.state.live_store.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the scoring service; ``settings`` overrides the environment (tests)."""
    from serving.routes import health, ingest, model, scores
    from serving.routes.deps import AUTH_RESPONSES, require_api_key

    resolved = settings or get_settings()
    # /docs and /redoc load Swagger UI and ReDoc from files installed with churnlens,
    # never from a CDN, so they work on a machine without internet access
    app = FastAPIOffline(
        title="churnlens", version="1", description=DESCRIPTION, lifespan=lifespan,
        openapi_tags=[
            {"name": "scores", "description": "Churn risk, value and reasons per customer"},
            {"name": "model", "description": "The model answering requests"},
            {"name": "health", "description": "Liveness, readiness, metrics (no API key)"},
        ],
    )
    if settings is not None:
        app.dependency_overrides[get_settings] = lambda: settings
    app.state.settings = resolved
    metrics = ServiceMetrics()
    monitoring = _optional_module("serving.monitoring.prometheus")
    if monitoring is not None:  # the last `churnlens monitor` run's figures, read at scrape
        metrics.registry.register(monitoring.MonitoringCollector(resolved.outbox_url))
    app.state.metrics = metrics
    app.state.live_store = _live_store(resolved)
    app.state.live_scores = None
    app.state.rescorer = None
    if app.state.live_store is not None:
        from serving.live.fresh import LiveScores

        app.state.live_scores = LiveScores(app.state.live_store)
    app.state.holder = ModelHolder(model_uri=resolved.model_uri, top_k=resolved.top_k,
                                   metrics=metrics)
    app.include_router(scores.router)
    app.include_router(ingest.router)
    app.include_router(model.router)
    app.include_router(health.router)
    outreach_api = _optional_module("serving.outreach.api")
    if outreach_api is not None:
        app.include_router(
            outreach_api.router, prefix="/v1", dependencies=[Depends(require_api_key)],
            responses={**AUTH_RESPONSES, 404: {"description": "Unknown action"}},
        )
    app.add_exception_handler(RequestValidationError, validation_error_response)
    # outermost last: metrics see every request, the key is checked before the body is read
    app.add_middleware(BodyLimitMiddleware, max_bytes=resolved.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, prefix="/v1/")
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
