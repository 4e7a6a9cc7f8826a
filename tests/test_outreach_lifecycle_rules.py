"""Rules that select on the lifecycle stage, and the built-in win-back and onboarding rules."""

from __future__ import annotations

import numpy as np
import pytest

from models.reasons import ReasonTable
from serving.outreach.rules import RulesError, load_rules, parse_rules

STAGED = """
rules:
  - name: lapsed-valuable
    lifecycle_stages: [lapsed]
    value_segments: [high]
    action: win_back_offer
    channel: file:a.jsonl
    cooldown_days: 30
    payload: {stage: "{lifecycle_stage}"}
  - name: newcomers
    lifecycle_stages: [new, active]
    action: onboarding_nudge
    channel: file:b.jsonl
    cooldown_days: 30
"""


def test_rules_select_on_the_lifecycle_stage(score_record):
    rules = parse_rules(STAGED)
    lapsed = score_record("a", lifecycle_stage="lapsed", risk_tier="not_applicable",
                          churn_probability=None, value_at_risk=None, reasons=[])
    triggered = rules.evaluate(lapsed)
    assert [t.action for t in triggered] == ["win_back_offer"]
    assert triggered[0].payload == {"stage": "lapsed"}
    cheap_lapsed = score_record("b", lifecycle_stage="lapsed", value_segment="low")
    assert rules.evaluate(cheap_lapsed) == []
    assert [t.action for t in rules.evaluate(score_record("c", lifecycle_stage="new"))] == [
        "onboarding_nudge"]
    assert rules.evaluate(score_record("d", lifecycle_stage="declining")) == []
    assert rules.evaluate(score_record("e")) == [], "a record without a stage matches no stage"


def test_column_wise_actions_agree_with_records_on_stages(score_record):
    rules = parse_rules(STAGED)
    stages = np.array(["lapsed", "lapsed", "new", "declining", "never_active", "active"],
                      dtype=object)
    segments = np.array(["high", "low", "low", "high", "high", "mid"], dtype=object)
    n = len(stages)
    tiers = np.full(n, "not_applicable", dtype=object)
    nan = np.full(n, np.nan)
    got = rules.first_actions(risk_tier=tiers, value_segment=segments, churn_probability=nan,
                              clv=np.full(n, 10.0), value_at_risk=nan,
                              reasons=ReasonTable.empty(n, ["days_since_last_order"]),
                              lifecycle_stage=stages)
    expected = []
    for i in range(n):
        record = score_record(f"c{i}", lifecycle_stage=stages[i], value_segment=segments[i],
                              risk_tier="not_applicable", churn_probability=None,
                              value_at_risk=None, clv=10.0, reasons=[])
        triggered = rules.evaluate(record)
        expected.append(triggered[0].action if triggered else None)
    assert got.tolist() == expected == ["win_back_offer", None, "onboarding_nudge", None, None,
                                        "onboarding_nudge"]


def test_an_unknown_stage_is_named_with_its_rule_and_field():
    with pytest.raises(RulesError) as error:
        parse_rules(STAGED.replace("[lapsed]", "[dormant]"))
    message = str(error.value)
    assert "rule 'lapsed-valuable'" in message and "lifecycle_stages" in message
    with pytest.raises(RulesError, match=r"lifecycle_stages.*at least one"):
        parse_rules(STAGED.replace("[lapsed]", "[]"))


def test_built_in_rules_win_back_lapsed_valuable_customers_and_onboard_stalling_new_ones(
        score_record):
    rules = load_rules(None)
    lapsed = score_record("a", lifecycle_stage="lapsed", risk_tier="not_applicable",
                          churn_probability=None, value_at_risk=None, reasons=[])
    assert [t.rule for t in rules.evaluate(lapsed)] == ["lapsed-win-back"]
    assert rules.evaluate(lapsed.model_copy(update={"value_segment": "mid"})) == []
    stalling = score_record("b", lifecycle_stage="new", risk_tier="medium", value_segment="low",
                            churn_probability=0.4, reasons=[])
    assert rules.evaluate(stalling)[0].action == "onboarding_nudge"
    settled = score_record("c", lifecycle_stage="new", risk_tier="low", value_segment="low",
                           churn_probability=0.05, reasons=[])
    assert all(t.action != "onboarding_nudge" for t in rules.evaluate(settled)), (
        "a new customer whose activity does not stall needs no nudge")
