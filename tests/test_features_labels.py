"""Labels: hand-computed on the tiny dataset, and consistent with the generator's truth."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from features.contract import validate_tables
from features.generate import generate_dataset
from features.labels import default_definition, label_customers
from features.pipeline import build_features


def test_inactivity_labels_by_hand(tiny_dataset, tiny_as_of):
    labels = label_customers(tiny_dataset(), as_of=tiny_as_of, horizon_days=90)
    assert list(labels.index) == list("ABCDFGH"), "same rows as the features"
    assert labels["in_population"].dtype == bool
    population = labels.index[labels["in_population"]].tolist()
    assert population == ["A", "B"], "a completed order before T; C only returned"
    assert labels.at["A", "churned"] == 0, "A orders again on 07-05"
    assert labels.at["B", "churned"] == 1
    assert labels.loc[["C", "D", "F"], "churned"].isna().all()
    assert labels.at["A", "clv_target"] == 80
    assert labels.at["B", "clv_target"] == 0


def test_margin_rate_scales_clv(tiny_dataset, tiny_as_of):
    labels = label_customers(tiny_dataset(), as_of=tiny_as_of, margin_rate=0.25)
    assert labels.at["A", "clv_target"] == 20


def test_subscription_labels_by_hand(tiny_dataset, tiny_as_of):
    labels = label_customers(tiny_dataset(), as_of=tiny_as_of, horizon_days=90,
                             definition="subscription")
    assert labels.index[labels["in_population"]].tolist() == ["G", "H"], "F had ended"
    assert labels.at["G", "churned"] == 1, "G's subscription ends 09-01, before T + 90"
    assert labels.at["H", "churned"] == 0
    assert np.isnan(labels.at["F", "churned"])
    month = 365.25 / 12
    assert labels.at["G", "clv_target"] == pytest.approx(19 * 62 / month)  # 07-01 .. 09-01
    assert labels.at["H", "clv_target"] == pytest.approx(19 * 365 / month)
    assert labels.at["A", "clv_target"] == 80, "order revenue counts too"


def test_short_horizon_sees_less(tiny_dataset, tiny_as_of):
    labels = label_customers(tiny_dataset(), as_of=tiny_as_of, horizon_days=3)
    assert labels.at["A", "churned"] == 1, "the next order (07-05) is 4 days away"


def test_default_definition(tiny_dataset):
    assert default_definition(tiny_dataset()) == "activity", "orders, events, subscriptions"
    assert default_definition(tiny_dataset(subscriptions=True)) == "activity", "orders, events"


def test_unknown_definition_is_refused(tiny_dataset, tiny_as_of):
    with pytest.raises(ValueError, match="inactivity"):
        label_customers(tiny_dataset(), as_of=tiny_as_of, definition="vibes")


@pytest.fixture(scope="module")
def generated():
    data = generate_dataset(customers=1500, seed=11, end=date(2024, 12, 31), kind="mixed")
    return validate_tables(data.tables).dataset, data.ground_truth


@pytest.mark.parametrize("definition", ["inactivity", "subscription"])
def test_labels_agree_with_ground_truth(generated, definition):
    dataset, truth = generated
    as_of = pd.Timestamp("2024-06-01")
    horizon = 90
    labels = label_customers(dataset, as_of=as_of, horizon_days=horizon, definition=definition)
    churned_at = truth.set_index("customer_id")["churned_at"].reindex(labels.index)
    orders = dataset.orders
    window = orders[(orders["status"] == "completed") & (orders["ordered_at"] >= as_of)
                    & (orders["ordered_at"] < as_of + pd.Timedelta(days=horizon))]
    bought = labels.index.isin(window["customer_id"])
    gone_before = (churned_at < as_of).to_numpy()

    assert gone_before.sum() > 50 and bought.sum() > 50, "the check needs both kinds"
    assert not (gone_before & bought).any(), (
        "a customer the generator churned before the window never orders in it")
    in_pop = labels["in_population"].to_numpy()
    if definition == "inactivity":
        assert (labels["churned"][bought & in_pop] == 0).all(), (
            "a customer with a completed order in the window is never churned")
        assert (labels["churned"][gone_before & in_pop] == 1).all()
        # churned customers earn nothing afterwards
        assert (labels["clv_target"][gone_before] == 0).all()
    else:
        assert not (gone_before & in_pop).any(), (
            "a customer who churned before T has no active subscription at T")
        # the generator ends a subscription exactly when the customer churns
        end = as_of + pd.Timedelta(days=horizon)
        alive = (churned_at.isna() | (churned_at > end)).to_numpy()
        gone = (churned_at < end).to_numpy()
        assert (labels["churned"][in_pop & alive] == 0).all(), "alive at T + H: not churned"
        assert (labels["churned"][in_pop & gone] == 1).all(), "churned in the window: churned"


def test_features_and_labels_cover_the_same_customers(generated):
    dataset, _ = generated
    as_of = pd.Timestamp("2024-03-15")
    features = build_features(dataset, as_of=as_of)
    labels = label_customers(dataset, as_of=as_of)
    assert features.index.equals(labels.index)
