"""The outreach API router (in a small app of its own) and the `churnlens outreach` commands."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from serving.outreach.cli import app as outreach_app
from serving.outreach.outbox import Outbox
from serving.outreach.rules import load_rules
from serving.routes.actions import get_outbox, router
from serving.routes.deps import require_api_key
from serving.settings import (
    OutreachSettings,
    Settings,
    SettingsError,
    get_settings,
    load_settings,
)


@pytest.fixture
def outbox(tmp_path):
    store = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    yield store
    store.close()


@pytest.fixture
def client(outbox):
    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[get_outbox] = lambda: outbox
    app.dependency_overrides[require_api_key] = lambda: None
    with TestClient(app) as test_client:
        yield test_client


def test_list_a_customers_actions_with_why(client, outbox, score_record):
    records, actions = load_rules(None).recommend([score_record("c1"), score_record("c2")])
    outbox.record_scores(records, actions)
    response = client.get("/v1/customers/c1/actions")
    assert response.status_code == 200
    (item,) = response.json()
    assert item["customer_id"] == "c1" and item["action"] == "success_call"
    assert item["status"] == "pending" and item["attempts"] == 0
    assert item["why"][0].startswith("No order for 94 days")
    assert item["payload"]["talking_point"] == item["why"][0]
    assert client.get("/v1/customers/nobody/actions").json() == []
    assert len(client.get("/v1/actions", params={"status": "pending"}).json()) == 2
    assert client.get("/v1/actions", params={"status": "sent"}).status_code == 422


def test_acknowledge_and_retry_through_the_api(client, outbox, triggered):
    outbox.record_scores([], triggered(2, "http://127.0.0.1:9/ok"))
    first, second = sorted(row.id for row in outbox.list_actions())
    acknowledged = client.post(f"/v1/actions/{first}/acknowledge")
    assert acknowledged.status_code == 200 and acknowledged.json()["status"] == "acknowledged"
    assert client.post(f"/v1/actions/{first}/acknowledge").status_code == 200, "idempotent"

    conflict = client.post(f"/v1/actions/{second}/retry")
    assert conflict.status_code == 409 and "only failed or dead" in conflict.json()["detail"]
    with outbox.engine.begin() as connection:
        connection.execute(outbox.actions.update().where(outbox.actions.c.id == second)
                           .values(status="dead", attempts=8))
    retried = client.post(f"/v1/actions/{second}/retry")
    assert retried.status_code == 200
    assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 0)

    missing = client.post("/v1/actions/act_nope/acknowledge")
    assert missing.status_code == 404 and "act_nope" in missing.json()["detail"]
    assert client.get(f"/v1/actions/{second}").json()["id"] == second


def test_router_falls_back_to_the_settings_outbox(outbox, triggered):
    """Without outreach scoring (no outbox in the serving state) the settings name the outbox."""
    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[get_settings] = lambda: Settings(
        allow_anonymous=True, outbox_url=outbox.url, outreach_enabled=False)
    outbox.record_scores([], triggered(1, "file:x.jsonl"))
    with TestClient(app) as test_client:
        assert len(test_client.get("/v1/customers/c00000/actions").json()) == 1


@pytest.fixture
def cli_env(outbox, tmp_path, monkeypatch):
    monkeypatch.setenv("CHURNLENS_OUTBOX_URL", outbox.url)
    monkeypatch.setenv("CHURNLENS_SINK_DIR", str(tmp_path))
    monkeypatch.delenv("CHURNLENS_WEBHOOK_SECRET", raising=False)
    return tmp_path


def invoke(*args: str):
    return CliRunner().invoke(outreach_app, list(args), terminal_width=200)


def test_cli_list_deliver_dead_and_retry(outbox, cli_env, score_record, triggered):
    gap_only = [reason for reason in score_record("x").reasons if reason.kind != "returns"]
    records, actions = load_rules(None).recommend([
        score_record("c1"), score_record("c2", value_segment="low", reasons=gap_only)])
    outbox.record_scores(records, actions)
    outbox.record_scores([], triggered(1, "https://crm.invalid/hook", rule="crm", prefix="w"))

    listed = invoke("list")
    assert listed.exit_code == 0, listed.output
    assert "success-call" in listed.output and "win-back" in listed.output
    assert "No order for 94 days" in listed.output and "pending: 3" in listed.output
    only_c1 = invoke("list", "--customer", "c1")
    assert "c1" in only_c1.output and "win-back" not in only_c1.output
    bad = invoke("list", "--status", "sent")
    assert bad.exit_code == 2 and "must be one of pending" in bad.output

    delivered = invoke("deliver", "--once")
    assert delivered.exit_code == 0, delivered.output
    assert "delivered 2" in delivered.output
    assert "CHURNLENS_WEBHOOK_SECRET" in delivered.output, "the waiting webhook is explained"
    sink = cli_env / "outreach" / "success_call.jsonl"
    (line,) = sink.read_text().splitlines()
    assert json.loads(line)["data"]["customer_id"] == "c1"

    webhook = outbox.list_actions(customer_id="w00000")[0]
    with outbox.engine.begin() as connection:
        connection.execute(outbox.actions.update().where(outbox.actions.c.id == webhook.id)
                           .values(status="dead", last_error="HTTP 500; gave up after 8"))
    dead = invoke("dead")
    assert dead.exit_code == 0 and webhook.id in dead.output and "gave up after 8" in dead.output
    assert invoke("retry").exit_code == 2
    retried = invoke("retry", webhook.id)
    assert retried.exit_code == 0 and f"requeued {webhook.id}" in retried.output
    again = invoke("retry", webhook.id)
    assert again.exit_code == 1 and "only failed or dead" in again.output
    assert "requeued 0 dead" in invoke("retry", "--all-dead").output


def test_cli_names_a_bad_setting(cli_env, monkeypatch):
    monkeypatch.setenv("CHURNLENS_WEBHOOK_SECRET", "not-a-secret")
    result = invoke("list")
    assert result.exit_code == 2
    assert "CHURNLENS_WEBHOOK_SECRET must start with 'whsec_'" in result.output


def test_new_secret_is_accepted_by_the_settings():
    secret = invoke("new-secret").output.strip()
    settings = load_settings(OutreachSettings, webhook_secret=secret)
    assert settings.webhook_secret.get_secret_value() == secret


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"webhook_secret": "whsec_c2hvcnQ="}, "decodes to 5 bytes"),
        ({"webhook_secret": "whsec_!!!"}, "not valid base64"),
        ({"relay_lease_seconds": 5, "request_timeout_seconds": 10},
         "CHURNLENS_RELAY_LEASE_SECONDS=5 is too short"),
        ({"retry_max_attempts": 0}, "CHURNLENS_RETRY_MAX_ATTEMPTS"),
        ({"retry_backoff_base_seconds": 10, "retry_backoff_max_seconds": 1},
         "CHURNLENS_RETRY_BACKOFF_MAX_SECONDS must be at least"),
    ],
)
def test_settings_errors_name_the_variable(overrides, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(OutreachSettings, **overrides)


def test_backoff_doubles_up_to_the_cap_with_bounded_jitter():
    settings = load_settings(OutreachSettings, retry_backoff_base_seconds=1,
                             retry_backoff_max_seconds=5, retry_jitter=0.5)
    assert [settings.backoff_seconds(n, draw=0.0) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    assert settings.backoff_seconds(2, draw=0.999) == pytest.approx(1.001)
