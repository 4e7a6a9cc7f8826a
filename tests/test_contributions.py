"""exact_contributions must equal LightGBM's own pred_contrib, on every kind of split."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from models.contributions import (
    compile_booster,
    exact_contributions,
    lightgbm_matrix,
    reached_leaves,
)

TOLERANCE = 1e-6
# One OpenMP thread: on a shared machine LightGBM's spinning threads cost more than they give.
QUIET = {"verbose": -1, "num_threads": 1}


def _frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Churn-like features: NaNs, exact zeros, a pandas categorical with missing levels."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "days_since_last_order": rng.exponential(40.0, n),
            "orders_90d": rng.poisson(2.0, n).astype(float),
            "plan": pd.Categorical(rng.choice(["basic", "plus", "pro", "team", "edu"], n)),
            "discount_share": np.where(rng.random(n) < 0.3, 0.0, rng.random(n)),
            "returns_365d": rng.poisson(0.5, n).astype(float),
            "country": pd.Categorical(rng.choice(list("ABCDEFGH"), n)),
        }
    )
    for column in ("days_since_last_order", "orders_90d", "discount_share"):
        frame.loc[rng.random(n) < 0.15, column] = np.nan
    frame.loc[rng.random(n) < 0.1, "plan"] = np.nan
    signal = (
        frame["days_since_last_order"].fillna(90) / 40
        - frame["orders_90d"].fillna(0)
        + (frame["plan"] == "basic") * 1.5
        + frame["discount_share"].fillna(0.5) * 2
        + frame["country"].isin(["A", "C", "F"]) * 1.0
    )
    label = (signal + rng.normal(0, 1, n) > 1.0).astype(int).to_numpy()
    return frame, label


def _train(params: dict, rounds: int, *, n: int = 3000, seed: int = 0) -> tuple:
    frame, label = _frame(n, seed)
    base = {**QUIET, "seed": seed, "min_data_per_group": 5, "cat_smooth": 1.0}
    booster = lgb.train({**base, **params}, lgb.Dataset(frame, label), rounds)
    holdout, _ = _frame(600, seed + 1)
    return booster, holdout


def _assert_exact(booster: lgb.Booster, X, **kwargs) -> np.ndarray:
    ours = exact_contributions(booster, X, **kwargs)
    reference = booster.predict(X, pred_contrib=True, **kwargs)
    assert ours.shape == reference.shape, "same layout as pred_contrib"
    worst = float(np.abs(ours - reference).max())
    assert worst <= TOLERANCE, f"contributions differ from pred_contrib by {worst:g}"
    return ours


@pytest.fixture(scope="module")
def churn_model():
    return _train({"objective": "binary", "num_leaves": 31}, 120)


def test_binary_with_categoricals_and_nans_matches_pred_contrib(churn_model):
    booster, holdout = churn_model
    ours = _assert_exact(booster, holdout)
    raw = booster.predict(holdout, raw_score=True)
    np.testing.assert_allclose(ours.sum(axis=1), raw, atol=TOLERANCE, err_msg="efficiency")


def test_split_logic_reaches_the_leaves_lightgbm_reaches(churn_model):
    booster, holdout = churn_model
    ours = reached_leaves(booster, holdout)
    assert np.array_equal(ours, booster.predict(holdout, pred_leaf=True))


def test_unseen_and_missing_levels_follow_lightgbm(churn_model):
    booster, holdout = churn_model
    frame = holdout.copy()
    frame["plan"] = frame["plan"].cat.add_categories(["enterprise"])
    frame.loc[frame.index[:50], "plan"] = "enterprise"  # unseen in training
    frame["country"] = frame["country"].cat.reorder_categories(
        list(reversed(frame["country"].cat.categories))
    )  # same levels, other order: must be recoded to the training order
    _assert_exact(booster, frame)


def test_numpy_input_with_odd_categorical_codes(churn_model):
    booster, holdout = churn_model
    matrix = lightgbm_matrix(holdout, pandas_categorical=booster.pandas_categorical)
    plan = list(holdout.columns).index("plan")
    odd = np.array([-1.0, -0.5, 0.7, 2.9, 40.0, 1e12, np.inf, -np.inf, np.nan])
    matrix[: len(odd), plan] = odd
    _assert_exact(booster, matrix)
    np.testing.assert_array_equal(
        reached_leaves(booster, matrix), booster.predict(matrix, pred_leaf=True)
    )


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"objective": "regression", "zero_as_missing": True}, id="missing-zero"),
        pytest.param({"objective": "regression", "use_missing": False}, id="missing-none"),
        pytest.param({"objective": "tweedie", "max_depth": 3, "num_leaves": 8}, id="depth-3"),
        pytest.param(
            {"objective": "binary", "num_leaves": 127, "min_data_in_leaf": 3}, id="deep-leafwise"
        ),
    ],
)
def test_missing_types_objectives_and_depths(params):
    booster, holdout = _train(params, 25, seed=3)
    frame = holdout.copy()
    frame.loc[frame.index[::7], "returns_365d"] = 0.0
    frame.loc[frame.index[::11], "discount_share"] = -0.0
    frame.loc[frame.index[::13], "orders_90d"] = 1e-40  # inside LightGBM's zero band
    _assert_exact(booster, frame)


def test_leaves_without_tables_are_exact_too():
    """Deep leaves are evaluated on the fly; force that path for every leaf."""
    booster, holdout = _train({"objective": "binary", "num_leaves": 63}, 20, seed=5)
    compiled = compile_booster(booster, table_budget_bytes=0)
    assert compiled.table_bytes == 0
    worst = np.abs(compiled.contributions(holdout) - booster.predict(holdout, pred_contrib=True))
    assert worst.max() <= TOLERANCE, f"on-the-fly path differs by {worst.max():g}"


def test_multiclass_gives_one_block_per_class():
    frame, label = _frame(1200, 7)
    classes = (label + (frame["orders_90d"].fillna(0) > 2)).to_numpy()
    booster = lgb.train(
        {"objective": "multiclass", "num_class": 3, **QUIET, "min_data_per_group": 5},
        lgb.Dataset(frame, classes),
        15,
    )
    ours = _assert_exact(booster, frame.iloc[:400])
    assert ours.shape == (400, 3 * (frame.shape[1] + 1))


def test_iteration_ranges_and_best_iteration(churn_model):
    booster, holdout = churn_model
    _assert_exact(booster, holdout, num_iteration=17)
    _assert_exact(booster, holdout, start_iteration=30, num_iteration=20)
    # A booster that early-stopped predicts with its best iteration unless told otherwise.
    early = lgb.Booster(model_str=booster.model_to_string())
    early.best_iteration = 25
    ours = _assert_exact(early, holdout)
    assert not np.allclose(ours, exact_contributions(early, holdout, num_iteration=-1))


def test_single_leaf_trees_and_random_forest():
    frame, label = _frame(500, 13)
    params = {"objective": "binary", **QUIET, "min_data_in_leaf": 400}
    stumps = lgb.train(params, lgb.Dataset(frame, label), 5)
    assert stumps.dump_model()["tree_info"][0]["num_leaves"] == 1, "fixture: trees without splits"
    _assert_exact(stumps, frame)
    forest = lgb.train(
        {
            "objective": "binary", "boosting": "rf", "bagging_fraction": 0.7, "bagging_freq": 1,
            "feature_fraction": 0.8, **QUIET, "min_data_per_group": 5,
        },
        lgb.Dataset(frame, label),
        20,
    )
    _assert_exact(forest, frame)


def test_integer_and_boolean_columns_are_cast_like_lightgbm():
    rng = np.random.default_rng(17)
    frame = pd.DataFrame(
        {
            "tenure_days": rng.integers(0, 3000, 2000),
            "is_subscriber": rng.random(2000) < 0.4,
            "spend": rng.gamma(2.0, 50.0, 2000).astype(np.float32),
        }
    )
    label = ((frame["tenure_days"] < 800) ^ frame["is_subscriber"]).astype(int)
    booster = lgb.train({"objective": "binary", **QUIET}, lgb.Dataset(frame, label), 20)
    _assert_exact(booster, frame)
    _assert_exact(booster, frame.to_numpy(dtype=np.int64))


def test_threads_do_not_change_the_result(churn_model):
    booster, holdout = churn_model
    one = exact_contributions(booster, holdout, n_threads=1)
    two = exact_contributions(booster, holdout, n_threads=2)
    assert np.array_equal(one, two), "row blocks are independent, so threads cannot matter"


def test_bad_input_is_refused_with_a_clear_message(churn_model):
    booster, holdout = churn_model
    with pytest.raises(ValueError, match="features but the input has"):
        exact_contributions(booster, holdout[["days_since_last_order", "orders_90d"]])
    with pytest.raises(ValueError, match="categorical"):
        exact_contributions(booster, holdout.assign(country=holdout["country"].cat.codes))
    assert exact_contributions(booster, holdout.iloc[:0]).shape == (0, holdout.shape[1] + 1)
