"""The LightGBM boosters of a bundle: churn (tree size chosen on the holdout) and CLV.

Each booster learns from one `Labelled` set of rows and is early-stopped on
another, passed by keyword so that training and checking rows cannot be
swapped. Only the trees that early stopping kept are returned, so every
consumer (bundle, pyfunc, the by-id scorer) predicts the same.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from training.model_choice import (
    Choice,
    TreeSize,
    average_log_link_boosters,
    choose_clv_form,
    choose_tree_size,
    fit_hurdle,
    scale_booster,
)
from training.params import TrainParams
from training.rows import Labelled


def lgb_params(params: TrainParams, **extra: Any) -> dict[str, Any]:
    """LightGBM's parameters for ``params`` (deterministic, seeded), plus ``extra``."""
    return {
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "min_data_in_leaf": params.min_data_in_leaf,
        "feature_fraction": params.feature_fraction,
        "lambda_l2": params.lambda_l2,
        "seed": params.seed,
        "deterministic": True,
        "num_threads": params.num_threads,
        "verbosity": -1,
        **extra,
    }


def train_booster(params: dict[str, Any], *, train: Labelled, check: Labelled, rounds: int,
                  stop: int) -> lgb.Booster:
    """A booster fitted on ``train`` and early-stopped on ``check``, cut to its best trees."""
    fit_on = lgb.Dataset(train.features, label=train.target, weight=train.weight,
                         free_raw_data=False)
    valid = lgb.Dataset(check.features, label=check.target, reference=fit_on,
                        free_raw_data=False)
    booster = lgb.train(params, fit_on, num_boost_round=rounds, valid_sets=[valid],
                        callbacks=[lgb.early_stopping(stop, verbose=False)])
    best = booster.best_iteration or booster.current_iteration()
    # keep only the trees that early stopping chose, so every consumer predicts the same
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=best))


def fit_churn(params: TrainParams, *, train: Labelled, check: Labelled
              ) -> tuple[lgb.Booster, TrainParams, Choice[TreeSize]]:
    """The churn booster of the tree size the held-out rows choose, and the params with it."""
    from sklearn.metrics import roc_auc_score

    boosters: dict[TreeSize, lgb.Booster] = {}

    def sized(size: TreeSize) -> TrainParams:
        return replace(params, num_leaves=size[0], min_data_in_leaf=size[1])

    def held_out_auc(size: TreeSize) -> float:
        boosters[size] = train_booster(
            lgb_params(sized(size), objective="binary", metric="binary_logloss"),
            train=train, check=check, rounds=params.num_boost_round,
            stop=params.early_stopping_rounds)
        return float(roc_auc_score(check.target, boosters[size].predict(check.features)))

    default = (params.num_leaves, params.min_data_in_leaf)
    choice = choose_tree_size(held_out_auc, default, params.tree_sizes,
                              min_gain=params.tree_size_min_gain)
    size = choice.value
    if size not in boosters:
        held_out_auc(size)
    return boosters[size], sized(size), choice


def fit_clv(params: TrainParams, *, train: Labelled, check: Labelled) -> Choice[lgb.Booster]:
    """The CLV booster (Tweedie, or the hurdle model when the held-out rows prefer it).

    Each booster is the average of ``params.clv_seeds`` boosters fitted with
    consecutive seeds, each early-stopped on its own (`average_log_link_boosters`).
    """

    def fitted(extra: dict[str, Any], *, train: Labelled, check: Labelled) -> lgb.Booster:
        return average_log_link_boosters([
            train_booster(lgb_params(replace(params, seed=params.seed + k), **extra),
                          train=train, check=check, rounds=params.num_boost_round,
                          stop=params.early_stopping_rounds)
            for k in range(params.clv_seeds)])

    tweedie = fitted({"objective": "tweedie", "metric": "tweedie",
                      "tweedie_variance_power": params.tweedie_variance_power},
                     train=train, check=check)
    hurdle = (None if params.clv_model == "tweedie"
              else fit_hurdle(fitted, train=train, check=check))
    choice = choose_clv_form(tweedie, hurdle, check.features, check.target, form=params.clv_model)
    if not params.clv_balance:
        return choice
    booster, factor = balance_total(choice.value, train)
    return replace(choice, value=booster, report=choice.report | {"clv_balance_factor": factor})


def balance_total(booster: lgb.Booster, rows: Labelled) -> tuple[lgb.Booster, float]:
    """The log-link booster scaled so that its total over ``rows`` is theirs, and the factor.

    A Tweedie booster does not keep the totals of what it learns from: its
    loss balances Σ y·μ^(1-p) against Σ μ^(2-p), not Σ y against Σ μ, and
    shrinkage, early stopping and the seed average in the log space (a
    geometric mean) pull the predicted total lower still. One factor Σy / Σŷ
    on the training rows restores it (the balance property of a GLM with its
    intercept) without changing any ranking; it is applied inside the booster
    (`scale_booster`), so every consumer predicts the same. Unweighted: the
    total of the customers, not of the season weights. Factor 1 (booster
    unchanged) when either total is not positive.
    """
    predicted = float(np.asarray(booster.predict(rows.features), dtype=float).sum())
    actual = float(np.asarray(rows.target, dtype=float).sum())
    if not (predicted > 0 and actual > 0):
        return booster, 1.0
    factor = actual / predicted
    return scale_booster(booster, factor), factor


def season_weights(snapshots: pd.Series, *, season_of: pd.Timestamp, weight: float
                   ) -> np.ndarray:
    """1 + ``weight``·max(0, cos(2π·d/365)) per row, d = days between the rows' snapshot
    and ``season_of`` on the yearly cycle: full weight at the same day of the year,
    none a quarter or more away."""
    days = (pd.Timestamp(season_of) - pd.to_datetime(snapshots)).dt.days.to_numpy() % 365
    distance = np.minimum(days, 365 - days)
    return 1.0 + weight * np.maximum(0.0, np.cos(2 * np.pi * distance / 365))
