"""Outreach as behaviour happens: rescore changed customers in the background.

After an ingest commits, the customers whose history changed are rescored off
the request path, in batches: their rows are prepared again (the same fresh
rows scoring by id then uses) and scored with the serving scorer, whose rules
choose the actions and whose outbox writes each score and the actions that now
match in one transaction, cooldowns holding (`serving.outreach.outbox`). The
relay delivers them as it delivers every action.

What is due is read from ``customer_changes``: customers stamped since the
last look (less an overlap, for transactions that committed after a later one
was seen) whose stamp differs from the one last rescored. An ingest in this
process wakes the loop at once; another worker's ingest is seen at the next
poll. Rescoring the same stamp twice (two workers, a restart within the
overlap) writes nothing new: scores are keyed by (customer, model, as_of) and
actions by (customer, rule, cooldown window).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from serving.live.fresh import LiveScores, live_as_of

if TYPE_CHECKING:
    from serving.model_holder import ModelHolder, ServingState

logger = logging.getLogger(__name__)


@dataclass
class RescoreStats:
    """What the rescorer did since start (tests and /metrics read it)."""

    batches: int = 0
    customers: int = 0
    actions: int = 0
    failures: int = 0
    last_error: str | None = None
    #: seconds from a customer's change stamp to its score being written, newest last
    lags: list[float] = field(default_factory=list)


class Rescorer:
    """Finds customers whose history changed and rescores them with the serving scorer."""

    def __init__(self, live: LiveScores, *, overlap: timedelta = timedelta(minutes=10),
                 batch_size: int = 500, top_k: int = 5) -> None:
        self.live = live
        self.overlap = overlap
        self.batch_size = batch_size
        self.top_k = top_k
        self.stats = RescoreStats()
        self._started = live.clock()
        self._cursor: datetime | None = None
        self._done: dict[str, datetime | None] = {}

    def due(self) -> dict[str, datetime | None]:
        """Customers changed since the last look whose current stamp was not rescored yet."""
        since = (self._cursor or self._started) - self.overlap
        looked_at = self.live.clock()
        changed = self.live.store.changed_since(since)
        self._cursor = looked_at
        # stamps older than the window can never come back: forget them
        self._done = {c: s for c, s in self._done.items() if s is None or s >= since}
        return {c: s for c, s in sorted(changed.items()) if self._done.get(c) != s}

    def run_once(self, state: ServingState) -> int:
        """Rescore every due customer, a batch at a time; how many were rescored."""
        if state.scorer.outbox is None:
            return 0
        due = self.due()
        items = list(due.items())
        done = 0
        for start in range(0, len(items), self.batch_size):
            batch = dict(items[start : start + self.batch_size])
            as_of = live_as_of(self.live.clock())
            prepared = self.live.refresh(state, batch, as_of=as_of)
            if prepared is not None:
                positions = list(range(len(prepared.features)))
                records = prepared.score(state, positions, explain="all", top_k=self.top_k)
                self.stats.actions += sum(r.recommended_action is not None for r in records)
                written = time.time()
                for customer_id in prepared.features.index:
                    stamp = batch.get(str(customer_id))
                    if stamp is not None:
                        self.stats.lags.append(written - _epoch(stamp))
                del self.stats.lags[:-10_000]
            self._done.update(batch)
            self.stats.batches += 1
            self.stats.customers += len(batch)
            done += len(batch)
        return done


def _epoch(naive_utc: datetime) -> float:
    from datetime import UTC

    return naive_utc.replace(tzinfo=UTC).timestamp()


class LiveLoop:
    """The background work of a live server: the day's matrix and outreach rescoring.

    Two asyncio tasks in the API process: one keeps the prepared matrix of the
    current model and day (rebuilt when either changes), one rescores changed
    customers, woken by an ingest in this process or by its poll interval.
    """

    def __init__(self, holder: ModelHolder, live: LiveScores, rescorer: Rescorer | None, *,
                 poll_seconds: float) -> None:
        self.holder = holder
        self.live = live
        self.rescorer = rescorer
        self.poll_seconds = poll_seconds
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._tasks = [asyncio.create_task(self._keep_base(), name="churnlens-live-base")]
        if self.rescorer is not None:
            self._tasks.append(asyncio.create_task(self._rescore(), name="churnlens-rescore"))

    def wake(self) -> Callable[[object], None]:
        """A listener for ingests (called from a worker thread): rescore now."""
        def on_ingest(_result: object) -> None:
            if self._loop is not None and self._wake is not None:
                self._loop.call_soon_threadsafe(self._wake.set)
        return on_ingest

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _keep_base(self) -> None:
        while True:
            state = self.holder.state
            if state is not None and not self.live.base_is_current(state):
                try:
                    await asyncio.to_thread(self.live.build_base, state)
                except Exception as error:  # the database may be down: try again later
                    logger.warning("live scoring: preparing the day's features failed: %s", error)
            await asyncio.sleep(max(self.poll_seconds, 0.05))

    async def _rescore(self) -> None:
        assert self.rescorer is not None and self._wake is not None
        while True:
            state = self.holder.state
            if state is not None:
                try:
                    await asyncio.to_thread(self.rescorer.run_once, state)
                except Exception as error:
                    self.rescorer.stats.failures += 1
                    self.rescorer.stats.last_error = str(error)
                    logger.warning("live outreach: rescoring changed customers failed: %s", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(self.poll_seconds, 0.05))
            self._wake.clear()
