"""A CLV model from recent quarter-long windows, when the history is too short for the horizon.

With a short history (CDNOW: one cohort acquired in January-March, a 273-day
horizon, 263 days of history), `features.snapshots` measures CLV over the
longest window that fits three snapshots, so the CLV model learns from
snapshots taken while the customers were a few weeks old; at the cut-off they
are 6-9 months old and the trees extrapolate. The alternative: 13-week windows
at the latest snapshots, whose customers are nearer the age they have at the
cut-off (the horizon anchor rescales both to the requested horizon alike).

Which one is used is decided on the last 13 weeks before the cut-off, which
neither model trains on: both rank the customers known 13 weeks before the
cut-off, judged on their spend in those 13 weeks (normalized Gini). The
recent-window candidate in that comparison is trained on the snapshots before
the latest two and early-stopped on the second latest, so the judging rows
are unseen by it (the long-window model's own label windows overlap them, if
anything in its favour). If the recent windows rank better, the CLV model is
refitted on them with the latest one held out, exactly as `fit_bundle` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import lightgbm as lgb
import pandas as pd

from features.dataset import Dataset
from features.labels import check_definition
from features.snapshots import TrainingSet, build_training_set, features_of
from training.boosters import fit_clv
from training.fit import FitResult, rebuilt
from training.metrics import clv_metrics, normalized_gini
from training.model_choice import Choice
from training.params import TrainParams
from training.rows import Labelled

#: the recent CLV label window: a quarter, 13 weeks
RECENT_WINDOW_DAYS = 91
#: snapshots needed: one to train on, one to stop early on, one to judge on
MIN_RECENT_SNAPSHOTS = 3


@dataclass
class RecentChoice:
    """The comparison and, when the recent windows won, the model and its held-out rows."""

    report: dict[str, float]
    note: str
    booster: lgb.Booster | None = None
    holdout: pd.DataFrame | None = None
    metrics: dict[str, float] | None = None


def _valued(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["clv_target"].notna()]


def recent_training_set(dataset: Dataset, *, as_of: pd.Timestamp, params: TrainParams,
                        definition: str) -> TrainingSet | None:
    """Snapshots with 13-week CLV windows ending by ``as_of``; None if fewer than three fit."""
    try:
        recent = build_training_set(
            dataset, as_of=as_of, horizon_days=RECENT_WINDOW_DAYS,
            clv_horizon_days=RECENT_WINDOW_DAYS, definition=check_definition(definition),
            step_days=params.step_days, max_snapshots=params.max_snapshots)
    except ValueError:
        return None
    return recent if usable_recent(recent) else None


def usable_recent(recent: TrainingSet) -> bool:
    """Whether a 13-week training set has full windows and enough snapshots to judge on."""
    return (recent.clv_label_horizon_days == RECENT_WINDOW_DAYS
            and _valued(recent.frame)["snapshot_at"].nunique() >= MIN_RECENT_SNAPSHOTS)


def choose_recent_clv(fit: FitResult, *, training_set: TrainingSet, as_of: pd.Timestamp,
                      recent_set: Callable[[TrainParams], TrainingSet | None],
                      ) -> RecentChoice | None:
    """Compare the fitted CLV model with one from recent 13-week windows (module docstring).

    ``recent_set(params)`` builds the 13-week training set (`recent_training_set`, or
    its partitioned twin), asked for only when the comparison applies. None when it
    does not apply: the CLV windows were not shortened, they are already no longer than
    13 weeks, or 13-week windows give too few snapshots.
    """
    params = fit.params
    window = int(training_set.clv_label_horizon_days)
    horizon = int(training_set.clv_horizon_days)
    if params is None or not params.clv_recent_windows or not RECENT_WINDOW_DAYS < window < horizon:
        return None
    recent = recent_set(params)
    if recent is None:
        return None
    valued = _valued(recent.frame)
    dates = [pd.Timestamp(d) for d in sorted(pd.unique(valued["snapshot_at"]))]
    judge, stop, train = (valued[valued["snapshot_at"] == dates[-1]],
                          valued[valued["snapshot_at"] == dates[-2]],
                          valued[valued["snapshot_at"] < dates[-2]])

    names = fit.bundle.feature_names

    def X(rows: pd.DataFrame) -> pd.DataFrame:
        return fit.bundle.prepare(features_of(rows)[names])

    def fitted(rows: pd.DataFrame, check: pd.DataFrame) -> Choice[lgb.Booster]:
        return fit_clv(params, train=Labelled(X(rows), rows["clv_target"].to_numpy(float)),
                       check=Labelled(X(check), check["clv_target"].to_numpy(float)))

    y_judge = judge["clv_target"].to_numpy(float)
    long_booster = fit.bundle.clv_booster
    assert long_booster is not None, "a bundle with revenue has a CLV booster"
    gini = {"long": normalized_gini(y_judge, long_booster.predict(X(judge))),
            "recent": normalized_gini(y_judge, fitted(train, stop).value.predict(X(judge)))}
    use_recent = bool(gini["recent"] > gini["long"])
    report = {"clv_recent_window_gini": gini["recent"], "clv_long_window_gini": gini["long"],
              "clv_recent_windows": float(use_recent)}
    figures = (f"normalized Gini on {dates[-1]:%Y-%m-%d} customers' spend in the "
               f"{RECENT_WINDOW_DAYS} days before {as_of:%Y-%m-%d}: {window}-day windows "
               f"{gini['long']:.3f}, {RECENT_WINDOW_DAYS}-day windows {gini['recent']:.3f}")
    if not use_recent:
        return RecentChoice(report, f"CLV kept on the {window}-day windows ({figures})")
    # refit with the latest recent snapshot held out; labels scaled to the horizon as usual
    scale = horizon / RECENT_WINDOW_DAYS
    scaled = valued.assign(clv_target=valued["clv_target"] * scale)
    holdout = scaled[scaled["snapshot_at"] == dates[-1]]
    form = fitted(scaled[scaled["snapshot_at"] < dates[-1]], holdout)
    booster = form.value
    metrics = {f"clv_{k}": v for k, v in clv_metrics(
        holdout["clv_target"].to_numpy(float), booster.predict(X(holdout))).items()}
    metrics |= form.report | {"clv_best_iteration": float(booster.current_iteration()),
                "clv_train_rows": float((scaled["snapshot_at"] < dates[-1]).sum()),
                "clv_holdout_rows": float(len(holdout))}
    note = (f"CLV trained on {len(dates)} snapshots of {RECENT_WINDOW_DAYS}-day windows from "
            f"{dates[0]:%Y-%m-%d} to {dates[-1]:%Y-%m-%d} (x {scale:.3g}), not on the "
            f"{window}-day windows: they rank recent spend better ({figures}); its {form.note}")
    return RecentChoice(report, note, booster=booster, holdout=holdout, metrics=metrics)


def apply_recent_clv(fit: FitResult, choice: RecentChoice) -> FitResult:
    """The fit with the recent-window CLV model and its held-out rows, when they won."""
    bundle, clv_holdout, metrics = fit.bundle, fit.clv_holdout, dict(fit.metrics)
    if choice.booster is not None:
        bundle = rebuilt(bundle, clv_booster=choice.booster)
        clv_holdout = choice.holdout if choice.holdout is not None else clv_holdout
        metrics |= choice.metrics or {}
    metrics |= choice.report
    bundle = rebuilt(bundle, metrics=bundle.metrics | {
        k: v for k, v in metrics.items() if k.startswith(("churn_", "clv_"))})
    return replace(fit, bundle=bundle, clv_holdout=clv_holdout, metrics=metrics)
