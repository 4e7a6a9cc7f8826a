"""A small webhook receiver for the outreach tests and benchmark: real HTTP on 127.0.0.1.

It records every request's webhook-id and whether its Standard Webhooks
signature verified, and answers according to the request path:

- ``/ok`` → 200
- ``/status/NNN`` → always NNN
- ``/fail-first/N/NNN`` → NNN for the first N requests of each webhook-id, then 200
- ``/retry-after/S`` → 429 with ``Retry-After: S`` on the first request of each id, then 200
- ``/hold`` → holds the request until the test calls ``release()`` (or stops the
  receiver), then 200: a receiver as slow as the test needs, without sleeping.
  ``wait_held(n)`` returns once ``n`` requests are being held.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Received:
    path: str
    webhook_id: str
    verified: bool
    error: str | None
    at: float
    body: bytes
    headers: dict[str, str]


class Receiver:
    """Records deliveries; start() listens on 127.0.0.1 (port 0 = any free port)."""

    def __init__(self, *, secret: str | None, port: int = 0, record: bool = True) -> None:
        self.secret = secret
        self.port = port
        self.record = record
        self.received: list[Received] = []
        self.count = 0
        self._seen: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._released = threading.Event()
        self._held = 0
        self._changed = threading.Condition(self._lock)

    def url(self, path: str = "/ok") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                if len(body) < length:  # the sender died mid-request: nothing was delivered
                    self.close_connection = True
                    return
                status, extra = receiver.handle(self.path, dict(self.headers.items()), body)
                if status is None:
                    return
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the default backlog of 5 stalls concurrent relays
            daemon_threads = True

        self._server = Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        """Answer every held request, and every later ``/hold`` request at once."""
        self._released.set()

    def wait_held(self, n: int, *, timeout: float = 60.0) -> None:
        """Return once ``n`` requests are held (the timeout only guards a broken test)."""
        with self._changed:
            assert self._changed.wait_for(lambda: self._held >= n, timeout), (
                f"{self._held} requests held, expected {n}")

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int | None, dict]:
        lowered = {k.lower(): v for k, v in headers.items()}
        webhook_id = lowered.get("webhook-id", "")
        verified, error = True, None
        if self.secret is not None:
            try:
                Webhook(self.secret).verify(body, lowered)
            except WebhookVerificationError as problem:
                verified, error = False, str(problem)
        with self._lock:
            self.count += 1
            if self.record:
                self.received.append(Received(path, webhook_id, verified, error, time.monotonic(),
                                              body, lowered))
            self._seen[(path, webhook_id)] += 1
            seen = self._seen[(path, webhook_id)]
        parts = path.strip("/").split("/")
        if parts[0] == "status":
            return int(parts[1]), {}
        if parts[0] == "fail-first":
            return (int(parts[2]) if seen <= int(parts[1]) else 200), {}
        if parts[0] == "retry-after":
            return (429, {"Retry-After": parts[1]}) if seen == 1 else (200, {})
        if parts[0] == "hold":
            with self._changed:
                self._held += 1
                self._changed.notify_all()
            self._released.wait()
        return 200, {}

    def ids(self, path: str | None = None) -> Counter[str]:
        with self._lock:
            return Counter(r.webhook_id for r in self.received if path is None or r.path == path)

    def for_id(self, webhook_id: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.webhook_id == webhook_id]


def score_record(customer_id: str, **changes: object):
    """A plausible score record; ``changes`` override fields."""
    from datetime import datetime

    from serving.schemas import Reason, ScoreRecord

    fields: dict[str, object] = {
        "customer_id": customer_id,
        "as_of": datetime(2024, 5, 1),
        "churn_probability": 0.81,
        "risk_tier": "high",
        "clv": 640.0,
        "value_segment": "high",
        "value_at_risk": 518.4,
        "reasons": [
            Reason(feature="days_since_last_order", value=94.0, contribution=0.9,
                   text="No order for 94 days; retained customers typically order every 21 days.",
                   kind="order_gap"),
            Reason(feature="return_rate_365d", value=0.4, contribution=0.3,
                   text="40% of orders returned in the last year.", kind="returns"),
            Reason(feature="tenure_days", value=800.0, contribution=-0.2,
                   text="A customer for 800 days.", kind="tenure"),
        ],
        "model_version": "7",
    }
    fields.update(changes)
    return ScoreRecord(**fields)


def triggered(n: int, channel: str, *, rule: str = "win-back", prefix: str = "c"):
    """``n`` triggered actions (one per customer) for ``channel``."""
    from datetime import datetime

    from serving.outreach.rules import TriggeredAction

    return [
        TriggeredAction(
            customer_id=f"{prefix}{i:05d}", rule=rule, action="win_back_offer", channel=channel,
            cooldown_days=30, as_of=datetime(2024, 5, 1), model_version="7",
            payload={"offer": "win_back_discount", "churn_probability": 0.8},
            why=["No order for 94 days"],
        )
        for i in range(n)
    ]
