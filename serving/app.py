"""The FastAPI application: built by `create_app()`, never at import time.

Run it with ``churnlens serve`` (uvicorn with ``factory=True``). The lifespan
reads the dataset for scoring by id, loads and warms the model in the
background (``/readyz`` answers 503 until then) and follows the registry
alias, swapping in a new champion without dropping requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline

from features.dataset import Dataset
from features.io import read_dataset
from features.sources import is_database_url
from serving.ingest.processes import IngestProcesses, in_memory
from serving.ingest.store import LiveStore
from serving.live.fresh import LiveScores
from serving.live.rescore import LiveLoop, Rescorer
from serving.metrics import ServiceMetrics
from serving.middleware import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    MetricsMiddleware,
    validation_error_response,
)
from serving.model_holder import ModelHolder, Pause
from serving.monitoring.prometheus import MonitoringCollector
from serving.outreach.outbox import Outbox
from serving.outreach.relay import RelayHandle, start_relay_in_background
from serving.outreach.rules import RuleSet, load_rules
from serving.redact import masked_url
from serving.routes import actions, health, ingest, model, scores
from serving.settings import Settings, get_settings

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Churn risk, customer lifetime value, the reasons why and a recommended action,
for CRM systems. Authenticate with `Authorization: Bearer <key>`
(`churnlens apikey new`); `/healthz`, `/readyz` and `/metrics` are open.
"""


def _outreach(settings: Settings) -> tuple[RuleSet | None, Outbox | None]:
    """Rules and outbox for API scores, unless outreach is turned off."""
    if not settings.outreach_enabled:
        return None, None
    return load_rules(settings.rules), Outbox(settings.outbox_url)


def _read_dataset(settings: Settings) -> Dataset | None:
    """The dataset for scoring by id (read once; it is read-only while serving).

    A database is not read here: `serving.live` prepares it and keeps it fresh.
    """
    if settings.data is None or is_database_url(settings.data):
        return None
    result = read_dataset(settings.data)
    if not result.rejects.empty:
        logger.warning("CHURNLENS_DATA=%s: %d rows rejected by the data contract",
                       masked_url(settings.data), len(result.rejects))
    return result.dataset


async def _load_and_follow(holder: ModelHolder, settings: Settings) -> None:
    """Background start-up: dataset, then model, then follow the alias."""
    try:
        holder.dataset = await asyncio.to_thread(_read_dataset, settings)
    except Exception as error:
        holder.fail(f"reading CHURNLENS_DATA={masked_url(str(settings.data))} failed: {error}")
        logger.error("%s", holder.last_error)
        return
    await holder.follow(poll_seconds=settings.model_poll_seconds)


def _start_relay(settings: Settings) -> RelayHandle | None:
    """Start the outbox relay in this process when asked (CHURNLENS_RELAY_ENABLED)."""
    return start_relay_in_background(settings) if settings.relay_enabled else None


def _start_live(app: FastAPI, holder: ModelHolder, settings: Settings) -> LiveLoop | None:
    """On a database source: keep the day's features fresh and rescore changed customers."""
    live: LiveScores | None = app.state.live_scores
    if live is None:
        return None
    rescorer = Rescorer(live, top_k=settings.top_k) if holder.outbox is not None else None
    loop = LiveLoop(holder, live, rescorer, poll_seconds=settings.live_poll_seconds)
    app.state.rescorer = rescorer
    app.state.on_ingest = loop.wake()
    loop.start()
    return loop


def _start_ingest_processes(app: FastAPI, settings: Settings) -> IngestProcesses | None:
    """On a database source: the processes ingests are written by (none: in this process)."""
    store: LiveStore | None = app.state.live_store
    if store is None or settings.ingest_processes == 0 or in_memory(store.url):
        return None
    processes = IngestProcesses(store.url, processes=settings.ingest_processes)
    processes.start()
    app.state.ingest_processes = processes
    return processes


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.dependency_overrides.get(get_settings, get_settings)()
    holder: ModelHolder = app.state.holder
    holder.rules, holder.outbox = _outreach(settings)
    # requests run in threads beside ingests and background work: a shorter switch interval
    # may hand the interpreter to a waiting score sooner (bench/live_bench.py
    # --switch-interval-ms compares; not shown to help on a loaded machine)
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(settings.switch_interval_ms / 1000)
    task = asyncio.create_task(_load_and_follow(holder, settings), name="churnlens-model")
    relay = _start_relay(settings)
    processes = _start_ingest_processes(app, settings)
    live = _start_live(app, holder, settings)
    try:
        yield
    finally:
        sys.setswitchinterval(switch_interval)
        if live is not None:
            await live.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if relay is not None:
            await asyncio.to_thread(relay.stop)
        if processes is not None:
            app.state.ingest_processes = None
            await asyncio.to_thread(processes.close)
        if app.state.live_store is not None:
            app.state.live_store.close()


def create_app(settings: Settings | None = None, *, pause: Pause = asyncio.sleep) -> FastAPI:
    """Build the scoring service; ``settings`` overrides the environment (tests).

    ``pause`` is what the model holder awaits between registry polls (tests
    pass one they release by hand).
    """
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
    # the last `churnlens monitor` run's figures, read at scrape
    metrics.registry.register(MonitoringCollector(resolved.outbox_url))
    app.state.metrics = metrics
    is_live = resolved.data is not None and is_database_url(resolved.data)
    app.state.live_store = LiveStore(str(resolved.data)) if is_live else None
    app.state.live_scores = LiveScores(app.state.live_store) if is_live else None
    app.state.rescorer = None
    app.state.ingest_processes = None  # started by the lifespan on a database source
    app.state.holder = ModelHolder(model_uri=resolved.model_uri, top_k=resolved.top_k,
                                   metrics=metrics, pause=pause)
    for router in (scores.router, ingest.router, model.router, actions.router, health.router):
        app.include_router(router)
    app.add_exception_handler(RequestValidationError, validation_error_response)
    # outermost last: metrics see every request, the key is checked before the body is read
    app.add_middleware(BodyLimitMiddleware, max_bytes=resolved.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, prefix="/v1/")
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
