"""Backtest mechanics on generated data, references only (fast)."""

from __future__ import annotations

import dataclasses
from datetime import date

import pandas as pd
import pytest

from features.contract import validate_tables
from features.generate import generate_dataset
from training.backtest import BacktestError, backtest, quality_checks
from training.params import TrainParams
from training.realdata import QUALITY_BAR

AS_OF = pd.Timestamp("2024-03-01")
# a purchase log's mechanics: the inactivity definition that BG/NBD also describes
PARAMS = dataclasses.replace(TrainParams(definition="inactivity"), horizon_days=60,
                             clv_horizon_days=60)


@pytest.fixture(scope="module")
def dataset():
    generated = generate_dataset(customers=800, seed=9, end=date(2024, 6, 30), kind="ecommerce",
                                 history_days=500)
    return validate_tables(generated.tables).dataset


def _references(dataset):
    return backtest(dataset, as_of=AS_OF, params=PARAMS, include_churnlens=False)


def test_rows_after_the_holdout_change_nothing(dataset):
    before = _references(dataset)
    orders = dataset.orders
    late = orders.sample(200, random_state=1).assign(
        order_id=lambda f: "late-" + f["order_id"],
        ordered_at=AS_OF + pd.Timedelta(days=PARAMS.horizon_days + 5))
    after = _references(dataclasses.replace(dataset, orders=pd.concat([orders, late])))
    pd.testing.assert_frame_equal(before.metrics, after.metrics)


def test_holdout_orders_move_the_churn_labels_not_the_predictions(dataset):
    base = _references(dataset)
    orders = dataset.orders
    completed = orders[(orders["status"] == "completed") & (orders["ordered_at"] < AS_OF)]
    buyers = completed["customer_id"].drop_duplicates().head(50)
    extra = pd.DataFrame({"order_id": "extra-" + buyers, "customer_id": buyers,
                          "ordered_at": AS_OF + pd.Timedelta(days=3), "amount": 10.0,
                          "status": "completed", "discount": 0.0, "items": 1.0})
    moved = _references(dataclasses.replace(dataset, orders=pd.concat([orders, extra])))
    assert moved.predictions.loc[buyers, "churned"].eq(0).all()
    pd.testing.assert_series_equal(base.predictions["bgnbd_churn"],
                                   moved.predictions["bgnbd_churn"])
    assert moved.metrics.loc["bgnbd", "churn_rate"] <= base.metrics.loc["bgnbd", "churn_rate"]


def test_quality_checks_name_each_target():
    bar = QUALITY_BAR["cdnow"]
    good = pd.Series({"roc_auc": 0.8, "ece": 0.01, "spearman": 0.6, "normalized_gini": 0.8,
                      "total_ratio": -0.1, "decile_error": 0.1})
    assert all(quality_checks(good, bar).values())
    bad = good.copy()
    bad["total_ratio"] = 0.2
    checks = quality_checks(bad, bar)
    assert not checks["CLV total"] and checks["churn ROC AUC"]


def test_a_holdout_past_the_data_is_refused(dataset):
    with pytest.raises(BacktestError, match="runs past the end of the data"):
        backtest(dataset, as_of=pd.Timestamp("2024-06-15"), params=PARAMS,
                 include_churnlens=False)
