"""The outbox on SQLite and (when CHURNLENS_TEST_POSTGRES_URL is set) PostgreSQL."""

from __future__ import annotations

import os
import threading
import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import create_engine, text

from serving.outreach.outbox import (
    ActionNotFoundError,
    ActionStateError,
    Outbox,
    OutboxSchemaError,
    utcnow,
)
from serving.outreach.relay import Relay
from serving.outreach.rules import load_rules
from serving.outreach.webhooks import new_secret
from serving.settings import OutreachSettings

POSTGRES_URL = os.environ.get("CHURNLENS_TEST_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL, reason="CHURNLENS_TEST_POSTGRES_URL is not set (.ci/run sets it)"
)


@pytest.fixture
def postgres_schema():
    """A schema of its own per test, so parallel runs never collide; dropped afterwards."""
    schema = f"outreach_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield schema
    with engine.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=[needs_postgres,
                                                                     pytest.mark.postgres])])
def outbox(request, tmp_path):
    if request.param == "sqlite":
        store = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    else:
        store = Outbox(POSTGRES_URL, schema=request.getfixturevalue("postgres_schema"))
    yield store
    store.close()


def scored(score_record, customers: int, *, as_of: datetime = datetime(2024, 5, 1),
           **changes: object):
    rules = load_rules(None)
    return rules.recommend(
        [score_record(f"c{i}", as_of=as_of, **changes) for i in range(customers)]
    )


def medium_risk(score_record, as_of: datetime):
    """Three customers with an order gap (reactivation, 21-day cooldown) and three with
    returns among their top reasons (experience follow-up, 45 days)."""
    rules = load_rules(None)
    gap_only = [reason for reason in score_record("x").reasons if reason.kind != "returns"]
    medium = {"value_segment": "mid", "risk_tier": "medium", "churn_probability": 0.4,
              "as_of": as_of}
    return rules.recommend(
        [score_record(f"c{i}", **medium, reasons=gap_only) for i in range(3)]
        + [score_record(f"r{i}", **medium) for i in range(3)])


def test_scores_and_actions_are_written_once_per_cooldown_window(outbox, score_record):
    records, actions = medium_risk(score_record, datetime(2024, 5, 1))
    first = outbox.record_scores(records, actions)
    assert (first.scores, first.actions_created, first.actions_skipped) == (6, 6, 0)
    again = outbox.record_scores(records, actions)
    assert (again.actions_created, again.actions_skipped) == (0, 6), "re-scoring is idempotent"
    # a week later: still inside both cooldowns (21 and 45 days)
    records, actions = medium_risk(score_record, datetime(2024, 5, 8))
    assert outbox.record_scores(records, actions).actions_created == 0
    # 22 days later the 21-day reactivation cooldown has passed, the 45-day one has not
    records, actions = medium_risk(score_record, datetime(2024, 5, 23))
    later = outbox.record_scores(records, actions)
    assert later.actions_created == 3
    assert outbox.status_counts()["pending"] == 9

    summary = outbox.action_summary()
    assert list(summary.columns) == ["rule", "action", "status", "count"]
    counts = {(row.rule, row.status): row.count for row in summary.itertuples()}
    assert counts == {("dormant-reactivation", "pending"): 6,
                      ("experience-follow-up", "pending"): 3}


def test_every_score_is_kept_and_the_latest_is_found(outbox, score_record):
    outbox.record_scores([score_record("c1", churn_probability=0.5, as_of=datetime(2024, 5, 2))])
    outbox.record_scores([score_record("c1", churn_probability=0.9, as_of=datetime(2024, 5, 1))])
    assert outbox.latest_score("c1")["churn_probability"] == 0.5, "an older score never wins"
    outbox.record_scores([score_record("c1", churn_probability=0.7, as_of=datetime(2024, 5, 3))])
    latest = outbox.latest_score("c1")
    assert latest["churn_probability"] == 0.7 and latest["reasons"][0]["feature"] == (
        "days_since_last_order")
    # the same date scored again (same model version) replaces that one score
    staged = score_record("c1", churn_probability=0.6, as_of=datetime(2024, 5, 3))
    outbox.record_scores([staged.model_copy(update={"lifecycle_stage": "declining"})])
    outbox.record_scores([score_record("c1", churn_probability=0.2, as_of=datetime(2024, 5, 3),
                                       model_version="8")])
    history = outbox.score_history()
    assert list(zip(history["model_version"], history["as_of"].dt.day,
                    history["churn_probability"], strict=True)) == [
        ("7", 1, 0.9), ("7", 2, 0.5), ("7", 3, 0.6), ("8", 3, 0.2)]
    assert history["lifecycle_stage"].tolist()[2] == "declining"
    assert len(outbox.score_history(since=datetime(2024, 5, 2), until=datetime(2024, 5, 3))) == 1
    assert outbox.prune_scores(older_than=datetime(2024, 5, 2, 12)) == 2
    assert sorted(outbox.score_history()["as_of"].dt.day) == [3, 3]


def test_an_outbox_from_before_score_history_is_refused_with_a_sentence(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE scores (customer_id VARCHAR(128), model_version "
                                "VARCHAR(64), as_of DATETIME, PRIMARY KEY (customer_id, "
                                "model_version))"))
    engine.dispose()
    with pytest.raises(OutboxSchemaError, match="created by an earlier churnlens"):
        Outbox(url).engine  # noqa: B018


def test_scores_and_actions_share_one_transaction(outbox, score_record):
    records, actions = scored(score_record, 2)
    broken = [*actions,
              actions[0].__class__(**{**actions[0].__dict__, "rule": "other", "channel": None})]
    with pytest.raises(Exception):  # noqa: B017 - any database error will do
        outbox.record_scores(records, broken)
    assert outbox.latest_score("c0") is None, "the scores rolled back with the actions"
    assert outbox.list_actions() == []


def test_acknowledge_retry_and_dead_letters(outbox, triggered):
    outbox.record_scores([], triggered(3, "http://127.0.0.1:9/ok"))
    first, second, third = (row.id for row in sorted(outbox.list_actions(),
                                                      key=lambda row: row.customer_id))
    with outbox.engine.begin() as connection:
        connection.execute(outbox.actions.update().where(outbox.actions.c.id == second)
                           .values(status="dead", attempts=8, last_error="HTTP 500"))
        connection.execute(outbox.actions.update().where(outbox.actions.c.id == third)
                           .values(status="failed", attempts=1, last_error="HTTP 410"))
    assert {row.id for row in outbox.dead_letters()} == {second, third}
    with pytest.raises(ActionStateError, match="is pending; only failed or dead"):
        outbox.retry(first)
    with pytest.raises(ActionNotFoundError):
        outbox.retry("act_nope")
    retried = outbox.retry(third)
    assert (retried.status, retried.attempts) == ("pending", 0)
    assert outbox.retry_all_dead() == 1
    acknowledged = outbox.acknowledge(first)
    assert acknowledged.status == "acknowledged" and acknowledged.acknowledged_at is not None
    assert outbox.acknowledge(first).acknowledged_at == acknowledged.acknowledged_at
    assert outbox.list_actions(customer_id="c00001")[0].id == second
    with pytest.raises(ValueError, match="status 'sent' is not one of"):
        outbox.list_actions(status="sent")


def test_expired_lease_makes_a_claimed_action_claimable_again(outbox, triggered):
    outbox.record_scores([], triggered(3, "http://127.0.0.1:9/ok"))
    token, claimed = outbox.claim_due(limit=10, lease_seconds=60)
    assert len(claimed) == 3 and all(row.attempts == 1 for row in claimed)
    assert outbox.claim_due(limit=10, lease_seconds=60)[1] == [], "leased rows are not due"
    later = utcnow() + timedelta(seconds=61)
    token2, again = outbox.claim_due(limit=10, lease_seconds=60, now=later)
    assert {row.id for row in again} == {row.id for row in claimed}
    assert token2 != token and all(row.attempts == 2 for row in again)


def test_a_claim_takes_at_most_its_limit_and_never_a_claimed_row(outbox, triggered):
    outbox.record_scores([], triggered(50, "http://127.0.0.1:9/ok"))
    _, first = outbox.claim_due(limit=10, lease_seconds=30)
    _, second = outbox.claim_due(limit=10, lease_seconds=30)
    assert len(first) == 10 and len(second) == 10, "each claim takes exactly its limit"
    assert not {a.id for a in first} & {a.id for a in second}, "no row is claimed twice"
    assert outbox.status_counts()["pending"] == 30


def test_acknowledged_actions_are_not_delivered(outbox, triggered, make_receiver):
    receiver = make_receiver(secret=None).start()
    try:
        outbox.record_scores([], triggered(2, receiver.url("/ok")))
        outbox.acknowledge(outbox.list_actions()[0].id)
        settings = OutreachSettings(outbox_url=outbox.url, webhook_secret=new_secret())
        with Relay(outbox, settings=settings) as relay:
            assert relay.drain().delivered == 1
        assert receiver.count == 1
    finally:
        receiver.stop()


@needs_postgres
@pytest.mark.postgres
def test_two_relays_on_one_postgres_outbox_deliver_each_action_exactly_once(
    postgres_schema, relay_clock, settle, triggered, make_receiver
):
    secret = new_secret()
    receiver = make_receiver(secret=secret).start()
    setup = Outbox(POSTGRES_URL, schema=postgres_schema)
    try:
        # the receiver holds every request until both relays have theirs in flight
        # (4 each at concurrency 4: one relay alone can never hold 8), so both take part
        setup.record_scores([], triggered(300, receiver.url("/hold")))
        settings = OutreachSettings(
            outbox_url=POSTGRES_URL, webhook_secret=secret, relay_batch_size=10,
            relay_concurrency=4, request_timeout_seconds=120, relay_lease_seconds=600,
            retry_backoff_base_seconds=0.01, retry_backoff_max_seconds=0.02,
        )
        reports = []
        start = threading.Barrier(2)

        def run() -> None:
            store = Outbox(POSTGRES_URL, schema=postgres_schema)
            with Relay(store, settings=settings) as relay:
                start.wait()
                # poll like `run_forever` does: a claim may come back empty while the
                # other relay holds the next rows, so keep going until nothing is pending
                total = relay.drain()
                while store.status_counts()["pending"]:
                    total.add(relay.drain())
                reports.append(total)
            store.close()

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        receiver.wait_held(8)
        receiver.release()
        for thread in threads:
            thread.join(120)
        with Relay(setup, settings=settings, clock=relay_clock) as relay:
            settle(relay, setup)
        ids = receiver.ids()
        assert setup.status_counts()["delivered"] == 300
        assert len(ids) == 300 and max(ids.values()) == 1, "SKIP LOCKED: no action sent twice"
        assert all(report.delivered > 0 for report in reports), f"both relays took part: {reports}"
        assert all(r.verified for r in receiver.received)
    finally:
        receiver.stop()
        setup.close()
