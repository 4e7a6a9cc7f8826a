"""Relay reliability: real HTTP on 127.0.0.1, real relay processes, a real SQLite outbox.

Time is the test's: relays run on `relay_clock` (retries fall due when the test
advances it) and the receiver's ``/hold`` path keeps requests in flight until the
test releases them, so no assertion depends on how fast this machine is.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import WebhookVerificationError

from serving.outreach.outbox import Outbox, utcnow
from serving.outreach.relay import Relay, retry_after_seconds, start_relay_in_background
from serving.outreach.webhooks import new_secret, sign_headers, verify
from serving.settings import OutreachSettings

SECRET = new_secret()


def fast_settings(outbox_url: str, **changes: object) -> OutreachSettings:
    """Millisecond retry schedule so failure paths run in well under a second."""
    values: dict[str, object] = {
        "outbox_url": outbox_url,
        "webhook_secret": SECRET,
        "retry_max_attempts": 3,
        "retry_backoff_base_seconds": 0.01,
        "retry_backoff_max_seconds": 0.02,
        "request_timeout_seconds": 0.3,
        "relay_batch_size": 20,
        "relay_concurrency": 8,
        "relay_poll_seconds": 0.02,
        "relay_lease_seconds": 5,
    }
    values.update(changes)
    return OutreachSettings(**values)


def relay_env(outbox_url: str, **changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURNLENS_")}
    env.update({
        "CHURNLENS_OUTBOX_URL": outbox_url,
        "CHURNLENS_WEBHOOK_SECRET": SECRET,
        "CHURNLENS_REQUEST_TIMEOUT_SECONDS": "0.5",
        "CHURNLENS_RELAY_POLL_SECONDS": "0.05",
        **changes,
    })
    return env


def start_relay_process(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "serving.outreach.cli", "deliver", "--forever"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def receiver(make_receiver):
    server = make_receiver(secret=SECRET).start()
    yield server
    server.stop()


@pytest.fixture
def outbox(tmp_path):
    store = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    yield store
    store.close()


def test_retry_after_is_honoured_on_the_relays_clock(outbox, receiver, triggered):
    """The relay schedules the retry at its own now + Retry-After, not before."""
    outbox.record_scores([], triggered(1, receiver.url("/retry-after/30"), rule="limited"))
    start = utcnow()
    now = [start]
    settings = fast_settings(outbox.url, retry_after_max_seconds=60)
    with Relay(outbox, settings=settings, clock=lambda: now[0]) as relay:
        assert relay.run_once().claimed == 1
        (action,) = outbox.list_actions(limit=10)
        assert action.status == "pending" and action.last_status_code == 429
        assert action.next_attempt_at == start + timedelta(seconds=30)

        now[0] = start + timedelta(seconds=29)
        assert relay.run_once().claimed == 0, "claimed before Retry-After had passed"
        now[0] = start + timedelta(seconds=30)
        assert relay.run_once().claimed == 1
    (action,) = outbox.list_actions(limit=10)
    assert (action.status, action.attempts) == ("delivered", 2)
    assert receiver.ids() == {action.webhook_id: 2}


def test_each_receiver_answer_leaves_the_action_in_the_right_state(
    outbox, receiver, relay_clock, settle, triggered
):
    closed = f"http://127.0.0.1:{free_port()}/ok"
    cases = {
        "ok": receiver.url("/ok"),
        "server-error": receiver.url("/status/500"),
        "flaky": receiver.url("/fail-first/2/503"),
        "rate-limited": receiver.url("/retry-after/1"),
        "gone": receiver.url("/status/410"),
        "bad-request": receiver.url("/status/400"),
        "slow": receiver.url("/hold"),  # never answered in time: the request times out
        "refused": closed,
    }
    for name, url in cases.items():
        outbox.record_scores([], triggered(1, url, rule=name, prefix=f"{name}-"))
    with Relay(outbox, settings=fast_settings(outbox.url), clock=relay_clock) as relay:
        settle(relay, outbox)
    state = {row.rule: row for row in outbox.list_actions(limit=100)}

    assert state["ok"].status == "delivered" and state["ok"].attempts == 1
    assert state["ok"].last_status_code == 200 and state["ok"].delivered_at is not None

    dead = state["server-error"]
    assert (dead.status, dead.attempts, dead.last_status_code) == ("dead", 3, 500)
    assert "gave up after 3 attempts" in dead.last_error
    assert receiver.ids("/status/500") == {dead.webhook_id: 3}, "one request per attempt"

    assert state["flaky"].status == "delivered" and state["flaky"].attempts == 3

    limited = state["rate-limited"]
    assert limited.status == "delivered" and limited.attempts == 2
    assert receiver.ids("/retry-after/1") == {limited.webhook_id: 2}

    for rule in ("gone", "bad-request"):
        row = state[rule]
        assert (row.status, row.attempts) == ("failed", 1), f"{rule}: 4xx fails fast"
        assert "not retried" in row.last_error

    slow = state["slow"]
    assert slow.status == "dead" and slow.attempts == 3 and "timeout" in slow.last_error
    refused = state["refused"]
    assert refused.status == "dead" and "connection error" in refused.last_error

    assert all(r.verified for r in receiver.received), "every delivery carries a valid signature"
    assert {row.rule for row in outbox.dead_letters()} == {
        "server-error", "gone", "bad-request", "slow", "refused"}


def test_receiver_down_then_up_delivers_everything_exactly_once(outbox, relay_clock, make_receiver,
                                                                triggered):
    """Retries against a closed port stay pending; once the receiver is up, each id lands once."""
    port = free_port()
    outbox.record_scores([], triggered(40, f"http://127.0.0.1:{port}/ok"))
    settings = fast_settings(outbox.url, retry_max_attempts=60, retry_backoff_base_seconds=30,
                             retry_backoff_max_seconds=600)
    with Relay(outbox, settings=settings, clock=relay_clock) as relay:
        for attempt in (1, 2, 3):
            report = relay.drain()
            assert (report.claimed, report.retried, report.delivered) == (40, 40, 0)
            rows = outbox.list_actions(limit=1000)
            assert {(row.status, row.attempts) for row in rows} == {("pending", attempt)}
            assert relay.drain().claimed == 0, "nothing is due before its backoff has passed"
            relay_clock.advance_to(max(row.next_attempt_at for row in rows))
        receiver = make_receiver(secret=SECRET, port=port).start()
        try:
            assert relay.drain().delivered == 40
            ids = receiver.ids()
        finally:
            receiver.stop()
    assert outbox.status_counts()["delivered"] == 40
    expected = {row.webhook_id for row in outbox.list_actions(limit=1000)}
    assert set(ids) == expected, "every action reached the receiver"
    assert max(ids.values()) == 1, f"no action delivered twice: {ids.most_common(3)}"


@pytest.mark.slow
def test_relay_killed_mid_batch_loses_nothing_and_redelivers_with_the_same_id(
    outbox, receiver, relay_clock, triggered
):
    outbox.record_scores([], triggered(60, receiver.url("/hold")))
    # requests wait on the receiver until the test releases them: the kill lands mid-batch
    env = relay_env(outbox.url, CHURNLENS_RELAY_BATCH_SIZE="10", CHURNLENS_RELAY_CONCURRENCY="2",
                    CHURNLENS_REQUEST_TIMEOUT_SECONDS="600", CHURNLENS_RELAY_LEASE_SECONDS="3600")
    first = start_relay_process(env)
    try:
        receiver.wait_held(2)  # both of its connections are waiting on the receiver
    finally:
        first.kill()  # SIGKILL: no cleanup, the claimed batch stays 'delivering'
        first.wait(timeout=60)
    sent_by_the_killed_relay = set(receiver.ids())
    assert len(sent_by_the_killed_relay) == 2
    assert outbox.status_counts()["delivering"] == 10, "the killed relay's batch stays claimed"
    receiver.release()

    patient = fast_settings(outbox.url, request_timeout_seconds=60, relay_lease_seconds=600)
    with Relay(outbox, settings=patient) as relay:
        assert relay.drain().delivered == 50, "the other actions go out at once"
    assert outbox.status_counts()["delivering"] == 10, "a claimed batch waits for its lease"

    relay_clock.advance(3600)  # the killed relay's lease has run out
    with Relay(outbox, settings=patient, clock=relay_clock) as relay:
        assert relay.drain().delivered == 10, "the next relay takes the stranded batch over"
    ids = receiver.ids()
    expected = {row.webhook_id for row in outbox.list_actions(limit=1000)}
    assert set(ids) == expected, "no action lost"
    duplicates = {webhook_id for webhook_id, n in ids.items() if n > 1}
    assert duplicates == sent_by_the_killed_relay, (
        "exactly the deliveries the killed relay made but never recorded arrive twice")
    assert max(ids.values()) == 2
    for webhook_id in duplicates:
        bodies = {r.body for r in receiver.for_id(webhook_id)}
        assert len(bodies) == 1, "a redelivery sends the same body under the same webhook-id"
    assert all(r.verified for r in receiver.received)


def test_two_relays_on_one_sqlite_outbox_deliver_each_action_once(outbox, receiver, triggered):
    outbox.record_scores([], triggered(200, receiver.url("/ok")))
    # a generous timeout: a response slower than the timeout is retried, and that
    # legitimate at-least-once duplicate is not what this test is about
    settings = fast_settings(outbox.url, relay_batch_size=10, request_timeout_seconds=5,
                             relay_lease_seconds=30)
    reports = []

    def run() -> None:
        with Relay(Outbox(outbox.url), settings=settings) as relay:
            reports.append(relay.drain())

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outbox.status_counts()["delivered"] == 200
    ids = receiver.ids()
    assert len(ids) == 200 and max(ids.values()) == 1, "each action delivered exactly once"
    assert sum(r.delivered for r in reports) == 200


def test_signatures_verify_and_tampering_or_a_stale_timestamp_fails(
    outbox, receiver, relay_clock, settle, triggered
):
    outbox.record_scores([], triggered(1, receiver.url("/ok")))
    with Relay(outbox, settings=fast_settings(outbox.url), clock=relay_clock) as relay:
        settle(relay, outbox)
    (delivery,) = receiver.received
    assert delivery.verified
    parsed = verify(SECRET, delivery.body, delivery.headers)
    assert parsed["type"] == "outreach.win_back_offer"
    assert parsed["data"]["action_id"] == delivery.webhook_id
    assert delivery.headers["webhook-id"] == delivery.webhook_id

    tampered = delivery.body.replace(b"win_back_discount", b"free_money_forever")
    assert tampered != delivery.body
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        verify(SECRET, tampered, delivery.headers)

    stale = sign_headers(SECRET, webhook_id=delivery.webhook_id, body=delivery.body.decode(),
                         timestamp=datetime.now(UTC) - timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(SECRET, delivery.body, stale)

    with pytest.raises(WebhookVerificationError):
        verify(new_secret(), delivery.body, delivery.headers)


def test_file_sink_appends_one_line_per_action_and_skips_ids_already_written(
    outbox, tmp_path, relay_clock, settle, triggered
):
    outbox.record_scores([], triggered(5, "file:sinks/actions.jsonl"))
    settings = fast_settings(outbox.url, webhook_secret=None, sink_dir=tmp_path)
    with Relay(outbox, settings=settings, clock=relay_clock) as relay:
        settle(relay, outbox)
        sink = tmp_path / "sinks" / "actions.jsonl"
        lines = [json.loads(line) for line in sink.read_text().splitlines()]
        assert len(lines) == 5 and all(line["type"] == "outreach.win_back_offer" for line in lines)
        # a crash after the write but before the outbox update: the rerun must not duplicate
        with outbox.engine.begin() as connection:
            connection.execute(outbox.actions.update().values(status="pending",
                                                              next_attempt_at=relay_clock()))
        relay._sink_ids.clear()  # as after a restart: the relay must read the file again
        report = relay.drain()
        assert report.delivered == 5
    again = sink.read_text().splitlines()
    assert len(again) == 5, "webhook-ids already in the file are not appended again"
    assert outbox.status_counts()["delivered"] == 5


def test_without_a_secret_webhooks_wait_and_files_go_out(outbox, receiver, tmp_path, triggered):
    outbox.record_scores([], triggered(2, receiver.url("/ok"), rule="hook"))
    outbox.record_scores([], triggered(2, "file:out.jsonl", rule="file"))
    settings = fast_settings(outbox.url, webhook_secret=None, sink_dir=tmp_path)
    with Relay(outbox, settings=settings) as relay:
        report = relay.drain()
    assert report.delivered == 2 and receiver.count == 0, "nothing unsigned is sent"
    assert outbox.waiting_webhooks() == 2


def test_background_relay_delivers_and_stops(outbox, receiver, triggered):
    """Due actions go out on the first pass, and actions recorded later on the next one."""
    passes = threading.Semaphore(0)

    def pause(stop: threading.Event, seconds: float) -> None:
        passes.release()  # one pass finished
        stop.wait(seconds)

    outbox.record_scores([], triggered(3, receiver.url("/ok")))
    handle = start_relay_in_background(fast_settings(outbox.url), outbox=outbox, pause=pause)
    try:
        assert passes.acquire(timeout=60), "the background relay never finished a pass"
        assert outbox.status_counts()["delivered"] == 3
        outbox.record_scores([], triggered(2, receiver.url("/ok"), prefix="later-"))
        # the pass that ends second from now started after the new actions were recorded
        assert passes.acquire(timeout=60) and passes.acquire(timeout=60)
        assert outbox.status_counts()["delivered"] == 5
    finally:
        handle.stop(timeout=60)
    assert not handle.running
    assert handle.report.delivered == 5


def test_retry_after_accepts_seconds_and_http_dates():
    assert retry_after_seconds("7") == 7.0
    now = datetime(2024, 5, 1, 12, 0, 0)
    assert retry_after_seconds("Wed, 01 May 2024 12:00:30 GMT", now=now) == 30.0
    assert retry_after_seconds("Wed, 01 May 2024 11:00:00 GMT", now=now) == 0.0, "past: now"
    assert retry_after_seconds("tomorrow-ish") is None
    assert retry_after_seconds(None) is None
