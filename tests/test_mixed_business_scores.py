"""A mixed business (orders, app events, memberships) trained with ``--churn auto``: the
activity definition, every active customer scored with reasons and a lifecycle stage, the
docs' by-history example scored for real."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.contract import validate_tables
from features.definition import resolve_definition
from features.pipeline import build_features
from features.snapshots import build_training_set
from models.bundle import ChurnBundle
from models.loading import LoadedModel
from serving.api_models import ScoreRequest
from serving.request_data import request_tables
from serving.scorer import Scorer
from training.fit import fit_bundle

#: trains a model on a generated mixed business: the slow tier
pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parents[1] / "docs" / "serving.md"


@pytest.fixture(scope="module")
def mixed_fit(generated, fast_params):
    _, dataset = generated("mixed")
    chosen = resolve_definition(dataset, requested="auto")
    training_set = build_training_set(
        dataset, as_of=dataset.default_as_of(), horizon_days=90, definition=chosen.name,
        max_snapshots=fast_params.max_snapshots, active_days=chosen.active_days,
        activity_events=chosen.activity_events)
    fit = fit_bundle(training_set, params=replace(fast_params, definition=None),
                     churn_definition=chosen)
    return dataset, fit


@pytest.fixture(scope="module")
def scorer(mixed_fit):
    _, fit = mixed_fit
    loaded = LoadedModel(bundle=fit.bundle, name="churnlens", version="1", alias=None,
                         run_id=None, trained_at=None)
    return Scorer(loaded)


def test_auto_trains_the_activity_definition_and_stores_it(mixed_fit, tmp_path):
    _, fit = mixed_fit
    bundle = fit.bundle
    assert bundle.definition == "activity"
    assert bundle.churn_definition["reason"].startswith("auto: ")
    assert "email_open" not in bundle.churn_definition["activity_events"]
    assert bundle.population_rule["test"] == "recent"
    loaded = ChurnBundle.load(bundle.save(tmp_path / "bundle"))
    assert loaded.churn_definition == bundle.churn_definition
    assert loaded.lifecycle == bundle.lifecycle
    assert loaded.lifecycle["active_days"] == 90 and loaded.lifecycle["new_days"] == 90


def test_every_active_customer_gets_a_probability_reasons_and_a_stage(mixed_fit, scorer):
    dataset, _ = mixed_fit
    as_of = dataset.default_as_of()
    frame = scorer.score_frame(dataset, as_of=as_of, explain="all", top_k=3)
    labels_population = frame["risk_tier"] != "not_applicable"
    orders, events = dataset.orders, dataset.events
    since = as_of - pd.Timedelta(days=90)
    active = set(orders.loc[(orders["status"] == "completed")
                            & (orders["ordered_at"] >= since), "customer_id"])
    active |= set(events.loc[(events["occurred_at"] >= since)
                             & (events["event_type"] != "email_open"), "customer_id"])
    subs = dataset.subscriptions
    active |= set(subs.loc[subs["ended_at"].isna() | (subs["ended_at"] >= as_of),
                           "customer_id"])
    is_active = frame["customer_id"].isin(active)
    scored = labels_population & frame["churn_probability"].notna() & frame["reason_1"].notna()
    assert is_active.sum() > 500
    assert scored[is_active].mean() >= 0.95, "every active customer is scored with reasons"
    assert not scored[~is_active].any(), "nobody inactive is scored"
    assert set(frame.loc[~labels_population, "lifecycle_stage"]) <= {"lapsed", "never_active"}
    assert set(frame.loc[labels_population, "lifecycle_stage"]) <= {"new", "active",
                                                                    "declining"}
    assert frame["expected_saved_value"].isna().all()


def test_api_records_and_batch_rows_carry_the_same_stage(mixed_fit, scorer):
    dataset, _ = mixed_fit
    as_of = dataset.default_as_of()
    features = scorer.features(dataset, as_of=as_of)
    sample = features.iloc[np.linspace(0, len(features) - 1, 60, dtype=int)]
    records = scorer.score_features(sample, as_of=as_of, explain="none")
    rows = scorer.batch_rows(sample, as_of=as_of, explain="none")
    assert [r.lifecycle_stage for r in records] == rows["lifecycle_stage"].tolist()
    assert all(r.expected_saved_value is None for r in records)


def _docs_request() -> dict:
    text = DOCS.read_text(encoding="utf-8")
    body = re.search(r"/v1/scores -d '(\{.*?\})'", text, flags=re.S)
    assert body, "docs/serving.md has a by-history example"
    return json.loads(body.group(1))


def test_the_docs_by_history_example_gets_a_real_score(scorer):
    body = ScoreRequest.model_validate(_docs_request())
    dataset = validate_tables(request_tables(body)).dataset
    as_of = pd.Timestamp(body.as_of)
    [record] = scorer.score_dataset(dataset, as_of=as_of, explain="all", top_k=body.top_k)
    assert record.churn_probability is not None and record.risk_tier != "not_applicable"
    assert record.reasons, "a real score comes with its reasons"
    assert record.lifecycle_stage in ("active", "declining")


def test_rebuilt_features_match_the_bundles_population_rule(mixed_fit):
    dataset, fit = mixed_fit
    features = build_features(dataset, as_of=dataset.default_as_of(),
                              event_types=fit.bundle.event_types)
    stages = fit.bundle.lifecycle_stage(features)
    population = fit.bundle.in_population(features).to_numpy()
    assert np.isin(stages[population], ["new", "active", "declining"]).all()
    assert np.isin(stages[~population], ["lapsed", "never_active"]).all()
