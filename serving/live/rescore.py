"""Outreach as behaviour happens: rescore changed customers in the background.

After an ingest commits, the customers whose history changed are rescored off
the request path, in batches: their rows are prepared again (the same fresh
rows scoring by id then uses) and scored with the serving scorer, whose rules
choose the actions and whose outbox writes each score and the actions that now
match in one transaction, cooldowns holding (`serving.outreach.outbox`). The
relay delivers them as it delivers every action.

What is due is read from ``customer_changes`` by a watermark kept per worker:
a poll reads the customers stamped since its previous look, less a short commit
grace (an ingest's stamp is taken inside its transaction, so one still in flight
when the worker looked carries a stamp at most that much older than the look).
So a poll reads only the last seconds' changes, and an idle poll writes
nothing. Once a minute a sweep reads the whole overlap (10 minutes) again, for a
transaction that took longer than the grace to commit, or a worker whose clock
runs behind. Each worker claims a batch in ``rescore_claims`` before rescoring it
(`LiveStore.claim_changes`: a conditional upsert, so each change is claimed by
one worker) and marks it done after, so N server workers rescore a change once
between them; a claim whose worker died runs out after its lease and is taken
again. An ingest in this process wakes the loop at once; another worker's
ingest is seen at the next poll. Should a change still be rescored twice (a
lease that ran out on a slow batch), nothing new is written: scores are keyed
by (customer, model, as_of) and actions by (customer, rule, cooldown window).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from serving.background import guarded
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
    #: (customer, change stamp) rescored by this worker, newest last
    rescored: list[tuple[str, datetime]] = field(default_factory=list)
    #: polls, the sweeps among them, and the ``customer_changes`` rows they read
    polls: int = 0
    sweeps: int = 0
    changes_read: int = 0

    def keep_recent(self, limit: int = 10_000) -> None:
        del self.lags[:-limit]
        del self.rescored[:-limit]


class Rescorer:
    """Claims customers whose history changed and rescores them with the serving scorer."""

    def __init__(self, live: LiveScores, *, overlap: timedelta = timedelta(minutes=10),
                 commit_grace: timedelta = timedelta(seconds=5),
                 sweep_every: timedelta = timedelta(minutes=1),
                 lease: timedelta = timedelta(minutes=5), batch_size: int = 500,
                 top_k: int = 5, worker: str | None = None) -> None:
        self.live = live
        self.overlap = overlap
        self.commit_grace = commit_grace
        self.sweep_every = sweep_every
        self.lease = lease
        self.batch_size = batch_size
        self.top_k = top_k
        #: who holds a claim: host, process and this rescorer
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stats = RescoreStats()
        #: changes stamped before this were all seen (None: sweep first)
        self._watermark: datetime | None = None
        self._last_sweep: datetime | None = None

    def claim(self, since: datetime) -> dict[str, datetime]:
        """The next batch of customers changed since ``since`` this worker now holds."""
        return self.live.store.claim_changes(since, worker=self.worker, lease=self.lease,
                                             limit=self.batch_size)

    def window_start(self, looked_at: datetime) -> tuple[datetime, bool]:
        """Where this poll starts reading changes, and whether it is a sweep (the whole
        overlap: the first poll, then every ``sweep_every``)."""
        if (self._watermark is None or self._last_sweep is None
                or looked_at - self._last_sweep >= self.sweep_every):
            return looked_at - self.overlap, True
        return self._watermark, False

    def run_once(self, state: ServingState) -> int:
        """Claim and rescore changed customers a batch at a time; how many were rescored."""
        if state.scorer.outbox is None:
            return 0
        looked_at = self.live.clock()
        since, sweep = self.window_start(looked_at)
        changed = self.live.store.changed_since(since)
        self.stats.polls += 1
        self.stats.sweeps += sweep
        self.stats.changes_read += len(changed)
        done = 0
        # nothing changed in the window: no claim to try (an idle poll writes nothing)
        while changed and (batch := self.claim(since)):
            try:
                self._rescore(state, batch)
            except BaseException:
                self.live.store.finish_claims(batch, worker=self.worker, done=False)
                raise
            self.live.store.finish_claims(batch, worker=self.worker)
            done += len(batch)
        # every change committed when we looked was read; one still in flight then carries
        # a stamp within the grace before the look
        mark = looked_at - self.commit_grace
        self._watermark = mark if self._watermark is None else max(self._watermark, mark)
        if sweep:
            self._last_sweep = looked_at
        return done

    def _rescore(self, state: ServingState, batch: dict[str, datetime]) -> None:
        as_of = live_as_of(self.live.clock())
        prepared = self.live.refresh(state, dict(batch), as_of=as_of)
        if prepared is not None:
            positions = list(range(len(prepared.features)))
            records = prepared.score(state, positions, explain="all", top_k=self.top_k)
            self.stats.actions += sum(r.recommended_action is not None for r in records)
            written = time.time()
            for customer_id in prepared.features.index:
                stamp = batch.get(str(customer_id))
                if stamp is not None:
                    self.stats.lags.append(written - _epoch(stamp))
        self.stats.rescored.extend(batch.items())
        self.stats.keep_recent()
        self.stats.batches += 1
        self.stats.customers += len(batch)


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
                await asyncio.to_thread(guarded, partial(self.live.build_base, state),
                                        what="live scoring: preparing the day's features",
                                        retry_seconds=self.poll_seconds)
            await asyncio.sleep(max(self.poll_seconds, 0.05))

    async def _rescore(self) -> None:
        assert self.rescorer is not None and self._wake is not None
        while True:
            state = self.holder.state
            if state is not None:
                _, problem = await asyncio.to_thread(
                    guarded, partial(self.rescorer.run_once, state),
                    what="live outreach: rescoring changed customers",
                    retry_seconds=self.poll_seconds)
                if problem is not None:
                    self.rescorer.stats.failures += 1
                    self.rescorer.stats.last_error = problem
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(self.poll_seconds, 0.05))
            self._wake.clear()
