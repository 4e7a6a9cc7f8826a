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
from models.bundle import ChurnBundle
from training.outcomes import matured, matured_labels


def realized_outcomes(history: History, scores: pd.DataFrame, *, bundle: ChurnBundle,
                      as_of: pd.Timestamp) -> pd.DataFrame:
    """``scores`` of one model version with ``churned`` and ``actual_value`` added.

    ``churned`` is 1/0 for matured scores of customers in the definition's
    population at their as_of, NaN otherwise; ``actual_value`` is the realised
    value over the CLV horizon (× the bundle's margin rate) where that horizon
    has passed, NaN otherwise (`training.outcomes.matured_labels`).
    """
    out = scores.copy()
    churned, value = matured_labels(history, out, bundle=bundle, as_of=as_of,
                                    value_days=bundle.clv_horizon_days,
                                    margin_rate=bundle.margin_rate)
    value_ready = matured(out, horizon_days=bundle.clv_horizon_days, as_of=as_of).to_numpy()
    out["churned"] = churned
    out["actual_value"] = np.where(value_ready, value, np.nan)
    return out
