"""Uplift estimators on a randomized experiment whose per-customer effect is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.errors import NotFittedError
from models.uplift import (
    TwoModelUplift,
    XLearnerUplift,
    expected_saved_value,
    qini_coefficient,
)


def experiment(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Churn 0.6 untreated; treatment saves half of the 'sensitive' ones (x0 > 0), nobody else."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x0": rng.normal(size=n), "x1": rng.normal(size=n)})
    effect = np.where(X["x0"] > 0, 0.3, 0.0)
    treated = rng.random(n) < 0.5
    churn = rng.random(n) < 0.6 - effect * treated
    return X, treated, churn.astype(float), effect


@pytest.mark.parametrize("model", [TwoModelUplift(num_boost_round=60),
                                   XLearnerUplift(num_boost_round=60)])
def test_uplift_ranks_the_customers_it_helps_first(model):
    X, treated, churn, _ = experiment(4000, 1)
    model.fit(X, treated, churn)
    X_new, _, _, effect = experiment(2000, 2)
    predicted = model.predict(X_new)
    assert predicted[effect > 0].mean() - predicted[effect == 0].mean() > 0.15
    assert qini_coefficient(predicted, effect) > 0.6
    assert abs(predicted.mean() - effect.mean()) < 0.06


def test_qini_is_one_for_the_truth_and_near_zero_at_random():
    rng = np.random.default_rng(3)
    effect = rng.uniform(0, 1, 5000)
    assert qini_coefficient(effect, effect) == pytest.approx(1.0)
    assert abs(qini_coefficient(rng.random(5000), effect)) < 0.05
    assert qini_coefficient(-effect, effect) == pytest.approx(-1.0)


def test_saved_value_and_refusals():
    assert expected_saved_value(np.array([0.1, 0.0]), np.array([500.0, 80.0]), 10.0).tolist() \
        == [40.0, -10.0]
    with pytest.raises(NotFittedError):
        TwoModelUplift().predict(pd.DataFrame({"x": [1.0]}))
    X, treated, churn, _ = experiment(200, 4)
    treated[:] = True
    treated[:10] = False
    with pytest.raises(ValueError, match="at least 20 control customers"):
        TwoModelUplift().fit(X, treated, churn)


def test_uplift_on_top_of_the_churn_model_needs_the_baseline_both_times():
    X, treated, churn, _ = experiment(4000, 5)
    baseline = np.full(len(X), 0.6)  # the churn model's probability without contact
    model = XLearnerUplift(num_boost_round=40).fit(X, treated, churn, baseline=baseline)
    X_new, _, _, effect = experiment(2000, 6)
    predicted = model.predict(X_new, baseline=np.full(len(X_new), 0.6))
    assert qini_coefficient(predicted, effect) > 0.6
    with pytest.raises(ValueError, match="pass baseline to predict exactly when"):
        TwoModelUplift(num_boost_round=10).fit(X, treated, churn, baseline=baseline).predict(
            X_new)
