"""The scoring API against a real tiny model in a temporary MLflow registry."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serving.settings import Settings


@pytest.fixture(scope="module")
def registry(tmp_path_factory, trained_registry):
    with trained_registry.active() as trained:
        yield trained


@pytest.fixture(scope="module")
def dataset(registry):
    from features.io import read_dataset

    return read_dataset(registry.data).dataset


@pytest.fixture(scope="module")
def settings(registry, api_key):
    return Settings(data=registry.data, api_keys=[api_key.digest], model_poll_seconds=0,
                    outbox_url=f"sqlite:///{registry.root / 'outbox.db'}", max_batch_size=20)


@pytest.fixture(scope="module")
def client(registry, settings, wait_ready):
    from serving.app import create_app

    with TestClient(create_app(settings)) as test_client:
        wait_ready(test_client.app)
        yield test_client


@pytest.fixture(scope="module")
def scorer(registry):
    from models.loading import load_model
    from serving.scorer import Scorer

    return Scorer(load_model("models:/churnlens@champion"))


@pytest.fixture(scope="module")
def scored_customer(dataset, scorer):
    """An in-population customer with reasons (the interesting case)."""
    records = scorer.score_dataset(dataset, as_of=dataset.default_as_of(), explain="all")
    for record in records:
        if record.risk_tier == "high" and record.reasons:
            return record
    return next(r for r in records if r.risk_tier != "not_applicable")


def history_body(dataset, customer_id: str, **extra) -> dict:
    """One customer's history from the dataset as a POST /v1/scores body."""
    tables = dataset.for_customers([customer_id])
    body: dict = {"customers": [], "orders": [], "events": [], "subscriptions": []}
    for row in tables.customers.to_dict(orient="records"):
        attributes = {k: (None if pd.isna(v) else v) for k, v in row.items()
                      if k not in ("customer_id", "signup_at")}
        body["customers"].append({
            "customer_id": row["customer_id"], "attributes": attributes,
            "signup_at": None if pd.isna(row["signup_at"]) else row["signup_at"].isoformat()})
    for name in ("orders", "events", "subscriptions"):
        frame = tables.table(name)
        if frame is None:
            continue
        for row in frame.to_dict(orient="records"):
            clean = {}
            for key, value in row.items():
                if isinstance(value, pd.Timestamp):
                    value = value.isoformat()
                elif value is None or (not isinstance(value, str) and pd.isna(value)):
                    continue
                clean[key] = value
            body[name].append(clean)
    body.update(extra)
    return body


def test_readyz_after_load_names_the_version(client, registry):
    assert client.get("/readyz").json() == {"status": "ready",
                                            "model_version": registry.version, "detail": None}


def test_model_info(client, registry, api_key):
    info = client.get("/v1/model", headers=api_key.auth).json()
    assert info["name"] == "churnlens"
    assert info["version"] == registry.version
    assert info["alias"] == "champion"
    assert info["run_id"]
    assert "churn_roc_auc" in info["metrics"], info["metrics"]
    chosen = info["churn_definition"]
    assert chosen["name"] == "activity" and chosen["reason"].startswith("auto: "), (
        "orders and app events: --churn auto trains the activity definition")
    assert info["lifecycle"]["active_days"] == chosen["active_days"]


def test_score_by_id_matches_the_batch_scorer(client, scored_customer, api_key):
    answer = client.get(f"/v1/customers/{scored_customer.customer_id}/score", headers=api_key.auth)
    assert answer.status_code == 200, answer.text
    record = answer.json()
    assert record["churn_probability"] == pytest.approx(scored_customer.churn_probability)
    assert record["clv"] == pytest.approx(scored_customer.clv)
    assert record["risk_tier"] == scored_customer.risk_tier
    assert [r["feature"] for r in record["reasons"]] == [
        r.feature for r in scored_customer.reasons]
    assert 0 < len(record["reasons"]) <= 5
    assert record["value_at_risk"] == pytest.approx(record["churn_probability"] * record["clv"])
    assert all(r["text"] for r in record["reasons"])
    assert record["as_of"].endswith("T00:00:00Z"), "by id, as_of reads like every timestamp"


def test_score_by_id_explain_false_and_top_k(client, scored_customer, api_key):
    url = f"/v1/customers/{scored_customer.customer_id}/score"
    assert client.get(url, params={"explain": "false"},
                      headers=api_key.auth).json()["reasons"] == []
    two = client.get(url, params={"top_k": 2}, headers=api_key.auth).json()["reasons"]
    assert 0 < len(two) <= 2


def test_score_by_id_unknown_customer_is_404(client, api_key):
    answer = client.get("/v1/customers/no-such-customer/score", headers=api_key.auth)
    assert answer.status_code == 404
    assert "no-such-customer" in answer.json()["detail"]


def test_score_by_id_bad_top_k_is_422_naming_it(client, scored_customer, api_key):
    answer = client.get(f"/v1/customers/{scored_customer.customer_id}/score",
                        params={"top_k": 0}, headers=api_key.auth)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["query", "top_k"]


def test_score_by_history_gives_the_same_score_as_by_id(client, dataset, scored_customer, api_key):
    """No skew: the same history sent in the body scores exactly like the stored one."""
    as_of = dataset.default_as_of().isoformat()
    body = history_body(dataset, scored_customer.customer_id, as_of=as_of)
    answer = client.post("/v1/scores", json=body, headers=api_key.auth)
    assert answer.status_code == 200, answer.text
    [record] = answer.json()["scores"]
    assert record["customer_id"] == scored_customer.customer_id
    assert record["churn_probability"] == pytest.approx(scored_customer.churn_probability)
    assert record["clv"] == pytest.approx(scored_customer.clv)
    assert [r["feature"] for r in record["reasons"]] == [
        r.feature for r in scored_customer.reasons]


def test_score_by_history_keeps_request_order_and_records_to_the_outbox(
        client, dataset, registry, api_key):
    ids = list(dataset.customers["customer_id"][:6])[::-1]
    bodies = [history_body(dataset, customer_id) for customer_id in ids]
    body = {name: [row for b in bodies for row in b[name]]
            for name in ("customers", "orders", "events", "subscriptions")}
    body.update(as_of=dataset.default_as_of().isoformat(), explain=False)
    answer = client.post("/v1/scores", json=body, headers=api_key.auth)
    assert answer.status_code == 200, answer.text
    scores = answer.json()["scores"]
    assert [s["customer_id"] for s in scores] == ids
    assert all(s["reasons"] == [] for s in scores)
    with sqlite3.connect(registry.root / "outbox.db") as connection:
        stored = {row[0] for row in connection.execute("SELECT customer_id FROM scores")}
    assert set(ids) <= stored, "scores served by the API should be in the outbox"


def test_score_by_history_without_as_of_uses_now(client, dataset, scored_customer, api_key):
    body = history_body(dataset, scored_customer.customer_id)
    answer = client.post("/v1/scores", json=body, headers=api_key.auth)
    assert answer.status_code == 200, answer.text
    served_as_of = pd.Timestamp(answer.json()["as_of"])
    assert served_as_of.tzinfo is not None, "timestamps on the wire carry their UTC offset"
    assert answer.json()["as_of"].endswith("Z") and answer.json()["scores"][0]["as_of"] \
        == answer.json()["as_of"]
    assert abs(served_as_of - pd.Timestamp.now("UTC")) < pd.Timedelta("1min")


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda b: b["orders"][0].update(amount="lots"), ["body", "orders", 0, "amount"]),
        (lambda b: b["orders"][0].update(amount=-5), ["body", "orders", 0, "amount"]),
        (lambda b: b["orders"][0].update(ordered_at="yesterday"),
         ["body", "orders", 0, "ordered_at"]),
        (lambda b: b["orders"][0].update(status="lost"), ["body", "orders", 0, "status"]),
        (lambda b: b["orders"][0].pop("order_id"), ["body", "orders", 0, "order_id"]),
        (lambda b: b["orders"][0].update(colour="red"), ["body", "orders", 0, "colour"]),
        (lambda b: b["orders"][0].update(customer_id="stranger"),
         ["body", "orders", 0, "customer_id"]),
        (lambda b: b["orders"].append(dict(b["orders"][0])), ["body", "orders", 1, "order_id"]),
        (lambda b: b.update(customers=[]), ["body", "customers"]),
        (lambda b: b.update(top_k=0), ["body", "top_k"]),
    ],
)
def test_malformed_history_is_422_naming_the_field(client, dataset, change, where, api_key):
    customer_id = next(iter(dataset.orders["customer_id"]))
    body = history_body(dataset, customer_id)
    body["orders"] = body["orders"][:1]
    change(body)
    answer = client.post("/v1/scores", json=body, headers=api_key.auth)
    assert answer.status_code == 422, answer.text
    locations = [error["loc"] for error in answer.json()["detail"]]
    assert where in locations, locations


def test_customer_without_history_before_as_of_is_422(client, dataset, api_key):
    customer_id = next(iter(dataset.orders["customer_id"]))
    body = history_body(dataset, customer_id, as_of="1990-01-01T00:00:00")
    body["customers"][0]["signup_at"] = None
    answer = client.post("/v1/scores", json=body, headers=api_key.auth)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["body", "customers", 0, "customer_id"]


def test_history_without_activity_is_422(client, api_key):
    body = {"customers": [{"customer_id": "lonely"}]}
    answer = client.post("/v1/scores", json=body, headers=api_key.auth)
    assert answer.status_code == 422
    assert "orders, events or subscriptions" in answer.json()["detail"][0]["msg"]


def test_batch_over_the_limit_is_422_with_a_clear_message(client, settings, api_key):
    size = settings.max_batch_size + 1
    body = {"customers": [{"customer_id": f"c{i}"} for i in range(size)],
            "orders": [{"order_id": "o1", "customer_id": "c0",
                        "ordered_at": "2024-01-01T00:00:00", "amount": 10}]}
    answer = client.post("/v1/scores", json=body, headers=api_key.auth)
    assert answer.status_code == 422
    [error] = answer.json()["detail"]
    assert error["loc"] == ["body", "customers"]
    assert "CHURNLENS_MAX_BATCH_SIZE" in error["msg"] and str(size) in error["msg"]


def test_metrics_record_scores_served(client, scored_customer, api_key):
    client.get(f"/v1/customers/{scored_customer.customer_id}/score", headers=api_key.auth)
    text = client.get("/metrics").text
    assert "churnlens_scores_total{" in text
    assert "churnlens_churn_probability_bucket" in text
    assert 'churnlens_model_info{alias="champion",name="churnlens"' in text


def test_score_frame_has_the_batch_columns(scorer, dataset):
    frame = scorer.score_frame(dataset, as_of=dataset.default_as_of(), explain="at-risk",
                               top_k=3, customer_ids=list(dataset.customers["customer_id"][:25]))
    assert list(frame.columns) == [
        "customer_id", "as_of", "churn_probability", "risk_tier", "clv", "value_segment",
        "value_at_risk", "reasons_json", "reason_1", "reason_2", "reason_3",
        "recommended_action", "model_version", "lifecycle_stage", "expected_saved_value"]
    assert 0 < len(frame) <= 25
    low = frame[frame["risk_tier"].isin(["low", "not_applicable"])]
    assert (low["reasons_json"] == "[]").all(), "at-risk explains only medium and high tiers"


def test_scorer_recommends_with_rules(dataset, scorer):
    from serving.outreach.rules import load_rules, recommended_action
    from serving.scorer import Scorer

    rules = load_rules(None)
    with_rules = Scorer(scorer.loaded, rules=rules)
    records = with_rules.score_dataset(dataset, as_of=dataset.default_as_of(), explain="all")
    expected = {r.customer_id: recommended_action(rules.evaluate(r)) for r in records}
    for record in records:
        assert record.recommended_action == expected[record.customer_id]
    held = [r for r in records if (rules.evaluate(r) or [None])[0] is not None
            and rules.evaluate(r)[0].control]
    assert held, "the built-in rules hold some customers out"
    assert all(r.recommended_action != rules.evaluate(r)[0].action for r in held), (
        "a customer held out by the first matching rule is not recommended its action")
    assert any(r.recommended_action for r in records), "the built-in rules should fire for some"


def test_score_by_id_recommends_the_first_matching_rule(client, dataset, registry, api_key):
    from serving.outreach.rules import load_rules, recommended_action
    from serving.schemas import ScoreRecord

    rules = load_rules(None)
    seen_actions = set()
    for customer_id in list(dataset.customers["customer_id"][:40]):
        answer = client.get(f"/v1/customers/{customer_id}/score", headers=api_key.auth)
        if answer.status_code == 404:
            continue
        record = ScoreRecord.model_validate(answer.json())
        assert record.recommended_action == recommended_action(rules.evaluate(record))
        seen_actions.add(record.recommended_action)
    assert seen_actions - {None}, "some of 40 customers should trigger a built-in rule"
    with sqlite3.connect(registry.root / "outbox.db") as connection:
        actions = connection.execute("SELECT count(*) FROM actions").fetchone()[0]
    assert actions > 0, "triggered actions of API scores should be in the outbox"
