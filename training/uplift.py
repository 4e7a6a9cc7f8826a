"""Uplift models from the outbox's matured outcomes: whom each rule's action helps.

``churnlens train --uplift`` reads every action of the outbox whose churn
horizon has passed by the training cut-off (treated and held-out control
customers alike, labelled by the model version that scored them:
`training.outcomes`), and fits, per rule with enough of both, an uplift model
(`models.uplift`) on the customers' features as of the day the rule fired,
prepared with the newly trained bundle (the matrix it scores with). The models
ship in that bundle; scoring turns each into ``expected_saved_value`` =
estimated churn reduction × CLV − the rule's cost.

The estimator is the two-model learner starting from the churn model's
probability (`UPLIFT_METHOD`, see docs/outreach.md): on the benchmark's held-out
worlds its Qini on the win-back offer's true effects is 0.633 median against
0.038 by value at risk; on the success call no variant beats value at risk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.history import History
from features.pipeline import features_at
from models.bundle import ChurnBundle
from models.uplift import RuleUplift, uplift_estimator
from training.outcomes import action_outcomes

#: the estimator `churnlens train --uplift` fits (measured in bench/uplift_bench.py)
UPLIFT_METHOD = "two-model"
#: start from the churn model's probability (LightGBM ``init_score``) rather than from zero
UPLIFT_ON_CHURN_MODEL = True
#: boosting rounds of each of the estimator's boosters
UPLIFT_ROUNDS = 50
#: customers with a matured outcome needed in each group (as `churnlens outreach effect`)
MIN_GROUP = 30


class UpliftDataError(ValueError):
    """No uplift model can be learned from the outbox; the message says why and what to do."""


@dataclass(frozen=True)
class UpliftFit:
    """The rules' fitted uplift models, figures for the training run, and notes."""

    models: tuple[RuleUplift, ...]
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _matrix(bundle: ChurnBundle, history: History, rows: pd.DataFrame) -> pd.DataFrame:
    """The bundle's model matrix of each action's customer as of the day the action fired."""
    parts = []
    for moment in sorted(pd.unique(rows["as_of"])):
        at = rows[rows["as_of"] == moment]
        features = features_at(history, as_of=pd.Timestamp(moment),
                               event_types=bundle.event_types)
        parts.append(features.reindex(pd.Index(at["customer_id"].astype(str))).set_axis(
            at.index))
    return bundle.prepare(pd.concat(parts).loc[rows.index])


def fit_rule_uplift(bundle: ChurnBundle, history: History, rule: str, rows: pd.DataFrame, *,
                    method: str = UPLIFT_METHOD, on_churn_model: bool = UPLIFT_ON_CHURN_MODEL,
                    num_boost_round: int = UPLIFT_ROUNDS, seed: int = 0) -> RuleUplift:
    """One rule's uplift model from its labelled actions (``assignment``, ``churned``)."""
    X = _matrix(bundle, history, rows)
    treated = (rows["assignment"] == "treated").to_numpy()
    churned = rows["churned"].to_numpy(float)
    probability = bundle.churn_probability(X)
    estimator = uplift_estimator(method, num_boost_round=num_boost_round, seed=seed)
    estimator.fit(X, treated, churned, baseline=probability if on_churn_model else None)
    estimated = estimator.predict(X, baseline=probability if on_churn_model else None)
    figures = {
        "treated": float(treated.sum()), "control": float((~treated).sum()),
        "observed_churn_reduction": float(churned[~treated].mean() - churned[treated].mean()),
        "estimated_churn_reduction": float(np.mean(estimated)),
    }
    return RuleUplift(rule=rule, action=str(rows["action"].iloc[0]), method=method,
                      estimator=estimator, uses_baseline=on_churn_model, figures=figures)


def fit_uplift(bundle: ChurnBundle, history: History, outcomes: pd.DataFrame, *,
               min_group: int = MIN_GROUP, seed: int = 0) -> UpliftFit:
    """An uplift model for every rule with ``min_group`` matured treated and control outcomes.

    ``outcomes`` are the outbox's actions with ``churned`` (`training.outcomes.
    action_outcomes`). Rules with too few are named in the notes; when no rule
    has enough, `UpliftDataError` says how many each has.
    """
    labelled = outcomes[outcomes["churned"].notna()]
    models: list[RuleUplift] = []
    metrics: dict[str, float] = {}
    notes: list[str] = []
    short: list[str] = []
    for rule in sorted(set(outcomes["rule"])):
        rows = labelled[labelled["rule"] == rule]
        treated = int((rows["assignment"] == "treated").sum())
        control = int((rows["assignment"] == "control").sum())
        if min(treated, control) < min_group:
            short.append(f"{rule} (n = {treated} treated, {control} control)")
            continue
        model = fit_rule_uplift(bundle, history, rule, rows, seed=seed)
        models.append(model)
        metrics |= {f"uplift_{rule}_{k}": v for k, v in model.figures.items()}
        notes.append(
            f"uplift model of rule {rule} ({model.action}, {model.method}): {treated} treated, "
            f"{control} control; observed churn reduction "
            f"{model.figures['observed_churn_reduction']:.3f}, mean estimated "
            f"{model.figures['estimated_churn_reduction']:.3f}")
    if short:
        notes.append(f"no uplift model for {', '.join(short)}: at least {min_group} of each "
                     "with a matured outcome are needed")
    if not models:
        total = len(labelled)
        raise UpliftDataError(
            f"no rule has enough matured treated and control outcomes for an uplift model "
            f"({total} matured action(s) in all; " + ("; ".join(short) or "none") + f"; at "
            f"least {min_group} of each per rule). Give rules a control_share and train "
            "--uplift again once their horizon has passed.")
    metrics["uplift_rules"] = float(len(models))
    return UpliftFit(models=tuple(models), metrics=metrics, notes=notes)


def matured_outcomes(history: History, actions: pd.DataFrame, *, as_of: pd.Timestamp,
                     load_bundle: Callable[[str], ChurnBundle]) -> tuple[pd.DataFrame, list[str]]:
    """The outbox's actions whose horizon has passed by ``as_of``, labelled (see module doc)."""
    if actions.empty:
        raise UpliftDataError("the outbox holds no action yet: score with outreach "
                              "(churnlens score --outreach) and rules with a control_share first")
    return action_outcomes(history, actions, as_of=as_of, load_bundle=load_bundle)
