"""Churn and value labels after a date T (docs/features.md, Labels), over the window [T, T + H).

- ``inactivity``: the population is customers with a completed order before T;
  a customer is churned when they make no completed order in [T, T + H).
- ``subscription``: the population is customers with a subscription active
  just before T; a customer is churned when none of their subscriptions is
  active at T + H.
- ``clv_target``: completed-order revenue in [T, T + H_clv) (plus subscription
  revenue, MRR x months active in the window, for the subscription
  definition), times the margin rate.

Labels read the future on purpose; features never do. Rows cover every
customer known at T, like `features.pipeline.build_features`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from features.dataset import Dataset
from features.history import NEVER, NS_PER_DAY, History, timestamp_ns

Definition = Literal["inactivity", "subscription"]
DEFINITIONS: tuple[str, ...] = ("inactivity", "subscription")
DAYS_PER_MONTH = 365.25 / 12


def default_definition(dataset: Dataset) -> Definition:
    """Contractual churn when the dataset has subscriptions, else inactivity."""
    subs = dataset.subscriptions
    return "subscription" if subs is not None and not subs.empty else "inactivity"


def check_definition(definition: str) -> Definition:
    if definition not in DEFINITIONS:
        raise ValueError(f"unknown churn definition {definition!r}; "
                         f"expected one of {', '.join(DEFINITIONS)}")
    return definition  # type: ignore[return-value]


def label_customers(
    dataset: Dataset, *, as_of: pd.Timestamp, horizon_days: int = 90,
    clv_horizon_days: int = 365, definition: Definition = "inactivity",
    margin_rate: float = 1.0,
) -> pd.DataFrame:
    """Population, churn label and CLV target of every customer known at ``as_of``."""
    return labels_at(History(dataset), as_of=as_of, horizon_days=horizon_days,
                     clv_horizon_days=clv_horizon_days, definition=definition,
                     margin_rate=margin_rate)


def labels_at(
    history: History, *, as_of: pd.Timestamp, horizon_days: int, clv_horizon_days: int,
    definition: Definition, margin_rate: float = 1.0,
) -> pd.DataFrame:
    """`label_customers` on a prepared `History` (reuse it for many dates)."""
    check_definition(definition)
    if horizon_days <= 0 or clv_horizon_days <= 0:
        raise ValueError("horizon_days and clv_horizon_days must be positive")
    t = timestamp_ns(as_of)
    known = history.known_at(t)
    if definition == "inactivity":
        population, churned = _inactivity(history, t, horizon_days)
    else:
        population, churned = _subscription(history, t, horizon_days)
    clv = _completed_between(history, t, t + clv_horizon_days * NS_PER_DAY, revenue=True)
    if definition == "subscription":
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
    n = history.n_customers
    subs = history.subscriptions
    if subs is None:
        return np.zeros(n, dtype=bool)
    started = subs["started"].to_numpy()
    ended = subs["ended"].to_numpy()
    began = started < moment if strict_start else started <= moment
    running = began & ((ended == NEVER) | (ended >= moment if strict_start else ended > moment))
    return np.bincount(subs["code"].to_numpy()[running], minlength=n) > 0


def _subscription(history: History, t: int, horizon_days: int) -> tuple[np.ndarray, np.ndarray]:
    # population: active just before T (started before T, not ended before T), which is
    # exactly what the features can see; churned: nothing running at T + H
    population = _active_at(history, t, strict_start=True)
    later = _active_at(history, t + horizon_days * NS_PER_DAY, strict_start=False)
    return population, ~later


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
