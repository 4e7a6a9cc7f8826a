"""A dataset laid out as sorted numpy arrays, prepared once and cut at many dates.

Feature building is dominated by grouping millions of activity rows by
customer. Doing that with string ids and pandas groupbys at every snapshot
would repeat the expensive part (hashing ids) for each date. Instead each
activity table is converted once into integer customer codes and int64
nanosecond timestamps sorted by time, so that "the rows before T" is a prefix
found by binary search and "the rows in [T - w, T)" is a contiguous slice.
Per-customer sums are then `numpy.bincount` calls over slices.

Customers are coded by their position in the sorted list of ids, so every
output built from a `History` comes out sorted by ``customer_id``.
"""

from __future__ import annotations

import copy
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.dataset import ORDER_STATUSES, Dataset, statuses_at

NS_PER_DAY = 86_400 * 10**9
#: "never": a timestamp later than any real one, so `t < T` is False for it
NEVER = np.iinfo(np.int64).max
STATUS_CODES = {status: code for code, status in enumerate(ORDER_STATUSES)}
COMPLETED = STATUS_CODES["completed"]


def to_ns(values: pd.Series | pd.Index) -> np.ndarray:
    """Timestamps as int64 nanoseconds; NaT becomes `NEVER`."""
    stamps = pd.to_datetime(pd.Series(values)).astype("datetime64[ns]")
    result = stamps.to_numpy().view(np.int64).copy()
    result[stamps.isna().to_numpy()] = NEVER
    return result


def time_order(times: np.ndarray) -> np.ndarray | slice:
    """The permutation that sorts rows by time; a no-op slice when they already are."""
    if len(times) < 2 or bool(np.all(times[1:] >= times[:-1])):
        return slice(None)
    return np.argsort(times, kind="stable")


def factorize_ids(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and unique values of an id column.

    Python-object strings (what validation produces) are hashed about twice as
    fast by Arrow's dictionary encoding as by `pandas.factorize`; Arrow-backed
    and categorical columns already have a fast `pandas.factorize`.
    """
    if values.dtype == object:
        try:
            encoded = pa.array(values.to_numpy(), type=pa.string(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
        else:
            encoded = encoded.dictionary_encode()
            indices = encoded.indices
            if indices.null_count:
                indices = pc.fill_null(indices, -1)
            return (indices.to_numpy(zero_copy_only=False).astype(np.int64),
                    np.asarray(encoded.dictionary.to_pylist(), dtype=object))
    codes, uniques = pd.factorize(values)
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


def timestamp_ns(as_of: pd.Timestamp) -> int:
    return int(pd.Timestamp(as_of).as_unit("ns").value)


class OrderArrays:
    """Orders sorted by time. ``gap_days``: days since the customer's previous completed
    order, on completed orders only (NaN on the first one and on other statuses)."""

    def __init__(self, orders: pd.DataFrame, codes: np.ndarray) -> None:
        times = to_ns(orders["ordered_at"])
        order = time_order(times)
        self.code = codes[order]
        self.t = times[order]
        status_codes, statuses = pd.factorize(orders["status"])
        lookup = np.array([STATUS_CODES.get(str(s), -1) for s in statuses], dtype=np.int8)
        self.status = lookup[status_codes][order] if len(status_codes) else \
            np.zeros(0, np.int8)
        self.amount = orders["amount"].to_numpy(dtype=np.float64)[order]
        self.discount = np.nan_to_num(orders["discount"].to_numpy(dtype=np.float64)[order])
        self.items = orders["items"].to_numpy(dtype=np.float64)[order]
        self.completed = self.status == COMPLETED
        self.gap_days = _completed_gaps(self.code, self.t, self.completed)
        #: the sorting permutation: row ``i`` of the frame is at ``position[i]``
        self._order = order

    def end(self, as_of_ns: int) -> int:
        """Number of rows strictly before ``as_of``."""
        return int(np.searchsorted(self.t, as_of_ns, side="left"))

    def positions(self, rows: np.ndarray) -> np.ndarray:
        """Where rows of the orders frame (integer positions) are in these sorted arrays."""
        if isinstance(self._order, slice):
            return rows
        where = np.empty(len(self._order), dtype=np.int64)
        where[self._order] = np.arange(len(self._order))
        return where[rows]

    def with_statuses(self, positions: np.ndarray, statuses: np.ndarray) -> OrderArrays:
        """A copy whose orders at ``positions`` have the status codes ``statuses``; the
        gaps between completed orders are worked out again for their customers only."""
        out = copy.copy(self)
        out.status = self.status.copy()
        out.status[positions] = statuses
        out.completed = out.status == COMPLETED
        touched = np.isin(self.code, np.unique(self.code[positions]))
        out.gap_days = self.gap_days.copy()
        out.gap_days[touched] = _completed_gaps(self.code[touched], self.t[touched],
                                                out.completed[touched])
        return out


def _completed_gaps(code: np.ndarray, t: np.ndarray, completed: np.ndarray) -> np.ndarray:
    """Days since the customer's previous completed order, on completed orders (time-sorted
    rows; NaN on each customer's first completed order and on other statuses)."""
    gaps = np.full(len(t), np.nan)
    rows = np.flatnonzero(completed)
    if len(rows):
        by_customer = rows[np.argsort(code[rows], kind="stable")]
        same = code[by_customer][1:] == code[by_customer][:-1]
        deltas = (t[by_customer][1:] - t[by_customer][:-1]) / NS_PER_DAY
        gaps[by_customer[1:][same]] = deltas[same]
    return gaps


class EventArrays:
    """Events sorted by time with integer type codes.

    ``first_of_day`` marks each customer's first event of a calendar day, so
    that distinct active days in a window are a count over a slice. ``key`` is
    ``code * n_types + type`` for per-(customer, type) counts in one bincount.
    """

    def __init__(self, events: pd.DataFrame, codes: np.ndarray) -> None:
        times = to_ns(events["occurred_at"])
        order = time_order(times)
        self.code = codes[order]
        self.t = times[order]
        type_codes, types = pd.factorize(events["event_type"])
        self.types: list[str] = [str(t) for t in types]
        self.type = type_codes.astype(np.int64)[order]
        self.key = self.code.astype(np.int64) * max(len(self.types), 1) + self.type
        self.value = np.nan_to_num(events["value"].to_numpy(dtype=np.float64)[order])
        self.first_of_day = self._first_of_day()
        self.day_first_t = self.t[self.first_of_day]
        self.day_first_code = self.code[self.first_of_day]

    def _first_of_day(self) -> np.ndarray:
        flags = np.zeros(len(self.t), dtype=bool)
        if not len(self.t):
            return flags
        day = self.t // NS_PER_DAY
        # time-sorted rows of one calendar day form one block; inside a block the
        # first row of each customer is their first event that day
        bounds = np.flatnonzero(np.diff(day)) + 1
        starts = np.concatenate(([0], bounds))
        stops = np.concatenate((bounds, [len(day)]))
        unset = np.iinfo(np.int64).max
        first_row = np.full(int(self.code.max()) + 1, unset, dtype=np.int64)
        for start, stop in zip(starts, stops, strict=True):
            codes = self.code[start:stop]
            rows = np.arange(start, stop)
            np.minimum.at(first_row, codes, rows)
            flags[start:stop] = first_row[codes] == rows
            first_row[codes] = unset
        return flags

    def end(self, as_of_ns: int) -> int:
        return int(np.searchsorted(self.t, as_of_ns, side="left"))

    def start(self, since_ns: int) -> int:
        return int(np.searchsorted(self.t, since_ns, side="left"))


class History:
    """One dataset, coded and sorted once; tables are prepared on first use."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        customers = dataset.customers.drop_duplicates("customer_id")
        ids = pd.Index(customers["customer_id"].to_numpy(dtype=object))
        # factorize each id column once: hashing 10M strings is the costly part, and the
        # universe of customers is the customers table plus any id seen in history
        self._factorized: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        extra = []
        for name in ("orders", "events", "subscriptions"):
            frame = dataset.table(name)
            if frame is not None:
                self._factorized[name] = factorize_ids(frame["customer_id"])
                extra.append(pd.Index(self._factorized[name][1]))
        everyone = ids.append(extra).unique() if extra else ids
        self.customer_ids = np.sort(everyone.to_numpy(dtype=object))
        self.index = pd.Index(self.customer_ids, name="customer_id")
        by_id = customers.set_index(pd.Index(customers["customer_id"].to_numpy(dtype=object)))
        self.customers = by_id.reindex(self.index)
        self.signup_ns = to_ns(self.customers["signup_at"]) if "signup_at" in by_id.columns \
            else np.full(len(self.index), NEVER, dtype=np.int64)

    @property
    def n_customers(self) -> int:
        return len(self.customer_ids)

    def at(self, as_of_ns: int) -> History:
        """This history with each order's status as it was at ``as_of``.

        A database source logs status changes (`Dataset.order_status_changes`); a
        return recorded at or after T is undone for features as of T, as a row
        timestamped at or after T is left out. Without a change at or after T this
        is the history itself; otherwise a copy sharing everything but the orders'
        statuses (and the gaps between completed orders of the customers changed).
        """
        changes = self.dataset.order_status_changes
        orders = self.orders
        if changes is None or orders is None or changes.empty:
            return self
        when = to_ns(changes["changed_at"])
        later = changes["order_id"][when >= as_of_ns]
        if later.empty:
            return self
        frame = self.dataset.orders
        assert frame is not None  # there are order arrays
        rows = np.flatnonzero(frame["order_id"].isin(later.unique()).to_numpy())
        then = statuses_at(frame.iloc[rows][["order_id", "status"]], changes,
                           as_of=pd.Timestamp(as_of_ns))
        codes = np.array([STATUS_CODES.get(str(s), -1) for s in then["status"]], dtype=np.int8)
        positions = orders.positions(rows)
        differs = orders.status[positions] != codes
        if not differs.any():
            return self
        out = copy.copy(self)
        out.__dict__["orders"] = orders.with_statuses(positions[differs], codes[differs])
        out.__dict__["first_seen_ns"] = self.first_seen_ns
        return out

    def codes_of(self, table: str) -> np.ndarray:
        """Customer codes (positions in the sorted ids) of a table's rows."""
        local, uniques = self._factorized[table]
        if len(local) and local.min() < 0:
            raise ValueError(f"{table}: some rows have no customer_id (validate the dataset)")
        positions = self.index.get_indexer(pd.Index(uniques, dtype=object))
        return positions[local].astype(np.int32) if len(local) else np.zeros(0, np.int32)

    @cached_property
    def orders(self) -> OrderArrays | None:
        frame = self.dataset.orders
        return None if frame is None else OrderArrays(frame, self.codes_of("orders"))

    @cached_property
    def events(self) -> EventArrays | None:
        frame = self.dataset.events
        return None if frame is None else EventArrays(frame, self.codes_of("events"))

    @cached_property
    def subscriptions(self) -> pd.DataFrame | None:
        """Subscriptions with codes, ns times and the MRR of the customer's previous one."""
        frame = self.dataset.subscriptions
        if frame is None:
            return None
        subs = pd.DataFrame({
            "code": self.codes_of("subscriptions"),
            "started": to_ns(frame["started_at"]),
            "ended": to_ns(frame["ended_at"]),
            "plan": frame["plan"].astype(str).to_numpy(),
            "mrr": frame["mrr"].to_numpy(dtype=np.float64),
        }).sort_values(["code", "started"], kind="stable").reset_index(drop=True)
        subs["previous_mrr"] = subs.groupby("code")["mrr"].shift(1)
        return subs

    def running_subscriptions(self, moment_ns: int, *, strict_start: bool = False,
                              known_before_ns: int | None = None) -> np.ndarray:
        """Which rows of `subscriptions` run at ``moment``: begun and not yet ended.

        Begun: started at or before ``moment`` (strictly before with
        ``strict_start``, the state a feature at T sees); not ended: an end after
        ``moment`` (at or after it with ``strict_start``), or none. With
        ``known_before_ns`` only what was known then counts: subscriptions started
        before it, and an end at or after it is not known yet (still running).
        """
        subs = self.subscriptions
        if subs is None:
            return np.zeros(0, dtype=bool)
        started = subs["started"].to_numpy()
        ended = subs["ended"].to_numpy()  # no end = NEVER, after every moment
        if known_before_ns is not None:
            ended = np.where(ended >= known_before_ns, NEVER, ended)
        began = started < moment_ns if strict_start else started <= moment_ns
        if known_before_ns is not None:
            began &= started < known_before_ns
        return began & ((ended >= moment_ns) if strict_start else (ended > moment_ns))

    def subscribed_at(self, moment_ns: int, *, strict_start: bool = False,
                      known_before_ns: int | None = None) -> np.ndarray:
        """Per customer: a subscription runs at ``moment`` (see `running_subscriptions`)."""
        running = self.running_subscriptions(moment_ns, strict_start=strict_start,
                                             known_before_ns=known_before_ns)
        if not running.any():
            return np.zeros(self.n_customers, dtype=bool)
        codes = self.subscriptions["code"].to_numpy()  # type: ignore[index]
        return np.bincount(codes[running], minlength=self.n_customers) > 0

    @cached_property
    def attributes(self) -> pd.DataFrame:
        """Static attributes of every customer: numbers as float64, the rest as categories
        with sorted levels (rows are selected per date and unused levels dropped)."""
        table = self.customers[self.dataset.attribute_columns]
        out = {}
        for column in table.columns:
            values = table[column]
            if pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_numeric_dtype(
                    values.dtype):
                out[column] = values.astype(np.float64)
                continue
            text = values.astype(object)
            present = text.notna()
            text[present] = text[present].astype(str)
            categorical = pd.Categorical(text.to_numpy(dtype=object))
            if not categorical.categories.is_monotonic_increasing:
                categorical = categorical.reorder_categories(sorted(categorical.categories))
            out[column] = pd.Series(categorical, index=table.index)
        return pd.DataFrame(out, index=self.index)

    @cached_property
    def first_seen_ns(self) -> np.ndarray:
        """Each customer's earliest activity of any kind (`NEVER` when none)."""
        first = np.full(self.n_customers, NEVER, dtype=np.int64)
        if self.orders is not None:
            np.minimum.at(first, self.orders.code, self.orders.t)
        if self.events is not None:
            np.minimum.at(first, self.events.code, self.events.t)
        if self.subscriptions is not None:
            subs = self.subscriptions
            np.minimum.at(first, subs["code"].to_numpy(), subs["started"].to_numpy())
        return first

    def known_at(self, as_of_ns: int) -> np.ndarray:
        """Customers known at T: signed up before T, or any activity before T."""
        return (self.signup_ns < as_of_ns) | (self.first_seen_ns < as_of_ns)
