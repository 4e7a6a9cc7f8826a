"""One timestamp format everywhere a user reads one: ISO 8601 in UTC with a ``Z``.

API scores (by id and by history), the outreach API's actions, the payload a
webhook or sink receives, its envelope and `churnlens outreach list` all show
the same form, whether the datetime inside was naive (UTC by convention) or aware.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from serving.outreach.cli import app as outreach_app
from serving.outreach.outbox import Outbox
from serving.outreach.rules import load_rules
from serving.routes.actions import get_outbox, router
from serving.routes.deps import require_api_key
from serving.schemas import ScoreRecord, utc_text

UTC_TEXT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


@pytest.mark.parametrize("moment", [
    datetime(2024, 6, 1),
    datetime(2024, 6, 1, tzinfo=UTC),
    datetime(2024, 6, 1, 2, tzinfo=timezone(timedelta(hours=2))),
])
def test_naive_and_aware_datetimes_read_alike(moment, score_record):
    assert utc_text(moment) == "2024-06-01T00:00:00Z"
    record = score_record("c1", as_of=moment)
    assert json.loads(record.model_dump_json())["as_of"] == "2024-06-01T00:00:00Z"
    assert isinstance(record.model_dump()["as_of"], datetime), "Python dumps keep datetimes"


def test_the_openapi_schema_still_says_date_time():
    schema = ScoreRecord.model_json_schema(mode="serialization")
    assert schema["properties"]["as_of"]["format"] == "date-time"


@pytest.fixture
def outbox(tmp_path, score_record):
    store = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    records, actions = load_rules(None).recommend([score_record("c1"), score_record("c2")])
    store.record_scores(records, actions)
    yield store
    store.close()


def test_actions_payloads_and_envelopes_carry_the_z(outbox):
    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[get_outbox] = lambda: outbox
    app.dependency_overrides[require_api_key] = lambda: None
    with TestClient(app) as client:
        items = client.get("/v1/actions").json()
    assert items
    for item in items:
        for name in ("as_of", "created_at", "next_attempt_at"):
            assert UTC_TEXT.match(item[name]), (name, item[name])
        assert item["payload"]["as_of"] == "2024-05-01T00:00:00Z" == item["as_of"]
    for row in outbox.list_actions():
        envelope = row.envelope()
        assert UTC_TEXT.match(envelope["timestamp"]), envelope["timestamp"]
        assert envelope["data"]["as_of"] == "2024-05-01T00:00:00Z"


def test_outreach_list_shows_as_of_with_the_z(outbox, tmp_path):
    result = CliRunner().invoke(outreach_app, ["list", "--outbox",
                                               f"sqlite:///{tmp_path / 'outbox.db'}"])
    assert result.exit_code == 0, result.output
    assert "as of (UTC)" in result.output
    assert result.output.count("2024-05-01T00:00:00Z") == 2, result.output
