"""Who a rule set contacts, by what their reasons mean and by why they really churned.

A reactivation e-mail ("we miss you") fits a customer whose risk comes from
an order or visit gap; to a customer who has just written to support it reads
as not listening. `audit_rules` counts, for one rule set and one batch of
score records, the actions that go to the wrong reasons, and, when the churn
cause of each customer is known (the generator's ``ground_truth.csv``), how
many customers who then churned for a bad experience or support issues got the
experience follow-up (or a success call) rather than a sales e-mail or offer.
`bench/rules_ground_truth.py` and the default rules'
test run it on generated data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from serving.outreach.rules import RuleSet
from serving.schemas import ScoreRecord

#: reason kinds that justify a reactivation e-mail
GAP_KINDS = ("order_gap", "visit_gap")
#: generator churn causes that an experience follow-up (not a sales e-mail) answers
EXPERIENCE_CAUSES = ("bad_experience", "support_issues")
#: generator churn causes that a reactivation e-mail answers
GAP_CAUSES = ("long_gap", "fading_engagement")


@dataclass(frozen=True)
class RuleAudit:
    """Counts of one rule set's actions on one batch of score records (see module doc)."""

    reactivation_emails: int
    reactivation_with_support_reason: int
    reactivation_without_gap_reason: int
    reactivation_to_experience_churners: int
    reactivation_to_gap_churners: int
    experience_churners_at_risk: int
    experience_churners_followed_up: int
    experience_churners_called: int
    experience_churners_sent_sales: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _top_kinds(record: ScoreRecord, within: int) -> set[str]:
    raising = sorted((r for r in record.reasons if r.contribution > 0),
                     key=lambda r: r.contribution, reverse=True)
    return {reason.kind for reason in raising[:within]}


def audit_rules(rules: RuleSet, records: Sequence[ScoreRecord], *,
                churn_causes: Mapping[str, str] | None = None, within: int = 3) -> RuleAudit:
    """Count what ``rules`` would do with ``records``.

    ``churn_causes`` maps a customer id to the cause of churn in the score's
    horizon (customers who did not churn then are left out); ``within`` is how
    many top reasons count as "among the top reasons".
    """
    causes = churn_causes or {}
    _, triggered = rules.recommend(list(records))
    actions: dict[str, set[str]] = {}
    for action in triggered:
        actions.setdefault(action.customer_id, set()).add(action.action)
    reactivated = [r for r in records if "reactivation_email" in actions.get(r.customer_id, ())]
    kinds = {r.customer_id: _top_kinds(r, within) for r in records}
    at_risk_experience = [r for r in records if r.risk_tier in ("medium", "high")
                          and causes.get(r.customer_id) in EXPERIENCE_CAUSES]
    return RuleAudit(
        reactivation_emails=len(reactivated),
        reactivation_with_support_reason=sum(
            "support_contact" in kinds[r.customer_id] for r in reactivated),
        reactivation_without_gap_reason=sum(
            not kinds[r.customer_id] & set(GAP_KINDS) for r in reactivated),
        reactivation_to_experience_churners=sum(
            causes.get(r.customer_id) in EXPERIENCE_CAUSES for r in reactivated),
        reactivation_to_gap_churners=sum(
            causes.get(r.customer_id) in GAP_CAUSES for r in reactivated),
        experience_churners_at_risk=len(at_risk_experience),
        experience_churners_followed_up=sum(
            "experience_follow_up" in actions.get(r.customer_id, ()) for r in at_risk_experience),
        experience_churners_called=sum(
            "success_call" in actions.get(r.customer_id, ()) for r in at_risk_experience),
        experience_churners_sent_sales=sum(
            bool(actions.get(r.customer_id, set()) & {"reactivation_email", "win_back_offer"})
            for r in at_risk_experience),
    )
