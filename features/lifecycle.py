"""Lifecycle stage of each customer as of T, from the same features the model scores.

The stages follow lifecycle e-mail practice (onboard the new, keep the active,
catch the declining, win back the lapsed):

- ``never_active``: no activity of the definition's kind before T (never
  ordered for ``inactivity``, never subscribed for ``subscription``, neither nor
  any activity event for ``activity``);
- ``lapsed``: active before, but not within the last ``active_days`` (for
  ``subscription``: no subscription running at T);
- ``new``: active, and known (signed up or first seen) for at most
  ``new_days`` (default: the churn horizon);
- ``declining``: active, but the rate of activity (completed orders and
  activity events) in the last ``recent_days`` (90) is below
  ``declining_ratio`` (0.5) times the customer's own rate before them, with at
  least ``min_earlier_activity`` (4) activities and ``min_earlier_days`` (60)
  of tenure before them (so a quiet spell of a customer seen twice is not a
  decline);
- ``active``: everyone else.

Stages are computed from feature columns (`features.pipeline`), so the API,
batch scoring and the report all get them from the one scorer without reading
the history again; the thresholds are stored in the model bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

STAGES: tuple[str, ...] = ("new", "active", "declining", "lapsed", "never_active")
#: defaults of the declining test (see the module docstring)
RECENT_DAYS = 90
DECLINING_RATIO = 0.5
MIN_EARLIER_ACTIVITY = 4
MIN_EARLIER_DAYS = 60


@dataclass(frozen=True)
class LifecycleRules:
    """Which feature columns mean activity, and the thresholds of each stage."""

    recency_features: tuple[str, ...]
    running_flags: tuple[str, ...]
    count_features: tuple[str, ...]
    active_days: int
    new_days: int
    recent_days: int = RECENT_DAYS
    declining_ratio: float = DECLINING_RATIO
    min_earlier_activity: int = MIN_EARLIER_ACTIVITY
    min_earlier_days: int = MIN_EARLIER_DAYS
    definition: str = "activity"
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LifecycleRules:
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


def activity_recency_features(definition: str, activity_slugs: Sequence[str]) -> tuple[str, ...]:
    """Days-since columns whose being within ``active_days`` means activity."""
    if definition == "inactivity":
        return ("days_since_last_order",)
    if definition == "subscription":
        return ("days_since_subscription_ended",)
    return ("days_since_last_order", *(f"days_since_last_{slug}" for slug in activity_slugs))


def lifecycle_rules(definition: str, *, activity_slugs: Sequence[str], active_days: int,
                    new_days: int) -> LifecycleRules:
    """The stage rules of a churn definition (``activity_slugs``: activity event types as
    they appear in feature names, `features.pipeline.event_slug`)."""
    counts = ["completed_orders_{w}", *(f"{slug}_events_{{w}}" for slug in activity_slugs)]
    return LifecycleRules(
        recency_features=activity_recency_features(definition, activity_slugs),
        running_flags=() if definition == "inactivity" else ("is_subscribed",),
        count_features=tuple(counts),
        # subscription: active means a subscription running at T
        active_days=0 if definition == "subscription" else int(active_days),
        new_days=int(new_days), definition=definition,
    )


def _column(features: pd.DataFrame, name: str) -> np.ndarray:
    if name not in features.columns:
        return np.full(len(features), np.nan)
    return pd.to_numeric(features[name], errors="coerce").to_numpy(dtype=float)


def days_since_activity(features: pd.DataFrame, rules: LifecycleRules) -> np.ndarray:
    """Days since the latest activity (0 with something running at T; NaN: never)."""
    recency = np.full(len(features), np.nan)
    for name in rules.recency_features:
        recency = np.fmin(recency, _column(features, name))
    for name in rules.running_flags:
        recency = np.where(_column(features, name) > 0, 0.0, recency)
    return recency


def lifecycle_stages(features: pd.DataFrame, rules: LifecycleRules) -> np.ndarray:
    """The stage of every row of a feature frame (object array of `STAGES` names)."""
    recency = days_since_activity(features, rules)
    ever = ~np.isnan(recency)
    active = ever & (recency <= rules.active_days)
    tenure = _column(features, "tenure_days")
    new = active & (tenure <= rules.new_days)
    declining = active & ~new & _declining(features, rules, tenure)
    stage = np.full(len(features), "active", dtype=object)
    stage[~ever] = "never_active"
    stage[ever & ~active] = "lapsed"
    stage[new] = "new"
    stage[declining] = "declining"
    return stage


def _declining(features: pd.DataFrame, rules: LifecycleRules, tenure: np.ndarray) -> np.ndarray:
    recent = np.zeros(len(features))
    ever = np.zeros(len(features))
    for template in rules.count_features:
        recent += np.nan_to_num(_column(features, template.format(w=f"{rules.recent_days}d")))
        ever += np.nan_to_num(_column(features, template.format(w="total")))
    earlier = ever - recent
    earlier_days = np.nan_to_num(tenure) - rules.recent_days
    judged = (earlier >= rules.min_earlier_activity) & (earlier_days >= rules.min_earlier_days)
    with np.errstate(divide="ignore", invalid="ignore"):
        usual = np.where(judged, earlier / np.where(judged, earlier_days, 1.0), np.nan)
        ratio = (recent / rules.recent_days) / usual
    return judged & (ratio < rules.declining_ratio)
