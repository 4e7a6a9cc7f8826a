"""Retention metrics against values computed by hand on tiny datasets."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.contract import validate_tables
from features.dataset import Dataset
from features.retention import (
    cohort_retention,
    inactivity_churn_by_month,
    monthly_trend,
    mrr_by_month,
    order_status_rates_by_month,
    overall_repeat_customer_share,
    repeat_purchase_by_month,
    retention_metrics,
    subscription_churn_by_month,
)

T = pd.Timestamp


def make_dataset(customers: list[str] | dict[str, str], **tables: list[tuple]) -> Dataset:
    """A validated dataset from rows written as tuples (the data contract fills defaults)."""
    columns = {
        "orders": ["order_id", "customer_id", "ordered_at", "amount", "status"],
        "events": ["customer_id", "occurred_at", "event_type"],
        "subscriptions": ["customer_id", "started_at", "ended_at", "mrr"],
    }
    if isinstance(customers, dict):
        raw = {"customers": pd.DataFrame({"customer_id": list(customers),
                                          "signup_at": list(customers.values())})}
    else:
        raw = {"customers": pd.DataFrame({"customer_id": customers})}
    for name, rows in tables.items():
        frame = pd.DataFrame(rows, columns=columns[name][: len(rows[0])]).astype(str)
        raw[name] = frame.replace({"None": ""})
    result = validate_tables(raw)
    assert result.rejects.empty, result.rejects
    return result.dataset


def months(*stamps: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([T(s) for s in stamps], name="month")


# --------------------------------------------------------------------------- churn rate

@pytest.fixture
def shop() -> Dataset:
    """Orders laid out so that each month loses one customer under a 30-day horizon."""
    return make_dataset(
        ["a", "b", "c", "d"],
        orders=[
            ("o1", "a", "2024-01-10", 10, "completed"),
            ("o2", "a", "2024-02-05", 10, "completed"),
            ("o3", "a", "2024-03-20", 10, "completed"),
            ("o4", "b", "2024-01-15", 10, "completed"),
            ("o5", "c", "2024-02-20", 10, "completed"),
            ("o6", "c", "2024-04-10", 10, "completed"),
            ("o7", "d", "2024-01-25", 10, "returned"),  # not a purchase: d is not active at Feb 1
            ("o8", "d", "2024-03-01", 10, "completed"),  # 30 days before Apr 1 is Mar 2
        ],
    )


def test_inactivity_churn_rate_is_lost_over_customers_at_start(shop: Dataset) -> None:
    # Active (completed order in the 30 days before): Feb 1 {a,b}, Mar 1 {a,c}, Apr 1 {a},
    # May 1 {c}. Feb loses b (1/2), Mar loses c (1/2), Apr loses a (1/1). January had
    # nobody at its start, so the table begins in February.
    churn = inactivity_churn_by_month(shop, as_of=T("2024-05-01"), horizon_days=30)
    expected = pd.DataFrame(
        {"customers_at_start": [2, 2, 1], "customers_lost": [1, 1, 1],
         "churn_rate": [0.5, 0.5, 1.0]},
        index=months("2024-02-01", "2024-03-01", "2024-04-01"),
    )
    pd.testing.assert_frame_equal(churn, expected, check_dtype=False)


def test_a_month_not_over_at_as_of_is_not_reported(shop: Dataset) -> None:
    churn = inactivity_churn_by_month(shop, as_of=T("2024-04-30"), horizon_days=30)
    assert list(churn.index) == [T("2024-02-01"), T("2024-03-01")], (
        "April ends after the as-of date, so its churn is not known yet"
    )


def test_lost_month_is_last_order_plus_horizon(shop: Dataset) -> None:
    # b's last order 2024-01-15 + 90 days = 2024-04-14: lost in April, not before.
    churn = inactivity_churn_by_month(shop, as_of=T("2024-05-01"), horizon_days=90)
    assert churn.loc[T("2024-04-01"), "customers_lost"] == 1  # b
    assert churn.loc[T("2024-02-01"), "customers_lost"] == 0
    assert churn.loc[T("2024-03-01"), "customers_lost"] == 0


# --------------------------------------------------------------------------- subscriptions

@pytest.fixture
def saas() -> Dataset:
    """A flat January, then in February: an upgrade, a cancellation, a downgrade, a new customer."""
    return make_dataset(
        ["A", "B", "C", "D", "E"],
        subscriptions=[
            ("A", "2024-01-01", None, 100),
            ("B", "2024-01-01", "2024-02-10", 50),
            ("B", "2024-02-10", None, 80),   # upgrade: +30 expansion
            ("C", "2024-01-01", "2024-02-15", 30),  # cancels: 30 churned
            ("D", "2024-01-01", "2024-02-20", 40),
            ("D", "2024-02-20", None, 20),   # downgrade: 20 contraction
            ("E", "2024-02-05", None, 60),   # new in February: in neither ratio
        ],
    )


def test_subscription_churn_counts_customers_without_a_following_subscription(
    saas: Dataset,
) -> None:
    churn = subscription_churn_by_month(saas, as_of=T("2024-03-01"))
    expected = pd.DataFrame(
        {"customers_at_start": [4, 4], "customers_lost": [0, 1], "churn_rate": [0.0, 0.25]},
        index=months("2024-01-01", "2024-02-01"),
    )
    pd.testing.assert_frame_equal(churn, expected, check_dtype=False)


def test_net_revenue_retention_includes_expansion(saas: Dataset) -> None:
    mrr = mrr_by_month(saas, as_of=T("2024-03-01"))
    february = mrr.loc[T("2024-02-01")]
    # start 100+50+30+40 = 220; end for the same customers 100+80+0+20 = 200
    assert february["starting_mrr"] == pytest.approx(220)
    assert february["expansion_mrr"] == pytest.approx(30)
    assert february["contraction_mrr"] == pytest.approx(20)
    assert february["churned_mrr"] == pytest.approx(30)
    assert february["retained_mrr"] == pytest.approx(200)
    assert february["net_revenue_retention"] == pytest.approx(200 / 220)
    assert february["gross_mrr_churn_rate"] == pytest.approx((30 + 20) / 220)
    january = mrr.loc[T("2024-01-01")]
    assert january["net_revenue_retention"] == pytest.approx(1.0)
    assert january["gross_mrr_churn_rate"] == pytest.approx(0.0)


def test_net_retention_above_one_when_expansion_beats_churn() -> None:
    data = make_dataset(
        ["A", "B"],
        subscriptions=[("A", "2024-01-01", "2024-01-15", 10), ("A", "2024-01-15", None, 40),
                       ("B", "2024-01-01", "2024-01-20", 10)],
    )
    january = mrr_by_month(data, as_of=T("2024-02-01")).loc[T("2024-01-01")]
    assert january["net_revenue_retention"] == pytest.approx(40 / 20)
    assert january["gross_mrr_churn_rate"] == pytest.approx(10 / 20)


def test_an_end_after_as_of_is_not_known_yet(saas: Dataset) -> None:
    churn = subscription_churn_by_month(saas, as_of=T("2024-02-14"))
    assert churn["customers_lost"].sum() == 0
    assert list(churn.index) == [T("2024-01-01")]


# --------------------------------------------------------------------------- orders

@pytest.fixture
def repeat_shop() -> Dataset:
    return make_dataset(
        ["a", "b", "c"],
        orders=[
            ("o1", "a", "2024-01-05", 100, "completed"),
            ("o2", "a", "2024-02-03", 50, "completed"),
            ("o3", "a", "2024-02-20", 70, "completed"),
            ("o4", "a", "2024-03-01", 60, "completed"),
            ("o5", "b", "2024-02-10", 40, "completed"),
            ("o6", "b", "2024-03-15", 90, "completed"),
            ("o7", "b", "2024-03-20", 500, "cancelled"),
            ("o8", "c", "2024-03-03", 30, "completed"),
            ("o9", "c", "2024-03-10", 20, "returned"),
            ("o10", "a", "2024-03-12", 25, "unclaimed"),
        ],
    )


def test_repeat_purchase_rate_and_returning_aov(repeat_shop: Dataset) -> None:
    repeat = repeat_purchase_by_month(repeat_shop, as_of=T("2024-04-01"))
    assert list(repeat.index) == list(months("2024-01-01", "2024-02-01", "2024-03-01"))
    # Jan: only a, first order. Feb: a returns (50, 70), b is new. Mar: a (60) and b (90)
    # return, c is new; cancelled/returned/unclaimed orders are not purchases.
    assert repeat["ordering_customers"].tolist() == [1, 2, 3]
    assert repeat["returning_customers"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(repeat["repeat_purchase_rate"], [0.0, 0.5, 2 / 3])
    assert math.isnan(repeat["returning_aov"].iloc[0])
    assert repeat["returning_aov"].iloc[1:].tolist() == pytest.approx([60.0, 75.0])
    assert overall_repeat_customer_share(repeat_shop, as_of=T("2024-04-01")) == pytest.approx(2 / 3)


def test_returning_aov_trend_says_whether_it_grows(repeat_shop: Dataset) -> None:
    repeat = repeat_purchase_by_month(repeat_shop, as_of=T("2024-04-01"))
    trend = monthly_trend(repeat["returning_aov"])
    assert trend.slope_per_month == pytest.approx(15.0)
    assert trend.relative_slope == pytest.approx(15.0 / 67.5)
    assert trend.direction == "growing"
    assert monthly_trend(pd.Series([80.0, 60.0, 40.0])).direction == "falling"
    assert monthly_trend(pd.Series([100.0, 100.5, 100.0])).direction == "flat"
    assert monthly_trend(pd.Series([np.nan, 5.0])).direction == "unknown"


def test_order_status_rates_are_shares_of_all_orders_placed(repeat_shop: Dataset) -> None:
    rates = order_status_rates_by_month(repeat_shop, as_of=T("2024-04-01"))
    assert rates["orders"].tolist() == [1, 3, 6]
    assert rates["return_rate"].tolist() == pytest.approx([0, 0, 1 / 6])
    assert rates["cancellation_rate"].tolist() == pytest.approx([0, 0, 1 / 6])
    assert rates["unclaimed_rate"].tolist() == pytest.approx([0, 0, 1 / 6])


# --------------------------------------------------------------------------- cohorts

def test_cohort_retention_matrix() -> None:
    data = make_dataset(
        {"a": "2024-01-10", "b": "2024-01-20", "c": "2024-02-05", "d": ""},
        orders=[("o1", "a", "2024-01-11", 10, "completed"),
                ("o2", "a", "2024-03-02", 10, "completed")],
        events=[("b", "2024-02-07", "login"), ("d", "2024-02-15", "login"),
                ("d", "2024-04-02", "login")],  # after as-of: ignored
        # ends exactly at a month start: active in February only
        subscriptions=[("c", "2024-02-05", "2024-03-01", 9)],
    )
    matrix = cohort_retention(data, as_of=T("2024-04-01"))
    # Jan cohort {a, b}: Jan a, Feb b, Mar a. Feb cohort {c, d (first activity)}: Feb c+d,
    # Mar nobody, April not over yet (unknown, not zero).
    expected = pd.DataFrame(
        {"customers": [2.0, 2.0], 0: [0.5, 1.0], 1: [0.5, 0.0], 2: [0.5, np.nan]},
        index=pd.DatetimeIndex([T("2024-01-01"), T("2024-02-01")], name="cohort"),
    )
    pd.testing.assert_frame_equal(matrix, expected)


# --------------------------------------------------------------------------- invariants

def test_rows_on_or_after_as_of_change_nothing(shop: Dataset, saas: Dataset) -> None:
    as_of = T("2024-03-01")
    combined = Dataset(
        customers=pd.concat([shop.customers, saas.customers], ignore_index=True),
        orders=shop.orders, subscriptions=saas.subscriptions,
    )
    future = Dataset(
        customers=combined.customers,
        orders=pd.concat([combined.orders, pd.DataFrame({
            "order_id": ["f1", "f2"], "customer_id": ["b", "a"],
            "ordered_at": [T("2024-03-01"), T("2024-06-01")], "amount": [5.0, 5.0],
            "status": ["completed", "returned"], "discount": 0.0, "items": np.nan})],
            ignore_index=True),
        subscriptions=pd.concat([combined.subscriptions, pd.DataFrame({
            "customer_id": ["C"], "started_at": [T("2024-03-01")], "ended_at": [pd.NaT],
            "plan": ["default"], "mrr": [99.0]})], ignore_index=True),
    )
    before = retention_metrics(combined, as_of=as_of, horizon_days=30)
    after = retention_metrics(future, as_of=as_of, horizon_days=30)
    for name in ("inactivity_churn", "subscription_churn", "mrr", "repeat_purchase",
                 "order_status", "cohorts"):
        pd.testing.assert_frame_equal(getattr(before, name), getattr(after, name), obj=name)


def test_metrics_are_empty_not_failing_without_the_table(shop: Dataset) -> None:
    metrics = retention_metrics(shop, as_of=T("2024-05-01"))
    assert metrics.subscription_churn.empty and metrics.mrr.empty
    assert not metrics.inactivity_churn.empty and not metrics.cohorts.empty


def test_one_running_subscription_test_for_labels_features_and_reports() -> None:
    """`History.subscribed_at` at the edges: an end at the moment, a start at it, and an end
    not yet known at the as-of date (the report's month boundaries)."""
    from features.history import History, timestamp_ns

    data = make_dataset(["x", "y", "z"], subscriptions=[
        ("x", "2024-01-01", "2024-02-01", 5), ("y", "2024-02-01", "", 5),
        ("z", "2024-02-01", "2024-03-01", 5)])
    history = History(data)
    feb = timestamp_ns(T("2024-02-01"))

    def who(mask: np.ndarray) -> list[str]:
        return history.customer_ids[mask].tolist()

    # a report's boundary: started at or before it, ended after it
    assert who(history.subscribed_at(feb)) == ["y", "z"]
    # what a feature at T sees: started before T, not ended before T
    assert who(history.subscribed_at(feb, strict_start=True)) == ["x"]
    # as known on 1 February: y and z had not started, x's end was not known yet
    assert who(history.subscribed_at(feb, known_before_ns=feb)) == ["x"]
    assert history.running_subscriptions(feb).sum() == 2
