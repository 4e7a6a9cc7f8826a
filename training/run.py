"""The tracked training run: build, fit, log one MLflow run, register, apply the champion gate.

`train_and_register` is what ``churnlens train`` runs; `register_fit` logs an
already fitted bundle (tests and benchmarks fit once and log several times).
Every MLflow call goes through `training.registry`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from features.dataset import Dataset
from features.history import History
from features.snapshots import TrainingSet, features_of
from models.bundle import ChurnBundle
from training import registry
from training.data import build_training_set_for, choose_definition, has_revenue, profile_dataset
from training.evaluate import evaluate_bundle, write_plots
from training.fit import FitResult, fit_bundle, rebuilt
from training.gate import GATE_RULE, champion_gate
from training.horizon import anchor_to_requested_horizon
from training.params import TrainParams
from training.uplift import candidate_name, fit_uplift, matured_outcomes


@dataclass(frozen=True)
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


def _input_example(fit: FitResult, rows: int = 5) -> pd.DataFrame:
    """A few held-out feature rows as a pyfunc input (categoricals as plain strings)."""
    example = features_of(fit.holdout.head(rows)).reset_index()
    for name in fit.bundle.categorical_levels:
        example[name] = example[name].astype(object).where(example[name].notna(), None)
    return example


@dataclass(frozen=True)
class _Champion:
    """The current champion as the gate sees it (all None: there is none)."""

    version: str | None = None
    metrics: dict[str, float] | None = None
    problem: str | None = None
    uplift_rules: frozenset[str] = frozenset()


def _score_champion(fit: FitResult) -> _Champion:
    """Evaluate the current champion on this run's holdout."""
    version = registry.champion_version()
    if version is None:
        return _Champion()
    try:
        with registry.temporary_directory() as tmp:
            champion = ChurnBundle.load(registry.download_bundle(version, Path(tmp)))
        metrics = evaluate_bundle(champion, holdout=fit.holdout, clv_holdout=fit.clv_holdout)
        return _Champion(version, metrics,
                         uplift_rules=frozenset(model.rule for model in champion.uplift))
    except Exception as error:
        return _Champion(version, problem=f"champion v{version} could not be scored on this "
                                          f"holdout: {error}")


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
    if training_frame is not None:
        registry.log_training_data(training_frame, source=source, name="training snapshots",
                                   context="training", targets="churned")
    registry.log_training_data(fit.holdout, source=source, name="held-out snapshot",
                               context="validation", targets="churned")


def register_fit(fit: FitResult, *, params: TrainParams, dataset_profile: Mapping[str, Any],
                 extra_params: Mapping[str, Any] | None = None,
                 training_frame: pd.DataFrame | None = None) -> TrainResult:
    """Log one MLflow run for a fitted bundle, register it and apply the champion gate."""
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
        plots = write_plots(bundle, Path(tmp) / "plots", holdout=fit.holdout,
                            clv_holdout=fit.clv_holdout, seed=params.seed)
        registry.log_artifacts(plots[0].parent, "plots")
        bundle_dir = bundle.save(Path(tmp) / "bundle")
        example = _input_example(fit)
        output = bundle.predict(example.set_index("customer_id")).reset_index()
        model_uri = registry.log_bundle_model(bundle_dir, input_example=example,
                                              output_example=output)

        champion = _score_champion(fit)
        champion_version, champion_metrics = champion.version, champion.metrics
        if champion.problem:
            promoted, reason = False, champion.problem
        else:
            promoted, reason = champion_gate(
                fit.metrics, champion_metrics, tolerance=params.gate_auc_tolerance,
                new_uplift_rules=sorted({model.rule for model in bundle.uplift}
                                        - champion.uplift_rules))
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


def with_uplift(fit: FitResult, dataset: Dataset, actions: pd.DataFrame, *,
                as_of: pd.Timestamp, seed: int = 0) -> FitResult:
    """The fit with uplift models of the rules whose actions have matured by ``as_of``.

    ``actions`` is the outbox's actions table (`training.outcomes.read_actions`);
    each is labelled by the fit's own churn definition and horizon, whichever
    version scored it (`training.uplift.matured_outcomes`). Raises
    `UpliftDataError` when no rule has enough treated and control outcomes.
    """
    history = History(dataset)
    outcomes = matured_outcomes(history, actions, as_of=as_of, bundle=fit.bundle)
    fitted = fit_uplift(fit.bundle, history, outcomes, seed=seed)
    bundle = rebuilt(fit.bundle, uplift=fitted.models, notes=[*fit.bundle.notes, *fitted.notes])
    return replace(fit, bundle=bundle, metrics=fit.metrics | fitted.metrics,
                   notes=[*fit.notes, *fitted.notes])


def fit_on_dataset(dataset: Dataset, *, as_of: pd.Timestamp, params: TrainParams
                   ) -> tuple[FitResult, TrainingSet]:
    """The fit `churnlens train` makes (definition chosen, snapshots, bundle, horizon anchor),
    and its training set, without tracking: for scripts and tests that score with it."""
    chosen = choose_definition(dataset, params)
    training_set = build_training_set_for(dataset, as_of=as_of, params=params,
                                          definition=chosen.name, churn_definition=chosen)
    fit = fit_bundle(training_set, params=params, event_types=training_set.event_types,
                     definition=chosen.name, learn_clv=has_revenue(dataset),
                     churn_definition=chosen)
    # label windows shorter than asked (short history): calibrate to the asked horizons
    fit, _ = anchor_to_requested_horizon(fit, dataset, training_set=training_set, as_of=as_of,
                                         definition=chosen.name)
    return fit, training_set


def train_and_register(dataset: Dataset, *, as_of: pd.Timestamp, params: TrainParams,
                       dataset_profile: Mapping[str, Any] | None = None,
                       uplift_actions: pd.DataFrame | None = None) -> TrainResult:
    """Build snapshots, fit, and log/register one MLflow run with the champion gate.

    With ``uplift_actions`` (the outbox's actions) the bundle also gets uplift
    models (`with_uplift`). Every data problem is raised as `TrainingDataError`
    (or `UpliftDataError`) before anything is logged or registered.
    """
    fit, training_set = fit_on_dataset(dataset, as_of=as_of, params=params)
    extra: dict[str, Any] = {}
    if uplift_actions is not None:
        fit = with_uplift(fit, dataset, uplift_actions, as_of=as_of, seed=params.seed)
        extra = {"uplift_rules": ",".join(model.rule for model in fit.bundle.uplift),
                 "uplift_methods": ",".join(
                     f"{model.rule}:{candidate_name(model.method, model.uses_baseline)}"
                     for model in fit.bundle.uplift)}
    profile = profile_dataset(dataset, training_set, as_of=as_of) | dict(dataset_profile or {})
    return register_fit(fit, params=params, dataset_profile=profile, extra_params=extra,
                        training_frame=training_set.frame)
