"""Churn and value labels after a date T (docs/features.md, Labels), over the window [T, T + H).

- ``inactivity``: the population is customers with a completed order before T;
  a customer is churned when they make no completed order in [T, T + H).
- ``subscription``: the population is customers with a subscription active
  just before T; a customer is churned when none of their subscriptions is
  active at T + H.
- ``activity``: the population is customers with any activity in
  [T - active_days, T): a completed order, an event of the activity event
  types, or a subscription running at T; a customer is churned when they make
  no completed order and no activity event in [T, T + H) and have no
  subscription running at T + H (see `features.definition` for the defaults).
- ``clv_target``: completed-order revenue in [T, T + H_clv) (plus subscription
  revenue, MRR x months active in the window, for the subscription and
  activity definitions), times the margin rate.

Labels read the future on purpose; features never do. Rows cover every
customer known at T, like `features.pipeline.build_features`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from features.dataset import Dataset
from features.definition import DEFINITIONS, PASSIVE_EVENT_TYPES, auto_definition
from features.history import NS_PER_DAY, History, timestamp_ns

Definition = Literal["inactivity", "subscription", "activity"]
DAYS_PER_MONTH = 365.25 / 12


def default_definition(dataset: Dataset) -> Definition:
    """What ``--churn auto`` picks (`features.definition.auto_definition`)."""
    return auto_definition(dataset)[0]  # type: ignore[return-value]


def check_definition(definition: str) -> Definition:
    if definition not in DEFINITIONS:
        raise ValueError(f"unknown churn definition {definition!r}; "
                         f"expected one of {', '.join(DEFINITIONS)}")
    return definition  # type: ignore[return-value]


def label_customers(
    dataset: Dataset, *, as_of: pd.Timestamp, horizon_days: int = 90,
    clv_horizon_days: int = 365, definition: Definition = "inactivity",
    margin_rate: float = 1.0, active_days: int | None = None,
    activity_events: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Population, churn label and CLV target of every customer known at ``as_of``.

    ``active_days`` (default: the horizon) and ``activity_events`` (default:
    every type but the passive ones) apply to the ``activity`` definition.
    """
    return labels_at(History(dataset), as_of=as_of, horizon_days=horizon_days,
                     clv_horizon_days=clv_horizon_days, definition=definition,
                     margin_rate=margin_rate, active_days=active_days,
                     activity_events=activity_events)


def labels_at(
    history: History, *, as_of: pd.Timestamp, horizon_days: int, clv_horizon_days: int,
    definition: Definition, margin_rate: float = 1.0, active_days: int | None = None,
    activity_events: Sequence[str] | None = None,
) -> pd.DataFrame:
    """`label_customers` on a prepared `History` (reuse it for many dates)."""
    check_definition(definition)
    if horizon_days <= 0 or clv_horizon_days <= 0:
        raise ValueError("horizon_days and clv_horizon_days must be positive")
    if active_days is not None and active_days <= 0:
        raise ValueError(f"active_days must be positive, not {active_days}")
    t = timestamp_ns(as_of)
    known = history.known_at(t)
    if definition == "inactivity":
        population, churned = _inactivity(history, t, horizon_days)
    elif definition == "subscription":
        population, churned = _subscription(history, t, horizon_days)
    else:
        population, churned = _activity(history, t, horizon_days,
                                        active_days=active_days or horizon_days,
                                        activity_events=activity_events)
    clv = _completed_between(history, t, t + clv_horizon_days * NS_PER_DAY, revenue=True)
    if definition in ("subscription", "activity"):
        clv = clv + _subscription_revenue(history, t, t + clv_horizon_days * NS_PER_DAY)
    frame = pd.DataFrame({
        "in_population": population[known],
        "churned": np.where(population, churned.astype(np.float64), np.nan)[known],
        "clv_target": (clv * margin_rate)[known],
    }, index=history.index[known])
    return frame


def _completed_between(history: History, start: int, stop: int, *,
                       revenue: bool = False) -> np.ndarray:
    """Per customer: completed orders (or their revenue) with start <= ordered_at < stop."""
    orders = history.orders
    n = history.n_customers
    if orders is None:
        return np.zeros(n)
    lo, hi = orders.end(start), orders.end(stop)
    rows = orders.completed[lo:hi]
    weights = orders.amount[lo:hi][rows] if revenue else None
    return np.bincount(orders.code[lo:hi][rows], weights=weights,
                       minlength=n).astype(np.float64)


def _inactivity(history: History, t: int, horizon_days: int) -> tuple[np.ndarray, np.ndarray]:
    before = _completed_between(history, np.iinfo(np.int64).min, t)
    after = _completed_between(history, t, t + horizon_days * NS_PER_DAY)
    return before > 0, after == 0


def _active_at(history: History, moment: int, *, strict_start: bool) -> np.ndarray:
    """Customers with a subscription running at ``moment`` (started before, not yet ended)."""
    return history.subscribed_at(moment, strict_start=strict_start)


def _subscription(history: History, t: int, horizon_days: int) -> tuple[np.ndarray, np.ndarray]:
    # population: active just before T (started before T, not ended before T), which is
    # exactly what the features can see; churned: nothing running at T + H
    population = _active_at(history, t, strict_start=True)
    later = _active_at(history, t + horizon_days * NS_PER_DAY, strict_start=False)
    return population, ~later


def activity_type_codes(history: History, activity_events: Sequence[str] | None) -> np.ndarray:
    """Codes (in ``history.events.types``) of the event types that count as activity."""
    events = history.events
    if events is None:
        return np.zeros(0, dtype=np.int64)
    if activity_events is None:
        wanted = {t for t in events.types if t not in PASSIVE_EVENT_TYPES}
    else:
        wanted = {str(t) for t in activity_events}
    return np.array([i for i, t in enumerate(events.types) if t in wanted], dtype=np.int64)


def _events_between(history: History, start: int, stop: int, codes: np.ndarray) -> np.ndarray:
    """Per customer: events of the given type codes with start <= occurred_at < stop."""
    events = history.events
    n = history.n_customers
    if events is None or not len(codes):
        return np.zeros(n)
    lo, hi = events.start(start), events.end(stop)
    rows = np.isin(events.type[lo:hi], codes)
    return np.bincount(events.code[lo:hi][rows], minlength=n).astype(np.float64)


def _activity(history: History, t: int, horizon_days: int, *, active_days: int,
              activity_events: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
    codes = activity_type_codes(history, activity_events)
    since = t - active_days * NS_PER_DAY
    stop = t + horizon_days * NS_PER_DAY
    population = ((_completed_between(history, since, t) > 0)
                  | (_events_between(history, since, t, codes) > 0)
                  | _active_at(history, t, strict_start=True))
    came_back = ((_completed_between(history, t, stop) > 0)
                 | (_events_between(history, t, stop, codes) > 0)
                 | _active_at(history, stop, strict_start=False))
    return population, ~came_back


def _subscription_revenue(history: History, start: int, stop: int) -> np.ndarray:
    """MRR x months each subscription ran inside [start, stop)."""
    n = history.n_customers
    subs = history.subscriptions
    if subs is None:
        return np.zeros(n)
    began = np.maximum(subs["started"].to_numpy(), start)
    ended = np.minimum(subs["ended"].to_numpy(), stop)
    months = np.clip(ended - began, 0, None) / NS_PER_DAY / DAYS_PER_MONTH
    revenue = np.nan_to_num(subs["mrr"].to_numpy()) * months
    return np.bincount(subs["code"].to_numpy(), weights=revenue, minlength=n).astype(np.float64)
