"""Fresh scores by id on a live database, and outreach as behaviour happens.

Real servers (uvicorn on 127.0.0.1) with a real model over a database filled by
`churnlens load` from generated files, on SQLite and (when
CHURNLENS_TEST_POSTGRES_URL is set) PostgreSQL. Two servers over one database
stand for two server workers. Clocks are injected; waiting is polling a
condition with a bound, never a sleep or a timing assertion.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import httpx
import pandas as pd
import pytest

from serving.settings import Settings

pytestmark = pytest.mark.slow  # end-to-end: a trained model, real servers

#: the server's clock: the generated data ends on 2024-06-01
NOW = datetime(2024, 6, 1, 12, 0, 0)
DAY = pd.Timestamp("2024-06-02")


def load_into(url: str, data) -> None:
    from features.db_load import load_dataset
    from features.io import read_dataset

    load_dataset(read_dataset(data), url, now=NOW - timedelta(hours=1))


def make_app(url: str, outbox: str, *, keys, rules=None, outreach: bool = False):
    from serving.app import create_app

    app = create_app(Settings(data=url, api_keys=keys.entries, model_poll_seconds=0,
                              outbox_url=outbox, outreach_enabled=outreach, rules=rules,
                              live_poll_seconds=0.05))
    app.state.live_store.clock = lambda: NOW
    return app


@pytest.fixture(scope="module")
def database(backend, tmp_path_factory, trained_registry, scratch_database):
    """(registry, live database URL) filled from the registry's generated data."""
    with trained_registry.active() as registry, \
            scratch_database(backend, registry.root, prefix="live") as url:
        load_into(url, registry.data)
        yield registry, url


def first_customers(data, n: int) -> list[str]:
    return pd.read_csv(data / "customers.csv", dtype=str)["customer_id"].head(n).tolist()


def recent_orders(customer_id: str, prefix: str, *, n: int = 6, status: str = "completed"):
    return [{"order_id": f"{prefix}-{i}", "customer_id": customer_id,
             "ordered_at": (NOW - timedelta(days=i + 1)).isoformat(), "amount": 80.0 + i,
             "status": status} for i in range(n)]


def comparable(record: dict) -> dict:
    return {key: record[key] for key in ("customer_id", "churn_probability", "risk_tier", "clv",
                                         "value_segment", "lifecycle_stage", "reasons")}


def test_read_your_writes_across_two_server_workers(database, tmp_path, eventually, running_server,
                                                    wait_ready, scoped_keys):
    registry, url = database
    one, two = make_app(url, f"sqlite:///{tmp_path / 'o1.db'}", keys=scoped_keys), \
        make_app(url, f"sqlite:///{tmp_path / 'o2.db'}", keys=scoped_keys)
    customer = first_customers(registry.data, 3)[2]
    with running_server(one) as base_one, running_server(two) as base_two, \
            httpx.Client(base_url=base_one, timeout=60) as writer, \
            httpx.Client(base_url=base_two, timeout=60) as reader:
        wait_ready(writer)
        wait_ready(reader)
        eventually(lambda: two.state.live_scores.base is not None, what="the day's matrix")
        before = reader.get(f"/v1/customers/{customer}/score", headers=scoped_keys.read)
        assert before.status_code == 200, before.text
        assert pd.Timestamp(before.json()["as_of"].rstrip("Z")) == DAY
        written = writer.post("/v1/orders", headers=scoped_keys.write,
                              json=recent_orders(customer, f"ryw-{customer}"))
        assert written.status_code == 200 and written.json()["inserted"] == 6, written.text
        # the very next request to the other worker reflects the committed rows
        after = reader.get(f"/v1/customers/{customer}/score", headers=scoped_keys.read)
        assert after.status_code == 200, after.text
        exact = reader.get(f"/v1/customers/{customer}/score", headers=scoped_keys.read,
                           params={"as_of": DAY.isoformat()})
        assert comparable(after.json()) == comparable(exact.json()), \
            "the refreshed row must score as the customer's history read afresh"
        assert comparable(after.json()) != comparable(before.json()), \
            "six recent orders must move the score"
        assert two.state.live_scores.refreshed >= 1
        # another customer is still served from the day's prepared matrix
        other = first_customers(registry.data, 4)[3]
        served = reader.get(f"/v1/customers/{other}/score", headers=scoped_keys.read).json()
        direct = reader.get(f"/v1/customers/{other}/score", headers=scoped_keys.read,
                            params={"as_of": DAY.isoformat()}).json()
        assert comparable(served) == comparable(direct)


def test_rows_at_or_after_as_of_change_nothing(database, tmp_path, running_server, wait_ready,
                                               scoped_keys):
    registry, url = database
    app = make_app(url, f"sqlite:///{tmp_path / 'o.db'}", keys=scoped_keys)
    customer = first_customers(registry.data, 6)[5]
    moment = "2024-05-20T00:00:00"
    with running_server(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        wait_ready(client)
        before = client.get(f"/v1/customers/{customer}/score", headers=scoped_keys.full,
                            params={"as_of": moment})
        assert before.status_code == 200, before.text
        later = [{"order_id": f"pit-{customer}-{i}", "customer_id": customer,
                  "ordered_at": at, "amount": 500.0, "status": "returned"}
                 for i, at in enumerate([moment, "2024-05-25T08:00:00", "2024-06-01T11:00:00"])]
        assert client.post("/v1/orders", headers=scoped_keys.write, json=later).status_code == 200
        assert client.post("/v1/events", headers=scoped_keys.write, json=[
            {"customer_id": customer, "occurred_at": moment, "event_type": "support_ticket"}
        ]).status_code == 200
        # an order placed before the moment and returned after it was completed then
        orders = pd.read_csv(registry.data / "orders.csv", dtype=str, keep_default_na=False)
        placed = orders[(orders["customer_id"] == customer) & (orders["status"] == "completed")
                        & (pd.to_datetime(orders["ordered_at"]) < pd.Timestamp(moment))]
        assert not placed.empty, "the generated customer has a completed order before the moment"
        row = placed.iloc[-1]
        returned = {"order_id": row["order_id"], "customer_id": customer,
                    "ordered_at": row["ordered_at"], "amount": float(row["amount"]),
                    "discount": float(row["discount"] or 0), "status": "returned"}
        if row["items"]:
            returned["items"] = float(row["items"])
        answer = client.post("/v1/orders", headers=scoped_keys.write, json=[returned])
        assert answer.status_code == 200 and answer.json()["updated"] == 1, answer.text
        after = client.get(f"/v1/customers/{customer}/score", headers=scoped_keys.full,
                           params={"as_of": moment})
        assert comparable(after.json()) == comparable(before.json())


def test_a_return_after_as_of_leaves_the_batch_score_as_of_then_byte_identical(
        database, tmp_path, monkeypatch, run_cli, running_server, wait_ready, scoped_keys):
    """``score --as-of T`` on the database writes the same bytes before and after a return
    ingested after T, and the by-id ``?as_of=T`` agrees with it for that customer."""
    from features.io import read_dataset
    from features.pipeline import build_features

    registry, url = database
    monkeypatch.setenv("CHURNLENS_NO_PROGRESS", "1")
    moment = pd.Timestamp("2024-05-10")
    orders = read_dataset(url).dataset.orders
    assert orders is not None
    candidates = first_customers(registry.data, 40)[30:]
    placed = orders[orders["customer_id"].isin(candidates) & (orders["status"] == "completed")
                    & (orders["ordered_at"] < moment)].sort_values("ordered_at")
    assert not placed.empty, "a candidate has a completed order before the moment"
    row = placed.iloc[-1]
    customer = str(row["customer_id"])

    def batch(name: str) -> bytes:
        out = tmp_path / name
        result = run_cli("score", "--data", url, "--out", str(out), "--as-of",
                         moment.isoformat(), "--workers", "1")
        assert result.exit_code == 0, result.output
        return out.read_bytes()

    app = make_app(url, f"sqlite:///{tmp_path / 'o.db'}", keys=scoped_keys)
    first = batch("before.parquet")
    with running_server(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        wait_ready(client)
        returned = {"order_id": row["order_id"], "customer_id": customer,
                    "ordered_at": row["ordered_at"].isoformat(), "amount": float(row["amount"]),
                    "discount": float(row["discount"]), "status": "returned"}
        if pd.notna(row["items"]):
            returned["items"] = float(row["items"])
        answer = client.post("/v1/orders", headers=scoped_keys.write, json=[returned])
        assert answer.status_code == 200 and answer.json()["updated"] == 1, answer.text
        by_id = client.get(f"/v1/customers/{customer}/score", headers=scoped_keys.full,
                           params={"as_of": moment.isoformat()})
        assert by_id.status_code == 200, by_id.text
    assert batch("after.parquet") == first, \
        "a return recorded after T must not change the batch scores as of T"
    scored = pd.read_parquet(tmp_path / "after.parquet").set_index("customer_id").loc[customer]
    record = by_id.json()
    assert record["churn_probability"] == pytest.approx(scored["churn_probability"], abs=1e-9)
    assert record["clv"] == pytest.approx(scored["clv"], abs=1e-6)
    assert (record["risk_tier"], record["lifecycle_stage"], record["value_segment"]) == \
        (scored["risk_tier"], scored["lifecycle_stage"], scored["value_segment"])
    assert [r["feature"] for r in record["reasons"]] == \
        [r["feature"] for r in json.loads(scored["reasons_json"])][:len(record["reasons"])]
    # the return is in the database and counts from the moment it was recorded (NOW)
    now = read_dataset(url).dataset
    assert build_features(now, as_of=DAY).loc[customer, "returned_orders_total"] == \
        build_features(now, as_of=moment).loc[customer, "returned_orders_total"] + 1


def test_unknown_customer_and_scopes_on_a_live_source(database, tmp_path, running_server,
                                                      wait_ready, scoped_keys):
    _, url = database
    app = make_app(url, f"sqlite:///{tmp_path / 'o.db'}", keys=scoped_keys)
    with running_server(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        wait_ready(client)
        missing = client.get("/v1/customers/nobody-here/score", headers=scoped_keys.read)
        assert missing.status_code == 404 and "nobody-here" in missing.text
        assert client.get("/v1/customers/nobody-here/score",
                          headers=scoped_keys.write).status_code == 403


@pytest.mark.postgres
def test_the_server_recovers_by_itself_after_a_database_outage(
        postgres_url, tmp_path_factory, tmp_path, eventually, trained_registry, scratch_database,
        running_server, wait_ready, scoped_keys, tcp_proxy):
    with trained_registry.active() as registry, \
            scratch_database("postgresql", registry.root, prefix="live") as url:
        load_into(url, registry.data)
        proxy, through_proxy = tcp_proxy(url)
        try:
            app = make_app(through_proxy, f"sqlite:///{tmp_path / 'o.db'}", keys=scoped_keys)
            customer = first_customers(registry.data, 8)[7]
            with running_server(app) as base, httpx.Client(base_url=base, timeout=60) as client:
                wait_ready(client)
                assert client.get(f"/v1/customers/{customer}/score",
                                  headers=scoped_keys.full).status_code == 200
                proxy.cut()
                refused = client.post("/v1/orders", headers=scoped_keys.write,
                                      json=recent_orders(customer, f"outage-{customer}", n=1))
                assert refused.status_code == 503, refused.text
                assert "nothing was written" in refused.json()["detail"]
                down = client.get(f"/v1/customers/{customer}/score", headers=scoped_keys.full)
                assert down.status_code == 503 and "database" in down.json()["detail"]
                proxy.restore()

                def accepted() -> bool:
                    answer = client.post("/v1/orders", headers=scoped_keys.write,
                                         json=recent_orders(customer, f"outage-{customer}", n=1))
                    assert answer.status_code in (200, 503), answer.text
                    return answer.status_code == 200

                eventually(accepted, what="ingestion after the database came back")
                assert client.get(f"/v1/customers/{customer}/score",
                                  headers=scoped_keys.full).status_code == 200
        finally:
            proxy.close()


@pytest.fixture
def own_database(backend, tmp_path_factory, trained_registry, scratch_database):
    """A live database for one test (its changes must not reach other tests' rescorers)."""
    with trained_registry.active() as registry, \
            scratch_database(backend, registry.root, prefix="live") as url:
        load_into(url, registry.data)
        yield registry, url


def test_a_returned_order_reaches_the_crm_webhook_without_a_batch_run(own_database, tmp_path,
                                                                      eventually, running_server,
                                                                      wait_ready, scoped_keys,
                                                                      make_receiver):
    """Outreach follows behaviour: ingest → background rescore → outbox → relay → webhook."""

    from features.io import read_dataset
    from models.loading import load_model
    from serving.outreach.outbox import Outbox
    from serving.outreach.relay import start_relay_in_background
    from serving.outreach.webhooks import new_secret
    from serving.scorer import Scorer
    from serving.settings import OutreachSettings

    registry, url = own_database
    scorer = Scorer(load_model("models:/churnlens@champion"))
    dataset = read_dataset(url).dataset
    candidates = first_customers(registry.data, 40)[10:]
    before = {r.customer_id: r.churn_probability
              for r in scorer.score_dataset(dataset, as_of=DAY, explain="none",
                                            customer_ids=candidates)}
    # the story: a customer returns what they bought lately (completed → returned)
    orders = dataset.orders
    recent = (orders["customer_id"].isin(candidates) & (orders["status"] == "completed")
              & (orders["ordered_at"] >= NOW - timedelta(days=120)))
    moved_orders = orders.copy()
    moved_orders.loc[recent, "status"] = "returned"
    moved = dataset.__class__(customers=dataset.customers, orders=moved_orders,
                              events=dataset.events, subscriptions=dataset.subscriptions)
    after = {r.customer_id: r.churn_probability
             for r in scorer.score_dataset(moved, as_of=DAY, explain="none",
                                           customer_ids=candidates)}
    rises = {c: after[c] - before[c] for c in candidates
             if before[c] is not None and after[c] is not None}
    customer = max(rises, key=rises.get)
    assert rises[customer] > 0.01, f"returns should raise someone's risk: {rises}"
    threshold = (before[customer] + after[customer]) / 2

    secret = new_secret()
    receiver = make_receiver(secret=secret).start()
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"""version: 1
rules:
  - name: return-follow-up
    min_churn_probability: {threshold}
    action: experience_follow_up
    channel: {receiver.url('/ok')}
    cooldown_days: 30
""")
    outbox_url = f"sqlite:///{tmp_path / 'outbox.db'}"
    app = make_app(url, outbox_url, keys=scoped_keys, rules=rules, outreach=True)
    relay = start_relay_in_background(OutreachSettings(
        outbox_url=outbox_url, webhook_secret=secret, relay_poll_seconds=0.02,
        request_timeout_seconds=5, relay_lease_seconds=120))
    try:
        with running_server(app) as base, httpx.Client(base_url=base, timeout=60) as client:
            wait_ready(client)
            mine = orders[recent & (orders["customer_id"] == customer)]
            rows = [{"order_id": row.order_id, "customer_id": customer,
                     "ordered_at": row.ordered_at.isoformat(), "amount": row.amount,
                     "discount": row.discount, "status": "returned"}
                    for row in mine.itertuples(index=False)]
            answer = client.post("/v1/orders", headers=scoped_keys.write, json=rows)
            assert answer.status_code == 200, answer.text
            delivered = eventually(lambda: [r for r in receiver.received if r.verified],
                                   what="a signed webhook for the returned orders")
            assert {r.webhook_id for r in delivered} and \
                all(customer.encode() in r.body for r in delivered), delivered
            # more behaviour within the cooldown: rescored again, no second action
            rescorer = app.state.rescorer
            seen = rescorer.stats.customers
            assert client.post("/v1/events", headers=scoped_keys.write, json=[
                {"customer_id": customer, "occurred_at": (NOW - timedelta(minutes=5)).isoformat(),
                 "event_type": "support_ticket"}]).status_code == 200
            eventually(lambda: rescorer.stats.customers > seen, what="the second rescoring")
        actions = Outbox(outbox_url).action_history()
        assert actions["customer_id"].tolist() == [customer], actions
    finally:
        relay.stop()
        receiver.stop()
