"""What happened after each stored score: churned or not, and the value realised.

Outcomes follow the churn definition, horizon and CLV horizon stored in the
bundle of the model version that made the score, computed by the same label
function training used, so a score is judged by exactly the question it
answered. A score is *matured* once its horizon has passed by the monitoring
date T (``as_of + horizon <= T``); its value outcome needs the CLV horizon to
have passed as well.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.history import History
from features.labels import labels_at
from models.bundle import ChurnBundle


def matured(scores: pd.DataFrame, *, horizon_days: int, as_of: pd.Timestamp) -> pd.Series:
    """Scores whose churn window [as_of, as_of + horizon) ended by ``as_of`` (T)."""
    return scores["as_of"] + pd.Timedelta(days=horizon_days) <= pd.Timestamp(as_of)


def realized_outcomes(history: History, scores: pd.DataFrame, *, bundle: ChurnBundle,
                      as_of: pd.Timestamp) -> pd.DataFrame:
    """``scores`` of one model version with ``churned`` and ``actual_value`` added.

    ``churned`` is 1/0 for matured scores of customers in the definition's
    population at their as_of, NaN otherwise; ``actual_value`` is the realised
    value over the CLV horizon (× the bundle's margin rate) where that horizon
    has passed, NaN otherwise.
    """
    out = scores.copy()
    out["churned"] = np.nan
    out["actual_value"] = np.nan
    ready = matured(out, horizon_days=bundle.horizon_days, as_of=as_of)
    value_ready = matured(out, horizon_days=bundle.clv_horizon_days, as_of=as_of)
    for moment in pd.unique(out.loc[ready, "as_of"]):
        rows = ready & (out["as_of"] == moment)
        labels = labels_at(history, as_of=pd.Timestamp(moment),
                           horizon_days=bundle.horizon_days,
                           clv_horizon_days=bundle.clv_horizon_days,
                           **bundle.label_settings(),
                           margin_rate=bundle.margin_rate)
        ids = out.loc[rows, "customer_id"]
        out.loc[rows, "churned"] = labels["churned"].reindex(ids).to_numpy()
        values = labels["clv_target"].reindex(ids).to_numpy()
        out.loc[rows & value_ready, "actual_value"] = values[value_ready[rows].to_numpy()]
    return out
