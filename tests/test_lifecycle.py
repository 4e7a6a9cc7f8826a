"""Lifecycle stages: by hand on small feature frames (thresholds at their edges), against the
generator's ground truth, and in the scores of a fitted bundle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.definition import resolve_definition
from features.history import History
from features.lifecycle import STAGES, LifecycleRules, lifecycle_rules, lifecycle_stages
from features.pipeline import event_slug, features_at

NAN = np.nan


def frame(**columns: list[float]) -> pd.DataFrame:
    return pd.DataFrame(columns, index=[f"c{i}" for i in range(len(next(iter(columns.values()))))])


def test_activity_stages_by_hand():
    rules = lifecycle_rules("activity", activity_slugs=["login"], active_days=30, new_days=90)
    features = frame(
        days_since_last_order=[NAN, 45, NAN, NAN, 10, 10, 5, 5, 5],
        days_since_last_login=[NAN, NAN, 30, NAN, NAN, NAN, NAN, NAN, NAN],
        is_subscribed=[0, 0, 0, 1, 0, 0, 0, 0, 0],
        tenure_days=[400, 400, 400, 400, 90, 91, 400, 400, 400],
        completed_orders_90d=[0, 0, 0, 0, 1, 1, 1, 1, 2],
        completed_orders_total=[0, 3, 0, 0, 1, 1, 20, 4, 12],
        login_events_90d=[0, 0, 1, 0, 0, 0, 0, 0, 0],
        login_events_total=[0, 0, 1, 0, 0, 0, 0, 0, 0],
    )
    assert lifecycle_stages(features, rules).tolist() == [
        "never_active",  # nothing ever
        "lapsed",        # last order 45 days ago, beyond the 30 active days
        "active",        # a login exactly 30 days ago is still inside
        "active",        # a running subscription is activity
        "new",           # known for exactly new_days
        "active",        # one day longer
        "declining",     # 1 order in 90 days against 19 in the 310 before (ratio 0.18)
        "active",        # only 3 earlier orders: too few to call a decline
        "active",        # 2 in 90 days against 10 in 310: ratio 0.69, not below 0.5
    ]


def test_subscription_and_inactivity_stages_follow_their_definition():
    subscription = lifecycle_rules("subscription", activity_slugs=[], active_days=90,
                                   new_days=90)
    features = frame(is_subscribed=[1, 0, 0], days_since_subscription_ended=[NAN, 5, NAN],
                     days_since_last_order=[NAN, NAN, 3], tenure_days=[400, 400, 400])
    assert lifecycle_stages(features, subscription).tolist() == [
        "active", "lapsed", "never_active"], "an order is not a subscription"
    inactivity = lifecycle_rules("inactivity", activity_slugs=["login"], active_days=90,
                                 new_days=90)
    features = frame(days_since_last_order=[NAN, 100, 20], days_since_last_login=[1, 1, 1],
                     is_subscribed=[1, 1, 1], tenure_days=[400, 400, 400])
    assert lifecycle_stages(features, inactivity).tolist() == [
        "never_active", "lapsed", "active"], "inactivity counts completed orders only"


def test_rules_round_trip_and_stage_names():
    rules = lifecycle_rules("activity", activity_slugs=["session"], active_days=45, new_days=60)
    assert LifecycleRules.from_dict(rules.as_dict()) == rules
    assert STAGES == ("new", "active", "declining", "lapsed", "never_active")


@pytest.fixture(scope="module")
def stages_over_time(generated):
    """Stages of the generated mixed business every four weeks over two years."""
    data, dataset = generated("mixed")
    chosen = resolve_definition(dataset, requested="auto")
    rules = lifecycle_rules(chosen.name, active_days=chosen.active_days, new_days=90,
                            activity_slugs=[event_slug(t) for t in chosen.activity_events])
    history = History(dataset)
    dates = pd.date_range("2024-08-01", "2026-06-30", freq="14D")
    stages = {}
    for as_of in dates:
        features = features_at(history, as_of=as_of)
        stages[as_of] = pd.Series(lifecycle_stages(features, rules), index=features.index)
    return data.ground_truth.set_index("customer_id"), stages


def _ever_declining(stages, customers: pd.Series) -> float:
    """Share of customers declining at some date in the 120 days before their churn."""
    hits = []
    for customer, churned_at in customers.items():
        window = [t for t in stages if churned_at - pd.Timedelta(days=120) <= t < churned_at]
        hits.append(any(stages[t].get(customer) == "declining" for t in window))
    return float(np.mean(hits))


def test_fading_engagement_shows_as_declining_before_churn(stages_over_time):
    truth, stages = stages_over_time
    gone = truth[truth["churned_at"] > pd.Timestamp("2025-01-01")]
    # customers past their first 90 days: a new customer is `new`, never `declining`
    settled = gone[gone["churned_at"] - gone["signup_at"] > pd.Timedelta(days=240)]
    fading = settled.loc[settled["churn_cause"] == "fading_engagement", "churned_at"]
    sudden = settled.loc[settled["churn_cause"].isin(
        ["unobserved", "support_issues", "bad_experience"]), "churned_at"]
    assert len(fading) > 80 and len(sudden) > 80
    fading_share, sudden_share = _ever_declining(stages, fading), _ever_declining(stages, sudden)
    assert fading_share > 0.5, (
        f"most customers whose engagement fades are `declining` before they churn "
        f"({fading_share:.2f})")
    assert fading_share > 2 * sudden_share, (
        f"fading {fading_share:.2f} vs causes that strike without a decline {sudden_share:.2f}")


def test_churned_customers_end_up_lapsed(stages_over_time):
    truth, stages = stages_over_time
    last = stages[max(stages)]
    long_gone = truth.index[truth["churned_at"] < max(stages) - pd.Timedelta(days=120)]
    assert (last.reindex(long_gone) == "lapsed").mean() > 0.95, (
        "a customer gone for months (only opening e-mails) is lapsed")
