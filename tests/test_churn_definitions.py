"""Churn definitions: the activity population and labels by hand (window edges included),
what ``--churn auto`` picks, the features' population rule, and bad settings."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import numpy as np
import pandas as pd
import pytest

from features.contract import validate_tables
from features.definition import (
    PASSIVE_EVENT_TYPES,
    DefinitionError,
    activity_population_rule,
    auto_definition,
    resolve_definition,
)
from features.generate import generate_dataset
from features.labels import label_customers
from features.pipeline import build_features
from models.bundle import population_mask

T = pd.Timestamp("2024-07-01")
H = 90          # T + H = 2024-09-29
ACTIVE = 60     # T - A = 2024-05-02


def edge_dataset():
    """One customer per edge of the windows [T - A, T) and [T, T + H) (see each comment)."""
    ids = ["P", "Q", "R", "S", "U", "V", "W", "W2", "X", "Y", "Z", "K", "M"]
    customers = pd.DataFrame({"customer_id": ids, "signup_at": ["2024-01-01"] * len(ids)})
    orders = pd.DataFrame({
        "order_id": [f"o{i}" for i in range(6)],
        "customer_id": ["P", "Q", "Q", "Y", "K", "K"],
        "ordered_at": ["2024-05-02T00:00:00",   # P: exactly T - A: inside
                       "2024-05-01T23:59:59",   # Q: one second too early
                       "2024-07-10T00:00:00",
                       "2024-06-20T00:00:00",   # Y: returned, not activity
                       "2024-06-01T00:00:00",   # K: completed, then only a cancellation
                       "2024-07-15T00:00:00"],
        "amount": ["10", "10", "10", "10", "10", "10"],
        "status": ["completed", "completed", "completed", "returned", "completed",
                   "cancelled"],
    })
    events = pd.DataFrame({
        "customer_id": ["R", "R", "S", "S", "X", "X", "M"],
        "occurred_at": ["2024-06-30T23:59:59", "2024-09-28T23:59:59",  # R: last second inside
                        "2024-06-15T00:00:00", "2024-09-29T00:00:00",  # S: exactly T + H: out
                        "2024-06-20T00:00:00", "2024-07-20T00:00:00",  # X: e-mail opens only
                        "2024-06-01T00:00:00"],
        "event_type": ["login", "login", "login", "login", "email_open", "email_open",
                       "login"],
    })
    orders = pd.concat([orders, pd.DataFrame({
        "order_id": ["o9"], "customer_id": ["M"], "ordered_at": ["2024-08-01"],
        "amount": ["25"], "status": ["completed"]})], ignore_index=True)
    subscriptions = pd.DataFrame({
        "customer_id": ["U", "V", "W", "W2", "Z"],
        "started_at": ["2024-01-01", "2024-06-01", "2024-03-01", "2024-03-01",
                       "2024-07-01T00:00:00"],
        "ended_at": ["2024-07-01T00:00:00",     # U: ends exactly at T: running at T
                     "",                        # V: running on
                     "2024-09-29T00:00:00",     # W: ends exactly at T + H: not running then
                     "2024-09-29T00:00:01",     # W2: still running at T + H
                     ""],                       # Z: starts exactly at T: not before T
        "mrr": ["10", "10", "10", "10", "10"],
    })
    tables = {"customers": customers, "orders": orders, "events": events,
              "subscriptions": subscriptions}
    return validate_tables(tables, sources={}, first_rows={}).dataset


def activity_labels(**settings):
    return label_customers(edge_dataset(), as_of=T, horizon_days=H, definition="activity",
                           active_days=ACTIVE, **settings)


def test_activity_population_and_labels_by_hand_at_the_window_edges():
    labels = activity_labels()
    population = sorted(labels.index[labels["in_population"]])
    assert population == sorted(["P", "R", "S", "U", "V", "W", "W2", "K", "M"]), (
        "activity in [T - A, T) or a subscription running at T; not Q (one second early), "
        "X (e-mail opens are passive), Y (a return), Z (starts at T)")
    churned = labels.loc[population, "churned"].to_dict()
    assert churned == {"P": 1, "R": 0, "S": 1, "U": 1, "V": 0, "W": 1, "W2": 0, "K": 1,
                       "M": 0}, (
        "retained: activity in [T, T + H) (R's last second, M's order) or a subscription "
        "running at T + H (V, W2); churned: an event exactly at T + H (S), a subscription "
        "ending exactly at T + H (W), only a cancelled order (K)")
    assert labels.loc[["Q", "X", "Y"], "churned"].isna().all()


def test_activity_events_narrow_or_widen_what_counts():
    with_opens = activity_labels(activity_events=["login", "email_open"])
    assert with_opens.at["X", "in_population"] and with_opens.at["X", "churned"] == 0
    opens_only = activity_labels(activity_events=["email_open"])
    assert not opens_only.at["R", "in_population"], "R's logins no longer count"
    assert opens_only.at["P", "in_population"], "orders always count"


def test_the_active_window_defaults_to_the_horizon():
    labels = label_customers(edge_dataset(), as_of=T, horizon_days=H, definition="activity")
    assert labels.at["Q", "in_population"], "with A = H = 90 days, Q's order is inside"


def test_activity_clv_counts_orders_and_subscription_revenue():
    labels = activity_labels()
    month = 365.25 / 12
    assert labels.at["M", "clv_target"] == pytest.approx(25.0)
    assert labels.at["V", "clv_target"] == pytest.approx(10 * 365 / month)


def test_the_features_population_rule_reproduces_the_labels():
    dataset = edge_dataset()
    for events in (None, ["email_open"], ["login", "email_open"]):
        chosen = resolve_definition(dataset, requested="activity", horizon_days=H,
                                    active_days=ACTIVE, activity_events=events)
        labels = label_customers(dataset, as_of=T, horizon_days=H, definition="activity",
                                 active_days=ACTIVE, activity_events=chosen.activity_events)
        features = build_features(dataset, as_of=T)
        mask = population_mask(features, activity_population_rule(chosen))
        assert mask.equals(labels["in_population"]), f"activity events {events}"


@pytest.mark.parametrize(("tables", "expected"), [
    (("orders",), "inactivity"),
    (("subscriptions",), "subscription"),
    (("events",), "activity"),
    (("orders", "events"), "activity"),
    (("orders", "subscriptions"), "activity"),
    (("orders", "events", "subscriptions"), "activity"),
])
def test_auto_picks_by_the_kinds_of_history(tables, expected):
    full = edge_dataset()
    dataset = replace(full, **{name: None for name in ("orders", "events", "subscriptions")
                               if name not in tables})
    name, reason = auto_definition(dataset)
    assert name == expected
    assert reason, "the choice comes with its reason"
    chosen = resolve_definition(dataset, requested="auto")
    assert chosen.name == expected and chosen.reason.startswith("auto: ")


def test_passive_events_are_left_out_of_the_default_activity():
    chosen = resolve_definition(edge_dataset(), requested="auto")
    assert chosen.activity_events == ("login",)
    assert "email_open" in PASSIVE_EVENT_TYPES


@pytest.mark.parametrize(("settings", "flag", "text"), [
    ({"activity_events": ["logon"]}, "--activity-events", "no event has type 'logon'"),
    ({"activity_events": [""]}, "--activity-events", "names no event type"),
    ({"active_days": 0}, "--active-days", "positive"),
    ({"active_days": -5}, "--active-days", "positive"),
    ({"requested": "weekly"}, "--churn", "unknown churn definition"),
])
def test_bad_settings_name_the_flag(settings, flag, text):
    with pytest.raises(DefinitionError) as error:
        resolve_definition(edge_dataset(), **settings)
    message = str(error.value)
    assert message.startswith(flag) and text in message and "\n" not in message


@pytest.fixture(scope="module")
def mixed():
    data = generate_dataset(customers=1500, seed=11, end=date(2024, 12, 31), kind="mixed")
    return validate_tables(data.tables).dataset, data.ground_truth.set_index("customer_id")


def test_activity_labels_agree_with_the_generator(mixed):
    dataset, truth = mixed
    as_of = pd.Timestamp("2024-06-01")
    labels = label_customers(dataset, as_of=as_of, horizon_days=90, definition="activity")
    churned_at = truth["churned_at"].reindex(labels.index)
    in_pop = labels["in_population"].to_numpy()
    gone_before = (churned_at < as_of).to_numpy()
    alive = (churned_at.isna() | (churned_at >= as_of + pd.Timedelta(days=90))).to_numpy()
    assert (gone_before & in_pop).sum() > 30 and (alive & in_pop).sum() > 300
    assert (labels["churned"][gone_before & in_pop] == 1).all(), (
        "a customer the generator churned before T shows no activity after it")
    assert (labels["churned"][alive & in_pop] == 0).mean() > 0.99, (
        "a customer still there at T + H is almost always active in the window")
    # counting e-mail opens, customers already gone would look retained
    everything = label_customers(dataset, as_of=as_of, horizon_days=90, definition="activity",
                                 activity_events=sorted(dataset.events["event_type"].unique()))
    looks_retained = (everything["churned"] == 0).to_numpy() & gone_before
    assert looks_retained.sum() > 10, "why the default leaves e-mail opens out"


def test_activity_population_rule_on_generated_data(mixed):
    dataset, _ = mixed
    chosen = resolve_definition(dataset, requested="auto")
    assert chosen.name == "activity"
    for as_of in pd.date_range("2023-03-01", "2024-12-01", freq="97D"):
        labels = label_customers(dataset, as_of=as_of, horizon_days=90, definition="activity",
                                 activity_events=chosen.activity_events)
        features = build_features(dataset, as_of=as_of)
        mask = population_mask(features, activity_population_rule(chosen)).to_numpy()
        assert np.array_equal(mask, labels["in_population"].to_numpy()), f"as of {as_of}"


def test_tiny_dataset_gets_the_activity_definition(tiny_dataset):
    assert auto_definition(tiny_dataset())[0] == "activity"


@pytest.fixture(scope="module")
def shop_dir(tmp_path_factory):
    """A small shop with orders and app events but no subscriptions."""
    folder = tmp_path_factory.mktemp("shop")
    generate_dataset(customers=300, seed=3, end=date(2024, 6, 30), kind="ecommerce",
                     history_days=400).write(folder)
    return folder


@pytest.mark.parametrize(("flags", "expected"), [
    (["--activity-events", "session,logon"], "--activity-events: no event has type 'logon'"),
    (["--active-days", "0"], "--active-days"),
    (["--churn", "subscription"], "leaves nobody in the population"),
])
def test_bad_definition_flags_stop_train_in_one_line_and_register_nothing(
        shop_dir, in_tmp_cwd, flags, expected):
    from typer.testing import CliRunner

    from churnlens import build_app

    result = CliRunner().invoke(build_app(), ["train", "--data", str(shop_dir), *flags])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if expected in line]
    assert lines, result.output
    assert "Traceback" not in result.output
    assert not (in_tmp_cwd / "mlflow.db").exists(), "nothing may be logged for a bad setting"
    assert not (in_tmp_cwd / "mlartifacts").exists()
