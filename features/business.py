"""The business's own season: its weekly activity, and how it moved in the same weeks a year before.

A customer's history says how much *they* bought lately; it cannot say that
the whole shop is about to enter its busy quarter. The business's activity a
year before can: if revenue per active customer rose by 1.6x from the summer
to the last quarter of last year, a model trained on last year's snapshots
can apply that step to this year's customers. One input does that:

- ``business_season_step_last_year``: the business's completed revenue per
  active customer (customer-weeks with a completed order or any event) in the
  13 weeks starting one year before T, over the same figure in the 13 weeks
  before those. A ratio of per-customer figures, so a growing customer base
  does not read as a season. NaN when those 26 weeks are not all covered by
  the history.

Batch features are computed per chunk or partition of customers and cannot
see the whole business, so the weekly series is computed once at training
from the whole history before the cut-off (`BusinessSeason.from_history`),
used for every training snapshot at its exact date, and shipped in the model
bundle; scoring reads it back by the day of the year of T (`values_for`): for
any T in the year after the cut-off that is exactly the 13 + 13 weeks a year
before T (or, when those are not complete by the cut-off, the same weeks one
year earlier still).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.history import NS_PER_DAY, History, timestamp_ns

#: the weeks of the series start on Mondays, counted from this one
EPOCH = pd.Timestamp("1970-01-05")
WEEK_NS = 7 * NS_PER_DAY
SEASON_WEEKS = 13
YEAR_DAYS = 365

BUSINESS_FEATURES: dict[str, tuple[str, str]] = {
    "business_season_step_last_year": (
        f"the business's revenue per active customer in the {SEASON_WEEKS} weeks starting one "
        f"year earlier, relative to the {SEASON_WEEKS} weeks before them", "ratio"),
}


def _week(t_ns: np.ndarray | int) -> np.ndarray:
    return (np.asarray(t_ns, dtype=np.int64) - int(EPOCH.value)) // WEEK_NS


@dataclass(frozen=True)
class BusinessSeason:
    """Business-wide completed revenue and active customers per week, weeks before ``as_of``.

    ``first_week`` is the week index (Mondays since `EPOCH`) of ``revenue[0]``;
    only whole weeks strictly after the first (partial) week of data and
    ending by ``as_of`` count as covered.
    """

    first_week: int
    revenue: tuple[float, ...]
    active: tuple[int, ...]
    as_of: str

    @classmethod
    def from_history(cls, history: History, *, as_of: pd.Timestamp) -> BusinessSeason | None:
        """The series of a whole history before ``as_of`` (None when it has no dated activity)."""
        limit = timestamp_ns(as_of)
        n = history.n_customers
        weeks, codes, amounts = [], [], []
        orders = history.orders
        if orders is not None:
            end = orders.end(limit)
            done = orders.completed[:end]
            weeks.append(_week(orders.t[:end][done]))
            codes.append(orders.code[:end][done].astype(np.int64))
            amounts.append(orders.amount[:end][done])
        events = history.events
        if events is not None:
            end = events.end(limit)
            weeks.append(_week(events.t[:end]))
            codes.append(events.code[:end].astype(np.int64))
        if not weeks or not sum(len(w) for w in weeks):
            return None
        every_week = np.concatenate(weeks)
        first, last = int(every_week.min()), int(_week(limit)) - 1  # the week of as_of is partial
        if last < first:
            return None
        size = last - first + 1
        revenue = np.zeros(size)
        if amounts and len(amounts[0]):
            inside = weeks[0] <= last
            np.add.at(revenue, weeks[0][inside] - first, amounts[0][inside])
        pairs = np.unique((every_week - first) * max(n, 1) + np.concatenate(codes))
        week_of_pair = pairs // max(n, 1)
        active = np.bincount(week_of_pair[week_of_pair < size], minlength=size)
        return cls(first_week=first, revenue=tuple(float(v) for v in revenue),
                   active=tuple(int(v) for v in active),
                   as_of=pd.Timestamp(as_of).isoformat())

    def _per_active(self, start_week: int) -> float:
        """Revenue per active customer-week over `SEASON_WEEKS` weeks from ``start_week``."""
        lo = start_week - self.first_week
        hi = lo + SEASON_WEEKS
        # the first week of data is partial: a window must start after it
        if lo < 1 or hi > len(self.revenue):
            return float("nan")
        active = float(sum(self.active[lo:hi]))
        return float(sum(self.revenue[lo:hi])) / active if active > 0 else float("nan")

    def step_at(self, t: pd.Timestamp) -> float:
        """``business_season_step_last_year`` as of ``t`` (uses only weeks before ``t``)."""
        start = int(_week(timestamp_ns(pd.Timestamp(t) - pd.Timedelta(days=YEAR_DAYS))))
        before, during = self._per_active(start - SEASON_WEEKS), self._per_active(start)
        if not before > 0 or np.isnan(during):
            return float("nan")
        return during / before

    def features_at(self, t: pd.Timestamp, n: int) -> dict[str, np.ndarray]:
        """The business columns for ``n`` customers as of ``t`` (the same value for all)."""
        return {"business_season_step_last_year": np.full(n, self.step_at(t))}

    def values_for(self, day_of_year: np.ndarray) -> dict[str, np.ndarray]:
        """The business columns of scores whose T has this day of the year.

        T is taken as the date with that day of the year in the year after the
        cut-off ``as_of``; when the weeks a year before it are not complete by
        the cut-off, the same weeks a year earlier are used instead.
        """
        days = np.asarray(day_of_year, dtype=float)
        out = np.full(len(days), np.nan)
        start = pd.Timestamp(self.as_of).normalize()
        for day in np.unique(days[~np.isnan(days)]):
            offset = (int(day) - start.dayofyear) % (366 if start.is_leap_year else 365)
            t = start + pd.Timedelta(days=offset)
            value = self.step_at(t)
            if np.isnan(value):
                value = self.step_at(t - pd.Timedelta(days=YEAR_DAYS))
            out[days == day] = value
        return {"business_season_step_last_year": out}

    def as_dict(self) -> dict[str, Any]:
        return {"first_week": self.first_week, "revenue": list(self.revenue),
                "active": list(self.active), "as_of": self.as_of}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BusinessSeason:
        return cls(first_week=int(data["first_week"]),
                   revenue=tuple(float(v) for v in data["revenue"]),
                   active=tuple(int(v) for v in data["active"]), as_of=str(data["as_of"]))
