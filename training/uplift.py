"""Uplift models from the outbox's matured outcomes: whom each rule's action helps.

``churnlens train --uplift`` reads every action of the outbox whose churn
horizon has passed by the training cut-off (treated and held-out control
customers alike, labelled by the churn definition and horizon of the newly
trained bundle, whichever version scored them: `matured_outcomes`), and fits,
per rule with enough of both, an uplift model (`models.uplift`) on the
customers' features as of the day the rule fired, prepared with the newly
trained bundle (the matrix it scores with). The models ship in that bundle;
scoring turns each into ``expected_saved_value`` = estimated churn reduction ×
CLV − the rule's cost.

Which learner a rule gets is chosen on its own outcomes (`choose_uplift`):
each candidate of `CANDIDATES` (two-model and X-learner, each from scratch and
starting from the churn model's probability) is cross-fitted, and the one whose
held-out ranking by expected saved value has the highest observed Qini
(`models.uplift.observed_qini`) is refitted on all of them. No learner wins
everywhere on the benchmark (docs/outreach.md), and one that starts from a churn
probability near 1 learns nothing. Value at risk is judged on the same outcomes,
so the notes say whether the rule's uplift ranking beats ranking by risk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.history import History
from features.pipeline import features_at
from models.bundle import ChurnBundle
from models.uplift import RuleUplift, observed_qini, uplift_estimator
from training.outcomes import outcomes_for

#: the learners `choose_uplift` compares, in order of preference on a tie: (method, starts
#: from the churn model's probability as LightGBM ``init_score``, boosting rounds)
CANDIDATES: tuple[tuple[str, bool, int], ...] = (
    ("two-model", True, 50), ("x-learner", True, 50),
    ("two-model", False, 150), ("x-learner", False, 150))
#: folds of the cross-fitting that chooses among them
FOLDS = 5
#: bootstrap draws of the interval of the uplift ranking's Qini against value at risk's
BOOTSTRAP_DRAWS = 200
#: customers of each group a learner needs (`models.uplift`)
_MIN_FIT = 20
#: customers with a matured outcome needed in each group (as `churnlens outreach effect`)
MIN_GROUP = 30


class UpliftDataError(ValueError):
    """No uplift model can be learned from the outbox; the message says why and what to do."""


def candidate_name(method: str, on_churn_model: bool) -> str:
    """How notes and the benchmark name a learner: ``x-learner on the churn model``."""
    return method + (" on the churn model" if on_churn_model else "")


@dataclass(frozen=True)
class UpliftChoice:
    """The learner chosen for one rule and the cross-fitted observed Qini of every ranking."""

    method: str
    on_churn_model: bool
    num_boost_round: int
    qini: dict[str, float]
    value_at_risk_qini: float
    folds: int
    #: 95% bootstrap interval of the chosen learner's Qini minus value at risk's
    gain_interval: tuple[float, float]

    @property
    def name(self) -> str:
        return candidate_name(self.method, self.on_churn_model)

    @property
    def against_value_at_risk(self) -> str:
        """``better``, ``worse`` or ``undecided``: the gain interval above, below or across 0."""
        low, high = self.gain_interval
        return "better" if low > 0 else "worse" if high < 0 else "undecided"


def _folds(treated: np.ndarray, *, folds: int, seed: int) -> np.ndarray:
    """Each row's fold, drawn within treated and control so every fold has both."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(treated), dtype=int)
    for group in (treated, ~treated):
        rows = np.flatnonzero(group)
        fold[rows] = rng.permutation(len(rows)) % folds
    return fold


def choose_uplift(X: pd.DataFrame, treated: np.ndarray, churned: np.ndarray, *,
                  churn_probability: np.ndarray, clv: np.ndarray, seed: int = 0,
                  folds: int = FOLDS,
                  candidates: tuple[tuple[str, bool, int], ...] = CANDIDATES) -> UpliftChoice:
    """The candidate whose cross-fitted ranking by expected saved value has the best Qini.

    Each candidate learns on all folds but one and ranks the held-out fold's
    customers by estimated churn reduction × CLV (the rule's cost shifts every
    customer alike); the observed Qini of those rankings over all customers
    decides, ties going to the earlier candidate. Ranking by value at risk
    (churn probability × CLV) is judged on the same outcomes. Without a CLV (a
    bundle with no revenue) customers are ranked by the reduction alone.
    """
    treated = np.asarray(treated, dtype=bool)
    churned = np.asarray(churned, dtype=float)
    probability = np.asarray(churn_probability, dtype=float)
    clv = np.asarray(clv, dtype=float)
    value = np.nan_to_num(clv, nan=0.0) if np.isfinite(clv).any() else np.ones(len(clv))
    smallest = int(min(treated.sum(), (~treated).sum()))
    # enough folds that every training part keeps _MIN_FIT customers of each group
    while smallest - -(-smallest // folds) < _MIN_FIT and folds < smallest:
        folds += 1
    fold = _folds(treated, folds=folds, seed=seed)
    qini: dict[str, float] = {}
    rankings: dict[str, np.ndarray] = {}
    for method, on_churn_model, rounds in candidates:
        held_out = np.zeros(len(churned))
        for k in range(folds):
            fit, out = fold != k, fold == k
            estimator = uplift_estimator(method, num_boost_round=rounds, seed=seed)
            estimator.fit(X[fit], treated[fit], churned[fit],
                          baseline=probability[fit] if on_churn_model else None)
            held_out[out] = estimator.predict(
                X[out], baseline=probability[out] if on_churn_model else None)
        qini[candidate_name(method, on_churn_model)] = observed_qini(held_out * value, treated,
                                                                     churned)
        rankings[candidate_name(method, on_churn_model)] = held_out * value
    best = max(candidates, key=lambda c: qini[candidate_name(c[0], c[1])])
    at_risk = probability * value
    chosen = rankings[candidate_name(best[0], best[1])]
    return UpliftChoice(method=best[0], on_churn_model=best[1], num_boost_round=best[2],
                        qini=qini, value_at_risk_qini=observed_qini(at_risk, treated, churned),
                        folds=folds, gain_interval=_gain_interval(
                            chosen, at_risk, treated, churned, seed=seed))


def _gain_interval(ranking: np.ndarray, reference: np.ndarray, treated: np.ndarray,
                   churned: np.ndarray, *, seed: int, draws: int = BOOTSTRAP_DRAWS
                   ) -> tuple[float, float]:
    """95% paired bootstrap interval of Qini(ranking) − Qini(reference) over the customers.

    The chosen learner's Qini is the best of several, so it is biased upwards;
    the interval only says when the outcomes are too few to tell the rankings
    apart (the benchmark measures how far to trust it).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 17]))
    n = len(churned)
    gains = np.empty(draws)
    for i in range(draws):
        rows = rng.integers(0, n, n)
        gains[i] = (observed_qini(ranking[rows], treated[rows], churned[rows])
                    - observed_qini(reference[rows], treated[rows], churned[rows]))
    low, high = np.quantile(gains, [0.025, 0.975])
    return float(low), float(high)


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
                    seed: int = 0) -> tuple[RuleUplift, UpliftChoice]:
    """One rule's uplift model from its labelled actions (``assignment``, ``churned``),
    with the learner `choose_uplift` picks on them."""
    X = _matrix(bundle, history, rows)
    treated = (rows["assignment"] == "treated").to_numpy()
    churned = rows["churned"].to_numpy(float)
    probability = bundle.churn_probability(X)
    choice = choose_uplift(X, treated, churned, churn_probability=probability,
                           clv=bundle.clv(X), seed=seed)
    baseline = probability if choice.on_churn_model else None
    estimator = uplift_estimator(choice.method, num_boost_round=choice.num_boost_round,
                                 seed=seed)
    estimator.fit(X, treated, churned, baseline=baseline)
    estimated = estimator.predict(X, baseline=baseline)
    figures = {
        "treated": float(treated.sum()), "control": float((~treated).sum()),
        "observed_churn_reduction": float(churned[~treated].mean() - churned[treated].mean()),
        "estimated_churn_reduction": float(np.mean(estimated)),
        "crossfit_qini": choice.qini[choice.name],
        "crossfit_qini_value_at_risk": choice.value_at_risk_qini,
        "crossfit_qini_gain_low": choice.gain_interval[0],
        "crossfit_qini_gain_high": choice.gain_interval[1],
    }
    model = RuleUplift(rule=rule, action=str(rows["action"].iloc[0]), method=choice.method,
                       estimator=estimator, uses_baseline=choice.on_churn_model,
                       figures=figures)
    return model, choice


def fit_uplift(bundle: ChurnBundle, history: History, outcomes: pd.DataFrame, *,
               min_group: int = MIN_GROUP, seed: int = 0) -> UpliftFit:
    """An uplift model for every rule with ``min_group`` matured treated and control outcomes.

    ``outcomes`` are the outbox's actions with ``churned`` (`training.outcomes.
    outcomes_for`). Rules with too few are named in the notes; when no rule
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
        model, choice = fit_rule_uplift(bundle, history, rule, rows, seed=seed)
        models.append(model)
        metrics |= {f"uplift_{rule}_{k}": v for k, v in model.figures.items()}
        notes.append(
            f"uplift model of rule {rule} ({model.action}, {choice.name}, the best of "
            f"{len(choice.qini)} learners by cross-fitted Qini): {treated} treated, "
            f"{control} control; observed churn reduction "
            f"{model.figures['observed_churn_reduction']:.3f}, mean estimated "
            f"{model.figures['estimated_churn_reduction']:.3f}")
        notes.append(_against_risk(rule, choice))
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


def _against_risk(rule: str, choice: UpliftChoice) -> str:
    """One sentence: does the rule's uplift ranking beat ranking by value at risk?"""
    low, high = choice.gain_interval
    figures = (f"cross-fitted Qini {choice.qini[choice.name]:.4f} by expected saved value "
               f"against {choice.value_at_risk_qini:.4f} by value at risk, difference 95% "
               f"interval [{low:.4f}, {high:.4f}]")
    verdict = choice.against_value_at_risk
    if verdict == "better":
        return (f"rule {rule}: its uplift model ranks the customers its action helps better "
                f"than value at risk ({figures})")
    if verdict == "worse":
        return (f"rule {rule}: value at risk ranks the customers its action helps better "
                f"than its uplift model ({figures}); keep selecting them by risk rather than "
                "by min_expected_saved_value")
    return (f"rule {rule}: too few outcomes to tell whether its uplift model ranks the "
            f"customers its action helps better than value at risk ({figures}); until more "
            "have matured, prefer selecting them by risk over min_expected_saved_value")


def matured_outcomes(history: History, actions: pd.DataFrame, *, as_of: pd.Timestamp,
                     bundle: ChurnBundle) -> pd.DataFrame:
    """The outbox's actions whose horizon has passed by ``as_of``, labelled by ``bundle``.

    ``bundle`` is the one the uplift models ship in: its churn definition and
    horizon judge every action, not those of the version that scored it (a rule
    fired by an activity model teaches an inactivity model how contacting
    changes inactivity churn, the churn its probability and its
    ``expected_saved_value`` are about).
    """
    if actions.empty:
        raise UpliftDataError("the outbox holds no action yet: score with outreach "
                              "(churnlens score --outreach) and rules with a control_share first")
    return outcomes_for(history, actions, bundle=bundle, as_of=as_of)
