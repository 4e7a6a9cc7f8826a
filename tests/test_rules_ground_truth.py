"""The built-in outreach rules against the generator's ground truth (why customers churned)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from features.labels import default_definition
from models.loading import LoadedModel
from serving.outreach.audit import audit_rules
from serving.outreach.rules import load_rules
from serving.scorer import Scorer
from training.run import fit_on_dataset

BY_NAME = Path(__file__).parents[1] / "bench" / "rules_by_name.yaml"
HORIZON = pd.Timedelta(days=90)


@pytest.fixture(scope="module")
def scored(generated, fast_params):
    """A mixed business scored 90 days before its end, and who churned in those 90 days why."""
    data, dataset = generated("mixed", customers=2000, seed=7)
    as_of = dataset.default_as_of() - HORIZON
    definition = default_definition(dataset)
    params = replace(fast_params, definition=definition)
    fit, _ = fit_on_dataset(dataset, as_of=as_of, params=params)
    loaded = LoadedModel(bundle=fit.bundle, name="t", version="1", alias=None, run_id=None,
                         trained_at=None)
    records = Scorer(loaded).score_dataset(dataset, as_of=as_of)
    truth = data.ground_truth
    window = (truth["churned_at"] >= as_of) & (truth["churned_at"] < as_of + HORIZON)
    causes = dict(zip(truth.loc[window, "customer_id"], truth.loc[window, "churn_cause"],
                      strict=True))
    return records, causes


@pytest.mark.slow
def test_default_rules_send_reactivation_on_gaps_and_follow_up_bad_experiences(scored):
    records, causes = scored
    before = audit_rules(load_rules(BY_NAME), records, churn_causes=causes)
    after = audit_rules(load_rules(None), records, churn_causes=causes)
    assert before.reactivation_with_support_reason > 0, (
        "the name-pattern rule's days_since_last_* also matches support-ticket recency")
    assert after.reactivation_emails > 0
    assert after.reactivation_with_support_reason == 0, (
        "no 'we miss you' e-mail to a customer whose top reasons include a support contact")
    assert after.reactivation_without_gap_reason == 0, (
        "every reactivation e-mail has an order or visit gap among its top reasons")
    assert after.experience_churners_at_risk >= 10, "enough bad-experience churners to judge"
    reached_before = before.experience_churners_followed_up + before.experience_churners_called
    reached_after = after.experience_churners_followed_up + after.experience_churners_called
    assert reached_after > reached_before
    assert reached_after >= 0.5 * after.experience_churners_at_risk, (
        f"customers who churned for a bad experience or support issues (medium or high risk) "
        f"get the experience follow-up or a call: {after}")
    assert after.experience_churners_sent_sales < before.experience_churners_sent_sales
