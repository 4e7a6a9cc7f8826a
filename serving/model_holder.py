"""The model being served, and how it is replaced without dropping requests.

A `ServingState` is immutable once built: the loaded model, its scorer, and
the features of the configured dataset (for scoring by id). The `ModelHolder`
keeps one reference to the current state. A request reads that reference once
and uses it to the end, so a swap (one attribute assignment, atomic in Python)
never changes the model under a request in flight. A new state is built and
warmed in a worker thread before it is swapped in; if that fails, the old one
keeps serving.

The holder polls the registry on an injectable clock (``pause``: what it
awaits between two polls), so tests move the alias and let exactly one poll
happen instead of sleeping; ``settled`` is set once the first load has
succeeded or failed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pandas as pd

from serving.schemas import ScoreRecord
from serving.scorer import Scorer

if TYPE_CHECKING:
    from features.dataset import Dataset
    from models.loading import LoadedModel
    from models.prediction import PreparedMatrix
    from serving.metrics import ServiceMetrics
    from serving.outreach.outbox import Outbox
    from serving.outreach.rules import RuleSet

logger = logging.getLogger(__name__)


#: what the holder awaits between two registry polls, given the seconds to wait
Pause = Callable[[float], Awaitable[None]]


class ModelNotReadyError(RuntimeError):
    """No model has been loaded and warmed yet."""


@dataclass(frozen=True)
class ServingState:
    """Everything one model version needs to answer requests."""

    loaded: LoadedModel
    scorer: Scorer
    loaded_at: datetime
    #: the configured dataset's features as of its default date, prepared for this model
    #: once (None without a dataset): a request by id scores one row of it
    prepared: PreparedMatrix | None = None
    as_of: pd.Timestamp | None = None
    warmup_seconds: float = 0.0

    @property
    def version(self) -> str:
        return str(self.loaded.version)

    def score_by_id(self, customer_id: str, *, explain: bool, top_k: int) -> ScoreRecord | None:
        """Score a customer of the served dataset, or None if it does not know them."""
        if self.prepared is None or self.as_of is None:
            return None
        position = self.prepared.position_of(customer_id)
        if position is None:
            return None
        [record] = self.scorer.score_rows(self.prepared, [position], as_of=self.as_of,
                                          explain="all" if explain else "none", top_k=top_k)
        return record


def warmup_dataset() -> Dataset:
    """A one-customer history that exercises the whole by-history scoring path."""
    from features.contract import validate_tables

    now = pd.Timestamp("2024-06-01")
    raw = {
        "customers": pd.DataFrame({"customer_id": ["warmup"],
                                   "signup_at": [now - pd.Timedelta(days=400)]}),
        "orders": pd.DataFrame({
            "order_id": ["w1", "w2", "w3"], "customer_id": ["warmup"] * 3,
            "ordered_at": [now - pd.Timedelta(days=d) for d in (300, 120, 30)],
            "amount": [40.0, 55.0, 35.0],
        }),
    }
    return validate_tables(raw).dataset


def build_state(
    *, model_uri: str, dataset: Dataset | None, rules: RuleSet | None = None,
    outbox: Outbox | None = None, top_k: int = 5,
) -> ServingState:
    """Load a model, compute the dataset's features with it, and warm it up.

    Blocking (seconds to minutes for a large dataset): call it in a worker
    thread. Raises whatever loading or warming raises; the caller keeps the old
    state then.
    """
    from models.loading import load_model

    started = time.perf_counter()
    loaded = load_model(model_uri)
    scorer = Scorer(loaded, rules=rules, outbox=None)
    # warm-up on a synthetic history: the by-history path end to end, with reasons
    probe = warmup_dataset()
    scorer.score_dataset(probe, as_of=pd.Timestamp("2024-06-01"), explain="all", top_k=top_k)
    prepared = as_of = None
    if dataset is not None:
        as_of = dataset.default_as_of()
        prepared = scorer.prepare(scorer.features(dataset, as_of=as_of))
        prepared.position_of("")  # the id index, built before the first request
        if len(prepared):
            # warm-up on the by-id path, exactly as a request runs it
            scorer.score_rows(prepared, [0], as_of=as_of, explain="all", top_k=top_k)
    # the outbox is attached only after the warm-up, which must not write scores
    scorer.outbox = outbox
    return ServingState(
        loaded=loaded, scorer=scorer, loaded_at=datetime.now(UTC), prepared=prepared,
        as_of=as_of, warmup_seconds=time.perf_counter() - started,
    )


def freeze_long_lived() -> None:
    """Move what is alive now (the served model and its prepared dataset) out of the
    collector's sight.

    A full collection walks every tracked object: with a large prepared dataset
    that is a pause of a hundred milliseconds or more in the middle of some request
    (the by-id latency tail). What a swap leaves behind is unfrozen first, so the
    previous state's cycles are still collected.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ModelHolder:
    """Holds the current `ServingState` and follows the registry alias."""

    def __init__(
        self, *, model_uri: str, dataset: Dataset | None = None, rules: RuleSet | None = None,
        outbox: Outbox | None = None, top_k: int = 5, metrics: ServiceMetrics | None = None,
        pause: Pause = asyncio.sleep,
    ) -> None:
        self.model_uri = model_uri
        self.dataset = dataset
        self.rules = rules
        self.outbox = outbox
        self.top_k = top_k
        self.metrics = metrics
        self._state: ServingState | None = None
        self.last_error: str | None = None
        self._swap_lock = threading.Lock()
        self._pause = pause  # injectable, so tests decide when the next poll happens
        #: set once the first load has either succeeded or failed (``last_error``)
        self.settled = threading.Event()

    @property
    def state(self) -> ServingState | None:
        return self._state

    def current(self) -> ServingState:
        """The state a request should use from start to finish."""
        state = self._state
        if state is None:
            raise ModelNotReadyError(self.last_error or "the model is still loading")
        return state

    def load(self) -> ServingState:
        """Build and warm a state for the URI's current version, then swap it in."""
        with self._swap_lock:
            try:
                state = build_state(model_uri=self.model_uri, dataset=self.dataset,
                                    rules=self.rules, outbox=self.outbox, top_k=self.top_k)
            except Exception as error:
                self.last_error = f"loading {self.model_uri} failed: {error}"
                if self.metrics is not None and self._state is not None:
                    self.metrics.model_swap_failures.inc()
                raise
            previous = None if self._state is None else self._state.version
            self._state = state
            self.last_error = None
            freeze_long_lived()
        if self.metrics is not None:
            self.metrics.set_model(name=state.loaded.name, version=state.version,
                                   alias=state.loaded.alias)
            if previous is not None:
                self.metrics.model_swaps.inc()
        logger.info("serving %s version %s (was %s), warmed in %.1f s", state.loaded.name,
                    state.version, previous or "none", state.warmup_seconds)
        return state

    def registry_version(self) -> str:
        """The version the model URI points at now (may differ from the one served)."""
        from models.loading import resolve_version

        return str(resolve_version(self.model_uri))

    def refresh(self) -> bool:
        """Swap in the registry's version if it differs from the one served; True if swapped."""
        state = self._state
        if state is not None and self.registry_version() == state.version:
            return False
        self.load()
        return True

    def fail(self, problem: str) -> None:
        """Record why no model can be loaded (shown, redacted, by /readyz)."""
        self.last_error = problem
        self.settled.set()

    async def follow(self, *, poll_seconds: float) -> None:
        """Load the model, then poll the registry forever (cancel the task to stop)."""
        while True:
            try:
                await asyncio.to_thread(self.refresh)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.last_error = self.last_error or f"{type(error).__name__}: {error}"
                logger.warning("model refresh from %s failed: %s", self.model_uri, error)
            self.settled.set()
            if poll_seconds <= 0 and self._state is not None:
                return
            await self._pause(poll_seconds if poll_seconds > 0 else 5.0)
