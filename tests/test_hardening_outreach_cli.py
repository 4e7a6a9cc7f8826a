"""Outreach commands: dead letters counted as documented; an unreachable outbox is one line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from serving.outreach.cli import app as outreach_app
from serving.outreach.outbox import Outbox


def invoke(*args: str):
    return CliRunner().invoke(outreach_app, list(args))


def test_retry_all_dead_requeues_failed_actions_too(tmp_path, triggered):
    """`outreach dead` lists failed (e.g. 410) and dead actions; --all-dead requeues both."""
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    outbox = Outbox(url)
    outbox.record_scores([], triggered(3, "http://127.0.0.1:9/ok"))
    ids = sorted(row.id for row in outbox.list_actions())
    with outbox.engine.begin() as connection:
        for action_id, status in zip(ids, ("dead", "failed"), strict=False):
            connection.execute(outbox.actions.update().where(outbox.actions.c.id == action_id)
                               .values(status=status, attempts=3, last_error="HTTP 410"))
    listed = invoke("dead", "--outbox", url)
    assert ids[0] in listed.output and ids[1] in listed.output
    result = invoke("retry", "--all-dead", "--outbox", url)
    assert result.exit_code == 0 and "requeued 2 dead letter" in result.output, result.output
    assert outbox.status_counts()["pending"] == 3
    assert outbox.dead_letters() == []
    outbox.close()


@pytest.mark.parametrize("command", [["deliver"], ["deliver", "--forever"], ["list"], ["dead"],
                                     ["retry", "--all-dead"], ["prune"]])
def test_an_unreachable_outbox_is_one_line_without_the_password(command, monkeypatch):
    monkeypatch.setenv("CHURNLENS_SCORE_RETENTION_DAYS", "30")
    url = "postgresql+psycopg://app:pw-Unreachable-51@127.0.0.1:1/outbox"
    result = invoke(*command, "--outbox", url)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert "the outbox cannot be used" in lines[0] and "pw-Unreachable-51" not in lines[0]
