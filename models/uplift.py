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

`RuleUplift` is a fitted model of one rule's action as the model bundle ships
it: LightGBM's own text models plus a JSON spec, no pickles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.errors import NotFittedError

#: the estimators by the name a bundle stores
METHODS = ("two-model", "x-learner")

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


def _probability(booster: lgb.Booster, X: pd.DataFrame | np.ndarray, offset: np.ndarray | None
                 ) -> np.ndarray:
    if offset is None:
        return np.asarray(booster.predict(X))
    return 1 / (1 + np.exp(-(np.asarray(booster.predict(X, raw_score=True)) + offset)))


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
        kw: dict[str, Any] = {"objective": "binary", "rounds": self.num_boost_round,
                               "seed": self.seed, "threads": self.num_threads}
        self.treated_model_ = _booster(X[treated], churned[treated], **kw,
                                       offset=None if offset is None else offset[treated])
        self.control_model_ = _booster(X[~treated], churned[~treated], **kw,
                                       offset=None if offset is None else offset[~treated])
        self.uses_baseline_ = baseline is not None
        return self

    def _outcomes(self, X: pd.DataFrame | np.ndarray, baseline: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """P(churn | control, x) and P(churn | treated, x)."""
        if not hasattr(self, "treated_model_"):
            raise NotFittedError("fit the uplift model before predicting")
        if self.uses_baseline_ != (baseline is not None):
            raise ValueError("pass baseline to predict exactly when it was passed to fit")
        offset = None if baseline is None else _logit(baseline)
        return (_probability(self.control_model_, X, offset),
                _probability(self.treated_model_, X, offset))

    def predict(self, X: pd.DataFrame | np.ndarray, *,
                baseline: np.ndarray | None = None) -> np.ndarray:
        control, treated = self._outcomes(X, baseline)
        return control - treated

    def boosters(self) -> dict[str, lgb.Booster]:
        """The fitted boosters by part name (what a bundle stores)."""
        if not hasattr(self, "treated_model_"):
            raise NotFittedError("fit the uplift model before storing it")
        return {"treated": self.treated_model_, "control": self.control_model_}

    def restored(self, boosters: Mapping[str, lgb.Booster], *, uses_baseline: bool,
                 treated_share: float) -> TwoModelUplift:
        """This estimator with stored boosters put back (the inverse of `boosters`)."""
        self.treated_model_ = boosters["treated"]
        self.control_model_ = boosters["control"]
        self.uses_baseline_ = uses_baseline
        return self


class XLearnerUplift(TwoModelUplift):
    """The X-learner on top of the two outcome models (see the module doc)."""

    def fit(self, X: pd.DataFrame, treated: np.ndarray, churned: np.ndarray, *,
            baseline: np.ndarray | None = None) -> XLearnerUplift:
        super().fit(X, treated, churned, baseline=baseline)
        treated = np.asarray(treated, dtype=bool)
        churned = np.asarray(churned, dtype=float)
        kw: dict[str, Any] = {"objective": "regression", "rounds": self.num_boost_round,
                               "seed": self.seed, "threads": self.num_threads}
        control_p, treated_p = self._outcomes(X, baseline)
        # imputed reductions: what the customer's churn would have been untreated, minus
        # what it was (treated), and what it was minus what treatment would have made it
        imputed_treated = control_p[treated] - churned[treated]
        imputed_control = churned[~treated] - treated_p[~treated]
        self.effect_treated_ = _booster(X[treated], imputed_treated, **kw)
        self.effect_control_ = _booster(X[~treated], imputed_control, **kw)
        self.treated_share_ = float(treated.mean())
        return self

    def predict(self, X: pd.DataFrame | np.ndarray, *,
                baseline: np.ndarray | None = None) -> np.ndarray:
        if not hasattr(self, "effect_treated_"):
            raise NotFittedError("fit the uplift model before predicting")
        g = self.treated_share_
        # weight each effect model by the other group's share (the propensity weighting)
        control, treated = (np.asarray(m.predict(X))
                            for m in (self.effect_control_, self.effect_treated_))
        return g * control + (1 - g) * treated

    def boosters(self) -> dict[str, lgb.Booster]:
        if not hasattr(self, "effect_treated_"):
            raise NotFittedError("fit the uplift model before storing it")
        return super().boosters() | {"effect_treated": self.effect_treated_,
                                     "effect_control": self.effect_control_}

    def restored(self, boosters: Mapping[str, lgb.Booster], *, uses_baseline: bool,
                 treated_share: float) -> XLearnerUplift:
        super().restored(boosters, uses_baseline=uses_baseline, treated_share=treated_share)
        self.effect_treated_ = boosters["effect_treated"]
        self.effect_control_ = boosters["effect_control"]
        self.treated_share_ = treated_share
        return self


def uplift_estimator(method: str, *, num_boost_round: int, seed: int = 0,
                     num_threads: int = 1) -> TwoModelUplift:
    """An unfitted estimator by its stored name (`METHODS`)."""
    kinds = {"two-model": TwoModelUplift, "x-learner": XLearnerUplift}
    if method not in kinds:
        raise ValueError(f"uplift method must be {' | '.join(METHODS)}, not {method!r}")
    return kinds[method](num_boost_round=num_boost_round, seed=seed, num_threads=num_threads)


@dataclass(frozen=True)
class RuleUplift:
    """The fitted uplift model of one outreach rule's action, as the bundle ships it.

    ``figures`` are what it was learned from (customers treated and held out,
    the observed churn reduction, the mean estimated one), for the bundle's
    readers and the training run.
    """

    rule: str
    action: str
    method: str
    estimator: TwoModelUplift
    uses_baseline: bool
    figures: Mapping[str, float] = field(default_factory=dict)

    def churn_reduction(self, X: pd.DataFrame | np.ndarray, *,
                        churn_probability: np.ndarray) -> np.ndarray:
        """Estimated churn reduction from this rule's action, per row of a prepared matrix."""
        if len(X) == 0:
            return np.empty(0)
        baseline = np.asarray(churn_probability, dtype=float) if self.uses_baseline else None
        return np.asarray(self.estimator.predict(X, baseline=baseline), dtype=float)

    def spec(self) -> dict[str, Any]:
        """Everything but the boosters, JSON-ready."""
        share = getattr(self.estimator, "treated_share_", None)
        return {"rule": self.rule, "action": self.action, "method": self.method,
                "uses_baseline": self.uses_baseline,
                "num_boost_round": self.estimator.num_boost_round,
                "treated_share": share, "parts": sorted(self.estimator.boosters()),
                "figures": {k: float(v) for k, v in self.figures.items()}}

    def save(self, directory: Path) -> None:
        """Write each booster as ``uplift_<rule>_<part>.txt`` into ``directory``."""
        for part, booster in self.estimator.boosters().items():
            booster.save_model(directory / _file_name(self.rule, part))

    @classmethod
    def load(cls, directory: Path, spec: Mapping[str, Any]) -> RuleUplift:
        """Read one rule's model written by `save`, described by its `spec`."""
        boosters = {}
        for part in spec["parts"]:
            path = directory / _file_name(spec["rule"], part)
            if not path.exists():
                raise FileNotFoundError(f"{path} not found: the bundle's uplift model of rule "
                                        f"{spec['rule']!r} is incomplete")
            boosters[part] = lgb.Booster(model_file=str(path))
        estimator = uplift_estimator(spec["method"], num_boost_round=spec["num_boost_round"])
        estimator.restored(boosters, uses_baseline=bool(spec["uses_baseline"]),
                           treated_share=float(spec.get("treated_share") or 0.0))
        return cls(rule=spec["rule"], action=spec["action"], method=spec["method"],
                   estimator=estimator, uses_baseline=bool(spec["uses_baseline"]),
                   figures=dict(spec.get("figures") or {}))


def _file_name(rule: str, part: str) -> str:
    return f"uplift_{rule}_{part}.txt"


def churn_reductions(models: Sequence[RuleUplift], X: pd.DataFrame | np.ndarray, *,
                     churn_probability: np.ndarray) -> dict[str, np.ndarray]:
    """Each rule's estimated churn reduction per row, for the rules that have a model."""
    return {model.rule: model.churn_reduction(X, churn_probability=churn_probability)
            for model in models}


def expected_saved_value(reduction: np.ndarray, clv: np.ndarray, cost: float) -> np.ndarray:
    """Estimated churn reduction from the action × CLV − the action's cost."""
    return np.asarray(reduction, dtype=float) * np.asarray(clv, dtype=float) - float(cost)


def observed_qini(ranking: np.ndarray, treated: np.ndarray, churned: np.ndarray) -> float:
    """Qini area of ``ranking`` on randomized outcomes, where each customer's effect is unknown.

    For the top k customers of the ranking, the customers saved are estimated as
    k × (churn rate of the top k's controls − churn rate of its treated); the
    area between that curve and the straight line to the whole group's figure
    is summed over k and divided by n² (0 = no better than random order; only
    differences between rankings of the same customers mean something). Used to
    choose a learner and to compare it with value at risk where no truth exists.
    """
    treated = np.asarray(treated, dtype=bool)
    churned = np.asarray(churned, dtype=float)
    n = len(churned)
    if n == 0 or len(treated) != n or len(ranking) != n:
        raise ValueError(f"ranking, treated and churned must have the same, non-zero length "
                         f"({len(ranking)}, {len(treated)}, {n})")
    order = np.argsort(-np.asarray(ranking, dtype=float), kind="stable")
    t, y = treated[order], churned[order]
    n_treated, n_control = np.cumsum(t), np.cumsum(~t)
    rate_treated = np.cumsum(y * t) / np.maximum(n_treated, 1)
    rate_control = np.cumsum(y * ~t) / np.maximum(n_control, 1)
    k = np.arange(1, n + 1)
    saved = k * (rate_control - rate_treated)
    return float((saved - k / n * saved[-1]).sum() / n ** 2)


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
