"""Did the outreach work? Treated against control for each rule, with 95% intervals.

A rule with a ``control_share`` holds out a random share of the customers it
matches (`serving.outreach.rules.held_out`); they are recorded in the outbox
and never contacted. Once an action's churn horizon has passed, both groups
are labelled with the definition of the model version that scored them:

- churn rate of each group, and the reduction (control − treated) with a
  95% Agresti–Caffo interval for a difference of two proportions;
- revenue per customer in the horizon, and the gain (treated − control) with a
  95% Welch (normal) interval;
- customers contacted per customer saved (1 / reduction) and the value saved
  net of the rule's ``cost``: contacted × (revenue gain − cost).

Groups are compared as assigned (intention to treat): a treated action that
failed to deliver still counts as treated, so a broken webhook shows up as a
smaller effect rather than disappearing. With fewer than `MIN_GROUP`
customers in either group the figures are "not enough data".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.history import History
from models.bundle import ChurnBundle
from training.outcomes import action_outcomes

MIN_GROUP = 30
Z95 = 1.959963984540054


class EffectInputError(ValueError):
    """The effect cannot be measured at all on this input; the message says why."""


@dataclass(frozen=True)
class RuleEffect:
    """Treated against control for one rule (figures are None when there is not enough data)."""

    rule: str
    action: str
    treated: int
    control: int
    churn_treated: float | None = None
    churn_control: float | None = None
    churn_reduction: float | None = None
    churn_reduction_ci: tuple[float, float] | None = None
    revenue_treated: float | None = None
    revenue_control: float | None = None
    revenue_gain: float | None = None
    revenue_gain_ci: tuple[float, float] | None = None
    contacts_per_save: float | None = None
    cost: float | None = None
    value_saved_net: float | None = None
    note: str | None = None

    @property
    def measured(self) -> bool:
        return self.churn_reduction is not None


def difference_ci(p_treated: float, n_treated: int, p_control: float, n_control: int
                  ) -> tuple[float, tuple[float, float]]:
    """Churn reduction (control − treated) and its 95% Agresti–Caffo interval.

    The interval adds one churned and one retained customer to each group before
    the Wald formula: it keeps close to 95% coverage for small groups and rates
    near 0 or 1, where the plain Wald interval collapses to a point (a control
    group that all churned would give a zero-width interval).
    """
    d = p_control - p_treated
    churned_t, churned_c = p_treated * n_treated, p_control * n_control
    at = (churned_t + 1) / (n_treated + 2)
    ac = (churned_c + 1) / (n_control + 2)
    center = ac - at
    se = math.sqrt(at * (1 - at) / (n_treated + 2) + ac * (1 - ac) / (n_control + 2))
    return d, (center - Z95 * se, center + Z95 * se)


def mean_gain_ci(treated: np.ndarray, control: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Mean gain (treated − control) and its 95% Welch (normal) interval."""
    d = float(treated.mean() - control.mean())
    se = math.sqrt(treated.var(ddof=1) / len(treated) + control.var(ddof=1) / len(control))
    return d, (d - Z95 * se, d + Z95 * se)


def rule_effect(rule: str, rows: pd.DataFrame, *, cost: float | None,
                min_group: int = MIN_GROUP) -> RuleEffect:
    """The effect of one rule from its matured, labelled actions."""
    rows = rows[rows["churned"].notna()]
    treated = rows[rows["assignment"] == "treated"]
    control = rows[rows["assignment"] == "control"]
    action = str(rows["action"].iloc[0]) if len(rows) else ""
    base: dict[str, Any] = {"rule": rule, "action": action, "treated": len(treated),
                            "control": len(control), "cost": cost}
    if min(len(treated), len(control)) < min_group:
        return RuleEffect(**base, note=(
            f"not enough data (n = {len(treated)} treated, {len(control)} control; at least "
            f"{min_group} of each with a matured outcome are needed)"))
    p_t, p_c = float(treated["churned"].mean()), float(control["churned"].mean())
    reduction, reduction_ci = difference_ci(p_t, len(treated), p_c, len(control))
    r_t = treated["revenue"].to_numpy(float)
    r_c = control["revenue"].to_numpy(float)
    gain, gain_ci = mean_gain_ci(r_t, r_c)
    net = None if cost is None else len(treated) * (gain - cost)
    return RuleEffect(
        **base, churn_treated=p_t, churn_control=p_c, churn_reduction=reduction,
        churn_reduction_ci=reduction_ci, revenue_treated=float(r_t.mean()),
        revenue_control=float(r_c.mean()), revenue_gain=gain, revenue_gain_ci=gain_ci,
        contacts_per_save=1 / reduction if reduction > 0 else None, value_saved_net=net,
        note=None if cost is not None else (
            f"rule {rule!r} is not in the rules file (renamed or removed since its actions "
            "fired): its cost is unknown, so the value saved is not netted"),
    )


def measure_effects(dataset_history: History, actions: pd.DataFrame, *, as_of: pd.Timestamp,
                    costs: dict[str, float], load_bundle: Callable[[str], ChurnBundle],
                    rule: str | None = None, min_group: int = MIN_GROUP,
                    ) -> tuple[list[RuleEffect], list[str]]:
    """Effects of every rule with actions (or only ``rule``), and notes on what was left out.

    ``costs`` maps the current rules file's rule names to their cost.
    """
    if rule is not None and rule not in set(actions["rule"]):
        known = ", ".join(sorted(set(actions["rule"]))) or "none"
        extra = "" if rule in costs else " (and the rules file has no rule of that name)"
        raise EffectInputError(f"no action of rule {rule!r} in the outbox{extra}; rules with "
                               f"actions: {known}")
    if rule is not None:
        actions = actions[actions["rule"] == rule]
    if actions.empty:
        raise EffectInputError("the outbox holds no action yet: score with outreach first")
    labelled, notes = action_outcomes(dataset_history, actions, as_of=pd.Timestamp(as_of),
                                      load_bundle=load_bundle)
    effects = []
    for name in sorted(set(actions["rule"])):
        rows = labelled[labelled["rule"] == name]
        if rows.empty:
            fired = actions[actions["rule"] == name]
            effects.append(RuleEffect(
                rule=name, action=str(fired["action"].iloc[0]), treated=0, control=0,
                cost=costs.get(name),
                note=f"no matured outcome yet (n = 0): the first of its {len(fired)} "
                     f"action(s) fired on {fired['as_of'].min().date()}"))
            continue
        effects.append(rule_effect(name, rows, cost=costs.get(name), min_group=min_group))
    return effects, notes
