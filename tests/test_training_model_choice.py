"""Choices made on the held-out training snapshot: tree size and the hurdle CLV model."""

from __future__ import annotations

from dataclasses import replace

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from training.boosters import balance_total, fit_clv, season_weights
from training.model_choice import (
    add_log_link_boosters,
    average_log_link_boosters,
    choose_clv_form,
    choose_tree_size,
    fit_hurdle,
    scale_booster,
)
from training.params import TrainParams
from training.rows import Labelled

QUIET = {"verbosity": -1, "num_threads": 1, "seed": 0, "deterministic": True}


def spend_data(n: int = 1500, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Zero-inflated spend: feature a drives whether anyone buys, b how much buyers spend."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    buys = rng.random(n) < 1 / (1 + np.exp(-2 * X["a"]))
    return X, np.where(buys, rng.gamma(2.0, np.exp(1 + X["b"]) / 2.0), 0.0)


def train(extra, X, y, X_val, y_val):
    return lgb.train({"num_leaves": 7, "learning_rate": 0.1, **QUIET, **extra},
                     lgb.Dataset(X, y), num_boost_round=40)


def train_rows(extra, *, train: Labelled, check: Labelled):
    """`fit_hurdle`'s trainer: the same small booster, on `Labelled` rows."""
    return globals()["train"](extra, train.features, train.target, None, None)


def test_added_boosters_predict_the_product_and_keep_contributions_additive():
    X, y = spend_data()
    purchase = train({"objective": "poisson"}, X, (y > 0).astype(float), None, None)
    spend = train({"objective": "gamma"}, X[y > 0], y[y > 0], None, None)
    both = add_log_link_boosters(purchase, spend)
    assert both.num_trees() == purchase.num_trees() + spend.num_trees()
    np.testing.assert_allclose(both.predict(X), purchase.predict(X) * spend.predict(X),
                               rtol=1e-10)
    contributions = both.predict(X, pred_contrib=True)
    np.testing.assert_allclose(contributions.sum(axis=1), both.predict(X, raw_score=True),
                               atol=1e-9)
    # the horizon anchor's power map works on it like on any log-link booster
    np.testing.assert_allclose(scale_booster(both, 2.0, power=1.2).predict(X),
                               2.0 * both.predict(X) ** 1.2, rtol=1e-9)


def test_seed_average_is_the_mean_raw_score_with_the_mean_of_the_contributions():
    X, y = spend_data()
    seeds = [lgb.train({"num_leaves": 7, "learning_rate": 0.1, **QUIET, "seed": seed,
                        "feature_fraction": 0.6, "objective": "tweedie"},
                       lgb.Dataset(X, y), num_boost_round=20 + 5 * seed) for seed in range(3)]
    averaged = average_log_link_boosters(seeds)
    raw = np.mean([b.predict(X, raw_score=True) for b in seeds], axis=0)
    assert not np.allclose(seeds[0].predict(X), seeds[1].predict(X)), "seeds must differ"
    np.testing.assert_allclose(averaged.predict(X, raw_score=True), raw, atol=1e-9)
    np.testing.assert_allclose(averaged.predict(X), np.exp(raw), rtol=1e-9)
    np.testing.assert_allclose(
        averaged.predict(X, pred_contrib=True),
        np.mean([b.predict(X, pred_contrib=True) for b in seeds], axis=0), atol=1e-9)
    assert average_log_link_boosters(seeds[:1]) is seeds[0]


def test_adding_boosters_of_different_features_is_refused():
    X, y = spend_data()
    one = train({"objective": "poisson"}, X, (y > 0).astype(float), None, None)
    other = train({"objective": "gamma"}, X[["a", "b"]][y > 0], y[y > 0], None, None)
    with pytest.raises(ValueError, match="same features"):
        add_log_link_boosters(one, other)


def test_hurdle_ranks_zero_inflated_spend_and_is_chosen_on_the_held_out_rows():
    X, y = spend_data(seed=1)
    X_val, y_val = spend_data(seed=2)
    hurdle = fit_hurdle(train_rows, train=Labelled(X, y), check=Labelled(X_val, y_val))
    assert hurdle is not None
    # a Tweedie model that cannot see the purchase driver ranks worse
    blind = train({"objective": "tweedie"}, X.assign(a=0.0), y, None, None)
    choice = choose_clv_form(blind, hurdle, X_val, y_val)
    assert choice.value is hurdle and choice.report["clv_hurdle"] == 1.0
    assert choice.report["clv_gini_hurdle"] > choice.report["clv_gini_tweedie"]
    forced = choose_clv_form(hurdle, blind, X_val, y_val, form="hurdle")
    assert forced.value is blind, "an explicit form is not second-guessed"


def test_no_hurdle_without_enough_buyers():
    X, y = spend_data()
    assert fit_hurdle(train_rows, train=Labelled(X, np.zeros(len(y))),
                      check=Labelled(X, y)) is None
    tweedie = train({"objective": "tweedie"}, X, y, None, None)
    assert choose_clv_form(tweedie, None, X, y).value is tweedie


def test_tree_size_changes_only_for_a_clear_held_out_gain():
    aucs = {(15, 20): 0.700, (3, 50): 0.704, (7, 50): 0.720}
    chosen = choose_tree_size(aucs.__getitem__, (15, 20), ((3, 50), (7, 50)), min_gain=0.005)
    assert chosen.value == (7, 50) and chosen.report["tree_num_leaves"] == 7
    aucs[(7, 50)] = 0.703
    kept = choose_tree_size(aucs.__getitem__, (15, 20), ((3, 50), (7, 50)), min_gain=0.005)
    assert kept.value == (15, 20) and "defaults kept" in kept.note
    tried: list = []
    assert choose_tree_size(tried.append, (15, 20), (), min_gain=0.005).value == (15, 20)
    assert not tried, "no candidates: nothing is fitted"


def test_fit_records_its_choices(fitted):
    m = fitted().metrics
    assert m["tree_num_leaves"] in (15, 3, 7)
    assert set(m) >= {"tree_size_auc_15l20m", "tree_size_auc_3l50m", "clv_hurdle"}
    with pytest.raises(ValueError, match="clv_model"):
        TrainParams(clv_model="ziln")


def test_season_weights_favour_the_same_day_of_the_year():
    cut_off = pd.Timestamp("2025-10-01")
    snapshots = pd.Series(pd.to_datetime(["2024-10-01", "2024-11-15", "2025-07-03",
                                          "2025-04-01", "2023-10-02"]))
    weights = season_weights(snapshots, season_of=cut_off, weight=2.0)
    assert weights[0] == pytest.approx(3.0), "a year before: full extra weight"
    assert 1.0 < weights[1] < weights[0], "six weeks off: part of it"
    assert weights[2] == pytest.approx(1.0, abs=0.05), "90 days away: almost none"
    assert weights[3] == pytest.approx(1.0), "half a year away: none"
    assert weights[4] == pytest.approx(3.0, abs=0.01), "two years before: the same season"


def test_balanced_booster_predicts_the_rows_total_and_keeps_the_ranking():
    X, y = spend_data()
    # few, shrunken trees: a Tweedie model that has not reached the rows' total
    booster = lgb.train({"num_leaves": 7, "learning_rate": 0.05, **QUIET,
                         "objective": "tweedie", "tweedie_variance_power": 1.3},
                        lgb.Dataset(X, y), num_boost_round=15)
    before = booster.predict(X)
    assert abs(before.sum() / y.sum() - 1) > 0.01, "the test needs an unbalanced booster"
    balanced, factor = balance_total(booster, Labelled(X, y))
    after = balanced.predict(X)
    assert after.sum() == pytest.approx(y.sum(), rel=1e-9), "total over the rows = theirs"
    assert factor == pytest.approx(y.sum() / before.sum(), rel=1e-12)
    np.testing.assert_allclose(after, factor * before, rtol=1e-9)  # same ranking, one factor
    # nothing to balance against: the booster is returned as it was
    same, one = balance_total(booster, Labelled(X, np.zeros(len(X))))
    assert same is booster and one == 1.0


def test_clv_boosters_are_balanced_unless_switched_off():
    X, y = spend_data()
    rows, check = Labelled(X[:1000], y[:1000]), Labelled(X[1000:], y[1000:])
    params = TrainParams(clv_seeds=2, clv_model="tweedie", num_boost_round=60,
                         early_stopping_rounds=10, learning_rate=0.1)
    balanced = fit_clv(params, train=rows, check=check)
    assert balanced.value.predict(rows.features).sum() == pytest.approx(rows.target.sum(),
                                                                         rel=1e-9)
    plain = fit_clv(replace(params, clv_balance=False), train=rows, check=check)
    assert "clv_balance_factor" not in plain.report
    np.testing.assert_allclose(balanced.value.predict(check.features),
                               balanced.report["clv_balance_factor"]
                               * plain.value.predict(check.features), rtol=1e-9)
