"""Secrets never leave: database passwords, tokens in channel URLs, internal addresses.

The server and the relay run with a password in the outbox URL (PostgreSQL
with trust authentication accepts any password, so the URL works) and a rule
whose webhook channel carries a token through ``${CRM_TOKEN}``. No API
response, printed line or log record may contain the password or the expanded
URL; the receiver still gets the token, because the relay expands the
template when it delivers.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from serving.outreach.webhooks import new_secret
from serving.redact import masked_url
from serving.settings import Settings

pytestmark = pytest.mark.slow  # end-to-end: real servers, subprocesses or training

PASSWORD = "pw-Hardening-7q2"
TOKEN = "tok-CRM-9f3e1d"
RULES = """
rules:
  - name: everyone
    risk_tiers: [low, medium, high, not_applicable]
    action: win_back_offer
    channel: "{channel}"
    control_share: 0
    cooldown_days: 30
"""


def with_password(url: str) -> str:
    """The outbox URL with a password added (PostgreSQL only; SQLite URLs have none)."""
    if not url.startswith("postgresql"):
        return url
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user.split(':')[0]}:{PASSWORD}@{host}"


def assert_no_secret(text: str, where: str) -> None:
    for secret in (PASSWORD, TOKEN):
        assert secret not in text, f"{secret!r} leaked in {where}: {text[:2000]}"


def test_masked_url_hides_only_the_password():
    assert masked_url(f"postgresql+psycopg://app:{PASSWORD}@db.internal:5432/outbox") == \
        "postgresql+psycopg://app:***@db.internal:5432/outbox"
    assert masked_url("sqlite:///outbox.db") == "sqlite:///outbox.db"
    assert masked_url(Path("/data/shop")) == "/data/shop"


@pytest.fixture
def secret_url(backend, tmp_path, scratch_database):
    with scratch_database(backend, tmp_path, prefix="hardening") as url:
        yield with_password(url)


def test_no_response_output_or_log_holds_a_secret(secret_url, tmp_path, tmp_path_factory,
                                                  monkeypatch, caplog, trained_registry, api_key,
                                                  running_server, make_receiver):
    from serving.app import create_app

    signing = new_secret()
    receiver = make_receiver(secret=signing).start()
    rules = tmp_path / "rules.yaml"
    template = receiver.url("/ok?token=${CRM_TOKEN}")
    rules.write_text(RULES.format(channel=template))
    monkeypatch.setenv("CRM_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    with trained_registry.active() as registry:
        app_settings = Settings(data=registry.data, api_keys=[api_key.digest], model_poll_seconds=0,
                                outbox_url=secret_url, rules=rules)
        customers = list(pd.read_csv(registry.data / "customers.csv", dtype=str)
                         ["customer_id"].head(5))
        with running_server(create_app(app_settings)) as base, \
                httpx.Client(base_url=base, headers=api_key.auth) as client:
            answers = [client.get(f"/v1/customers/{c}/score") for c in customers]
            assert any(a.status_code == 200 for a in answers), [a.text for a in answers]
            actions = client.get("/v1/actions")
            assert actions.status_code == 200 and actions.json(), actions.text
            assert {a["channel"] for a in actions.json()} == {template}
            first = actions.json()[0]
            answers += [actions, client.get(f"/v1/actions/{first['id']}"),
                        client.get(f"/v1/customers/{first['customer_id']}/actions"),
                        client.get("/readyz"), client.get("/v1/model"), client.get("/metrics")]
            for answer in answers:
                assert_no_secret(answer.text, f"{answer.request.url.path} response")

        env = {**os.environ, "CRM_TOKEN": TOKEN, "CHURNLENS_WEBHOOK_SECRET": signing,
               "CHURNLENS_OUTBOX_URL": secret_url, "MLFLOW_TRACKING_URI": registry.tracking_uri}
        once = subprocess.run([sys.executable, "-m", "churnlens", "outreach", "deliver", "--once"],
                              capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
        assert once.returncode == 0, once.stderr
        assert_no_secret(once.stdout + once.stderr, "deliver --once output")
        assert f"delivered {len(actions.json())}" in once.stdout, once.stdout
        # the receiver got the token: the template was expanded when delivering
        assert receiver.received and all(f"token={TOKEN}" in r.path for r in receiver.received)
        assert all(r.verified for r in receiver.received)

        forever = subprocess.Popen(
            [sys.executable, "-m", "churnlens", "outreach", "deliver", "--forever"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
        try:
            first_line = forever.stdout.readline()
        finally:
            forever.terminate()
            rest, _ = forever.communicate(timeout=60)
        assert "relay running on" in first_line, first_line + rest
        assert_no_secret(first_line + rest, "deliver --forever output")
        if PASSWORD in secret_url:
            assert ":***@" in first_line, first_line
    receiver.stop()
    for record in caplog.records:
        assert_no_secret(record.getMessage(), f"log record of {record.name}")


def test_readyz_names_no_path_or_address(tmp_path, api_key):
    """A dataset that cannot be read: /readyz says which setting, not where it points."""
    from fastapi.testclient import TestClient

    from serving.app import create_app

    hidden = tmp_path / "internal-share-host42"
    hidden.mkdir()
    (hidden / "orders.csv").write_text("order_id,customer_id,ordered_at,amount\n")
    app = create_app(Settings(data=hidden, api_keys=[api_key.digest], model_poll_seconds=0,
                              outbox_url=f"sqlite:///{tmp_path / 'outbox.db'}"))
    with TestClient(app) as client:
        assert app.state.holder.settled.wait(120), "reading the dataset never finished"
        answer = client.get("/readyz")
    assert answer.status_code == 503
    detail = answer.json()["detail"]
    assert "CHURNLENS_DATA" in detail and "internal-share-host42" not in detail, detail
    assert "internal-share-host42" in app.state.holder.last_error  # the log keeps the detail
