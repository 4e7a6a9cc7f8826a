"""Uplift: how much contacting a customer lowers their churn probability.

Learned from an outreach rule's matured, randomized outcomes (treated against
held-out control, `serving.monitoring.effect`), on the same model matrix as the
churn model (`ChurnBundle.prepare`). Two estimators with the scikit-learn
contract, both LightGBM:

- `TwoModelUplift`: one churn classifier on the treated, one on the controls;
  the uplift is the difference of their probabilities (control − treated).
  With ``baseline`` (the churn model's probability for each customer), both
  classifiers start from it (LightGBM ``init_score`` = its log-odds) and learn
  only how each group departs from it: the few hundred outcomes of an outreach
  rule then refine the ranking the churn model learned from the whole history
  instead of relearning it.
- `XLearnerUplift` (Künzel et al., 2019): the same two outcome models, then
  each group's *imputed* effect (the other group's model against the observed
  outcome) is regressed on the features, and the two effect models are
  averaged with the treatment share as weight. It borrows strength across the
  groups when one is small (a 10% control share).

``predict`` returns the estimated churn reduction per customer (positive:
contacting them helps). `expected_saved_value` turns it into money:
reduction × CLV − the action's cost.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.errors import NotFittedError

_PARAMS = {"objective": "binary", "learning_rate": 0.05, "num_leaves": 7,
           "min_data_in_leaf": 20, "feature_fraction": 0.9, "lambda_l2": 1.0, "verbose": -1}


def _check(X: pd.DataFrame, treated: np.ndarray, churned: np.ndarray) -> None:
    if len(X) != len(treated) or len(X) != len(churned):
        raise ValueError(f"X, treated and churned must have the same length "
                         f"({len(X)}, {len(treated)}, {len(churned)})")
    for name, group in (("treated", treated), ("control", ~treated)):
        if group.sum() < 20:
            raise ValueError(f"at least 20 {name} customers with a matured outcome are "
                             f"needed to fit an uplift model, not {int(group.sum())}")


def _booster(X: pd.DataFrame, y: np.ndarray, *, objective: str, rounds: int, seed: int,
             threads: int, offset: np.ndarray | None = None) -> lgb.Booster:
    params = {**_PARAMS, "objective": objective, "seed": seed, "num_threads": threads}
    return lgb.train(params, lgb.Dataset(X, label=y, init_score=offset),
                     num_boost_round=rounds)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _probability(booster: lgb.Booster, X: pd.DataFrame, offset: np.ndarray | None
                 ) -> np.ndarray:
    if offset is None:
        return booster.predict(X)
    return 1 / (1 + np.exp(-(booster.predict(X, raw_score=True) + offset)))


class TwoModelUplift:
    """Churn reduction = P(churn | control, x) − P(churn | treated, x), one model each."""

    def __init__(self, *, num_boost_round: int = 150, seed: int = 0, num_threads: int = 1
                 ) -> None:
        self.num_boost_round = num_boost_round
        self.seed = seed
        self.num_threads = num_threads

    def fit(self, X: pd.DataFrame, treated: np.ndarray, churned: np.ndarray, *,
            baseline: np.ndarray | None = None) -> TwoModelUplift:
        treated = np.asarray(treated, dtype=bool)
        churned = np.asarray(churned, dtype=float)
        _check(X, treated, churned)
        offset = None if baseline is None else _logit(baseline)
        kw = {"objective": "binary", "rounds": self.num_boost_round, "seed": self.seed,
              "threads": self.num_threads}
        self.treated_model_ = _booster(X[treated], churned[treated], **kw,
                                       offset=None if offset is None else offset[treated])
        self.control_model_ = _booster(X[~treated], churned[~treated], **kw,
                                       offset=None if offset is None else offset[~treated])
        self.uses_baseline_ = baseline is not None
        return self

    def _outcomes(self, X: pd.DataFrame, baseline: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """P(churn | control, x) and P(churn | treated, x)."""
        if not hasattr(self, "treated_model_"):
            raise NotFittedError("fit the uplift model before predicting")
        if self.uses_baseline_ != (baseline is not None):
            raise ValueError("pass baseline to predict exactly when it was passed to fit")
        offset = None if baseline is None else _logit(baseline)
        return (_probability(self.control_model_, X, offset),
                _probability(self.treated_model_, X, offset))

    def predict(self, X: pd.DataFrame, *, baseline: np.ndarray | None = None) -> np.ndarray:
        control, treated = self._outcomes(X, baseline)
        return control - treated


class XLearnerUplift(TwoModelUplift):
    """The X-learner on top of the two outcome models (see the module doc)."""

    def fit(self, X: pd.DataFrame, treated: np.ndarray, churned: np.ndarray, *,
            baseline: np.ndarray | None = None) -> XLearnerUplift:
        super().fit(X, treated, churned, baseline=baseline)
        treated = np.asarray(treated, dtype=bool)
        churned = np.asarray(churned, dtype=float)
        kw = {"objective": "regression", "rounds": self.num_boost_round, "seed": self.seed,
              "threads": self.num_threads}
        control_p, treated_p = self._outcomes(X, baseline)
        # imputed reductions: what the customer's churn would have been untreated, minus
        # what it was (treated), and what it was minus what treatment would have made it
        imputed_treated = control_p[treated] - churned[treated]
        imputed_control = churned[~treated] - treated_p[~treated]
        self.effect_treated_ = _booster(X[treated], imputed_treated, **kw)
        self.effect_control_ = _booster(X[~treated], imputed_control, **kw)
        self.treated_share_ = float(treated.mean())
        return self

    def predict(self, X: pd.DataFrame, *, baseline: np.ndarray | None = None) -> np.ndarray:
        if not hasattr(self, "effect_treated_"):
            raise NotFittedError("fit the uplift model before predicting")
        g = self.treated_share_
        # weight each effect model by the other group's share (the propensity weighting)
        return g * self.effect_control_.predict(X) + (1 - g) * self.effect_treated_.predict(X)


def expected_saved_value(reduction: np.ndarray, clv: np.ndarray, cost: float) -> np.ndarray:
    """Estimated churn reduction from the action × CLV − the action's cost."""
    return np.asarray(reduction, dtype=float) * np.asarray(clv, dtype=float) - float(cost)


def qini_coefficient(ranking: np.ndarray, effect: np.ndarray) -> float:
    """Area between the cumulative-effect curve of ``ranking`` and random, over perfect's.

    ``effect`` is each customer's true effect (known on generated data): 1 for
    the ranking that orders customers by it, 0 for a random order.
    """
    effect = np.asarray(effect, dtype=float)
    n = len(effect)
    if n == 0:
        return float("nan")

    def area(order: np.ndarray) -> float:
        return float(np.cumsum(effect[order]).sum())

    random = effect.sum() * (n + 1) / 2
    perfect = area(np.argsort(-effect, kind="stable"))
    if perfect == random:
        return float("nan")
    return (area(np.argsort(-np.asarray(ranking, dtype=float), kind="stable")) - random) / (
        perfect - random)
