"""Choosing an uplift learner on a rule's own randomized outcomes, and judging it against
value at risk where no customer's true effect is known (`training.uplift.choose_uplift`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.uplift import observed_qini, qini_coefficient
from training.uplift import choose_uplift

#: small learners: the choice, not the fit, is under test
QUICK = (("two-model", True, 30), ("x-learner", True, 30), ("two-model", False, 60),
         ("x-learner", False, 60))


def experiment(n: int, seed: int, *, effect_size: float = 0.4, churn: float = 0.9
               ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Half treated; the action saves ``effect_size`` of would-be churners with x0 > 0."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x0": rng.normal(size=n), "x1": rng.normal(size=n)})
    effect = np.where(X["x0"] > 0, churn * effect_size, 0.0)
    treated = rng.random(n) < 0.5
    churned = (rng.random(n) < churn - effect * treated).astype(float)
    return X, treated, churned, effect


def test_observed_qini_orders_rankings_as_the_true_effect_does():
    _X, treated, churned, effect = experiment(6000, 1)
    rng = np.random.default_rng(2)
    by_truth = observed_qini(effect + rng.normal(0, 1e-3, len(effect)), treated, churned)
    at_random = observed_qini(rng.random(len(effect)), treated, churned)
    backwards = observed_qini(-effect + rng.normal(0, 1e-3, len(effect)), treated, churned)
    assert by_truth > 0.02 > abs(at_random), "the true order scores well above a random one"
    assert backwards < -0.02, "the reverse order scores below random"
    assert qini_coefficient(effect, effect) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same, non-zero length"):
        observed_qini(np.ones(3), treated[:3], churned[:2])


def test_a_learner_stuck_on_a_certain_churn_model_is_not_chosen_and_risk_is_beaten():
    """Everyone would churn (the churn model says 0.9999): the two-model learner started
    from it cannot move its outcome models, the others find whom the action helps (the
    X-learner's effect models do not start from the churn model), and value at risk (the
    same for everyone) ranks no better than chance."""
    X, treated, churned, _effect = experiment(2000, 3, churn=0.97)
    certain = np.full(len(X), 0.9999)
    choice = choose_uplift(X, treated, churned, churn_probability=certain,
                           clv=np.full(len(X), 100.0), candidates=QUICK)
    stuck = choice.qini["two-model on the churn model"]
    assert choice.name != "two-model on the churn model", choice.qini
    assert choice.qini[choice.name] > stuck + 0.02, choice.qini
    assert set(choice.qini) == {"two-model on the churn model", "x-learner on the churn model",
                                "two-model", "x-learner"}
    assert choice.against_value_at_risk == "better", choice.gain_interval
    assert choice.gain_interval[0] > 0


def test_no_effect_to_find_is_never_called_better_than_risk():
    """The action helps nobody: whatever learner wins, the outcomes cannot show it beating
    value at risk (a best-of-four Qini is biased up; the interval must absorb it)."""
    verdicts = []
    for seed in (4, 5, 6):
        X, treated, churned, _ = experiment(800, seed, effect_size=0.0, churn=0.3)
        probability = np.clip(0.3 + 0.1 * X["x1"].to_numpy(), 0.01, 0.99)
        choice = choose_uplift(X, treated, churned, churn_probability=probability,
                               clv=np.full(len(X), np.nan), candidates=QUICK, seed=seed)
        verdicts.append(choice.against_value_at_risk)
    assert "better" not in verdicts, verdicts


def test_small_groups_get_more_folds_so_each_fit_keeps_twenty_of_each():
    X, treated, churned, _ = experiment(400, 7)
    keep = np.flatnonzero(~treated)[:24]
    rows = np.sort(np.concatenate([np.flatnonzero(treated)[:60], keep]))
    choice = choose_uplift(X.iloc[rows].reset_index(drop=True), treated[rows], churned[rows],
                           churn_probability=np.full(len(rows), 0.5),
                           clv=np.full(len(rows), 10.0), candidates=QUICK)
    assert choice.folds >= 6, "24 controls: five folds would leave 19 to learn from"
