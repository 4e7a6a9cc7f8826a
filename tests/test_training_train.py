"""Fitting: the model recovers the generator's causes, learns nothing from noise, and
refuses unusable data with a message that says what to change."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.snapshots import features_of
from training.fit import fit_bundle
from training.gate import champion_gate
from training.params import TrainingDataError, TrainParams
from training.run import train_and_register

#: feature families through which the generator's churn causes show in the data
DRIVERS = {
    # ordering gaps: time since the last order, overdue vs own rhythm, no orders lately
    "gap": ("days_since", "overdue", "between_orders", "completed_orders_", "revenue_30d",
            "revenue_90d"),
    # counts, and rates against the customer's usual, per active day, between event types
    "activity": ("active_days", "_events_", "_vs_usual", "_trend_", "per_active_day", "ratio_"),
    "bad_experience": ("return", "unclaimed"),
    "support": ("support_ticket",),
}


def family(feature: str) -> str | None:
    return next((name for name, parts in DRIVERS.items()
                 if any(part in feature for part in parts)), None)


def test_held_out_quality_on_generated_data(fit):
    m = fit.metrics
    assert m["churn_roc_auc"] > 0.85, "behaviour-driven churn should be easy to rank"
    assert m["churn_ece"] < 0.06, "probabilities should be calibrated on the holdout"
    assert m["clv_spearman"] > 0.4
    assert abs(m["clv_total_ratio"]) < 0.3, "total predicted value close to actual"
    assert m["churn_train_rows"] > m["churn_holdout_rows"] > 100


def test_clv_total_over_its_training_rows_equals_theirs(fit, training_set):
    """The bundle's CLV is balanced on the rows it learned from: the factor is stored in
    the booster, so whatever scores with the bundle predicts that total."""
    valued = training_set().frame.dropna(subset=["clv_target"])
    learned = valued[valued["snapshot_at"] < valued["snapshot_at"].max()]
    predicted = fit.bundle.clv(fit.bundle.prepare(features_of(learned)))
    assert predicted.sum() == pytest.approx(learned["clv_target"].sum(), rel=1e-6)
    assert fit.bundle.metrics["clv_balance_factor"] != pytest.approx(1.0, abs=1e-3)
    assert any("CLV scaled by" in note for note in fit.bundle.notes)


def test_most_important_churn_features_are_the_generator_causes(fit):
    top = fit.bundle.feature_importance().index[:5].tolist()
    assert all(family(f) is not None for f in top), (
        f"top churn features {top} should be gaps/recency, activity, returns or tickets")


def test_reasons_of_customers_who_churn_name_the_generator_causes(fit, generated, holdout_features):
    """Customers who churn in the held-out window (ground truth) get reasons from the
    behaviours that drive churn in the generator, and long-gap churners get gap reasons."""
    data, _ = generated()
    truth = data.ground_truth.set_index("customer_id")
    labels = fit.holdout.set_index("customer_id")
    at = fit.holdout["snapshot_at"].iloc[0]
    truth = truth.reindex(labels.index)
    churning = labels.index[labels["in_population"].astype(bool) & (labels["churned"] == 1)
                            & (truth["churned_at"] >= at)
                            & (truth["churned_at"] < at + pd.Timedelta(days=90))]
    assert len(churning) >= 30
    reasons = fit.bundle.explain(holdout_features(fit), top_k=3, rows=list(churning))
    rows = pd.DataFrame([(truth.loc[c, "churn_cause"], family(r["feature"]))
                         for c, rs in zip(churning, reasons, strict=True) for r in rs],
                        columns=["cause", "family"])
    driving = rows["family"].notna().mean()
    assert driving >= 0.7, f"only {driving:.0%} of reasons are generator causes"
    long_gap = rows[rows["cause"] == "long_gap"]["family"].value_counts()
    assert long_gap.index[0] == "gap", f"long-gap churners' reasons: {long_gap.to_dict()}"


@pytest.mark.parametrize(("behaviour", "change"), [
    ("long gap since the last order", {"days_since_last_order": lambda s: s + 90,
                                       "order_overdue_ratio": lambda s: s * 3}),
    ("returned orders", {"returned_orders_90d": lambda s: s + 2,
                         "returned_orders_total": lambda s: s + 2,
                         "return_rate": lambda s: s + 0.4}),
    ("support tickets", {"support_ticket_events_30d": lambda s: s + 3,
                         "support_ticket_events_90d": lambda s: s + 3,
                         "support_ticket_events_365d": lambda s: s + 3,
                         "support_ticket_events_total": lambda s: s + 3,
                         "days_since_last_support_ticket": lambda s: s * 0 + 3}),
    # no session in the last 30 days, as every feature that reads those 30 days sees it
    ("falling activity", {"active_days_30d": lambda s: s * 0,
                          "session_events_30d": lambda s: s * 0,
                          "session_events_change_30d": lambda s: s - 5,
                          "active_days_30d_vs_usual": lambda s: s * 0,
                          "session_rate_vs_usual_30d": lambda s: s * 0,
                          "session_trend_30d": lambda s: s * 0,
                          "session_per_active_day_30d": lambda s: s * np.nan}),
])
def test_churn_risk_rises_with_each_generator_cause(fit, behaviour, change, holdout_features):
    features = holdout_features(fit)
    labels = fit.holdout.set_index("customer_id")
    active = features[labels["in_population"].astype(bool)
                      & (features["days_since_last_order"] < 60)]
    before = fit.bundle.predict(active)["churn_probability"].mean()
    changed = active.assign(**{name: f(active[name]) for name, f in change.items()})
    after = fit.bundle.predict(changed)["churn_probability"].mean()
    assert after - before > 0.01, f"{behaviour} should raise churn risk ({before:.3f}→{after:.3f})"


def test_shuffled_labels_give_a_model_no_better_than_chance(training_set, shuffled, fast_params):
    ts = shuffled(training_set())
    result = fit_bundle(ts, params=fast_params, event_types=ts.event_types, definition="inactivity")
    assert abs(result.metrics["churn_roc_auc"] - 0.5) < 0.06, result.metrics["churn_roc_auc"]


def _only(ts, snapshots: int):
    dates = sorted(ts.frame["snapshot_at"].unique())[-snapshots:]
    return replace(ts, frame=ts.frame[ts.frame["snapshot_at"].isin(dates)],
                   snapshot_dates=dates)


def test_a_single_labelled_snapshot_trains_on_a_split_by_customer(training_set, fast_params):
    ts = _only(training_set(), 1)
    result = fit_bundle(ts, params=fast_params, event_types=ts.event_types, definition="inactivity")
    assert result.validation == "customer split"
    labelled = ts.frame[ts.frame["in_population"].astype(bool) & ts.frame["churned"].notna()]
    held = set(result.holdout["customer_id"])
    share = len(held & set(labelled["customer_id"])) / labelled["customer_id"].nunique()
    assert 0.12 < share < 0.28, f"a fifth of the customers is held out, not {share:.2f}"
    assert result.metrics["churn_train_rows"] + result.metrics["churn_holdout_rows"] == len(
        labelled), "every labelled row is either trained on or held out, never both"
    assert result.metrics["churn_roc_auc"] > 0.65, "the held-out fifth is ranked well"
    assert any("split by customer id" in note for note in result.notes), result.notes
    assert any("split by customer id" in note for note in result.bundle.notes)


def test_a_single_label_class_is_refused_with_advice(training_set, fast_params):
    ts = training_set()
    frame = ts.frame.assign(churned=ts.frame["churned"].where(ts.frame["churned"].isna(), 1.0))
    with pytest.raises(TrainingDataError, match=r"every customer .* churned.*--horizon"):
        fit_bundle(replace(ts, frame=frame), params=fast_params)


def test_too_few_customers_are_refused(training_set, fast_params):
    ts = training_set()
    keep = ts.frame["customer_id"].isin(ts.frame["customer_id"].unique()[:20])
    with pytest.raises(TrainingDataError, match=r"only \d+ customer\(s\).*at least 30"):
        fit_bundle(replace(ts, frame=ts.frame[keep]), params=fast_params)


def test_no_revenue_for_clv_is_refused(training_set, fast_params):
    ts = training_set()
    with pytest.raises(TrainingDataError, match=r"no customer has any revenue.*orders"):
        fit_bundle(replace(ts, frame=ts.frame.assign(clv_target=0.0)), params=fast_params)


def test_bad_data_registers_nothing(in_tmp_cwd: Path, generated, fast_params):
    _, dataset = generated()
    events_only = replace(dataset, orders=None, subscriptions=None)
    with pytest.raises(TrainingDataError, match=r"neither orders nor subscriptions.*orders.csv"):
        train_and_register(events_only, as_of=dataset.default_as_of(), params=fast_params)
    few = dataset.for_customers(dataset.customers["customer_id"][:10])
    with pytest.raises(TrainingDataError, match=r"10 customers; at least 30"):
        train_and_register(few, as_of=dataset.default_as_of(), params=fast_params)
    early = dataset.orders["ordered_at"].min() + pd.Timedelta(days=20)
    with pytest.raises(TrainingDataError):
        train_and_register(dataset, as_of=early, params=fast_params)
    assert not (in_tmp_cwd / "mlflow.db").exists(), "nothing may be logged for bad data"
    assert not (in_tmp_cwd / "mlartifacts").exists()


def test_champion_gate_rule():
    champion = {"churn_roc_auc": 0.80, "clv_spearman": 0.50}
    assert champion_gate({"churn_roc_auc": 0.70, "clv_spearman": 0.1}, None)[0]
    assert champion_gate({"churn_roc_auc": 0.801, "clv_spearman": 0.40}, champion)[0]
    assert champion_gate({"churn_roc_auc": 0.799, "clv_spearman": 0.55}, champion)[0]
    promoted, reason = champion_gate({"churn_roc_auc": 0.797, "clv_spearman": 0.9}, champion)
    assert not promoted and "worse by more than 0.002" in reason
    promoted, reason = champion_gate(dict(champion), champion)
    assert not promoted and "not better" in reason
    no_clv = {"churn_roc_auc": 0.80}
    promoted, reason = champion_gate({"churn_roc_auc": 0.81, "clv_spearman": 0.5}, no_clv)
    assert promoted and "CLV Spearman 0.5000 vs none" in reason
    assert not champion_gate({"churn_roc_auc": np.nan, "clv_spearman": 0.9}, champion)[0]


def test_train_params_validate_their_values():
    with pytest.raises(ValueError, match="margin_rate"):
        TrainParams(margin_rate=0)
    with pytest.raises(ValueError, match="definition"):
        TrainParams(definition="monthly")


def test_training_set_fit_and_bundle_are_complete_when_built(training_set, fitted):
    from dataclasses import FrozenInstanceError

    from training.fit import rebuilt

    ts, fit = training_set(), fitted()
    with pytest.raises(FrozenInstanceError):
        ts.frame = ts.frame.head(0)  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        fit.metrics = {}  # type: ignore[misc]
    assert list(ts.features.columns) == ts.feature_columns
    assert ts.churn_labels.index.equals(ts.frame.index)
    changed = rebuilt(fit.bundle, horizon_days=fit.bundle.horizon_days + 7)
    assert changed is not fit.bundle and fit.bundle.horizon_days + 7 == changed.horizon_days
    assert changed.to_dict() | {"horizon_days": fit.bundle.horizon_days} == fit.bundle.to_dict(), (
        "a rebuilt bundle keeps every part it was not asked to change")
