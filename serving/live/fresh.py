"""Scores by id on a live database: as of now, reflecting every committed row.

A live score is as of the request's day: features from every row before the
next midnight (UTC), so every row committed so far counts, as the default date
of a dataset counts its last day (rows stamped later than the server's clock
are refused at ingestion). ``?as_of=`` scores an exact earlier moment instead.

The fast path stays: the day's features of every customer are prepared once
per model version (``base``). Each customer's row carries the stamp its
history had in ``customer_changes`` when it was read. A request reads the
customer's current stamp (one indexed lookup, so what another server worker
committed a moment ago is seen: read-your-writes across workers) and, when it
differs, reads that customer's history again and prepares a fresh row
(``fresh``); every other customer keeps the prepared row. When the day turns
the whole base is rebuilt in the background (recency features move for
everyone); until then customers are prepared one by one as they are asked for.

Stamps are read before the rows they describe, so a row is never newer-stamped
than its data: at worst a customer is read once more than needed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

import pandas as pd

from features.contract import DataContractError
from features.io import read_dataset
from serving.ingest.store import LiveStore
from serving.live.history import HistoryReader
from serving.model_holder import freeze_long_lived
from serving.schemas import ScoreRecord

if TYPE_CHECKING:
    from models.prediction import PreparedMatrix
    from serving.model_holder import ServingState

logger = logging.getLogger(__name__)

Explain = Literal["all", "none"]


def live_as_of(now: datetime) -> pd.Timestamp:
    """The moment a live score is as of: the midnight (UTC) that ends ``now``'s day."""
    return pd.Timestamp(now).normalize() + pd.Timedelta(days=1)


@dataclass(frozen=True)
class Prepared:
    """Features of some customers as of one moment, prepared for one model version."""

    version: str
    as_of: pd.Timestamp
    #: the bundle's prepared matrix of these customers (`ChurnBundle.prepare_matrix`)
    matrix: PreparedMatrix
    #: the change stamp of each customer's history when it was read (None: never changed)
    stamps: dict[str, datetime | None] = field(default_factory=dict)

    @property
    def features(self) -> pd.DataFrame:
        return self.matrix.features

    def position(self, customer_id: str) -> int | None:
        return self.matrix.position_of(customer_id)

    def score(self, state: ServingState, positions: Sequence[int], *, explain: Explain,
              top_k: int) -> list[ScoreRecord]:
        """Score rows by position with the state's scorer (which records to its outbox)."""
        return state.scorer.score_rows(self.matrix, list(positions), as_of=self.as_of,
                                       explain=explain, top_k=top_k)


def prepare(state: ServingState, features: pd.DataFrame, *, as_of: pd.Timestamp,
            stamps: dict[str, datetime | None]) -> Prepared:
    """Prepare features for scoring by id with the state's model."""
    return Prepared(version=state.version, as_of=as_of, matrix=state.scorer.prepare(features),
                    stamps=stamps)


class LiveScores:
    """Fresh scores by id from the database of record; one per process, safe across threads."""

    def __init__(self, store: LiveStore, *, clock: Callable[[], datetime] | None = None) -> None:
        self.store = store
        self._clock = clock
        self._reader: HistoryReader | None = None
        self._base: Prepared | None = None
        self._fresh: dict[str, Prepared] = {}
        self._build_lock = threading.Lock()
        #: customers prepared one by one since start (their history changed): for tests and /metrics
        self.refreshed = 0
        #: whole reads of the database for the day's matrix (tests and /metrics)
        self.builds = 0
        #: a whole read found nothing to prepare (no history yet): it is tried again only
        #: once the database's latest change stamp has moved from ``_unusable_latest``
        self._unusable = False
        self._unusable_latest: datetime | None = None

    def clock(self) -> datetime:
        """Naive UTC now: the injected clock, else the store's."""
        return (self._clock or self.store.clock)()

    @property
    def reader(self) -> HistoryReader:
        if self._reader is None:
            self._reader = HistoryReader(self.store.engine)
        return self._reader

    @property
    def base(self) -> Prepared | None:
        return self._base

    # -- the day's matrix --------------------------------------------------------------

    def base_is_current(self, state: ServingState) -> bool:
        base = self._base
        return (base is not None and base.version == state.version
                and base.as_of == live_as_of(self.clock()))

    def build_base(self, state: ServingState) -> Prepared | None:
        """Prepare every customer as of today for the state's model (blocking: seconds).

        Does nothing when the base is current or another thread is building it.
        """
        if self.base_is_current(state) or not self._build_lock.acquire(blocking=False):
            return self._base
        try:
            as_of = live_as_of(self.clock())
            if self._unusable and self.store.latest_change() == self._unusable_latest:
                return None  # nothing was written since the read that found nothing to use
            stamps = self.store.changed_since(None)  # before the rows: see the docstring
            latest = max((s for s in stamps.values() if s is not None), default=None)
            self.builds += 1
            try:
                dataset = read_dataset(self.store.url).dataset
            except DataContractError as error:  # e.g. no history yet: customers one by one
                logger.warning("live scoring: the database cannot be prepared whole (tried "
                               "again once something is written to it): %s", error)
                self._unusable, self._unusable_latest = True, latest
                return None
            self._unusable = False
            features = state.scorer.features(dataset, as_of=as_of)
            base = prepare(state, features, as_of=as_of, stamps=stamps)
            self._base = base
            # fresh rows of the same day and model that are newer than the base stay
            self._fresh = {customer_id: entry for customer_id, entry in self._fresh.items()
                           if entry.as_of == as_of and entry.version == base.version
                           and entry.stamps.get(customer_id) != stamps.get(customer_id)}
            logger.info("live scoring: %d customers prepared as of %s for model version %s",
                        len(features), as_of.isoformat(), base.version)
            freeze_long_lived()  # the day's matrix lives until tomorrow: out of full collections
            return base
        finally:
            self._build_lock.release()

    # -- by id ---------------------------------------------------------------------------

    def score(self, state: ServingState, customer_id: str, *, explain: Explain, top_k: int,
              as_of: datetime | None = None) -> ScoreRecord | None:
        """Score one customer as of now (or ``as_of``); None if the database does not know them.

        Raises `serving.ingest.store.DatabaseUnavailableError` when the database is down.
        """
        if as_of is not None:
            return self._score_at(state, customer_id, pd.Timestamp(as_of), explain=explain,
                                  top_k=top_k)
        stamp = self.store.stamps([customer_id]).get(customer_id)
        day = live_as_of(self.clock())
        for candidate in (self._fresh.get(customer_id), self._base):
            if (candidate is not None and candidate.version == state.version
                    and candidate.as_of == day and candidate.stamps.get(customer_id) == stamp):
                position = candidate.position(customer_id)
                if position is not None:
                    [record] = candidate.score(state, [position], explain=explain, top_k=top_k)
                    return record
        fresh = self.refresh(state, {customer_id: stamp}, as_of=day)
        if fresh is None or (position := fresh.position(customer_id)) is None:
            return None
        [record] = fresh.score(state, [position], explain=explain, top_k=top_k)
        return record

    def refresh(self, state: ServingState, stamps: dict[str, datetime | None], *,
                as_of: pd.Timestamp) -> Prepared | None:
        """Read these customers' history again and prepare their rows as of ``as_of``.

        ``stamps`` were read before this call (the versions the rows will carry).
        """
        dataset = self.reader.read(list(stamps))
        if dataset is None:
            return None
        features = state.scorer.features(dataset, as_of=as_of)
        if features.empty:
            return None
        prepared = prepare(state, features, as_of=as_of,
                           stamps={str(c): stamps.get(str(c)) for c in features.index})
        for customer_id in features.index:
            self._fresh[str(customer_id)] = prepared
        self.refreshed += len(features)
        return prepared

    def _score_at(self, state: ServingState, customer_id: str, as_of: pd.Timestamp, *,
                  explain: Explain, top_k: int) -> ScoreRecord | None:
        """An exact moment: only rows before ``as_of`` count, orders with the status they had
        then; nothing is kept."""
        dataset = self.reader.read([customer_id], as_of=as_of)
        if dataset is None:
            return None
        features = state.scorer.features(dataset, as_of=as_of, customer_ids=[customer_id])
        if features.empty:
            return None
        [record] = state.scorer.score_features(features, as_of=as_of, explain=explain,
                                               top_k=top_k)
        return record
