"""Training sets: snapshot dates, label windows, CLV windows and the short-history strategy."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import numpy as np
import pandas as pd
import pytest

from features.contract import validate_tables
from features.generate import generate_dataset
from features.history import History
from features.labels import label_customers
from features.pipeline import features_at
from features.snapshots import build_training_set


@pytest.fixture(scope="module")
def dataset():
    data = generate_dataset(customers=600, seed=21, end=date(2024, 12, 31), kind="ecommerce")
    return validate_tables(data.tables).dataset


AS_OF = pd.Timestamp("2025-01-01")


@pytest.fixture(scope="module")
def training(dataset):
    return build_training_set(dataset, as_of=AS_OF, horizon_days=90, clv_horizon_days=365,
                              definition="inactivity", step_days=30, max_snapshots=12)


def test_snapshot_dates_and_label_windows(training):
    expected = [AS_OF - pd.Timedelta(days=90 + 30 * k) for k in range(12)]
    assert training.snapshot_dates == expected, "latest first, every label window ends by as_of"
    assert training.label_horizon_days == 90
    assert sorted(training.frame["snapshot_at"].unique()) == sorted(expected)
    assert not training.frame.duplicated(["customer_id", "snapshot_at"]).any()
    assert training.frame.columns[:2].tolist() == ["customer_id", "snapshot_at"]


def test_clv_only_where_its_window_is_complete(training):
    frame = training.frame
    complete = frame["snapshot_at"] + pd.Timedelta(days=365) <= AS_OF
    assert complete.any() and (~complete).any()
    assert frame.loc[~complete, "clv_target"].isna().all()
    assert frame.loc[complete, "clv_target"].notna().all()
    assert any("NaN" in note for note in training.notes)


def test_rows_equal_features_and_labels_of_their_snapshot(dataset, training):
    """No training/serving skew: a snapshot's rows are build_features at that date."""
    date_ = training.snapshot_dates[3]
    rows = training.frame[training.frame["snapshot_at"] == date_].set_index("customer_id")
    features = features_at(History(dataset), as_of=date_, event_types=training.event_types,
                           business=training.business_season)
    pd.testing.assert_frame_equal(rows[features.columns], features, check_categorical=False)
    labels = label_customers(dataset, as_of=date_, horizon_days=90)
    pd.testing.assert_series_equal(rows["churned"], labels["churned"])
    assert rows["clv_target"].isna().all()
    assert list(training.feature_columns) == list(features.columns)


def _one_cohort(dataset, *, weeks_of_history: int):
    """A CDNOW-like dataset: one cohort, first orders in its first 12 weeks."""
    orders = dataset.orders
    first = orders.groupby("customer_id")["ordered_at"].transform("min")
    start = pd.Timestamp("2024-01-01")
    cohort = orders[(first >= start) & (first < start + pd.Timedelta(weeks=12))]
    cut = start + pd.Timedelta(weeks=weeks_of_history)
    customers = dataset.customers[dataset.customers["customer_id"].isin(cohort["customer_id"])]
    return replace(dataset, customers=customers, orders=cohort[cohort["ordered_at"] < cut],
                   events=None), cut


def test_short_history_shortens_the_horizon_and_says_so(dataset):
    short, as_of = _one_cohort(dataset, weeks_of_history=39)
    result = build_training_set(short, as_of=as_of, horizon_days=273, clv_horizon_days=365,
                                definition="inactivity")
    assert result.label_horizon_days < 273
    assert result.label_horizon_days % 7 == 0
    assert len(result.snapshot_dates) >= 3
    assert any("short history" in note for note in result.notes)
    assert all(d + pd.Timedelta(days=result.label_horizon_days) <= as_of
               for d in result.snapshot_dates)
    assert result.frame["churned"].notna().sum() > len(short.customers), (
        "several snapshots give more labelled rows than there are customers")
    # no snapshot has a full CLV year: CLV is scaled up from the label window
    assert result.clv_scale == pytest.approx(365 / result.label_horizon_days)
    assert result.frame["clv_target"].notna().all()
    assert any("clv_target" in note for note in result.notes)


def test_three_weeks_of_history_still_give_a_labelled_snapshot(dataset):
    short, as_of = _one_cohort(dataset, weeks_of_history=3)
    result = build_training_set(short, as_of=as_of, horizon_days=90, clv_horizon_days=365,
                                definition="inactivity")
    assert 7 <= result.label_horizon_days < 90
    assert all(d + pd.Timedelta(days=result.label_horizon_days) <= as_of
               for d in result.snapshot_dates)
    assert result.frame["churned"].notna().any()
    assert any("short history" in note for note in result.notes)


def test_very_short_history_takes_the_longest_window_then_more_snapshots(dataset):
    short, as_of = _one_cohort(dataset, weeks_of_history=5)
    # a 14-day horizon fits several snapshots a week apart (smaller steps than the default 30)
    two = build_training_set(short, as_of=as_of, horizon_days=14, clv_horizon_days=14,
                             definition="inactivity")
    assert two.label_horizon_days == 14
    assert len(two.snapshot_dates) >= 2
    assert (two.snapshot_dates[0] - two.snapshot_dates[1]).days == 7
    # 42 days: one snapshot with a longer window beats two with shorter ones
    one = build_training_set(short, as_of=as_of, horizon_days=42, clv_horizon_days=42,
                             definition="inactivity")
    assert len(one.snapshot_dates) == 1
    assert 14 < one.label_horizon_days < 42
    assert any("split by customer" in note for note in one.notes), one.notes


def test_impossible_history_names_the_minimum_it_needs(dataset):
    short, as_of = _one_cohort(dataset, weeks_of_history=1)
    with pytest.raises(ValueError, match=r"at least 8 days of usable history before --as-of"):
        build_training_set(short, as_of=as_of, horizon_days=90, clv_horizon_days=365,
                           definition="inactivity")


def test_no_population_raises(dataset):
    with pytest.raises(ValueError, match="no customers with a subscription"):
        build_training_set(dataset, as_of=AS_OF, definition="subscription")


def test_progress_is_reported(dataset):
    calls = []
    build_training_set(dataset, as_of=AS_OF, max_snapshots=2,
                       progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]


def test_categorical_levels_are_unified(training):
    region = training.frame["region"]
    assert isinstance(region.dtype, pd.CategoricalDtype)
    assert list(region.cat.categories) == sorted(region.dropna().unique())
    assert np.all(training.frame.groupby("snapshot_at").size() > 0)
