"""The population rule: the feature test that says whom the churn definition applies to.

Scoring has features but no labels, so the bundle carries a test on the
features that reproduces, on every training row, the population the labels
were made for (`models.bundle.population_mask` applies it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from features.definition import ChurnDefinition, activity_population_rule
from models.bundle import population_mask
from training.params import TrainingDataError


def population_rule(features: pd.DataFrame, *, in_population: pd.Series, definition: str,
                    churn_definition: ChurnDefinition | None = None) -> dict[str, Any]:
    """The feature test that reproduces the labels' population on every training row.

    Activity: any activity recency within ``active_days`` or a running
    subscription (checked against the labels). Otherwise named candidates come
    first (a completed-order count for inactivity, an active-subscription flag
    for subscription), then any numeric feature whose "> 0" or "is recorded"
    test matches the population exactly.
    """
    target = in_population.astype(bool).to_numpy()
    if definition == "activity" and churn_definition is not None:
        rule = activity_population_rule(churn_definition)
        mismatched = int((population_mask(features, rule).to_numpy() != target).sum())
        if mismatched:
            raise TrainingDataError(
                f"the activity population rule disagrees with the labels on {mismatched} "
                "training row(s); this is a bug in churnlens (features and labels must read "
                "the same activity)")
        return rule
    if target.all():
        return {"test": "all"}
    preferred = ("completed_orders_total",) if definition == "inactivity" else ("is_subscribed",)
    numeric = [c for c in features.columns
               if not isinstance(features[c].dtype, pd.CategoricalDtype)]
    ordered = [c for c in preferred if c in numeric] + [c for c in numeric if c not in preferred]
    for name in ordered:
        values = pd.to_numeric(features[name], errors="coerce").to_numpy(dtype=float)
        if np.array_equal((values > 0) & ~np.isnan(values), target):
            return {"feature": name, "test": "positive"}
        if np.array_equal(~np.isnan(values), target):
            return {"feature": name, "test": "notna"}
    raise TrainingDataError(
        f"no feature reproduces the {definition} population (who the churn definition applies "
        "to); the feature pipeline must expose it, e.g. a completed-order count or an "
        "active-subscription flag")
