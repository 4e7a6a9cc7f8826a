"""Liveness, readiness and Prometheus metrics: open, no API key."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.api_models import Health, Readiness
from serving.routes.deps import HolderDep, MetricsDep

router = APIRouter(tags=["health"])


def not_ready_reason(last_error: str | None) -> str:
    """Why no model is serving, in words that name no host, port, path or password.

    /readyz is open to anyone who can reach the port; the full error is in the
    server log, for the operator.
    """
    if last_error is None:
        return "model loading"
    if "CHURNLENS_DATA" in last_error:
        return "the dataset in CHURNLENS_DATA could not be read; the server log says why"
    return "the model could not be loaded from the registry; the server log says why"


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
def healthz() -> Health:
    return Health()


@router.get(
    "/readyz", response_model=Readiness, summary="Readiness: a model is loaded and warmed",
    responses={503: {"model": Readiness, "description": "No model loaded and warmed yet"}},
)
def readyz(holder: HolderDep) -> Readiness | JSONResponse:
    state = holder.state
    if state is None:
        body = Readiness(status="not_ready", detail=not_ready_reason(holder.last_error))
        return JSONResponse(body.model_dump(), status_code=503)
    return Readiness(status="ready", model_version=state.version)


@router.get(
    "/metrics", response_class=Response, response_model=None,
    summary="Prometheus metrics: requests, latency, scores served, model",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
                     "description": "Prometheus text exposition format"}},
)
def metrics(service_metrics: MetricsDep) -> Response:
    return Response(generate_latest(service_metrics.registry), media_type=CONTENT_TYPE_LATEST)
