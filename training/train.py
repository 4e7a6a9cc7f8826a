"""Fit the churn and CLV models on snapshot training sets, then track and register them.

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
labelled snapshot instead and does not purge.

`fit_bundle` does no tracking; `train_and_register` wraps it in one MLflow run
through `training.registry`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.business import BUSINESS_FEATURES
from features.calendar import calendar_applies, without_calendar
from features.definition import (
    CHOICES,
    ChurnDefinition,
    DefinitionError,
    activity_population_rule,
    resolve_definition,
)
from features.lifecycle import LifecycleSettingError, check_thresholds, lifecycle_rules
from features.pipeline import describe_feature, event_slug
from features.reasons import reason_spec
from models.bundle import (
    RISK_QUANTILES,
    VALUE_QUANTILES,
    ChurnBundle,
    apply_calibration,
    population_mask,
)
from models.drift import drift_reference
from training.metrics import churn_metrics, clv_metrics, expected_calibration_error
from training.model_choice import (
    Choice,
    TreeSize,
    average_log_link_boosters,
    choose_clv_form,
    choose_tree_size,
    fit_hurdle,
)

ID_COLUMNS = ("customer_id", "snapshot_at")
#: what a bundle without a CLV model says (data with no orders and no subscription revenue)
NO_REVENUE_NOTE = ("CLV is null: the data has no orders and no subscription revenue, so there is "
                   "no revenue to learn from")
LABEL_COLUMNS = ("in_population", "churned", "clv_target")


class TrainingDataError(ValueError):
    """The data cannot train a model; the message says what is wrong and what to change."""


class TrainParamsError(ValueError):
    """A training setting is out of range; ``field`` names it (commands map it to a flag)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


@dataclass
class TrainParams:
    """Everything that decides a training run (logged as MLflow parameters)."""

    horizon_days: int = 90
    clv_horizon_days: int = 365
    definition: str | None = None  # None or auto: features.definition.auto_definition
    # the activity definition's window (None: the horizon) and event types (None: every
    # type but the passive ones, features.definition.PASSIVE_EVENT_TYPES)
    active_days: int | None = None
    activity_events: tuple[str, ...] | None = None
    step_days: int = 30
    max_snapshots: int = 12
    num_boost_round: int = 400
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 20
    # other (num_leaves, min_data_in_leaf) pairs tried on the held-out snapshot; () = none
    tree_sizes: tuple[tuple[int, int], ...] = ((3, 50), (7, 50))
    tree_size_min_gain: float = 0.005
    feature_fraction: float = 0.9
    lambda_l2: float = 1.0
    early_stopping_rounds: int = 30
    tweedie_variance_power: float = 1.3
    # CLV boosters fitted with seeds seed, seed+1, … and averaged in the log-link space:
    # one booster's value deciles move with the seed (feature sampling) on small data
    clv_seeds: int = 5
    clv_model: str = "auto"  # auto | tweedie | hurdle (see training.model_choice)
    # short history: may CLV learn from recent 13-week windows (see training.recent_clv)
    clv_recent_windows: bool = True
    seed: int = 0
    # lifecycle stages (features.lifecycle): `new` for at most new_days (None: the horizon);
    # `declining` when activity in the last declining_window_days runs below
    # declining_ratio x the customer's own earlier rate, judged with at least
    # declining_min_activity earlier activities over declining_min_days days
    new_days: int | None = None
    declining_window_days: int = 90
    declining_ratio: float = 0.5
    declining_min_activity: int = 4
    declining_min_days: int = 60
    # calendar inputs (features.calendar) when the history covers the same season a year
    # before the held-out snapshot; False: never
    calendar_inputs: bool = True
    # with calendar inputs: extra weight of training snapshots in the same season as the
    # cut-off (1 + season_weight at the same day of the year, 1 a quarter or more away), and
    # CLV early-stopped on the snapshot of the same season a year before (not the latest)
    season_weight: float = 0.0
    season_early_stopping: bool = False
    # one thread by default: training sets are small (customers × snapshots) and OpenMP
    # threads on shared cores cost more than they gain; 0 = all cores
    num_threads: int = 1
    margin_rate: float = 1.0
    top_k: int = 5
    calibration: str = "auto"  # auto | platt | isotonic | none
    calibrate_above_ece: float = 0.02
    min_customers: int = 50
    gate_auc_tolerance: float = 0.002

    def __post_init__(self) -> None:
        if self.calibration not in ("auto", "platt", "isotonic", "none"):
            raise TrainParamsError("calibration", f"must be auto|platt|isotonic|none, not "
                                                  f"{self.calibration!r}")
        if not 0 < self.margin_rate <= 1:
            raise TrainParamsError("margin_rate", f"must be in (0, 1], not {self.margin_rate}")
        if self.clv_model not in ("auto", "tweedie", "hurdle"):
            raise TrainParamsError("clv_model",
                                   f"must be auto|tweedie|hurdle, not {self.clv_model!r}")
        if self.clv_seeds < 1:
            raise TrainParamsError("clv_seeds", f"must be at least 1, not {self.clv_seeds}")
        if self.definition not in (None, *CHOICES):
            raise TrainParamsError("definition", f"must be {' | '.join(CHOICES)}, not "
                                                 f"{self.definition!r}")
        try:
            check_thresholds(new_days=self.new_days, recent_days=self.declining_window_days,
                             declining_ratio=self.declining_ratio,
                             min_earlier_activity=self.declining_min_activity,
                             min_earlier_days=self.declining_min_days)
        except LifecycleSettingError as error:
            field_name = {"recent_days": "declining_window_days",
                          "min_earlier_activity": "declining_min_activity",
                          "min_earlier_days": "declining_min_days"}.get(error.field, error.field)
            raise TrainParamsError(field_name, error.problem) from error
        if self.active_days is not None and self.active_days <= 0:
            raise TrainParamsError("active_days", f"must be a positive number of days, not "
                                                  f"{self.active_days}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
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


@dataclass
class TrainResult:
    """What a tracked training run produced and what the champion gate decided."""

    run_id: str
    version: str
    promoted: bool
    reason: str
    metrics: dict[str, float]
    notes: list[str] = field(default_factory=list)
    definition: str = ""
    definition_reason: str = ""


# -- helpers -------------------------------------------------------------------------


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """The feature columns of a training frame (everything but ids and labels)."""
    return [c for c in frame.columns if c not in (*ID_COLUMNS, *LABEL_COLUMNS)]


def features_of(rows: pd.DataFrame) -> pd.DataFrame:
    """The feature part of training-set rows, indexed by customer_id (as scoring sees it)."""
    return rows.set_index("customer_id")[feature_columns(rows)]


def _lgb_params(params: TrainParams, **extra: Any) -> dict[str, Any]:
    return {
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "min_data_in_leaf": params.min_data_in_leaf,
        "feature_fraction": params.feature_fraction,
        "lambda_l2": params.lambda_l2,
        "seed": params.seed,
        "deterministic": True,
        "num_threads": params.num_threads,
        "verbosity": -1,
        **extra,
    }


def _train_booster(params: dict[str, Any], X: pd.DataFrame, y: np.ndarray, X_val: pd.DataFrame,
                   y_val: np.ndarray, *, rounds: int, stop: int,
                   weight: np.ndarray | None = None) -> lgb.Booster:
    train = lgb.Dataset(X, label=y, weight=weight, free_raw_data=False)
    valid = lgb.Dataset(X_val, label=y_val, reference=train, free_raw_data=False)
    booster = lgb.train(params, train, num_boost_round=rounds, valid_sets=[valid],
                        callbacks=[lgb.early_stopping(stop, verbose=False)])
    best = booster.best_iteration or booster.current_iteration()
    # keep only the trees that early stopping chose, so every consumer predicts the same
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=best))


def _fit_platt(raw: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    clipped = np.clip(raw, 1e-7, 1 - 1e-7)
    logit = np.log(clipped / (1 - clipped)).reshape(-1, 1)
    model = LogisticRegression(C=1e6).fit(logit, y)
    return {"method": "platt", "a": float(model.coef_[0, 0]), "b": float(model.intercept_[0])}


def _fit_isotonic(raw: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    from sklearn.isotonic import IsotonicRegression

    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)
    return {"method": "isotonic", "x": model.X_thresholds_.tolist(),
            "y": model.y_thresholds_.tolist()}


_CALIBRATORS = {"platt": _fit_platt, "isotonic": _fit_isotonic}


def _crossfit_ece(method: str, raw: np.ndarray, y: np.ndarray, seed: int) -> float:
    """ECE of a calibration map fitted on one half of the holdout and applied to the other."""
    folds = np.random.default_rng(seed).permutation(len(raw)) % 2
    calibrated = np.empty_like(raw)
    for k in (0, 1):
        fit, apply = folds != k, folds == k
        if len(np.unique(y[fit])) < 2:
            return float("inf")
        calibrated[apply] = apply_calibration(_CALIBRATORS[method](raw[fit], y[fit]), raw[apply])
    return expected_calibration_error(y, calibrated)


def choose_calibration(raw: np.ndarray, y: np.ndarray, *, params: TrainParams
                       ) -> tuple[dict[str, Any], dict[str, float]]:
    """Pick the calibration map for held-out raw probabilities.

    ``auto``: keep raw probabilities when their ECE is at most
    ``calibrate_above_ece``; otherwise take whichever of Platt scaling and
    isotonic regression has the lower ECE when fitted on one half of the holdout
    and checked on the other (both ways), preferring Platt unless isotonic is
    better by more than 0.005, and only if that beats raw. The chosen map is
    then fitted on the whole holdout.
    """
    raw_ece = expected_calibration_error(y, raw)
    report = {"churn_ece_raw": raw_ece}
    if params.calibration == "none":
        return {"method": "none"}, report
    if params.calibration == "auto":
        if raw_ece <= params.calibrate_above_ece:
            return {"method": "none"}, report
        candidates = {m: _crossfit_ece(m, raw, y, params.seed) for m in _CALIBRATORS}
        report |= {f"churn_ece_crossfit_{m}": v for m, v in candidates.items()}
        # Platt keeps the ranking and has no plateaus; isotonic must earn its flexibility
        method = "platt" if candidates["platt"] <= candidates["isotonic"] + 0.005 else "isotonic"
        if candidates[method] >= raw_ece:
            return {"method": "none"}, report
    else:
        method = params.calibration
        report[f"churn_ece_crossfit_{method}"] = _crossfit_ece(method, raw, y, params.seed)
    return _CALIBRATORS[method](raw, y), report


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


def _population_rule(features: pd.DataFrame, in_population: pd.Series, definition: str,
                     churn_definition: ChurnDefinition | None = None) -> dict[str, Any]:
    """The feature test that reproduces the labels' population on every training row.

    Activity: any activity recency within ``active_days`` or a running
    subscription (checked against the labels). Otherwise named candidates come
    first (a completed-order count for inactivity, an active-subscription flag
    for subscription), then any numeric feature whose "> 0" or "is recorded"
    test matches the population exactly.
    """
    target = in_population.astype(bool).to_numpy()
    if definition == "activity" and churn_definition is not None:
        rule = activity_population_rule(churn_definition)
        mismatched = int((population_mask(features, rule).to_numpy() != target).sum())
        if mismatched:
            raise TrainingDataError(
                f"the activity population rule disagrees with the labels on {mismatched} "
                "training row(s); this is a bug in churnlens (features and labels must read "
                "the same activity)")
        return rule
    if target.all():
        return {"test": "all"}
    preferred = ("completed_orders_total",) if definition == "inactivity" else ("is_subscribed",)
    numeric = [c for c in features.columns
               if not isinstance(features[c].dtype, pd.CategoricalDtype)]
    ordered = [c for c in preferred if c in numeric] + [c for c in numeric if c not in preferred]
    for name in ordered:
        values = pd.to_numeric(features[name], errors="coerce").to_numpy(dtype=float)
        if np.array_equal((values > 0) & ~np.isnan(values), target):
            return {"feature": name, "test": "positive"}
        if np.array_equal(~np.isnan(values), target):
            return {"feature": name, "test": "notna"}
    raise TrainingDataError(
        f"no feature reproduces the {definition} population (who the churn definition applies "
        "to); the feature pipeline must expose it, e.g. a completed-order count or an "
        "active-subscription flag")


def _medians(features: pd.DataFrame) -> dict[str, float]:
    numeric = features.select_dtypes(include="number")
    return {k: float(v) for k, v in numeric.median().items() if pd.notna(v)}


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


def _business_season(training_set: Any, names: list[str]) -> dict[str, Any] | None:
    """The business's weekly series for the bundle, when the model uses its columns."""
    season = getattr(training_set, "business_season", None)
    if season is None or not any(n in BUSINESS_FEATURES for n in names):
        return None
    return season.as_dict()


def _blank_business(X: pd.DataFrame) -> pd.DataFrame:
    """``X`` with the business-season columns missing: they are CLV inputs only.

    Constant across the customers of a snapshot, they tell the churn trees which
    snapshot a row is from (base rates by date) more than how a customer
    behaves; churn is already calibrated on seasonal data without them. A column
    that is missing in every training row is never split on, so the churn
    booster ignores whatever value it gets when scoring.
    """
    present = [n for n in BUSINESS_FEATURES if n in X.columns]
    return X.assign(**{n: np.nan for n in present}) if present else X


def _held_out_customers(customer_ids: pd.Series) -> np.ndarray:
    """A fixed fifth of the customers (by a hash of the id), held out when time cannot split."""
    return (pd.util.hash_pandas_object(customer_ids, index=False) % 5 == 0).to_numpy()


# -- fitting -------------------------------------------------------------------------


def _fit_churn(params: TrainParams, X: pd.DataFrame, y: np.ndarray, X_val: pd.DataFrame,
               y_val: np.ndarray, *, weight: np.ndarray | None = None
               ) -> tuple[lgb.Booster, TrainParams, Choice]:
    """The churn booster of the tree size the held-out snapshot chooses, and the params with it."""
    from sklearn.metrics import roc_auc_score

    boosters: dict[TreeSize, lgb.Booster] = {}

    def sized(size: TreeSize) -> TrainParams:
        return replace(params, num_leaves=size[0], min_data_in_leaf=size[1])

    def held_out_auc(size: TreeSize) -> float:
        boosters[size] = _train_booster(
            _lgb_params(sized(size), objective="binary", metric="binary_logloss"),
            X, y, X_val, y_val, rounds=params.num_boost_round, stop=params.early_stopping_rounds,
            weight=weight)
        return float(roc_auc_score(y_val, boosters[size].predict(X_val)))

    default = (params.num_leaves, params.min_data_in_leaf)
    choice = choose_tree_size(held_out_auc, default, params.tree_sizes,
                              min_gain=params.tree_size_min_gain)
    size: TreeSize = choice.value  # type: ignore[assignment]
    if size not in boosters:
        held_out_auc(size)
    return boosters[size], sized(size), choice


def fit_clv(params: TrainParams, X: pd.DataFrame, y: np.ndarray, X_val: pd.DataFrame,
            y_val: np.ndarray, *, weight: np.ndarray | None = None) -> Choice:
    """The CLV booster (Tweedie, or the hurdle model when the held-out snapshot prefers it).

    Each booster is the average of ``params.clv_seeds`` boosters fitted with
    consecutive seeds, each early-stopped on its own (`average_log_link_boosters`).
    """

    def train(extra: dict[str, Any], X_fit: pd.DataFrame, y_fit: np.ndarray,
              X_check: pd.DataFrame, y_check: np.ndarray,
              weight_fit: np.ndarray | None = None) -> lgb.Booster:
        return average_log_link_boosters([
            _train_booster(_lgb_params(replace(params, seed=params.seed + k), **extra),
                           X_fit, y_fit, X_check, y_check, rounds=params.num_boost_round,
                           stop=params.early_stopping_rounds, weight=weight_fit)
            for k in range(params.clv_seeds)])

    tweedie = train({"objective": "tweedie", "metric": "tweedie",
                     "tweedie_variance_power": params.tweedie_variance_power},
                    X, y, X_val, y_val, weight)
    hurdle = (None if params.clv_model == "tweedie"
              else fit_hurdle(train, X, y, X_val, y_val, weight=weight))
    return choose_clv_form(tweedie, hurdle, X_val, y_val, form=params.clv_model)


def evaluate_bundle(bundle: ChurnBundle, holdout: pd.DataFrame, clv_holdout: pd.DataFrame
                    ) -> dict[str, float]:
    """Churn and CLV metrics of any bundle on held-out training-set rows.

    Churn is measured on the labelled population rows (truth from the labels);
    CLV on every row with a CLV label, in revenue (before the margin rate), so
    bundles with different margin rates compare fairly.
    """
    labelled = holdout[holdout["in_population"].astype(bool) & holdout["churned"].notna()]
    probability = bundle.churn_probability(bundle.prepare(features_of(labelled)))
    metrics = {f"churn_{k}": v for k, v in
               churn_metrics(labelled["churned"].to_numpy(float), probability).items()}
    if not bundle.has_clv:
        return metrics
    valued = clv_holdout[clv_holdout["clv_target"].notna()]
    predicted = bundle.clv(bundle.prepare(features_of(valued))) / bundle.margin_rate
    metrics |= {f"clv_{k}": v for k, v in
                clv_metrics(valued["clv_target"].to_numpy(float), predicted).items()}
    return metrics


def season_weights(snapshots: pd.Series, *, season_of: pd.Timestamp, weight: float
                   ) -> np.ndarray:
    """1 + ``weight``·max(0, cos(2π·d/365)) per row, d = days between the rows' snapshot
    and ``season_of`` on the yearly cycle: full weight at the same day of the year,
    none a quarter or more away."""
    days = (pd.Timestamp(season_of) - pd.to_datetime(snapshots)).dt.days.to_numpy() % 365
    distance = np.minimum(days, 365 - days)
    return 1.0 + weight * np.maximum(0.0, np.cos(2 * np.pi * distance / 365))


def _fit_clv_part(frame: pd.DataFrame, params: TrainParams, notes: list[str], *,
                  season_of: pd.Timestamp | None = None
                  ) -> tuple[lgb.Booster, pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """The CLV booster, its training and held-out rows and its choice report.

    Every row with a CLV label; its own latest labelled snapshot held out (a
    fifth of the customers when only one snapshot has CLV labels). With
    ``season_of`` (calendar inputs in use) the season options of ``params``
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
    clv_choice = fit_clv(params, features_of(clv_train), clv_train["clv_target"].to_numpy(float),
                         features_of(clv_holdout), clv_holdout["clv_target"].to_numpy(float),
                         weight=weight)
    if clv_choice.note:
        notes.append(clv_choice.note)
    return clv_choice.value, clv_train, clv_holdout, clv_choice.report


def fit_bundle(training_set: Any, *, params: TrainParams, event_types: list[str] | None = None,
               definition: str | None = None, learn_clv: bool = True,
               churn_definition: ChurnDefinition | None = None) -> FitResult:
    """Fit churn + CLV boosters on a `TrainingSet`, hold out its latest snapshot, build a bundle.

    ``learn_clv=False`` (data without orders or subscription revenue): no CLV
    model; the bundle's CLV is null and its notes say why. ``churn_definition``
    (the resolved definition, with its reason) is stored in the bundle; without
    it one is made from ``definition`` and the training set's activity settings.

    Raises `TrainingDataError` with what is wrong and what to change when the
    training set cannot support a time split or a model.
    """
    frame: pd.DataFrame = training_set.frame
    notes = list(getattr(training_set, "notes", []) or [])
    frame, calendar_note = _calendar_choice(frame, params)
    if calendar_note:
        notes.append(calendar_note)
    horizon = int(getattr(training_set, "label_horizon_days", params.horizon_days))
    if churn_definition is not None:
        definition = churn_definition.name
    definition = definition if definition not in (None, "auto") else (
        getattr(training_set, "definition", None) or "inactivity")
    if event_types is None:
        event_types = getattr(training_set, "event_types", None)
    if churn_definition is None:
        churn_definition = _definition_of(training_set, definition, params, event_types)
    names = feature_columns(frame)
    if frame.empty or not names:
        raise TrainingDataError(
            "the training set is empty: no customer is known at any snapshot date. Check "
            "--as-of (it must leave --horizon days of history after the first snapshot).")

    # churn: labelled population rows, latest snapshot held out
    labelled = frame[frame["in_population"].astype(bool) & frame["churned"].notna()]
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
        held = labelled[labelled["snapshot_at"] == holdout_at]
    else:
        # one labelled snapshot: no time split is possible, so split its customers
        validation = "customer split"
        in_held = _held_out_customers(labelled["customer_id"])
        held, train = labelled[in_held], labelled[~in_held]
        holdout = frame[(frame["snapshot_at"] == holdout_at)
                        & frame["customer_id"].isin(held["customer_id"])]
        notes.append(
            f"one snapshot with churn labels ({pd.Timestamp(holdout_at):%Y-%m-%d}): churn "
            "trained on four fifths of its customers and early-stopped, calibrated and "
            "validated on the other fifth (split by customer id, not by time)")
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

    X_train, y_train = features_of(train), train["churned"].to_numpy(float)
    X_held, y_held = features_of(held), held["churned"].to_numpy(float)
    # calendar inputs in use: the season the model will score is the one after the holdout
    season_of = (pd.Timestamp(holdout_at) + pd.Timedelta(days=horizon)) if calendar_note else None
    churn_weight = None
    if season_of is not None and params.season_weight > 0:
        churn_weight = season_weights(train["snapshot_at"], season_of=season_of,
                                      weight=params.season_weight)
        notes.append(f"training snapshots weighted by season: up to {1 + params.season_weight:g}×"
                     f" for those at the same day of the year as {season_of:%Y-%m-%d}")
    churn_booster, params, tree_choice = _fit_churn(
        params, _blank_business(X_train), y_train, _blank_business(X_held), y_held,
        weight=churn_weight)
    if tree_choice.note:
        notes.append(tree_choice.note)

    if learn_clv:
        clv_booster, clv_train, clv_holdout, clv_report = _fit_clv_part(
            frame, params, notes, season_of=season_of)
        clv_note = None
    else:
        clv_booster, clv_report, clv_note = None, {}, NO_REVENUE_NOTE
        clv_train = clv_holdout = frame.iloc[0:0]
        notes.append(clv_note)

    categorical = {n: [*X_train[n].cat.categories] for n in names
                   if isinstance(X_train[n].dtype, pd.CategoricalDtype)}
    all_features = features_of(frame)
    bundle = ChurnBundle(
        churn_booster=churn_booster,
        clv_booster=clv_booster,
        feature_names=names,
        categorical_levels=categorical,
        event_types=event_types,
        feature_info=_feature_info(names, X_train, y_train),
        population_rule=_population_rule(all_features, frame["in_population"], definition,
                                         churn_definition),
        horizon_days=horizon,
        clv_horizon_days=int(getattr(training_set, "clv_horizon_days", params.clv_horizon_days)),
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
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
        as_of=pd.Timestamp(holdout_at + pd.Timedelta(days=horizon)).isoformat(),
        notes=notes,
        clv_note=clv_note,
        business_season=_business_season(training_set, names),
    )
    raw = bundle.churn_raw_probability(bundle.prepare(X_held))
    bundle.calibration, calibration_report = choose_calibration(raw, y_held, params=params)
    probability = apply_calibration(bundle.calibration, raw)
    bundle.risk_cuts = [float(np.quantile(probability, q)) for q in RISK_QUANTILES]
    # the business-season column is one value per date (like day_of_year): no distribution
    bundle.drift_reference = drift_reference(
        X_held.drop(columns=[n for n in BUSINESS_FEATURES if n in X_held.columns]), probability)
    bundle.value_cuts = []
    if bundle.has_clv:
        held_clv = bundle.clv(bundle.prepare(features_of(holdout)))
        bundle.value_cuts = [float(np.quantile(held_clv, q)) for q in VALUE_QUANTILES]

    metrics = evaluate_bundle(bundle, holdout, clv_holdout)
    if bundle.calibration["method"] != "none":
        # the map was fitted on the holdout: report its ECE where it was not fitted
        metrics["churn_ece_in_sample"] = metrics["churn_ece"]
        metrics["churn_ece"] = calibration_report[
            f"churn_ece_crossfit_{bundle.calibration['method']}"]
    metrics |= calibration_report | tree_choice.report | clv_report
    metrics |= {
        "churn_best_iteration": float(churn_booster.current_iteration()),
        "churn_train_rows": float(len(train)),
        "churn_holdout_rows": float(len(held)),
        "churn_holdout_rate": float(y_held.mean()),
    }
    if clv_booster is not None:
        metrics |= {
            # trees per seed (the averaged booster holds every seed's trees)
            "clv_best_iteration": float(clv_booster.current_iteration()) / params.clv_seeds,
            "clv_seeds": float(params.clv_seeds),
            "clv_train_rows": float(len(clv_train)),
            "clv_holdout_rows": float(len(clv_holdout)),
        }
    bundle.metrics = {k: v for k, v in metrics.items() if k.startswith(("churn_", "clv_"))}
    return FitResult(bundle=bundle, holdout=holdout, metrics=metrics, clv_holdout=clv_holdout,
                     notes=notes, params=params, validation=validation)


def _definition_of(training_set: Any, definition: str, params: TrainParams,
                   event_types: list[str] | None) -> ChurnDefinition:
    """The `ChurnDefinition` a training set was labelled with (when the caller has none)."""
    from features.definition import PASSIVE_EVENT_TYPES

    activity = getattr(training_set, "activity_events", None) or params.activity_events
    if activity is None:
        activity = [t for t in event_types or [] if t not in PASSIVE_EVENT_TYPES]
    active_days = (getattr(training_set, "active_days", None) or params.active_days
                   or params.horizon_days)
    return ChurnDefinition(name=definition, reason=f"{definition} (given)",
                           active_days=int(active_days), activity_events=tuple(activity))


# -- champion gate -------------------------------------------------------------------

GATE_RULE = (
    "promote when there is no champion, or when on the same held-out snapshot the challenger's "
    "churn ROC AUC is at most {tol} below the champion's AND it is better on churn ROC AUC or on "
    "CLV Spearman"
)


def _figure(value: float | None) -> str:
    """A metric for a message; a model without CLV has no CLV figure."""
    return "none" if value is None else f"{value:.4f}"


def champion_gate(challenger: Mapping[str, float], champion: Mapping[str, float] | None, *,
                  tolerance: float = 0.002) -> tuple[bool, str]:
    """Decide whether the challenger replaces the champion; return (promote, reason).

    Both metric dicts must come from `evaluate_bundle` on the same held-out rows.
    """
    if champion is None:
        return True, "no champion yet"
    auc, champion_auc = challenger.get("churn_roc_auc"), champion.get("churn_roc_auc")
    rho, champion_rho = challenger.get("clv_spearman"), champion.get("clv_spearman")
    if auc is None or not np.isfinite(auc):
        return False, "challenger has no churn ROC AUC on the holdout"
    if champion_auc is None or not np.isfinite(champion_auc):
        return True, "champion has no churn ROC AUC on this holdout"
    figures = (f"churn ROC AUC {auc:.4f} vs champion {champion_auc:.4f}, "
               f"CLV Spearman {_figure(rho)} vs {_figure(champion_rho)}")
    if auc < champion_auc - tolerance:
        return False, f"churn ROC AUC worse by more than {tolerance} ({figures})"
    better_rho = (rho is not None and np.isfinite(rho)
                  and (champion_rho is None or not np.isfinite(champion_rho) or rho > champion_rho))
    if auc > champion_auc or better_rho:
        return True, f"better than the champion ({figures})"
    return False, f"not better than the champion on either ({figures})"


# -- tracked training ----------------------------------------------------------------


def _input_example(fit: FitResult, rows: int = 5) -> pd.DataFrame:
    """A few held-out feature rows as a pyfunc input (categoricals as plain strings)."""
    example = features_of(fit.holdout.head(rows)).reset_index()
    for name in fit.bundle.categorical_levels:
        example[name] = example[name].astype(object).where(example[name].notna(), None)
    return example


def _score_champion(fit: FitResult) -> tuple[str | None, dict[str, float] | None, str | None]:
    """Evaluate the current champion on this run's holdout: (version, metrics, problem)."""
    from training import registry

    version = registry.champion_version()
    if version is None:
        return None, None, None
    try:
        with registry.temporary_directory() as tmp:
            champion = ChurnBundle.load(registry.download_bundle(version, Path(tmp)))
        return version, evaluate_bundle(champion, fit.holdout, fit.clv_holdout), None
    except Exception as error:
        return version, None, f"champion v{version} could not be scored on this holdout: {error}"


def logged_params(fit: FitResult, params: TrainParams) -> dict[str, Any]:
    """The parameters of the fitted models as MLflow parameters.

    The tree size and the CLV form are the ones chosen on the held-out snapshot
    (what the boosters were fitted with), not the defaults the choice started
    from; the candidates' held-out scores are metrics.
    """
    fitted = fit.params or params
    bundle = fit.bundle
    clv_form = "hurdle" if fit.metrics.get("clv_hurdle") == 1.0 else "tweedie"
    chosen = bundle.churn_definition
    return fitted.as_dict() | {
        "definition": bundle.definition, "label_windows_end": bundle.as_of,
        "clv_form": clv_form, "validation": fit.validation,
        "definition_requested": params.definition or "auto",
        "active_days": chosen.get("active_days"),
        "activity_events": ",".join(chosen.get("activity_events") or []) or "none",
    }


def _log_training_data(fit: FitResult, training_frame: pd.DataFrame | None,
                       source: str | None) -> None:
    from training import registry

    if training_frame is not None:
        registry.log_training_data(training_frame, source=source, name="training snapshots",
                                   context="training", targets="churned")
    registry.log_training_data(fit.holdout, source=source, name="held-out snapshot",
                               context="validation", targets="churned")


def register_fit(fit: FitResult, *, params: TrainParams, dataset_profile: Mapping[str, Any],
                 extra_params: Mapping[str, Any] | None = None,
                 training_frame: pd.DataFrame | None = None) -> TrainResult:
    """Log one MLflow run for a fitted bundle, register it and apply the champion gate."""
    from training import registry
    from training.evaluate import write_plots

    registry.configure_tracking()
    bundle = fit.bundle
    with registry.training_run(run_name=f"train {bundle.definition} h{bundle.horizon_days}") \
            as run_id, registry.temporary_directory() as tmp:
        registry.log_params(logged_params(fit, params) | dict(extra_params or {}))
        _log_training_data(fit, training_frame, dataset_profile.get("source"))
        registry.log_dict(dict(dataset_profile), "dataset_profile.json")
        registry.set_tags({f"dataset.{k}": v for k, v in dataset_profile.items()
                           if not isinstance(v, dict | list)}
                          | {"notes": " | ".join(fit.notes) or "none",
                             "churn_definition": bundle.definition,
                             "churn_definition.reason":
                                 bundle.churn_definition.get("reason") or "given"})
        registry.log_metrics(fit.metrics)
        plots = write_plots(bundle, fit.holdout, fit.clv_holdout, Path(tmp) / "plots",
                            seed=params.seed)
        registry.log_artifacts(plots[0].parent, "plots")
        bundle_dir = bundle.save(Path(tmp) / "bundle")
        example = _input_example(fit)
        output = bundle.predict(example.set_index("customer_id")).reset_index()
        model_uri = registry.log_bundle_model(bundle_dir, input_example=example,
                                              output_example=output)

        champion_version, champion_metrics, problem = _score_champion(fit)
        if problem:
            promoted, reason = False, problem
        else:
            promoted, reason = champion_gate(fit.metrics, champion_metrics,
                                             tolerance=params.gate_auc_tolerance)
        if champion_metrics:
            registry.log_metrics({f"champion_{k}": v for k, v in champion_metrics.items()})
        version = registry.register(model_uri, run_id=run_id, tags={
            "churn_roc_auc": f"{fit.metrics.get('churn_roc_auc', float('nan')):.4f}",
            "clv_spearman": f"{fit.metrics.get('clv_spearman', float('nan')):.4f}",
            "definition": bundle.definition, "as_of": bundle.as_of})
        if promoted:
            registry.promote(version, reason=f"champion gate: {reason}")
        registry.set_tags({
            "registered_version": version,
            "champion_gate.rule": GATE_RULE.format(tol=params.gate_auc_tolerance),
            "champion_gate.decision": "promoted" if promoted else "kept champion",
            "champion_gate.reason": reason,
            "champion_gate.champion_version": champion_version or "none",
        })
        registry.log_metrics({"champion_gate_promoted": float(promoted)})
        registry.tag_version(version, {"champion_gate": ("promoted: " if promoted else
                                                         "not promoted: ") + reason})
    return TrainResult(run_id=run_id, version=version, promoted=promoted, reason=reason,
                       metrics=dict(fit.metrics), notes=list(fit.notes),
                       definition=bundle.definition,
                       definition_reason=str(bundle.churn_definition.get("reason", "")))


def profile_dataset(dataset: Any, training_set: Any, *, as_of: pd.Timestamp) -> dict[str, Any]:
    """What the run was trained on: customers, rows per table, snapshots, churn rate, notes."""
    frame = training_set.frame
    labelled = frame[frame["in_population"].astype(bool) & frame["churned"].notna()]
    return {
        "customers": len(dataset.customers),
        "rows": dataset.count_rows(),
        "as_of": pd.Timestamp(as_of).isoformat(),
        "snapshots": len(training_set.snapshot_dates),
        "snapshot_dates": [pd.Timestamp(d).date().isoformat() for d in
                           training_set.snapshot_dates],
        "training_rows": len(frame),
        "churn_rate": float(labelled["churned"].mean()) if len(labelled) else float("nan"),
        "notes": list(getattr(training_set, "notes", []) or []),
    }


def choose_definition(dataset: Any, params: TrainParams) -> ChurnDefinition:
    """The churn definition ``params`` ask for on this dataset (``auto`` resolved).

    A setting that cannot apply (an activity event type no event has) is a
    `TrainingDataError` naming the flag.
    """
    try:
        return resolve_definition(
            dataset, requested=params.definition, horizon_days=params.horizon_days,
            active_days=params.active_days, activity_events=params.activity_events)
    except DefinitionError as error:
        raise TrainingDataError(str(error)) from error


def has_revenue(dataset: Any) -> bool:
    """Whether the data has revenue a CLV model can learn from (orders or subscription mrr)."""
    orders, subscriptions = dataset.orders, dataset.subscriptions
    if orders is not None and not orders.empty:
        return True
    return (subscriptions is not None and "mrr" in subscriptions
            and bool((pd.to_numeric(subscriptions["mrr"], errors="coerce") > 0).any()))


def build_training_set_for(dataset: Any, *, as_of: pd.Timestamp, params: TrainParams,
                           definition: str,
                           churn_definition: ChurnDefinition | None = None) -> Any:
    """The snapshot training set of a dataset; data problems become `TrainingDataError`."""
    from features.snapshots import build_training_set

    if dataset.orders is None and dataset.subscriptions is None and definition != "activity":
        raise TrainingDataError(
            "the dataset has neither orders nor subscriptions, so there is no value to learn a "
            "CLV model from: add orders.csv (or subscriptions.csv with mrr)")
    if len(dataset.customers) < params.min_customers:
        raise TrainingDataError(
            f"the dataset has {len(dataset.customers)} customers; at least "
            f"{params.min_customers} are needed to train and hold out a snapshot")
    try:
        return build_training_set(
            dataset, as_of=as_of, horizon_days=params.horizon_days,
            clv_horizon_days=params.clv_horizon_days, definition=definition,
            step_days=params.step_days, max_snapshots=params.max_snapshots,
            active_days=churn_definition.active_days if churn_definition else params.active_days,
            activity_events=(churn_definition.activity_events if churn_definition
                             else params.activity_events))
    except TrainingDataError:
        raise
    except ValueError as error:
        raise TrainingDataError(f"cannot build training snapshots: {error}") from error


def train_and_register(dataset: Any, *, as_of: pd.Timestamp, params: TrainParams,
                       dataset_profile: Mapping[str, Any] | None = None) -> TrainResult:
    """Build snapshots, fit, and log/register one MLflow run with the champion gate.

    Every data problem is raised as `TrainingDataError` before anything is logged
    or registered.
    """
    chosen = choose_definition(dataset, params)
    definition = chosen.name
    training_set = build_training_set_for(dataset, as_of=as_of, params=params,
                                          definition=definition, churn_definition=chosen)
    event_types = getattr(training_set, "event_types", None)
    if event_types is None and dataset.events is not None:
        event_types = sorted(dataset.events["event_type"].astype(str).unique().tolist())
    fit = fit_bundle(training_set, params=params, event_types=event_types,
                     definition=definition, learn_clv=has_revenue(dataset),
                     churn_definition=chosen)
    # label windows shorter than asked (short history): calibrate to the asked horizons
    from training.horizon import anchor_to_requested_horizon

    anchor_to_requested_horizon(fit, dataset, training_set=training_set, as_of=as_of,
                                definition=definition)
    profile = profile_dataset(dataset, training_set, as_of=as_of) | dict(dataset_profile or {})
    return register_fit(fit, params=params, dataset_profile=profile,
                        training_frame=training_set.frame)
