"""The relay: delivers the outbox's due actions to their channels, at least once, never lost.

A relay claims a batch of due actions (marking them ``delivering`` with a
lease), delivers them, and records each outcome:

- 2xx → ``delivered``;
- 5xx, 408, timeouts, connection errors → retried with exponential backoff and
  jitter (``pending`` with a later ``next_attempt_at``), ``dead`` after the last
  attempt;
- 429 → retried after the receiver's ``Retry-After`` (capped by a setting);
- any other 3xx/4xx (410 Gone included) → ``failed`` at once: retrying will not help.

If a relay is killed mid-batch its lease expires and another relay (or the
same one restarted) takes the actions over. They carry the same ``webhook-id``,
so a receiver that already got one can drop the duplicate. Several relays may
share one PostgreSQL outbox: claims use ``FOR UPDATE SKIP LOCKED``.

Time is injected: ``clock`` says what "now" is for claims, leases and retry
schedules, and ``pause`` is how an idle relay waits for the next poll, so
tests move time forward instead of waiting for it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx

from serving.background import guarded
from serving.outreach.outbox import ActionRow, Outbox, Outcome, utcnow
from serving.outreach.webhooks import (
    ChannelVariableError,
    encode_body,
    expand_channel,
    sign_headers,
)
from serving.schemas import utc_text
from serving.settings import OutreachSettings

try:  # POSIX advisory locks keep two relays from interleaving one JSONL sink
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)
USER_AGENT = "churnlens-outreach/0.1"


@dataclass
class RelayReport:
    """What one or more relay passes did."""

    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    dead: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: RelayReport) -> RelayReport:
        self.claimed += other.claimed
        self.delivered += other.delivered
        self.retried += other.retried
        self.failed += other.failed
        self.dead += other.dead
        self.errors.extend(other.errors[-5:])
        del self.errors[:-20]
        return self

    def count(self, outcome: Outcome) -> None:
        if outcome.status == "delivered":
            self.delivered += 1
        elif outcome.status == "pending":
            self.retried += 1
        elif outcome.status == "failed":
            self.failed += 1
        else:
            self.dead += 1


def wait_unless_stopped(stop: threading.Event, seconds: float) -> None:
    """An idle relay's pause between polls; ends early when the relay is stopped."""
    stop.wait(seconds)


class Relay:
    """Delivers due outbox actions; safe to run as several processes on one outbox."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        settings: OutreachSettings,
        client: httpx.Client | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = utcnow,
        pause: Callable[[threading.Event, float], None] = wait_unless_stopped,
    ) -> None:
        self.outbox = outbox
        self._clock = clock  # injectable, so retry schedules are tested without waiting
        self._pause = pause
        self.settings = settings
        self._client = client
        self._owns_client = client is None
        self._pool: ThreadPoolExecutor | None = None
        self._rng = rng or random.Random()
        self._sink_ids: dict[Path, tuple[int, set[str]]] = {}
        self._warned_unsigned = False

    # -- lifecycle --------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            timeout = self.settings.request_timeout_seconds
            self._client = httpx.Client(
                timeout=httpx.Timeout(timeout),
                limits=httpx.Limits(
                    max_connections=self.settings.relay_concurrency,
                    max_keepalive_connections=self.settings.relay_concurrency,
                ),
                headers={"user-agent": USER_AGENT, "content-type": "application/json"},
                follow_redirects=False,
            )
        return self._client

    def close(self) -> None:
        """Release the HTTP connections and worker threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._client is not None and self._owns_client:
            self._client.close()
            self._client = None

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- passes -----------------------------------------------------------------------

    def run_once(self) -> RelayReport:
        """Claim one batch of due actions, deliver it, and record every outcome."""
        secret = self.settings.webhook_secret
        files_only = secret is None
        if files_only and not self._warned_unsigned and self.outbox.waiting_webhooks():
            logger.warning(
                "webhook actions are waiting: set CHURNLENS_WEBHOOK_SECRET to deliver them "
                "(file: channels are delivered meanwhile)"
            )
            self._warned_unsigned = True
        token, actions = self.outbox.claim_due(
            limit=self.settings.relay_batch_size,
            lease_seconds=self.settings.relay_lease_seconds,
            files_only=files_only,
            now=self._clock(),
        )
        report = RelayReport(claimed=len(actions))
        if not actions:
            return report
        webhooks = [a for a in actions if not a.channel.startswith("file:")]
        files = [a for a in actions if a.channel.startswith("file:")]
        outcomes = self._deliver_files(files, token)
        if webhooks:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.settings.relay_concurrency,
                    thread_name_prefix="churnlens-relay",
                )
            outcomes.extend(self._pool.map(lambda a: self._deliver_webhook(a, token), webhooks))
        self.outbox.record_outcomes(outcomes)
        for outcome in outcomes:
            report.count(outcome)
            if outcome.status != "delivered" and outcome.error:
                report.errors.append(f"{outcome.action_id}: {outcome.error}")
        del report.errors[:-20]
        return report

    def drain(self, *, stop: threading.Event | None = None) -> RelayReport:
        """Deliver batches until nothing is due (or ``stop`` is set)."""
        total = RelayReport()
        while stop is None or not stop.is_set():
            report = self.run_once()
            total.add(report)
            if report.claimed == 0:
                break
        return total

    def run_forever(self, stop: threading.Event) -> RelayReport:
        """Deliver until ``stop`` is set, looking for due actions every poll interval.

        Database or network trouble is logged and retried at the next poll, so a
        relay inside the API server survives an outbox that is briefly unavailable.
        """
        total = RelayReport()
        while not stop.is_set():
            report, problem = guarded(lambda: self.drain(stop=stop), what="outreach relay pass",
                                      retry_seconds=self.settings.relay_poll_seconds)
            if report is not None:
                total.add(report)
            if problem is not None:
                total.errors.append(f"relay pass failed: {problem}")
                del total.errors[:-20]
            self._pause(stop, self.settings.relay_poll_seconds)
        return total

    # -- webhooks ---------------------------------------------------------------------

    def _deliver_webhook(self, action: ActionRow, token: str) -> Outcome:
        secret = self.settings.webhook_secret
        assert secret is not None  # claim_due(files_only=True) without a secret
        body = encode_body(action.envelope())
        headers = sign_headers(
            secret.get_secret_value(), webhook_id=action.webhook_id, body=body
        )
        try:
            url = expand_channel(action.channel)
        except ChannelVariableError as error:  # set it and restart the relay: retried until then
            return self._retry(action, token, str(error))
        try:
            response = self.client.post(url, content=body.encode(), headers=headers)
        except httpx.TimeoutException as error:
            return self._retry(action, token, f"timeout after "
                               f"{self.settings.request_timeout_seconds:g}s "
                               f"({type(error).__name__})")
        except httpx.TransportError as error:
            return self._retry(action, token, f"connection error: {error or type(error).__name__}")
        code = response.status_code
        if 200 <= code < 300:
            return Outcome(action.id, token, "delivered", status_code=code)
        summary = f"HTTP {code} from the receiver"
        if code == 429:
            wait = retry_after_seconds(response.headers.get("retry-after"), now=self._clock())
            if wait is not None:
                wait = min(wait, self.settings.retry_after_max_seconds)
            return self._retry(action, token, summary, status_code=code, wait=wait)
        if code == 408 or code >= 500:
            return self._retry(action, token, summary, status_code=code)
        return Outcome(
            action.id, token, "failed", status_code=code,
            error=f"{summary}; not retried (only 5xx, 408, 429 and network errors are)",
        )

    def _retry(
        self,
        action: ActionRow,
        token: str,
        error: str,
        *,
        status_code: int | None = None,
        wait: float | None = None,
    ) -> Outcome:
        attempts = action.attempts
        if attempts >= self.settings.retry_max_attempts:
            return Outcome(
                action.id, token, "dead", status_code=status_code,
                error=f"{error}; gave up after {attempts} attempts",
            )
        if wait is None:
            wait = self.settings.backoff_seconds(attempts, draw=self._rng.random())
        return Outcome(
            action.id, token, "pending", status_code=status_code, error=error,
            next_attempt_at=self._clock() + timedelta(seconds=wait),
        )

    # -- JSONL file sinks -------------------------------------------------------------

    def _deliver_files(self, actions: list[ActionRow], token: str) -> list[Outcome]:
        by_path: dict[Path, list[ActionRow]] = {}
        outcomes: list[Outcome] = []
        for action in actions:
            try:
                path = self.sink_path(action.channel)
            except ChannelVariableError as error:
                outcomes.append(self._retry(action, token, str(error)))
                continue
            by_path.setdefault(path, []).append(action)
        for path, group in by_path.items():
            try:
                self._append(path, group)
            except OSError as error:
                outcomes.extend(
                    self._retry(a, token, f"cannot write {path}: {error.strerror}")
                    for a in group
                )
            else:
                outcomes.extend(Outcome(a.id, token, "delivered") for a in group)
        return outcomes

    def sink_path(self, channel: str) -> Path:
        """The file a ``file:`` channel writes to (relative paths from ``sink_dir``)."""
        path = Path(expand_channel(channel)[len("file:"):]).expanduser()
        if not path.is_absolute():
            path = (self.settings.sink_dir or Path.cwd()) / path
        return path

    def _append(self, path: Path, actions: list[ActionRow]) -> None:
        """Append one JSON line per action, skipping webhook-ids the file already holds."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+", encoding="utf-8") as sink, _locked(sink):
            present = self._ids_in(path, sink)
            now = utc_text(datetime.now(UTC))
            lines = []
            for action in actions:
                if action.webhook_id in present:
                    continue
                present.add(action.webhook_id)
                record = {"webhook_id": action.webhook_id, "delivered_at": now,
                          **action.envelope()}
                lines.append(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            if lines:
                sink.seek(0, os.SEEK_END)
                sink.write("".join(lines))
                sink.flush()
                os.fsync(sink.fileno())
            self._sink_ids[path] = (os.fstat(sink.fileno()).st_size, present)

    def _ids_in(self, path: Path, sink: object) -> set[str]:
        size = os.fstat(sink.fileno()).st_size  # type: ignore[attr-defined]
        cached = self._sink_ids.get(path)
        if cached is not None and cached[0] == size:
            return cached[1]
        ids: set[str] = set()
        sink.seek(0)  # type: ignore[attr-defined]
        for line in sink:  # type: ignore[attr-defined]
            with contextlib.suppress(ValueError):
                ids.add(json.loads(line).get("webhook_id"))
        return ids


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date after ``now``,
    naive UTC like the outbox's timestamps; default the current time)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    current = (now or utcnow()).replace(tzinfo=UTC)
    return max(0.0, (moment - current).total_seconds())


@contextlib.contextmanager
def _locked(sink: object) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    fcntl.flock(sink.fileno(), fcntl.LOCK_EX)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        fcntl.flock(sink.fileno(), fcntl.LOCK_UN)  # type: ignore[attr-defined]


@dataclass
class RelayHandle:
    """A relay running in a background thread (e.g. inside ``churnlens serve``)."""

    relay: Relay
    thread: threading.Thread
    stop_event: threading.Event
    report: RelayReport = field(default_factory=RelayReport)

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Ask the relay to finish its current batch, wait for it, and release resources."""
        self.stop_event.set()
        self.thread.join(timeout)
        if not self.thread.is_alive():
            self.relay.close()
            self.relay.outbox.close()


def start_relay_in_background(
    settings: OutreachSettings, *, outbox: Outbox | None = None,
    pause: Callable[[threading.Event, float], None] = wait_unless_stopped,
) -> RelayHandle:
    """Start a relay thread that delivers until ``handle.stop()``; for the API lifespan."""
    relay = Relay(outbox or Outbox(settings.outbox_url), settings=settings, pause=pause)
    stop = threading.Event()
    handle: RelayHandle

    def run() -> None:
        handle.report.add(relay.run_forever(stop))

    thread = threading.Thread(target=run, name="churnlens-outreach-relay", daemon=True)
    handle = RelayHandle(relay=relay, thread=thread, stop_event=stop)
    thread.start()
    return handle

