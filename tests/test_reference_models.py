"""The reference models against published estimates and simulated ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.errors import NotFittedError
from training.realdata import default_data_dir, load_cdnow, source_path
from training.reference import (
    BetaGeoModel,
    BuyTillYouDie,
    GammaGammaModel,
    purchase_summary,
    recency_score,
    spend_frequency_recency_score,
)

#: Fader, Hardie & Lee (2005), "Counting your customers the easy way", CDNOW 1/10 sample
PUBLISHED_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
#: Fader, Hardie & Lee (2005), "RFM and CLV", Gamma-Gamma on the same sample
PUBLISHED_GAMMA_GAMMA = {"p": 6.25, "q": 3.74, "gamma": 15.44}
CALIBRATION_END = pd.Timestamp("1997-10-01")  # calibration 1997-01-01 .. 1997-09-30


@pytest.fixture(scope="module")
def cdnow_sample_summary() -> pd.DataFrame:
    path = source_path("cdnow-sample")
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return purchase_summary(load_cdnow(path).dataset.orders, as_of=CALIBRATION_END)


def test_bgnbd_recovers_published_cdnow_estimates(cdnow_sample_summary):
    s = cdnow_sample_summary
    assert len(s) == 2357
    model = BetaGeoModel().fit(s["frequency"], s["recency"], s["T"])
    for name, published in PUBLISHED_BGNBD.items():
        assert model.params_[name] == pytest.approx(published, rel=0.01), (
            f"{name} = {model.params_[name]:.4f}, published {published}")
    # the paper's maximised log-likelihood
    assert model.log_likelihood_ == pytest.approx(-9582.4, abs=0.5)


def test_gamma_gamma_recovers_published_cdnow_estimates(cdnow_sample_summary):
    s = cdnow_sample_summary
    model = GammaGammaModel().fit(s["frequency"], s["monetary_value"])
    for name, published in PUBLISHED_GAMMA_GAMMA.items():
        assert model.params_[name] == pytest.approx(published, rel=0.01), name


def test_bgnbd_conditional_expectation_matches_paper_example():
    """FHL (2005): x=2, t_x=30.43, T=38.86 expects 1.226 purchases in the next 39 weeks."""
    model = BetaGeoModel()
    model.params_ = dict(PUBLISHED_BGNBD)
    assert float(model.conditional_expected_purchases(39, 2, 30.43, 38.86)) == pytest.approx(
        1.226, abs=0.001)
    assert float(model.probability_alive(0, 0, 38.86)) == 1.0


def _simulate_bgnbd(n: int, *, r: float, alpha: float, a: float, b: float,
                    calibration: float, holdout: float, seed: int) -> pd.DataFrame:
    """Customers who all make a first purchase at 0 and follow BG/NBD afterwards."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n)
    now = np.zeros(n)
    alive = np.ones(n, dtype=bool)
    x = np.zeros(n)
    tx = np.zeros(n)
    holdout_purchases = np.zeros(n)
    end = calibration + holdout
    active = alive.copy()
    while active.any():
        idx = np.flatnonzero(active)
        now[idx] += rng.exponential(1 / lam[idx])
        in_window = now[idx] < end
        buying = idx[in_window]
        in_calibration = now[buying] < calibration
        x[buying[in_calibration]] += 1
        tx[buying[in_calibration]] = now[buying[in_calibration]]
        holdout_purchases[buying[~in_calibration]] += 1
        dies = rng.random(len(buying)) < p[buying]
        alive[buying[dies]] = False
        active = alive & (now < end)
    return pd.DataFrame({"frequency": x, "recency": tx, "T": calibration,
                         "holdout_purchases": holdout_purchases})


def test_bgnbd_churn_probability_is_calibrated_on_simulated_customers():
    """P(no purchase in the window) must match the simulated share, overall and by history."""
    truth = dict(PUBLISHED_BGNBD)
    sim = _simulate_bgnbd(20_000, **truth, calibration=39.0, holdout=39.0, seed=3)
    model = BetaGeoModel().fit(sim["frequency"], sim["recency"], sim["T"])
    assert model.params_["r"] == pytest.approx(truth["r"], rel=0.15)
    predicted = model.probability_no_purchase(39.0, sim["frequency"], sim["recency"], sim["T"])
    observed = (sim["holdout_purchases"] == 0).astype(float)
    assert abs(predicted.mean() - observed.mean()) < 0.015
    for group in (sim["frequency"] == 0, sim["frequency"].between(1, 3), sim["frequency"] > 3):
        assert abs(predicted[group].mean() - observed[group].mean()) < 0.03
    expected = model.conditional_expected_purchases(39.0, sim["frequency"], sim["recency"],
                                                    sim["T"])
    assert expected.sum() == pytest.approx(sim["holdout_purchases"].sum(), rel=0.05)


def test_gamma_gamma_recovers_simulated_parameters():
    rng = np.random.default_rng(11)
    p, q, gamma = 6.0, 4.0, 15.0
    n = 40_000  # p and γ trade off against each other; smaller samples scatter by ±20%
    nu = rng.gamma(q, 1 / gamma, n)  # per-customer rate
    x = 1 + rng.poisson(3, n)
    # the mean of x Gamma(p, ν) values is Gamma(p·x, ν·x)
    m = rng.gamma(p * x, 1 / (nu * x))
    model = GammaGammaModel().fit(x, m)
    assert model.params_["p"] == pytest.approx(p, rel=0.1)
    assert model.params_["q"] == pytest.approx(q, rel=0.05)
    assert model.params_["gamma"] == pytest.approx(gamma, rel=0.1)
    spend = model.conditional_expected_average_spend(x, m)
    # shrinks each customer's mean toward the fitted population mean p·γ/(q−1)
    fitted = model.params_
    population = fitted["p"] * fitted["gamma"] / (fitted["q"] - 1)
    assert population == pytest.approx(p * gamma / (q - 1), rel=0.02)
    assert np.all(np.minimum(m, population) - 1e-9 <= spend)
    assert np.all(spend <= np.maximum(m, population) + 1e-9)


def test_purchase_summary_counts_days_and_ignores_the_future():
    orders = pd.DataFrame({
        "customer_id": ["a", "a", "a", "a", "b", "c"],
        "ordered_at": pd.to_datetime(["2024-01-01 09:00", "2024-01-01 17:00", "2024-01-15 00:00",
                                      "2024-03-01 00:00", "2024-01-29 00:00", "2024-01-02 00:00"]),
        "amount": [10.0, 5.0, 30.0, 99.0, 20.0, 7.0],
        "status": ["completed", "completed", "completed", "completed", "completed",
                   "cancelled"],
    })
    s = purchase_summary(orders, as_of=pd.Timestamp("2024-02-01"))
    assert list(s.index) == ["a", "b"], "cancelled-only customer c is not a purchaser"
    a = s.loc["a"]
    assert a["frequency"] == 1  # two orders on Jan 1 are one purchase day
    assert a["recency"] == pytest.approx(2.0)
    assert a["T"] == pytest.approx(30 / 7)
    assert a["monetary_value"] == 30.0
    assert a["total_spend"] == 45.0
    assert a["days_since_last"] == 16
    assert s.loc["b", "frequency"] == 0 and s.loc["b", "monetary_value"] == 0
    weekly = purchase_summary(orders, as_of=pd.Timestamp("2024-02-01"), period="week")
    assert weekly.loc["a", "frequency"] == 1 and weekly.loc["a", "recency"] == 2.0


def test_simple_heuristics_rank_in_the_expected_direction():
    s = pd.DataFrame({"frequency": [0.0, 3.0, 3.0], "total_spend": [50.0, 50.0, 50.0],
                      "days_since_last": [10.0, 10.0, 100.0]}, index=["x", "y", "z"])
    value = spend_frequency_recency_score(s)
    assert value["y"] > value["z"] and value["y"] > value["x"]
    risk = recency_score(s)
    assert risk["z"] > risk["y"]


def test_models_refuse_to_predict_before_fit():
    with pytest.raises(NotFittedError):
        BetaGeoModel().probability_alive([1], [1], [2])
    with pytest.raises(NotFittedError):
        BuyTillYouDie().predict(pd.DataFrame(), horizon_weeks=1, clv_horizon_weeks=1)
    with pytest.raises(ValueError, match="recency vector are larger than T"):
        BetaGeoModel().fit([1], [5], [2])


def test_default_data_dir_points_at_the_shared_folder():
    assert default_data_dir().name == "data"
    assert isinstance(default_data_dir(), Path)
