"""Uplift models in the bundle and `min_expected_saved_value` in rules (fast, no MLflow)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.bundle import ChurnBundle
from models.reasons import ReasonTable
from models.uplift import RuleUplift, XLearnerUplift
from serving.outreach.rules import RulesError, parse_rules
from training.fit import rebuilt


def rule_uplift(bundle: ChurnBundle, features: pd.DataFrame, *, on_churn_model: bool
                ) -> RuleUplift:
    """An X-learner on the bundle's matrix: the action helps customers with few orders."""
    X = bundle.prepare(features)
    rng = np.random.default_rng(0)
    treated = rng.random(len(X)) < 0.5
    helped = np.nan_to_num(X["completed_orders_total"].to_numpy(float)) <= 2
    churned = (rng.random(len(X)) < 0.5 - 0.3 * (helped & treated)).astype(float)
    baseline = bundle.churn_probability(X) if on_churn_model else None
    model = XLearnerUplift(num_boost_round=30).fit(X, treated, churned, baseline=baseline)
    return RuleUplift(rule="win-back", action="win_back_offer", method="x-learner",
                      estimator=model, uses_baseline=on_churn_model,
                      figures={"treated": float(treated.sum())})


@pytest.mark.parametrize("on_churn_model", [False, True])
def test_uplift_models_ship_in_the_bundle_and_score_the_same_after_loading(
        tmp_path, on_churn_model, fitted, holdout_features):
    fit = fitted()
    features = holdout_features(fit)
    model = rule_uplift(fit.bundle, features, on_churn_model=on_churn_model)
    bundle = rebuilt(fit.bundle, uplift=(model,))
    assert fit.bundle.uplift == (), "rebuilding leaves the fitted bundle as it was"
    loaded = ChurnBundle.load(bundle.save(tmp_path / "bundle"))
    X = bundle.prepare(features)
    probability = bundle.churn_probability(X)
    before = bundle.churn_reductions(X, churn_probability=probability)
    after = loaded.churn_reductions(loaded.prepare(features), churn_probability=probability)
    assert set(after) == {"win-back"}
    np.testing.assert_array_equal(before["win-back"], after["win-back"])
    assert loaded.to_dict()["uplift"][0]["figures"] == {"treated": model.figures["treated"]}
    few_orders = np.nan_to_num(X["completed_orders_total"].to_numpy(float)) <= 2
    estimate = after["win-back"]
    assert estimate[few_orders].mean() > estimate[~few_orders].mean() + 0.1, (
        "the stored model still finds whom the action helps")
    pd.testing.assert_frame_equal(loaded.predict(features), fit.bundle.predict(features))


def test_a_bundle_without_uplift_estimates_nothing(tmp_path, fitted, holdout_features):
    fit = fitted()
    loaded = ChurnBundle.load(fit.bundle.save(tmp_path / "bundle"))
    X = loaded.prepare(holdout_features(fit))
    assert loaded.uplift == ()
    assert loaded.churn_reductions(X, churn_probability=loaded.churn_probability(X)) == {}


RULES = """
rules:
  - name: call-if-it-pays
    min_expected_saved_value: 20
    action: success_call
    channel: file:calls.jsonl
    cooldown_days: 30
    cost: 5
  - name: email-everyone
    action: reactivation_email
    channel: file:emails.jsonl
    cooldown_days: 30
"""


def test_min_expected_saved_value_selects_on_the_rules_own_estimate():
    rules = parse_rules(RULES)
    n = 4
    columns = {"risk_tier": np.array(["high"] * n, dtype=object),
               "value_segment": np.array(["high"] * n, dtype=object),
               "churn_probability": np.full(n, 0.5), "clv": np.array([100.0, 100, 100, 100]),
               "value_at_risk": np.full(n, 50.0)}
    reasons = ReasonTable.empty(n, ["x"], ["other"])
    reductions = {"call-if-it-pays": np.array([0.5, 0.2, 0.25, np.nan])}
    saved = rules.saved_values(reductions, columns["clv"])
    np.testing.assert_allclose(saved["call-if-it-pays"], [45.0, 15.0, 20.0, np.nan])
    assert "email-everyone" not in saved, "a rule without an uplift model has no estimate"
    chosen = rules.first_rules(**columns, reasons=reasons, saved_values=saved)
    assert chosen.tolist() == ["call-if-it-pays", "email-everyone", "call-if-it-pays",
                               "email-everyone"], "at least 20 saved; a missing estimate fails"
    actions = rules.first_actions(**columns, reasons=reasons, saved_values=saved)
    assert actions.tolist() == ["success_call", "reactivation_email", "success_call",
                                "reactivation_email"]
    nothing = rules.first_rules(**columns, reasons=reasons)
    assert nothing.tolist() == ["email-everyone"] * n, (
        "without an uplift model the rule that asks for saved value never fires")


def test_min_expected_saved_value_must_be_a_number():
    with pytest.raises(RulesError, match="min_expected_saved_value"):
        parse_rules(RULES.replace("min_expected_saved_value: 20", "min_expected_saved_value: .nan"))
    assert parse_rules(RULES.replace("20", "-5")).rules[0].min_expected_saved_value == -5


def test_the_gate_promotes_new_uplift_models_only_when_churn_is_not_worse():
    from training.gate import champion_gate

    same = {"churn_roc_auc": 0.80, "clv_spearman": 0.5}
    promoted, reason = champion_gate(same, same, new_uplift_rules=["win-back"])
    assert promoted and "uplift models for win-back" in reason
    assert not champion_gate(same, same)[0], "an identical model without news is not promoted"
    worse = {"churn_roc_auc": 0.79, "clv_spearman": 0.6}
    assert not champion_gate(worse, same, new_uplift_rules=["win-back"])[0]


SCORING_RULES = """
rules:
  - name: win-back
    min_expected_saved_value: 0
    action: win_back_offer
    channel: file:offers.jsonl
    cooldown_days: 30
    cost: 2
  - name: email-everyone
    action: reactivation_email
    channel: file:emails.jsonl
    cooldown_days: 30
"""


def test_scores_carry_the_expected_saved_value_of_the_rule_that_recommends(
        fitted, holdout_features):
    from models.loading import LoadedModel
    from serving.scorer import Scorer, records_to_frame

    fit = fitted()
    features = holdout_features(fit).head(300)
    bundle = rebuilt(fit.bundle, uplift=(rule_uplift(fit.bundle, holdout_features(fit),
                                                     on_churn_model=True),))
    loaded = LoadedModel(bundle=bundle, name="churnlens", version="1", alias=None, run_id=None,
                         trained_at=None)
    scorer = Scorer(loaded, rules=parse_rules(SCORING_RULES))
    as_of = fit.holdout["snapshot_at"].max()
    records = scorer.score_features(features, as_of=as_of, explain="none")
    X = bundle.prepare(features)
    reduction = bundle.churn_reductions(X, churn_probability=bundle.churn_probability(X))
    expected = reduction["win-back"] * np.array([r.clv or 0.0 for r in records]) - 2
    for record, value in zip(records, expected, strict=True):
        if record.recommended_action == "win_back_offer":
            assert record.expected_saved_value == pytest.approx(value) and value >= 0
        else:
            assert record.recommended_action == "reactivation_email"
            assert record.expected_saved_value is None, "the e-mail rule has no uplift model"
    offered = sum(r.recommended_action == "win_back_offer" for r in records)
    assert 0 < offered < len(records)
    batch = scorer.batch_rows(features, as_of=as_of, explain="none")
    pd.testing.assert_frame_equal(batch, records_to_frame(records))
    plain = Scorer(LoadedModel(bundle=fit.bundle, name="churnlens", version="1", alias=None,
                               run_id=None, trained_at=None), rules=parse_rules(SCORING_RULES))
    assert all(r.expected_saved_value is None and r.recommended_action == "reactivation_email"
               for r in plain.score_features(features, as_of=as_of, explain="none")), (
        "null until an uplift model exists, and the rule asking for it does not fire")
