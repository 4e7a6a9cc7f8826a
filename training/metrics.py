"""Model-quality metrics for churn (ranking + calibration) and CLV (ranking + totals).

The same functions score training holdouts, backtests and the champion gate, so
every figure the project reports means the same thing everywhere.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score


def _as_arrays(y: object, p: object) -> tuple[np.ndarray, np.ndarray]:
    y_arr = np.asarray(y, dtype=float).ravel()
    p_arr = np.asarray(p, dtype=float).ravel()
    if y_arr.shape != p_arr.shape:
        raise ValueError(f"{len(y_arr)} labels but {len(p_arr)} predictions")
    return y_arr, p_arr


def expected_calibration_error(y: object, p: object, *, bins: int = 10) -> float:
    """Expected calibration error over ``bins`` equal-width probability bins.

    The share-weighted mean of |observed churn rate − mean predicted probability|
    per bin; 0 is perfectly calibrated.
    """
    y_arr, p_arr = _as_arrays(y, p)
    if len(y_arr) == 0:
        return float("nan")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p_arr, edges[1:-1], right=False), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(y_arr[mask].mean() - p_arr[mask].mean())
    return float(total / len(y_arr))


def top_decile_lift(y: object, p: object) -> float:
    """Churn rate among the 10% highest-risk customers divided by the overall rate."""
    y_arr, p_arr = _as_arrays(y, p)
    base = y_arr.mean() if len(y_arr) else 0.0
    if base == 0:
        return float("nan")
    k = max(1, int(np.ceil(0.1 * len(y_arr))))
    top = np.argsort(-p_arr, kind="stable")[:k]
    return float(y_arr[top].mean() / base)


def churn_metrics(y_true: object, p: object) -> dict[str, float]:
    """ROC AUC, PR AUC (average precision), top-decile lift, Brier score and ECE.

    Ranking metrics are NaN when only one class is present.
    """
    y_arr, p_arr = _as_arrays(y_true, p)
    two_classes = len(np.unique(y_arr)) == 2
    return {
        "roc_auc": float(roc_auc_score(y_arr, p_arr)) if two_classes else float("nan"),
        "pr_auc": float(average_precision_score(y_arr, p_arr)) if two_classes else float("nan"),
        "top_decile_lift": top_decile_lift(y_arr, p_arr),
        "brier": float(brier_score_loss(y_arr, p_arr)) if len(y_arr) else float("nan"),
        "ece": expected_calibration_error(y_arr, p_arr),
    }


def _gini(actual: np.ndarray, ranking: np.ndarray) -> float:
    """Gini of ``actual`` accumulated in descending order of ``ranking``."""
    order = np.argsort(-ranking, kind="stable")
    cumulative = np.cumsum(actual[order]) / actual.sum()
    n = len(actual)
    return float(cumulative.sum() / n - (n + 1) / (2 * n))


def normalized_gini(actual: object, predicted: object) -> float:
    """Gini of the predicted ranking over the Gini of the perfect ranking (1 = perfect)."""
    a, p = _as_arrays(actual, predicted)
    if len(a) == 0 or a.sum() <= 0:
        return float("nan")
    best = _gini(a, a)
    return float(_gini(a, p) / best) if best != 0 else float("nan")


def decile_error(actual: object, predicted: object) -> float:
    """Mean over the ten predicted-value deciles of |Σ predicted − Σ actual| / Σ actual.

    Customers are sorted by predicted value and cut into ten equal-count groups
    (the decile-level error of the ZILN paper). Deciles whose actual spend is
    zero cannot be expressed relative to it and are left out of the mean.
    """
    a, p = _as_arrays(actual, predicted)
    if len(a) < 10:
        return float("nan")
    order = np.argsort(p, kind="stable")
    errors = []
    for group in np.array_split(order, 10):
        actual_sum = a[group].sum()
        if actual_sum > 0:
            errors.append(abs(p[group].sum() - actual_sum) / actual_sum)
    return float(np.mean(errors)) if errors else float("nan")


def clv_metrics(actual: object, predicted: object) -> dict[str, float]:
    """Spearman, normalized Gini, decile error and total ratio (Σ predicted / Σ actual − 1)."""
    a, p = _as_arrays(actual, predicted)
    constant = len(a) < 2 or np.all(a == a[0]) or np.all(p == p[0])
    spearman = float("nan") if constant else float(spearmanr(a, p).statistic)
    total = a.sum()
    return {
        "spearman": spearman,
        "normalized_gini": normalized_gini(a, p),
        "decile_error": decile_error(a, p),
        "total_ratio": float(p.sum() / total - 1) if total > 0 else float("nan"),
    }
