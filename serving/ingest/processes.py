"""Ingests written by processes of their own, so a score by id never waits behind one.

An ingest's validation, keys and statements are Python work (about 20 ms of CPU
for 100 events). Run in the API process, that work holds the interpreter the
scores by id need; a few ingests a second were enough to lengthen the by-id tail
(bench/live_bench.py). So the API process only parses the request, and a small
pool of ingest processes (``CHURNLENS_INGEST_PROCESSES``, spawned at start-up)
validates and writes it, each with its own `LiveStore` on the same database. The
request is answered once the transaction has committed, with the same result or
the same error (422 naming row and field, 503) as when written in-process; the
API process's clock is the request's ``now``.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timedelta

import pandas as pd

from serving.ingest.store import DatabaseUnavailableError, IngestResult, LiveStore

#: one store per database in each ingest process (its engine and pool of connections)
_STORES: dict[str, LiveStore] = {}


def _store(url: str) -> LiveStore:
    store = _STORES.get(url)
    if store is None:
        store = _STORES[url] = LiveStore(url)
    return store


def _ingest_here(url: str, table: str, raw: pd.DataFrame, now: datetime,
                 future_tolerance: timedelta) -> IngestResult:
    """In an ingest process: what `LiveStore.ingest` does in the API process."""
    return _store(url).ingest(table, raw, future_tolerance=future_tolerance, now=now)


def _ready() -> bool:
    """In an ingest process: nothing, so that start-up imports happen before the first ingest."""
    return True


def in_memory(url: str) -> bool:
    """A SQLite database in memory exists in one process only: it cannot be handed over."""
    return url.split("?")[0] in ("sqlite://", "sqlite:///:memory:")


class IngestProcesses:
    """A pool of ingest processes for one database; `ingest` blocks until committed."""

    def __init__(self, url: str, *, processes: int) -> None:
        self.url = url
        self.processes = processes
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Spawn the processes now (their imports take a second or two), not at the first ingest."""
        self._executor().submit(_ready)

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # spawn: the API process runs threads, which a fork would copy mid-step
                self._pool = ProcessPoolExecutor(
                    max_workers=self.processes, mp_context=multiprocessing.get_context("spawn"))
            return self._pool

    def ingest(self, table: str, raw: pd.DataFrame, *, now: datetime,
               future_tolerance: timedelta) -> IngestResult:
        """Validate and write in an ingest process; its result, or its error raised here.

        An ingest process that died answers `DatabaseUnavailableError` (nothing is
        acknowledged; a retry is harmless) and the pool is started again.
        """
        pool = self._executor()
        try:
            return pool.submit(_ingest_here, self.url, table, raw, now, future_tolerance).result()
        except BrokenProcessPool as error:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise DatabaseUnavailableError(
                f"the ingest process stopped before answering ({error}); nothing is "
                "acknowledged, send the request again") from None

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
