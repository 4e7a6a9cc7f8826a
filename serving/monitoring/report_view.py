"""The report's "Did the scores come true?" section: monitoring and outreach effect, as text.

Gathered with the same functions as ``churnlens monitor`` and ``churnlens
outreach effect`` (no MLflow run is logged and no gauge stored: a report only
reads). Anything missing — no outbox, no matured score, no registry — becomes a
sentence, so the rest of the report is never lost to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from features.dataset import Dataset


@dataclass
class LoopView:
    """Formatted rows for the template; empty lists when there is nothing to show."""

    quality: list[dict[str, str]] = field(default_factory=list)
    drift: list[dict[str, str]] = field(default_factory=list)
    verdict: str | None = None
    effects: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _fmt(value: Any, pattern: str = "{:.3f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return pattern.format(value)


def _ci(ci: tuple[float, float] | None, scale: float, pattern: str) -> str:
    if ci is None:
        return ""
    return f" [{pattern.format(scale * ci[0])}, {pattern.format(scale * ci[1])}]"


def gather_loop(dataset: Dataset, *, outbox_url: str, as_of: pd.Timestamp,
                rules_path: Path | None = None) -> LoopView:
    """Monitor the stored scores and measure each rule's effect, for the report."""
    from features.history import History
    from models.loading import missing_store
    from serving.monitoring.effect import EffectInputError, measure_effects
    from serving.monitoring.monitor import MonitorInputError, run_monitor
    from serving.monitoring.tracking import RegisteredBundles
    from serving.outreach.outbox import Outbox
    from serving.outreach.rules import load_rules

    view = LoopView()
    if missing_store(outbox_url) is not None:
        view.notes.append("No outbox yet, so no stored score or action can be checked.")
        return view
    store = Outbox(outbox_url)
    try:
        scores = store.score_history(until=as_of.to_pydatetime())
        actions = store.action_history()
    finally:
        store.close()
    bundles = RegisteredBundles()
    try:
        result = run_monitor(dataset, scores, as_of=as_of, load_bundle=bundles)
    except MonitorInputError as error:
        view.notes.append(str(error))
    else:
        view.notes.extend(result.notes)
        view.verdict = result.verdict.line
        row: Any
        for row in result.quality.itertuples(index=False):
            view.quality.append({
                "version": str(row.model_version),
                "week": "all weeks" if pd.isna(row.week) else f"{pd.Timestamp(row.week):%Y-%m-%d}",
                "outcomes": f"{int(row.outcomes):,}", "churn_rate": _fmt(row.churn_rate, "{:.1%}"),
                "roc_auc": _fmt(row.roc_auc), "pr_auc": _fmt(row.pr_auc),
                "lift": _fmt(row.top_decile_lift, "{:.2f}"), "ece": _fmt(row.ece),
                "clv_predicted": _fmt(row.clv_predicted_total, "{:,.0f}"),
                "clv_actual": _fmt(row.clv_actual_total, "{:,.0f}"), "held_out": ""})
            held = result.held_out.get(str(row.model_version))
            if pd.isna(row.week) and held:
                view.quality.append({
                    "version": str(row.model_version), "week": "held out at training",
                    "outcomes": "", "churn_rate": "", "roc_auc": _fmt(held.get("roc_auc")),
                    "pr_auc": _fmt(held.get("pr_auc")),
                    "lift": _fmt(held.get("top_decile_lift"), "{:.2f}"),
                    "ece": _fmt(held.get("ece")), "clv_predicted": "", "clv_actual": "",
                    "held_out": "yes"})
        for version, drift in sorted(result.drift.items()):
            view.drift.append({"version": version, "name": "churn score",
                               "psi": f"{drift.score_psi:.3f}"})
            for item in drift.top_features(5).itertuples(index=False):
                view.drift.append({"version": version, "name": str(item.name),
                                   "psi": f"{item.psi:.3f}"})
    if actions.empty:
        view.notes.append("No outreach action recorded yet, so no effect can be measured.")
        return view
    costs = {rule.name: rule.cost for rule in load_rules(rules_path).rules}
    try:
        effects, notes = measure_effects(History(dataset), actions, as_of=as_of, costs=costs,
                                         load_bundle=bundles)
    except EffectInputError as error:
        view.notes.append(str(error))
        return view
    view.notes.extend(notes)
    for e in effects:
        view.effects.append({
            "rule": e.rule, "action": e.action, "treated": f"{e.treated:,}",
            "control": f"{e.control:,}",
            "reduction": (_fmt(e.churn_reduction, "{:.1%}")
                          + _ci(e.churn_reduction_ci, 100, "{:.1f}%")),
            "gain": _fmt(e.revenue_gain, "{:,.2f}") + _ci(e.revenue_gain_ci, 1, "{:,.2f}"),
            "per_save": _fmt(e.contacts_per_save, "{:,.1f}"),
            "net": _fmt(e.value_saved_net, "{:,.0f}"), "note": e.note or ""})
    return view
