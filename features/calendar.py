"""Calendar features: where in the year T falls, and what the customer did a year before.

A shop whose busy quarter is October to December sees more spend and less
churn in a label window that starts on 1 October than in one that starts on 1
July, and a model that knows only the last few months cannot tell. When the
history covers the same season of an earlier year, three things help:

- ``day_of_year``: the calendar position of T, the start of the label window
  (1 = 1 January);
- what the customer did in the same weeks one year before, i.e. in
  ``[T - 365, T - 365 + SEASON_DAYS)``: completed orders, revenue and active
  days (``*_same_season_last_year``), and the share of the customer's spend in
  the year before T that fell in those weeks (``revenue_share_same_season``);
- these are NaN for a customer who was not known a year before T.

Whether a model uses them is decided at training (`calendar_applies`): only
when the held-out snapshot has customers known a year before, i.e. when the
history really covers the same season of an earlier year. Otherwise a
calendar position seen in no earlier year would only let the trees memorise
the dates of the training snapshots.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.business import BUSINESS_FEATURES
from features.history import NEVER, NS_PER_DAY, History

#: the length of "the same weeks a year before": the default churn horizon
SEASON_DAYS = 90
YEAR_DAYS = 365
#: the share of the held-out snapshot's rows that must have a year of history
MIN_SHARE_WITH_LAST_YEAR = 0.05

CALENDAR_FEATURES: dict[str, tuple[str, str]] = {
    "day_of_year": ("day of the year on which the prediction window starts (1 = 1 January)",
                    "calendar"),
    "completed_orders_same_season_last_year": (
        f"completed orders in the same {SEASON_DAYS} days one year earlier", "count"),
    "revenue_same_season_last_year": (
        f"revenue from completed orders in the same {SEASON_DAYS} days one year earlier",
        "currency"),
    "revenue_share_same_season": (
        f"share of the customer's spend in the last year that fell in the same "
        f"{SEASON_DAYS} days one year earlier", "ratio"),
    "active_days_same_season_last_year": (
        f"days with app or site activity in the same {SEASON_DAYS} days one year earlier",
        "count"),
}
#: the column that says whether the customer was known a year before T
LAST_YEAR_MARKER = "revenue_same_season_last_year"


def calendar_features(history: History, t: int) -> dict[str, np.ndarray]:
    """The calendar columns as of ``t`` (ns), from rows strictly before ``t``."""
    n = history.n_customers
    year_ago = t - YEAR_DAYS * NS_PER_DAY
    season_end = year_ago + SEASON_DAYS * NS_PER_DAY
    first_known = np.minimum(history.signup_ns, history.first_seen_ns)
    known_then = (first_known != NEVER) & (first_known < year_ago)
    out = {"day_of_year": np.full(n, float(pd.Timestamp(t).dayofyear))}

    orders = history.orders
    if orders is not None:
        lo, hi, now = orders.end(year_ago), orders.end(season_end), orders.end(t)
        done = orders.completed

        def summed(start: int, stop: int, weights: np.ndarray | None) -> np.ndarray:
            keep = done[start:stop]
            w = None if weights is None else weights[start:stop][keep]
            return np.bincount(orders.code[start:stop][keep], weights=w,
                               minlength=n).astype(np.float64)

        season_orders = summed(lo, hi, None)
        season_revenue = summed(lo, hi, orders.amount)
        year_revenue = summed(lo, now, orders.amount)
    else:
        season_orders = season_revenue = year_revenue = np.zeros(n)
    out["completed_orders_same_season_last_year"] = season_orders
    out["revenue_same_season_last_year"] = season_revenue
    with np.errstate(divide="ignore", invalid="ignore"):
        out["revenue_share_same_season"] = np.where(
            year_revenue > 0, season_revenue / np.where(year_revenue > 0, year_revenue, 1),
            np.nan)

    events = history.events
    if events is not None:
        first, last = np.searchsorted(events.day_first_t, [year_ago, season_end], side="left")
        active = np.bincount(events.day_first_code[first:last], minlength=n).astype(np.float64)
    else:
        active = np.zeros(n)
    out["active_days_same_season_last_year"] = active
    for name in CALENDAR_FEATURES:
        if name != "day_of_year":
            out[name] = np.where(known_then, out[name], np.nan)
    return out


def calendar_applies(holdout_features: pd.DataFrame) -> bool:
    """Whether the history covers the same season of an earlier year at the held-out snapshot.

    True when at least `MIN_SHARE_WITH_LAST_YEAR` of its rows belong to
    customers known a year before it.
    """
    if LAST_YEAR_MARKER not in holdout_features.columns or holdout_features.empty:
        return False
    known = holdout_features[LAST_YEAR_MARKER].notna().mean()
    return bool(known >= MIN_SHARE_WITH_LAST_YEAR)


def without_calendar(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` without the calendar and business-season columns (models that must not
    use them)."""
    season = (*CALENDAR_FEATURES, *BUSINESS_FEATURES)
    return frame.drop(columns=[c for c in season if c in frame.columns])
