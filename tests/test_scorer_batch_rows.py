"""`Scorer.batch_rows` (the batch path) gives exactly `records_to_frame(score_features(...))`."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

TOP_K = 4


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, fitted):

    from models.loading import load_model

    directory = tmp_path_factory.mktemp("bundle")
    fitted().bundle.save(directory)
    return load_model(str(directory))


@pytest.fixture(scope="module")
def scored(loaded):
    from features.contract import validate_tables
    from features.generate import generate_dataset
    from serving.scorer import Scorer

    data = generate_dataset(customers=300, seed=5, end=date(2026, 6, 30), kind="ecommerce",
                            orders_per_customer=5, events_per_customer=20)
    dataset = validate_tables(dict(data.tables), sources={}, first_rows={}).dataset
    as_of = pd.Timestamp("2026-06-30")
    features = Scorer(loaded).features(dataset, as_of=as_of)
    return dataset, features, as_of


class _Outbox:
    def __init__(self) -> None:
        self.records: list = []
        self.triggered: list = []

    def record_scores(self, records, triggered=()) -> None:
        self.records.extend(records)
        self.triggered.extend(triggered)


@pytest.mark.parametrize("explain", ["none", "at-risk", "all"])
@pytest.mark.parametrize("with_rules", [False, True])
def test_batch_rows_equal_the_record_path(loaded, scored, explain, with_rules):
    from serving.outreach.rules import load_rules
    from serving.scorer import Scorer, records_to_frame

    _, features, as_of = scored
    scorer = Scorer(loaded, rules=load_rules(None) if with_rules else None)
    expected = records_to_frame(
        scorer.score_features(features, as_of=as_of, explain=explain, top_k=TOP_K), top_k=TOP_K)
    got = scorer.batch_rows(features, as_of=as_of, explain=explain, top_k=TOP_K)
    pd.testing.assert_frame_equal(got, expected)
    assert got["reasons_json"].tolist() == expected["reasons_json"].tolist()
    if with_rules:
        assert got["recommended_action"].notna().any(), "the built-in rules fire somewhere"
    if explain != "none":
        assert (got["reasons_json"] != "[]").any()


@pytest.mark.parametrize("explain", ["none", "all"])
def test_outbox_gets_the_same_records_and_actions(loaded, scored, explain):
    from serving.outreach.rules import load_rules
    from serving.scorer import Scorer

    _, features, as_of = scored
    old, new = _Outbox(), _Outbox()
    rules = load_rules(None)
    Scorer(loaded, rules=rules, outbox=old).score_features(
        features, as_of=as_of, explain=explain, top_k=TOP_K)
    Scorer(loaded, rules=rules, outbox=new).batch_rows(
        features, as_of=as_of, explain=explain, top_k=TOP_K)
    assert [r.model_dump() for r in new.records] == [r.model_dump() for r in old.records]
    assert new.triggered == old.triggered


def test_edge_values_are_clipped_like_the_records(loaded, scored, monkeypatch):
    from serving.outreach.rules import load_rules
    from serving.scorer import Scorer, records_to_frame

    _, features, as_of = scored
    scorer = Scorer(loaded, rules=load_rules(None))
    real = loaded.bundle._clv

    def skewed(X, *, small):
        out = real(X, small=small).copy()
        n = len(out)
        out[: n // 4] = -0.0
        out[n // 4: n // 2] = np.nan
        out[n // 2: n // 2 + 3] = -5.0
        return out

    monkeypatch.setattr(loaded.bundle, "_clv", skewed)
    expected = records_to_frame(scorer.score_features(features, as_of=as_of, explain="all",
                                                      top_k=TOP_K), top_k=TOP_K)
    got = scorer.batch_rows(features, as_of=as_of, explain="all", top_k=TOP_K)
    pd.testing.assert_frame_equal(got, expected)
    assert np.array_equal(np.signbit(got["clv"]), np.signbit(expected["clv"]))
    assert (got["clv"] >= 0).all() and not np.signbit(got["clv"]).any(), (
        "a missing, -0.0 or negative CLV is clamped to 0.0")
    at_risk = got["value_at_risk"].dropna()
    assert (at_risk >= 0).all(), "value at risk is clamped at 0"


def test_score_frame_and_empty(loaded, scored):
    from serving.scorer import Scorer, records_to_frame

    dataset, features, as_of = scored
    scorer = Scorer(loaded)
    expected = records_to_frame(scorer.score_dataset(dataset, as_of=as_of, explain="at-risk",
                                                     top_k=3), top_k=3)
    pd.testing.assert_frame_equal(
        scorer.score_frame(dataset, as_of=as_of, explain="at-risk", top_k=3), expected)
    pd.testing.assert_frame_equal(
        scorer.batch_rows(features.iloc[:0], as_of=as_of, top_k=3),
        records_to_frame([], top_k=3))
