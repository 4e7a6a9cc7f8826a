"""The champion gate: whether a newly trained model replaces the current champion.

Both models are measured on the same held-out snapshot (`training.evaluate`);
the rule is logged with every run, so a promotion can be explained later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

GATE_RULE = (
    "promote when there is no champion, or when on the same held-out snapshot the challenger's "
    "churn ROC AUC is at most {tol} below the champion's AND it is better on churn ROC AUC or on "
    "CLV Spearman, or it brings uplift models for outreach rules the champion has none for"
)


def _figure(value: float | None) -> str:
    """A metric for a message; a model without CLV has no CLV figure."""
    return "none" if value is None else f"{value:.4f}"


def champion_gate(challenger: Mapping[str, float], champion: Mapping[str, float] | None, *,
                  tolerance: float = 0.002, new_uplift_rules: Sequence[str] = ()
                  ) -> tuple[bool, str]:
    """Decide whether the challenger replaces the champion; return (promote, reason).

    Both metric dicts must come from `evaluate_bundle` on the same held-out rows.
    ``new_uplift_rules``: outreach rules the challenger has an uplift model of and
    the champion has not (retraining with ``--uplift`` on the same data keeps
    churn and CLV as they were, and must still reach serving).
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
    if new_uplift_rules:
        return True, (f"uplift models for {', '.join(new_uplift_rules)}, which the champion "
                      f"has none for, and not worse ({figures})")
    return False, f"not better than the champion on either ({figures})"
