"""Relay reliability: real HTTP on 127.0.0.1, real relay processes, a real SQLite outbox."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from outreach_support import Receiver, settle, triggered
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


def wait_for(condition, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def receiver():
    server = Receiver(secret=SECRET).start()
    yield server
    server.stop()


@pytest.fixture
def outbox(tmp_path):
    store = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    yield store
    store.close()


def test_retry_after_is_honoured_on_the_relays_clock(outbox, receiver):
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


def test_each_receiver_answer_leaves_the_action_in_the_right_state(outbox, receiver):
    closed = f"http://127.0.0.1:{free_port()}/ok"
    cases = {
        "ok": receiver.url("/ok"),
        "server-error": receiver.url("/status/500"),
        "flaky": receiver.url("/fail-first/2/503"),
        "rate-limited": receiver.url("/retry-after/1"),
        "gone": receiver.url("/status/410"),
        "bad-request": receiver.url("/status/400"),
        "slow": receiver.url("/slow/1"),
        "refused": closed,
    }
    for name, url in cases.items():
        outbox.record_scores([], triggered(1, url, rule=name, prefix=f"{name}-"))
    with Relay(outbox, settings=fast_settings(outbox.url)) as relay:
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


@pytest.mark.slow
def test_receiver_down_then_up_delivers_everything_exactly_once(outbox):
    port = free_port()
    url = f"http://127.0.0.1:{port}/ok"
    outbox.record_scores([], triggered(40, url))
    env = relay_env(outbox.url, CHURNLENS_RETRY_MAX_ATTEMPTS="60",
                    CHURNLENS_RETRY_BACKOFF_BASE_SECONDS="0.05",
                    CHURNLENS_RETRY_BACKOFF_MAX_SECONDS="0.2")
    process = start_relay_process(env)
    try:
        wait_for(lambda: outbox.status_counts()["pending"] == 40
                 and max(r.attempts for r in outbox.list_actions(limit=1000)) >= 2,
                 timeout=15, what="the relay to fail against the missing receiver")
        assert outbox.status_counts()["delivered"] == 0
        receiver = Receiver(secret=SECRET, port=port).start()
        try:
            wait_for(lambda: outbox.status_counts()["delivered"] == 40, timeout=15,
                     what="every action to be delivered once the receiver is up")
            ids = receiver.ids()
        finally:
            receiver.stop()
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    expected = {row.webhook_id for row in outbox.list_actions(limit=1000)}
    assert set(ids) == expected, "every action reached the receiver"
    assert max(ids.values()) == 1, f"no action delivered twice: {ids.most_common(3)}"
    assert "delivered 40" in out


@pytest.mark.slow
def test_relay_killed_mid_batch_loses_nothing_and_redelivers_with_the_same_id(outbox, receiver):
    outbox.record_scores([], triggered(60, receiver.url("/slow/0.1")))
    # a batch of 10 at concurrency 2 takes ~0.5 s; the lease (3 s) outlives it
    env = relay_env(outbox.url, CHURNLENS_RELAY_BATCH_SIZE="10", CHURNLENS_RELAY_CONCURRENCY="2",
                    CHURNLENS_RELAY_LEASE_SECONDS="3")
    first = start_relay_process(env)
    wait_for(lambda: receiver.count >= 5, timeout=15, what="the first deliveries")
    first.kill()  # SIGKILL: no cleanup, the claimed batch stays 'delivering'
    first.wait(timeout=10)
    before_kill = set(receiver.ids())
    stranded = outbox.status_counts()["delivering"]
    assert stranded > 0, "the kill should land while a batch is claimed"

    second = start_relay_process(env)
    try:
        wait_for(lambda: outbox.status_counts()["delivered"] == 60, timeout=120,
                 what="the restarted relay to deliver everything")
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=10)
    ids = receiver.ids()
    expected = {row.webhook_id for row in outbox.list_actions(limit=1000)}
    assert set(ids) == expected, "no action lost"
    duplicates = {webhook_id for webhook_id, n in ids.items() if n > 1}
    assert duplicates, "deliveries the killed relay made but never recorded are redelivered"
    assert duplicates <= before_kill, "only actions the receiver already had arrive twice"
    assert max(ids.values()) == 2
    for webhook_id in duplicates:
        bodies = {r.body for r in receiver.for_id(webhook_id)}
        assert len(bodies) == 1, "a redelivery sends the same body under the same webhook-id"
    assert all(r.verified for r in receiver.received)


def test_two_relays_on_one_sqlite_outbox_deliver_each_action_once(outbox, receiver):
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


def test_signatures_verify_and_tampering_or_a_stale_timestamp_fails(outbox, receiver):
    outbox.record_scores([], triggered(1, receiver.url("/ok")))
    with Relay(outbox, settings=fast_settings(outbox.url)) as relay:
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


def test_file_sink_appends_one_line_per_action_and_skips_ids_already_written(outbox, tmp_path):
    outbox.record_scores([], triggered(5, "file:sinks/actions.jsonl"))
    settings = fast_settings(outbox.url, webhook_secret=None, sink_dir=tmp_path)
    with Relay(outbox, settings=settings) as relay:
        settle(relay, outbox)
        sink = tmp_path / "sinks" / "actions.jsonl"
        lines = [json.loads(line) for line in sink.read_text().splitlines()]
        assert len(lines) == 5 and all(line["type"] == "outreach.win_back_offer" for line in lines)
        # a crash after the write but before the outbox update: the rerun must not duplicate
        with outbox.engine.begin() as connection:
            connection.execute(outbox.actions.update().values(status="pending",
                                                              next_attempt_at=utcnow()))
        relay._sink_ids.clear()  # as after a restart: the relay must read the file again
        report = relay.drain()
        assert report.delivered == 5
    again = sink.read_text().splitlines()
    assert len(again) == 5, "webhook-ids already in the file are not appended again"
    assert outbox.status_counts()["delivered"] == 5


def test_without_a_secret_webhooks_wait_and_files_go_out(outbox, receiver, tmp_path):
    outbox.record_scores([], triggered(2, receiver.url("/ok"), rule="hook"))
    outbox.record_scores([], triggered(2, "file:out.jsonl", rule="file"))
    settings = fast_settings(outbox.url, webhook_secret=None, sink_dir=tmp_path)
    with Relay(outbox, settings=settings) as relay:
        report = relay.drain()
    assert report.delivered == 2 and receiver.count == 0, "nothing unsigned is sent"
    assert outbox.waiting_webhooks() == 2


def test_background_relay_delivers_and_stops(outbox, receiver):
    handle = start_relay_in_background(fast_settings(outbox.url), outbox=outbox)
    try:
        outbox.record_scores([], triggered(3, receiver.url("/ok")))
        wait_for(lambda: outbox.status_counts()["delivered"] == 3, timeout=10,
                 what="the background relay to deliver")
    finally:
        handle.stop(timeout=10)
    assert not handle.running
    assert handle.report.delivered == 3


def test_retry_after_accepts_seconds_and_http_dates():
    assert retry_after_seconds("7") == 7.0
    soon = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 25 <= retry_after_seconds(soon) <= 31
    assert retry_after_seconds("tomorrow-ish") is None
    assert retry_after_seconds(None) is None
