"""One monitoring run: realized quality by model version and week, drift, and the verdict.

`run_monitor` reads the score history from the outbox, asks `load_bundle` for
the bundle of each model version that wrote scores, joins the scores with
what happened (`outcomes`), measures drift at each version's latest scoring
date inside the drift window (`stability`), and decides (`verdict`) for the
version that wrote the newest scores, the one being served. Problems that
stop part of the check (a version missing from the registry, no matured
outcome yet) become sentences in ``notes``, never a number computed on nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from features.dataset import Dataset
from features.history import History
from models.bundle import ChurnBundle
from serving.monitoring.outcomes import realized_outcomes
from serving.monitoring.quality import MIN_OUTCOMES, held_out_figures, realized_quality
from serving.monitoring.stability import MIN_CUSTOMERS, Drift, measure_drift
from serving.monitoring.verdict import Thresholds, Verdict, decide
from training.outcomes import by_model_version

DRIFT_WINDOW_DAYS = 30


class MonitorInputError(ValueError):
    """Monitoring cannot run at all on this input; the message says why."""


@dataclass(frozen=True)
class MonitorResult:
    """What `run_monitor` found."""

    as_of: pd.Timestamp
    quality: pd.DataFrame          # realized figures by version and week (week NaT = all)
    held_out: dict[str, dict[str, float]]
    drift: dict[str, Drift]
    verdict: Verdict
    judged_version: str | None
    notes: list[str] = field(default_factory=list)

    def realized(self, version: str) -> dict[str, float] | None:
        """The pooled realized figures of one version (None when it has none)."""
        return _pooled(self.quality, version)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The figures as tables (``quality``, ``held_out``, ``drift``), for MLflow artifacts."""
        held = pd.DataFrame([{"model_version": version, **figures}
                             for version, figures in sorted(self.held_out.items())])
        drift = pd.concat(
            [d.table.assign(model_version=version, scored_at=d.scored_at, customers=d.customers)
             for version, d in sorted(self.drift.items())]
        ) if self.drift else pd.DataFrame(columns=["name", "psi", "kind", "model_version"])
        return {"quality": self.quality, "held_out": held, "drift": drift}

    def gauges(self) -> dict[tuple[str, str], float]:
        """(metric, model version) → value, for MLflow, Prometheus and the stored results."""
        out: dict[tuple[str, str], float] = {}
        for version in sorted({*self.held_out, *self.drift}):
            realized = self.realized(version) or {}
            for name in ("roc_auc", "pr_auc", "top_decile_lift", "ece", "outcomes",
                         "churn_rate", "clv_predicted_total", "clv_actual_total"):
                value = realized.get(name, math.nan)
                if value is not None and not math.isnan(float(value)):
                    out[(f"realized_{name}", version)] = float(value)
            for name, value in self.held_out.get(version, {}).items():
                if not math.isnan(value):
                    out[(f"held_out_{name}", version)] = value
            drift = self.drift.get(version)
            if drift is not None:
                out[("score_psi", version)] = drift.score_psi
                top = drift.top_features(1)
                if len(top):
                    out[("max_feature_psi", version)] = float(top["psi"].iloc[0])
        if self.judged_version is not None:
            out[("retrain", self.judged_version)] = float(self.verdict.retrain)
        return out


def run_monitor(
    dataset: Dataset, scores: pd.DataFrame, *, as_of: pd.Timestamp,
    load_bundle: Callable[[str], ChurnBundle],
    drift_window_days: int = DRIFT_WINDOW_DAYS, thresholds: Thresholds = Thresholds(),
) -> MonitorResult:
    """Check stored ``scores`` (`Outbox.score_history`) against ``dataset`` as of T.

    ``load_bundle(version)`` returns the bundle of a registered model version
    and raises `LookupError` when the registry has no such version.
    """
    as_of = pd.Timestamp(as_of)
    scores = scores[scores["as_of"] < as_of]
    if scores.empty:
        raise MonitorInputError(
            f"the outbox holds no score before {as_of.date()}: score customers with "
            "`churnlens score --outreach` (or the API) first")
    history = History(dataset.known_at(as_of))  # outcomes known by as_of, statuses too
    notes: list[str] = []
    joined: list[pd.DataFrame] = []
    held_out: dict[str, dict[str, float]] = {}
    drift: dict[str, Drift] = {}
    window_start = as_of - pd.Timedelta(days=drift_window_days)
    for version, rows, bundle in by_model_version(
            scores, load_bundle, notes=notes,
            unknown="{count:,} score(s) of model version {version} cannot be checked: {error}"):
        held_out[str(version)] = held_out_figures(bundle.metrics)
        outcome = realized_outcomes(history, rows, bundle=bundle, as_of=as_of)
        judged = int(outcome["churned"].notna().sum())
        if judged == 0:
            first = rows["as_of"].min() + pd.Timedelta(days=bundle.horizon_days)
            notes.append(
                f"model version {version}: no score has a matured outcome yet (its horizon is "
                f"{bundle.horizon_days} days; the first matures on {first.date()})")
        elif judged < MIN_OUTCOMES:
            notes.append(f"model version {version}: only {judged} matured outcome(s); at least "
                         f"{MIN_OUTCOMES} are needed for realized figures")
        joined.append(outcome)
        recent = rows[rows["as_of"] >= window_start]
        if recent.empty:
            notes.append(f"model version {version}: no score in the {drift_window_days} days "
                         f"before {as_of.date()} (the latest is from "
                         f"{rows['as_of'].max().date()}); drift is measured on recent scores "
                         "only")
            continue
        if not bundle.drift_reference:
            notes.append(f"model version {version} has no drift reference (trained before "
                         "churnlens stored one); drift is not measured")
            continue
        measured = measure_drift(history, recent, bundle=bundle, model_version=str(version))
        if measured is not None:
            drift[str(version)] = measured
        else:
            notes.append(f"model version {version}: too few customers scored on "
                         f"{recent['as_of'].max().date()} to measure drift (at least "
                         f"{MIN_CUSTOMERS} with a probability are needed)")
    quality = realized_quality(pd.concat(joined) if joined else scores.iloc[0:0].assign(
        churned=pd.Series(dtype=float), actual_value=pd.Series(dtype=float)))
    judged_version = _served_version(scores, held_out)
    verdict = _verdict(judged_version, quality, held_out, drift, thresholds, notes)
    return MonitorResult(as_of=as_of, quality=quality, held_out=held_out, drift=drift,
                         verdict=verdict, judged_version=judged_version, notes=notes)


def _served_version(scores: pd.DataFrame, known: dict[str, dict[str, float]]) -> str | None:
    """The version that wrote the newest scores, among those the registry still has."""
    usable = scores[scores["model_version"].isin(list(known))]
    if usable.empty:
        return None
    return str(usable.sort_values(["as_of", "scored_at"])["model_version"].iloc[-1])


def _pooled(quality: pd.DataFrame, version: str) -> dict[str, float] | None:
    """The realized figures of ``version`` over all weeks (None when it has none)."""
    rows = quality[(quality["model_version"] == version) & quality["week"].isna()]
    return None if rows.empty else {str(k): v for k, v in rows.iloc[0].items()}


def _verdict(version: str | None, quality: pd.DataFrame, held_out: dict[str, dict[str, float]],
             drift: dict[str, Drift], thresholds: Thresholds, notes: list[str]) -> Verdict:
    if version is None:
        return decide(model_version="?", realized=None, held_out={}, drift_top=None,
                      score_psi=None, thresholds=thresholds, notes=notes)
    realized = _pooled(quality, version)
    measured = drift.get(version)
    top = None
    if measured is not None and len(measured.top_features(1)):
        first = measured.top_features(1).iloc[0]
        top = (str(first["name"]), float(first["psi"]))
    return decide(model_version=version, realized=realized, held_out=held_out[version],
                  drift_top=top, score_psi=measured.score_psi if measured else None,
                  thresholds=thresholds, notes=notes)
