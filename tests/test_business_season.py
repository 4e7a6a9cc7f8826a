"""The business-wide season input (features.business): by hand on a small shop, point in time,
the bundle's lookup by day of the year, and the training set and bundle carrying it."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from features.business import BUSINESS_FEATURES, EPOCH, BusinessSeason
from features.contract import validate_tables
from features.history import History
from features.pipeline import features_at
from models.bundle import ChurnBundle

STEP = "business_season_step_last_year"
#: a Monday, the start of week 0 of the little shop
START = pd.Timestamp("2023-01-02")


def shop(*, peak_spend: float = 2.0, weeks: int = 140) -> History:
    """Two customers ordering every week (one order each), weeks 39-51 of each year at
    ``peak_spend`` times the usual 10; the second also opens the app every week."""
    orders, events = [], []
    for week in range(weeks):
        monday = START + pd.Timedelta(weeks=week)
        amount = 10.0 * (peak_spend if week % 52 in range(39, 52) else 1.0)
        for customer in ("a", "b"):
            orders.append({"order_id": f"{customer}{week}", "customer_id": customer,
                           "ordered_at": monday + pd.Timedelta(hours=12),
                           "status": "completed", "amount": amount})
        events.append({"customer_id": "b", "occurred_at": monday + pd.Timedelta(hours=9),
                       "event_type": "session"})
    tables = {"customers": pd.DataFrame({"customer_id": ["a", "b"],
                                         "signup_at": [START, START]}),
              "orders": pd.DataFrame(orders), "events": pd.DataFrame(events)}
    return History(validate_tables(tables).dataset)


def test_epoch_is_a_monday_and_weeks_are_whole():
    assert EPOCH.dayofweek == 0 and START.dayofweek == 0


def test_series_by_hand():
    history = shop(weeks=10)
    season = BusinessSeason.from_history(history, as_of=START + pd.Timedelta(weeks=10))
    assert season is not None
    assert len(season.revenue) == 10, "ten whole weeks before as_of"
    assert season.revenue == (20.0,) * 10, "two orders of 10 a week"
    assert season.active == (2,) * 10, "two distinct active customers a week (orders or events)"
    cut = BusinessSeason.from_history(history, as_of=START + pd.Timedelta(weeks=9, days=3))
    assert len(cut.revenue) == 9, "the week of as_of is partial and left out"


def test_step_is_the_peak_lift_a_year_before():
    history = shop(peak_spend=2.0)
    season = BusinessSeason.from_history(history, as_of=START + pd.Timedelta(weeks=140))
    # T one year after week 39: the 13 weeks from T - 365 are the peak (20 per customer-week),
    # the 13 before them are not (10 per customer-week)
    t = START + pd.Timedelta(weeks=39) + pd.Timedelta(days=365)
    assert season.step_at(t) == pytest.approx(2.0)
    off = START + pd.Timedelta(weeks=20) + pd.Timedelta(days=365)
    assert season.step_at(off) == pytest.approx(1.0)
    after = START + pd.Timedelta(weeks=52) + pd.Timedelta(days=365)
    assert season.step_at(after) == pytest.approx(0.5), "leaving the peak halves the rate"
    assert np.isnan(season.step_at(START + pd.Timedelta(weeks=30))), (
        "no step when the weeks a year before are not covered by the history")


def test_step_uses_only_weeks_before_t():
    history = shop()
    t = START + pd.Timedelta(weeks=39) + pd.Timedelta(days=365)
    later = BusinessSeason.from_history(history, as_of=START + pd.Timedelta(weeks=140))
    at_t = BusinessSeason.from_history(history, as_of=t)
    assert later.step_at(t) == at_t.step_at(t), "rows at or after T must not change the value"


def test_values_for_day_of_year_match_the_exact_dates_after_the_cut_off():
    history = shop(weeks=156)
    cut = START + pd.Timedelta(weeks=100)
    season = BusinessSeason.from_dict(
        BusinessSeason.from_history(history, as_of=cut).as_dict())
    for days in (0, 40, 200, 300):
        t = cut + pd.Timedelta(days=days)
        expected = season.step_at(t)
        if np.isnan(expected):  # the weeks a year before t are not complete by the cut-off
            expected = season.step_at(t - pd.Timedelta(days=365))
        got = season.values_for(np.array([float(t.dayofyear)]))[STEP][0]
        assert got == pytest.approx(expected), f"T = cut-off + {days} days"
    assert np.isnan(season.values_for(np.array([np.nan]))[STEP][0])


def test_features_at_adds_the_column_only_when_given_the_series():
    history = shop()
    t = START + pd.Timedelta(weeks=100)
    season = BusinessSeason.from_history(history, as_of=START + pd.Timedelta(weeks=140))
    plain = features_at(history, as_of=t)
    assert STEP not in plain.columns, "a chunk of customers cannot compute the business's season"
    with_season = features_at(history, as_of=t, business=season)
    assert (with_season[STEP] == season.step_at(t)).all()
    assert set(BUSINESS_FEATURES) <= set(with_season.columns)


def test_bundle_fills_the_business_column_from_its_series_and_round_trips(tmp_path):
    history = shop()
    cut = START + pd.Timedelta(weeks=120)
    season = BusinessSeason.from_history(history, as_of=cut)
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"day_of_year": rng.integers(1, 366, 400).astype(float),
                      STEP: rng.uniform(0.5, 2.0, 400)})
    y = (X[STEP] > 1.2).astype(float)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "min_data_in_leaf": 5},
                        lgb.Dataset(X, y), num_boost_round=5)
    bundle = ChurnBundle(churn_booster=booster, clv_booster=None, feature_names=list(X.columns),
                         business_season=season.as_dict(), clv_note="no revenue (test)",
                         as_of=cut.isoformat())
    scored_at = cut + pd.Timedelta(days=10)
    features = pd.DataFrame({"day_of_year": [float(scored_at.dayofyear)] * 2},
                            index=pd.Index(["a", "b"], name="customer_id"))
    prepared = bundle.prepare(features)
    assert prepared[STEP].tolist() == [pytest.approx(season.step_at(scored_at))] * 2
    loaded = ChurnBundle.load(bundle.save(tmp_path / "bundle"))
    assert loaded.business_season == bundle.business_season
    assert loaded.prepare(features)[STEP].tolist() == prepared[STEP].tolist()
    given = features.assign(**{STEP: [0.7, 0.8]})
    assert bundle.prepare(given)[STEP].tolist() == [0.7, 0.8], "given columns are kept"
