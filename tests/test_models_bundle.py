"""The model bundle: exact contributions, scoring rules, reasons, storage round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from models.bundle import BUNDLE_FILE, ChurnBundle


@pytest.fixture(scope="module")
def features(fit, holdout_features):
    return holdout_features(fit)


def test_contributions_plus_base_value_equal_the_raw_model_output(fit, features):
    bundle = fit.bundle
    contributions = bundle.contributions(features)
    X = bundle.prepare(features)
    raw = bundle.churn_booster.predict(X, raw_score=True)
    assert contributions.columns[-1] == "base_value"
    np.testing.assert_allclose(contributions.sum(axis=1).to_numpy(), raw, atol=1e-6,
                               err_msg="TreeSHAP contributions + base must equal log-odds")
    np.testing.assert_allclose(1 / (1 + np.exp(-raw)), bundle.churn_raw_probability(X),
                               atol=1e-9)


def test_predict_follows_the_population_rule_and_cut_points(fit, features):
    bundle = fit.bundle
    scores = bundle.predict(features)
    labels = fit.holdout.set_index("customer_id")
    assert list(scores.columns) == ["in_population", "churn_probability", "risk_tier", "clv",
                                    "value_segment", "value_at_risk", "lifecycle_stage"]
    assert scores.index.equals(features.index)
    np.testing.assert_array_equal(scores["in_population"].to_numpy(),
                                  labels["in_population"].astype(bool).to_numpy(),
                                  err_msg="bundle population must match the labels' population")
    outside = scores[~scores["in_population"]]
    inside = scores[scores["in_population"]]
    assert len(outside) > 0 and len(inside) > 0
    assert outside["churn_probability"].isna().all()
    assert (outside["risk_tier"] == "not_applicable").all()
    assert inside["churn_probability"].between(0, 1).all()
    low, high = bundle.risk_cuts
    expected = np.where(inside["churn_probability"] >= high, "high",
                        np.where(inside["churn_probability"] >= low, "medium", "low"))
    np.testing.assert_array_equal(inside["risk_tier"].to_numpy(), expected)
    # tiers are cut at the 50th/80th percentile of the held-out population (ties share a tier;
    # an interpolated percentile between two scores leaves exactly the share above it)
    p = inside["churn_probability"]
    assert (p > high).mean() <= 0.2 + 1e-9 and (p >= high).mean() >= 0.2 - 1e-9
    assert (p > low).mean() <= 0.5 + 1e-9 and (p >= low).mean() >= 0.5 - 1e-9
    assert (scores["clv"] >= 0).all()
    assert set(scores["value_segment"]) <= {"low", "mid", "high"}
    np.testing.assert_allclose(inside["value_at_risk"], inside["churn_probability"] * inside["clv"])


def test_prediction_ignores_column_order_and_extra_columns(fit, features):
    bundle = fit.bundle
    shuffled = features[features.columns[::-1]].assign(unrelated=1.0)
    pd.testing.assert_frame_equal(bundle.predict(shuffled), bundle.predict(features))


def test_unseen_category_level_and_missing_feature_are_scored_as_missing(fit, features):
    bundle = fit.bundle
    assert bundle.categorical_levels, "generated customers have categorical attributes"
    name = next(iter(bundle.categorical_levels))
    odd = features.head(20).copy()
    odd[name] = pd.Series(["never-seen-level"] * len(odd), index=odd.index)
    missing = features.head(20).copy()
    missing[name] = pd.Series([None] * len(missing), index=missing.index, dtype=object)
    pd.testing.assert_frame_equal(bundle.predict(odd), bundle.predict(missing))
    dropped = features.head(20).drop(columns=[bundle.feature_names[-1]])
    assert bundle.predict(dropped)["clv"].notna().all()


def test_reasons_are_the_top_positive_contributions_with_sentences(fit, features):
    bundle = fit.bundle
    scores = bundle.predict(features)
    risky = scores.sort_values("churn_probability", ascending=False).index[:30].tolist()
    reasons = bundle.explain(features, top_k=3, rows=risky)
    contributions = bundle.contributions(features.loc[risky])
    assert len(reasons) == len(risky)
    for customer, row in zip(risky, reasons, strict=True):
        assert 1 <= len(row) <= 3, "a high-risk customer has at least one reason"
        values = [r["contribution"] for r in row]
        assert values == sorted(values, reverse=True) and min(values) > 0
        best = contributions.loc[customer].drop("base_value").sort_values(ascending=False)
        assert [r["feature"] for r in row] == best.index[:len(row)].tolist()
        for reason in row:
            assert reason["text"].endswith(".") and len(reason["text"]) > 15
            value = features.loc[customer, reason["feature"]]
            assert reason["value"] == (None if pd.isna(value) else value)
    outside = scores.index[~scores["in_population"]][:3].tolist()
    assert bundle.explain(features, rows=outside) == [[], [], []]
    json.dumps(reasons)  # reasons are JSON-ready


def test_days_since_last_order_reason_reads_like_the_business(fit):
    bundle = fit.bundle
    from models.explain import reason_text

    text = reason_text("days_since_last_order", 94.0,
                       info=bundle.feature_info["days_since_last_order"],
                       reference={"mean_days_between_orders": 21.0})
    assert text == "No order for 94 days; retained customers typically order every 21 days."
    gap = bundle.reference["retained_median"]["mean_days_between_orders"]
    assert 5 < gap < 200, "retained customers' typical gap is a plausible number of days"


def test_save_and_load_round_trip_without_pickles(fit, features, tmp_path):
    bundle = fit.bundle
    bundle.save(tmp_path / "bundle")
    files = sorted(p.name for p in (tmp_path / "bundle").iterdir())
    assert files == ["bundle.json", "churn_model.txt", "clv_model.txt"]
    spec = json.loads((tmp_path / "bundle" / BUNDLE_FILE).read_text())
    assert spec["feature_names"] == bundle.feature_names
    assert spec["definition"] == "inactivity" and spec["horizon_days"] == 90
    loaded = ChurnBundle.load(tmp_path / "bundle")
    pd.testing.assert_frame_equal(loaded.predict(features), bundle.predict(features))
    assert loaded.explain(features.head(50)) == bundle.explain(features.head(50))
    assert loaded.event_types == bundle.event_types
    with pytest.raises(FileNotFoundError, match="not a churnlens model bundle"):
        ChurnBundle.load(tmp_path)
