"""ASGI middleware: request body limit and request metrics.

Written as plain ASGI (not ``BaseHTTPMiddleware``) because it wraps every
request, and the scoring path is meant to take about a millisecond.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from serving.metrics import ServiceMetrics


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
