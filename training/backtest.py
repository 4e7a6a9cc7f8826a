"""Backtest: train on the past, score the future, compare with the references (docs/backtest.md).

The churnlens model is trained exactly as ``churnlens train --as-of T`` would
train it (snapshots whose label windows end by T, so no row at or after the
cut-off ``T`` reaches it), then scores every customer known at T. The same run
fits the reference models on the same history and judges everyone on what
really happened in ``[T, T + horizon)``:

- ``churnlens``: the LightGBM bundle (churn probability and CLV);
- ``bgnbd``: BG/NBD + Gamma-Gamma; churn = P(no purchase in the window),
  CLV = expected average spend × expected purchases in the CLV window;
- ``bgnbd_expected_purchases``: the same BG/NBD ranked by expected purchases
  in the window (how lifetimes users usually rank; a ranking, not a probability);
- ``recency``: days since the last order (a ranking);
- ``spend_frequency_recency`` and ``spend_recency``: value heuristics (rankings).

Rankings get rank metrics only; calibration and totals need a probability or a
currency amount, so they are left empty (NaN) for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from features.dataset import Dataset
from features.definition import ChurnDefinition
from features.labels import check_definition, label_customers
from features.pipeline import build_features
from features.snapshots import build_training_set
from training.data import choose_definition, has_revenue
from training.fit import fit_bundle
from training.horizon import anchor_to_requested_horizon
from training.metrics import churn_metrics, clv_metrics
from training.params import TrainingDataError, TrainParams
from training.reference import (
    WEEK_DAYS,
    BuyTillYouDie,
    purchase_summary,
    recency_score,
    spend_frequency_recency_score,
    spend_recency_score,
)

#: the columns of the metrics table, in display order
METRIC_COLUMNS = (
    "customers", "churn_rate", "roc_auc", "pr_auc", "top_decile_lift", "brier", "ece",
    "spearman", "normalized_gini", "total_ratio", "decile_error",
)
CHURN_METRICS = ("roc_auc", "pr_auc", "top_decile_lift", "brier", "ece")
CLV_METRICS = ("spearman", "normalized_gini", "total_ratio", "decile_error")
#: the models of the table, churnlens first
MODELS = ("churnlens", "bgnbd", "bgnbd_expected_purchases", "recency",
          "spend_frequency_recency", "spend_recency")


class BacktestError(ValueError):
    """The backtest cannot run as asked; the message says what to change."""


@dataclass
class BacktestResult:
    """Metrics per model, the per-customer predictions behind them, and what happened."""

    metrics: pd.DataFrame
    predictions: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    reference_params: dict[str, dict[str, float]] = field(default_factory=dict)
    training_metrics: dict[str, float] = field(default_factory=dict)


def _progress(callback: Callable[[str], None] | None, message: str) -> None:
    if callback is not None:
        callback(message)


def _check_window(dataset: Dataset, as_of: pd.Timestamp, horizon_days: int,
                  clv_horizon_days: int) -> None:
    """The holdout must be observed in full, or churn would be overstated."""
    latest = dataset.latest_timestamp()
    if latest is None:
        raise BacktestError("the dataset has no dated rows to backtest on")
    end = as_of + pd.Timedelta(days=max(horizon_days, clv_horizon_days))
    data_end = latest.normalize() + pd.Timedelta(days=1)
    if end > data_end:
        raise BacktestError(
            f"the holdout window [{as_of:%Y-%m-%d}, {end:%Y-%m-%d}) runs past the end of the "
            f"data ({latest:%Y-%m-%d}); choose --as-of on or before "
            f"{data_end - pd.Timedelta(days=max(horizon_days, clv_horizon_days)):%Y-%m-%d} "
            "or a shorter --horizon / --clv-horizon")
    if dataset.orders is None or dataset.orders.empty:
        raise BacktestError("the backtest compares purchase models and needs an orders table")


def _score(actual_churn: pd.Series, actual_value: pd.Series, churn: pd.Series | None,
           value: pd.Series | None, *, churn_is_probability: bool,
           value_is_currency: bool) -> dict[str, float]:
    """Metrics of one model on the population; NaN where the model has no opinion."""
    row: dict[str, float] = {name: float("nan") for name in METRIC_COLUMNS}
    row["customers"] = float(len(actual_churn))
    row["churn_rate"] = float(actual_churn.mean())
    if churn is not None:
        # a ranking becomes a [0, 1] score by its rank: rank metrics are unchanged
        score = churn if churn_is_probability else churn.rank(pct=True)
        computed = churn_metrics(actual_churn.to_numpy(float), score.to_numpy(float))
        kept: tuple[str, ...] = (CHURN_METRICS if churn_is_probability
                                 else ("roc_auc", "pr_auc", "top_decile_lift"))
        row |= {k: float(computed[k]) for k in kept}
    if value is not None:
        computed = clv_metrics(actual_value.to_numpy(float), value.to_numpy(float))
        kept = CLV_METRICS if value_is_currency else ("spearman", "normalized_gini")
        row |= {k: float(computed[k]) for k in kept}
    return row


def _churnlens_predictions(dataset: Dataset, *, as_of: pd.Timestamp, params: TrainParams,
                           definition: str, notes: list[str],
                           progress: Callable[[str], None] | None,
                           churn_definition: ChurnDefinition | None = None,
                           ) -> tuple[pd.DataFrame, dict]:
    """Train on snapshots before the cut-off and predict for everyone known at it."""
    _progress(progress, "building snapshot training set")
    try:
        training_set = build_training_set(
            dataset, as_of=as_of, horizon_days=params.horizon_days,
            clv_horizon_days=params.clv_horizon_days, definition=check_definition(definition),
            step_days=params.step_days, max_snapshots=params.max_snapshots,
            **_activity_settings(churn_definition))
    except ValueError as error:
        raise TrainingDataError(f"cannot build training snapshots: {error}") from error
    notes.extend(f"training set: {note}" for note in (training_set.notes or []))
    snapshots = list(training_set.snapshot_dates)
    if snapshots:
        notes.append(f"churnlens trained on {len(snapshots)} snapshot(s) from "
                     f"{min(snapshots):%Y-%m-%d} to {max(snapshots):%Y-%m-%d}")
    latest_row = training_set.frame["snapshot_at"].max() if len(training_set.frame) else None
    if latest_row is not None and latest_row >= as_of:
        raise BacktestError(f"a training snapshot ({latest_row:%Y-%m-%d}) is not before the "
                            f"cut-off {as_of:%Y-%m-%d}; the backtest would see the future")
    _progress(progress, "training churn and CLV models")
    fit = fit_bundle(training_set, params=params, definition=definition,
                     learn_clv=has_revenue(dataset), churn_definition=churn_definition)
    features = build_features(dataset, as_of=as_of)
    # short label windows: map to the requested horizons exactly as `churnlens train` does
    fit, _ = anchor_to_requested_horizon(fit, dataset, training_set=training_set, as_of=as_of,
                                         definition=definition, features=features)
    notes.extend(f"training: {note}" for note in fit.notes if note not in training_set.notes)
    _progress(progress, "scoring customers at the cut-off")
    predicted = fit.bundle.predict(features)
    return predicted, fit.metrics


def _activity_settings(chosen: ChurnDefinition | None) -> dict[str, Any]:
    """The labelling settings of a resolved definition (none: the defaults)."""
    if chosen is None:
        return {}
    return {"active_days": chosen.active_days, "activity_events": list(chosen.activity_events)}


def backtest(
    dataset: Dataset,
    *,
    as_of: pd.Timestamp,
    params: TrainParams | None = None,
    definition: str | None = None,
    reference_penalizer: float = 0.0,
    reference_period: str = "week",
    include_churnlens: bool = True,
    progress: Callable[[str], None] | None = None,
) -> BacktestResult:
    """Run the backtest and keep everything it computed (see the module docstring).

    ``params`` carries the horizons (``horizon_days`` for churn, ``clv_horizon_days``
    for value) and the training settings. ``reference_penalizer`` regularizes
    BG/NBD as lifetimes' ``penalizer_coef`` does (0.1 made it converge on Online
    Retail for the reference figures); ``reference_period`` counts purchases per
    ``"week"`` (lifetimes with ``freq="W"``, as those figures were measured) or
    per ``"day"`` (Fader, Hardie & Lee).
    """
    params = params or TrainParams()
    as_of = pd.Timestamp(as_of)
    chosen = choose_definition(dataset, replace(params,
                                                definition=definition or params.definition))
    definition = chosen.name
    _check_window(dataset, as_of, params.horizon_days, params.clv_horizon_days)
    notes: list[str] = [f"churn definition {definition}: {chosen.reason}"]

    _progress(progress, "labelling what happened after the cut-off")
    labels = label_customers(dataset, as_of=as_of, horizon_days=params.horizon_days,
                             clv_horizon_days=params.clv_horizon_days,
                             definition=check_definition(definition),
                             margin_rate=params.margin_rate, **_activity_settings(chosen))
    population = labels[labels["in_population"].astype(bool) & labels["churned"].notna()]
    if population.empty or population["churned"].nunique() < 2:
        raise BacktestError(
            f"the holdout has {len(population)} customer(s) in the {definition} population "
            "and needs both churned and retained ones; choose another --as-of or --horizon")
    ids = population.index
    actual_churn = population["churned"].astype(float)
    actual_value = population["clv_target"].astype(float).fillna(0.0)

    _progress(progress, "fitting BG/NBD and Gamma-Gamma")
    assert dataset.orders is not None, "_check_window refuses a dataset without orders"
    summary = purchase_summary(dataset.orders, as_of=as_of, period=reference_period)
    missing = ids.difference(summary.index)
    if len(missing):
        notes.append(f"{len(missing):,} customer(s) of the population have no completed order "
                     "before the cut-off; the purchase references score them as new (x = 0)")
    summary = summary.reindex(ids)
    reference_frame = summary.fillna({"frequency": 0.0, "recency": 0.0, "T": 0.0,
                                      "monetary_value": 0.0, "total_spend": 0.0})
    reference_frame["days_since_last"] = reference_frame["days_since_last"].fillna(
        reference_frame["days_since_last"].max())
    btyd = BuyTillYouDie(penalizer=reference_penalizer).fit(summary.dropna())
    btyd_predicted = btyd.predict(
        reference_frame, horizon_weeks=params.horizon_days / WEEK_DAYS,
        clv_horizon_weeks=params.clv_horizon_days / WEEK_DAYS)
    if not btyd.purchases_.converged_:
        notes.append("BG/NBD optimizer did not report convergence; try --reference-penalizer")
    reference_params = {"bgnbd": dict(btyd.purchases_.params_),
                        "gamma_gamma": dict(btyd.spend_.params_)}

    predictions = pd.DataFrame(
        {"churned": actual_churn, "clv_target": actual_value}, index=ids)
    predictions["bgnbd_churn"] = btyd_predicted["churn_probability"]
    predictions["bgnbd_expected_purchases"] = btyd_predicted["expected_purchases"]
    predictions["bgnbd_clv"] = btyd_predicted["clv"]
    predictions["days_since_last_order"] = recency_score(reference_frame)
    predictions["spend_frequency_recency"] = spend_frequency_recency_score(reference_frame)
    predictions["spend_recency"] = spend_recency_score(reference_frame)

    rows: dict[str, dict[str, float]] = {}
    training_metrics: dict[str, float] = {}
    if include_churnlens:
        predicted, training_metrics = _churnlens_predictions(
            dataset, as_of=as_of, params=params, definition=definition, notes=notes,
            progress=progress, churn_definition=chosen)
        predicted = predicted.reindex(ids)
        unscored = int(predicted["churn_probability"].isna().sum())
        if unscored:
            notes.append(f"churnlens gave no probability to {unscored:,} customer(s) of the "
                         "population; they count at the population churn rate")
        predictions["churnlens_churn"] = predicted["churn_probability"].fillna(
            float(predicted["churn_probability"].mean()))
        predictions["churnlens_clv"] = predicted["clv"].fillna(0.0) / params.margin_rate
        if predicted["clv"].isna().all():  # no CLV model: no revenue to learn from
            predictions["churnlens_clv"] = float("nan")
        rows["churnlens"] = _score(
            actual_churn, actual_value, predictions["churnlens_churn"],
            None if predictions["churnlens_clv"].isna().all() else predictions["churnlens_clv"],
            churn_is_probability=True, value_is_currency=True)
    rows["bgnbd"] = _score(actual_churn, actual_value, predictions["bgnbd_churn"],
                           predictions["bgnbd_clv"], churn_is_probability=True,
                           value_is_currency=True)
    rows["bgnbd_expected_purchases"] = _score(
        actual_churn, actual_value, -predictions["bgnbd_expected_purchases"], None,
        churn_is_probability=False, value_is_currency=False)
    rows["recency"] = _score(actual_churn, actual_value, predictions["days_since_last_order"],
                             None, churn_is_probability=False, value_is_currency=False)
    for name in ("spend_frequency_recency", "spend_recency"):
        rows[name] = _score(actual_churn, actual_value, None, predictions[name],
                            churn_is_probability=False, value_is_currency=False)
    metrics = pd.DataFrame.from_dict(rows, orient="index")[list(METRIC_COLUMNS)]
    metrics.index.name = "model"
    return BacktestResult(metrics=metrics, predictions=predictions, notes=notes,
                          reference_params=reference_params, training_metrics=training_metrics)


def run_backtest(dataset: Dataset, *, as_of: pd.Timestamp, params: TrainParams | None = None,
                 **options: object) -> pd.DataFrame:
    """Metrics per model (rows: churnlens and the references) for a cut-off ``as_of``."""
    return backtest(dataset, as_of=as_of, params=params, **options).metrics  # type: ignore[arg-type]



def quality_checks(row: pd.Series, bar: dict[str, float]) -> dict[str, bool]:
    """Which parts of a quality bar (see `training.realdata.QUALITY_BAR`) a model meets."""
    return {
        "churn ROC AUC": row["roc_auc"] >= bar["roc_auc"],
        "churn ECE": row["ece"] <= bar["ece"],
        "CLV Spearman": row["spearman"] >= bar["spearman"],
        "CLV normalized Gini": row["normalized_gini"] >= bar["normalized_gini"],
        "CLV total": abs(row["total_ratio"]) <= bar["abs_total_ratio"],
        "CLV decile error": row["decile_error"] <= bar["decile_error"],
    }
