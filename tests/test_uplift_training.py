"""``churnlens train --uplift`` against the simulated outreach's known effects.

Real flow, shared with the effect tests: scores and actions from ``churnlens
score --outreach`` (half of each rule held out), the world regenerated with
``outreach replay`` (treated customers answer with the effects of
`features.outreach_sim`), then a training run with ``--uplift`` on it. The
Qini comparison on a held-out world is ``bench/uplift_bench.py``.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
from typer.testing import CliRunner

from churnlens import build_app
from features.history import History
from features.io import read_dataset
from features.labels import labels_at
from features.pipeline import features_at
from models.loading import load_model
from models.uplift import METHODS, qini_coefficient
from serving.monitoring.tracking import RegisteredBundles
from training.outcomes import action_outcomes, read_actions
from training.run import fit_on_dataset, train_and_register
from training.uplift import matured_outcomes

pytestmark = pytest.mark.slow  # end-to-end: training, real scoring and commands


@pytest.fixture(scope="module")
def uplifted(replayed, registry_at, tiny_params):
    world, url, data = replayed
    with registry_at(world.root, world.tracking_uri):
        result = train_and_register(
            read_dataset(data).dataset, as_of=pd.Timestamp(world.mature_by),
            params=replace(tiny_params(5), definition="inactivity"),
            uplift_actions=read_actions(url))
        loaded = load_model(f"models:/churnlens/{result.version}")
        yield world, url, data, result, loaded.bundle


def test_each_rule_with_enough_outcomes_gets_an_uplift_model(uplifted):
    _world, _url, _data, result, bundle = uplifted
    rules = {model.rule for model in bundle.uplift}
    assert {"win-back", "success-call"} <= rules, result.notes
    for model in bundle.uplift:
        assert model.figures["treated"] >= 30 and model.figures["control"] >= 30
        assert f"uplift_{model.rule}_observed_churn_reduction" in result.metrics
        low, high = (result.metrics[f"uplift_{model.rule}_crossfit_qini_gain_{end}"]
                     for end in ("low", "high"))
        assert low <= high
        assert model.method in METHODS
        # the learner was chosen on the rule's outcomes, and the notes say how it compares
        # with ranking by value at risk
        assert any(f"uplift model of rule {model.rule} (" in note and "cross-fitted Qini" in note
                   for note in result.notes), result.notes
        assert any(note.startswith(f"rule {model.rule}: ") and "value at risk" in note
                   for note in result.notes), result.notes


def test_the_estimates_find_the_customers_the_offer_helps(uplifted):
    """The win-back offer saves price-sensitive customers (0.5) and hardly anyone else (0.03)."""
    _world, _url, data, _result, bundle = uplifted
    truth = pd.read_csv(data / "outreach_truth.csv", dtype={"customer_id": str},
                        parse_dates=["as_of"])
    rows = truth[(truth["rule"] == "win-back") & truth["untreated_churned"].notna()]
    history = History(read_dataset(data).dataset)
    estimates = []
    for moment, group in rows.groupby("as_of"):
        X = bundle.prepare(features_at(history, as_of=moment, event_types=bundle.event_types)
                           .reindex(pd.Index(group["customer_id"])))
        reduction = bundle.churn_reductions(X, churn_probability=bundle.churn_probability(X))
        estimates.append(pd.Series(reduction["win-back"], index=group.index))
    estimate = pd.concat(estimates).reindex(rows.index).to_numpy()
    sensitive = rows["price_sensitive"].astype(bool).to_numpy()
    assert sensitive.any() and (~sensitive).any()
    assert estimate[sensitive].mean() > estimate[~sensitive].mean() + 0.05, (
        "price-sensitive customers get the larger estimated churn reduction")
    assert qini_coefficient(estimate, rows["true_churn_reduction"].to_numpy(float)) > 0.2


def test_train_uplift_says_what_is_missing(replayed, tmp_path, registry_at):
    world, _url, data = replayed
    runner, app = CliRunner(), build_app()
    with registry_at(world.root, world.tracking_uri):
        empty = f"sqlite:///{tmp_path / 'empty.db'}"
        result = runner.invoke(app, ["train", "--data", str(data), "--uplift", "--outbox-url",
                                     empty])
    assert result.exit_code == 2
    assert "no actions table" in result.output and "score --outreach" in result.output


def test_uplift_outcomes_follow_the_churn_definition_of_the_model_they_ship_in(
        replayed, registry_at, tiny_params):
    """Actions scored by an inactivity model, an activity model trained --uplift: the
    outcomes its learners see are activity churn (what its probability and its
    expected_saved_value are about), not the scoring model's inactivity churn."""
    world, url, data = replayed
    dataset = read_dataset(data).dataset
    history = History(dataset)
    as_of = pd.Timestamp(world.mature_by)
    fit, _ = fit_on_dataset(dataset, as_of=as_of,
                            params=replace(tiny_params(5), definition="activity"))
    assert fit.bundle.definition == "activity"
    actions = read_actions(url)
    learned = matured_outcomes(history, actions, as_of=as_of, bundle=fit.bundle)
    with registry_at(world.root, world.tracking_uri):
        measured, _ = action_outcomes(history, actions, as_of=as_of,
                                      load_bundle=RegisteredBundles())
    assert len(learned) > 100
    differs = 0
    for moment, rows in learned.groupby("as_of"):
        expected = labels_at(history, as_of=pd.Timestamp(moment),
                             horizon_days=fit.bundle.horizon_days,
                             clv_horizon_days=fit.bundle.horizon_days,
                             **fit.bundle.label_settings())["churned"]
        expected = expected.reindex(rows["customer_id"]).to_numpy()
        got = rows["churned"].to_numpy()
        assert ((got == expected) | (pd.isna(got) & pd.isna(expected))).all(), (
            f"outcomes as of {moment} are the activity labels of the model trained --uplift")
        scored_by = measured.set_index("id")["churned"].reindex(rows["id"]).to_numpy()
        differs += int((got != scored_by).sum())
    assert differs > 0, ("the scoring model's inactivity outcomes (what outreach effect "
                         "measures) differ from the activity ones for some customers")
