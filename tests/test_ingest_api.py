"""Ingestion routes on a real server: all-or-nothing, idempotent, scoped, never a 5xx.

A real uvicorn server on 127.0.0.1 writes to a SQLite file and (when
CHURNLENS_TEST_POSTGRES_URL is set) a PostgreSQL schema of its own. No model
is needed to ingest, so the server here has none; the clock of the store is
injected so "in the future" does not depend on when the test runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
import pytest
from fastapi import FastAPI

from serving.settings import Settings

NOW = datetime(2024, 6, 1, 12, 0, 0)


@pytest.fixture
def serve_live(backend, tmp_path, running_server, scratch_database, scoped_keys, live_tables):
    """``with serve_live(ingest_processes=N) as (client, url, app)``: a server whose data
    source is an empty live database of its own (two customers in it)."""
    from serving.app import create_app

    empty_model = tmp_path / "no-model"
    empty_model.mkdir(exist_ok=True)

    @contextlib.contextmanager
    def serve(ingest_processes: int = 1) -> Iterator[tuple[httpx.Client, str, FastAPI]]:
        with scratch_database(backend, tmp_path, prefix="live") as url:
            live_tables.create(url, attributes={"country": "text", "age": "number"})
            app = create_app(Settings(data=url, api_keys=scoped_keys.entries,
                                      model_uri=str(empty_model), model_poll_seconds=0,
                                      outreach_enabled=False, ingest_processes=ingest_processes))
            app.state.live_store.clock = lambda: NOW
            with running_server(app) as base, httpx.Client(base_url=base, timeout=30) as client:
                answer = client.post("/v1/customers", headers=scoped_keys.write, json=[
                    {"customer_id": "c-1", "signup_at": "2023-01-05",
                     "attributes": {"country": "DE"}},
                    {"customer_id": "c-2"}])
                assert answer.status_code == 200, answer.text
                yield client, url, app
            app.state.live_store.close()

    return serve


@pytest.fixture
def served(serve_live):
    """(client, database URL) of a server whose data source is an empty live database."""
    with serve_live() as (client, url, _):
        yield client, url


def order(order_id: str = "o-1", *, status: str = "completed", customer: str = "c-1",
          at: str = "2024-05-20T10:00:00Z", amount: float = 40.0) -> dict:
    return {"order_id": order_id, "customer_id": customer, "ordered_at": at, "amount": amount,
            "status": status}


def test_an_order_is_written_once_and_a_new_status_is_an_update(served, scoped_keys, live_tables):
    client, url = served
    first = client.post("/v1/orders", headers=scoped_keys.write, json=[order()])
    assert first.status_code == 200, first.text
    assert first.json() | {"committed_at": None} == {
        "table": "orders", "received": 1, "inserted": 1, "updated": 0, "unchanged": 0,
        "customers_changed": ["c-1"], "committed_at": None}
    replay = client.post("/v1/orders", headers=scoped_keys.write, json=[order()])
    assert (replay.json()["unchanged"], replay.json()["customers_changed"]) == (1, []), \
        "a retried request must change nothing"
    returned = client.post("/v1/orders", headers=scoped_keys.write, json=[order(status="returned")])
    assert returned.json()["updated"] == 1, returned.text
    assert live_tables.count(url, "orders") == 1
    assert live_tables.count(url, "orders", status="returned") == 1
    assert live_tables.count(url, "order_status_changes", order_id="o-1", status="returned") == 1, \
        "the status change is recorded with its time"


def test_events_without_an_id_are_keyed_by_their_fields(served, scoped_keys, live_tables):
    client, url = served
    events = [{"customer_id": "c-1", "occurred_at": "2024-05-30T08:00:00", "event_type": "login"},
              {"customer_id": "c-2", "occurred_at": "2024-05-30T09:00:00", "event_type": "view",
               "value": 2.5},
              {"customer_id": "c-2", "occurred_at": "2024-05-30T09:00:00", "event_type": "view",
               "value": 2.5, "event_id": "e-77"}]
    first = client.post("/v1/events", headers=scoped_keys.write, json=events)
    assert first.json()["inserted"] == 3, first.text
    again = client.post("/v1/events", headers=scoped_keys.write, json=events)
    assert again.json()["unchanged"] == 3, again.text
    assert live_tables.count(url, "events") == 3


def test_a_subscription_ends_by_update(served, scoped_keys, live_tables):
    client, url = served
    sub = {"customer_id": "c-1", "started_at": "2024-01-01", "plan": "pro", "mrr": 30.0}
    assert client.post("/v1/subscriptions", headers=scoped_keys.write,
                       json=[sub]).json()["inserted"] == 1
    ended = client.post("/v1/subscriptions", headers=scoped_keys.write,
                        json=[sub | {"ended_at": "2024-05-31"}])
    assert ended.json()["updated"] == 1, ended.text
    assert live_tables.count(url, "subscriptions") == 1


def test_customers_are_upserted_keeping_what_is_not_sent(served, scoped_keys, live_tables):
    client, url = served
    moved = client.post("/v1/customers", headers=scoped_keys.write,
                        json=[{"customer_id": "c-1", "attributes": {"age": 41}}])
    assert moved.json()["updated"] == 1, moved.text
    assert live_tables.count(url, "customers", customer_id="c-1", country="DE", age=41.0) == 1
    unknown = client.post("/v1/customers", headers=scoped_keys.write,
                          json=[{"customer_id": "c-3", "attributes": {"shoe_size": 44}}])
    assert unknown.status_code == 422, unknown.text
    assert "shoe_size" in unknown.json()["detail"][0]["msg"]


def test_one_bad_row_refuses_the_request_naming_row_and_field(served, scoped_keys, live_tables):
    client, url = served
    answer = client.post("/v1/orders", headers=scoped_keys.write,
                         json=[order("o-1"), order("o-2", customer="c-nobody")])
    assert answer.status_code == 422, answer.text
    [problem] = answer.json()["detail"]
    assert problem["loc"] == ["body", 1, "customer_id"], problem
    assert "unknown customer_id" in problem["msg"]
    assert live_tables.count(url, "orders") == 0, "nothing may be written when a row fails"
    typed = client.post("/v1/orders", headers=scoped_keys.write,
                        json=[order(), order("o-2") | {"amount": -1}])
    assert typed.status_code == 422
    assert typed.json()["detail"][0]["loc"] == ["body", 1, "amount"]
    twice = client.post("/v1/orders", headers=scoped_keys.write, json=[order(), order()])
    assert twice.status_code == 422 and "duplicate order_id" in twice.text
    assert live_tables.count(url, "orders") == 0


def test_rows_from_the_future_are_refused(served, scoped_keys, live_tables):
    client, url = served
    within = client.post("/v1/orders", headers=scoped_keys.write,
                         json=[order(at="2024-06-01T12:04:00Z")])
    assert within.status_code == 200, "a few minutes of clock skew are tolerated"
    ahead = client.post("/v1/events", headers=scoped_keys.write, json=[
        {"customer_id": "c-1", "occurred_at": "2024-06-01T12:30:00Z", "event_type": "login"}])
    assert ahead.status_code == 422, ahead.text
    [problem] = ahead.json()["detail"]
    assert problem["loc"] == ["body", 0, "occurred_at"] and "in the future" in problem["msg"]
    assert live_tables.count(url, "events") == 0


def test_scopes_keep_readers_and_writers_apart(served, scoped_keys):
    client, _ = served
    refused = client.post("/v1/orders", headers=scoped_keys.read, json=[order()])
    assert refused.status_code == 403 and "'ingest' scope" in refused.json()["detail"]
    # refused before the body is read: a malformed body gets the same answer
    garbage = client.post("/v1/orders", headers=scoped_keys.read, content=b"{not json")
    assert garbage.status_code == 403
    assert client.get("/v1/customers/c-1/score", headers=scoped_keys.write).status_code == 403
    assert client.post("/v1/orders", headers=scoped_keys.full, json=[order()]).status_code == 200
    assert client.post("/v1/orders", json=[order()]).status_code == 401


@pytest.mark.parametrize("ingest_processes", [0, 2])
def test_concurrent_ingests_of_one_order_leave_one_row_and_no_5xx(serve_live, scoped_keys,
                                                                 live_tables, ingest_processes):
    """In the API process's threads and in two ingest processes: writers that race."""
    with serve_live(ingest_processes) as (client, url, _):
        _race_one_order(client, url, scoped_keys, live_tables)


def _race_one_order(client, url, scoped_keys, live_tables) -> None:
    statuses = ["completed", "returned", "cancelled", "unclaimed"] * 4

    def send(status: str) -> int:
        with httpx.Client(base_url=str(client.base_url), timeout=60) as own:
            return own.post("/v1/orders", headers=scoped_keys.write,
                            json=[order("o-race", status=status)]).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(send, statuses))
    assert codes == [200] * len(statuses), codes
    assert live_tables.count(url, "orders", order_id="o-race") == 1


def test_a_directory_source_has_no_ingestion(tmp_path, running_server, scoped_keys):
    from serving.app import create_app

    empty_model = tmp_path / "no-model"
    empty_model.mkdir()
    app = create_app(Settings(data=tmp_path, api_keys=scoped_keys.entries,
                              model_uri=str(empty_model), model_poll_seconds=0,
                              outreach_enabled=False))
    with running_server(app) as base, httpx.Client(base_url=base) as client:
        answer = client.post("/v1/orders", headers=scoped_keys.write, json=[order()])
    assert answer.status_code == 404 and "database URL" in answer.text


def test_ingest_processes_write_and_answer_as_the_api_process_does(serve_live, scoped_keys,
                                                                   live_tables):
    """Ingests handed to an ingest process answer exactly as those written in the API
    process (inserted/updated/unchanged, 422 naming row and field, nothing written on a
    refusal), and the API process itself never opened the database to write them."""
    requests = [
        ("orders", [order("o-1"), order("o-2", customer="c-2")]),
        ("orders", [order("o-1", status="returned")]),
        ("events", [{"customer_id": "c-1", "occurred_at": "2024-05-30T08:00:00",
                     "event_type": "login"}] * 2),
        ("events", [{"customer_id": "c-1", "occurred_at": "2024-05-30T08:00:00",
                     "event_type": "login"}] * 2),
        ("events", [{"customer_id": "c-2", "occurred_at": "2024-05-31T08:00:00",
                     "event_type": "login", "event_id": "given-1"}]),
        ("orders", [order("o-3"), order("o-4", customer="c-nobody")]),
        ("events", [{"customer_id": "c-1", "occurred_at": "2024-06-01T12:30:00Z",
                     "event_type": "login"}]),
        ("customers", [{"customer_id": "c-1", "attributes": {"age": 41}}]),
    ]
    answers = {}
    for processes in (0, 1):
        with serve_live(processes) as (client, url, app):
            seen = []
            for table, body in requests:
                answer = client.post(f"/v1/{table}", headers=scoped_keys.write, json=body)
                seen.append((answer.status_code,
                             answer.json() | {"committed_at": None} if answer.status_code == 200
                             else answer.json()))
            counts = [live_tables.count(url, table) for table in ("orders", "events")]
            if processes:
                assert app.state.live_store._engine is None, \
                    "the API process wrote itself instead of its ingest process"
            answers[processes] = (seen, counts)
    assert answers[1] == answers[0]
    seen, counts = answers[0]
    assert [code for code, _ in seen] == [200] * 5 + [422, 422, 200]
    assert seen[5][1]["detail"][0]["loc"] == ["body", 1, "customer_id"]
    assert counts == [2, 3]
