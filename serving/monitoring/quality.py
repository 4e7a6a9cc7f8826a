"""Realized model quality: the training metrics, computed on scores whose horizon has passed.

The same metric functions as the held-out evaluation at training
(`training.metrics`), so "0.78 realized against 0.81 held out" compares like
with like. Figures are left empty (NaN) with the count when a group is too small
to say anything: fewer than `MIN_OUTCOMES` matured outcomes or fewer than
`MIN_PER_CLASS` churned or retained customers.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from training.metrics import churn_metrics

MIN_OUTCOMES = 50
MIN_PER_CLASS = 5
#: realized figures and the held-out metric each is compared with
HELD_OUT = {
    "roc_auc": "churn_roc_auc",
    "pr_auc": "churn_pr_auc",
    "top_decile_lift": "churn_top_decile_lift",
    "ece": "churn_ece",
}
COLUMNS = ["model_version", "week", "scores", "outcomes", "churn_rate", "mean_probability",
           "roc_auc", "pr_auc", "top_decile_lift", "ece", "value_outcomes",
           "clv_predicted_total", "clv_actual_total"]


def scoring_week(as_of: pd.Series) -> pd.Series:
    """The Monday starting the week of each scoring date."""
    return as_of.dt.to_period("W-SUN").dt.start_time


def enough(y: np.ndarray) -> bool:
    """Whether churn metrics on these outcomes mean anything (see the module doc)."""
    churned = int(np.sum(y == 1))
    return len(y) >= MIN_OUTCOMES and min(churned, len(y) - churned) >= MIN_PER_CLASS


def group_quality(rows: pd.DataFrame) -> dict[str, float]:
    """Realized figures of one group of scored, outcome-joined rows."""
    judged = rows[rows["churned"].notna() & rows["churn_probability"].notna()]
    y = judged["churned"].to_numpy(float)
    p = judged["churn_probability"].to_numpy(float)
    figures: dict[str, float] = {
        "scores": float(len(rows)), "outcomes": float(len(judged)),
        "churn_rate": float(y.mean()) if len(y) else np.nan,
        "mean_probability": float(p.mean()) if len(p) else np.nan,
    }
    metrics = churn_metrics(y, p) if enough(y) else {}
    for name in ("roc_auc", "pr_auc", "top_decile_lift", "ece"):
        figures[name] = float(metrics.get(name, np.nan))
    valued = rows[rows["actual_value"].notna()]
    figures["value_outcomes"] = float(len(valued))
    figures["clv_predicted_total"] = float(valued["clv"].sum()) if len(valued) else np.nan
    figures["clv_actual_total"] = float(valued["actual_value"].sum()) if len(valued) else np.nan
    return figures


def realized_quality(joined: pd.DataFrame) -> pd.DataFrame:
    """One row per model version and scoring week, plus one per version (``week`` = NaT)."""
    if joined.empty:
        return pd.DataFrame(columns=COLUMNS)
    frame = joined.assign(week=scoring_week(joined["as_of"]))
    rows = []
    for (version, week), group in frame.groupby(["model_version", "week"], sort=True):
        rows.append({"model_version": version, "week": week, **group_quality(group)})
    for version, group in frame.groupby("model_version", sort=True):
        rows.append({"model_version": version, "week": pd.NaT, **group_quality(group)})
    return pd.DataFrame(rows, columns=COLUMNS)


def held_out_figures(metrics: Mapping[str, float]) -> dict[str, float]:
    """The held-out training figures under the realized metric names (NaN when absent)."""
    out = {name: float(metrics.get(key, np.nan)) for name, key in HELD_OUT.items()}
    out["clv_total_ratio"] = float(metrics.get("clv_total_ratio", np.nan))
    return out
