"""Hand-computed feature values on the tiny dataset (see tests/features_fixtures.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.pipeline import (
    FIXED_FEATURES,
    build_features,
    describe_feature,
    event_feature_names,
    feature_catalog,
)


@pytest.fixture(scope="module")
def features(tiny_dataset, tiny_as_of) -> pd.DataFrame:
    return build_features(tiny_dataset(), as_of=tiny_as_of)


def value(features: pd.DataFrame, customer: str, name: str) -> float:
    return float(features.at[customer, name])


def test_rows_are_the_customers_known_at_as_of(features):
    # E signs up and orders only after T; D has no sign-up date but an event before T
    assert list(features.index) == list("ABCDFGH")
    assert features.index.name == "customer_id"


def test_column_types(features):
    categorical = [c for c in features.columns
                   if isinstance(features[c].dtype, pd.CategoricalDtype)]
    assert categorical == ["current_plan", "region"]
    numeric = features.drop(columns=categorical)
    assert (numeric.dtypes == np.float64).all()
    assert features["age"].dtype == np.float64, "numeric attributes stay numbers"


def test_recency_frequency_monetary(features):
    assert value(features, "A", "days_since_last_order") == 20  # 2024-06-11
    assert value(features, "A", "days_since_first_order") == 172  # 2024-01-11
    assert value(features, "A", "completed_orders_30d") == 1
    assert value(features, "A", "completed_orders_90d") == 1  # 2024-03-11 is 112 days back
    assert value(features, "A", "completed_orders_365d") == 3
    assert value(features, "A", "completed_orders_total") == 3, "the order on 07-05 is after T"
    assert value(features, "A", "revenue_total") == 210
    assert value(features, "A", "revenue_90d") == 60
    assert value(features, "A", "avg_order_value") == 70
    # last 90 days: 1 order; the 90 days before (01-03 .. 04-02): 2 orders
    assert value(features, "A", "completed_orders_change_90d") == -1
    assert math.isnan(value(features, "A", "avg_order_value_trend")), "no orders before 365 d"


def test_gaps_and_overdue(features):
    # gaps 60 days (01-11 .. 03-11, leap year) and 92 days (03-11 .. 06-11)
    assert value(features, "A", "mean_days_between_orders") == 76
    assert value(features, "A", "std_days_between_orders") == pytest.approx(32 / math.sqrt(2))
    assert value(features, "A", "order_overdue_ratio") == pytest.approx(20 / 76)


def test_one_order(features):
    assert value(features, "B", "completed_orders_total") == 1
    assert value(features, "B", "days_since_last_order") == 10
    for name in ("mean_days_between_orders", "std_days_between_orders", "order_overdue_ratio"):
        assert math.isnan(value(features, "B", name)), f"{name} needs two orders"


def test_only_returns(features):
    assert value(features, "C", "completed_orders_total") == 0
    assert value(features, "C", "revenue_total") == 0
    assert value(features, "C", "returned_orders_total") == 2
    assert value(features, "C", "return_rate") == 1
    assert math.isnan(value(features, "C", "days_since_last_order"))
    assert math.isnan(value(features, "C", "avg_order_value"))


def test_returns_and_discounts(features):
    assert value(features, "A", "returned_orders_total") == 1
    assert value(features, "A", "returned_orders_90d") == 1  # 05-01 is 61 days back
    assert value(features, "A", "return_rate") == 0.25
    assert value(features, "A", "cancellation_rate") == 0
    assert value(features, "A", "discounted_order_share") == pytest.approx(1 / 3)
    assert value(features, "A", "discount_share_of_spend") == pytest.approx(10 / 210)
    assert value(features, "A", "avg_items_per_order") == 2


def test_events(features):
    assert value(features, "A", "login_events_30d") == 3
    assert value(features, "A", "login_events_change_30d") == 3
    assert value(features, "A", "days_since_last_login") == pytest.approx(5.5)  # 06-25 12:00
    assert value(features, "A", "active_days_30d") == 2, "two logins on one day count once"
    # the page view on 04-01 is 91 days back: outside 90 days, inside 365
    assert value(features, "A", "active_days_90d") == 2
    assert value(features, "A", "active_days_365d") == 3
    assert value(features, "A", "page_view_events_90d") == 0
    assert value(features, "A", "page_view_events_365d") == 1
    assert value(features, "A", "page_view_value_total") == 2.5
    assert value(features, "A", "login_events_per_active_day_90d") == 1.5


def test_events_but_no_orders(features):
    assert value(features, "D", "tenure_days") == pytest.approx(1 / 24), "known since 23:00"
    assert value(features, "D", "login_events_total") == 1
    assert value(features, "D", "completed_orders_total") == 0
    assert math.isnan(value(features, "D", "days_since_last_order"))
    assert math.isnan(value(features, "D", "age"))


def test_tenure(features):
    assert value(features, "A", "tenure_days") == 182
    assert value(features, "F", "tenure_days") == 547  # 2023-01-01 .. 2024-07-01


def test_ended_subscription(features):
    assert value(features, "F", "is_subscribed") == 0
    assert value(features, "F", "current_mrr") == 0
    assert value(features, "F", "days_since_subscription_ended") == 122  # 2024-03-01
    assert value(features, "F", "subscription_upgrades") == 1
    assert value(features, "F", "subscription_downgrades") == 0
    assert value(features, "F", "subscription_months") == pytest.approx(425 / (365.25 / 12))
    assert pd.isna(features.at["F", "current_plan"])


def test_active_subscription_with_downgrade(features):
    # G's basic plan ends on 09-01, after T: at T it is simply active
    assert value(features, "G", "is_subscribed") == 1
    assert value(features, "G", "current_mrr") == 19
    assert value(features, "G", "mrr_change_90d") == -30, "pro (49) was active 90 days ago"
    assert value(features, "G", "subscription_downgrades") == 1
    assert value(features, "G", "days_since_subscription_start") == 61
    assert math.isnan(value(features, "G", "days_since_subscription_ended"))
    assert features.at["G", "current_plan"] == "basic"
    assert value(features, "H", "mrr_change_90d") == 0


def test_static_attributes(features):
    assert features.at["A", "region"] == "north"
    assert list(features["region"].cat.categories) == ["east", "north", "south"], (
        "levels are the values of the customers known at T (W of E is unknown yet)")
    assert value(features, "B", "age") == 41


def test_fixed_event_types_give_stable_columns(tiny_dataset, tiny_as_of):
    full = build_features(tiny_dataset(), as_of=tiny_as_of)
    no_events = build_features(tiny_dataset(events=True), as_of=tiny_as_of,
                               event_types=["login", "page_view"])
    assert list(no_events.columns) == list(full.columns), "a missing table keeps every column"
    assert (no_events["login_events_total"] == 0).all()
    assert no_events["days_since_last_login"].isna().all()
    only_one = build_features(tiny_dataset(), as_of=tiny_as_of,
                              event_types=["page_view", "purchase"])
    assert set(event_feature_names("purchase")) <= set(only_one.columns)
    assert not set(event_feature_names("login")) & set(only_one.columns)


def test_missing_tables_keep_order_and_subscription_columns(tiny_dataset, tiny_as_of):
    without = build_features(tiny_dataset(orders=True, subscriptions=True), as_of=tiny_as_of)
    assert set(FIXED_FEATURES) - {"current_plan"} <= set(without.columns)
    assert (without["completed_orders_total"] == 0).all()
    assert (without["revenue_90d"] == 0).all()
    assert (without["completed_orders_change_90d"] == 0).all()
    assert without["avg_order_value"].isna().all()
    assert without["return_rate"].isna().all()
    assert (without["current_mrr"] == 0).all()


def test_every_feature_is_described(features):
    catalog = feature_catalog(features)
    assert catalog["description"].str.len().gt(10).all()
    assert not catalog["unit"].isna().any()
    assert describe_feature("days_since_last_order").description == (
        "days since the last completed order")
    assert describe_feature("days_since_last_order").unit == "days"
    login = describe_feature("login_events_30d")
    assert (login.unit, login.kind) == ("count", "events") and "login" in login.description
    region = catalog.set_index("name").loc["region"]
    assert (region["unit"], region["kind"]) == ("category", "attribute")
