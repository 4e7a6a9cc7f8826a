"""An app business without orders or subscriptions: churn and reasons for every active
customer, CLV null with one line saying there is no revenue to learn from."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from features.pipeline import build_features
from models.bundle import ChurnBundle
from training import registry
from training.fit import NO_REVENUE_NOTE
from training.run import train_and_register


@pytest.mark.slow
def test_events_only_data_trains_and_scores_every_active_customer(in_tmp_cwd: Path, generated,
                                                                  fast_params):
    _, dataset = generated("mixed")
    events_only = replace(dataset, orders=None, subscriptions=None)
    as_of = events_only.default_as_of()
    result = train_and_register(events_only, as_of=as_of,
                                params=replace(fast_params, definition=None))
    assert NO_REVENUE_NOTE in result.notes, result.notes
    assert not any(k.startswith("clv_") for k in result.metrics)
    with registry.temporary_directory() as tmp:
        bundle = ChurnBundle.load(registry.download_bundle(result.version, Path(tmp)))
    assert bundle.definition == "activity" and not bundle.has_clv
    features = build_features(events_only, as_of=as_of, event_types=bundle.event_types)
    scores = bundle.predict(features)
    events = events_only.events
    recent = events[events["occurred_at"] >= as_of - pd.Timedelta(days=bundle.horizon_days)]
    active = scores.index.isin(recent["customer_id"].unique())
    share = scores.loc[active, "churn_probability"].notna().mean()
    assert share >= 0.9, f"only {share:.0%} of the recently active customers get a probability"
    assert scores["clv"].isna().all() and scores["value_segment"].isna().all()
    reasons = bundle.explain(features[scores["in_population"]].head(20), top_k=3)
    assert all(reasons), "every scored customer gets churn reasons"
