"""One prediction contract: the bundle scores a prepared matrix, every path builds on it.

By id (one row of the matrix prepared once), in a batch (`batch_rows`) and from a
request body (`score_features`) a customer gets the same record; the matrix path
equals LightGBM on the bundle's own prepared frame; CLV explanations are exact
TreeSHAP (LightGBM's ``pred_contrib`` is the oracle); a bundle that has rendered
sentences still pickles (Dask ships bundles to its workers).
"""

from __future__ import annotations

import gc
import pickle

import numpy as np
import pandas as pd
import pytest

from models.bundle import apply_calibration
from models.loading import LoadedModel

TOP_K = 4


@pytest.fixture(scope="module")
def features(fit, holdout_features):
    return holdout_features(fit)


def _scorer(fit, **kwargs):
    from serving.scorer import Scorer

    loaded = LoadedModel(bundle=fit.bundle, name="churnlens", version="3", alias=None,
                         run_id=None, trained_at=None)
    return Scorer(loaded, **kwargs)


@pytest.mark.parametrize("with_rules", [False, True])
def test_by_id_batch_and_body_paths_give_identical_records(fit, features, with_rules):
    from serving.outreach.rules import load_rules
    from serving.scorer import records_to_frame

    scorer = _scorer(fit, rules=load_rules(None) if with_rules else None)
    as_of = pd.Timestamp("2026-06-30")
    prepared = scorer.prepare(features)
    sample = np.unique(np.linspace(0, len(prepared) - 1, num=120, dtype=int)).tolist()
    by_id = [scorer.score_rows(prepared, [i], as_of=as_of, top_k=TOP_K)[0] for i in sample]
    body = scorer.score_features(features.iloc[sample], as_of=as_of, top_k=TOP_K)
    assert [r.model_dump() for r in by_id] == [r.model_dump() for r in body], (
        "one row scored by id equals the same customer scored with others")
    batch = scorer.batch_rows(features, as_of=as_of, top_k=TOP_K).iloc[sample]
    pd.testing.assert_frame_equal(batch.reset_index(drop=True),
                                  records_to_frame(by_id, top_k=TOP_K))
    assert any(r.reasons for r in by_id) and any(r.risk_tier == "not_applicable" for r in by_id)
    if with_rules:
        assert any(r.recommended_action for r in by_id), "the built-in rules fire somewhere"


def test_the_matrix_path_equals_lightgbm_on_the_prepared_frame(fit, features):
    bundle = fit.bundle
    frame = bundle.prepare(features)  # pandas categoricals: LightGBM maps the levels itself
    scored = bundle.score(bundle.prepare_matrix(features), explain="none")
    population = scored.in_population
    expected = apply_calibration(bundle.calibration, bundle.churn_booster.predict(frame))
    np.testing.assert_array_equal(scored.churn_probability[population], expected[population])
    assert np.isnan(scored.churn_probability[~population]).all()
    assert (scored.risk_tier[~population] == "not_applicable").all()
    np.testing.assert_array_equal(scored.clv, bundle.clv_booster.predict(frame)
                                  * bundle.margin_rate)
    rows = [5, 0, 17]
    some = bundle.score(bundle.prepare_matrix(features), rows, explain="none")
    assert some.customer_id.tolist() == [str(features.index[i]) for i in rows]
    np.testing.assert_array_equal(some.clv, scored.clv[rows])


def test_clv_explanations_are_exact_treeshap(fit, features):
    bundle = fit.bundle
    frame = bundle.prepare(features.head(300))
    oracle = bundle.clv_booster.predict(frame, pred_contrib=True)
    ours = bundle._clv_contributions(bundle.prepare_matrix(features.head(300)).matrix)
    np.testing.assert_allclose(ours, oracle, rtol=1e-9, atol=1e-9)
    value = bundle.explain_value(features, rows=list(features.index[:20]), top_k=3)
    assert any(value), "features raise someone's CLV"
    for reasons, row in zip(value, oracle[:20], strict=True):
        gains = [r["contribution"] for r in reasons]
        assert gains == sorted(gains, reverse=True) and all(g > 0 for g in gains)
        assert gains == pytest.approx(sorted(row[:-1][row[:-1] > 0], reverse=True)[:len(gains)])


def test_a_bundle_that_has_rendered_sentences_pickles(fit, features):
    bundle = fit.bundle
    before = bundle.explain(features.head(40), top_k=TOP_K)
    assert bundle._sentences, "explaining fills the sentence cache"
    copy = pickle.loads(pickle.dumps(bundle))
    assert copy.explain(features.head(40), top_k=TOP_K) == before
    pd.testing.assert_frame_equal(copy.predict(features), bundle.predict(features))


def test_unknown_explain_is_named(fit, features):
    with pytest.raises(ValueError, match="explain must be one of all, at-risk, none"):
        fit.bundle.score(fit.bundle.prepare_matrix(features.head(3)), explain="some")


def test_freezing_keeps_the_served_state_out_of_full_collections():
    from serving.model_holder import freeze_long_lived

    try:
        freeze_long_lived()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
