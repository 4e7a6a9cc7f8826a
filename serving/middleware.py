"""ASGI middleware: API key check, request body limit, request metrics; the 422 body.

Written as plain ASGI (not ``BaseHTTPMiddleware``) because it wraps every
request, and the scoring path is meant to take about a millisecond.
"""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from serving.auth import check_authorization, refusal, required_scope
from serving.settings import Settings, get_settings

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from serving.metrics import ServiceMetrics

#: how much of an offending input a 422 answer echoes
_ECHO_CHARACTERS = 200
_ECHO_ITEMS = 20


def _too_large_message(limit: int) -> str:
    return (f"request body is larger than the limit of {limit:,} bytes "
            "(CHURNLENS_MAX_BODY_BYTES); send fewer customers per request")


class BodyTooLargeError(HTTPException):
    """The streamed body went over the limit (Content-Length missing or understated).

    An HTTP exception because FastAPI reads the body inside request handling and
    turns any other exception raised there into a generic 400.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=_too_large_message(limit))


def _too_large_body(limit: int) -> bytes:
    return json.dumps({"detail": _too_large_message(limit)}).encode()


class BodyLimitMiddleware:
    """Answer 413 when a body is over ``max_bytes``, by Content-Length or as it streams."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await self._reject(send)
                    return
                break
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            if response_started:
                raise
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = _too_large_body(self.max_bytes)
        await send({
            "type": "http.response.start", "status": 413,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")],
        })
        await send({"type": "http.response.body", "body": body})


class MetricsMiddleware:
    """Count requests and time them, labelled by route template (not raw path)."""

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.observe_request(method=scope["method"], route=route_template(scope),
                                         status=status, seconds=time.perf_counter() - started)


class ApiKeyMiddleware:
    """Hide the body of a request under ``prefix`` that has no accepted key (for its scope).

    FastAPI parses the body before it runs dependencies, so a request with no
    key but a malformed body would learn about the body (422, 400, 413)
    instead of getting the 401 the API promises. Such a request reaches its
    route with an empty body, where the key check (`require_api_key`) refuses
    it, and the metrics still count it under its route.
    """

    def __init__(self, app: ASGIApp, *, prefix: str = "/v1/") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix) \
                or self._accepted(scope):
            await self.app(scope, receive, send)
            return

        async def no_body() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        # in place, not a copy: the metrics read the matched route from this scope
        scope["headers"] = [(name, value) for name, value in scope["headers"]
                            if name not in (b"content-length", b"transfer-encoding")]
        await self.app(scope, no_body, send)

    @staticmethod
    def _accepted(scope: Scope) -> bool:
        settings = _settings_of(scope["app"])
        if not settings.api_keys and settings.allow_anonymous:
            return True
        header = Headers(scope=scope).get("authorization")
        needed = required_scope(scope["method"], scope["path"])
        return refusal(check_authorization(header, settings.api_keys, scope=needed)) is None


def _settings_of(app: Any) -> Settings:
    """The app's settings, a test override of `get_settings` first (as the routes see them)."""
    override = app.dependency_overrides.get(get_settings)
    return override() if override is not None else app.state.settings


def json_safe(value: Any, *, depth: int = 0) -> Any:
    """``value`` as JSON can carry it: finite numbers, valid UTF-8, bounded size.

    A 422 answer echoes the offending input; echoing ``1e309`` (infinity),
    ``NaN`` or a lone surrogate verbatim would make the error itself fail to
    serialise, and the client would get a 500 instead.
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        text = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return text if len(text) <= _ECHO_CHARACTERS else text[:_ECHO_CHARACTERS] + "…"
    if depth >= 4:
        return "…"
    if isinstance(value, dict):
        items = list(value.items())[:_ECHO_ITEMS]
        return {json_safe(str(k)): json_safe(v, depth=depth + 1) for k, v in items}
    if isinstance(value, list | tuple):
        return [json_safe(v, depth=depth + 1) for v in value[:_ECHO_ITEMS]]
    return json_safe(str(value))


async def validation_error_response(_request: Request, error: Exception) -> JSONResponse:
    """422 naming each invalid field, with the offending input echoed in a JSON-safe form."""
    assert isinstance(error, RequestValidationError)
    problems = [{key: json_safe(part) for key, part in problem.items()}
                for problem in error.errors()]
    return JSONResponse({"detail": problems}, status_code=422)


def route_template(scope: Scope) -> str:
    """The full route template of a request, e.g. ``/v1/actions/{action_id}``.

    A router included with a prefix (``include_router(..., prefix="/v1")``) puts
    its own route in the scope, whose template lacks the prefix; the prefix is
    then the part of the path before the piece that route matches (our prefixes
    are fixed strings, so no raw id can leak into a label).
    """
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not template:
        return "unmatched"
    path, pattern = scope.get("path", ""), getattr(route, "path_regex", None)
    if pattern is None or pattern.match(path):
        return template
    cut = path.find("/", 1)
    while cut > 0:
        if pattern.match(path[cut:]):
            return path[:cut] + template
        cut = path.find("/", cut + 1)
    return template
