"""Fit a bundle on a training set: split by time, fit the boosters, calibrate, assemble.

Validation is by time: the latest snapshot with churn labels is held out. It
early-stops the churn model, fits the probability calibration and fixes the
risk-tier cut points; it is also the data on which a new model is compared with
the current champion. Earlier snapshots whose churn label window would overlap
the held-out snapshot's are left out of churn training (a purge), so the holdout
measures what the model would have done at that date; when the history is too
short for that, they are kept and a note says so. With a single labelled
snapshot (a very short history) a fixed fifth of its customers is held out
instead, and the notes and the run's ``validation`` parameter say so. CLV
labels need a year of future, so the CLV model holds out its own latest
labelled snapshot instead and does not purge; its booster is scaled so that
its total over its training rows equals theirs (`training.boosters.fit_clv`).

The bundle is built once, with everything it carries; a later step that changes
a part (the horizon anchor) builds a new one with `rebuilt`. `fit_bundle` does
no tracking (`training.run` does).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.business import BUSINESS_FEATURES
from features.calendar import calendar_applies, without_calendar
from features.definition import PASSIVE_EVENT_TYPES, ChurnDefinition
from features.lifecycle import lifecycle_rules
from features.pipeline import describe_feature, event_slug
from features.reasons import reason_spec
from features.snapshots import TrainingSet, feature_columns, features_of
from models.bundle import RISK_QUANTILES, VALUE_QUANTILES, ChurnBundle, apply_calibration
from models.drift import drift_reference
from training.boosters import fit_churn, fit_clv, season_weights
from training.calibrate import choose_calibration
from training.evaluate import holdout_metrics, labelled_rows
from training.params import TrainingDataError, TrainParams
from training.population import population_rule
from training.rows import Labelled

#: what a bundle without a CLV model says (data with no orders and no subscription revenue)
NO_REVENUE_NOTE = ("CLV is null: the data has no orders and no subscription revenue, so there is "
                   "no revenue to learn from")


@dataclass(frozen=True)
class FitResult:
    """A fitted bundle, the held-out rows it was validated on, and its metrics."""

    bundle: ChurnBundle
    holdout: pd.DataFrame
    metrics: dict[str, float]
    clv_holdout: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    params: TrainParams | None = None  # as fitted (with the tree size chosen)
    #: how churn was validated: "latest snapshot" (by time) or "customer split" (one snapshot)
    validation: str = "latest snapshot"


def rebuilt(bundle: ChurnBundle, **changes: Any) -> ChurnBundle:
    """A new bundle with some parts replaced; the one given is left as it was."""
    parts = {name: getattr(bundle, name) for name in bundle.to_dict() if name != "format_version"}
    boosters = {"churn_booster": bundle.churn_booster, "clv_booster": bundle.clv_booster}
    return ChurnBundle(**(boosters | parts | changes))


def _feature_info(names: list[str], frame: pd.DataFrame, churned: np.ndarray
                  ) -> dict[str, dict[str, Any]]:
    """Each feature's entry in the bundle: description, unit, reason kind and sentence spec.

    Categories also carry the churn rate of each level among the training rows
    (and overall), so a sentence can say "customers from that channel churn
    more often" only when they do.
    """
    out: dict[str, dict[str, Any]] = {}
    churned = np.asarray(churned, dtype=float)
    for name in names:
        categorical = isinstance(frame[name].dtype, pd.CategoricalDtype)
        described = describe_feature(name, categorical=categorical)
        info: dict[str, Any] = {k: getattr(described, k)
                                for k in ("name", "description", "unit", "kind")}
        info["reason_kind"], info["sentence"] = reason_spec(described, categorical=categorical)
        if categorical and len(churned):
            rates = pd.Series(churned, index=frame.index).groupby(
                frame[name], observed=True).mean()
            info["level_churn_rate"] = {str(level): float(rate) for level, rate in rates.items()}
            info["churn_rate"] = float(churned.mean())
        out[name] = info
    return out


def _medians(features: pd.DataFrame) -> dict[str, float]:
    numeric = features.select_dtypes(include="number")
    return {str(k): float(v) for k, v in numeric.median().items() if pd.notna(v)}


def _calendar_choice(frame: pd.DataFrame, params: TrainParams) -> tuple[pd.DataFrame, str]:
    """The training frame with or without the calendar inputs, and a note when they are used."""
    if frame.empty:
        return frame, ""
    latest = frame[frame["snapshot_at"] == frame["snapshot_at"].max()]
    if not params.calendar_inputs or not calendar_applies(latest):
        return without_calendar(frame), ""
    return frame, ("calendar inputs used: the history covers the same season one year before "
                   "the held-out snapshot (day of the year, the customer's and the business's "
                   "activity in the same weeks a year before)")


def _business_season(training_set: TrainingSet, names: list[str]) -> dict[str, Any] | None:
    """The business's weekly series for the bundle, when the model uses its columns."""
    season = getattr(training_set, "business_season", None)
    if season is None or not any(n in BUSINESS_FEATURES for n in names):
        return None
    return season.as_dict()


def _blank_business(rows: Labelled) -> Labelled:
    """``rows`` with the business-season columns missing: they are CLV inputs only.

    Constant across the customers of a snapshot, they tell the churn trees which
    snapshot a row is from (base rates by date) more than how a customer
    behaves; churn is already calibrated on seasonal data without them. A column
    that is missing in every training row is never split on, so the churn
    booster ignores whatever value it gets when scoring.
    """
    present = [n for n in BUSINESS_FEATURES if n in rows.features.columns]
    if not present:
        return rows
    return replace(rows, features=rows.features.assign(**{n: np.nan for n in present}))


def _held_out_customers(customer_ids: pd.Series) -> np.ndarray:
    """A fixed fifth of the customers (by a hash of the id), held out when time cannot split."""
    return (pd.util.hash_pandas_object(customer_ids, index=False) % 5 == 0).to_numpy()


@dataclass(frozen=True)
class _ClvPart:
    """The CLV booster, its training and held-out rows and its choice report."""

    booster: lgb.Booster
    train: pd.DataFrame
    holdout: pd.DataFrame
    report: dict[str, float]


def _fit_clv_part(frame: pd.DataFrame, params: TrainParams, notes: list[str], *,
                  season_of: pd.Timestamp | None = None) -> _ClvPart:
    """The CLV model on every row with a CLV label, its own latest labelled snapshot held out.

    A fifth of the customers is held out when only one snapshot has CLV labels.
    With ``season_of`` (calendar inputs in use) the season options of ``params``
    apply: snapshot weights, and early stopping on the snapshot nearest the
    same day one year before ``season_of``.
    """
    valued = frame[frame["clv_target"].notna()]
    if valued.empty or not (valued["clv_target"] > 0).any():
        raise TrainingDataError(
            "no customer has any revenue in a CLV window: the dataset needs completed orders "
            "(or subscription revenue) to learn value. Add orders, or lower --clv-horizon "
            f"(now {params.clv_horizon_days} days) so that a window fits in the history.")
    clv_dates = tuple(sorted(pd.unique(valued["snapshot_at"])))
    if len(clv_dates) >= 2 and season_of is not None and params.season_early_stopping:
        year_before = pd.Timestamp(season_of) - pd.Timedelta(days=365)
        held_at = min(clv_dates, key=lambda d: abs((pd.Timestamp(d) - year_before).days))
        clv_holdout = valued[valued["snapshot_at"] == held_at]
        clv_train = valued[valued["snapshot_at"] != held_at]
        notes.append(f"CLV early-stopped on the snapshot of the same season one year before "
                     f"({pd.Timestamp(held_at):%Y-%m-%d}), not on the latest")
    elif len(clv_dates) >= 2:
        clv_holdout = valued[valued["snapshot_at"] == clv_dates[-1]]
        clv_train = valued[valued["snapshot_at"] < clv_dates[-1]]
    else:
        # one CLV snapshot: hold out a fixed fifth of its customers instead
        in_holdout = _held_out_customers(valued["customer_id"])
        clv_holdout, clv_train = valued[in_holdout], valued[~in_holdout]
        notes.append("one snapshot with CLV labels: CLV validated on a fifth of its customers")
    if not (clv_train["clv_target"] > 0).any():
        raise TrainingDataError(
            "no revenue in the CLV training windows; give a longer history or lower "
            "--clv-horizon.")
    weight = None
    if season_of is not None and params.season_weight > 0:
        weight = season_weights(clv_train["snapshot_at"], season_of=season_of,
                                weight=params.season_weight)
    choice = fit_clv(params, train=Labelled.of(clv_train, "clv_target", weight=weight),
                     check=Labelled.of(clv_holdout, "clv_target"))
    if choice.note:
        notes.append(choice.note)
    factor = choice.report.get("clv_balance_factor")
    if factor is not None:
        notes.append(f"CLV scaled by {factor:.3f} so that its total over the {len(clv_train):,} "
                     "CLV training rows equals theirs (a Tweedie model predicts totals low)")
    return _ClvPart(choice.value, clv_train, clv_holdout, choice.report)


def definition_of(training_set: TrainingSet, definition: str, params: TrainParams,
                  event_types: list[str] | None) -> ChurnDefinition:
    """The `ChurnDefinition` a training set was labelled with (when the caller has none)."""
    activity = training_set.activity_events or params.activity_events
    if activity is None:
        activity = [t for t in event_types or [] if t not in PASSIVE_EVENT_TYPES]
    active_days = training_set.active_days or params.active_days or params.horizon_days
    return ChurnDefinition(name=definition, reason=f"{definition} (given)",
                           active_days=int(active_days), activity_events=tuple(activity))


def fit_bundle(training_set: TrainingSet, *, params: TrainParams,
               event_types: list[str] | None = None, definition: str | None = None,
               learn_clv: bool = True, churn_definition: ChurnDefinition | None = None
               ) -> FitResult:
    """Fit churn + CLV boosters on a `TrainingSet`, hold out its latest snapshot, build a bundle.

    ``learn_clv=False`` (data without orders or subscription revenue): no CLV
    model; the bundle's CLV is null and its notes say why. ``churn_definition``
    (the resolved definition, with its reason) is stored in the bundle; without
    it one is made from ``definition`` and the training set's activity settings.

    Raises `TrainingDataError` with what is wrong and what to change when the
    training set cannot support a time split or a model.
    """
    notes = list(training_set.notes)
    frame, calendar_note = _calendar_choice(training_set.frame, params)
    if calendar_note:
        notes.append(calendar_note)
    horizon = int(training_set.label_horizon_days)
    if churn_definition is not None:
        definition = churn_definition.name
    definition = definition if definition not in (None, "auto") else (
        training_set.definition or "inactivity")
    if event_types is None:
        event_types = training_set.event_types
    if churn_definition is None:
        churn_definition = definition_of(training_set, definition, params, event_types)
    names = feature_columns(frame)
    if frame.empty or not names:
        raise TrainingDataError(
            "the training set is empty: no customer is known at any snapshot date. Check "
            "--as-of (it must leave --horizon days of history after the first snapshot).")

    # churn: labelled population rows, latest snapshot held out
    labelled = labelled_rows(frame)
    dates = tuple(sorted(pd.unique(labelled["snapshot_at"])))
    if not dates:
        raise TrainingDataError(
            "no snapshot has churn labels (nobody in the churn population at any snapshot); "
            "give a longer history, a later --as-of, a shorter --horizon or another --churn")
    holdout_at = dates[-1]
    if len(dates) >= 2:
        validation = "latest snapshot"
        holdout = frame[frame["snapshot_at"] == holdout_at]
        earlier = labelled[labelled["snapshot_at"] < holdout_at]
        purged = earlier[earlier["snapshot_at"] + pd.Timedelta(days=horizon) <= holdout_at]
        if (purged["customer_id"].nunique() >= params.min_customers
                and purged["churned"].nunique() == 2):
            train = purged
        else:
            train = earlier
            notes.append("history too short to purge snapshots whose churn window overlaps the "
                         "held-out snapshot's; holdout metrics may be slightly optimistic")
    else:
        # one labelled snapshot: no time split is possible, so split its customers
        validation = "customer split"
        in_held = _held_out_customers(labelled["customer_id"])
        train = labelled[~in_held]
        holdout = frame[(frame["snapshot_at"] == holdout_at)
                        & frame["customer_id"].isin(labelled[in_held]["customer_id"])]
        notes.append(
            f"one snapshot with churn labels ({pd.Timestamp(holdout_at):%Y-%m-%d}): churn "
            "trained on four fifths of its customers and early-stopped, calibrated and "
            "validated on the other fifth (split by customer id, not by time)")
    # the held-out snapshot's labelled rows: where churn is early-stopped, calibrated, judged
    held = labelled_rows(holdout)
    customers = labelled["customer_id"].nunique()
    if customers < params.min_customers:
        raise TrainingDataError(
            f"only {customers} customer(s) in the churn population; at least "
            f"{params.min_customers} are needed. Give more customers or a longer history.")
    for part, rows in (("training", train), ("held-out", held)):
        classes = sorted(rows["churned"].unique().tolist())
        if len(classes) < 2:
            kind = "churned" if classes == [1.0] else "stayed"
            raise TrainingDataError(
                f"every customer in the {part} snapshots {kind} (single label class "
                f"{classes}); churn cannot be learned. Change --horizon (now "
                f"{params.horizon_days} days) or --churn, or give a longer history.")

    # calendar inputs in use: the season the model will score is the one after the holdout
    season_of = (pd.Timestamp(holdout_at) + pd.Timedelta(days=horizon)) if calendar_note else None
    churn_weight = None
    if season_of is not None and params.season_weight > 0:
        churn_weight = season_weights(train["snapshot_at"], season_of=season_of,
                                      weight=params.season_weight)
        notes.append(f"training snapshots weighted by season: up to {1 + params.season_weight:g}×"
                     f" for those at the same day of the year as {season_of:%Y-%m-%d}")
    churn_train = Labelled.of(train, "churned", weight=churn_weight)
    churn_check = Labelled.of(held, "churned")
    churn_booster, params, tree_choice = fit_churn(params, train=_blank_business(churn_train),
                                                   check=_blank_business(churn_check))
    if tree_choice.note:
        notes.append(tree_choice.note)

    clv: _ClvPart | None = None
    clv_note = None
    if learn_clv:
        clv = _fit_clv_part(frame, params, notes, season_of=season_of)
    else:
        clv_note = NO_REVENUE_NOTE
        notes.append(clv_note)
    clv_train = clv.train if clv else frame.iloc[0:0]
    clv_holdout = clv.holdout if clv else frame.iloc[0:0]

    X_train, y_train = churn_train.features, churn_train.target
    categorical = {n: [*X_train[n].cat.categories] for n in names
                   if isinstance(X_train[n].dtype, pd.CategoricalDtype)}
    # the boosters with their feature spec, to score the holdout before the bundle is built
    scorer = ChurnBundle(churn_booster=churn_booster, clv_booster=clv.booster if clv else None,
                         feature_names=names, categorical_levels=categorical,
                         margin_rate=params.margin_rate, clv_note=clv_note)
    raw = scorer.churn_raw_probability(scorer.prepare(churn_check.features))
    calibration, calibration_report = choose_calibration(raw, churn_check.target, params=params)
    probability = apply_calibration(calibration, raw)
    value_cuts: list[float] = []
    clv_revenue = None
    if clv is not None:
        held_clv = scorer.clv(scorer.prepare(features_of(holdout)))
        value_cuts = [float(np.quantile(held_clv, q)) for q in VALUE_QUANTILES]
        valued = clv_holdout[clv_holdout["clv_target"].notna()]
        clv_revenue = (valued["clv_target"].to_numpy(float),
                       scorer.clv(scorer.prepare(features_of(valued))) / params.margin_rate)

    metrics = holdout_metrics(churned=churn_check.target, churn_probability=probability,
                              clv=clv_revenue)
    if calibration["method"] != "none":
        # the map was fitted on the holdout: report its ECE where it was not fitted
        metrics["churn_ece_in_sample"] = metrics["churn_ece"]
        metrics["churn_ece"] = calibration_report[f"churn_ece_crossfit_{calibration['method']}"]
    metrics |= calibration_report | tree_choice.report | (clv.report if clv else {})
    metrics |= {
        "churn_best_iteration": float(churn_booster.current_iteration()),
        "churn_train_rows": float(len(train)),
        "churn_holdout_rows": float(len(held)),
        "churn_holdout_rate": float(churn_check.target.mean()),
    }
    if clv is not None:
        metrics |= {
            # trees per seed (the averaged booster holds every seed's trees)
            "clv_best_iteration": float(clv.booster.current_iteration()) / params.clv_seeds,
            "clv_seeds": float(params.clv_seeds),
            "clv_train_rows": float(len(clv_train)),
            "clv_holdout_rows": float(len(clv_holdout)),
        }

    all_features = features_of(frame)
    bundle = ChurnBundle(
        churn_booster=churn_booster,
        clv_booster=clv.booster if clv else None,
        feature_names=names,
        categorical_levels=categorical,
        event_types=event_types,
        feature_info=_feature_info(names, X_train, y_train),
        population_rule=population_rule(all_features, in_population=frame["in_population"],
                                        definition=definition,
                                        churn_definition=churn_definition),
        calibration=calibration,
        risk_cuts=[float(np.quantile(probability, q)) for q in RISK_QUANTILES],
        value_cuts=value_cuts,
        horizon_days=horizon,
        clv_horizon_days=int(training_set.clv_horizon_days),
        definition=definition,
        churn_definition=churn_definition.as_dict(),
        lifecycle=lifecycle_rules(
            definition, activity_slugs=[event_slug(t) for t in churn_definition.activity_events],
            active_days=churn_definition.active_days,
            new_days=params.horizon_days if params.new_days is None else params.new_days,
            recent_days=params.declining_window_days, declining_ratio=params.declining_ratio,
            min_earlier_activity=params.declining_min_activity,
            min_earlier_days=params.declining_min_days).as_dict(),
        margin_rate=params.margin_rate,
        reference={
            "retained_median": _medians(X_train[y_train == 0]),
            "churned_median": _medians(X_train[y_train == 1]),
            "median": _medians(all_features),
        },
        metrics={k: v for k, v in metrics.items() if k.startswith(("churn_", "clv_"))},
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
        as_of=pd.Timestamp(holdout_at + pd.Timedelta(days=horizon)).isoformat(),
        notes=notes,
        # the business-season column is one value per date (like day_of_year): no distribution
        drift_reference=drift_reference(churn_check.features.drop(
            columns=[n for n in BUSINESS_FEATURES if n in churn_check.features.columns]),
            probability),
        clv_note=clv_note,
        business_season=_business_season(training_set, names),
    )
    return FitResult(bundle=bundle, holdout=holdout, metrics=metrics, clv_holdout=clv_holdout,
                     notes=notes, params=params, validation=validation)
