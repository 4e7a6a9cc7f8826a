"""Map a model trained on short label windows to the horizon that was asked for.

When the history is too short for the requested churn horizon H (CDNOW: 263
usable days, H = 273), `features.snapshots` labels churn over a shorter window
H' and CLV over H' scaled linearly. LightGBM then *ranks* customers well, but
its probabilities describe H' on snapshots taken while the cohort was young:
churn is over-predicted and value under-predicted at the cut-off.

The anchor: a BG/NBD + Gamma-Gamma model fitted on the purchase history before
the cut-off ``as_of`` (nothing after it). It extrapolates in time by
construction (a Poisson purchase clock and a drop-out process), so it gives a
principled P(no purchase in [as_of, as_of + H)) and expected revenue over the
CLV horizon for every customer known at ``as_of``. We keep LightGBM's ranking
and take only the *level and shape* from the anchor:

- churn: a Platt map σ(a·logit(p) + b) of the raw LightGBM probability fitted
  by cross-entropy to the anchor's probabilities (soft labels) on the churn
  population at ``as_of``. If BG/NBD is right, E[churn | LightGBM score] =
  E[BG/NBD probability | score] (tower rule), which is what the fit estimates;
  the map is strictly increasing, so ROC AUC is unchanged;
- CLV: a power map c·v^k of the booster's value v. The exponent k (a grid
  from 0.5 to 2) makes the spread of predicted value across the deciles of
  LightGBM's own ranking match the anchor's (least decile error against the
  anchor's CLV at ``as_of``: young training cohorts give too flat a value
  curve), and c makes the predicted total over the customers known at
  ``as_of`` equal the anchor's total. It is applied inside the CLV booster
  (every leaf times k, the first tree's leaves shifted by log(c): Tweedie
  predicts exp(score)), so every consumer of the booster — bundle, pyfunc,
  the by-id scorer — gives the same numbers. Rankings are unchanged.

Before the CLV map, `training.recent_clv` may replace the CLV model by one
trained on recent 13-week windows, when those rank the last 13 weeks before
the cut-off better.

Applied only when the training set's label windows are shorter than requested
(``label_horizon_days < horizon_days`` for churn, ``clv_label_horizon_days <
clv_horizon_days`` for CLV), for the inactivity definition with orders; the
holdout metrics of the training run still describe the model on its own
label windows. Everything stored is plain numbers in the bundle.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from features.dataset import Dataset
from features.pipeline import build_features
from features.snapshots import TrainingSet, features_of
from models.bundle import RISK_QUANTILES, VALUE_QUANTILES, apply_calibration
from training.calibrate import fit_soft_platt
from training.fit import FitResult, rebuilt
from training.metrics import decile_error
from training.model_choice import scale_booster
from training.params import TrainParams
from training.recent_clv import apply_recent_clv, choose_recent_clv, recent_training_set
from training.reference import WEEK_DAYS, BuyTillYouDie, purchase_summary

#: BG/NBD's purchase periods for the anchor (lifetimes' ``freq="W"``)
ANCHOR_PERIOD = "week"


@dataclass
class HorizonAnchor:
    """BG/NBD + Gamma-Gamma predictions at ``as_of`` for the requested horizons."""

    as_of: pd.Timestamp
    horizon_days: int
    clv_horizon_days: int
    churn_probability: pd.Series
    clv: pd.Series
    params: dict[str, dict[str, float]] = field(default_factory=dict)


def needs_anchor(training_set: TrainingSet) -> tuple[bool, bool]:
    """Whether churn and CLV labels were measured over shorter windows than requested."""
    churn = int(training_set.label_horizon_days) < int(training_set.horizon_days)
    clv = int(training_set.clv_label_horizon_days) < int(training_set.clv_horizon_days)
    return churn, clv


def fit_anchor(orders: pd.DataFrame, *, as_of: pd.Timestamp, horizon_days: int,
               clv_horizon_days: int, penalizer: float = 0.0) -> HorizonAnchor:
    """Fit BG/NBD + Gamma-Gamma on completed orders before ``as_of`` and predict the horizons.

    Raises ValueError when the history cannot support the fit (no repeat buyers).
    """
    return anchor_from_summary(purchase_summary(orders, as_of=as_of, period=ANCHOR_PERIOD),
                               as_of=as_of, horizon_days=horizon_days,
                               clv_horizon_days=clv_horizon_days, penalizer=penalizer)


def anchor_from_summary(summary: pd.DataFrame, *, as_of: pd.Timestamp, horizon_days: int,
                        clv_horizon_days: int, penalizer: float = 0.0) -> HorizonAnchor:
    """`fit_anchor` on a `purchase_summary` (weekly periods) of the customers to fit on."""
    model = BuyTillYouDie(penalizer=penalizer).fit(summary)
    predicted = model.predict(summary, horizon_weeks=horizon_days / WEEK_DAYS,
                              clv_horizon_weeks=clv_horizon_days / WEEK_DAYS)
    churn = predicted["churn_probability"].astype(float)
    clv = predicted["clv"].astype(float)
    if not (np.isfinite(churn).all() and np.isfinite(clv).all()):
        raise ValueError("BG/NBD + Gamma-Gamma gave non-finite predictions")
    return HorizonAnchor(
        as_of=pd.Timestamp(as_of), horizon_days=horizon_days,
        clv_horizon_days=clv_horizon_days, churn_probability=churn, clv=clv,
        params={"bgnbd": {k: float(v) for k, v in model.purchases_.params_.items()},
                "gamma_gamma": {k: float(v) for k, v in model.spend_.params_.items()}})


#: exponents tried for the CLV power map c·v^k (1 = a plain scale factor)
CLV_POWERS = tuple(round(0.5 + 0.05 * i, 2) for i in range(31))


def fit_clv_power(predicted: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(factor, power) of the map c·v^k that best carries ``target``'s decile shape and total.

    k minimises the decile error of c·v^k against ``target`` over `CLV_POWERS`
    (ties: the one nearest 1), c makes the totals equal. Both come from
    predictions only (the anchor's), never from observed outcomes.
    """
    v = np.clip(np.asarray(predicted, dtype=float), 1e-12, None)
    target = np.asarray(target, dtype=float)

    def mapped(power: float) -> np.ndarray:
        curve = v**power
        return curve * (target.sum() / curve.sum())

    def cost(power: float) -> tuple[float, float]:
        error = decile_error(target, mapped(power))
        # too few customers for deciles (NaN): a plain scale factor
        return (round(error, 6) if math.isfinite(error) else 0.0, abs(power - 1))

    power = min(CLV_POWERS, key=cost)
    curve = v**power
    return float(target.sum() / curve.sum()), float(power)


def apply_anchor(fit: FitResult, anchor: HorizonAnchor, *, features: pd.DataFrame,
                 churn: bool, clv: bool) -> tuple[FitResult, list[str], dict[str, float]]:
    """The fit with its bundle calibrated to the anchor, notes and figures for the run.

    ``features`` are the features as of ``anchor.as_of`` (index customer_id).
    Risk-tier and value cut points are recomputed from the held-out snapshot
    with the new maps (the same quantiles as `training.fit.fit_bundle`).
    """
    bundle = fit.bundle
    notes: list[str] = []
    report: dict[str, float] = {}
    changes: dict[str, Any] = {}
    X = bundle.prepare(features)
    if churn:
        population = bundle.in_population(features).to_numpy()
        ids = features.index[population]
        target = anchor.churn_probability.reindex(ids)
        known = target.notna().to_numpy()
        if known.sum() >= 2:
            raw = bundle.churn_raw_probability(X[population][known])
            calibration = fit_soft_platt(raw, target.to_numpy()[known])
            held = fit.holdout[fit.holdout["in_population"].astype(bool)]
            held_raw = bundle.churn_raw_probability(bundle.prepare(features_of(held)))
            changes["risk_cuts"] = [float(np.quantile(apply_calibration(calibration, held_raw),
                                                      q)) for q in RISK_QUANTILES]
            mapped = apply_calibration(calibration, raw)
            report |= {"horizon_anchor_churn_mean": float(target.to_numpy()[known].mean()),
                       "horizon_churn_mean": float(mapped.mean())}
            notes.append(
                f"churn probabilities mapped from the {bundle.horizon_days}-day label window "
                f"to the requested {anchor.horizon_days} days by a Platt map fitted to BG/NBD's "
                f"P(no purchase in {anchor.horizon_days} days) at {anchor.as_of:%Y-%m-%d} "
                f"(mean {mapped.mean():.3f}; ranking unchanged)")
            changes |= {"calibration": calibration, "horizon_days": anchor.horizon_days}
    if clv and bundle.clv_booster is not None:
        target = anchor.clv.reindex(features.index)
        known = target.notna().to_numpy()
        predicted = np.asarray(bundle.clv_booster.predict(X[known]), dtype=float)
        if known.any() and predicted.sum() > 0 and target[known].sum() > 0:
            factor, power = fit_clv_power(predicted, target[known].to_numpy())
            scaled = rebuilt(bundle, clv_booster=scale_booster(bundle.clv_booster, factor,
                                                               power=power))
            held_clv = scaled.clv(scaled.prepare(features_of(fit.holdout)))
            changes |= {"clv_booster": scaled.clv_booster,
                        "value_cuts": [float(np.quantile(held_clv, q)) for q in VALUE_QUANTILES]}
            report |= {"horizon_clv_scale": factor, "horizon_clv_power": power}
            notes.append(
                f"CLV mapped to {factor:.3g} × value^{power:g} so that its spread across deciles "
                f"and its total at {anchor.as_of:%Y-%m-%d} match BG/NBD + Gamma-Gamma's expected "
                f"revenue over {anchor.clv_horizon_days} days (the CLV labels were measured "
                "over a shorter window; ranking unchanged)")
    return replace(fit, bundle=rebuilt(bundle, **changes) if changes else bundle), notes, report


def anchor_to_requested_horizon(fit: FitResult, dataset: Dataset, *, training_set: TrainingSet,
                                as_of: pd.Timestamp, definition: str,
                                features: pd.DataFrame | None = None
                                ) -> tuple[FitResult, list[str]]:
    """The fit mapped to the requested horizons when its label windows were shortened.

    Returns the fit unchanged (and no notes) when the windows are as requested;
    otherwise the new fit and notes of what was done (or why it could not be).
    """
    orders = dataset.orders if dataset.orders is not None else pd.DataFrame()

    def evidence() -> AnchorEvidence:
        return AnchorEvidence(
            purchase_summary(orders, as_of=as_of, period=ANCHOR_PERIOD),
            features if features is not None else build_features(dataset, as_of=as_of))

    return anchored(
        fit, training_set=training_set, as_of=as_of, definition=definition,
        has_orders=not orders.empty, evidence=evidence,
        recent_set=lambda params: recent_training_set(dataset, as_of=as_of, params=params,
                                                      definition=definition))


@dataclass(frozen=True)
class AnchorEvidence:
    """What the anchor is fitted and mapped on: customers' purchase summaries (weekly
    periods) and their features at ``as_of`` (every customer, or a sample of them)."""

    summary: pd.DataFrame
    features: pd.DataFrame
    note: str | None = None


def anchored(fit: FitResult, *, training_set: TrainingSet, as_of: pd.Timestamp,
             definition: str, has_orders: bool, evidence: Callable[[], AnchorEvidence],
             recent_set: Callable[[TrainParams], TrainingSet | None],
             ) -> tuple[FitResult, list[str]]:
    """`anchor_to_requested_horizon` on evidence from anywhere (a dataset in memory, or the
    partitions of one); ``evidence`` and ``recent_set`` are asked for only when needed."""
    churn, clv = needs_anchor(training_set)
    if not (churn or clv):
        return fit, []
    if definition != "inactivity" or not has_orders:
        return fit, ["label windows are shorter than requested, but the BG/NBD horizon anchor "
                     "needs the inactivity definition and orders; probabilities describe the "
                     f"{training_set.label_horizon_days}-day window"]
    seen = evidence()
    try:
        anchor = anchor_from_summary(seen.summary, as_of=as_of,
                                     horizon_days=int(training_set.horizon_days),
                                     clv_horizon_days=int(training_set.clv_horizon_days))
    except ValueError as error:
        return fit, [f"BG/NBD horizon anchor could not be fitted ({error}); probabilities "
                     f"describe the {training_set.label_horizon_days}-day window"]
    notes = [seen.note] if seen.note else []
    if clv:
        recent = choose_recent_clv(fit, training_set=training_set, as_of=as_of,
                                   recent_set=recent_set)
        if recent is not None:
            fit = apply_recent_clv(fit, recent)
            notes.append(recent.note)
    fit, mapped, report = apply_anchor(fit, anchor, features=seen.features, churn=churn, clv=clv)
    notes += mapped
    bundle = rebuilt(fit.bundle, metrics=fit.bundle.metrics | report,
                     notes=[*fit.bundle.notes, *notes])
    return replace(fit, bundle=bundle, metrics=fit.metrics | report,
                   notes=[*fit.notes, *notes]), notes
