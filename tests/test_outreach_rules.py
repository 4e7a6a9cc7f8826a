"""Outreach rules: validation messages that name the rule and field, evaluation order."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from serving.outreach.rules import RulesError, load_rules, parse_rules
from serving.schemas import Reason

RULE = """
rules:
  - name: win-back
    risk_tiers: [high]
    action: win_back_offer
    channel: file:out.jsonl
    cooldown_days: 30
"""


def rules_with(**fields: object) -> str:
    lines = "".join(f"    {key}: {value}\n" for key, value in fields.items())
    return RULE + lines


def _reasons(*kinds: str) -> list[Reason]:
    """Reasons of the given kinds, strongest first (the feature names say nothing)."""
    return [Reason(feature=f"feature_{i}", value=1.0, contribution=1.0 - i / 10,
                   text=f"{kind} sentence.", kind=kind) for i, kind in enumerate(kinds)]


def test_default_rules_load_and_follow_retention_practice(score_record):
    rules = load_rules(None)
    names = [rule.name for rule in rules.rules]
    assert names[:4] == ["success-call", "experience-follow-up", "onboarding-nudge",
                         "win-back"]
    assert all(rule.channel.startswith("file:") for rule in rules.rules), "offline by default"

    def actions(**changes: object) -> list[str]:
        return [a.action for a in rules.evaluate(score_record("c", **changes))]

    assert actions(value_segment="high", risk_tier="high") == ["success_call"], "stop: true"
    assert actions(value_segment="low", reasons=_reasons("order_gap", "tenure")) == [
        "win_back_offer"]
    assert actions(value_segment="low") == ["experience_follow_up"], (
        "returns among the top reasons: ask what went wrong, no discount")
    medium = {"value_segment": "mid", "risk_tier": "medium", "churn_probability": 0.4}
    assert actions(**medium, reasons=_reasons("order_gap", "spend")) == ["reactivation_email"]
    assert actions(**medium, reasons=_reasons("tenure", "visit_gap")) == ["reactivation_email"]
    assert actions(**medium, reasons=_reasons("order_gap", "support_contact")) == [
        "experience_follow_up"], "no 'we miss you' e-mail to someone who contacted support"
    assert actions(**medium, reasons=_reasons("support_contact", "tenure")) == [
        "experience_follow_up"]
    assert actions(**medium, reasons=_reasons("engagement_drop", "spend", "tenure")) == [], (
        "no order or visit gap: no reactivation e-mail")
    assert actions(**medium, reasons=_reasons("spend", "tenure", "attribute", "order_gap")) == [
        ], "the gap must be among the top three reasons"
    assert actions(risk_tier="low", churn_probability=0.05, reasons=[]) == ["upgrade_nudge"]
    assert actions(risk_tier="not_applicable", churn_probability=None, value_at_risk=None,
                   reasons=[]) == []


def test_the_first_matching_rule_is_the_recommendation(score_record):
    rules = load_rules(None)
    records, triggered = rules.recommend([
        score_record("a", value_segment="mid", risk_tier="medium", churn_probability=0.4,
                     reasons=_reasons("order_gap")),
        score_record("b", risk_tier="low", value_segment="low", reasons=[]),
        score_record("c", risk_tier="low", value_segment="high", churn_probability=0.1),
    ])
    assert [r.recommended_action for r in records] == [
        "reactivation_email", None, "upgrade_nudge"]
    assert [t.customer_id for t in triggered] == ["a", "c"]


def test_kinds_and_names_select_together_and_unknown_kinds_are_refused(score_record):
    rules = parse_rules(rules_with(
        top_reasons="{features: ['return*'], kinds: [visit_gap], within: 2}"))
    assert len(rules.evaluate(score_record("c"))) == 1, "return_rate_365d by name"
    assert len(rules.evaluate(score_record("c", reasons=_reasons("tenure", "visit_gap")))) == 1
    assert rules.evaluate(score_record("c", reasons=_reasons("tenure", "spend"))) == []
    only_exclusion = parse_rules(rules_with(top_reasons="{exclude_kinds: [returns]}"))
    assert only_exclusion.evaluate(score_record("c")) == []
    assert len(only_exclusion.evaluate(score_record("c", reasons=_reasons("tenure")))) == 1
    with pytest.raises(RulesError) as error:
        parse_rules(rules_with(top_reasons="{kinds: [order_gaps]}"))
    assert "rule 'win-back' field 'top_reasons.kinds': unknown reason kind(s) ['order_gaps']" \
        in str(error.value) and "order_gap, visit_gap" in str(error.value)
    with pytest.raises(RulesError, match="give features, kinds or exclude_kinds"):
        parse_rules(rules_with(top_reasons="{within: 2}"))


def test_top_reasons_count_only_reasons_that_raise_the_risk(score_record):
    rules = parse_rules(rules_with(top_reasons="{features: [tenure*], within: 3}"))
    record = score_record("c1")  # tenure_days is a reason, but it lowers the risk
    assert rules.evaluate(record) == []
    rules = parse_rules(rules_with(top_reasons="{features: ['return*'], within: 1}"))
    assert rules.evaluate(record) == [], "return_rate is the second reason, not the first"
    rules = parse_rules(rules_with(top_reasons="{features: ['return*'], within: 2}"))
    assert len(rules.evaluate(record)) == 1


def test_numeric_conditions_and_missing_probability(score_record):
    rules = parse_rules(rules_with(min_churn_probability=0.8, min_clv=500, max_value_at_risk=600))
    assert len(rules.evaluate(score_record("c", churn_probability=0.81))) == 1
    assert rules.evaluate(score_record("c", churn_probability=0.79)) == []
    assert rules.evaluate(score_record("c", clv=499.0)) == []
    assert rules.evaluate(score_record("c", value_at_risk=601.0)) == []
    assert rules.evaluate(score_record("c", churn_probability=None, value_at_risk=None)) == []


def test_payload_template_fills_named_fields_only(score_record):
    rules = parse_rules(rules_with(payload="""
      note: "Call {customer_id}: {top_reason}"
      probability: "{churn_probability}"
      literal: 3
      braces: "{{not a field}}"
"""))
    (action,) = rules.evaluate(score_record("c9", as_of=datetime(2024, 5, 1, tzinfo=UTC)))
    assert action.payload == {
        "note": "Call c9: No order for 94 days; retained customers typically order every "
                "21 days.",
        "probability": 0.81,
        "literal": 3,
        "braces": "{not a field}",
    }
    assert action.as_of == datetime(2024, 5, 1), "timestamps become naive UTC"
    assert action.why[0].startswith("No order for 94 days")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"min_churn_probability": 1.5},
         "rules.yaml: rule 'win-back' field 'min_churn_probability': must be between 0 and 1"),
        ({"min_clv": 10, "max_clv": 5}, "min_clv (10) is greater than max_clv (5)"),
        ({"cooldown_days": 0}, "rule 'win-back' field 'cooldown_days'"),
        ({"risk_tier": "[high]"}, "rule 'win-back' field 'risk_tier': unknown field"),
        ({"value_segments": "[gold]"}, "rule 'win-back' field 'value_segments.0'"),
        ({"top_reasons": "{features: [], within: 3}"}, "field 'top_reasons.features'"),
        ({"payload": "{note: '{customer}'}"}, "unknown field {customer}"),
        ({"payload": "{note: 'a {b'}"}, "unmatched '{'"),
        ({"payload": "{action_id: x}"}, "key 'action_id' is set by churnlens"),
    ],
)
def test_bad_rules_name_the_rule_and_the_field(fields, message):
    with pytest.raises(RulesError) as error:
        parse_rules(rules_with(**fields))
    assert message in str(error.value)


def test_bad_action_channel_and_names_are_explained():
    text = RULE.replace("win_back_offer", "free_pony").replace("file:out.jsonl", "ftp://x")
    with pytest.raises(RulesError) as error:
        parse_rules(text + RULE.replace("win-back", "Win Back").split("rules:\n")[1])
    message = str(error.value)
    assert "rule 'win-back' field 'action': must be one of win_back_offer, success_call" in message
    assert "rule 'win-back' field 'channel'" in message and "neither a webhook URL" in message
    assert "rule 'Win Back' field 'name'" in message
    with pytest.raises(RulesError, match="field 'name': the name is used by an earlier rule"):
        parse_rules(RULE + RULE.split("rules:\n")[1])


def test_file_level_errors(tmp_path):
    with pytest.raises(RulesError, match="expected a mapping with a 'rules:' list"):
        parse_rules("- just a list")
    with pytest.raises(RulesError, match=r"rules.yaml: line \d+ not valid YAML"):
        parse_rules("rules: [unclosed")
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules(tmp_path / "missing.yaml")
    path = tmp_path / "mine.yaml"
    path.write_text(rules_with(min_churn_probability=-1))
    with pytest.raises(RulesError, match=r"^mine\.yaml: rule 'win-back'"):
        load_rules(path)


def test_channel_may_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("CRM_WEBHOOK_URL", "https://crm.example.com/hooks/churn")
    text = RULE.replace("file:out.jsonl", "${CRM_WEBHOOK_URL}")
    # stored as written (a token in the URL stays in the environment); expanded at delivery
    assert parse_rules(text).rules[0].channel == "${CRM_WEBHOOK_URL}"
    monkeypatch.delenv("CRM_WEBHOOK_URL")
    with pytest.raises(RulesError, match="environment variable CRM_WEBHOOK_URL"):
        parse_rules(text)


def test_cooldown_period_is_the_window_index(score_record):
    rules = parse_rules(RULE)
    jan = rules.evaluate(score_record("c", as_of=datetime(2024, 1, 1)))[0]
    jan_later = rules.evaluate(score_record("c", as_of=datetime(2024, 1, 5)))[0]
    assert jan.period == (datetime(2024, 1, 1) - datetime(1970, 1, 1)).days // 30
    assert jan.period == jan_later.period


def test_reasons_in_any_order_are_ranked_by_contribution(score_record):
    rules = parse_rules(rules_with(top_reasons="{features: [days_since_last_order], within: 1}"))
    shuffled = score_record("c", reasons=[
        Reason(feature="return_rate_365d", value=0.4, contribution=0.3, text="returns"),
        Reason(feature="days_since_last_order", value=94.0, contribution=0.9, text="gap"),
    ])
    assert len(rules.evaluate(shuffled)) == 1


def test_first_actions_column_wise_equal_evaluating_each_record(score_record):
    import numpy as np

    from models.reasons import reason_table

    rules = parse_rules("""
rules:
  - {name: by-reason, risk_tiers: [high, medium], action: experience_follow_up,
     channel: "file:a.jsonl", cooldown_days: 5,
     top_reasons: {features: ["*return*"], within: 2}}
  - {name: by-kind, risk_tiers: [low, medium], action: reactivation_email,
     channel: "file:d.jsonl", cooldown_days: 5,
     top_reasons: {kinds: [order_gap], exclude_kinds: [support_contact], within: 2}}
  - {name: valuable, min_clv: 50, max_value_at_risk: 40, action: success_call,
     channel: "file:b.jsonl", cooldown_days: 5}
  - {name: likely, min_churn_probability: 0.6, value_segments: [low, mid],
     action: win_back_offer, channel: "file:c.jsonl", cooldown_days: 5}
""")
    rng = np.random.default_rng(11)
    n = 500
    names = ("days_since_last_order", "return_rate", "returned_orders_90d", "orders_90d",
             "days_since_last_support_ticket")
    kinds = ("order_gap", "returns", "returns", "order_frequency", "support_contact")
    tier = rng.choice(["low", "medium", "high", "not_applicable"], n).astype(object)
    segment = rng.choice(["low", "mid", "high"], n).astype(object)
    probability = np.where(tier == "not_applicable", np.nan, rng.uniform(0, 1, n))
    clv = rng.uniform(0, 100, n)
    at_risk = probability * clv
    contributions = rng.normal(size=(n, len(names) + 1))
    table = reason_table(contributions, lambda j, rows: np.ones(len(rows)), names=names,
                         text_of=lambda name, value: f"{name}.", top_k=3, kinds=kinds)
    got = rules.first_actions(risk_tier=tier, value_segment=segment,
                              churn_probability=probability, clv=clv, value_at_risk=at_risk,
                              reasons=table)
    expected = []
    for i, reasons in enumerate(table.rows()):
        record = score_record(
            f"c{i}", risk_tier=tier[i], value_segment=segment[i], clv=float(clv[i]),
            churn_probability=None if np.isnan(probability[i]) else float(probability[i]),
            value_at_risk=None if np.isnan(at_risk[i]) else float(at_risk[i]),
            reasons=[Reason(**r) for r in reasons])
        triggered = rules.evaluate(record)
        expected.append(triggered[0].action if triggered else None)
    assert got.tolist() == expected
    assert len(set(expected)) == 5, "every rule and no rule each decide some customers"
