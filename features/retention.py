"""Retention metrics as the business measures them, per calendar month.

These are the numbers a retention manager already tracks: churn
rate = customers lost in a period / customers at its start, MRR churn and net
revenue retention for subscriptions, repeat-purchase rate, average order value
of returning customers, return / cancellation / unclaimed-parcel rates, and a
cohort retention matrix. Every function is pure: a `Dataset` and an explicit
``as_of`` in, a frame out; only rows strictly before ``as_of`` are used and
only calendar months that ended by ``as_of`` are reported, so a half-finished
month never looks like a collapse.

Rules (the churn definitions of docs/features.md, per month):

- **inactivity** churn: a customer is *active* on day t when they placed a
  completed order in the ``horizon_days`` before t, i.e. in [t − H, t).
  Customers at the start of month [s, e) = active at s; lost in the month =
  those of them not active at e. Equivalently, a customer is lost in the month
  in which their last completed order + H falls (and they did not order again
  by then).
- **subscription** churn: a customer is active at t when a subscription of
  theirs is active (``started_at`` ≤ t < ``ended_at``, empty end = active).
  Lost in the month = active at s and not at e: their subscription ended and
  no following one is active.
- **MRR**: a customer's MRR at t is the sum of ``mrr`` over their active
  subscriptions. For the customers paying at s: churned MRR (they pay nothing at
  e), contraction (pay less), expansion (pay more, e.g. upgrades). Net revenue
  retention = their MRR at e / their MRR at s; gross MRR churn = (churned +
  contraction) / MRR at s. New customers never enter either ratio.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.dataset import ORDER_STATUSES, Dataset
from features.history import COMPLETED, NEVER, NS_PER_DAY, History, timestamp_ns, to_ns

MONTH_INDEX_NAME = "month"


# --------------------------------------------------------------------------- helpers


def _month_floor(stamp: pd.Timestamp) -> pd.Timestamp:
    return pd.Timestamp(year=stamp.year, month=stamp.month, day=1)


def complete_months(first: pd.Timestamp, as_of: pd.Timestamp) -> pd.DatetimeIndex:
    """Starts of the calendar months from ``first``'s month whose end is on or before ``as_of``."""
    start = _month_floor(pd.Timestamp(first))
    last_end = _month_floor(pd.Timestamp(as_of))  # months ending by as_of start before this
    if start >= last_end:
        return pd.DatetimeIndex([], name=MONTH_INDEX_NAME)
    months = pd.date_range(start, last_end, freq="MS", inclusive="left")
    return pd.DatetimeIndex(months.to_numpy(), name=MONTH_INDEX_NAME)  # no freq


def _month_number(values: pd.Series) -> np.ndarray:
    """Months since 1970-01 as int64 (NaT becomes the smallest int64)."""
    return values.to_numpy(dtype="datetime64[ns]").astype("datetime64[M]").astype(np.int64)


def _month_start_of(number: int) -> pd.Timestamp:
    years, months = divmod(int(number), 12)
    return pd.Timestamp(year=1970 + years, month=months + 1, day=1)


def _month_of_ns(stamps: np.ndarray) -> np.ndarray:
    """Months since 1970-01 of int64 nanosecond timestamps."""
    return np.asarray(stamps, dtype=np.int64).astype("datetime64[ns]").astype(
        "datetime64[M]").astype(np.int64)


@dataclass(frozen=True)
class _Rows:
    """Rows of one table before ``as_of``: customer codes, times (ns), and what a metric reads."""

    code: np.ndarray
    t: np.ndarray
    amount: np.ndarray | None = None
    status: np.ndarray | None = None

    def where(self, keep: np.ndarray) -> _Rows:
        return _Rows(self.code[keep], self.t[keep],
                     None if self.amount is None else self.amount[keep],
                     None if self.status is None else self.status[keep])


class _Before:
    """A dataset's `features.history.History` seen as of ``as_of``, cut once for all metrics.

    Customers are coded once by the shared `History` (hashing ids is the costly
    part on tens of millions of events); each table is cut to the rows strictly
    before ``as_of`` once and shared by every metric.
    """

    def __init__(self, dataset: Dataset, as_of: pd.Timestamp) -> None:
        self.dataset = dataset
        self.as_of = pd.Timestamp(as_of)
        self.as_of_ns = timestamp_ns(self.as_of)
        self.history = History(dataset)
        self.n = self.history.n_customers
        self._cache: dict[str, Any] = {}

    def _memo(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def orders(self) -> _Rows | None:
        """Orders of any status placed before ``as_of``."""
        def build() -> _Rows | None:
            arrays = self.history.orders
            end = 0 if arrays is None else arrays.end(self.as_of_ns)
            if arrays is None or end == 0:
                return None
            return _Rows(arrays.code[:end], arrays.t[:end], arrays.amount[:end],
                         arrays.status[:end])
        return self._memo("orders", build)

    def completed_orders(self) -> _Rows | None:
        """Completed orders (purchases) placed before ``as_of``."""
        def build() -> _Rows | None:
            rows = self.orders()
            if rows is None:
                return None
            keep = np.asarray(rows.status) == COMPLETED
            return rows.where(keep) if keep.any() else None
        return self._memo("completed", build)

    def events(self) -> _Rows | None:
        """Events before ``as_of``: codes and times only (the cohort bitmap needs no more)."""
        def build() -> _Rows | None:
            frame = self.dataset.events
            if frame is None or frame.empty:
                return None
            times = to_ns(frame["occurred_at"])
            keep = times < self.as_of_ns
            if not keep.any():
                return None
            return _Rows(self.history.codes_of("events")[keep], times[keep])
        return self._memo("events", build)

    def subscriptions(self) -> pd.DataFrame | None:
        """Subscriptions started before ``as_of``, an end at or after it not known yet
        (`NEVER`): the shared `History.subscriptions` rows with ``known`` ends."""
        def build() -> pd.DataFrame | None:
            subs = self.history.subscriptions
            if subs is None:
                return None
            known = subs[subs["started"].to_numpy() < self.as_of_ns]
            if known.empty:
                return None
            ended = known["ended"].to_numpy()
            return known.assign(ended=np.where(ended >= self.as_of_ns, NEVER, ended))
        return self._memo("subscriptions", build)

    def subscribed_at(self, boundary: pd.Timestamp) -> np.ndarray:
        """Per customer: a subscription known at ``as_of`` runs at ``boundary``."""
        return self.history.subscribed_at(timestamp_ns(boundary), known_before_ns=self.as_of_ns)

    def running_at(self, boundary: pd.Timestamp) -> np.ndarray:
        """Rows of the shared `History.subscriptions` running at ``boundary`` (as known)."""
        return self.history.running_subscriptions(timestamp_ns(boundary),
                                                  known_before_ns=self.as_of_ns)


def _active_mask(n_customers: int, codes: np.ndarray) -> np.ndarray:
    mask = np.zeros(n_customers, dtype=bool)
    mask[codes[codes >= 0]] = True
    return mask


def _lost_tally(months: pd.DatetimeIndex, active_at: list[np.ndarray]) -> pd.DataFrame:
    """customers_at_start / customers_lost per month from the active sets at each boundary."""
    at_start = np.array([a.sum() for a in active_at[:-1]], dtype=np.int64)
    lost = np.array([(a & ~b).sum() for a, b in itertools.pairwise(active_at)],
                    dtype=np.int64)
    return pd.DataFrame({"customers_at_start": at_start, "customers_lost": lost}, index=months)


def _churn_from_tally(tally: pd.DataFrame) -> pd.DataFrame:
    """churn_rate = lost / at start, from the first month with customers at its start."""
    if tally.empty:
        return _empty_monthly(CHURN_COLUMNS)
    at_start = tally["customers_at_start"].to_numpy()
    lost = tally["customers_lost"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(at_start > 0, lost / np.maximum(at_start, 1), np.nan)
    frame = tally.assign(churn_rate=rate)[CHURN_COLUMNS]
    first_nonzero = np.flatnonzero(at_start > 0)
    return frame.iloc[first_nonzero[0]:] if first_nonzero.size else frame.iloc[0:0]


def _boundaries(months: pd.DatetimeIndex) -> list[pd.Timestamp]:
    if months.empty:
        return []
    return [*months, months[-1] + pd.offsets.MonthBegin(1)]


def _empty_monthly(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=columns, index=pd.DatetimeIndex([], name=MONTH_INDEX_NAME),
                        dtype="float64")


# --------------------------------------------------------------------------- churn rate

CHURN_COLUMNS = ["customers_at_start", "customers_lost", "churn_rate"]


def inactivity_churn_by_month(dataset: Dataset, *, as_of: pd.Timestamp,
                              horizon_days: int = 90) -> pd.DataFrame:
    """Customer churn rate per month under the inactivity rule (module docstring).

    Returns a frame indexed by month start with ``customers_at_start``,
    ``customers_lost`` and ``churn_rate`` = lost / at start, beginning with the
    first month that had active customers at its start.
    """
    return _inactivity_churn(_Before(dataset, as_of), horizon_days=horizon_days)


def _inactivity_churn(history: _Before, *, horizon_days: int) -> pd.DataFrame:
    return _churn_from_tally(_inactivity_tally(history, horizon_days=horizon_days))


def _inactivity_tally(history: _Before, *, horizon_days: int) -> pd.DataFrame:
    orders = history.completed_orders()
    if orders is None:
        return _empty_monthly(TALLY_COLUMNS["inactivity_churn"])
    months = complete_months(pd.Timestamp(int(orders.t.min())), history.as_of)
    if months.empty:
        return _empty_monthly(TALLY_COLUMNS["inactivity_churn"])
    horizon = int(horizon_days) * NS_PER_DAY
    n = history.n
    active_at = []
    for boundary in _boundaries(months):
        b = timestamp_ns(boundary)
        window = (orders.t >= b - horizon) & (orders.t < b)
        active_at.append(_active_mask(n, orders.code[window]))
    return _lost_tally(months, active_at)


def subscription_churn_by_month(dataset: Dataset, *, as_of: pd.Timestamp) -> pd.DataFrame:
    """Customer churn rate per month under the subscription rule (module docstring)."""
    return _subscription_churn(_Before(dataset, as_of))


def _subscription_churn(history: _Before) -> pd.DataFrame:
    return _churn_from_tally(_subscription_tally(history))


def _subscription_tally(history: _Before) -> pd.DataFrame:
    subs = history.subscriptions()
    if subs is None:
        return _empty_monthly(TALLY_COLUMNS["subscription_churn"])
    months = complete_months(pd.Timestamp(int(subs["started"].min())), history.as_of)
    if months.empty:
        return _empty_monthly(TALLY_COLUMNS["subscription_churn"])
    return _lost_tally(months, [history.subscribed_at(b) for b in _boundaries(months)])


# --------------------------------------------------------------------------- MRR

MRR_COLUMNS = ["starting_mrr", "expansion_mrr", "contraction_mrr", "churned_mrr",
               "retained_mrr", "gross_mrr_churn_rate", "net_revenue_retention"]


def mrr_by_month(dataset: Dataset, *, as_of: pd.Timestamp) -> pd.DataFrame:
    """MRR movements of the customers paying at each month's start (module docstring).

    ``retained_mrr`` is what those customers pay at the month's end (expansion
    included); ``net_revenue_retention`` = retained / starting;
    ``gross_mrr_churn_rate`` = (churned + contraction) / starting. Subscriptions
    without an ``mrr`` value count as 0. Empty when there is no MRR at all.
    """
    return _mrr(_Before(dataset, as_of))


def _mrr(history: _Before) -> pd.DataFrame:
    return _mrr_from_tally(_mrr_tally(history))


def _mrr_tally(history: _Before) -> pd.DataFrame:
    """Per month: the MRR of the customers paying at its start, and its movements (sums)."""
    known = history.subscriptions()
    if known is None or not (known["mrr"].fillna(0) > 0).any():
        return _empty_monthly(TALLY_COLUMNS["mrr"])
    months = complete_months(pd.Timestamp(int(known["started"].min())), history.as_of)
    if months.empty:
        return _empty_monthly(TALLY_COLUMNS["mrr"])
    subs = history.history.subscriptions  # every row; `running_at` masks the known ones
    assert subs is not None
    mrr = subs["mrr"].fillna(0.0).to_numpy(dtype=float)
    codes = subs["code"].to_numpy()
    n = history.n

    def mrr_at(at: pd.Timestamp) -> np.ndarray:
        active = history.running_at(at)
        return np.bincount(codes[active], weights=mrr[active], minlength=n)

    per_boundary = [mrr_at(b) for b in _boundaries(months)]
    rows = []
    for start, end in itertools.pairwise(per_boundary):
        paying = start > 0
        s, e = start[paying], end[paying]
        kept = e > 0
        rows.append((s.sum(), np.clip(e[kept] - s[kept], 0, None).sum(),
                     np.clip(s[kept] - e[kept], 0, None).sum(), s[e <= 0].sum(), e.sum()))
    return pd.DataFrame(rows, columns=TALLY_COLUMNS["mrr"], index=months, dtype=float)


def _mrr_from_tally(tally: pd.DataFrame) -> pd.DataFrame:
    if tally.empty:
        return _empty_monthly(MRR_COLUMNS)
    starting = tally["starting_mrr"].to_numpy()
    churn = (tally["churned_mrr"] + tally["contraction_mrr"]).to_numpy()
    retained = tally["retained_mrr"].to_numpy()
    paying = starting > 0
    divisor = np.where(paying, starting, 1.0)
    frame = tally.assign(gross_mrr_churn_rate=np.where(paying, churn / divisor, np.nan),
                         net_revenue_retention=np.where(paying, retained / divisor, np.nan)
                         )[MRR_COLUMNS]
    first = np.flatnonzero(starting > 0)
    return frame.iloc[first[0]:] if first.size else frame.iloc[0:0]


# --------------------------------------------------------------------------- orders

REPEAT_COLUMNS = ["ordering_customers", "returning_customers", "repeat_purchase_rate",
                  "returning_orders", "returning_revenue", "returning_aov"]


def repeat_purchase_by_month(dataset: Dataset, *, as_of: pd.Timestamp) -> pd.DataFrame:
    """Repeat purchases per month, from completed orders.

    A *returning* customer in a month placed a completed order in it and had
    placed one before the month began. ``repeat_purchase_rate`` = returning /
    ordering customers; ``returning_aov`` = mean amount of the month's completed
    orders placed by returning customers (NaN when there are none).
    """
    return _repeat_purchase(_Before(dataset, as_of))


def _repeat_purchase(history: _Before) -> pd.DataFrame:
    return _repeat_from_tally(_repeat_tally(history))


def _repeat_tally(history: _Before) -> pd.DataFrame:
    """Per month: ordering and returning customers, returning orders and their revenue."""
    orders = history.completed_orders()
    if orders is None:
        return _empty_monthly(TALLY_COLUMNS["repeat_purchase"])
    months = complete_months(pd.Timestamp(int(orders.t.min())), history.as_of)
    if months.empty:
        return _empty_monthly(TALLY_COLUMNS["repeat_purchase"])
    month_no = _month_of_ns(orders.t)
    first_month = pd.Series(month_no).groupby(orders.code).transform("min").to_numpy()
    frame = pd.DataFrame({
        "customer": orders.code, "month": month_no, "returning": month_no > first_month,
        "amount": np.asarray(orders.amount, dtype=float),
    })
    grouped = frame.groupby("month")
    ordering = grouped["customer"].nunique()
    returning_rows = frame.loc[frame["returning"]]
    by_returning = returning_rows.groupby("month")
    result = pd.DataFrame({
        "ordering_customers": ordering,
        "returning_customers": by_returning["customer"].nunique(),
        "returning_orders": by_returning.size(),
        "returning_revenue": by_returning["amount"].sum(),
    })
    result.index = pd.DatetimeIndex([_month_start_of(m) for m in result.index],
                                    name=MONTH_INDEX_NAME)
    result = result.reindex(months)
    counts = TALLY_COLUMNS["repeat_purchase"]
    result[counts] = result[counts].fillna(0)
    return result[counts]


def _repeat_from_tally(tally: pd.DataFrame) -> pd.DataFrame:
    if tally.empty:
        return _empty_monthly(REPEAT_COLUMNS)
    result = tally.copy()
    result["repeat_purchase_rate"] = (result["returning_customers"]
                                      / result["ordering_customers"].where(
                                          result["ordering_customers"] > 0))
    result["returning_aov"] = (result["returning_revenue"]
                               / result["returning_orders"].where(result["returning_orders"] > 0))
    return result[REPEAT_COLUMNS]


def overall_repeat_customer_share(dataset: Dataset, *, as_of: pd.Timestamp) -> float:
    """Share of customers with a completed order who have placed two or more (NaN if none)."""
    return _repeat_share(_Before(dataset, as_of))


def _repeat_share(history: _Before) -> float:
    buyers, repeaters = _repeat_share_tally(history)
    return repeaters / buyers if buyers else float("nan")


def _repeat_share_tally(history: _Before) -> tuple[int, int]:
    """(customers with a completed order, those with two or more)."""
    orders = history.completed_orders()
    if orders is None:
        return 0, 0
    counts = np.bincount(orders.code, minlength=history.n)
    return int((counts > 0).sum()), int((counts >= 2).sum())


@dataclass(frozen=True)
class Trend:
    """A least-squares line through a monthly series, in the series' unit per month."""

    slope_per_month: float
    relative_slope: float  #: slope / mean level: 0.02 = grows 2% of its level a month
    direction: str  #: "growing" | "falling" | "flat" | "unknown"
    months: int


def monthly_trend(series: pd.Series, *, flat_below: float = 0.01) -> Trend:
    """Fit y = a + b·month over the non-missing months; |b / mean| < ``flat_below`` is flat."""
    values = series.dropna()
    if len(values) < 2:
        return Trend(float("nan"), float("nan"), "unknown", len(values))
    x = np.arange(len(series), dtype=float)[series.notna().to_numpy()]
    y = values.to_numpy(dtype=float)
    slope = float(np.polyfit(x, y, 1)[0])
    mean = float(y.mean())
    relative = slope / mean if mean else float("nan")
    if np.isnan(relative) or abs(relative) < flat_below:
        direction = "flat"
    else:
        direction = "growing" if relative > 0 else "falling"
    return Trend(slope, relative, direction, len(values))


STATUS_COLUMNS = ["orders", "returned", "cancelled", "unclaimed", "return_rate",
                  "cancellation_rate", "unclaimed_rate"]


def order_status_rates_by_month(dataset: Dataset, *, as_of: pd.Timestamp) -> pd.DataFrame:
    """Returned, cancelled and unclaimed orders per month as shares of all orders placed in it."""
    return _order_status(_Before(dataset, as_of))


def _order_status(history: _Before) -> pd.DataFrame:
    return _status_from_tally(_status_tally(history))


def _status_tally(history: _Before) -> pd.DataFrame:
    """Per month: orders placed, and those returned, cancelled, unclaimed."""
    orders = history.orders()
    if orders is None:
        return _empty_monthly(TALLY_COLUMNS["order_status"])
    months = complete_months(pd.Timestamp(int(orders.t.min())), history.as_of)
    month_no = _month_of_ns(orders.t)
    # validated orders carry only the contract's statuses (codes of `ORDER_STATUSES`)
    counts = pd.crosstab(month_no, np.asarray(ORDER_STATUSES, dtype=object)[orders.status])
    counts.index = pd.DatetimeIndex([_month_start_of(m) for m in counts.index],
                                    name=MONTH_INDEX_NAME)
    counts = counts.reindex(months).fillna(0)
    result = pd.DataFrame(index=months)
    result["orders"] = counts.sum(axis=1)
    for status in ("returned", "cancelled", "unclaimed"):
        result[status] = counts.get(status, 0.0)
    return result


def _status_from_tally(tally: pd.DataFrame) -> pd.DataFrame:
    if tally.empty:
        return _empty_monthly(STATUS_COLUMNS)
    result = tally.copy()
    total = result["orders"].where(result["orders"] > 0)
    for status, rate in (("returned", "return_rate"), ("cancelled", "cancellation_rate"),
                         ("unclaimed", "unclaimed_rate")):
        result[rate] = result[status] / total
    return result[STATUS_COLUMNS]


# --------------------------------------------------------------------------- cohorts


def _activity(history: _Before) -> tuple[np.ndarray, int]:
    """Which customers were active in which complete month: (customers × months bitmap, first).

    Activity = a completed order, an event, or a subscription active at any
    time in the month. A bitmap costs customers × months bytes and is filled in
    one pass over each table, far cheaper than de-duplicating (customer, month)
    pairs of tens of millions of events.
    """
    def build() -> tuple[np.ndarray, int]:
        last = _last_complete_month(history.as_of)
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        for rows in (history.completed_orders(), history.events()):
            if rows is not None:
                parts.append((rows.code, _month_of_ns(rows.t)))
        subs = history.subscriptions()
        if subs is not None:
            codes = subs["code"].to_numpy()
            first = _month_of_ns(subs["started"].to_numpy())
            ended = subs["ended"].to_numpy()
            # a subscription ending exactly on a month start was not active in that month
            never = ended == NEVER
            final = np.where(never, last, _month_of_ns(np.where(never, 0, ended - 1)))
            spans = np.maximum(np.minimum(final, last) - first + 1, 0)
            offsets = np.arange(spans.sum()) - np.repeat(np.cumsum(spans) - spans, spans)
            parts.append((np.repeat(codes, spans), np.repeat(first, spans) + offsets))
        starts = [months.min() for _, months in parts if months.size]
        first_month = min(starts) if starts else last + 1
        bitmap = np.zeros((history.n, max(last - first_month + 1, 0)), dtype=bool)
        for codes, months in parts:
            keep = (codes >= 0) & (months <= last)
            bitmap[codes[keep], months[keep] - first_month] = True
        return bitmap, first_month
    return history._memo("activity", build)


def _last_complete_month(as_of: pd.Timestamp) -> int:
    return int(_month_number(pd.Series([_month_floor(pd.Timestamp(as_of))]))[0]) - 1


def signup_months(dataset: Dataset, *, as_of: pd.Timestamp) -> pd.Series:
    """Each customer's signup month number, indexed by customer position (NaN = unknown).

    Without ``signup_at`` (or with one at or after ``as_of``) the month of the
    customer's first activity in a complete month before ``as_of`` stands in.
    """
    return _signup_months(_Before(dataset, as_of))


def _signup_months(history: _Before) -> pd.Series:
    signup = history.history.customers["signup_at"].reset_index(drop=True)
    known = (signup.notna() & (signup < history.as_of)).to_numpy()
    result = np.full(history.n, np.nan)
    result[known] = _month_number(signup[known]).astype(float)
    if not known.all():
        bitmap, first_month = _activity(history)
        missing = np.flatnonzero(~known)
        rows = bitmap[missing]
        seen = rows.any(axis=1)
        if seen.any():  # no activity in a complete month at all: no column to look in
            result[missing[seen]] = first_month + rows[seen].argmax(axis=1)
    return pd.Series(result)


def cohort_retention(dataset: Dataset, *, as_of: pd.Timestamp,
                     max_cohorts: int = 24) -> pd.DataFrame:
    """Cohort retention matrix: signup month × months since signup.

    A cell is the share of the cohort's customers active (module: any completed
    order, event or active subscription) in calendar month signup + k. Only
    months that ended by ``as_of`` appear; the latest ``max_cohorts`` cohorts are
    kept. Index = cohort month start; column ``customers`` = cohort size, then
    columns 0, 1, 2, ... (months since signup).
    """
    return _cohorts(_Before(dataset, as_of), max_cohorts=max_cohorts)


def _cohorts(history: _Before, *, max_cohorts: int) -> pd.DataFrame:
    return _cohorts_from_tally(_cohort_tally(history), as_of=history.as_of,
                               max_cohorts=max_cohorts)


def _cohort_tally(history: _Before) -> pd.DataFrame:
    """Every cohort (signup month number, index): its size (``customers``) and how many of
    its customers were active in each complete month since (columns 0, 1, ...; 0 beyond
    the months known)."""
    last = _last_complete_month(history.as_of)
    cohort = _signup_months(history).to_numpy()
    known = ~np.isnan(cohort)
    cohort_of = np.where(known, cohort, np.inf)
    keep = np.unique(cohort_of[known & (cohort_of <= last)]).astype(np.int64)
    if keep.size == 0:
        return pd.DataFrame(columns=["customers"], index=pd.Index([], dtype=np.int64,
                                                                   name="cohort"), dtype=np.int64)
    bitmap, first_month = _activity(history)
    ages = np.arange(last - keep.min() + 1)
    active = np.zeros((keep.size, ages.size), dtype=np.int64)
    sizes = np.zeros(keep.size, dtype=np.int64)
    for row, month in enumerate(keep):
        members = np.flatnonzero(cohort_of == month)
        sizes[row] = members.size
        known_ages = last - month + 1
        lo = month - first_month
        # months before the bitmap's first month hold no activity by construction
        start = max(lo, 0)
        active[row, start - lo:known_ages] = bitmap[members, start:lo + known_ages].sum(axis=0)
    frame = pd.DataFrame(active, columns=[int(a) for a in ages],
                         index=pd.Index(keep, name="cohort"))
    frame.insert(0, "customers", sizes)
    return frame


def _cohorts_from_tally(tally: pd.DataFrame, *, as_of: pd.Timestamp,
                        max_cohorts: int) -> pd.DataFrame:
    """The latest ``max_cohorts`` cohorts' shares active per month since signup."""
    if tally.empty:
        return pd.DataFrame(columns=["customers"], index=pd.DatetimeIndex([], name="cohort"))
    last = _last_complete_month(as_of)
    kept = tally.sort_index().iloc[-max_cohorts:]
    keep = kept.index.to_numpy(dtype=np.int64)
    ages = np.arange(last - keep.min() + 1)
    shares = np.full((keep.size, ages.size), np.nan)
    sizes = kept["customers"].to_numpy(dtype=float)
    counts = kept.reindex(columns=[int(a) for a in ages], fill_value=0).to_numpy()
    for row, month in enumerate(keep):
        known_ages = last - month + 1
        shares[row, :known_ages] = counts[row, :known_ages] / int(sizes[row])
    frame = pd.DataFrame(shares, columns=[int(a) for a in ages])
    frame.insert(0, "customers", sizes)
    frame.index = pd.DatetimeIndex([_month_start_of(int(m)) for m in keep], name="cohort")
    return frame


# --------------------------------------------------------------------------- all together


@dataclass(frozen=True)
class RetentionMetrics:
    """Every monthly business metric of the report, computed once; empty frames = not applicable."""

    as_of: pd.Timestamp
    horizon_days: int
    inactivity_churn: pd.DataFrame
    subscription_churn: pd.DataFrame
    mrr: pd.DataFrame
    repeat_purchase: pd.DataFrame
    returning_aov_trend: Trend
    repeat_customer_share: float
    order_status: pd.DataFrame
    cohorts: pd.DataFrame


def retention_metrics(dataset: Dataset, *, as_of: pd.Timestamp, horizon_days: int = 90,
                      max_cohorts: int = 24) -> RetentionMetrics:
    """Compute all retention metrics as of a date (see the module docstring for the rules)."""
    return metrics_from_tallies(retention_tallies(dataset, as_of=as_of,
                                                  horizon_days=horizon_days),
                                max_cohorts=max_cohorts)


#: the additive columns of each monthly tally (`RetentionTallies`)
TALLY_COLUMNS = {
    "inactivity_churn": ["customers_at_start", "customers_lost"],
    "subscription_churn": ["customers_at_start", "customers_lost"],
    "mrr": ["starting_mrr", "expansion_mrr", "contraction_mrr", "churned_mrr", "retained_mrr"],
    "repeat_purchase": ["ordering_customers", "returning_customers", "returning_orders",
                        "returning_revenue"],
    "order_status": ["orders", "returned", "cancelled", "unclaimed"],
}


@dataclass(frozen=True)
class RetentionTallies:
    """The counts and sums behind `RetentionMetrics`, for one set of customers.

    Every figure is a count or a sum over customers, so the tallies of disjoint sets of
    customers (the partitions of a customer base) add up to the tallies of their union
    (`combine_tallies`); the rates are taken once, from the sums (`metrics_from_tallies`).
    Monthly tallies run from the set's own first month to the last complete month before
    ``as_of``: months before it count nobody. A few hundred numbers, whatever the number
    of customers.
    """

    as_of: pd.Timestamp
    horizon_days: int
    inactivity_churn: pd.DataFrame
    subscription_churn: pd.DataFrame
    mrr: pd.DataFrame
    repeat_purchase: pd.DataFrame
    repeat_customers: tuple[int, int]  #: (customers with a completed order, with two or more)
    order_status: pd.DataFrame
    cohorts: pd.DataFrame


def retention_tallies(dataset: Dataset, *, as_of: pd.Timestamp,
                      horizon_days: int = 90) -> RetentionTallies:
    """The tallies of ``dataset``'s customers as of a date (one partition, or all)."""
    history = _Before(dataset, as_of)
    return RetentionTallies(
        as_of=history.as_of, horizon_days=horizon_days,
        inactivity_churn=_inactivity_tally(history, horizon_days=horizon_days),
        subscription_churn=_subscription_tally(history),
        mrr=_mrr_tally(history),
        repeat_purchase=_repeat_tally(history),
        repeat_customers=_repeat_share_tally(history),
        order_status=_status_tally(history),
        cohorts=_cohort_tally(history),
    )


def _add_frames(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Sum frames of counts over the union of their rows and columns (absent = 0)."""
    present = [f for f in frames if not f.empty]
    if len(present) <= 1:
        return present[0] if present else frames[0]
    index = present[0].index
    columns = list(present[0].columns)
    for frame in present[1:]:
        index = index.union(frame.index)
        columns += [c for c in frame.columns if c not in columns]
    if isinstance(index, pd.DatetimeIndex):  # months as `complete_months` has them: no freq
        index = pd.DatetimeIndex(index.to_numpy(), name=index.name)
    total = present[0].reindex(index=index, columns=columns, fill_value=0)
    for frame in present[1:]:
        total = total + frame.reindex(index=index, columns=columns, fill_value=0)
    return total


def combine_tallies(parts: list[RetentionTallies]) -> RetentionTallies:
    """The tallies of the union of disjoint sets of customers (all with one ``as_of``)."""
    if not parts:
        raise ValueError("no tallies to combine")
    first = parts[0]
    if any(p.as_of != first.as_of or p.horizon_days != first.horizon_days for p in parts):
        raise ValueError("tallies taken as of different dates or horizons cannot be combined")
    return RetentionTallies(
        as_of=first.as_of, horizon_days=first.horizon_days,
        inactivity_churn=_add_frames([p.inactivity_churn for p in parts]),
        subscription_churn=_add_frames([p.subscription_churn for p in parts]),
        mrr=_add_frames([p.mrr for p in parts]),
        repeat_purchase=_add_frames([p.repeat_purchase for p in parts]),
        repeat_customers=(sum(p.repeat_customers[0] for p in parts),
                          sum(p.repeat_customers[1] for p in parts)),
        order_status=_add_frames([p.order_status for p in parts]),
        cohorts=_add_frames([p.cohorts for p in parts]),
    )


def metrics_from_tallies(tallies: RetentionTallies, *, max_cohorts: int = 24) -> RetentionMetrics:
    """The rates and the report's tables from (combined) tallies."""
    repeat = _repeat_from_tally(tallies.repeat_purchase)
    buyers, repeaters = tallies.repeat_customers
    return RetentionMetrics(
        as_of=tallies.as_of,
        horizon_days=tallies.horizon_days,
        inactivity_churn=_churn_from_tally(tallies.inactivity_churn),
        subscription_churn=_churn_from_tally(tallies.subscription_churn),
        mrr=_mrr_from_tally(tallies.mrr),
        repeat_purchase=repeat,
        returning_aov_trend=monthly_trend(repeat["returning_aov"].tail(12)),
        repeat_customer_share=repeaters / buyers if buyers else float("nan"),
        order_status=_status_from_tally(tallies.order_status),
        cohorts=_cohorts_from_tally(tallies.cohorts, as_of=tallies.as_of,
                                    max_cohorts=max_cohorts),
    )
