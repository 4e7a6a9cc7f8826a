"""Whether to retrain, and why: one line and an exit code a scheduler can act on.

The rules (documented in docs/monitoring.md, thresholds are `Thresholds`):

- *ranking decayed*: the realized churn ROC AUC of the model version being
  judged is more than ``auc_drop`` below its held-out figure from training;
- *calibration off*: its realized expected calibration error is more than
  ``ece_rise`` above the held-out one;
- *drift*: the population stability index of the churn score, or of any
  feature, is above ``psi_limit`` (0.25, the usual "major shift").

Exit codes: 0 keep the model, 1 retrain, 2 nothing could be checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

KEEP, RETRAIN, UNCHECKED = 0, 1, 2


@dataclass(frozen=True)
class Thresholds:
    """The margins the verdict uses; see the module doc."""

    auc_drop: float = 0.05
    ece_rise: float = 0.05
    psi_limit: float = 0.25


@dataclass(frozen=True)
class Verdict:
    """The decision, the reasons behind it, and what was checked."""

    exit_code: int
    reasons: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def retrain(self) -> bool:
        return self.exit_code == RETRAIN

    @property
    def line(self) -> str:
        if self.exit_code == RETRAIN:
            return "RETRAIN: " + "; ".join(self.reasons)
        if self.exit_code == UNCHECKED:
            return "UNCHECKED: " + "; ".join(self.reasons)
        return "KEEP: " + "; ".join(self.checked)


def decide(*, model_version: str, realized: dict[str, float] | None,
           held_out: dict[str, float], drift_top: tuple[str, float] | None,
           score_psi: float | None, thresholds: Thresholds = Thresholds(),
           notes: list[str] | None = None) -> Verdict:
    """Apply the rules to one model version's realized figures and drift."""
    reasons: list[str] = []
    checked: list[str] = []
    v = f"model version {model_version}"
    if realized is not None and not math.isnan(realized.get("roc_auc", math.nan)):
        auc, base = realized["roc_auc"], held_out.get("roc_auc", math.nan)
        if not math.isnan(base) and auc < base - thresholds.auc_drop:
            reasons.append(f"{v}: realized ROC AUC {auc:.3f} is more than "
                           f"{thresholds.auc_drop:g} below the held-out {base:.3f}")
        else:
            checked.append(f"realized ROC AUC {auc:.3f} (held out {base:.3f})")
        ece, base_ece = realized["ece"], held_out.get("ece", math.nan)
        if not math.isnan(base_ece) and ece > base_ece + thresholds.ece_rise:
            reasons.append(f"{v}: calibration off, realized ECE {ece:.3f} against "
                           f"{base_ece:.3f} held out")
        else:
            checked.append(f"ECE {ece:.3f}")
    if score_psi is not None and not math.isnan(score_psi):
        if score_psi > thresholds.psi_limit:
            reasons.append(f"{v}: the churn score drifted (PSI {score_psi:.2f} > "
                           f"{thresholds.psi_limit:g})")
        else:
            checked.append(f"score PSI {score_psi:.2f}")
    if drift_top is not None:
        name, value = drift_top
        if value > thresholds.psi_limit:
            reasons.append(f"{v}: feature {name} drifted (PSI {value:.2f} > "
                           f"{thresholds.psi_limit:g})")
        else:
            checked.append(f"largest feature PSI {value:.2f} ({name})")
    if reasons:
        return Verdict(RETRAIN, reasons, checked)
    if not checked:
        return Verdict(UNCHECKED, list(notes or ["nothing to check"]), checked)
    if realized is None or math.isnan(realized.get("roc_auc", math.nan)):
        checked.append("realized quality not checked yet (too few matured outcomes)")
    return Verdict(KEEP, reasons, [f"{v}", *checked])
