"""The training reference of each feature and of the score, and population stability against it.

At training, `drift_reference` stores, for the held-out snapshot's churn
population, each numeric feature's decile edges and the share of customers in
each bin (missing values are a bin of their own), each categorical feature's
level shares, and the same for the calibrated churn probability. The bundle
carries it, so monitoring can later ask how far the customers being scored
have moved from the customers the model was validated on, without the
training data.

Population stability index (PSI) = Σ (actual − expected) · ln(actual / expected)
over the bins, with a small floor on empty bins. The usual reading: below 0.1
stable, 0.1 to 0.25 a moderate shift, above 0.25 a major one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

#: bins per numeric feature (deciles of the reference)
REFERENCE_BINS = 10
#: floor on a bin's share, so an empty bin does not make the index infinite
SHARE_FLOOR = 1e-4
SCORE = "churn_probability"


def _numeric_reference(values: np.ndarray, bins: int) -> dict[str, Any]:
    present = values[~np.isnan(values)]
    if len(present) == 0:
        return {"kind": "numeric", "edges": [], "shares": [], "missing": 1.0}
    edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, present, side="right"),
                         minlength=len(edges) + 1)
    return {
        "kind": "numeric",
        "edges": edges.tolist(),
        "shares": (counts / len(values)).tolist(),
        "missing": float(1 - len(present) / len(values)),
    }


def _categorical_reference(values: pd.Series) -> dict[str, Any]:
    shares = values.astype(object).where(values.notna(), None).value_counts(
        normalize=True, dropna=False)
    levels = {str(k): float(v) for k, v in shares.items() if k is not None}
    return {"kind": "categorical", "shares": levels,
            "missing": float(values.isna().mean())}


def drift_reference(features: pd.DataFrame, score: np.ndarray, *,
                    bins: int = REFERENCE_BINS) -> dict[str, Any]:
    """Bins and shares of every feature column and of the score (see the module doc)."""
    if len(features) == 0:
        return {}
    reference: dict[str, Any] = {"rows": len(features), "features": {}}
    for name in features.columns:
        column = features[name]
        if isinstance(column.dtype, pd.CategoricalDtype) or column.dtype == object:
            reference["features"][str(name)] = _categorical_reference(column)
        else:
            values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
            reference["features"][str(name)] = _numeric_reference(values, bins)
    reference[SCORE] = _numeric_reference(np.asarray(score, dtype=float), bins)
    return reference


def _shares_of(values: Any, spec: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(expected, actual) shares of one feature over the reference's bins, missing last."""
    if spec["kind"] == "categorical":
        series = pd.Series(values, dtype=object)
        levels = list(spec["shares"])
        n = max(len(series), 1)
        text = series.where(series.isna(), series.astype(str))
        known = text.isin(levels)
        actual = [float((text == level).sum()) / n for level in levels]
        other = float((~known & text.notna()).sum()) / n
        expected = [*spec["shares"].values(), 0.0, spec["missing"]]
        actual = [*actual, other, float(text.isna().sum()) / n]
        return np.asarray(expected), np.asarray(actual)
    array = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    edges = np.asarray(spec["edges"], dtype=float)
    n = max(len(array), 1)
    present = array[~np.isnan(array)]
    counts = np.bincount(np.searchsorted(edges, present, side="right"),
                         minlength=len(edges) + 1)
    # a feature missing for every reference customer has no bins: one empty bin stands in
    expected = [*(spec["shares"] or [0.0]), spec["missing"]]
    actual = [*(counts / n), 1 - len(present) / n]
    return np.asarray(expected, dtype=float), np.asarray(actual, dtype=float)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index between two share vectors over the same bins."""
    e = np.maximum(np.asarray(expected, dtype=float), SHARE_FLOOR)
    a = np.maximum(np.asarray(actual, dtype=float), SHARE_FLOOR)
    keep = (np.asarray(expected) > 0) | (np.asarray(actual) > 0)
    return float(np.sum(((a - e) * np.log(a / e))[keep]))


def stability(reference: Mapping[str, Any], features: pd.DataFrame,
              score: np.ndarray) -> pd.DataFrame:
    """PSI of each referenced feature and of the score, largest first.

    Columns: ``name``, ``psi``, ``kind`` (``feature`` or ``score``). Features the
    reference knows but the frame lacks are measured as all missing.
    """
    rows = []
    for name, spec in reference.get("features", {}).items():
        values = features[name] if name in features else np.full(len(features), np.nan)
        rows.append({"name": name, "psi": psi(*_shares_of(values, spec)), "kind": "feature"})
    if SCORE in reference:
        rows.append({"name": SCORE, "psi": psi(*_shares_of(score, reference[SCORE])),
                     "kind": "score"})
    frame = pd.DataFrame(rows, columns=["name", "psi", "kind"])
    return frame.sort_values("psi", ascending=False, kind="stable").reset_index(drop=True)
