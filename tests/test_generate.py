"""The generator: contract-conforming, deterministic, and churn caused by behaviour.

The behavioural tests read the ground truth (who churned, when, why) and check
that the observable history really shows the cause: that is what lets a good
model find churn and a leaky or broken feature pipeline fail.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from features.contract import validate_tables
from features.dataset import ORDER_STATUSES, TABLE_COLUMNS
from features.generate import CHURN_CAUSES, EVENT_TYPES, KINDS, PLANS, generate_dataset
from features.io import read_dataset

END = date(2024, 12, 31)
LAST_MOMENT = pd.Timestamp("2024-12-31 23:59:59")
DAY = pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def mixed():
    return generate_dataset(customers=4000, seed=11, end=END, kind="mixed")


@pytest.fixture(scope="module")
def ecommerce():
    return generate_dataset(customers=4000, seed=12, end=END, kind="ecommerce")


@pytest.fixture(scope="module")
def subscription():
    return generate_dataset(customers=3000, seed=13, end=END, kind="subscription")


@pytest.fixture(scope="module")
def by_kind(mixed, ecommerce, subscription):
    return {"mixed": mixed, "ecommerce": ecommerce, "subscription": subscription}


def churners(generated, cause: str | None = None) -> pd.DataFrame:
    truth = generated.ground_truth
    chosen = truth[truth["churned_at"].notna()]
    if cause is not None:
        chosen = chosen[chosen["churn_cause"] == cause]
    return chosen.set_index("customer_id")


def in_window(frame: pd.DataFrame, column: str, starts: pd.Series, ends: pd.Series) -> pd.DataFrame:
    """Rows of ``frame`` whose time lies in [starts, ends) of their own customer."""
    joined = frame.join(pd.DataFrame({"window_start": starts, "window_end": ends}),
                        on="customer_id", how="inner")
    inside = (joined[column] >= joined["window_start"]) & (joined[column] < joined["window_end"])
    return joined[inside]


# --- shape and contract -----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_generated_row_passes_the_data_contract(by_kind, kind):
    generated = by_kind[kind]
    result = validate_tables(generated.tables)
    assert result.rejects.empty, f"{kind}: generated rows were rejected:\n{result.rejects.head()}"
    assert result.rows_used == {name: len(frame) for name, frame in generated.tables.items()}
    expected_tables = {"customers", "orders", "events"} | (
        {"subscriptions"} if kind != "ecommerce" else set())
    assert set(generated.tables) == expected_tables


@pytest.mark.parametrize("kind", KINDS)
def test_tables_have_exactly_the_contract_columns(by_kind, kind):
    tables = by_kind[kind].tables
    for name in ("orders", "events", "subscriptions"):
        if name not in tables:
            continue
        required, optional = TABLE_COLUMNS[name]
        assert list(tables[name].columns) == [*required, *optional], name
    customers = tables["customers"]
    assert list(customers.columns[:2]) == ["customer_id", "signup_at"]
    assert {"region", "acquisition_channel", "age_band"} <= set(customers.columns)
    assert customers["customer_id"].str.fullmatch(r"C\d{6}").all()
    assert customers["customer_id"].is_unique
    assert tables["orders"]["order_id"].is_unique
    assert set(tables["orders"]["status"]) == set(ORDER_STATUSES), "every status should occur"
    assert set(tables["events"]["event_type"]) == set(EVENT_TYPES)
    sessions = tables["events"]["event_type"] == "session"
    assert tables["events"].loc[sessions, "value"].gt(0).all(), "sessions carry minutes"
    assert tables["events"].loc[~sessions, "value"].isna().all()
    assert (tables["orders"]["amount"] > 0).all()
    assert (tables["orders"]["discount"] <= tables["orders"]["amount"]).all()


@pytest.mark.parametrize("kind", KINDS)
def test_history_spans_the_period_and_ends_on_the_end_date(by_kind, kind):
    generated = by_kind[kind]
    start = pd.Timestamp(END) + DAY - 1095 * DAY
    stamps = [generated.tables["customers"]["signup_at"], generated.tables["orders"]["ordered_at"],
              generated.tables["events"]["occurred_at"]]
    if "subscriptions" in generated.tables:
        subscriptions = generated.tables["subscriptions"]
        stamps += [subscriptions["started_at"], subscriptions["ended_at"].dropna()]
    stamps += [generated.ground_truth["churned_at"].dropna()]
    for series in stamps:
        assert series.max() <= LAST_MOMENT, f"{series.name} has a timestamp after the end"
        assert series.min() >= start, f"{series.name} starts before the history"
    signups = generated.tables["customers"]["signup_at"]
    assert signups.min() < start + 60 * DAY and signups.max() > LAST_MOMENT - 60 * DAY, \
        "customers should sign up across the whole period"
    assert generated.tables["orders"]["ordered_at"].max() > LAST_MOMENT - 7 * DAY


def test_no_activity_before_a_customers_signup(mixed):
    signup = mixed.tables["customers"].set_index("customer_id")["signup_at"]
    for name, column in (("orders", "ordered_at"), ("events", "occurred_at"),
                         ("subscriptions", "started_at")):
        frame = mixed.tables[name]
        assert (frame[column].to_numpy() >= signup.loc[frame["customer_id"]].to_numpy()).all(), name


def test_same_seed_gives_identical_frames_and_another_seed_differs():
    first = generate_dataset(customers=600, seed=5, end=END, kind="mixed")
    again = generate_dataset(customers=600, seed=5, end=END, kind="mixed")
    other = generate_dataset(customers=600, seed=6, end=END, kind="mixed")
    for name in first.tables:
        pd.testing.assert_frame_equal(first.tables[name], again.tables[name])
    pd.testing.assert_frame_equal(first.ground_truth, again.ground_truth)
    assert not first.tables["orders"].equals(other.tables["orders"])
    assert not first.ground_truth["churned_at"].equals(other.ground_truth["churned_at"])


def test_customers_beyond_one_chunk_are_generated_consistently(monkeypatch):
    """Chunking by customers must not change ids, order ids or the contract."""
    import features.generate as generate

    monkeypatch.setattr(generate, "CHUNK_SIZE", 250)
    generated = generate.generate_dataset(customers=600, seed=3, end=END, kind="subscription")
    assert generated.tables["customers"]["customer_id"].is_unique
    assert set(generated.tables["subscriptions"]["customer_id"]) <= set(
        generated.tables["customers"]["customer_id"])
    assert validate_tables(generated.tables).rejects.empty


def test_bad_arguments_are_refused_with_the_argument_named():
    with pytest.raises(ValueError, match="kind"):
        generate_dataset(customers=10, seed=0, end=END, kind="retail")
    with pytest.raises(ValueError, match="customers"):
        generate_dataset(customers=0, seed=0, end=END, kind="mixed")
    with pytest.raises(ValueError, match="orders_per_customer"):
        generate_dataset(customers=10, seed=0, end=END, kind="mixed", orders_per_customer=-1)


def test_volume_knobs_reach_the_requested_orders_and_events_per_customer():
    generated = generate_dataset(customers=3000, seed=8, end=END, kind="ecommerce",
                                 history_days=365, orders_per_customer=10,
                                 events_per_customer=60)
    orders = len(generated.tables["orders"]) / 3000
    events = len(generated.tables["events"]) / 3000
    assert orders == pytest.approx(10, rel=0.15)
    assert events == pytest.approx(60, rel=0.15)


# --- ground truth: churn rate and causes --------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_churn_rate_in_a_90_day_window_is_realistic_and_causes_are_varied(by_kind, kind):
    truth = by_kind[kind].ground_truth
    as_of = pd.Timestamp(END) - 180 * DAY
    active = (truth["signup_at"] < as_of) & ~(truth["churned_at"] < as_of)
    churned = active & (truth["churned_at"] < as_of + 90 * DAY)
    rate = churned.sum() / active.sum()
    assert 0.15 <= rate <= 0.45, f"{kind}: 90-day churn rate among active customers is {rate:.2f}"
    shares = truth.loc[truth["churned_at"].notna(), "churn_cause"].value_counts(normalize=True)
    assert set(shares.index) <= set(CHURN_CAUSES)
    assert (shares >= 0.03).sum() >= 4, f"{kind}: too few causes represented: {shares.to_dict()}"
    assert (truth["churned_at"].isna() == (truth["churn_cause"] == "none")).all()


@pytest.mark.parametrize("kind", KINDS)
def test_churned_customers_make_no_orders_and_only_open_emails_after_churn(by_kind, kind):
    generated = by_kind[kind]
    churned_at = churners(generated)["churned_at"]
    far_future = pd.Series(pd.Timestamp("2100-01-01"), index=churned_at.index)
    after_orders = in_window(generated.tables["orders"], "ordered_at", churned_at, far_future)
    assert after_orders.empty, f"{len(after_orders)} orders after churn"
    after_events = in_window(generated.tables["events"], "occurred_at", churned_at, far_future)
    assert set(after_events["event_type"]) <= {"email_open"}
    before_events = in_window(generated.tables["events"], "occurred_at",
                              churned_at - 90 * DAY, churned_at)
    assert len(after_events) < 0.2 * len(before_events), "events should mostly stop after churn"


@pytest.mark.parametrize("kind", ["mixed", "subscription"])
def test_subscriptions_chain_plan_changes_and_end_at_churn(by_kind, kind):
    generated = by_kind[kind]
    subscriptions = generated.tables["subscriptions"].sort_values(["customer_id", "started_at"])
    assert set(subscriptions["plan"]) == set(PLANS)
    same_customer = subscriptions["customer_id"].eq(subscriptions["customer_id"].shift())
    previous_end = subscriptions["ended_at"].shift()
    assert (subscriptions.loc[same_customer, "started_at"] == previous_end[same_customer]).all(), \
        "a plan change ends one row and starts the next at the same moment"
    changes = same_customer.sum()
    assert changes > 0.05 * subscriptions["customer_id"].nunique(), "plan changes should happen"
    last = subscriptions.groupby("customer_id").tail(1).set_index("customer_id")
    truth = generated.ground_truth.set_index("customer_id").loc[last.index]
    churned = truth["churned_at"].notna()
    assert (last.loc[churned, "ended_at"] == truth.loc[churned, "churned_at"]).all(), \
        "a churned subscriber's last subscription ends on the churn date"
    assert last.loc[~churned, "ended_at"].isna().all(), "everyone else is still subscribed"
    if kind == "subscription":
        assert len(last) == len(generated.tables["customers"]), "every customer subscribes"


# --- ground truth: the behaviour that causes churn is in the data -------------------------


def bad_share(orders: pd.DataFrame) -> float:
    return orders["status"].isin(["returned", "unclaimed"]).mean()


def test_bad_experience_churners_had_more_returns_and_unclaimed_parcels(ecommerce):
    orders = ecommerce.tables["orders"]
    leavers = churners(ecommerce, "bad_experience")
    assert len(leavers) >= 50
    before = in_window(orders, "ordered_at", leavers["churned_at"] - 120 * DAY,
                       leavers["churned_at"])
    stayers = ecommerce.ground_truth.query("churn_cause == 'none'")["customer_id"]
    stayer_orders = orders[orders["customer_id"].isin(stayers)]
    assert bad_share(before) > 2 * bad_share(stayer_orders), (
        f"bad-experience churners: {bad_share(before):.1%} of orders returned/unclaimed before "
        f"churn, stayers {bad_share(stayer_orders):.1%}")


def test_support_issue_churners_filed_more_tickets_before_churn(mixed):
    events = mixed.tables["events"]
    tickets = events[events["event_type"] == "support_ticket"]
    leavers = churners(mixed, "support_issues")
    assert len(leavers) >= 50
    before = in_window(tickets, "occurred_at", leavers["churned_at"] - 60 * DAY,
                       leavers["churned_at"])
    truth = mixed.ground_truth.set_index("customer_id")
    long_enough = truth["signup_at"] < LAST_MOMENT - 60 * DAY
    stayers = truth[(truth["churn_cause"] == "none") & long_enough]
    window_end = pd.Series(LAST_MOMENT, index=stayers.index)
    stayer_tickets = in_window(tickets, "occurred_at", window_end - 60 * DAY, window_end)
    leaver_rate = len(before) / len(leavers)
    stayer_rate = len(stayer_tickets) / len(stayers)
    assert leaver_rate > 4 * stayer_rate, (
        f"tickets in the 60 days before churn: {leaver_rate:.2f} per churner, "
        f"stayers {stayer_rate:.2f} in their last 60 days")


def test_fading_churners_were_less_active_in_the_60_days_before_churn(mixed):
    events = mixed.tables["events"]
    usage = events[events["event_type"].isin(["session", "product_view", "cart_add"])]
    leavers = churners(mixed, "fading_engagement")
    signup = mixed.ground_truth.set_index("customer_id").loc[leavers.index, "signup_at"]
    leavers = leavers[leavers["churned_at"] - signup > 180 * DAY]
    assert len(leavers) >= 50
    recent_start = leavers["churned_at"] - 60 * DAY
    recent = in_window(usage, "occurred_at", recent_start, leavers["churned_at"])
    earlier = in_window(usage, "occurred_at", signup.loc[leavers.index], recent_start)
    earlier_days = (recent_start - signup.loc[leavers.index]).dt.days.sum()
    recent_rate = len(recent) / (60 * len(leavers))
    earlier_rate = len(earlier) / earlier_days
    assert recent_rate < 0.5 * earlier_rate, (
        f"fading churners: {recent_rate:.3f} events/day in the last 60 days vs "
        f"{earlier_rate:.3f} before")


def test_long_gap_churners_were_overdue_against_their_own_rhythm(ecommerce):
    orders = ecommerce.tables["orders"]
    completed = orders[orders["status"] == "completed"]
    leavers = churners(ecommerce, "long_gap")
    assert len(leavers) >= 30
    history = in_window(completed, "ordered_at",
                        pd.Series(pd.Timestamp("1900-01-01"), index=leavers.index),
                        leavers["churned_at"]).sort_values("ordered_at")
    last = history.groupby("customer_id")["ordered_at"].max()
    signup = ecommerce.ground_truth.set_index("customer_id")["signup_at"]
    last = last.reindex(leavers.index).fillna(signup.loc[leavers.index])
    gap_at_churn = (leavers["churned_at"] - last).dt.days
    truth = ecommerce.ground_truth.set_index("customer_id")
    usual_gap = 7 / truth.loc[leavers.index, "base_weekly_orders"]
    assert (gap_at_churn / usual_gap).median() > 2.0, "long-gap churn follows an overdue customer"
    all_gaps = completed.groupby("customer_id")["ordered_at"].diff().dt.days.dropna()
    assert gap_at_churn.median() > 2 * all_gaps.median()


def test_price_downgrade_churners_moved_to_a_cheaper_plan_first(subscription):
    subscriptions = subscription.tables["subscriptions"].sort_values(["customer_id", "started_at"])
    rank = subscriptions["plan"].map({plan: i for i, plan in enumerate(PLANS)})
    same = subscriptions["customer_id"].eq(subscriptions["customer_id"].shift())
    downgrades = subscriptions.loc[same & (rank < rank.shift()), ["customer_id", "started_at"]]
    leavers = churners(subscription, "price_downgrade")
    assert len(leavers) >= 30
    recent = in_window(downgrades, "started_at", leavers["churned_at"] - 180 * DAY,
                       leavers["churned_at"])
    share_leavers = recent["customer_id"].nunique() / len(leavers)
    others = churners(subscription)
    others = others[others["churn_cause"] != "price_downgrade"]
    recent_others = in_window(downgrades, "started_at", others["churned_at"] - 180 * DAY,
                              others["churned_at"])
    share_others = recent_others["customer_id"].nunique() / len(others)
    assert share_leavers > 0.8, f"only {share_leavers:.0%} of price-downgrade churners downgraded"
    assert share_leavers > 3 * share_others


def test_recency_ranks_who_stops_ordering_next_quarter(ecommerce):
    """The inactivity label (no completed order in [T, T+90d)) is found by recency."""
    as_of = pd.Timestamp(END) - 120 * DAY
    orders = ecommerce.tables["orders"]
    completed = orders[orders["status"] == "completed"]
    before = completed[completed["ordered_at"] < as_of]
    days_since = (as_of - before.groupby("customer_id")["ordered_at"].max()).dt.days
    window = completed[completed["ordered_at"].between(as_of, as_of + 90 * DAY, inclusive="left")]
    stopped = ~days_since.index.isin(window["customer_id"])
    auc = roc_auc_score(stopped, days_since)
    assert auc > 0.85, f"days since last order should rank who stops ordering (AUC {auc:.2f})"


def test_falling_usage_ranks_which_active_subscribers_cancel(subscription):
    """Among customers still subscribed at T, a usage trend known at T finds churners."""
    as_of = pd.Timestamp(END) - 120 * DAY
    truth = subscription.ground_truth.set_index("customer_id")
    active = truth[(truth["signup_at"] < as_of - 180 * DAY) & ~(truth["churned_at"] < as_of)]
    events = subscription.tables["events"]
    sessions = events[(events["event_type"] == "session") & (events["occurred_at"] < as_of)]
    recent = sessions[sessions["occurred_at"] >= as_of - 60 * DAY]
    earlier = sessions[sessions["occurred_at"] >= as_of - 180 * DAY]
    recent_rate = recent.groupby("customer_id").size().reindex(active.index, fill_value=0) / 60
    earlier_rate = earlier.groupby("customer_id").size().reindex(active.index, fill_value=0) / 180
    decline = (earlier_rate + 0.01) / (recent_rate + 0.01)
    cancels = active["churned_at"] < as_of + 90 * DAY
    auc = roc_auc_score(cancels, decline)
    assert auc > 0.58, f"a fall in sessions should rank who cancels next (AUC {auc:.2f})"
    future = events[(events["event_type"] == "session") & (events["occurred_at"] >= as_of)
                    & (events["occurred_at"] < as_of + 90 * DAY)]
    leaked = future.groupby("customer_id").size().reindex(active.index, fill_value=0)
    assert roc_auc_score(cancels, -leaked) > auc + 0.1, \
        "future rows must separate far better: that is how a leaky pipeline shows itself"


# --- writing ---------------------------------------------------------------------------


def test_written_dataset_reads_back_and_keeps_the_ground_truth_aside(tmp_path):
    generated = generate_dataset(customers=300, seed=4, end=END, kind="mixed")
    for fmt in ("csv", "parquet"):
        directory = generated.write(tmp_path / fmt, fmt=fmt)
        result = read_dataset(directory)
        assert result.rejects.empty
        assert result.rows_read == {name: len(frame) for name, frame in generated.tables.items()}
        orders = result.dataset.orders.sort_values("order_id").reset_index(drop=True)
        pd.testing.assert_series_equal(orders["ordered_at"],
                                       generated.tables["orders"]["ordered_at"],
                                       check_names=False)
        truth = pd.read_csv(directory / "ground_truth.csv", parse_dates=["churned_at"])
        assert len(truth) == 300 and set(truth.columns) >= {
            "customer_id", "churned_at", "churn_cause"}
        assert (truth["churned_at"].isna() == truth["churn_cause"].eq("none")).all()


def test_generate_command_writes_the_dataset(tmp_path):
    import churnlens

    out = tmp_path / "data"
    result = CliRunner().invoke(churnlens.build_app(), [
        "generate", "--customers", "200", "--out", str(out), "--seed", "2",
        "--end", "2024-06-30", "--kind", "subscription", "--format", "parquet"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {
        "customers.parquet", "orders.parquet", "events.parquet", "subscriptions.parquet",
        "ground_truth.csv"}
    dataset = read_dataset(out).dataset
    assert dataset.latest_timestamp() <= pd.Timestamp("2024-06-30 23:59:59")
    assert np.isfinite(dataset.subscriptions["mrr"]).all()
