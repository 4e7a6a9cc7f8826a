"""Metrics against values worked out by hand and against their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import (
    churn_metrics,
    clv_metrics,
    decile_error,
    expected_calibration_error,
    normalized_gini,
    top_decile_lift,
)


def test_ece_is_zero_for_perfectly_calibrated_bins_and_matches_hand_value():
    y = np.array([0, 0, 0, 1] * 25 + [1, 1, 1, 0] * 25)
    p = np.array([0.25] * 100 + [0.75] * 100)
    assert expected_calibration_error(y, p) == pytest.approx(0.0)
    # every probability 0.5 off by 0.25 from the observed rate in its bin
    assert expected_calibration_error(y, np.full(200, 0.5)) == pytest.approx(0.0)
    assert expected_calibration_error([1, 1, 0, 0], [0.9, 0.9, 0.3, 0.3]) == pytest.approx(
        0.5 * 0.1 + 0.5 * 0.3)


def test_top_decile_lift_counts_churn_in_the_riskiest_tenth():
    y = np.array([1] * 10 + [0] * 90)
    p = np.linspace(1, 0, 100)
    assert top_decile_lift(y, p) == pytest.approx(1.0 / 0.1)
    assert top_decile_lift(y, -p) == pytest.approx(0.0)


def test_churn_metrics_on_a_perfect_and_a_random_ranking():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 5000)
    perfect = churn_metrics(y, y * 0.8 + 0.1)
    assert perfect["roc_auc"] == pytest.approx(1.0) and perfect["pr_auc"] == pytest.approx(1.0)
    noise = churn_metrics(y, rng.random(5000))
    assert abs(noise["roc_auc"] - 0.5) < 0.03
    assert set(noise) == {"roc_auc", "pr_auc", "top_decile_lift", "brier", "ece"}
    assert np.isnan(churn_metrics([1, 1, 1], [0.2, 0.3, 0.4])["roc_auc"])


def test_clv_metrics_on_perfect_scaled_and_reversed_predictions():
    rng = np.random.default_rng(1)
    actual = rng.gamma(0.5, 100, 1000) * (rng.random(1000) < 0.6)
    perfect = clv_metrics(actual, actual)
    assert perfect["normalized_gini"] == pytest.approx(1.0)
    assert perfect["decile_error"] == pytest.approx(0.0)
    assert perfect["total_ratio"] == pytest.approx(0.0)
    doubled = clv_metrics(actual, actual * 2)
    assert doubled["total_ratio"] == pytest.approx(1.0)
    assert doubled["decile_error"] == pytest.approx(1.0)
    assert doubled["spearman"] == pytest.approx(perfect["spearman"])
    assert normalized_gini(actual, -actual) < -0.5


def test_decile_error_by_hand():
    actual = np.arange(1, 21, dtype=float)  # deciles of two customers each
    predicted = actual.copy()
    predicted[-1] += 3.9  # top decile: actual 19 + 20 = 39, predicted 42.9 → 10% off
    assert decile_error(actual, predicted) == pytest.approx(0.1 / 10)
