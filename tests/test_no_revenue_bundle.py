"""A model without revenue to learn from: churn and reasons for everyone, CLV null end to end."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.bundle import ChurnBundle
from models.loading import LoadedModel
from serving.outreach.outbox import Outbox
from serving.outreach.rules import load_rules, parse_rules
from serving.scorer import Scorer
from training.fit import NO_REVENUE_NOTE, fit_bundle


@pytest.fixture(scope="module")
def no_clv(training_set, fast_params):
    ts = training_set()
    return fit_bundle(ts, params=fast_params, event_types=ts.event_types, definition="inactivity",
                      learn_clv=False)


def _scorer(fit, **kwargs) -> Scorer:
    loaded = LoadedModel(bundle=fit.bundle, name="churnlens", version="1", alias=None,
                         run_id=None, trained_at=None)
    return Scorer(loaded, **kwargs)


def test_the_bundle_says_why_it_has_no_clv_and_still_scores_churn(no_clv, tmp_path: Path,
                                                                  holdout_features):
    bundle = no_clv.bundle
    assert not bundle.has_clv
    assert NO_REVENUE_NOTE in no_clv.notes and bundle.clv_note == NO_REVENUE_NOTE
    assert "no revenue to learn from" in NO_REVENUE_NOTE
    assert not any(k.startswith("clv_") for k in no_clv.metrics), "no CLV metrics to report"
    assert no_clv.metrics["churn_roc_auc"] > 0.7
    features = holdout_features(no_clv)
    predicted = bundle.predict(features)
    population = predicted["in_population"]
    assert predicted.loc[population, "churn_probability"].notna().all()
    assert predicted["clv"].isna().all() and predicted["value_at_risk"].isna().all()
    assert predicted["value_segment"].isna().all()
    loaded = ChurnBundle.load(bundle.save(tmp_path / "bundle"))
    assert not (tmp_path / "bundle" / "clv_model.txt").exists()
    assert loaded.clv_note == NO_REVENUE_NOTE and not loaded.has_clv
    np.testing.assert_allclose(loaded.predict(features)["churn_probability"],
                               predicted["churn_probability"])


def test_scores_keep_reasons_and_a_null_clv_through_the_outbox_and_rules(
        no_clv, tmp_path, holdout_features):
    outbox = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    rules = parse_rules("""
rules:
  - name: big-spender
    action: success_call
    channel: file:vip.jsonl
    cooldown_days: 30
    min_clv: 1
  - name: any-risk
    action: reactivation_email
    channel: file:email.jsonl
    cooldown_days: 30
    risk_tiers: [high]
""")
    scorer = _scorer(no_clv, rules=rules, outbox=outbox)
    features = holdout_features(no_clv)
    records = scorer.score_features(features, as_of=no_clv.holdout["snapshot_at"].max())
    scored = [r for r in records if r.churn_probability is not None]
    assert scored and all(r.clv is None and r.value_segment is None for r in records)
    assert all(r.reasons for r in scored if r.risk_tier == "high"), "churn reasons for at-risk"
    actions = {r.recommended_action for r in records}
    assert "success_call" not in actions, "a rule on CLV never fires without a CLV"
    assert "reactivation_email" in actions
    outbox.record_scores(records)
    stored = outbox.score_history()
    assert len(stored) == len(records) and stored["clv"].isna().all()
    frame = scorer.batch_rows(features, as_of=no_clv.holdout["snapshot_at"].max())
    assert frame["clv"].isna().all() and frame["value_segment"].isna().all()
    assert frame["churn_probability"].notna().sum() == len(scored)
    assert load_rules() is not None


def test_the_by_id_path_agrees_with_the_bundle(no_clv, holdout_features):
    features = holdout_features(no_clv)
    scorer = _scorer(no_clv)
    prepared = scorer.prepare(features)
    as_of = no_clv.holdout["snapshot_at"].max()
    sample = list(range(0, len(prepared), max(1, len(prepared) // 50)))
    by_id = [scorer.score_rows(prepared, [i], as_of=as_of, top_k=3)[0] for i in sample]
    whole = scorer.score_features(features.iloc[sample], as_of=as_of, top_k=3)
    assert [r.model_dump() for r in by_id] == [r.model_dump() for r in whole]
    assert all(r.clv is None and r.value_segment is None and r.value_at_risk is None
               for r in by_id)
    assert any(r.reasons for r in by_id), "churn reasons without a CLV model"


def test_data_with_orders_still_learns_clv(training_set, fast_params):
    ts = training_set()
    fit = fit_bundle(ts, params=replace(fast_params, clv_seeds=1), event_types=ts.event_types,
                     definition="inactivity")
    assert fit.bundle.has_clv and fit.bundle.clv_note is None
