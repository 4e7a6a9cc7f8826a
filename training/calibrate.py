"""Probability calibration of the churn model: which map, fitted on what.

The map is chosen and fitted on the held-out snapshot (`choose_calibration`);
a short history's horizon anchor fits a Platt map to BG/NBD's probabilities
instead of to outcomes (`fit_soft_platt`). Either is a plain-number map that
`models.bundle.apply_calibration` applies at scoring.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.bundle import apply_calibration
from training.metrics import expected_calibration_error
from training.params import TrainParams


def fit_platt(raw: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Platt scaling σ(a·logit(raw) + b) fitted to outcomes (keeps the ranking)."""
    from sklearn.linear_model import LogisticRegression

    clipped = np.clip(raw, 1e-7, 1 - 1e-7)
    logit = np.log(clipped / (1 - clipped)).reshape(-1, 1)
    model = LogisticRegression(C=1e6).fit(logit, y)
    return {"method": "platt", "a": float(model.coef_[0, 0]), "b": float(model.intercept_[0])}


def fit_isotonic(raw: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Isotonic regression of outcomes on raw probabilities (monotone steps)."""
    from sklearn.isotonic import IsotonicRegression

    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)
    return {"method": "isotonic", "x": model.X_thresholds_.tolist(),
            "y": model.y_thresholds_.tolist()}


_CALIBRATORS = {"platt": fit_platt, "isotonic": fit_isotonic}


def _crossfit_ece(method: str, raw: np.ndarray, y: np.ndarray, seed: int) -> float:
    """ECE of a calibration map fitted on one half of the holdout and applied to the other."""
    folds = np.random.default_rng(seed).permutation(len(raw)) % 2
    calibrated = np.empty_like(raw)
    for k in (0, 1):
        fit, apply = folds != k, folds == k
        if len(np.unique(y[fit])) < 2:
            return float("inf")
        calibrated[apply] = apply_calibration(_CALIBRATORS[method](raw[fit], y[fit]), raw[apply])
    return expected_calibration_error(y, calibrated)


def choose_calibration(raw: np.ndarray, y: np.ndarray, *, params: TrainParams
                       ) -> tuple[dict[str, Any], dict[str, float]]:
    """Pick the calibration map for held-out raw probabilities.

    ``auto``: keep raw probabilities when their ECE is at most
    ``calibrate_above_ece``; otherwise take whichever of Platt scaling and
    isotonic regression has the lower ECE when fitted on one half of the holdout
    and checked on the other (both ways), preferring Platt unless isotonic is
    better by more than 0.005, and only if that beats raw. The chosen map is
    then fitted on the whole holdout.
    """
    raw_ece = expected_calibration_error(y, raw)
    report = {"churn_ece_raw": raw_ece}
    if params.calibration == "none":
        return {"method": "none"}, report
    if params.calibration == "auto":
        if raw_ece <= params.calibrate_above_ece:
            return {"method": "none"}, report
        candidates = {m: _crossfit_ece(m, raw, y, params.seed) for m in _CALIBRATORS}
        report |= {f"churn_ece_crossfit_{m}": v for m, v in candidates.items()}
        # Platt keeps the ranking and has no plateaus; isotonic must earn its flexibility
        method = "platt" if candidates["platt"] <= candidates["isotonic"] + 0.005 else "isotonic"
        if candidates[method] >= raw_ece:
            return {"method": "none"}, report
    else:
        method = params.calibration
        report[f"churn_ece_crossfit_{method}"] = _crossfit_ece(method, raw, y, params.seed)
    return _CALIBRATORS[method](raw, y), report


def fit_soft_platt(raw: np.ndarray, target: np.ndarray) -> dict[str, Any]:
    """Platt map σ(a·logit(raw) + b) fitted by cross-entropy to target probabilities.

    Each row counts as a churned example with weight ``target`` and a retained
    one with weight ``1 − target``; the result is a `models.bundle` calibration.
    """
    from sklearn.linear_model import LogisticRegression

    clipped = np.clip(np.asarray(raw, dtype=float), 1e-7, 1 - 1e-7)
    logit = np.log(clipped / (1 - clipped)).reshape(-1, 1)
    target = np.clip(np.asarray(target, dtype=float), 0.0, 1.0)
    X = np.vstack([logit, logit])
    y = np.r_[np.ones(len(logit)), np.zeros(len(logit))]
    model = LogisticRegression(C=1e6).fit(X, y, sample_weight=np.r_[target, 1 - target])
    return {"method": "platt", "a": float(model.coef_[0, 0]), "b": float(model.intercept_[0]),
            "fitted_to": "bgnbd"}
