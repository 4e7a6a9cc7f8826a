"""Seasons and behaviour: the generator's known truth, and the features that read it.

The seasonal generator puts a peak quarter into the data with a lift of each
customer's own (in the ground truth), and writes every customer's true churn
hazard; the calendar and behaviour features must recover what was put in,
from rows strictly before T.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from features.behaviour import describe_behaviour
from features.calendar import CALENDAR_FEATURES, calendar_applies, without_calendar
from features.contract import validate_tables
from features.dataset import Dataset
from features.generate import PEAK_SPEND, generate_dataset, in_peak_quarter
from features.labels import label_customers
from features.pipeline import build_features, describe_feature

END = date(2024, 12, 31)
CUT_OFF = pd.Timestamp("2024-10-02")  # 90 days before the end: the hazard's date


@pytest.fixture(scope="module")
def seasonal():
    return generate_dataset(customers=2500, seed=21, end=END, kind="ecommerce",
                            seasonality=True)


@pytest.fixture(scope="module")
def flat():
    return generate_dataset(customers=2500, seed=21, end=END, kind="ecommerce")


@pytest.fixture(scope="module")
def subscription():
    return generate_dataset(customers=2500, seed=22, end=END, kind="subscription")


def peak_ratio(orders: pd.DataFrame) -> float:
    """Completed revenue per day in the peak quarters over the other days (last two years)."""
    done = orders[orders["status"] == "completed"]
    daily = done.groupby(done["ordered_at"].dt.normalize())["amount"].sum()
    daily = daily.reindex(pd.date_range("2023-01-01", END), fill_value=0.0)
    peak = in_peak_quarter(daily.index)
    return float(daily[peak].mean() / daily[~peak].mean())


def monthly_churn_rates(truth: pd.DataFrame) -> pd.Series:
    """Churns in each month over the customers signed up and not churned at its start."""
    months = pd.date_range("2023-01-01", "2024-12-01", freq="MS")
    rates = {}
    for start in months:
        stop = start + pd.offsets.MonthBegin(1)
        alive = (truth["signup_at"] < start) & ~(truth["churned_at"] < start)
        gone = alive & (truth["churned_at"] >= start) & (truth["churned_at"] < stop)
        rates[start] = gone.sum() / alive.sum()
    return pd.Series(rates)


# --- the generator's season and hazard ----------------------------------------------------


def test_peak_quarter_has_about_the_generated_spend_lift(seasonal, flat):
    assert peak_ratio(seasonal.tables["orders"]) == pytest.approx(PEAK_SPEND, abs=0.25), (
        "completed revenue per day in Oct-Dec should be about 1.8x that of the other months")
    assert peak_ratio(flat.tables["orders"]) < 1.35, "without --seasonality no peak quarter"


def test_peak_quarter_churns_less(seasonal):
    rates = monthly_churn_rates(seasonal.ground_truth)
    peak = in_peak_quarter(rates.index)
    assert rates[peak].mean() < 0.75 * rates[~peak].mean(), (
        f"monthly churn in the peak quarter {rates[peak].mean():.4f} should be well below "
        f"the rest {rates[~peak].mean():.4f}")


def test_each_customer_lift_shows_in_their_own_orders(seasonal):
    truth = seasonal.ground_truth.set_index("customer_id")
    assert truth["peak_spend_lift"].mean() == pytest.approx(PEAK_SPEND, rel=0.08)
    orders = seasonal.tables["orders"]
    done = orders[(orders["status"] == "completed") & (orders["ordered_at"] >= "2022-01-01")]
    peak = in_peak_quarter(done["ordered_at"])
    counts = pd.DataFrame({"peak": done[peak].groupby("customer_id").size(),
                           "rest": done[~peak].groupby("customer_id").size()}).fillna(0)
    busy = counts[counts.sum(axis=1) >= 12]
    # 3 peak months against 9 others: the share of orders in the peak follows the lift
    share = busy["peak"] / busy.sum(axis=1)
    rho = spearmanr(share, truth.loc[busy.index, "peak_spend_lift"]).statistic
    assert rho > 0.3, f"peak-quarter order share should follow each customer's lift ({rho:.2f})"


def test_flag_off_writes_no_season_to_the_ground_truth(flat):
    assert "peak_spend_lift" not in flat.ground_truth.columns


def test_true_hazard_is_written_and_ranks_the_churn_that_follows(subscription):
    truth = subscription.ground_truth.set_index("customer_id")
    hazard = truth["churn_hazard"]
    gone_before = truth["churned_at"] < CUT_OFF - pd.Timedelta(days=7)
    joined_late = truth["signup_at"] >= CUT_OFF
    assert hazard[gone_before | joined_late].isna().all(), (
        "no hazard for customers gone before the cut-off or not yet signed up")
    # the hazard is read on the weekly grid, in the week holding the cut-off
    at_risk = ~(truth["churned_at"] < CUT_OFF) & (
        truth["signup_at"] < CUT_OFF - pd.Timedelta(days=14))
    assert hazard[at_risk].notna().all()
    assert (hazard[at_risk] > 0).all(), "the background hazard is never zero"
    labels = label_customers(validate_tables(subscription.tables).dataset, as_of=CUT_OFF,
                             horizon_days=90, definition="subscription")
    population = labels.index[labels["in_population"].astype(bool)]
    auc = roc_auc_score(labels.loc[population, "churned"],
                        hazard.reindex(population).fillna(0.0))
    assert auc > 0.68, f"the true hazard at the cut-off should rank the next 90 days ({auc:.3f})"


# --- calendar features ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def seasonal_features(seasonal) -> pd.DataFrame:
    return build_features(validate_tables(seasonal.tables).dataset, as_of=CUT_OFF)


def test_calendar_features_recover_each_customers_season(seasonal, seasonal_features):
    """The share of last year's spend in the coming weeks follows the generator's own lift."""
    truth = seasonal.ground_truth.set_index("customer_id")
    share = seasonal_features["revenue_share_same_season"].dropna()
    lift = truth.loc[share.index, "peak_spend_lift"]
    assert share.mean() > 0.25 * PEAK_SPEND / (0.25 * PEAK_SPEND + 0.75), (
        "the same weeks a year before hold more than their share of a year's spend")
    assert spearmanr(share, lift).statistic > 0.15
    assert (seasonal_features["day_of_year"] == CUT_OFF.dayofyear).all()


def test_last_year_features_are_missing_for_customers_unknown_a_year_before(
        seasonal, seasonal_features):
    truth = seasonal.ground_truth.set_index("customer_id")
    signed = truth.loc[seasonal_features.index, "signup_at"]
    young = signed >= CUT_OFF - pd.Timedelta(days=365)
    for name in CALENDAR_FEATURES:
        if name in ("day_of_year", "revenue_share_same_season"):
            continue
        assert seasonal_features.loc[young, name].isna().all(), name
        assert seasonal_features.loc[~young, name].notna().all(), name


def test_calendar_inputs_apply_only_with_a_year_of_history(seasonal_features):
    assert calendar_applies(seasonal_features)
    unknown = seasonal_features.assign(revenue_same_season_last_year=np.nan)
    assert not calendar_applies(unknown)
    assert not set(CALENDAR_FEATURES) & set(without_calendar(seasonal_features).columns)


def test_every_new_feature_has_a_business_description(seasonal_features):
    for name in seasonal_features.columns:
        info = describe_feature(name)
        if info.kind in ("behaviour", "season"):
            assert "_" not in info.description.replace("'", ""), (name, info.description)
    assert describe_behaviour("ratio_cart_add_per_session_30d") == (
        "'cart add' events per 'session' event in the last 30 days", "rate")


# --- behaviour features by hand ---------------------------------------------------------------

T = pd.Timestamp("2024-06-01")


def tiny() -> Dataset:
    """One customer, known for 200 days: sessions and cart adds at known dates."""
    day = pd.Timedelta(days=1)
    sessions = [T - 150 * day, T - 120 * day, T - 80 * day, T - 70 * day, T - 40 * day,
                T - 20 * day, T - 20 * day + pd.Timedelta(hours=2), T - 10 * day]
    carts = [T - 70 * day, T - 20 * day, T - 10 * day]
    events = pd.DataFrame({
        "customer_id": ["A"] * (len(sessions) + len(carts)),
        "occurred_at": sessions + carts,
        "event_type": ["session"] * len(sessions) + ["cart_add"] * len(carts),
        "value": np.nan,
    })
    customers = pd.DataFrame({"customer_id": ["A"], "signup_at": [T - 200 * day]})
    return validate_tables({"customers": customers, "events": events}).dataset


def test_behaviour_features_by_hand():
    row = build_features(tiny(), as_of=T).loc["A"]
    # last 30 days: sessions at -20 (twice) and -10, carts at -20 and -10, on 2 active days
    assert row["session_per_active_day_30d"] == pytest.approx(3 / 2)
    assert row["cart_add_per_active_day_30d"] == pytest.approx(2 / 2)
    assert row["ratio_cart_add_per_session_30d"] == pytest.approx(2 / 3)
    # last 90 days: sessions at -80, -70, -40, -20, -20, -10; carts at -70, -20, -10
    assert row["ratio_cart_add_per_session_90d"] == pytest.approx(3 / 6)
    # 8 sessions in 200 days of tenure
    assert row["session_per_week_of_tenure"] == pytest.approx(8 / (200 / 7))
    assert row["session_rate_vs_usual_30d"] == pytest.approx((3 / 30) / (8 / 200))
    # 60 days before the last 30: sessions at -80, -70, -40 -> 1.5 per 30 days
    assert row["session_trend_30d"] == pytest.approx(3 / 1.5)
    # 10 days since the last session, 0.04 sessions a day usually
    assert row["session_overdue_ratio"] == pytest.approx(10 * 8 / 200)
    # active days: 2 in the last 30, 7 in the last 365 out of 200 days known
    assert row["active_days_30d_vs_usual"] == pytest.approx((2 / 30) / (7 / 200))


def test_behaviour_features_of_a_dataset_without_events_are_missing():
    customers = pd.DataFrame({"customer_id": ["A"], "signup_at": [T - pd.Timedelta(days=50)]})
    orders = pd.DataFrame({"order_id": ["o1"], "customer_id": ["A"],
                           "ordered_at": [T - pd.Timedelta(days=5)], "amount": [10.0]})
    row = build_features(validate_tables({"customers": customers, "orders": orders}).dataset,
                         as_of=T).loc["A"]
    assert np.isnan(row["active_days_30d_vs_usual"])
    assert not [c for c in row.index if c.startswith("ratio_")]


# --- point in time -----------------------------------------------------------------------------


def test_new_feature_families_ignore_rows_at_or_after_t(seasonal):
    dataset = validate_tables(seasonal.tables).dataset
    before = build_features(dataset, as_of=CUT_OFF)
    new = [c for c in before.columns if describe_feature(c).kind in ("behaviour", "season")]
    assert len(new) > 30, "the behaviour and calendar families are built"
    ids = before.index[:50].tolist()
    future = {
        "orders": pd.DataFrame({
            "order_id": [f"late-{i}" for i in range(len(ids))], "customer_id": ids,
            "ordered_at": [CUT_OFF + pd.Timedelta(hours=i) for i in range(len(ids))],
            "amount": 500.0, "status": "completed", "discount": 0.0, "items": 2}),
        "events": pd.DataFrame({
            "customer_id": ids * 2,
            "occurred_at": [CUT_OFF + pd.Timedelta(minutes=i) for i in range(2 * len(ids))],
            "event_type": ["session"] * len(ids) + ["cart_add"] * len(ids), "value": 1.0}),
    }
    tables = {name: (pd.concat([frame, future[name]], ignore_index=True)
                     if name in future else frame)
              for name, frame in seasonal.tables.items()}
    after = build_features(validate_tables(tables).dataset, as_of=CUT_OFF)
    pd.testing.assert_frame_equal(after[new], before[new])
