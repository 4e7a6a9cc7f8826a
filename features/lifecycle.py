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
#: the windows the feature pipeline counts activity over (`features.pipeline.WINDOWS`):
#: the declining test's recent window must be one of them
COUNT_WINDOWS = (30, 90, 365)


class LifecycleSettingError(ValueError):
    """A lifecycle threshold is out of range; ``field`` names it (commands map it to a flag)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


def check_thresholds(*, new_days: int | None = None, recent_days: int = RECENT_DAYS,
                     declining_ratio: float = DECLINING_RATIO,
                     min_earlier_activity: int = MIN_EARLIER_ACTIVITY,
                     min_earlier_days: int = MIN_EARLIER_DAYS) -> None:
    """Raise `LifecycleSettingError` naming the first threshold that cannot work."""
    if new_days is not None and new_days < 0:
        raise LifecycleSettingError("new_days", f"must be 0 or more days, not {new_days}")
    if recent_days not in COUNT_WINDOWS:
        raise LifecycleSettingError(
            "recent_days", f"must be one of {', '.join(map(str, COUNT_WINDOWS))} (the windows "
            f"activity is counted over), not {recent_days}")
    if not 0 < declining_ratio <= 1:
        raise LifecycleSettingError("declining_ratio",
                                    f"must be in (0, 1], not {declining_ratio}")
    if min_earlier_activity < 1:
        raise LifecycleSettingError("min_earlier_activity",
                                    f"must be at least 1, not {min_earlier_activity}")
    if min_earlier_days < 1:
        raise LifecycleSettingError("min_earlier_days",
                                    f"must be at least 1 day, not {min_earlier_days}")


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
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in data.items()}
        return cls(**values)


def activity_recency_features(definition: str, activity_slugs: Sequence[str]) -> tuple[str, ...]:
    """Days-since columns whose being within ``active_days`` means activity."""
    if definition == "inactivity":
        return ("days_since_last_order",)
    if definition == "subscription":
        return ("days_since_subscription_ended",)
    return ("days_since_last_order", *(f"days_since_last_{slug}" for slug in activity_slugs))


def lifecycle_rules(definition: str, *, activity_slugs: Sequence[str], active_days: int,
                    new_days: int, recent_days: int = RECENT_DAYS,
                    declining_ratio: float = DECLINING_RATIO,
                    min_earlier_activity: int = MIN_EARLIER_ACTIVITY,
                    min_earlier_days: int = MIN_EARLIER_DAYS) -> LifecycleRules:
    """The stage rules of a churn definition (``activity_slugs``: activity event types as
    they appear in feature names, `features.pipeline.event_slug`), with the declining
    test's thresholds (checked by `check_thresholds`)."""
    check_thresholds(new_days=new_days, recent_days=recent_days,
                     declining_ratio=declining_ratio, min_earlier_activity=min_earlier_activity,
                     min_earlier_days=min_earlier_days)
    counts = ["completed_orders_{w}", *(f"{slug}_events_{{w}}" for slug in activity_slugs)]
    return LifecycleRules(
        recency_features=activity_recency_features(definition, activity_slugs),
        running_flags=() if definition == "inactivity" else ("is_subscribed",),
        count_features=tuple(counts),
        # subscription: active means a subscription running at T
        active_days=0 if definition == "subscription" else int(active_days),
        new_days=int(new_days), definition=definition, recent_days=int(recent_days),
        declining_ratio=float(declining_ratio), min_earlier_activity=int(min_earlier_activity),
        min_earlier_days=int(min_earlier_days),
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
