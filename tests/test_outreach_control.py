"""Control groups: stable assignment, recorded as held out, never delivered."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime

import pytest

from serving.outreach.outbox import ActionStateError, Outbox
from serving.outreach.relay import Relay
from serving.outreach.rules import RulesError, control_draw, held_out, load_rules, parse_rules
from serving.outreach.webhooks import new_secret
from serving.settings import OutreachSettings

RULE = """
rules:
  - name: call-them
    risk_tiers: [high]
    action: success_call
    channel: {channel}
    cooldown_days: 30
    control_share: {share}
    cost: 12.5
"""


def _assignments(score_record, customers: list[str], *, share: float,
                 as_of: datetime) -> dict[str, bool]:
    rules = parse_rules(RULE.format(channel="file:x.jsonl", share=share))
    _, actions = rules.recommend([score_record(c, as_of=as_of) for c in customers])
    return {action.customer_id: action.control for action in actions}


def test_control_assignment_is_stable_across_runs_and_processes(score_record):
    customers = [f"C{i:06d}" for i in range(400)]
    here = _assignments(score_record, customers, share=0.3, as_of=datetime(2024, 5, 1))
    assert here == _assignments(score_record, customers, share=0.3, as_of=datetime(2024, 5, 1))
    code = (
        "from serving.outreach.rules import control_draw;"
        "print(','.join(f'{control_draw(f\"C{i:06d}\", \"call-them\", 661):.12f}'"
        " for i in range(400)))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "123", "PATH": ""})
    period = int((datetime(2024, 5, 1) - datetime(1970, 1, 1)).days // 30)
    assert period == 661
    ours = [f"{control_draw(c, 'call-them', period):.12f}" for c in customers]
    assert other.stdout.strip().split(",") == ours, "another process draws the same numbers"
    assert here == {c: float(d) < 0.3 for c, d in zip(customers, ours, strict=True)}
    share = sum(here.values()) / len(here)
    assert 0.24 < share < 0.36, f"about 30% held out, got {share:.2f}"
    # a new cooldown window is a new draw: not the same customers every month
    later = _assignments(score_record, customers, share=0.3, as_of=datetime(2024, 7, 1))
    assert later != here


def test_held_out_needs_a_positive_share():
    assert not held_out("c1", "r", 1, 0.0)
    assert all(held_out(f"c{i}", "r", 1, 0.5) == (control_draw(f"c{i}", "r", 1) < 0.5)
               for i in range(50))


@pytest.mark.parametrize("share", [-0.1, 0.51, 1.0])
def test_control_share_out_of_range_is_named(share):
    with pytest.raises(RulesError, match=r"rule 'call-them' field 'control_share': must be "
                                         r"between 0 and 0.5"):
        parse_rules(RULE.format(channel="file:x.jsonl", share=share))


def test_negative_cost_is_named():
    text = RULE.format(channel="file:x.jsonl", share=0.1).replace("12.5", "-1")
    with pytest.raises(RulesError, match="field 'cost': must be a finite number of at least 0"):
        parse_rules(text)


def test_built_in_rules_hold_out_ten_percent_and_have_costs():
    rules = load_rules(None)
    assert {rule.control_share for rule in rules.rules} == {0.1}
    assert all(rule.cost >= 0 for rule in rules.rules)
    assert rules.named("success-call").cost > rules.named("dormant-reactivation").cost
    assert rules.named("renamed-long-ago") is None


def test_control_actions_never_reach_the_webhook(tmp_path, relay_clock, settle, score_record,
                                                 make_receiver):
    secret = new_secret()
    receiver = make_receiver(secret=secret).start()
    outbox = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    try:
        rules = parse_rules(RULE.format(channel=receiver.url("/ok"), share=0.5))
        records, actions = rules.recommend(
            [score_record(f"c{i:03d}") for i in range(60)])
        written = outbox.record_scores(records, actions)
        assert written.actions_created == 60
        control = {a.customer_id for a in actions if a.control}
        treated = {a.customer_id for a in actions if not a.control}
        assert 15 < len(control) < 45, "about half held out"
        settings = OutreachSettings(outbox_url=outbox.url, webhook_secret=secret)
        with Relay(outbox, settings=settings, clock=relay_clock) as relay:
            settle(relay, outbox)
            assert relay.drain().claimed == 0, "nothing left to claim"
        sent = {r.body for r in receiver.received}
        reached = {c for c in control | treated if any(f'"{c}"'.encode() in b for b in sent)}
        assert reached == treated, "every treated customer was contacted, no control one"
        rows = outbox.list_actions(limit=100)
        assert {r.customer_id for r in rows if r.assignment == "control"} == control
        assert {r.status for r in rows if r.assignment == "control"} == {"held_out"}
        assert {r.status for r in rows if r.assignment == "treated"} == {"delivered"}
        assert outbox.status_counts()["held_out"] == len(control)
        some = next(r for r in rows if r.assignment == "control")
        with pytest.raises(ActionStateError, match="held out as control"):
            outbox.acknowledge(some.id)
    finally:
        outbox.close()
        receiver.stop()


def test_a_held_out_customer_is_recommended_nothing_by_the_rule(tmp_path, score_record):
    """The score must not tell a CRM to contact a control customer; batch and API agree."""
    import numpy as np

    from models.reasons import ReasonTable

    rules = parse_rules(RULE.format(channel="file:x.jsonl", share=0.5))
    as_of = datetime(2024, 5, 1)
    customers = [f"c{i:03d}" for i in range(80)]
    records, actions = rules.recommend([score_record(c, as_of=as_of) for c in customers])
    control = {a.customer_id for a in actions if a.control}
    assert 20 < len(control) < 60
    for record in records:
        expected = None if record.customer_id in control else "success_call"
        assert record.recommended_action == expected, record.customer_id
    n = len(customers)
    first = rules.first_actions(
        risk_tier=np.array(["high"] * n, dtype=object),
        value_segment=np.array([r.value_segment for r in records], dtype=object),
        churn_probability=np.array([r.churn_probability for r in records]),
        clv=np.array([r.clv for r in records]),
        value_at_risk=np.array([r.value_at_risk for r in records]),
        reasons=ReasonTable.empty(n, ["days_since_last_order"]),
        customer_ids=np.array(customers, dtype=object), as_of=as_of)
    assert first.tolist() == [r.recommended_action for r in records]
    outbox = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    try:
        plain, _ = rules.recommend([score_record(c, as_of=as_of) for c in customers])
        outbox.record_scores([r.model_copy(update={"recommended_action": None})
                              for r in plain], actions)
        stored = outbox.score_history()
        assert len(stored) == n
        with outbox.engine.connect() as connection:
            from sqlalchemy import text
            rows = dict(connection.execute(text(
                "SELECT customer_id, recommended_action FROM scores")).all())
        assert {c for c, a in rows.items() if a is None} == control
    finally:
        outbox.close()
