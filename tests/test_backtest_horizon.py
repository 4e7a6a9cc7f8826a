"""The BG/NBD horizon anchor (training/horizon.py): short label windows → requested horizon."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import date

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from features.contract import validate_tables
from features.generate import generate_dataset
from features.pipeline import build_features
from features.snapshots import build_training_set
from models.bundle import ChurnBundle, apply_calibration
from training.calibrate import fit_soft_platt
from training.fit import fit_bundle
from training.horizon import (
    anchor_to_requested_horizon,
    fit_anchor,
    fit_clv_power,
    needs_anchor,
)
from training.model_choice import scale_booster
from training.params import TrainParams
from training.recent_clv import RECENT_WINDOW_DAYS, recent_training_set

pytestmark = pytest.mark.slow  # trains on several generated snapshots

HORIZON = 273


@pytest.fixture(scope="module")
def one_cohort():
    """A CDNOW-like dataset: one cohort acquired over 12 weeks, 39 weeks of history."""
    generated = generate_dataset(customers=3000, seed=11, end=date(2024, 12, 31),
                                 kind="ecommerce", history_days=365)
    dataset = validate_tables(generated.tables).dataset
    orders = dataset.orders
    first = orders.groupby("customer_id")["ordered_at"].transform("min")
    start = orders["ordered_at"].min().normalize()
    cohort = orders[first < start + pd.Timedelta(weeks=12)]
    as_of = start + pd.Timedelta(weeks=39)
    customers = dataset.customers[dataset.customers["customer_id"].isin(cohort["customer_id"])]
    short = replace(dataset, customers=customers, orders=cohort[cohort["ordered_at"] < as_of],
                    events=None, subscriptions=None)
    return short, as_of


@pytest.fixture(scope="module")
def anchored(one_cohort):
    dataset, as_of = one_cohort
    # the CLV model of the long windows stays, so the maps can be checked against it
    params = dataclasses.replace(TrainParams(), horizon_days=HORIZON, clv_horizon_days=HORIZON,
                                 clv_recent_windows=False)
    training_set = build_training_set(dataset, as_of=as_of, horizon_days=HORIZON,
                                      clv_horizon_days=HORIZON, definition="inactivity")
    fit = fit_bundle(training_set, params=params, definition="inactivity")
    features = build_features(dataset, as_of=as_of)
    before = fit.bundle.predict(features)
    fit, notes = anchor_to_requested_horizon(fit, dataset, training_set=training_set,
                                             as_of=as_of, definition="inactivity",
                                             features=features)
    anchor = fit_anchor(dataset.orders, as_of=as_of, horizon_days=HORIZON,
                        clv_horizon_days=HORIZON)
    return training_set, fit, features, before, notes, anchor


def test_short_windows_are_anchored_to_the_requested_horizon(anchored):
    training_set, fit, features, before, notes, anchor = anchored
    assert needs_anchor(training_set) == (True, True), "the fixture must shorten the windows"
    assert fit.bundle.calibration["method"] == "platt"
    assert fit.bundle.calibration["fitted_to"] == "bgnbd"
    assert fit.bundle.horizon_days == HORIZON
    assert any("Platt map fitted to BG/NBD" in n for n in notes)
    assert any("CLV mapped" in n for n in notes)
    after = fit.bundle.predict(features)
    population = after["in_population"].to_numpy()
    mapped = after.loc[population, "churn_probability"]
    target = anchor.churn_probability.reindex(mapped.index)
    assert abs(mapped.mean() - target.mean()) < 0.02, (
        "the mapped probabilities carry the anchor's level for the requested horizon")
    # a strictly increasing map: the ranking of churn and of CLV is unchanged
    old = before.loc[population, "churn_probability"]
    assert (np.argsort(old.to_numpy(), kind="stable")
            == np.argsort(mapped.to_numpy(), kind="stable")).mean() > 0.99
    known = anchor.clv.reindex(features.index).dropna()
    assert after.loc[known.index, "clv"].sum() == pytest.approx(known.sum(), rel=1e-6), (
        "the CLV total over the customers the anchor knows is the anchor's total")
    assert before["clv"].rank().corr(after["clv"].rank()) == pytest.approx(1.0), (
        "the CLV map is strictly increasing: the value ranking is unchanged")


def test_recent_windows_are_compared_on_the_last_quarter_before_the_cut_off(one_cohort,
                                                                            anchored):
    dataset, as_of = one_cohort
    training_set, _, features, _, _, anchor = anchored
    params = dataclasses.replace(TrainParams(), horizon_days=HORIZON, clv_horizon_days=HORIZON)
    recent = recent_training_set(dataset, as_of=as_of, params=params, definition="inactivity")
    assert recent is not None
    latest = max(recent.snapshot_dates)
    assert latest == as_of - pd.Timedelta(days=RECENT_WINDOW_DAYS), (
        "the judging snapshot's window is the last 13 weeks before the cut-off")
    fit = fit_bundle(training_set, params=params, definition="inactivity")
    long_booster = fit.bundle.clv_booster
    fit, notes = anchor_to_requested_horizon(fit, dataset, training_set=training_set,
                                             as_of=as_of, definition="inactivity",
                                             features=features)
    m = fit.metrics
    assert {"clv_recent_window_gini", "clv_long_window_gini"} <= set(m)
    used = m["clv_recent_window_gini"] > m["clv_long_window_gini"]
    assert m["clv_recent_windows"] == float(used)
    if used:
        assert fit.bundle.clv_booster is not long_booster
        assert set(fit.clv_holdout["snapshot_at"]) == {latest}
        assert any(f"{RECENT_WINDOW_DAYS}-day windows from" in n for n in notes)
    else:
        assert any("CLV kept on the" in n for n in notes)
    # the anchor maps whichever model was kept to its total
    known = anchor.clv.reindex(features.index).dropna()
    assert fit.bundle.predict(features).loc[known.index, "clv"].sum() == pytest.approx(
        known.sum(), rel=1e-6)


def test_anchored_bundle_round_trips(anchored, tmp_path):
    _, fit, features, _, _, _ = anchored
    loaded = ChurnBundle.load(fit.bundle.save(tmp_path / "bundle"))
    pd.testing.assert_frame_equal(loaded.predict(features), fit.bundle.predict(features))


def test_full_windows_are_left_alone(one_cohort):
    dataset, as_of = one_cohort
    params = dataclasses.replace(TrainParams(), horizon_days=28, clv_horizon_days=28)
    training_set = build_training_set(dataset, as_of=as_of, horizon_days=28,
                                      clv_horizon_days=28, definition="inactivity")
    fit = fit_bundle(training_set, params=params, definition="inactivity")
    calibration = dict(fit.bundle.calibration)
    assert anchor_to_requested_horizon(fit, dataset, training_set=training_set, as_of=as_of,
                                       definition="inactivity") == (fit, [])
    assert fit.bundle.calibration == calibration


def test_soft_platt_recovers_a_known_map():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.05, 0.95, 5000)
    truth = {"method": "platt", "a": 1.7, "b": -0.4}
    fitted = fit_soft_platt(raw, apply_calibration(truth, raw))
    assert fitted["a"] == pytest.approx(1.7, abs=1e-3)
    assert fitted["b"] == pytest.approx(-0.4, abs=1e-3)


def test_scale_booster_multiplies_predictions_and_keeps_contributions_additive():
    rng = np.random.default_rng(1)
    X = rng.uniform(size=(300, 3))
    y = rng.gamma(1.0, size=300) * (X[:, 0] > 0.3)
    booster = lgb.train({"objective": "tweedie", "verbosity": -1, "num_leaves": 4},
                        lgb.Dataset(X, y), num_boost_round=5)
    scaled = scale_booster(booster, 2.5)
    np.testing.assert_allclose(scaled.predict(X), 2.5 * booster.predict(X), rtol=1e-9)
    contributions = scaled.predict(X, pred_contrib=True)
    np.testing.assert_allclose(np.exp(contributions.sum(axis=1)), scaled.predict(X), rtol=1e-9)
    with pytest.raises(ValueError, match="positive"):
        scale_booster(booster, 0.0)


def test_power_map_is_applied_inside_the_booster():
    rng = np.random.default_rng(2)
    X = rng.uniform(size=(300, 3))
    y = rng.gamma(1.0, size=300) * (1 + 3 * X[:, 0])
    booster = lgb.train({"objective": "tweedie", "verbosity": -1, "num_leaves": 4},
                        lgb.Dataset(X, y), num_boost_round=20)
    scaled = scale_booster(booster, 0.7, power=1.3)
    np.testing.assert_allclose(scaled.predict(X), 0.7 * booster.predict(X) ** 1.3, rtol=1e-9)
    contributions = scaled.predict(X, pred_contrib=True)
    np.testing.assert_allclose(np.exp(contributions.sum(axis=1)), scaled.predict(X), rtol=1e-9)


def test_clv_power_recovers_the_anchor_shape():
    v = np.random.default_rng(3).lognormal(size=5000)
    factor, power = fit_clv_power(v, 2.0 * v**1.4)
    assert power == pytest.approx(1.4)
    assert factor == pytest.approx(2.0, rel=1e-6)
    assert fit_clv_power(v, 3.0 * v) == (pytest.approx(3.0), 1.0), "a pure scale stays a scale"
    assert fit_clv_power(v[:5], v[:5] ** 2)[1] == 1.0, "too few customers for deciles: no power"
